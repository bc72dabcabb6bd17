"""Property-based tests of the readers and of `score` on generated files (hypothesis).

The invariant: every input line ends up in the output, in order, or in the rejects file with a reason, or the run
stops with a DataError (a NeogenError) naming the file and line; never another exception, never a lost line.

The profile is fixed (derandomized, no example database, bounded examples), so every run tries the same cases and
the suite stays deterministic; FUZZ_CASES counts the generated cases it runs.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from neogen.classify import Classifier
from neogen.errors import DataError, NeogenError
from neogen.read import load_examples, read_records
from neogen.score import score_jsonl

FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
READER_CASES = 300
SCORE_CASES = 40
# Every @given test below, with its max_examples: the number of generated cases the suite runs.
FUZZ_CASES = 5 * READER_CASES + SCORE_CASES

SEPARATOR = "\n\n###\n\n"
# Pieces that break naive readers: the prompt separator, line ends of every kind, quotes and delimiters, blanks that
# are no JSON whitespace, a byte-order mark, NUL.
TRICKY = ["\n\n###\n\n", "###", "\n", "\r", "\r\n", '"', "'", ",", "\t", ";", "|", " ", "\u00a0", "\u2028", "\x1c",
          "\x85", "\ufeff", "\x00", "\\", "{", "}", "é", "\U0001f600"]
texts = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(TRICKY)), max_size=6).map("".join)
# JSON strings may also hold halves of a character (UTF-16 surrogates), which JSON writes as escapes.
json_texts = st.lists(st.one_of(texts, st.sampled_from(["\ud83d", "\ude00", "\ud83d\ude00"])), max_size=3).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | json_texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
labels = st.sampled_from(["a", "b", "Physics", "NUM:date", "x y"])
RESULT_KEYS = ("label", "labels", "scores", "label_mass")


def _lines(data: bytes, suffix: str = ".jsonl") -> list[bytes]:
    """The physical lines of a file: JSONL's end after b"\\n" alone (as score reads them), CSV/TSV's after b"\\r"
    too (as the csv module and most editors count them)."""
    return re.findall(rb"[^\n]*\n|[^\n]+" if suffix == ".jsonl" else rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+", data)


def _json_blank(line: str) -> bool:
    """A line that holds no JSON value at all: nothing but JSON whitespace."""
    return not line.strip(" \t\r\n")


def _jsonl_kind(line: bytes, number: int) -> str:
    """'blank' (JSON whitespace only), 'good' (a JSON object UTF-8 can write) or 'bad', as a JSONL reader should
    see a line split after b"\\n"; the first line may start with a byte-order mark."""
    if number == 1:
        line = line.removeprefix(b"\xef\xbb\xbf")
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError:
        return "bad"
    if _json_blank(decoded):
        return "blank"
    try:
        record = json.loads(decoded)
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # no lone surrogate
    except (ValueError, RecursionError, UnicodeEncodeError):
        return "bad"
    return "good" if isinstance(record, dict) else "bad"


def _check_error(err: DataError, path: Path, n_lines: int) -> None:
    """A DataError names the file, and a line (when it names one) that the file has."""
    assert err.path == str(path), err
    assert err.line is None or 1 <= err.line <= max(n_lines, 1), err
    assert err.reason, err


def _read_or_refuse(path: Path, **names: Any) -> tuple[list, Any] | DataError:
    """load_examples' examples and choice, or the DataError it raised; any other exception fails the test."""
    try:
        return load_examples(path, **names)
    except DataError as e:
        return e


@settings(FUZZ, max_examples=READER_CASES)
@given(data=st.one_of(st.binary(max_size=200),
                      st.lists(st.one_of(st.binary(max_size=20), st.sampled_from(
                          [b"text,label\n", b"text\tlabel\n", b'{"text": "a", "label": "b"}\n', b"\n", b"\r\n",
                           b'"', b"\xff", b"\xef\xbb\xbf", b"\x00", b'{"text": ', b"[" * 2000, b"9" * 5000])),
                               max_size=8).map(b"".join)),
       suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]))
