"""`neogen score --ray` and neogen.ray.Predictor: without Ray first, then on a real two-node Ray cluster.

The cluster tests start a Ray head and one more node on this machine (`ray start`, one CPU each, temp files under
the test's tmp dir), score a few thousand lines with the tiny GPT-Neo run through the real CLI, and compare with
`neogen score`'s path on the same chunks: the output in input order is the same bytes, a malformed line lands in the
rejects with its reason, and killing the worker node in the middle of a run still yields every line exactly once.
Every wait is bounded; the nodes are stopped by process group, only the processes these tests started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, needs, write_lines

from neogen.classify import Classifier
from neogen.cli import main as neogen_main
from neogen.errors import DataError, NeogenError, OutputError
from neogen.ray import (
    MANIFEST,
    MARKER,
    ClusterError,
    Output,
    Predictor,
    RayScoreResult,
    check_outputs,
    claimed_output,
    import_ray,
    input_files,
    line_chunks,
    plan,
    write_chunks,
)
from neogen.score import score_jsonl
from neogen.score_lines import ScoreStats, chunks

needs_ray = needs(importlib.util.find_spec("ray") is not None, "Ray Data (the ray extra)", "pip install -e '.[test]'")

CHUNK, BATCH = 100, 16  # the same chunks and batches on both paths: the same floats, so the same bytes
START_TIMEOUT = 240  # a node starting on a busy 2-core machine; a guard against a hang, not a speed check
RUN_TIMEOUT = 600
WORDS = ["cell", "acid", "sum", "lens", "gene", "atom", "prime", "volt", "force", "bond"]


def rows(n: int, seed: int) -> list:
    """n JSONL rows of short questions; some carry a gold `label` (kept as input_label), one is malformed."""
    import random

    rng = random.Random(seed)
    out: list = []
    for i in range(n):
        row = {"id": i, "text": f"q{i}: " + " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))}
        if i % 7 == 0:
            row["label"] = "gold"
        out.append(row)
    out[n // 3] = '{"text": 5}'  # malformed: a number where the text belongs
    out[n // 2] = ""  # a blank line: skipped, but counted in the line numbers
    return out


# ------------------------------------------------------------------------------------------- without a cluster


def test_chunks_are_cut_as_neogen_score_cuts_them() -> None:
    """Line numbers, blank lines, \\r, a missing last newline and lines longer than a read all match."""
    data = b"a\n\n\r\nb\rc\n" + b"x" * (3 << 20) + b"\nlast"
    for size in (1, 2, 3, 1024):
        ours = [(first, raw) for first, raw, _ in line_chunks(io.BytesIO(data), size)]
        theirs = [(chunk[0][0], b"".join(raw for _, raw in chunk)) for chunk in chunks(io.BytesIO(data), size)]
        assert ours == theirs


def test_predictor_adds_score_fields_to_records_in_every_batch_format(tiny_run: Path) -> None:
    """The fields `neogen score` writes for the same records (a table's rows all have its columns), and an error."""
    predictor = Predictor(tiny_run, batch_size=4)
    records = [{"text": "what about the cell", "label": "gold", "error": "old", "n": 1},
               {"text": "", "label": None, "error": None, "n": 2},
               {"text": "the acid\u2028and the\x85bond", "label": None, "error": None, "n": 3}]
    expected = score_jsonl_lines(predictor.classifier, records)
    table = pa.Table.from_pylist(records)
    numpy = {key: table[key].to_numpy(zero_copy_only=False) for key in table.schema.names}
    for batch in (table, table.to_pandas(), numpy):
        out = predictor(batch).to_pylist()
        assert [row["error"] for row in out] == [None, "'text' is empty", None]
        assert out[0]["input_label"] == "gold" and out[0]["input_error"] == "old"
        assert out[1]["label"] is None and out[1]["scores"] is None and out[1]["input_label"] is None
        renamed = [{**{k: v for k, v in want.items() if k != "error"}, "input_error": want["error"]}
                   for want in expected]  # the error field of the input, kept as score keeps a clashing field
        assert [{k: v for k, v in row.items() if k != "error"} for row in (out[0], out[2])] == renamed


def score_jsonl_lines(classifier: Classifier, records: list[dict]) -> list[dict]:
    """What `neogen score` writes for the records that can be scored (the first and the last here)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = write_lines(Path(tmp) / "in.jsonl", records)
        score_jsonl(classifier, str(src), f"{tmp}/out.jsonl", rejects=f"{tmp}/rej.jsonl", progress=False)
        return [json.loads(line) for line in Path(f"{tmp}/out.jsonl").read_text(encoding="utf-8").split("\n")[:-1]]


def test_inputs_are_files_folders_and_globs(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.parquet", "c.txt", ".hidden.jsonl", "_tmp/d.jsonl", "sub/e.jsonl.gz"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    _, local = input_files(str(tmp_path))
    assert [p.relative_to(tmp_path).as_posix() for p in local] == ["a.parquet", "b.jsonl", "sub/e.jsonl.gz"]
    assert input_files(str(tmp_path / "*.txt"))[1] == [tmp_path / "c.txt"]
    assert input_files(f"local://{tmp_path / 'c.txt'}")[0] == [f"local://{tmp_path / 'c.txt'}"]
    assert input_files("s3://bucket/scores/") == (["s3://bucket/scores/"], [])
    with pytest.raises(NeogenError, match="matches no file"):
        input_files(str(tmp_path / "*.csv"))


def test_outputs_never_replace_an_input_or_a_folder_neogen_did_not_write(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in.jsonl", [{"text": "a"}])
    with pytest.raises(OutputError, match="same file"):
        check_outputs([src], str(src), None, single_file=True)
    with pytest.raises(OutputError, match="same file"):
        check_outputs([src], str(tmp_path / "out"), str(src), single_file=False)
    with pytest.raises(NeogenError, match="inside the output folder"):
        check_outputs([src], str(tmp_path), None, single_file=False)
    with pytest.raises(OutputError, match="neogen did not write"):
        claimed_output(str(tmp_path), single_file=False)
    with claimed_output(str(tmp_path / "out"), single_file=False):
        assert (tmp_path / "out" / MARKER).is_file()
    (tmp_path / "out" / "part-00007.jsonl").write_text("old\n")
    (tmp_path / "out" / "notes.txt").write_text("mine\n")
    output = Output(str(tmp_path / "out"), False, None, 10, {})
    output.open()
    output.close(ScoreStats())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, MARKER, "notes.txt"]


def chunk(path: str, first: int, out: str, rejects: str = "", lines: int = 2) -> dict:
    return {"path": path, "first": first, "lines": lines, "out": out.encode(), "rejects": rejects.encode(),
            "read": lines, "scored": lines, "rejected": 0}


def test_chunks_are_written_once_in_sequence_or_the_run_stops(tmp_path: Path) -> None:
    result = RayScoreResult(ScoreStats())
    output = Output(str(tmp_path / "out"), False, None, part_lines=2, about={"kind": "test"})
    (tmp_path / "out").mkdir()
    output.open()
    write_chunks([chunk("a", 1, "1\n2\n"), chunk("a", 3, "3\n4\n"), chunk("a", 1, "1\n2\n"), chunk("b", 1, "5\n")],
                 output, result, False, time.time())
    output.close(result.stats)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["complete"] and [(p["file"], p["source"], p["first_line"], p["last_line"], p["lines"])
                                     for p in manifest["parts"]] == [
        ("part-00000.jsonl", "a", 1, 2, 2), ("part-00001.jsonl", "a", 3, 4, 2), ("part-00002.jsonl", "b", 1, 2, 1)]
    assert (tmp_path / "out" / "part-00001.jsonl").read_text() == "3\n4\n"
    for bad, message in (([chunk("a", 3, "x\n")], "before the lines above it"),
                         ([chunk("a", 1, "x\n"), chunk("a", 5, "y\n")], "lines 3-4 never came back")):
        output = Output(str(tmp_path / "single.jsonl"), True, None, 3, {})
        output.open()
        with pytest.raises(NeogenError, match=message):
            write_chunks(bad, output, RayScoreResult(ScoreStats()), False, time.time())
        output.close()
    rejected = json.dumps({"line": 2, "error": "no 'text' field", "raw": "{\u2028}"}, ensure_ascii=False) + "\n"
    output = Output(str(tmp_path / "single.jsonl"), True, str(tmp_path / "rejects.jsonl"), 3, {})
    output.open()
    write_chunks([chunk("in.jsonl", 1, "1\n", rejected)], output, RayScoreResult(ScoreStats()), False, 0.0)
    output.close()
    assert (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").split("\n") == [
        json.dumps({"file": "in.jsonl", "line": 2, "error": "no 'text' field", "raw": "{\u2028}"}, ensure_ascii=False),
        ""]
    output = Output(str(tmp_path / "single.jsonl"), True, None, 3, {})
    output.open()
    with pytest.raises(DataError, match=r"^in.jsonl:2: no 'text' field \(fix: .*--rejects FILE"):
        write_chunks([chunk("in.jsonl", 1, "1\n", rejected)], output, RayScoreResult(ScoreStats()), False, 0.0)
    output.close()


def test_cluster_options_need_ray_and_ray_needs_installing(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert neogen_main(["score", "run", "in.jsonl", "out", "--single-file", "--actors", "2"]) == 2
    assert "--actors, --single-file are for scoring on a Ray cluster" in capsys.readouterr().err
    assert neogen_main(["score", "run", "in.jsonl", "out", "--ray", "--resume"]) == 2
    assert "--resume is for one-process scoring" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(NeogenError, match=r"pip install 'neogen\[ray\]'"):
        import_ray()


class FakeRay:
    """What plan() asks of Ray: the cluster's resources and its nodes."""

    def __init__(self, *nodes: dict[str, float]) -> None:
        self.resources = nodes

    def cluster_resources(self) -> dict[str, float]:
        return {key: sum(node.get(key, 0.0) for node in self.resources) for key in ("CPU", "GPU")}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": node} for node in self.resources]


def test_actors_are_one_per_gpu_or_node_by_default_and_must_fit() -> None:
    assert plan(FakeRay({"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}), None, None, None) == (4, 1.0, 1.0)
    assert plan(FakeRay({"CPU": 8, "GPU": 2}), None, 0.5, None) == (4, 0.5, 1.0)
    assert plan(FakeRay({"CPU": 4}, {"CPU": 4}), None, None, None) == (2, 0.0, 4.0)
    assert plan(FakeRay({"CPU": 4}, {"CPU": 4}), 4, None, None) == (4, 0.0, 2.0)
    for args in ((3, None, 1.0), (1, 1.0, None), (None, 2.0, None)):
        with pytest.raises(ClusterError, match="do not fit: the cluster has 1 node"):
            plan(FakeRay({"CPU": 2}), *args)


# ------------------------------------------------------------------------------------------------ on a cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A Ray head and worker nodes on this machine, each `ray start --block` in its own process group."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port = tmp, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        # A lost node is declared dead after about 3 s instead of 30; no token authentication, whatever the user's
        # ~/.ray holds (a token file there turns it on, for the nodes and drivers of this test cluster alike).
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                    "RAY_health_check_failure_threshold": "3", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def start_node(self, name: str, *args: str) -> None:
        log = (self.tmp / f"{name}.log").open("ab")
        self.nodes[name] = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--block", "--disable-usage-stats", "--num-cpus=1",
             "--object-store-memory=100000000", *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True)
        log.close()

    def start(self) -> None:
        self.start_node("head", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                        f"--temp-dir={self.tmp / 'ray'}", "--include-dashboard=false")
        self.wait_for_nodes(1)
        self.add_worker()

    def add_worker(self) -> None:
        self.start_node("worker", f"--address={self.address}")
        self.wait_for_nodes(2)

    def alive_nodes(self) -> int:
        proc = subprocess.run([str(Path(sys.executable).with_name("ray")), "status", f"--address={self.address}"],
                              capture_output=True, text=True, timeout=60, env=self.env, check=False)
        active = proc.stdout.partition("Active:")[2].partition("Pending:")[0]
        return sum(1 for line in active.splitlines() if "node_" in line)

    def wait_for_nodes(self, n: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while self.alive_nodes() != n:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise AssertionError(f"ray {name} exited: {(self.tmp / f'{name}.log').read_text()[-3000:]}")
            assert time.monotonic() < deadline, f"the Ray cluster did not reach {n} nodes in {START_TIMEOUT} s"
            time.sleep(1)

    def kill(self, name: str) -> None:
        """SIGKILL a node's process group: the node is lost as a crashed machine is; its workers exit with it."""
        proc = self.nodes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    def stop(self) -> None:
        """Kill every node; then end the worker processes they started (each in a session of its own, named by the
        pid in its log file's name) that have not exited with their raylet."""
        import psutil

        for name in list(self.nodes):
            self.kill(name)
        pids = {int(p.stem.rpartition("_")[2]) for p in (self.tmp / "ray").glob("session_*/logs/python-core-*.log")}
        procs = [p for pid in pids if psutil.pid_exists(pid) for p in [psutil.Process(pid)] if "ray" in p.name()]
        _, alive = psutil.wait_procs(procs, timeout=30)
        for proc in alive:
            proc.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs Ray")  # the tests using it carry needs_ray, which fails under CI
    tmp = tmp_path_factory.mktemp("ray")
    if len(str(tmp)) > 48:  # Ray's socket paths under it (about 70 bytes more) must stay below 108 bytes
        tmp = Path(tempfile.mkdtemp(prefix="neogen-ray-"))
    cluster = LocalCluster(tmp)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if tmp.name.startswith("neogen-ray-"):
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def inputs(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes], dict[str, str]]:
    """A folder of a JSONL file (2,400 lines) and a Parquet file (598 rows); `neogen score`'s output and rejects of
    each (the Parquet rows as a JSONL file of the same records)."""
    tmp = tmp_path_factory.mktemp("ray-inputs")
    folder = tmp / "in"
    folder.mkdir()
    write_lines(folder / "a.jsonl", rows(2400, seed=0))
    records = [r for r in rows(600, seed=1) if isinstance(r, dict)]
    pq.write_table(pa.Table.from_pylist(records), folder / "b.parquet", row_group_size=128)
    write_lines(tmp / "b.jsonl", pq.read_table(folder / "b.parquet").to_pylist())  # a null label where none was
    classifier = Classifier.load(tiny_run, batch_size=BATCH)
    out, rejects = {}, {}
    for name, src in (("a", folder / "a.jsonl"), ("b", tmp / "b.jsonl")):
        score_jsonl(classifier, str(src), str(tmp / f"{name}.out"), rejects=str(tmp / f"{name}.rej"),
                    chunk_size=CHUNK, progress=False)
        out[name], rejects[name] = (tmp / f"{name}.out").read_bytes(), (tmp / f"{name}.rej").read_text()
    return folder, out, rejects


def score_on(cluster: LocalCluster, run: Path, src: Path, dst: Path, *args: str) -> subprocess.Popen:
    """`neogen score RUN SRC DST --ray` on the cluster, two actors with half a CPU each (room for one to restart)."""
    return subprocess.Popen([sys.executable, "-m", "neogen.cli", "score", str(run), str(src), str(dst), "--ray",
                             "--address", cluster.address, "--actors", "2", "--cpus-per-actor", "0.5",
                             "--chunk-size", str(CHUNK), "--batch-size", str(BATCH), "--no-progress", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cluster.env)


def finished(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, output[-4000:]
    return output


@pytest.mark.ray
@needs_ray
def test_output_in_input_order_is_neogen_scores_bytes(cluster: LocalCluster, tiny_run: Path, inputs,
                                                     tmp_path: Path) -> None:
    folder, expected, expected_rejects = inputs
    dst = tmp_path / "out"
    log = finished(score_on(cluster, tiny_run, folder, dst, "--rejects", str(tmp_path / "rejects.jsonl")))
    # 2,400 lines, one blank, one malformed; 598 Parquet rows (the malformed and the blank row left out of it)
    assert "scored 2996 of 2997 lines on 2 actor(s)" in log and "1 rejected into" in log
    manifest = json.loads((dst / MANIFEST).read_text())
    assert manifest["complete"] and (manifest["read"], manifest["scored"], manifest["rejected"]) == (2997, 2996, 1)
    assert [(Path(p["source"]).name, p["first_line"], p["last_line"]) for p in manifest["parts"]] == \
        [("a.jsonl", 1, 2400), ("b.parquet", 1, 598)]
    parts = [(dst / p["file"]).read_bytes() for p in manifest["parts"]]
    assert parts == [expected["a"], expected["b"]]
    # The malformed line, with its reason and bytes, as `neogen score` sets it aside, and the file it is in.
    (entry,) = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert entry == {"file": str(folder / "a.jsonl"), **json.loads(expected_rejects["a"])}
    assert entry["line"] == 801 and entry["error"] == "'text' is a number (5), not a string"


@pytest.mark.ray
@needs_ray
def test_predictor_in_a_ray_data_pipeline(cluster: LocalCluster, tiny_run: Path) -> None:
    """The documented use: Ray Data's map_batches with Predictor on an actor pool, records in and out."""
    script = f"""
import json, ray
from neogen.ray import Predictor
ray.init(address={cluster.address!r}, logging_level="ERROR", log_to_driver=False)
rows = [{{"id": i, "text": f"the cell and the acid {{i}}"}} for i in range(40)] + [{{"id": 40, "text": " "}}]
ds = ray.data.from_items(rows)
out = ds.map_batches(Predictor, fn_constructor_kwargs={{"run": {str(tiny_run)!r}, "batch_size": 8}}, batch_size=16,
                     batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.5).take_all()
print(json.dumps(sorted(out, key=lambda r: r["id"]), default=str))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          env=cluster.env, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert [r["id"] for r in out] == list(range(41))
    assert all(r["label"] in ("Biology", "Chemistry", "Maths", "Physics") and r["error"] is None for r in out[:40])
    assert abs(sum(out[0]["scores"].values()) - 1) < 1e-5 and 0 <= out[0]["label_mass"] <= 1
    assert out[40]["label"] is None and out[40]["error"] == "'text' holds only whitespace"


@pytest.mark.ray
@needs_ray
def test_killing_the_worker_node_mid_run_yields_every_line_once(cluster: LocalCluster, tiny_run: Path, inputs,
                                                               tmp_path: Path) -> None:
    folder, expected, _ = inputs
    if "worker" not in cluster.nodes:
        cluster.add_worker()
    dst = tmp_path / "out.jsonl"
    proc = score_on(cluster, tiny_run, folder / "a.jsonl", dst, "--single-file", "--rejects",
                    str(tmp_path / "rejects.jsonl"))
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (dst.exists() and dst.stat().st_size):  # both actors are up before the first chunk is scored
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cluster.kill("worker")
    written_at_kill = dst.stat().st_size
    finished(proc)
    assert written_at_kill < len(expected["a"]), "the run ended before the node was killed"
    lines = dst.read_bytes().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [i for i in range(2400) if i not in (800, 1200)]
    assert dst.read_bytes() == expected["a"]
