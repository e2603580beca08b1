"""COCO detection metrics against an installed peer: torchmetrics' ``MeanAveragePrecision`` (backend
pycocotools) fed ground truth built here from the COCO128 json file (crowd flags and areas included),
on the ground truth itself, on perturbed detections drawn from a fixed generator and on none at all;
and the report and plots read back from disk.

The real files come from ``EQUIPOISE_DATA`` (or ``../shared/data``); those tests skip without them.
"""

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.detection import MeanAveragePrecision

from equipoise.detection.data import frequency_groups, load_coco128
from equipoise.detection.metrics import (
    SUMMARY_KEYS,
    coco_evaluation,
    plot_ap_vs_frequency,
    plot_detections,
    write_detection_report,
)

SHARED = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
ANNOTATIONS = SHARED / "coco128" / "annotations" / "instances_val2017.json"
SKIP_REASON = "needs the shared COCO128 copy: set EQUIPOISE_DATA to the shared data folder (CI sets it)"
pytestmark = pytest.mark.skipif(not ANNOTATIONS.is_file(), reason=SKIP_REASON)

# torchmetrics returns float32 tensors; COCOeval computes in float64.
TOLERANCE = 1e-6
# pycocotools' default thresholds (COCOeval.Params.setDetParams). torchmetrics' defaults are the same
# values from a float32 torch.linspace (0.2 becomes 0.20000000298...), which moves a recall point lying
# exactly on k / n (n ground-truth boxes of a class) to the next recall level: up to about 1e-3 on a class
# with 5 boxes. Given these float64 values, torchmetrics runs COCOeval exactly as coco_evaluation does.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True).tolist()
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True).tolist()
TORCHMETRICS_KEYS = dict(
    zip(
        SUMMARY_KEYS,
        ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
        + ["mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"],
    )
)


@pytest.fixture(scope="module")
def raw():
    return json.loads(ANNOTATIONS.read_text())


@pytest.fixture(scope="module")
def dataset():
    return load_coco128(SHARED)


def _ground_truth_detections(dataset, indices=None):
    """The training targets as detections of score 1."""
    detections = []
    for index in range(len(dataset)) if indices is None else indices:
        _, target = dataset.load(index)
        detections.append(
            {
                "image_id": target["image_id"],
                "boxes": target["boxes"],
                "scores": torch.ones(len(target["labels"])),
                "labels": target["labels"],
            }
        )
    return detections


def _torchmetrics(raw, category_ids, detections, image_ids, default_thresholds=False):
    """torchmetrics' results for ``detections``, its targets built from the json file by hand."""
    label_of = {category_id: label for label, category_id in enumerate(category_ids)}
    by_image = {entry["image_id"]: entry for entry in detections}
    predictions, targets = [], []
    for image_id in image_ids:
        annotations = [a for a in raw["annotations"] if a["image_id"] == image_id and a["category_id"] in label_of]
        targets.append(
            {
                "boxes": torch.tensor(
                    [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)], dtype=torch.float64
                ).reshape(-1, 4),
                "labels": torch.tensor([label_of[a["category_id"]] for a in annotations], dtype=torch.int64),
                "iscrowd": torch.tensor([a["iscrowd"] for a in annotations], dtype=torch.int64),
                "area": torch.tensor([a["area"] for a in annotations], dtype=torch.float64),
            }
        )
        entry = by_image.get(image_id)
        predictions.append(
            {
                "boxes": entry["boxes"].to(torch.float64) if entry else torch.zeros(0, 4, dtype=torch.float64),
                "scores": entry["scores"].to(torch.float64) if entry else torch.zeros(0, dtype=torch.float64),
                "labels": entry["labels"] if entry else torch.zeros(0, dtype=torch.int64),
            }
        )
    thresholds = {} if default_thresholds else {"iou_thresholds": IOU_THRESHOLDS, "rec_thresholds": RECALL_THRESHOLDS}
    metric = MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", class_metrics=True, backend="pycocotools", **thresholds
    )
    metric.update(predictions, targets)
    return metric.compute()


