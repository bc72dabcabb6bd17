"""Multi-label: neogen's three encodings against TF-IDF + one-vs-rest logistic regression, on GoEmotions.

Rows (from ../shared/data/goemotions, 28 labels): train = the first `train_rows` rows of train.tsv, valid = the next
`valid_rows` rows (decision thresholds and the best checkpoint are chosen there), test = all of dev.tsv. Every method
sees the same rows and tunes its thresholds the same way (neogen.thresholds, on valid).

One experiment per method: `multilabel-tfidf`, and `multilabel-independent`, `-powerset`, `-yes_no`, which train
recipes/smollm2-135m-goemotions.yaml with that encoding (`neogen train`; recipe overrides as dotted keys), evaluate
it on the whole test set and, with `neogen eval`, on its first `subset_rows` rows (where every method sees identical
rows), then time scoring of `speed_rows` test texts with the trained run (the recipe's batch, one process).

    python -m bench prepare goemotions                 # writes runs/goemotions/{train,valid,test}.jsonl
    python -m bench run multilabel-independent
    python -m bench run multilabel-tfidf               # the baseline alone (seconds)
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import ROOT, SHARED_DATA

DATA = ROOT / "runs" / "goemotions"
RECIPE = "recipes/smollm2-135m-goemotions.yaml"
KEYS = ("micro_f1", "macro_f1", "samples_f1", "roc_auc", "hamming_loss", "subset_accuracy")


def read_goemotions(path: Path, names: list[str]) -> list[dict[str, Any]]:
    """Rows of a GoEmotions TSV (text, comma-separated label ids, comment id) with label names."""
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for text, ids, _ in csv.reader(f, delimiter="\t"):
            rows.append({"text": text, "labels": [names[int(i)] for i in ids.split(",")]})
    return rows


def prepare(train_rows: int, valid_rows: int) -> dict[str, Path]:
    """Write the train/valid/test JSONL files (text, labels) the recipe reads."""
    folder = SHARED_DATA / "goemotions"
    names = (folder / "labels.txt").read_text(encoding="utf-8").split()
    train = read_goemotions(folder / "train.tsv", names)
    parts = {"train": train[:train_rows], "valid": train[train_rows:train_rows + valid_rows],
             "test": read_goemotions(folder / "dev.tsv", names)}
    DATA.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        with (DATA / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(", ".join(f"{name} {len(rows)}" for name, rows in parts.items()) + f" rows written to {DATA}")
    return {name: DATA / f"{name}.jsonl" for name in parts}


def load_rows(path: Path, deduplicate: bool = True) -> tuple[list[str], list[list[str]]]:
    """Texts and label sets of a prepared file, read as neogen reads it; with `deduplicate`, without empty and
    repeated texts, as neogen trains, validates and tests (`neogen eval`, used by `subset`, keeps every row)."""
    from neogen.prepare import clean
    from neogen.read import load_examples

    examples, _ = load_examples(path, "text", "labels", multi_label=True)
    if deduplicate:
        examples = clean(examples)[0]
    return [ex.text for ex in examples], [list(ex.labels or ()) for ex in examples]


def tfidf(files: dict[str, Path], deduplicate_test: bool = True) -> dict[str, Any]:
    """TF-IDF word 1-2 grams + one logistic regression per label (C=10, class-balanced off), thresholds on valid."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from neogen.evaluate_multilabel import multilabel_metrics
    from neogen.thresholds import tune_thresholds

    data = {name: load_rows(path, deduplicate=name != "test" or deduplicate_test) for name, path in files.items()}
    labels = sorted({label for sets in data["train"][1] for label in sets})

    def multi_hot(sets: list[list[str]]) -> np.ndarray:
        """(rows, labels) 0/1 matrix of the label sets."""
        return np.array([[label in s for label in labels] for s in sets], dtype=np.int64)

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = OneVsRestClassifier(LogisticRegression(max_iter=2000, C=10.0))
    model.fit(vectorizer.fit_transform(data["train"][0]), multi_hot(data["train"][1]))
    seconds = time.perf_counter() - start
    probs = {name: model.predict_proba(vectorizer.transform(data[name][0])) for name in ("valid", "test")}
    thresholds = tune_thresholds(multi_hot(data["valid"][1]), probs["valid"], labels, at_least_one=True)
    start = time.perf_counter()
    model.predict_proba(vectorizer.transform(data["test"][0]))
    speed = len(data["test"][0]) / (time.perf_counter() - start)
    y = multi_hot(data["test"][1])
    tuned = multilabel_metrics(y, probs["test"], thresholds.decide(probs["test"]), labels)
    fixed = multilabel_metrics(y, probs["test"], probs["test"] >= 0.5, labels)
    return {k: tuned[k] for k in KEYS} | {"macro_f1_at_0.5": fixed["macro_f1"], "micro_f1_at_0.5": fixed["micro_f1"],
                                          "train_seconds": seconds, "examples_per_second": speed}


