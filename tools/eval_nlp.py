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

from equipoise.nlp.commands import add_evaluate_arguments, run_evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    add_evaluate_arguments(parser)
    return run_evaluate(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
