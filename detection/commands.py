"""The detection commands, defined once for ``equipoise train|evaluate detection`` and
``tools/train_detection.py`` / ``tools/eval_detection.py``: each ``add_*_arguments(parser)`` adds a
command's arguments, each ``run_*(parser, args)`` runs it and returns the exit code (2 through
``parser.error`` for bad input, 130 on Ctrl-C)."""

from __future__ import annotations

import argparse
import logging
import sys

from equipoise.core.config import add_recipe_arguments, recipe_config_from_args

__all__ = ["add_evaluate_arguments", "add_train_arguments", "run_evaluate", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``RECIPE [key=value ...]``, ``--list``, ``--show``, ``--no-resume``, ``--no-progress``."""
    add_recipe_arguments(parser, "iterations=100 lr=0.02")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoint.pt exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Load and validate the config (``--list``/``--show`` print and stop), then train; 130 on Ctrl-C."""
    from equipoise.detection.train import load_detection_train_config, recipes_dir

    config = recipe_config_from_args(parser, args, load_detection_train_config, recipes_dir())
    if config is None:
        return 0
    from equipoise.detection.train import train_detection

    logging.basicConfig(format="%(message)s")
    logging.getLogger("equipoise").setLevel(logging.INFO)  # what the data loader dropped, "resuming from ..."
    try:
        model_path = train_detection(config, resume=not args.no_resume, progress=not args.no_progress)
    except FileNotFoundError as error:  # the images, annotations or weights: say what is missing, no traceback
        parser.error(str(error))
    except KeyboardInterrupt:
        print(f"interrupted; the same command resumes from {config.output}/checkpoint.pt", file=sys.stderr)
        return 130
    print(f"finished: {model_path}; evaluate with: equipoise evaluate detection {model_path}")
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL_PT`` and the evaluation options of :func:`equipoise.detection.evaluate.evaluate_detection`."""
    parser.add_argument("model", metavar="MODEL_PT", help="model.pt written by tools/train_detection.py")
    parser.add_argument("--images", default=None, metavar="DIR", help="image folder (default: COCO128)")
    parser.add_argument("--annotations", default=None, metavar="JSON", help="instances_*.json of those images")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="holds coco128/ (default: $EQUIPOISE_DATA)")
    parser.add_argument("--output", default=None, metavar="DIR", help="report folder (default: beside the model)")
    parser.add_argument("--device", default="auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--fp16", action="store_true", help="float16 autocast (CUDA only)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per forward pass (default: 4)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="the first N images only")
    parser.add_argument(
        "--score-thresh", type=float, default=0.05, metavar="S", help="keep scores >= S (default: 0.05)"
    )
    parser.add_argument(
        "--rare-max", type=int, default=10, metavar="N", help="rare: <= N training images (default: 10)"
    )
    parser.add_argument("--common-max", type=int, default=100, metavar="N", help="common: <= N (default: 100)")
    parser.add_argument("--plot-images", type=int, default=6, metavar="N", help="images in detections.png (default: 6)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Evaluate and print AP overall, by size and by frequency group; a missing file or bad value exits 2."""
    from equipoise.core.reporting import markdown_table
    from equipoise.detection.evaluate import evaluate_detection

    try:
        metrics = evaluate_detection(
            args.model,
            images=args.images,
            annotations=args.annotations,
            data_root=args.data_root,
            output=args.output,
            device=args.device,
            batch_size=args.batch_size,
            score_thresh=args.score_thresh,
            max_images=args.max_images,
            plot_images=args.plot_images,
            rare_max=args.rare_max,
            common_max=args.common_max,
            fp16=args.fp16,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    row = {key: metrics[key] for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")}
    row.update({f"AP_{name}": group["AP"] for name, group in metrics["groups"].items()})
    # As report.md: percent, "–" where undefined (a group or size without ground truth here).
    print(markdown_table([{key: "–" if value is None else f"{100 * value:.1f}" for key, value in row.items()}]))
    print("(box AP in %; – : no ground truth in that group)")
    return 0
