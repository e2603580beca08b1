"""The NLP evaluation entry point against independent oracles.

Saved-model folders are built here, as training would write them, without any training code of
the package: a tiny RoBERTa tagger (9 CoNLL-2003 tags) and a tiny RoBERTa review classifier, each
fitted for a few Adam steps so that its predictions are not constant, with a byte-level BPE
tokenizer trained here on CoNLL-2003 sentences (the ``tokenizers`` library), saved with
``save_pretrained`` beside an ``equipoise_nlp.json`` written by hand. Nothing is downloaded.

Oracles: the CoNLL test file and the IMDB CSV are re-read with plain line splitting and the
``csv`` module; each sentence is encoded by tokenising its words one by one and run through the
model alone (no batch, no padding); the tag at each word's first sub-token is scored with seqeval
directly, the reviews' predictions with scikit-learn. A forged model that returns the gold tags
checks the whole tagging path reaches F1 = 1. Needs the shared CoNLL-2003 and IMDB files under
``EQUIPOISE_DATA`` (else ``../shared/data``); skipped without them, except the checks that need no data.
"""

import collections
import csv
import importlib.util
import json
import lzma
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from seqeval.metrics import accuracy_score as seqeval_accuracy
from seqeval.metrics import classification_report
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score

from equipoise.nlp import evaluate as nlp_evaluate
from equipoise.nlp.data import CONLL2003_LABELS, encode_tagged, load_tokenizer
from equipoise.nlp.evaluate import (
    METADATA_FILE,
    MODEL_FORMAT,
    evaluate_nlp,
    first_subtoken_predictions,
    load_saved_model,
    metrics_table,
    read_model_info,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
CONLL = DATA / "conll2003"
IMDB_FILE = DATA / "imdb" / "aclImdb_v1_labeled.csv.xz"
SKIP_REASON = "needs CoNLL-2003 and IMDB under EQUIPOISE_DATA (CI sets it; locally EQUIPOISE_DATA=/work/shared/data)"
needs_data = pytest.mark.skipif(not ((CONLL / "test.txt").is_file() and IMDB_FILE.is_file()), reason=SKIP_REASON)

ID2LABEL = dict(enumerate(CONLL2003_LABELS))
LABEL2ID = {tag: index for index, tag in ID2LABEL.items()}
MAX_LENGTH = 128  # max_position_embeddings 130: RoBERTa's positions start after padding_idx = 1
TAGGED_EXAMPLES = 60
REVIEWS = 16
PNG = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Data read by hand and saved-model folders built here
# --------------------------------------------------------------------------------------------


def conll_sentences(split: str, limit: int | None = None) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) per sentence of a CoNLL file, by plain line splitting; -DOCSTART- lines skipped."""
    sentences, tokens, tags = [], [], []
    with open(CONLL / f"{split}.txt", encoding="utf-8") as lines:
        for line in lines:
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                    if limit is not None and len(sentences) == limit:
                        return sentences
                continue
            tokens.append(fields[0])
            tags.append(fields[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences[:limit]


@pytest.fixture(scope="module")
def imdb_rows():
    """{split: [(label, review), ...]} of the shared IMDB CSV, read with the csv module."""
    if not IMDB_FILE.is_file():
        pytest.skip(SKIP_REASON)
    rows = collections.defaultdict(list)
    with lzma.open(IMDB_FILE, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["split"]].append((int(row["label"]), row["review"]))
    return rows


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """A byte-level BPE (RoBERTa-style) tokenizer trained on 400 CoNLL-2003 training sentences."""
    if not (CONLL / "train.txt").is_file():
        pytest.skip(SKIP_REASON)
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    corpus = [" ".join(tokens) for tokens, _ in conll_sentences("train", 400)]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        corpus, vocab_size=1200, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    files = tmp_path_factory.mktemp("bpe_files")
    trainer.save_model(str(files))
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = RobertaTokenizer(
        vocab=str(files / "vocab.json"), merges=str(files / "merges.txt"), add_prefix_space=True
    )
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(tokenizer, **labels):
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=MAX_LENGTH + 2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **labels,
    )


def fit_briefly(model, batches, steps: int, lr: float = 5e-3) -> None:
    """A few Adam steps on padded batches (dicts of tensors), so that predictions are not constant."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        loss = model(**batches[step % len(batches)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def pad(records, pad_id):
    width = max(len(record["input_ids"]) for record in records)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for record in records:
        missing = width - len(record["input_ids"])
        batch["input_ids"].append(record["input_ids"] + [pad_id] * missing)
        batch["attention_mask"].append([1] * len(record["input_ids"]) + [0] * missing)
        labels = record["labels"]
        batch["labels"].append(labels + [-100] * missing if isinstance(labels, list) else labels)
    return {key: torch.tensor(value) for key, value in batch.items()}


