"""Scoring speed: neogen's batched constrained scoring against `generate` with one new token, in one run.

The same model, texts, prompt token ids (neogen's PromptEncoder) and thread count serve three methods:

  (a) neogen      Classifier.predict_proba: length-sorted, right-padded batches; one forward pass per batch, the
                  vocabulary projection only at each prompt's last position, no KV cache.
  (b) naive       model.generate one text at a time with max_new_tokens=1, do_sample=False, output_scores=True:
                  the label tokens' log-probabilities from scores[0] (the temperature 0 / max_tokens 1 / logprobs
                  recipe), class scores = softmax over them.
  (c) batched     model.generate on batches of the same size as (a), left-padded by hand with an attention mask,
                  in input order (generate_order=sorted gives it neogen's length sorting too).

Each method is warmed up once on a few texts, then timed on all of them. The script checks that the three give the
same labels and reports the largest score difference, measures the machine's matmul peak (square matmul, same
dtype and threads) and neogen's achieved FLOP/s = 2 x non-embedding parameters x real prompt tokens / wall time.
To say where the rest of the time goes, it times every linear layer of neogen's pass twice: in place, during one
more pass (forward hooks around each call; CPU ops are synchronous), and alone, each recorded shape on fresh
tensors. The first says what share of the wall time the matmuls take and the rate they reach inside the model; the
second how fast the same (small, thin) matmuls run here by themselves. The base model is used as is (no adapter):
speed and agreement do not depend on training. neogen's copy of the model is prepared as `load_model` and
`Classifier.load` prepare it (tanh-GELU fused; in bf16, linear weights cast once); (b) and (c) run the model as
`from_pretrained` gives it (generate_weights=cast gives them the bf16 weights too). With repeats=N every method
is timed N times and the fastest run counts, as for the peak matmul: on a shared machine the fastest run is the
one least disturbed by other tenants.

    python -m bench run scoring                                        # SmolLM2-135M, 1000 TREC questions, fp32
    python -m bench run scoring precision=bf16                         # bf16 (the peak is then a bf16 matmul)
    python -m bench run scoring model=gpt-neo-125m-random              # GPT-Neo-125M shape, random weights
    python -m bench run scoring --out /tmp/smoke model=gpt-neo-125m-random rows=16 peak_size=256   # smoke test

Time on an otherwise idle machine: when another process holds cores, torch's threads wait on each other and every
figure (the peak too) drops several-fold; with threads=1 the figures stay sane but describe one core.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from neogen.classify import Classifier
from neogen.labels import LabelCodec
from neogen.models import cast_for_inference
from neogen.prompt import PromptEncoder

from .common import data_path, load, non_embedding_parameters, prepare_like_neogen, read_trec

T = TypeVar("T")

LEFT_OUT = ("attention score and value matmuls (QK^T, AV), the LM-head row at each prompt's last position, "
            "padding tokens, norms/activations/softmax")


# ---------------------------------------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float, float]:
    """fn()'s result, its wall time and this process's CPU time (all threads), in seconds."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    sync(device)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def matmul_peak(dtype: torch.dtype, size: int, reps: int, device: torch.device) -> dict[str, float]:
    """FLOP/s of a size x size matmul in `dtype`: best and mean over `reps` after one warm-up."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    flop = 2.0 * size**3
    with torch.inference_mode():
        torch.mm(a, b)
        rates = [flop / timed(lambda: torch.mm(a, b), device)[1] for _ in range(reps)]
    return {"best": max(rates), "mean": float(np.mean(rates))}


Shape = tuple[int, int, int, bool]


def linear_shapes(model: Any, run: Callable[[], Any],
                  device: torch.device) -> tuple[Counter[Shape], dict[Shape, float], float]:
    """During run(): how often each (M, K, N, bias) shape of the model's linear layers ran, the wall seconds spent
    inside those calls per shape, and run()'s own wall seconds. M counts every token in the batch (padding too), K
    and N are the layer's in and out features. The LM head is left out, as in the FLOP count."""
    shapes: Counter[Shape] = Counter()
    seconds: dict[Shape, float] = {}
    started: dict[int, float] = {}
    head = model.get_output_embeddings()

    def start(module: torch.nn.Linear, _: Any) -> None:
        """The clock before a linear layer's call."""
        sync(device)
        started[id(module)] = time.perf_counter()

    def record(module: torch.nn.Linear, inputs: tuple[torch.Tensor, ...], _: Any) -> None:
        """The call's shape and its seconds."""
        sync(device)
        x = inputs[0]
        shape = (x.numel() // x.shape[-1], module.in_features, module.out_features, module.bias is not None)
        shapes[shape] += 1
        seconds[shape] = seconds.get(shape, 0.0) + time.perf_counter() - started[id(module)]

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    hooks = [m.register_forward_pre_hook(start) for m in linears] + [m.register_forward_hook(record) for m in linears]
    try:
        _, wall, _ = timed(run, device)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes, seconds, wall


def linear_ceiling(shapes: Counter[Shape], dtype: torch.dtype, reps: int,
                   device: torch.device) -> dict[str, float]:
    """The model's own matmuls timed alone: each recorded shape as one F.linear on random tensors, best of `reps`
    after a warm-up, summed over the shapes' counts. Their FLOP/s is the rate these small, thin matmuls reach on
    this machine, the ceiling for a pass made of them; the square matmul's peak is out of their reach."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    seconds = flop = 0.0
    with torch.inference_mode():
        for (m, k, n, bias), count in shapes.items():
            x = torch.randn(m, k, generator=generator).to(device, dtype)
            w = torch.randn(n, k, generator=generator).to(device, dtype)
            b = torch.randn(n, generator=generator).to(device, dtype) if bias else None
            F.linear(x, w, b)
            seconds += count * min(timed(lambda x=x, w=w, b=b: F.linear(x, w, b), device)[1] for _ in range(reps))
            flop += count * 2.0 * m * k * n
    return {"seconds": seconds, "flop": flop, "flops": flop / seconds}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context neogen uses for fp32 weights: bf16 autocast, or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------------- methods

def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) input ids and attention mask, padding on the left (what `generate` expects of decoder-only models)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def generate_scores(model: Any, ids: torch.Tensor, mask: torch.Tensor, label_ids: torch.Tensor,
                    pad_id: int) -> np.ndarray:
    """(B, K) class scores from one greedy generated token: softmax over the label tokens' log-probabilities."""
    out = model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=pad_id)
    logprobs = torch.log_softmax(out.scores[0].float(), dim=-1)[:, label_ids]  # (B, K)
    return torch.softmax(logprobs, dim=-1).cpu().double().numpy()


