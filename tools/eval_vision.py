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

from equipoise.vision.commands import add_evaluate_arguments, run_evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    add_evaluate_arguments(parser)
    return run_evaluate(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