def write_info(folder: Path, **fields) -> None:
    info = {
        "format": MODEL_FORMAT,
        "loss": "cross_entropy",
        "loss_options": {},
        "max_length": MAX_LENGTH,
        "label_all_subtokens": False,
        "base_model": "tiny-roberta (built in the test)",
        **fields,
    }
    (folder / METADATA_FILE).write_text(json.dumps(info))


@pytest.fixture(scope="module")
def tagger_folder(tokenizer_folder, tmp_path_factory):
    """A saved CoNLL-2003 tagger: tiny RoBERTa, 9 tags, 40 Adam steps on 320 training sentences."""
    from transformers import RobertaForTokenClassification

    tokenizer = load_tokenizer(tokenizer_folder)
    torch.manual_seed(0)
    model = RobertaForTokenClassification(tiny_config(tokenizer, num_labels=9, id2label=ID2LABEL, label2id=LABEL2ID))
    from equipoise.nlp.data import Sentence

    train = [Sentence(tokens, tags) for tokens, tags in conll_sentences("train", 320)]
    records = encode_tagged(train, tokenizer, LABEL2ID, max_length=MAX_LENGTH)
    batches = [pad(records[start : start + 32], tokenizer.pad_token_id) for start in range(0, len(records), 32)]
    fit_briefly(model, batches, steps=40)
    folder = tmp_path_factory.mktemp("runs") / "tagger"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_info(folder, task="tagging", dataset="conll2003")
    return folder


@pytest.fixture(scope="module")
def classifier_folder(tokenizer_folder, imdb_rows, tmp_path_factory):
    """A saved IMDB classifier: tiny RoBERTa, 2 labels, 30 Adam steps on 64 training reviews."""
    from transformers import RobertaForSequenceClassification

    tokenizer = load_tokenizer(tokenizer_folder)
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(
        tiny_config(tokenizer, num_labels=2, id2label={0: "negative", 1: "positive"})
    )
    reviews = imdb_rows["train"][:32] + imdb_rows["train"][-32:]  # the file lists negatives, then positives
    encodings = tokenizer([text for _, text in reviews], truncation=True, max_length=64)
    records = [
        {"input_ids": ids, "labels": label} for ids, (label, _) in zip(encodings["input_ids"], reviews, strict=True)
    ]
    order = np.random.default_rng(0).permutation(len(records))
    records = [records[index] for index in order]
    batches = [pad(records[start : start + 16], tokenizer.pad_token_id) for start in range(0, len(records), 16)]
    fit_briefly(model, batches, steps=30)
    folder = tmp_path_factory.mktemp("runs") / "classifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_info(folder, task="classification", dataset="imdb", max_length=64)
    return folder


def copy_of(folder: Path, tmp_path: Path, **info_changes) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    if info_changes:
        info = json.loads((copy / METADATA_FILE).read_text())
        info.update(info_changes)
        (copy / METADATA_FILE).write_text(json.dumps(info))
    return copy


# --------------------------------------------------------------------------------------------
# Tagging
# --------------------------------------------------------------------------------------------


def oracle_tags(model, tokenizer, tokens: list[str]) -> tuple[list[str], int]:
    """Predicted tag per word: the sentence encoded word by word, run alone, argmax at first sub-tokens.

    Words past ``MAX_LENGTH - 2`` sub-tokens (or with none) get "O"; also returns how many did.
    """
    ids, first = [], []
    for word in tokens:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        first.append(len(ids) if pieces else None)
        ids += pieces
    budget = MAX_LENGTH - 2
    ids = [tokenizer.cls_token_id, *ids[:budget], tokenizer.sep_token_id]
    with torch.no_grad():
        predicted = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
    tags, missing = [], 0
    for start in first:
        if start is None or start >= budget:
            tags.append("O")
            missing += 1
        else:
            tags.append(ID2LABEL[predicted[1 + start]])
    return tags, missing


