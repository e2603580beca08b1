"""Checkpoints and evaluation of the tabular networks: the test split scored, a report people can read.

>>> from equipoise.tabular.data import prepare
>>> from equipoise.tabular.train import fit
>>> from equipoise.tabular.evaluate import evaluate, load_checkpoint, save_checkpoint
>>> split = prepare("loan", seed=0, val_size=0.2)
>>> model = fit("metabalance", split.X_train, split.y_train, network="loan", seed=0)
>>> save_checkpoint(model, "run/model.pt", dataset="loan", seed=0, val_size=0.2)
>>> report = evaluate(model, split, output="run")      # report.md, metrics.json and three plots

What :func:`evaluate` reports, on the test split only:

- threshold-free: AUC-ROC and AUC-PR (average precision), the figures of MetaBalance's
  Table 2; with one positive in 600 (fraud) AUC-PR is the one that moves;
- at a decision threshold: precision, recall, F1, balanced accuracy, G-mean and the confusion
  matrix. The threshold maximises F1 on the validation split when the split has one
  (``core.calibration.tune_threshold``: threshold moving), 0.5 otherwise; never tuned on the test;
- calibration: expected calibration error of the two-class probabilities;
- ``curves.png`` (ROC and precision-recall curves, from scikit-learn, with the chance levels),
  ``reliability.png`` and ``confusion_matrix.png`` (``core.metrics`` plots).

A checkpoint is a plain dict (format ``equipoise.tabular/1``): the data set name and split
(seed, validation fraction), the network's name and input width, its ``state_dict`` and the
training record; it loads with ``torch.load(weights_only=True)`` and the split is rebuilt from
the seed (``prepare`` is deterministic), so the test rows are the ones held out at training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.functional.classification import binary_confusion_matrix, multiclass_calibration_error

from equipoise.core import checkpoint as core_checkpoint
from equipoise.core.calibration.threshold import tune_threshold
from equipoise.core.metrics import (
    MetricReport,
    evaluate_binary,
    plot_confusion_matrix,
    plot_reliability,
    reliability_bins,
)
from equipoise.tabular.data import DATASETS, TabularSplit
from equipoise.tabular.models import build_network
from equipoise.tabular.train import predict_proba

__all__ = ["FORMAT", "evaluate", "load_checkpoint", "model_from_checkpoint", "plot_curves", "save_checkpoint"]

FORMAT = "equipoise.tabular/1"
_KEYS = ("format", "dataset", "seed", "val_size", "network", "in_features", "state_dict", "training_record")


def save_checkpoint(
    model: nn.Module, path: str | os.PathLike, *, dataset: str, seed: int, val_size: float = 0.0
) -> Path:
    """Write ``model`` (trained by ``tabular.train.fit`` with ``network=dataset``) to ``path``, atomically.

    ``seed`` and ``val_size`` are those given to ``prepare``: :func:`load_checkpoint`'s caller
    rebuilds the same split from them.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    first = next(model.parameters(), None)
    if first is None or first.dim() != 2:
        raise ValueError("model must start with a Linear layer (a network of equipoise.tabular.models)")
    record = getattr(model, "training_record", {})
    checkpoint = {
        "format": FORMAT,
        "dataset": dataset,
        "seed": int(seed),
        "val_size": float(val_size),
        "network": dataset,
        "in_features": int(first.shape[1]),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        # JSON-safe (NumPy scalars, tuples) so that weights_only loading accepts it.
        "training_record": json.loads(json.dumps(record, default=_jsonable)),
    }
    return core_checkpoint.save_checkpoint(path, checkpoint)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a :func:`save_checkpoint` file with ``weights_only=True``; a missing, corrupt or foreign file raises
    (``equipoise.core.checkpoint.load_checkpoint``)."""
    return core_checkpoint.load_checkpoint(path, FORMAT, _KEYS)


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The network of a checkpoint, weights loaded, in eval mode on ``device``; and the checkpoint."""
    checkpoint = load_checkpoint(path)
    model = build_network(checkpoint["network"], checkpoint["in_features"], seed=0)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit the {checkpoint['network']!r} network: {error}") from error
    model.training_record = checkpoint["training_record"]
    return model.to(device).eval(), checkpoint


