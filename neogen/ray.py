"""Batch scoring on a Ray cluster with Ray Data: one model replica per actor, input from files anywhere Ray reads.

Two ways in:

- `Predictor`, for users' own Ray Data pipelines: `ds.map_batches(Predictor, fn_constructor_kwargs={"run": RUN},
  compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1, batch_size=256)`. Each actor loads the run (or export) once
  and adds to every record the fields `neogen score` writes (`label` or `labels`, `scores`, `label_mass`, a clashing
  input field kept as `input_<name>`) and an `error` field: null, or why the record could not be scored.
- `score_ray`, behind `neogen score RUN IN OUT --ray`: IN is a JSONL or Parquet file, a folder or a glob, read by
  Ray's file readers (local paths every node sees, s3://, gs://...); OUT a folder of JSONL part files with a manifest
  of the parts in input order, or one file with `single_file`.

The command's actors score whole chunks of `chunk_size` lines, numbered from each file's first line as `neogen score`
numbers them, through neogen.score_lines.score_chunk itself: a line comes out as the same bytes as `neogen score`
with the same --chunk-size and --batch-size writes. A chunk is one row of the dataset, so Ray never cuts one, and the
driver alone writes, in input order (Ray Data's preserve_order): it checks that every file's chunks arrive once and
in sequence, so a chunk Ray retried after losing a node is written once, and a missing one stops the run.

Only this module imports Ray, and only inside functions, so that `import neogen` never needs it: Ray is the optional
extra `pip install 'neogen[ray]'`. The module's name is `neogen.ray`; with absolute imports `import ray` here is the
Ray package.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import decimal
import glob
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from neogen.errors import DataError, NeogenError
from neogen.folders import FileLock, claim, file_id, refuse_same_files, write_error
from neogen.score_lines import ScoreStats, free_key, score_chunk

logger = logging.getLogger(__name__)

MARKER, KIND = "neogen-ray-output.json", "ray-score-output"
MANIFEST = "manifest.json"
PART_NAME = re.compile(r"part-\d{5}\.jsonl")
PARQUET = (".parquet", ".pq")
# The files a folder contributes (a file named by itself or by a glob is read whatever its name).
JSONL = tuple(f"{ext}{z}" for ext in (".jsonl", ".ndjson", ".json") for z in ("", ".gz", ".bz2", ".zst", ".lz4"))
CLUSTER_OPTIONS = ("address", "actors", "gpus_per_actor", "cpus_per_actor", "single_file")
TABLE_BYTES = 8 << 20  # chunks per table yielded by a read task, at most about this many bytes
BLOCK_BYTES = 8 << 20  # Ray Data blocks of about this size: the unit an actor takes, and redoes after a node is lost


class ClusterError(NeogenError):
    """The Ray cluster cannot be reached, lacks the resources asked for, or failed the run: names the fix."""

    exit_code = 69  # EX_UNAVAILABLE


# ------------------------------------------------------------------------------------------------ the predictors


class Predictor:
    """A Ray Data `map_batches` class: loads a run or an export once per actor, then scores batches of records.

    A batch (pyarrow Table, pandas DataFrame or dict of numpy arrays) comes back as a pyarrow Table of the same records
    with `neogen score`'s fields added, found by score_chunk itself (the text rule of `text_field`, else `text`, else
    `prompt`; clashing input fields kept as `input_<name>`), and an `error` field: null, or why the record was not
    scored, with the result fields null. Values JSON cannot hold come back as JSON would write them (dates as ISO text,
    bytes as UTF-8 text or base64).
    """

    def __init__(self, run: str | os.PathLike[str], text_field: str | None = None, batch_size: int | None = None,
                 max_batch_tokens: int | None = None, device: str | None = None) -> None:
        import numpy as np

        from neogen.classify import Classifier

        self.run = str(run)
        self.text_field = text_field
        self.classifier = Classifier.load(run, batch_size=batch_size, max_batch_tokens=max_batch_tokens, device=device)
        labels = self.classifier.labels
        self.result_keys = list(self.classifier.result(np.full(len(labels), 1 / len(labels)), 1.0))

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = records_of(batch)
        lines = [(n, (json.dumps(row, default=json_value) + "\n").encode("ascii")) for n, row in enumerate(rows, 1)]
        out, rejected, _ = score_chunk(self.classifier, lines, self.run, self.text_field, True, "")
        reasons = {entry["line"]: entry["error"] for entry in map(json.loads, lines_of(rejected))}
        scored = iter(lines_of(out))
        records = []
        for n, (_, line) in enumerate(lines, 1):
            reason = reasons.get(n)
            record = json.loads(next(scored)) if reason is None else self._unscored(json.loads(line))
            if "error" in record:
                record[free_key(record, "error")] = record.pop("error")
            record["error"] = reason
            records.append(record)
        keys = list(dict.fromkeys(key for record in records for key in record))  # from_pylist reads the first only
        return pa.table({key: [record.get(key) for record in records] for key in keys})

    def _unscored(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record that could not be scored, with the result fields null (their input fields kept as score keeps
        them), so that every row of the output has the same columns."""
        for key in self.result_keys:
            if key in record:
                record[free_key(record, key)] = record.pop(key)
        record.update(dict.fromkeys(self.result_keys))
        return record


