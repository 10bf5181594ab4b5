"""OpenAI's metadata filter on the job list: `metadata[key]=value` (several pairs must all match) or
`metadata=null` (jobs without metadata), as a SQL condition on the stored spec (PostgreSQL JSONB and
SQLite JSON both), so that it pages like the other filters."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Select, or_

from hubtune.models import Job
from hubtune.spec import METADATA_MAX_KEY_CHARS, METADATA_MAX_KEYS, METADATA_MAX_VALUE_CHARS
from server.errors import bad_request

METADATA_DOC = ("`metadata=null`: jobs without metadata. Filter on pairs with `metadata[key]=value` "
                "(several pairs: a job must have them all).")
_PAIR = re.compile(r"^metadata\[(.*)\]$", re.DOTALL)


@dataclass(frozen=True)
class MetadataFilter:
    pairs: tuple[tuple[str, str], ...] = ()
    none: bool = False  # metadata=null

    @classmethod
    def from_query(cls, items: Iterable[tuple[str, str]]) -> MetadataFilter | None:
        pairs: dict[str, str] = {}
        none = False
        for name, value in items:
            if name == "metadata":
                if value != "null":
                    raise bad_request("Filter on metadata with metadata[key]=value, or metadata=null for jobs "
                                      "without metadata.", param="metadata", code="invalid_value")
                none = True
            elif (match := _PAIR.match(name)) is not None:
                key = match.group(1)
                param = f"metadata[{key[:METADATA_MAX_KEY_CHARS]}]"
                if not key or len(key) > METADATA_MAX_KEY_CHARS or len(value) > METADATA_MAX_VALUE_CHARS:
                    raise bad_request(f"Invalid metadata filter: keys are 1 to {METADATA_MAX_KEY_CHARS} characters, "
                                      f"values at most {METADATA_MAX_VALUE_CHARS}.", param=param, code="invalid_value")
                if key in pairs and pairs[key] != value:
                    raise bad_request(f"metadata[{key}] is given twice with different values.", param=param,
                                      code="invalid_value")
                if any(ch in '"\\' or ord(ch) < 0x20 for ch in key) or "\x00" in value:
                    # SQLite's JSON paths cannot name these (stored escaped): refuse rather than miss.
                    raise bad_request("metadata filter keys may not contain quotes, backslashes or control "
                                      "characters.", param=param, code="invalid_value")
                pairs[key] = value
        if none and pairs:
            raise bad_request("metadata=null cannot be combined with metadata[key]=value.", param="metadata",
                              code="invalid_value")
        if len(pairs) > METADATA_MAX_KEYS:
            raise bad_request(f"A job has at most {METADATA_MAX_KEYS} metadata keys; the filter names {len(pairs)}.",
                              param="metadata", code="invalid_value")
        if not none and not pairs:
            return None
        return cls(pairs=tuple(pairs.items()), none=none)

    def apply(self, stmt: Select) -> Select:
        if self.none:
            # Stored as JSON null (a request without metadata) or {} ({} is "no metadata" too).
            stored = Job.spec["metadata"].as_string()
            return stmt.where(or_(stored.is_(None), stored == "{}"))
        for key, value in self.pairs:
            stmt = stmt.where(Job.spec[("metadata", key)].as_string() == value)
        return stmt
