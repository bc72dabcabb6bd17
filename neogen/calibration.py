"""Temperature scaling: one number that makes a single-label run's scores honest probabilities.

A fine-tuned model's argmax can be right while its confidence is off (too sure after several epochs, too timid
after a short run). Dividing the label logits by a temperature T fitted on held-out rows (Guo et al., 2017) fixes
the scale without moving the argmax, so accuracy and macro-F1 stay as they are while log loss and the expected
calibration error (ECE) drop. Scores are softmax outputs, so the logits are recovered as log-probabilities up to a
per-row constant, which the softmax ignores: softmax(log p / T) == softmax(logits / T).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from neogen.errors import NeogenError
from neogen.folders import read_json

logger = logging.getLogger(__name__)

# T is searched on a log scale in [1/20, 20]: wide enough for any fine-tune seen so far, and bounded so that a
# degenerate validation split (all rows right and confident) cannot send T to zero.
LOG_T_BOUNDS = (-math.log(20.0), math.log(20.0))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, K) probabilities -> (N, K) probabilities of the logits divided by `temperature`; argmax unchanged."""
    with np.errstate(divide="ignore"):
        logits = np.log(np.asarray(probs, dtype=np.float64)) / temperature  # a zero prob stays -inf, i.e. 0
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def _log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)).mean())


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE: the gap between confidence and accuracy of the top label, averaged over equal-width confidence bins
    weighted by their share of rows (Guo et al., 2017). 0 means "90% sure" is right 90% of the time."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)  # (N,) bin of each row; 1.0 in the last
    gap = 0.0
    for b in np.unique(which):
        rows = which == b
        gap += rows.sum() * abs(float(correct[rows].mean()) - float(confidence[rows].mean()))
    return gap / len(confidence)


@dataclass
class Temperature:
    """A fitted temperature and what it did on the rows it was fitted on (saved as calibration.json)."""

    temperature: float
    split: str  # the rows it was fitted on: "valid", or a file given to `neogen eval --calibrate`
    n: int
    log_loss_before: float
    log_loss_after: float
    ece_before: float
    ece_after: float
    method: str = "temperature"

    def apply(self, probs: np.ndarray, inverse: bool = False) -> np.ndarray:
        """Scale (N, K) scores by the temperature; `inverse` undoes it (back to the model's own scores)."""
        return apply_temperature(probs, 1 / self.temperature if inverse else self.temperature)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Temperature:
        """Read a file written by `save`; anything else raises NeogenError naming the file and the fix."""
        path = Path(path)
        fix = (f"fix: delete {path} to score without calibration, then refit it if wanted with "
               "`neogen eval RUN VALID --calibrate`")
        data = read_json(path, fix)
        try:
            fitted = cls(**data)
        except TypeError as e:  # not an object, or missing or unknown keys
            raise NeogenError(f"{path} is not a calibration file: {e} ({fix})") from e
        t = fitted.temperature
        if fitted.method != "temperature" or isinstance(t, bool) or not isinstance(t, (int, float)) \
                or not math.isfinite(t) or t <= 0:
            raise NeogenError(f"{path} is not a calibration file: need method 'temperature' and a positive "
                              f"temperature, got {fitted.method!r} and {t!r} ({fix})")
        return fitted


def fit_temperature(y: np.ndarray, probs: np.ndarray, split: str) -> Temperature:
    """The temperature minimising the log loss of (N,) class indexes y under (N, K) probabilities."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, dtype=np.int64)
    found = minimize_scalar(lambda log_t: _log_loss(y, apply_temperature(probs, math.exp(log_t))),
                            bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    t = float(math.exp(found.x))
    if abs(found.x - LOG_T_BOUNDS[0]) < 1e-2:
        # The log loss kept falling towards T -> 0: typically every row is right, and sharper is always "better".
        logger.warning("the %s rows cannot pin a temperature down (the fit ran to T=%.3g); keeping T=1", split, t)
        t = 1.0
    elif abs(found.x - LOG_T_BOUNDS[1]) < 1e-2:
        # Softer kept helping up to the bound: confidently wrong rows. The bound is still far better than T=1.
        logger.warning("the scores on the %s rows are so over-confident that the fit ran to the largest temperature, "
                       "T=%.3g; keeping it (the model may be undertrained, or the rows unlike the training data)",
                       split, t)
    after = apply_temperature(probs, t)
    fitted = Temperature(temperature=t, split=split, n=len(y), log_loss_before=_log_loss(y, probs),
                         log_loss_after=_log_loss(y, after), ece_before=expected_calibration_error(y, probs),
                         ece_after=expected_calibration_error(y, after))
    logger.info("temperature %.3f fitted on %d %s rows: log loss %.4f -> %.4f, ECE %.4f -> %.4f", t, len(y), split,
                fitted.log_loss_before, fitted.log_loss_after, fitted.ece_before, fitted.ece_after)
    return fitted
