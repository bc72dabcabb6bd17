"""The benchmark harness: its result files and generated tables are current, and every experiment still runs.

The first tests run no benchmark: they check that bench/README.md's tables are what `python -m bench report` makes of
bench/results, that every result file follows the schema and is named from its parameters, and that the report's
summaries are right. The slow ones run experiments as a user would, on a few rows, through `python -m bench run`:
they check what must hold whatever the machine (the run finishes, the three scoring methods agree in fp32, the
counts add up). Speed itself is never asserted here.
"""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from conftest import HANG_TIMEOUT, ROOT, SHARED_DATA, SHARED_DATA_FIX, needs

TREC = SHARED_DATA / "trec" / "train_5500.label"
STUDENT = SHARED_DATA / "student_questions" / "subjects-questions-subset.csv"
RANDOM_NEO = "model=gpt-neo-125m-random"


def with_bench_data(test: Callable[..., None]) -> Callable[..., None]:
    """Marks a test slow and in need of the shared TREC data (missing: skipped locally, a failure under CI)."""
    return pytest.mark.slow(needs(TREC.exists(), f"{TREC} (the benchmarks' data)", SHARED_DATA_FIX)(test))


def bench_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A module of the bench package (which lives beside neogen in the checkout, not in the installed package)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module(f"bench.{name}")


