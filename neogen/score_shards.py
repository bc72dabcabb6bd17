"""Scoring one file with several processes under torchrun: chunk i is scored by rank i % world_size.

Every rank reads the whole input (only parsing its own chunks, so line numbers in errors stay the input's), and
writes its output and rejects lines to part files next to the targets (`OUT.part-RANK-of-N`). Then the ranks
exchange, per chunk, how many bytes each part holds; rank 0 copies the parts into the targets in chunk order,
which is input order, and removes them. The result is byte for byte what one process writes. On several nodes
the output folder must be shared, since rank 0 reads every rank's parts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from neogen import distributed
from neogen.classify import Classifier
from neogen.distributed import World
from neogen.errors import NeogenError
from neogen.score_lines import ScoreStats, chunks, input_lines, score_chunk, write
from neogen.score_progress import forget

logger = logging.getLogger(__name__)

Index = list[tuple[int, int, int]]  # (chunk number, output bytes, rejects bytes) of each chunk a rank scored


def part_path(target: str, rank: int, size: int) -> Path:
    return Path(f"{target}.part-{rank}-of-{size}")


def _own_parts(dst: str, rejects: str | None, world: World) -> list[Path]:
    """This rank's part files: of the output, and of the rejects if any."""
    return [part_path(target, world.rank, world.size) for target in (dst, rejects) if target]


def score_part(classifier: Classifier, src: str, dst: str, text_field: str | None, rejects: str | None, chunk_size: int,
               progress: bool, world: World) -> tuple[ScoreStats, Index]:
    """Score this rank's chunks into its part files; on any failure its parts are removed."""
    parts = _own_parts(dst, rejects, world)
    stats, index = ScoreStats(), []
    fix = "fix the line, or pass --rejects FILE to set such lines aside"
    try:
        with contextlib.ExitStack() as stack:
            fout = stack.enter_context(open(parts[0], "wb"))
            frej = stack.enter_context(open(parts[1], "wb")) if rejects else None
            bar = stack.enter_context(tqdm(total=Path(src).stat().st_size, unit="B", unit_scale=True,
                                           desc="scoring", disable=not progress or not world.is_main))
            for i, chunk in enumerate(chunks(input_lines(src), chunk_size)):
                bar.update(sum(len(raw) for _, raw in chunk))  # rank 0's bar: every rank reads at the same pace
                if i % world.size != world.rank:
                    continue
                out, rej, counts = score_chunk(classifier, chunk, src, text_field, frej is not None, fix)
                index.append((i, write(fout, out), write(frej, rej) if frej else 0))
                stats.add(counts)
    except BaseException:
        for part in parts:
            part.unlink(missing_ok=True)
        raise
    return stats, index


def _copy(src: IO[bytes], dst: IO[bytes], n: int, name: Path) -> None:
    while n > 0:
        block = src.read(min(n, 1 << 20))
        if not block:
            raise OSError(f"{name} ended {n} bytes early: was it changed while the ranks were merging?")
        dst.write(block)
        n -= len(block)


def merge_parts(target: str, column: int, indexes: list[Index]) -> None:
    """Concatenate every rank's part of `target` in chunk order (column 1: output bytes, 2: rejects bytes)."""
    size = len(indexes)
    order = sorted((entry[0], rank, entry[column]) for rank, index in enumerate(indexes) for entry in index)
    parts = [part_path(target, rank, size) for rank in range(size)]
    # Into a temporary file, on disk before it takes the target's name and before the parts go: a merge stopped
    # midway leaves the parts whole and no truncated output that looks finished.
    tmp = Path(f"{target}.merging")
    try:
        with contextlib.ExitStack() as stack:
            readers = [stack.enter_context(part.open("rb")) for part in parts]
            out = stack.enter_context(open(tmp, "wb"))
            for _, rank, n in order:
                _copy(readers[rank], out, n, parts[rank])
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        logger.error("merging into %s failed; the parts %s are kept", target, ", ".join(str(p) for p in parts))
        raise
    for part in parts:
        part.unlink()


def score_sharded(classifier: Classifier, src: str, dst: str, text_field: str | None, rejects: str | None,
                  chunk_size: int, progress: bool, world: World) -> ScoreStats:
    """Score this rank's share, wait for every rank, and (rank 0) merge; rank 0's counts cover the whole file."""
    distributed.init(world)
    if world.is_main:
        forget(dst)
    failure: Exception | None = None
    try:
        stats, index = score_part(classifier, src, dst, text_field, rejects, chunk_size, progress, world)
    except Exception as e:  # its parts are gone; it still joins the gather, so no rank waits on it (NCCL would)
        failure, stats, index = e, ScoreStats(), []
    try:  # the barrier: every part is complete (or removed) after it
        gathered = distributed.all_gather((stats, index, None if failure is None else str(failure)), world)
    except BaseException as e:
        for part in _own_parts(dst, rejects, world):
            part.unlink(missing_ok=True)
        if isinstance(e, RuntimeError):  # a peer died (torchrun stops the others too): its own error says why
            raise NeogenError(f"rank {world.rank}: another of the {world.size} processes stopped before the end, "
                              f"so nothing was merged into {dst} (fix: see that process's error above)") from None
        raise
    if failure is not None:
        raise failure  # this rank's own error, with its file:line
    failed = [(rank, error) for rank, (_, _, error) in enumerate(gathered) if error is not None]
    if failed:
        for part in _own_parts(dst, rejects, world):
            part.unlink(missing_ok=True)
        rank, error = failed[0]
        raise NeogenError(f"rank {world.rank}: rank {rank} of {world.size} failed, so nothing was merged into {dst} "
                          f"(fix: see its error: {error})")
    if not world.is_main:
        return stats
    indexes = [index for _, index, _ in gathered]
    merge_parts(dst, 1, indexes)
    if rejects:
        merge_parts(rejects, 2, indexes)
    total = ScoreStats()
    for rank_stats, _, _ in gathered:
        total.add(rank_stats)
    logger.info("merged %d parts into %s", world.size, dst)
    if total.rejected:
        logger.warning("%d malformed lines written to %s", total.rejected, rejects)
    return total
