"""Batch scoring of JSONL files: every input line comes back with `label`, `scores` and `label_mass` added
(multi-label runs: `labels`, a list, instead of `label`); an input field of the same name is kept as `input_<name>`.

Lines are read and scored a chunk at a time, so memory stays flat whatever the file size, and written in input
order. A malformed line stops the run with its file and line number, or, when a rejects file is given, goes
there with the reason and is counted: no line is ever dropped silently.

Scoring a file into a file keeps `OUT.progress.json` up to date after every chunk, so an interrupted run goes on
where it stopped with `resume=True` (neogen.score_progress). Under torchrun every process scores every
world_size-th chunk into its own part file and rank 0 merges the parts in input order (neogen.score_shards):
either way the output is the same bytes as one uninterrupted process writes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from neogen import distributed
from neogen.classify import Classifier
from neogen.distributed import World
from neogen.errors import DataError, NeogenError
from neogen.folders import FileLock, file_id, refuse_same_files, stream_id, write_error
from neogen.read import blank_line, lone_surrogate, parse_json_line, text_value
from neogen.score_progress import begin, forget, identity, progress_path

logger = logging.getLogger(__name__)


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


def check_options(src: str, dst: str, rejects: str | None, resume: bool, world: World) -> None:
    """Refuse what cannot work before a model is loaded: clear errors, each with its fix."""
    if rejects == "-":
        raise NeogenError("--rejects needs a file path: '-' would mix the rejected lines into the output stream "
                          "(fix: e.g. --rejects rejects.jsonl)")
    check_distinct_files(src, dst, rejects)
    if resume and "-" in (src, dst):
        raise NeogenError("--resume needs a real input and output file, not '-' (stdin/stdout cannot be reread "
                          "or cut back) (fix: score FILE OUT --resume, or drop --resume)")
    if world.distributed and "-" in (src, dst):
        raise NeogenError(f"under torchrun ({world.size} processes) every process reads the input and writes a "
                          "part of the output, so neither can be '-' (fix: give file paths)")
    if world.distributed and resume:
        raise NeogenError(f"--resume works with one process, not under torchrun ({world.size} processes) "
                          "(fix: drop --resume to score from the start, or resume with plain `neogen score`)")
    # The paths last: a wrong way of running is the first thing to fix.
    if src != "-" and not Path(src).is_file():
        raise NeogenError(f"input {src} is not a file (fix: check the path, or give '-' to read stdin)")
    for what, path in (("output", dst), ("rejects", rejects)):
        if path and path != "-" and not Path(path).resolve().parent.is_dir():
            raise NeogenError(f"the {what} file's folder {Path(path).parent} does not exist (fix: create it first)")


def check_distinct_files(src: str, dst: str, rejects: str | None) -> None:
    """Refuse, before anything is opened for writing, an output or rejects file that is the input or a progress file.

    Paths are compared resolved (a file not yet there), and existing files by device and inode: a hard link, a
    symbolic link, or stdin/stdout redirected from or to the other file is the same file under another name.
    """
    fix = "write the output and the rejects to new paths of their own"
    paths = {"input": src, "output": dst, "rejects file": rejects}
    if dst != "-":
        paths["output's progress file"] = str(progress_path(dst))
    named = {role: os.path.realpath(p) for role, p in paths.items() if p and p != "-"}
    for role, real in named.items():
        for other, real_other in named.items():
            if other < role and real == real_other:
                raise NeogenError(f"the {role} and the {other} are one file, {paths[role]} (fix: {fix})")
    refuse_same_files({
        "input": (src if src != "-" else "<stdin>", stream_id(0) if src == "-" else file_id(src)),
        "output": (dst if dst != "-" else "<stdout>", stream_id(1) if dst == "-" else file_id(dst)),
        "rejects file": (rejects, file_id(rejects) if rejects else None),
        "output's progress file": (paths.get("output's progress file"),
                                   file_id(paths["output's progress file"]) if dst != "-" else None),
    }, fix)


def output_lock(dst: str, world: World | None = None) -> contextlib.AbstractContextManager[Any]:
    """An exclusive lock on the output file for the whole scoring run (rank 0 alone under torchrun; none for stdout).

    Taken before the model loads, it also proves the output can be written there.
    """
    world = world or distributed.world()
    if dst == "-" or not world.is_main:
        return contextlib.nullcontext()
    return FileLock(dst, f"the output {dst} (another `neogen score` is writing it)")


def score_jsonl(classifier: Classifier, src: str, dst: str, text_field: str | None = None, rejects: str | None = None,
                chunk_size: int = 1024, progress: bool = True, resume: bool = False,
                run_dir: str | Path | None = None, world: World | None = None) -> ScoreStats:
    """Score every line of `src` into `dst` ('-' for stdin/stdout), in input order.

    `resume` goes on from `dst`'s progress file after an interruption; `run_dir` (the classifier's run
    directory) makes that file also check the run is the same one. `world` (default: torchrun's environment)
    splits the chunks among processes; the counts returned by rank 0 then cover the whole file, the other
    ranks' only their share. With resume, they cover the earlier runs too.
    """
    world = world or distributed.world()
    check_options(src, dst, rejects, resume, world)
    if chunk_size < 1:
        raise NeogenError(f"chunk_size must be at least 1, got {chunk_size} (fix: e.g. --chunk-size 1024)")
    with output_lock(dst, world):
        return _score_locked(classifier, src, dst, text_field, rejects, chunk_size, progress, resume, run_dir, world)


def _score_locked(classifier: Classifier, src: str, dst: str, text_field: str | None, rejects: str | None,
                  chunk_size: int, progress: bool, resume: bool, run_dir: str | Path | None,
                  world: World) -> ScoreStats:
    """score_jsonl's body, with the output locked by this process."""
    if world.distributed:
        from neogen.score_shards import score_sharded

        return score_sharded(classifier, src, dst, text_field, rejects, chunk_size, progress, world)
    name = "<stdin>" if src == "-" else src
    # A progress file only where there is a file to go back to: not for streams or devices (/dev/null).
    tracked = "-" not in (src, dst) and (not Path(dst).exists() or Path(dst).is_file())
    sidecar = progress_path(dst)
    state = None
    if tracked:
        options = {"chunk_size": chunk_size, "batch_size": classifier.batch_size}
        if classifier.max_batch_tokens is not None:  # absent when unset, as in progress files written before it
            options["max_batch_tokens"] = classifier.max_batch_tokens
        field = text_field or "text or prompt"
        state = begin(src, dst, rejects, identity(src, run_dir, classifier.labels, field, rejects), options, resume)
        state.save(sidecar)
    else:
        forget(dst)
    stats = ScoreStats(state.read, state.scored, state.rejected) if state else ScoreStats()
    first, offset = (state.lines + 1, state.input_bytes) if state else (1, 0)
    with contextlib.ExitStack() as stack:
        # begin() has emptied or cut back the files it tracks, so they are appended to.
        mode = "ab" if tracked else "wb"
        # Unbuffered: every chunk goes to the OS at once, and a failed write leaves nothing for close() to retry.
        fout = sys.stdout if dst == "-" else stack.enter_context(open(dst, mode, buffering=0))
        frej = stack.enter_context(open(rejects, mode, buffering=0)) if rejects else None
        bar = stack.enter_context(tqdm(total=None if src == "-" else Path(src).stat().st_size, initial=offset,
                                       unit="B", unit_scale=True, disable=not progress, desc="scoring"))
        for chunk in chunks(input_lines(src, offset), chunk_size, first):
            size = sum(len(raw) for _, raw in chunk)
            fix = (f"fix the line and start over, or pass --rejects FILE --resume to set such lines aside and "
                   f"keep the {stats.scored} lines scored before it" if tracked else
                   f"fix the line, or pass --rejects FILE to set such lines aside; {stats.scored} lines were "
                   "scored before it")
            out, rej, counts = score_chunk(classifier, chunk, name, text_field, frej is not None, fix)
            target = dst
            try:
                out_bytes = write(fout, out)
                target = rejects or dst
                rej_bytes = write(frej, rej) if frej else 0
                for path, f in ((dst, fout), (rejects, frej)):
                    target = path
                    if f is not None:
                        f.flush()
                        if tracked:  # on disk before the progress file says so
                            os.fsync(f.fileno())
            except BrokenPipeError:
                raise
            except OSError as e:
                kept = (f"the {stats.scored} lines scored before this chunk are kept, and `--resume` goes on from "
                        "there" if tracked else "")
                raise write_error(e, target or dst, kept) from None
            stats.add(counts)
            bar.update(size)
            if state is not None:
                state.lines, state.input_bytes = chunk[-1][0], state.input_bytes + size
                state.output_bytes += out_bytes
                state.rejects_bytes += rej_bytes
                state.read, state.scored, state.rejected = stats.read, stats.scored, stats.rejected
                state.save(sidecar)
    if tracked:
        sidecar.unlink()
    if stats.rejected:
        logger.warning("%d malformed lines written to %s", stats.rejected, rejects)
    return stats