class LinePredictor(Predictor):
    """The command's `map_batches` class: each input row is one chunk of raw JSONL lines (`path`, `first` line
    number, `data`); each output row that chunk's output and rejects lines, rendered by score_chunk, its counts and
    when its scoring started (seconds since the epoch)."""

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = []
        for chunk in batch.to_pylist():
            lines = list(enumerate(io.BytesIO(chunk["data"]), start=chunk["first"]))
            started = time.time()  # the clock of every node: the driver's start-up figure is the earliest
            out, rejected, stats = score_chunk(self.classifier, lines, chunk["path"], self.text_field, True, "")
            rows.append({"path": chunk["path"], "first": chunk["first"], "lines": len(lines),
                         "out": out.encode("utf-8"), "rejects": rejected.encode("utf-8"), "read": stats.read,
                         "scored": stats.scored, "rejected": stats.rejected, "started": started})
        return pa.Table.from_pylist(rows, schema=output_schema())


def lines_of(text: str) -> list[str]:
    """The lines of score_chunk's output, split at "\\n" only: a text may hold U+2028 or \\x85, which str.splitlines
    would also split at."""
    return text.split("\n")[:-1]


def output_schema() -> Any:
    """The columns LinePredictor returns: one row per chunk."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("first", pa.int64()), ("lines", pa.int64()),
                      ("out", pa.large_binary()), ("rejects", pa.large_binary()), ("read", pa.int64()),
                      ("scored", pa.int64()), ("rejected", pa.int64()), ("started", pa.float64())])


def records_of(batch: Any) -> list[dict[str, Any]]:
    """The rows of a Ray Data batch in any of its formats, as dicts of plain Python values."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch.to_pylist()
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # a pandas DataFrame
        try:
            return pa.Table.from_pandas(batch, preserve_index=False).to_pylist()
        except (pa.ArrowException, TypeError, ValueError):  # mixed object columns: pandas' own values
            return batch.to_dict("records")
    if isinstance(batch, dict):
        columns = {key: value.tolist() if hasattr(value, "tolist") else list(value) for key, value in batch.items()}
        return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    raise TypeError(f"a batch is a pyarrow Table, a pandas DataFrame or a dict of arrays, not {type(batch).__name__}")


