"""Tabular data against independent oracles: the published counts of the real LendingClub and ULB
files (README of the shared data), the files re-read here with the standard library's csv module,
splits and scaler statistics recomputed with NumPy, and tiny CSV files written by the tests.

The real files come from ``EQUIPOISE_DATA`` (or ``../shared/data``); those tests skip without
them. The real fraud file is parsed once for the module, into a fresh temporary cache.
"""

import csv
import dataclasses
import io
import lzma
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

import equipoise.tabular.data as data_module
from equipoise.tabular.data import (
    DATASETS,
    FRAUD_FEATURES,
    LOAN_NUMERIC_FEATURES,
    TabularData,
    TabularSplit,
    cache_dir,
    load_dataset,
    load_fraud,
    load_loan,
    prepare,
)

SHARED = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
LOAN_FILE = SHARED / "loan_default" / "loan_data.csv"
FRAUD_FILE = SHARED / "creditcard" / "creditcard.csv.xz"
SKIP_REASON = "needs the shared real data: set EQUIPOISE_DATA to the shared data folder (CI sets it)"
needs_loan = pytest.mark.skipif(not LOAN_FILE.is_file(), reason=SKIP_REASON)
needs_fraud = pytest.mark.skipif(not (FRAUD_FILE.is_file() or FRAUD_FILE.with_suffix("").is_file()), reason=SKIP_REASON)

# Published facts (README of the shared data; Dal Pozzolo et al. 2015 for the fraud data).
LOAN_ROWS, LOAN_POSITIVES = 9578, 1533
FRAUD_ROWS, FRAUD_POSITIVES = 284807, 492
LOAN_PURPOSES = (
    "all_other", "credit_card", "debt_consolidation", "educational", "home_improvement", "major_purchase",
    "small_business",
)  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _module_cache(tmp_path_factory):
    """A fresh cache for the module, never the user's ~/.cache: the real files are parsed here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EQUIPOISE_CACHE", str(tmp_path_factory.mktemp("equipoise_cache")))
        yield


@pytest.fixture(scope="module")
def loan():
    if not LOAN_FILE.is_file():
        pytest.skip(SKIP_REASON)
    return load_loan(SHARED)


@pytest.fixture(scope="module")
def loan_rows():
    """loan_data.csv read with the csv module: the oracle for the pandas parser."""
    if not LOAN_FILE.is_file():
        pytest.skip(SKIP_REASON)
    with open(LOAN_FILE, newline="") as file:
        return list(csv.DictReader(file))


class _Spy:
    """Counts calls of a parser while still calling it."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture(scope="module")
def fraud_loads():
    """The real fraud file loaded twice: parsed the first time, from the cache the second."""
    if not (FRAUD_FILE.is_file() or FRAUD_FILE.with_suffix("").is_file()):
        pytest.skip(SKIP_REASON)
    with pytest.MonkeyPatch.context() as patch:
        spy = _Spy(data_module._parse_fraud)
        patch.setattr(data_module, "_parse_fraud", spy)
        start = time.perf_counter()
        first = load_dataset("fraud", SHARED)
        parse_seconds = time.perf_counter() - start
        calls_after_first = spy.calls
        start = time.perf_counter()
        second = load_dataset("fraud", SHARED)
        cached_seconds = time.perf_counter() - start
        return first, second, calls_after_first, spy.calls, parse_seconds, cached_seconds


# ---------------------------------------------------------------------------------------------
# Loan default, real data
# ---------------------------------------------------------------------------------------------


@needs_loan
def test_loan_counts_and_columns(loan):
    assert isinstance(loan, TabularData) and loan.name == "loan"
    assert loan.X.shape == (LOAN_ROWS, len(LOAN_NUMERIC_FEATURES) + len(LOAN_PURPOSES))
    assert loan.X.dtype == np.float32 and loan.y.dtype == np.int64
    assert int(loan.y.sum()) == LOAN_POSITIVES and set(np.unique(loan.y)) == {0, 1}
    assert loan.feature_names == [*LOAN_NUMERIC_FEATURES, *(f"purpose={p}" for p in LOAN_PURPOSES)]
    assert loan.scale_columns == list(range(len(LOAN_NUMERIC_FEATURES)))


