"""Every named experiment, in one place: what it measures, the function that measures it, and its default parameters.

`python -m bench run NAME [key=value ...]` runs one; a parameter not given keeps the default here, and only the
parameters that differ from these defaults appear in the result's file name. `fixed` parameters belong to the
experiment's identity (the data set and method of a quality experiment) and cannot be changed from the command
line. Experiments that train through a neogen recipe also take recipe overrides as dotted keys (`train.lr=5e-4`),
passed to the recipe verbatim. The `table` names the generated table of bench/README.md that shows the results.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .common import RANDOM_NEO

TREC = "trec/train_5500.label"
STUDENT = "student_questions/subjects-questions-subset.csv"
STUDENT_RECIPE = "recipes/smollm2-135m-student-questions.yaml"


@dataclass(frozen=True)
class Experiment:
    """A named measurement: `target` ("module:function") is called as function(params, seed) -> figures."""

    name: str
    measures: str
    target: str
    table: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    recipe_overrides: bool = False
    # "module:function" that fixes machine-dependent parameters (precision: auto) before the run is named.
    resolve: str | None = None

    def function(self, target: str | None = None) -> Callable[..., Any]:
        """The measuring (or resolving) function, imported only when it is needed."""
        module, _, name = (target or self.target).partition(":")
        return getattr(importlib.import_module(f"bench.{module}"), name)


SCORING = {"model": "smollm2-135m", "data": TREC, "rows": 1000, "batch_size": 64, "max_length": 256,
           "precision": "fp32", "generate_weights": "autocast", "threads": None, "device": None, "skip_naive": False,
           "generate_order": "input", "warmup": 4, "repeats": 2, "peak_size": 4096, "peak_reps": 5,
           "tolerance": 1e-4}
VARIANTS = {"model": "smollm2-135m", "data": TREC, "rows": 1000, "batch_size": 64, "threads": 2}
TRAINING = {"model": "smollm2-135m", "data": STUDENT, "text_column": "eng", "label_column": "Subject", "rows": 400,
            "test_rows": 200, "epochs": 1.0, "batch_size": 8, "lr": 1e-3, "lora_r": 16, "max_length": 128,
            "precision": "auto", "methods": "neogen,tutorial"}
TRAINING_VARIANTS = {"model": "smollm2-135m", "data": STUDENT, "text_column": "eng", "label_column": "Subject",
                     "rows": 160, "max_length": 128, "precision": "auto"}
MULTILABEL = {"train_rows": 4000, "valid_rows": 500, "subset_rows": 1000, "speed_rows": 1000}
SERVE = {"model": "smollm2-135m", "data": TREC, "precision": "auto", "batch_size": 64, "max_length": 256,
         "max_wait_ms": 20.0, "max_batch_tokens": None}


def scoring_variants() -> list[Experiment]:
    """The scoring path's variants, each against the plain path in one process (bench/scoring_variants.py)."""
    return [
        Experiment("scoring-compile", "torch.compile(dynamic=True) against eager scoring: ex/s, compile time, "
                   "score difference", "scoring_variants:compile_", "scoring-variants",
                   VARIANTS | {"precision": "fp32"}),
        Experiment("scoring-precast", "bf16 autocast over fp32 weights against linear weights cast to bf16 once: "
                   "ex/s in batches and one text per call", "scoring_variants:precast", "scoring-variants",
                   VARIANTS | {"single": 100, "rounds": 2}),
        Experiment("scoring-fuse", "the model as from_pretrained gives it against tanh-GELU fused into one kernel",
                   "scoring_variants:fuse", "scoring-variants", VARIANTS | {"precision": "fp32", "rounds": 2}),
        Experiment("scoring-batching", "batch shapes: rows per batch, padded-token budgets, equal-length batches: "
                   "padding and ex/s", "scoring_variants:batching", "scoring-variants",
                   VARIANTS | {"precision": "fp32", "rounds": 2, "batch_sizes": "32,64,128",
                               "token_budgets": "1024,2048"}),
        Experiment("scoring-profile", "torch.profiler over one scoring pass: the ops by self CPU time",
                   "scoring_variants:profile", "scoring-variants", VARIANTS | {"precision": "fp32", "top": 15}),
    ]


def quality() -> list[Experiment]:
    """Quality per data set and method, on the same splits (bench/quality.py)."""
    experiments = []
    sets = {"student": ("student questions (4 subjects)", {}),
            "trec6": ("TREC-6 (6 coarse classes)", {"train.epochs": "1", "train.max_length": "96"}),
            "trec50": ("TREC-50 (50 fine classes)", {"train.epochs": "1", "train.max_length": "96"})}
    methods = {"neogen": "neogen train with the recipe", "head": "a LoRA + classification-head model "
               "(AutoModelForSequenceClassification) with the recipe's settings", "tfidf": "TF-IDF 1-2 grams + "
               "logistic regression"}
    for dataset, (title, recipe_defaults) in sets.items():
        for method, how in methods.items():
            defaults: dict[str, Any] = {"train_rows": None}
            if method != "tfidf":
                defaults |= {"recipe": STUDENT_RECIPE, "train.precision": "auto", **recipe_defaults}
            defaults |= {"head_lr": None} if method == "head" else {"label_words": None} if method == "neogen" else {}
            experiments.append(Experiment(
                f"quality-{dataset}-{method}", f"{title}: accuracy, macro-F1, ROC AUC, log loss, ECE of {how}",
                "quality:run", f"quality-{dataset}", defaults, {"dataset": dataset, "method": method},
                recipe_overrides=method != "tfidf", resolve=None if method == "tfidf" else "quality:resolve"))
    return experiments