@example(data=b"[" * 3000, suffix=".jsonl")  # nested deeper than Python's recursion limit
@example(data=b'{"text": "a", "n": ' + b"9" * 5000 + b"}\n", suffix=".jsonl")  # more digits than int() takes
@example(data=b'{"text": "a", "label": "b"}\n\xc2\xa0\n\x1c\n', suffix=".jsonl")  # blanks JSON does not know
@example(data=b'{"text":\r"a", "label": "b"}\n', suffix=".jsonl")  # a lone \r is JSON whitespace, no line end
def test_random_bytes_are_read_or_refused_with_file_and_line(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(data)
        n_lines = len(_lines(data, suffix))
        kinds = [_jsonl_kind(line, i) for i, line in enumerate(_lines(data), 1)] if suffix == ".jsonl" else []
        try:
            records = list(read_records(path))
        except DataError as e:
            _check_error(e, path, n_lines)
            assert not kinds or e.line in [i for i, k in enumerate(kinds, 1) if k == "bad"], (e, kinds)
        else:
            numbers = [n for n, _ in records]
            assert numbers == sorted(set(numbers)) and all(1 <= n <= n_lines for n in numbers)
            if suffix == ".jsonl":  # every line that holds anything is a record
                assert numbers == [i for i, k in enumerate(kinds, 1) if k != "blank"] and "bad" not in kinds
        for names in ({}, {"text_column": "text", "label_column": "label"}):
            result = _read_or_refuse(path, **names)
            if isinstance(result, DataError):
                _check_error(result, path, n_lines)
            else:
                assert [ex.line for ex in result[0]] == [n for n, _ in records]


@settings(FUZZ, max_examples=READER_CASES)
@given(rows=st.lists(st.tuples(texts, labels, texts), max_size=8),
       delimiter=st.sampled_from([",", "\t"]), encoding=st.sampled_from(["utf-8", "utf-8-sig"]))
def test_csv_and_tsv_cells_come_back_exactly_on_their_physical_lines(rows: list, delimiter: str,
                                                                     encoding: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("d.tsv" if delimiter == "\t" else "d.csv")
        buffer = io.StringIO(newline="")
        csv.writer(buffer, delimiter=delimiter).writerows([("text", "label", "note"), *rows])
        path.write_bytes(buffer.getvalue().encode(encoding))
        starts, line = [], 2  # the writer ends rows in \r\n; a cell's own line ends count as the csv module's do
        for row in rows:
            starts.append(line)
            line += 1 + sum(len(re.findall(r"\r\n|\r|\n", cell)) for cell in row)
        spanning = [s for s, row in zip(starts, rows, strict=True)
                    if delimiter == "\t" and any("\t" in c and "\n" in c for c in row)]
        try:
            records = list(read_records(path))
        except DataError as e:  # a TSV cell holding a tab and a line end reads as a quote left open
            assert spanning and e.line == spanning[0], e
            return
        assert not spanning
        assert records == [(s, dict(zip(("text", "label", "note"), row, strict=True)))
                           for s, row in zip(starts, rows, strict=True)]
        _check_texts(path, records, "text")


def _check_texts(path: Path, records: list[tuple[int, dict[str, Any]]], field: str) -> None:
    """load_examples takes every text text_value takes, stripped, and stops at the first it refuses."""
    refused = [n for n, r in records if not _is_text(r[field])]
    result = _read_or_refuse(path, text_column=field, label_column="label")
    if not records:
        assert isinstance(result, DataError) and result.reason == "no rows", result
    elif refused:
        assert isinstance(result, DataError) and result.line == refused[0], result
        assert result.reason.startswith(f"'{field}' ") and "fix:" in str(result)
    else:
        assert not isinstance(result, DataError), result
        assert [(ex.line, ex.text, ex.label) for ex in result[0]] == [
            (n, r[field].strip(), r["label"]) for n, r in records]


def _is_text(value: Any) -> bool:
    """The rule, spelled out independently of text_value: a string holding more than whitespace."""
    return isinstance(value, str) and bool(value.strip())


@settings(FUZZ, max_examples=READER_CASES)
@given(values=st.lists(st.tuples(json_values, labels, st.booleans(), st.booleans()), max_size=8),
       ending=st.sampled_from(["\n", "\r\n"]))
def test_any_json_value_in_the_text_field_is_read_or_refused_at_its_line(values: list, ending: str) -> None:
    lines, records = [], []
    for value, label, ascii_only, blank_before in values:
        if blank_before:
            lines.append(" \t" + ending)
        record = {"text": value, "label": label}
        lines.append(json.dumps(record, ensure_ascii=ascii_only) + ending)
        records.append((len(lines), record))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_bytes("".join(lines).encode("utf-8", "surrogatepass"))
        surrogates = [n for n, line in enumerate(lines, 1) if re.search(r"[\ud800-\udfff]", line)
                      or (re.search(r"\\u[dD][89a-fA-F]", line) and not _whole_pairs(line))]
        if surrogates:  # a lone half of a character: not UTF-8 on disk, or an escape no UTF-8 file can take
            result = _read_or_refuse(path, text_column="text", label_column="label")
            # The first bad line, or a later one the decoder met first in the same buffer: a bad line either way.
            assert isinstance(result, DataError) and result.line in surrogates, result
            return
        assert json.dumps(list(read_records(path))) == json.dumps(records)  # NaN is no equal of itself
        _check_texts(path, records, "text")
        result = _read_or_refuse(path)  # detected columns: refused, or one example per record
        if not isinstance(result, DataError):
            assert [ex.line for ex in result[0]] == [n for n, _ in records]


def _whole_pairs(line: str) -> bool:
    """Every surrogate escape of the line is half of a whole pair (an emoji), which JSON may write escaped."""
    try:
        json.dumps(json.loads(line), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(FUZZ, max_examples=READER_CASES)
@given(rows=st.lists(st.tuples(texts, labels), min_size=1, max_size=6),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "shift_jis", "utf-7"]),
       suffix=st.sampled_from([".csv", ".jsonl"]))
def test_a_file_in_another_encoding_is_read_exactly_or_refused_at_its_first_bad_line(rows: list, encoding: str,
                                                                                     suffix: str) -> None:
    if suffix == ".csv":
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows([("text", "label"), *rows])
        content = buffer.getvalue()
    else:
        content = "".join(json.dumps({"text": t, "label": b}, ensure_ascii=False) + "\n" for t, b in rows)
    data = content.encode(encoding, "replace")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(data)
        try:
            decoded = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            first_bad = next(i for i, line in enumerate(_lines(data, suffix), 1) if not _decodes(line))
            with pytest.raises(DataError, match=r"not UTF-8") as err:
                list(read_records(path))
            assert err.value.line == first_bad
            return
        # The same text read back exactly; other characters that happen to be UTF-8 (utf-7) read as such.
        result = _read_or_refuse(path, text_column="text", label_column="label")
        if isinstance(result, DataError):
            _check_error(result, path, len(_lines(data, suffix)))
            assert decoded != content or any(not _is_text(t) for t, _ in rows), result
        elif decoded == content:
            assert [ex.text for ex in result[0]] == [t.strip() for t, _ in rows]


def _decodes(line: bytes) -> bool:
    """Whether the bytes are UTF-8."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(FUZZ, max_examples=READER_CASES)
@given(header=st.integers(2, 3), widths=st.lists(st.integers(0, 4), max_size=8), delimiter=st.sampled_from(",\t"))
def test_a_ragged_row_is_refused_at_its_line(header: int, widths: list[int], delimiter: str) -> None:
    rows = [[f"cell {i} {j}" for j in range(width)] for i, width in enumerate(widths)]
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter=delimiter).writerows([[f"c{j}" for j in range(header)], *rows])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("d.tsv" if delimiter == "\t" else "d.csv")
        path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        ragged = [i + 2 for i, width in enumerate(widths) if width and width != header]  # empty rows are skipped
        try:
            records = list(read_records(path))
        except DataError as e:
            assert ragged and e.line == ragged[0] and f"expected {header} fields" in e.reason, e
        else:
            assert not ragged and [n for n, _ in records] == [i + 2 for i, w in enumerate(widths) if w]


def _object(text: Any, extra: dict[str, Any]) -> dict[str, Any]:
    """A JSONL record with `text` and extra fields, none of them a field score adds (label, scores, ...)."""
    return {**{k: v for k, v in extra.items() if k not in RESULT_KEYS and not k.startswith("input_")}, "text": text}


# Scoring: lines of every kind; _render tags each JSON object with its own line number.
score_lines = st.one_of(
    st.builds(_object, texts, st.dictionaries(texts, json_values, max_size=2)),  # mostly good lines
    st.builds(_object, json_values, st.just({})),  # any JSON value as the text
    st.builds(_object, st.sampled_from(["", "  ", "\u00a0", SEPARATOR, "a" + SEPARATOR + "b"]), st.just({})),
    json_values,  # JSON that is no object: every one malformed
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),  # bytes, often not UTF-8
    st.sampled_from([b"", b"   ", b"\t", b"\r", "\u00a0".encode(), "\u2028".encode(), b"\x1c", b"\x0c",
                     b'{"text": "broken \\ud83d half"}', b'{"text": "whole \\ud83d\\ude00"}', b'{"text": "caf\xe9"}',
                     b"[" * 3000, b'{"text": "big", "n": ' + b"9" * 5000 + b"}", b'{"body": "elsewhere"}',
                     b'{"prompt": "from a prompt\\n\\n###\\n\\n"}', b'{"text": "a"} {"text": "b"}']),
)


# One line of each kind that once went wrong or might: blanks JSON does not know (skipped, not rejected), nesting
# beyond the recursion limit (a crash), more digits than int() takes, halves of a character, bytes that are no UTF-8.
EVERY_KIND = [{"text": "lens"}, "\u00a0".encode(), b"\x1c", b"", b"[" * 3000,
              b'{"text": "a", "n": ' + b"9" * 5000 + b"}",
              b'{"text": "broken \\ud83d half"}', b'{"text": "whole \\ud83d\\ude00"}', b'{"text": "caf\xe9"}',
              {"text": 7}, {"text": " "}, {"text": "x" + SEPARATOR + "y"}, b'{"text":\r"cr"}', {"text": "volt"}]


def _render(value: Any, number: int) -> bytes:
    """One generated line's bytes, without its line end; a JSON object gets its line number as `id`."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        value = {"id": number, **value}
    return json.dumps(value).encode("utf-8")


@pytest.fixture(scope="module")
def fuzz_clf(tiny_run) -> Classifier:
    """One classifier for every generated scoring case: loading it per case would cost most of the time."""
    return Classifier.load(tiny_run, batch_size=4)


@settings(FUZZ, max_examples=SCORE_CASES)
@given(values=st.lists(score_lines, max_size=8), endings=st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=8),
       bom=st.booleans(), last_ending=st.booleans(), chunk_size=st.integers(1, 4), rejecting=st.booleans())