@needs_loan
def test_loan_values_match_the_file(loan, loan_rows):
    assert len(loan_rows) == LOAN_ROWS
    numeric = np.array([[float(row[c]) for c in LOAN_NUMERIC_FEATURES] for row in loan_rows], dtype=np.float32)
    np.testing.assert_array_equal(loan.X[:, : len(LOAN_NUMERIC_FEATURES)], numeric)
    np.testing.assert_array_equal(loan.y, [int(row["not.fully.paid"]) for row in loan_rows])
    one_hot = loan.X[:, len(LOAN_NUMERIC_FEATURES) :]
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.sum(axis=1), np.ones(LOAN_ROWS))
    expected = np.array([[row["purpose"] == p for p in LOAN_PURPOSES] for row in loan_rows], dtype=np.float32)
    np.testing.assert_array_equal(one_hot, expected)


@needs_loan
def test_loan_split_sizes_and_stratification(loan):
    split = prepare(loan, seed=0)
    n_test = math.ceil(0.2 * LOAN_ROWS)  # scikit-learn rounds the test part up
    assert (len(split.y_train), len(split.y_test)) == (LOAN_ROWS - n_test, n_test)
    assert split.X_val is None and split.y_val is None and split.val_index is None
    # Stratified: each part holds its share of the positives to within one row.
    for labels in (split.y_train, split.y_test):
        assert abs(int(labels.sum()) - len(labels) * LOAN_POSITIVES / LOAN_ROWS) <= 1
    assert int(split.y_train.sum()) + int(split.y_test.sum()) == LOAN_POSITIVES
    # The parts partition the rows, and their labels are the source rows' labels.
    np.testing.assert_array_equal(np.sort(np.concatenate([split.train_index, split.test_index])), np.arange(LOAN_ROWS))
    np.testing.assert_array_equal(split.y_train, loan.y[split.train_index])
    np.testing.assert_array_equal(split.y_test, loan.y[split.test_index])


@needs_loan
def test_loan_scaler_fitted_on_train_rows_only(loan):
    split = prepare(loan, seed=3)
    columns = loan.scale_columns
    raw_train = loan.X[split.train_index].astype(np.float64)
    raw_test = loan.X[split.test_index].astype(np.float64)
    mean, std = raw_train[:, columns].mean(axis=0), raw_train[:, columns].std(axis=0)
    np.testing.assert_allclose(split.scaler.mean_, mean, rtol=1e-10)
    np.testing.assert_allclose(split.scaler.scale_, std, rtol=1e-10)
    train = split.X_train[:, columns].astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-5)
    # The test rows are scaled with the training statistics, so their mean is not exactly 0.
    np.testing.assert_allclose(split.X_test[:, columns], (raw_test[:, columns] - mean) / std, rtol=1e-5, atol=1e-5)
    assert np.abs(split.X_test[:, columns].astype(np.float64).mean(axis=0)).max() > 1e-3
    # One-hot columns are left as they are.
    one_hot = [i for i in range(loan.X.shape[1]) if i not in columns]
    np.testing.assert_array_equal(split.X_train[:, one_hot], loan.X[split.train_index][:, one_hot])
    np.testing.assert_array_equal(split.X_test[:, one_hot], loan.X[split.test_index][:, one_hot])
    assert split.X_train.dtype == np.float32 and split.y_train.dtype == np.int64


@needs_loan
def test_loan_split_is_deterministic_by_seed(loan):
    first, again, other = prepare(loan, seed=7), prepare("loan", root=SHARED, seed=7), prepare(loan, seed=8)
    for a, b in ((first.X_train, again.X_train), (first.X_test, again.X_test), (first.y_test, again.y_test)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.sort(first.test_index), np.sort(other.test_index))
    assert not np.array_equal(first.scaler.mean_, other.scaler.mean_)
    # The source data is never modified by scaling.
    np.testing.assert_array_equal(loan.X, load_loan(SHARED).X)


