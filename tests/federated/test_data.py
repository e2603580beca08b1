"""Oracle tests for the federated data sets (equipoise.federated.data).

The references are computed another way: model inputs by NumPy in float64 from the ``uint8``
pixels, and MNIST's published class counts and pixel statistics (mean 0.1307, std 0.3081) from a
256-bin histogram of the raw training pixels.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from equipoise.federated.data import DATASET_STATS, FederatedData, load_federated_data

DATA_ROOT = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MEAN, STD = (0.2, 0.5, 0.7), (0.3, 0.25, 0.1)


def _images(size: int = 12, channels: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, channels, 5, 4), dtype=np.uint8), rng.integers(0, 3, size)


def _data(**overrides) -> FederatedData:
    train_x, train_y = _images(12, seed=0)
    test_x, test_y = _images(6, seed=1)
    arguments = dict(
        train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=3, mean=MEAN, std=STD, name="toy"
    )
    arguments.update(overrides)
    return FederatedData(**arguments)


# --------------------------------------------------------------------------------------------
# features and labels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_uint8_features_are_scaled_and_normalised_per_channel(split):
    data = _data()
    x = getattr(data, f"{split}_x").astype(np.float64)
    expected = (x / 255.0 - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    features = data.features(split=split)
    assert features.dtype == torch.float32 and features.shape == x.shape
    np.testing.assert_allclose(features.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_features_and_labels_of_rows_are_those_rows():
    data = _data()
    rows = np.array([7, 0, 7, 3])
    assert torch.equal(data.features(rows), data.features()[torch.from_numpy(rows)])
    labels = data.labels(rows)
    assert labels.dtype == torch.int64 and labels.tolist() == data.train_y[rows].tolist()
    assert data.labels(split="test").tolist() == data.test_y.tolist()


def test_floating_features_are_used_as_they_are():
    rng = np.random.default_rng(3)
    train_x, test_x = rng.normal(size=(10, 4)), rng.normal(size=(5, 4))
    data = FederatedData(train_x, np.arange(10) % 2, test_x, np.arange(5) % 2, num_classes=2)
    assert torch.equal(data.features(), torch.from_numpy(train_x.astype(np.float32)))
    assert torch.equal(data.features(np.array([4]), split="test"), torch.from_numpy(test_x[4:5].astype(np.float32)))
    assert data.input_shape == (4,)


def test_statistics_are_stored_as_float_tuples_and_input_shape_is_one_row():
    data = _data(mean=[0, 0.5, 1], std=np.array([1.0, 2.0, 3.0]))
    assert data.mean == (0.0, 0.5, 1.0) and data.std == (1.0, 2.0, 3.0)
    assert all(type(value) is float for value in data.mean + data.std)
    assert data.input_shape == (3, 5, 4)


def test_bad_split_is_rejected():
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'val'"):
        _data().features(split="val")
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'val'"):
        _data().labels(split="val")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"num_classes": 1}, ValueError, r"num_classes must be an integer >= 2, got 1"),
        ({"num_classes": True}, ValueError, r"num_classes must be an integer >= 2, got True"),
        ({"train_y": np.array([0, 1, 3] * 4)}, ValueError, r"train_y must lie in \[0, 3\) \(num_classes\), got 3"),
        ({"test_y": np.array([0, -1, 2] * 2)}, ValueError, r"test_y must lie in \[0, 3\) \(num_classes\), got -1"),
        ({"train_y": np.zeros(11, dtype=np.int64)}, ValueError, r"train_x has shape \(12, 3, 5, 4\), expected \(11, "),
        ({"train_y": np.zeros(12)}, ValueError, r"train_y must be a 1-D integer array, got float64"),
        ({"test_y": np.zeros((6, 1), dtype=np.int64)}, ValueError, r"test_y must be a 1-D integer array"),
        ({"train_y": [0] * 12}, TypeError, r"train_x and train_y must be NumPy arrays"),
        ({"train_x": np.zeros((12, 3, 5, 4), dtype=np.int32)}, ValueError, r"uint8 images or floating features, got"),
        ({"test_x": np.zeros((6, 3, 4, 4), dtype=np.uint8)}, ValueError, r"train_x rows \(3, 5, 4\) and test_x rows"),
        ({"mean": None}, ValueError, r"mean needs one value per channel \(3\) for uint8 images, got None"),
        ({"std": None}, ValueError, r"std needs one value per channel \(3\) for uint8 images, got None"),
        ({"mean": (0.5,)}, ValueError, r"mean needs one value per channel \(3\)"),
        ({"std": (0.3, 0.0, 0.1)}, ValueError, r"std must be > 0"),
    ],
)
def test_bad_arrays_are_rejected(overrides, error, message):
    with pytest.raises(error, match=message):
        _data(**overrides)


def test_empty_labels_are_rejected():
    with pytest.raises(ValueError, match=r"test_y is empty"):
        _data(test_x=np.zeros((0, 3, 5, 4), dtype=np.uint8), test_y=np.zeros(0, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# load_federated_data
# --------------------------------------------------------------------------------------------


def test_load_federated_data_rejects_unknown_names_and_missing_copies(tmp_path):
    with pytest.raises(ValueError, match=r"name must be one of \['cifar10', 'mnist'\], got 'svhn'"):
        load_federated_data("svhn")
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        load_federated_data("mnist", root=tmp_path)


def test_load_mnist_has_the_known_sizes_counts_and_pixel_statistics():
    if not (DATA_ROOT / "mnist").is_dir():
        pytest.skip(f"MNIST not found under {DATA_ROOT / 'mnist'} (set EQUIPOISE_DATA)")
    data = load_federated_data("mnist", root=DATA_ROOT)
    assert data.name == "mnist" and data.num_classes == 10
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_x.dtype == np.uint8 and data.test_x.dtype == np.uint8
    assert np.bincount(data.train_y, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(data.test_y, minlength=10).tolist() == MNIST_TEST_COUNTS
    # DATASET_STATS against the pixels themselves: mean and (population) std from a 256-bin histogram
    histogram = np.bincount(data.train_x.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = (histogram * values).sum() / histogram.sum()
    std = np.sqrt((histogram * (values - mean) ** 2).sum() / histogram.sum())
    (stored_mean,), (stored_std,) = DATASET_STATS["mnist"]
    assert data.mean == (stored_mean,) and data.std == (stored_std,)
    assert stored_mean == pytest.approx(mean, abs=5e-5) and stored_std == pytest.approx(std, abs=5e-5)
    # the model inputs of a few rows, by hand
    rows = np.array([0, 59999])
    expected = (data.train_x[rows].astype(np.float64) / 255.0 - stored_mean) / stored_std
    np.testing.assert_allclose(data.features(rows).numpy(), expected, rtol=1e-5, atol=1e-5)
