"""Batch scoring of JSONL files: every input line comes back with `label`, `scores` and `label_mass` added
(multi-label runs: `labels`, a list, instead of `label`).

Lines are read and scored a chunk at a time, so memory stays flat whatever the file size, and written in input
order. A malformed line stops the run with its file and line number, or, when a rejects file is given, goes
there with the reason and is counted: no line is ever dropped silently.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from neogen.classify import Classifier
from neogen.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class ScoreStats:
    """Counts of one scoring run."""

    read: int = 0
    scored: int = 0
    rejected: int = 0


def _open(path: str, mode: str) -> IO[str]:
    if path == "-":
        return sys.stdin if "r" in mode else sys.stdout
    return open(path, mode, encoding="utf-8")


def _text_of(record: Any, text_field: str) -> str:
    """The text to classify, from `text_field` or, failing that, an OpenAI-style `prompt` (separator and all)."""
    if not isinstance(record, dict):
        raise ValueError("line is not a JSON object")
    value = record.get(text_field, record.get("prompt"))
    if value is None:
        raise KeyError(f"no '{text_field}' field (keys: {sorted(record)[:8]})")
    if not isinstance(value, str):
        raise TypeError(f"'{text_field}' is {type(value).__name__}, not a string")
    return value


def _chunks(lines: IO[str], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        chunk.append((number, line))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_jsonl(classifier: Classifier, src: str, dst: str, text_field: str = "text", rejects: str | None = None,
                chunk_size: int = 1024, progress: bool = True) -> ScoreStats:
    """Score every line of `src` into `dst` ('-' for stdin/stdout), in input order."""
    stats = ScoreStats()
    name = "<stdin>" if src == "-" else src
    total = None if src == "-" else Path(src).stat().st_size
    fin, fout = _open(src, "r"), _open(dst, "w")
    frej = _open(rejects, "w") if rejects else None
    try:
        with tqdm(total=total, unit="B", unit_scale=True, disable=not progress, desc="scoring") as bar:
            for chunk in _chunks(fin, chunk_size):
                records, texts = [], []
                for number, line in chunk:
                    bar.update(len(line.encode("utf-8")))
                    if not line.strip():
                        continue
                    stats.read += 1
                    try:
                        record = json.loads(line)
                        texts.append(_text_of(record, text_field))
                        records.append(record)
                    except (ValueError, KeyError, TypeError) as e:
                        reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e).strip("'\"")
                        if frej is None:
                            raise DataError(name, number, reason, f"fix the line, or pass --rejects FILE to set "
                                            f"such lines aside; {stats.scored} lines were scored before it") from None
                        frej.write(json.dumps({"line": number, "error": reason, "raw": line.rstrip("\n")},
                                              ensure_ascii=False) + "\n")
                        stats.rejected += 1
                if not texts:
                    continue
                batch = classifier.predict_proba(texts)
                masses = [None] * len(records) if batch.label_mass is None else batch.label_mass
                for record, probs, mass in zip(records, batch.probs, masses, strict=True):
                    record.update(classifier.result(probs, mass))
                    fout.write(json.dumps(record, ensure_ascii=False) + "\n")
                stats.scored += len(records)
                fout.flush()
    finally:
        for f in (fin, fout, frej):
            if f is not None and f not in (sys.stdin, sys.stdout):
                f.close()
    if stats.rejected:
        logger.warning("%d malformed lines written to %s", stats.rejected, rejects)
    return stats