@example(values=EVERY_KIND, endings=[b"\n", b"\r\n"] * 8, bom=True, last_ending=False, chunk_size=3, rejecting=True)
@example(values=EVERY_KIND, endings=[b"\n"] * 16, bom=False, last_ending=True, chunk_size=2, rejecting=False)
def test_score_puts_every_line_in_the_output_or_the_rejects_or_stops_at_it(
        fuzz_clf: Classifier, values: list, endings: list[bytes], bom: bool, last_ending: bool, chunk_size: int,
        rejecting: bool) -> None:
    raws = [_render(v, i) for i, v in enumerate(values, 1)]
    data = b"".join(raw + end for raw, end in zip(raws, endings, strict=False))
    if raws and not last_ending:
        data = data[: -len(endings[len(raws) - 1])]
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    with tempfile.TemporaryDirectory() as tmp:
        src, out, rej = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl", Path(tmp) / "rej.jsonl"
        src.write_bytes(data)
        lines = _lines(data)
        kinds = [_score_kind(line, i) for i, line in enumerate(lines, 1)]
        try:
            stats = score_jsonl(fuzz_clf, str(src), str(out), rejects=str(rej) if rejecting else None,
                                chunk_size=chunk_size, progress=False)
        except NeogenError as e:
            assert not rejecting and isinstance(e, DataError), e
            assert e.path == str(src) and e.line == kinds.index("bad") + 1, (e, kinds)
            return
        assert rejecting or "bad" not in kinds, kinds
        good = [i for i, k in enumerate(kinds, 1) if k == "good"]
        bad = [i for i, k in enumerate(kinds, 1) if k == "bad"]
        assert (stats.read, stats.scored, stats.rejected) == (len(good) + len(bad), len(good), len(bad))
        _check_output(out, lines, good, fuzz_clf)
        if rejecting:
            _check_rejects(rej, lines, bad)


