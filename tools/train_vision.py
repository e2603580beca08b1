"""Train a long-tailed image classifier from a recipe, with key=value overrides.

    python tools/train_vision.py ldam_drw                                  # the paper's 200-epoch recipe
    python tools/train_vision.py ldam_drw epochs=30 loss.drw_epoch=24 output=results/vision/ldam30
    python tools/train_vision.py my_recipe.yaml device=cpu
    torchrun --nproc_per_node 4 tools/train_vision.py ce                   # DDP, one process per GPU
    python tools/train_vision.py --list                                     # the shipped recipes

Running the same command again resumes from OUTPUT/checkpoint.pt (Ctrl-C leaves it resumable).
Stage 2 (cRT, tau-norm, LWS, weight balancing): tools/decouple_vision.py; evaluation:
tools/eval_vision.py.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.core.config import ConfigError, describe_recipes, dump_config
from equipoise.vision.config import load_train_config, recipes_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", help="a shipped recipe name (see --list) or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optimizer.lr=0.05")
    parser.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    parser.add_argument("--show", action="store_true", help="print the merged config and exit")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoint.pt exists")
    args = parser.parse_args(argv)
    if args.list:
        print(describe_recipes(recipes_dir()))
        return 0
    if args.recipe is None:
        parser.error("a recipe is needed (see --list)")
    try:
        config = load_train_config(args.recipe, args.overrides)
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.show:
        print(dump_config(config))
        return 0
    from equipoise.vision.train import train

    try:
        output = train(config, resume=not args.no_resume)
    except KeyboardInterrupt:
        return 130
    print(f"finished: {output} (checkpoint.pt, log.jsonl, metrics.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
