"""Multi-label: neogen's three encodings against TF-IDF + one-vs-rest logistic regression, on GoEmotions.

Rows (from ../shared/data/goemotions, 28 labels): train = the first --train-rows rows of train.tsv, valid = the
next --valid-rows rows (decision thresholds and the best checkpoint are chosen there), test = all of dev.tsv.
Every method sees the same rows and tunes its thresholds the same way (neogen.thresholds, on valid).

  python bench/multilabel.py prepare                     # writes runs/goemotions/{train,valid,test}.jsonl
  python bench/multilabel.py run --json bench/results/multilabel-goemotions.json
  python bench/multilabel.py run --methods tfidf          # the baseline alone (seconds)
  python bench/multilabel.py speed --json ...             # re-time scoring of the trained runs only (quiet machine)
  python bench/multilabel.py subset --test-rows 1000 --json ...   # every method on the first N test rows

`run` trains recipes/smollm2-135m-goemotions.yaml once per encoding (`neogen train`, overrides after the
options), then times scoring of --speed-rows test texts with the trained run (batch of the recipe, one process).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import SHARED_DATA, cpu_model

ROOT = Path(__file__).resolve().parents[1]
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


def neogen(files: dict[str, Path], encoding: str, overrides: list[str], speed_rows: int) -> dict[str, Any]:
    """Train one encoding with the recipe, read its test figures, and time its scoring."""
    out = ROOT / "runs" / f"goemotions-{encoding}"
    cmd = [sys.executable, "-m", "neogen.cli", "-q", "train", RECIPE, f"multilabel.encoding={encoding}",
           f"data.train={files['train']}", f"data.valid={files['valid']}", f"data.test={files['test']}",
           *overrides, f"output_dir={out}"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    results = json.loads((out / "results.json").read_text())
    metrics = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    return ({k: metrics[k] for k in KEYS} | {"train_seconds": results["train_seconds"],
                                              "unseen_label_sets": metrics.get("unseen_label_sets")}
            | score_speed(out, files["test"], speed_rows))


def score_speed(run_dir: Path, test: Path, rows: int) -> dict[str, float]:
    """Examples/s of Classifier.predict_proba on the first `rows` test texts (model loaded beforehand)."""
    from neogen.classify import Classifier

    texts = load_rows(test)[0][:rows]
    classifier = Classifier.load(run_dir)
    classifier.predict_proba(texts[:64])  # warm-up
    start = time.perf_counter()
    classifier.predict_proba(texts)
    return {"examples_per_second": len(texts) / (time.perf_counter() - start), "precision": classifier.precision,
            "batch_size": classifier.batch_size, "threads": torch.get_num_threads()}


def subset(files: dict[str, Path], methods: list[str], rows: int) -> dict[str, Any]:
    """Every method on the first `rows` test rows: trained runs are evaluated with `neogen eval` (their saved
    thresholds), TF-IDF is retrained as in `run`. For encodings too slow to score the whole test set here."""
    test = DATA / f"test-first{rows}.jsonl"
    test.write_text("".join(files["test"].read_text(encoding="utf-8").splitlines(keepends=True)[:rows]))
    out: dict[str, Any] = {}
    for method in methods:
        if method == "tfidf":
            out[method] = tfidf({**files, "test": test}, deduplicate_test=False)
            continue
        run = ROOT / "runs" / f"goemotions-{method}"
        metrics_file = run / "eval" / test.stem / "metrics.json"
        if not metrics_file.exists():
            subprocess.run([sys.executable, "-m", "neogen.cli", "-q", "eval", str(run), str(test), "--out",
                            str(metrics_file.parent)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        out[method] = run_figures(run, metrics_file)
        print(f"{method}: " + json.dumps(out[method]), flush=True)
    return out


def run_figures(run: Path, metrics_file: Path) -> dict[str, Any]:
    """Test figures of a trained run from an eval's metrics.json, with the training time from its Trainer log."""
    metrics = json.loads(metrics_file.read_text())
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {k: metrics[k] for k in KEYS} | {
        "train_seconds": next((r["train_runtime"] for r in log if "train_runtime" in r), None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "run", "speed", "subset"])
    parser.add_argument("--test-rows", type=int, default=1000, help="subset: evaluate on the first N test rows")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--valid-rows", type=int, default=500)
    parser.add_argument("--methods", default="tfidf,independent,powerset,yes_no")
    parser.add_argument("--speed-rows", type=int, default=1000, help="test texts timed for scoring speed")
    parser.add_argument("--json", help="write the figures here (merged into an existing file)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides (dotted.key=value) for the neogen runs")
    args = parser.parse_intermixed_args()

    files = prepare(args.train_rows, args.valid_rows)
    if args.step == "prepare":
        return
    previous = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    if args.step == "subset":
        key = f"first_{args.test_rows}_test_rows"
        previous[key] = previous.get(key, {}) | subset(files, args.methods.split(","), args.test_rows)
        if args.json:
            Path(args.json).write_text(json.dumps(previous, indent=2) + "\n")
        return
    results: dict[str, Any] = previous.get("results", {})
    for method in args.methods.split(","):
        start = time.perf_counter()
        if args.step == "speed" and method == "tfidf":
            continue  # nothing to re-time: TF-IDF's scoring figure comes with `run`
        if args.step == "speed":
            run = ROOT / "runs" / f"goemotions-{method}"
            entry = results.setdefault(method, {})
            if "macro_f1" not in entry:  # a run evaluated apart (`neogen eval RUN test.jsonl`)
                entry.update(run_figures(run, run / "eval" / "test" / "metrics.json"))
            entry.update(score_speed(run, files["test"], args.speed_rows))
        else:
            results[method] = tfidf(files) if method == "tfidf" else \
                neogen(files, method, args.overrides, args.speed_rows)
            results[method]["wall_seconds"] = time.perf_counter() - start
        print(f"{method}: " + json.dumps(results[method]), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(previous | {
                "dataset": "goemotions", "rows": {"train": args.train_rows, "valid": args.valid_rows,
                                                  "test": "dev.tsv (5426)"},
                "machine": cpu_model(), "recipe": RECIPE, "overrides": args.overrides, "results": results},
                indent=2) + "\n")
    print(f"\ngoemotions ({cpu_model()}; {args.train_rows} train rows, recipe {RECIPE} {' '.join(args.overrides)})")
    print(f"{'method':<12} {'micro-F1':>9} {'macro-F1':>9} {'samples-F1':>10} {'ROC AUC':>8} {'train s':>8} "
          f"{'score ex/s':>10}")
    for method, r in results.items():
        print(f"{method:<12} {r['micro_f1']:>9.4f} {r['macro_f1']:>9.4f} {r['samples_f1']:>10.4f} "
              f"{r['roc_auc']:>8.4f} {r['train_seconds']:>8.0f} {r['examples_per_second']:>10.1f}")


if __name__ == "__main__":
    main()
