"""Long-tailed image datasets against independent oracles: hand-worked profile counts, the data
written by the test itself (tiny image folders, idx files, split files in tmp_path), and known
facts about the real CIFAR-10 and MNIST copies under ``EQUIPOISE_DATA`` (skipped when unset).

The real CIFAR-10 archive is extracted once for this module (into ``$EQUIPOISE_CACHE`` when
set, else a temporary folder); every other test builds its own few-kilobyte data set.
"""

import gzip
import math
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

import equipoise.vision.data as data_module
from equipoise.core.samplers import labels_of
from equipoise.vision.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DATASETS,
    SPLIT_FILES,
    LongTailedDataset,
    SplitFileDataset,
    build_dataset,
    cache_dir,
    data_root,
    describe,
    extract_once,
    load_cifar,
    load_mnist,
    make_long_tailed,
    metabalance_counts,
    plot_class_counts,
    read_idx,
)

SHARED = os.environ.get("EQUIPOISE_DATA")
SKIP_REASON = (
    "needs the shared real data: set EQUIPOISE_DATA to the shared data folder "
    "(CI sets it; locally run with EQUIPOISE_DATA=/work/shared/data)"
)
needs_shared_cifar = pytest.mark.skipif(
    not SHARED or not Path(SHARED, "cifar10_jpg", "cifar10_jpg.tar.xz").is_file(), reason=SKIP_REASON
)
needs_shared_mnist = pytest.mark.skipif(
    not SHARED or not Path(SHARED, "mnist", "t10k-labels-idx1-ubyte.gz").is_file(), reason=SKIP_REASON
)

# Known facts about MNIST (LeCun et al.): examples per digit 0..9.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# CIFAR-10-LT, ratio 100, exponential profile, n_max 5000 (Cao et al. 2019, as quoted across the literature).
CIFAR10_LT_100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(autouse=True, scope="module")
def _module_cache(tmp_path_factory):
    """One EQUIPOISE_CACHE for the module, so the real archive is extracted once: the one the
    environment sets (a CI cache then saves the extraction across runs), else a temporary folder,
    never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("EQUIPOISE_CACHE"):
            patch.setenv("EQUIPOISE_CACHE", str(tmp_path_factory.mktemp("equipoise_cache")))
        yield


# ---------------------------------------------------------------------------------------------
# Tiny data written by the tests
# ---------------------------------------------------------------------------------------------


def _colour(label: int, number: int) -> tuple[int, int, int]:
    """The colour of example ``number`` of class ``label``: the image says which class it is."""
    return (10 * label, number % 256, 7)


def _write_image_folder(root: Path, classes, per_class: dict[str, int]) -> None:
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for number in range(count):
                Image.new("RGB", (4, 4), _colour(label, number)).save(folder / f"{number:04d}.png")


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """A data root with a CIFAR-10 image-folder copy of 20 training and 3 test images per class."""
    root = tmp_path_factory.mktemp("data")
    _write_image_folder(root / "cifar10_jpg", CIFAR10_CLASSES, {"train": 20, "test": 3})
    return root


class _Unloadable(Dataset):
    """Labels in ``.targets``; reading a sample fails, so any test using it proves no image was loaded."""

    def __init__(self, targets, classes=None):
        self.targets = list(targets)
        if classes is not None:
            self.classes = classes

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        raise AssertionError("a sample was loaded")


class _InMemory(Dataset):
    """``(index, label)`` pairs with ``.targets``: the 'image' is the base index."""

    def __init__(self, targets):
        self.targets = list(targets)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return index, self.targets[index]


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """An idx file written by hand: 0, 0, type, ndim, big-endian sizes, big-endian values."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", size) for size in array.shape)
    return header + array.astype(dtype).tobytes()


def _write_mnist(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        payload = _idx_bytes(array, 0x08)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)


def _fake_mnist(count: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), (np.arange(count) % 10).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Long-tailed CIFAR on a fake image folder
# ---------------------------------------------------------------------------------------------


