"""Limits checked while an upload streams in: its size, and the length of each line."""

from __future__ import annotations


class TooLarge(ValueError):
    pass


class LineTooLong(ValueError):
    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"line {line} is longer than the limit of {limit} bytes")
        self.line = line
        self.limit = limit


class LineCounter:
    """Follows line lengths across chunks; raises LineTooLong naming the first (1-based) long line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.line = 1  # the line the next byte belongs to
        self.current = 0  # bytes of that line seen so far

    def feed(self, chunk: bytes) -> None:
        if self.limit <= 0:
            return
        if self.current + len(chunk) <= self.limit:  # no line in this chunk can be too long: count only
            newlines = chunk.count(b"\n")
            self.line += newlines
            self.current = len(chunk) - chunk.rfind(b"\n") - 1 if newlines else self.current + len(chunk)
            return
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            self._check(self.current + nl - start)
            self.line += 1
            self.current = 0
            start = nl + 1
        self.current += len(chunk) - start
        self._check(self.current)

    def _check(self, length: int) -> None:
        if length > self.limit:
            raise LineTooLong(self.line, self.limit)
