"""Labels written as JSON numbers in some rows and as strings in others (1 and "1", or 0/1 with "spam").

The data is legal: every label is read as its text (str(1) == "1"), so 1 and "1" are one label.
But a file that mixes the two spellings usually comes from two sources that meant different things
(an exported 0/1 column next to hand-written "spam"), so data_report warns, naming both spellings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class _Seen:
    rows: int = 0
    first_line: int = 0


@dataclass
class LabelSpellings:
    """Counts of each label as written: {(kind, text): _Seen}, kind "number" or "string"."""

    seen: dict[tuple[str, str], _Seen] = field(default_factory=dict)

    def add(self, label: str | int, line: int) -> None:
        key = ("number" if isinstance(label, int) else "string", str(label))
        entry = self.seen.setdefault(key, _Seen(first_line=line))
        entry.rows += 1

    def warning(self) -> str | None:
        numbers = {text for kind, text in self.seen if kind == "number"}
        strings = {text for kind, text in self.seen if kind == "string"}
        if not numbers or not strings:
            return None
        both = sorted(numbers & strings, key=_numeric_first)
        if both:
            parts = [f'{self._spelled("number", t)} and {self._spelled("string", t)} are treated as the same '
                     f'label "{t}"' for t in both]
            return "labels mix JSON numbers and strings: " + "; ".join(parts)
        return (f"labels mix JSON numbers and strings: {self._list('number', numbers)} and "
                f"{self._list('string', strings)}; every label is read as text, so they are "
                f"{len(numbers | strings)} different labels")

    def _spelled(self, kind: str, text: str) -> str:
        entry = self.seen[(kind, text)]
        shown = text if kind == "number" else json.dumps(text, ensure_ascii=False)
        rows = "1 row" if entry.rows == 1 else f"{entry.rows} rows"
        return f"{shown} ({kind}, {rows}, first line {entry.first_line})"

    def _list(self, kind: str, texts: set[str]) -> str:
        return ", ".join(self._spelled(kind, t) for t in sorted(texts, key=_numeric_first)[:5]) + (
            f" and {len(texts) - 5} more" if len(texts) > 5 else "")


def _numeric_first(text: str):
    return (0, int(text), text) if text.lstrip("-").isdigit() else (1, 0, text)