@needs_loan
def test_loan_validation_split_is_carved_from_train(loan):
    without = prepare(loan, seed=1)
    split = prepare(loan, seed=1, val_size=0.25)
    np.testing.assert_array_equal(split.test_index, without.test_index)  # the test rows do not move
    one_hot = slice(len(LOAN_NUMERIC_FEATURES), None)
    np.testing.assert_array_equal(split.X_test[:, one_hot], without.X_test[:, one_hot])
    n_train_part = LOAN_ROWS - math.ceil(0.2 * LOAN_ROWS)
    n_val = math.ceil(0.25 * n_train_part)
    sizes = (len(split.y_train), len(split.y_val), len(split.y_test))
    assert sizes == (n_train_part - n_val, n_val, len(without.y_test))
    train, val, test = set(split.train_index), set(split.val_index), set(split.test_index)
    assert not (val & test) and not (val & train) and not (train & test)
    assert train | val == set(without.train_index)
    for labels in (split.y_train, split.y_val):
        assert abs(int(labels.sum()) - len(labels) * int(without.y_train.sum()) / n_train_part) <= 1
    # Scaler statistics come from the (smaller) training part only, not from the validation rows.
    raw_train = loan.X[split.train_index][:, loan.scale_columns].astype(np.float64)
    np.testing.assert_allclose(split.scaler.mean_, raw_train.mean(axis=0), rtol=1e-10)
    raw_val = loan.X[split.val_index][:, loan.scale_columns].astype(np.float64)
    expected_val = (raw_val - raw_train.mean(axis=0)) / raw_train.std(axis=0)
    np.testing.assert_allclose(split.X_val[:, loan.scale_columns], expected_val, rtol=1e-5, atol=1e-5)


@needs_loan
def test_describe_reports_each_split(loan):
    split = prepare(loan, seed=0, val_size=0.1)
    text = split.describe()
    assert isinstance(split, TabularSplit) and "loan" in text and "seed 0" in text
    for name, labels in (("train", split.y_train), ("val", split.y_val), ("test", split.y_test)):
        line = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert int(cells[1]) == len(labels) and int(cells[2]) == int(labels.sum())
        assert float(cells[3]) == pytest.approx(labels.mean(), rel=1e-3)
    assert "| val |" not in prepare(loan, seed=0).describe()


# ---------------------------------------------------------------------------------------------
# Credit-card fraud, real data
# ---------------------------------------------------------------------------------------------


@needs_fraud
def test_fraud_counts_and_columns(fraud_loads):
    fraud = fraud_loads[0]
    assert fraud.name == "fraud" and fraud.X.shape == (FRAUD_ROWS, 30)
    assert fraud.X.dtype == np.float32 and fraud.y.dtype == np.int64
    assert int(fraud.y.sum()) == FRAUD_POSITIVES
    assert fraud.feature_names == ["Time", *(f"V{i}" for i in range(1, 29)), "Amount"] == list(FRAUD_FEATURES)
    assert [fraud.feature_names[i] for i in fraud.scale_columns] == ["Time", "Amount"]


@needs_fraud
def test_fraud_first_rows_match_the_file(fraud_loads):
    fraud = fraud_loads[0]
    opener = lzma.open if FRAUD_FILE.is_file() else open
    with opener(FRAUD_FILE if FRAUD_FILE.is_file() else FRAUD_FILE.with_suffix(""), "rt") as file:
        head = [next(file) for _ in range(6)]
    rows = list(csv.DictReader(io.StringIO("".join(head))))
    expected = np.array([[float(row[c]) for c in FRAUD_FEATURES] for row in rows], dtype=np.float32)
    np.testing.assert_array_equal(fraud.X[:5], expected)
    np.testing.assert_array_equal(fraud.y[:5], [int(row["Class"]) for row in rows])


