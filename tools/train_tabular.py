"""Train one method of MetaBalance's Table 2 on loan default or credit-card fraud, then evaluate it.

    .venv/bin/python tools/train_tabular.py --dataset loan --method metabalance [--seed 0] \\
        [--epochs 100] [--val-size 0.2] [--device auto] [--output DIR] [--option key=value ...]

Splits the data set by --seed (stratified 80/20, then --val-size of the training part for
validation), trains with equipoise.tabular.train.fit (the paper's network, learning rate and
batch size for the method unless overridden), saves DIR/model.pt (loads with
torch.load(weights_only=True)) and evaluates it on the test split like tools/eval_tabular.py:
DIR/report.md, metrics.json, curves.png (ROC and precision-recall), reliability.png and
confusion_matrix.png; the decision threshold maximises F1 on the validation split.
Methods: naive, the imbalanced-learn resamplers, class_weighted, focal, meta_weight_net, l2rw,
metabalance and ms_metabalance (which needs --val-size > 0). Data: $EQUIPOISE_DATA or --data-root.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.tabular.commands import add_train_arguments, run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    add_train_arguments(parser)
    return run_train(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
