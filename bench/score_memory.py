"""Scoring memory: `neogen score`'s peak resident memory against the size of its input.

score-memory             JSONL files of growing line counts (TREC questions, cycled) are scored by `score_jsonl`,
                         each size in its own process, with the same model, label codec, precision and batch size.
                         Each process reports its resident memory after loading the model and its peak over the whole
                         run (VmHWM), so the growth due to scoring is peak - loaded. `score_jsonl` reads, scores and
                         writes a chunk of lines at a time, so its memory should not grow with the file.
score-memory-long-lines  a file of very long lines (`lines` lines of `line_mb` MB each) and a file of as many short
                         lines, each scored by the `neogen score` command in its own process with a tiny random
                         GPT-Neo run (2 layers, the real GPT-2 BPE); the peak resident memory of each. The model is
                         tiny on purpose: what grows with a line's length is reading and tokenizing it, not the
                         forward pass, which sees at most `max_length` tokens.

    python -m bench run score-memory                                   # SmolLM2-135M, bf16, 1k / 4k / 16k lines
    python -m bench run score-memory lines=64000
    python -m bench run score-memory-long-lines                        # 20 lines of 20 MB
    python -m bench run score-memory --out /tmp/smoke model=gpt-neo-125m-random lines=64,256 precision=fp32
    python -m bench run score-memory-long-lines --out /tmp/smoke lines=2 line_mb=0.1

The base model scores (no adapter) in score-memory: memory does not depend on training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import SHARED_DATA, call_in_process, data_path, gpt2_tokenizer, memory_kb, random_gpt_neo, read_trec

TINY_NEO = {"vocab_size": 50257, "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
            "attention_types": [[["global", "local"], 1]], "window_size": 32, "max_position_embeddings": 512}


def write_input(texts: list[str], lines: int, path: Path) -> None:
    """`lines` JSONL records cycling through `texts`."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")


def worker(request: dict[str, Any]) -> dict[str, Any]:
    """Score one file in this process (a child of `run`); its memory figures and speed."""
    import torch

    from neogen.classify import Classifier
    from neogen.labels import LabelCodec
    from neogen.score import score_jsonl

    from .common import load, prepare_like_neogen

    params = request["params"]
    torch.set_num_threads(params["threads"])
    _, gold = read_trec(data_path(params["data"]))
    model, tokenizer = load(params["model"], torch.device("cpu"))
    prepare_like_neogen(model, params["precision"])  # as `neogen score` runs it
    codec = LabelCodec.fit(gold, tokenizer)
    classifier = Classifier(model, tokenizer, codec, max_length=256, precision=params["precision"],
                            batch_size=params["batch_size"])
    classifier.predict_proba(["warm up", "the kernels"])
    loaded = memory_kb("VmRSS")
    start = time.perf_counter()
    stats = score_jsonl(classifier, request["input"], request["input"] + ".out", progress=False)
    wall = time.perf_counter() - start
    peak = memory_kb("VmHWM")
    return {"lines": stats.scored, "loaded_rss_mb": loaded / 1024, "peak_rss_mb": peak / 1024,
            "growth_mb": (peak - loaded) / 1024, "seconds": wall, "examples_per_s": stats.scored / wall}


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """score-memory: each input size scored in its own process."""
    texts, _ = read_trec(data_path(params["data"]))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for lines in (int(n) for n in str(params["lines"]).split(",")):
            path = Path(tmp) / f"in-{lines}.jsonl"
            write_input(texts, lines, path)
            results.append(call_in_process("score_memory:worker", {"params": params, "input": str(path)}))
            r = results[-1]
            print(f"{r['lines']:>7} lines: loaded {r['loaded_rss_mb']:,.0f} MB, peak {r['peak_rss_mb']:,.0f} MB "
                  f"(+{r['growth_mb']:,.0f} MB), {r['examples_per_s']:.1f} ex/s", flush=True)
    return {"results": results}


def tiny_run(folder: Path, max_length: int) -> Path:
    """A run folder trained for a moment by `neogen train` on a tiny random GPT-Neo (fixed seed) and toy rows."""
    import csv

    model_dir = folder / "tiny-gpt-neo"
    random_gpt_neo(**TINY_NEO).save_pretrained(model_dir)
    gpt2_tokenizer().save_pretrained(model_dir)
    words = {"Biology": "cell gene leaf", "Chemistry": "acid atom bond", "Maths": "sum angle prime",
             "Physics": "force volt lens"}
    train = folder / "toy.csv"
    with train.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(12):
            writer.writerows((f"question {i}: what about the {w.split()[i % 3]}?", label) for label, w in words.items())
    run_dir = folder / "run"
    subprocess.run([sys.executable, "-m", "neogen.cli", "-q", "train", "-", f"model.name={model_dir}",
                    f"data.train={train}", "data.text_column=text", "data.label_column=label", "data.test_ratio=0",
                    "lora.r=4", "lora.alpha=8", "train.epochs=1", "train.batch_size=4",
                    f"train.max_length={max_length}", "train.precision=fp32", f"output_dir={run_dir}"],
                   check=True, stdout=subprocess.DEVNULL)
    return run_dir


def write_long_lines(path: Path, lines: int, line_mb: float) -> int:
    """`lines` JSONL records whose text is `line_mb` MB of TREC questions run together; the file's bytes."""
    texts, _ = read_trec(SHARED_DATA / "trec" / "train_5500.label")
    block = " ".join(texts)
    size = int(line_mb * 1_000_000)
    text = (block * (size // len(block) + 1))[:size]
    with path.open("w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    return path.stat().st_size


def score_peak(run_dir: Path, source: Path, threads: int) -> dict[str, Any]:
    """`neogen score RUN SOURCE OUT` in its own process: its peak resident memory, wall time and lines written."""
    out, log = source.with_suffix(".out.jsonl"), source.with_suffix(".stderr")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with log.open("wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "neogen.cli", "score", "--no-progress", str(run_dir),
                                  str(source), str(out)], env=env, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # the rusage of this child alone: its peak resident memory
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"neogen score {source.name} failed (exit status {child.returncode}):\n{tail}")
    with out.open("rb") as f:
        scored = sum(1 for _ in f)
    out.unlink()
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds, "lines": scored,
            "input_bytes": source.stat().st_size}


def long_lines(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """score-memory-long-lines: very long lines against as many short ones, each through `neogen score`."""
    with tempfile.TemporaryDirectory(prefix="neogen-long-lines-") as tmp:
        folder = Path(tmp)
        run_dir = tiny_run(folder, params["max_length"])
        texts, _ = read_trec(SHARED_DATA / "trec" / "train_5500.label")
        short = folder / "short.jsonl"
        write_input(texts, params["lines"], short)
        long = folder / "long.jsonl"
        write_long_lines(long, params["lines"], params["line_mb"])
        figures = {"short": score_peak(run_dir, short, params["threads"]),
                   "long": score_peak(run_dir, long, params["threads"])}
    figures["growth_mb"] = figures["long"]["peak_rss_mb"] - figures["short"]["peak_rss_mb"]
    for name in ("short", "long"):
        r = figures[name]
        print(f"{name:>5}: {r['lines']} lines, {r['input_bytes'] / 1e6:,.1f} MB, peak RSS {r['peak_rss_mb']:,.0f} MB, "
              f"{r['seconds']:.1f} s", flush=True)
    return figures
