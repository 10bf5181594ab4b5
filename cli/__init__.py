"""The `hubtune` command. This package is the one edge module allowed to start every component, so it
imports server/, worker/ and plugin/ — lazily, inside the commands that need them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DATA_DIR_HELP = "where the embedded database, queue, storage and hub live (default .hubtune)"


def _data_dir(value: str | None) -> None:
    # Settings are read from the environment once; children (the worker) inherit it too.
    if value:
        os.environ["HUBTUNE_DATA_DIR"] = str(Path(value).resolve())
        from hubtune.settings import get_settings

        get_settings.cache_clear()


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other error (cli/errors.py); --help has the rest.
    Every command's parser is one of these: subparsers take their parent's class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from cli import admin, demo, embedded, services, user

    parser = _Parser(prog="hubtune", description="Self-hosted fine-tuning for Hugging Face models.")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    embedded.add_commands(sub)
    services.add_commands(sub)
    admin.add_commands(sub)
    demo.add_commands(sub)
    user.add_commands(sub)
    _data_dir_after_the_command(sub)
    return parser


def _data_dir_after_the_command(sub: argparse._SubParsersAction) -> None:
    """`hubtune up --data-dir D` as well as `hubtune --data-dir D up`: every command takes it. SUPPRESS:
    a command that is not given it leaves the value from before the command alone."""
    for parser in sub.choices.values():
        parser.add_argument("--data-dir", default=argparse.SUPPRESS, help=DATA_DIR_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _data_dir_after_the_command(action)


def main(argv: list[str] | None = None) -> int:
    from cli.errors import guarded

    args = build_parser().parse_args(argv)
    _data_dir(getattr(args, "data_dir", None))
    return guarded(lambda: int(args.func(args) or 0))


if __name__ == "__main__":
    sys.exit(main())
