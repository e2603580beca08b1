"""Tagging and classification metrics against seqeval and scikit-learn, and against a hand-scored sentence."""

import numpy as np
import pytest
import torch
from seqeval import metrics as seqeval_metrics
from seqeval.scheme import IOB2
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score
from transformers import EvalPrediction

from equipoise.nlp.metrics import (
    classification_metrics,
    compute_classification_metrics,
    compute_tagging_metrics,
    tagging_metrics,
)

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
ID2LABEL = dict(enumerate(TAGS))
ID = {tag: index for index, tag in enumerate(TAGS)}


def ids(tags: list[str]) -> list[int]:
    return [ID[tag] for tag in tags]


def random_iob2(rng: np.random.Generator, length: int) -> list[str]:
    """A well-formed IOB2 sequence: entities of 1-3 tokens between O runs."""
    tags: list[str] = []
    while len(tags) < length:
        if rng.random() < 0.5:
            tags.append("O")
            continue
        kind = rng.choice(["PER", "ORG", "LOC", "MISC"])
        span = int(rng.integers(1, 4))
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (span - 1)
    return tags[:length]


def corrupt(rng: np.random.Generator, tags: list[str]) -> list[str]:
    """Predicted tags: each one replaced by a random tag with probability 0.25 (may be ill-formed)."""
    return [str(rng.choice(TAGS)) if rng.random() < 0.25 else tag for tag in tags]


def padded(sentences: list[list[int]], width: int) -> np.ndarray:
    out = np.full((len(sentences), width), -100)
    for row, sentence in enumerate(sentences):
        out[row, : len(sentence)] = sentence
    return out


# ---- tagging ----------------------------------------------------------------------------------


def test_hand_scored_sentence():
    # "John works at Acme in Paris": PER found, ORG found with the wrong type (MISC), LOC missed.
    true = ["B-PER", "I-PER", "O", "O", "B-ORG", "O", "B-LOC"]
    pred = ["B-PER", "I-PER", "O", "O", "B-MISC", "O", "O"]
    result = tagging_metrics([ids(pred)], [ids(true)], ID2LABEL)
    # Entities: true {PER, ORG, LOC}, predicted {PER, MISC}, correct {PER}.
    precision, recall = 1 / 2, 1 / 3
    assert result["precision"] == pytest.approx(precision)
    assert result["recall"] == pytest.approx(recall)
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))  # 0.4
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["per_entity"] == {
        "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "MISC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        "ORG": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
        "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
    }
    # Macro over the types found in labels or predictions: (1 + 0 + 0 + 0) / 4.
    assert result["macro_f1"] == pytest.approx(0.25)


@pytest.mark.parametrize("scheme", [None, "IOB2"])
def test_tagging_metrics_equal_seqeval(scheme):
    rng = np.random.default_rng(0)
    true = [random_iob2(rng, int(rng.integers(3, 15))) for _ in range(40)]
    pred = [corrupt(rng, sentence) for sentence in true]
    result = tagging_metrics(
        padded([ids(p) for p in pred], 16), padded([ids(t) for t in true], 16), ID2LABEL, scheme=scheme
    )
    strict = {} if scheme is None else {"mode": "strict", "scheme": IOB2}
    assert result["precision"] == pytest.approx(seqeval_metrics.precision_score(true, pred, **strict))
    assert result["recall"] == pytest.approx(seqeval_metrics.recall_score(true, pred, **strict))
    assert result["f1"] == pytest.approx(seqeval_metrics.f1_score(true, pred, **strict))
    assert result["macro_f1"] == pytest.approx(seqeval_metrics.f1_score(true, pred, average="macro", **strict))
    assert result["accuracy"] == pytest.approx(seqeval_metrics.accuracy_score(true, pred))
    report = seqeval_metrics.classification_report(true, pred, output_dict=True, **strict)
    for name, row in result["per_entity"].items():
        assert row["f1"] == pytest.approx(report[name]["f1-score"])
        assert row["support"] == report[name]["support"]
    assert result["macro_f1"] == pytest.approx(np.mean([row["f1"] for row in result["per_entity"].values()]))
    assert 0 < result["f1"] < 1


def test_logits_tensors_and_ragged_lists_agree_and_ignored_positions_are_skipped():
    rng = np.random.default_rng(1)
    true = [random_iob2(rng, n) for n in (5, 9, 7)]
    pred = [corrupt(rng, sentence) for sentence in true]
    label_ids = padded([ids(t) for t in true], 10)
    pred_ids = padded([ids(p) for p in pred], 10)
    expected = tagging_metrics([ids(p) for p in pred], [ids(t) for t in true], ID2LABEL)
    # Logits whose argmax is the predicted tag; junk (argmax anywhere) at the ignored positions.
    logits = rng.normal(size=(3, 10, len(TAGS)))
    rows, cols = np.nonzero(label_ids != -100)
    logits[rows, cols, pred_ids[rows, cols]] += 20
    assert tagging_metrics(logits, label_ids, ID2LABEL) == expected
    assert tagging_metrics(torch.from_numpy(logits), torch.from_numpy(label_ids), TAGS) == expected
    junk = np.where(label_ids == -100, ID["B-PER"], pred_ids)
    assert tagging_metrics(junk, label_ids, ID2LABEL) == expected