def score_one_by_one(model: Any, prompts: list[list[int]], label_ids: torch.Tensor, pad_id: int,
                     precision: str) -> np.ndarray:
    """Method (b): `generate` on one prompt at a time."""
    device = label_ids.device
    rows = []
    with torch.inference_mode(), autocast(precision, device):
        for prompt in prompts:
            ids = torch.tensor([prompt], dtype=torch.long, device=device)
            rows.append(generate_scores(model, ids, torch.ones_like(ids), label_ids, pad_id))
    return np.concatenate(rows)


def score_batched(model: Any, prompts: list[list[int]], label_ids: torch.Tensor, pad_id: int, precision: str,
                  batch_size: int, sort: bool = False) -> np.ndarray:
    """Method (c): `generate` on left-padded batches, in input order (or longest first with `sort`)."""
    device = label_ids.device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i])) if sort else list(range(len(prompts)))
    probs = np.zeros((len(prompts), len(label_ids)), dtype=np.float64)
    with torch.inference_mode(), autocast(precision, device):
        for start in range(0, len(order), batch_size):
            batch = order[start: start + batch_size]
            ids, mask = pad_left([prompts[i] for i in batch], pad_id)
            probs[batch] = generate_scores(model, ids.to(device), mask.to(device), label_ids, pad_id)
    return probs


# ---------------------------------------------------------------------------------------------------------- report

def agreement(results: dict[str, np.ndarray], tolerance: float) -> dict[str, Any]:
    """Label agreement of every method with every other, and the largest absolute score differences."""
    names = list(results)
    labels = {name: probs.argmax(axis=1) for name, probs in results.items()}
    same = np.all([labels[n] == labels[names[0]] for n in names], axis=0)
    diffs = {f"{a}-{b}": float(np.abs(results[a] - results[b]).max())
             for i, a in enumerate(names) for b in names[i + 1:]}
    max_diff = max(diffs.values()) if diffs else 0.0
    return {"n": len(same), "labels_identical": int(same.sum()), "max_abs_diff": diffs, "tolerance": tolerance,
            "pass": bool(same.all() and max_diff <= tolerance)}


