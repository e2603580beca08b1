"""Train one method of MetaBalance's Table 2 on loan default or credit-card fraud, then evaluate it.

    .venv/bin/python tools/train_tabular.py --list                        # the shipped recipes
    .venv/bin/python tools/train_tabular.py loan_metabalance [key=value ...]
    .venv/bin/python tools/train_tabular.py fraud_naive method=focal options.gamma=1.5 epochs=20 --show

A recipe (a shipped name or a YAML file; equipoise.tabular.config) names the data set and the
method, with the paper's network, learning rate and batch size for the method unless overridden.
Splits the data set by seed (stratified 80/20, then val_size of the training part for
validation), trains with equipoise.tabular.train.fit, checkpointing every epoch into
OUTPUT/checkpoint.pt (the same command resumes an interrupted run), saves OUTPUT/model.pt (loads
with torch.load(weights_only=True)) and evaluates it on the test split like tools/eval_tabular.py:
OUTPUT/report.md, metrics.json, curves.png (ROC and precision-recall), reliability.png and
confusion_matrix.png; the decision threshold maximises F1 on the validation split.
Methods: naive, the imbalanced-learn resamplers, class_weighted, focal, meta_weight_net, l2rw,
metabalance and ms_metabalance. Data: $EQUIPOISE_DATA or data_root=DIR.
"""

from __future__ import annotations

import argparse
import sys

from equipoise.cli import parse_args_with_overrides
from equipoise.tabular.commands import add_train_arguments, run_train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
    )
    add_train_arguments(parser)
    return run_train(parser, parse_args_with_overrides(parser, argv))


if __name__ == "__main__":
    sys.exit(main())
