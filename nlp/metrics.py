"""Evaluation for imbalanced NLP: entity-level tagging scores (seqeval) and per-class classification errors.

Tagging is scored on entities, not tokens: an entity counts as found only when its type and
its whole span match (the CoNLL-2000/2003 ``conlleval`` convention, which ``seqeval``
reproduces). Precision, recall and F1 are reported micro-averaged over all entities (the
CoNLL-2003 headline number) and macro-averaged over the entity types, which is where the rare
types show (the imbalance the dice loss of Li et al. 2020 addresses), with token accuracy
beside them (dominated by the "O" tag, it says little on its own).

Sequence classification reports accuracy, balanced accuracy, macro F1 and the error of each
class, the form of the IMDB table of Cao et al. 2019 ("Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss": error on positive and on negative reviews, and their
mean, ``mean_class_error = 1 - balanced_accuracy``). The counting is
``equipoise.core.metrics.evaluate_classification`` (torchmetrics).

``compute_tagging_metrics`` and ``compute_classification_metrics`` return the
``compute_metrics`` callables a ``transformers.Trainer`` takes: they read an ``EvalPrediction``
and return flat ``{name: float}`` dictionaries (the Trainer prefixes ``eval_``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from seqeval import scheme as seqeval_scheme
from seqeval.metrics import classification_report

from equipoise.core.metrics import evaluate_classification
from equipoise.nlp.data import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import EvalPrediction

__all__ = [
    "TAGGING_SCHEMES",
    "classification_metrics",
    "compute_classification_metrics",
    "compute_tagging_metrics",
    "tagging_metrics",
]


#: Tagging schemes for ``scheme=`` (seqeval's strict mode); ``None`` is the conlleval convention.
TAGGING_SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")

Id2Label = Mapping[int, str] | Sequence[str]


def _as_numpy(values: Any) -> Any:
    """Tensors to NumPy; arrays and lists (possibly ragged, one entry per sentence) as they are."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return values


def _label_map(id2label: Id2Label) -> dict[int, str]:
    if isinstance(id2label, Mapping):
        try:
            mapping = {int(key): str(value) for key, value in id2label.items()}
        except (TypeError, ValueError) as error:
            raise TypeError(f"id2label keys must be integer class ids, got {list(id2label)[:5]}") from error
    elif isinstance(id2label, Sequence) and not isinstance(id2label, str):
        mapping = {index: str(value) for index, value in enumerate(id2label)}
    else:
        raise TypeError(f"id2label must be a mapping id -> tag or a sequence of tags, got {type(id2label).__name__}")
    if not mapping:
        raise ValueError("id2label is empty")
    return mapping


def _tag(mapping: dict[int, str], value: int, name: str, sentence: int) -> str:
    try:
        return mapping[value]
    except KeyError:
        raise ValueError(
            f"{name} of sentence {sentence} contain {value}, which is not in id2label (ids {sorted(mapping)})"
        ) from None


def _tag_sequences(
    predictions: Any, label_ids: Any, mapping: dict[int, str], ignore_index: int
) -> tuple[list[list[str]], list[list[str]]]:
    """True and predicted tag sequences, one per sentence, without the ignored positions."""
    predictions = _as_numpy(predictions)
    label_ids = _as_numpy(label_ids)
    if len(predictions) != len(label_ids):
        raise ValueError(f"predictions hold {len(predictions)} sentences but label_ids {len(label_ids)}")
    y_true: list[list[str]] = []
    y_pred: list[list[str]] = []
    for index, (scores, labels) in enumerate(zip(predictions, label_ids)):
        labels = np.asarray(labels)
        scores = np.asarray(scores)
        if scores.ndim == labels.ndim + 1:  # logits or probabilities
            scores = scores.argmax(axis=-1)
        if scores.shape != labels.shape or labels.ndim != 1:
            raise ValueError(
                f"sentence {index}: predictions of shape {scores.shape} do not match label_ids of shape "
                f"{labels.shape} (expected (T,) ids or (T, C) scores for (T,) labels)"
            )
        if labels.dtype.kind not in "iu":
            raise TypeError(f"label_ids must be integer ids, got dtype {labels.dtype}")
        keep = labels != ignore_index
        y_true.append([_tag(mapping, int(v), "label_ids", index) for v in labels[keep]])
        y_pred.append([_tag(mapping, int(v), "predictions", index) for v in scores[keep]])
    if not y_true:
        raise ValueError("predictions and label_ids are empty: no sentence to score")
    return y_true, y_pred


