"""Train one method of MetaBalance's Table 2 on loan default or credit-card fraud, then evaluate it.

    .venv/bin/python tools/train_tabular.py --dataset loan --method metabalance [--seed 0] \\
        [--epochs 100] [--val-size 0.2] [--device auto] [--output DIR] [--option key=value ...]

Splits the data set by --seed (stratified 80/20, then --val-size of the training part for
validation), trains with equipoise.tabular.train.fit (the paper's network, learning rate and
batch size for the method unless overridden), saves DIR/model.pt (loads with
torch.load(weights_only=True)) and evaluates it on the test split like tools/eval_tabular.py:
DIR/report.md, metrics.json, curves.png (ROC and precision-recall), reliability.png and
confusion_matrix.png; the decision threshold maximises F1 on the validation split.
Methods: naive, the imbalanced-learn resamplers, class_weighted, focal, meta_weight_net, l2rw,
metabalance and ms_metabalance (which needs --val-size > 0). Data: $EQUIPOISE_DATA or --data-root.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from equipoise.tabular.data import DATASETS, prepare
from equipoise.tabular.evaluate import evaluate, save_checkpoint
from equipoise.tabular.train import available_methods, fit


def _option(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"options are key=value (e.g. gamma=2), got {text!r}")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="loan or fraud")
    parser.add_argument("--method", required=True, choices=available_methods(), metavar="METHOD", help="see above")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the run (default: 0)")
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training data (default: 100)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's, per task)")
    parser.add_argument(
        "--val-size", type=float, default=0.2, help="validation share of the training part (default: 0.2)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="data folder (default: $EQUIPOISE_DATA)")
    parser.add_argument(
        "--output", default=None, metavar="DIR", help="run folder (default: results/tabular/runs/DATASET-METHOD-sSEED)"
    )
    parser.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, YAML value (e.g. gamma=1.5, meta_steps=40); repeatable",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    output = Path(args.output or f"results/tabular/runs/{args.dataset}-{args.method}-s{args.seed}")

    split = prepare(args.dataset, args.data_root, seed=args.seed, val_size=args.val_size)
    print(split.describe())
    validation = {"X_val": split.X_val, "y_val": split.y_val} if split.X_val is not None else {}
    model = fit(
        args.method,
        split.X_train,
        split.y_train,
        network=args.dataset,
        seed=args.seed,
        epochs=args.epochs,
        lr=args.lr,
        device=args.device,
        progress=not args.no_progress,
        **validation,
        **dict(args.option),
    )
    path = save_checkpoint(model, output / "model.pt", dataset=args.dataset, seed=args.seed, val_size=args.val_size)
    report = evaluate(model, split, output, title=f"{args.dataset}: {args.method} (seed {args.seed})")
    print(report.to_markdown(f"{args.dataset}: {args.method}, test split"))
    print(f"\ncheckpoint: {path}\nreport: {output / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