@needs_fraud
def test_fraud_second_load_comes_from_the_cache(fraud_loads):
    first, second, calls_after_first, calls, parse_seconds, cached_seconds = fraud_loads
    assert calls_after_first == 1 and calls == 1  # the second load did not parse the CSV
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.y, second.y)
    assert (first.feature_names, first.scale_columns) == (second.feature_names, second.scale_columns)
    assert cached_seconds < parse_seconds / 3, (parse_seconds, cached_seconds)
    cached = list((cache_dir() / "tabular").glob("fraud-*.npz"))
    assert len(cached) == 1 and not list(FRAUD_FILE.parent.glob("*.npz"))


@needs_fraud
def test_fraud_scales_only_time_and_amount(fraud_loads):
    fraud = fraud_loads[1]
    split = prepare(fraud, seed=0)
    n_test = math.ceil(0.2 * FRAUD_ROWS)
    assert (len(split.y_train), len(split.y_test)) == (FRAUD_ROWS - n_test, n_test)
    for labels in (split.y_train, split.y_test):
        assert abs(int(labels.sum()) - len(labels) * FRAUD_POSITIVES / FRAUD_ROWS) <= 1
    pca = [fraud.feature_names.index(f"V{i}") for i in range(1, 29)]
    np.testing.assert_array_equal(split.X_train[:, pca], fraud.X[split.train_index][:, pca])
    np.testing.assert_array_equal(split.X_test[:, pca], fraud.X[split.test_index][:, pca])
    scaled = split.X_train[:, fraud.scale_columns].astype(np.float64)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, atol=1e-5)
    raw = fraud.X[split.train_index][:, fraud.scale_columns].astype(np.float64)
    np.testing.assert_allclose(split.scaler.mean_, raw.mean(axis=0), rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# Tiny files written by the tests: cache invalidation, missing and malformed files
# ---------------------------------------------------------------------------------------------


def _write_fraud(root: Path, rows: int, seed: int, missing: str | None = None, nan_in: str | None = None) -> Path:
    """A tiny creditcard.csv with the real columns: Time, V1..V28, Amount, Class."""
    rng = np.random.default_rng(seed)
    columns = [c for c in (*FRAUD_FEATURES, "Class") if c != missing]
    values = rng.normal(size=(rows, len(columns))).round(6)
    labels = np.arange(rows) % 4 == 0
    lines = [",".join(f'"{c}"' for c in columns)]
    for row, label in zip(values, labels):
        cells = [f"{v!r}" for v in row.tolist()]
        if "Class" in columns:
            cells[columns.index("Class")] = f'"{int(label)}"'
        if nan_in is not None:
            cells[columns.index(nan_in)] = ""
        lines.append(",".join(cells))
    path = root / "creditcard" / "creditcard.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cache_hit_and_invalidation_when_the_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    spy = _Spy(data_module._parse_fraud)
    monkeypatch.setattr(data_module, "_parse_fraud", spy)
    path = _write_fraud(tmp_path / "data", rows=12, seed=0)
    expected = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(30), dtype=np.float32)
    first = load_fraud(tmp_path / "data")
    np.testing.assert_array_equal(first.X, expected)
    np.testing.assert_array_equal(first.y, np.arange(12) % 4 == 0)
    again = load_fraud(tmp_path / "data")
    assert spy.calls == 1
    np.testing.assert_array_equal(again.X, first.X)
    assert sorted(p.name for p in (tmp_path / "data" / "creditcard").iterdir()) == ["creditcard.csv"]

    # New content (other size, newer time): parsed again.
    path = _write_fraud(tmp_path / "data", rows=20, seed=1)
    changed = load_fraud(tmp_path / "data")
    assert spy.calls == 2 and changed.X.shape == (20, 30)
    expected = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(30), dtype=np.float32)
    np.testing.assert_array_equal(changed.X, expected)

    # Same size, other modification time: parsed again.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_fraud(tmp_path / "data")
    assert spy.calls == 3
    load_fraud(tmp_path / "data")
    assert spy.calls == 3
    assert len(list((tmp_path / "cache" / "data" / "tabular").glob("fraud-*.npz"))) == 1


