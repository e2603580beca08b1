"""Train a RetinaNet with a focal / alpha-balanced BCE / EQLv2 / Seesaw head from a recipe.

    python tools/train_detection.py --list                                # the shipped recipes
    python tools/train_detection.py coco128_mobilenet_focal               # CPU fit test on COCO128
    python tools/train_detection.py coco128_mobilenet_eqlv2 iterations=100 output=/tmp/eqlv2
    python tools/train_detection.py coco_r50_fpn_1x images=coco/train2017 \\
        annotations=coco/annotations/instances_train2017.json            # the COCO 1x recipe (GPU)
    python tools/train_detection.py my_recipe.yaml sampler=repeat_factor --show

Overrides are key=value with YAML values (lr=0.02, loss_options="{alpha: 0.5}", sampler=null).
Running the same command again resumes from OUTPUT/checkpoint.pt (written every checkpoint_every
iterations and on Ctrl-C); --no-resume starts over. The trained model lands in OUTPUT/model.pt,
which tools/eval_detection.py evaluates; the losses per logged iteration in OUTPUT/train_log.jsonl.
Data: COCO128 from $EQUIPOISE_DATA (or data_root=DIR); any COCO-format set with dataset=coco.
"""

from __future__ import annotations

import argparse
import logging
import sys

from equipoise.core.config import add_recipe_arguments, recipe_config_from_args
from equipoise.detection.train import load_detection_train_config, recipes_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser, "iterations=100 lr=0.02")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoint.pt exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    config = recipe_config_from_args(parser, args, load_detection_train_config, recipes_dir())
    if config is None:
        return 0
    from equipoise.detection.train import train_detection

    logging.basicConfig(format="%(message)s")
    logging.getLogger("equipoise").setLevel(logging.INFO)  # what the data loader dropped, "resuming from ..."
    try:
        model_path = train_detection(config, resume=not args.no_resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted; the same command resumes from {config.output}/checkpoint.pt", file=sys.stderr)
        return 130
    print(f"finished: {model_path}; evaluate with: python tools/eval_detection.py {model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
