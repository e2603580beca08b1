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
import sys

from equipoise.cli import parse_args_with_overrides
from equipoise.detection.commands import add_train_arguments, run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return run_train(parser, parse_args_with_overrides(parser, argv))


if __name__ == "__main__":
    sys.exit(main())