@needs_data
def test_tagging_matches_seqeval_on_sentences_run_one_by_one(tagger_folder, tmp_path):
    output = tmp_path / "eval"
    result = evaluate_nlp(
        tagger_folder, output=output, batch_size=16, device="cpu", max_examples=TAGGED_EXAMPLES, progress=False
    )

    from transformers import RobertaForTokenClassification

    model = RobertaForTokenClassification.from_pretrained(tagger_folder).eval()
    tokenizer = load_tokenizer(tagger_folder)
    sentences = conll_sentences("test", TAGGED_EXAMPLES)
    gold = [tags for _, tags in sentences]
    predicted, missing = [], 0
    for tokens, _ in sentences:
        tags, cut = oracle_tags(model, tokenizer, tokens)
        predicted.append(tags)
        missing += cut
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)

    assert result["task"] == "tagging" and result["split"] == "test"
    assert result["evaluation"]["examples"] == TAGGED_EXAMPLES
    assert result["evaluation"]["words"] == sum(len(tags) for tags in gold)
    assert result["evaluation"]["words_without_prediction"] == missing
    assert result["f1"] == pytest.approx(report["micro avg"]["f1-score"], abs=1e-12)
    assert result["precision"] == pytest.approx(report["micro avg"]["precision"], abs=1e-12)
    assert result["recall"] == pytest.approx(report["micro avg"]["recall"], abs=1e-12)
    assert result["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-12)
    assert result["accuracy"] == pytest.approx(seqeval_accuracy(gold, predicted), abs=1e-12)
    entities = {name for name in report if not name.endswith(" avg")}
    assert set(result["per_entity"]) == entities
    for name in entities:
        expected = report[name]
        assert result["per_entity"][name] == pytest.approx(
            {
                "precision": expected["precision"],
                "recall": expected["recall"],
                "f1": expected["f1-score"],
                "support": expected["support"],
            },
            abs=1e-12,
        )
    # The model was fitted enough to find some entities: the comparison above is not one of zeros.
    assert result["f1"] > 0 and any(row["f1"] > 0 for row in result["per_entity"].values())
    flat_gold = [tag for tags in gold for tag in tags]
    flat_predicted = [tag for tags in predicted for tag in tags]
    assert result["labels"] == list(CONLL2003_LABELS)
    assert result["confusion_matrix"] == confusion_matrix(flat_gold, flat_predicted, labels=CONLL2003_LABELS).tolist()

    # Training entity counts: B- tags of the training file, counted here by plain splitting.
    counts = collections.Counter(tag[2:] for _, tags in conll_sentences("train") for tag in tags if tag[:2] == "B-")
    assert result["train_entity_counts"] == dict(counts)

    # predictions.conll: "token gold predicted" per word, the file's tokens and gold tags, a blank line per sentence.
    blocks = (output / "predictions.conll").read_text(encoding="utf-8").split("\n\n")
    blocks = [block for block in blocks if block.strip()]
    assert len(blocks) == TAGGED_EXAMPLES
    for block, (tokens, tags), oracle in zip(blocks, sentences, predicted, strict=True):
        assert [line.split(" ") for line in block.strip("\n").split("\n")] == [
            [token, tag, guess] for token, tag, guess in zip(tokens, tags, oracle, strict=True)
        ]
    # Re-scored from the file alone, the numbers are the same.
    rescored = classification_report(
        [[line.split()[1] for line in block.strip().split("\n")] for block in blocks],
        [[line.split()[2] for line in block.strip().split("\n")] for block in blocks],
        output_dict=True,
        zero_division=0,
    )
    assert rescored["micro avg"]["f1-score"] == pytest.approx(result["f1"], abs=1e-12)

    assert json.loads((output / "metrics.json").read_text()) == result
    for name in ("per_entity_f1.png", "confusion_matrix.png"):
        assert (output / name).read_bytes()[:8] == PNG
    markdown = (output / "report.md").read_text()
    assert str(tagger_folder) in markdown and '"cross_entropy"' in markdown
    assert "![" in markdown and "per_entity_f1.png" in markdown and "confusion_matrix.png" in markdown
    assert f"| **micro avg** | {100 * result['precision']:.2f} | {100 * result['recall']:.2f} |" in markdown
    assert metrics_table(result) in markdown
    assert result["files"]["predictions"] == "predictions.conll"


class GoldTagger(torch.nn.Module):
    """Logits that put all their mass on the gold tag of every labelled sub-token, looked up by input ids."""

    def __init__(self, records):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # something for .to(device) and the device lookup
        self.gold = {tuple(record["input_ids"]): record["labels"] for record in records}
        self.config = SimpleNamespace(id2label=dict(ID2LABEL))

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, len(ID2LABEL))
        for row in range(len(input_ids)):
            length = int(attention_mask[row].sum())
            for position, label in enumerate(self.gold[tuple(input_ids[row, :length].tolist())]):
                logits[row, position, label if label >= 0 else LABEL2ID["O"]] = 5.0
        return SimpleNamespace(logits=logits)


