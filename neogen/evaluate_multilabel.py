"""Metrics and plots for a multi-label classifier: one independent probability and yes/no decision per label.

The multi-label counterpart of `neogen.evaluate`. Every number comes from scikit-learn on the (N, L) indicator
matrices; this module validates the inputs, leaves out of ROC AUC the labels whose column holds a single
class (AUC is undefined there), and writes plain JSON, two PNG figures and a terminal summary under the same
file names as the single-label evaluation. Decisions are passed in (see `neogen.thresholds`), so the metrics
describe exactly the thresholds that prediction uses.

Many labels: above COMPACT_ABOVE labels (shared with `neogen.evaluate`) metrics.json is compact, `"compact": true`,
with the same values as the small form but fewer listed. `per_label` lists the labels that are true or predicted in
some row; any other label has support 0, is never predicted, has TN = n, FP = FN = TP = 0, precision, recall and F1
0 and no ROC AUC. `roc_auc_skipped_count` replaces the list `roc_auc_skipped`. The confusion plot then shows the
PLOT_CLASSES labels with the most errors (FP + FN), the ROC plot the ROC_CLASSES labels with the most positives and
the micro-average, and the terminal summary the SUMMARY_CLASSES labels with the most positives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import sparse
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.metrics import auc as area_under

from neogen.evaluate import (
    COMPACT_ABOVE,
    PLOT_CLASSES,
    ROC_CLASSES,
    SUMMARY_CLASSES,
    colours_for,
    fmt,
    json_default,
    log_skipped,
)

logger = logging.getLogger(__name__)

CONFUSION_COLUMNS = ("TN", "FP", "FN", "TP")


def _indicator(name: str, values: Any, shape: tuple[int, ...] | None, width: int) -> np.ndarray:
    """An (N, width) 0/1 matrix as bool; ValueError naming the first bad row/column otherwise."""
    m = np.asarray(values)
    if m.ndim != 2 or m.shape[1] != width:
        raise ValueError(f"{name} must be 2-D (N, {width}), one column per label, got shape {m.shape}")
    if shape is not None and m.shape != shape:
        raise ValueError(f"{name} has shape {m.shape} but y_true has shape {shape}")
    if m.shape[0] == 0:
        raise ValueError(f"{name} is empty: nothing to evaluate")
    if m.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold 0/1 values, got dtype {m.dtype}")
    bad = np.argwhere(~np.isin(m, (0, 1)))
    if bad.size:
        row, col = (int(i) for i in bad[0])
        raise ValueError(
            f"{name} must hold only 0/1 values; {len(bad)} cell(s) do not, first at row {row}, column {col} "
            f"(value {m[row, col]!r})"
        )
    return m.astype(bool)


def _probabilities(probs: Any, shape: tuple[int, ...]) -> np.ndarray:
    """(N, L) finite probabilities in [0, 1] as float64; ValueError otherwise."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != shape:
        raise ValueError(f"probs has shape {p.shape} but y_true has shape {shape} (one column per label)")
    bad_rows = np.flatnonzero(~np.isfinite(p).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"probs has NaN or infinite values in {bad_rows.size} row(s), first at row {int(bad_rows[0])}"
        )
    if (p < 0).any() or (p > 1).any():
        raise ValueError(
            f"probs must lie in [0, 1] (per-label sigmoid outputs, not logits); got min {p.min():.4g}, "
            f"max {p.max():.4g}"
        )
    return p


def _label_list(labels: Sequence[str]) -> list[str]:
    """Labels as strings; ValueError when there are fewer than two or some repeat."""
    label_list = [str(label) for label in labels]
    if len(label_list) < 2:  # scikit-learn reads a single 0/1 column as a binary task, not as one label
        raise ValueError(f"need at least 2 labels to evaluate a multi-label classifier, got {label_list}")
    if len(set(label_list)) != len(label_list):
        duplicates = sorted({label for label in label_list if label_list.count(label) > 1})
        raise ValueError(f"labels must be unique; repeated: {duplicates}")
    return label_list


