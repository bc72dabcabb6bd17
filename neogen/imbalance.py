"""Class weights for imbalanced training data.

A rare class contributes few terms to an unweighted mean loss, so the model can trade it away for a little gain on
the common ones; macro-F1 pays for that. `balanced` weights each class by n / (K x n_class), scikit-learn's
`class_weight="balanced"`, so every class carries the same total weight. Multi-label runs (independent, yes_no)
weight each label's positive term by negatives / positives instead: BCE's `pos_weight`.
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from neogen.errors import ConfigError
from neogen.labels import LabelCodec
from neogen.multilabel import MultiLabelCodec
from neogen.read import Example

logger = logging.getLogger(__name__)

ClassWeight = str | dict[str, float]


def class_weights(examples: list[Example], codec: LabelCodec | MultiLabelCodec,
                  spec: ClassWeight) -> torch.Tensor | None:
    """(K,) weights per class (single-label) or (L,) positive weights per label (multi-label); None for `none`.

    `spec` is `none`, `balanced`, or {label: weight} (labels left out weigh 1).
    """
    if spec == "none":
        return None
    if codec.multi_label and codec.encoding == "powerset":
        raise ConfigError(["train.class_weight: the powerset encoding trains on label sets, not labels; use "
                           "multilabel.encoding=independent or yes_no to weight labels, or leave class_weight at none"])
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(codec.labels))
        if unknown:  # (weights <= 0 are refused with the recipe's other problems)
            raise ConfigError([f"train.class_weight: {unknown} are not training labels (labels: {codec.labels})"])
        weights = torch.tensor([float(spec.get(label, 1.0)) for label in codec.labels])
    elif codec.multi_label:
        positives = Counter(label for ex in examples for label in ex.labels)
        n = len(examples)
        # A label with no positive (or no negative) in training has nothing to balance: leave it at 1, not 0.
        weights = torch.tensor([(n - positives[lab]) / positives[lab] if 0 < positives[lab] < n else 1.0
                                for lab in codec.labels])
    else:
        counts = Counter(ex.label for ex in examples)
        n, k = len(examples), len(codec.labels)
        weights = torch.tensor([n / (k * counts[label]) for label in codec.labels])
    logger.info("class weights: %s", ", ".join(f"{lab} {w:.3g}" for lab, w in zip(codec.labels, weights.tolist(),
                                                                                      strict=True)))
    return weights.float()


def weighted_mean(losses: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """(B,) per-example losses of classes (B,) -> their mean, each weighted by its class (a weighted average, as
    torch's cross_entropy(weight=...) takes it, so the loss scale does not depend on the batch's class mix)."""
    if weights is None:
        return losses.mean()
    w = weights.to(losses.device, losses.dtype)[classes]  # (B,)
    return (w * losses).sum() / w.sum()