def test_compute_tagging_metrics_is_flat_floats():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG"]]
    label_ids, pred_ids = padded([ids(t) for t in true], 4), padded([ids(p) for p in pred], 4)
    logits = np.eye(len(TAGS))[np.where(pred_ids < 0, 0, pred_ids)]
    compute = compute_tagging_metrics({str(k): v for k, v in ID2LABEL.items()})  # JSON-style string keys
    flat = compute(EvalPrediction(predictions=logits, label_ids=label_ids))
    assert all(isinstance(value, float) for value in flat.values())
    assert flat["f1"] == pytest.approx(seqeval_metrics.f1_score(true, pred))
    assert flat["f1_PER"] == 1.0 and flat["f1_LOC"] == 0.0 and flat["support_LOC"] == 1.0
    assert flat["macro_f1"] == pytest.approx((1 + 0 + 1) / 3)
    assert compute(EvalPrediction(predictions=(logits, logits), label_ids=label_ids)) == flat


def test_no_entity_anywhere_scores_zero_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = tagging_metrics([[0, 0, 0]], [[0, 0, -100]], ID2LABEL)
    assert result["f1"] == 0.0 and result["macro_f1"] == 0.0 and result["per_entity"] == {}
    assert result["accuracy"] == 1.0


def test_tagging_bad_input():
    with pytest.raises(ValueError, match=r"label_ids of sentence 0 contain 42, which is not in id2label"):
        tagging_metrics([[0, 1]], [[0, 42]], ID2LABEL)
    with pytest.raises(ValueError, match=r"predictions of sentence 1 contain 17"):
        tagging_metrics([[0, 1], [17, 0]], [[0, 1], [0, 0]], ID2LABEL)
    with pytest.raises(ValueError, match=r"sentence 0: predictions of shape \(3,\) do not match label_ids"):
        tagging_metrics([[0, 1, 0]], [[0, 1]], ID2LABEL)
    with pytest.raises(ValueError, match=r"predictions hold 1 sentences but label_ids 2"):
        tagging_metrics([[0, 1]], [[0, 1], [0, 0]], ID2LABEL)
    with pytest.raises(ValueError, match=r"scheme must be None or one of .*'IOB2'.*, got 'BIO'"):
        tagging_metrics([[0, 1]], [[0, 1]], ID2LABEL, scheme="BIO")
    with pytest.raises(ValueError, match="scheme must be None"):
        compute_tagging_metrics(ID2LABEL, scheme="BIO")
    with pytest.raises(TypeError, match="id2label must be a mapping"):
        tagging_metrics([[0, 1]], [[0, 1]], 5)
    with pytest.raises(TypeError, match="id2label keys must be integer class ids"):
        tagging_metrics([[0, 1]], [[0, 1]], {"zero": "O"})


# ---- sequence classification ------------------------------------------------------------------


def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(2)
    labels = rng.choice(4, size=200, p=[0.7, 0.2, 0.07, 0.03])
    logits = rng.normal(size=(200, 4))
    logits[np.arange(200), labels] += 1.0
    predicted = logits.argmax(1)
    result = classification_metrics(logits, labels, class_names=["a", "b", "c", "d"])
    present = np.unique(labels)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro", labels=present))
    recalls = recall_score(labels, predicted, average=None, labels=[0, 1, 2, 3])
    precisions = precision_score(labels, predicted, average=None, labels=[0, 1, 2, 3], zero_division=0)
    for index, name in enumerate("abcd"):
        assert result["per_class"][name]["error"] == pytest.approx(1 - recalls[index])
        assert result["per_class"][name]["precision"] == pytest.approx(precisions[index])
        assert result["per_class"][name]["support"] == int((labels == index).sum())
    assert result["mean_class_error"] == pytest.approx(np.mean(1 - recalls))
    assert 0 <= result["ece"] <= 1
    from_ids = classification_metrics(torch.from_numpy(predicted), torch.from_numpy(labels), num_classes=4)
    assert from_ids["balanced_accuracy"] == pytest.approx(result["balanced_accuracy"])
    assert "ece" not in from_ids


def test_ldam_imdb_columns_and_absent_class():
    # IMDB-style: error on negative and positive reviews and their mean (Cao et al. 2019, Table 1).
    labels = np.array([0, 0, 0, 0, 1, 1, -100])
    predicted = np.array([0, 0, 0, 1, 1, 0, 1])
    logits = np.eye(2)[predicted] * 3.0
    flat = compute_classification_metrics({0: "neg", 1: "pos"})(EvalPrediction(predictions=logits, label_ids=labels))
    assert flat["error_neg"] == pytest.approx(1 / 4) and flat["error_pos"] == pytest.approx(1 / 2)
    assert flat["mean_class_error"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert flat["accuracy"] == pytest.approx(4 / 6)
    assert all(isinstance(value, float) for value in flat.values())
    # A class that never occurs in the labels has no error; macro F1 is over the classes present.
    result = classification_metrics(np.array([0, 2, 1, 1]), np.array([0, 0, 1, 1]), num_classes=3)
    assert result["per_class"]["2"]["error"] is None
    assert result["macro_f1"] == pytest.approx(f1_score([0, 0, 1, 1], [0, 2, 1, 1], average="macro", labels=[0, 1]))


def test_classification_bad_input():
    with pytest.raises(ValueError, match=r"labels contain class 3, outside \[0, 3\)"):
        classification_metrics(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"predictions contain class 5, outside \[0, 3\)"):
        classification_metrics(np.array([0, 5]), np.array([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match=r"predictions of shape \(3, 2\) do not match labels of shape \(2,\)"):
        classification_metrics(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="every label is ignore_index"):
        classification_metrics(np.zeros((2, 2)), np.array([-100, -100]))
    with pytest.raises(ValueError, match=r"class_names has no name for class 2"):
        classification_metrics(np.zeros((2, 3)), np.array([0, 1]), class_names=["a", "b"])
    with pytest.raises(TypeError, match="1-D predictions must be integer class ids"):
        classification_metrics(np.array([0.2, 0.9]), np.array([0, 1]))
