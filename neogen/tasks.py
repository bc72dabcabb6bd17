"""One task object per label encoding: what an answer is, how it is trained, scored, decided and evaluated.

  single       one label per text: softmax over the K label tokens after the separator, argmax decides
  powerset     each label set seen in training is one class with its own token; a label's probability is the
               summed probability of the sets holding it
  independent  each label token's logit is its own yes/no decision (sigmoid, binary cross-entropy)
  yes_no       each label's token is appended after the separator and the model answers " yes" or " no"; the
               text's key/value cache is computed once and shared by all labels

Training, the Classifier, class weights, the data report and `neogen eval` ask the task and never branch on the
encoding, so a new encoding is one class here plus its tests. A task holds the run's label codec; the decision
state it reads (a softmax temperature, multi-label thresholds) stays with the Classifier, which saves and loads it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from neogen.calibration import Temperature, fit_temperature
from neogen.errors import ConfigError, DataError
from neogen.forward import next_token_logits, suffix_logits
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec
from neogen.read import Example, load_examples
from neogen.thresholds import Thresholds, at_least_one_rule, tune_thresholds

Codec = LabelCodec | MultiLabelCodec
YES_NO_CACHE_TOKENS = 8192  # prompt tokens of key/value cache copied per yes_no suffix pass (rows x prompt length)


class Task:
    """The interface every encoding implements (the single-label task is the reference)."""

    name: ClassVar[str]
    multi_label: ClassVar[bool]
    summary_keys: ClassVar[tuple[str, ...]]

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.labels: list[str] = codec.labels
        self._token_ids = torch.tensor(codec.token_ids, dtype=torch.long)

    def token_ids(self, device: torch.device) -> torch.Tensor:
        if self._token_ids.device != device:
            self._token_ids = self._token_ids.to(device)
        return self._token_ids

    # --- data -----------------------------------------------------------------------------------------------
    def label_counts(self, examples: list[Example]) -> Counter:
        raise NotImplementedError

    def targets(self, examples: list[Example], training: bool) -> list[Any]:
        """What the loss compares with, per example."""
        raise NotImplementedError

    def truth(self, examples: list[Example]) -> np.ndarray:
        """What evaluation compares with: class indexes (N,) or 0/1 rows (N, L)."""
        raise NotImplementedError

    def completion_token_ids(self) -> list[int]:
        """Every token the classifier reads its answer from (the rows `lora.train_label_tokens` trains)."""
        return sorted(self.codec.token_ids)

    @property
    def classes(self) -> LabelCodec:
        """The codec of the completion tokens: of the labels, or of the label sets (powerset)."""
        return self.codec

    def label_set_report(self, splits: dict[str, list[Example]]) -> dict[str, Any] | None:
        """What the data report says of label sets (None for single-label data)."""
        return None

    def prepared_row(self, example: Example) -> dict[str, Any]:
        """The completion and label(s) of a prepared (prompt/completion JSONL) row."""
        return {"completion": self.codec.completions[self.codec.index(example.label)], "label": example.label}

    def class_weights(self, examples: list[Example], spec: str | dict[str, float]) -> torch.Tensor | None:
        raise NotImplementedError

    # --- model compute --------------------------------------------------------------------------------------
    def loss(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None, loss_over: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch loss and the outputs validation metrics read."""
        raise NotImplementedError

    def validation_metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def probabilities(self, model: Any, ids: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) prompts -> (B, K) probabilities and (B,) label-token mass (None where undefined)."""
        raise NotImplementedError

    # --- decisions ------------------------------------------------------------------------------------------
    def untuned_thresholds(self, recipe: Any | None = None) -> Thresholds | None:
        """The decision rule without tuned thresholds: none for single-label; else the recipe's rule (0.5 and
        at least one label per text unless empty sets are allowed, where no recipe is known)."""
        return None

    def calibrated(self, probs: np.ndarray, calibration: Temperature | None) -> np.ndarray:
        return probs

    def answers(self, probs: np.ndarray, thresholds: Thresholds | None) -> list[Any]:
        """Per row: the label (single-label) or the sorted list of labels."""
        raise NotImplementedError

    def result(self, probs: np.ndarray, mass: float | None, thresholds: Thresholds | None) -> dict[str, Any]:
        """One text's answer in the shape `neogen score` writes: label(s), scores, label_mass."""
        key = "labels" if self.multi_label else "label"
        out: dict[str, Any] = {key: self.answers(probs[None, :], thresholds)[0],
                               "scores": {lab: float(p) for lab, p in zip(self.labels, probs, strict=True)}}
        if mass is not None:
            out["label_mass"] = float(mass)
        return out

    def fit_decision(self, examples: list[Example], probs: np.ndarray | None, recipe: Any,
                     split: str) -> Temperature | Thresholds | None:
        """The decision fitted on labeled rows and the model's own scores of them (None: no rows to fit on):
        a softmax temperature (single-label) or multi-label thresholds, as the recipe asks."""
        raise NotImplementedError

    def decision_after_training(self, recipe: Any) -> tuple[bool, bool]:
        """Whether training saves a decision, and whether it is fitted on the validation split."""
        raise NotImplementedError

    def decision_summary(self, decision: Temperature | Thresholds) -> dict[str, Any]:
        """What results.json says of the fitted decision."""
        return {}

    def recipe_problems(self, recipe: Any) -> list[str]:
        """Settings that only the other kind of task reads, refused before anything loads."""
        return []

    def run_summary(self, recipe: Any) -> dict[str, Any]:
        """What results.json says of the task itself."""
        return {}

    # --- evaluation -----------------------------------------------------------------------------------------
    def read_labeled(self, path: str | Path, text_column: str | None, label_column: str | None,
                     label_separator: str | None) -> list[Example]:
        """A labeled file to evaluate on, read as training read its data, with the run's labels; a label the
        run does not know is a DataError naming its line."""
        raise NotImplementedError

    def evaluate(self, out_dir: Path, examples: list[Example], probs: np.ndarray, thresholds: Thresholds | None,
                 extra: dict[str, Any]) -> dict[str, Any]:
        """Write metrics.json and the plots of `examples` scored as `probs`; the metrics."""
        raise NotImplementedError

    def format(self, metrics: dict[str, Any]) -> str:
        raise NotImplementedError

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The headline metrics of a split, as results.json holds them."""
        return {k: metrics[k] for k in self.summary_keys}


class SingleLabelTask(Task):
    name = "single"
    multi_label = False
    summary_keys = ("n", "accuracy", "macro_f1", "roc_auc", "log_loss", "ece")

    def label_counts(self, examples: list[Example]) -> Counter:
        return Counter(ex.label for ex in examples)

    def targets(self, examples: list[Example], training: bool) -> list[Any]:
        return [self.codec.index(ex.label) for ex in examples]

    def truth(self, examples: list[Example]) -> np.ndarray:
        return np.array(self.targets(examples, training=False), dtype=np.int64)

    def class_weights(self, examples: list[Example], spec: str | dict[str, float]) -> torch.Tensor | None:
        if spec == "none":
            return None
        if isinstance(spec, dict):
            return _given_weights(spec, self.labels)
        counts, n, k = self.label_counts(examples), len(examples), len(self.labels)
        return torch.tensor([n / (k * counts[label]) for label in self.labels]).float()

    def loss(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None, loss_over: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = next_token_logits(model, ids, mask)  # (B, V)
        token_ids = self.token_ids(logits.device)
        label_logits = logits[:, token_ids]  # (B, K): what scoring reads, and the validation metrics
        if loss_over == "labels":
            # Only the K label logits compete, as when scoring: no gradient spent on the other tokens.
            losses = F.cross_entropy(label_logits, targets, reduction="none")  # (B,)
        else:
            losses = F.cross_entropy(logits, token_ids[targets], reduction="none")  # (B, V) vs label token ids
        return weighted_mean(losses, targets, weights), label_logits

    def validation_metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        logits = torch.as_tensor(outputs, dtype=torch.float32)  # (N, K)
        classes = torch.as_tensor(targets, dtype=torch.long)
        log_probs = torch.log_softmax(logits, dim=-1)
        return {"accuracy": float((logits.argmax(-1) == classes).float().mean()),
                "log_loss": float(-log_probs[torch.arange(len(classes)), classes].mean())}

    def probabilities(self, model: Any, ids: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = next_token_logits(model, ids, mask)  # (B, V)
        label_logits = logits[:, self.token_ids(logits.device)]  # (B, K)
        mass = torch.exp(torch.logsumexp(label_logits, -1) - torch.logsumexp(logits, -1))
        return torch.softmax(label_logits, dim=-1), mass

    def calibrated(self, probs: np.ndarray, calibration: Temperature | None) -> np.ndarray:
        return probs if calibration is None else calibration.apply(probs)

    def answers(self, probs: np.ndarray, thresholds: Thresholds | None) -> list[Any]:
        return [self.labels[k] for k in probs.argmax(axis=1)]

    decision_option = "--calibrate"
    decision_done = "temperature fitted"

    def fit_decision(self, examples: list[Example], probs: np.ndarray | None, recipe: Any,
                     split: str) -> Temperature | Thresholds | None:
        if probs is None:
            return None
        return fit_temperature(self.truth(examples), probs, split=split)

    def decision_after_training(self, recipe: Any) -> tuple[bool, bool]:
        return recipe.train.calibrate, recipe.train.calibrate

    def decision_summary(self, decision: Temperature | Thresholds) -> dict[str, Any]:
        return {"temperature": round(decision.temperature, 4)}

    def read_labeled(self, path: str | Path, text_column: str | None, label_column: str | None,
                     label_separator: str | None) -> list[Example]:
        examples, choice = load_examples(path, text_column, label_column, multi_label=False)
        out = []
        for ex in examples:
            try:  # OpenAI-style rows may carry only the completion, which may be an alias
                k = self._class_of(ex.label, choice.prompt_completion and ex.completion is None)
            except KeyError:
                raise DataError(ex.source, ex.line, f"label {ex.label!r} is not one of the run's labels "
                                f"{self.labels}", "evaluate on data with the trained labels") from None
            out.append(dataclasses.replace(ex, label=self.labels[k]))
        return out

    def _class_of(self, label: str, from_completion: bool) -> int:
        if from_completion:
            try:
                return self.codec.index_completion(label)
            except KeyError:
                pass  # a completion written as the label itself (" Maths" where the run's token is " Math")
        return self.codec.index(label)

    def evaluate(self, out_dir: Path, examples: list[Example], probs: np.ndarray, thresholds: Thresholds | None,
                 extra: dict[str, Any]) -> dict[str, Any]:
        from neogen.evaluate import write_evaluation

        return write_evaluation(out_dir, self.truth(examples), probs, self.labels, extra=extra)

    def format(self, metrics: dict[str, Any]) -> str:
        from neogen.evaluate import format_metrics

        return format_metrics(metrics)


class MultiLabelTask(Task):
    """The multi-label encodings: per-label probabilities (N, L), decided by thresholds."""

    multi_label = True
    summary_keys = ("n", "micro_f1", "macro_f1", "samples_f1", "roc_auc", "hamming_loss", "subset_accuracy")
    codec: MultiLabelCodec

    def label_counts(self, examples: list[Example]) -> Counter:
        return Counter(label for ex in examples for label in ex.labels)

    @property
    def classes(self) -> LabelCodec:
        return self.codec.classes

    def label_set_report(self, splits: dict[str, list[Example]]) -> dict[str, Any] | None:
        """The encoding, how many label sets, labels per row, and sets unseen in training."""
        train_sets = {ex.label for ex in splits.get("train", [])}
        out: dict[str, Any] = {"encoding": self.name, "distinct_in_train": len(train_sets)}
        for name, part in splits.items():
            if part:
                sizes = [len(ex.labels) for ex in part]
                out[name] = {"labels_per_row": round(sum(sizes) / len(sizes), 3),
                             "rows_without_label": sizes.count(0),
                             "rows_with_unseen_set": sum(ex.label not in train_sets for ex in part)}
        return out

    def prepared_row(self, example: Example) -> dict[str, Any]:
        """The label tokens in order (independent, yes_no), for reading only."""
        completion = "".join(self.classes.completions[self.classes.index(lab)] for lab in example.labels)
        return {"completion": completion, "labels": list(example.labels)}

    def targets(self, examples: list[Example], training: bool) -> list[Any]:
        return [self.codec.multi_hot(ex.labels) for ex in examples]

    def truth(self, examples: list[Example]) -> np.ndarray:
        return np.array([self.codec.multi_hot(ex.labels) for ex in examples], dtype=np.float64).reshape(
            len(examples), len(self.labels))

    def class_weights(self, examples: list[Example], spec: str | dict[str, float]) -> torch.Tensor | None:
        """(L,) positive weights: negatives / positives per label (BCE's pos_weight) for `balanced`."""
        if spec == "none":
            return None
        if isinstance(spec, dict):
            return _given_weights(spec, self.labels)
        positives, n = self.label_counts(examples), len(examples)
        # A label with no positive (or no negative) in training has nothing to balance: leave it at 1, not 0.
        return torch.tensor([(n - positives[lab]) / positives[lab] if 0 < positives[lab] < n else 1.0
                             for lab in self.labels]).float()

    def validation_metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        probs = torch.as_tensor(outputs, dtype=torch.float32)  # (N, L)
        y = torch.as_tensor(targets, dtype=torch.float32)
        predicted = probs >= 0.5
        tp = float((predicted & (y > 0)).sum())
        micro_f1 = 2 * tp / max(float(predicted.sum() + y.sum()), 1.0)
        return {"log_loss": float(F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), y)), "micro_f1@0.5": micro_f1}

    def untuned_thresholds(self, recipe: Any | None = None) -> Thresholds | None:
        if recipe is not None:
            return Thresholds.untuned(self.labels, recipe.multilabel, recipe.data.allow_empty)
        thresholds = Thresholds.default(self.labels, 0.5)
        thresholds.at_least_one = not self.codec.allow_empty
        return thresholds

    def answers(self, probs: np.ndarray, thresholds: Thresholds | None) -> list[Any]:
        assert thresholds is not None, "a multi-label classifier always has thresholds"
        return [[lab for lab, keep in zip(self.labels, row, strict=True) if keep] for row in thresholds.decide(probs)]

    decision_option = "--tune-thresholds"
    decision_done = "thresholds tuned"

    def decision_after_training(self, recipe: Any) -> tuple[bool, bool]:
        return True, recipe.multilabel.threshold in ("per_label", "shared")

    def recipe_problems(self, recipe: Any) -> list[str]:
        t, data, out = recipe.train, recipe.data, []
        if t.loss != "vocab":
            out.append(f"train.loss: '{t.loss}' is for single-label data; {data.train} holds label sets, whose loss "
                       "follows multilabel.encoding (leave train.loss at vocab)")
        if t.calibrate:
            out.append(f"train.calibrate: {data.train} holds label sets, whose decisions come from the thresholds "
                       "tuned on the validation split; leave train.calibrate at false")
        return out

    def run_summary(self, recipe: Any) -> dict[str, Any]:
        return {"encoding": self.name, "threshold": recipe.multilabel.threshold}

    def fit_decision(self, examples: list[Example], probs: np.ndarray | None, recipe: Any,
                     split: str) -> Temperature | Thresholds | None:
        """Thresholds tuned on the rows in the recipe's mode (a fixed multilabel.threshold is tuned per label when
        asked for explicitly); the recipe's untuned rule where there are no rows."""
        ml = recipe.multilabel
        if probs is None:
            return self.untuned_thresholds(recipe)
        mode = ml.threshold if ml.threshold in ("per_label", "shared") else "per_label"
        return tune_thresholds(self.truth(examples), probs, self.labels, mode=mode,
                               at_least_one=at_least_one_rule(ml, recipe.data.allow_empty),
                               min_positives=ml.min_positives, split=split)

    def read_labeled(self, path: str | Path, text_column: str | None, label_column: str | None,
                     label_separator: str | None) -> list[Example]:
        # The run's separator and labels, so that a file whose every row holds several labels splits as training did.
        examples, _ = load_examples(path, text_column, label_column, multi_label=True,
                                    label_separator=label_separator, allow_empty=True, known_labels=self.labels)
        for ex in examples:
            try:
                self.codec.multi_hot(ex.labels)
            except KeyError as e:
                raise DataError(ex.source, ex.line, f"label {e.args[0]!r} is not one of the run's labels "
                                f"{self.labels}", "evaluate on data with the trained labels") from None
        return examples

    def evaluation_extra(self, examples: list[Example]) -> dict[str, Any]:
        return {"encoding": self.name}

    def evaluate(self, out_dir: Path, examples: list[Example], probs: np.ndarray, thresholds: Thresholds | None,
                 extra: dict[str, Any]) -> dict[str, Any]:
        from neogen.evaluate_multilabel import write_multilabel_evaluation

        assert thresholds is not None
        return write_multilabel_evaluation(out_dir, self.truth(examples), probs, thresholds.decide(probs),
                                           self.labels, extra={**extra, **self.evaluation_extra(examples)})

    def format(self, metrics: dict[str, Any]) -> str:
        from neogen.evaluate_multilabel import format_multilabel_metrics

        return format_multilabel_metrics(metrics)


