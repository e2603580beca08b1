"""Metrics against scikit-learn / imbalanced-learn / an independent numpy binning."""

import json

import numpy as np
import pytest
import torch
from imblearn.metrics import geometric_mean_score
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from torchmetrics.functional.classification import multiclass_calibration_error

from equipoise.core.metrics import (
    evaluate_binary,
    evaluate_classification,
    plot_confusion_matrix,
    plot_reliability,
    reliability_bins,
    shot_groups,
)


def _problem(num=600, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(num, classes, generator=generator, dtype=torch.float64)
    target = torch.randint(classes, (num,), generator=generator)
    logits[torch.arange(num), target] += 1.5
    return logits, target


def test_scalars_match_sklearn_and_imblearn():
    logits, target = _problem()
    report = evaluate_classification(logits, target, class_counts=[500, 120, 50, 10, 3])
    preds = logits.argmax(dim=1).numpy()
    y = target.numpy()
    s = report.scalars
    assert s["accuracy"] == pytest.approx(accuracy_score(y, preds))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, preds))
    assert s["macro_f1"] == pytest.approx(f1_score(y, preds, average="macro"))
    recalls = recall_score(y, preds, average=None)
    assert s["worst_class_accuracy"] == pytest.approx(recalls.min())
    assert s["g_mean"] == pytest.approx(geometric_mean_score(y, preds, average="multiclass"))
    # many (> 100): classes 0, 1; medium (20..100): class 2; few (< 20): classes 3, 4
    assert s["many_shot_accuracy"] == pytest.approx(recalls[[0, 1]].mean())
    assert s["medium_shot_accuracy"] == pytest.approx(recalls[2])
    assert s["few_shot_accuracy"] == pytest.approx(recalls[[3, 4]].mean())
    per_class = report.per_class
    assert [row["recall"] for row in per_class] == pytest.approx(recalls.tolist())
    assert [row["precision"] for row in per_class] == pytest.approx(precision_score(y, preds, average=None).tolist())
    assert [row["support"] for row in per_class] == np.bincount(y, minlength=5).tolist()


def test_absent_class_is_left_out_of_macro_averages_like_sklearn():
    logits, target = _problem(classes=4)
    keep = target != 3
    logits, target = logits[keep], target[keep]
    report = evaluate_classification(logits, target)
    preds = logits.argmax(dim=1).numpy()
    assert report.scalars["balanced_accuracy"] == pytest.approx(
        recall_score(target.numpy(), preds, labels=[0, 1, 2], average="macro")
    )
    assert report.per_class[3]["recall"] is None and report.per_class[3]["support"] == 0


def _numpy_ece(probs, target, bins):
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == target
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    worst = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += inside.mean() * gap
            worst = max(worst, gap)
    return total, worst


@pytest.mark.parametrize("bins", [5, 15])
def test_calibration_errors_and_reliability_bins(bins):
    logits, target = _problem(seed=3)
    probs = torch.softmax(logits, dim=1)
    report = evaluate_classification(logits, target, num_bins=bins)
    ece, mce = _numpy_ece(probs.numpy(), target.numpy(), bins)
    assert report.scalars["ece"] == pytest.approx(ece, abs=1e-5)
    assert report.scalars["mce"] == pytest.approx(mce, abs=1e-5)
    data = reliability_bins(probs, target, bins)
    count = np.array(data["count"])
    gaps = np.abs(np.nan_to_num(np.array(data["accuracy"])) - np.nan_to_num(np.array(data["confidence"])))
    assert (gaps * count).sum() / count.sum() == pytest.approx(
        float(multiclass_calibration_error(probs, target, 5, n_bins=bins)), abs=1e-6
    )
    assert count.sum() == len(target)


def test_shot_groups_thresholds():
    assert shot_groups([101, 100, 20, 19, 0]) == {"many": [0], "medium": [1, 2], "few": [3, 4]}
    assert shot_groups([50, 5], thresholds=(40, 10)) == {"many": [0], "medium": [], "few": [1]}
    with pytest.raises(ValueError, match="thresholds"):
        shot_groups([1, 2], thresholds=(10, 20))


