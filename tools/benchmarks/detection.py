"""Detection benchmarks: the head losses on COCO128 (CPU fit test), the COCO 1x recipe (GPU), loss cost.

    python tools/benchmarks/detection.py cpu         # focal / alpha-balanced BCE / EQLv2 / Seesaw on COCO128
    python tools/benchmarks/detection.py gpu         # RetinaNet R50-FPN, COCO 2017 1x (needs CUDA and COCO)
    python tools/benchmarks/detection.py loss-cost   # head classification loss time vs torchvision's stock head

``cpu``: every ``coco128_mobilenet_*`` recipe (``tools/train_detection.py --list``), the same
initialisation (ImageNet MobileNetV2, seed 0) and schedule, trained on the 128 COCO128 images and
scored on the same images: a fit test (how well each loss learns the rare classes it saw), not a
generalisation result. AP by frequency group uses boundaries scaled to COCO128 (rare: 1-2 training
images, common: 3-5, frequent: 6 or more; LVIS's 10/100 would leave the frequent group empty).
A run whose loss or weights become non-finite is recorded as diverged (with the last logged
iteration) and the table goes on. Runs go to ``OUTPUT/<recipe>/``; finished ones are recorded in
``OUTPUT/cpu_runs.jsonl`` and skipped when the command is run again (``--fresh``: start over); an
interrupted run resumes from its checkpoint.

``gpu``: the ``coco_r50_fpn_1x`` recipe with ``--images``/``--annotations`` pointing at COCO 2017
(train2017 for training; ``--val-images``/``--val-annotations`` for val2017), beside the reference
numbers: torchvision's retinanet_resnet50_fpn 36.4 AP, detectron2's retinanet_R_50_FPN_1x 37.4 AP,
the focal paper's ablation 34.0 AP (FL) vs 31.1 (best alpha-balanced CE) at 600 pixels.

``loss-cost``: one batch of COCO128 images through the MobileNetV2-FPN RetinaNet; the time of the
classification loss (forward and backward from the head's logits, anchors already matched) of each
head loss, relative to torchvision's stock ``RetinaNetClassificationHead.compute_loss`` on the same
batch (median of ``--repeats``).

Tables (JSON + markdown) go to ``OUTPUT/<benchmark>.{json,md}`` (default ``results/detection``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from equipoise.core.reporting import write_table

CPU_RECIPES = [
    "coco128_mobilenet_focal",
    "coco128_mobilenet_bce",
    "coco128_mobilenet_eqlv2",
    "coco128_mobilenet_seesaw",
]
GPU_RECIPE = "coco_r50_fpn_1x"
RARE_MAX, COMMON_MAX = 2, 5
REFERENCES = {
    "torchvision retinanet_resnet50_fpn (COCO val2017)": 36.4,
    "detectron2 retinanet_R_50_FPN_1x (COCO val2017)": 37.4,
    "Lin et al. 2017, Table 1a, FL gamma 2 alpha 0.25, 600 px": 34.0,
    "Lin et al. 2017, Table 1a, best alpha-balanced CE, 600 px": 31.1,
}


def _train_and_score(recipe: str, overrides: list[str], args: argparse.Namespace, **evaluation: Any) -> dict[str, Any]:
    from equipoise.detection.evaluate import evaluate_detection
    from equipoise.detection.train import load_detection_train_config, train_detection

    config = load_detection_train_config(recipe, overrides)
    began = time.perf_counter()
    model_path = train_detection(config, progress=not args.no_progress)
    trained = time.perf_counter() - began
    log = [json.loads(line) for line in (Path(config.output) / "train_log.jsonl").read_text().splitlines()]
    per_iteration = statistics.median(entry["seconds_per_iteration"] for entry in log[1:] or log)
    metrics = evaluate_detection(model_path, progress=not args.no_progress, **evaluation)
    record = {
        "recipe": recipe,
        "loss": config.loss,
        "loss_options": json.dumps(config.loss_options, sort_keys=True),
        "schedule": f"{config.iterations} it x {config.batch_size} img, {config.min_size}-{config.max_size} px",
        "train_s": round(trained, 1),
        "s_per_it": round(per_iteration, 3),
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "AP75": metrics["AP75"],
    }
    record.update({f"AP_{name}": group["AP"] for name, group in metrics["groups"].items()})
    record["eval_s"] = round(metrics["seconds"], 1)
    return record


def _runs(path: Path, fresh: bool) -> dict[str, dict[str, Any]]:
    if fresh:
        path.unlink(missing_ok=True)
    if not path.is_file():
        return {}
    return {record["recipe"]: record for record in map(json.loads, path.read_text().splitlines())}


def cpu(args: argparse.Namespace, output: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from equipoise.detection.train import load_detection_train_config

    runs_path = output / "cpu_runs.jsonl"
    done = _runs(runs_path, args.fresh)
    for recipe in CPU_RECIPES:
        if recipe in done:
            continue
        print(f"== {recipe}", flush=True)
        overrides = [f"output={output / recipe}", *args.overrides]
        if args.root is not None:
            overrides.append(f"data_root={args.root}")
        try:
            done[recipe] = _train_and_score(
                recipe, overrides, args, data_root=args.root, rare_max=RARE_MAX, common_max=COMMON_MAX
            )
        except (FloatingPointError, ValueError) as error:  # a diverged run is a result, not a crash
            if "non-finite" not in str(error):
                raise
            log = [json.loads(line) for line in (output / recipe / "train_log.jsonl").read_text().splitlines()]
            config = load_detection_train_config(recipe, overrides)
            done[recipe] = {
                "recipe": recipe,
                "loss": config.loss,
                "loss_options": json.dumps(config.loss_options, sort_keys=True),
                "diverged": f"after iteration {log[-1]['iteration'] if log else 0}",
            }
            print(f"{recipe} diverged: {error}", flush=True)
        with runs_path.open("a") as file:
            file.write(json.dumps(done[recipe]) + "\n")
    meta = {
        "data": "COCO128: trained and scored on the same 128 images (a fit test, not generalisation)",
        "groups": f"rare 1-{RARE_MAX} training images, common {RARE_MAX + 1}-{COMMON_MAX}, frequent > {COMMON_MAX}",
        "backbone": "MobileNetV2-FPN, ImageNet weights (torchvision), same seed for every loss",
    }
    config = load_detection_train_config(CPU_RECIPES[0], args.overrides)
    meta["optimiser"] = (
        f"{config.optimizer} lr {config.lr:g}, weight decay {config.weight_decay:g}, "
        f"{config.warmup_iterations}-iteration warm-up, x{config.lr_gamma:g} at {config.lr_steps}"
    )
    if args.overrides:
        meta["overrides"] = " ".join(args.overrides)
    rows = [done[recipe] for recipe in CPU_RECIPES]
    columns = list(dict.fromkeys(key for row in rows for key in row))  # diverged runs have fewer keys
    return [{key: row.get(key, "") for key in columns} for row in rows], meta


def gpu(args: argparse.Namespace, output: Path) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    import torch

    references = [{"reference": name, "AP": value} for name, value in REFERENCES.items()]
    if not torch.cuda.is_available() or args.images is None:
        print("The COCO 2017 1x recipe needs a CUDA device and COCO 2017 (https://cocodataset.org):")
        print(
            "  python tools/benchmarks/detection.py gpu --images coco/train2017 "
            "--annotations coco/annotations/instances_train2017.json --val-images coco/val2017 "
            "--val-annotations coco/annotations/instances_val2017.json"
        )
        print("Reference numbers (COCO AP, percent):")
        for row in references:
            print(f"  {row['AP']:5.1f}  {row['reference']}")
        return None
    overrides = [f"output={output / GPU_RECIPE}", f"images={args.images}", f"annotations={args.annotations}"]
    record = _train_and_score(
        GPU_RECIPE,
        [*overrides, *args.overrides],
        args,
        images=args.val_images,
        annotations=args.val_annotations,
        device="cuda",
    )
    return [record, *references], {"device": torch.cuda.get_device_name()}


def loss_cost(args: argparse.Namespace, output: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch
    from torchvision.models.detection.retinanet import RetinaNetClassificationHead
    from torchvision.ops import box_iou

    from equipoise.detection.data import collate, load_coco128
    from equipoise.detection.models import build_retinanet
    from equipoise.detection.train import load_detection_train_config

    dataset = load_coco128(args.root)
    images, targets = collate([dataset[index] for index in range(args.batch_size)])
    rows = []
    stock_ms = None
    for recipe in [None, *CPU_RECIPES]:
        config = load_detection_train_config(recipe or CPU_RECIPES[0])
        torch.manual_seed(0)
        model = build_retinanet(
            len(dataset.category_ids),
            backbone=config.backbone,
            loss=config.loss,
            loss_options=config.loss_options,
            backbone_weights=None,
            min_size=config.min_size,
            max_size=config.max_size,
            fpn_channels=config.fpn_channels,
        ).train()
        head = model.head.classification_head
        if recipe is None:  # torchvision's own head, same weights
            stock = RetinaNetClassificationHead(config.fpn_channels, head.num_anchors, head.num_classes)
            stock.load_state_dict(head.state_dict(), strict=False)
            head = stock
        with torch.no_grad():
            batch, boxes = model.transform(images, [{k: t[k] for k in ("boxes", "labels")} for t in targets])
            features = list(model.backbone(batch.tensors).values())
            outputs = model.head(features)
            anchors = model.anchor_generator(batch, features)
            matched = []
            for target, image_anchors in zip(boxes, anchors):
                matched.append(model.proposal_matcher(box_iou(target["boxes"], image_anchors)))
        timings = []
        for _ in range(args.repeats):
            logits = outputs["cls_logits"].detach().requires_grad_(True)
            began = time.perf_counter()
            loss = head.compute_loss(boxes, {"cls_logits": logits}, matched)
            loss.backward()
            timings.append(time.perf_counter() - began)
        milliseconds = statistics.median(timings[1:] or timings) * 1000
        stock_ms = milliseconds if recipe is None else stock_ms
        rows.append(
            {
                "head": "torchvision stock (focal)" if recipe is None else recipe,
                "loss": "sigmoid_focal" if recipe is None else config.loss,
                "loss_ms": round(milliseconds, 2),
                "relative_to_stock": round(milliseconds / stock_ms, 2),
                "anchors": int(logits.shape[0] * logits.shape[1]),
            }
        )
    meta = {
        "batch": f"{args.batch_size} COCO128 images at {config.min_size}-{config.max_size} px, 80 classes",
        "timed": f"classification loss forward + backward from the logits, median of {args.repeats}",
        "threads": torch.get_num_threads(),
    }
    return rows, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["cpu", "gpu", "loss-cost"], help="which table")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. iterations=100")
    parser.add_argument("--output", default="results/detection", help="runs and tables go here")
    parser.add_argument("--root", default=None, help="data folder holding coco128/ (default: $EQUIPOISE_DATA)")
    parser.add_argument("--images", default=None, help="gpu: COCO train2017 image folder")
    parser.add_argument("--annotations", default=None, help="gpu: instances_train2017.json")
    parser.add_argument("--val-images", default=None, help="gpu: COCO val2017 image folder")
    parser.add_argument("--val-annotations", default=None, help="gpu: instances_val2017.json")
    parser.add_argument("--batch-size", type=int, default=4, help="loss-cost: images in the batch (default: 4)")
    parser.add_argument("--repeats", type=int, default=20, help="loss-cost: timed repeats (default: 20)")
    parser.add_argument("--fresh", action="store_true", help="ignore finished runs and start over")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    benchmarks = {"cpu": cpu, "gpu": gpu, "loss-cost": loss_cost}
    result = benchmarks[args.benchmark](args, output)
    if result is None:
        return 0
    rows, meta = result
    name = args.benchmark.replace("-", "_")
    json_path, markdown_path = write_table(rows, output, name, f"Detection benchmark: {args.benchmark}", meta)
    print(markdown_path.read_text())
    print(f"wrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
