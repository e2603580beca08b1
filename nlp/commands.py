"""The NLP commands, defined once for ``equipoise train|evaluate nlp`` and ``tools/train_nlp.py`` /
``tools/eval_nlp.py``: each ``add_*_arguments(parser)`` adds a command's arguments, each ``run_*(parser,
args)`` runs it and returns the exit code (2 through ``parser.error`` for bad input, 130 on Ctrl-C)."""

from __future__ import annotations

import argparse
import logging
import sys

from equipoise.core.config import add_recipe_arguments, recipe_config_from_args

__all__ = ["add_evaluate_arguments", "add_train_arguments", "run_evaluate", "run_train"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``RECIPE [key=value ...]``, ``--list``, ``--show``, ``--no-resume``, ``--no-progress``."""
    add_recipe_arguments(parser, "lr=5e-5 epochs=2")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoints exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run_train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Load and validate the config (``--list``/``--show`` print and stop), then fine-tune; 130 on Ctrl-C."""
    from equipoise.nlp.train import load_nlp_train_config, recipes_dir

    config = recipe_config_from_args(parser, args, load_nlp_train_config, recipes_dir())
    if config is None:
        return 0
    from equipoise.nlp.train import train_nlp

    logging.basicConfig(format="%(message)s")
    logging.getLogger("equipoise").setLevel(logging.INFO)  # "resuming from ..."
    try:
        model_dir = train_nlp(config, resume=not args.no_resume, progress=not args.no_progress)
    except FileNotFoundError as error:  # the data or the base model: say what is missing, no traceback
        parser.error(str(error))
    except KeyboardInterrupt:
        print(f"interrupted; the same command resumes from {config.output}/checkpoints", file=sys.stderr)
        return 130
    print(f"finished: {model_dir} (model, tokenizer, equipoise_nlp.json); log and validation scores in {config.output}")
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL_FOLDER`` and the evaluation options of :func:`equipoise.nlp.evaluate.evaluate_nlp`."""
    parser.add_argument("folder", metavar="MODEL_FOLDER", help="saved model folder (holds equipoise_nlp.json)")
    parser.add_argument(
        "--split",
        default="test",
        metavar="SPLIT",
        help="train | valid | test for CoNLL-2003, train | test for IMDB (default: test)",
    )
    parser.add_argument(
        "--output", default=None, metavar="DIR", help="report folder (default: <folder>/../eval-<split>)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="sentences or reviews per forward pass (default: 64)"
    )
    parser.add_argument(
        "--device", default="auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N (default: auto: CUDA if present)"
    )
    parser.add_argument("--fp16", action="store_true", help="run the model in float16 (CUDA only; default: float32)")
    parser.add_argument(
        "--max-examples",
        type=int,
        default=None,
        metavar="N",
        help="evaluate only N examples: the first sentences, or the first reviews of each class (default: all)",
    )
    parser.add_argument("--data-root", default=None, metavar="DIR", help="data folder (default: $EQUIPOISE_DATA)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Evaluate, print the metrics table and the report's path; a missing folder or bad value exits 2."""
    from equipoise.nlp.evaluate import evaluate_nlp, metrics_table

    try:
        result = evaluate_nlp(
            args.folder,
            split=args.split,
            output=args.output,
            data_root=args.data_root,
            batch_size=args.batch_size,
            device=args.device,
            max_examples=args.max_examples,
            progress=not args.no_progress,
            fp16=args.fp16,
        )
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    evaluation = result["evaluation"]
    about = f"{result['dataset']} {result['split']}: {evaluation['examples']} examples on {evaluation['device']}"
    print(f"{args.folder}, {about}")
    print()
    print(metrics_table(result))
    print(f"report: {evaluation['output']}/report.md")
    return 0
