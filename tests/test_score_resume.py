"""`score_jsonl(..., resume=True)`: an interrupted run goes on to the very bytes an uninterrupted one writes."""

import io
import json
import logging
import os
import shutil

import pytest
from conftest import write_lines

from neogen.classify import Classifier
from neogen.errors import DataError, NeogenError
from neogen.score import score_jsonl
from neogen.score_progress import progress_path


@pytest.fixture(scope="module")
def clf(tiny_run) -> Classifier:
    return Classifier.load(tiny_run, batch_size=2)


WORDS = ["cell ", "acid ", "sum ", "lens "]
ROWS = [{"id": i, "text": f"question {i}: the " + WORDS[i % 4] * (i % 3 + 1)} for i in range(17)]
BAD_ROWS = [*ROWS[:3], "{not json", *ROWS[3:7], "", {"txt": 1}, *ROWS[7:12], "[2]", *ROWS[12:]]


def crash_after(monkeypatch, clf, calls: int) -> list:
    """Make the classifier fail on its call number `calls` + 1, as a killed process would stop mid-file."""
    real, seen = clf.predict_proba, []

    def predict_proba(texts, progress=False):
        seen.append(1)
        if len(seen) > calls:
            raise RuntimeError("simulated crash")
        return real(texts, progress)

    monkeypatch.setattr(clf, "predict_proba", predict_proba)
    return seen


def score(clf, src, dst, **kw):
    return score_jsonl(clf, str(src), str(dst), chunk_size=3, progress=False, **kw)


def score_interrupted(monkeypatch, clf, src, dst, calls: int, **kw) -> None:
    """A run into `dst` killed at predict_proba call `calls` + 1 (chunks of 3 lines), its progress file left."""
    with monkeypatch.context() as m:
        crash_after(m, clf, calls)
        with pytest.raises(RuntimeError, match="simulated crash"):
            score(clf, src, dst, **kw)


@pytest.fixture
def clean(clf, tmp_path):
    """An uninterrupted run over the rows with malformed lines, into out.clean and rej.clean."""
    src = write_lines(tmp_path / "in.jsonl", BAD_ROWS)
    stats = score(clf, src, tmp_path / "out.clean", rejects=str(tmp_path / "rej.clean"))
    assert not progress_path(str(tmp_path / "out.clean")).exists()
    return src, stats


def test_interrupted_then_resumed_is_byte_identical(clf, tmp_path, clean, monkeypatch):
    src, clean_stats = clean
    out, rej = tmp_path / "out.jsonl", str(tmp_path / "rej.jsonl")
    score_interrupted(monkeypatch, clf, src, out, 3, rejects=rej)
    state = json.loads(progress_path(str(out)).read_text())
    assert state["lines"] == 9 and state["output_bytes"] == out.stat().st_size  # 3 chunks of 3 lines done
    with monkeypatch.context() as m:
        calls = crash_after(m, clf, 100)
        stats = score(clf, src, out, rejects=rej, resume=True)
    assert len(calls) == 4  # only the 4 chunks after line 9 are scored again
    assert out.read_bytes() == (tmp_path / "out.clean").read_bytes()
    assert (tmp_path / "rej.jsonl").read_bytes() == (tmp_path / "rej.clean").read_bytes()
    assert (stats.read, stats.scored, stats.rejected) == (clean_stats.read, clean_stats.scored, 3)
    assert not progress_path(str(out)).exists()


def test_half_written_chunk_is_cut_off(clf, tmp_path, clean, monkeypatch):
    src, _ = clean
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    score_interrupted(monkeypatch, clf, src, out, 2, rejects=str(rej))
    with out.open("ab") as f:  # what a process killed in the middle of a write leaves behind
        f.write(b'{"id": 6, "text": "question 6: the ac')
    with rej.open("ab") as f:
        f.write(b'{"line": 99, "err')
    score(clf, src, out, rejects=str(rej), resume=True)
    assert out.read_bytes() == (tmp_path / "out.clean").read_bytes()
    assert rej.read_bytes() == (tmp_path / "rej.clean").read_bytes()


def test_malformed_line_stop_then_resume_with_rejects(clf, tmp_path, clean):
    """The fix a DataError suggests: --rejects FILE --resume keeps the lines already scored."""
    src, _ = clean
    out, rej = tmp_path / "out.jsonl", str(tmp_path / "rej.jsonl")
    with pytest.raises(DataError, match=r"in.jsonl:4: .*--rejects FILE --resume"):
        score(clf, src, out)
    assert out.read_text().count("\n") == 3
    score(clf, src, out, rejects=rej, resume=True)
    assert out.read_bytes() == (tmp_path / "out.clean").read_bytes()
    assert (tmp_path / "rej.jsonl").read_bytes() == (tmp_path / "rej.clean").read_bytes()


