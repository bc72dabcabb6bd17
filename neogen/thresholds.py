"""Decision thresholds that turn multi-label probabilities (one sigmoid per label) into yes/no decisions.

A label is predicted when its probability is at least its threshold. 0.5 is rarely the best cut: rare labels
get low probabilities and would almost never be predicted, so `tune_thresholds` picks, per label, the cut that
maximises that label's F1, plus one shared cut that maximises micro-F1 over all labels.

Why it is done this way:

- Tune on validation rows, never on test rows. A threshold fitted to the rows it is scored on reports an
  optimistic F1; the test split must only ever see thresholds chosen elsewhere (`tuned_on` records where).
- Labels with fewer than `min_positives` positive rows fall back to the shared threshold: with one or two
  positives the F1-optimal cut just memorises those rows (any cut below their probability looks perfect) and
  does not generalise, while the shared cut is fitted on every label's rows at once.
- Candidate cuts are the midpoints between consecutive distinct probabilities, so each cut sits as far as
  possible from the rows on either side; among equally good cuts the one nearest 0.5 wins (then the higher),
  which keeps the choice deterministic and close to the untuned default when the data cannot tell them apart.
- Each column is sorted once and scored for every cut with cumulative counts, so tuning 5,000 rows x 28
  labels takes milliseconds.

`Thresholds` stores the result as plain JSON next to a model so that prediction applies exactly the cuts that
were tuned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from neogen.errors import ConfigError, NeogenError
from neogen.folders import read_json

logger = logging.getLogger(__name__)

MODES = ("per_label", "shared")


@dataclass
class Thresholds:
    """One decision threshold per label plus a shared one, and how `decide` applies them.

    mode: "per_label" uses `per_label[j]` for label j; "shared" uses `shared` for every label.
    at_least_one: a row with no probability at or above its threshold gets its single most probable label
    (for data where every text has at least one label).
    tuned_on: where the thresholds came from (split, row count, objectives), or None for untuned defaults.
    """

    labels: list[str]
    per_label: list[float]
    shared: float
    mode: str = "per_label"
    at_least_one: bool = False
    tuned_on: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Normalise to plain Python types and raise ConfigError (a ValueError) listing every problem."""
        problems: list[str] = []
        self.labels = [str(label) for label in self.labels]
        if not self.labels:
            problems.append("labels is empty: need at least one label")
        repeated = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if repeated:
            problems.append(f"labels must be unique; repeated: {repeated}")
        try:
            self.per_label = [float(value) for value in self.per_label]
        except (TypeError, ValueError):
            problems.append(f"per_label must be a list of numbers, got {self.per_label!r}")
        else:
            if len(self.per_label) != len(self.labels):
                problems.append(f"per_label has {len(self.per_label)} values but there are {len(self.labels)} labels")
            names = self.labels + [f"#{i}" for i in range(len(self.labels), len(self.per_label))]
            pairs = zip(names, self.per_label, strict=False)
            bad = [f"{name}={value!r}" for name, value in pairs if not 0.0 <= value <= 1.0]
            if bad:
                problems.append(f"per_label thresholds must lie in [0, 1]: {', '.join(bad)}")
        try:
            self.shared = float(self.shared)
        except (TypeError, ValueError):
            problems.append(f"shared must be a number, got {self.shared!r}")
        else:
            if not 0.0 <= self.shared <= 1.0:
                problems.append(f"shared threshold must lie in [0, 1], got {self.shared!r}")
        if self.mode not in MODES:
            problems.append(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if isinstance(self.at_least_one, np.bool_):
            self.at_least_one = bool(self.at_least_one)
        if not isinstance(self.at_least_one, bool):
            problems.append(f"at_least_one must be true or false, got {self.at_least_one!r}")
        if self.tuned_on is not None and not isinstance(self.tuned_on, dict):
            problems.append(f"tuned_on must be a mapping or null, got {type(self.tuned_on).__name__}")
        if problems:
            raise ConfigError(problems, source="thresholds")

    @classmethod
    def default(cls, labels: Sequence[str], value: float = 0.5) -> Thresholds:
        """Untuned thresholds: `value` for every label and as the shared cut."""
        return cls(labels=list(labels), per_label=[value] * len(labels), shared=value, tuned_on=None)

    @classmethod
    def untuned(cls, labels: Sequence[str], multilabel: Any, allow_empty: bool) -> Thresholds:
        """A run's thresholds before (or without) tuning, from its recipe's `multilabel` section: the fixed
        threshold, else 0.5 for every label, and its at_least_one rule."""
        tuned = multilabel.threshold in ("per_label", "shared")
        thresholds = cls.default(labels, 0.5 if tuned else float(multilabel.threshold))
        thresholds.at_least_one = at_least_one_rule(multilabel, allow_empty)
        return thresholds

    def cutoffs(self) -> np.ndarray:
        """The (L,) thresholds `decide` applies under the current mode."""
        if self.mode == "shared":
            return np.full(len(self.labels), self.shared, dtype=np.float64)
        return np.asarray(self.per_label, dtype=np.float64)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """(N, L) probabilities to (N, L) bool decisions: probability >= threshold, then the at_least_one rule.

        Compares in float64, so a cut tuned between two float32 probabilities separates them exactly.
        """
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.labels):
            raise ValueError(f"probs must have shape (N, {len(self.labels)}) (one column per label), got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("probs has NaN or infinite values")
        decisions = p >= self.cutoffs()
        if self.at_least_one:
            empty = ~decisions.any(axis=1)
            decisions[empty, p[empty].argmax(axis=1)] = True
        return decisions

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; `from_dict` rebuilds an equal object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        """Rebuild from `to_dict` output; unknown or missing keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        required = {"labels", "per_label", "shared"}
        problems = [f"unknown key {key!r}" for key in sorted(set(data) - known)]
        problems += [f"missing key {key!r}" for key in sorted(required - set(data))]
        if problems:
            raise ConfigError(problems, source="thresholds")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write as indented JSON (floats are written with full precision, so `load` is exact)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        logger.debug("wrote thresholds to %s", path)

    @classmethod
    def load(cls, path: str | Path) -> Thresholds:
        """Read a file written by `save`; anything else raises NeogenError naming the file and the fix."""
        path = Path(path)
        fix = (f"fix: delete {path} (0.5 for every label) and re-tune with `neogen eval RUN VALID --tune-thresholds`, "
               "or restore the run's own copy")
        data = read_json(path, fix)
        if not isinstance(data, dict):
            raise NeogenError(f"{path} holds a JSON {type(data).__name__}, not an object of thresholds ({fix})")
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise NeogenError(f"{path} is not a valid thresholds file: {'; '.join(e.problems)} ({fix})") from e
        except TypeError as e:
            raise NeogenError(f"{path} is not a valid thresholds file: {e} ({fix})") from e


def at_least_one_rule(multilabel: Any, allow_empty: bool) -> bool:
    """The recipe's multilabel.at_least_one, where null means: unless rows may have no label (data.allow_empty)."""
    return multilabel.at_least_one if multilabel.at_least_one is not None else not allow_empty


def _best_f1_cut(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """The threshold maximising F1 of `p >= threshold` against bool `y`, and that F1.

    Sorting once by descending probability makes every cut "predict the top k distinct values": its true and
    false positives are cumulative sums read at the end of each run of equal probabilities.
    """
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    ends = np.flatnonzero(np.append(ps[1:] != ps[:-1], True))  # last index of each distinct value
    upper = ps[ends]  # distinct values, descending
    lower = np.append(upper[1:], 0.0)  # the next distinct value below (0 below the smallest)
    cuts = lower + (upper - lower) / 2
    cuts = np.where(cuts > lower, cuts, upper)  # adjacent floats: the midpoint may round onto `lower`
    tp = np.cumsum(ys)[ends]
    fp = np.cumsum(~ys)[ends]
    if upper[0] < 1.0:  # a cut above every probability predicts nothing
        cuts = np.append((upper[0] + 1.0) / 2, cuts)
        tp, fp = np.append(0, tp), np.append(0, fp)
    positives = int(ys.sum())
    denominator = tp + fp + positives  # 2TP + FP + FN
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros(len(cuts)), where=denominator > 0)
    best = np.flatnonzero(f1 == f1.max())
    # Nearest 0.5 first, then the higher cut: lexsort uses the last key as the primary one.
    pick = best[np.lexsort((-cuts[best], np.abs(cuts[best] - 0.5)))[0]]
    return float(cuts[pick]), float(f1[pick])


def tune_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    mode: str = "per_label",
    at_least_one: bool = False,
    min_positives: int = 3,
    split: str | None = None,
) -> Thresholds:
    """Fit per-label F1-optimal thresholds and a shared micro-F1-optimal one on validation rows.

    y_true: (N, L) 0/1; probs: (N, L) in [0, 1]. Labels with fewer than `min_positives` positive rows take the
    shared threshold. `split` (e.g. "valid") is recorded in `tuned_on`. The cuts are chosen without the
    at_least_one rule, which `decide` applies afterwards.
    """
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    label_list = [str(label) for label in labels]
    if y.ndim != 2 or y.shape[0] == 0 or y.shape[1] != len(label_list):
        raise ValueError(f"y_true must have shape (N, {len(label_list)}) with N >= 1, got {y.shape}")
    if p.shape != y.shape:
        raise ValueError(f"probs has shape {p.shape} but y_true has shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0/1 (or True/False) values")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probs must be finite and lie in [0, 1]")
    y = y.astype(bool)

    shared, shared_f1 = _best_f1_cut(y.ravel(), p.ravel())  # micro-F1 is F1 over the flattened matrix
    per_label: list[float] = []
    fallback: list[str] = []
    for j, label in enumerate(label_list):
        if int(y[:, j].sum()) < min_positives:
            per_label.append(shared)
            fallback.append(label)
        else:
            per_label.append(_best_f1_cut(y[:, j], p[:, j])[0])
    if fallback:
        logger.info(
            "%d label(s) with fewer than %d positives use the shared threshold %.4f: %s",
            len(fallback), min_positives, shared, ", ".join(fallback),
        )
    tuned_on = {
        "split": split,
        "n": int(y.shape[0]),
        "objective_per_label": "f1",
        "objective_shared": "micro_f1",
        "shared_micro_f1": shared_f1,
        "min_positives": int(min_positives),
        "fallback_labels": fallback,
    }
    return Thresholds(label_list, per_label, shared, mode=mode, at_least_one=at_least_one, tuned_on=tuned_on)
