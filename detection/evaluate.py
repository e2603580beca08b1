"""Evaluate a trained detector with COCO box AP, per class and by class frequency, with a report.

>>> from equipoise.detection.evaluate import evaluate_detection
>>> metrics = evaluate_detection("results/detection/coco128_mobilenet_focal/model.pt")   # COCO128
>>> metrics = evaluate_detection("runs/r50/model.pt", images="coco/val2017",
...                              annotations="coco/annotations/instances_val2017.json")
>>> metrics["AP"], metrics["groups"]["rare"]["AP"]

The model is the ``model.pt`` that :func:`equipoise.detection.train.train_detection` writes (read
with ``weights_only=True``); it carries its classes (COCO category ids), so the evaluation set is
read with the same label mapping, and the number of training images of each class, which puts
each class in its LVIS frequency group (rare: at most ``rare_max`` training images, common: at most
``common_max``, frequent: more; Gupta et al. 2019). The scores are pycocotools' (see
:mod:`equipoise.detection.metrics`). Runs on CUDA when there is one (``device="auto"``), with
float16 autocast there when ``fp16=True``.

What it writes into ``output`` (default: ``eval-<images folder name>`` beside the model):
``metrics.json`` and ``report.md`` (overall, group and per-class tables), ``detections.json``
(COCO results format: ``image_id``, ``category_id``, ``bbox`` as x, y, w, h, ``score``, for
pycocotools or any COCO tool), ``detections.png`` (ground truth and detections on a few images)
and ``ap_vs_frequency.png`` (per-class AP against training images, log scale).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from equipoise.core.device import resolve_device
from equipoise.detection.data import CocoDetection, collate, frequency_groups, load_coco128
from equipoise.detection.metrics import (
    coco_evaluation,
    plot_ap_vs_frequency,
    plot_detections,
    write_detection_report,
)
from equipoise.detection.train import load_trained_model

__all__ = ["evaluate_detection", "predict"]


def predict(
    model: torch.nn.Module,
    dataset: CocoDetection,
    device: torch.device,
    batch_size: int = 4,
    indices: list[int] | None = None,
    fp16: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Detections of ``model`` (eval mode) on ``dataset[i]`` for ``i`` in ``indices`` (default all), on the CPU."""
    from tqdm.auto import tqdm

    indices = list(range(len(dataset))) if indices is None else indices
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, collate_fn=collate)
    model.eval()
    detections = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
        for images, targets in tqdm(loader, desc="detect", unit="batch", disable=not progress):
            outputs = model([image.to(device) for image in images])
            for output, target in zip(outputs, targets):
                row = {key: output[key].float().cpu() if key != "labels" else output[key].cpu() for key in output}
                detections.append({"image_id": int(target["image_id"]), **row})
    return detections


def _coco_results(detections: list[dict[str, Any]], category_ids: list[int]) -> list[dict[str, Any]]:
    results = []
    for row in detections:
        for box, score, label in zip(row["boxes"].tolist(), row["scores"].tolist(), row["labels"].tolist()):
            x0, y0, x1, y1 = box
            bbox = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
            results.append(
                {"image_id": row["image_id"], "category_id": category_ids[label], "bbox": bbox, "score": score}
            )
    return results


def evaluate_detection(
    model_path: str | os.PathLike,
    images: str | os.PathLike | None = None,
    annotations: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 4,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
    max_images: int | None = None,
    plot_images: int = 6,
    rare_max: int = 10,
    common_max: int = 100,
    fp16: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the model at ``model_path`` on a COCO-format set; write the report (module docstring).

    Args:
        model_path: a ``model.pt`` of :func:`~equipoise.detection.train.train_detection`.
        images, annotations: the evaluation set; both ``None``: COCO128 under ``data_root``
            (``$EQUIPOISE_DATA``), the set the CPU recipes train on (a fit test).
        output: the report folder; default ``<model folder>/eval-<images folder name>``.
        score_thresh, detections_per_img: torchvision's post-processing (COCO: 0.05 and 100).
        max_images: the first ``max_images`` images only.
        plot_images: images drawn in ``detections.png`` (0: no picture).
        rare_max, common_max: the frequency-group boundaries in training images (LVIS: 10, 100).
        fp16: float16 autocast (CUDA only).

    Returns:
        :func:`equipoise.detection.metrics.coco_evaluation`'s dict, plus ``seconds`` and ``device``.
    """
    model_path = Path(model_path)
    if (images is None) != (annotations is None):
        raise ValueError("give both images and annotations, or neither (COCO128)")
    for name, value in (("batch_size", batch_size), ("detections_per_img", detections_per_img)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
    if not 0 <= score_thresh < 1:
        raise ValueError(f"score_thresh must be in [0, 1), got {score_thresh}")
    resolved = resolve_device(device)
    if fp16 and resolved.type != "cuda":
        raise ValueError(f"fp16 needs a CUDA device; this evaluation runs on {resolved}")
    model, metadata = load_trained_model(model_path, score_thresh=score_thresh, detections_per_img=detections_per_img)
    categories = metadata["category_ids"]
    if images is None:
        dataset = load_coco128(data_root, categories=categories)
        set_name = "coco128"
    else:
        dataset = CocoDetection(images, annotations, categories=categories)
        set_name = Path(images).name
    output = Path(output) if output is not None else model_path.parent / f"eval-{set_name}"
    output.mkdir(parents=True, exist_ok=True)
    indices = list(range(len(dataset) if max_images is None else min(max_images, len(dataset))))

    began = time.perf_counter()
    detections = predict(model.to(resolved), dataset, resolved, batch_size, indices, fp16, progress)
    seconds = time.perf_counter() - began
    counts = torch.as_tensor(metadata["class_image_counts"])
    metrics = coco_evaluation(
        dataset,
        detections,
        groups=frequency_groups(counts, rare_max=rare_max, common_max=common_max),
        image_ids=[dataset.image_ids[index] for index in indices],
        class_image_counts=counts,
    )
    metrics.update({"seconds": seconds, "device": str(resolved)})
    (output / "detections.json").write_text(json.dumps(_coco_results(detections, categories)) + "\n")
    meta = {
        "model": str(model_path),
        "images": f"{set_name} ({len(indices)} images)",
        "device": str(resolved),
        "inference seconds": round(seconds, 1),
        "frequency groups": f"rare <= {rare_max}, common <= {common_max} training images, frequent above",
    }
    write_detection_report(
        metrics, output, f"Detection evaluation: {metadata['config'].get('description') or model_path}", meta
    )
    plot_ap_vs_frequency(
        [row["AP"] for row in metrics["per_class"]],
        counts,
        metadata["class_names"],
        output / "ap_vs_frequency.png",
        rare_max=rare_max,
        common_max=common_max,
    )
    pictures = ["ap_vs_frequency.png"]
    if plot_images:
        plot_detections(dataset, detections, list(range(min(plot_images, len(indices)))), output / "detections.png")
        pictures.append("detections.png")
    with (output / "report.md").open("a") as report:
        report.write("\n" + "\n".join(f"![{name[:-4]}]({name})" for name in pictures) + "\n")
    return metrics
