"""Tests for neogen.thresholds: tuning recovers known cuts, rare-label fallback, decisions, JSON, validation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from neogen.errors import ConfigError
from neogen.thresholds import Thresholds, tune_thresholds

LABELS = ["joy", "anger", "fear"]


def separable(n_pos: int = 10, n_neg: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Three labels, each perfectly separated by a known gap: (0.3, 0.7), (0.1, 0.2) and (0.8, 0.9)."""
    gaps = [(0.3, 0.7), (0.1, 0.2), (0.8, 0.9)]
    n = n_pos + n_neg
    y = np.zeros((n, 3), dtype=int)
    probs = np.zeros((n, 3))
    for j, (neg_max, pos_min) in enumerate(gaps):
        rows = np.roll(np.arange(n), 7 * j)  # positives on different rows per label
        y[rows[:n_pos], j] = 1
        probs[rows[:n_pos], j] = np.linspace(pos_min, 1.0, n_pos)
        probs[rows[n_pos:], j] = np.linspace(0.0, neg_max, n_neg)
    return y, probs


def test_tuning_recovers_each_separating_gap() -> None:
    y, probs = separable()
    t = tune_thresholds(y, probs, LABELS, split="valid")
    # The midpoint of each gap between the highest negative and the lowest positive.
    assert t.per_label == pytest.approx([0.5, 0.15, 0.85])
    assert t.mode == "per_label"
    assert (t.decide(probs) == y.astype(bool)).all()
    assert t.tuned_on == {
        "split": "valid",
        "n": 40,
        "objective_per_label": "f1",
        "objective_shared": "micro_f1",
        "shared_micro_f1": t.tuned_on["shared_micro_f1"],
        "min_positives": 3,
        "fallback_labels": [],
    }
    # No single cut separates all three labels: the shared cut is worse than the per-label ones.
    assert t.tuned_on["shared_micro_f1"] < 1.0
    shared_f1 = f1_score(y, probs >= t.shared, average="micro")
    assert shared_f1 == pytest.approx(t.tuned_on["shared_micro_f1"])


def test_equal_f1_ties_go_to_the_cut_nearest_half() -> None:
    # Cuts at 0.75 (TP 1, FP 0) and 0.05 (TP 2, FP 2) both give F1 = 2/3; 0.75 is nearer 0.5.
    y = np.array([[1], [0], [0], [1]])
    probs = np.array([[0.9], [0.6], [0.4], [0.1]])
    t = tune_thresholds(y, probs, ["x"], min_positives=1)
    assert t.per_label == [pytest.approx(0.75)]


def test_rare_label_falls_back_to_shared_threshold() -> None:
    y, probs = separable()
    y[:, 2] = 0
    y[[0, 1], 2] = 1  # only two positives for "fear"
    t = tune_thresholds(y, probs, LABELS)
    assert t.per_label[2] == t.shared
    assert t.per_label[:2] == pytest.approx([0.5, 0.15])
    assert t.tuned_on["fallback_labels"] == ["fear"]
    # With the bar lowered to two positives the label gets its own cut again.
    own = tune_thresholds(y, probs, LABELS, min_positives=2)
    assert own.tuned_on["fallback_labels"] == []
    assert own.per_label[2] != own.shared


