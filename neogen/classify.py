"""Inference: constrained one-token greedy decoding over the label tokens.

The next-token logits after the separator, restricted to the label tokens, are the class scores (softmax); their
argmax is the label. One forward pass per batch; prompts are sorted by length so batches carry little padding,
and results are put back in the caller's order. The same path serves `classify()`, `neogen score` and
`neogen eval`, so the three agree.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from tqdm.auto import tqdm

from neogen.forward import next_token_logits, pad_right
from neogen.labels import LabelCodec
from neogen.prompt import PromptEncoder

logger = logging.getLogger(__name__)


@dataclass
class ScoreBatch:
    """Scores of N texts over K labels."""

    probs: np.ndarray  # (N, K) softmax over the label tokens' logits; rows sum to 1
    label_mass: np.ndarray  # (N,) probability the unconstrained model gives to any label token


class Classifier:
    """A fine-tuned causal LM and its label codec, answering with one label token per text."""

    def __init__(self, model: Any, tokenizer: Any, codec: LabelCodec, max_length: int = 256,
                 precision: str = "fp32", batch_size: int = 32, max_batch_tokens: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.codec = codec
        self.encoder = PromptEncoder(tokenizer, max_length, codec.separator)
        self.precision = precision
        self.batch_size = batch_size
        # A token budget keeps batches of long prompts from using much more memory than batches of short ones.
        self.max_batch_tokens = max_batch_tokens or batch_size * max_length
        self.device = next(model.parameters()).device
        self._label_ids = torch.tensor(codec.token_ids, dtype=torch.long, device=self.device)

    @classmethod
    def load(cls, run_dir: str | Path, adapter: str = "adapter", device: str | None = None,
             precision: str | None = None, batch_size: int | None = None, merge: bool = True) -> Classifier:
        """Load a run directory: base model + LoRA adapter (merged for speed), tokenizer and label codec."""
        from peft import PeftModel

        from neogen.errors import NeogenError
        from neogen.models import load_model, load_tokenizer, resolve_precision
        from neogen.recipe import load_recipe
        from neogen.train import CODEC_FILE, RECIPE_FILE

        run_dir = Path(run_dir)
        for needed in (RECIPE_FILE, CODEC_FILE, f"{adapter}/adapter_config.json"):
            if not (run_dir / needed).exists():
                raise NeogenError(f"{run_dir} is not a complete neogen run: {needed} is missing")
        recipe = load_recipe(run_dir / RECIPE_FILE)
        tokenizer = load_tokenizer(recipe.model.name)
        codec = LabelCodec.load(run_dir / CODEC_FILE, tokenizer)
        dev = torch.device(device) if device else None
        model = load_model(recipe.model.name, recipe.model.dtype, recipe.model.quantization, dev)
        model = PeftModel.from_pretrained(model, run_dir / adapter)
        if merge and not recipe.model.quantization:
            model = model.merge_and_unload()  # plain weights: no LoRA matmuls at inference
        dev = next(model.parameters()).device
        return cls(model, tokenizer, codec, max_length=recipe.train.max_length,
                   precision=resolve_precision(precision or recipe.train.precision, dev),
                   batch_size=batch_size or recipe.train.eval_batch_size)

    @property
    def labels(self) -> list[str]:
        return self.codec.labels

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indexes grouped into batches of similar length, longest first, within the size and token budget."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < self.batch_size and \
                    (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= self.max_batch_tokens:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision in ("bf16", "fp16") and next(self.model.parameters()).dtype == torch.float32:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], progress: bool = False) -> ScoreBatch:
        """Class probabilities and label-token mass for a list of texts, in their order."""
        prompts = self.encoder(list(texts))
        probs = np.zeros((len(prompts), len(self.codec)), dtype=np.float64)
        mass = np.zeros(len(prompts), dtype=np.float64)
        batches = self._batches([len(p) for p in prompts])
        with self._autocast(), tqdm(total=len(prompts), disable=not progress, unit="text") as bar:
            for batch in batches:
                ids, mask = pad_right([prompts[i] for i in batch], self.tokenizer.pad_token_id)
                logits = next_token_logits(self.model, ids.to(self.device), mask.to(self.device))  # (B, V)
                label_logits = logits[:, self._label_ids]  # (B, K)
                probs[batch] = torch.softmax(label_logits, dim=-1).cpu().double().numpy()
                mass[batch] = torch.exp(torch.logsumexp(label_logits, -1) - torch.logsumexp(logits, -1)).cpu().numpy()
                bar.update(len(batch))
        return ScoreBatch(probs, mass)

    @overload
    def classify(self, texts: str) -> str: ...
    @overload
    def classify(self, texts: list[str]) -> list[str]: ...

    def classify(self, texts: str | list[str]) -> str | list[str]:
        """The label of one text, or the labels of a list of texts (same shape as the input)."""
        single = isinstance(texts, str)
        scores = self.predict_proba([texts] if single else texts)
        labels = [self.codec.labels[k] for k in scores.probs.argmax(axis=1)]
        return labels[0] if single else labels

    def scores(self, texts: str | list[str]) -> dict[str, Any] | list[dict[str, Any]]:
        """Per text: the label, the probability of every label, and the label-token mass of the free model."""
        single = isinstance(texts, str)
        batch = self.predict_proba([texts] if single else texts)
        rows = [self.result(p, m) for p, m in zip(batch.probs, batch.label_mass, strict=True)]
        return rows[0] if single else rows

    def result(self, probs: np.ndarray, mass: float) -> dict[str, Any]:
        """One text's answer from its row of probabilities and its label mass (the shape `neogen score` writes)."""
        return {"label": self.codec.labels[int(probs.argmax())],
                "scores": {lab: float(p) for lab, p in zip(self.codec.labels, probs, strict=True)},
                "label_mass": float(mass)}


@lru_cache(maxsize=4)
def _cached(run_dir: str) -> Classifier:
    return Classifier.load(run_dir)


@overload
def classify(texts: str, model: str | Path) -> str: ...
@overload
def classify(texts: list[str], model: str | Path) -> list[str]: ...


def classify(texts: str | list[str], model: str | Path) -> str | list[str]:
    """Classify with a trained run directory; the loaded classifier is kept for the next call."""
    return _cached(str(Path(model).resolve())).classify(texts)
