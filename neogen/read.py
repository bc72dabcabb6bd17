"""Reading labeled tables (CSV, TSV, JSONL, Parquet) and finding their text and label columns.

Every example remembers the file and line it came from, so that any later complaint about it can say where to
look. Column detection goes by name first (a column named `text`, `sentence`, ... is the text, one named `label`,
`class`, ... the label), then mirrors the tutorial's data utility: free text has many distinct, long values; a
label column has few distinct, short ones. What counts as a text is one rule, `text_value`, shared with scoring.

Multi-label data comes in three common shapes, all detected and reported: a label column whose values join several
labels with a separator (`anger,joy`), one 0/1 column per label (`text,anger,joy,...`), and JSONL whose label field
is a list. Each example then carries its set of labels, sorted.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neogen.errors import DataError
from neogen.prompt import strip_text

logger = logging.getLogger(__name__)

SEPARATORS = (",", ";", "|")
LABEL_JOIN = ","  # joins a label set into one key (duplicate detection, stratification, powerset class names)
TRUE_VALUES = {"1", "1.0", "true", "yes"}
FALSE_VALUES = {"0", "0.0", "false", "no", ""}

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
# Column names that say "the label" (compared in lower case): such a column wins detection over a guess from its
# values, and is never taken for a 0/1 flag of a multi-label file.
LABEL_NAMES = ("label", "labels", "class", "category", "target")
# Column names that say "the text": such a column is the text before any statistics, even beside longer labels.
TEXT_NAMES = ("text", "texts", "sentence", "question", "prompt", "review", "comment", "content", "body", "document",
              "utterance", "query", "message", "tweet")
JSON_SPACE = " \t\r\n"  # the only whitespace JSON allows around a value
CSV_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")  # a line as the csv module counts them
# \uD800-\uDFFF as a JSON escape: only lines holding one can carry a lone surrogate (half of a character).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Example:
    """One labeled text and where it was read from."""

    text: str
    label: str  # single-label: the class; multi-label: the sorted label set joined by LABEL_JOIN
    source: str
    line: int
    labels: tuple[str, ...] | None = None  # multi-label only: the sorted, distinct labels (empty when allowed)
    completion: str | None = None  # prepared single-label rows: the completion beside the label (an alias or word)

    @property
    def multi_label(self) -> bool:
        return self.labels is not None


def label_key(labels: tuple[str, ...] | list[str]) -> str:
    """The one-string key of a label set: sorted labels joined by LABEL_JOIN."""
    return LABEL_JOIN.join(sorted(labels))


@dataclass(frozen=True)
class ColumnChoice:
    """Which columns hold the text and the label(s), and why they were chosen."""

    text: str
    label: str  # the label column; for 0/1 columns, their names joined by LABEL_JOIN
    reason: str
    prompt_completion: bool = False
    multi_label: bool = False
    label_columns: tuple[str, ...] = ()  # multi-label, one 0/1 column per label
    label_separator: str | None = None  # multi-label, several labels joined in one column


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
    try:
        if fmt in ("csv", "tsv"):
            yield from _read_delimited(path, "\t" if fmt == "tsv" else ",")
        elif fmt == "jsonl":
            yield from _read_jsonl(path)
        else:
            yield from _read_parquet(path)
    except UnicodeDecodeError:  # the text formats are read as UTF-8
        raise _not_utf8(path, fmt) from None


def _not_utf8(path: Path, fmt: str) -> DataError:
    """The error for a file that is not UTF-8, at its first undecodable line (found again only on this path).

    Lines are counted as the readers count them: JSONL's end at \\n alone, CSV/TSV's at \\r too (the csv module
    reads a classic Mac file of \\r line ends row by row).
    """
    number = 0
    with path.open("rb") as f:
        for chunk in f:
            for raw in CSV_LINE.findall(chunk) if fmt != "jsonl" else [chunk]:
                number += 1
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return DataError(path, number, f"not UTF-8: byte 0x{raw[e.start]:02x} at byte {e.start + 1} of "
                                     "the line", "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`)")
    return DataError(path, None, "not UTF-8", "save the file as UTF-8")


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any]]]:
    # A long text is no malformed row: lift the csv module's 128 KiB field limit (a C long on every platform).
    csv.field_size_limit(2**31 - 1)
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
                    if delimiter == "\t" and any("\t" in v and "\n" in v for v in row):
                        # Only a quote left open makes a TSV field span tabs and lines: rows merged into one.
                        raise DataError(path, start, f"a quoted field runs over lines {start}-{reader.line_num}, "
                                        "swallowing tabs and rows", "close the quote, or double a quote that is "
                                        'part of the text (""); unquoted TSV text must not start with a quote')
                    yield start, dict(zip(header, row, strict=True))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(path, start, f"malformed CSV: {e}", "check the quoting of this row") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # -sig: a leading byte-order mark is not part of the JSON. newline="\n": lines end in \n alone, as score reads
    # them; a lone \r is JSON whitespace inside a line, not the end of one.
    with path.open(encoding="utf-8-sig", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            if blank_line(line):
                continue
            try:
                record = parse_json_line(line)
            except ValueError as e:
                raise DataError(path, number, f"invalid JSON: {e.msg if isinstance(e, json.JSONDecodeError) else e}",
                                "write one JSON object per line") from None
            if not isinstance(record, dict):
                raise DataError(path, number, "line is not a JSON object",
                                'write one object per line, like {"text": ..., "label": ...}')
            surrogate = lone_surrogate(line, record)
            if surrogate:
                raise DataError(path, number, f"the line holds a lone UTF-16 surrogate {surrogate} (half of a "
                                "character)", "remove it or write the whole character")
            yield number, record


def blank_line(line: str) -> bool:
    """Whether a JSONL line holds no record: nothing but JSON whitespace (space, tab, line ends). Other blanks
    (U+00A0, U+2028, \\x1c, which str.strip() also removes) are no JSON, so such a line is malformed, not skipped."""
    return not line.strip(JSON_SPACE)


def parse_json_line(line: str) -> Any:
    """One JSONL line's value, for the readers and score alike; every failure is a ValueError with the reason.

    json's own failures are ValueErrors already (a JSONDecodeError; an integer of more digits than int() takes); a
    value nested deeper than Python's recursion limit becomes one too, one more malformed line, not a crash.
    """
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def lone_surrogate(line: str, record: dict[str, Any]) -> str | None:
    """The first lone UTF-16 surrogate of a parsed JSON line, as its escape ("\\ud83d": half an emoji cut by a tool
    counting UTF-16 units), else None. It parses, but no tokenizer or UTF-8 file takes it. Only lines holding such
    an escape pay for the check: JSON written with ensure_ascii escapes every non-ASCII character, so a test for any
    "\\u" would encode most lines of such files twice."""
    if not SURROGATE_ESCAPE.search(line):  # valid UTF-8 decodes to no surrogate; only an escape makes one
        return None
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return f"\\u{ord(e.object[e.start]):04x}"
    return None


def _read_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    # Parquet has no lines; the "line" is the 1-based row number.
    number = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                number += 1
                yield number, record
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataError(path, number + 1 if number else None, f"not a readable Parquet file: {e}",
                        "write it again with pyarrow or pandas, or use CSV/JSONL") from None


def detect_columns(
    path: str | Path,
    records: list[tuple[int, dict[str, Any]]],
    text_column: str | None = None,
    label_column: str | None = None,
    multi_label: bool | None = None,
    label_separator: str | None = None,
    known_labels: Iterable[str] = (),
) -> ColumnChoice:
    """Choose the text and label columns: the user's names when given, then the columns' own names (TEXT_NAMES,
    LABEL_NAMES), and only then their values: free text vs. few distinct values.

    `multi_label` None detects the multi-label shapes; False reads one label per row; True requires labels sets
    (a label column without a separator then gives one-label sets). `known_labels` (a trained run's) count as
    whole values when a separator is detected, so a test file whose every row holds several labels is split too.
    """
    if not records:
        raise DataError(path, None, "no rows", "the file needs a header and at least one data row")
    columns = list(records[0][1].keys())
    # "toxic,obscene,insult" names one 0/1 column per label (a column of that exact name wins).
    named = tuple(c.strip() for c in label_column.split(LABEL_JOIN)) \
        if label_column and label_column not in columns and LABEL_JOIN in label_column else ()
    _check_given_columns(path, records, columns, text_column, named or (label_column,))
    if named and multi_label is False:
        raise DataError(path, None, f"label columns {list(named)} name one 0/1 column per label, which is "
                        "multi-label data", "name a single label column, or drop data.multi_label=false")
    if text_column is None and label_column is None and {"prompt", "completion"} <= set(columns):
        # Prepared multi-label files carry the label set as a list under "labels".
        multi = multi_label is not False and "labels" in columns
        return ColumnChoice("prompt", "labels" if multi else "completion",
                            "prompt/completion JSONL (OpenAI fine-tune format)", True, multi_label=multi)
    stats = {c: _column_stats([r.get(c) for _, r in records]) for c in columns}
    reasons = []
    if text_column is None:
        text_column, why = _choose_text_column(path, stats, label_column, named)
        reasons.append(why)
    if named:
        reasons.append(f"multi-label: one 0/1 column per label ({list(named)})")
        return ColumnChoice(text_column, LABEL_JOIN.join(named), "; ".join(reasons), multi_label=True,
                            label_columns=named)
    named_labels = [c for c in columns if c != text_column and c.strip().lower() in LABEL_NAMES]
    if label_column is None and multi_label is not False:
        flags = _flag_columns(path, records, stats, text_column, named_labels)
        if flags:
            reasons.append(f"multi-label: {len(flags)} columns hold only 0/1 values, one per label ({flags[:6]}"
                           f"{' ...' if len(flags) > 6 else ''})")
            return ColumnChoice(text_column, LABEL_JOIN.join(flags), "; ".join(reasons), multi_label=True,
                                label_columns=tuple(flags))
    if label_column is None:
        label_column = _choose_label_column(path, records, stats, text_column, named_labels)
        s = stats[label_column]
        reasons.append(f"label column '{label_column}': " + (
            f"named so ({_describe(s)})" if label_column in named_labels else "lists of labels" if s["lists"] else
            f"fewest distinct values ({s['n_distinct']})"))
    return _label_shape(path, records, text_column, label_column, reasons, multi_label, label_separator,
                        known_labels)


def _check_given_columns(path: str | Path, records: list[tuple[int, dict[str, Any]]], columns: list[str],
                         text_column: str | None, label_columns: Iterable[str | None]) -> None:
    """Refuse a text or label column the user named that the file lacks, listing the columns it has."""
    for name, given in (("text", text_column), *(("label", c) for c in label_columns)):
        if given is not None and given not in columns:
            prepared = {"prompt", "completion"} <= set(columns)  # `neogen prepare` output: read without names
            raise DataError(path, records[0][0], f"no {name} column '{given}'; columns are {columns}",
                            "a prepared prompt/completion file is read without column names: set "
                            "data.text_column=null data.label_column=null" if prepared else
                            f"set the {name} column to one of {columns}")


def _choose_text_column(path: str | Path, stats: dict[str, Any], label_column: str | None,
                        named: tuple[str, ...]) -> tuple[str, str]:
    """The text column and why it was chosen.

    A column named as a text (TEXT_NAMES) is the text before any statistics: intent names can be longer and as
    distinct as the short texts they label. Failing that, the longest, mostly distinct values win, among the columns
    not named as a label (LABEL_NAMES) and not holding mostly lists (label sets).
    """
    free = [c for c in stats if c != label_column and c not in named]
    by_name = [c for c in free if c.strip().lower() in TEXT_NAMES]
    candidates = by_name or [c for c in free if c.strip().lower() not in LABEL_NAMES and not stats[c]["lists"]]
    if not candidates:
        raise DataError(path, None, "no column left for the text", "name the text column")
    text = max(candidates, key=lambda c: (stats[c]["distinct"] > 0.5, stats[c]["mean_len"]))
    if by_name:
        return text, f"text column '{text}': named so" + (f" (longest of {by_name})" if len(by_name) > 1 else "")
    s = stats[text]
    return text, f"text column '{text}': longest values (mean {s['mean_len']:.0f} chars, {s['distinct']:.0%} distinct)"


def _flag_columns(path: str | Path, records: list[tuple[int, dict[str, Any]]], stats: dict[str, Any],
                  text_column: str, named_labels: list[str]) -> list[str]:
    """The 0/1 columns of a multi-label file (one per label), or [] when fewer than two columns hold only 0/1.

    A column named `label` is the label even when it holds 0/1 (binary classification), never a flag. A column of
    few repeated values beside the 0/1 ones may be the real label, the flags mere metadata
    (`text,label,verified,has_url`): a guess either way could train on the wrong target, so the user is asked.
    """
    binary = [c for c in stats if c != text_column and c not in named_labels
              and _is_binary([r.get(c) for _, r in records])]
    if len(binary) < 2:
        return []
    rival = [c for c in stats if c != text_column and c not in binary and stats[c]["n_distinct"] >= 2
             and (stats[c]["lists"] or stats[c]["distinct"] <= 0.5)]
    if rival:
        raise DataError(path, None, f"column '{rival[0]}'{_stray_flag(records, rival[0])} and the 0/1 columns "
                        f"{binary} could each hold the labels",
                        f"name them: data.label_column={rival[0]} (--label-column for prepare, eval) "
                        f"for one label per row, or data.label_column={LABEL_JOIN.join(binary)} for one 0/1 "
                        "column per label")
    return binary


def _label_shape(path: str | Path, records: list[tuple[int, dict[str, Any]]], text_column: str, label_column: str,
                 reasons: list[str], multi_label: bool | None, label_separator: str | None,
                 known_labels: Iterable[str]) -> ColumnChoice:
    """The chosen columns with the label column's shape: label lists, labels joined by a separator, or one label."""
    values = [r.get(label_column) for _, r in records]

    def multi(why: str, **shape: Any) -> ColumnChoice:
        return ColumnChoice(text_column, label_column, "; ".join([*reasons, why]), multi_label=True, **shape)

    single = ColumnChoice(text_column, label_column, "; ".join(reasons) or "columns named by the user")
    if any(isinstance(v, list) for v in values):
        if multi_label is False:
            line = next(n for n, r in records if isinstance(r.get(label_column), list))
            raise DataError(path, line, f"the label in column '{label_column}' is a list",
                            "set data.multi_label=true (or --multi-label) to train on label sets")
        return multi("multi-label: the label column holds lists")
    if multi_label is False:
        return single
    separator = label_separator or _detect_separator([str(v) for v in values if v is not None], known_labels)
    if separator is not None:
        return multi(f"multi-label: labels joined by '{separator}'" + ("" if label_separator else
                     f" ({sum(separator in str(v) for v in values)} rows hold several)"), label_separator=separator)
    return multi("multi-label: one label per row") if multi_label else single


def _choose_label_column(path: str | Path, records: list[tuple[int, dict[str, Any]]], stats: dict[str, Any],
                         text_column: str, named_labels: list[str]) -> str:
    """The one column that can hold the labels; when two could, the user names it rather than a guess.

    A column named `label` (or labels, class, category, target) wins, unless another holds lists of labels.
    Otherwise the plausible columns are those of lists or of repeated values (at most half distinct), or in files
    too small for that, those of two values or more; with one, it is the label.
    """
    others = [c for c in stats if c != text_column]
    lists = [c for c in others if stats[c]["lists"]]
    if len(named_labels) == 1 and set(lists) <= set(named_labels):
        return named_labels[0]
    # Too few rows for repeated values to show (every column mostly distinct): any column of two values or more.
    plausible = list(dict.fromkeys(named_labels + lists)) or [
        c for c in others if stats[c]["n_distinct"] >= 2 and stats[c]["distinct"] <= 0.5] or [
        c for c in others if stats[c]["n_distinct"] >= 2]
    if len(plausible) > 1:
        hints = ", ".join(f"'{c}' ({_describe(stats[c])}{_stray_flag(records, c)})" for c in plausible)
        raise DataError(path, None, f"columns {hints} could each hold the labels",
                        f"name it: data.label_column={plausible[0]} (--label-column for prepare, eval)")
    if not plausible:
        raise DataError(path, None, f"no label column besides '{text_column}' with two or more values",
                        "name the label column")
    return plausible[0]


def _describe(stat: dict[str, Any]) -> str:
    return "lists of labels" if stat["lists"] else f"{stat['n_distinct']} distinct values"


def _stray_flag(records: list[tuple[int, dict[str, Any]]], column: str) -> str:
    """', 0/1 except VALUE at line N' for a column of 0/1 cells but one or two: likely a typo in a flag column."""
    stray = [(line, r.get(column)) for line, r in records if _flag(r.get(column)) is None]
    if not stray or len(stray) > max(2, len(records) // 100):
        return ""
    line, value = stray[0]
    return f", 0/1 except {value!r} at line {line}"


def _column_stats(values: list[Any]) -> dict[str, float]:
    strings = [str(v) for v in values if v is not None]
    n_distinct = len(set(strings))
    return {
        "n_distinct": n_distinct,
        "distinct": n_distinct / max(len(strings), 1),
        "mean_len": sum(map(len, strings)) / max(len(strings), 1),
        # A column of label sets holds mostly lists; one stray list is a bad cell, left for its line to name.
        "lists": sum(isinstance(v, list) for v in values) > len(strings) / 2,
    }


def _is_binary(values: list[Any]) -> bool:
    """Every value reads as 0 or 1, and both occur."""
    seen = set()
    for v in values:
        flag = _flag(v)
        if flag is None:
            return False
        seen.add(flag)
    return seen == {False, True}


def _flag(value: Any) -> bool | None:
    """A 0/1 cell as a bool; None when it is neither."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    return True if text in TRUE_VALUES else False if text in FALSE_VALUES else None


def _detect_separator(values: list[str], known: Iterable[str] = ()) -> str | None:
    """The separator joining several labels in one cell, if any.

    A separator must split some values into parts most of which also occur as whole values elsewhere, so a label
    with commas ("Washington, D.C." beside "Washington") is not mistaken for a label set; a few parts may occur
    only in sets (a rare label never given alone).
    """
    whole = {v.strip() for v in values} | {str(k).strip() for k in known}
    best, best_count = None, 0
    for sep in SEPARATORS:
        joined = [v for v in values if sep in v]
        if not joined:
            continue
        parts = {p.strip() for v in joined for p in v.split(sep) if p.strip()}
        if parts and len(parts & whole) > len(parts) / 2 and len(joined) > best_count:
            best, best_count = sep, len(joined)
    return best


def load_examples(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    require_label: bool = True,
    multi_label: bool | None = None,
    label_separator: str | None = None,
    allow_empty: bool = False,
    known_labels: Iterable[str] = (),
) -> tuple[list[Example], ColumnChoice]:
    """Read a labeled table into examples. A missing label, or a text that text_value refuses, is an error naming
    the line, never a silent drop."""
    records = list(read_records(path))
    choice = detect_columns(path, records, text_column, label_column, multi_label, label_separator, known_labels)
    examples = []
    for line, record in records:
        text = _text(path, line, record, choice)
        if choice.multi_label:
            labels = _label_set(path, line, record, choice)
            if require_label and not labels and not allow_empty:
                raise DataError(path, line, f"no label in {_where(choice)}",
                                "give the row at least one label, or set data.allow_empty=true if texts may "
                                "carry no label")
            examples.append(Example(text, label_key(labels), str(path), line, labels))
            continue
        # Prepared files carry the original label beside its completion (which may be an alias).
        label = record.get("label", record.get(choice.label)) if choice.prompt_completion else record.get(choice.label)
        label = _cell(path, line, choice.label, label).strip()
        if require_label and not label:
            raise DataError(path, line, f"no label in column '{choice.label}'",
                            "fill in the label or remove the row")
        # A prepared row's completion may be a chosen word or alias; training keeps it (prepare.prepared_words).
        completion = record.get("completion") if choice.prompt_completion and "label" in record else None
        examples.append(Example(text, label, str(path), line, completion=completion and str(completion)))
    return examples, choice


class TextRefused(ValueError):
    """A value that is no text to classify: the message is the reason, `fix` how to mend the row."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


def text_value(value: Any, field: str = "text") -> str:
    """The text to classify that one cell or JSON value holds: the one rule of prepare, train, eval and score.

    A text is a string (a JSON string in JSONL, any CSV/TSV cell, a Parquet string or UTF-8 bytes) that holds more
    than whitespace, since the model reads it stripped. Anything else is refused, with the same reason on every path
    (TextRefused): null or NaN (a missing value), an empty or whitespace-only text, a number or boolean, a list or
    object. Numbers are not read as text: parsing JSON loses their spelling (`1.0`, `1e3`, `1.10`), so the model
    would read other characters than the file holds, and a number where a text belongs is usually the wrong field.
    A refused text stops prepare, train and eval at its file:line, as a missing label does; score stops there too,
    or with --rejects sets the line aside with the reason, so no text is ever dropped unseen. Returns the string as
    given, unstripped.
    """
    if isinstance(value, bytes):  # a Parquet binary column
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TextRefused(f"'{field}' holds bytes that are not UTF-8", "store the column as UTF-8 text") from None
    if isinstance(value, str):
        if value.strip():
            return value
        raise TextRefused(f"'{field}' {'holds only whitespace' if value else 'is empty'}",
                          "write the text, or remove the row")
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    fix = ("write one string per text (a list of labels belongs in the label column)" if isinstance(value, list | dict)
           else "write the text, or remove the row" if missing
           else 'write the text as a string (in JSON, in quotes: "42"), or remove the row')
    raise TextRefused(f"'{field}' is {_kind(value)}, not a string", fix)


def _kind(value: Any) -> str:
    """What a value that is no string is, for a message: `null`, `a number (42)`, `a list (["a", "b"])`."""
    if value is None:
        return "null"
    if isinstance(value, float) and math.isnan(value):
        return "NaN (a missing value)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, list | dict):
        try:
            spelled = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):  # values JSON cannot write (Parquet structs of dates)
            spelled = repr(value)
        return f"{'a list' if isinstance(value, list) else 'an object'} ({_clip(spelled)})"
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(path: str | Path, line: int, record: dict[str, Any], choice: ColumnChoice) -> str:
    """The row's text, stripped (an OpenAI prompt also of its separator); text_value's refusal names the line."""
    if choice.text not in record:  # JSONL: a missing field is a mistake to show, not an empty text to drop
        raise DataError(path, line, f"no field '{choice.text}' (fields: {sorted(record)})",
                        f"add the '{choice.text}' field, or remove the line")
    try:
        text = text_value(record[choice.text], choice.text)
    except TextRefused as e:
        raise DataError(path, line, e.reason, e.fix) from None
    return strip_text(text) if choice.prompt_completion else text.strip()


def _cell(path: str | Path, line: int, column: str, value: Any) -> str:
    """A label cell as a string: null and NaN (a missing value in pandas/Parquet) are empty, bytes are UTF-8; a
    list or object is refused rather than trained on as its Python spelling."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(path, line, f"column '{column}' holds bytes that are not UTF-8",
                            "store the column as UTF-8 text") from None
    if isinstance(value, list | dict):
        raise DataError(path, line, f"column '{column}' holds a {type(value).__name__} ({str(value)[:60]}), not "
                        "a single value", "write one string per cell (label sets: a list in the label column of a "
                        "multi-label file)")
    return str(value)


def _where(choice: ColumnChoice) -> str:
    return f"columns {list(choice.label_columns)}" if choice.label_columns else f"column '{choice.label}'"


def _label_set(path: str | Path, line: int, record: dict[str, Any], choice: ColumnChoice) -> tuple[str, ...]:
    """The sorted, distinct labels of one multi-label row, in whichever of the three shapes it comes."""
    if choice.label_columns:
        labels = []
        for column in choice.label_columns:
            flag = _flag(record.get(column))
            if flag is None:
                raise DataError(path, line, f"column '{column}' holds {record.get(column)!r}, not 0 or 1",
                                "write 0 or 1 in every label column")
            if flag:
                labels.append(column)
        return tuple(sorted(labels))
    value = record.get(choice.label)
    if isinstance(value, list):
        if any(isinstance(v, list | dict) for v in value):
            raise DataError(path, line, f"the label list {value!r} holds nested values",
                            'write a flat list of label names, like ["anger", "joy"]')
        parts = [str(v).strip() for v in value if v is not None]
    elif value is None:
        parts = []
    elif choice.label_separator:
        parts = [p.strip() for p in str(value).split(choice.label_separator)]
    else:
        parts = [str(value).strip()]
    return tuple(sorted({p for p in parts if p}))
