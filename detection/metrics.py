"""COCO box AP with per-class and per-frequency-group results, the plots and the report of a detector.

>>> from equipoise.detection.data import frequency_groups, load_coco128
>>> from equipoise.detection.metrics import coco_evaluation, plot_ap_vs_frequency, write_detection_report
>>> dataset = load_coco128()
>>> counts = dataset.class_image_counts()                     # training frequency of each class
>>> metrics = coco_evaluation(dataset, detections, groups=frequency_groups(counts), class_image_counts=counts)
>>> write_detection_report(metrics, "results/detection", "RetinaNet on COCO128")

The numbers are those of the COCO detection protocol (Lin et al., "Microsoft COCO: Common Objects
in Context", ECCV 2014; https://cocodataset.org/#detection-eval), computed by pycocotools'
``COCOeval`` with ``iouType="bbox"`` and its default parameters: IoU thresholds 0.50:0.05:0.95,
101 recall points, at most 1 / 10 / 100 detections per image, area ranges small (< 32^2 px),
medium (32^2 to 96^2) and large (> 96^2) measured with the annotation's ``area`` (the segmentation
area for COCO ground truth, ``w * h`` for detections). Crowd annotations of the ground truth are
regions in which detections are ignored, as in the protocol; the ground truth is the untouched COCO
file (``dataset.coco``), so boxes that the training targets drop as degenerate still count.

What :func:`coco_evaluation` returns (a dict of plain Python values, fractions in [0, 1] as
torchmetrics' ``MeanAveragePrecision`` reports them, ``None`` where a value is undefined):

- ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``AP_small``, ``AP_medium``, ``AP_large`` and
  ``AR_1``, ``AR_10``, ``AR_100``, ``AR_small``, ``AR_medium``, ``AR_large``: ``COCOeval.stats``,
  which average over the classes with ground truth (``None`` where COCOeval gives -1: no ground
  truth at all, or none in that area range);
- ``per_class``: one row per label: ``label``, ``category_id``, ``name``, ``group`` (the
  frequency group holding the label, or ``None``), ``train_images`` (when ``class_image_counts`` is
  given), ``gt_boxes`` and ``gt_images`` (non-crowd ground truth in the evaluated images),
  ``detections``, ``AP`` and ``AP50``. A class's AP is the mean of
  ``COCOeval.eval["precision"][:, :, k, area all, maxDets 100]`` over IoU thresholds and recall
  points, which is what ``COCOeval.summarize`` gives with ``params.catIds = [k]`` and what
  torchmetrics reports as ``map_per_class``. A class without non-crowd ground truth in the evaluated
  images has no AP (COCOeval's -1, torchmetrics' -1): ``None`` here, and it is left out of every mean;
- ``groups``: for each group (e.g. :func:`equipoise.detection.data.frequency_groups`' LVIS rare /
  common / frequent), ``AP`` and ``AP50`` as the mean over the group's classes that have ground
  truth in the evaluated images (``None`` when none has), ``classes`` and ``classes_with_gt``. This is
  how LVIS reports APr / APc / APf (Gupta, Dollar, Girshick, "LVIS: A Dataset for Large Vocabulary
  Instance Segmentation", CVPR 2019), but on COCO's protocol: LVIS's own evaluation also treats its
  non-exhaustive and negative image labels specially, which COCO files do not have;
- ``counts``: ``images`` evaluated, ``images_with_detections``, ``detections``, ``gt_boxes`` and
  ``crowd_boxes`` (of the evaluated classes), ``classes`` and ``classes_with_gt``.

Agreement with torchmetrics (``MeanAveragePrecision(class_metrics=True)``, pycocotools backend, the
ground truth given with its ``iscrowd`` and ``area``): ``map``, ``map_50``, ``map_75``, the area and
recall values and ``map_per_class`` agree within float32 rounding when torchmetrics is given
pycocotools' thresholds (``np.linspace(0.5, 0.95, 10)`` and ``np.linspace(0, 1, 101)``). Its default
thresholds come from a float32 ``torch.linspace`` (0.2 becomes 0.20000000298), which moves a recall
point lying exactly on ``k / n`` to the next recall level and lowers a class's AP by up to about 1e-3;
the values here are pycocotools' own, those of the COCO reference evaluation.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from equipoise.core.metrics import _pyplot, _save
from equipoise.core.reporting import format_value, markdown_table
from equipoise.core.validation import ArrayLike, as_class_counts, check_class_counts
from equipoise.detection.data import CocoDetection, frequency_groups

__all__ = [
    "SUMMARY_KEYS",
    "coco_evaluation",
    "plot_ap_vs_frequency",
    "plot_detections",
    "write_detection_report",
]

#: The names of ``COCOeval.stats[0..11]`` in the dict :func:`coco_evaluation` returns.
SUMMARY_KEYS = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR_1",
    "AR_10",
    "AR_100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def coco_evaluation(
    dataset_or_coco_gt: CocoDetection | COCO,
    detections: Sequence[Mapping[str, Any]],
    category_ids: Sequence[int] | None = None,
    groups: Mapping[str, Sequence[int]] | None = None,
    image_ids: Sequence[int] | None = None,
    class_image_counts: ArrayLike | None = None,
) -> dict[str, Any]:
    """COCO box AP of ``detections`` overall, per class and per group (see the module docstring).

    Args:
        dataset_or_coco_gt: a :class:`~equipoise.detection.data.CocoDetection` (its ``coco`` is the
            ground truth) or a ``pycocotools.coco.COCO`` object.
        detections: one dict per image: ``image_id`` (COCO id, int), ``boxes`` ``(n, 4)`` xyxy in
            pixels, ``scores`` ``(n,)``, ``labels`` ``(n,)`` contiguous labels ``0..K-1`` (the output
            of a torchvision detection model in eval mode, with the image id added). Tensors may be on
            any device. An image without an entry has no detections; an empty list scores 0.
        category_ids: ``category_ids[label]`` is the COCO category id of ``label``; default the
            dataset's (required with a ``COCO`` object).
        groups: disjoint groups of labels, e.g. ``frequency_groups(dataset.class_image_counts())``.
        image_ids: the images to evaluate; default every image of the dataset (of the ``COCO`` object).
            Pass the images the model actually saw when it ran on a subset: an evaluated image
            without detections counts its ground truth as missed.
        class_image_counts: ``(K,)`` training images per class, copied into ``per_class`` (the report
            sorts by it).

    Boxes are converted to COCO's ``[x, y, width, height]`` in float64. Detections beyond the 100
    best-scored of an image and class are ignored by COCOeval (``maxDets``).
    """
    coco_gt, category_ids, image_ids = _ground_truth(dataset_or_coco_gt, category_ids, image_ids)
    num_classes = len(category_ids)
    groups = _check_groups(groups, num_classes)
    counts = None
    if class_image_counts is not None:
        counts = as_class_counts(class_image_counts, name="class_image_counts")
        check_class_counts(counts, num_classes, name="class_image_counts", allow_zero=True)
    entries = _check_detections(detections, num_classes, set(image_ids))

    annotations = []
    detections_per_class = [0] * num_classes
    for image_id, boxes, scores, labels in entries:
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        for index in range(len(scores)):
            label = int(labels[index])
            detections_per_class[label] += 1
            width, height = float(widths[index]), float(heights[index])
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval needs ids >= 1 (0 marks "unmatched")
                    "image_id": image_id,
                    "category_id": category_ids[label],
                    "bbox": [float(boxes[index, 0]), float(boxes[index, 1]), width, height],
                    "area": width * height,
                    "score": float(scores[index]),
                    "iscrowd": 0,
                }
            )
    # Built directly rather than with COCO.loadRes, which fails on an empty list.
    results = COCO()
    results.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        results.createIndex()
        evaluation = COCOeval(coco_gt, results, iouType="bbox")
        evaluation.params.imgIds = sorted(image_ids)
        evaluation.params.catIds = sorted(category_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()

    metrics: dict[str, Any] = {key: _defined(value) for key, value in zip(SUMMARY_KEYS, evaluation.stats)}
    # precision: (IoU thresholds, recall points, categories in sorted id order, areas, maxDets).
    params = evaluation.params
    precision = evaluation.eval["precision"][:, :, :, params.areaRngLbl.index("all"), params.maxDets.index(100)]
    at_50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
    column = {category_id: position for position, category_id in enumerate(params.catIds)}

    gt_boxes, gt_images, crowd_boxes = [0] * num_classes, [0] * num_classes, 0
    label_of = {category_id: label for label, category_id in enumerate(category_ids)}
    for image_id in image_ids:
        present = set()
        for annotation in coco_gt.imgToAnns.get(image_id, []):
            label = label_of.get(annotation["category_id"])
            if label is None:
                continue
            if annotation.get("iscrowd", 0):
                crowd_boxes += 1
                continue
            gt_boxes[label] += 1
            present.add(label)
        for label in present:
            gt_images[label] += 1

    group_of = {label: name for name, members in groups.items() for label in members}
    per_class = []
    for label, category_id in enumerate(category_ids):
        values = precision[:, :, column[category_id]]
        row: dict[str, Any] = {
            "label": label,
            "category_id": category_id,
            "name": str(coco_gt.cats[category_id]["name"]),
            "group": group_of.get(label),
        }
        if counts is not None:
            row["train_images"] = int(counts[label])
        row |= {
            "gt_boxes": gt_boxes[label],
            "gt_images": gt_images[label],
            "detections": detections_per_class[label],
            "AP": _mean_defined(values),
            "AP50": _mean_defined(values[at_50]),
        }
        per_class.append(row)
    metrics["per_class"] = per_class
    metrics["groups"] = {
        name: {
            "AP": _mean_of([per_class[label]["AP"] for label in members]),
            "AP50": _mean_of([per_class[label]["AP50"] for label in members]),
            "classes": len(members),
            "classes_with_gt": sum(gt_boxes[label] > 0 for label in members),
        }
        for name, members in groups.items()
    }
    if counts is not None:  # the group's span of training images, so the report states its boundaries
        for name, members in groups.items():
            spans = [int(counts[label]) for label in members]
            metrics["groups"][name]["train_images"] = [min(spans), max(spans)] if spans else None
    metrics["counts"] = {
        "images": len(image_ids),
        "images_with_detections": sum(len(scores) > 0 for _, _, scores, _ in entries),
        "detections": len(annotations),
        "gt_boxes": sum(gt_boxes),
        "crowd_boxes": crowd_boxes,
        "classes": num_classes,
        "classes_with_gt": sum(count > 0 for count in gt_boxes),
    }
    return metrics


def _defined(value: float) -> float | None:
    """COCOeval's -1 ("no ground truth") as ``None``."""
    return None if value < 0 else float(value)