def methods_for(model: Any, tokenizer: Any, texts: list[str], gold: list[str], p: SimpleNamespace,
                device: torch.device) -> tuple[Classifier, dict[str, Callable[..., np.ndarray]], list[list[int]], Any]:
    """neogen's classifier and the three methods' callables on the same prompt ids, and the label codec.

    neogen's copy of the model is prepared as `load_model` and `Classifier.load` prepare it; in bf16 its linear
    weights are cast once, as Classifier.load does for `classify()` and `neogen score`.
    """
    codec = LabelCodec.fit(gold, tokenizer)  # every coarse class in the file, however few rows are scored
    prompts = PromptEncoder(tokenizer, p.max_length, codec.separator)(texts)
    label_ids = torch.tensor(codec.token_ids, dtype=torch.long, device=device)
    pad_id = tokenizer.pad_token_id
    neogen_model = prepare_like_neogen(copy.deepcopy(model), p.precision)
    if p.generate_weights == "cast":
        cast_for_inference(model, p.precision)
    classifier = Classifier(neogen_model, tokenizer, codec, max_length=p.max_length, precision=p.precision,
                            batch_size=p.batch_size)
    assert classifier.encoder(texts) == prompts
    methods: dict[str, Callable[..., np.ndarray]] = {"neogen": lambda ids, t: classifier.predict_proba(t).probs}
    if not p.skip_naive:
        methods["naive"] = lambda ids, t: score_one_by_one(model, ids, label_ids, pad_id, p.precision)
    methods["batched"] = lambda ids, t: score_batched(model, ids, label_ids, pad_id, p.precision, p.batch_size,
                                                      sort=p.generate_order == "sorted")
    return classifier, methods, prompts, codec


def time_methods(methods: dict[str, Callable[..., np.ndarray]], prompts: list[list[int]], texts: list[str],
                 p: SimpleNamespace, tokenizer: Any,
                 device: torch.device) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Each method warmed up, then timed `repeats` times on all texts (the fastest run counts)."""
    warm = min(p.warmup, len(texts))
    results: dict[str, np.ndarray] = {}
    timing: dict[str, dict[str, Any]] = {}
    tokenizer.padding_side = "left"  # for (b)/(c) as a generate user would set it; the padding itself is by hand
    try:
        for name, fn in methods.items():
            fn(prompts[:warm], texts[:warm])
            runs = [timed(lambda fn=fn: fn(prompts, texts), device) for _ in range(max(1, p.repeats))]
            results[name], wall, cpu = min(runs, key=lambda run: run[1])
            timing[name] = {"wall_s": wall, "cpu_s": cpu, "examples_per_s": len(texts) / wall,
                            "runs_wall_s": [run[1] for run in runs]}
    finally:
        tokenizer.padding_side = "right"
    for name in timing:
        timing[name]["neogen_speedup"] = timing["neogen"]["examples_per_s"] / timing[name]["examples_per_s"]
    return results, timing


def flop_figures(model: Any, classifier: Classifier, texts: list[str], tokens: int, neogen_wall: float,
                 p: SimpleNamespace, device: torch.device) -> dict[str, Any]:
    """The matmul peak, neogen's achieved FLOP/s, and where the pass's time goes (its linear layers timed in place
    during one more, hooked pass, and each of their shapes timed alone)."""
    dtype = torch.bfloat16 if p.precision == "bf16" else torch.float32
    peak = matmul_peak(dtype, p.peak_size, p.peak_reps, device)
    params = non_embedding_parameters(model)
    achieved = 2.0 * params * tokens / neogen_wall
    shapes, in_pass, hooked_wall = linear_shapes(classifier.model, lambda: classifier.predict_proba(texts), device)
    ceiling = linear_ceiling(shapes, dtype, p.peak_reps, device)
    linear_flop, in_pass_seconds = ceiling["flop"], sum(in_pass.values())
    head = model.get_output_embeddings().weight
    head_flop = 2.0 * head.shape[0] * head.shape[1] * len(texts)
    return {"non_embedding_parameters": params, "peak_flops": peak["best"], "peak_flops_mean": peak["mean"],
            "peak_matmul": f"{p.peak_size}x{p.peak_size} {p.precision}",
            "neogen_achieved_flops": achieved, "share_of_peak": achieved / peak["best"],
            "left_out": LEFT_OUT, "lm_head_flop_left_out": head_flop,
            "lm_head_share_of_counted": head_flop / (2.0 * params * tokens),
            "linear_shapes": len(shapes), "linear_calls": sum(shapes.values()),
            "linear_flops_alone": ceiling["flops"], "linear_share_of_peak": ceiling["flops"] / peak["best"],
            "neogen_share_of_linear_ceiling": achieved / ceiling["flops"],
            "linear_seconds_alone": ceiling["seconds"], "linear_share_of_wall": ceiling["seconds"] / neogen_wall,
            "hooked_pass_wall_s": hooked_wall, "linear_seconds_in_pass": in_pass_seconds,
            "linear_share_of_pass": in_pass_seconds / hooked_wall,
            "linear_flops_in_pass": linear_flop / in_pass_seconds,
            "linear_in_pass_share_of_peak": linear_flop / in_pass_seconds / peak["best"]}


def run(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The `scoring` experiment: the three methods timed and compared on the same texts; figures as a dict."""
    p = SimpleNamespace(**params)
    if p.threads:
        torch.set_num_threads(p.threads)
    device = torch.device(p.device) if p.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    texts, gold = read_trec(data_path(p.data))
    texts = texts[: p.rows]
    model, tokenizer = load(p.model, device)
    classifier, methods, prompts, codec = methods_for(model, tokenizer, texts, gold, p, device)
    results, timing = time_methods(methods, prompts, texts, p, tokenizer, device)
    tokens = sum(len(ids) for ids in prompts)
    lengths = [len(ids) for ids in prompts]
    figures: dict[str, Any] = {
        "device": str(device), "threads": torch.get_num_threads(), "rows": len(texts),
        "neogen_weights": "bf16 linear weights, cast once" if p.precision == "bf16" else "fp32",
        "generate_weights": ("fp32" if p.precision == "fp32" else "bf16 autocast over fp32"
                             if p.generate_weights == "autocast" else "bf16 linear weights, cast once"),
        "labels": codec.labels, "completions": codec.completions,
        "prompt_tokens": {"total": tokens, "mean": tokens / len(texts), "max": max(lengths), "min": min(lengths)},
        "methods": timing, "agreement": agreement(results, p.tolerance),
        "flops": flop_figures(model, classifier, texts, tokens, timing["neogen"]["wall_s"], p, device)}
    print_report(figures, params)
    return figures