def test_empty_shot_group_is_none_and_rendered_as_dash(tmp_path):
    logits, target = _problem(classes=3)
    report = evaluate_classification(logits, target, class_counts=[500, 300, 200])
    assert report.scalars["few_shot_accuracy"] is None and report.scalars["medium_shot_accuracy"] is None
    json_path, md_path = report.write(tmp_path, "metrics", "Test")
    saved = json.loads(json_path.read_text())
    assert saved["scalars"]["few_shot_accuracy"] is None
    assert "| few_shot_accuracy | – |" in md_path.read_text()
    assert len(saved["confusion_matrix"]) == 3


def test_probabilities_input_and_bad_inputs():
    logits, target = _problem()
    probs = torch.softmax(logits, dim=1)
    from_probs = evaluate_classification(probs, target, from_logits=False)
    assert from_probs.scalars == pytest.approx(evaluate_classification(logits, target).scalars)
    with pytest.raises(ValueError, match="sum to 1"):
        evaluate_classification(logits, target, from_logits=False)
    with pytest.raises(ValueError, match=r"target\[0\] = 9"):
        evaluate_classification(logits, torch.full_like(target, 9))
    with pytest.raises(ValueError, match="non-finite"):
        bad = logits.clone()
        bad[0, 0] = float("nan")
        evaluate_classification(bad, target)
    with pytest.raises(ValueError, match="one entry per class"):
        evaluate_classification(logits, target, class_counts=[1, 2])
    with pytest.raises(ValueError, match="class_names"):
        evaluate_classification(logits, target, class_names=["a"])


def test_binary_metrics_match_sklearn():
    generator = torch.Generator().manual_seed(5)
    labels = (torch.rand(400, generator=generator) < 0.1).long()
    scores = torch.sigmoid(torch.randn(400, generator=generator, dtype=torch.float64) + 2.0 * labels)
    report = evaluate_binary(scores, labels, threshold=0.6)
    y, p = labels.numpy(), scores.numpy()
    preds = (p >= 0.6).astype(int)
    s = report.scalars
    assert s["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert s["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-6)
    assert s["f1"] == pytest.approx(f1_score(y, preds))
    assert s["recall"] == pytest.approx(recall_score(y, preds))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, preds))
    assert s["g_mean"] == pytest.approx(geometric_mean_score(y, preds, average="binary"))
    with pytest.raises(ValueError, match="single class"):
        evaluate_binary(scores, torch.zeros_like(labels))
    with pytest.raises(ValueError, match="probabilities"):
        evaluate_binary(scores * 3, labels)


def test_plots_are_written(tmp_path):
    logits, target = _problem()
    report = evaluate_classification(logits, target)
    for path in (
        plot_reliability(report.reliability, tmp_path / "reliability.png"),
        plot_confusion_matrix(report.confusion_matrix, tmp_path / "confusion.png", class_names=list("abcde")),
    ):
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix([[1, 2, 3]], tmp_path / "bad.png")


def test_confusion_matrix_of_many_classes_stays_a_bounded_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from PIL import Image

    closed = []
    monkeypatch.setattr(plt, "close", lambda figure: closed.append(figure))
    # ImageNet-LT's 1,000 classes: 0.45 inch a class would be a 54,000-pixel image (it exhausted memory).
    matrix = np.eye(1000, dtype=np.int64) * 5 + 1
    path = plot_confusion_matrix(matrix, tmp_path / "many.png")
    width, height = Image.open(path).size
    assert width <= 16 * 120 and height <= 16 * 120
    axis = closed[0].axes[0]
    assert axis.get_xlabel() == "predicted class (class index)" and not axis.texts  # no 10^6 numbers
    shown = axis.get_images()[0].get_array()
    assert shown.shape == (1000, 1000) and np.allclose(shown.sum(axis=1), 1)  # rows normalised
    # A few classes: every cell's share printed, names on both axes.
    closed.clear()
    plot_confusion_matrix([[3, 1], [0, 2]], tmp_path / "two.png", class_names=["cat", "dog"])
    axis = closed[0].axes[0]
    assert sorted(text.get_text() for text in axis.texts) == ["0.00", "0.25", "0.75", "1.00"]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["cat", "dog"]