def test_cifar10_lt_exponential_counts_and_members(fake_root):
    dataset = build_dataset("cifar10_lt", root=fake_root, imbalance_ratio=10, seed=0)
    # Hand-worked: floor(20 * 10 ** (-i / 9)) for i = 0..9.
    assert dataset.class_counts == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert dataset.classes == list(CIFAR10_CLASSES)
    assert len(dataset) == sum(dataset.class_counts) == len(set(dataset.indices.tolist()))
    base = dataset.dataset
    assert dataset.targets == [base.targets[i] for i in dataset.indices]
    assert np.bincount(dataset.targets, minlength=10).tolist() == dataset.class_counts
    for position in (0, len(dataset) // 2, len(dataset) - 1):  # the image is of the class it is labelled with
        image, label = dataset[position]
        assert image.getpixel((0, 0))[0] == 10 * label
        assert Path(base.samples[dataset.indices[position]][0]).parent.name == CIFAR10_CLASSES[label]


def test_cifar10_lt_step_profile(fake_root):
    dataset = build_dataset("cifar10_lt", root=fake_root, imbalance_ratio=10, profile="step")
    assert dataset.class_counts == [20] * 5 + [2] * 5


def test_max_count_option_is_forwarded(fake_root):
    dataset = build_dataset("cifar10_lt", root=fake_root, imbalance_ratio=4, max_count=8)
    assert dataset.class_counts == [math.floor(8 * 4 ** (-i / 9)) for i in range(10)]
    assert dataset.class_counts[0] == 8 and dataset.class_counts[-1] == 2


def test_test_split_is_whole_and_balanced(fake_root):
    test = build_dataset("cifar10_lt", root=fake_root, split="test", imbalance_ratio=10, seed=5)
    assert test.class_counts == [3] * 10
    assert test.indices.tolist() == list(range(30))
    assert test.targets == test.dataset.targets


def test_same_seed_same_subset_other_seed_other_subset(fake_root):
    first = build_dataset("cifar10_lt", root=fake_root, imbalance_ratio=10, seed=1)
    again = build_dataset("cifar10_lt", root=fake_root, imbalance_ratio=10, seed=1)
    other = build_dataset("cifar10_lt", root=fake_root, imbalance_ratio=10, seed=2)
    assert np.array_equal(first.indices, again.indices)
    assert not np.array_equal(first.indices, other.indices)
    assert first.class_counts == other.class_counts


def test_transform_is_applied_lazily(fake_root):
    calls = []

    def transform(image):
        calls.append(image.size)
        return torch.tensor(image.getpixel((0, 0)))

    dataset = build_dataset("cifar10_lt", root=fake_root, imbalance_ratio=10, transform=transform)
    assert calls == []
    pixel, label = dataset[3]
    assert calls == [(4, 4)] and int(pixel[0]) == 10 * label


def test_data_root_from_environment(fake_root, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_DATA", str(fake_root))
    assert data_root() == fake_root
    assert build_dataset("cifar10_lt", split="test").class_counts == [3] * 10
    assert data_root("/elsewhere") == Path("/elsewhere")
    monkeypatch.delenv("EQUIPOISE_DATA")
    with pytest.raises(FileNotFoundError, match="EQUIPOISE_DATA"):
        build_dataset("cifar10_lt")
    with pytest.raises(TypeError, match="root must be a path"):
        data_root(3)


def test_missing_cifar_says_what_to_download_and_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found under .*download=True.*cifar10_jpg"):
        build_dataset("cifar10_lt", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 not found.*cifar-100-python.*cifar100_jpg"):
        build_dataset("cifar100_lt", root=tmp_path)


def test_class_folders_must_carry_the_cifar_names(tmp_path):
    _write_image_folder(tmp_path / "cifar10_jpg", [str(label) for label in range(10)], {"train": 1})
    with pytest.raises(ValueError, match="not the CIFAR-10 class names"):
        load_cifar(10, tmp_path)


def test_cifar_class_constants_sort_like_imagefolder():
    # ImageFolder numbers classes in sorted order: the label order must already be sorted.
    assert list(CIFAR10_CLASSES) == sorted(CIFAR10_CLASSES)
    assert CIFAR10_CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert len(set(CIFAR100_CLASSES)) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)
    assert CIFAR100_CLASSES[:3] == ("apple", "aquarium_fish", "baby") and CIFAR100_CLASSES[-1] == "worm"


def test_cifar100_lt_on_a_fake_folder(tmp_path):
    _write_image_folder(tmp_path / "cifar100_jpg", CIFAR100_CLASSES, {"train": 5, "test": 1})
    dataset = build_dataset("cifar100_lt", root=tmp_path, imbalance_ratio=5, seed=0)
    expected = np.floor(5 * np.power(5.0, -np.arange(100) / 99)).astype(int).tolist()
    assert dataset.class_counts == expected and dataset.class_counts[0] == 5 and dataset.class_counts[-1] == 1
    assert build_dataset("cifar100_lt", root=tmp_path, split="test").class_counts == [1] * 100


class _FakeTorchvisionCIFAR10(_Unloadable):
    """Stands in for torchvision's CIFAR10 (which would download): records how it was called."""

    calls = []

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((root, train, download))
        super().__init__([label for label in range(10) for _ in range(30 if train else 4)], list(CIFAR10_CLASSES))


def test_binary_batches_and_download_go_through_torchvision(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "CIFAR10", _FakeTorchvisionCIFAR10)
    _FakeTorchvisionCIFAR10.calls = []
    dataset = build_dataset("cifar10_lt", root=tmp_path, imbalance_ratio=10, download=True)
    assert _FakeTorchvisionCIFAR10.calls == [(str(tmp_path), True, True)]
    assert dataset.class_counts == [math.floor(30 * 10 ** (-i / 9)) for i in range(10)]
    (tmp_path / "cifar-10-batches-py").mkdir()  # binary batches present: read them, no download
    assert build_dataset("cifar10_lt", root=tmp_path, split="test").class_counts == [4] * 10
    assert _FakeTorchvisionCIFAR10.calls[-1] == (str(tmp_path), False, False)


# ---------------------------------------------------------------------------------------------
# The archive, extracted once
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def archived_root(tmp_path):
    """A data root holding only cifar10_jpg/cifar10_jpg.tar.xz (2 train and 1 test image per class)."""
    source = tmp_path / "source"
    _write_image_folder(source, CIFAR10_CLASSES, {"train": 2, "test": 1})
    root = tmp_path / "data"
    (root / "cifar10_jpg").mkdir(parents=True)
    with tarfile.open(root / "cifar10_jpg" / "cifar10_jpg.tar.xz", "w:xz") as tar:
        tar.add(source / "train", arcname="train")
        tar.add(source / "test", arcname="test")
    return root


def test_archive_is_extracted_once_into_the_cache(archived_root, tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    dataset = build_dataset("cifar10_lt", root=archived_root, split="test")
    assert dataset.class_counts == [1] * 10
    destination = Path(dataset.dataset.root).parent
    assert destination.parent == tmp_path / "cache" / "data"
    assert (destination / ".equipoise-extracted.json").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("extracted a second time")

    monkeypatch.setattr(data_module, "extract_archive", refuse)
    assert build_dataset("cifar10_lt", root=archived_root, imbalance_ratio=2).class_counts == [2] + [1] * 9


def test_partial_extraction_is_redone(archived_root, tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    archive = archived_root / "cifar10_jpg" / "cifar10_jpg.tar.xz"
    destination = extract_once(archive)
    (destination / ".equipoise-extracted.json").unlink()  # as if killed before the marker
    (destination / "train" / "cat" / "0000.png").unlink()
    assert extract_once(archive) == destination
    assert (destination / "train" / "cat" / "0000.png").is_file()


def test_failed_extraction_leaves_nothing_that_looks_complete(archived_root, tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    archive = archived_root / "cifar10_jpg" / "cifar10_jpg.tar.xz"
    real_extract = data_module.extract_archive

    def crash(source, target):
        (Path(target) / "train").mkdir()
        raise OSError("disk full")

    monkeypatch.setattr(data_module, "extract_archive", crash)
    with pytest.raises(OSError, match="disk full"):
        extract_once(archive)
    assert list((tmp_path / "cache" / "data").iterdir()) == []  # no destination, no staging folder
    monkeypatch.setattr(data_module, "extract_archive", real_extract)
    assert (extract_once(archive) / "test" / "truck" / "0000.png").is_file()


def test_a_changed_archive_is_extracted_again(archived_root, tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    archive = archived_root / "cifar10_jpg" / "cifar10_jpg.tar.xz"
    destination = extract_once(archive)
    (destination / "stray.txt").write_text("left by an older extraction")
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    assert extract_once(archive) == destination and not (destination / "stray.txt").exists()


def test_extract_once_refuses_to_delete_a_foreign_folder(archived_root, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no extraction"):
        extract_once(archived_root / "cifar10_jpg" / "cifar10_jpg.tar.xz", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        extract_once(tmp_path / "missing.tar.xz")


def test_cache_dir_default_and_override(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "data"
    monkeypatch.delenv("EQUIPOISE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "equipoise" / "data"


# ---------------------------------------------------------------------------------------------
# The wrapper and the generic subset
# ---------------------------------------------------------------------------------------------


def test_labels_of_reads_the_wrapper_without_loading_images():
    base = _Unloadable([0, 1, 1, 2, 2, 2, 0], classes=["a", "b", "c", "d"])
    dataset = LongTailedDataset(base, [6, 3, 4, 1])
    assert labels_of(dataset).tolist() == [0, 2, 2, 1]
    assert dataset.class_counts == [1, 1, 2, 0] and dataset.num_classes == 4
    assert LongTailedDataset(_Unloadable([2, 0])).classes == ["0", "1", "2"]


def test_wrapper_rejects_bad_arguments():
    base = _Unloadable([0, 1, 2])
    with pytest.raises(ValueError, match=r"indices\[1\] = 3 is out of range"):
        LongTailedDataset(base, [0, 3])
    with pytest.raises(ValueError, match=r"indices\[0\] = -1"):
        LongTailedDataset(base, [-1])
    with pytest.raises(TypeError, match="indices must be integers"):
        LongTailedDataset(base, [0.0, 1.0])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        LongTailedDataset(base, [])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        LongTailedDataset(base, [[0, 1]])
    with pytest.raises(TypeError, match="transform must be callable"):
        LongTailedDataset(base, transform="flip")
    with pytest.raises(ValueError, match="label 2 but only 2 classes"):
        LongTailedDataset(base, classes=["a", "b"])


@example(sizes=[2, 2, 2, 2, 2], imbalance_ratio=1.0000000000000002, profile="exponential", seed=0)
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=2, max_size=8),
    imbalance_ratio=st.floats(1, 40),
    profile=st.sampled_from(["exponential", "step"]),
    seed=st.integers(0, 2**31),
)
def test_make_long_tailed_property(sizes, imbalance_ratio, profile, seed):
    labels = [label for label, size in enumerate(sizes) for _ in range(size)]
    base = _InMemory(labels)
    n_max, classes = min(sizes), len(sizes)
    # The profile computed another way: vectorised NumPy (and the step rule written out).
    if profile == "exponential":
        raw = n_max * np.power(float(imbalance_ratio), -np.arange(classes) / (classes - 1))
    else:
        raw = np.where(np.arange(classes) < classes // 2, n_max, n_max / imbalance_ratio)
    expected = np.floor(raw)
    # Where the profile lands within rounding of an integer (ratio 1 + 1 ulp: 1.9999999999999998),
    # NumPy's and Python's powers may floor to either side: both are the formula.
    lowest, highest = np.floor(raw * (1 - 1e-12)), np.floor(raw * (1 + 1e-12))
    if lowest.min() < 1 <= highest.min():
        return  # on the boundary of "a class with no example": either outcome is the formula
    if expected.min() < 1:
        with pytest.raises(ValueError, match="leaves a class with no example"):
            make_long_tailed(base, imbalance_ratio, profile, seed)
        return
    dataset = make_long_tailed(base, imbalance_ratio, profile, seed)
    counts = np.array(dataset.class_counts)
    assert np.all((lowest <= counts) & (counts <= highest)), (counts, raw)
    kept = [dataset[i][0] for i in range(len(dataset))]
    assert len(set(kept)) == len(kept)
    assert all(labels[index] == dataset.targets[i] for i, index in enumerate(kept))
    assert np.array_equal(make_long_tailed(base, imbalance_ratio, profile, seed).indices, dataset.indices)


def test_make_long_tailed_needs_every_class():
    with pytest.raises(ValueError, match="class 1 has no example"):
        make_long_tailed(_Unloadable([0, 0, 2, 2], classes=["a", "b", "c"]))
    with pytest.raises(ValueError, match="fewer than the 9 asked for"):
        make_long_tailed(_Unloadable([0] * 5 + [1] * 5), imbalance_ratio=2, max_count=9)


# ---------------------------------------------------------------------------------------------
# MetaBalance
# ---------------------------------------------------------------------------------------------


def test_metabalance_severe_counts():
    assert metabalance_counts("severe") == [5000] + [5] * 9
    assert metabalance_counts("severe", majority_class=7) == [5] * 7 + [5000] + [5] * 2


def test_metabalance_moderate_counts_by_seed():
    draws = [metabalance_counts("moderate", 2, generator=torch.Generator().manual_seed(seed)) for seed in range(200)]
    assert all(draw[2] == 5000 for draw in draws)
    minority = np.array([draw[:2] + draw[3:] for draw in draws])
    assert minority.min() == 5 and minority.max() == 50  # both ends of [5, 50] are reached, nothing beyond
    assert len(np.unique(minority)) == 46
    again = metabalance_counts("moderate", 2, generator=torch.Generator().manual_seed(0))
    assert again == draws[0] and draws[0] != draws[1]


def test_metabalance_rejects_bad_arguments(fake_root):
    with pytest.raises(ValueError, match="setting must be one of"):
        metabalance_counts("mild")
    with pytest.raises(ValueError, match=r"majority_class must be an integer in \[0, 10\), got 10"):
        metabalance_counts("severe", majority_class=10)
    with pytest.raises(ValueError, match="majority_class"):
        metabalance_counts("severe", majority_class=True)
    with pytest.raises(ValueError, match="fixed class profile"):
        build_dataset("cifar10_metabalance_severe", root=fake_root, imbalance_ratio=100)
    with pytest.raises(ValueError, match="fewer than the 5000 asked for"):  # the fake folder has 20 per class
        build_dataset("cifar10_metabalance_moderate", root=fake_root)


# ---------------------------------------------------------------------------------------------
# MNIST idx files
# ---------------------------------------------------------------------------------------------


def test_mnist_from_fake_idx_files(tmp_path):
    images, labels = _fake_mnist(50)
    _write_mnist(tmp_path / "mnist", "train", images, labels)
    _write_mnist(tmp_path / "mnist", "t10k", images[:20], labels[:20])
    train = load_mnist(tmp_path)
    assert np.array_equal(train.data.numpy(), images) and np.array_equal(train.targets.numpy(), labels)
    image, label = train[13]
    assert image.mode == "L" and np.array_equal(np.asarray(image), images[13]) and label == 3
    lt = build_dataset("mnist_lt", root=tmp_path, imbalance_ratio=5)
    assert lt.class_counts == [5, 4, 3, 2, 2, 2, 1, 1, 1, 1]  # floor(5 * 5 ** (-i / 9)), by hand
    assert build_dataset("mnist_lt", root=tmp_path, split="test").class_counts == [2] * 10


def test_mnist_uncompressed_and_torchvision_layout(tmp_path):
    images, labels = _fake_mnist(30, seed=1)
    _write_mnist(tmp_path / "MNIST" / "raw", "t10k", images, labels, gz=False)
    test = load_mnist(tmp_path, train=False)
    assert np.array_equal(test.data.numpy(), images) and test.targets.tolist() == labels.tolist()


def test_mnist_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    def fake_mnist(root, train, download):
        calls.append((root, train, download))
        _write_mnist(Path(root) / "MNIST" / "raw", "train" if train else "t10k", *_fake_mnist(20))

    monkeypatch.setattr(data_module, "MNIST", fake_mnist)
    assert len(load_mnist(tmp_path, train=False, download=True)) == 20
    assert calls == [(str(tmp_path), False, True)]


@settings(max_examples=30, deadline=None)
@given(
    type_code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    seed=st.integers(0, 1000),
    gz=st.booleans(),
)
def test_read_idx_round_trips_every_type(tmp_path_factory, type_code, shape, seed, gz):
    low, high = {0x08: (0, 255), 0x09: (-128, 127)}.get(type_code, (-30000, 30000))
    values = np.random.default_rng(seed).integers(low, high, size=shape, endpoint=True)
    if type_code in (0x0D, 0x0E):
        values = values / 7.0
    payload = _idx_bytes(values, type_code)
    path = tmp_path_factory.mktemp("idx") / ("values.idx.gz" if gz else "values.idx")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    result = read_idx(path)
    assert result.shape == tuple(shape) and result.dtype.isnative
    np.testing.assert_allclose(result, values.astype(np.float32) if type_code == 0x0D else values, rtol=1e-6)


def test_corrupt_idx_files_raise_naming_the_file(tmp_path):
    images, labels = _fake_mnist(10)
    good = _idx_bytes(images, 0x08)
    cases = {
        "bad-magic.gz": gzip.compress(b"\x00\x01" + good[2:]),
        "bad-type.gz": gzip.compress(b"\x00\x00\x07" + good[3:]),
        "short-values.gz": gzip.compress(good[:-5]),
        "short-header.gz": gzip.compress(good[:9]),
        "cut-gzip.gz": gzip.compress(good)[:200],
        "not-gzip.gz": b"plain text, not gzip",
    }
    messages = {
        "bad-magic.gz": "bad magic number",
        "bad-type.gz": "bad magic number",
        "short-values.gz": "truncated or corrupt",
        "short-header.gz": "truncated",
        "cut-gzip.gz": "not a readable gzip file",
        "not-gzip.gz": "not a readable gzip file",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}.*{messages[name]}|{messages[name]}.*{name}"):
            read_idx(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.gz"):
        read_idx(tmp_path / "missing.gz")


def test_inconsistent_mnist_files_raise(tmp_path):
    images, labels = _fake_mnist(10)
    _write_mnist(tmp_path / "a" / "mnist", "train", images, labels[:9])
    with pytest.raises(ValueError, match="10 images but .* 9 labels"):
        load_mnist(tmp_path / "a")
    _write_mnist(tmp_path / "b" / "mnist", "train", images, np.full(10, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="label 10"):
        load_mnist(tmp_path / "b")
    _write_mnist(tmp_path / "c" / "mnist", "train", labels, labels)
    with pytest.raises(ValueError, match=r"must hold \(N, rows, columns\)"):
        load_mnist(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"MNIST not found under .*mnist.*download=True"):
        load_mnist(tmp_path / "d")


# ---------------------------------------------------------------------------------------------
# Split files (ImageNet-LT, iNaturalist 2018, Places-LT)
# ---------------------------------------------------------------------------------------------


def _write_split(folder: Path, name: str, entries, extra_lines=()) -> Path:
    """PNG files at the given relative paths (colour = label) and a split file listing them."""
    lines = []
    for relative, label in entries:
        path = folder / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (5, 3), (label % 256, 1, 2)).save(path)
        lines.append(f"{relative} {label}")
    split_file = folder / name
    split_file.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return split_file


def test_split_file_dataset_reads_paths_and_labels(tmp_path):
    entries = [("train/n01/a.png", 0), ("/train/n01/b.png", 0), ("train/n07/with space.png", 7), ("train/n03/c.png", 3)]
    split_file = _write_split(tmp_path, "list.txt", entries, extra_lines=["", "   "])
    dataset = SplitFileDataset(tmp_path, split_file, transform=lambda image: image.getpixel((0, 0))[0])
    assert dataset.targets == [0, 0, 7, 3]
    assert [Path(path) for path, _ in dataset.samples][1] == tmp_path / "train" / "n01" / "b.png"
    assert dataset.class_counts == [2, 0, 0, 1, 0, 0, 0, 1] and len(dataset.classes) == 8
    assert [dataset[i] for i in range(4)] == [(0, 0), (0, 0), (7, 7), (3, 3)]
    wrapped = LongTailedDataset(SplitFileDataset(tmp_path, split_file, num_classes=10))
    assert wrapped.class_counts == [2, 0, 0, 1, 0, 0, 0, 1, 0, 0] and wrapped[2][0].size == (5, 3)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("train/a.png", "line 2: expected 'relative/path label'"),
        ("train/a.png x", "line 2: label 'x' is not a non-negative integer"),
        ("train/a.png -1", "line 2: label '-1' is not a non-negative integer"),
        ("train/a.png 12", "line 2: label 12 is not below num_classes=10"),
    ],
)
def test_split_file_bad_lines_raise(tmp_path, line, message):
    (tmp_path / "list.txt").write_text(f"train/b.png 1\n{line}\n")
    with pytest.raises(ValueError, match=message):
        SplitFileDataset(tmp_path, tmp_path / "list.txt", num_classes=10)


def test_split_file_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        SplitFileDataset(tmp_path, tmp_path / "nothing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="lists no image"):
        SplitFileDataset(tmp_path, tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        SplitFileDataset(tmp_path, tmp_path / "empty.txt", num_classes=0)


def test_imagenet_lt_builder_reads_the_standard_files(tmp_path):
    folder = tmp_path / "imagenet_lt"
    _write_split(
        folder, "ImageNet_LT_train.txt", [("train/n0/a.png", 0), ("train/n0/b.png", 0), ("train/n9/c.png", 999)]
    )
    _write_split(folder, "ImageNet_LT_test.txt", [("val/d.png", 5)])
    train = build_dataset("imagenet_lt", root=tmp_path, transform=lambda image: image.size)
    assert len(train) == 3 and train.num_classes == 1000
    assert train.class_counts[0] == 2 and train.class_counts[999] == 1 and sum(train.class_counts) == 3
    assert train[2] == ((5, 3), 999)
    assert build_dataset("imagenet_lt", root=tmp_path, split="test").targets == [5]
    with pytest.raises(FileNotFoundError, match=r"ImageNet_LT_val.txt not found in .*imagenet_lt"):
        build_dataset("imagenet_lt", root=tmp_path, split="val")
    with pytest.raises(ValueError, match="fixed class profile"):
        build_dataset("imagenet_lt", root=tmp_path, imbalance_ratio=100)
    with pytest.raises(ValueError, match="cannot be downloaded"):
        build_dataset("imagenet_lt", root=tmp_path, download=True)
    with pytest.raises(ValueError, match="split must be one of"):
        build_dataset("imagenet_lt", root=tmp_path, split="training")


def test_image_root_option_and_inaturalist_test_is_val(tmp_path):
    images = tmp_path / "images"
    _write_split(images, "unused.txt", [("Plantae/7477/x.png", 7477)])
    folder = tmp_path / "data" / "inaturalist18"
    folder.mkdir(parents=True)
    (folder / "iNaturalist18_val.txt").write_text("Plantae/7477/x.png 7477\n")
    test = build_dataset("inaturalist", root=tmp_path / "data", split="test", image_root=images)
    assert test.dataset.split_file.name == "iNaturalist18_val.txt" and test.num_classes == 8142
    assert test[0][1] == 7477 and test[0][0].size == (5, 3)
    assert SPLIT_FILES["places_lt"]["splits"]["test"] == "Places_LT_test.txt"
    with pytest.raises(FileNotFoundError, match="Places_LT_train.txt"):
        build_dataset("places_lt", root=tmp_path / "data")


# ---------------------------------------------------------------------------------------------
# The registry front and its argument checks
# ---------------------------------------------------------------------------------------------


def test_registry_holds_every_dataset():
    assert set(DATASETS.names()) == {
        "cifar10_lt",
        "cifar100_lt",
        "mnist_lt",
        "imagenet_lt",
        "inaturalist",
        "places_lt",
        "cifar10_metabalance_severe",
        "cifar10_metabalance_moderate",
    }
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'; known: cifar100_lt, cifar10_lt"):
        build_dataset("cifar10")
    with pytest.raises(ValueError, match="already registered"):
        DATASETS.register("cifar10_lt")(lambda **kwargs: None)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"split": "val"}, ValueError, r"split must be one of \('train', 'test'\) for cifar10_lt, got 'val'"),
        ({"imbalance_ratio": 0.5}, ValueError, "imbalance_ratio must be a finite number >= 1"),
        ({"imbalance_ratio": float("nan")}, ValueError, "imbalance_ratio must be a finite number >= 1"),
        ({"imbalance_ratio": True}, ValueError, "imbalance_ratio must be a finite number >= 1"),
        ({"profile": "linear"}, ValueError, "profile must be one of"),
        ({"seed": -1}, ValueError, "seed must be a non-negative integer"),
        ({"seed": 1.5}, ValueError, "seed must be a non-negative integer"),
        ({"max_count": 0}, ValueError, "max_count must be a positive integer"),
        ({"max_count": 21, "imbalance_ratio": 2}, ValueError, "fewer than the 21 asked for"),
        ({"imbalance_ratio": 30}, ValueError, "leaves a class with no example"),
        ({"majority_class": 1}, TypeError, "majority_class"),
    ],
)
def test_build_dataset_rejects_bad_arguments(fake_root, arguments, error, message):
    with pytest.raises(error, match=message):
        build_dataset("cifar10_lt", root=fake_root, **arguments)


# ---------------------------------------------------------------------------------------------
# describe and plot_class_counts
# ---------------------------------------------------------------------------------------------


def test_describe_table_by_hand():
    dataset = LongTailedDataset(_Unloadable([1] * 3 + [0] * 6, classes=["cat", "dog", "eel"]))
    text = describe(dataset)
    assert text.startswith("9 examples in 3 classes; largest class 6, smallest 0, imbalance ratio inf")
    lines = text.strip().splitlines()
    assert lines[2] == "| class | name | count | share | imbalance ratio |"
    assert lines[4:] == ["| 0 | cat | 6 | 0.6667 | 1 |", "| 1 | dog | 3 | 0.3333 | 2 |", "| 2 | eel | 0 | 0 | inf |"]
    plain = describe(TensorDataset(torch.zeros(5), torch.tensor([0, 0, 0, 0, 1])))
    assert "imbalance ratio 4\n" in plain and "| 1 | 1 | 1 | 0.2 | 4 |" in plain


def test_describe_shortens_long_profiles():
    dataset = LongTailedDataset(_Unloadable([label for label in range(50) for _ in range(label + 1)]))
    lines = describe(dataset, max_rows=6).strip().splitlines()
    assert len(lines) == 4 + 7 and lines[7] == "| ... | ... | ... | ... | ... |"
    assert lines[4].startswith("| 49 | 49 | 50 |") and lines[-1].startswith("| 0 | 0 | 1 |")
    with pytest.raises(ValueError, match="max_rows"):
        describe(dataset, max_rows=1)


def test_plot_class_counts_writes_a_png(tmp_path):
    path = plot_class_counts([5000, 2997, 50, 0], tmp_path / "plots" / "counts.png", ["a", "b", "c", "d"])
    assert path == tmp_path / "plots" / "counts.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    assert plot_class_counts(torch.arange(1, 61), tmp_path / "many.png").is_file()  # no per-class labels
    with pytest.raises(ValueError, match="class_names has 2 names for 3 classes"):
        plot_class_counts([1, 2, 3], tmp_path / "x.png", ["a", "b"])
    with pytest.raises(ValueError, match=r"class_counts\[1\] = -2.0 is negative"):
        plot_class_counts([1, -2], tmp_path / "x.png")
    with pytest.raises(ValueError, match="1-D"):
        plot_class_counts([[1, 2]], tmp_path / "x.png")


# ---------------------------------------------------------------------------------------------
# The real shared copies (skipped without EQUIPOISE_DATA)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_cifar10_train():
    return load_cifar(10, SHARED, train=True)


@needs_shared_cifar
def test_real_cifar10_lt_ratio_100_counts(real_cifar10_train):
    assert real_cifar10_train.classes == list(CIFAR10_CLASSES)  # ImageFolder order == torchvision's CIFAR10 order
    assert np.bincount(real_cifar10_train.targets).tolist() == [5000] * 10
    dataset = build_dataset("cifar10_lt", root=SHARED, imbalance_ratio=100, seed=0)
    assert dataset.class_counts == CIFAR10_LT_100 and len(dataset) == 12406
    image, label = dataset[len(dataset) - 1]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 9
    assert Path(dataset.dataset.samples[dataset.indices[-1]][0]).parent.name == "truck"


@needs_shared_cifar
@pytest.mark.parametrize(("imbalance_ratio", "tail"), [(10, 500), (50, 100), (200, 25)])
def test_real_cifar10_lt_other_ratios(real_cifar10_train, imbalance_ratio, tail):
    dataset = make_long_tailed(real_cifar10_train, imbalance_ratio=imbalance_ratio, seed=0)
    assert dataset.class_counts[0] == 5000 and dataset.class_counts[-1] == tail
    counts = dataset.class_counts
    assert all(a > b for a, b in zip(counts, counts[1:]))


@needs_shared_cifar
def test_real_cifar10_step_profile_and_seeds(real_cifar10_train):
    step = make_long_tailed(real_cifar10_train, imbalance_ratio=100, profile="step", seed=0)
    assert step.class_counts == [5000] * 5 + [50] * 5
    other = make_long_tailed(real_cifar10_train, imbalance_ratio=100, profile="step", seed=1)
    tail = slice(int(np.searchsorted(step.targets, 5)), None)
    assert not np.array_equal(step.indices[tail], other.indices[tail])


@needs_shared_cifar
def test_real_cifar10_test_split_untouched():
    test = build_dataset("cifar10_lt", root=SHARED, split="test")
    assert test.class_counts == [1000] * 10 and len(test) == 10000


@needs_shared_cifar
def test_real_metabalance_settings():
    severe = build_dataset("cifar10_metabalance_severe", root=SHARED, seed=0)
    assert severe.class_counts == [5000] + [5] * 9
    shifted = build_dataset("cifar10_metabalance_severe", root=SHARED, seed=0, majority_class=3)
    assert shifted.class_counts == [5] * 3 + [5000] + [5] * 6
    moderate = build_dataset("cifar10_metabalance_moderate", root=SHARED, seed=0)
    assert moderate.class_counts[0] == 5000 and all(5 <= count <= 50 for count in moderate.class_counts[1:])
    again = build_dataset("cifar10_metabalance_moderate", root=SHARED, seed=0)
    assert np.array_equal(again.indices, moderate.indices)
    other = build_dataset("cifar10_metabalance_moderate", root=SHARED, seed=1)
    assert other.class_counts != moderate.class_counts
    assert build_dataset("cifar10_metabalance_moderate", root=SHARED, split="test").class_counts == [1000] * 10


@needs_shared_mnist
def test_real_mnist_matches_known_facts():
    train, test = load_mnist(SHARED, train=True), load_mnist(SHARED, train=False)
    assert len(train) == 60000 and len(test) == 10000
    assert tuple(train.data.shape) == (60000, 28, 28) and train.data.dtype == torch.uint8
    assert np.bincount(train.targets.numpy()).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(test.targets.numpy()).tolist() == MNIST_TEST_COUNTS
    assert build_dataset("mnist_lt", root=SHARED, split="test").class_counts == MNIST_TEST_COUNTS
    lt = make_long_tailed(train, imbalance_ratio=100, seed=0)
    assert lt.class_counts[0] == 5421 and lt.class_counts[-1] == 54  # n_max = the smallest digit class (5)
