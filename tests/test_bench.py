"""The benchmark scripts still run against the package: each is run as a user would, on a few rows.

They print figures rather than assert them, so these tests check what must hold whatever the machine: the run
finishes, the three scoring methods agree in fp32, the counts add up. Speed itself is never asserted here.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_TIMEOUT, ROOT, SHARED_DATA, SHARED_DATA_FIX, needs

TREC = SHARED_DATA / "trec" / "train_5500.label"
STUDENT = SHARED_DATA / "student_questions" / "subjects-questions-subset.csv"

pytestmark = [pytest.mark.slow,
              needs(TREC.exists(), f"{TREC} (the benchmarks' data)", SHARED_DATA_FIX)]


def run_bench(script: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=HANG_TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def test_scoring_bench_methods_agree(tmp_path: Path) -> None:
    report = run_bench("scoring.py", "--model", "gpt-neo-125m-random", "--rows", "12", "--batch-size", "4",
                       "--peak-size", "256", "--peak-reps", "1", "--warmup", "1", "--threads", "1",
                       "--repeats", "2", tmp_path=tmp_path)
    assert set(report["methods"]) == {"neogen", "naive", "batched"}
    assert report["agreement"]["pass"] is True
    assert report["prompt_tokens"]["total"] >= 12 * report["prompt_tokens"]["min"]
    assert report["flops"]["share_of_peak"] > 0
    # 3 batches of 4 through 12 blocks of 6 linear layers (q, k, v, out, fc, proj); the LM head is not counted.
    assert report["flops"]["linear_calls"] == 3 * 12 * 6
    assert report["flops"]["linear_share_of_wall"] > 0
    assert 0 < report["flops"]["linear_seconds_in_pass"] < report["flops"]["hooked_pass_wall_s"]
    assert all(len(row["runs_wall_s"]) == 2 for row in report["methods"].values())  # --repeats 2


def test_many_labels_bench_scores_every_label_count(tmp_path: Path) -> None:
    report = run_bench("many_labels.py", "--model", "gpt-neo-125m-random", "--rows", "6", "--labels", "6,300",
                       "--yes-no-rows", "2", "--batch-size", "4", "--threads", "1", tmp_path=tmp_path)
    assert [r["labels"] for r in report["results"]] == [6, 300]
    assert [r["aliases"] for r in report["results"]] == [6, 300]  # `L0001`... is never one token
    assert all(r[m]["ex_per_s"] > 0 for r in report["results"] for m in ("single", "independent", "yes_no"))


def test_score_memory_bench_scores_every_line(tmp_path: Path) -> None:
    report = run_bench("score_memory.py", "--model", "gpt-neo-125m-random", "--lines", "5,20", "--precision",
                       "fp32", "--threads", "1", tmp_path=tmp_path)
    assert [r["lines"] for r in report["results"]] == [5, 20]
    assert all(r["peak_rss_mb"] >= r["loaded_rss_mb"] > 0 for r in report["results"])


@needs(STUDENT.exists(), str(STUDENT), SHARED_DATA_FIX)
def test_training_bench_runs_both_methods(tmp_path: Path) -> None:
    report = run_bench("training.py", "--model", "gpt-neo-125m-random", "--rows", "8", "--test-rows", "4",
                       "--batch-size", "4", "--max-length", "48", "--precision", "fp32", tmp_path=tmp_path)
    assert [r["method"] for r in report["results"]] == ["neogen", "tutorial"]
    for r in report["results"]:
        assert r["train_rows"] == 8 and r["train_examples_per_second"] > 0
        assert 0.0 <= r["test_accuracy"] <= 1.0


def test_quality_summary_gives_mean_spread_and_wins(tmp_path: Path) -> None:
    def run(seed: int, neogen_acc: float, head_acc: float) -> str:
        metrics = {"roc_auc": 0.99, "macro_f1": 0.9, "log_loss": 0.2}
        report = {"dataset": "trec6", "results": {"neogen": {"accuracy": neogen_acc, **metrics},
                                                  "head": {"accuracy": head_acc, **metrics}}}
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps(report), encoding="utf-8")
        return str(path)

    files = [run(0, 0.96, 0.95), run(1, 0.94, 0.95)]
    summary = run_bench("quality_summary.py", *files, tmp_path=tmp_path)
    accuracy = summary["methods"]["neogen"]["accuracy"]
    assert accuracy["values"] == [0.96, 0.94]
    assert abs(accuracy["mean"] - 0.95) < 1e-12 and abs(accuracy["std"] - 0.0141421356) < 1e-9
    assert summary["wins"]["accuracy"] == {"neogen": 1, "head": 1}
    assert summary["wins"]["roc_auc"] == {"neogen": 0, "head": 0}  # ties are nobody's win


def test_quality_low_data_sample_is_stratified_and_repeatable(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from quality import splits
    finally:
        sys.path.remove(str(ROOT / "bench"))

    def rows(path: Path) -> list[list[str]]:
        with path.open(encoding="utf-8") as f:
            return list(csv.reader(f))[1:]

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = splits("trec6", tmp_path / "a", train_rows=60, sample_seed=0)
    again = splits("trec6", tmp_path / "b", train_rows=60, sample_seed=0)
    train = rows(first["train"])
    assert len(train) == 60 and train == rows(again["train"])
    assert {label for _, label in train} == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}  # even ABBR (1.6%)
    assert len(rows(first["test"])) == 500  # the test split is never sampled


def test_trec50_keeps_the_fine_classes(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from quality import splits
    finally:
        sys.path.remove(str(ROOT / "bench"))
    with splits("trec50", tmp_path)["train"].open(encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    labels = {label for _, label in rows}
    assert len(labels) == 50 and {"NUM:date", "ENTY:animal", "HUM:ind"} <= labels
    # The rows neogen trains on after dropping repeated texts, so that every method sees the same ones.
    assert len(rows) == len({text for text, _ in rows}) == 5381
