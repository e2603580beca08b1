"""The vision commands, defined once for ``equipoise train|evaluate vision`` and ``tools/train_vision.py`` /
``tools/eval_vision.py``: each ``add_*_arguments(parser)`` adds a command's arguments, each ``run_*(parser,
args)`` runs it and returns the exit code (2 through ``parser.error`` for bad input, 130 on Ctrl-C)."""

from __future__ import annotations

import argparse
import sys

from equipoise.core.config import (
    add_checkpoint_arguments,
    add_recipe_arguments,
    checkpoint_from_args,
    recipe_config_from_args,
)

__all__ = ["add_evaluate_arguments", "add_train_arguments", "run_evaluate", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``RECIPE [key=value ...]``, ``--list``, ``--show``, ``--no-resume``, ``--no-progress``."""
    add_recipe_arguments(parser, "optimizer.lr=0.05")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoint.pt exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (sets progress=false)")


def run_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Load and validate the config (``--list``/``--show`` print and stop), then train; 130 on Ctrl-C."""
    from equipoise.vision.config import load_train_config, recipes_dir

    progress = ["progress=false"] if args.no_progress else []

    def load(recipe: str, overrides: list[str]):
        return load_train_config(recipe, [*overrides, *progress])

    config = recipe_config_from_args(parser, args, load, recipes_dir())
    if config is None:
        return 0
    from equipoise.vision.train import train

    try:
        output = train(config, resume=not args.no_resume)
    except FileNotFoundError as error:  # the data or a file the recipe names: say what is missing, no traceback
        parser.error(str(error))
    except KeyboardInterrupt:
        print(f"interrupted; the same command resumes from {config.output}/checkpoint.pt", file=sys.stderr)
        return 130
    print(f"finished: {output} (checkpoint.pt, log.jsonl, metrics.json)")
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint PATH`` and the evaluation options of :func:`equipoise.vision.evaluate.evaluate`."""
    from equipoise.vision.evaluate import CALIBRATION_METHODS  # torchmetrics: not for training runs

    add_checkpoint_arguments(parser, "path of an equipoise.vision checkpoint (.pt)")
    parser.add_argument(
        "--dataset",
        default=None,
        metavar="NAME",
        help="registered dataset whose test split to use (default: the checkpoint's)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto | cpu | cuda | cuda:N (default: auto, CUDA when present)",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="folder for the report (default: <checkpoint dir>/eval/<checkpoint stem>)",
    )
    parser.add_argument(
        "--calibrate",
        nargs="*",
        default=[],
        choices=CALIBRATION_METHODS,
        metavar="METHOD",
        help=f"post-hoc calibrations to fit on a validation split: {', '.join(CALIBRATION_METHODS)} (default: none)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        metavar="F",
        default=0.5,
        help="share of each class of the test split used for validation when calibrating (default: 0.5)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the validation split and --limit subset (default: 0)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="evaluate a stratified subset of this many test images (default: all)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="images per forward pass (default: the checkpoint's, 512)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        metavar="N",
        help="DataLoader workers (default: the checkpoint's data.num_workers)",
    )
    parser.add_argument(
        "--data-root", default=None, metavar="DIR", help="data folder (default: the checkpoint's, else $EQUIPOISE_DATA)"
    )
    parser.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (default: off, fp32 logits)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Evaluate, print the metrics table and the report's path; a missing file or bad value exits 2."""
    from equipoise.vision.evaluate import evaluate

    checkpoint = checkpoint_from_args(parser, args)
    try:
        result = evaluate(
            checkpoint,
            dataset=args.dataset,
            output=args.output,
            device=args.device,
            batch_size=args.batch_size,
            calibrate=args.calibrate,
            val_fraction=args.val_fraction,
            seed=args.seed,
            limit=args.limit,
            data_root=args.data_root,
            num_workers=args.num_workers,
            amp=args.amp,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    info = result.info
    print(f"{info['model']} on {info['dataset']} ({info['reported_examples']} reported test images, {info['device']})")
    print()
    print(result.metrics_table())
    print(f"report: {result.files['report']}")
    return 0