def evaluate(
    model: nn.Module, split: TabularSplit, output: str | os.PathLike | None = None, title: str | None = None
) -> MetricReport:
    """Score ``split``'s test rows (threshold from its validation rows, if any); write a report to ``output``."""
    test_scores = torch.from_numpy(predict_proba(model, split.X_test))
    test_labels = torch.from_numpy(np.asarray(split.y_test)).to(torch.int64)
    threshold, source = 0.5, "default 0.5 (no validation split)"
    if split.X_val is not None:
        val_scores = torch.from_numpy(predict_proba(model, split.X_val))
        threshold = tune_threshold(val_scores, torch.from_numpy(np.asarray(split.y_val)), metric="f1")
        source = "maximises F1 on the validation split"
    report = evaluate_binary(test_scores, test_labels, threshold=threshold)
    two_class = torch.stack([1 - test_scores, test_scores], dim=1)
    report.reliability = reliability_bins(two_class, test_labels)
    report.scalars["ece"] = float(multiclass_calibration_error(two_class, test_labels, num_classes=2, n_bins=15))
    predicted = (test_scores >= threshold).to(torch.int64)  # evaluate_binary's rule, score >= threshold
    report.confusion_matrix = binary_confusion_matrix(predicted, test_labels).tolist()
    report.scalars["positive_rate_test"] = float(test_labels.float().mean())
    if output is not None:
        _write(report, test_scores.numpy(), test_labels.numpy(), Path(output), title or "Tabular evaluation", source)
    return report


def plot_curves(scores: np.ndarray, labels: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """ROC and precision-recall curves side by side (scikit-learn's), with each curve's chance level."""
    import matplotlib
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    false_positive, true_positive, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5), dpi=120)
    left.plot(false_positive, true_positive, label=f"AUC-ROC {roc_auc_score(labels, scores):.3f}")
    left.plot([0, 1], [0, 1], "k--", linewidth=1, label="chance")
    left.set_xlabel("false positive rate")
    left.set_ylabel("true positive rate (recall)")
    left.set_title("ROC curve")
    right.step(recall, precision, where="post", label=f"AUC-PR {average_precision_score(labels, scores):.3f}")
    base = float(np.mean(labels))
    right.axhline(base, color="k", linestyle="--", linewidth=1, label=f"chance (positive rate {base:.4f})")
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_title("Precision-recall curve")
    for axis in (left, right):
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right" if axis is left else "upper right", fontsize="small")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _write(report: MetricReport, scores: np.ndarray, labels: np.ndarray, output: Path, title: str, source: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(report.to_dict(), indent=2, default=_jsonable) + "\n")
    plot_curves(scores, labels, output / "curves.png", title)
    plot_reliability(report.reliability, output / "reliability.png", title="Reliability diagram (test split)")
    plot_confusion_matrix(
        report.confusion_matrix,
        output / "confusion_matrix.png",
        class_names=["negative (0)", "positive (1)"],
        title=f"Confusion matrix at threshold {report.scalars['threshold']:.3g} (rows normalised)",
    )
    (tn, fp), (fn, tp) = report.confusion_matrix
    lines = [
        report.to_markdown(title),
        "",
        f"Threshold {report.scalars['threshold']:.4g}: {source}.",
        "",
        "| | predicted 0 | predicted 1 |",
        "|---|---|---|",
        f"| true 0 | {tn} | {fp} |",
        f"| true 1 | {fn} | {tp} |",
        "",
        "![ROC and precision-recall curves](curves.png)",
        "![Reliability diagram](reliability.png)",
        "![Confusion matrix](confusion_matrix.png)",
        "",
    ]
    (output / "report.md").write_text("\n".join(lines))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)