def neogen(files: dict[str, Path], encoding: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """Train one encoding with the recipe and read its test figures."""
    cmd = [sys.executable, "-m", "neogen.cli", "-q", "train", RECIPE, f"multilabel.encoding={encoding}",
           f"data.train={files['train']}", f"data.valid={files['valid']}", f"data.test={files['test']}",
           *overrides, f"output_dir={out}"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    results = json.loads((out / "results.json").read_text())
    metrics = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    return {k: metrics[k] for k in KEYS} | {"train_seconds": results["train_seconds"],
                                            "unseen_label_sets": metrics.get("unseen_label_sets")}


def score_speed(run_dir: Path, test: Path, rows: int) -> dict[str, float]:
    """Examples/s of Classifier.predict_proba on the first `rows` test texts (model loaded beforehand)."""
    import torch

    from neogen.classify import Classifier

    texts = load_rows(test)[0][:rows]
    classifier = Classifier.load(run_dir)
    classifier.predict_proba(texts[:64])  # warm-up
    start = time.perf_counter()
    classifier.predict_proba(texts)
    return {"examples_per_second": len(texts) / (time.perf_counter() - start), "precision": classifier.precision,
            "batch_size": classifier.batch_size, "threads": torch.get_num_threads()}


def first_rows(test: Path, rows: int) -> Path:
    """The first `rows` lines of the test file, as a file of their own."""
    path = DATA / f"test-first{rows}.jsonl"
    path.write_text("".join(test.read_text(encoding="utf-8").splitlines(keepends=True)[:rows]), encoding="utf-8")
    return path


def evaluate_subset(run: Path, test: Path) -> dict[str, Any]:
    """A trained run's figures on a test subset, with `neogen eval` (every row kept, the run's thresholds)."""
    metrics_file = run / "eval" / test.stem / "metrics.json"
    subprocess.run([sys.executable, "-m", "neogen.cli", "-q", "eval", str(run), str(test), "--out",
                    str(metrics_file.parent)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return run_figures(run, metrics_file)


def run_figures(run: Path, metrics_file: Path) -> dict[str, Any]:
    """Test figures of a trained run from an eval's metrics.json, with the training time from its Trainer log."""
    metrics = json.loads(metrics_file.read_text())
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {k: metrics[k] for k in KEYS} | {
        "train_seconds": next((r["train_runtime"] for r in log if "train_runtime" in r), None)}


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """multilabel-METHOD: the whole test set, its first `subset_rows` rows, and (neogen) scoring speed."""
    files = prepare(params["train_rows"], params["valid_rows"])
    subset_file = first_rows(files["test"], params["subset_rows"])
    method = params["method"]
    if method == "tfidf":
        figures = {"test": tfidf(files), "subset": tfidf({**files, "test": subset_file}, deduplicate_test=False)}
    else:
        overrides = [f"{key}={value}" for key, value in params.items() if "." in key] + [f"train.seed={seed}"]
        run_dir = ROOT / "runs" / f"goemotions-{method}"
        start = time.perf_counter()
        figures = {"test": neogen(files, method, overrides, run_dir)}
        figures["test"]["wall_seconds"] = time.perf_counter() - start
        figures["subset"] = evaluate_subset(run_dir, subset_file)
        figures["scoring"] = score_speed(run_dir, files["test"], params["speed_rows"])
    for part in ("test", "subset"):
        r = figures[part]
        print(f"{method} {part}: micro-F1 {r['micro_f1']:.4f}, macro-F1 {r['macro_f1']:.4f}, samples-F1 "
              f"{r['samples_f1']:.4f}, ROC AUC {r['roc_auc']:.4f}", flush=True)
    return figures
