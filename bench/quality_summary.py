"""Mean and spread of `bench/quality.py` figures over runs that differ only in their seed.

One seed decides differences of a few test questions either way; this puts several runs side by side and says, per
method and metric, the mean, the sample standard deviation and the per-run values, plus how often each method led.

    python bench/quality_summary.py bench/results/quality-trec6.json bench/results/quality-trec6-1ep-seed1.json \\
        bench/results/quality-trec6-1ep-seed2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

METRICS = ("accuracy", "macro_f1", "roc_auc", "log_loss")
LOWER_IS_BETTER = {"log_loss"}


def summarize(reports: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Per method and metric: values in run order, mean, standard deviation; per metric: runs each method led."""
    summary: dict[str, Any] = {"runs": len(reports), "methods": {}, "wins": {}}
    for method in methods:
        summary["methods"][method] = {}
        for metric in METRICS:
            values = [r["results"][method][metric] for r in reports]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            summary["methods"][method][metric] = {"values": values, "mean": statistics.mean(values), "std": spread}
    for metric in METRICS:
        wins = dict.fromkeys(methods, 0)
        for r in reports:
            scores = {m: r["results"][m][metric] for m in methods}
            best = (min if metric in LOWER_IS_BETTER else max)(scores.values())
            leaders = [m for m, s in scores.items() if s == best]
            if len(leaders) == 1:  # a tie is nobody's win
                wins[leaders[0]] += 1
        summary["wins"][metric] = wins
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="bench/quality.py --json outputs, one per seed")
    parser.add_argument("--methods", default="neogen,head", help="methods present in every file")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()

    reports = [json.loads(f.read_text()) for f in args.files]
    methods = args.methods.split(",")
    datasets = {r["dataset"] for r in reports}
    if len(datasets) != 1:
        raise SystemExit(f"the files hold different data sets: {sorted(datasets)}")
    for file, report in zip(args.files, reports, strict=True):
        missing = [m for m in methods if m not in report["results"]]
        if missing:
            raise SystemExit(f"{file}: no figures for {', '.join(missing)}; run bench/quality.py --methods "
                             f"{args.methods} with --json {file}, or pass --methods without them")
    summary = summarize(reports, methods) | {"dataset": datasets.pop(), "files": [str(f) for f in args.files]}

    print(f"{summary['dataset']}: {summary['runs']} runs ({', '.join(summary['files'])})")
    print(f"{'method':<8} {'metric':<9} {'mean':>7} {'std':>7}  per run")
    for method, metrics in summary["methods"].items():
        for metric, m in metrics.items():
            runs = " ".join(f"{v:.4f}" for v in m["values"])
            print(f"{method:<8} {metric:<9} {m['mean']:>7.4f} {m['std']:>7.4f}  {runs}")
    for metric, wins in summary["wins"].items():
        print(f"runs led on {metric}: " + ", ".join(f"{m} {n}" for m, n in wins.items()))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
