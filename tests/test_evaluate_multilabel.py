"""Tests for neogen.evaluate_multilabel: hand-checked values, agreement with sklearn, validation, written files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, hamming_loss, roc_auc_score

from neogen.evaluate_multilabel import (
    format_multilabel_metrics,
    multilabel_metrics,
    plot_per_label_confusion,
    plot_per_label_roc,
    write_multilabel_evaluation,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Four rows, three labels; predictions are probs >= 0.5. The last row has no true and no predicted label.
LABELS = ["joy", "anger", "fear"]
Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
PROBS = np.array([[0.9, 0.45, 0.3], [0.2, 0.7, 0.6], [0.8, 0.4, 0.1], [0.1, 0.2, 0.2]])
PRED = PROBS >= 0.5  # [[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 0]]


def test_hand_computed_values() -> None:
    m = multilabel_metrics(Y, PROBS, PRED, LABELS)
    assert m["n"] == 4
    assert m["labels"] == LABELS
    # joy: TP 2 -> F1 1; anger: TP 1, FN 1 -> P 1, R 1/2, F1 2/3; fear: FP 1, FN 1 -> F1 0.
    assert m["per_label"]["joy"] == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2, "roc_auc": 1.0, "predicted": 2,
         "tn": 2, "fp": 0, "fn": 0, "tp": 2}
    )
    assert m["per_label"]["anger"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "roc_auc": 0.75, "predicted": 1,
         "tn": 2, "fp": 0, "fn": 1, "tp": 1}
    )
    assert m["per_label"]["fear"] == pytest.approx(
        {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "roc_auc": 2 / 3, "predicted": 1,
         "tn": 2, "fp": 1, "fn": 1, "tp": 0}
    )
    # Pooled: TP 3, FP 1, FN 2.
    assert m["micro_precision"] == pytest.approx(3 / 4)
    assert m["micro_recall"] == pytest.approx(3 / 5)
    assert m["micro_f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # Rows: 2/3, 2/3, 2/3, and 1 for the empty row predicted empty (a right answer).
    assert m["samples_f1"] == pytest.approx(0.75)
    assert m["hamming_loss"] == pytest.approx(3 / 12)
    assert m["subset_accuracy"] == pytest.approx(1 / 4)  # only the empty row matches exactly
    assert m["roc_auc"] == pytest.approx((1 + 0.75 + 2 / 3) / 3)
    assert m["roc_auc_micro"] == pytest.approx(31 / 35)  # 31 of the 5 x 7 positive/negative cell pairs
    assert m["roc_auc_skipped"] == []
    assert m["label_cardinality"] == pytest.approx({"true": 5 / 4, "predicted": 1.0})
    assert m["empty_predictions"] == 1
    assert json.loads(json.dumps(m)) == m  # plain JSON without a default hook


def test_agrees_with_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < [0.05, 0.1, 0.2, 0.3, 0.5, 0.7]).astype(int)
    probs = np.clip(0.3 * y + 0.7 * rng.random(y.shape), 0, 1)
    pred = probs >= 0.45
    m = multilabel_metrics(y, probs, pred, list("abcdef"))
    for average in ("micro", "macro", "samples"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(y, pred, average=average, zero_division=0), abs=1e-12)
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, pred))
    assert m["subset_accuracy"] == pytest.approx(float(np.mean((y == pred).all(axis=1))))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, average="macro"), abs=1e-12)
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(y, probs, average="micro"), abs=1e-12)
    per_label_f1 = f1_score(y, pred, average=None, zero_division=0)
    assert [m["per_label"][c]["f1"] for c in "abcdef"] == pytest.approx(per_label_f1.tolist())
    assert m["empty_predictions"] == int((~pred.any(axis=1)).sum())


def test_single_class_columns_are_left_out_of_auc() -> None:
    y = Y.copy()
    y[:, 2] = 0  # "fear" never true
    m = multilabel_metrics(y, PROBS, PRED, LABELS)
    assert m["roc_auc_skipped"] == ["fear"]
    assert m["per_label"]["fear"]["roc_auc"] is None
    assert m["roc_auc"] == pytest.approx((1 + 0.75) / 2)

    always = np.array([[1, 0], [1, 0]])
    m = multilabel_metrics(always, np.array([[0.9, 0.1], [0.6, 0.2]]), always.astype(bool), ["on", "off"])
    assert m["roc_auc"] is None
    assert m["roc_auc_skipped"] == ["on", "off"]
    assert m["roc_auc_micro"] == pytest.approx(1.0)  # pooled cells still hold both classes

    none = np.zeros((2, 2), dtype=int)
    m = multilabel_metrics(none, np.full((2, 2), 0.3), none.astype(bool), ["on", "off"])
    assert m["roc_auc"] is None
    assert m["roc_auc_micro"] is None
    assert m["micro_f1"] == 0.0  # scikit-learn's convention, as published figures use
    assert m["samples_f1"] == 1.0  # every row rightly empty


@pytest.mark.parametrize(
    ("y", "probs", "pred", "labels", "match"),
    [
        (Y, PROBS, PRED, ["joy", "anger"], r"y_true must be 2-D \(N, 2\)"),
        (Y, PROBS, PRED, ["joy", "joy", "fear"], r"repeated: \['joy'\]"),
        (Y[:, :1], PROBS[:, :1], PRED[:, :1], ["joy"], r"at least 2 labels .* got \['joy'\]"),
        (Y[0], PROBS[0], PRED[0], LABELS, "y_true must be 2-D"),
        (Y[:0], PROBS[:0], PRED[:0], LABELS, "empty"),
        (Y * 2, PROBS, PRED, LABELS, "y_true must hold only 0/1 values; 5 cell"),
        (Y, PROBS, PRED[:3], LABELS, r"predictions has shape \(3, 3\)"),
        (Y, PROBS, PRED.astype(int) + 1, LABELS, "predictions must hold only 0/1"),
        (Y, PROBS[:, :2], PRED, LABELS, "probs has shape"),
        (Y, np.where(PROBS > 0.85, np.nan, PROBS), PRED, LABELS, "NaN or infinite values in 1 row"),
        (Y, PROBS * 3 - 1, PRED, LABELS, r"probs must lie in \[0, 1\]"),
    ],
)
def test_invalid_inputs_raise(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, labels: list[str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        multilabel_metrics(y, probs, pred, labels)


def test_write_evaluation_files(tmp_path: Path) -> None:
    out = tmp_path / "eval" / "test"
    extra = {"split": "test", "data": tmp_path / "data.jsonl", "thresholds": {"mode": "per_label"}}
    m = write_multilabel_evaluation(out, Y, PROBS, PRED, LABELS, extra=extra)
    loaded = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert loaded["data"] == str(tmp_path / "data.jsonl")
    assert loaded["split"] == "test"
    assert loaded["micro_f1"] == pytest.approx(m["micro_f1"])
    assert loaded["per_label"] == m["per_label"]
    for name in ("confusion_matrix.png", "roc_curves.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 5_000
    with pytest.raises(ValueError, match=r"overwrite computed metrics: \['hamming_loss', 'n'\]"):
        write_multilabel_evaluation(tmp_path, Y, PROBS, PRED, LABELS, extra={"n": 1, "hamming_loss": 0.0})


def test_plots_with_28_labels_and_degenerate_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = [f"emotion_{i:02d}" for i in range(28)]
    y = (rng.random((120, 28)) < 0.15).astype(int)
    y[:, 0] = 0  # no positives: no ROC curve, a TP/FN row of zeros
    probs = np.clip(0.3 * y + 0.7 * rng.random(y.shape), 0, 1)
    plot_per_label_confusion(multilabel_metrics(y, probs, probs >= 0.5, labels), tmp_path / "cm.png")
    plot_per_label_roc(y, probs, labels, tmp_path / "roc.png")
    plot_per_label_roc(np.zeros((3, 2), dtype=int), np.full((3, 2), 0.5), ["a", "b"], tmp_path / "roc0.png")
    for name in ("cm.png", "roc.png", "roc0.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 5_000


def test_format_multilabel_metrics() -> None:
    y = Y.copy()
    y[:, 2] = 0
    text = format_multilabel_metrics(multilabel_metrics(y, PROBS, PRED, LABELS))
    lines = text.splitlines()
    assert lines[0] == (
        "n=4  micro-F1=0.7500  macro-F1=0.5556  samples-F1=0.8333  ROC AUC=0.8750  Hamming loss=0.1667  "
        "subset accuracy=0.5000"
    )
    assert "rows with no predicted label: 1" in lines[1]
    assert "(single class in y_true, not in ROC AUC: fear)" in text
    assert lines[-3].split() == ["joy", "1.0000", "1.0000", "1.0000", "2", "2", "1.0000"]
    assert lines[-1].split() == ["fear", "0.0000", "0.0000", "0.0000", "0", "1", "n/a"]


def synthetic_multilabel(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """n rows with one to three of k labels each (a few frequent, most rare or absent), scores that miss some true
    labels, one false label predicted per row, and label 42 predicted in the first 30 rows where it is false."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, k), dtype=np.int8)
    for i in range(n):
        y[i, rng.zipf(1.3, size=rng.integers(1, 4)) % k] = 1
    y[:30, 42] = 0
    probs = (0.45 * y + 0.35 * rng.random((n, k))).astype(np.float32)
    probs[np.arange(n), rng.integers(0, k, size=n)] = 0.7
    probs[:30, 42] = 0.9
    return y, probs, [f"label_{i:05d}" for i in range(k)]


