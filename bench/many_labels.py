"""Many labels: what the number of labels K costs the label codec and scoring, in one run.

The roadmap asks for hundreds of labels. neogen reads K label tokens' logits at one position per text, so scoring
should cost the same for 6 labels as for 1,000; this script measures whether it does, on the same texts and model,
for each K in --labels:

  codec        LabelCodec.fit on K synthetic labels (`L0001`, `L0002`, ...: none is one token of a GPT-2 or
               SmolLM2 vocabulary, so every one goes through the alias search, the codec's worst case); its time,
               and a check that the K completions are K distinct single tokens that decode back to themselves.
  single       Classifier.predict_proba, single-label: softmax over the K label tokens' logits.
  independent  the same pass for a multi-label run (`multilabel.encoding=independent`): a sigmoid per label token.
  yes_no       the multi-label encoding that asks " yes"/" no" after every label token: one extra token per label
               per text, so its cost should grow with K (timed on --yes-no-rows texts only).

The model is used as is (no adapter): speed does not depend on training. Texts are TREC questions; labels are not
read from the file.

    python bench/many_labels.py --model gpt-neo-125m-random --json bench/results/many-labels-gptneo-fp32.json
    python bench/many_labels.py --model gpt-neo-125m-random --rows 32 --labels 6,300 --yes-no-rows 4   # seconds

Time it on an otherwise idle machine, as every benchmark here.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RANDOM_NEO, SHARED_DATA, cpu_model, load, prepare_like_neogen, read_trec

from neogen import multilabel
from neogen.classify import Classifier
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec

DEFAULT_DATA = SHARED_DATA / "trec" / "train_5500.label"


def synthetic_labels(k: int) -> list[str]:
    """K label names that are no single token, so that every one needs an alias."""
    return [f"L{i:04d}" for i in range(1, k + 1)]


def check_codec(codec: LabelCodec, tokenizer: Any) -> None:
    """K distinct completion tokens, each one token that decodes to its completion."""
    if len(set(codec.token_ids)) != len(codec.labels):
        raise SystemExit(f"codec for {len(codec.labels)} labels repeats a completion token")
    for token_id, completion in zip(codec.token_ids, codec.completions, strict=True):
        if tokenizer(completion, add_special_tokens=False)["input_ids"] != [token_id]:
            raise SystemExit(f"completion {completion!r} is not the single token {token_id}")


def time_scoring(classifier: Classifier, texts: list[str]) -> dict[str, float]:
    """Texts per second of predict_proba, after a warm-up on the first few texts."""
    classifier.predict_proba(texts[:4])
    start = time.perf_counter()
    probs = classifier.predict_proba(texts).probs
    seconds = time.perf_counter() - start
    if probs.shape != (len(texts), len(classifier.labels)):
        raise SystemExit(f"scores have shape {probs.shape}, expected {(len(texts), len(classifier.labels))}")
    return {"seconds": seconds, "ex_per_s": len(texts) / seconds}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=RANDOM_NEO,
                        help=f"{RANDOM_NEO}, smollm2-135m, or a path / Hub id (default: %(default)s)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="TREC file (default: %(default)s)")
    parser.add_argument("--labels", default="6,50,300,1000", help="label counts K, comma-separated "
                        "(default: %(default)s)")
    parser.add_argument("--rows", type=int, default=500, help="texts scored per K (default: %(default)s)")
    parser.add_argument("--yes-no-rows", type=int, default=32,
                        help="texts scored per K with the yes_no encoding; 0 skips it (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=96, help="prompt tokens at most (default: %(default)s)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--yes-no-cache-tokens", type=int, default=None,
                        help="yes_no: cached prompt tokens copied per suffix pass (default: neogen's bound, "
                             f"{multilabel.YES_NO_CACHE_TOKENS}); 0 copies all rows at once, as before the bound")
    parser.add_argument("--json", metavar="PATH", help="also write all figures as JSON")
    args = parser.parse_args(argv)
    if args.yes_no_cache_tokens is not None:
        multilabel.YES_NO_CACHE_TOKENS = args.yes_no_cache_tokens or 2**62

    torch.set_num_threads(args.threads)
    texts = read_trec(args.data)[0][: args.rows]
    model, tokenizer = load(args.model, torch.device("cpu"))
    model = prepare_like_neogen(model, args.precision)
    rows: list[dict[str, Any]] = []
    for k in (int(part) for part in args.labels.split(",")):
        labels = synthetic_labels(k)
        start = time.perf_counter()
        codec = LabelCodec.fit(labels, tokenizer)
        fit_seconds = time.perf_counter() - start
        check_codec(codec, tokenizer)
        row: dict[str, Any] = {"labels": k, "codec_fit_seconds": fit_seconds, "aliases": len(codec.aliases)}
        common = {"max_length": args.max_length, "precision": args.precision, "batch_size": args.batch_size}
        row["single"] = time_scoring(Classifier(model, tokenizer, codec, **common), texts)
        sets = [[label] for label in labels]
        independent = MultiLabelCodec.fit(sets, tokenizer, encoding="independent")
        row["independent"] = time_scoring(Classifier(model, tokenizer, independent, **common), texts)
        if args.yes_no_rows:
            yes_no = MultiLabelCodec.fit(sets, tokenizer, encoding="yes_no")
            row["yes_no"] = time_scoring(Classifier(model, tokenizer, yes_no, **common), texts[: args.yes_no_rows])
        rows.append(row)
        line = (f"K={k:>5}  codec fit {fit_seconds:6.2f} s ({row['aliases']} aliases)  "
                f"single {row['single']['ex_per_s']:7.1f} ex/s  independent {row['independent']['ex_per_s']:7.1f} ex/s")
        if "yes_no" in row:
            line += f"  yes_no {row['yes_no']['ex_per_s']:7.2f} ex/s"
        print(line, flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)
    report = {"model": args.model, "precision": args.precision, "threads": args.threads, "rows": len(texts),
              "yes_no_cache_tokens": multilabel.YES_NO_CACHE_TOKENS,
              # The process's high-water mark: with yes_no timed last for each K, it shows its copies' peak.
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "yes_no_rows": min(args.yes_no_rows, len(texts)), "batch_size": args.batch_size,
              "max_length": args.max_length, "cpu": cpu_model(), "torch": torch.__version__, "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
