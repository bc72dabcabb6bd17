"""Metrics and plots for a single-label classifier that outputs one probability per class.

Every number comes from scikit-learn (the log loss and ECE are computed here the way scikit-learn and Guo et al.
define them); this module only validates the inputs, handles the classes that are absent from an evaluation split
(their ROC AUC and average precision are undefined), and turns the results into plain JSON, two PNG figures and a
terminal summary. Figures are drawn on `matplotlib.figure.Figure` without pyplot, so plotting is thread-safe and
needs no display.

Many labels. Up to COMPACT_ABOVE labels, metrics.json holds the dense K x K `confusion_matrix` and an entry per
class. Above it (a run with thousands of labels) that would grow with K squared, so metrics.json is compact and
says so with `"compact": true`; every value in it is the same as the small form's, only fewer are listed:

- `confusion_counts` replaces `confusion_matrix`: the non-zero cells as `[true, predicted, count]`, the first two
  indexes into `labels`, sorted by true then predicted index; every other cell is 0.
- `per_class` lists the classes that occur in y_true or in the predictions; any other class has support 0, is never
  predicted, and has precision, recall and F1 0.
- `per_class_roc_auc` and `per_class_auprc` list the classes present in y_true (the others are undefined, None in
  the small form), and `roc_auc_skipped_count` replaces the list `roc_auc_skipped` of the classes absent from y_true.

The plots and the terminal summary then show a bounded number of classes: the confusion matrix of the PLOT_CLASSES
classes with the most errors, the ROC curves of the ROC_CLASSES most frequent classes, and the SUMMARY_CLASSES most
frequent classes with the most frequent confusions. The work is linear in the size of probs (N x K): per-class
scores are computed for the classes present in y_true only, as scikit-learn's macro one-vs-rest average does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.metrics import auc as area_under

from neogen.calibration import expected_calibration_error

logger = logging.getLogger(__name__)

# Rows of `probs` may drift from 1 by float32/bfloat16 rounding of a softmax; beyond this they are not
# probabilities (logits, say) and are refused. Within it they are renormalised before scoring.
ROW_SUM_TOLERANCE = 1e-2
# Above this many labels metrics.json is compact, and plots and summary show a bounded number of classes.
COMPACT_ABOVE = 50
PLOT_CLASSES = 30
ROC_CLASSES = 10
SUMMARY_CLASSES = 30


def _validate(
    y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes, values, class indexes; return y_true as int64 and probs as float64 rows summing to 1."""
    label_list = [str(label) for label in labels]
    if len(label_list) < 2:
        raise ValueError(f"need at least 2 labels to evaluate a classifier, got {len(label_list)}")
    if len(set(label_list)) != len(label_list):
        duplicates = sorted({label for label in label_list if label_list.count(label) > 1})
        raise ValueError(f"labels must be unique; repeated: {duplicates}")

    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one class index per row), got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y_true is empty: nothing to evaluate")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"y_true must hold integer class indexes, got dtype {y.dtype}")
    y = y.astype(np.int64)

    p = np.array(probs, dtype=np.float64)  # a copy: renormalised in place below
    k = len(label_list)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K), got shape {p.shape}")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but y_true has {y.shape[0]} entries")
    if p.shape[1] != k:
        raise ValueError(f"probs has {p.shape[1]} columns but there are {k} labels")
    bad_rows = np.flatnonzero(~np.isfinite(p).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"probs has NaN or infinite values in {bad_rows.size} row(s), first at row {int(bad_rows[0])}"
        )
    if (p < 0).any() or (p > 1 + ROW_SUM_TOLERANCE).any():
        raise ValueError(f"probs must lie in [0, 1]; got min {p.min():.4g}, max {p.max():.4g}")
    sums = p.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if off.size:
        row = int(off[0])
        raise ValueError(
            f"probs rows must sum to 1 (softmax outputs, not logits); {off.size} row(s) do not, "
            f"first at row {row} (sum {sums[row]:.4g})"
        )
    out_of_range = np.flatnonzero((y < 0) | (y >= k))
    if out_of_range.size:
        row = int(out_of_range[0])
        raise ValueError(
            f"y_true has {out_of_range.size} class index(es) outside [0, {k - 1}], first at row {row} "
            f"(value {int(y[row])})"
        )
    p /= sums[:, None]
    return y, p


def _ovr_scores(
    y: np.ndarray, p: np.ndarray, present: list[int], k: int
) -> tuple[list[float | None], list[float | None]]:
    """Per-class one-vs-rest ROC AUC and average precision; None where the class is absent or alone."""
    aucs: list[float | None] = [None] * k
    aps: list[float | None] = [None] * k
    if len(present) < 2:
        return aucs, aps
    for c in present:
        positive = y == c
        aucs[c] = float(roc_auc_score(positive, p[:, c]))
        aps[c] = float(average_precision_score(positive, p[:, c]))
    return aucs, aps


