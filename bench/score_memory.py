"""Scoring memory: `neogen score`'s peak resident memory against the size of its input.

JSONL files of growing line counts (TREC questions, cycled) are scored by `score_jsonl`, each size in its own
process, with the same model, label codec, precision and batch size. Each process reports its resident memory after
loading the model and its peak over the whole run (VmHWM), so the growth due to scoring is peak - loaded.
`score_jsonl` reads, scores and writes a chunk of lines at a time, so its memory should not grow with the file.

    python -m bench run score-memory                                   # SmolLM2-135M, bf16, 1k / 4k / 16k lines
    python -m bench run score-memory lines=64000
    python -m bench run score-memory --out /tmp/smoke model=gpt-neo-125m-random lines=64,256 precision=fp32

The base model scores (no adapter): memory does not depend on training.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import call_in_process, data_path, memory_kb, read_trec


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