def bench(*args: str, timeout: float = HANG_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`python -m bench ARGS` from the checkout's root."""
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_bench(experiment: str, *params: str, tmp_path: Path) -> dict:
    """Run one experiment (seed 0) into tmp_path; its one result file, read back."""
    proc = bench("run", experiment, "--out", str(tmp_path), *params)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("*.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["experiment"] == experiment and record["seed"] == 0 and record["migrated"] is False
    assert record["commit"] and record["versions"]["torch"] and record["machine"]["cpu"]
    assert record["command"].startswith(f"python -m bench run {experiment}")
    return record


# ----------------------------------------------------------------------------------------- no benchmark runs here

def test_readme_tables_are_what_report_makes_of_the_results() -> None:
    """`python -m bench report --check`: the committed tables, the result files' names and schema agree."""
    proc = bench("report", "--check", timeout=300)
    assert proc.returncode == 0, f"run `python -m bench report`:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"


def test_every_result_file_records_where_its_figures_come_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """One schema for all: experiment, parameters, seed, commit, versions, machine, command, date, figures."""
    record = bench_module("record", monkeypatch)
    experiments = bench_module("experiments", monkeypatch).EXPERIMENTS
    results = record.read_results()
    assert results
    for r in results:
        exp = experiments[r["experiment"]]
        assert r["file"] == record.result_name(exp.name, r["params"], dict(exp.defaults) | dict(exp.fixed), r["seed"])
        assert len(r["commit"]) == 40 and r["date"] and r["figures"], r["file"]
        assert set(record.PACKAGES) <= set(r["versions"]) and "cpu" in r["machine"], r["file"]
        assert r["migrated"] or (r["command"] and r["versions"]["torch"]), r["file"]


def test_nothing_in_bench_imports_through_sys_path() -> None:
    """The benchmarks share helpers as a package, not by editing the import path."""
    offenders = [path.name for path in (ROOT / "bench").glob("*.py") if "sys.path" in path.read_text(encoding="utf-8")]
    assert offenders == []


def test_result_files_are_named_from_the_parameters_that_differ() -> None:
    """`run --dry-run` names the files it would write: defaults leave the name, the seed always ends it."""
    proc = bench("run", "quality-trec6-neogen", "--dry-run", "--seeds", "0,2", "train.lr=5e-4",
                 "train.precision=fp32", "label_words=trec6", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [Path(line).name for line in proc.stdout.split()] == [
        f"quality-trec6-neogen-label_words=trec6-lr=5e-4-precision=fp32-seed{seed}.json" for seed in (0, 2)]
    assert Path(proc.stdout.split()[0]).parent == ROOT / "bench" / "results"
    unknown = bench("run", "scoring", "--dry-run", "batch=8", timeout=300)
    assert unknown.returncode != 0 and "no parameter 'batch'" in unknown.stderr


def test_report_gives_mean_and_spread_over_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Summaries are computed from the seeds' files, and --check fails once a table is stale."""
    record = bench_module("record", monkeypatch)
    report = bench_module("report", monkeypatch)
    experiments = bench_module("experiments", monkeypatch).EXPERIMENTS
    exp = experiments["quality-trec6-neogen"]
    env = record.environment(["test"])
    results = tmp_path / "results"
    for seed, accuracy in ((0, 0.96), (1, 0.94)):
        figures = {"accuracy": accuracy, "macro_f1": 0.9, "roc_auc": 0.99, "log_loss": 0.2}
        params = dict(exp.defaults) | dict(exp.fixed) | {"train.precision": "fp32"}
        record.write_result(exp.name, params, dict(exp.defaults) | dict(exp.fixed), seed, figures, results, env)
    readme = tmp_path / "README.md"
    readme.write_text("# prose\n<!-- bench report: quality-trec6 -->\nstale\n<!-- end bench report -->\nmore prose\n")
    assert report.report(results, readme, check=True) == 1
    assert report.report(results, readme) == 0
    text = readme.read_text()
    assert text.startswith("# prose\n") and text.endswith("<!-- end bench report -->\nmore prose\n")
    assert "| precision=fp32 | neogen | 0, 1 | 0.950 ± 0.014 | 0.900 ± 0.000 |" in text
    assert "python -m bench run quality-trec6-neogen --seeds 0,1 train.precision=fp32" in text
    assert report.report(results, readme, check=True) == 0


# --------------------------------------------------------------------------------------- experiments, on few rows

@with_bench_data
def test_scoring_bench_methods_agree(tmp_path: Path) -> None:
    """neogen, one-at-a-time and batched generate give the same labels and scores in fp32; the counts add up."""
    record = run_bench("scoring", RANDOM_NEO, "rows=12", "batch_size=4", "peak_size=256", "peak_reps=1", "warmup=1",
                       "threads=1", "repeats=2", tmp_path=tmp_path)
    report = record["figures"]
    assert set(report["methods"]) == {"neogen", "naive", "batched"}
    assert report["agreement"]["pass"] is True
    assert report["prompt_tokens"]["total"] >= 12 * report["prompt_tokens"]["min"]
    assert report["flops"]["share_of_peak"] > 0
    # 3 batches of 4 through 12 blocks of 6 linear layers (q, k, v, out, fc, proj); the LM head is not counted.
    assert report["flops"]["linear_calls"] == 3 * 12 * 6
    assert report["flops"]["linear_share_of_wall"] > 0
    assert 0 < report["flops"]["linear_seconds_in_pass"] < report["flops"]["hooked_pass_wall_s"]
    assert all(len(row["runs_wall_s"]) == 2 for row in report["methods"].values())  # repeats=2


@with_bench_data
def test_many_labels_bench_scores_every_label_count(tmp_path: Path) -> None:
    """Every K is scored three ways, and `L0001`... always needs an alias."""
    record = run_bench("many-labels", "rows=6", "labels=6,300", "yes_no_rows=2", "batch_size=4", "threads=1",
                       tmp_path=tmp_path)
    results = record["figures"]["results"]
    assert [r["labels"] for r in results] == [6, 300]
    assert [r["aliases"] for r in results] == [6, 300]  # `L0001`... is never one token
    assert all(r[m]["ex_per_s"] > 0 for r in results for m in ("single", "independent", "yes_no"))


@with_bench_data
def test_score_memory_bench_scores_every_line(tmp_path: Path) -> None:
    """Each input size is scored whole, in its own process."""
    record = run_bench("score-memory", RANDOM_NEO, "lines=5,20", "precision=fp32", "threads=1", tmp_path=tmp_path)
    results = record["figures"]["results"]
    assert [r["lines"] for r in results] == [5, 20]
    assert all(r["peak_rss_mb"] >= r["loaded_rss_mb"] > 0 for r in results)


@with_bench_data
def test_long_lines_bench_scores_every_line_through_the_cli(tmp_path: Path) -> None:
    """`neogen score` on long lines and on as many short ones: every line comes back, each peak is measured."""
    record = run_bench("score-memory-long-lines", "lines=3", "line_mb=0.05", "threads=1", tmp_path=tmp_path)
    figures = record["figures"]
    for name in ("short", "long"):
        assert figures[name]["lines"] == 3 and figures[name]["peak_rss_mb"] > 0
    assert figures["long"]["input_bytes"] > 3 * 50_000 > figures["short"]["input_bytes"]


@with_bench_data
@needs(STUDENT.exists(), str(STUDENT), SHARED_DATA_FIX)
def test_training_bench_runs_both_methods(tmp_path: Path) -> None:
    """Both methods train on the same rows, each in its own process, and are scored on the same test rows."""
    record = run_bench("training", RANDOM_NEO, "rows=8", "test_rows=4", "batch_size=4", "max_length=48",
                       "precision=fp32", tmp_path=tmp_path)
    results = record["figures"]["results"]
    assert [r["method"] for r in results] == ["neogen", "tutorial"]
    for r in results:
        assert r["train_rows"] == 8 and r["train_examples_per_second"] > 0
        assert 0.0 <= r["test_accuracy"] <= 1.0


def rows_of(path: Path) -> list[list[str]]:
    """A text,label CSV file's rows, header left out."""
    with path.open(encoding="utf-8") as f:
        return list(csv.reader(f))[1:]


@with_bench_data
def test_quality_low_data_sample_is_stratified_and_repeatable(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`train_rows` draws the same stratified sample for every method; the test split is never sampled."""
    splits = bench_module("quality", monkeypatch).splits
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = splits("trec6", tmp_path / "a", train_rows=60, sample_seed=0)
    again = splits("trec6", tmp_path / "b", train_rows=60, sample_seed=0)
    train = rows_of(first["train"])
    assert len(train) == 60 and train == rows_of(again["train"])
    assert {label for _, label in train} == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}  # even ABBR (1.6%)
    assert len(rows_of(first["test"])) == 500  # the test split is never sampled


@with_bench_data
def test_trec50_keeps_the_fine_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TREC-50 keeps `COARSE:fine` labels, on the rows neogen trains on after dropping repeated texts."""
    rows = rows_of(bench_module("quality", monkeypatch).splits("trec50", tmp_path)["train"])
    labels = {label for _, label in rows}
    assert len(labels) == 50 and {"NUM:date", "ENTY:animal", "HUM:ind"} <= labels
    # The rows neogen trains on after dropping repeated texts, so that every method sees the same ones.
    assert len(rows) == len({text for text, _ in rows}) == 5381