def test_corrupt_cache_file_is_parsed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    _write_fraud(tmp_path / "data", rows=8, seed=2)
    first = load_fraud(tmp_path / "data")
    (cached,) = (tmp_path / "cache" / "data" / "tabular").glob("fraud-*.npz")
    cached.write_bytes(b"not an npz file")
    again = load_fraud(tmp_path / "data")
    np.testing.assert_array_equal(again.X, first.X)
    with np.load(cached) as stored:  # rewritten
        np.testing.assert_array_equal(stored["X"], first.X)


def test_xz_file_is_read_when_no_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    path = _write_fraud(tmp_path / "data", rows=8, seed=3)
    plain = load_fraud(tmp_path / "data")
    path.with_suffix(".csv.xz").write_bytes(lzma.compress(path.read_bytes()))
    path.unlink()
    packed = load_fraud(tmp_path / "data")
    np.testing.assert_array_equal(packed.X, plain.X)


def test_missing_files_say_where_the_data_comes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"loan_data\.csv[\s\S]*Kaggle"):
        load_dataset("loan", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"mlg-ulb/creditcardfraud[\s\S]*OpenML"):
        load_dataset("fraud", tmp_path)
    monkeypatch.delenv("EQUIPOISE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="EQUIPOISE_DATA"):
        load_dataset("loan")
    monkeypatch.setenv("EQUIPOISE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "loan_default" / "loan_data.csv")):
        load_dataset("loan")


def _write_loan(root: Path, header: list[str], rows: list[list[str]]) -> Path:
    path = root / "loan_default" / "loan_data.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n")
    return path


LOAN_HEADER = ["credit.policy", "purpose", *LOAN_NUMERIC_FEATURES[1:], "not.fully.paid"]
LOAN_ROW = ["1", "credit_card", "0.1", "100", "11", "10", "700", "3000", "1000", "50", "0", "0", "0", "0"]


def test_tiny_loan_file_is_one_hot_encoded(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    rows = [LOAN_ROW, [*LOAN_ROW[:1], "educational", *LOAN_ROW[2:-1], "1"], LOAN_ROW]
    _write_loan(tmp_path, LOAN_HEADER, rows)
    data = load_loan(tmp_path)
    assert data.feature_names[-2:] == ["purpose=credit_card", "purpose=educational"]
    np.testing.assert_array_equal(data.X[:, -2:], [[1, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(data.y, [0, 1, 0])
    np.testing.assert_array_equal(data.X[0, :12], np.array([1, 0.1, 100, 11, 10, 700, 3000, 1000, 50, 0, 0, 0], "f4"))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h, r: (h[:-1], [row[:-1] for row in r]), r"loan_data\.csv has no target column 'not\.fully\.paid'"),
        (lambda h, r: (h, [r[0], [*r[1][:6], "", *r[1][7:]]]), r"loan_data\.csv: column 'fico' has 1 missing"),
        (lambda h, r: (h, [r[0], [*r[1][:-1], "2"]]), r"loan_data\.csv: target column 'not\.fully\.paid' must hold 0"),
        (lambda h, r: (h, [r[0], [*r[1][:4], "high", *r[1][5:]]]), r"column 'log\.annual\.inc' must be numeric"),
        (lambda h, r: ([c for c in h if c != "purpose"], [r[0][:1] + r[0][2:]]), r"has no column 'purpose'"),
    ],
)
def test_malformed_loan_file(tmp_path, monkeypatch, change, message):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    header, rows = change(list(LOAN_HEADER), [list(LOAN_ROW), list(LOAN_ROW)])
    _write_loan(tmp_path, header, rows)
    with pytest.raises(ValueError, match=message):
        load_loan(tmp_path)


@pytest.mark.parametrize(
    "missing, nan_in, message",
    [
        ("Class", None, r"creditcard\.csv has no target column 'Class'"),
        ("V7", None, r"creditcard\.csv has no column 'V7'"),
        (None, "V3", r"creditcard\.csv: column 'V3' has 6 missing"),
        (None, "Amount", r"creditcard\.csv: column 'Amount' has 6 missing"),
    ],
)
def test_malformed_fraud_file(tmp_path, monkeypatch, missing, nan_in, message):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    _write_fraud(tmp_path, rows=6, seed=0, missing=missing, nan_in=nan_in)
    with pytest.raises(ValueError, match=message):
        load_fraud(tmp_path)


# ---------------------------------------------------------------------------------------------
# API: registry, TabularData checks, prepare's arguments
# ---------------------------------------------------------------------------------------------


def _toy(n: int = 40) -> TabularData:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(5.0, 2.0, n), rng.integers(0, 2, n)])
    return TabularData(X=X, y=np.arange(n) % 4 == 0, feature_names=["a", "flag"], scale_columns=[0], name="toy")


