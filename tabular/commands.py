"""The tabular commands, defined once for ``equipoise train|evaluate tabular`` and ``tools/train_tabular.py`` /
``tools/eval_tabular.py``: each ``add_*_arguments(parser)`` adds a command's arguments, each ``run_*(parser,
args)`` runs it and returns the exit code (2 through ``parser.error`` for bad input, 130 on Ctrl-C).

A run is a recipe (``equipoise.tabular.config``: the data set and the method of MetaBalance's Table 2,
with the paper's settings for the method) plus ``key=value`` overrides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equipoise.core.config import (
    add_checkpoint_arguments,
    add_recipe_arguments,
    checkpoint_from_args,
    recipe_config_from_args,
)
from equipoise.tabular.data import prepare

__all__ = ["add_evaluate_arguments", "add_train_arguments", "run_evaluate", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``RECIPE [key=value ...]``, ``--list``, ``--show``, ``--no-resume``, ``--no-progress``."""
    add_recipe_arguments(parser, "method=focal options.gamma=1.5")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoint.pt exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (sets progress=false)")


def run_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Load and validate the config (``--list``/``--show`` print and stop), split, train (resuming from
    ``OUTPUT/checkpoint.pt``), save ``model.pt`` and evaluate on the test split; bad input exits 2, Ctrl-C 130."""
    from equipoise.tabular.config import load_train_config, recipes_dir

    progress = ["progress=false"] if args.no_progress else []

    def load(recipe: str, overrides: list[str]):
        return load_train_config(recipe, [*overrides, *progress])

    config = recipe_config_from_args(parser, args, load, recipes_dir())
    if config is None:
        return 0
    from equipoise.core.config import dump_config
    from equipoise.tabular.evaluate import evaluate, save_checkpoint
    from equipoise.tabular.train import fit

    output = Path(config.output)
    try:
        split = prepare(config.dataset, config.data_root, seed=config.seed, val_size=config.val_size)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(split.describe())
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    state = output / "checkpoint.pt"
    if args.no_resume:
        state.unlink(missing_ok=True)
    try:
        model = fit(
            config.method,
            split.X_train,
            split.y_train,
            network=config.dataset,
            seed=config.seed,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            device=config.device,
            progress=config.progress,
            X_val=split.X_val,
            y_val=split.y_val,
            keep_best=config.keep_best,
            checkpoint=state,
            **config.options,
        )
    except (TypeError, ValueError) as error:  # an option the method does not take, a bad value, another run's state
        parser.error(str(error))
    except KeyboardInterrupt:
        print(f"interrupted; the same command resumes from {state}", file=sys.stderr)
        return 130
    saved = {"dataset": config.dataset, "seed": config.seed, "val_size": config.val_size}
    path = save_checkpoint(model, output / "model.pt", **saved)
    title = f"{config.dataset}: {config.method} (seed {config.seed})"
    report = evaluate(model, split, output, title=title)
    print(report.to_markdown(f"{config.dataset}: {config.method}, test split"))
    print(f"\ncheckpoint: {path}\nreport: {output / 'report.md'}")
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint PATH``, ``--device``, ``--data-root`` and ``--output``."""
    add_checkpoint_arguments(parser, "an equipoise.tabular checkpoint (OUTPUT/model.pt of a run)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="data folder (default: $EQUIPOISE_DATA)")
    parser.add_argument("--output", default=None, metavar="DIR", help="report folder (default: <checkpoint dir>/eval)")


def run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Rebuild the checkpoint's test split, evaluate and print the metrics; a missing file exits 2."""
    from equipoise.core.device import resolve_device
    from equipoise.tabular.evaluate import evaluate, model_from_checkpoint

    path = checkpoint_from_args(parser, args)
    try:
        model, checkpoint = model_from_checkpoint(path, resolve_device(args.device))
        split = prepare(checkpoint["dataset"], args.data_root, seed=checkpoint["seed"], val_size=checkpoint["val_size"])
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    output = Path(args.output) if args.output else Path(path).parent / "eval"
    method = checkpoint["training_record"].get("method", "?")
    report = evaluate(model, split, output, title=f"{checkpoint['dataset']}: {method} (seed {checkpoint['seed']})")
    print(report.to_markdown(f"{checkpoint['dataset']}: {method}, test split"))
    print(f"\nreport: {output / 'report.md'}")
    return 0