def _mean_defined(values: np.ndarray) -> float | None:
    kept = values[values > -1]
    return float(kept.mean()) if kept.size else None


def _mean_of(values: Sequence[float | None]) -> float | None:
    kept = [value for value in values if value is not None]
    return sum(kept) / len(kept) if kept else None


def _ground_truth(
    source: CocoDetection | COCO, category_ids: Sequence[int] | None, image_ids: Sequence[int] | None
) -> tuple[COCO, list[int], list[int]]:
    if isinstance(source, CocoDetection):
        coco_gt = source.coco
        category_ids = source.category_ids if category_ids is None else category_ids
        image_ids = source.image_ids if image_ids is None else image_ids
    elif isinstance(source, COCO):
        coco_gt = source
        if category_ids is None:
            raise ValueError("category_ids is required with a COCO object: category_ids[label] = COCO category id")
        image_ids = sorted(coco_gt.imgs) if image_ids is None else image_ids
    else:
        raise TypeError(
            f"dataset_or_coco_gt must be a CocoDetection or a pycocotools COCO object, got {type(source).__name__}"
        )
    for name, values, known in (("category_ids", category_ids, coco_gt.cats), ("image_ids", image_ids, coco_gt.imgs)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(f"{name} must be a sequence of ints, got {type(values).__name__}")
        if not values:
            raise ValueError(f"{name} is empty")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must hold ints, got {value!r}")
            if value not in known:
                raise ValueError(f"{name} holds {value}, which the ground truth does not declare")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} holds duplicates")
    return coco_gt, list(category_ids), list(image_ids)


