"""Evaluate a saved equipoise.nlp model on a split of its data set (equipoise.nlp.evaluate).

    .venv/bin/python tools/eval_nlp.py runs/conll-focal/model                   # CoNLL-2003 test split
    .venv/bin/python tools/eval_nlp.py runs/conll-focal/model --split valid --output /tmp/eval
    .venv/bin/python tools/eval_nlp.py runs/imdb-ldam/model --max-examples 2000 --device cuda --fp16

The folder is what training writes: a Hugging Face save_pretrained folder with equipoise_nlp.json
(task, data set, max_length). Prints the metrics table (markdown) and writes report.md,
metrics.json, the plots and the predictions to --output (default: <folder>/../eval-<split>).
Tagging (CoNLL-2003): entity-level precision/recall/F1 per type, micro and macro (seqeval), token
accuracy, per_entity_f1.png, confusion_matrix.png, predictions.conll. Classification (IMDB): error
on positive and negative reviews and their mean, accuracy, balanced accuracy, macro F1, ECE,
reliability.png, confusion_matrix.png, predictions.csv. Data: $EQUIPOISE_DATA unless --data-root.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.nlp.evaluate import evaluate_nlp, metrics_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