def test_multilabel_evaluation_at_10000_labels_is_compact(tmp_path: Path) -> None:
    y, probs, labels = synthetic_multilabel(1000, 10_000)
    pred = probs >= 0.5
    m = write_multilabel_evaluation(tmp_path, y, probs, pred, labels, extra={"data": "synthetic"})
    assert (tmp_path / "metrics.json").stat().st_size < 1_500_000
    loaded = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    occurring = np.flatnonzero(y.any(axis=0) | pred.any(axis=0))
    assert loaded["compact"] is True and "roc_auc_skipped" not in loaded and loaded["data"] == "synthetic"
    assert list(loaded["per_label"]) == [labels[j] for j in occurring]
    both = (y.sum(axis=0) > 0) & (y.sum(axis=0) < 1000)
    assert loaded["roc_auc_skipped_count"] == 10_000 - both.sum()
    assert loaded["per_label"]["label_00042"]["fp"] == 30
    assert loaded["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert loaded["roc_auc_micro"] == pytest.approx(roc_auc_score(y.ravel(), probs.ravel()))
    for name in ("confusion_matrix.png", "roc_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    text = format_multilabel_metrics(m)
    assert len(text.splitlines()) < 60


def test_compact_multilabel_metrics_hold_the_values_of_the_full_form(monkeypatch: pytest.MonkeyPatch) -> None:
    from neogen import evaluate_multilabel
    from neogen.evaluate_multilabel import _confusion_rows

    y, probs, labels = synthetic_multilabel(200, 80, seed=1)
    pred = probs >= 0.5
    compact = multilabel_metrics(y, probs, pred, labels)
    monkeypatch.setattr(evaluate_multilabel, "COMPACT_ABOVE", 80)
    full = multilabel_metrics(y, probs, pred, labels)
    assert compact["compact"] is True and "compact" not in full
    assert compact["per_label"] == {label: row for label, row in full["per_label"].items()
                                    if label in compact["per_label"]}
    assert all(row["support"] == row["predicted"] == 0 and row["tn"] == 200 and row["roc_auc"] is None
               for label, row in full["per_label"].items() if label not in compact["per_label"])
    assert compact["roc_auc_skipped_count"] == len(full["roc_auc_skipped"])
    for key in ("micro_f1", "macro_f1", "samples_f1", "roc_auc", "roc_auc_micro", "hamming_loss", "subset_accuracy"):
        assert compact[key] == full[key], key
    shown, title = _confusion_rows(compact)
    assert len(shown) == 30 and "label_00042" in shown and "the 30 labels with the most errors, of 80" in title