def _check_groups(groups: Mapping[str, Sequence[int]] | None, num_classes: int) -> dict[str, list[int]]:
    if groups is None:
        return {}
    if not isinstance(groups, Mapping):
        raise TypeError(f"groups must map group names to lists of labels, got {type(groups).__name__}")
    seen: dict[int, str] = {}
    checked = {}
    for name, members in groups.items():
        if not isinstance(name, str):
            raise TypeError(f"groups keys must be strings, got {name!r}")
        members = [int(label) if isinstance(label, torch.Tensor) else label for label in members]
        for label in members:
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
                raise ValueError(f"groups[{name!r}] holds {label!r}, not a label in 0..{num_classes - 1}")
            if label in seen:
                raise ValueError(
                    f"label {label} is in both groups {seen[label]!r} and {name!r}: groups must be disjoint"
                )
            seen[label] = name
        checked[name] = members
    return checked


def _check_detections(
    detections: Sequence[Mapping[str, Any]], num_classes: int, image_ids: set[int]
) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """``(image_id, boxes float64 (n, 4) xyxy, scores (n,), labels (n,))`` per entry, after the checks."""
    if isinstance(detections, Mapping) or not isinstance(detections, Sequence):
        raise TypeError(f"detections must be a list of dicts (one per image), got {type(detections).__name__}")
    entries, seen = [], set()
    for position, entry in enumerate(detections):
        where = f"detections[{position}]"
        if not isinstance(entry, Mapping) or not {"image_id", "boxes", "scores", "labels"} <= set(entry):
            raise ValueError(f"{where} must be a dict with image_id, boxes, scores and labels")
        image_id = entry["image_id"]
        if isinstance(image_id, torch.Tensor) and image_id.numel() == 1:
            image_id = int(image_id.item())
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)):
            raise TypeError(f"{where}['image_id'] must be an int, got {image_id!r}")
        image_id = int(image_id)
        if image_id not in image_ids:
            raise ValueError(f"{where}['image_id'] = {image_id} is not among the evaluated image_ids")
        if image_id in seen:
            raise ValueError(f"{where}: image_id {image_id} has two entries; give each image one")
        seen.add(image_id)
        boxes = torch.as_tensor(entry["boxes"]).detach().cpu().to(torch.float64)
        scores = torch.as_tensor(entry["scores"]).detach().cpu().to(torch.float64)
        labels = torch.as_tensor(entry["labels"]).detach().cpu()
        count = scores.numel()
        if count == 0 and boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)  # torchvision models give (0, 4); (0,) is accepted too
        if scores.dim() != 1 or boxes.dim() != 2 or tuple(boxes.shape) != (count, 4):
            raise ValueError(
                f"{where}: boxes must be (n, 4) and scores (n,), got {tuple(boxes.shape)} and {tuple(scores.shape)}"
            )
        if labels.shape != scores.shape:
            raise ValueError(f"{where}: labels must be ({count},) like scores, got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"{where}['labels'] must hold integer labels, got dtype {labels.dtype}")
        if count and not (bool(torch.isfinite(boxes).all()) and bool(torch.isfinite(scores).all())):
            raise ValueError(f"{where}: boxes and scores must be finite")
        if count and bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
            raise ValueError(f"{where}: boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
        if count and not bool(((labels >= 0) & (labels < num_classes)).all()):
            raise ValueError(f"{where}: labels must be in 0..{num_classes - 1}, got {labels.unique().tolist()}")
        entries.append((image_id, boxes.numpy(), scores.numpy(), labels.to(torch.int64).numpy()))
    return entries


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------

_GT_COLOUR, _PREDICTION_COLOUR = (
    "#1a9850",
    "#d95f02",
)  # green and orange, distinct in grey and for most colour blindness


def plot_detections(
    dataset: CocoDetection,
    detections: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    path: str | os.PathLike,
    score_threshold: float = 0.3,
    columns: int = 3,
    title: str | None = None,
) -> Path:
    """Ground truth (green, name under the box) and detections scoring at least ``score_threshold``
    (orange, dashed, ``name score`` above the box) on the images ``dataset[index]`` for ``index`` in
    ``indices``, in a grid of ``columns``; writes a PNG and returns its path.

    Images are read with ``dataset.load`` (without the dataset's random transforms); ``detections``
    is the list :func:`coco_evaluation` takes, matched to the images by ``image_id``.
    """
    if not isinstance(dataset, CocoDetection):
        raise TypeError(f"dataset must be a CocoDetection, got {type(dataset).__name__}")
    indices = list(indices)
    if not indices:
        raise ValueError("indices is empty: name at least one image")
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(dataset):
            raise ValueError(f"indices holds {index!r}, not an index in 0..{len(dataset) - 1}")
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)):
        raise TypeError(f"score_threshold must be a number, got {type(score_threshold).__name__}")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an int >= 1, got {columns!r}")
    by_image = {
        image_id: (boxes, scores, labels)
        for image_id, boxes, scores, labels in _check_detections(
            detections, dataset.num_classes, set(dataset.image_ids)
        )
    }
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    columns = min(columns, len(indices))
    rows = math.ceil(len(indices) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.4 * rows + 0.6), dpi=110, squeeze=False)
    for axis in axes.flat[len(indices) :]:
        axis.axis("off")
    for axis, index in zip(axes.flat, indices):
        image, target = dataset.load(index)
        axis.imshow(image.permute(1, 2, 0).numpy())
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            axis.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=_GT_COLOUR, linewidth=1.8))
            axis.text(x1, y2, dataset.class_names[label], **_label_style(_GT_COLOUR, "top"))
        boxes, scores, labels = by_image.get(target["image_id"], (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)))
        shown = 0
        for box, score, label in zip(boxes, scores, labels):
            if score < score_threshold:
                continue
            shown += 1
            x1, y1, x2, y2 = box.tolist()
            axis.add_patch(
                Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=_PREDICTION_COLOUR, linewidth=1.8, linestyle="--"
                )
            )
            axis.text(x1, y1, f"{dataset.class_names[label]} {score:.2f}", **_label_style(_PREDICTION_COLOUR, "bottom"))
        height, width = target["orig_size"]
        axis.set_xlim(0, width)
        axis.set_ylim(height, 0)
        axis.set_title(
            f"image {target['image_id']}: {len(target['labels'])} ground-truth boxes, "
            f"{shown} detection{'' if shown == 1 else 's'} >= {score_threshold:g}",
            fontsize=9,
        )
        axis.set_xlabel("x (pixels)", fontsize=8)
        axis.set_ylabel("y (pixels)", fontsize=8)
        axis.tick_params(labelsize=7)
    handles = [
        Line2D([], [], color=_GT_COLOUR, linewidth=2, label="ground truth (training targets)"),
        Line2D([], [], color=_PREDICTION_COLOUR, linewidth=2, linestyle="--", label="detection (class, score)"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    figure.suptitle(title or f"Detections with score >= {score_threshold:g} against the ground truth", fontsize=11)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(figure, plt, path)


def _label_points(figure, axis, points: list[tuple[float, float, str]], fontsize: float) -> int:
    """Name each point beside it where the name overlaps no name placed before; returns how many were named.

    Greedy in display space, points in order of increasing y then x; each name tries four positions
    (right above, right below, left above, left below) and must overlap neither a placed name nor a
    point. Widths are estimated from the character count.
    """
    figure.canvas.draw()  # fixes the transforms
    pixels_per_point = figure.dpi / 72
    height = 1.3 * fontsize * pixels_per_point
    radius = 3 * pixels_per_point
    centres = [tuple(axis.transData.transform((x, y))) for x, y, _ in points]
    placed: list[tuple[float, float, float, float]] = []
    named = 0
    for index in sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0])):
        x, y, name = points[index]
        px, py = centres[index]
        others = [
            (cx - radius, cy - radius, cx + radius, cy + radius) for i, (cx, cy) in enumerate(centres) if i != index
        ]
        width = 0.62 * fontsize * pixels_per_point * len(name)
        for dx, dy, ha, va in (
            (4, 3, "left", "bottom"),
            (4, -3, "left", "top"),
            (-4, 3, "right", "bottom"),
            (-4, -3, "right", "top"),
        ):
            left = px + dx if ha == "left" else px + dx - width
            bottom = py + dy if va == "bottom" else py + dy - height
            box = (left, bottom, left + width, bottom + height)
            if all(
                box[2] <= other[0] or box[0] >= other[2] or box[3] <= other[1] or box[1] >= other[3]
                for other in placed + others
            ):
                placed.append(box)
                axis.annotate(
                    name, (x, y), xytext=(dx, dy), textcoords="offset pixels", ha=ha, va=va, fontsize=fontsize, zorder=4
                )
                named += 1
                break
    return named


