"""Scoring under torchrun: ranks share the chunks, rank 0 merges, and the bytes are those of one process."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import HANG_TIMEOUT, ROOT, write_lines

from neogen.classify import Classifier
from neogen.distributed import World
from neogen.errors import DataError, NeogenError
from neogen.score import check_options, score_jsonl
from neogen.score_shards import merge_parts, part_path, score_part

ROWS = [{"id": i, "text": f"question {i}: the " + ["cell ", "acid ", "sum ", "lens "][i % 4] * (i % 3 + 1)}
        for i in range(13)]
BAD_ROWS = [*ROWS[:3], "{not json", *ROWS[3:7], "", {"txt": 1}, *ROWS[7:11], "[2]", *ROWS[11:]]


@pytest.fixture(scope="module")
def clf(tiny_run) -> Classifier:
    return Classifier.load(tiny_run, batch_size=2)


def test_parts_merge_to_the_single_process_bytes(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", BAD_ROWS)
    score_jsonl(clf, str(src), str(tmp_path / "one.jsonl"), rejects=str(tmp_path / "one.rej"), chunk_size=2,
                progress=False)
    out, rej = str(tmp_path / "out.jsonl"), str(tmp_path / "rej.jsonl")
    runs = [score_part(clf, str(src), out, "text", rej, 2, False, World(rank, 3, rank)) for rank in range(3)]
    assert [[i for i, _, _ in index] for _, index in runs] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    indexes = [index for _, index in runs]
    merge_parts(out, 1, indexes)
    merge_parts(rej, 2, indexes)
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "rej.jsonl").read_bytes() == (tmp_path / "one.rej").read_bytes()
    assert sum(stats.rejected for stats, _ in runs) == 3 and sum(stats.scored for stats, _ in runs) == len(ROWS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "one.jsonl", "one.rej", "out.jsonl", "rej.jsonl"]


def test_a_merge_that_fails_midway_keeps_the_parts_and_writes_no_output(clf, tmp_path, monkeypatch):
    import neogen.score_shards as shards

    src = write_lines(tmp_path / "in.jsonl", ROWS)
    out = str(tmp_path / "out.jsonl")
    indexes = [score_part(clf, str(src), out, "text", None, 2, False, World(rank, 2, rank))[1] for rank in range(2)]
    real, calls = shards._copy, []

    def copy_then_fail(*args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(*args)

    monkeypatch.setattr(shards, "_copy", copy_then_fail)
    with pytest.raises(OSError, match="No space left"):
        merge_parts(out, 1, indexes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl.part-0-of-2", "out.jsonl.part-1-of-2"]
    monkeypatch.setattr(shards, "_copy", real)
    merge_parts(out, 1, indexes)  # the kept parts merge once the disk has room
    assert (tmp_path / "out.jsonl").read_text().count("\n") == len(ROWS)


def test_a_rank_whose_peer_failed_removes_its_parts_and_merges_nothing(clf, tmp_path, monkeypatch):
    from neogen import distributed, score_shards

    src = write_lines(tmp_path / "in.jsonl", BAD_ROWS)
    out, rej = str(tmp_path / "out.jsonl"), str(tmp_path / "rej.jsonl")
    sent = []

    def gather(obj, world):  # rank 1 failed at line 4 of the input, and joined the gather to say so
        sent.append(obj)
        return [obj, (None, [], f"{src}:4: not JSON")]

    monkeypatch.setattr(distributed, "init", lambda world: None)
    monkeypatch.setattr(distributed, "all_gather", gather)
    with pytest.raises(NeogenError, match=r"rank 0: rank 1 of 2 failed, so nothing was merged .*in.jsonl:4: not JSON"):
        score_shards.score_sharded(clf, str(src), out, "text", rej, 2, False, World(0, 2, 0))
    assert sent[0][2] is None and sent[0][1]  # rank 0 scored its share and said so
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]

    sent.clear()  # the failing rank itself: it joins the gather too, then raises its own error
    with pytest.raises(DataError, match=r"in.jsonl:4: "):
        score_shards.score_sharded(clf, str(src), out, "text", None, 2, False, World(1, 2, 1))
    assert sent[0][1] == [] and "in.jsonl:4:" in sent[0][2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_malformed_line_names_the_input_line_on_any_rank(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", BAD_ROWS)
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(DataError, match=r"in.jsonl:4: .*--rejects"):  # line 4 is in chunk 1: rank 1's
        score_part(clf, str(src), out, "text", None, 2, False, World(1, 2, 1))
    assert not part_path(out, 1, 2).exists()


def test_torchrun_refuses_stdin_and_resume(tmp_path):
    with pytest.raises(NeogenError, match=r"torchrun \(2 processes\).*'-'"):
        check_options("in.jsonl", "-", None, False, World(0, 2, 0))
    with pytest.raises(NeogenError, match=r"--resume works with one process.*drop --resume"):
        check_options("in.jsonl", "out.jsonl", None, True, World(1, 2, 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_score(run, src, dst, *options: str) -> subprocess.CompletedProcess:
    """`neogen score` in 2 CPU processes under torchrun, as a user launches it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return subprocess.run([*torchrun, "-m", "neogen.cli", "score", str(run), str(src), str(dst), "--chunk-size", "2",
                           "--no-progress", *options], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=HANG_TIMEOUT)


def test_torchrun_two_processes_write_the_single_process_bytes(tiny_run, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", BAD_ROWS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the torchrun processes below: the same kernels, the same bytes
    try:
        score_jsonl(Classifier.load(tiny_run), str(src), str(tmp_path / "one.jsonl"),
                    rejects=str(tmp_path / "one.rej"), chunk_size=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    two = torchrun_score(tiny_run, src, tmp_path / "two.jsonl", "--rejects", str(tmp_path / "two.rej"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "two.rej").read_bytes() == (tmp_path / "one.rej").read_bytes()
    assert "merged 2 parts" in two.stderr and "scored 13 of 16 lines; 3 rejected" in two.stderr
    assert not list(tmp_path.glob("*.part-*"))


def test_torchrun_stops_at_a_malformed_line_with_its_line_number(tiny_run, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", BAD_ROWS)
    run = torchrun_score(tiny_run, src, tmp_path / "out.jsonl")
    assert run.returncode != 0
    assert "error: " + str(src) + ":4: " in run.stderr and "--rejects" in run.stderr
    assert not (tmp_path / "out.jsonl").exists() and not list(tmp_path.glob("*.part-*"))
