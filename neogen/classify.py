"""Inference: constrained one-token greedy decoding over the label tokens.

The next-token logits after the separator, restricted to the label tokens, are the class scores (softmax); their
argmax is the label. One forward pass per batch; prompts are sorted by length so batches carry little padding,
and results are put back in the caller's order. The same path serves `classify()`, `neogen score` and
`neogen eval`, so the three agree.

Multi-label runs give per-label probabilities instead (neogen.multilabel, by the run's encoding), and the run's
tuned thresholds turn them into a set of labels per text.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from tqdm.auto import tqdm

from neogen.calibration import Temperature
from neogen.errors import ModelRefusedError, NeogenError
from neogen.forward import pad_right
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec
from neogen.prompt import PromptEncoder
from neogen.read import Example
from neogen.run import Run
from neogen.tasks import task_for
from neogen.thresholds import Thresholds

logger = logging.getLogger(__name__)


@dataclass
class ScoreBatch:
    """Scores of N texts over K labels."""

    probs: np.ndarray  # (N, K) softmax over the label tokens' logits (rows sum to 1); multi-label: per label
    label_mass: np.ndarray | None  # (N,) probability the unconstrained model gives to any label token


class Classifier:
    """A fine-tuned causal LM and its label codec, answering with one label token per text."""

    def __init__(self, model: Any, tokenizer: Any, codec: LabelCodec | MultiLabelCodec, max_length: int = 256,
                 precision: str = "fp32", batch_size: int = 32, max_batch_tokens: int | None = None,
                 thresholds: Thresholds | None = None, calibration: Temperature | None = None,
                 run: Run | None = None) -> None:
        self.model = model.eval()
        self.run = run  # the run it was loaded from: scoring fingerprints it for --resume
        self.tokenizer = tokenizer
        self.codec = codec
        self.task = task_for(codec)  # what an answer is: its probabilities, decision and evaluation
        # Multi-label decisions; without tuned ones, 0.5 (and a label for every text unless empty sets are allowed).
        self.thresholds = thresholds if thresholds is not None else self.task.untuned_thresholds()
        self.calibration = calibration  # single-label: a fitted temperature applied to every score
        self.encoder = PromptEncoder(tokenizer, max_length, codec.separator)
        self.precision = precision
        problems = [f"{name} must be at least 1, got {value}" for name, value in
                    (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens))
                    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1)]
        if problems:
            raise NeogenError("; ".join(problems) + " (fix: e.g. batch_size=32, max_batch_tokens=8192)")
        self.batch_size = batch_size
        # An optional cap on padded tokens per batch (rows x longest prompt), for long prompts whose batches of
        # batch_size rows would not fit in memory: eager attention alone holds rows x heads x T x T scores.
        self.max_batch_tokens = max_batch_tokens
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, run_dir: str | Path, adapter: str = "adapter", device: str | None = None,
             precision: str | None = None, batch_size: int | None = None, max_batch_tokens: int | None = None,
             merge: bool = True) -> Classifier:
        """Load a run directory (`~` expanded): base model + LoRA adapter (merged for speed), tokenizer and label codec.

        `batch_size` (default: the recipe's eval_batch_size) caps the texts per forward pass and `max_batch_tokens`
        (default: none) the padded tokens per pass; a prompt longer than the budget is scored alone.

        A missing or unreadable part of the run raises NeogenError naming the file and the fix, before the model loads.
        """
        from peft import PeftModel, prepare_model_for_kbit_training

        from neogen.export import is_export, load_export
        from neogen.models import cast_for_inference, load_model, load_tokenizer, resolve_precision

        run_dir = Path(run_dir).expanduser()
        if is_export(run_dir):  # a folder `neogen export` wrote, in any of its formats
            return load_export(run_dir, device, precision, batch_size, max_batch_tokens)
        run = Run(run_dir)
        adapter_dir = run.check(adapter)
        recipe = run.recipe()
        tokenizer = load_tokenizer(recipe.model.name)
        codec = run.codec(tokenizer)
        task = task_for(codec)
        # Deleted, or a run stopped before tuning: the recipe's rule, as training applies it.
        thresholds = run.thresholds(codec.labels, task.multi_label) or task.untuned_thresholds(recipe)
        calibration = run.calibration()
        dev = torch.device(device) if device else None
        model = load_model(recipe.model.name, recipe.model.dtype, recipe.model.quantization, dev)
        if recipe.model.quantization:
            # As training prepared it: the non-quantized weights (embeddings, norms, LM head) in fp32. The adapter
            # was trained and evaluated on that model, not on one with those weights in bf16.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir))  # a str: peft takes a Path for a Hub repo id
        except pickle.UnpicklingError as e:  # torch's weights-only loader met a pickled object it will not run
            raise ModelRefusedError(f"{adapter_dir}: the adapter's pickled weights hold objects torch refuses to "
                                    f"load safely ({str(e).splitlines()[0][:200]}) (fix: load it only if you trust "
                                    "its source, and re-save it as adapter_model.safetensors)") from None
        precision = resolve_precision(precision or recipe.train.precision, next(model.parameters()).device)
        if merge and not recipe.model.quantization:
            model = model.merge_and_unload()  # plain weights: no LoRA matmuls at inference
            cast_for_inference(model, precision)
        return cls(model, tokenizer, codec, max_length=recipe.train.max_length, precision=precision,
                   batch_size=batch_size or recipe.train.eval_batch_size, max_batch_tokens=max_batch_tokens,
                   thresholds=thresholds, calibration=calibration, run=run)

    @property
    def labels(self) -> list[str]:
        return self.codec.labels

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indexes grouped into batches of similar length, longest first, within batch_size (and the token budget)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            last = batches[-1] if batches else []
            # Rows come longest first, so a batch's padded size is its first row's length times its rows.
            fits = 0 < len(last) < self.batch_size and (
                self.max_batch_tokens is None or (len(last) + 1) * lengths[last[0]] <= self.max_batch_tokens)
            if fits:
                last.append(i)
            else:
                batches.append([i])
        return batches

    def _autocast(self) -> contextlib.AbstractContextManager:
        # Any fp32 weight left (embeddings, norms; all of them before cast_for_inference) computes in low precision.
        if self.precision in ("bf16", "fp16") and any(p.dtype == torch.float32 for p in self.model.parameters()):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    def predict_proba(self, texts: str | Iterable[str], progress: bool = False) -> ScoreBatch:
        """Class probabilities and label-token mass for a list of texts, in their order (one text: one row)."""
        batch = self.predict_prompts(self.encoder(_as_texts(texts)), progress)
        return ScoreBatch(self.task.calibrated(batch.probs, self.calibration), batch.label_mass)

    @torch.inference_mode()
    def predict_prompts(self, prompts: list[list[int]], progress: bool = False) -> ScoreBatch:
        """The model's own scores (before any calibration) of prompts already tokenized by `self.encoder`."""
        probs = np.zeros((len(prompts), len(self.codec)), dtype=np.float64)
        mass: np.ndarray | None = np.zeros(len(prompts), dtype=np.float64)
        batches = self._batches([len(p) for p in prompts])
        with self._autocast(), tqdm(total=len(prompts), disable=not progress, unit="text") as bar:
            for batch in batches:
                ids, mask = pad_right([prompts[i] for i in batch], self.tokenizer.pad_token_id)
                batch_probs, batch_mass = self.task.probabilities(self.model, ids.to(self.device),
                                                                  mask.to(self.device))
                probs[batch] = batch_probs.cpu().double().numpy()
                if batch_mass is None:
                    mass = None
                elif mass is not None:
                    mass[batch] = batch_mass.cpu().double().numpy()
                bar.update(len(batch))
        return ScoreBatch(probs, mass)

    @overload
    def classify(self, texts: str) -> str | list[str]: ...
    @overload
    def classify(self, texts: list[str]) -> list[str] | list[list[str]]: ...

    def classify(self, texts: str | list[str]) -> str | list[str] | list[list[str]]:
        """The label of one text, or the labels of a list of texts (same shape as the input).

        Multi-label runs answer with a sorted list of labels per text instead of one label.
        """
        single = isinstance(texts, str)
        labels = self.task.answers(self.predict_proba([texts] if single else texts).probs, self.thresholds)
        return labels[0] if single else labels

    def scores(self, texts: str | list[str]) -> dict[str, Any] | list[dict[str, Any]]:
        """Per text: the label(s), the probability of every label, and the label-token mass of the free model."""
        single = isinstance(texts, str)
        batch = self.predict_proba([texts] if single else texts)
        masses = [None] * len(batch.probs) if batch.label_mass is None else batch.label_mass
        rows = [self.result(p, m) for p, m in zip(batch.probs, masses, strict=True)]
        return rows[0] if single else rows

    def result(self, probs: np.ndarray, mass: float | None) -> dict[str, Any]:
        """One text's answer from its row of probabilities and its label mass (the shape `neogen score` writes)."""
        return self.task.result(probs, mass, self.thresholds)

    def set_decision(self, decision: Temperature | Thresholds) -> None:
        """Use a fitted decision from now on: a softmax temperature, or multi-label thresholds."""
        if isinstance(decision, Temperature):
            self.calibration = decision
        else:
            self.thresholds = decision

    def evaluate(self, examples: list[Example], out_dir: Path, extra: dict[str, Any],
                 probs: np.ndarray | None = None) -> dict[str, Any]:
        """Score labeled examples (unless their `probs` are given) and write metrics.json and plots to out_dir.

        The one evaluation path: `neogen eval` and the evaluation after training both come here.
        """
        if probs is None:
            probs = self.predict_proba([ex.text for ex in examples], progress=True).probs
        return self.task.evaluate(out_dir, examples, probs, self.thresholds, extra)


def _as_texts(texts: str | Iterable[str]) -> list[str]:
    """The texts as a list, checked up front: a NeogenError names the first one a tokenizer would choke on.

    One isinstance pass; only non-ASCII texts (an O(1) flag in CPython) are encoded, to find lone surrogates.
    """
    if isinstance(texts, str):
        texts = [texts]
    elif texts is None or isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise NeogenError(f"texts is {type(texts).__name__}, not a str or a list of str (fix: pass one text or a list "
                          "of texts)")
    else:
        texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise NeogenError(_not_a_text(i, text))
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise NeogenError(f"texts[{i}] holds a lone surrogate {text[e.start]!r} at character {e.start}, which "
                                  "is not valid Unicode (fix: repair the text where it was decoded, or replace it: "
                                  "text.encode('utf-8', 'replace').decode())") from None
    return texts


def _not_a_text(i: int, value: Any) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if isinstance(value, (bytes, bytearray)):
        fix = "decode it first, e.g. value.decode('utf-8')"
    elif value is None or (isinstance(value, float) and value != value):
        fix = "drop or fill missing texts first, e.g. df['text'].fillna('') in pandas"
    else:
        fix = "convert it with str() or drop it"
    return f"texts[{i}] is {type(value).__name__} ({shown}), not str (fix: {fix})"


@lru_cache(maxsize=4)
def _cached(run_dir: str) -> Classifier:
    return Classifier.load(run_dir)


@overload
def classify(texts: str, model: str | Path) -> str: ...
@overload
def classify(texts: list[str], model: str | Path) -> list[str]: ...


def classify(texts: str | list[str], model: str | Path) -> str | list[str] | list[list[str]]:
    """Classify with a trained run directory; the loaded classifier is kept for the next call."""
    return _cached(str(Path(model).expanduser().resolve())).classify(texts)
