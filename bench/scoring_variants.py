"""Scoring variants, each timed against the plain path in the same process, with the scores compared.

All change only how `Classifier.predict_proba` runs the same model. Adopted: `precast` and `fuse`. Measured and not
adopted: `compile` and the batch shapes of `batching` other than the default.

  scoring-compile   torch.compile(model, dynamic=True) against eager, fp32 (or precision=bf16); compile time.
  scoring-precast   bf16 autocast with fp32 weights (autocast casts every linear weight at every forward pass,
                    since a loaded model's weights do not require grad and so are not cached) against the same model
                    with its linear weights stored in bf16 once; `rounds` interleaved rounds, batch and one text per
                    call.
  scoring-fuse      the model as from_pretrained gives it against the same model after
                    neogen.models.fuse_activations (tanh-GELU as one kernel; GPT-Neo and GPT-2 only).
  scoring-profile   torch.profiler over one predict_proba pass of the model as neogen prepares it: the top ops by
                    self CPU time.
  scoring-batching  how texts are cut into batches: rows per batch (batch_sizes), token budgets per batch
                    (token_budgets), and batches of equal-length prompts only (no padding at all); padding overhead
                    and examples/s per shape, `rounds` interleaved rounds.

    python -m bench run scoring-precast rounds=2
    python -m bench run scoring-fuse model=gpt-neo-125m-random rounds=3
    python -m bench run scoring-batching model=gpt-neo-125m-random rounds=4 batch_sizes=64 token_budgets=1024
    python -m bench run scoring-precast --out /tmp/smoke model=gpt-neo-125m-random rows=16 single=4 rounds=1

Run them on an otherwise idle machine: the variants differ by less than a shared machine's run-to-run spread.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from neogen.classify import Classifier
from neogen.labels import LabelCodec
from neogen.models import cast_for_inference, fuse_activations

from .common import data_path, load, prepare_like_neogen, read_trec


def timed_probs(classifier: Classifier, texts: list[str]) -> tuple[float, np.ndarray]:
    """(examples/s, probabilities) of one predict_proba call over all texts."""
    start = time.perf_counter()
    probs = classifier.predict_proba(texts).probs
    return len(texts) / (time.perf_counter() - start), probs


def one_at_a_time(classifier: Classifier, texts: list[str]) -> float:
    """Texts/s when every text is its own classify() call, as in an interactive service."""
    start = time.perf_counter()
    for text in texts:
        classifier.classify(text)
    return len(texts) / (time.perf_counter() - start)


class EqualLengthBatches(Classifier):
    """Batches of prompts of one length only (at most batch_size rows): no padding, at the cost of smaller batches."""

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Longest first, a new batch whenever the length changes or the batch is full."""
        batches: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            if batches and len(batches[-1]) < self.batch_size and lengths[batches[-1][0]] == lengths[i]:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches


def padding_overhead(classifier: Classifier, texts: list[str]) -> tuple[int, float]:
    """(batches, padded tokens / real tokens - 1) of the classifier's batching of texts."""
    prompts = classifier.encoder(texts)
    lengths = [len(p) for p in prompts]
    batches = classifier._batches(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return len(batches), padded / sum(lengths) - 1


def interleaved(variants: dict[str, Classifier], texts: list[str], rounds: int) -> dict[str, Any]:
    """Time every variant once per round, rounds interleaved: per variant its rates, median and best, and the
    largest score difference against the first variant."""
    reference: np.ndarray | None = None
    diff = 0.0
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        for name, classifier in variants.items():
            rate, probs = timed_probs(classifier, texts)
            rates[name].append(rate)
            reference = probs if reference is None else reference
            diff = max(diff, float(np.abs(probs - reference).max()))
            print(f"round {round_}: {name:<34} {rate:6.1f} ex/s", flush=True)
    for name, values in rates.items():
        print(f"{name:<43} median {np.median(values):6.1f} ex/s, best {max(values):6.1f}")
    print(f"max |score diff| against the first variant: {diff:.2e}")
    return {"variants": {name: {"examples_per_s": values, "median": float(np.median(values)), "best": max(values)}
                         for name, values in rates.items()}, "max_abs_diff": diff}


def setup(params: dict[str, Any], precision: str) -> tuple[list[str], Any, Any, LabelCodec, Classifier]:
    """Texts, the model (frozen, as after Classifier.load), tokenizer, codec and a plain, warmed-up classifier."""
    torch.set_num_threads(params["threads"])
    texts, gold = read_trec(data_path(params["data"]))
    texts = texts[: params["rows"]]
    model, tokenizer = load(params["model"], torch.device("cpu"))
    model.requires_grad_(False)
    codec = LabelCodec.fit(gold, tokenizer)
    plain = Classifier(model, tokenizer, codec, precision=precision, batch_size=params["batch_size"])
    plain.predict_proba(texts[: params["batch_size"]])  # warm-up
    return texts, model, tokenizer, codec, plain


def fuse(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """scoring-fuse: the stock model against the same model with tanh-GELU fused."""
    texts, model, tokenizer, codec, plain = setup(params, params["precision"])
    fused_model = copy.deepcopy(model)
    modules = fuse_activations(fused_model)
    fused = Classifier(fused_model, tokenizer, codec, precision=params["precision"], batch_size=params["batch_size"])
    fused.predict_proba(texts[: params["batch_size"]])
    return {"fused_modules": modules} | interleaved({"as from_pretrained": plain, "tanh-GELU fused": fused}, texts,
                                                    params["rounds"])


def profile(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """scoring-profile: the top ops of one pass of the model as neogen prepares it, by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    texts, model, _, _, plain = setup(params, params["precision"])
    prepare_like_neogen(model, params["precision"])
    plain.predict_proba(texts[: params["batch_size"]])
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        plain.predict_proba(texts)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=params["top"]))
    return {"ops": top_ops(prof, params["top"])}


def top_ops(prof: Any, top: int) -> list[dict[str, Any]]:
    """The profiler's `top` ops by self CPU time: name, calls, self CPU seconds and share of the total."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls": e.count, "self_cpu_s": e.self_cpu_time_total / 1e6,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def batching(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """scoring-batching: rows per batch, token budgets and equal-length batches, with their padding."""
    texts, model, tokenizer, codec, _ = setup(params, params["precision"])
    precision, variants = params["precision"], {}
    for size in (int(x) for x in str(params["batch_sizes"]).split(",") if x):
        variants[f"{size} rows"] = Classifier(model, tokenizer, codec, precision=precision, batch_size=size)
    for budget in (int(x) for x in str(params["token_budgets"]).split(",") if x):
        variants[f"{budget} tokens (<= 512 rows)"] = Classifier(model, tokenizer, codec, precision=precision,
                                                                batch_size=512, max_batch_tokens=budget)
    variants[f"equal lengths only (<= {params['batch_size']} rows)"] = EqualLengthBatches(
        model, tokenizer, codec, precision=precision, batch_size=params["batch_size"])
    padding = {}
    for name, classifier in variants.items():
        batches, overhead = padding_overhead(classifier, texts)
        padding[name] = {"batches": batches, "padding_overhead": overhead}
        print(f"{name:<43} {batches:4d} batches, padding {100 * overhead:5.1f}% of real tokens")
    figures = interleaved(variants, texts, params["rounds"])
    for name, entry in figures["variants"].items():
        entry |= padding[name]
    return figures


def compile_(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """scoring-compile: eager against torch.compile(dynamic=True), compile time included."""
    texts, model, _, _, plain = setup(params, params["precision"])
    eager = [timed_probs(plain, texts)[0] for _ in range(2)]
    reference = plain.predict_proba(texts).probs
    print(f"eager: {eager[0]:.1f}, {eager[1]:.1f} ex/s")
    plain.model = torch.compile(model, dynamic=True)
    start = time.perf_counter()
    plain.predict_proba(texts)
    compile_seconds = time.perf_counter() - start
    print(f"compile + first pass: {compile_seconds:.1f} s")
    runs = [timed_probs(plain, texts) for _ in range(2)]
    diff = float(np.abs(runs[1][1] - reference).max())
    print(f"compiled: {runs[0][0]:.1f}, {runs[1][0]:.1f} ex/s; max |score diff| {diff:.2e}")
    return {"eager_examples_per_s": eager, "compile_and_first_pass_s": compile_seconds,
            "compiled_examples_per_s": [rate for rate, _ in runs], "max_abs_diff": diff}


def precast(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """scoring-precast: bf16 autocast over fp32 weights against linear weights cast to bf16 once."""
    texts, model, tokenizer, codec, plain = setup(params, "bf16")
    cast_model = copy.deepcopy(model)
    cast_for_inference(cast_model, "bf16")  # what Classifier.load does
    cast = Classifier(cast_model, tokenizer, codec, precision="bf16", batch_size=params["batch_size"])
    cast.predict_proba(texts[: params["batch_size"]])
    diff, rounds = 0.0, []
    for round_ in range(params["rounds"]):
        results, rates = {}, {}
        for name, classifier in (("autocast, fp32 weights", plain), ("bf16 linear weights", cast)):
            rate, results[name] = timed_probs(classifier, texts)
            single = one_at_a_time(classifier, texts[: params["single"]])
            rates[name] = {"batch_examples_per_s": rate, "one_per_call_texts_per_s": single}
            print(f"round {round_}: {name:<23} batch {params['batch_size']}: {rate:6.1f} ex/s; "
                  f"one per call: {single:5.1f} texts/s", flush=True)
        rounds.append(rates)
        diff = max(diff, float(np.abs(results["autocast, fp32 weights"] - results["bf16 linear weights"]).max()))
    print(f"max |score diff| {diff:.2e}")
    return {"rounds": rounds, "max_abs_diff": diff}
