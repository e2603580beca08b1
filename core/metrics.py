"""Metrics for imbalanced classification, on torchmetrics, and the plots people look at.

The counting is torchmetrics' (``multiclass_confusion_matrix``, ``multiclass_calibration_error``,
``binary_auroc``, ``binary_average_precision``); this module adds only what it lacks:

- per-class recall/precision/F1 and their macro averages taken over the classes present in the
  evaluation split (as scikit-learn does; torchmetrics counts an absent class as 0), worst-class
  accuracy and the G-mean of the recalls;
- many/medium/few-shot accuracy given the *training* counts (many > 100, medium 20-100,
  few < 20 by default, as in Liu et al. 2019, "Large-Scale Long-Tailed Recognition in an Open
  World");
- the per-bin data of a reliability diagram (torchmetrics computes ECE/MCE but does not expose
  its bins);
- a :class:`MetricReport` that renders markdown and JSON, and PNG plots of per-class accuracy
  against training frequency, reliability diagrams and confusion matrices.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
)

from equipoise.core.reporting import format_value, markdown_table
from equipoise.core.validation import (
    ArrayLike,
    as_class_counts,
    check_class_counts,
    check_class_targets,
    check_logits,
)

__all__ = [
    "DEFAULT_SHOT_THRESHOLDS",
    "MetricReport",
    "classification_summary",
    "evaluate_binary",
    "evaluate_classification",
    "plot_confusion_matrix",
    "plot_per_class",
    "plot_reliability",
    "reliability_bins",
    "shot_groups",
]

#: (many, few): many-shot classes have more than 100 training examples, few-shot fewer than 20.
DEFAULT_SHOT_THRESHOLDS = (100, 20)


@dataclass
class MetricReport:
    """Scalar metrics, a per-class table and (optionally) reliability-diagram data.

    ``scalars`` maps metric names to floats (``None`` where undefined, e.g. few-shot accuracy
    when no class is few-shot); ``per_class`` holds one row per class.
    """

    scalars: dict[str, float | None]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    reliability: dict[str, list[float]] | None = None
    confusion_matrix: list[list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scalars": self.scalars,
            "per_class": self.per_class,
            "reliability": self.reliability,
            "confusion_matrix": self.confusion_matrix,
        }

    def to_markdown(self, title: str = "Metrics") -> str:
        lines = [f"# {title}", "", markdown_table([{"metric": k, "value": _show(v)} for k, v in self.scalars.items()])]
        if self.per_class:
            lines += ["## Per class", "", markdown_table(self.per_class)]
        return "\n".join(lines)

    def write(self, directory: str | Path, name: str = "metrics", title: str = "Metrics") -> tuple[Path, Path]:
        """Write ``name.json`` and ``name.md`` into ``directory``; return both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path, markdown_path = directory / f"{name}.json", directory / f"{name}.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        markdown_path.write_text(self.to_markdown(title))
        return json_path, markdown_path


def _show(value: float | None) -> str:
    return "–" if value is None else format_value(value)


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value


def shot_groups(class_counts: ArrayLike, thresholds: tuple[int, int] = DEFAULT_SHOT_THRESHOLDS) -> dict[str, list[int]]:
    """Classes by training frequency: ``many`` (> many), ``medium`` (few..many), ``few`` (< few)."""
    counts = as_class_counts(class_counts)
    check_class_counts(counts, allow_zero=True)
    many, few = thresholds
    if not few <= many:
        raise ValueError(f"thresholds must be (many, few) with few <= many, got {thresholds}")
    return {
        "many": torch.nonzero(counts > many).flatten().tolist(),
        "medium": torch.nonzero((counts >= few) & (counts <= many)).flatten().tolist(),
        "few": torch.nonzero(counts < few).flatten().tolist(),
    }


