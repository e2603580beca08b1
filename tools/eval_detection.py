"""Evaluate a trained detector (OUTPUT/model.pt of tools/train_detection.py) with COCO box AP.

    python tools/eval_detection.py results/detection/coco128_mobilenet_focal/model.pt    # on COCO128
    python tools/eval_detection.py runs/r50/model.pt --images coco/val2017 \\
        --annotations coco/annotations/instances_val2017.json --device cuda --fp16

Prints AP, AP50, AP75, AP small/medium/large and AP of the rare / common / frequent classes (by
the number of training images holding each class; LVIS's boundaries 10 and 100 unless
--rare-max/--common-max), and writes report.md, metrics.json, detections.json (COCO results
format), detections.png and ap_vs_frequency.png to --output (default: <model folder>/eval-<set>).
"""

from __future__ import annotations

import argparse
import sys

from equipoise.detection.commands import add_evaluate_arguments, run_evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    add_evaluate_arguments(parser)
    return run_evaluate(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
