"""One spelling for an event's level: "warn", as OpenAI's job events (and the dashboard's styles) have it."""

from __future__ import annotations

import ast
from pathlib import Path

from hubtune.lifecycle import LEVELS, WARN

ROOT = Path(__file__).resolve().parents[2]


def _written_levels() -> dict[str, set[str]]:
    """Every string literal passed as `level=` (or a `text, level = ..., "..."` pair) in the source."""
    found: dict[str, set[str]] = {}
    for package in ("hubtune", "server", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                values = []
                if isinstance(node, ast.keyword) and node.arg == "level":
                    values = [node.value]
                elif isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Tuple) and any(getattr(e, "id", None) == "level" for e in t.elts)
                        for t in node.targets) and isinstance(node.value, ast.Tuple):
                    values = [node.value.elts[-1]]
                for level in (x for value in values for x in _choices(value)):
                    found.setdefault(level, set()).add(str(path.relative_to(ROOT)))
    return found


def _choices(node: ast.expr) -> list[str]:
    """The string levels an expression can give: a literal, or either side of `a if cond else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _choices(node.body) + _choices(node.orelse)
    return []


def test_events_are_written_with_openai_levels_only():
    levels = _written_levels()
    # log_level="warning" (uvicorn, transformers) is a logger's setting, not an event's level.
    odd = {level: where for level, where in levels.items() if level not in LEVELS}
    assert odd == {}
    assert WARN in levels  # the scan does see the warnings prepare, the sweeper and publish write


def test_older_rows_spelled_warning_are_answered_as_warn():
    from hubtune.models import JobEvent
    from server.schemas import EventPublic

    for stored, answered in (("warning", "warn"), ("warn", "warn"), ("info", "info"), ("error", "error")):
        row = JobEvent(id=7, job_id="ftjob-x", created_at=1.0, level=stored, type="message", message="m", data=None)
        assert EventPublic.of(row).level == answered
