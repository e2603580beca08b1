"""Decoupled classifier re-balancing (stage 2) of a trained long-tailed vision model.

    .venv/bin/python tools/decouple_vision.py --checkpoint results/vision/ce/checkpoint.pt --method crt
    .venv/bin/python tools/decouple_vision.py --checkpoint results/vision/ce/checkpoint.pt --method tau_norm tau=1.0
    .venv/bin/python tools/decouple_vision.py --checkpoint CKPT --method weight_balancing epochs=10 weight_decay=0.1

Freezes the backbone of the checkpoint's model, re-balances its classifier on the training
split's features (cRT, tau-normalisation, LWS: Kang et al. 2020; weight balancing: Alshammari
et al. 2022) and writes a new checkpoint (default <checkpoint folder>/<method>/checkpoint.pt)
that equipoise.vision.checkpoint.model_from_checkpoint loads like any other. Method options are
key=value pairs read as YAML (write 1.0e-3, not 1e-3, which YAML reads as a string). See
equipoise.vision.decouple for the methods, their defaults and where the defaults come from.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.core.config import parse_overrides
from equipoise.vision.decouple import DECOUPLING_METHODS, decouple, method_options


def _options_help() -> str:
    lines = ["method options (key=value) and their defaults:"]
    for name in DECOUPLING_METHODS.names():
        defaults = ", ".join(f"{key}={value}" for key, value in method_options(name).items())
        lines.append(f"  {name}: {defaults}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=_options_help(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="stage-1 checkpoint (checkpoint.pt of a training run)")
    parser.add_argument("--method", required=True, choices=DECOUPLING_METHODS.names(), help="re-balancing method")
    parser.add_argument("--output", help="where to write (default: <checkpoint folder>/<method>/checkpoint.pt)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (auto: CUDA when present)")
    parser.add_argument("--seed", type=int, default=0, help="seed of class-balanced batches and shuffling")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("options", nargs="*", metavar="key=value", help="method options (listed below)")
    args = parser.parse_args(argv)
    try:
        options = parse_overrides(args.options)
        path = decouple(
            args.checkpoint,
            args.method,
            args.output,
            device=args.device,
            seed=args.seed,
            progress=not args.no_progress,
            **options,
        )
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