@needs_data
def test_gold_logits_give_perfect_scores(tagger_folder, tmp_path, monkeypatch):
    from equipoise.nlp.data import Sentence

    # A run that trained on a seeded subset of 50 training sentences (max_train_examples): its counts are the subset's.
    folder = copy_of(tagger_folder, tmp_path, max_length=512, label_all_subtokens=True, max_train_examples=50, seed=3)
    tokenizer = load_tokenizer(folder)
    sentences = [Sentence(tokens, tags) for tokens, tags in conll_sentences("test", 40)]
    forged = GoldTagger(encode_tagged(sentences, tokenizer, LABEL2ID, max_length=512))
    monkeypatch.setattr(
        nlp_evaluate, "load_saved_model", lambda folder, device, fp16: (forged, tokenizer, read_model_info(folder))
    )
    result = evaluate_nlp(folder, output=tmp_path / "out", batch_size=7, device="cpu", max_examples=40, progress=False)
    assert result["evaluation"]["words_without_prediction"] == 0
    assert result["f1"] == result["precision"] == result["recall"] == result["accuracy"] == 1.0
    assert result["per_entity"] and all(row["f1"] == 1.0 for row in result["per_entity"].values())
    matrix = np.asarray(result["confusion_matrix"])
    assert np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0
    train = conll_sentences("train")
    subset = [train[row] for row in np.random.default_rng(3).choice(len(train), size=50, replace=False)]
    counts = collections.Counter(tag[2:] for _, tags in subset for tag in tags if tag[:2] == "B-")
    assert result["train_entity_counts"] == dict(counts) and sum(counts.values()) < 200