def test_changed_input_or_options_refuse_to_resume(clf, tiny_run, tmp_path, monkeypatch):
    src = write_lines(tmp_path / "in.jsonl", ROWS)
    out, rej = tmp_path / "out.jsonl", str(tmp_path / "rej.jsonl")
    score_interrupted(monkeypatch, clf, src, out, 1, rejects=rej, run_dir=tiny_run)
    with pytest.raises(NeogenError, match=r"text field is 'body'.*delete .*out.jsonl.*progress.json to start over"):
        score(clf, src, out, rejects=rej, run_dir=tiny_run, text_field="body", resume=True)
    with pytest.raises(NeogenError, match=r"rejects file was .*rej.jsonl, now none"):
        score(clf, src, out, run_dir=tiny_run, resume=True)
    other = shutil.copytree(tiny_run, tmp_path / "other", ignore=shutil.ignore_patterns("checkpoints", "last"))
    with pytest.raises(NeogenError, match=r"run directory differs"):
        score(clf, src, out, rejects=rej, run_dir=other, resume=True)
    # Without run_dir the classifier's own run is the one fingerprinted: the same run, so no refusal on that count.
    original, st = src.read_bytes(), src.stat()
    with src.open("a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    with pytest.raises(NeogenError, match=r"cannot resume .*out.jsonl.*in.jsonl is \d+ bytes, it was \d+"):
        score(clf, src, out, rejects=rej, run_dir=tiny_run, resume=True)
    src.write_bytes(original)  # the same bytes, but written again: the input may have changed in between
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(NeogenError, match=r"in.jsonl was modified"):
        score(clf, src, out, rejects=rej, run_dir=tiny_run, resume=True)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    stats = score(clf, src, out, rejects=rej, run_dir=tiny_run, resume=True)
    assert stats.scored == len(ROWS) and out.read_text().count("\n") == len(ROWS)


def test_retuned_or_retrained_run_refuses_to_resume(clf, tiny_run, tmp_path, monkeypatch):
    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints", "last"))
    src = write_lines(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    score_interrupted(monkeypatch, clf, src, out, 1, run_dir=run)
    (run / "thresholds.json").write_text("{}")  # as `neogen eval --tune-thresholds` would write
    with pytest.raises(NeogenError, match=r"run.s recipe.yaml or thresholds.json or calibration.json differs"):
        score(clf, src, out, run_dir=run, resume=True)
    (run / "thresholds.json").unlink()
    weights = next((run / "adapter").glob("*.safetensors"))
    os.utime(weights, ns=(0, weights.stat().st_mtime_ns + 10**9))  # a retrain into the same folder
    with pytest.raises(NeogenError, match=r"run's adapter differs"):
        score(clf, src, out, run_dir=run, resume=True)


def test_resume_without_progress_file(clf, tmp_path):
    src = write_lines(tmp_path / "in.jsonl", ROWS[:4])
    out = tmp_path / "out.jsonl"
    stats = score(clf, src, out, resume=True)  # nothing to resume: an ordinary run
    assert stats.scored == 4 and out.read_text().count("\n") == 4
    with pytest.raises(NeogenError, match=r"out.jsonl exists but .*progress.json does not.*delete"):
        score(clf, src, out, resume=True)
    with pytest.raises(NeogenError, match=r"--resume needs a real input and output file"):
        score(clf, src, "-", resume=True)
    with pytest.raises(NeogenError, match="different files"):
        score(clf, src, src)


def test_interrupted_run_is_redone_from_the_start_with_a_warning(clf, tmp_path, monkeypatch, caplog):
    src = write_lines(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    score_interrupted(monkeypatch, clf, src, out, 2)
    with caplog.at_level(logging.WARNING, logger="neogen"):
        stats = score(clf, src, out)
    assert "--resume" in caplog.text and stats.scored == len(ROWS)
    assert out.read_text().count("\n") == len(ROWS) and not progress_path(str(out)).exists()


def test_rewriting_from_stdin_drops_the_progress_file(clf, tmp_path, monkeypatch):
    """Else a later --resume from the file would go on onto output it does not describe."""
    src = write_lines(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    score_interrupted(monkeypatch, clf, src, out, 2)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ROWS[0]) + "\n"))
    score(clf, "-", out)
    assert not progress_path(str(out)).exists() and out.read_text().count("\n") == 1
    with pytest.raises(NeogenError, match=r"progress\.json does not"):
        score(clf, src, out, resume=True)


def test_resuming_with_other_batch_options_warns_and_finishes(clf, tmp_path, monkeypatch, caplog):
    src = write_lines(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    score_interrupted(monkeypatch, clf, src, out, 2)
    assert json.loads(progress_path(str(out)).read_text())["options"] == {"chunk_size": 3, "batch_size": 2}
    budgeted = Classifier(clf.model, clf.tokenizer, clf.codec, batch_size=2, max_batch_tokens=64, run=clf.run)
    with caplog.at_level(logging.WARNING, logger="neogen"):
        stats = score(budgeted, src, out, resume=True)
    assert "'max_batch_tokens': 64" in caplog.text and "may differ from an uninterrupted run" in caplog.text
    assert stats.scored == len(ROWS) and out.read_text().count("\n") == len(ROWS)


def test_a_run_killed_after_its_last_chunk_resumes_on_an_input_without_a_final_line_break(clf, tmp_path, monkeypatch):
    from pathlib import Path

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(row) for row in ROWS[:5]))  # no line break after the last line
    out = tmp_path / "out.jsonl"
    unlink = Path.unlink

    def killed_before_the_progress_file_goes(self, *args, **kwargs):
        if self.name.endswith(".progress.json"):
            raise KeyboardInterrupt
        return unlink(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Path, "unlink", killed_before_the_progress_file_goes)
        with pytest.raises(KeyboardInterrupt):
            score(clf, src, out)
    assert progress_path(str(out)).exists()
    stats = score(clf, src, out, resume=True)  # every line was scored: nothing to do but finish
    assert stats.scored == 5 and out.read_text().count("\n") == 5 and not progress_path(str(out)).exists()


def test_a_run_directory_given_with_a_tilde_is_the_same_run(tiny_run, tmp_path, monkeypatch):
    from neogen.score_progress import identity

    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints", "last"))
    src = write_lines(tmp_path / "in.jsonl", ROWS[:2])
    monkeypatch.setenv("HOME", str(tmp_path))
    assert identity(str(src), "~/run", ["a"], "text", None) == identity(str(src), run, ["a"], "text", None)