def reliability_bins(probs: torch.Tensor, target: torch.Tensor, num_bins: int = 15) -> dict[str, list[float]]:
    """Per-bin data of a reliability diagram: equal-width confidence bins over [0, 1].

    For each bin: its edges, the mean confidence (max probability), the accuracy and the
    number of examples (empty bins have confidence and accuracy ``nan``). The count-weighted
    mean of ``|accuracy - confidence|`` is torchmetrics' ECE with the same bins.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == target).to(torch.float64)
    edges = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)
    # Bins are (lo, hi], the first one [0, hi], as in torchmetrics' bucketize(right=True) - 1.
    index = (torch.bucketize(confidence.to(torch.float64).cpu(), edges, right=True) - 1).clamp(0, num_bins - 1)
    count = torch.bincount(index, minlength=num_bins).to(torch.float64)
    conf_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, confidence.to(torch.float64).cpu())
    acc_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, index, correct.cpu())
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "confidence": (conf_sum / count).tolist(),
        "accuracy": (acc_sum / count).tolist(),
        "count": count.tolist(),
    }


def _as_probabilities(scores: torch.Tensor, from_logits: bool) -> torch.Tensor:
    if from_logits:
        return torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=1)
    if bool((scores < 0).any()) or bool(((scores.sum(dim=1) - 1).abs() > 1e-3).any()):
        raise ValueError("probabilities must be non-negative and sum to 1 per row; pass from_logits=True for logits")
    return scores


def evaluate_classification(
    scores: torch.Tensor,
    target: torch.Tensor,
    class_counts: ArrayLike | None = None,
    from_logits: bool = True,
    shot_thresholds: tuple[int, int] = DEFAULT_SHOT_THRESHOLDS,
    num_bins: int = 15,
    class_names: Sequence[str] | None = None,
) -> MetricReport:
    """Every multi-class metric of an imbalanced evaluation from ``(N, C)`` scores and ``(N,)`` labels.

    Scalars: ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present),
    ``macro_f1``, ``worst_class_accuracy``, ``g_mean`` (geometric mean of the recalls),
    ``ece`` and ``mce`` (expected and maximum calibration error, ``num_bins`` equal-width bins)
    and, given the training ``class_counts``, ``many_shot_accuracy``, ``medium_shot_accuracy``
    and ``few_shot_accuracy`` (mean recall of the classes of each group present in the split).
    """
    check_logits(scores, name="scores")
    check_class_targets(target, scores)
    num_classes = scores.shape[1]
    probs = _as_probabilities(scores, from_logits)
    preds = probs.argmax(dim=1)
    matrix = multiclass_confusion_matrix(preds, target, num_classes).to(torch.float64)
    support = matrix.sum(dim=1)
    predicted = matrix.sum(dim=0)
    true_positive = matrix.diagonal()
    present = support > 0
    recall = torch.where(present, true_positive / support.clamp_min(1), torch.nan)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp_min(1), 0.0)
    f1 = torch.where(
        precision + recall.nan_to_num(0) > 0,
        2 * precision * recall / (precision + recall).clamp_min(1e-300),
        0.0,
    )
    present_recall = recall[present]
    scalars: dict[str, float | None] = {
        "accuracy": float(multiclass_accuracy(preds, target, num_classes, average="micro")),
        "balanced_accuracy": float(present_recall.mean()),
        "macro_f1": float(f1[present].mean()),
        "worst_class_accuracy": float(present_recall.min()),
        "g_mean": float(present_recall.clamp_min(0).log().mean().exp()) if bool((present_recall > 0).all()) else 0.0,
        "ece": float(multiclass_calibration_error(probs, target, num_classes, n_bins=num_bins, norm="l1")),
        "mce": float(multiclass_calibration_error(probs, target, num_classes, n_bins=num_bins, norm="max")),
    }
    counts = None
    if class_counts is not None:
        counts = as_class_counts(class_counts)
        check_class_counts(counts, num_classes, allow_zero=True)
        for group, members in shot_groups(counts, shot_thresholds).items():
            values = [float(recall[c]) for c in members if bool(present[c])]
            scalars[f"{group}_shot_accuracy"] = sum(values) / len(values) if values else None
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries for {num_classes} classes")
    per_class = [
        {
            "class": names[c],
            **({"train_count": int(counts[c])} if counts is not None else {}),
            "support": int(support[c]),
            "recall": _defined(float(recall[c])),
            "precision": float(precision[c]),
            "f1": float(f1[c]),
        }
        for c in range(num_classes)
    ]
    return MetricReport(
        scalars=scalars,
        per_class=per_class,
        reliability=reliability_bins(probs, target, num_bins),
        confusion_matrix=matrix.to(torch.int64).tolist(),
    )


def evaluate_binary(scores: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> MetricReport:
    """Binary metrics from ``(N,)`` positive-class probabilities and 0/1 labels.

    ``auroc`` and ``auprc`` (average precision) are threshold-free (torchmetrics); precision,
    recall, F1, balanced accuracy and G-mean are taken at ``threshold`` (see
    ``equipoise.core.calibration`` for choosing it on validation data).
    """
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point() or scores.dim() != 1:
        raise TypeError("scores must be a 1-D floating-point tensor of positive-class probabilities")
    if scores.numel() == 0:
        raise ValueError("scores is empty")
    if not isinstance(target, torch.Tensor) or target.shape != scores.shape:
        raise ValueError(f"target must be a tensor of shape {tuple(scores.shape)}")
    if not bool(((scores >= 0) & (scores <= 1)).all()):
        raise ValueError("scores must be probabilities in [0, 1] (apply a sigmoid to logits first)")
    labels = target.to(torch.int64)
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("target must hold 0/1 labels")
    if labels.unique().numel() < 2:
        raise ValueError("target holds a single class: AUROC and AUPRC are undefined")
    preds = (scores >= threshold).to(torch.int64)
    true_positive = float(((preds == 1) & (labels == 1)).sum())
    false_positive = float(((preds == 1) & (labels == 0)).sum())
    positives, negatives = float(labels.sum()), float((1 - labels).sum())
    recall = true_positive / positives
    specificity = 1 - false_positive / negatives
    precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    scalars = {
        "auroc": float(binary_auroc(scores, labels)),
        "auprc": float(binary_average_precision(scores, labels)),
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "balanced_accuracy": (recall + specificity) / 2,
        "g_mean": math.sqrt(recall * specificity),
    }
    return MetricReport(scalars=scalars)


def classification_summary(
    preds: torch.Tensor, target: torch.Tensor, class_counts: ArrayLike, head_fraction: float = 0.5
) -> dict[str, float | list[float]]:
    """Overall, balanced, head and tail accuracy and per-class accuracy (recall), from predictions.

    ``class_counts`` are the *training* counts; the ``head_fraction`` most frequent classes
    form the head and the rest the tail (ties broken by class index).
    """
    counts = as_class_counts(class_counts)
    num_classes = counts.numel()
    check_class_counts(counts, allow_zero=True)
    if preds.shape != target.shape or preds.dim() != 1 or preds.numel() == 0:
        raise ValueError(
            "preds and target must be non-empty 1-D tensors of one shape, "
            f"got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    if not 0 < head_fraction < 1:
        raise ValueError(f"head_fraction must be in (0, 1), got {head_fraction}")
    per_class = multiclass_accuracy(preds, target, num_classes, average="none")
    order = torch.argsort(-counts, stable=True)
    num_head = max(1, round(head_fraction * num_classes))
    head, tail = order[:num_head], order[num_head:]
    return {
        "accuracy": float(multiclass_accuracy(preds, target, num_classes, average="micro")),
        "balanced_accuracy": float(multiclass_accuracy(preds, target, num_classes, average="macro")),
        "head_accuracy": float(per_class[head].mean()),
        "tail_accuracy": float(per_class[tail].mean()) if tail.numel() else float("nan"),
        "per_class_accuracy": per_class.tolist(),
    }


def plot_per_class(
    per_class_accuracy: dict[str, ArrayLike],
    class_counts: ArrayLike,
    path: str | Path,
    title: str = "Per-class accuracy vs training-class frequency",
) -> Path:
    """Plot each method's per-class accuracy against the training count of the class. Writes a PNG.

    ``per_class_accuracy`` maps a method name to its ``(C,)`` accuracies. The x axis is the count on
    a log scale (head on the left) when the counts spread enough for every class's tick to be
    read; when two classes' counts lie within :data:`_MIN_TICK_RATIO` of each other (a nearly
    balanced set, as MNIST under a federated split), the classes stand at evenly spaced positions
    in count order instead, each labelled with its count and index.
    """
    plt = _pyplot()

    counts = as_class_counts(class_counts).numpy()
    order = counts.argsort(kind="stable")[::-1]
    unique_counts = np.unique(counts)
    by_rank = len(unique_counts) > 1 and bool((unique_counts[1:] / unique_counts[:-1]).min() < _MIN_TICK_RATIO)
    positions = np.arange(len(counts)) if by_rank else counts[order]
    figure, axis = plt.subplots(figsize=(9, 5), dpi=120)
    markers, styles = "osD^vP*Xh<>", ("-", "--", "-.", ":")
    for number, (method, accuracy) in enumerate(per_class_accuracy.items()):
        values = as_class_counts(accuracy, name="per_class_accuracy").numpy()
        # Distinct markers and dash patterns keep methods with equal accuracies visible.
        axis.plot(
            positions,
            values[order],
            marker=markers[number % len(markers)],
            linestyle=styles[number % len(styles)],
            alpha=0.85,
            label=method,
        )
    if by_rank:
        if len(counts) <= 30:
            axis.set_xticks(positions, [f"{counts[index]:g}\n({index})" for index in order])
        axis.set_xlabel("classes by training examples (most on the left; evenly spaced); class index in brackets")
    else:
        axis.set_xscale("log")
        axis.invert_xaxis()
        if len(counts) <= 30:  # label every class: its training count and its index
            unique_counts, first = np.unique(counts, return_index=True)
            axis.set_xticks(unique_counts, [f"{count:g}\n({index})" for count, index in zip(unique_counts, first)])
            axis.minorticks_off()
        axis.set_xlabel("training examples of the class (log scale, head on the left); class index in brackets")
    axis.set_ylabel("test accuracy of the class")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


#: The smallest ratio of two neighbouring class counts for which :func:`plot_per_class` keeps the
#: log-count axis: closer counts would put their tick labels on top of each other.
_MIN_TICK_RATIO = 1.15


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(reliability: dict[str, list[float]], path: str | Path, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin (bars), the diagonal of perfect calibration, and the
    share of examples per bin below; ``reliability`` is :func:`reliability_bins`' output."""
    plt = _pyplot()
    lower = np.asarray(reliability["bin_lower"])
    upper = np.asarray(reliability["bin_upper"])
    accuracy = np.nan_to_num(np.asarray(reliability["accuracy"], dtype=float))
    confidence = np.asarray(reliability["confidence"], dtype=float)
    count = np.asarray(reliability["count"], dtype=float)
    width = upper - lower
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), dpi=120, height_ratios=[3, 1], sharex=True)
    top.bar(lower, accuracy, width=width, align="edge", edgecolor="black", alpha=0.8, label="accuracy")
    gap = np.where(np.isnan(confidence), 0.0, confidence - accuracy)
    top.bar(
        lower, gap, bottom=accuracy, width=width, align="edge", color="tab:red", alpha=0.3, label="gap to confidence"
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    total = count.sum()
    ece = float(np.nansum(np.abs(np.nan_to_num(confidence) - accuracy) * count) / total) if total else float("nan")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"{title} (ECE {100 * ece:.2f}%)")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(lower, count / max(total, 1), width=width, align="edge", edgecolor="black", color="tab:gray")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("share")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    return _save(figure, plt, path)


