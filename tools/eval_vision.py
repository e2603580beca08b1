"""Evaluate a long-tailed vision checkpoint on its test split (equipoise.vision.evaluate).

    .venv/bin/python tools/eval_vision.py --checkpoint results/vision/run/checkpoint.pt \\
        [--calibrate logit_adjustment temperature] [--dataset NAME] [--device auto] [--output DIR]

Prints the metrics table (markdown) and writes report.md, metrics.json and the plots (per-class
accuracy vs training frequency, reliability diagrams, confusion matrices) to --output. With
--calibrate, a stratified --val-fraction of each class of the test split is used to fit the
calibrations and every row is measured on the rest. Data: the checkpoint's data root, else
$EQUIPOISE_DATA, unless --data-root says.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.vision.evaluate import CALIBRATION_METHODS, evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="path of an equipoise.vision checkpoint (.pt)"
    )
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
    args = parser.parse_args(argv)
    try:
        result = evaluate(
            args.checkpoint,
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


if __name__ == "__main__":
    sys.exit(main())