def _ovr_average(scores: list[float | None], present: list[int], k: int) -> float | None:
    """The macro average of per-class scores over the classes present in y_true (for K == 2: the score of the
    positive class labels[1]); None with fewer than 2 classes present."""
    if len(present) < 2:
        return None
    if k == 2:
        return scores[1]
    return float(np.mean([scores[c] for c in present]))


def log_skipped(what: str, skipped: list[str]) -> None:
    """Log the labels left out of a metric, naming at most SUMMARY_CLASSES of them."""
    if skipped:
        more = ", ..." if len(skipped) > SUMMARY_CLASSES else ""
        logger.info("%d %s: %s%s", len(skipped), what, ", ".join(skipped[:SUMMARY_CLASSES]), more)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """scikit-learn's log_loss for class indexes y and (N, K) rows summing to 1, without its (N, K) one-hot matrix.

    The same number: probabilities clipped to [eps, 1 - eps] (eps of their dtype), then the mean of -log of each
    row's true-class probability. The one-hot matrix scikit-learn builds would be the largest thing evaluation
    holds at thousands of labels.
    """
    eps = np.finfo(p.dtype).eps
    return float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], eps, 1 - eps))))


def classification_metrics(y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, F1, ROC AUC, AUPRC, log loss, ECE and the confusion matrix as a JSON-serialisable dict.

    y_true: class indexes into labels (N,); probs: (N, K) rows summing to 1, K == len(labels).
    Predictions are the argmax of probs. ROC AUC and AUPRC are macro one-vs-rest averages over the classes
    present in y_true (for K == 2: the positive class labels[1]); classes absent from y_true have no defined
    AUC and are listed under `roc_auc_skipped`. Macro-F1 averages over the classes that occur in y_true or in
    the predictions (scikit-learn's default), so a class absent from both does not count as a zero.
    Above COMPACT_ABOVE labels the dict is compact (module docstring).
    """
    y, p = _validate(y_true, probs, labels)
    label_list = [str(label) for label in labels]
    k = len(label_list)
    all_classes = list(range(k))
    pred = p.argmax(axis=1)

    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=all_classes, zero_division=0
    )
    present = sorted(int(c) for c in np.unique(y))
    compact = k > COMPACT_ABOVE
    listed = sorted(set(present) | {int(c) for c in np.unique(pred)}) if compact else all_classes
    per_class = {label_list[c]: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                                 "support": int(support[c])} for c in listed}

    skipped = [label_list[c] for c in sorted(set(all_classes) - set(present))]
    aucs, aps = _ovr_scores(y, p, present, k)
    roc_auc, auprc = _ovr_average(aucs, present, k), _ovr_average(aps, present, k)
    if len(present) < 2:
        logger.warning("only %d class(es) present in y_true: ROC AUC and AUPRC are undefined", len(present))
    log_skipped("class(es) absent from y_true, left out of ROC AUC/AUPRC", skipped)

    scored = present if compact else all_classes
    metrics = {
        "n": int(y.shape[0]),
        "labels": label_list,
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "per_class": per_class,
        "roc_auc": roc_auc,
        "roc_auc_skipped": skipped,
        "per_class_roc_auc": {label_list[c]: aucs[c] for c in scored},
        "auprc": auprc,
        "per_class_auprc": {label_list[c]: aps[c] for c in scored},
        "log_loss": log_loss(y, p),
        "ece": expected_calibration_error(y, p),
    }
    if not compact:
        return metrics | {"confusion_matrix": confusion_matrix(y, pred, labels=all_classes).astype(int).tolist()}
    del metrics["roc_auc_skipped"]
    return {"compact": True, **metrics, "roc_auc_skipped_count": len(skipped),
            "confusion_counts": confusion_counts(y, pred, k)}


def confusion_counts(y: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    """The non-zero cells of the K x K confusion matrix as [true, predicted, count], in row-major order.

    Linear in the rows: the dense matrix of a 10,000-label run would hold 10^8 cells.
    """
    cells, counts = np.unique(np.asarray(y, dtype=np.int64) * k + np.asarray(pred, dtype=np.int64),
                              return_counts=True)
    return [[int(cell // k), int(cell % k), int(count)] for cell, count in zip(cells, counts, strict=True)]


def plot_confusion_matrix(metrics: dict[str, Any], path: Path) -> None:
    """Save the confusion matrix as an annotated heatmap (counts in cells, colour = share of the true class).

    Colouring by row share keeps rare classes visible next to frequent ones; the figure and fonts scale so
    that up to ~50 classes stay readable. A compact evaluation (many labels) shows the PLOT_CLASSES classes with
    the most errors, each row still coloured by its share of all the rows of its true class.
    """
    labels, counts, row_totals, title = _confusion_view(metrics)
    k = len(labels)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape, dtype=float), where=row_totals > 0)

    longest = max(len(label) for label in labels)
    side = min(max(4.0, 0.4 * k + 0.08 * min(longest, 30) + 2.0), 26.0)
    cell_font = float(np.clip(12 - 0.1 * k, 7, 11))
    tick_font = float(np.clip(11 - 0.05 * k, 8, 10))
    rotation = 90 if k > 15 else 45 if k > 6 or longest > 8 else 0

    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(
        range(k),
        labels=labels,
        rotation=rotation,
        ha="right" if rotation == 45 else "center",
        rotation_mode="anchor" if rotation == 45 else "default",
        fontsize=tick_font,
    )
    ax.set_yticks(range(k), labels=labels, fontsize=tick_font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=cell_font,
                color="white" if shares[i, j] > 0.5 else "black",
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    logger.debug("wrote confusion matrix plot to %s", path)


def _confusion_view(metrics: dict[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray, str]:
    """The labels, counts (true x predicted), row totals (rows, 1) and title of the confusion plot.

    For a compact evaluation: the PLOT_CLASSES classes with the most errors, as true or as predicted class (ties
    and error-free runs by support), and a last row and column "(other)" for the classes not shown, so that an
    error into or from a class off the plot still shows in its row.
    """
    labels = [str(label) for label in metrics["labels"]]
    if "confusion_counts" not in metrics:
        counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
        return labels, counts, counts.sum(axis=1, keepdims=True), f"Confusion matrix (n={int(counts.sum())})"
    cells = np.asarray(metrics["confusion_counts"], dtype=np.int64).reshape(-1, 3)
    true, pred, count = cells[:, 0], cells[:, 1], cells[:, 2]
    support = np.bincount(true, weights=count, minlength=len(labels))
    off = true != pred
    errors = np.bincount(np.concatenate([true[off], pred[off]]), weights=np.tile(count[off], 2),
                         minlength=len(labels))
    order = np.lexsort((np.arange(len(labels)), -support, -errors))  # most errors, then most rows, then index
    chosen = np.sort(order[: min(PLOT_CLASSES, len(labels))])
    where = np.full(len(labels), len(chosen))  # a class not shown counts under "(other)", the last row and column
    where[chosen] = np.arange(len(chosen))
    counts = np.zeros((len(chosen) + 1, len(chosen) + 1), dtype=np.int64)
    np.add.at(counts, (where[true], where[pred]), count)
    title = (f"Confusion matrix: the {len(chosen)} most confused of {len(labels)} classes "
             f"(n={int(count.sum())})")
    return [*(labels[c] for c in chosen), "(other)"], counts, counts.sum(axis=1, keepdims=True), title


def colours_for(count: int) -> list[tuple[float, float, float, float]]:
    """Distinct line colours: the tab10/tab20 palettes while they last, evenly spaced turbo beyond."""
    if count <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(count)]
    if count <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(count)]
    return [colormaps["turbo"](x) for x in np.linspace(0.0, 1.0, count)]


def plot_roc_curves(y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str], path: Path) -> None:
    """Save one one-vs-rest ROC curve per class present in y_true (AUC in the legend) plus the chance line.

    For K == 2 only the positive class labels[1] is drawn: the other curve is its mirror with the same AUC.
    Above COMPACT_ABOVE labels, only the ROC_CLASSES classes with the most rows are drawn.
    """
    y, p = _validate(y_true, probs, labels)
    label_list = [str(label) for label in labels]
    k = len(label_list)
    present, support = np.unique(y, return_counts=True)
    classes = [1] if k == 2 else [int(c) for c in present]
    title = "ROC curves (one-vs-rest)" if k > 2 else f"ROC curve (positive class: {label_list[1]})"
    if k > COMPACT_ABOVE and len(classes) > ROC_CLASSES:
        classes = sorted(int(c) for c in present[np.lexsort((present, -support))[:ROC_CLASSES]])
        title = f"ROC curves: the {ROC_CLASSES} most frequent of {len(present)} classes (one-vs-rest)"

    fig = Figure(figsize=(8.5 if k > 10 else 6.5, 6.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance (AUC = 0.5)")
    if len(present) < 2:
        ax.text(0.5, 0.6, "ROC undefined: fewer than 2 classes in y_true", ha="center", va="center")
    else:
        colours = colours_for(len(classes))
        for colour, c in zip(colours, classes, strict=True):
            fpr, tpr, _ = roc_curve(y == c, p[:, c])
            auc = area_under(fpr, tpr)  # what roc_auc_score computes, from the same curve
            ax.plot(fpr, tpr, color=colour, linewidth=1.5, label=f"{label_list[c]} (AUC = {auc:.3f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if len(classes) > 10:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6, ncol=1 + len(classes) // 26)
    else:
        ax.legend(loc="lower right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    logger.debug("wrote ROC curves plot to %s", path)


def json_default(value: Any) -> Any:
    """Make `extra` values JSON-friendly: numpy scalars/arrays to Python, paths and the rest to strings."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_evaluation(
    out_dir: Path,
    y_true: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the metrics, add `extra` (data path, split name, ...) and write them with both plots.

    Writes out_dir/metrics.json, out_dir/confusion_matrix.png and out_dir/roc_curves.png; returns the
    metrics dict including `extra`. A key of `extra` that would overwrite a metric raises ValueError.
    """
    metrics = classification_metrics(y_true, probs, labels)
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
    plot_confusion_matrix(metrics, out / "confusion_matrix.png")
    plot_roc_curves(y_true, probs, labels, out / "roc_curves.png")
    logger.info("wrote metrics.json, confusion_matrix.png and roc_curves.png to %s", out)
    return metrics


def fmt(value: float | None) -> str:
    """A metric with 4 decimals, or n/a where it is undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def format_metrics(metrics: dict[str, Any]) -> str:
    """A compact terminal summary: headline numbers, a per-class table and the labelled confusion matrix.

    A compact evaluation (many labels) lists the SUMMARY_CLASSES classes with the most rows and the most frequent
    confusions instead; metrics.json holds the rest.
    """
    labels = [str(label) for label in metrics["labels"]]
    lines = [
        f"n={metrics['n']}  accuracy={fmt(metrics['accuracy'])}  macro-F1={fmt(metrics['macro_f1'])}  "
        f"weighted-F1={fmt(metrics['weighted_f1'])}  ROC AUC={fmt(metrics['roc_auc'])}  "
        f"AUPRC={fmt(metrics['auprc'])}  log loss={fmt(metrics['log_loss'])}  ECE={fmt(metrics.get('ece'))}"
    ]
    if metrics.get("roc_auc_skipped"):
        lines.append(f"(absent from y_true, not in ROC AUC/AUPRC: {', '.join(metrics['roc_auc_skipped'])})")
    if metrics.get("roc_auc_skipped_count"):
        lines.append(f"({metrics['roc_auc_skipped_count']} of {len(labels)} classes absent from y_true, "
                     "not in ROC AUC/AUPRC)")
    if "confusion_counts" in metrics:
        return "\n".join(lines + _compact_summary(metrics, labels))

    width = max(len("label"), *(len(label) for label in labels))
    lines += ["", *_per_class_table(metrics["per_class"], labels, width)]
    matrix = metrics["confusion_matrix"]
    corner = "true \\ predicted"
    row_width = max(width, len(corner))
    col_widths = [
        max(len(label), *(len(str(matrix[i][j])) for i in range(len(labels))))
        for j, label in enumerate(labels)
    ]
    lines.append("")
    lines.append(
        f"{corner:<{row_width}}  "
        + "  ".join(f"{label:>{w}}" for label, w in zip(labels, col_widths, strict=True))
    )
    for label, counts in zip(labels, matrix, strict=True):
        cells = "  ".join(f"{count:>{w}d}" for count, w in zip(counts, col_widths, strict=True))
        lines.append(f"{label:<{row_width}}  {cells}")
    return "\n".join(lines)


def _per_class_table(per_class: dict[str, Any], labels: list[str], width: int) -> list[str]:
    """Precision, recall, F1 and support of the given classes, one line each under a header."""
    lines = [f"{'label':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}"]
    for label in labels:
        row = per_class[label]
        lines.append(
            f"{label:<{width}}  {row['precision']:>9.4f}  {row['recall']:>9.4f}  {row['f1']:>9.4f}  "
            f"{row['support']:>8d}"
        )
    return lines


def _compact_summary(metrics: dict[str, Any], labels: list[str]) -> list[str]:
    """The per-class lines of the SUMMARY_CLASSES classes with the most rows and the most frequent confusions."""
    per_class = metrics["per_class"]
    # per_class is in label order, and the sort is stable: ties stay in label order.
    frequent = sorted(per_class, key=lambda label: -per_class[label]["support"])[:SUMMARY_CLASSES]
    width = max(len("label"), *(len(label) for label in frequent))
    lines = ["", f"the {len(frequent)} most frequent of {len(labels)} classes (every class that occurs is in "
             "metrics.json):", *_per_class_table(per_class, frequent, width)]
    errors = sorted((cell for cell in metrics["confusion_counts"] if cell[0] != cell[1]),
                    key=lambda cell: (-cell[2], cell[0], cell[1]))[:SUMMARY_CLASSES]
    lines += ["", f"most frequent confusions (true -> predicted: rows), {len(errors)} shown:"]
    lines += [f"  {labels[true]} -> {labels[pred]}: {count}" for true, pred, count in errors]
    return lines