def print_report(figures: dict[str, Any], params: dict[str, Any]) -> None:
    """The table and the lines around it."""
    t, f, a = (figures[k] for k in ("prompt_tokens", "flops", "agreement"))
    titles = {"neogen": "(a) neogen predict_proba", "naive": "(b) generate, one text at a time",
              "batched": f"(c) generate, batches of {params['batch_size']}, left pad"}
    print(f"\nmodel: {params['model']} ({f['non_embedding_parameters'] / 1e6:.1f}M non-embedding parameters), "
          f"precision {params['precision']}, batch {params['batch_size']}, max_length {params['max_length']}, "
          f"device {figures['device']}, threads {figures['threads']}")
    labels = ", ".join(f"{lab}={comp!r}" for lab, comp in zip(figures["labels"], figures["completions"], strict=True))
    print(f"data: {figures['rows']} questions, {len(figures['labels'])} labels ({labels}); prompt tokens "
          f"{t['total']:,} (mean {t['mean']:.1f}, min {t['min']}, max {t['max']})\n")
    print(f"{'method':<40}{'examples/s':>12}{'wall s':>10}{'cpu s':>10}{'(a)/this':>10}")
    for name, row in figures["methods"].items():
        print(f"{titles[name]:<40}{row['examples_per_s']:>12.1f}{row['wall_s']:>10.2f}{row['cpu_s']:>10.2f}"
              f"{row['neogen_speedup']:>9.2f}x")
    diffs = ", ".join(f"{pair} {d:.2e}" for pair, d in a["max_abs_diff"].items())
    print(f"\nagreement: labels identical across {'/'.join(figures['methods'])} for {a['labels_identical']}/"
          f"{a['n']}; max |score diff| {diffs} -> {'PASS' if a['pass'] else 'FAIL'} (tolerance {a['tolerance']:g})")
    if params["precision"] == "bf16":
        print("  (bf16 logits carry about 3 significant digits, so score differences near 1e-3 are rounding, not "
              "a different computation; identical labels are the check that matters)")
    print(f"matmul peak ({f['peak_matmul']}): {f['peak_flops'] / 1e9:.1f} GFLOP/s "
          f"(mean {f['peak_flops_mean'] / 1e9:.1f})")
    print(f"neogen achieved: 2 x {f['non_embedding_parameters'] / 1e6:.1f}M params x {t['total']:,} prompt tokens / "
          f"{figures['methods']['neogen']['wall_s']:.2f} s = {f['neogen_achieved_flops'] / 1e9:.1f} GFLOP/s "
          f"= {100 * f['share_of_peak']:.1f}% of peak")
    print(f"the count leaves out: {f['left_out']} (the LM-head rows alone would add "
          f"{100 * f['lm_head_share_of_counted']:.1f}%)")
    print(f"the pass's own linear layers ({f['linear_shapes']} shapes), each timed alone: "
          f"{f['linear_flops_alone'] / 1e9:.1f} GFLOP/s = {100 * f['linear_share_of_peak']:.1f}% of the square peak; "
          f"neogen reaches {100 * f['neogen_share_of_linear_ceiling']:.1f}% of that rate, and those matmuls alone take "
          f"{f['linear_seconds_alone']:.2f} s = {100 * f['linear_share_of_wall']:.1f}% of its wall time")
    print(f"the same matmuls timed in place (one more, hooked pass of {f['hooked_pass_wall_s']:.2f} s): "
          f"{f['linear_seconds_in_pass']:.2f} s = {100 * f['linear_share_of_pass']:.1f}% of that pass, at "
          f"{f['linear_flops_in_pass'] / 1e9:.1f} GFLOP/s = {100 * f['linear_in_pass_share_of_peak']:.1f}% of the "
          f"square peak; everything else (attention, norms, activations, Python) takes the rest")
