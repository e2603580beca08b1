"""The tabular commands, defined once for ``equipoise train|evaluate tabular`` and ``tools/train_tabular.py`` /
``tools/eval_tabular.py``: each ``add_*_arguments(parser)`` adds a command's arguments, each ``run_*(parser,
args)`` runs it and returns the exit code (2 through ``parser.error`` for bad input, 130 on Ctrl-C).

Tabular runs have no recipe: a run is ``--dataset`` and ``--method`` (MetaBalance's Table 2), with the
paper's settings for that method unless an option overrides them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from equipoise.tabular.data import DATASETS, prepare
from equipoise.tabular.train import available_methods

__all__ = ["add_evaluate_arguments", "add_train_arguments", "run_evaluate", "run_train"]


def _option(text: str) -> tuple[str, object]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"options are key=value (e.g. gamma=2), got {text!r}")
    return key, yaml.safe_load(value)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--method`` and the run's settings (seed, epochs, learning rate, device, folders)."""
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


def run_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Split, train, save ``model.pt`` and evaluate on the test split; a bad value exits 2, Ctrl-C 130."""
    from equipoise.tabular.evaluate import evaluate, save_checkpoint
    from equipoise.tabular.train import fit

    output = Path(args.output or f"results/tabular/runs/{args.dataset}-{args.method}-s{args.seed}")
    try:
        split = prepare(args.dataset, args.data_root, seed=args.seed, val_size=args.val_size)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(split.describe())
    validation = {"X_val": split.X_val, "y_val": split.y_val} if split.X_val is not None else {}
    try:
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
    except (TypeError, ValueError) as error:  # an option the method does not take, a bad value
        parser.error(str(error))
    except KeyboardInterrupt:
        # fit keeps no checkpoint (a run takes seconds to minutes): nothing to resume from.
        print("interrupted; nothing was saved: the same command trains the run again from the start", file=sys.stderr)
        return 130
    path = save_checkpoint(model, output / "model.pt", dataset=args.dataset, seed=args.seed, val_size=args.val_size)
    report = evaluate(model, split, output, title=f"{args.dataset}: {args.method} (seed {args.seed})")
    print(report.to_markdown(f"{args.dataset}: {args.method}, test split"))
    print(f"\ncheckpoint: {path}\nreport: {output / 'report.md'}")
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint PATH``, ``--device``, ``--data-root`` and ``--output``."""
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="an equipoise.tabular checkpoint (.pt)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="data folder (default: $EQUIPOISE_DATA)")
    parser.add_argument("--output", default=None, metavar="DIR", help="report folder (default: <checkpoint dir>/eval)")


def run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Rebuild the checkpoint's test split, evaluate and print the metrics; a missing file exits 2."""
    from equipoise.core.device import resolve_device
    from equipoise.tabular.evaluate import evaluate, model_from_checkpoint

    try:
        model, checkpoint = model_from_checkpoint(args.checkpoint, resolve_device(args.device))
        split = prepare(checkpoint["dataset"], args.data_root, seed=checkpoint["seed"], val_size=checkpoint["val_size"])
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    output = Path(args.output) if args.output else Path(args.checkpoint).parent / "eval"
    method = checkpoint["training_record"].get("method", "?")
    report = evaluate(model, split, output, title=f"{checkpoint['dataset']}: {method} (seed {checkpoint['seed']})")
    print(report.to_markdown(f"{checkpoint['dataset']}: {method}, test split"))
    print(f"\nreport: {output / 'report.md'}")
    return 0