def _label_style(colour: str, vertical: str) -> dict[str, Any]:
    return {
        "fontsize": 7,
        "color": "white",
        "va": vertical,
        "ha": "left",
        "clip_on": True,
        "bbox": {"facecolor": colour, "edgecolor": "none", "alpha": 0.85, "pad": 1.2},
    }


def plot_ap_vs_frequency(
    per_class_ap: Sequence[float | None],
    class_image_counts: ArrayLike,
    class_names: Sequence[str],
    path: str | os.PathLike,
    rare_max: int = 10,
    common_max: int = 100,
    title: str = "Per-class AP against training frequency",
) -> Path:
    """Each class's AP against the number of training images containing it (log x axis), with the
    LVIS groups (rare: 1..``rare_max``, common: up to ``common_max``, frequent: more) shaded, their
    boundaries drawn and each group's mean AP as a horizontal segment; writes a PNG. Points are named
    with their class where the name overlaps no other name or point (the title says how many are).

    ``per_class_ap``: ``(K,)`` APs in [0, 1], ``None`` or NaN for a class without ground truth
    (not drawn, like classes in no training image, which a log axis cannot show; the title counts both).
    """
    counts = as_class_counts(class_image_counts, name="class_image_counts")
    check_class_counts(counts, name="class_image_counts", allow_zero=True)
    num_classes = counts.numel()
    ap = [math.nan if value is None else float(value) for value in per_class_ap]
    names = [str(name) for name in class_names]
    if len(ap) != num_classes or len(names) != num_classes:
        raise ValueError(
            f"per_class_ap ({len(ap)}), class_image_counts ({num_classes}) and class_names ({len(names)}) "
            "must have one entry per class"
        )
    groups = frequency_groups(counts, rare_max, common_max)
    counts = counts.numpy()
    shown = [c for c in range(num_classes) if counts[c] > 0 and not math.isnan(ap[c])]
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 6), dpi=120)
    top = max([common_max * 3.0, *(counts[c] * 1.6 for c in shown)])
    spans = {
        "rare": (0.7, rare_max + 0.5),
        "common": (rare_max + 0.5, common_max + 0.5),
        "frequent": (common_max + 0.5, top),
    }
    shades = {"rare": "#fde0dd", "common": "#fff7bc", "frequent": "#deebf7"}
    for name, (low, high) in spans.items():
        axis.axvspan(low, high, color=shades[name], zorder=0)
        members = [c for c in groups[name] if c in shown]
        mean = float(np.mean([ap[c] for c in members])) if members else math.nan
        text = f"{name}\n{len(members)} classes" + (f", mean AP {mean:.3f}" if members else "")
        axis.text(math.sqrt(low * high), 1.07, text, ha="center", va="bottom", fontsize=8)
        if members:
            axis.hlines(mean, low, high, colors="black", linestyles=":", linewidth=1.2, zorder=2)
    for boundary in (rare_max + 0.5, common_max + 0.5):
        axis.axvline(boundary, color="grey", linestyle="--", linewidth=1, zorder=1)
    axis.scatter([counts[c] for c in shown], [ap[c] for c in shown], s=22, color="tab:blue", zorder=3)
    axis.set_xscale("log")
    axis.set_xlim(0.7, top)
    axis.set_ylim(-0.03, 1.2)
    axis.set_yticks(np.linspace(0, 1, 6))
    axis.set_xlabel(
        "training images containing the class (log scale); dashed lines: LVIS group boundaries, "
        "dotted: mean AP of the group's classes"
    )
    axis.set_ylabel("AP of the class (IoU 0.50:0.95)")
    axis.grid(True, which="major", alpha=0.3)
    axis.set_title(f"{title}\n")  # the second line is written once the names are placed
    figure.tight_layout()
    # Names are placed once the layout is fixed.
    labelled = _label_points(figure, axis, [(counts[c], ap[c], names[c]) for c in shown], fontsize=6.5)
    axis.set_title(
        f"{title}\n{len(shown)} classes shown ({num_classes - len(shown)} without training images or ground truth "
        f"left out), {labelled} named (names that would overlap left out)",
        fontsize=10,
    )
    return _save(figure, plt, path)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _json_safe(value: Any) -> Any:
    """NaN and infinities to ``None`` (strict JSON), tensors and NumPy values to Python, recursively."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _span(bounds: list[int] | None) -> str:
    return "–" if bounds is None else f"{bounds[0]}-{bounds[1]}"


def write_detection_report(
    metrics: Mapping[str, Any],
    output_dir: str | os.PathLike,
    title: str,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json`` (``{"title", "meta", "metrics"}``) and ``report.md`` into ``output_dir``.

    ``metrics`` is :func:`coco_evaluation`'s dict; ``extra_meta`` (model, checkpoint, seed, ...) is
    listed at the top of the report. The report holds the overall table, the group table and the
    per-class table sorted by training frequency (``train_images``, when the evaluation had the
    training counts, else ground-truth boxes), APs in percent. Returns ``{"metrics": path, "report": path}``.
    """
    missing = [key for key in (*SUMMARY_KEYS, "per_class", "groups", "counts") if key not in metrics]
    if missing:
        raise ValueError(f"metrics lacks {missing}: pass the dict coco_evaluation returns")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(extra_meta or {})
    files = {"metrics": output_dir / "metrics.json", "report": output_dir / "report.md"}
    content = {"title": title, "meta": meta, "metrics": metrics}
    files["metrics"].write_text(json.dumps(_json_safe(content), indent=2) + "\n")

    counts = metrics["counts"]
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {format_value(value)}" for key, value in meta.items()]
    lines += [
        f"- Evaluated: {counts['images']} images ({counts['images_with_detections']} with detections), "
        f"{counts['detections']} detections, {counts['gt_boxes']} ground-truth boxes and "
        f"{counts['crowd_boxes']} crowd regions; {counts['classes_with_gt']} of {counts['classes']} classes "
        "have ground truth",
        "- Protocol: COCO box AP (pycocotools COCOeval): IoU 0.50:0.05:0.95, 101 recall points, at most "
        "100 detections per image; crowd regions ignored. Values in percent; – is undefined (no ground truth).",
        "",
        "## Overall (%)",
        "",
        markdown_table([{"metric": key, "value": _percent(metrics[key])} for key in SUMMARY_KEYS]),
    ]
    if metrics["groups"]:
        lines += [
            "## By training frequency (%)",
            "",
            "Mean of the per-class APs of each group's classes that have ground truth here; training images: "
            "the fewest and most of the group's classes (LVIS's own groups: rare 1-10, common 11-100, frequent more).",
            "",
            markdown_table(
                [
                    {
                        "group": name,
                        "classes": group["classes"],
                        "with ground truth": group["classes_with_gt"],
                        "AP": _percent(group["AP"]),
                        "AP50": _percent(group["AP50"]),
                        **({"training images": _span(group["train_images"])} if "train_images" in group else {}),
                    }
                    for name, group in metrics["groups"].items()
                ]
            ),
        ]
    rows = list(metrics["per_class"])
    if rows:
        has_train = "train_images" in rows[0]
        key = "train_images" if has_train else "gt_boxes"
        rows.sort(key=lambda row: (-row[key], -row["gt_boxes"], row["label"]))
        table = [
            {
                "label": row["label"],
                "class": row["name"],
                "group": row["group"] if row["group"] is not None else "–",
                **({"train images": row["train_images"]} if has_train else {}),
                "GT boxes": row["gt_boxes"],
                "GT images": row["gt_images"],
                "detections": row["detections"],
                "AP": _percent(row["AP"]),
                "AP50": _percent(row["AP50"]),
            }
            for row in rows
        ]
        order = "training images" if has_train else "ground-truth boxes"
        lines += [f"## Per class, by {order} (%)", "", markdown_table(table)]
    files["report"].write_text("\n".join(lines))
    return files