def _assert_agree(ours, theirs, num_classes):
    for key, name in TORCHMETRICS_KEYS.items():
        expected = float(theirs[name])
        if expected == -1:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(expected, abs=TOLERANCE), key
    per_class = dict(zip(theirs["classes"].tolist(), theirs["map_per_class"].reshape(-1).tolist()))
    for label in range(num_classes):
        expected = per_class.get(label, -1.0)  # classes with neither ground truth nor detections are not listed
        value = ours["per_class"][label]["AP"]
        if expected == -1:
            assert value is None, label
        else:
            assert value == pytest.approx(expected, abs=TOLERANCE), label


def test_ground_truth_as_detections_scores_one(raw, dataset):
    detections = _ground_truth_detections(dataset)
    groups = frequency_groups(dataset.class_image_counts())
    metrics = coco_evaluation(dataset, detections, groups=groups)
    for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR_100"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key
    with_gt = [c for c in range(80) if c in {dataset.category_ids.index(a["category_id"]) for a in raw["annotations"]}]
    assert len(with_gt) == 71
    one = pytest.approx(1.0, abs=1e-12)  # a mean of 1010 ones in floating point
    for row in metrics["per_class"]:
        assert row["AP"] == (one if row["label"] in with_gt else None)
        assert row["AP50"] == (one if row["label"] in with_gt else None)
    assert metrics["groups"]["rare"]["AP"] == one and metrics["groups"]["common"]["AP"] == one
    assert metrics["groups"]["frequent"] == {"AP": None, "AP50": None, "classes": 0, "classes_with_gt": 0}
    not_crowd = [a for a in raw["annotations"] if not a["iscrowd"]]
    assert metrics["counts"] == {
        "images": 128,
        "images_with_detections": len({a["image_id"] for a in not_crowd}),
        "detections": len(not_crowd),
        "gt_boxes": len(not_crowd),
        "crowd_boxes": 10,
        "classes": 80,
        "classes_with_gt": 71,
    }
    _assert_agree(metrics, _torchmetrics(raw, dataset.category_ids, detections, dataset.image_ids), 80)
    # The same through the pycocotools COCO object.
    through_coco = coco_evaluation(dataset.coco, detections, dataset.category_ids, groups)
    assert through_coco == metrics


def _perturbed(dataset, seed):
    """Shifted and rescaled ground truth, every fifth class dropped, random scores, false positives."""
    generator = torch.Generator().manual_seed(seed)
    detections = []
    for entry in _ground_truth_detections(dataset):
        boxes, labels = entry["boxes"], entry["labels"]
        keep = labels % 5 != 0
        boxes, labels = boxes[keep], labels[keep]
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        boxes = boxes + 0.15 * size * torch.randn(boxes.shape, generator=generator)
        boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
        extra = 3
        corner = torch.rand(extra, 2, generator=generator) * 400
        false_boxes = torch.cat([corner, corner + 20 + 100 * torch.rand(extra, 2, generator=generator)], 1)
        # Label 10 (COCO id 11, fire hydrant) has no ground truth in COCO128: detections of it get no AP.
        false_labels = torch.tensor([10, 0, 1])
        detections.append(
            {
                "image_id": entry["image_id"],
                "boxes": torch.cat([boxes, false_boxes]).to(torch.float32),
                "scores": torch.rand(len(labels) + extra, generator=generator),
                "labels": torch.cat([labels, false_labels]),
            }
        )
    return detections