def _validate(
    y_true: np.ndarray, probs: np.ndarray, predictions: np.ndarray, labels: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes and values; return the labels, y_true and predictions as bool (N, L), probs as float64."""
    label_list = _label_list(labels)
    y = _indicator("y_true", y_true, None, len(label_list))
    pred = _indicator("predictions", predictions, y.shape, len(label_list))
    return label_list, y, _probabilities(probs, y.shape), pred


def multilabel_metrics(
    y_true: np.ndarray, probs: np.ndarray, predictions: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """F1 (micro, macro, samples), precision, recall, Hamming loss, subset accuracy and ROC AUC as plain JSON.

    y_true: (N, L) 0/1; probs: (N, L) in [0, 1]; predictions: (N, L) bool decisions, L == len(labels).
    Micro- and macro-F1 follow scikit-learn with zero_division=0, as published multi-label figures do: in macro-F1
    a label that is neither true nor predicted in any row counts as 0. Samples-F1 scores a row with no true and no
    predicted label as 1 (zero_division=1): with data.allow_empty, "no label" is a right answer. ROC AUC is the
    macro average over the labels whose column holds both classes (the rest are listed in `roc_auc_skipped`);
    `roc_auc_micro` pools every cell. `per_label` also carries the TN/FP/FN/TP counts for the confusion plot.
    Above COMPACT_ABOVE labels the dict is compact (module docstring).
    """
    label_list, y, p, pred = _validate(y_true, probs, predictions, labels)
    # scikit-learn gives the same numbers for sparse indicator matrices, and checks those far faster at many labels.
    ys, preds = sparse.csr_matrix(y), sparse.csr_matrix(pred)
    precision, recall, f1, support = precision_recall_fscore_support(ys, preds, zero_division=0)
    confusion = multilabel_confusion_matrix(ys, preds)  # (L, 2, 2): [[TN, FP], [FN, TP]]
    predicted = pred.sum(axis=0)

    # ROC AUC is defined where a column holds both classes; the others are skipped without looking at them.
    aucs: list[float | None] = [None] * len(label_list)
    for j in np.flatnonzero((support > 0) & (support < y.shape[0])):
        aucs[j] = float(roc_auc_score(y[:, j], p[:, j]))
    skipped = [label for label, auc in zip(label_list, aucs, strict=True) if auc is None]
    defined = [auc for auc in aucs if auc is not None]
    roc_auc = float(np.mean(defined)) if defined else None
    roc_auc_micro = float(roc_auc_score(y.ravel(), p.ravel())) if 0 < y.sum() < y.size else None
    log_skipped("label(s) with a single class in y_true, left out of ROC AUC", skipped)

    compact = len(label_list) > COMPACT_ABOVE
    listed = np.flatnonzero((support > 0) | (predicted > 0)) if compact else range(len(label_list))
    per_label = {}
    for j in listed:
        (tn, fp), (fn, tp) = confusion[j].tolist()
        per_label[label_list[j]] = {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                                    "support": int(support[j]), "roc_auc": aucs[j], "predicted": int(predicted[j]),
                                    "tn": tn, "fp": fp, "fn": fn, "tp": tp}
    metrics = {
        "n": int(y.shape[0]),
        "labels": label_list,
        "micro_f1": float(f1_score(ys, preds, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(ys, preds, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(ys, preds, average="samples", zero_division=1.0)),
        "micro_precision": float(precision_score(ys, preds, average="micro", zero_division=0)),
        "micro_recall": float(recall_score(ys, preds, average="micro", zero_division=0)),
        "hamming_loss": float(hamming_loss(ys, preds)),
        "subset_accuracy": float(accuracy_score(ys, preds)),
        "roc_auc": roc_auc,
        "roc_auc_micro": roc_auc_micro,
        "per_label": per_label,
        "roc_auc_skipped": skipped,
        "label_cardinality": {"true": float(y.sum(axis=1).mean()), "predicted": float(pred.sum(axis=1).mean())},
        "empty_predictions": int((~pred.any(axis=1)).sum()),
    }
    if compact:
        del metrics["roc_auc_skipped"]
        metrics = {"compact": True, **metrics, "roc_auc_skipped_count": len(skipped)}
    return metrics


def _save(fig: Figure, path: Path, what: str) -> None:
    """Write a figure as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    logger.debug("wrote %s plot to %s", what, path)


def plot_per_label_roc(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], path: Path) -> None:
    """Save one ROC curve per label whose column holds both classes (AUC in the legend), the micro-average
    curve over all cells, and the chance line. With more than 10 labels the legend moves outside, in small type.
    Above COMPACT_ABOVE labels, only the ROC_CLASSES labels with the most positives get a curve.
    """
    label_list = _label_list(labels)
    y = _indicator("y_true", y_true, None, len(label_list))
    p = _probabilities(probs, y.shape)
    positives = y.sum(axis=0)
    drawn = np.flatnonzero((positives > 0) & (positives < y.shape[0]))
    title = f"ROC curves per label (n={y.shape[0]})"
    if len(label_list) > COMPACT_ABOVE and len(drawn) > ROC_CLASSES:
        title = f"ROC curves of the {ROC_CLASSES} labels with the most positives, of {len(drawn)} (n={y.shape[0]})"
        drawn = np.sort(drawn[np.argsort(-positives[drawn], kind="stable")[:ROC_CLASSES]])

    fig = Figure(figsize=(8.5 if len(drawn) > 10 else 6.5, 6.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC = 0.5)")
    for colour, j in zip(colours_for(len(drawn)), drawn, strict=True):
        fpr, tpr, _ = roc_curve(y[:, j], p[:, j])
        auc = area_under(fpr, tpr)
        ax.plot(fpr, tpr, color=colour, linewidth=1.2, label=f"{label_list[j]} (AUC = {auc:.3f})")
    if 0 < y.sum() < y.size:
        fpr, tpr, _ = roc_curve(y.ravel(), p.ravel())  # one sort of all N x L cells; the AUC is read off it
        auc = area_under(fpr, tpr)
        ax.plot(fpr, tpr, color="black", linewidth=2.2, label=f"micro-average (AUC = {auc:.3f})")
    if not len(drawn):
        ax.text(0.5, 0.6, "ROC undefined: no label has both classes in y_true", ha="center", va="center")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if len(drawn) > 10:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6, ncol=1 + len(drawn) // 36)
    else:
        ax.legend(loc="lower right", fontsize=8)
    _save(fig, path, "per-label ROC")


def plot_per_label_confusion(metrics: dict[str, Any], path: Path) -> None:
    """Save a heatmap with one row per label and columns TN, FP, FN, TP (counts in the cells).

    Colour is the share of the true class (TN and FP of the negatives, FN and TP of the positives), so a row
    reads as specificity, false-positive rate, miss rate and recall; one compact row per label stays readable
    for dozens of labels where a grid of 2x2 matrices would not. A compact evaluation (many labels) shows the
    PLOT_CLASSES labels with the most errors (FP + FN; ties by support, then label order).
    """
    labels, title = _confusion_rows(metrics)
    counts = np.array([[metrics["per_label"][label][c.lower()] for c in CONFUSION_COLUMNS] for label in labels])
    negatives = counts[:, :2].sum(axis=1, keepdims=True)
    positives = counts[:, 2:].sum(axis=1, keepdims=True)
    totals = np.hstack([negatives, negatives, positives, positives])
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)

    k = len(labels)
    longest = min(max(len(label) for label in labels), 30)
    font = float(np.clip(11 - 0.08 * k, 7, 10))
    fig = Figure(figsize=(4.5 + 0.09 * longest, min(max(2.5, 0.32 * k + 1.5), 30.0)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.08, pad=0.04, label="share of true class")
    ax.set_xticks(range(4), labels=list(CONFUSION_COLUMNS), fontsize=font)
    ax.xaxis.tick_top()
    ax.set_yticks(range(k), labels=labels, fontsize=font)
    ax.set_title(title, fontsize=font + 1)
    for i in range(k):
        for j in range(4):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if shares[i, j] > 0.5 else "black",
            )
    _save(fig, path, "per-label confusion")