def json_value(value: Any) -> Any:
    """`json.dumps`'s fallback for what Arrow, pandas and numpy hold and JSON does not."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal | dt.timedelta):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


# ---------------------------------------------------------------------------------------------------- reading


def is_parquet(path: str) -> bool:
    return path.lower().endswith(PARQUET)


def line_chunks(f: Any, size: int) -> Iterator[tuple[int, bytes, int]]:
    """(first line number, raw bytes, line count) of every `size` lines of a binary stream, as `neogen score` cuts
    them: lines end at b"\\n" only, blank ones included; the last line may lack its newline."""
    first, lines, partial = 1, [], []
    while data := f.read(1 << 20):
        pieces = data.split(b"\n")
        for piece in pieces[:-1]:
            lines.append(b"".join([*partial, piece, b"\n"]))
            partial = []
            if len(lines) == size:
                yield first, b"".join(lines), size
                first, lines = first + size, []
        if pieces[-1]:
            partial.append(pieces[-1])
    if partial:
        lines.append(b"".join(partial))
    if lines:
        yield first, b"".join(lines), len(lines)


def parquet_chunks(f: Any, size: int) -> Iterator[tuple[int, bytes, int]]:
    """The rows of a Parquet file as JSONL chunks: each row one JSON line, numbered from 1 as neogen's readers
    number Parquet rows."""
    import pyarrow.parquet as pq

    first = 1
    for batch in pq.ParquetFile(f).iter_batches(batch_size=size):
        rows = batch.to_pylist()
        data = "".join(json.dumps(row, ensure_ascii=False, default=json_value) + "\n" for row in rows)
        yield first, data.encode("utf-8"), len(rows)
        first += len(rows)


def chunk_tables(path: str, chunks: Iterable[tuple[int, bytes, int]]) -> Iterator[Any]:
    """pyarrow tables of one row per chunk (`path`, `first`, `data`), about TABLE_BYTES each."""
    import pyarrow as pa

    firsts: list[int] = []
    datas: list[bytes] = []
    size = 0
    for first, data, _ in chunks:
        firsts.append(first)
        datas.append(data)
        size += len(data)
        if size >= TABLE_BYTES:
            yield pa.table({"path": [path] * len(firsts), "first": firsts, "data": pa.array(datas, pa.large_binary())})
            firsts, datas, size = [], [], 0
    if firsts:
        yield pa.table({"path": [path] * len(firsts), "first": firsts, "data": pa.array(datas, pa.large_binary())})


def chunk_source(paths: list[str], chunk_size: int) -> Any:
    """A Ray Data datasource of JSONL and Parquet files, one row per chunk of `chunk_size` lines (or rows)."""
    from ray.data.datasource import FileBasedDatasource

    class ChunkSource(FileBasedDatasource):
        """Ray's file reading (listing, object stores, compression, retries), neogen's cutting into chunks."""

        def __init__(self, paths: list[str], chunk_size: int, **kwargs: Any) -> None:
            super().__init__(paths, **kwargs)
            self.chunk_size = chunk_size

        def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> Any:
            if is_parquet(path):  # Parquet needs random access, not a stream
                return filesystem.open_input_file(path)
            return super()._open_input_source(filesystem, path, **open_args)

        def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
            chunks = parquet_chunks(f, self.chunk_size) if is_parquet(path) else line_chunks(f, self.chunk_size)
            yield from chunk_tables(path, chunks)

    return ChunkSource(paths, chunk_size)


def input_files(src: str) -> tuple[list[str], list[Path]]:
    """The paths Ray reads for IN, and the local files among them (for the same-file checks).

    A local file is read whatever its name; a local folder contributes its JSONL and Parquet files (recursively,
    hidden ones left out) and a glob the files it matches, sorted by name. A URI (s3://bucket/prefix/) goes to Ray as
    it is; `local://PATH` reads PATH on the driver's node, for a file only that node holds.
    """
    scheme, local = ("local://", src.removeprefix("local://")) if src.startswith("local://") else ("", src)
    if "://" in local:
        return [src], []
    path = Path(local).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(JSONL + PARQUET)
                       and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    else:
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        what = "folder holds no JSONL or Parquet file" if path.is_dir() else "path or glob matches no file"
        raise NeogenError(f"input {src}: the {what} (fix: give a JSONL or Parquet file, a folder of them, a glob "
                          "such as 'data/*.jsonl' in quotes, or an s3:// or gs:// URI)")
    files = [p.resolve() for p in files]
    return [f"{scheme}{p}" for p in files], files


# ---------------------------------------------------------------------------------------------------- writing


@dataclass
class Part:
    """One part file: the output lines of consecutive chunks of one input file."""

    file: str
    source: str
    first_line: int
    last_line: int = 0
    lines: int = 0
    bytes: int = 0


@dataclass
class RayScoreResult:
    """What a `score_ray` run did: its counts, the parts written in input order, and its times in seconds."""

    stats: ScoreStats
    parts: list[Part] = field(default_factory=list)
    actors: int = 0
    gpus_per_actor: float = 0.0
    startup_s: float = 0.0  # from the call to the first chunk's scoring: joining the cluster, the actors loading
    seconds: float = 0.0


class Output:
    """The driver's side of the output: part files and a manifest in a folder neogen marked, or one file; and the
    rejects file. Chunks must come in input order; each file's chunks are checked to follow one another."""

    def __init__(self, dst: str, single_file: bool, rejects: str | None, part_lines: int,
                 about: dict[str, Any]) -> None:
        self.dst, self.single_file, self.rejects, self.part_lines = Path(dst), single_file, rejects, part_lines
        self.about = about
        self.parts: list[Part] = []
        self.files: dict[str, IO[bytes]] = {}
        self.next_line: dict[str, int] = {}  # per input file: the first line of the chunk that must come next
        self.done: list[str] = []

    def open(self) -> None:
        """Create the files (after the caller claimed and locked the output)."""
        if not self.single_file:
            for old in self.dst.iterdir():  # a marked folder: the parts and manifest of an earlier run are ours
                if PART_NAME.fullmatch(old.name) or old.name == MANIFEST:
                    old.unlink()
            self.save_manifest(ScoreStats(), complete=False)
        self.files["out"] = self._create(self.dst) if self.single_file else None
        self.files["rejects"] = self._create(Path(self.rejects)) if self.rejects else None

    def _create(self, path: Path) -> IO[bytes]:
        try:
            return open(path, "wb", buffering=0)  # closed by close()
        except OSError as e:
            raise write_error(e, path) from None

    def expect(self, path: str, first: int, lines: int) -> bool:
        """Whether the chunk is the next one of its file (True), one written already (False: a chunk Ray delivered
        twice is written once); a chunk out of sequence stops the run."""
        expected = self.next_line.get(path)
        if expected is None:
            if path in self.done or first != 1:
                raise NeogenError(f"{path}: the cluster returned line {first} before the lines above it; the output "
                                  "is incomplete (fix: score again; report it if it happens again)")
            if self.next_line:
                self.done.extend(self.next_line)
                self.next_line.clear()
            expected = 1
        if first < expected:
            return False
        if first > expected:
            raise NeogenError(f"{path}: lines {expected}-{first - 1} never came back from the cluster; the output is "
                              "incomplete (fix: score again)")
        self.next_line[path] = first + lines
        return True

    def add(self, path: str, first: int, lines: int, out: bytes, rejects: bytes) -> None:
        """Write one chunk's output and rejects lines."""
        if self.rejects and rejects:
            entries = [json.dumps({"file": path, **json.loads(line)}, ensure_ascii=False) + "\n"
                       for line in lines_of(rejects.decode("utf-8"))]
            self._write(self.files["rejects"], "".join(entries).encode("utf-8"), self.rejects)
        if self.single_file:
            self._write(self.files["out"], out, str(self.dst))
            return
        part = self.parts[-1] if self.parts else None
        if part is None or part.source != path or part.lines >= self.part_lines:
            self._roll(path, first)
            part = self.parts[-1]
        self._write(self.files["part"], out, str(self.dst / part.file))
        part.last_line, part.lines, part.bytes = first + lines - 1, part.lines + out.count(b"\n"), part.bytes + len(out)

    def _roll(self, path: str, first: int) -> None:
        """Close the current part file (the manifest then lists it) and start the next one."""
        if self.files.get("part"):
            self.files.pop("part").close()
            self.save_manifest(None, complete=False)
        part = Part(f"part-{len(self.parts):05d}.jsonl", path, first)
        self.parts.append(part)
        self.files["part"] = self._create(self.dst / part.file)

    def _write(self, f: IO[bytes] | None, data: bytes, path: str) -> None:
        """Write all of `data` to an unbuffered file (which may take part of it per call)."""
        rest = memoryview(data)
        try:
            while f is not None and rest:
                rest = rest[f.write(rest):]
        except OSError as e:
            raise write_error(e, path) from None

    def save_manifest(self, stats: ScoreStats | None, complete: bool) -> None:
        """The folder's manifest.json, replaced whole: the parts in input order, the counts, whether it is done."""
        counts = {"read": stats.read, "scored": stats.scored, "rejected": stats.rejected} if stats else {}
        manifest = {**self.about, "complete": complete, **counts, "rejects": self.rejects,
                    "parts": [vars(part) for part in self.parts]}
        tmp = self.dst / f".{MANIFEST}.tmp"
        try:
            tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            os.replace(tmp, self.dst / MANIFEST)
        except OSError as e:
            raise write_error(e, self.dst / MANIFEST) from None

    def close(self, stats: ScoreStats | None = None) -> None:
        """Close the files; with the final counts, the manifest says the output is complete."""
        for f in self.files.values():
            if f is not None:
                f.close()
        self.files.clear()
        if not self.single_file:
            self.save_manifest(stats, complete=stats is not None)


def check_outputs(local_inputs: list[Path], dst: str, rejects: str | None, single_file: bool) -> None:
    """Refuse, before anything is written, an output or rejects file that is an input, and an output folder that
    holds an input or is not neogen's."""
    if "-" in (dst, rejects):
        raise NeogenError("with --ray, OUT and --rejects are paths, not '-' (fix: give a folder, or --single-file "
                          "FILE, and a rejects file)")
    out = Path(dst).expanduser().resolve()
    fix = "write the output and the rejects to new paths of their own"
    if not single_file:
        for path in local_inputs:
            if path.is_relative_to(out):
                raise NeogenError(f"the input {path} is inside the output folder {dst}, whose part files are "
                                  f"replaced (fix: {fix})")
        if rejects and Path(rejects).resolve().parent == out and (Path(rejects).name in (MARKER, MANIFEST) or
                                                                   PART_NAME.fullmatch(Path(rejects).name)):
            raise NeogenError(f"the rejects file {rejects} has the name of a file of the output folder {dst} "
                              f"(fix: {fix})")
    if single_file and out.is_dir():
        raise NeogenError(f"{dst} is a folder; --single-file writes one file (fix: give a file path, or drop "
                          "--single-file to write part files into the folder)")
    files = {f"input {i}": (str(p), file_id(p)) for i, p in enumerate(local_inputs)}
    files["output"] = (dst, file_id(dst) if single_file else None)
    files["rejects file"] = (rejects, file_id(rejects) if rejects else None)
    refuse_same_files(files, fix)
    for what, path in (("output", dst if single_file else None), ("rejects", rejects)):
        if path and not Path(path).expanduser().resolve().parent.is_dir():
            raise NeogenError(f"the {what} file's folder {Path(path).parent} does not exist (fix: create it first)")


def claimed_output(dst: str, single_file: bool) -> FileLock:
    """Take the output: one file, locked; or a folder neogen creates or marked earlier, locked by its marker."""
    if single_file:
        return FileLock(dst, f"the output {dst} (another `neogen score` is writing it)")
    folder = Path(dst).expanduser()
    claim(folder, MARKER, KIND, "give a new or empty folder, or an earlier `neogen score --ray` output folder, "
          "whose part files are replaced")
    return FileLock(folder / MARKER, f"the output folder {dst} (another `neogen score --ray` is writing it)")


# ---------------------------------------------------------------------------------------------------- running


def import_ray() -> Any:
    """The Ray package with Ray Data, or a NeogenError saying how to install it."""
    try:
        import ray
        import ray.data  # Ray Data, the [data] extra
    except ImportError as e:
        raise NeogenError(f"--ray needs Ray Data, which is not installed ({e}) (fix: pip install 'neogen[ray]' on "
                          "every node of the cluster)") from None
    return ray


def connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at `address` (default: RAY_ADDRESS, else a cluster started on this machine with `ray start`,
    else a new local one); False when this process had joined one already (the caller's, left running)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or os.environ.get("RAY_ADDRESS") or "this machine"
        raise ClusterError(f"cannot join a Ray cluster at {where}: {str(e).strip().splitlines()[0]} (fix: start one "
                           "with `ray start --head` and pass its address, --address HOST:6379)") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours show
    return True


def plan(ray: Any, actors: int | None, gpus: float | None, cpus: float | None) -> tuple[int, float, float]:
    """Actors and the GPUs and CPUs of each. Where the cluster has GPUs: one GPU and one CPU per actor, as many actors
    as GPUs. Without: actors of as many CPUs (torch's threads) as the smallest node has, as many as the cluster holds
    (one per node when the nodes are alike), or with `actors` the cluster's CPUs shared among them. Asking for more
    than the cluster has is refused: Ray would wait for it for ever."""
    resources = ray.cluster_resources()
    total_gpus, total_cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    alive = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    gpus = (1.0 if total_gpus >= 1 else 0.0) if gpus is None else gpus
    if cpus is None and not gpus:
        node_cpus = min((node.get("CPU", 0.0) for node in alive), default=0.0)
        cpus = max(1.0, node_cpus if actors is None else float(int(total_cpus // actors)))
    cpus = 1.0 if cpus is None else cpus
    if actors is None:
        actors = int(total_gpus / gpus + 1e-9) if gpus else int(total_cpus / cpus + 1e-9)
    have = f"the cluster has {len(alive)} node(s) with {total_cpus:g} CPUs and {total_gpus:g} GPUs in all"
    if actors < 1 or actors * gpus > total_gpus + 1e-9 or actors * cpus > total_cpus + 1e-9:
        raise ClusterError(f"{max(actors, 1)} actor(s) with {gpus:g} GPU(s) and {cpus:g} CPU(s) each do not fit: "
                           f"{have} (fix: fewer --actors, a smaller --gpus-per-actor or --cpus-per-actor, or "
                           "more nodes)")
    logger.info("scoring with %d actor(s), %g GPU(s) and %g CPU(s) each; %s", actors, gpus, cpus, have)
    return actors, gpus, cpus


def read_options(ray: Any) -> dict[str, Any]:
    """Read tasks reserve no CPU: they only cut files into chunks, and must run beside actors that hold every CPU."""
    import inspect

    if "num_cpus" in inspect.signature(ray.data.read_datasource).parameters:
        return {"num_cpus": 0}
    return {"ray_remote_args": {"num_cpus": 0}}  # Ray before read_datasource(num_cpus=...)


def scored_chunks(ray: Any, paths: list[str], predictor: dict[str, Any], chunk_size: int, actors: int,
                  gpus: float, cpus: float, start_timeout: float) -> Iterator[dict[str, Any]]:
    """The scored chunks of the input files, in input order, from an actor pool of LinePredictors."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the driver shows its own bar, in rows/s
    context.target_max_block_size = BLOCK_BYTES
    # Start once every actor is up, so that all share the work from the first chunk on, and stop waiting when a
    # cluster cannot place them (Ray would wait for ever); Ray versions without the setting just ignore it.
    context.wait_for_min_actors_s = int(start_timeout)
    dataset = ray.data.read_datasource(chunk_source(paths, chunk_size), **read_options(ray))
    dataset = dataset.map_batches(LinePredictor, fn_constructor_kwargs=predictor, batch_size=1,
                                  batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                                  num_cpus=cpus, **({"num_gpus": gpus} if gpus else {}))
    try:
        for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield from block.to_pylist()
    except Exception as e:  # Ray's own errors, and the actors' errors Ray re-raises here wrapped in its own
        raise cluster_failure(e) from None


def cluster_failure(error: BaseException) -> NeogenError:
    """A failure Ray raised, as one NeogenError: the actor's own NeogenError where that was the cause (a run that
    one node cannot read), else a ClusterError with Ray's first line."""
    seen: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in seen:
        seen.append(cause)
        if type(cause).__module__.startswith("neogen") and isinstance(cause, NeogenError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__ or cause.__context__
    text = str(error).strip().splitlines()
    return ClusterError(f"the cluster failed the run: {type(error).__name__}: {text[-1] if text else ''} (fix: see "
                        "the Ray logs on the nodes, /tmp/ray/session_latest/logs, and score again)")


def check_run(run: str | os.PathLike[str]) -> str:
    """The run or export as an absolute path (the same on every node), checked before the cluster is asked."""
    from neogen.export import is_export
    from neogen.run import Run

    path = Path(run).expanduser().resolve()
    if not is_export(path):
        Run(path).check()
    return str(path)


def score_ray(run: str | os.PathLike[str], src: str, dst: str, *, address: str | None = None,
              actors: int | None = None, gpus_per_actor: float | None = None, cpus_per_actor: float | None = None,
              single_file: bool = False, text_field: str | None = None, rejects: str | None = None,
              batch_size: int | None = None, max_batch_tokens: int | None = None, chunk_size: int = 1024,
              progress: bool = True, part_lines: int = 100_000, start_timeout: float = 900) -> RayScoreResult:
    """Score every line of the JSONL or Parquet files of `src` on a Ray cluster into `dst`, in input order.

    `dst` is a folder of part files (a new part per input file and every `part_lines` output lines) with
    manifest.json listing them in input order, or with `single_file` one file. A malformed line stops the run
    with its file and line, or with `rejects` goes to that file with its file, line and reason.
    """
    from neogen import __version__

    start = time.time()
    if min(chunk_size, part_lines, actors or 1) < 1 or min(gpus_per_actor or 0, cpus_per_actor or 1) < 0:
        raise NeogenError("chunk_size, part_lines and actors must be at least 1, GPUs and CPUs per actor at least 0 "
                          "(fix: e.g. --actors 2 --gpus-per-actor 1)")
    run_path = check_run(run)
    paths, local = input_files(src)
    check_outputs(local, dst, rejects, single_file)
    ray = import_ray()
    about = {"kind": KIND, "neogen": __version__, "run": run_path, "input": src, "chunk_size": chunk_size}
    predictor = {"run": run_path, "text_field": text_field, "batch_size": batch_size,
                 "max_batch_tokens": max_batch_tokens}
    with claimed_output(dst, single_file):
        output = Output(dst, single_file, rejects, part_lines, about)
        joined = connect(ray, address)
        stats: ScoreStats | None = None
        try:
            actors, gpus, cpus = plan(ray, actors, gpus_per_actor, cpus_per_actor)
            result = RayScoreResult(ScoreStats(), output.parts, actors, gpus)
            output.open()
            chunks = scored_chunks(ray, paths, predictor, chunk_size, actors, gpus, cpus, start_timeout)
            write_chunks(chunks, output, result, progress, start)
            stats = result.stats
        finally:
            output.close(stats)
            if joined:
                ray.shutdown()
    result.seconds = time.time() - start
    if result.stats.rejected:
        logger.warning("%d malformed lines written to %s", result.stats.rejected, rejects)
    return result


def write_chunks(chunks: Iterable[dict[str, Any]], output: Output, result: RayScoreResult, progress: bool,
                 start: float) -> None:
    """Write the scored chunks as they come, counting them, with a progress bar in rows/s; `start` (seconds since
    the epoch) is when the run began, for its start-up figure."""
    stats = result.stats
    first = float("inf")
    with tqdm(unit=" rows", disable=not progress, desc="scoring", dynamic_ncols=True) as bar:
        for chunk in chunks:
            first = min(first, chunk.get("started", first))
            result.startup_s = max(0.0, first - start) if first < float("inf") else 0.0
            if not output.expect(chunk["path"], chunk["first"], chunk["lines"]):
                logger.info("%s: lines %d-%d came back twice (a retried task) and are written once", chunk["path"],
                            chunk["first"], chunk["first"] + chunk["lines"] - 1)
                continue
            if chunk["rejects"] and not output.rejects:
                entry = json.loads(lines_of(chunk["rejects"].decode("utf-8"))[0])
                raise DataError(chunk["path"], entry["line"], entry["error"],
                                f"fix the line, or pass --rejects FILE to set such lines aside; {stats.scored} lines "
                                "were scored before it")
            output.add(chunk["path"], chunk["first"], chunk["lines"], chunk["out"], chunk["rejects"])
            stats.add(ScoreStats(chunk["read"], chunk["scored"], chunk["rejected"]))
            bar.update(chunk["lines"])


# ---------------------------------------------------------------------------------------------------- the command


def check_cluster_options(args: argparse.Namespace) -> None:
    """Refuse the cluster options without --ray, and what --ray cannot do, before anything loads."""
    given = [f"--{name.replace('_', '-')}" for name in CLUSTER_OPTIONS
             if getattr(args, name, None) not in (None, False)]
    if given and not args.ray:
        raise NeogenError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for scoring on a Ray cluster "
                          "(fix: add --ray, or drop them)")
    if args.ray and args.input == "-":
        raise NeogenError("--ray reads files the cluster's nodes open, not stdin (fix: give a JSONL or Parquet file, "
                          "a folder or a glob)")
    if args.ray and args.resume:
        raise NeogenError("--resume is for one-process scoring, not --ray: the cluster retries what it loses on its "
                          "own (fix: drop --resume and score again)")
    if args.ray and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NeogenError("--ray runs one driver that spreads the work over the cluster, not one per torchrun "
                          "process (fix: run `neogen score ... --ray` without torchrun)")


def score_command(args: argparse.Namespace) -> None:
    """`neogen score RUN IN OUT --ray ...`: score_ray with the command's options, and a summary line."""
    check_cluster_options(args)
    result = score_ray(args.run_dir, args.input, args.output, address=args.address, actors=args.actors,
                       gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
                       single_file=args.single_file, text_field=args.text_field, rejects=args.rejects,
                       batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, chunk_size=args.chunk_size,
                       progress=not args.no_progress)
    stats = result.stats
    where = args.output if args.single_file else \
        f"{args.output.rstrip('/')}/ ({len(result.parts)} part files, {MANIFEST})"
    logger.info("scored %d of %d lines on %d actor(s) in %.1f s, %.1f s of it starting up; wrote %s%s", stats.scored,
                stats.read, result.actors, result.seconds, result.startup_s, where,
                f"; {stats.rejected} rejected into {args.rejects}" if stats.rejected else "")