class PowersetTask(MultiLabelTask):
    name = "powerset"

    def __init__(self, codec: Codec) -> None:
        super().__init__(codec)
        self._membership = torch.as_tensor(self.codec.membership())  # (K, L): row k the label set of class k

    def prepared_row(self, example: Example) -> dict[str, Any]:
        """The label set's token; empty for a set unseen in training."""
        k = self.codec.class_index(example.labels)
        return {"completion": "" if k is None else self.classes.completions[k], "labels": list(example.labels)}

    def targets(self, examples: list[Example], training: bool) -> list[Any]:
        if training:  # training sets are the codec's classes
            return [self.codec.class_index(ex.labels) for ex in examples]
        return super().targets(examples, training)

    def class_weights(self, examples: list[Example], spec: str | dict[str, float]) -> torch.Tensor | None:
        if spec == "none":
            return None
        raise ConfigError(["train.class_weight: the powerset encoding trains on label sets, not labels; use "
                           "multilabel.encoding=independent or yes_no to weight labels, or leave class_weight at none"])

    def marginals(self, class_logits: torch.Tensor) -> torch.Tensor:
        """(B, K) logits of the label sets -> (B, L) marginal probability of each label.

        In fp32 with autocast off: under bf16 autocast the product would keep about three digits, and summed
        probabilities can exceed 1 by a rounding step, which threshold tuning and the metrics refuse.
        """
        if self._membership.device != class_logits.device:
            self._membership = self._membership.to(class_logits.device)  # moved once, not per batch
        with torch.autocast(class_logits.device.type, enabled=False):
            return (torch.softmax(class_logits.float(), -1) @ self._membership).clamp(0.0, 1.0)

    def loss(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None, loss_over: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: the causal-LM cross-entropy of the set's token. Validation rows are 0/1 label rows scored
        by binary cross-entropy of the marginals, so label sets unseen in training still count."""
        logits = next_token_logits(model, ids, mask)  # (B, V)
        token_ids = self.token_ids(logits.device)
        probs = self.marginals(logits[:, token_ids])  # (B, L)
        if targets.dtype == torch.long:
            return F.cross_entropy(logits, token_ids[targets]), probs
        return F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), targets.float()), probs

    def probabilities(self, model: Any, ids: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = next_token_logits(model, ids, mask)  # (B, V)
        class_logits = logits[:, self.token_ids(logits.device)]  # (B, K)
        mass = torch.exp(torch.logsumexp(class_logits, -1) - torch.logsumexp(logits, -1))
        return self.marginals(class_logits), mass

    def evaluation_extra(self, examples: list[Example]) -> dict[str, Any]:
        unseen = sum(self.codec.class_index(ex.labels) is None for ex in examples)
        return {**super().evaluation_extra(examples), "unseen_label_sets": unseen}


class IndependentTask(MultiLabelTask):
    name = "independent"

    def binary_logits(self, model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) prompts -> (B, L) logits of each label's yes/no decision."""
        logits = next_token_logits(model, ids, mask)
        return logits[:, self.token_ids(logits.device)]

    def loss(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
             weights: torch.Tensor | None, loss_over: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.binary_logits(model, ids, mask)  # (B, L)
        weight = None if weights is None else weights.to(logits.device, logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=weight), torch.sigmoid(logits)

    def probabilities(self, model: Any, ids: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = next_token_logits(model, ids, mask)  # (B, V)
        label_logits = logits[:, self.token_ids(logits.device)]  # (B, L)
        mass = torch.exp(torch.logsumexp(label_logits, -1) - torch.logsumexp(logits, -1))
        return torch.sigmoid(label_logits), mass


class YesNoTask(IndependentTask):
    name = "yes_no"

    def completion_token_ids(self) -> list[int]:
        return sorted({*self.codec.token_ids, *(self.codec.answer_ids or [])})

    def binary_logits(self, model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Log-odds of " yes" over " no" after each label's token, from one shared copy of the text's cache.

        Each prompt's cache is copied once per label: B * L rows of T tokens. Copied all at once, 300 labels at
        batch 64 would need tens of GB; in passes of at most YES_NO_CACHE_TOKENS cached tokens memory stays bounded
        whatever L (in training the passes' graphs live until backward, so there it bounds nothing).
        """
        rows = max(1, YES_NO_CACHE_TOKENS // ids.shape[1])
        answers = suffix_logits(model, ids, mask, self.token_ids(ids.device)[:, None],
                                torch.tensor(self.codec.answer_ids, device=ids.device), max_rows=rows)
        return answers[..., 0] - answers[..., 1]  # (B, L, 2) -> (B, L)

    def probabilities(self, model: Any, ids: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.sigmoid(self.binary_logits(model, ids, mask)), None


TASKS: dict[str, type[Task]] = {t.name: t for t in (SingleLabelTask, PowersetTask, IndependentTask, YesNoTask)}


def task_for(codec: Codec) -> Task:
    """The task of a run's label codec."""
    return TASKS[codec.encoding if codec.multi_label else SingleLabelTask.name](codec)


def weighted_mean(losses: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """(B,) per-example losses of classes (B,) -> their mean, each weighted by its class (a weighted average, as
    torch's cross_entropy(weight=...) takes it, so the loss scale does not depend on the batch's class mix)."""
    if weights is None:
        return losses.mean()
    w = weights.to(losses.device, losses.dtype)[classes]  # (B,)
    return (w * losses).sum() / w.sum()


def _given_weights(spec: dict[str, float], labels: list[str]) -> torch.Tensor:
    """{label: weight} (labels left out weigh 1); weights <= 0 are refused with the recipe's other problems."""
    unknown = sorted(set(spec) - set(labels))
    if unknown:
        raise ConfigError([f"train.class_weight: {unknown} are not training labels (labels: {labels})"])
    return torch.tensor([float(spec.get(label, 1.0)) for label in labels]).float()