def tagging_metrics(
    predictions: Any,
    label_ids: Any,
    id2label: Id2Label,
    *,
    scheme: str | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """Entity-level precision, recall and F1 of a tagger (seqeval), plus token accuracy.

    Args:
        predictions: per sentence, ``(T,)`` tag ids or ``(T, C)`` scores (argmax taken): a
            ``(B, T)`` or ``(B, T, C)`` array or tensor, or a list of per-sentence arrays.
        label_ids: ``(B, T)`` true tag ids (or a list of ``(T,)`` arrays); positions equal to
            ``ignore_index`` (padding, special tokens, sub-word continuations) are skipped in
            both.
        id2label: tag id -> tag string (``model.config.id2label``) or the list of tags.
        scheme: ``None`` (default) for the conlleval convention (an ``I-X`` after ``O`` starts
            an entity), or one of :data:`TAGGING_SCHEMES` for seqeval's strict mode, where
            only well-formed chunks of that scheme count.

    Returns:
        ``precision``, ``recall``, ``f1`` (micro over entities), ``macro_precision``,
        ``macro_recall``, ``macro_f1`` (unweighted mean over the entity types found in the
        labels or the predictions), ``accuracy`` (token level) and ``per_entity``:
        ``{type: {"precision", "recall", "f1", "support"}}``. Undefined ratios (no entity
        predicted, none to find) are 0, as seqeval's ``zero_division=0``.
    """
    mapping = _label_map(id2label)
    y_true, y_pred = _tag_sequences(predictions, label_ids, mapping, ignore_index)
    if scheme is not None and scheme not in TAGGING_SCHEMES:
        raise ValueError(f"scheme must be None or one of {TAGGING_SCHEMES}, got {scheme!r}")
    strict = {} if scheme is None else {"mode": "strict", "scheme": getattr(seqeval_scheme, scheme)}
    with warnings.catch_warnings():
        # Without any entity, seqeval's macro average is a NumPy mean of nothing (a RuntimeWarning);
        # it is replaced by 0 below.
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(y_true, y_pred, output_dict=True, zero_division=0, **strict)
    averages = {"micro avg", "macro avg", "weighted avg"}
    per_entity = {
        name: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for name, row in report.items()
        if name not in averages
    }
    micro = report.get("micro avg", {})
    macro = report.get("macro avg", {})
    num_tokens = sum(len(tags) for tags in y_true)
    correct = sum(t == p for true, pred in zip(y_true, y_pred) for t, p in zip(true, pred))
    return {
        "precision": float(micro.get("precision", 0.0)),
        "recall": float(micro.get("recall", 0.0)),
        "f1": float(micro.get("f1-score", 0.0)),
        "macro_precision": float(macro.get("precision", 0.0)) if per_entity else 0.0,
        "macro_recall": float(macro.get("recall", 0.0)) if per_entity else 0.0,
        "macro_f1": float(macro.get("f1-score", 0.0)) if per_entity else 0.0,
        "accuracy": correct / num_tokens if num_tokens else 0.0,
        "per_entity": per_entity,
    }


def _predictions_of(eval_prediction: EvalPrediction) -> Any:
    predictions = eval_prediction.predictions
    # Models that return more than logits (hidden states, attentions) give a tuple: logits first.
    if isinstance(predictions, tuple) and len(predictions) and np.ndim(predictions[0]) >= 2:
        predictions = predictions[0]
    return predictions


def compute_tagging_metrics(
    id2label: Id2Label, *, scheme: str | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer``: :func:`tagging_metrics` flattened to floats.

    Keys: ``precision``, ``recall``, ``f1``, ``macro_precision``, ``macro_recall``,
    ``macro_f1``, ``accuracy`` and, per entity type ``X``, ``precision_X``, ``recall_X``,
    ``f1_X``, ``support_X``.
    """
    mapping = _label_map(id2label)
    if scheme is not None and scheme not in TAGGING_SCHEMES:
        raise ValueError(f"scheme must be None or one of {TAGGING_SCHEMES}, got {scheme!r}")

    def compute(eval_prediction: EvalPrediction) -> dict[str, float]:
        result = tagging_metrics(_predictions_of(eval_prediction), eval_prediction.label_ids, mapping, scheme=scheme)
        flat = {key: float(value) for key, value in result.items() if key != "per_entity"}
        for name, row in result["per_entity"].items():
            flat.update({f"{metric}_{name}": float(value) for metric, value in row.items()})
        return flat

    return compute


def _class_names(class_names: Id2Label | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    mapping = _label_map(class_names)
    missing = [c for c in range(num_classes) if c not in mapping]
    if missing:
        raise ValueError(f"class_names has no name for class {missing[0]} (of {num_classes} classes)")
    return [mapping[c] for c in range(num_classes)]


def classification_metrics(
    predictions: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    class_names: Id2Label | None = None,
    from_logits: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and per-class error of a sequence classifier.

    Args:
        predictions: ``(N, C)`` logits (or probabilities, with ``from_logits=False``) or
            ``(N,)`` predicted class ids.
        labels: ``(N,)`` true class ids; ``ignore_index`` entries are skipped.
        num_classes: ``C``; default the width of the scores, or ``max(ids) + 1``.
        class_names: class id -> name (``model.config.id2label``) or the list of names.

    Returns:
        ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present in
        ``labels``), ``mean_class_error`` (``1 - balanced_accuracy``), ``macro_f1`` (mean F1
        over the classes present in ``labels``: scikit-learn's ``f1_score(average="macro",
        labels=present)``), ``worst_class_accuracy``, ``g_mean`` (geometric mean of the
        recalls), ``ece`` (15-bin expected calibration error, only from scores) and
        ``per_class``: ``{name: {"error", "recall", "precision", "f1", "support"}}`` with
        ``error = 1 - recall``, ``None`` for a class absent from ``labels``.
    """
    scores = torch.as_tensor(_as_numpy(predictions))
    target = torch.as_tensor(_as_numpy(labels))
    if target.dim() != 1 or target.is_floating_point():
        raise ValueError(f"labels must be a 1-D array of integer class ids, got shape {tuple(target.shape)}")
    if scores.shape[:1] != target.shape or scores.dim() not in (1, 2):
        raise ValueError(
            f"predictions of shape {tuple(scores.shape)} do not match labels of shape {tuple(target.shape)} "
            "(expected (N, C) scores or (N,) ids)"
        )
    keep = target != ignore_index
    scores, target = scores[keep], target[keep].to(torch.int64)
    if target.numel() == 0:
        raise ValueError("no label to score (empty, or every label is ignore_index)")
    upper = num_classes if num_classes is not None else (scores.shape[1] if scores.dim() == 2 else None)
    outside = target < 0 if upper is None else (target < 0) | (target >= upper)
    if bool(outside.any()):
        allowed = ">= 0" if upper is None else f"[0, {upper})"
        raise ValueError(f"labels contain class {int(target[outside][0])}, outside {allowed}")
    from_ids = scores.dim() == 1
    if from_ids:
        if scores.is_floating_point():
            raise TypeError("1-D predictions must be integer class ids; pass (N, C) scores for logits")
        width = int(max(int(scores.max()), int(target.max()))) + 1 if num_classes is None else num_classes
        if int(scores.min()) < 0 or int(scores.max()) >= width:
            bad = int(scores[(scores < 0) | (scores >= width)][0])
            raise ValueError(f"predictions contain class {bad}, outside [0, {width})")
        scores = torch.nn.functional.one_hot(scores.to(torch.int64), width).to(torch.float64)
        from_logits = False
    elif num_classes is not None and scores.shape[1] != num_classes:
        raise ValueError(f"predictions have {scores.shape[1]} scores per example, but num_classes={num_classes}")
    scores = scores.to(torch.float64)
    names = _class_names(class_names, scores.shape[1])
    report = evaluate_classification(scores, target, from_logits=from_logits, class_names=names)
    scalars = report.scalars
    per_class = {
        row["class"]: {
            "error": None if row["recall"] is None else 1.0 - row["recall"],
            "recall": row["recall"],
            "precision": row["precision"],
            "f1": row["f1"],
            "support": row["support"],
        }
        for row in report.per_class
    }
    result: dict[str, Any] = {
        "accuracy": scalars["accuracy"],
        "balanced_accuracy": scalars["balanced_accuracy"],
        "mean_class_error": 1.0 - scalars["balanced_accuracy"],
        "macro_f1": scalars["macro_f1"],
        "worst_class_accuracy": scalars["worst_class_accuracy"],
        "g_mean": scalars["g_mean"],
    }
    if not from_ids:
        result["ece"] = scalars["ece"]
    result["per_class"] = per_class
    return result


def compute_classification_metrics(
    class_names: Id2Label | None = None, *, from_logits: bool = True
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` for ``Trainer``: :func:`classification_metrics` flattened to floats.

    Keys: ``accuracy``, ``balanced_accuracy``, ``mean_class_error``, ``macro_f1``,
    ``worst_class_accuracy``, ``g_mean``, ``ece`` and, per class ``X`` present in the labels,
    ``error_X``, ``recall_X``, ``precision_X``, ``f1_X`` (with ``class_names={0: "neg", 1:
    "pos"}``: ``error_neg``, ``error_pos``, the LDAM IMDB table's columns).
    """
    names = None if class_names is None else _label_map(class_names)

    def compute(eval_prediction: EvalPrediction) -> dict[str, float]:
        result = classification_metrics(
            _predictions_of(eval_prediction), eval_prediction.label_ids, class_names=names, from_logits=from_logits
        )
        flat = {key: float(value) for key, value in result.items() if key != "per_class"}
        for name, row in result["per_class"].items():
            if row["error"] is None:  # class absent from this split: no error to report
                continue
            flat.update({f"{metric}_{name}": float(row[metric]) for metric in ("error", "recall", "precision", "f1")})
        return flat

    return compute
