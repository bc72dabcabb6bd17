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

    python -m bench run many-labels threads=1
    python -m bench run many-labels threads=1 labels=28,100 rows=64 yes_no_rows=64 batch_size=16 \
        yes_no_cache_tokens=0                   # yes_no copying every row's cache at once, as before the bound
    python -m bench run many-labels --out /tmp/smoke rows=32 labels=6,300 yes_no_rows=4   # seconds

Time it on an otherwise idle machine, as every benchmark here.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from neogen import tasks
from neogen.classify import Classifier
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec

from .common import data_path, load, prepare_like_neogen, read_trec


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


def one_k(k: int, model: Any, tokenizer: Any, texts: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """Codec fit and the three scorings for K synthetic labels."""
    labels = synthetic_labels(k)
    start = time.perf_counter()
    codec = LabelCodec.fit(labels, tokenizer)
    fit_seconds = time.perf_counter() - start
    check_codec(codec, tokenizer)
    row: dict[str, Any] = {"labels": k, "codec_fit_seconds": fit_seconds, "aliases": len(codec.aliases)}
    common = {"max_length": params["max_length"], "precision": params["precision"],
              "batch_size": params["batch_size"]}
    row["single"] = time_scoring(Classifier(model, tokenizer, codec, **common), texts)
    sets = [[label] for label in labels]
    independent = MultiLabelCodec.fit(sets, tokenizer, encoding="independent")
    row["independent"] = time_scoring(Classifier(model, tokenizer, independent, **common), texts)
    if params["yes_no_rows"]:
        yes_no = MultiLabelCodec.fit(sets, tokenizer, encoding="yes_no")
        row["yes_no"] = time_scoring(Classifier(model, tokenizer, yes_no, **common), texts[: params["yes_no_rows"]])
    line = (f"K={k:>5}  codec fit {fit_seconds:6.2f} s ({row['aliases']} aliases)  "
            f"single {row['single']['ex_per_s']:7.1f} ex/s  independent {row['independent']['ex_per_s']:7.1f} ex/s")
    if "yes_no" in row:
        line += f"  yes_no {row['yes_no']['ex_per_s']:7.2f} ex/s"
    print(line, flush=True)
    return row


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """many-labels: every K in `labels` on the same texts and model; the process's peak memory."""
    if params["yes_no_cache_tokens"] is not None:
        tasks.YES_NO_CACHE_TOKENS = params["yes_no_cache_tokens"] or 2**62
    if params["threads"]:
        torch.set_num_threads(params["threads"])
    texts = read_trec(data_path(params["data"]))[0][: params["rows"]]
    model, tokenizer = load(params["model"], torch.device("cpu"))
    model = prepare_like_neogen(model, params["precision"])
    rows = [one_k(int(k), model, tokenizer, texts, params) for k in str(params["labels"]).split(",")]
    # The process's high-water mark: with yes_no timed last for each K, it shows its copies' peak.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB", flush=True)
    return {"rows": len(texts), "yes_no_rows": min(params["yes_no_rows"], len(texts)),
            "yes_no_cache_tokens": tasks.YES_NO_CACHE_TOKENS, "threads": torch.get_num_threads(),
            "peak_rss_mb": peak, "results": rows}
