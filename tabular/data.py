"""Rare-event tabular data: LendingClub loan default and ULB credit-card fraud, loaded and split by seed.

>>> from equipoise.tabular.data import load_dataset, prepare
>>> data = load_dataset("fraud")                   # raw, unscaled; root from EQUIPOISE_DATA
>>> split = prepare("loan", seed=0, val_size=0.2)  # stratified 80/20, scaler fitted on train rows
>>> print(split.describe())

The two binary tasks of Bansal, Goldblum, Cherepanova, Schwarzschild, Bruss, Goldstein,
"MetaBalance: High-Performance Neural Networks for Class-Imbalanced Data", 2021 (arXiv
2106.09643), where the positive (minority) class is the one that matters:

| name | file under the data root | rows | positives | features |
|---|---|---|---|---|
| loan | ``loan_default/loan_data.csv`` | 9,578 | 1,533 (16.0%) | 12 numeric + 7 one-hot ``purpose`` = 19 |
| fraud | ``creditcard/creditcard.csv`` or ``creditcard.csv.xz`` | 284,807 | 492 (0.17%) | Time, V1..V28, Amount = 30 |

Preprocessing, after the MetaBalance paper:

- Loan default (LendingClub loans of 2007-2010 as distributed on Kaggle as ``loan_data.csv``):
  target ``not.fully.paid``; the categorical ``purpose`` becomes one 0/1 column per value
  (``purpose=<value>``, values sorted, appended after the numeric columns); the twelve numeric
  columns, in file order, are standardised. ``credit.policy`` is a 0/1 column but is stored as a
  number, so it is standardised with the others: only the one-hot columns are left as they are.
- Credit-card fraud (Dal Pozzolo, Caelen, Johnson, Bontempi, "Calibrating Probability with
  Undersampling for Unbalanced Classification", IEEE SSCI 2015; transactions of European
  cardholders over two days of September 2013, released by the ULB Machine Learning Group):
  target ``Class``; only ``Time`` and ``Amount`` are standardised, ``V1``..``V28`` are already
  principal components of the confidential original features and are left as they are.

:func:`load_dataset` returns the raw, unscaled :class:`TabularData`. :func:`prepare` splits it
with scikit-learn's ``train_test_split(stratify=y, random_state=seed)`` (``test_size`` 0.2: the
paper's 80/20 split), optionally carves a stratified validation split out of the training part
(for model selection that must never see the test split), and standardises ``scale_columns``
with a ``StandardScaler`` fitted on the training rows only (not validation, not test), so no
statistic of a held-out row leaks into training. The same seed gives the same split.

Where the data comes from: ``root`` or, when it is ``None``, the environment variable
``EQUIPOISE_DATA`` (never a hard-coded path). A missing file raises ``FileNotFoundError``
saying where the public file comes from and where to put it; a malformed one (a column missing,
a missing value, a non-binary target) raises ``ValueError`` naming the file and the column.

The parsed arrays are cached as ``.npz`` under ``$EQUIPOISE_CACHE/data/tabular`` (by default
``~/.cache/equipoise/data/tabular``), keyed by the source file's path, size and modification
time: reading the 151 MB fraud CSV takes seconds, the cache a fraction of one. Nothing is ever
written next to the data, which may be read-only.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from equipoise.core.paths import cache_dir, data_root
from equipoise.core.registry import Registry
from equipoise.core.reporting import markdown_table

__all__ = [
    "DATASETS",
    "FRAUD_FEATURES",
    "LOAN_NUMERIC_FEATURES",
    "TabularData",
    "TabularSplit",
    "load_dataset",
    "load_fraud",
    "load_loan",
    "prepare",
]

DATASETS: Registry[Callable[..., TabularData]] = Registry("tabular dataset")

# The numeric columns of loan_data.csv, in file order (the categorical "purpose" is the second column).
LOAN_NUMERIC_FEATURES = (
    "credit.policy", "int.rate", "installment", "log.annual.inc", "dti", "fico", "days.with.cr.line",
    "revol.bal", "revol.util", "inq.last.6mths", "delinq.2yrs", "pub.rec",
)  # fmt: skip
_LOAN_CATEGORICAL = "purpose"
_LOAN_TARGET = "not.fully.paid"
_LOAN_FILE = Path("loan_default") / "loan_data.csv"

# The features of creditcard.csv, in file order; Time and Amount are the ones standardised.
FRAUD_FEATURES = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount")
_FRAUD_SCALED = ("Time", "Amount")
_FRAUD_TARGET = "Class"
_FRAUD_FOLDER = "creditcard"
_FRAUD_NAMES = ("creditcard.csv", "creditcard.csv.xz")

# Bump when the parsing changes, so that caches written by an older parser are not read.
_CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TabularData:
    """A raw, unscaled binary data set.

    Attributes:
        X: ``(N, D)`` float32 features.
        y: ``(N,)`` int64 labels in {0, 1}; 1 is the rare (positive) class.
        feature_names: ``D`` column names.
        scale_columns: indices of the columns :func:`prepare` standardises.
        name: the data set's name (``"loan"``, ``"fraud"`` or the caller's own).

    Arrays are converted on construction (``X`` to float32, ``y`` to int64 from an integer or
    bool array); a wrong shape, a non-finite feature, a label outside {0, 1} or a column index
    out of range raises ``ValueError``.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    scale_columns: list[int]
    name: str

    def __post_init__(self) -> None:
        X = np.asarray(self.X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty (N, D) array, got shape {X.shape}")
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise TypeError(f"X must hold numbers, got dtype {X.dtype}")
        X = X.astype(np.float32, copy=False)
        y = np.asarray(self.y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
            raise TypeError(f"y must be an integer or bool array of labels in {{0, 1}}, got dtype {y.dtype}")
        y = y.astype(np.int64, copy=False)
        bad = np.flatnonzero((y != 0) & (y != 1))
        if bad.size:
            raise ValueError(f"y must hold labels in {{0, 1}}, got {y[bad[0]]} at index {bad[0]}")
        names = [str(name) for name in self.feature_names]
        if len(names) != X.shape[1]:
            raise ValueError(f"feature_names has {len(names)} names for {X.shape[1]} columns of X")
        columns = [int(column) for column in self.scale_columns]
        if any(not 0 <= column < X.shape[1] for column in columns) or len(set(columns)) != len(columns):
            raise ValueError(f"scale_columns must be distinct column indices in [0, {X.shape[1]}), got {columns}")
        finite = np.isfinite(X)
        if not finite.all():
            row, column = (int(i) for i in np.argwhere(~finite)[0])
            raise ValueError(f"X has a non-finite value {X[row, column]} in column {names[column]!r} (row {row})")
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {type(self.name).__name__}")
        for attribute, value in (("X", X), ("y", y), ("feature_names", names), ("scale_columns", columns)):
            object.__setattr__(self, attribute, value)

    def __len__(self) -> int:
        return int(self.X.shape[0])


@dataclass(eq=False)
class TabularSplit:
    """Train / (validation) / test splits of a :class:`TabularData`, scaled with training statistics.

    ``X_*`` are float32 ``(n, D)``, ``y_*`` int64 ``(n,)``; ``X_val`` and ``y_val`` are ``None``
    when no validation split was asked for. ``scaler`` is the ``StandardScaler`` fitted on
    ``X_train``'s raw ``scale_columns`` (``None`` when there are none); ``*_index`` are the rows of
    the source data each split holds, in split order.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    scaler: StandardScaler | None
    seed: int
    name: str
    scale_columns: list[int] = field(default_factory=list)
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    test_index: np.ndarray | None = None

    def describe(self) -> str:
        """A markdown summary: rows, positives and positive share of each split."""
        rows = []
        for split, labels in (("train", self.y_train), ("val", self.y_val), ("test", self.y_test)):
            if labels is None:
                continue
            positives = int(labels.sum())
            rows.append(
                {"split": split, "rows": len(labels), "positives": positives, "share": positives / max(len(labels), 1)}
            )
        header = f"**{self.name}** (seed {self.seed}): {len(self.feature_names)} features\n\n"
        return header + markdown_table(rows, ["split", "rows", "positives", "share"])


# --------------------------------------------------------------------------------------------
# Where the data is, and the cache
# --------------------------------------------------------------------------------------------


def _data_root(root: str | os.PathLike | None) -> Path:
    return data_root(root, holds="loan_default/ and creditcard/")


def _cached(source: Path, name: str, parse: Callable[[Path], TabularData]) -> TabularData:
    """``parse(source)``, or the arrays a previous call cached for this very file (path, size, mtime)."""
    resolved = source.resolve()
    stat = resolved.stat()
    key = {"source": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "version": _CACHE_VERSION}
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    path = cache_dir() / "tabular" / f"{name}-{digest}.npz"
    data = _read_cache(path, key, name)
    if data is not None:
        return data
    data = parse(resolved)
    _write_cache(path, key, data)
    return data


def _read_cache(path: Path, key: dict, name: str) -> TabularData | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if {k: stored[f"key_{k}"].item() for k in key} != key:
                return None
            return TabularData(
                X=stored["X"],
                y=stored["y"],
                feature_names=stored["feature_names"].tolist(),
                scale_columns=stored["scale_columns"].tolist(),
                name=name,
            )
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # an unreadable or foreign cache file is parsed again and overwritten


def _write_cache(path: Path, key: dict, data: TabularData) -> None:
    arrays = {f"key_{k}": np.asarray(v) for k, v in key.items()}
    arrays.update(
        X=data.X,
        y=data.y,
        feature_names=np.asarray(data.feature_names, dtype=str),
        scale_columns=np.asarray(data.scale_columns, dtype=np.int64),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary name and renamed, so a reader never sees half a file.
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz.partial", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, **arrays)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        warnings.warn(f"could not cache parsed data at {path} ({error}); it is parsed again next time", stacklevel=3)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _read_csv(path: Path, columns: Sequence[str], target: str, categorical: Sequence[str] = ()) -> pd.DataFrame:
    """Read ``path`` and check it: every column present, no missing value, numbers where numbers are due,
    a 0/1 target. Errors name the file and the column."""
    try:
        frame = pd.read_csv(path, compression="infer")
    except (ValueError, pd.errors.ParserError, EOFError, OSError, lzma.LZMAError) as error:
        raise ValueError(f"{path} could not be read as a CSV file: {error}") from error
    if frame.empty:
        raise ValueError(f"{path} holds no data rows")
    for column in (*columns, target):
        if column not in frame.columns:
            role = "target column" if column == target else "column"
            raise ValueError(f"{path} has no {role} {column!r}; its columns are {list(frame.columns)}")
    for column in (*columns, target):
        missing = frame[column].isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"{path}: column {column!r} has {int(missing.sum())} missing value(s), first in data row "
                f"{int(np.flatnonzero(missing)[0]) + 1}"
            )
        if column not in categorical and not pd.api.types.is_numeric_dtype(frame[column]):
            example = frame[column][pd.to_numeric(frame[column], errors="coerce").isna()].iloc[0]
            raise ValueError(f"{path}: column {column!r} must be numeric, found {example!r}")
    labels = frame[target].to_numpy()
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise ValueError(
            f"{path}: target column {target!r} must hold 0 or 1, found {labels[bad[0]]!r} in data row {bad[0] + 1}"
        )
    return frame


def _parse_loan(path: Path) -> TabularData:
    frame = _read_csv(path, (*LOAN_NUMERIC_FEATURES, _LOAN_CATEGORICAL), _LOAN_TARGET, categorical=[_LOAN_CATEGORICAL])
    numeric = frame[list(LOAN_NUMERIC_FEATURES)].to_numpy(dtype=np.float64)
    purposes = frame[_LOAN_CATEGORICAL].astype(str).to_numpy()
    values = sorted(set(purposes))
    one_hot = (purposes[:, None] == np.asarray(values)[None, :]).astype(np.float64)
    return TabularData(
        X=np.concatenate([numeric, one_hot], axis=1).astype(np.float32),
        y=frame[_LOAN_TARGET].to_numpy().astype(np.int64),
        feature_names=[*LOAN_NUMERIC_FEATURES, *(f"{_LOAN_CATEGORICAL}={value}" for value in values)],
        scale_columns=list(range(len(LOAN_NUMERIC_FEATURES))),
        name="loan",
    )


def _parse_fraud(path: Path) -> TabularData:
    frame = _read_csv(path, FRAUD_FEATURES, _FRAUD_TARGET)
    return TabularData(
        X=frame[list(FRAUD_FEATURES)].to_numpy(dtype=np.float32),
        y=frame[_FRAUD_TARGET].to_numpy().astype(np.int64),
        feature_names=list(FRAUD_FEATURES),
        scale_columns=[FRAUD_FEATURES.index(column) for column in _FRAUD_SCALED],
        name="fraud",
    )


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


@DATASETS.register("loan")
def load_loan(root: str | os.PathLike | None = None) -> TabularData:
    """LendingClub loan default (MetaBalance, Bansal et al. 2021): 9,578 loans, 1,533 not fully paid.

    Reads ``<root>/loan_default/loan_data.csv`` (``root`` defaults to ``$EQUIPOISE_DATA``): the
    public LendingClub loans of 2007-2010 as distributed on Kaggle as ``loan_data.csv`` (14
    columns; target ``not.fully.paid``). Returns 19 raw features: the 12 numeric columns of
    :data:`LOAN_NUMERIC_FEATURES` (``scale_columns`` 0..11) then one 0/1 column per ``purpose``.
    """
    path = _data_root(root) / _LOAN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"loan default data not found: expected {path}. It is the public LendingClub loan data "
            f"(loans of 2007-2010, 9,578 rows, 14 columns, target {_LOAN_TARGET!r}) as distributed on Kaggle "
            f"as 'loan_data.csv'; download it and save it as {path} (or pass root= / set EQUIPOISE_DATA to the "
            "folder holding loan_default/)"
        )
    return _cached(path, "loan", _parse_loan)


@DATASETS.register("fraud")
def load_fraud(root: str | os.PathLike | None = None) -> TabularData:
    """ULB credit-card fraud (Dal Pozzolo et al. 2015; MetaBalance, Bansal et al. 2021): 492 frauds in 284,807.

    Reads ``<root>/creditcard/creditcard.csv``, or ``creditcard.csv.xz`` when only that is there
    (``root`` defaults to ``$EQUIPOISE_DATA``). Returns the 30 raw features of
    :data:`FRAUD_FEATURES` (Time, V1..V28, Amount); ``scale_columns`` are Time and Amount only.
    """
    folder = _data_root(root) / _FRAUD_FOLDER
    for file_name in _FRAUD_NAMES:
        if (folder / file_name).is_file():
            return _cached(folder / file_name, "fraud", _parse_fraud)
    raise FileNotFoundError(
        f"credit-card fraud data not found: expected {folder / _FRAUD_NAMES[0]} or {folder / _FRAUD_NAMES[1]}. "
        "It is the ULB Machine Learning Group's credit-card fraud data (Dal Pozzolo et al. 2015; 284,807 rows, "
        f"target {_FRAUD_TARGET!r}), published on Kaggle as 'mlg-ulb/creditcardfraud' "
        "(https://www.kaggle.com/datasets/mlg-ulb/creditcardfraud) and on OpenML as 'creditcard'; save "
        f"creditcard.csv (optionally xz-compressed) in {folder} (or pass root= / set EQUIPOISE_DATA to the "
        "folder holding creditcard/)"
    )


def load_dataset(name: str, root: str | os.PathLike | None = None) -> TabularData:
    """The raw, unscaled data set ``name`` (one of :data:`DATASETS`: ``"fraud"``, ``"loan"``)."""
    return DATASETS.get(name)(root=root)


# --------------------------------------------------------------------------------------------
# Splitting and scaling
# --------------------------------------------------------------------------------------------


def prepare(
    name_or_data: str | TabularData,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    test_size: float = 0.2,
    val_size: float = 0.0,
) -> TabularSplit:
    """Split a data set by seed and standardise its ``scale_columns`` with training statistics.

    1. ``train, test = train_test_split(rows, test_size=test_size, stratify=y, random_state=seed)``
       (scikit-learn: ``ceil(test_size * N)`` test rows, the positive share kept in both parts);
       the MetaBalance paper splits 80/20.
    2. When ``val_size > 0``: ``train, val = train_test_split(train, test_size=val_size,
       stratify=y[train], random_state=seed)``, a fraction of the training part; the test rows
       are the same as with ``val_size=0``.
    3. ``StandardScaler`` fitted on the training rows only; ``x' = (x - mean_train) / std_train``
       (population std) applied to ``scale_columns`` of every split, other columns unchanged.

    Args:
        name_or_data: a name of :data:`DATASETS` (loaded with :func:`load_dataset`) or a
            :class:`TabularData`.
        root: data root for a name (default ``$EQUIPOISE_DATA``); must be ``None`` with data.
        seed: integer in [0, 2**32), the split's ``random_state``.
        test_size: fraction of rows held out for testing, in (0, 1).
        val_size: fraction of the training part held out for validation, in [0, 1); 0 for none.

    Returns:
        A :class:`TabularSplit`. Each split needs rows of both classes; a split too small for
        that raises ``ValueError`` (from scikit-learn's stratification).
    """
    if isinstance(name_or_data, TabularData):
        if root is not None:
            raise ValueError(f"root is only used to load a data set by name; got root={root!r} with TabularData")
        data = name_or_data
    elif isinstance(name_or_data, str):
        data = load_dataset(name_or_data, root)
    else:
        raise TypeError(f"name_or_data must be a data set name or a TabularData, got {type(name_or_data).__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if not (isinstance(test_size, (int, float)) and not isinstance(test_size, bool) and 0 < test_size < 1):
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    if not (isinstance(val_size, (int, float)) and not isinstance(val_size, bool) and 0 <= val_size < 1):
        raise ValueError(f"val_size must be a fraction in [0, 1) (0 for no validation split), got {val_size!r}")
    seed = int(seed)

    rows = np.arange(len(data))
    train_index, test_index = train_test_split(rows, test_size=float(test_size), stratify=data.y, random_state=seed)
    val_index = None
    if val_size > 0:
        train_index, val_index = train_test_split(
            train_index, test_size=float(val_size), stratify=data.y[train_index], random_state=seed
        )

    columns = list(data.scale_columns)
    scaler = StandardScaler().fit(data.X[train_index][:, columns].astype(np.float64)) if columns else None

    def take(index: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        if index is None:
            return None, None
        X = data.X[index]  # fancy indexing copies: the source data is never modified
        if scaler is not None:
            X[:, columns] = scaler.transform(X[:, columns].astype(np.float64)).astype(np.float32)
        return X, data.y[index]

    X_train, y_train = take(train_index)
    X_val, y_val = take(val_index)
    X_test, y_test = take(test_index)
    return TabularSplit(
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        X_test=X_test,
        y_test=y_test,
        feature_names=list(data.feature_names),
        scaler=scaler,
        seed=seed,
        name=data.name,
        scale_columns=columns,
        train_index=train_index,
        val_index=val_index,
        test_index=test_index,
    )