def _confusion_rows(metrics: dict[str, Any]) -> tuple[list[str], str]:
    """The labels of the confusion plot, in label order, and its title: all, or the PLOT_CLASSES with the most
    errors (FP + FN; ties by support, then label order) when the metrics are compact."""
    labels = [str(label) for label in metrics["labels"]]
    if not metrics.get("compact"):
        return labels, f"Per-label confusion counts (n={metrics['n']})"
    rows = metrics["per_label"]  # in label order, which the stable sort keeps for ties
    worst = set(sorted(rows, key=lambda label: (-(rows[label]["fp"] + rows[label]["fn"]),
                                                -rows[label]["support"]))[:PLOT_CLASSES])
    shown = [label for label in rows if label in worst]
    return shown, (f"Per-label confusion counts: the {len(shown)} labels with the most errors, of {len(labels)} "
                   f"(n={metrics['n']})")


def write_multilabel_evaluation(
    out_dir: Path,
    y_true: np.ndarray,
    probs: np.ndarray,
    predictions: np.ndarray,
    labels: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the metrics, add `extra` (split, thresholds, ...) and write them with both plots.

    Writes out_dir/metrics.json, out_dir/confusion_matrix.png and out_dir/roc_curves.png (the single-label
    file names); returns the metrics dict including `extra`. A key of `extra` that would overwrite a metric
    raises ValueError.
    """
    metrics = multilabel_metrics(y_true, probs, predictions, labels)
    if extra:
        clashes = sorted(set(extra) & set(metrics))
        if clashes:
            raise ValueError(f"extra keys would overwrite computed metrics: {clashes}")
        metrics.update(extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "metrics.json").open("w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2, default=json_default)
        handle.write("\n")
    plot_per_label_confusion(metrics, out / "confusion_matrix.png")
    plot_per_label_roc(y_true, probs, labels, out / "roc_curves.png")
    logger.info("wrote metrics.json, confusion_matrix.png and roc_curves.png to %s", out)
    return metrics


def format_multilabel_metrics(metrics: dict[str, Any]) -> str:
    """A compact terminal summary: headline numbers, then precision/recall/F1/support/AUC per label.

    A compact evaluation (many labels) lists the SUMMARY_CLASSES labels with the most positives; metrics.json holds
    every label that occurs.
    """
    labels = [str(label) for label in metrics["labels"]]
    cardinality = metrics["label_cardinality"]
    lines = [
        f"n={metrics['n']}  micro-F1={fmt(metrics['micro_f1'])}  macro-F1={fmt(metrics['macro_f1'])}  "
        f"samples-F1={fmt(metrics['samples_f1'])}  ROC AUC={fmt(metrics['roc_auc'])}  "
        f"Hamming loss={fmt(metrics['hamming_loss'])}  subset accuracy={fmt(metrics['subset_accuracy'])}",
        f"labels per row: true {cardinality['true']:.3f}, predicted {cardinality['predicted']:.3f}; "
        f"rows with no predicted label: {metrics['empty_predictions']}",
    ]
    if metrics.get("roc_auc_skipped"):
        lines.append(f"(single class in y_true, not in ROC AUC: {', '.join(metrics['roc_auc_skipped'])})")
    if metrics.get("roc_auc_skipped_count"):
        lines.append(f"({metrics['roc_auc_skipped_count']} of {len(labels)} labels with a single class in y_true, "
                     "not in ROC AUC)")
    rows = metrics["per_label"]
    if metrics.get("compact"):
        # per_label is in label order, and the sort is stable: ties stay in it.
        labels = sorted(rows, key=lambda label: -rows[label]["support"])[:SUMMARY_CLASSES]
    width = max(len("label"), *(len(label) for label in labels))
    lines.append("")
    if metrics.get("compact"):
        lines.append(f"the {len(labels)} labels with the most positives, of {len(metrics['labels'])} (every label "
                     "that occurs is in metrics.json):")
    lines.append(
        f"{'label':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}  {'predicted':>9}  "
        f"{'AUC':>9}"
    )
    for label in labels:
        row = rows[label]
        lines.append(
            f"{label:<{width}}  {row['precision']:>9.4f}  {row['recall']:>9.4f}  {row['f1']:>9.4f}  "
            f"{row['support']:>8d}  {row['predicted']:>9d}  {fmt(row['roc_auc']):>9}"
        )
    return "\n".join(lines)
