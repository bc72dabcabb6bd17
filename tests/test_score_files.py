"""`neogen score` never writes over its input, its rejects or a progress file, and one process writes an output."""

import os
import subprocess
import sys

import pytest
from conftest import write_lines
from test_cli import neogen
from test_folders import hold_lock

from neogen.classify import Classifier
from neogen.errors import LockedError, OutputError
from neogen.score import score_jsonl

ROWS = [{"text": f"question {i}: what about the cell and the gene?"} for i in range(5)]


@pytest.fixture
def data(tmp_path):
    return write_lines(tmp_path / "a.jsonl", ROWS)


def refused(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr


def test_a_hard_link_to_the_input_is_refused_and_the_input_kept(tiny_run, data, tmp_path):
    before = data.read_bytes()
    os.link(data, tmp_path / "b.jsonl")
    refused(neogen("score", str(tiny_run), str(data), str(tmp_path / "b.jsonl"), check=False), 73,
            "is the same file as the input", "fix:")
    assert data.read_bytes() == before


def test_stdin_redirected_from_the_output_is_refused(tiny_run, data, tmp_path):
    before = data.read_bytes()
    with data.open("rb") as stdin:
        proc = subprocess.run([sys.executable, "-m", "neogen.cli", "score", str(tiny_run), "-", str(data)],
                              stdin=stdin, capture_output=True, text=True)
    refused(proc, 73, "<stdin>")
    assert data.read_bytes() == before


def test_stdout_appended_to_the_input_is_refused(tiny_run, data):
    before = data.read_bytes()
    with data.open("ab") as stdout:
        proc = subprocess.run([sys.executable, "-m", "neogen.cli", "score", str(tiny_run), str(data), "-"],
                              stdout=stdout, stderr=subprocess.PIPE, text=True)
    refused(proc, 73, "<stdout>")
    assert data.read_bytes() == before


def test_progress_files_are_neither_input_nor_rejects(tiny_run, tmp_path):
    sidecar = write_lines(tmp_path / "y.progress.json", ROWS)
    before = sidecar.read_bytes()
    refused(neogen("score", str(tiny_run), str(sidecar), str(tmp_path / "y"), check=False), 2, "progress file")
    assert sidecar.read_bytes() == before
    data = write_lines(tmp_path / "in.jsonl", ROWS)
    refused(neogen("score", str(tiny_run), str(data), str(tmp_path / "o.jsonl"), "--rejects",
                   str(tmp_path / "o.jsonl.progress.json"), check=False), 2, "progress file")


def test_an_output_another_process_writes_is_refused_at_once(tiny_run, data, tmp_path):
    out = tmp_path / "out.jsonl"
    holder = hold_lock(out)
    try:
        refused(neogen("score", str(tiny_run), str(data), str(out), check=False), 75, str(out),
                "another `neogen score` is writing it")
        with pytest.raises(LockedError):
            score_jsonl(Classifier.load(tiny_run), str(data), str(out), progress=False)
    finally:
        holder.kill()
        holder.wait()
    stats = score_jsonl(Classifier.load(tiny_run), str(data), str(out), progress=False)  # free once it died
    assert stats.scored == len(ROWS)


def test_an_unwritable_output_is_refused_before_the_model_loads(tmp_path, data):
    # The run does not exist: only an output check made before loading can give this error instead.
    refused(neogen("score", str(tmp_path / "no-run"), str(data), "/sys/kernel/neogen-out.jsonl", check=False), 73,
            "/sys/kernel/neogen-out.jsonl", "cannot write there")
    with pytest.raises(OutputError):
        score_jsonl(None, str(data), "/sys/kernel/neogen-out.jsonl")


def test_a_full_disk_is_one_error_line(tiny_run, data):
    refused(neogen("score", str(tiny_run), str(data), "/dev/full", check=False), 74, "/dev/full",
            "no space left")


def test_a_closed_pipe_ends_quietly(tiny_run, tmp_path):
    data = write_lines(tmp_path / "many.jsonl", ROWS * 600)  # more output than a pipe buffer holds
    proc = subprocess.run(["bash", "-c", f'set -o pipefail; "{sys.executable}" -m neogen.cli -q score {tiny_run} '
                           f'{data} - --no-progress | head -n 1'], capture_output=True, text=True)
    assert proc.returncode == 141 and proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr.lower()
