"""Evaluate a trained detector (OUTPUT/model.pt of tools/train_detection.py) with COCO box AP.

    python tools/eval_detection.py results/detection/coco128_mobilenet_focal/model.pt    # on COCO128
    python tools/eval_detection.py runs/r50/model.pt --images coco/val2017 \\
        --annotations coco/annotations/instances_val2017.json --device cuda --fp16

Prints AP, AP50, AP75, AP small/medium/large and AP of the rare / common / frequent classes (by
the number of training images holding each class; LVIS's boundaries 10 and 100 unless
--rare-max/--common-max), and writes report.md, metrics.json, detections.json (COCO results
format), detections.png and ap_vs_frequency.png to --output (default: <model folder>/eval-<set>).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    parser.add_argument("model", metavar="MODEL_PT", help="model.pt written by tools/train_detection.py")
    parser.add_argument("--images", default=None, metavar="DIR", help="image folder (default: COCO128)")
    parser.add_argument("--annotations", default=None, metavar="JSON", help="instances_*.json of those images")
    parser.add_argument("--data-root", default=None, metavar="DIR", help="holds coco128/ (default: $EQUIPOISE_DATA)")
    parser.add_argument("--output", default=None, metavar="DIR", help="report folder (default: beside the model)")
    parser.add_argument("--device", default="auto", metavar="DEVICE", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--fp16", action="store_true", help="float16 autocast (CUDA only)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per forward pass (default: 4)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="the first N images only")
    parser.add_argument(
        "--score-thresh", type=float, default=0.05, metavar="S", help="keep scores >= S (default: 0.05)"
    )
    parser.add_argument(
        "--rare-max", type=int, default=10, metavar="N", help="rare: <= N training images (default: 10)"
    )
    parser.add_argument("--common-max", type=int, default=100, metavar="N", help="common: <= N (default: 100)")
    parser.add_argument("--plot-images", type=int, default=6, metavar="N", help="images in detections.png (default: 6)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    from equipoise.core.reporting import markdown_table
    from equipoise.detection.evaluate import evaluate_detection

    try:
        metrics = evaluate_detection(
            args.model,
            images=args.images,
            annotations=args.annotations,
            data_root=args.data_root,
            output=args.output,
            device=args.device,
            batch_size=args.batch_size,
            score_thresh=args.score_thresh,
            max_images=args.max_images,
            plot_images=args.plot_images,
            rare_max=args.rare_max,
            common_max=args.common_max,
            fp16=args.fp16,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    row = {key: metrics[key] for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")}
    row.update({f"AP_{name}": group["AP"] for name, group in metrics["groups"].items()})
    print(markdown_table([row]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
