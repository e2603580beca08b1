"""equipoise.nlp: imbalanced token tagging and text classification with transformers.

- ``equipoise.nlp.data``: CoNLL-2003 (the 4-column files or the Hugging Face hub), sub-word label
  alignment for any fast tokenizer (first sub-token labelled, the rest ``-100``; RoBERTa's
  ``add_prefix_space`` checked), IMDB and the LDAM paper's imbalanced-IMDB protocol, per-example
  sample weights.
- ``equipoise.nlp.trainer``: :class:`ImbalancedTrainer`, a ``transformers.Trainer`` that takes any
  core loss by name (cross-entropy, class-weighted, focal, self-adjusting dice, ...), sample
  weights and the core samplers.
- ``equipoise.nlp.metrics``: entity-level seqeval scores and classification metrics, also as the
  Trainer's ``compute_metrics``.
- ``equipoise.nlp.train``: a whole fine-tuning run from a recipe (``tools/train_nlp.py``), with
  epoch checkpoints and exact resumption, saving a model folder ``equipoise.nlp.evaluate`` reads.
- ``equipoise.nlp.evaluate``: the test-split report of a saved model (``tools/eval_nlp.py``; on a
  GPU when there is one).

The names below are imported on first use, so ``import equipoise.nlp`` does not load transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CONLL2003_LABELS": "data",
    "Sentence": "data",
    "TaggedDataset": "data",
    "encode_tagged": "data",
    "encode_texts": "data",
    "imbalance_imdb": "data",
    "label_counts": "data",
    "load_conll2003": "data",
    "load_imdb": "data",
    "load_tokenizer": "data",
    "read_conll": "data",
    "ImbalancedTrainer": "trainer",
    "classification_metrics": "metrics",
    "compute_classification_metrics": "metrics",
    "compute_tagging_metrics": "metrics",
    "tagging_metrics": "metrics",
    "NLPTrainConfig": "train",
    "load_nlp_train_config": "train",
    "train_nlp": "train",
    "evaluate_nlp": "evaluate",
    "load_saved_model": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'equipoise.nlp' has no attribute {name!r}")
    return getattr(importlib.import_module(f"equipoise.nlp.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
