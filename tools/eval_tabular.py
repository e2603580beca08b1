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
from pathlib import Path

from equipoise.tabular.data import prepare
from equipoise.tabular.evaluate import evaluate, model_from_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="an equipoise.tabular checkpoint (.pt)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="data folder (default: $EQUIPOISE_DATA)")
    parser.add_argument("--output", default=None, metavar="DIR", help="report folder (default: <checkpoint dir>/eval)")
    args = parser.parse_args(argv)
    from equipoise.core.device import resolve_device

    model, checkpoint = model_from_checkpoint(args.checkpoint, resolve_device(args.device))
    split = prepare(checkpoint["dataset"], args.data_root, seed=checkpoint["seed"], val_size=checkpoint["val_size"])
    output = Path(args.output) if args.output else Path(args.checkpoint).parent / "eval"
    method = checkpoint["training_record"].get("method", "?")
    report = evaluate(model, split, output, title=f"{checkpoint['dataset']}: {method} (seed {checkpoint['seed']})")
    print(report.to_markdown(f"{checkpoint['dataset']}: {method}, test split"))
    print(f"\nreport: {output / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
