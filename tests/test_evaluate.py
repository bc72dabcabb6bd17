"""Tests for neogen.evaluate: hand-checked metric values, input validation and the written files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from neogen.evaluate import (
    classification_metrics,
    format_metrics,
    plot_confusion_matrix,
    plot_roc_curves,
    write_evaluation,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Three classes, two rows each. Argmax predictions: cat, dog | dog, dog | bird, cat.
THREE_LABELS = ["cat", "dog", "bird"]
THREE_Y = [0, 0, 1, 1, 2, 2]
THREE_PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.8, 0.1],
        [0.1, 0.2, 0.7],
        [0.5, 0.1, 0.4],
    ]
)


def test_perfect_predictions() -> None:
    y = [0, 1, 2, 1, 0, 2]
    probs = np.eye(3)[y]
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["n"] == 6
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == 1.0
    assert m["weighted_f1"] == 1.0
    assert m["roc_auc"] == 1.0
    assert m["auprc"] == 1.0
    assert m["log_loss"] == pytest.approx(0.0, abs=1e-9)
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert m["roc_auc_skipped"] == []


def test_three_class_values_by_hand() -> None:
    m = classification_metrics(THREE_Y, THREE_PROBS, THREE_LABELS)
    # Rows true, columns predicted: cat -> (cat, dog); dog -> (dog, dog); bird -> (bird, cat).
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # cat: P 1/2 R 1/2 F1 1/2; dog: P 2/3 R 1 F1 4/5; bird: P 1 R 1/2 F1 2/3.
    assert m["per_class"]["cat"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["dog"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert m["per_class"]["bird"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports
    # Mean negative log of the probability given to the true class.
    expected_loss = -np.mean(np.log([0.7, 0.3, 0.7, 0.8, 0.7, 0.4]))
    assert m["log_loss"] == pytest.approx(expected_loss)
    # cat vs rest: positives score 0.7, 0.3; negatives 0.2, 0.1, 0.1, 0.5 -> 7 of 8 pairs ranked right.
    assert m["per_class_roc_auc"]["cat"] == pytest.approx(7 / 8)
    assert m["roc_auc"] == pytest.approx(np.mean(list(m["per_class_roc_auc"].values())))
    assert m["labels"] == THREE_LABELS


def test_result_is_plain_json() -> None:
    m = classification_metrics(np.array(THREE_Y), THREE_PROBS.astype(np.float32), THREE_LABELS)
    assert json.loads(json.dumps(m)) == m
    assert type(m["n"]) is int
    assert type(m["accuracy"]) is float
    assert all(type(v) is int for row in m["confusion_matrix"] for v in row)


def test_binary_uses_positive_class() -> None:
    y = [0, 0, 0, 1, 1]
    p_pos = np.array([0.1, 0.2, 0.7, 0.6, 0.9])
    probs = np.column_stack([1 - p_pos, p_pos])
    m = classification_metrics(y, probs, ["neg", "pos"])
    # Positives 0.6, 0.9 against negatives 0.1, 0.2, 0.7: 5 of 6 pairs ranked right.
    assert m["roc_auc"] == pytest.approx(5 / 6)
    # Ranked by p(pos): pos, neg, pos -> AP = 1/2 * 1 + 1/2 * 2/3.
    assert m["auprc"] == pytest.approx(5 / 6)
    # Class "neg" ranks neg, neg, pos, neg -> AP 11/12; a macro over both classes would give 7/8.
    assert m["per_class_auprc"]["neg"] == pytest.approx(11 / 12)
    assert m["per_class_roc_auc"] == pytest.approx({"neg": 5 / 6, "pos": 5 / 6})
    assert m["confusion_matrix"] == [[2, 1], [0, 2]]


def test_class_absent_from_y_true_is_skipped() -> None:
    y = [0, 0, 1, 1]
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.65, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.6, 0.3],
        ]
    )
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["roc_auc_skipped"] == ["c"]
    assert m["per_class_roc_auc"]["c"] is None
    assert m["per_class_auprc"]["c"] is None
    # a: positives 0.8, 0.3 beat negatives 0.2, 0.1 -> 1; b: positives 0.7, 0.6 vs 0.1, 0.65 -> 3/4.
    assert m["per_class_roc_auc"]["a"] == pytest.approx(1.0)
    assert m["per_class_roc_auc"]["b"] == pytest.approx(0.75)
    assert m["roc_auc"] == pytest.approx(0.875)
    assert m["per_class"]["c"]["support"] == 0
    assert m["confusion_matrix"][2] == [0, 0, 0]


def test_single_present_class_has_no_auc() -> None:
    m = classification_metrics([1, 1], np.array([[0.2, 0.8], [0.6, 0.4]]), ["no", "yes"])
    assert m["roc_auc"] is None
    assert m["auprc"] is None
    assert m["roc_auc_skipped"] == ["no"]
    assert m["accuracy"] == 0.5


@pytest.mark.parametrize(
    ("y", "probs", "labels", "match"),
    [
        ([0, 1, 1], np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b"], "rows"),
        ([0, 1], np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b", "c"], "columns"),
        ([0, 1], np.array([0.5, 0.8]), ["a", "b"], "2-D"),
        ([0, 1], np.array([[np.nan, 0.5], [0.2, 0.8]]), ["a", "b"], "NaN"),
        ([0, 2], np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b"], "outside"),
        ([-1, 1], np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b"], "outside"),
        ([0, 1], np.array([[2.0, -1.0], [0.2, 0.8]]), ["a", "b"], r"\[0, 1\]"),
        ([0, 1], np.array([[0.5, 0.4], [0.2, 0.8]]), ["a", "b"], "sum to 1"),
        ([0.5, 1], np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "b"], "integer"),
        ([], np.zeros((0, 2)), ["a", "b"], "empty"),
        ([0, 0], np.array([[1.0], [1.0]]), ["a"], "at least 2"),
        ([0, 1], np.array([[0.5, 0.5], [0.2, 0.8]]), ["a", "a"], "unique"),
    ],
)
def test_invalid_inputs_raise(y: list[float], probs: np.ndarray, labels: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, probs, labels)


def test_rounding_drift_is_tolerated() -> None:
    probs = np.array([[0.3, 0.7001], [0.9, 0.0999]], dtype=np.float32)
    m = classification_metrics([1, 0], probs, ["a", "b"])
    assert m["accuracy"] == 1.0


def test_write_evaluation_files(tmp_path: Path) -> None:
    out = tmp_path / "eval" / "test"
    extra = {"split": "test", "data": tmp_path / "data.csv"}
    m = write_evaluation(out, THREE_Y, THREE_PROBS, THREE_LABELS, extra=extra)
    assert m["split"] == "test"
    assert m["accuracy"] == pytest.approx(4 / 6)
    with (out / "metrics.json").open(encoding="utf-8") as handle:
        loaded = json.load(handle)
    assert loaded["data"] == str(tmp_path / "data.csv")
    assert loaded["confusion_matrix"] == m["confusion_matrix"]
    assert loaded["per_class"] == m["per_class"]
    assert math.isclose(loaded["log_loss"], m["log_loss"])
    for name in ("confusion_matrix.png", "roc_curves.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_write_evaluation_refuses_overwriting_metrics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="accuracy"):
        write_evaluation(tmp_path, THREE_Y, THREE_PROBS, THREE_LABELS, extra={"accuracy": 1.0})


def test_plots_many_classes_and_degenerate_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    k = 25
    y = np.arange(200) % k
    probs = rng.dirichlet(np.ones(k), size=200)
    labels = [f"class_{i}" for i in range(k)]
    plot_confusion_matrix(classification_metrics(y, probs, labels), tmp_path / "cm.png")
    plot_roc_curves(y, probs, labels, tmp_path / "roc.png")
    plot_roc_curves([1, 1], np.array([[0.2, 0.8], [0.6, 0.4]]), ["no", "yes"], tmp_path / "roc1.png")
    for name in ("cm.png", "roc.png", "roc1.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_format_metrics() -> None:
    m = classification_metrics(THREE_Y, THREE_PROBS, THREE_LABELS)
    text = format_metrics(m)
    for label in THREE_LABELS:
        assert label in text
    header = text.splitlines()[0]
    assert "n=6" in header
    assert "accuracy=0.6667" in header
    assert f"log loss={m['log_loss']:.4f}" in header
    assert "precision" in text
    # Confusion matrix rows carry the label names and the counts.
    assert any(line.split() == ["bird", "1", "0", "1"] for line in text.splitlines())


def test_format_metrics_undefined_auc() -> None:
    m = classification_metrics([1, 1], np.array([[0.2, 0.8], [0.6, 0.4]]), ["no", "yes"])
    text = format_metrics(m)
    assert "ROC AUC=n/a" in text
    assert "no" in text
    assert "yes" in text


def synthetic_run(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """n rows over k classes (a few frequent, most rare or absent): 60% of rows right, the rest predicted at
    random, and (k > 42) eight rows of class 7 predicted as class 42; float32 softmax rows as the scorer returns."""
    rng = np.random.default_rng(seed)
    y = rng.zipf(1.3, size=n) % k
    logits = rng.normal(size=(n, k)).astype(np.float32)
    right = rng.random(n) < 0.6
    target = np.where(right, y, rng.integers(0, k, size=n))
    if k > 42:
        y[:8], target[:8] = 7, 42
    logits[np.arange(n), target] += 12.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs, [f"label_{i:05d}" for i in range(k)]


def test_evaluation_at_10000_labels_is_compact_and_linear(tmp_path: Path) -> None:
    import tracemalloc

    from sklearn.metrics import f1_score

    y, probs, labels = synthetic_run(1000, 10_000)
    tracemalloc.start()
    try:
        m = write_evaluation(tmp_path, y, probs, labels, extra={"data": "synthetic"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Linear in the (N, K) scores: a few float64 copies of them, never a K x K matrix (10^8 cells).
    assert peak < 8 * y.size * len(labels) * 8, peak
    assert (tmp_path / "metrics.json").stat().st_size < 5_000_000
    loaded = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    pred = probs.argmax(axis=1)
    present, occurring = set(y.tolist()), set(y.tolist()) | set(pred.tolist())
    assert loaded["compact"] is True and "confusion_matrix" not in loaded and "roc_auc_skipped" not in loaded
    assert loaded["labels"] == labels and loaded["n"] == 1000 and loaded["data"] == "synthetic"
    cells = loaded["confusion_counts"]
    assert cells == sorted(cells) and all(count > 0 for *_, count in cells)
    assert sum(count for *_, count in cells) == 1000
    assert [7, 42, 8] in cells
    assert loaded["accuracy"] == pytest.approx(np.mean(y == pred))
    assert loaded["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert set(loaded["per_class"]) == {labels[c] for c in occurring}
    assert set(loaded["per_class_roc_auc"]) == set(loaded["per_class_auprc"]) == {labels[c] for c in present}
    assert loaded["roc_auc_skipped_count"] == 10_000 - len(present)
    for name in ("confusion_matrix.png", "roc_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    text = format_metrics(m)
    assert len(text.splitlines()) < 80
    assert "label_00007 -> label_00042: 8" in text


def test_compact_metrics_hold_the_values_of_the_full_form(monkeypatch: pytest.MonkeyPatch) -> None:
    from neogen import evaluate

    y, probs, labels = synthetic_run(300, 60, seed=1)
    compact = classification_metrics(y, probs, labels)
    monkeypatch.setattr(evaluate, "COMPACT_ABOVE", 60)
    full = classification_metrics(y, probs, labels)
    assert compact["compact"] is True and "compact" not in full
    dense = np.asarray(full["confusion_matrix"])
    assert compact["confusion_counts"] == [[t, p, int(dense[t, p])] for t, p in zip(*np.nonzero(dense), strict=True)]
    for key in ("per_class", "per_class_roc_auc", "per_class_auprc"):
        assert compact[key] == {label: value for label, value in full[key].items() if label in compact[key]}
    assert all(row["support"] == 0 and row["f1"] == 0 for label, row in full["per_class"].items()
               if label not in compact["per_class"])
    assert all(full["per_class_roc_auc"][label] is None for label in full["roc_auc_skipped"])
    assert compact["roc_auc_skipped_count"] == len(full["roc_auc_skipped"])
    for key in ("n", "labels", "accuracy", "macro_f1", "weighted_f1", "roc_auc", "auprc", "log_loss", "ece"):
        assert compact[key] == full[key], key


def test_compact_confusion_plot_shows_the_most_confused_classes(tmp_path: Path) -> None:
    from neogen.evaluate import PLOT_CLASSES, _confusion_view

    y, probs, labels = synthetic_run(400, 500, seed=2)
    m = classification_metrics(y, probs, labels)
    shown, counts, totals, title = _confusion_view(m)
    assert len(shown) == PLOT_CLASSES + 1 and shown[-1] == "(other)"
    assert {"label_00007", "label_00042"} <= set(shown)
    assert counts[shown.index("label_00007"), shown.index("label_00042")] == 8
    assert counts.sum() == totals.sum() == 400
    assert "most confused of 500 classes" in title
    plot_confusion_matrix(m, tmp_path / "cm.png")
    plot_roc_curves(y, probs, labels, tmp_path / "roc.png")
    for name in ("cm.png", "roc.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_log_loss_is_scikit_learns() -> None:
    from sklearn.metrics import log_loss as sklearn_log_loss

    y, probs, labels = synthetic_run(200, 30, seed=3)
    probs = probs.astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    probs[0] = np.eye(30)[(y[0] + 1) % 30]  # a true-class probability of 0: clipped, not infinite
    m = classification_metrics(y, probs, labels)
    assert m["log_loss"] == pytest.approx(sklearn_log_loss(y, probs, labels=list(range(30))), rel=1e-12)