def brute_force_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The best F1 of `p >= c` over every distinct value c, counted directly on one boolean matrix."""
    predicted = p[:, None] >= np.unique(p)[None, :]
    tp = (predicted & y[:, None]).sum(axis=0)
    return float((2 * tp / (predicted.sum(axis=0) + y.sum())).max())


def test_tuned_cuts_match_brute_force_on_random_float32() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < [0.05, 0.2, 0.4, 0.6]).astype(int)
    probs = np.clip(0.35 * y + 0.65 * rng.random((300, 4)), 0, 1).astype(np.float32)
    t = tune_thresholds(y, probs, list("abcd"))
    decided = t.decide(probs)
    p64, truth = probs.astype(np.float64), y.astype(bool)
    for j in range(4):
        assert f1_score(y[:, j], decided[:, j]) == pytest.approx(brute_force_f1(truth[:, j], p64[:, j]), abs=1e-12)
    best_micro = brute_force_f1(truth.ravel(), p64.ravel())
    assert t.tuned_on["shared_micro_f1"] == pytest.approx(best_micro, abs=1e-12)
    shared = Thresholds(t.labels, t.per_label, t.shared, mode="shared")
    assert f1_score(y, shared.decide(probs), average="micro") == pytest.approx(best_micro, abs=1e-12)


def test_tuning_is_fast_for_5000_rows_and_28_labels() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((5000, 28)) < np.linspace(0.005, 0.3, 28)).astype(int)
    probs = rng.random((5000, 28)).astype(np.float32)
    start = time.perf_counter()
    t = tune_thresholds(y, probs, [f"l{i}" for i in range(28)])
    assert time.perf_counter() - start < 1.0
    assert len(t.per_label) == 28


def test_decide_modes_and_at_least_one() -> None:
    t = Thresholds(["a", "b", "c"], per_label=[0.2, 0.5, 0.9], shared=0.5)
    probs = np.array([[0.3, 0.4, 0.95], [0.1, 0.45, 0.3], [0.6, 0.5, 0.5]])
    assert t.decide(probs).tolist() == [[True, False, True], [False, False, False], [True, True, False]]
    t.mode = "shared"
    assert t.decide(probs).tolist() == [[False, False, True], [False, False, False], [True, True, True]]
    t.at_least_one = True  # row 1 has nothing above 0.5: it gets its most probable label, "b"
    assert t.decide(probs).tolist() == [[False, False, True], [False, True, False], [True, True, True]]
    assert t.decide(np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        t.decide(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        t.decide(np.array([[0.1, np.nan, 0.2]]))


def test_default_and_json_round_trip(tmp_path: Path) -> None:
    default = Thresholds.default(["a", "b"], value=0.4)
    assert default.per_label == [0.4, 0.4]
    assert default.shared == 0.4
    assert default.tuned_on is None

    rng = np.random.default_rng(2)
    y = (rng.random((50, 3)) < 0.4).astype(int)
    tuned = tune_thresholds(y, rng.random((50, 3)), LABELS, mode="shared", at_least_one=True, split="valid")
    path = tmp_path / "model" / "thresholds.json"
    tuned.save(path)
    loaded = Thresholds.load(path)
    assert loaded == tuned
    assert loaded.per_label == tuned.per_label  # exact float equality, not approx
    assert json.loads(path.read_text(encoding="utf-8"))["mode"] == "shared"
    assert Thresholds.from_dict(default.to_dict()) == default


def test_validation_lists_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        Thresholds(["a", "a"], per_label=[0.2, 1.5, -0.1], shared=2.0, mode="both", at_least_one="yes")
    error = info.value
    assert isinstance(error, ConfigError)
    message = str(error)
    assert "6 problem(s)" in message
    assert len(error.problems) == 6
    for fragment in ("repeated: ['a']", "3 values but there are 2 labels", "a=1.5, #2=-0.1", "shared threshold",
                     "mode", "at_least_one"):
        assert fragment in message


def test_from_dict_refuses_unknown_and_missing_keys() -> None:
    with pytest.raises(ConfigError) as info:
        Thresholds.from_dict({"labels": ["a"], "per_label": [0.5], "threshold": 0.5})
    assert info.value.problems == ["unknown key 'threshold'", "missing key 'shared'"]


@pytest.mark.parametrize(
    ("y", "probs", "match"),
    [
        (np.array([[0, 2]]), np.array([[0.1, 0.2]]), "0/1"),
        (np.array([[0, 1]]), np.array([[0.1, 1.2]]), r"\[0, 1\]"),
        (np.array([[0, 1]]), np.array([[0.1, 0.2, 0.3]]), "probs has shape"),
        (np.array([0, 1]), np.array([0.1, 0.2]), "y_true must have shape"),
    ],
)
def test_tune_refuses_bad_inputs(y: np.ndarray, probs: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tune_thresholds(y, probs, ["a", "b"])