def test_first_subtoken_predictions_by_hand():
    # <s> Peter Black ##burn said ... </s>: words 0, 1 (two pieces), 2 (three pieces); word 3 was cut off.
    word_ids = [None, 0, 1, 1, 2, 2, 2, None, None]
    predictions = [8, 1, 2, 7, 0, 6, 6, 8, 3]
    assert first_subtoken_predictions(predictions, word_ids, 4, missing=0).tolist() == [1, 2, 0, 0]
    assert first_subtoken_predictions(np.asarray(predictions), word_ids, 4, missing=-1).tolist() == [1, 2, 0, -1]
    with pytest.raises(ValueError, match="do not match 3 word_ids"):
        first_subtoken_predictions([1, 2], [None, 0, None], 1, missing=0)
    with pytest.raises(ValueError, match=r"word_ids\[1\] = 5 is outside \[0, 2\)"):
        first_subtoken_predictions([1, 2], [None, 5], 2, missing=0)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def ece_by_hand(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    total = 0.0
    for low, high in zip(np.linspace(0, 1, bins + 1)[:-1], np.linspace(0, 1, bins + 1)[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


@needs_data
def test_classification_matches_sklearn_on_reviews_run_one_by_one(classifier_folder, imdb_rows):
    result = evaluate_nlp(classifier_folder, batch_size=5, device="cpu", max_examples=REVIEWS, progress=False)
    output = classifier_folder.parent / "eval-test"  # the default: beside the model folder
    assert result["evaluation"]["output"] == str(output)

    from transformers import RobertaForSequenceClassification

    model = RobertaForSequenceClassification.from_pretrained(classifier_folder).eval()
    tokenizer = load_tokenizer(classifier_folder)
    test = imdb_rows["test"]
    negatives = [row for row, (label, _) in enumerate(test) if label == 0][: REVIEWS // 2]
    positives = [row for row, (label, _) in enumerate(test) if label == 1][: REVIEWS // 2]
    rows = sorted(negatives + positives)
    labels = np.asarray([test[row][0] for row in rows])
    probabilities = []
    for row in rows:
        ids = tokenizer(test[row][1], truncation=True, max_length=64)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        probabilities.append(torch.softmax(logits, dim=0).numpy())
    probabilities = np.stack(probabilities)
    predicted = probabilities.argmax(axis=1)
    assert 0 < predicted.sum() < len(predicted), "the fitted classifier should predict both classes"

    written = list(csv.DictReader((output / "predictions.csv").open()))
    assert [int(line["row"]) for line in written] == rows
    assert [int(line["label"]) for line in written] == labels.tolist()
    assert [int(line["prediction"]) for line in written] == predicted.tolist()
    np.testing.assert_allclose([float(line["p_positive"]) for line in written], probabilities[:, 1], rtol=1e-5)

    recall = recall_score(labels, predicted, average=None, labels=[0, 1])
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-12)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-12)
    assert result["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-12)
    assert result["per_class"]["negative"]["error"] == pytest.approx(1 - recall[0], abs=1e-12)
    assert result["per_class"]["positive"]["error"] == pytest.approx(1 - recall[1], abs=1e-12)
    mean_error = (result["per_class"]["negative"]["error"] + result["per_class"]["positive"]["error"]) / 2
    assert result["mean_class_error"] == pytest.approx(mean_error, abs=1e-12)
    assert result["mean_class_error"] == pytest.approx(1 - balanced_accuracy_score(labels, predicted), abs=1e-12)
    assert result["ece"] == pytest.approx(ece_by_hand(probabilities, labels), abs=1e-5)
    assert result["confusion_matrix"] == confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
    assert result["evaluation"]["examples_per_class"] == {"negative": REVIEWS // 2, "positive": REVIEWS // 2}

    assert json.loads((output / "metrics.json").read_text()) == result
    for name in ("reliability.png", "confusion_matrix.png"):
        assert (output / name).read_bytes()[:8] == PNG
    markdown = (output / "report.md").read_text()
    assert "| error on positive reviews | error on negative reviews | mean error |" in markdown
    errors = result["per_class"]
    assert (
        f"| {100 * errors['positive']['error']:.2f} | {100 * errors['negative']['error']:.2f} | "
        f"{100 * result['mean_class_error']:.2f} |"
    ) in markdown
    assert str(classifier_folder) in markdown and "reliability.png" in markdown


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_missing_folder_and_missing_info_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found: .*nowhere"):
        evaluate_nlp(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match=f"plain/{METADATA_FILE} not found"):
        load_saved_model(tmp_path / "plain")
    with pytest.raises(TypeError, match="folder must be a path"):
        read_model_info(3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"format": "equipoise.vision/1"}', "format is 'equipoise.vision/1', expected 'equipoise.nlp/1'"),
        ('{"format": "equipoise.nlp/1", "task": "ner", "dataset": "conll2003"}', "task must be one of"),
        ('{"format": "equipoise.nlp/1", "task": "tagging", "dataset": "ontonotes"}', "dataset must be one of"),
        ('{"format": "equipoise.nlp/1", "task": "classification", "dataset": "conll2003"}', "is for task 'tagging'"),
        ('{"format": "equipoise.nlp/1", "task": "tagging", "dataset": "conll2003"}', "max_length must be a positive"),
        (
            '{"format": "equipoise.nlp/1", "task": "tagging", "dataset": "conll2003", "max_length": 8, '
            '"label_all_subtokens": "no"}',
            "label_all_subtokens must be true or false",
        ),
    ],
)
def test_bad_info_file_is_named(tmp_path, text, message):
    (tmp_path / METADATA_FILE).write_text(text)
    with pytest.raises(ValueError, match=f"{METADATA_FILE}.*{message}"):
        evaluate_nlp(tmp_path)


@needs_data
def test_bad_arguments_fail_before_the_model_loads(tagger_folder, classifier_folder):
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train', 'valid', 'validation'\]"):
        evaluate_nlp(tagger_folder, split="dev")
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\] for dataset 'imdb'"):
        evaluate_nlp(classifier_folder, split="valid")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        evaluate_nlp(tagger_folder, batch_size=0)
    with pytest.raises(ValueError, match="max_examples must be a positive int or None, got -1"):
        evaluate_nlp(tagger_folder, max_examples=-1)
    with pytest.raises(ValueError, match="fp16=True needs a CUDA device"):
        load_saved_model(tagger_folder, device="cpu", fp16=True)


@needs_data
def test_task_the_model_does_not_fit(classifier_folder, tagger_folder, tmp_path):
    # A sequence classifier under task "tagging": config.json's architecture says so.
    folder = copy_of(classifier_folder, tmp_path / "a", task="tagging", dataset="conll2003", max_length=MAX_LENGTH)
    with pytest.raises(ValueError, match=f"{METADATA_FILE}: task 'tagging' needs a \\*ForTokenClassification"):
        evaluate_nlp(folder, device="cpu")
    # Without the architecture in config.json, the weights give it away: the tagging head is missing.
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    config["id2label"], config["label2id"] = ID2LABEL, LABEL2ID
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lack .*classifier"):
        load_saved_model(folder, device="cpu")
    # A tagger under task "classification".
    folder = copy_of(tagger_folder, tmp_path / "b", task="classification", dataset="imdb")
    with pytest.raises(ValueError, match=r"needs a \*ForSequenceClassification model"):
        load_saved_model(folder, device="cpu")
    # Weights only from safetensors.
    folder = copy_of(tagger_folder, tmp_path / "c")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        load_saved_model(folder, device="cpu")


# --------------------------------------------------------------------------------------------
# The script and CUDA
# --------------------------------------------------------------------------------------------


def load_cli():
    spec = importlib.util.spec_from_file_location("eval_nlp_cli", ROOT / "tools" / "eval_nlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_data
def test_cli_prints_the_table_and_writes_the_report(tagger_folder, tmp_path, capsys):
    cli = load_cli()
    output = tmp_path / "cli"
    arguments = [str(tagger_folder), "--split", "valid", "--output", str(output), "--max-examples", "12"]
    assert cli.main([*arguments, "--device", "cpu", "--batch-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["split"] == "valid" and metrics["evaluation"]["examples"] == 12
    assert metrics_table(metrics) in printed
    assert f"| **micro avg** | {100 * metrics['precision']:.2f}" in printed
    assert f"report: {output}/report.md" in printed


def test_cli_help_and_errors(tmp_path, capsys):
    cli = load_cli()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "tools/eval_nlp.py runs/conll-focal/model" in help_text and "--max-examples N" in help_text
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(tmp_path / "missing"), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "model folder not found" in capsys.readouterr().err


@needs_data
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_gives_the_cpu_metrics(tagger_folder, classifier_folder, tmp_path):
    for folder, examples in ((tagger_folder, TAGGED_EXAMPLES), (classifier_folder, REVIEWS)):
        on_cpu = evaluate_nlp(folder, output=tmp_path / "cpu", device="cpu", max_examples=examples, progress=False)
        on_cuda = evaluate_nlp(folder, output=tmp_path / "cuda", device="cuda", max_examples=examples, progress=False)
        assert on_cuda["evaluation"]["device"].startswith("cuda")
        for key in ("accuracy", "f1", "macro_f1", "balanced_accuracy"):
            if key in on_cpu:
                assert on_cuda[key] == pytest.approx(on_cpu[key], abs=1e-9), key
        assert on_cuda["confusion_matrix"] == on_cpu["confusion_matrix"]
        if "ece" in on_cpu:
            assert math.isclose(on_cuda["ece"], on_cpu["ece"], abs_tol=1e-5)
