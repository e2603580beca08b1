"""Evaluate a tabular checkpoint (tools/train_tabular.py) on the test split of its data set.

    .venv/bin/python tools/eval_tabular.py --checkpoint results/tabular/runs/loan-metabalance-s0/model.pt \\
        [--device auto] [--output DIR] [--data-root DIR]

The split is rebuilt from the checkpoint's seed and validation share (the same test rows as at
training). Prints the metrics and writes report.md, metrics.json, curves.png (ROC and
precision-recall), reliability.png and confusion_matrix.png to --output.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.tabular.commands import add_evaluate_arguments, run_evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluate_arguments(parser)
    return run_evaluate(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