def _score_kind(line: bytes, number: int) -> str:
    """'blank' (no record), 'good' (a JSON object holding a text that text_value takes) or 'bad'."""
    kind = _jsonl_kind(line, number)
    if kind != "good":
        return kind
    record = json.loads(line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line)
    field = "text" if "text" in record or "prompt" not in record else "prompt"
    return "good" if field in record and _is_text(record[field]) else "bad"


def _text_lines(path: Path) -> list[str]:
    """The lines of a JSONL file neogen wrote: split at \\n alone (str.splitlines would split at U+0085 too)."""
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _check_output(out: Path, lines: list[bytes], good: list[int], clf: Classifier) -> None:
    """The output holds the good lines, in order, each with its input fields and a prediction."""
    written = [json.loads(line) for line in _text_lines(out)]
    assert len(written) == len(good)
    for number, record in zip(good, written, strict=True):
        source = json.loads(lines[number - 1].decode("utf-8").removeprefix("\ufeff"))
        assert record.pop("label") in clf.labels and set(record.pop("scores")) == set(clf.labels)
        record.pop("label_mass")
        assert json.dumps(record, sort_keys=True) == json.dumps(source, sort_keys=True)


def _check_rejects(rej: Path, lines: list[bytes], bad: list[int]) -> None:
    """The rejects file holds the bad lines, in order, each with its reason and its exact bytes."""
    rejected = [json.loads(line) for line in _text_lines(rej)] if rej.exists() else []
    assert [r["line"] for r in rejected] == bad
    for r in rejected:
        line = lines[r["line"] - 1]  # the exact bytes, a first line's byte-order mark included
        readable = line.decode("utf-8", "replace").rstrip("\r\n")
        assert isinstance(r["error"], str) and r["error"]
        assert r["raw"] == (readable.removeprefix("\ufeff") if r["line"] == 1 else readable)
        if _decodes(line):
            assert "raw_base64" not in r
        else:
            assert base64.b64decode(r["raw_base64"]) == line.rstrip(b"\r\n")