def plot_confusion_matrix(
    matrix: ArrayLike,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "Confusion matrix (rows: true class, normalised)",
) -> Path:
    """Row-normalised confusion matrix as a heat map: numbers printed for up to 20 classes, class names
    for up to :data:`_MAX_NAMED_CLASSES`; the figure grows with the classes up to
    :data:`_MAX_FIGURE_INCHES` a side (1,000 ImageNet-LT classes at 0.45 inch each would need a
    54,000-pixel image), beyond which a class is a pixel or less and the axes count class indices."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float32)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"matrix must be square, got shape {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(size)]
    width = min(max(5, 0.45 * size + 2), _MAX_FIGURE_INCHES)
    figure, axis = plt.subplots(figsize=(width, min(max(4.5, 0.45 * size + 1.5), _MAX_FIGURE_INCHES - 0.5)), dpi=120)
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1, interpolation="nearest" if size <= 200 else None)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    if size <= _MAX_NAMED_CLASSES:
        fontsize = None if size <= 20 else "x-small"
        axis.set_xticks(range(size), names, rotation=90 if size > 10 else 0, fontsize=fontsize)
        axis.set_yticks(range(size), names, fontsize=fontsize)
    if size <= 20:
        for i in range(size):
            for j in range(size):
                value = normalised[i, j]
                axis.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.5 else "black",
                )
    unnamed = "" if size <= _MAX_NAMED_CLASSES else " (class index)"
    axis.set_xlabel(f"predicted class{unnamed}")
    axis.set_ylabel(f"true class{unnamed}")
    axis.set_title(title)
    figure.tight_layout()
    return _save(figure, plt, path)


#: The largest side of :func:`plot_confusion_matrix`'s figure, and the most classes it names.
_MAX_FIGURE_INCHES = 16
_MAX_NAMED_CLASSES = 40


def _save(figure, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