def test_registry_and_load_dataset(tmp_path):
    assert DATASETS.names() == ["fraud", "loan"]
    assert DATASETS.get("loan") is load_loan and DATASETS.get("fraud") is load_fraud
    with pytest.raises(ValueError, match="unknown tabular dataset 'adult'; known: fraud, loan"):
        load_dataset("adult", tmp_path)


def test_tabular_data_converts_and_checks():
    toy = _toy()
    assert toy.X.dtype == np.float32 and toy.y.dtype == np.int64 and len(toy) == 40
    good = {"X": np.zeros((3, 2)), "y": [0, 1, 0], "feature_names": ["a", "b"], "scale_columns": [0], "name": "t"}
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        TabularData(**{**good, "y": [0, 1]})
    with pytest.raises(ValueError, match=r"labels in \{0, 1\}, got 2 at index 1"):
        TabularData(**{**good, "y": [0, 2, 0]})
    with pytest.raises(TypeError, match="y must be an integer or bool array"):
        TabularData(**{**good, "y": [0.0, 1.0, 0.0]})
    with pytest.raises(ValueError, match="feature_names has 1 names for 2 columns"):
        TabularData(**{**good, "feature_names": ["a"]})
    with pytest.raises(ValueError, match="scale_columns must be distinct column indices"):
        TabularData(**{**good, "scale_columns": [2]})
    with pytest.raises(ValueError, match="non-finite value nan in column 'b'"):
        TabularData(**{**good, "X": np.array([[0, 0], [0, np.nan], [0, 0]])})
    with pytest.raises(ValueError, match=r"non-empty \(N, D\) array"):
        TabularData(**{**good, "X": np.zeros(3)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        toy.name = "other"


def test_prepare_on_own_data_without_scale_columns():
    toy = _toy()
    plain = TabularData(X=toy.X, y=toy.y, feature_names=toy.feature_names, scale_columns=[], name="plain")
    split = prepare(plain, seed=0, test_size=0.25)
    assert split.scaler is None
    np.testing.assert_array_equal(split.X_test, toy.X[split.test_index])
    scaled = prepare(toy, seed=0, test_size=0.25)
    np.testing.assert_array_equal(scaled.test_index, split.test_index)
    np.testing.assert_array_equal(scaled.X_test[:, 1], toy.X[split.test_index][:, 1])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*32\), got -1"),
        ({"seed": 1.5}, ValueError, "seed must be an integer"),
        ({"seed": True}, ValueError, "seed must be an integer"),
        ({"test_size": 0}, ValueError, r"test_size must be a fraction in \(0, 1\), got 0"),
        ({"test_size": 1.0}, ValueError, "test_size must be a fraction"),
        ({"test_size": "0.2"}, ValueError, "test_size must be a fraction"),
        ({"val_size": 1.0}, ValueError, r"val_size must be a fraction in \[0, 1\)"),
        ({"val_size": -0.1}, ValueError, "val_size must be a fraction"),
        ({"root": "/data"}, ValueError, "root is only used to load a data set by name"),
    ],
)
def test_prepare_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        prepare(_toy(), **kwargs)


def test_prepare_rejects_bad_data():
    with pytest.raises(TypeError, match="name_or_data must be a data set name or a TabularData"):
        prepare(np.zeros((4, 2)))


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("EQUIPOISE_CACHE", str(blocker))  # cache_dir() lies under a file: mkdir fails
    _write_fraud(tmp_path / "data", rows=8, seed=4)
    with pytest.warns(UserWarning, match="could not cache parsed data"):
        data = load_fraud(tmp_path / "data")
    assert data.X.shape == (8, 30)
