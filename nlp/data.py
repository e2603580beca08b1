"""Imbalanced NLP data: CoNLL-2003 named-entity tags aligned to sub-words, and IMDB reviews made imbalanced.

>>> import transformers
>>> from equipoise.nlp.data import CONLL2003_LABELS, TaggedDataset, encode_tagged, load_conll2003, load_tokenizer
>>> train = load_conll2003("train")                       # shared copy under $EQUIPOISE_DATA, else the hub
>>> tokenizer = load_tokenizer("FacebookAI/roberta-base")  # byte-level BPE: add_prefix_space=True is set
>>> label2id = {tag: index for index, tag in enumerate(CONLL2003_LABELS)}
>>> dataset = TaggedDataset(encode_tagged(train, tokenizer, label2id, max_length=128))
>>> collate = transformers.DataCollatorForTokenClassification(tokenizer)  # pads labels with -100

CoNLL-2003 (Tjong Kim Sang and De Meulder, "Introduction to the CoNLL-2003 Shared Task:
Language-Independent Named Entity Recognition", CoNLL 2003): English Reuters news, one token per
line with four space-separated columns ``token POS chunk NER``, a blank line between sentences and,
in the original distribution, ``-DOCSTART- -X- -X- O`` lines between documents (skipped here). The
NER column uses the IOB2 scheme (Tjong Kim Sang and Veenstra, "Representing Text Chunks", EACL 1999):
``B-<type>`` opens an entity, ``I-<type>`` continues it, ``O`` is outside any entity, for the types
PER, ORG, LOC and MISC. (The 2003 files themselves use IOB1, where ``I-`` may open an entity; both
have the same tag strings, which is all :func:`read_conll` checks: ``O``, ``B-X`` or ``I-X``.) The
splits hold 14,041 / 3,250 / 3,453 sentences. The data are imbalanced at the token level: ``O`` is
169,578 of the 203,621 training tokens (83.3%), the rarest tag ``I-MISC`` 1,155 (0.57%), a ratio of
about 147:1; :func:`label_counts` gives these counts for any set of sentences.

Sub-word alignment (:func:`encode_tagged`): a transformer sees sub-words, the tags belong to words.
Following Devlin, Chang, Lee, Toutanova, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", NAACL 2019, Section 5.3, the first sub-token of each word carries the word's
tag id and every other position (further sub-tokens, ``[CLS]``/``<s>``, ``[SEP]``/``</s>``) carries
-100, the ``ignore_index`` of ``torch.nn.CrossEntropyLoss`` and of the Hugging Face token-classification
heads. With ``label_all_subtokens=True`` the further sub-tokens carry the word's tag instead, with
``B-X`` turned into ``I-X`` (so a word never opens two entities). The word of each sub-token comes from
the fast tokenizer's ``word_ids()``; slow (pure Python) tokenizers have none and are refused. A word
that its tokenizer turns into no sub-token at all (BERT's normalizer drops some control and zero-width
characters) carries no label.

RoBERTa, GPT-2, BART and Longformer share GPT-2's byte-level BPE, which marks a word start by the
space before it (``Ġ``). For pre-split words the tokenizer must add that space to every word
(``add_prefix_space=True``), or each word is encoded as if it were glued to the previous one, silently:
:func:`encode_tagged` reads the tokenizer's own serialized pre-tokenizer (not the Python attribute,
which can disagree with it) and refuses a byte-level one without the prefix space;
:func:`load_tokenizer` sets ``add_prefix_space=True`` whenever it loads such a tokenizer.

Padding is left to ``transformers.DataCollatorForTokenClassification`` (tagging: pads ``labels`` with
-100) and ``transformers.DataCollatorWithPadding`` (texts: pads ``input_ids``/``attention_mask`` and
stacks ``labels`` and ``sample_weight``), so every record here is unpadded.

IMDB (Maas, Daly, Pham, Huang, Ng, Potts, "Learning Word Vectors for Sentiment Analysis", ACL 2011):
50,000 labelled movie reviews, 25,000 train and 25,000 test, each split 12,500 negative (rating <= 4
of 10) and 12,500 positive (rating >= 7). The shared copy ``imdb/aclImdb_v1_labeled.csv.xz`` has the
columns ``split,label,rating,id,review`` where ``label`` is 0 for a negative and 1 for a positive
review (the ``neg``/``pos`` folders of the original archive; the same 0/1 as ``stanfordnlp/imdb`` on
the hub) and ``id`` numbers the reviews within each split and label (it is not unique across labels).
:func:`imbalance_imdb` applies the protocol of Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced
Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019, Section 4: 90% of the negative
training reviews are removed, every positive one is kept, the test split stays balanced.
:func:`encode_texts` can attach a per-review ``sample_weight``, as in the first-placed system of
DepSign-LT-EDI@RANLP-2023 (Garcia, Gomes, Barbosa Junior, Borges, da Silva,
"DeepLearningBrasil@LT-EDI-2023: Exploring Deep Learning Techniques for Detecting Depression in Social
Media Text", 2023), which weighted each example's loss against the class imbalance.

Where the data come from: ``root`` or, when it is ``None``, the environment variable
``EQUIPOISE_DATA`` (never a hard-coded path); ``source="auto"`` reads that copy and falls back on the
Hugging Face hub (``eriktks/conll2003``, ``stanfordnlp/imdb``, through the ``datasets`` library, imported
only then) when it is absent, ``"local"`` never goes to the hub, ``"hub"`` always does. Offline
(``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` set), ``"auto"`` does not try the hub: a missing copy
raises ``FileNotFoundError`` saying where the files go and that the hub needs a connection.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from equipoise.core.paths import data_root

__all__ = [
    "CONLL2003_HUB_ID",
    "CONLL2003_LABELS",
    "IGNORE_INDEX",
    "IMDB_HUB_ID",
    "Sentence",
    "TaggedDataset",
    "encode_tagged",
    "encode_texts",
    "imbalance_imdb",
    "label_counts",
    "load_conll2003",
    "load_imdb",
    "load_tokenizer",
    "read_conll",
]

# The nine IOB2 tags in the order of the ``ner_tags`` ClassLabel of Hugging Face's conll2003 dataset.
CONLL2003_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CONLL2003_HUB_ID = "eriktks/conll2003"
IMDB_HUB_ID = "stanfordnlp/imdb"
# The label of positions a loss ignores: torch.nn.CrossEntropyLoss's default ignore_index.
IGNORE_INDEX = -100

_CONLL_SPLITS = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}
_CONLL_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_IMDB_FOLDER = "imdb"
_IMDB_NAMES = ("aclImdb_v1_labeled.csv.xz", "aclImdb_v1_labeled.csv")
_IMDB_SPLITS = ("train", "test")
_SOURCES = ("auto", "local", "hub")
_TAG = re.compile(r"O|[BI]-\S+")
_FIELD_SEPARATOR = re.compile(r"[ \t]+")
_TRUE = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub reads as true in HF_HUB_OFFLINE


# --------------------------------------------------------------------------------------------
# CoNLL-2003
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sentence:
    """One tagged sentence: ``tokens[i]`` carries ``tags[i]``.

    Both are converted to lists of strings on construction; a non-string item or lists of different
    lengths raise ``TypeError`` / ``ValueError``.
    """

    tokens: list[str]
    tags: list[str]

    def __post_init__(self) -> None:
        for name in ("tokens", "tags"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise TypeError(f"Sentence.{name} must be a list of strings, got {type(value).__name__}")
            items = list(value)
            for index, item in enumerate(items):
                if not isinstance(item, str):
                    raise TypeError(f"Sentence.{name}[{index}] must be a string, got {type(item).__name__}")
            object.__setattr__(self, name, items)
        if len(self.tokens) != len(self.tags):
            raise ValueError(f"Sentence has {len(self.tokens)} tokens but {len(self.tags)} tags")

    def __len__(self) -> int:
        return len(self.tokens)


def read_conll(path: str | os.PathLike, tag_column: int = -1) -> list[Sentence]:
    """The sentences of a CoNLL file: whitespace-separated columns, token first, blank lines between sentences.

    ``tag_column`` picks the tag column (default the last one, the NER tags of CoNLL-2003's ``token POS
    chunk NER``; 2 would give the chunk tags). Runs of blank lines count as one boundary, the last
    sentence needs no blank line after it, and ``-DOCSTART-`` lines (document boundaries of the original
    distribution) end the sentence before them and are skipped. An empty file gives ``[]``.

    Every data line must have the column count of the first one (at least two: token and tag), must not
    start with whitespace (an empty token) and must carry an IOB/IOB2 tag (``O``, ``B-X`` or ``I-X``);
    a line that does not raises ``ValueError`` naming ``path:line``. A missing file raises
    ``FileNotFoundError``. The file is read as UTF-8.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path (str or os.PathLike), got {type(path).__name__}")
    if isinstance(tag_column, bool) or not isinstance(tag_column, int):
        raise TypeError(f"tag_column must be an int, got {type(tag_column).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoNLL file not found: {path}")
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    num_columns = tag_index = first_line = None
    with path.open(encoding="utf-8") as lines:
        for line_number, raw in enumerate(lines, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip(" \t"):
                if tokens:
                    sentences.append(Sentence(tokens, tags))
                    tokens, tags = [], []
                continue
            if line[0] in " \t":
                raise ValueError(f"{path}:{line_number}: empty token (the line starts with whitespace): {line!r}")
            fields = _FIELD_SEPARATOR.split(line.rstrip(" \t"))
            if fields[0] == "-DOCSTART-":
                if tokens:
                    sentences.append(Sentence(tokens, tags))
                    tokens, tags = [], []
                continue
            if num_columns is None:
                num_columns, first_line = len(fields), line_number
                if num_columns < 2:
                    raise ValueError(f"{path}:{line_number}: a CoNLL line needs a token and a tag, got {line!r}")
                if not -num_columns <= tag_column < num_columns or tag_column % num_columns == 0:
                    raise ValueError(
                        f"tag_column={tag_column} does not name a tag column of {path}, whose lines have "
                        f"{num_columns} columns (line {line_number}); column 0 is the token"
                    )
                tag_index = tag_column % num_columns
            elif len(fields) != num_columns:
                raise ValueError(
                    f"{path}:{line_number}: expected {num_columns} columns (as on line {first_line}), "
                    f"got {len(fields)}: {line!r}"
                )
            tag = fields[tag_index]
            if _TAG.fullmatch(tag) is None:
                raise ValueError(
                    f"{path}:{line_number}: tag {tag!r} (column {tag_index}) is not an IOB tag: 'O', 'B-<type>' or "
                    "'I-<type>'"
                )
            tokens.append(fields[0])
            tags.append(tag)
    if tokens:
        sentences.append(Sentence(tokens, tags))
    return sentences


def load_conll2003(split: str = "train", root: str | os.PathLike | None = None, source: str = "auto") -> list[Sentence]:
    """The CoNLL-2003 English NER sentences of ``split`` (``"train"``, ``"valid"``/``"validation"``, ``"test"``).

    Reads ``<root>/conll2003/<split>.txt`` (``root`` defaults to ``$EQUIPOISE_DATA``) with
    :func:`read_conll`: 14,041 / 3,250 / 3,453 sentences. When that file is absent, ``source="auto"``
    (online) or ``"hub"`` loads :data:`CONLL2003_HUB_ID` with ``datasets.load_dataset`` and turns its
    integer ``ner_tags`` into tag strings with the dataset's own ClassLabel names (those of
    :data:`CONLL2003_LABELS` when it has none); ``"hub"`` goes to the hub even when the file exists.
    A missing file with ``source="local"``, or offline with ``"auto"``, raises ``FileNotFoundError``
    saying where the files go and that the hub needs a connection.
    """
    if split not in _CONLL_SPLITS:
        raise ValueError(f"split must be one of {sorted(_CONLL_SPLITS)}, got {split!r}")
    _check_source(source)
    split = _CONLL_SPLITS[split]
    base = _data_root_or_none(root, "conll2003/")
    path = None if base is None else base / "conll2003" / f"{split}.txt"
    if source != "hub" and path is not None and path.is_file():
        return read_conll(path)
    if source == "hub" or (source == "auto" and not _offline()):
        try:
            return _conll2003_from_hub(split)
        except ConnectionError as error:
            if source == "hub":
                raise
            raise FileNotFoundError(_conll_missing(path, split, "the hub could not be reached")) from error
    reason = "source='local'" if source == "local" else "offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)"
    raise FileNotFoundError(_conll_missing(path, split, reason))


def _conll_missing(path: Path | None, split: str, reason: str) -> str:
    where = f"expected {path}" if path is not None else "no data root (root=None and EQUIPOISE_DATA unset)"
    return (
        f"CoNLL-2003 split {split!r} not found: {where}; the hub was not used: {reason}. Either put the files "
        "there: the CoNLL-2003 English NER data (Tjong Kim Sang and De Meulder 2003; Reuters RCV1, research use "
        "only) as train.txt, valid.txt and test.txt, one 'token POS chunk NER' line per token, IOB2 tags, blank "
        "lines between sentences (the files in the conll2003.zip of the Hugging Face conll2003 dataset), in "
        "<root>/conll2003/ (pass root= or set EQUIPOISE_DATA); or go online with source='auto' or 'hub', which "
        f"loads {CONLL2003_HUB_ID!r} with datasets.load_dataset (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    )


def _conll2003_from_hub(split: str) -> list[Sentence]:
    import datasets

    hub_split = _CONLL_HUB_SPLITS[split]
    try:
        dataset = datasets.load_dataset(CONLL2003_HUB_ID, split=hub_split)
    except RuntimeError as error:
        # datasets >= 4 no longer runs loading scripts; the hub keeps an automatic Parquet export of
        # script-based repositories under this revision.
        if "scripts are no longer supported" not in str(error):
            raise
        dataset = datasets.load_dataset(CONLL2003_HUB_ID, split=hub_split, revision="refs/convert/parquet")
    names = _class_names(dataset.features.get("ner_tags")) or list(CONLL2003_LABELS)
    sentences = []
    for index, (tokens, tags) in enumerate(zip(dataset["tokens"], dataset["ner_tags"], strict=True)):
        strings = []
        for tag in tags:
            if isinstance(tag, str):
                strings.append(tag)
            elif not 0 <= tag < len(names):
                raise ValueError(
                    f"{CONLL2003_HUB_ID} {hub_split} sentence {index}: tag id {tag} is not in [0, {len(names)})"
                )
            else:
                strings.append(names[tag])
        sentences.append(Sentence(list(tokens), strings))
    return sentences


def label_counts(sentences: Iterable[Sentence], labels: Sequence[str]) -> torch.Tensor:
    """How many tokens of ``sentences`` carry each of ``labels``: an int64 tensor of shape ``(len(labels),)``.

    The class counts of token tagging, for the core losses and samplers that take ``class_counts``; on
    CoNLL-2003 ``O`` dominates (83% of the training tokens). A tag outside ``labels`` raises
    ``ValueError`` naming it and the sentence's index.
    """
    index = _label_index(labels, "labels")
    counts = [0] * len(index)
    for number, sentence in enumerate(_check_sentences(sentences)):
        for tag in sentence.tags:
            position = index.get(tag)
            if position is None:
                raise ValueError(f"unknown tag {tag!r} in sentence {number}: not one of labels {list(index)}")
            counts[position] += 1
    return torch.tensor(counts, dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# Sub-word alignment
# --------------------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
    """``transformers.AutoTokenizer.from_pretrained(name_or_path, **kwargs)``, ready for pre-split words.

    When the tokenizer turns out to be a byte-level BPE one without the prefix space (RoBERTa, GPT-2,
    BART, Longformer and others built on GPT-2's BPE) and the caller did not pass ``add_prefix_space``,
    it is loaded again with ``add_prefix_space=True``, which :func:`encode_tagged` requires. Deciding
    from the tokenizer itself rather than from the model type also covers a folder holding only
    tokenizer files. An explicit ``add_prefix_space`` is passed through untouched.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or os.PathLike, got {type(name_or_path).__name__}")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if "add_prefix_space" not in kwargs and _byte_level_without_prefix_space(tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs, add_prefix_space=True)
    return tokenizer


def encode_tagged(
    sentences: Iterable[Sentence],
    tokenizer: Any,
    label2id: Mapping[str, int],
    max_length: int = 128,
    label_all_subtokens: bool = False,
) -> list[dict[str, list[int]]]:
    """Tokenise tagged sentences into sub-words and align the tags: one unpadded record per sentence.

    Each record holds ``input_ids``, ``attention_mask`` and ``labels``, lists of ints of equal length
    (at most ``max_length``). ``labels`` holds ``label2id[tag]`` at the first sub-token of each word
    and ``IGNORE_INDEX`` (-100) at the special tokens and at every further sub-token, or, with
    ``label_all_subtokens=True``, the word's tag id there too with ``B-X`` replaced by ``I-X`` (which
    ``label2id`` must then hold). Words are tokenised with ``is_split_into_words=True, truncation=True``;
    words cut off by truncation lose their labels, the rest keep them. Pad batches with
    ``transformers.DataCollatorForTokenClassification(tokenizer)``.

    ``tokenizer`` must be a fast (Rust-backed) Hugging Face tokenizer, whose ``word_ids()`` map
    sub-tokens to words, and a byte-level BPE one must add the prefix space (see :func:`load_tokenizer`);
    otherwise ``ValueError``. A tag missing from ``label2id`` raises ``ValueError`` naming it and the
    sentence's index, before anything is tokenised.
    """
    sentences = _check_sentences(sentences)
    label2id = _check_label2id(label2id)
    if not isinstance(label_all_subtokens, bool):
        raise TypeError(f"label_all_subtokens must be a bool, got {type(label_all_subtokens).__name__}")
    _check_tagging_tokenizer(tokenizer)
    _check_max_length(max_length, tokenizer)
    tag_ids = []
    for number, sentence in enumerate(sentences):
        ids = []
        for tag in sentence.tags:
            if tag not in label2id:
                raise ValueError(f"unknown tag {tag!r} in sentence {number}: not a key of label2id {sorted(label2id)}")
            ids.append(label2id[tag])
        tag_ids.append(ids)
    continuation = {}
    if label_all_subtokens:
        for tag, tag_id in label2id.items():
            if tag.startswith("B-"):
                inside = "I-" + tag[2:]
                if inside not in label2id:
                    raise ValueError(f"label_all_subtokens=True needs {inside!r} in label2id to continue {tag!r}")
                continuation[tag_id] = label2id[inside]
    if not sentences:
        return []
    encodings = tokenizer(
        [sentence.tokens for sentence in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        return_attention_mask=True,
    )
    records = []
    for number, ids in enumerate(tag_ids):
        labels, previous = [], None
        for word in encodings.word_ids(number):
            if word is None:
                labels.append(IGNORE_INDEX)
            elif word != previous:
                labels.append(ids[word])
            elif label_all_subtokens:
                labels.append(continuation.get(ids[word], ids[word]))
            else:
                labels.append(IGNORE_INDEX)
            previous = word
        records.append(
            {
                "input_ids": list(encodings["input_ids"][number]),
                "attention_mask": list(encodings["attention_mask"][number]),
                "labels": labels,
            }
        )
    return records


class TaggedDataset(Dataset):
    """A map-style ``torch.utils.data.Dataset`` over the records of :func:`encode_tagged`.

    Checks once that every record has ``input_ids``, ``attention_mask`` and ``labels`` of one length
    (``ValueError`` naming the record otherwise); ``dataset[i]`` is a shallow copy of record ``i``.
    Batch it with ``transformers.DataCollatorForTokenClassification(tokenizer)``, which pads
    ``input_ids`` with the pad token, ``attention_mask`` with 0 and ``labels`` with -100.
    """

    def __init__(self, records: Sequence[Mapping[str, Sequence[int]]]) -> None:
        if isinstance(records, (str, Mapping)) or not isinstance(records, Sequence):
            raise TypeError(
                f"records must be a sequence of dicts (encode_tagged's output), got {type(records).__name__}"
            )
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise TypeError(f"records[{index}] must be a dict, got {type(record).__name__}")
            missing = [key for key in ("input_ids", "attention_mask", "labels") if key not in record]
            if missing:
                raise ValueError(f"records[{index}] lacks {missing}")
            lengths = {key: len(record[key]) for key in ("input_ids", "attention_mask", "labels")}
            if len(set(lengths.values())) != 1:
                raise ValueError(f"records[{index}] has lists of different lengths: {lengths}")
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Sequence[int]]:
        return dict(self.records[index])


def _byte_level_without_prefix_space(tokenizer: Any) -> bool:
    """Whether the tokenizer's Rust pre-tokenizer holds a ``ByteLevel`` step that adds no prefix space.

    Reads the serialized pipeline (``backend_tokenizer.to_str()``) because the Python attribute
    ``add_prefix_space`` can disagree with what the backend does (a tokenizer built with
    ``tokenizer_object=`` keeps the object's pre-tokenizer whatever the attribute says).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    pre_tokenizer = json.loads(backend.to_str()).get("pre_tokenizer")
    pending = [pre_tokenizer]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel" and not node.get("add_prefix_space", False):
                return True
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


def _check_tagging_tokenizer(tokenizer: Any) -> None:
    if getattr(tokenizer, "is_fast", False) is not True:
        raise ValueError(
            f"tokenizer must be a fast (Rust-backed) Hugging Face tokenizer, whose word_ids() align sub-words "
            f"with words; got {type(tokenizer).__name__} (is_fast={getattr(tokenizer, 'is_fast', None)})"
        )
    if _byte_level_without_prefix_space(tokenizer):
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} is a byte-level BPE tokenizer (RoBERTa/GPT-2 style) that adds no "
            "prefix space, so pre-split words would be encoded as if glued together: load it with "
            "add_prefix_space=True (AutoTokenizer.from_pretrained(name, add_prefix_space=True), or "
            "equipoise.nlp.data.load_tokenizer(name), which does so)"
        )


# --------------------------------------------------------------------------------------------
# IMDB
# --------------------------------------------------------------------------------------------


def load_imdb(root: str | os.PathLike | None = None, source: str = "auto") -> dict[str, pd.DataFrame]:
    """The IMDB reviews as ``{"train": frame, "test": frame}``, 25,000 rows each, in the file's order.

    Each frame has the columns ``text`` (the review as published, ``<br />`` markup included) and
    ``label`` (int64: 1 positive, 0 negative; 12,500 of each per split) and a fresh ``RangeIndex``.
    Reads ``<root>/imdb/aclImdb_v1_labeled.csv.xz`` (or the uncompressed ``.csv``; ``root`` defaults
    to ``$EQUIPOISE_DATA``), whose ``label`` column already holds 1 for positive and 0 for negative
    reviews. When it is absent, ``source="auto"`` (online) or ``"hub"`` loads :data:`IMDB_HUB_ID`
    with ``datasets.load_dataset`` (ClassLabel ``neg``=0, ``pos``=1: the same encoding); ``"hub"``
    goes to the hub even when the file exists. A missing file with ``source="local"``, or offline
    with ``"auto"``, raises ``FileNotFoundError``; a malformed file raises ``ValueError`` naming it.
    """
    _check_source(source)
    base = _data_root_or_none(root, "imdb/")
    path = None
    if base is not None:
        candidates = [base / _IMDB_FOLDER / name for name in _IMDB_NAMES]
        path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
    if source != "hub" and path is not None and path.is_file():
        return _read_imdb_csv(path)
    if source == "hub" or (source == "auto" and not _offline()):
        try:
            return _imdb_from_hub()
        except ConnectionError as error:
            if source == "hub":
                raise
            raise FileNotFoundError(_imdb_missing(path, "the hub could not be reached")) from error
    reason = "source='local'" if source == "local" else "offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)"
    raise FileNotFoundError(_imdb_missing(path, reason))


def _imdb_missing(path: Path | None, reason: str) -> str:
    where = f"expected {path}" if path is not None else "no data root (root=None and EQUIPOISE_DATA unset)"
    return (
        f"IMDB reviews not found: {where}; the hub was not used: {reason}. Either put the file there: the Large "
        "Movie Review Dataset v1.0 (Maas et al. 2011, aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/"
        "sentiment/) as one CSV with the columns split,label,rating,id,review, one row per review file "
        "<split>/{neg,pos}/<id>_<rating>.txt, label 1 for pos and 0 for neg, saved as "
        "<root>/imdb/aclImdb_v1_labeled.csv.xz (or .csv; pass root= or set EQUIPOISE_DATA); or go online with "
        f"source='auto' or 'hub', which loads {IMDB_HUB_ID!r} with datasets.load_dataset (unset HF_HUB_OFFLINE / "
        "HF_DATASETS_OFFLINE)"
    )


def _read_imdb_csv(path: Path) -> dict[str, pd.DataFrame]:
    frame = pd.read_csv(path)
    missing = [column for column in ("split", "label", "review") if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected split,label,rating,id,review")
    if frame["review"].isna().any():
        row = int(np.flatnonzero(frame["review"].isna().to_numpy())[0])
        raise ValueError(f"{path}: column 'review' is empty in data row {row}")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{path}: column 'label' must hold 0 or 1, got {frame['label'].iloc[row]} in data row {row}")
    splits = set(frame["split"].unique())
    if splits != set(_IMDB_SPLITS):
        raise ValueError(
            f"{path}: column 'split' must hold exactly {list(_IMDB_SPLITS)}, got {sorted(map(str, splits))}"
        )
    result = {}
    for split in _IMDB_SPLITS:
        rows = (frame["split"] == split).to_numpy()
        result[split] = pd.DataFrame(
            {"text": frame["review"].to_numpy()[rows], "label": labels.to_numpy()[rows].astype(np.int64)}
        )
    return result


def _imdb_from_hub() -> dict[str, pd.DataFrame]:
    import datasets

    result = {}
    for split in _IMDB_SPLITS:
        dataset = datasets.load_dataset(IMDB_HUB_ID, split=split)
        names = _class_names(dataset.features.get("label"))
        if names is not None and list(names) != ["neg", "pos"]:
            raise ValueError(f"{IMDB_HUB_ID} label names are {names}, expected ['neg', 'pos']")
        result[split] = pd.DataFrame(
            {"text": list(dataset["text"]), "label": np.asarray(list(dataset["label"]), dtype=np.int64)}
        )
    return result


def imbalance_imdb(train: pd.DataFrame, negative_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Keep every positive review of ``train`` and a random ``negative_fraction`` of the negative ones.

    The imbalanced IMDB of Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
    Margin Loss", NeurIPS 2019, Section 4: 90% of the negative training reviews removed
    (``negative_fraction=0.1``: 12,500 positives and 1,250 negatives, a 10:1 imbalance); apply it to the
    training frame only, the test split stays balanced. The number of negatives kept is
    ``floor(negative_fraction * negatives + 0.5)`` (halves round up, unlike Python's ``round``), and
    must be at least one. Which ones is drawn without replacement by ``numpy.random.default_rng(seed)``:
    the same seed keeps the same rows. The result is a copy of the kept rows in their original order,
    with their original index labels.
    """
    if not isinstance(train, pd.DataFrame):
        raise TypeError(f"train must be a pandas DataFrame (load_imdb()['train']), got {type(train).__name__}")
    if "label" not in train.columns:
        raise ValueError(f"train must have a 'label' column, got columns {list(train.columns)}")
    if isinstance(negative_fraction, bool) or not isinstance(negative_fraction, (int, float, np.floating, np.integer)):
        raise TypeError(f"negative_fraction must be a number, got {type(negative_fraction).__name__}")
    if not 0 < negative_fraction <= 1:
        raise ValueError(f"negative_fraction must be in (0, 1], got {negative_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    labels = train["label"].to_numpy()
    bad = ~np.isin(labels, [0, 1])
    if bad.any():
        raise ValueError(f"train['label'] must hold 0 or 1, got {labels[bad][0]}")
    negatives = np.flatnonzero(labels == 0)
    keep = math.floor(float(negative_fraction) * len(negatives) + 0.5)
    if keep < 1:
        raise ValueError(
            f"negative_fraction={negative_fraction} of {len(negatives)} negative reviews keeps none; it must keep at "
            "least one"
        )
    kept = np.random.default_rng(int(seed)).choice(negatives, size=keep, replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(labels == 1), kept]))
    return train.iloc[rows].copy()


def encode_texts(
    texts: Iterable[str],
    labels: Iterable[int],
    tokenizer: Any,
    max_length: int = 256,
    sample_weights: Iterable[float] | None = None,
) -> list[dict[str, Any]]:
    """Tokenise labelled texts: one unpadded record per text, for sequence classification.

    Each record holds ``input_ids`` and ``attention_mask`` (lists of ints, at most ``max_length``: the
    first tokens are kept, ``truncation=True``), ``labels`` (the int class) and, when ``sample_weights``
    is given, ``sample_weight`` (a float: the weight of the example's loss term, as in the DepSign-LT-EDI
    2023 winning system). ``texts`` must be strings, ``labels`` non-negative ints, the weights finite and
    ``>= 0``, all of one length. Pad batches with ``transformers.DataCollatorWithPadding(tokenizer)``,
    which stacks ``labels`` into an int64 and ``sample_weight`` into a float32 tensor.
    """
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a string, got {type(text).__name__}")
    labels = list(labels)
    if len(labels) != len(texts):
        raise ValueError(f"labels has {len(labels)} items for {len(texts)} texts")
    class_ids = []
    for index, label in enumerate(labels):
        if isinstance(label, (bool, np.bool_)):
            raise TypeError(f"labels[{index}] must be an int, got bool")
        try:
            class_id = operator.index(label)
        except TypeError:
            raise TypeError(f"labels[{index}] must be an int, got {type(label).__name__}") from None
        if class_id < 0:
            raise ValueError(f"labels[{index}] must be >= 0, got {class_id}")
        class_ids.append(class_id)
    weights = None
    if sample_weights is not None:
        weights = np.asarray(list(sample_weights))
        if weights.dtype.kind not in "iuf":
            raise TypeError(f"sample_weights must be numbers, got dtype {weights.dtype}")
        if len(weights) != len(texts):
            raise ValueError(f"sample_weights has {len(weights)} items for {len(texts)} texts")
        weights = weights.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
        if bad.size:
            raise ValueError(f"sample_weights must be finite and >= 0, got {weights[bad[0]]} at index {bad[0]}")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    _check_max_length(max_length, tokenizer)
    if not texts:
        return []
    encodings = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=True)
    records = []
    for index, class_id in enumerate(class_ids):
        record = {
            "input_ids": list(encodings["input_ids"][index]),
            "attention_mask": list(encodings["attention_mask"][index]),
            "labels": class_id,
        }
        if weights is not None:
            record["sample_weight"] = float(weights[index])
        records.append(record)
    return records


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------


def _check_source(source: str) -> None:
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {list(_SOURCES)}, got {source!r}")


def _offline() -> bool:
    return any(os.environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _data_root_or_none(root: str | os.PathLike | None, holds: str) -> Path | None:
    """The data root, or ``None`` when neither ``root`` nor ``EQUIPOISE_DATA`` names one (the hub may still serve)."""
    if root is None and not os.environ.get("EQUIPOISE_DATA"):
        return None
    return data_root(root, holds=holds)


def _class_names(feature: Any) -> list[str] | None:
    """The names of a ``datasets.ClassLabel`` feature, or of the ClassLabel inside a list feature; else None."""
    inner = getattr(feature, "feature", feature)
    names = getattr(inner, "names", None)
    return list(names) if names else None


def _check_sentences(sentences: Iterable[Sentence]) -> list[Sentence]:
    if isinstance(sentences, (str, Sentence)) or not isinstance(sentences, Iterable):
        raise TypeError(f"sentences must be an iterable of Sentence, got {type(sentences).__name__}")
    sentences = list(sentences)
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, Sentence):
            raise TypeError(f"sentences[{index}] must be a Sentence, got {type(sentence).__name__}")
    return sentences


def _label_index(labels: Sequence[str], name: str) -> dict[str, int]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"{name} must be a sequence of tag strings, got {type(labels).__name__}")
    if not labels:
        raise ValueError(f"{name} must not be empty")
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(label).__name__}")
    if len(set(labels)) != len(labels):
        duplicates = sorted({label for label in labels if list(labels).count(label) > 1})
        raise ValueError(f"{name} must be distinct, got duplicates {duplicates}")
    return {label: position for position, label in enumerate(labels)}


def _check_label2id(label2id: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(label2id, Mapping):
        raise TypeError(f"label2id must be a mapping from tag to id, got {type(label2id).__name__}")
    if not label2id:
        raise ValueError("label2id must not be empty")
    checked = {}
    for tag, tag_id in label2id.items():
        if not isinstance(tag, str):
            raise TypeError(f"label2id keys must be tag strings, got {tag!r}")
        if isinstance(tag_id, (bool, np.bool_)) or not isinstance(tag_id, (int, np.integer)):
            raise TypeError(f"label2id[{tag!r}] must be an int, got {type(tag_id).__name__}")
        if tag_id < 0:
            raise ValueError(f"label2id[{tag!r}] must be >= 0, got {tag_id}")
        checked[tag] = int(tag_id)
    return checked


def _check_max_length(max_length: int, tokenizer: Any) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
    special = tokenizer.num_special_tokens_to_add(pair=False) if hasattr(tokenizer, "num_special_tokens_to_add") else 0
    if max_length <= special:
        raise ValueError(
            f"max_length must exceed the {special} special token(s) the tokenizer adds, to leave room for text; "
            f"got {max_length}"
        )
