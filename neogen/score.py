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

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from neogen import distributed
from neogen.classify import Classifier
from neogen.distributed import World
from neogen.errors import NeogenError
from neogen.folders import FileLock, file_id, refuse_same_files, stream_id, write_error
from neogen.run import Run
from neogen.score_lines import ScoreStats, chunks, input_lines, score_chunk, write
from neogen.score_progress import Progress, begin, forget, identity, progress_path

logger = logging.getLogger(__name__)


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
                raise NeogenError(f"input, output and rejects must be different files: the {role} and the {other} "
                                  f"are one file, {paths[role]} (fix: {fix})")
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
    return _locked_output(dst)


@contextlib.contextmanager
def _locked_output(dst: str) -> Iterator[None]:
    """The lock creates the output when it is missing; a run that fails before writing a byte removes that empty
    file again (neogen created it), so a refused run leaves no output behind."""
    existed = os.path.lexists(dst)
    try:
        with FileLock(dst, f"the output {dst} (another `neogen score` is writing it)"):
            yield
    except BaseException:
        if not existed and os.path.isfile(dst) and os.path.getsize(dst) == 0:
            os.unlink(dst)
        raise


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
    state = _start(classifier, src, dst, text_field, rejects, chunk_size, resume, run_dir)
    tracked, sidecar = state is not None, progress_path(dst)
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
            out_bytes, rej_bytes = _write_chunk((dst, fout, out), (rejects, frej, rej), tracked, stats.scored)
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


def _start(classifier: Classifier, src: str, dst: str, text_field: str | None, rejects: str | None,
           chunk_size: int, resume: bool, run_dir: str | Path | None) -> Progress | None:
    """The progress to go on from (a fresh one unless resuming), with the files ready to append to; None where
    there is no file to go back to (a stream, or a device such as /dev/null), whose stale progress file goes."""
    if "-" in (src, dst) or (Path(dst).exists() and not Path(dst).is_file()):
        forget(dst)
        return None
    options = {"chunk_size": chunk_size, "batch_size": classifier.batch_size}
    if classifier.max_batch_tokens is not None:  # absent when unset, as in progress files written before it
        options["max_batch_tokens"] = classifier.max_batch_tokens
    run = Run(run_dir) if run_dir is not None else classifier.run
    ident = identity(src, run, classifier.labels, text_field or "text or prompt", rejects)
    state = begin(src, dst, rejects, ident, options, resume)
    state.save(progress_path(dst))
    return state


def _write_chunk(output: tuple[str, IO[Any] | None, str], rejected: tuple[str | None, IO[Any] | None, str],
                 tracked: bool, scored: int) -> tuple[int, int]:
    """Write a chunk's output and rejects lines, on disk (fsync) before a progress file may say so; the bytes
    written to each. A failed write is one error naming the file and what is kept."""
    written = []
    for path, f, text in (output, rejected):
        try:
            written.append(write(f, text) if f is not None else 0)
            if f is not None:
                f.flush()
                if tracked:
                    os.fsync(f.fileno())
        except BrokenPipeError:
            raise
        except OSError as e:
            kept = (f"the {scored} lines scored before this chunk are kept, and `--resume` goes on from there"
                    if tracked else "")
            raise write_error(e, path or output[0], kept) from None
    return written[0], written[1]
