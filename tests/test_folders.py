"""Markers, locks and same-file checks: the primitives behind "neogen never deletes or overwrites a file it did not
write" and "one process at a time"."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from neogen.errors import LockedError, OutputError
from neogen.folders import FileLock, claim, file_id, is_marked, refuse_same_files

HOLD = textwrap.dedent("""
    import sys, time
    from neogen.folders import FileLock
    with FileLock(sys.argv[1], "it"):
        print("held", flush=True)
        time.sleep(600)
""")


def hold_lock(path) -> subprocess.Popen:
    """Another process holding the lock on `path`, returned once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_claim_marks_a_new_or_empty_folder_and_refuses_anyone_elses(tmp_path):
    new = tmp_path / "a" / "run"
    assert claim(new, "m.json", "run", "fix it") is False
    assert json.loads((new / "m.json").read_text())["kind"] == "run" and is_marked(new, "m.json", "run")
    assert claim(new, "m.json", "run", "fix it") is True  # marked already
    assert not is_marked(new, "m.json", "prepared")  # another kind's marker is not this kind's

    theirs = tmp_path / "notes"
    (theirs / "eval").mkdir(parents=True)
    (theirs / "eval" / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match=r"notes already holds files that neogen did not write \(eval/\).*fix it"):
        claim(theirs, "m.json", "run", "fix it")
    assert sorted(os.listdir(theirs)) == ["eval"]  # nothing written
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        claim(a_file, "m.json", "run", "fix it")


def test_a_read_only_place_is_an_output_error_naming_it():
    with pytest.raises(OutputError, match=r"/sys/kernel/neogen-test-run: cannot write there"):
        claim(__import__("pathlib").Path("/sys/kernel/neogen-test-run"), "m.json", "run", "fix it")


def test_a_lock_refuses_a_second_process_and_dies_with_its_holder(tmp_path):
    path = tmp_path / "lock"
    holder = hold_lock(path)
    try:
        with pytest.raises(LockedError, match="another process is using it"), FileLock(path, "it"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs
        holder.wait()
    with FileLock(path, "it"):  # the kernel dropped the dead process's lock
        pass


def test_a_lock_is_reentrant_within_a_process(tmp_path):
    with FileLock(tmp_path / "lock", "it"), FileLock(tmp_path / "lock", "it"):
        pass
    holder = hold_lock(tmp_path / "lock")  # and fully released after both exits
    holder.kill()
    holder.wait()


def test_same_files_are_found_by_inode(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("{}\n")
    os.link(a, tmp_path / "b.jsonl")
    os.symlink(a, tmp_path / "c.jsonl")
    for other in ("b.jsonl", "c.jsonl"):
        with pytest.raises(OutputError, match=r"the output .* is the same file as the input .*a.jsonl"):
            refuse_same_files({"input": (str(a), file_id(a)), "output": (other, file_id(tmp_path / other))}, "f")
    refuse_same_files({"input": (str(a), file_id(a)), "output": ("new", file_id(tmp_path / "new"))}, "f")
