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

from equipoise.cli import parse_args_with_overrides
from equipoise.vision.commands import add_train_arguments, run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return run_train(parser, parse_args_with_overrides(parser, argv))


if __name__ == "__main__":
    sys.exit(main())
