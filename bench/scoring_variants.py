"""Scoring variants, each timed against the plain path in the same process, with the scores compared.

All change only how `Classifier.predict_proba` runs the same model. Adopted: `precast` and `fuse`. Measured and not
adopted: `compile` and the batch shapes of `batching` other than the default.

  compile   torch.compile(model, dynamic=True) against eager, fp32 (or --precision bf16); compile time reported.
  precast   bf16 autocast with fp32 weights (autocast casts every linear weight at every forward pass, since a
            loaded model's weights do not require grad and so are not cached) against the same model with its
            linear weights stored in bf16 once; --rounds interleaved rounds, batch and one text per call.
  fuse      the model as from_pretrained gives it against the same model after neogen.models.fuse_activations
            (tanh-GELU as one kernel; GPT-Neo and GPT-2 only), --rounds interleaved rounds.
  profile   torch.profiler over one predict_proba pass of the model as neogen prepares it: the ops by self CPU time.
  batching  how texts are cut into batches: rows per batch (--batch-sizes), token budgets per batch
            (--token-budgets), and batches of equal-length prompts only (no padding at all); padding overhead and
            examples/s per shape, --rounds interleaved rounds.

    python bench/scoring_variants.py compile
    python bench/scoring_variants.py precast --rounds 2
    python bench/scoring_variants.py precast --rows 16 --single 4 --rounds 1     # smoke test
    python bench/scoring_variants.py fuse --model gpt-neo-125m-random --rounds 3
    python bench/scoring_variants.py profile --model gpt-neo-125m-random --rows 512
    python bench/scoring_variants.py batching --model gpt-neo-125m-random --rounds 3

Run it on an otherwise idle machine: the two variants differ by less than this machine's run-to-run spread.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from common import SHARED_DATA, load, prepare_like_neogen, read_trec

from neogen.classify import Classifier
from neogen.labels import LabelCodec
from neogen.models import cast_for_inference, fuse_activations


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


def interleaved(variants: dict[str, Classifier], texts: list[str], rounds: int) -> None:
    """Time every variant once per round, rounds interleaved; print the rates and the largest score difference."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=["compile", "precast", "fuse", "batching", "profile"])
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, gpt-neo-125m-random or a directory")
    parser.add_argument("--data", default=str(SHARED_DATA / "trec" / "train_5500.label"))
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="texts classified one per call (precast)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (precast, fuse, batching)")
    parser.add_argument("--batch-sizes", default="32,64,128", help="rows per batch to compare (batching)")
    parser.add_argument("--token-budgets", default="1024,2048",
                        help="padded tokens per batch to compare, at up to 512 rows (batching)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="default: fp32 for compile, fuse, batching and profile; precast is always bf16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    texts, gold = read_trec(args.data)
    texts = texts[: args.rows]
    model, tokenizer = load(args.model, torch.device("cpu"))
    model.requires_grad_(False)  # as after Classifier.load: frozen, merged weights
    codec = LabelCodec.fit(gold, tokenizer)
    precision = "bf16" if args.variant == "precast" else (args.precision or "fp32")
    plain = Classifier(model, tokenizer, codec, precision=precision, batch_size=args.batch_size)
    plain.predict_proba(texts[: args.batch_size])  # warm-up

    if args.variant == "fuse":
        fused_model = copy.deepcopy(model)
        print(f"fused {fuse_activations(fused_model)} activation modules")
        fused = Classifier(fused_model, tokenizer, codec, precision=precision, batch_size=args.batch_size)
        fused.predict_proba(texts[: args.batch_size])
        interleaved({"as from_pretrained": plain, "tanh-GELU fused": fused}, texts, args.rounds)
        return
    if args.variant == "profile":
        from torch.profiler import ProfilerActivity, profile

        prepare_like_neogen(model, precision)
        plain.predict_proba(texts[: args.batch_size])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            plain.predict_proba(texts)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        return
    if args.variant == "batching":
        variants: dict[str, Classifier] = {}
        for size in (int(x) for x in args.batch_sizes.split(",") if x):
            variants[f"{size} rows"] = Classifier(model, tokenizer, codec, precision=precision, batch_size=size)
        for budget in (int(x) for x in args.token_budgets.split(",") if x):
            variants[f"{budget} tokens (<= 512 rows)"] = Classifier(model, tokenizer, codec, precision=precision,
                                                                    batch_size=512, max_batch_tokens=budget)
        variants[f"equal lengths only (<= {args.batch_size} rows)"] = EqualLengthBatches(
            model, tokenizer, codec, precision=precision, batch_size=args.batch_size)
        for name, classifier in variants.items():
            batches, overhead = padding_overhead(classifier, texts)
            print(f"{name:<43} {batches:4d} batches, padding {100 * overhead:5.1f}% of real tokens")
        interleaved(variants, texts, args.rounds)
        return

    if args.variant == "compile":
        rates = [timed_probs(plain, texts)[0] for _ in range(2)]
        reference = plain.predict_proba(texts).probs
        print(f"eager: {rates[0]:.1f}, {rates[1]:.1f} ex/s")
        plain.model = torch.compile(model, dynamic=True)
        start = time.perf_counter()
        plain.predict_proba(texts)
        print(f"compile + first pass: {time.perf_counter() - start:.1f} s")
        rates = [timed_probs(plain, texts) for _ in range(2)]
        print(f"compiled: {rates[0][0]:.1f}, {rates[1][0]:.1f} ex/s; "
              f"max |score diff| {np.abs(rates[1][1] - reference).max():.2e}")
        return

    cast_model = copy.deepcopy(model)
    cast_for_inference(cast_model, "bf16")  # what Classifier.load does
    cast = Classifier(cast_model, tokenizer, codec, precision="bf16", batch_size=args.batch_size)
    cast.predict_proba(texts[: args.batch_size])
    diff = 0.0
    for round_ in range(args.rounds):
        results = {}
        for name, classifier in (("autocast, fp32 weights", plain), ("bf16 linear weights", cast)):
            rate, probs = timed_probs(classifier, texts)
            results[name] = probs
            print(f"round {round_}: {name:<23} batch {args.batch_size}: {rate:6.1f} ex/s; "
                  f"one per call: {one_at_a_time(classifier, texts[: args.single]):5.1f} texts/s", flush=True)
        diff = max(diff, float(np.abs(results["autocast, fp32 weights"] - results["bf16 linear weights"]).max()))
    print(f"max |score diff| {diff:.2e}")


if __name__ == "__main__":
    main()
