"""Evaluate a saved ``equipoise.nlp`` model on a split of its data set, and write a report people can read.

>>> from equipoise.nlp.evaluate import evaluate_nlp, metrics_table
>>> result = evaluate_nlp("runs/conll-focal/model", split="test")   # writes runs/conll-focal/eval-test/
>>> print(metrics_table(result))                                     # also in report.md

The saved-model folder is what training writes: a Hugging Face ``save_pretrained`` folder
(``config.json`` with ``id2label``, safetensors weights, the tokenizer files) plus
``equipoise_nlp.json``, ``{"format": "equipoise.nlp/1", "task": "tagging" | "classification",
"dataset": "conll2003" | "imdb", "max_length": ..., "label_all_subtokens": ..., "loss": ...,
"loss_options": ..., "base_model": ...}``. :func:`load_saved_model` refuses a folder without that
file, or whose file is corrupt, of another format, or names a task its model class does not fit,
with an error naming the file; weights are read only through ``from_pretrained`` from safetensors
(no pickle), in float32.

Tagging (CoNLL-2003; Tjong Kim Sang and De Meulder, "Introduction to the CoNLL-2003 Shared Task:
Language-Independent Named Entity Recognition", CoNLL 2003). The split is encoded with the saved
``max_length`` (``equipoise.nlp.data.encode_tagged``), the model runs on batches of sentences, and
each word takes the tag predicted at its *first* sub-token (Devlin, Chang, Lee, Toutanova, "BERT:
Pre-training of Deep Bidirectional Transformers for Language Understanding", NAACL 2019, Section
5.3), whatever ``label_all_subtokens`` was at training: the unit scored is the word, as in the
shared task. Words that ``max_length`` cut off (or that the tokenizer turns into no sub-token at
all) get ``O``, so their entities count as missed; the report says how many there were. The gold
tags are those of the file, every word of every sentence. Scores are entity-level (seqeval, the
``conlleval`` convention; ``equipoise.nlp.metrics.tagging_metrics``): micro P/R/F1 (the shared
task's headline), macro over the entity types, per type P/R/F1 and support, and token accuracy.

Classification (IMDB; Maas et al., "Learning Word Vectors for Sentiment Analysis", ACL 2011; the
test split is balanced, 12,500 reviews of each class). Reported as in Table 1 of Cao, Wei, Gaidon,
Arechiga, Ma, "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS
2019: the error on positive reviews, the error on negative reviews (``1 - recall`` of the class)
and their mean (``1 - balanced accuracy``), beside accuracy, macro F1 and the expected calibration
error (15 equal-width bins; Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural
Networks", ICML 2017). IMDB's label 0 is a negative and 1 a positive review, the names used here.

What :func:`evaluate_nlp` writes into ``output`` (default ``<folder>/../eval-<split>``):

- ``metrics.json``: the returned dictionary (strict JSON);
- ``report.md``: the model folder, its ``equipoise_nlp.json``, the evaluated examples and the
  tables of :func:`metrics_table`, with the plots;
- tagging: ``per_entity_f1.png`` (test F1 per entity type, against the number of entities of the
  type in the *training* split), ``confusion_matrix.png`` (word-level, over the tags,
  row-normalised) and ``predictions.conll`` (``token gold predicted`` per line, a blank line
  between sentences: ``conlleval`` and seqeval can re-score it);
- classification: ``reliability.png``, ``confusion_matrix.png`` and ``predictions.csv`` (row of
  the split, label, prediction and class probabilities).

``max_examples`` keeps the first sentences of a CoNLL split; for IMDB, whose files list all the
negative reviews before the positive ones, it keeps the first reviews *of each class*, in shares
proportional to the class sizes (half and half on the balanced test split), so that a small run
still sees both classes. Nothing random is drawn.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from equipoise.core.device import resolve_device
from equipoise.core.metrics import plot_confusion_matrix, plot_reliability, reliability_bins
from equipoise.core.reporting import markdown_table
from equipoise.nlp.data import (
    CONLL2003_LABELS,
    encode_tagged,
    encode_texts,
    label_counts,
    load_conll2003,
    load_imdb,
    load_tokenizer,
)
from equipoise.nlp.metrics import classification_metrics, tagging_metrics
from equipoise.nlp.train import DATASETS, METADATA_FILE, MODEL_FORMAT

__all__ = [
    "DATASET_TASKS",
    "IMDB_CLASS_NAMES",
    "METADATA_FILE",
    "MODEL_FORMAT",
    "evaluate_nlp",
    "first_subtoken_predictions",
    "load_saved_model",
    "metrics_table",
    "read_model_info",
]

#: The ``format`` of ``equipoise_nlp.json``: the version of the saved-model folder contract.
#: The data sets evaluation knows, with the task each one is for (training's ``DATASETS``).
DATASET_TASKS = DATASETS
#: IMDB's class names by label id (0: negative review, rating <= 4; 1: positive, rating >= 7).
IMDB_CLASS_NAMES = ("negative", "positive")

_SPLITS = {
    "conll2003": {"train": "train", "valid": "valid", "validation": "valid", "test": "test"},
    "imdb": {"train": "train", "test": "test"},
}
_HEADS = {"tagging": "ForTokenClassification", "classification": "ForSequenceClassification"}
_DATASET_TITLES = {"conll2003": "CoNLL-2003", "imdb": "IMDB"}


# --------------------------------------------------------------------------------------------
# The saved-model folder
# --------------------------------------------------------------------------------------------


def read_model_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of ``<folder>/equipoise_nlp.json``, with defaults filled in.

    Raises ``FileNotFoundError`` for a missing folder or file and ``ValueError``, naming the file,
    when it is not JSON, not an object, of another ``format`` than :data:`MODEL_FORMAT`,
    names an unknown ``task`` or ``dataset`` (:data:`DATASET_TASKS`) or a dataset of another task,
    or has a ``max_length`` that is not a positive int or a ``label_all_subtokens`` that is not a
    bool. ``label_all_subtokens`` defaults to ``False``; other keys are kept as they are.
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a path (str or os.PathLike), got {type(folder).__name__}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder} (a folder written by equipoise.nlp training)")
    path = folder / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {folder} is not a saved equipoise.nlp model (training writes {METADATA_FILE} "
            "beside config.json, the weights and the tokenizer)"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(info, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(info).__name__}")
    if info.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path}: format is {info.get('format')!r}, expected {MODEL_FORMAT!r} (a file of another program "
            "or of another version of equipoise)"
        )
    task, dataset = info.get("task"), info.get("dataset")
    tasks = sorted(set(DATASET_TASKS.values()))
    if task not in tasks:
        raise ValueError(f"{path}: task must be one of {tasks}, got {task!r}")
    if dataset not in DATASET_TASKS:
        raise ValueError(f"{path}: dataset must be one of {sorted(DATASET_TASKS)}, got {dataset!r}")
    if DATASET_TASKS[dataset] != task:
        raise ValueError(f"{path}: dataset {dataset!r} is for task {DATASET_TASKS[dataset]!r}, not {task!r}")
    max_length = info.get("max_length")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"{path}: max_length must be a positive int, got {max_length!r}")
    info.setdefault("label_all_subtokens", False)
    if not isinstance(info["label_all_subtokens"], bool):
        raise ValueError(f"{path}: label_all_subtokens must be true or false, got {info['label_all_subtokens']!r}")
    return info


def load_saved_model(
    folder: str | os.PathLike, device: str | torch.device = "auto", fp16: bool = False
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """``(model, tokenizer, info)`` of a saved-model folder: the model in eval mode on ``device``.

    ``info`` is :func:`read_model_info`'s. The model is ``AutoModelForTokenClassification``
    (task ``tagging``) or ``AutoModelForSequenceClassification`` (``classification``) loaded with
    ``from_pretrained(folder, use_safetensors=True, dtype=torch.float32)``; the tokenizer is
    ``equipoise.nlp.data.load_tokenizer(folder)`` (RoBERTa's prefix space set). ``device="auto"``
    is CUDA when present; ``fp16=True`` casts the model to float16 and needs a CUDA device.

    ``ValueError`` (naming the file) when ``config.json``'s architecture is not a model for the task
    (a sequence classifier under ``task: tagging``, say), when the weights lack some of the model's
    parameters (they would be left random), when a tagger's ``id2label`` lacks a CoNLL-2003 tag or
    an IMDB classifier has other than two labels; ``FileNotFoundError`` when ``config.json`` or the
    safetensors weights are missing (a pickled ``pytorch_model.bin`` is not read).
    """
    info = read_model_info(folder)
    folder = Path(folder)
    resolved = resolve_device(device)
    if not isinstance(fp16, bool):
        raise TypeError(f"fp16 must be a bool, got {type(fp16).__name__}")
    if fp16 and resolved.type != "cuda":
        raise ValueError(f"fp16=True needs a CUDA device, got device {str(resolved)!r}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: the saved model has no Hugging Face config")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
        raise FileNotFoundError(
            f"no safetensors weights (model.safetensors) in {folder}: evaluation reads weights only from safetensors "
            "files, never from pickled ones (pytorch_model.bin)"
        )
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    task = info["task"]
    info_path = folder / METADATA_FILE
    config = AutoConfig.from_pretrained(folder)
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(name.endswith(_HEADS[task]) for name in architectures):
        raise ValueError(
            f"{info_path}: task {task!r} needs a *{_HEADS[task]} model, but {config_path} holds {architectures}"
        )
    labels = [str(config.id2label[index]) for index in sorted(config.id2label)]
    if task == "tagging":
        missing = [tag for tag in CONLL2003_LABELS if tag not in labels]
        if missing:
            raise ValueError(f"{config_path}: id2label {labels} lacks the CoNLL-2003 tag(s) {missing}")
    elif len(labels) != len(IMDB_CLASS_NAMES):
        raise ValueError(
            f"{config_path}: an IMDB classifier has {len(IMDB_CLASS_NAMES)} labels (negative, positive), got "
            f"{len(labels)}: {labels}"
        )
    model_class = AutoModelForTokenClassification if task == "tagging" else AutoModelForSequenceClassification
    model, loading = model_class.from_pretrained(
        folder, config=config, use_safetensors=True, dtype=torch.float32, output_loading_info=True
    )
    missing_weights = sorted(loading.get("missing_keys") or [])
    if missing_weights:
        raise ValueError(
            f"{info_path}: the weights in {folder} lack {len(missing_weights)} parameter(s) of "
            f"{type(model).__name__} ({', '.join(missing_weights[:4])}{', ...' if len(missing_weights) > 4 else ''}): "
            f"they are not a {task} model of this architecture"
        )
    tokenizer = load_tokenizer(folder)
    model = model.to(resolved).eval()
    if fp16:
        model = model.half()
    return model, tokenizer, info


# --------------------------------------------------------------------------------------------
# Running the model
# --------------------------------------------------------------------------------------------


def first_subtoken_predictions(
    token_predictions: Sequence[int] | np.ndarray, word_ids: Sequence[int | None], num_words: int, missing: int
) -> np.ndarray:
    """Per word, the prediction at its first sub-token; ``missing`` for a word without any.

    ``token_predictions[t]`` is the tag id predicted at sub-token ``t`` and ``word_ids[t]`` the word
    it belongs to (a fast tokenizer's ``word_ids()``; ``None`` at special and padding tokens). Words
    with no sub-token (cut off by ``max_length``, or dropped by the tokenizer's normalizer) take
    ``missing``. Returns an int64 array of ``num_words``. Example: predictions ``[8, 3, 4, 0, 5]``
    at words ``[None, 0, 0, 1, None]`` of 3 words give ``[3, 0, missing]``.
    """
    predictions = np.asarray(token_predictions)
    if predictions.ndim != 1 or len(predictions) != len(word_ids):
        raise ValueError(
            f"token_predictions of shape {predictions.shape} do not match {len(word_ids)} word_ids (one per sub-token)"
        )
    words = np.full(num_words, missing, dtype=np.int64)
    seen = np.zeros(num_words, dtype=bool)
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        if not 0 <= word < num_words:
            raise ValueError(f"word_ids[{position}] = {word} is outside [0, {num_words})")
        if not seen[word]:
            words[word] = predictions[position]
            seen[word] = True
    return words


@torch.inference_mode()
def _run_model(
    model: torch.nn.Module,
    records: Sequence[Mapping[str, Sequence[int]]],
    pad_token_id: int,
    batch_size: int,
    progress: bool,
    description: str,
) -> list[np.ndarray]:
    """The float32 logits of each record, in order: ``(T, C)`` per sentence (tagging) or ``(C,)`` (classification).

    Records are batched by length (longest first, so the largest batch comes first and padding is
    small) and right-padded with ``pad_token_id`` under an attention mask of 0.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(records)), key=lambda index: -len(records[index]["input_ids"]))
    outputs: list[np.ndarray] = [np.empty(0)] * len(records)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=description, unit="batch", disable=not progress, leave=False):
        batch = order[start : start + batch_size]
        lengths = [len(records[index]["input_ids"]) for index in batch]
        input_ids = torch.full((len(batch), max(lengths)), pad_token_id, dtype=torch.int64)
        attention_mask = torch.zeros_like(input_ids)
        for row, (index, length) in enumerate(zip(batch, lengths)):
            input_ids[row, :length] = torch.as_tensor(records[index]["input_ids"], dtype=torch.int64)
            attention_mask[row, :length] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        logits = logits.float().cpu().numpy()
        for row, (index, length) in enumerate(zip(batch, lengths)):
            outputs[index] = logits[row, :length] if logits.ndim == 3 else logits[row]
    return outputs


