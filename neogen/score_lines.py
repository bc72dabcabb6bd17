"""Scoring JSONL lines a chunk at a time: parse each line, take its text, score the chunk, and render the output
and rejects lines. Shared by one-process scoring (neogen.score) and the torchrun shards (neogen.score_shards).

Every input line comes back with `label`, `scores` and `label_mass` added (multi-label runs: `labels`, a list,
instead of `label`); an input field of the same name is kept as `input_<name>`. A malformed line raises a DataError
naming the file, its line and the fix, or, when rejecting, goes to the rejects lines with the reason.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from neogen.classify import Classifier
from neogen.errors import DataError
from neogen.read import blank_line, lone_surrogate, parse_json_line, text_value


@dataclass
class ScoreStats:
    """Counts of one scoring run."""

    read: int = 0
    scored: int = 0
    rejected: int = 0

    def add(self, other: ScoreStats) -> None:
        self.read += other.read
        self.scored += other.scored
        self.rejected += other.rejected


def _text_of(record: Any, text_field: str | None) -> str:
    """The text to classify, from `text_field`; when none is named, `text`, else an OpenAI-style `prompt`.

    A field the user named (`text` included) is never replaced by another: a line without it is malformed, not
    scored on other text. What counts as a text is neogen.read.text_value's rule, the one prepare, train and eval
    apply: a value it refuses (null, a number, an empty text...) is a malformed line with that reason.
    """
    if not isinstance(record, dict):
        raise ValueError("line is not a JSON object")
    field = text_field or ("prompt" if "text" not in record and "prompt" in record else "text")
    if field not in record:
        raise KeyError(f"no '{field}' field (keys: {sorted(record)[:8]})")
    return text_value(record[field], field)  # the readers' rule: a string with text in it, else refused


def _check_writable(line: str, record: dict[str, Any]) -> None:
    """Refuse a record UTF-8 cannot write: neither the tokenizer nor the output file takes a lone surrogate."""
    surrogate = lone_surrogate(line, record)
    if surrogate:
        raise ValueError(f"the line holds a lone UTF-16 surrogate {surrogate} (half of a character), which UTF-8 "
                         "cannot write; remove it or write the whole character")


def _free_key(record: dict[str, Any], key: str) -> str:
    """`input_<key>`, or `input_input_<key>` and so on where that is taken too: no input field is overwritten."""
    while key in record:
        key = f"input_{key}"
    return key


def free_key(record: dict[str, Any], key: str) -> str:
    """The name an input field `key` is kept under when an output field takes its name: `input_<key>`, else
    `input_input_<key>` and so on. Public for neogen.ray, whose records also carry an `error` field."""
    return _free_key(record, f"input_{key}")


def input_lines(src: str, offset: int = 0) -> Iterator[bytes]:
    """The raw lines of `src` ('-': stdin) from byte `offset` on; bytes, so offsets are exact for resuming."""
    if src != "-":
        with open(src, "rb") as f:
            f.seek(offset)
            yield from f
    elif hasattr(sys.stdin, "buffer"):
        yield from sys.stdin.buffer
    else:  # a text-only stdin (notebooks, captured streams)
        yield from (line.encode("utf-8") for line in sys.stdin)


def chunks(lines: Iterable[bytes], size: int, first: int = 1) -> Iterator[list[tuple[int, bytes]]]:
    """(line number, raw line) lists of `size` lines, blank ones included, numbered from `first`."""
    chunk: list[tuple[int, bytes]] = []
    for number, line in enumerate(lines, start=first):
        chunk.append((number, line))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_chunk(classifier: Classifier, chunk: list[tuple[int, bytes]], name: str, text_field: str | None,
                rejecting: bool, fix: str) -> tuple[str, str, ScoreStats]:
    """The output lines and the rejects lines of one chunk, and its counts.

    Without `rejecting`, a malformed line raises a DataError naming `name`, its line number and `fix`.
    """
    stats = ScoreStats()
    records, texts, rejected = [], [], []
    for number, raw in chunk:
        try:
            line, bad = raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            line, bad = raw.decode("utf-8", "replace"), f"not UTF-8 ({e.reason} at byte {e.start})"
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
        if blank_line(line):
            continue  # JSONL's blank lines hold no record (a line of U+00A0 is no blank one, but malformed)
        stats.read += 1
        try:
            if bad:
                raise ValueError(bad)
            record = parse_json_line(line)  # deep nesting too is a ValueError, not a RecursionError
            text = _text_of(record, text_field)
            _check_writable(line, record)
            texts.append(text)
            records.append(record)
        except (ValueError, KeyError, TypeError) as e:
            reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e.args[0]) if e.args else str(e)
            if not rejecting:
                raise DataError(name, number, reason, fix) from None
            entry = {"line": number, "error": reason, "raw": line.rstrip("\r\n")}
            if bad:  # `raw` is readable, with U+FFFD for the bytes UTF-8 refused; these are the line's own bytes
                entry["raw_base64"] = base64.b64encode(raw.rstrip(b"\r\n")).decode("ascii")
            rejected.append(json.dumps(entry, ensure_ascii=False) + "\n")
            stats.rejected += 1
    out = []
    if texts:
        batch = classifier.predict_proba(texts)
        masses = [None] * len(records) if batch.label_mass is None else batch.label_mass
        for record, probs, mass in zip(records, batch.probs, masses, strict=True):
            result = classifier.result(probs, mass)
            for key in [k for k in result if k in record]:  # a gold `label` (prepared files) is kept, as input_label
                record[_free_key(record, f"input_{key}")] = record.pop(key)
            record.update(result)
            out.append(json.dumps(record, ensure_ascii=False) + "\n")
        stats.scored += len(records)
    return "".join(out), "".join(rejected), stats


def write(f: IO[Any], text: str) -> int:
    """Write `text` to a binary file (or a text stdout) and return the bytes written."""
    if f is sys.stdout:
        f.write(text)
        return 0
    data = text.encode("utf-8")
    rest = memoryview(data)
    while rest:  # an unbuffered file may take part of it; a failed write then leaves no buffer to fail again
        rest = rest[f.write(rest):]
    return len(data)
