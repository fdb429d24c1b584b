"""Reading files with errors that point at the exact place that is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metarag.errors import DataError


def read_text(path: str | Path) -> str:
    """Read a UTF-8 file; on bad bytes, name the line and column of the first one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            path, f"line {line}, column {col} (byte {err.start})",
            f"not valid UTF-8 ({err.reason}, byte 0x{raw[err.start]:02x}); "
            "re-encode the file as UTF-8",
        ) from None


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, reporting syntax errors with their line and column."""
    text = read_text(path)
    if not text.strip():
        raise DataError(path, None, "the file is empty")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise DataError(path, f"line {err.lineno}, column {err.colno}",
                        f"malformed JSON: {err.msg}") from None
    except _DuplicateKey as dup:
        # json silently keeps the last value of a repeated key; for sources keyed
        # by id (PubMedQA's PMIDs) that would drop an item without a word.
        raise DataError(path, None, f"duplicate key {dup.args[0]!r} in a JSON object") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file (one object per line; blank lines allowed)."""
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, f"line {lineno}, column {err.colno}",
                            f"malformed JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise DataError(path, f"line {lineno}",
                            f"expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise DataError(path, None, "the file has no records")
    return rows


def require(record: Any, key: str, source: object, where: str, kind: type | tuple = object) -> Any:
    """Return ``record[key]``, or raise DataError naming the missing/mistyped field."""
    if not isinstance(record, dict):
        raise DataError(source, where, f"expected an object, got {type(record).__name__}")
    if key not in record:
        raise DataError(source, where, f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(source, f"{where}.{key}",
                        f"expected {names}, got {type(value).__name__}")
    return value
