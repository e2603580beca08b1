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
import logging
import sys

from equipoise.core.config import add_recipe_arguments, recipe_config_from_args
from equipoise.nlp.train import load_nlp_train_config, recipes_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser, "lr=5e-5 epochs=2")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoints exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    config = recipe_config_from_args(parser, args, load_nlp_train_config, recipes_dir())
    if config is None:
        return 0
    from equipoise.nlp.train import train_nlp

    logging.basicConfig(format="%(message)s")
    logging.getLogger("equipoise").setLevel(logging.INFO)  # "resuming from ..."
    try:
        model_dir = train_nlp(config, resume=not args.no_resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    print(f"finished: {model_dir} (model, tokenizer, equipoise_nlp.json); log and validation scores in {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
