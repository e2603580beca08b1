"""Fine-tune a transformer on imbalanced NLP data (CoNLL-2003 tagging, imbalanced IMDB) from a recipe.

    python tools/train_nlp.py --list                                   # the shipped recipes
    python tools/train_nlp.py conll_minilm_dice                        # CPU budget, ~6 min on 2 cores
    python tools/train_nlp.py conll_roberta_dice                       # the GPU setting (roberta-base)
    python tools/train_nlp.py imdb_minilm_ldam_drw epochs=3 drw_epoch=2 output=results/nlp/ldam3
    python tools/train_nlp.py conll_minilm_ce max_train_examples=500 output=/tmp/smoke
    python tools/train_nlp.py my_recipe.yaml base_model=path/to/model --show

Overrides are key=value with YAML values (lr=3e-5, loss_options="{gamma: 1.0}", sampler=null).
Running the same command again resumes from OUTPUT/checkpoints (the Trainer's checkpoint after
each epoch); --no-resume deletes them and starts over. The model, its tokenizer and
equipoise_nlp.json land in OUTPUT/model, the folder tools/eval_nlp.py evaluates; the Trainer's
log in OUTPUT/train_log.json, the last validation scores in OUTPUT/validation.json.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.cli import parse_args_with_overrides
from equipoise.nlp.commands import add_train_arguments, run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return run_train(parser, parse_args_with_overrides(parser, argv))


if __name__ == "__main__":
    sys.exit(main())
