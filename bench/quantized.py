"""Quantized base weights through the command line: `neogen train` then `neogen score`, on a CUDA GPU.

`quantization` is none (the recipe's bf16 or fp32 weights), 8bit or 4bit (bitsandbytes, CUDA only). The random
GPT-Neo-125M shape stands in for the real weights (no Hub needed); the student questions train it and TREC
questions are scored. Device memory in use is sampled every 200 ms through both steps with nvidia-smi (the CUDA
context included), and each step runs under its own time limit. Off a GPU the 8-bit and 4-bit runs stop with
"needs a CUDA GPU", as they must, and write no result.

    python -m bench run quantized quantization=8bit
    python -m bench run quantized --out /tmp/smoke train_rows=100 epochs=0.25 score_lines=128
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .common import ROOT, data_path, materialize_model, read_trec
from .score_memory import write_input

RECIPE = "recipes/gpt-neo-125m.yaml"


def first_rows(source: Path, rows: int, target: Path) -> Path:
    """The CSV's header and first `rows` rows, so that a CPU check trains in seconds."""
    with source.open(newline="", encoding="utf-8") as f, target.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows(list(csv.reader(f))[: rows + 1])
    return target


def step(cmd: list[str], timeout: int, what: str) -> float:
    """Run one CLI step under its time limit; its wall seconds, or an exit naming what failed."""
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{what}: no result within {timeout} s") from None
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


@contextlib.contextmanager
def device_memory(folder: Path) -> Iterator[list[int]]:
    """Samples of the GPU memory in use (MiB), every 200 ms while the block runs; none without nvidia-smi."""
    samples: list[int] = []
    memory = folder / "memory.txt"
    sampler = None
    if shutil.which("nvidia-smi"):
        with memory.open("w") as out:
            sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                        "-lms", "200"], stdout=out, stderr=subprocess.DEVNULL)
    try:
        yield samples
    finally:
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
            samples.extend(int(v) for v in memory.read_text().split() if v.isdigit())


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """quantized: train and score through the CLI with the base weights quantized as asked."""
    model_dir = materialize_model(params["model"])
    quantization = params["quantization"] or "null"
    cli = [sys.executable, "-m", "neogen.cli"]
    with tempfile.TemporaryDirectory(prefix="neogen-quantized-") as tmp:
        folder = Path(tmp)
        train_csv = data_path(params["data"])
        if params["train_rows"]:
            train_csv = first_rows(train_csv, params["train_rows"], folder / "train.csv")
        texts, _ = read_trec(data_path(params["score_data"]))
        source, scored, run_dir = folder / "score.jsonl", folder / "scored.jsonl", folder / "run"
        write_input(texts, params["score_lines"], source)
        with device_memory(folder) as samples:
            train_seconds = step([*cli, "-q", "train", RECIPE, f"model.name={model_dir}",
                                  f"model.quantization={quantization}", f"data.train={train_csv}",
                                  f"train.epochs={params['epochs']}", f"train.seed={seed}", f"output_dir={run_dir}"],
                                 params["train_timeout"], f"train, quantization={quantization}")
            score_seconds = step([*cli, "score", "--no-progress", str(run_dir), str(source), str(scored)],
                                 params["score_timeout"], f"score, quantization={quantization}")
        with scored.open("rb") as f:
            lines = sum(1 for _ in f)
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    peak = max(samples, default=None)
    print(f"quantization {quantization}: trained in {train_seconds:.1f} s, scored {lines} lines in "
          f"{score_seconds:.1f} s, peak device memory {peak} MiB", flush=True)
    return {"train_seconds": train_seconds, "score_seconds": score_seconds, "scored_lines": lines,
            "score_examples_per_s": lines / score_seconds, "peak_device_memory_mib": peak, "run_results": results}