def test_perturbed_detections_match_torchmetrics(raw, dataset):
    assert dataset.class_image_counts()[10] == 0
    detections = _perturbed(dataset, seed=0)
    counts = dataset.class_image_counts()
    groups = frequency_groups(counts)
    metrics = coco_evaluation(dataset, detections, groups=groups, class_image_counts=counts)
    assert 0.05 < metrics["AP"] < 0.9 and metrics["AP50"] > metrics["AP"]
    theirs = _torchmetrics(raw, dataset.category_ids, detections, dataset.image_ids)
    _assert_agree(metrics, theirs, 80)
    assert metrics["per_class"][10]["AP"] is None and metrics["per_class"][10]["detections"] == 128
    assert metrics["per_class"][5]["AP"] == 0.0  # dropped class with ground truth: every box missed
    # Group means over the classes with ground truth, from torchmetrics' per-class values.
    per_class = dict(zip(theirs["classes"].tolist(), theirs["map_per_class"].tolist()))
    for name, members in groups.items():
        values = [per_class[c] for c in members if per_class.get(c, -1) != -1]
        expected = sum(values) / len(values) if values else None
        assert metrics["groups"][name]["AP"] == (None if expected is None else pytest.approx(expected, abs=TOLERANCE))
        assert metrics["groups"][name]["classes_with_gt"] == len(values)
    assert [row["train_images"] for row in metrics["per_class"]] == counts.tolist()
    # With torchmetrics' own float32 thresholds (see RECALL_THRESHOLDS): close, not equal.
    defaults = _torchmetrics(raw, dataset.category_ids, detections, dataset.image_ids, default_thresholds=True)
    for key in ("AP", "AP50", "AP75"):
        assert metrics[key] == pytest.approx(float(defaults[TORCHMETRICS_KEYS[key]]), abs=1e-3)


def test_image_subset_and_category_order(raw):
    """Labels given out of id order map to the right COCOeval columns; a subset of images is evaluated."""
    kept = [62, 1, 3]  # chair, person, car
    subset = load_coco128(SHARED, categories=kept)
    indices = list(range(0, 40))
    detections = _ground_truth_detections(subset, indices)
    for entry in detections:  # keep only the chairs: person and car are all missed
        keep = entry["labels"] == 0
        entry.update(boxes=entry["boxes"][keep], scores=entry["scores"][keep], labels=entry["labels"][keep])
    image_ids = [subset.image_ids[i] for i in indices]
    metrics = coco_evaluation(subset, detections, image_ids=image_ids)
    assert [row["name"] for row in metrics["per_class"]] == ["chair", "person", "car"]
    assert [row["AP"] for row in metrics["per_class"]] == [1.0, 0.0, 0.0]
    gt = [a for a in raw["annotations"] if a["image_id"] in image_ids and not a["iscrowd"]]
    assert [row["gt_boxes"] for row in metrics["per_class"]] == [sum(a["category_id"] == c for a in gt) for c in kept]
    assert metrics["counts"]["images"] == 40
    _assert_agree(metrics, _torchmetrics(raw, kept, detections, image_ids), 3)


