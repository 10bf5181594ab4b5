"""How every `hubtune` command fails: one line on stderr and a non-zero exit status, never a traceback.

`guarded` wraps a command once, in main(): a command raises `CliError` (or lets a database, network or
file error through) and this module words it. Exit statuses: 1 an error, 2 a usage error (as argparse),
130 Ctrl-C. A reader that goes away (`hubtune jobs list | head -1`) ends the command quietly, as
Python's documentation says to handle SIGPIPE. HUBTUNE_DEBUG=1 re-raises, for the traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class CliError(Exception):
    """A failure worded for the user; `exit_code` 2 for a usage mistake."""

    exit_code = 1


class UsageError(CliError):
    exit_code = 2


def guarded(command: Callable[[], int]) -> int:
    try:
        rc = command()
        sys.stdout.flush()  # inside the guard: a pipe closed early fails here, not at interpreter exit
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("HUBTUNE_DEBUG"):
            raise
        print(f"error: {one_line(describe(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)


def _silence_stdout() -> None:
    # Point stdout at /dev/null so that the interpreter's own flush at exit cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe(exc: BaseException) -> str:
    if isinstance(exc, CliError):
        return str(exc)
    text = _database_error(exc) or _network_error(exc)
    if text:
        return text
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc} (HUBTUNE_DEBUG=1 shows the traceback)"


def _network_error(exc: BaseException) -> str | None:
    # The user's commands word this with where the URL came from (cli/user.py); this covers the rest.
    if "httpx" not in sys.modules:
        return None
    import httpx

    if not isinstance(exc, httpx.TransportError):
        return None
    try:
        where = f" {exc.request.url}"
    except RuntimeError:  # no request attached
        where = ""
    return f"cannot reach{where}: {exc or type(exc).__name__}"


def _database_error(exc: BaseException) -> str | None:
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    from hubtune.settings import get_settings

    url = make_url(get_settings().resolved_database_url).render_as_string(hide_password=True)
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    hint = ""
    if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
        hint = " (run `hubtune db upgrade` first)"
    elif "unable to open database file" in reason:
        hint = " (does the data dir exist? `hubtune up` makes one, or pass --data-dir)"
    elif exc.connection_invalidated or "connect" in reason.lower():
        hint = " (is it running? HUBTUNE_DATABASE_URL says where it is)"
    return f"database {url}: {reason}{hint}"
