"""The real `neogen` command, run as a user runs it, on the tiny GPT-Neo."""

import json
import os
import subprocess
import sys

import pytest
from conftest import HANG_TIMEOUT, ROOT, toy_rows, write_csv


def neogen(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "neogen.cli", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, env=env, timeout=HANG_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"neogen {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def cli_run(tiny_neo, tmp_path_factory):
    """prepare, then train the quickstart recipe on the prepared files with the tiny model."""
    tmp = tmp_path_factory.mktemp("cli")
    csv = write_csv(tmp / "toy.csv", [(t, lab) for t, lab in toy_rows(12)], header=("question", "subject"))
    prep = neogen("prepare", str(csv), "--out", str(tmp / "prepared"), "--model", tiny_neo, "--test-ratio", "0.25",
                  "--stratify", "--label-word", "Physics=physics")
    assert "label column 'subject'" in prep.stdout and "Maths" in prep.stdout and "' Math'" in prep.stdout
    neogen("train", "recipes/quickstart.yaml", f"model.name={tiny_neo}", f"data.train={tmp}/prepared/train.jsonl",
           f"data.test={tmp}/prepared/test.jsonl", "data.text_column=null", "data.label_column=null",
           "data.test_ratio=0", "data.stratify=false", "lora.r=4", "train.max_length=32", "train.precision=fp32",
           f"output_dir={tmp}/run")
    return tmp


def test_prepare_writes_openai_jsonl(cli_run):
    lines = (cli_run / "prepared" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 36
    row = json.loads(lines[0])
    assert row["prompt"].endswith("\n\n###\n\n") and row["completion"].startswith(" ")
    report = json.loads((cli_run / "prepared" / "report.json").read_text())
    assert report["rows"] == {"train": 36, "valid": 0, "test": 12}


def test_label_words_chosen_at_prepare_are_trained(cli_run):
    """prepare --label-word writes the word as the completion; training on the prepared files keeps it."""
    row = next(json.loads(line) for line in (cli_run / "prepared" / "train.jsonl").read_text().splitlines()
               if json.loads(line)["label"] == "Physics")
    assert row["completion"] == " physics"
    codec = json.loads((cli_run / "run" / "labels.json").read_text())
    assert dict(zip(codec["labels"], codec["completions"], strict=True))["Physics"] == " physics"


def test_prepare_refuses_a_label_word_without_a_word(tmp_path):
    out = neogen("prepare", "x.csv", "--out", str(tmp_path), "--label-word", "Physics", check=False)
    assert out.returncode == 2 and "expected LABEL=WORD" in out.stderr


def test_train_run_dir_and_results(cli_run):
    results = json.loads((cli_run / "run" / "results.json").read_text())
    assert results["test"]["n"] == 12 and 0 <= results["test"]["accuracy"] <= 1


def test_classify_score_and_eval_agree(cli_run):
    run, test = cli_run / "run", cli_run / "prepared" / "test.jsonl"
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    texts = [r["prompt"].removesuffix("\n\n###\n\n") for r in rows]

    classified = [json.loads(line) for line in neogen("classify", str(run), *texts).stdout.splitlines()]
    scored_out = neogen("score", str(run), str(test), "-", "--text-field", "prompt", "--no-progress").stdout
    scored = [json.loads(line) for line in scored_out.splitlines()]
    neogen("eval", str(run), str(test), "--out", str(cli_run / "ev"))
    metrics = json.loads((cli_run / "ev" / "metrics.json").read_text())

    budgeted_out = neogen("score", str(run), str(test), "-", "--text-field", "prompt", "--no-progress",
                          "--batch-size", "8", "--max-batch-tokens", "16").stdout  # longer prompts go alone
    budgeted = [json.loads(line) for line in budgeted_out.splitlines()]

    assert [c["label"] for c in classified] == [s["label"] for s in scored] == [b["label"] for b in budgeted]
    for s, b in zip(scored, budgeted, strict=True):
        assert s["scores"] == pytest.approx(b["scores"], abs=1e-5)
    for c, s in zip(classified, scored, strict=True):
        assert c["scores"] == pytest.approx(s["scores"], abs=1e-5)
        assert sum(s["scores"].values()) == pytest.approx(1.0, abs=1e-6)
    accuracy = sum(s["label"] == r["label"] for s, r in zip(scored, rows, strict=True)) / len(rows)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert (cli_run / "ev" / "confusion_matrix.png").exists() and (cli_run / "ev" / "roc_curves.png").exists()


def test_score_reads_stdin(cli_run):
    out = neogen("score", str(cli_run / "run"), "-", "-", "--no-progress", stdin='{"text": "lens"}\n{"text": "x"}\n')
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == ["lens", "x"]


def test_errors_are_one_clear_line(cli_run):
    bad = neogen("train", "recipes/quickstart.yaml", "train.epochz=2", "lora.r=0", check=False)
    assert bad.returncode == 2
    assert "did you mean 'train.epochs'" in bad.stderr and "lora.r: must be >= 1" in bad.stderr
    assert "Traceback" not in bad.stderr
    (cli_run / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    bad = neogen("score", str(cli_run / "run"), str(cli_run / "bad.jsonl"), str(cli_run / "o.jsonl"), check=False)
    assert bad.returncode == 65 and "bad.jsonl:2:" in bad.stderr and "--rejects" in bad.stderr


def test_help_recipe_lists_keys():
    out = neogen("train", "--help-recipe").stdout
    assert "train.max_length" in out and "lora.target_modules" in out


def test_multi_label_from_prepare_to_eval(tiny_neo, tmp_path):
    """prepare detects joined labels; train, classify, score and eval give label sets and per-label scores."""
    from conftest import toy_multilabel_rows

    csv = write_csv(tmp_path / "ml.csv", toy_multilabel_rows(36), header=("post", "emotions"))
    prep = neogen("prepare", str(csv), "--out", str(tmp_path / "prepared"), "--model", tiny_neo, "--test-ratio",
                  "0.25", "--valid-ratio", "0.25", "--shuffle", "--encoding", "powerset")
    assert "labels joined by ';'" in prep.stdout and "multi-label (powerset): 6 distinct label sets" in prep.stdout
    row = json.loads((tmp_path / "prepared" / "train.jsonl").read_text().splitlines()[0])
    assert isinstance(row["labels"], list) and row["completion"].startswith(" ")
    neogen("train", "-", f"model.name={tiny_neo}", f"data.train={tmp_path}/prepared/train.jsonl",
           f"data.valid={tmp_path}/prepared/valid.jsonl", f"data.test={tmp_path}/prepared/test.jsonl",
           "multilabel.encoding=powerset", "lora.r=4", "train.max_length=32", "train.precision=fp32",
           "train.lr=5e-3", f"output_dir={tmp_path}/run")
    run = str(tmp_path / "run")
    out = [json.loads(line) for line in neogen("classify", run, "post 9: furious", "post 4: happy").stdout.splitlines()]
    assert [o["text"] for o in out] == ["post 9: furious", "post 4: happy"]
    assert all(isinstance(o["labels"], list) and set(o["scores"]) == {"anger", "fear", "joy"} for o in out)
    scored = neogen("score", run, "-", "-", "--no-progress", stdin='{"text": "post 9: furious"}\n').stdout
    assert json.loads(scored)["labels"] == out[0]["labels"]
    ev = neogen("eval", run, f"{tmp_path}/prepared/test.jsonl")
    assert "micro-F1" in ev.stdout and (tmp_path / "run" / "eval" / "test" / "metrics.json").exists()
    metrics = json.loads((tmp_path / "run" / "eval" / "test" / "metrics.json").read_text())
    assert metrics["n"] == 9 and metrics["encoding"] == "powerset"
    tuned = neogen("eval", run, f"{tmp_path}/prepared/valid.jsonl", "--tune-thresholds")
    assert "thresholds tuned on" in tuned.stdout
    saved = json.loads((tmp_path / "run" / "thresholds.json").read_text())
    assert saved["tuned_on"]["split"] == f"{tmp_path}/prepared/valid.jsonl"


def test_score_resume_needs_files(tmp_path):
    """--resume with stdin/stdout is refused before any model is loaded, in one line with the fix."""
    bad = neogen("score", str(tmp_path / "no-run"), "-", "-", "--resume", check=False)
    assert bad.returncode == 2 and "--resume needs a real input and output file" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_overrides_may_follow_the_resume_flag():
    from neogen.cli import parse_args

    args = parse_args(["train", "r.yaml", "train.lr=1e-3", "--resume", "train.epochs=3"])
    assert args.resume and args.overrides == ["train.lr=1e-3", "train.epochs=3"]
    with pytest.raises(SystemExit):
        parse_args(["train", "r.yaml", "--resume", "--bogus"])
    with pytest.raises(SystemExit):
        parse_args(["classify", "run", "text", "--bogus"])


def test_eval_reads_openai_rows_by_their_completion(cli_run):
    """Rows with no label field name the completion (an alias or word); a label the run lacks is one clear line."""
    test = [json.loads(line) for line in (cli_run / "prepared" / "test.jsonl").read_text().splitlines()]
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in test]
    assert {r["completion"] for r in rows} >= {" Math", " physics"}
    (cli_run / "openai.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    neogen("eval", str(cli_run / "run"), str(cli_run / "openai.jsonl"), "--out", str(cli_run / "eval-openai"))
    by_completion = json.loads((cli_run / "eval-openai" / "metrics.json").read_text())
    by_label = json.loads((cli_run / "run" / "eval" / "test" / "metrics.json").read_text())
    assert by_completion["accuracy"] == by_label["accuracy"] and by_completion["n"] == len(rows)
    (cli_run / "coarse.csv").write_text("text,label\nwhat is a lens,Math\nwhat is a cell,Biology\n")
    bad = neogen("eval", str(cli_run / "run"), str(cli_run / "coarse.csv"), check=False)
    assert bad.returncode == 65 and "coarse.csv:2: label 'Math' is not one of the run's labels" in bad.stderr


def test_prepare_refuses_bad_ratios_and_held_out_labels_it_cannot_write(tiny_neo, tmp_path, capsys):
    from neogen.cli import main

    with pytest.raises(SystemExit):
        main(["prepare", "x.csv", "--out", str(tmp_path), "--test-ratio", "1.5"])
    assert "'1.5': expected a share in [0, 1)" in capsys.readouterr().err
    assert main(["prepare", "x.csv", "--out", str(tmp_path), "--test-ratio", "0.6", "--valid-ratio", "0.4"]) == 2
    assert "leave no rows for training" in capsys.readouterr().err
    rows = [(f"post {i}: calm and happy", "joy;love" if i % 2 else "joy") for i in range(16)]
    csv = write_csv(tmp_path / "ml.csv", [*rows, ("post 16: furious", "anger;joy")], header=("post", "emotions"))
    assert main(["prepare", str(csv), "--out", str(tmp_path / "prepared"), "--model", tiny_neo,
                 "--test-ratio", "0.2", "--label-separator", ";"]) == 65
    err = capsys.readouterr().err
    assert "ml.csv:18: label 'anger' in the test split is not in the training labels" in err and "stratify" in err


def test_eval_refuses_threshold_tuning_on_a_single_label_run(cli_run, capsys):
    from neogen.cli import main

    assert main(["eval", str(cli_run / "run"), str(cli_run / "prepared" / "test.jsonl"), "--tune-thresholds"]) == 2
    assert "--tune-thresholds is for multi-label runs" in capsys.readouterr().err
    assert not (cli_run / "run" / "thresholds.json").exists()


def test_score_sizes_must_be_positive(capsys):
    from neogen.cli import parse_args

    for option in ("--chunk-size", "--batch-size", "--max-batch-tokens"):
        with pytest.raises(SystemExit):
            parse_args(["score", "run", "in.jsonl", "out.jsonl", option, "0"])
        assert "'0': expected a whole number of at least 1" in capsys.readouterr().err
    assert parse_args(["score", "run", "in.jsonl", "out.jsonl"]).text_field is None  # text, else prompt


def test_eval_reads_the_columns_the_run_was_trained_on(tmp_path):
    import argparse

    from neogen.cli import _eval_columns
    from neogen.recipe import Recipe

    run = tmp_path / "run"
    run.mkdir()
    Recipe.from_dict({"data": {"train": "x.csv", "text_column": "eng", "label_column": "Subject"}}).save(
        run / "recipe.yaml")
    same = write_csv(tmp_path / "test.csv", [("What is a cell?", "Biology")] * 2, header=("eng", "Subject"))
    other = write_csv(tmp_path / "other.csv", [("What is a cell?", "Biology")] * 2)  # text,label
    for data, given, expected in ((same, (None, None), ("eng", "Subject")),  # one class: detection could not tell
                                  (other, (None, None), (None, None)),  # not the run's columns: detected
                                  (same, ("eng", None), ("eng", None))):  # named on the command line: as given
        args = argparse.Namespace(run_dir=str(run), data=str(data), text_column=given[0], label_column=given[1])
        assert _eval_columns(args) == expected


def test_prepare_never_writes_over_its_input_or_files_it_did_not_write(tiny_neo, tmp_path):
    data = write_csv(tmp_path / "train.jsonl", [])  # replaced below by JSONL rows
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in toy_rows(12)))
    before = data.read_bytes()
    proc = neogen("prepare", str(data), "--out", str(tmp_path), "--model", tiny_neo, check=False)
    assert proc.returncode == 73 and "over its own input" in proc.stderr and "Traceback" not in proc.stderr
    assert data.read_bytes() == before
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "report.json").write_text("mine")
    proc = neogen("prepare", str(data), "--out", str(theirs), "--model", tiny_neo, check=False)
    assert proc.returncode == 73 and "already holds report.json" in proc.stderr
    assert (theirs / "report.json").read_text() == "mine"
    ours = tmp_path / "ours"
    neogen("prepare", str(data), "--out", str(ours), "--model", tiny_neo, "--valid-ratio", "0.2")
    neogen("prepare", str(data), "--out", str(ours), "--model", tiny_neo)  # its own folder: prepared again
    assert not (ours / "valid.jsonl").exists()  # no split left over from the first preparation


def test_train_into_a_file_or_a_full_disk_is_one_error_line(tmp_path, monkeypatch, capsys):
    import errno

    from neogen import cli

    taken = tmp_path / "taken"
    taken.write_text("mine")
    proc = neogen("train", "-", "data.train=data/questions.csv", f"output_dir={taken}", check=False)
    assert proc.returncode == 73 and "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "adapter_model.safetensors"))

    monkeypatch.setattr(sys.modules["neogen.train"], "fine_tune", full)
    assert cli.main(["train", "-", "data.train=data/questions.csv"]) == 74
    assert "adapter_model.safetensors: no space left on the device" in capsys.readouterr().err
