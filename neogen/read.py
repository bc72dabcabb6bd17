"""Reading labeled tables (CSV, TSV, JSONL, Parquet) and finding their text and label columns.

Every example remembers the file and line it came from, so that any later complaint about it can say where to
look. Column detection mirrors the tutorial's data utility: free text has many distinct, long values; a label
column has few distinct, short ones.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neogen.errors import DataError
from neogen.prompt import strip_text

logger = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Example:
    """One labeled text and where it was read from."""

    text: str
    label: str
    source: str
    line: int


@dataclass(frozen=True)
class ColumnChoice:
    """Which columns hold the text and the label, and why they were chosen."""

    text: str
    label: str
    reason: str
    prompt_completion: bool = False


def file_format(path: str | Path) -> str:
    """The format of a data file, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(path, None, f"unknown file type '{suffix}'", "use .csv, .tsv, .jsonl or .parquet")
    return FORMATS[suffix]


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for every row of a table file; line numbers are 1-based physical lines."""
    path = Path(path)
    fmt = file_format(path)
    if not path.exists():
        raise DataError(path, None, "file not found", "check the path (relative paths are from the current folder)")
    if fmt in ("csv", "tsv"):
        yield from _read_delimited(path, "\t" if fmt == "tsv" else ",")
    elif fmt == "jsonl":
        yield from _read_jsonl(path)
    else:
        yield from _read_parquet(path)


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(path, 1, "the file is empty", "add a header row and data rows") from None
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise DataError(path, 1, f"duplicate column names in header {header}", "give every column its own name")
        start = reader.line_num + 1
        try:
            for row in reader:
                if row:
                    if len(row) != len(header):
                        raise DataError(
                            path, start, f"expected {len(header)} fields (header {header}), found {len(row)}",
                            "quote fields that contain the delimiter, or fix the row",
                        )
                    yield start, dict(zip(header, row, strict=True))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(path, start, f"malformed CSV: {e}", "check the quoting of this row") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, number, f"invalid JSON: {e.msg}", "write one JSON object per line") from None
            if not isinstance(record, dict):
                raise DataError(path, number, "line is not a JSON object",
                                'write one object per line, like {"text": ..., "label": ...}')
            yield number, record


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    # Parquet has no lines; the "line" is the 1-based row number.
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield number, record


def detect_columns(
    path: str | Path,
    records: list[tuple[int, dict[str, Any]]],
    text_column: str | None = None,
    label_column: str | None = None,
) -> ColumnChoice:
    """Choose the text and label columns: the user's names when given, else free text vs. few distinct values."""
    if not records:
        raise DataError(path, None, "no rows", "the file needs a header and at least one data row")
    columns = list(records[0][1].keys())
    for name, given in (("text", text_column), ("label", label_column)):
        if given is not None and given not in columns:
            raise DataError(path, records[0][0], f"no {name} column '{given}'; columns are {columns}",
                            f"set the {name} column to one of {columns}")
    if text_column is None and label_column is None and {"prompt", "completion"} <= set(columns):
        return ColumnChoice("prompt", "completion", "prompt/completion JSONL (OpenAI fine-tune format)", True)

    stats = {c: _column_stats([r.get(c) for _, r in records]) for c in columns}
    reasons = []
    if text_column is None:
        candidates = [c for c in columns if c != label_column]
        if not candidates:
            raise DataError(path, None, "no column left for the text", "name the text column")
        text_column = max(candidates, key=lambda c: (stats[c]["distinct"] > 0.5, stats[c]["mean_len"]))
        s = stats[text_column]
        reasons.append(f"text column '{text_column}': longest values (mean {s['mean_len']:.0f} chars, "
                       f"{s['distinct']:.0%} distinct)")
    if label_column is None:
        candidates = [c for c in columns if c != text_column and stats[c]["n_distinct"] >= 2]
        if not candidates:
            raise DataError(path, None, f"no label column besides '{text_column}' with two or more values",
                            "name the label column")
        label_column = min(candidates, key=lambda c: (stats[c]["n_distinct"], stats[c]["mean_len"]))
        s = stats[label_column]
        reasons.append(f"label column '{label_column}': fewest distinct values ({s['n_distinct']})")
    reason = "; ".join(reasons) if reasons else "columns named by the user"
    return ColumnChoice(text_column, label_column, reason)


def _column_stats(values: list[Any]) -> dict[str, float]:
    strings = [str(v) for v in values if v is not None]
    n_distinct = len(set(strings))
    return {
        "n_distinct": n_distinct,
        "distinct": n_distinct / max(len(strings), 1),
        "mean_len": sum(map(len, strings)) / max(len(strings), 1),
    }


def load_examples(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    require_label: bool = True,
) -> tuple[list[Example], ColumnChoice]:
    """Read a labeled table into examples. A missing label is an error naming the line, never a silent drop."""
    records = list(read_records(path))
    choice = detect_columns(path, records, text_column, label_column)
    examples = []
    for line, record in records:
        text = record.get(choice.text)
        # Prepared files carry the original label beside its completion (which may be an alias).
        label = record.get("label", record.get(choice.label)) if choice.prompt_completion else record.get(choice.label)
        text = "" if text is None else str(text)
        if choice.prompt_completion:
            text = strip_text(text)  # an OpenAI prompt ends in the separator
        label = "" if label is None else str(label).strip()
        if require_label and not label:
            raise DataError(path, line, f"no label in column '{choice.label}'",
                            "fill in the label or remove the row")
        examples.append(Example(text.strip(), label, str(path), line))
    return examples, choice
