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

from equipoise.core.config import add_recipe_arguments, recipe_config_from_args
from equipoise.vision.config import load_train_config, recipes_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser, "optimizer.lr=0.05")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoint.pt exists")
    args = parser.parse_args(argv)
    config = recipe_config_from_args(parser, args, load_train_config, recipes_dir())
    if config is None:
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