def test_empty_detections_score_zero(raw, dataset):
    with_gt = {dataset.category_ids.index(a["category_id"]) for a in raw["annotations"]}
    empty = [
        {
            "image_id": i,
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
        for i in dataset.image_ids
    ]
    for detections in ([], empty):
        metrics = coco_evaluation(dataset, detections)
        assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == metrics["AR_100"] == 0.0
        assert [row["AP"] for row in metrics["per_class"]] == [0.0 if c in with_gt else None for c in range(80)]
        assert metrics["counts"]["detections"] == metrics["counts"]["images_with_detections"] == 0
    theirs = _torchmetrics(raw, dataset.category_ids, empty, dataset.image_ids)
    assert float(theirs["map"]) == float(theirs["map_50"]) == 0.0


def test_bad_arguments_raise(dataset):
    good = _ground_truth_detections(dataset, [0])
    entry = good[0]
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.79"):
        coco_evaluation(dataset, [{**entry, "labels": entry["labels"] + 80}])
    with pytest.raises(ValueError, match="is not among the evaluated image_ids"):
        coco_evaluation(dataset, [{**entry, "image_id": 1}])
    with pytest.raises(ValueError, match="has two entries"):
        coco_evaluation(dataset, [entry, entry])
    with pytest.raises(ValueError, match="finite"):
        coco_evaluation(dataset, [{**entry, "scores": entry["scores"] * math.nan}])
    with pytest.raises(ValueError, match="x2 >= x1"):
        coco_evaluation(dataset, [{**entry, "boxes": entry["boxes"][:, [2, 1, 0, 3]]}])
    with pytest.raises(ValueError, match=r"boxes must be \(n, 4\)"):
        coco_evaluation(dataset, [{**entry, "boxes": entry["boxes"][:, :3]}])
    with pytest.raises(ValueError, match=r"boxes must be \(n, 4\)"):
        coco_evaluation(dataset, [{**entry, "boxes": entry["boxes"][:1, :3]}])
    with pytest.raises(ValueError, match="must be a dict with image_id"):
        coco_evaluation(dataset, [{"image_id": 9}])
    with pytest.raises(ValueError, match="category_ids is required"):
        coco_evaluation(dataset.coco, good)
    with pytest.raises(TypeError, match="CocoDetection or a pycocotools COCO"):
        coco_evaluation("instances.json", good)
    with pytest.raises(ValueError, match="groups must be disjoint"):
        coco_evaluation(dataset, good, groups={"a": [0, 1], "b": [1]})
    with pytest.raises(ValueError, match="not a label in 0..79"):
        coco_evaluation(dataset, good, groups={"a": [80]})
    with pytest.raises(ValueError, match="image_ids holds 1,"):
        coco_evaluation(dataset, good, image_ids=[1])
    with pytest.raises(ValueError, match="one entry per class"):
        coco_evaluation(dataset, good, class_image_counts=[1, 2])


def test_report_holds_the_numbers(dataset, tmp_path):
    counts = dataset.class_image_counts()
    metrics = coco_evaluation(
        dataset, _perturbed(dataset, seed=1), groups=frequency_groups(counts), class_image_counts=counts
    )
    files = write_detection_report(metrics, tmp_path / "out", "RetinaNet on COCO128", extra_meta={"seed": 1})
    assert files == {"metrics": tmp_path / "out" / "metrics.json", "report": tmp_path / "out" / "report.md"}
    saved = json.loads(files["metrics"].read_text())
    assert saved["title"] == "RetinaNet on COCO128" and saved["meta"] == {"seed": 1}
    assert saved["metrics"] == json.loads(json.dumps(metrics))  # None for undefined values, never NaN
    report = files["report"].read_text()
    assert report.startswith("# RetinaNet on COCO128\n") and "- seed: 1" in report
    assert f"| AP | {100 * metrics['AP']:.1f} |" in report
    assert f"| AP50 | {100 * metrics['AP50']:.1f} |" in report
    rare = metrics["groups"]["rare"]
    assert f"| rare | {rare['classes']} | {rare['classes_with_gt']} | {100 * rare['AP']:.1f} |" in report
    for name, members in frequency_groups(counts).items():  # each group's span of training images
        spans = [int(counts[label]) for label in members]
        assert metrics["groups"][name]["train_images"] == ([min(spans), max(spans)] if spans else None)
    fewest = min(counts[c] for c in frequency_groups(counts)["rare"])
    assert re.search(rf"^\| rare \|.*\| {fewest}-\d+ \|$", report, re.MULTILINE)
    # Per-class rows ordered by training images: person (the most frequent class) first.
    section = report.split("## Per class, by training images (%)")[1]
    names = re.findall(r"^\| \d+ \| ([^|]+?) \|", section, flags=re.MULTILINE)
    by_count = sorted(metrics["per_class"], key=lambda row: (-row["train_images"], -row["gt_boxes"], row["label"]))
    assert names == [row["name"] for row in by_count] and names[0] == "person"
    person = metrics["per_class"][0]
    assert f"| 0 | person | common | {person['train_images']} | {person['gt_boxes']} |" in section
    with pytest.raises(ValueError, match="coco_evaluation returns"):
        write_detection_report({"AP": 0.1}, tmp_path, "x")


def test_plots_are_written(dataset, tmp_path):
    detections = _perturbed(dataset, seed=2)
    path = plot_detections(dataset, detections, [0, 1, 2, 3], tmp_path / "detections.png", columns=2)
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.size == (round(5.2 * 2 * 110), round((4.4 * 2 + 0.6) * 110))
    counts = dataset.class_image_counts()
    metrics = coco_evaluation(dataset, detections)
    path = plot_ap_vs_frequency(
        [row["AP"] for row in metrics["per_class"]], counts, dataset.class_names, tmp_path / "ap.png"
    )
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.size == (1200, 720)
    with pytest.raises(ValueError, match="indices holds 128"):
        plot_detections(dataset, detections, [128], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="one entry per class"):
        plot_ap_vs_frequency([0.5], counts, dataset.class_names, tmp_path / "bad.png")