def _pad_token_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)  # padded positions are masked: any id will do


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate_nlp(
    folder: str | os.PathLike,
    split: str = "test",
    output: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    max_examples: int | None = None,
    progress: bool = True,
    fp16: bool = False,
) -> dict[str, Any]:
    """Evaluate the saved model in ``folder`` on ``split`` of its data set; write the report (module docstring).

    Args:
        folder: a saved-model folder (:func:`load_saved_model`).
        split: ``"train"``, ``"valid"`` (or ``"validation"``) or ``"test"`` for CoNLL-2003,
            ``"train"`` or ``"test"`` for IMDB; another raises ``ValueError`` before the model loads.
        output: report folder; default ``<folder>/../eval-<split>``.
        data_root: folder holding ``conll2003/`` or ``imdb/``; default ``$EQUIPOISE_DATA``
            (``equipoise.nlp.data``). Tagging also reads the training split, for the entity
            frequencies of the plot.
        batch_size: sentences or reviews per forward pass.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        max_examples: evaluate only this many sentences/reviews (module docstring: which ones).
        progress: show a tqdm bar.
        fp16: run the model in float16 (CUDA only); off by default, logits are float32.

    Returns:
        The metrics, as written to ``metrics.json``. Both tasks: ``task``, ``dataset``, ``split``,
        ``labels``, ``confusion_matrix`` (``[true][predicted]`` counts in ``labels`` order),
        ``evaluation`` (folder, examples, device...), ``training`` (the ``equipoise_nlp.json``)
        and ``files`` (names in ``output``). Tagging adds ``precision``, ``recall``, ``f1``,
        ``macro_precision``, ``macro_recall``, ``macro_f1``, ``accuracy`` and ``per_entity``
        (``equipoise.nlp.metrics.tagging_metrics``) and ``train_entity_counts``; classification
        adds ``accuracy``, ``balanced_accuracy``, ``mean_class_error``, ``macro_f1``,
        ``worst_class_accuracy``, ``g_mean``, ``ece``, ``per_class``
        (``equipoise.nlp.metrics.classification_metrics``) and ``reliability`` (the bins).
    """
    info = read_model_info(folder)
    dataset = info["dataset"]
    if not isinstance(split, str) or split not in _SPLITS[dataset]:
        raise ValueError(f"split must be one of {sorted(_SPLITS[dataset])} for dataset {dataset!r}, got {split!r}")
    split = _SPLITS[dataset][split]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ValueError(f"max_examples must be a positive int or None, got {max_examples!r}")
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a path (str or os.PathLike) or None, got {type(output).__name__}")
    model, tokenizer, info = load_saved_model(folder, device, fp16)
    folder = Path(folder).absolute()
    output = folder.parent / f"eval-{split}" if output is None else Path(output)
    run = {
        "model_folder": str(folder),
        "architecture": type(model).__name__,
        "device": str(next(model.parameters()).device),
        "fp16": fp16,
        "batch_size": batch_size,
        "max_examples": max_examples,
        "output": str(output),
    }
    about = f"{_DATASET_TITLES[dataset]} {split}"
    if info["task"] == "tagging":
        result = _evaluate_tagging(model, tokenizer, info, split, data_root, max_examples, run, progress, about)
    else:
        result = _evaluate_classification(model, tokenizer, info, split, data_root, max_examples, run, progress, about)
    result["training"] = info
    output.mkdir(parents=True, exist_ok=True)
    files = result.pop("_files")
    result["files"] = {role: name for role, (name, _) in files.items()}
    result["files"].update(metrics="metrics.json", report="report.md")
    result = _json_safe(result)
    for name, write in files.values():
        write(output / name)
    (output / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (output / "report.md").write_text(_report(result), encoding="utf-8")
    return result


def _evaluate_tagging(
    model: torch.nn.Module,
    tokenizer: Any,
    info: dict[str, Any],
    split: str,
    data_root: str | os.PathLike | None,
    max_examples: int | None,
    run: dict[str, Any],
    progress: bool,
    about: str,
) -> dict[str, Any]:
    split_sentences = load_conll2003(split, root=data_root)
    available = len(split_sentences)
    sentences = split_sentences
    if max_examples is not None:
        sentences = sentences[:max_examples]
    id2label = {int(index): str(label) for index, label in model.config.id2label.items()}
    labels = [id2label[index] for index in range(len(id2label))]
    label2id = {label: index for index, label in enumerate(labels)}
    max_length = info["max_length"]
    records = encode_tagged(
        sentences, tokenizer, label2id, max_length=max_length, label_all_subtokens=info["label_all_subtokens"]
    )
    # encode_tagged's records carry the ids; the word of each sub-token comes from the same call's word_ids().
    encodings = tokenizer(
        [sentence.tokens for sentence in sentences], is_split_into_words=True, truncation=True, max_length=max_length
    )
    logits = _run_model(model, records, _pad_token_id(tokenizer), run["batch_size"], progress, f"tagging {about}")
    outside = label2id["O"]
    gold, predicted = [], []
    words_without_prediction = sentences_cut = 0
    for number, sentence in enumerate(sentences):
        word_ids = encodings.word_ids(number)
        words = first_subtoken_predictions(logits[number].argmax(axis=-1), word_ids, len(sentence), outside)
        unseen = len(sentence) - len({word for word in word_ids if word is not None})
        words_without_prediction += unseen
        sentences_cut += unseen > 0
        gold.append(np.asarray([label2id[tag] for tag in sentence.tags], dtype=np.int64))
        predicted.append(words)
    metrics = tagging_metrics(predicted, gold, id2label)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    if gold:
        np.add.at(matrix, (np.concatenate(gold), np.concatenate(predicted)), 1)
    train_sentences = split_sentences if split == "train" else load_conll2003("train", root=data_root)
    if info.get("max_train_examples") is not None:  # the run trained on a subset: count what it saw
        from equipoise.nlp.train import _random_subset

        rows = _random_subset(len(train_sentences), info["max_train_examples"], info.get("seed", 0))
        train_sentences = [train_sentences[row] for row in rows]
    tag_counts = label_counts(train_sentences, labels).tolist()
    train_entity_counts = {
        label[2:]: count for label, count in zip(labels, tag_counts) if label.startswith("B-")
    }  # IOB2: one B- tag per entity
    evaluation = {
        **run,
        "examples": len(sentences),
        "examples_in_split": available,
        "words": int(sum(len(sentence) for sentence in sentences)),
        "words_without_prediction": words_without_prediction,
        "sentences_cut_by_max_length": sentences_cut,
    }
    title = f"{Path(run['model_folder']).name} on {about}"

    def write_predictions(path: Path) -> None:
        lines = []
        for sentence, words in zip(sentences, predicted):
            lines += [f"{token} {tag} {labels[p]}" for token, tag, p in zip(sentence.tokens, sentence.tags, words)]
            lines.append("")
        path.write_text("\n".join(lines), encoding="utf-8")

    files = {
        "per_entity_plot": (
            "per_entity_f1.png",
            lambda path: _plot_per_entity(metrics["per_entity"], train_entity_counts, path, f"Per-entity F1\n{title}"),
        ),
        "confusion_matrix_plot": (
            "confusion_matrix.png",
            lambda path: plot_confusion_matrix(
                matrix,
                path,
                # Two lines per tag: nine horizontal "B-MISC"-wide labels run into each other.
                [label.replace("-", "-\n", 1) for label in labels],
                title=f"Word-level confusion (rows: true tag, normalised)\n{title}",
            ),
        ),
        "predictions": ("predictions.conll", write_predictions),
    }
    return {
        "task": "tagging",
        "dataset": info["dataset"],
        "split": split,
        **metrics,
        "labels": labels,
        "confusion_matrix": matrix.tolist(),
        "train_entity_counts": train_entity_counts,
        "evaluation": evaluation,
        "_files": files,
    }


def _balanced_subset(labels: np.ndarray, max_examples: int) -> np.ndarray:
    """The first ``k_c`` positions of each class ``c``, ``k_c`` its largest-remainder share of ``max_examples``."""
    classes, counts = np.unique(labels, return_counts=True)
    if max_examples >= len(labels):
        return np.arange(len(labels))
    quota = counts * max_examples / len(labels)
    keep = np.floor(quota).astype(np.int64)
    for position in sorted(range(len(classes)), key=lambda c: (-(quota[c] - keep[c]), c))[: max_examples - keep.sum()]:
        keep[position] += 1
    chosen = [np.flatnonzero(labels == label)[:kept] for label, kept in zip(classes, keep)]
    return np.sort(np.concatenate(chosen))


def _evaluate_classification(
    model: torch.nn.Module,
    tokenizer: Any,
    info: dict[str, Any],
    split: str,
    data_root: str | os.PathLike | None,
    max_examples: int | None,
    run: dict[str, Any],
    progress: bool,
    about: str,
) -> dict[str, Any]:
    frame = load_imdb(root=data_root)[split]
    labels_all = frame["label"].to_numpy()
    rows = np.arange(len(frame)) if max_examples is None else _balanced_subset(labels_all, max_examples)
    labels = labels_all[rows]
    texts = frame["text"].to_numpy()[rows].tolist()
    max_length = info["max_length"]
    records = encode_texts(texts, labels.tolist(), tokenizer, max_length=max_length)
    logits = np.stack(
        _run_model(model, records, _pad_token_id(tokenizer), run["batch_size"], progress, f"classifying {about}")
    )
    names = list(IMDB_CLASS_NAMES)
    metrics = classification_metrics(logits, labels, num_classes=len(names), class_names=names)
    probabilities = torch.softmax(torch.from_numpy(logits).double(), dim=1)
    target = torch.from_numpy(labels).to(torch.int64)
    reliability = reliability_bins(probabilities, target)
    predicted = probabilities.argmax(dim=1).numpy()
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    evaluation = {
        **run,
        "examples": len(rows),
        "examples_in_split": len(frame),
        "examples_per_class": {name: int((labels == index).sum()) for index, name in enumerate(names)},
        "examples_at_max_length": sum(len(record["input_ids"]) >= max_length for record in records),
    }
    title = f"{Path(run['model_folder']).name} on {about}"

    def write_predictions(path: Path) -> None:
        header = ",".join(["row", "label", "prediction", *(f"p_{name}" for name in names)])
        lines = [header]
        for row, label, prediction, probs in zip(rows, labels, predicted, probabilities.numpy()):
            lines.append(",".join([str(row), str(label), str(prediction), *(f"{p:.6g}" for p in probs)]))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    files = {
        "reliability_plot": (
            "reliability.png",
            lambda path: plot_reliability(reliability, path, title=f"Reliability\n{title}"),
        ),
        "confusion_matrix_plot": (
            "confusion_matrix.png",
            lambda path: plot_confusion_matrix(
                matrix, path, names, title=f"Confusion (rows: true class, normalised)\n{title}"
            ),
        ),
        "predictions": ("predictions.csv", write_predictions),
    }
    return {
        "task": "classification",
        "dataset": info["dataset"],
        "split": split,
        **metrics,
        "labels": names,
        "confusion_matrix": matrix.tolist(),
        "reliability": reliability,
        "evaluation": evaluation,
        "_files": files,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def metrics_table(result: Mapping[str, Any]) -> str:
    """The headline tables of an :func:`evaluate_nlp` result as markdown (percentages).

    Tagging: one row per entity type (precision, recall, F1, test and training entities), then
    the micro and macro averages, then token accuracy. Classification: the layout of Table 1 of
    Cao et al. 2019 (error on positive reviews, on negative reviews, their mean), then accuracy,
    balanced accuracy, macro F1, worst-class accuracy, G-mean and ECE.
    """
    if result.get("task") == "tagging":
        train = result.get("train_entity_counts", {})
        per_entity = result["per_entity"]
        entities = sorted(set(per_entity) | set(train), key=lambda name: (-train.get(name, 0), name))
        rows = []
        for name in entities:
            row = per_entity.get(name)
            rows.append(
                {
                    "entity": name,
                    "precision": _percent(row["precision"]) if row else "–",
                    "recall": _percent(row["recall"]) if row else "–",
                    "F1": _percent(row["f1"]) if row else "–",
                    "test entities": row["support"] if row else 0,
                    "training entities": train.get(name, "–"),
                }
            )
        support = sum(row["support"] for row in per_entity.values())
        for average, prefix in (("micro avg", ""), ("macro avg", "macro_")):
            rows.append(
                {
                    "entity": f"**{average}**",
                    "precision": _percent(result[f"{prefix}precision"]),
                    "recall": _percent(result[f"{prefix}recall"]),
                    "F1": _percent(result[f"{prefix}f1"]),
                    "test entities": support,
                    "training entities": sum(train.values()) if train else "–",
                }
            )
        accuracy = _percent(result["accuracy"])
        return markdown_table(rows) + f"\nToken accuracy (every word's tag, O included): {accuracy}\n"
    if result.get("task") == "classification":
        per_class = result["per_class"]
        errors = {name: per_class.get(name, {}).get("error") for name in IMDB_CLASS_NAMES}
        ldam = markdown_table(
            [
                {
                    "error on positive reviews": _percent(errors["positive"]),
                    "error on negative reviews": _percent(errors["negative"]),
                    "mean error": _percent(result["mean_class_error"]),
                }
            ]
        )
        overall = markdown_table(
            [
                {
                    "accuracy": _percent(result["accuracy"]),
                    "balanced accuracy": _percent(result["balanced_accuracy"]),
                    "macro F1": _percent(result["macro_f1"]),
                    "worst-class accuracy": _percent(result["worst_class_accuracy"]),
                    "G-mean": _percent(result["g_mean"]),
                    "ECE": _percent(result.get("ece")),
                }
            ]
        )
        return ldam + "\n" + overall
    raise ValueError(f"result must be evaluate_nlp's output, with task 'tagging' or 'classification'; got {result!r}")


def _report(result: dict[str, Any]) -> str:
    evaluation, training = result["evaluation"], result["training"]
    dataset = _DATASET_TITLES[result["dataset"]]
    folder = Path(evaluation["model_folder"])
    tagging = result["task"] == "tagging"
    unit = "sentences" if tagging else "reviews"
    if evaluation["max_examples"] is None or evaluation["examples"] == evaluation["examples_in_split"]:
        which = f"all {evaluation['examples']} {unit}"
    elif tagging:
        which = f"the first {evaluation['examples']} of its {evaluation['examples_in_split']} {unit}"
    else:
        shares = ", ".join(f"{count} {name}" for name, count in evaluation["examples_per_class"].items())
        which = (
            f"{evaluation['examples']} of its {evaluation['examples_in_split']} {unit}, the first of each class "
            f"({shares})"
        )
    lines = [
        f"# Evaluation of `{folder.name}` on {dataset} ({result['split']})",
        "",
        f"- Model folder: `{folder}` ({evaluation['architecture']})",
        f"- Evaluated: the {result['split']} split of {dataset}, {which}"
        + (f", {evaluation['words']} words" if tagging else ""),
        f"- Device: {evaluation['device']}"
        + (" (float16)" if evaluation["fp16"] else " (float32)")
        + f", batch size {evaluation['batch_size']}",
    ]
    if tagging:
        lines.append(
            f"- Words without a prediction: {evaluation['words_without_prediction']} (in "
            f"{evaluation['sentences_cut_by_max_length']} sentences longer than max_length = {training['max_length']} "
            "sub-tokens, or dropped by the tokenizer); they are predicted O, so their entities count as missed."
        )
    else:
        lines.append(
            f"- Reviews reaching max_length = {training['max_length']} tokens (longer ones are cut to their start): "
            f"{evaluation['examples_at_max_length']}"
        )
    lines += ["", f"## Training (`{METADATA_FILE}`)", ""]
    lines += [f"- {key}: `{json.dumps(value)}`" for key, value in training.items()]
    lines.append("")
    if tagging:
        lines += [
            "## Entity-level scores (%)",
            "",
            "seqeval, conlleval convention: an entity counts when its type and whole span match. Each word is "
            "scored at its first sub-token. Training entities: the B- tags of the training split.",
            "",
            metrics_table(result),
        ]
    else:
        lines += [
            "## Errors and metrics (%)",
            "",
            "Error per class = 1 - recall of the class; mean error = 1 - balanced accuracy (the layout of Table 1 of "
            "Cao et al. 2019, LDAM). ECE: 15 equal-width confidence bins.",
            "",
            metrics_table(result),
            "### Per class",
            "",
            markdown_table(
                [
                    {
                        "class": name,
                        "reviews": row["support"],
                        "error": _percent(row["error"]),
                        "recall": _percent(row["recall"]),
                        "precision": _percent(row["precision"]),
                        "F1": _percent(row["f1"]),
                    }
                    for name, row in result["per_class"].items()
                ]
            ),
        ]
    captions = {
        "per_entity_plot": "Test F1 per entity type against its entities in the training split",
        "confusion_matrix_plot": "Confusion matrix, rows normalised",
        "reliability_plot": "Reliability diagram",
    }
    lines += ["## Plots", ""]
    for role, caption in captions.items():
        if role in result["files"]:
            lines += [f"![{caption}]({result['files'][role]})", ""]
    predictions = result["files"]["predictions"]
    what = (
        "`token gold predicted` per line, a blank line between sentences; conlleval or seqeval can re-score it"
        if tagging
        else "row of the split, label, prediction and class probabilities"
    )
    lines += [f"Files: `metrics.json` (every number above), `{predictions}` ({what}).", ""]
    return "\n".join(lines)


def _plot_per_entity(
    per_entity: Mapping[str, Mapping[str, float]], train_counts: Mapping[str, int], path: Path, title: str
) -> Path:
    """Bars of test F1 per entity type, most frequent in training first, with the training counts beside them.

    ``equipoise.core.metrics.plot_per_class`` draws per-class *accuracy* of many classes against
    a log axis of training counts; four entity types read better as labelled bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(set(per_entity) | set(train_counts), key=lambda name: (-train_counts.get(name, 0), name))
    positions = np.arange(len(names))
    f1 = [per_entity[name]["f1"] if name in per_entity else math.nan for name in names]
    counts = [train_counts.get(name, 0) for name in names]
    figure, axis = plt.subplots(figsize=(max(5.5, 1.2 * len(names) + 2.5), 4.8), dpi=120)
    bars = axis.bar(positions, np.nan_to_num(f1), width=0.6, color="tab:blue", alpha=0.85, label="test F1")
    for x, value in zip(positions, f1):
        text = "absent" if math.isnan(value) else f"{value:.3f}"
        axis.text(x, (0 if math.isnan(value) else value) + 0.015, text, ha="center", va="bottom", fontsize=8)
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("entity-level F1 on the evaluated split")
    ticks = [
        f"{name}\n{count:,} train\n{per_entity[name]['support'] if name in per_entity else 0:,} eval"
        for name, count in zip(names, counts)
    ]
    axis.set_xticks(positions, ticks)
    twin = axis.twinx()
    (line,) = twin.plot(positions, counts, "o--", color="tab:orange", label="entities in the training split")
    twin.set_ylim(0, max(max(counts, default=0), 1) * 1.15)
    twin.set_ylabel("entities in the training split")
    axis.legend(handles=[bars, line], loc="upper right", fontsize="small")
    axis.set_title(title)
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _json_safe(value: Any) -> Any:
    """NaN and infinities to ``None``, NumPy scalars to Python numbers, tuples to lists (strict JSON), recursively."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value
