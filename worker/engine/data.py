"""Reading and validating training data: JSONL (one JSON object per line), or CSV for classification.

Formats, told apart by their columns (all lines of a file share one format; other keys are ignored):

- ``classification``: ``{"text": str, "label": str | int}``          -> task ``sequence_classification``
- ``chat``:           ``{"messages": [{"role", "content"}, ...]}``   -> task ``causal_lm``
- ``completion``:     ``{"prompt": str, "completion": str}``         -> task ``causal_lm``
- ``preference``:     OpenAI's DPO rows ``{"input": {"messages": [...]}, "preferred_output": [{"role":
  "assistant", "content"}], "non_preferred_output": [...]}`` -> task ``causal_lm`` (method ``dpo``)

Chat messages have a role in system/user/assistant and string content; at least one assistant
message must be trained. An assistant message may carry ``"weight": 0`` (OpenAI's convention) to be
shown to the model but not trained.

Every problem is a :class:`DataError` whose ``code`` is one of:
``invalid_file_format`` (unreadable, not UTF-8, not JSON, not an object, unknown or mixed formats),
``empty_file``, ``missing_column``, ``invalid_text`` (text/prompt/completion), ``invalid_label``
(type, empty, a single class, a validation label unknown to training), ``invalid_messages``,
``invalid_task`` (the requested task does not fit the data; ``param`` is then ``"task"``).
A classification file other than a validation file (``param="validation_file"``) needs two labels.
The message starts with ``line N:`` when a line is at fault (blank lines are skipped but counted).

CSV (classification only): a file whose first non-blank line does not start with ``{`` is read as
CSV with a header row naming at least the columns ``text`` and ``label`` (others are ignored).
Quoted fields may span lines; a row's ``line`` is the file line where it starts.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubtune.errors import JobError
from worker.engine.label_spellings import LabelSpellings

CLASSIFICATION = "classification"
CHAT = "chat"
COMPLETION = "completion"
PREFERENCE = "preference"

SEQUENCE_CLASSIFICATION = "sequence_classification"
CAUSAL_LM = "causal_lm"

FORMAT_COLUMNS = {
    CLASSIFICATION: ("text", "label"),
    CHAT: ("messages",),
    COMPLETION: ("prompt", "completion"),
    PREFERENCE: ("input", "preferred_output", "non_preferred_output"),
}
FORMAT_TASKS = {CLASSIFICATION: SEQUENCE_CLASSIFICATION, CHAT: CAUSAL_LM, COMPLETION: CAUSAL_LM,
                PREFERENCE: CAUSAL_LM}
ROLES = ("system", "user", "assistant")

# data_report warns below these sizes.
MIN_EXAMPLES = 20
MIN_EXAMPLES_PER_CLASS = 5


class DataError(JobError, ValueError):
    """A problem with a data file, in words a user can act on."""

    def __init__(self, message: str, *, code: str, param: str, line: int | None = None) -> None:
        super().__init__(code, message, param)
        self.line = line

    def __repr__(self) -> str:
        return f"DataError(code={self.code!r}, param={self.param!r}, line={self.line!r}, message={self.message!r})"


@dataclass
class Examples:
    task: str
    format: str
    rows: list[dict]
    labels: list[str] = field(default_factory=list)
    # The 1-based file line of each row (blank lines count), for later messages about a row.
    lines: list[int] = field(default_factory=list)
    # Legal but suspicious things found while reading (label spellings): data_report warns with them.
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _detect_format(obj: dict) -> str | None:
    if any(column in obj for column in FORMAT_COLUMNS[PREFERENCE]):
        return PREFERENCE
    if "messages" in obj:
        return CHAT
    if "prompt" in obj or "completion" in obj:
        return COMPLETION
    if "text" in obj or "label" in obj:
        return CLASSIFICATION
    return None


def _describe(fmt: str) -> str:
    return f"{fmt} ({', '.join(FORMAT_COLUMNS[fmt])})"


def _label_sort_key(labels: list[str]):
    # All-integer labels sort numerically ("2" before "10"); anything else sorts as text.
    if all(label.lstrip("-").isdigit() for label in labels):
        return lambda label: (int(label), label)
    return lambda label: label


def sorted_labels(labels) -> list[str]:
    unique = sorted(set(labels))
    return sorted(unique, key=_label_sort_key(unique))


class _Reader:
    def __init__(self, param: str) -> None:
        self.param = param
        self.spellings = LabelSpellings()

    def fail(self, code: str, message: str, line: int | None = None) -> DataError:
        text = f"line {line}: {message}" if line is not None else message
        return DataError(text, code=code, param=self.param, line=line)

    def check_text(self, obj: dict, column: str, line: int, *, allow_empty: bool = False) -> str:
        value = obj[column]
        if not isinstance(value, str):
            raise self.fail("invalid_text", f"{column} must be a string, got {_type_name(value)}", line)
        if not allow_empty and not value.strip():
            raise self.fail("invalid_text", f"{column} must not be empty", line)
        return value

    def classification(self, obj: dict, line: int) -> dict:
        text = self.check_text(obj, "text", line)
        label = obj["label"]
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise self.fail("invalid_label", f"label must be a string or an integer, got {_type_name(label)}", line)
        self.spellings.add(label, line)
        label = str(label)
        if not label.strip():
            raise self.fail("invalid_label", "label must not be empty", line)
        return {"text": text, "label": label}

    def completion(self, obj: dict, line: int) -> dict:
        prompt = self.check_text(obj, "prompt", line, allow_empty=True)
        completion = self.check_text(obj, "completion", line)
        return {"prompt": prompt, "completion": completion}

    def chat(self, obj: dict, line: int) -> dict:
        messages = obj["messages"]
        if not isinstance(messages, list):
            raise self.fail("invalid_messages", f"messages must be a list, got {_type_name(messages)}", line)
        if not messages:
            raise self.fail("invalid_messages", "messages must not be empty", line)
        clean = []
        trained = 0
        for i, message in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(message, dict):
                raise self.fail("invalid_messages", f"{where} must be an object, got {_type_name(message)}", line)
            for key in ("role", "content"):
                if key not in message:
                    raise self.fail("invalid_messages", f"{where} has no {key!r}", line)
            role = message["role"]
            if role not in ROLES:
                raise self.fail(
                    "invalid_messages", f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", line
                )
            content = message["content"]
            if not isinstance(content, str):
                raise self.fail(
                    "invalid_messages", f"{where}.content must be a string, got {_type_name(content)}", line
                )
            item = {"role": role, "content": content}
            if role == "assistant":
                weight = message.get("weight", 1)
                if isinstance(weight, bool) or weight not in (0, 1):
                    raise self.fail("invalid_messages", f"{where}.weight must be 0 or 1, got {weight!r}", line)
                if weight == 0:
                    item["weight"] = 0
                else:
                    if not content.strip():
                        raise self.fail("invalid_messages", f"{where}.content must not be empty", line)
                    trained += 1
            elif "weight" in message:
                raise self.fail("invalid_messages", f"{where}.weight is only allowed on assistant messages", line)
            clean.append(item)
        if not trained:
            raise self.fail("invalid_messages", "messages need at least one assistant message to train on", line)
        return {"messages": clean}


    def preference(self, obj: dict, line: int) -> dict:
        """OpenAI's preference row; the conversation must end with a user turn (the reply is what's compared)."""
        prompt = obj["input"]
        if not isinstance(prompt, dict) or "messages" not in prompt:
            raise self.fail("invalid_messages", "input must be an object with 'messages', "
                            f"got {_type_name(prompt) if not isinstance(prompt, dict) else 'no messages'}", line)
        messages = prompt["messages"]
        if not isinstance(messages, list) or not messages:
            raise self.fail("invalid_messages", "input.messages must be a non-empty list", line)
        clean = [self._message(m, f"input.messages[{i}]", line) for i, m in enumerate(messages)]
        if clean[-1]["role"] != "user":
            raise self.fail("invalid_messages", "input.messages must end with a user message, "
                            f"got {clean[-1]['role']!r}", line)
        out = {"input": clean}
        for column in ("preferred_output", "non_preferred_output"):
            reply = obj[column]
            if not isinstance(reply, list) or len(reply) != 1:
                got = f"{len(reply)} messages" if isinstance(reply, list) else _type_name(reply)
                raise self.fail("invalid_messages", f"{column} must be a list of one assistant message, got {got}",
                                line)
            message = self._message(reply[0], f"{column}[0]", line)
            if message["role"] != "assistant":
                raise self.fail("invalid_messages", f"{column}[0].role must be 'assistant', got "
                                f"{message['role']!r}", line)
            if not message["content"].strip():
                raise self.fail("invalid_messages", f"{column}[0].content must not be empty", line)
            out[column] = message["content"]
        if out["preferred_output"] == out["non_preferred_output"]:
            raise self.fail("invalid_messages", "preferred_output and non_preferred_output are the same reply; "
                            "a preference pair needs two different replies", line)
        return out

    def _message(self, message: Any, where: str, line: int) -> dict:
        if not isinstance(message, dict):
            raise self.fail("invalid_messages", f"{where} must be an object, got {_type_name(message)}", line)
        for key in ("role", "content"):
            if key not in message:
                raise self.fail("invalid_messages", f"{where} has no {key!r}", line)
        if message["role"] not in ROLES:
            raise self.fail("invalid_messages", f"{where}.role must be one of {', '.join(ROLES)}, "
                            f"got {message['role']!r}", line)
        if not isinstance(message["content"], str):
            raise self.fail("invalid_messages", f"{where}.content must be a string, got "
                            f"{_type_name(message['content'])}", line)
        return {"role": message["role"], "content": message["content"]}


def load_examples(path: Path, *, task: str | None, param: str) -> Examples:
    """Read and validate a JSONL data file. ``task`` None infers it from the format.

    Raises :class:`DataError` (with ``code``, ``param``, ``line``) on the first problem found.
    """
    reader = _Reader(param)
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise reader.fail("invalid_file_format", f"cannot read the file: {exc.strerror or exc}") from exc
    if _looks_like_csv(raw):
        return _load_csv(reader, raw, task=task, param=param)

    rows: list[dict] = []
    lines: list[int] = []
    fmt: str | None = None
    fmt_line = 0
    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise reader.fail("invalid_file_format", f"not valid UTF-8 ({exc.reason} at byte {exc.start})", number) from exc
        if number == 1:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise reader.fail("invalid_file_format", f"not valid JSON: {exc.msg} (column {exc.colno})", number) from exc
        if not isinstance(obj, dict):
            raise reader.fail("invalid_file_format", f"expected a JSON object, got {_type_name(obj)}", number)
        line_fmt = _detect_format(obj)
        if line_fmt is None:
            keys = ", ".join(repr(k) for k in list(obj)[:8]) or "none"
            raise reader.fail(
                "invalid_file_format",
                "unrecognised columns "
                f"({keys}); expected text+label, messages, prompt+completion, or "
                "input+preferred_output+non_preferred_output",
                number,
            )
        if fmt is None:
            fmt, fmt_line = line_fmt, number
        elif line_fmt != fmt:
            raise reader.fail(
                "invalid_file_format",
                f"looks like {_describe(line_fmt)} but line {fmt_line} is {_describe(fmt)}; "
                "all lines must share one format",
                number,
            )
        for column in FORMAT_COLUMNS[fmt]:
            if column not in obj:
                raise reader.fail("missing_column", f"missing column {column!r}", number)
        rows.append(getattr(reader, fmt)(obj, number))
        lines.append(number)

    return _finish(reader, rows, lines, fmt, task=task, param=param)


def _looks_like_csv(raw: bytes) -> bool:
    for raw_line in raw.split(b"\n"):
        text = raw_line.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
        if text:
            return not text.startswith("{")
    return False


def _load_csv(reader: _Reader, raw: bytes, *, task: str | None, param: str) -> Examples:
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise reader.fail("invalid_file_format", f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line) from exc
    parser = csv.reader(io.StringIO(text, newline=""))
    rows: list[dict] = []
    lines: list[int] = []
    header: list[str] | None = None
    consumed = 0  # file lines read so far: the next record starts on consumed + 1
    try:
        for record in parser:
            start, consumed = consumed + 1, parser.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                missing = [c for c in FORMAT_COLUMNS[CLASSIFICATION] if c not in header]
                if missing:
                    raise reader.fail(
                        "missing_column",
                        f"the CSV header must name the columns text and label; missing {', '.join(missing)} "
                        f"(found {', '.join(repr(c) for c in header[:8])}); CSV is for classification only",
                        start,
                    )
                continue
            if len(record) != len(header):
                raise reader.fail(
                    "invalid_file_format", f"expected {len(header)} fields as in the header, got {len(record)}", start
                )
            obj = dict(zip(header, record))
            rows.append(reader.classification(obj, start))
            lines.append(start)
    except csv.Error as exc:
        raise reader.fail("invalid_file_format", f"not valid CSV: {exc}", parser.line_num or None) from exc
    if header is None or not rows:
        raise reader.fail("empty_file", "the file has no examples")
    return _finish(reader, rows, lines, CLASSIFICATION, task=task, param=param)


def _finish(reader: _Reader, rows: list[dict], lines: list[int], fmt: str | None, *, task: str | None,
            param: str) -> Examples:
    if fmt is None:
        raise reader.fail("empty_file", "the file has no examples")
    inferred = FORMAT_TASKS[fmt]
    if task is not None and task != inferred:
        raise DataError(
            f"task {task!r} does not fit the {param} format {_describe(fmt)}, which trains {inferred!r}",
            code="invalid_task",
            param="task",
        )

    labels: list[str] = []
    if fmt == CLASSIFICATION:
        labels = sorted_labels(row["label"] for row in rows)
        if len(labels) < 2 and param != "validation_file":
            raise reader.fail(
                "invalid_label", f"classification needs at least 2 distinct labels, found only {labels[0]!r}"
            )
    notes = [note for note in [reader.spellings.warning()] if note]
    return Examples(task=inferred, format=fmt, rows=rows, labels=labels, lines=lines, notes=notes)


def check_validation(train: Examples, valid: Examples, *, param: str = "validation_file") -> None:
    """The validation file must train the same task and use only labels the training file has."""
    if valid.task != train.task:
        raise DataError(
            f"the {param} trains {valid.task!r} but the training file trains {train.task!r}",
            code="invalid_file_format",
            param=param,
        )
    known = set(train.labels)
    for row, line in zip(valid.rows, valid.lines or [None] * len(valid.rows)):
        if train.task == SEQUENCE_CLASSIFICATION and row["label"] not in known:
            message = f"label {row['label']!r} does not occur in the training file"
            raise DataError(
                f"line {line}: {message}" if line else message, code="invalid_label", param=param, line=line
            )


def check_method(examples: Examples, *, method: str, param: str) -> None:
    """Preference pairs train with method ``dpo`` and nothing else does: a mismatch names what to change."""
    if method == "dpo" and examples.format != PREFERENCE:
        raise DataError(
            f"method type 'dpo' trains on preference pairs ({_describe(PREFERENCE)}), but the {param} is "
            f"{_describe(examples.format)}",
            code="invalid_file_format", param=param,
        )
    if method != "dpo" and examples.format == PREFERENCE:
        raise DataError(
            f"the {param} holds preference pairs, which train with method type 'dpo', not {method!r}",
            code="invalid_file_format", param="method",
        )
