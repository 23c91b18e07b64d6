"""JSONL files for export and import."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from memlane.errors import ImportFormatError


def write_jsonl(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write one JSON object per line; returns the number of lines."""
    n = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        n += 1
    return n


def read_numbered_jsonl(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(file line number, row) of JSONL, skipping blank lines; a bad line raises
    ImportFormatError with its number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"not valid JSON: {exc.msg}", line=number) from exc
        except (ValueError, RecursionError) as exc:
            raise ImportFormatError("JSON too large or too deeply nested", line=number) from exc
        if not isinstance(row, dict):
            raise ImportFormatError("each line must be a JSON object", line=number)
        yield number, row