def multilabel() -> list[Experiment]:
    """GoEmotions, 28 labels: neogen's three encodings and TF-IDF one-vs-rest (bench/multilabel.py)."""
    titles = {"tfidf": "TF-IDF + one-vs-rest logistic regression", "independent": "neogen, encoding independent",
              "powerset": "neogen, encoding powerset", "yes_no": "neogen, encoding yes_no"}
    return [Experiment(f"multilabel-{method}", f"GoEmotions: micro/macro/samples-F1, ROC AUC, training and scoring "
                       f"speed of {title}", "multilabel:run", "multilabel", dict(MULTILABEL), {"method": method},
                       recipe_overrides=method != "tfidf") for method, title in titles.items()]


def build() -> dict[str, Experiment]:
    """The registry, by name."""
    experiments = [
        Experiment("scoring", "scoring speed: neogen's constrained scoring against generate(max_new_tokens=1), one "
                   "at a time and batched; share of the matmul peak; agreement of the scores", "scoring:run",
                   "scoring", SCORING),
        *scoring_variants(),
        Experiment("score-memory", "neogen score's peak resident memory against the number of input lines, each "
                   "size in its own process", "score_memory:run", "score-memory",
                   {"model": "smollm2-135m", "data": TREC, "lines": "1000,4000,16000", "precision": "bf16",
                    "batch_size": 64, "threads": 2}),
        Experiment("score-memory-long-lines", "peak resident memory of `neogen score` on a file of very long lines "
                   "against the same number of short lines (tiny random GPT-Neo run)", "score_memory:long_lines",
                   "long-lines", {"lines": 20, "line_mb": 20.0, "max_length": 64, "threads": 2}),
        Experiment("training", "training speed, peak memory and test accuracy: neogen's training against the "
                   "causal-LM tutorial's Trainer recipe, each in its own process", "training:run", "training",
                   TRAINING, resolve="training:resolve"),
        Experiment("training-variants", "neogen's training step with and without each speed measure (weights cast "
                   "once, eager attention): ex/s and final loss", "training_variants:run", "training-variants",
                   TRAINING_VARIANTS | {"rounds": 2}, resolve="training:resolve"),
        Experiment("training-profile", "torch.profiler over neogen's training without its speed measures: the ops by "
                   "self CPU time", "training_variants:profile", "training-variants",
                   TRAINING_VARIANTS | {"top": 15}, resolve="training:resolve"),
        *quality(),
        Experiment("tfidf-baseline", "TF-IDF + logistic regression on any CSV, on the split neogen would use",
                   "quality:tfidf_csv", "tfidf-baseline",
                   {"data": STUDENT, "text_column": "eng", "label_column": "Subject", "test_ratio": 0.2,
                    "shuffle": False}),
        *multilabel(),
        Experiment("many-labels", "what the number of labels K costs: codec fit, single-label, independent and "
                   "yes_no scoring speed, peak memory", "many_labels:run", "many-labels",
                   {"model": RANDOM_NEO, "data": TREC, "labels": "6,50,300,1000", "rows": 500, "yes_no_rows": 32,
                    "batch_size": 64, "max_length": 96, "precision": "fp32", "threads": None,
                    "yes_no_cache_tokens": None}),
        Experiment("serve-load", "neogen serve's throughput and p50/p99 latency at 1, 8 and 64 concurrent clients "
                   "(loopback), against offline predict_proba on the same texts in the same run", "serve_load:run",
                   "serve", SERVE | {"rows": 512, "clients": "1,8,64", "max_seconds": 120.0, "repeats": 2},
                   resolve="training:resolve"),
        Experiment("serve-page", "headless Chromium opens neogen serve's form with a text: the page must draw the "
                   "label and the bars /v1/classify gives; a screenshot to look at", "serve_load:page_check", "serve",
                   SERVE | {"text": "What is the capital of Australia?",
                            "screenshot": "/tmp/neogen-serve-page.png"}, resolve="training:resolve"),
        Experiment("quantized", "neogen train + neogen score with bf16, 8-bit or 4-bit base weights through the CLI "
                   "(CUDA): times and peak device memory", "quantized:run", "gpu",
                   {"model": RANDOM_NEO, "quantization": None, "data": STUDENT, "train_rows": None, "epochs": 1.0,
                    "score_data": TREC, "score_lines": 5000, "train_timeout": 90, "score_timeout": 60}),
    ]
    return {experiment.name: experiment for experiment in experiments}


EXPERIMENTS = build()
