"""Scoring memory: `neogen score`'s peak resident memory against the size of the input file.

`score_jsonl` reads, scores and writes a chunk of lines at a time, so its memory should not grow with the file.
This measures it: JSONL files of growing size (TREC questions, cycled) are scored, each in its own process, with
the same model, label codec, precision and batch size. Each process reports its resident memory after loading the
model and its peak over the whole run (VmHWM), so the growth due to scoring is peak - loaded.

    # the real measurement: SmolLM2-135M, bf16 (neogen's CPU default), 1k / 4k / 16k lines
    python bench/score_memory.py --json bench/results/score-memory-smollm2.json
    # smoke test (seconds)
    python bench/score_memory.py --model gpt-neo-125m-random --lines 64,256 --precision fp32

The base model scores (no adapter): memory does not depend on training. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import SHARED_DATA, cpu_model, read_trec

DEFAULT_DATA = SHARED_DATA / "trec" / "train_5500.label"


def memory_kb(field: str) -> int:
    """A line of /proc/self/status in kB: VmRSS (now) or VmHWM (peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def write_input(texts: list[str], lines: int, path: Path) -> None:
    """`lines` JSONL records cycling through `texts`."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Score one file in this process; its memory figures and speed."""
    import torch
    from common import load, prepare_like_neogen

    from neogen.classify import Classifier
    from neogen.labels import LabelCodec
    from neogen.score import score_jsonl

    torch.set_num_threads(args.threads)
    _, gold = read_trec(args.data)
    model, tokenizer = load(args.model, torch.device("cpu"))
    prepare_like_neogen(model, args.precision)  # as `neogen score` runs it
    codec = LabelCodec.fit(gold, tokenizer)
    classifier = Classifier(model, tokenizer, codec, max_length=256, precision=args.precision,
                            batch_size=args.batch_size)
    classifier.predict_proba(["warm up", "the kernels"])
    loaded = memory_kb("VmRSS")
    start = time.perf_counter()
    stats = score_jsonl(classifier, args.worker, args.worker + ".out", progress=False)
    wall = time.perf_counter() - start
    peak = memory_kb("VmHWM")
    return {"lines": stats.scored, "loaded_rss_mb": loaded / 1024, "peak_rss_mb": peak / 1024,
            "growth_mb": (peak - loaded) / 1024, "seconds": wall, "examples_per_s": stats.scored / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, gpt-neo-125m-random or a directory")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="TREC file whose questions fill the inputs")
    parser.add_argument("--lines", default="1000,4000,16000", help="input sizes, comma-separated")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    texts, _ = read_trec(args.data)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for lines in (int(n) for n in args.lines.split(",")):
            path = Path(tmp) / f"in-{lines}.jsonl"
            write_input(texts, lines, path)
            cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", str(path)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"{lines} lines failed:\n{out.stderr[-4000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{r['lines']:>7} lines: loaded {r['loaded_rss_mb']:,.0f} MB, peak {r['peak_rss_mb']:,.0f} MB "
                  f"(+{r['growth_mb']:,.0f} MB), {r['examples_per_s']:.1f} ex/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": cpu_model(), "args": vars(args), "results": results},
                                              indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
