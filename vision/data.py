"""Long-tailed image datasets: CIFAR-10/100-LT, MNIST-LT, ImageNet-LT, iNaturalist 2018, Places-LT
and the CIFAR-10 settings of MetaBalance, built by name.

>>> from equipoise.vision.data import build_dataset, describe, plot_class_counts
>>> train = build_dataset("cifar10_lt", imbalance_ratio=100, seed=0)   # root from EQUIPOISE_DATA
>>> test = build_dataset("cifar10_lt", split="test")                   # balanced, never subsampled
>>> print(describe(train)); plot_class_counts(train.class_counts, "results/class_counts.png", train.classes)

Every builder returns a :class:`LongTailedDataset`: a ``torch.utils.data.Dataset`` over a base
dataset and the indices it keeps, with ``.targets`` (one int per example), ``.class_counts``
(one count per class) and ``.classes`` (the class names), so that
``equipoise.core.samplers.labels_of`` reads its labels without decoding an image. Its
``transform`` is applied lazily in ``__getitem__``; ``(image, label)`` pairs come out, the image
a PIL image before the transform.

| name | data | training split | paper |
|---|---|---|---|
| cifar10_lt | CIFAR-10 | ``imbalance_ratio`` (100) and ``profile`` (exponential) | Cui et al. 2019; Cao et al. 2019 |
| cifar100_lt | CIFAR-100 | as above | Cui et al. 2019; Cao et al. 2019 |
| mnist_lt | MNIST idx files | as above | - |
| imagenet_lt | ImageNet split files | fixed by the split files (1000 classes) | Liu et al. 2019 |
| inaturalist | iNaturalist 2018 split files | fixed (8142 classes, naturally long-tailed) | Van Horn et al. 2018 |
| places_lt | Places-365 split files | fixed (365 classes) | Liu et al. 2019 |
| cifar10_metabalance_severe | CIFAR-10 | one class of 5000, nine of 5 | Bansal et al. 2021 |
| cifar10_metabalance_moderate | CIFAR-10 | one class of 5000, nine of 5-50 by seed | Bansal et al. 2021 |

Long-tailed profiles (``equipoise.core.imbalance``, Cui, Jia, Lin, Song, Belongie, "Class-Balanced
Loss Based on Effective Number of Samples", CVPR 2019; Cao, Wei, Gaidon, Arechiga, Ma, "Learning
Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019), with ``C`` classes
and ``ratio = n_max / n_min``::

    exponential: n_i = floor(n_max * ratio ** (-i / (C - 1)))     class 0 is the head
    step:        n_i = n_max for the first C // 2 classes, floor(n_max / ratio) for the rest

``n_max`` is the size of the smallest class of the full training set (5000 for CIFAR-10, 500 for
CIFAR-100, 5421 for MNIST), so every class can supply its count; pass ``max_count`` to change it.
CIFAR-10-LT with ratio 100 has ``[5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]``. Which
examples of a class are kept is drawn with a ``torch.Generator`` seeded by ``seed``: the same seed
gives the same subset. Deliberate differences from the reference code of Cao et al.
(``IMBALANCECIFAR10.gen_imbalanced_data``), and why: it shuffles each class with the global
NumPy generator (``np.random.seed(0)`` set beforehand) and keeps the first ``n_i``, so its subsets
cannot be reproduced here, while equipoise never seeds globally; and its ``n_max`` is the mean class
size (``len(data) / C``), which equals the smallest class size on the balanced CIFAR sets and would
ask more of the smallest classes than they hold on MNIST.

Test (and validation) splits are never subsampled: ``split="test"`` returns the whole balanced
test set, whatever ``imbalance_ratio`` says, so that one configuration builds both splits.

Where the data comes from: ``root`` or, when it is ``None``, the environment variable
``EQUIPOISE_DATA`` (never a hard-coded path). Under that root:

- CIFAR-10/100: torchvision's binary batches (``cifar-10-batches-py``, ``cifar-100-python``:
  ``torchvision.datasets.CIFAR10/CIFAR100``, fetched with ``download=True``), or an
  image-folder copy ``cifar10_jpg/`` (``cifar100_jpg/``) holding ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg`` (read with ``torchvision.datasets.ImageFolder``), or holding an archive
  ``cifar10_jpg.tar.xz`` of those two folders, extracted once into the cache (below). The binary
  batches win when both are there: their pixels are the originals, the JPEG copy is re-encoded.
  ImageFolder numbers classes in sorted folder-name order, which for the CIFAR-10 names is
  torchvision's order (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck) and
  for CIFAR-100 the fine-label order of its meta file; the folder names are checked against
  :data:`CIFAR10_CLASSES` / :data:`CIFAR100_CLASSES`, so a copy with other names (``0``..``99``
  sort as ``0, 1, 10, 11, ...``) cannot silently renumber the classes.
- MNIST: ``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (or the same names without
  ``.gz``), read by :func:`read_idx`; ``download=True`` fetches them with
  ``torchvision.datasets.MNIST`` into ``MNIST/raw/``, which is searched next.
- ImageNet-LT / iNaturalist 2018 / Places-LT: ``imagenet_lt/``, ``inaturalist18/``,
  ``places_lt/``, each holding the standard split files (:data:`SPLIT_FILES`) and the images at
  the paths the split files name (or pass ``image_root``). These cannot be downloaded here:
  ImageNet and Places need an account, and the split files come from the OLTR release.

The cache for extracted archives is ``$EQUIPOISE_CACHE/data``, by default
``~/.cache/equipoise/data``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, ImageFolder
from torchvision.datasets.folder import default_loader
from torchvision.datasets.utils import extract_archive

from equipoise.core.imbalance import PROFILES, long_tailed_counts, long_tailed_indices
from equipoise.core.paths import cache_dir, data_root
from equipoise.core.registry import Registry
from equipoise.core.reporting import markdown_table
from equipoise.core.samplers import labels_of
from equipoise.core.validation import as_class_counts, check_class_counts

__all__ = [
    "CIFAR100_CLASSES",
    "CIFAR10_CLASSES",
    "DATASETS",
    "METABALANCE_SETTINGS",
    "MNIST_CLASSES",
    "SPLIT_FILES",
    "IdxMNIST",
    "LongTailedDataset",
    "SplitFileDataset",
    "build_dataset",
    "cache_dir",
    "cifar100_lt",
    "cifar10_lt",
    "cifar10_metabalance",
    "data_root",
    "dataset_from_config",
    "describe",
    "extract_once",
    "imagenet_lt",
    "inaturalist",
    "load_cifar",
    "load_mnist",
    "make_long_tailed",
    "metabalance_counts",
    "mnist_lt",
    "places_lt",
    "plot_class_counts",
    "read_idx",
]

DATASETS: Registry[Callable[..., LongTailedDataset]] = Registry("dataset")

# torchvision's CIFAR10.classes (the label_names of batches.meta), index = label.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The fine_label_names of CIFAR-100's meta file (torchvision's CIFAR100.classes), index = label.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
# torchvision's MNIST.classes.
MNIST_CLASSES = tuple(
    f"{digit} - {word}"
    for digit, word in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))
)

# The standard split files of each dataset, per split, and its number of classes. ImageNet-LT and
# Places-LT: Liu, Miao, Zhan, Wang, Gong, Yu, "Large-Scale Long-Tailed Recognition in an Open
# World" (OLTR), CVPR 2019: ImageNet-LT 115,846 training images (1280 to 5 per class), val 20 and
# test 50 per class; Places-LT 62,500 training images (4980 to 5 per class), val 20 and test 100
# per class. iNaturalist 2018 (Van Horn et al., CVPR 2018), lists as released with Kang et al.,
# "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020: 437,513
# training images, 24,426 validation images (3 per class). iNaturalist 2018 has no public
# labelled test set and the long-tailed literature reports its validation accuracy, so
# split="test" reads the validation list, as those papers do.
SPLIT_FILES: dict[str, dict[str, Any]] = {
    "imagenet_lt": {
        "folder": "imagenet_lt",
        "num_classes": 1000,
        "splits": {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"},
    },
    "inaturalist": {
        "folder": "inaturalist18",
        "num_classes": 8142,
        "splits": {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt", "test": "iNaturalist18_val.txt"},
    },
    "places_lt": {
        "folder": "places_lt",
        "num_classes": 365,
        "splits": {"train": "Places_LT_train.txt", "val": "Places_LT_val.txt", "test": "Places_LT_test.txt"},
    },
}

# MetaBalance CIFAR-10 settings: (smallest, largest) number of examples of each minority class.
METABALANCE_SETTINGS = {"severe": (5, 5), "moderate": (5, 50)}

_ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar.bz2", ".tar", ".zip")
_MARKER = ".equipoise-extracted.json"
# idx type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------------------------
# Where the data is
# --------------------------------------------------------------------------------------------


def extract_once(archive: str | Path, destination: str | Path | None = None) -> Path:
    """Extract ``archive`` into ``destination`` unless an earlier call already did; return ``destination``.

    The extraction itself is torchvision's ``torchvision.datasets.utils.extract_archive``
    (tar with any compression, zip, gz, xz, bz2). It runs into a fresh hidden staging folder next
    to ``destination``, which is renamed to ``destination`` only once the marker file
    ``.equipoise-extracted.json`` (the archive's path, size and modification time) is written in
    it: an interrupted extraction never looks complete, and the next call starts again. A
    destination whose marker names another archive, or the same one since modified, is
    extracted again.

    ``destination`` defaults to ``cache_dir() / "<archive name>-<hash of its path>"``. A folder
    without a marker found there is a leftover and is removed when it lies in the cache; any
    other folder raises ``FileExistsError`` rather than being deleted.

    torchvision's extractor does not apply tarfile's ``"data"`` filter (PEP 706; Python >= 3.12
    warns about it, 3.14 applies it by default): extract only archives you trust, as with
    torchvision's own downloads.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    archive = archive.resolve()
    if destination is None:
        digest = hashlib.sha256(str(archive).encode()).hexdigest()[:10]
        destination = cache_dir() / f"{archive.name.split('.')[0]}-{digest}"
    destination = Path(destination).expanduser()
    stat = archive.stat()
    expected = {"archive": str(archive), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if _read_marker(destination) == expected:
        return destination
    if destination.exists():
        in_cache = cache_dir().resolve() in destination.resolve().parents
        if not in_cache and _read_marker(destination) is None and any(destination.iterdir()):
            raise FileExistsError(
                f"destination {destination} exists and holds no extraction of {archive.name}; "
                "choose an empty or new folder (extract_once replaces what it finds there)"
            )
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the extracted data is not secret
        extract_archive(str(archive), str(staging))
        (staging / _MARKER).write_text(json.dumps(expected))
        try:
            staging.rename(destination)
        except OSError:
            # Another process finished the same extraction between our check and now.
            if _read_marker(destination) != expected:
                raise
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _read_marker(destination: Path) -> dict | None:
    try:
        return json.loads((destination / _MARKER).read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# The dataset wrapper and the long-tailed subset
# --------------------------------------------------------------------------------------------


class LongTailedDataset(Dataset):
    """The examples of ``dataset`` at ``indices`` (all of them when ``None``), with their labels at hand.

    ``dataset[i]`` must return ``(image, label)``; its labels are read once with
    ``equipoise.core.samplers.labels_of`` (``.targets``, ``.labels``, ``Subset``, ...), never by
    loading images. Attributes:

    - ``targets``: list of ``len(self)`` ints, the label of each example (what ``labels_of`` reads);
    - ``class_counts``: list of ``num_classes`` ints, zero for a class with no example here;
    - ``classes``: the class names: ``classes`` if given, else ``dataset.classes``, else
      ``"0"``, ``"1"``, ... up to the largest label of ``dataset``;
    - ``indices``: the kept indices of ``dataset`` (int64 NumPy array);
    - ``transform``: applied to the image in ``__getitem__`` (``None``: the image as stored).

    ``__getitem__`` returns ``(transform(image), label)`` with ``label`` from ``targets``.
    """

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[Any], Any] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {transform!r}")
        labels = labels_of(dataset).numpy()
        if indices is None:
            indices = np.arange(len(labels), dtype=np.int64)
        else:
            indices = np.asarray(indices)
            if indices.ndim != 1 or indices.size == 0:
                raise ValueError(f"indices must be a non-empty 1-D array, got shape {indices.shape}")
            if indices.dtype.kind not in "iu":
                raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
            bad = (indices < 0) | (indices >= len(labels))
            if bad.any():
                position = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"indices[{position}] = {int(indices[position])} is out of range for a dataset of {len(labels)}"
                )
            indices = indices.astype(np.int64)
        if classes is None:
            classes = getattr(dataset, "classes", None)
        if classes is None:
            classes = [str(label) for label in range(int(labels.max()) + 1)]
        classes = list(classes)
        if int(labels.max()) >= len(classes):
            raise ValueError(f"dataset has label {int(labels.max())} but only {len(classes)} classes: {classes[:5]}...")
        self.dataset = dataset
        self.indices = indices
        self.transform = transform
        self.classes = classes
        self.targets = labels[indices].tolist()
        self.class_counts = np.bincount(labels[indices], minlength=len(classes)).tolist()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.dataset[int(self.indices[index])][0]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.dataset).__name__}, {len(self)} examples, "
            f"{self.num_classes} classes, counts {min(self.class_counts)}..{max(self.class_counts)})"
        )


def make_long_tailed(
    dataset: Any,
    imbalance_ratio: float = 100,
    profile: str = "exponential",
    seed: int = 0,
    max_count: int | None = None,
    transform: Callable[[Any], Any] | None = None,
) -> LongTailedDataset:
    """A long-tailed subset of a (balanced) ``dataset``: ``long_tailed_counts(max_count, C, imbalance_ratio,
    profile)`` examples of each class, drawn by ``seed`` (see the module docstring for the profiles).

    ``max_count`` defaults to the size of the smallest class of ``dataset``, so every class has
    enough examples; ``C`` is ``len(dataset.classes)`` when it has them, else the largest label + 1.
    The subset is ``long_tailed_indices`` of ``equipoise.core.imbalance`` with a
    ``torch.Generator`` seeded by ``seed``.
    """
    _check_seed(seed)
    labels = labels_of(dataset).numpy()
    classes = getattr(dataset, "classes", None)
    num_classes = len(classes) if classes is not None else int(labels.max()) + 1
    available = np.bincount(labels, minlength=num_classes)
    if max_count is None:
        if available.min() == 0:
            raise ValueError(f"class {int(available.argmin())} has no example in dataset: it cannot be long-tailed")
        max_count = int(available.min())
    counts = long_tailed_counts(max_count, num_classes, imbalance_ratio, profile)
    indices = long_tailed_indices(labels, counts, torch.Generator().manual_seed(seed))
    return LongTailedDataset(dataset, indices, transform=transform)


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_split(name: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ValueError(f"split must be one of {tuple(splits)} for {name}, got {split!r}")


def _check_profile(imbalance_ratio: float | None, profile: str | None) -> None:
    """Check the profile arguments early, before any data is read (``None`` is the dataset's default)."""
    if imbalance_ratio is not None and not (
        isinstance(imbalance_ratio, (int, float))
        and not isinstance(imbalance_ratio, bool)
        and 1 <= imbalance_ratio < math.inf
    ):
        raise ValueError(f"imbalance_ratio must be a finite number >= 1 (n_max / n_min), got {imbalance_ratio!r}")
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")


def _refuse_profile(name: str, imbalance_ratio: float | None, profile: str | None) -> None:
    """Refuse profile arguments for a dataset whose class profile is fixed."""
    if imbalance_ratio is not None or profile is not None:
        raise ValueError(
            f"{name} has a fixed class profile, so imbalance_ratio and profile do not apply "
            f"(got imbalance_ratio={imbalance_ratio!r}, profile={profile!r}); leave them None"
        )


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


def load_cifar(
    num_classes: int, root: str | Path | None = None, train: bool = True, download: bool = False
) -> CIFAR10 | CIFAR100 | ImageFolder:
    """The full CIFAR-10 (``num_classes=10``) or CIFAR-100 training or test set, without transform.

    Looks under ``data_root(root)`` for torchvision's binary batches (read by ``CIFAR10`` /
    ``CIFAR100``; ``download=True`` fetches them there), then for the image-folder copy
    ``cifar10_jpg/`` (``cifar100_jpg/``) as folders or as an archive (extracted once by
    :func:`extract_once`). Raises ``FileNotFoundError`` saying what to put where when none is there,
    and ``ValueError`` when the copy's class folders are not the CIFAR class names.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 or 100 (CIFAR-10 or CIFAR-100), got {num_classes!r}")
    root = data_root(root, holds=f"CIFAR-{num_classes} (download=True fetches it there)")
    title = f"CIFAR-{num_classes}"
    binary_folder, torchvision_class = {10: ("cifar-10-batches-py", CIFAR10), 100: ("cifar-100-python", CIFAR100)}[
        num_classes
    ]
    if download or (root / binary_folder).is_dir():
        return torchvision_class(str(root), train=train, download=download)
    copy_name = f"cifar{num_classes}_jpg"
    folders = _image_folder_copy(root / copy_name)
    if folders is None:
        raise FileNotFoundError(
            f"{title} not found under {root}: pass download=True (torchvision fetches it to "
            f"{root / binary_folder}), or put the image-folder copy at {root / copy_name} "
            f"(train/<class>/*.jpg and test/<class>/*.jpg, or an archive {copy_name}.tar.xz of them)"
        )
    dataset = ImageFolder(str(folders / ("train" if train else "test")))
    expected = list(CIFAR10_CLASSES if num_classes == 10 else CIFAR100_CLASSES)
    if dataset.classes != expected:
        unexpected = sorted(set(dataset.classes) - set(expected))[:5]
        raise ValueError(
            f"the class folders of {dataset.root} are not the {title} class names (unexpected: {unexpected}); "
            f"name them {expected[:3]}... so that ImageFolder's sorted order is torchvision's label order"
        )
    return dataset


def _image_folder_copy(folder: Path) -> Path | None:
    """The folder holding ``train/`` and ``test/`` of an image-folder copy at ``folder``, extracting
    its archive first when only that is there; ``None`` when there is neither."""
    if (folder / "train").is_dir():
        return folder
    for suffix in _ARCHIVE_SUFFIXES:
        archive = folder / f"{folder.name}{suffix}"
        if archive.is_file():
            extracted = extract_once(archive)
            if (extracted / "train").is_dir():
                return extracted
            inner = [child for child in extracted.iterdir() if (child / "train").is_dir()]
            if len(inner) == 1:  # an archive of the folder rather than of its contents
                return inner[0]
            raise FileNotFoundError(f"archive {archive} holds no train/ folder (extracted to {extracted})")
    return None


@DATASETS.register("cifar10_lt")
def cifar10_lt(
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    max_count: int | None = None,
) -> LongTailedDataset:
    """CIFAR-10-LT (Cui et al. 2019; Cao et al. 2019): ``imbalance_ratio`` 100 and the
    ``"exponential"`` profile by default (10, 50, 100, 200 in the papers), ``n_max`` 5000.

    ``split="test"`` is the whole balanced test set (1000 per class). See :func:`load_cifar`
    for where the images come from and :func:`make_long_tailed` for the subset.
    """
    return _cifar_lt(10, root, split, imbalance_ratio, profile, seed, transform, download, max_count)


@DATASETS.register("cifar100_lt")
def cifar100_lt(
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    max_count: int | None = None,
) -> LongTailedDataset:
    """CIFAR-100-LT (Cui et al. 2019; Cao et al. 2019): as :func:`cifar10_lt` with 100 classes, ``n_max`` 500."""
    return _cifar_lt(100, root, split, imbalance_ratio, profile, seed, transform, download, max_count)


def _cifar_lt(num_classes, root, split, imbalance_ratio, profile, seed, transform, download, max_count):
    _check_split(f"cifar{num_classes}_lt", split, ("train", "test"))
    _check_profile(imbalance_ratio, profile)
    _check_seed(seed)
    base = load_cifar(num_classes, root, train=split == "train", download=download)
    if split == "test":
        return LongTailedDataset(base, transform=transform)
    return make_long_tailed(
        base,
        imbalance_ratio=100 if imbalance_ratio is None else imbalance_ratio,
        profile="exponential" if profile is None else profile,
        seed=seed,
        max_count=max_count,
        transform=transform,
    )


# --------------------------------------------------------------------------------------------
# MetaBalance CIFAR-10
# --------------------------------------------------------------------------------------------


def metabalance_counts(
    setting: str,
    majority_class: int = 0,
    num_classes: int = 10,
    majority_count: int = 5000,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Class counts of the CIFAR-10 settings of MetaBalance (Bansal, Goldblum, Cherepanova,
    Schwarzschild, Bruss, Goldstein, "MetaBalance: High-Performance Neural Networks for
    Class-Imbalanced Data", arXiv:2106.09643, 2021).

    One majority class keeps ``majority_count`` (all 5000 CIFAR-10 training images); each other
    class keeps ``5`` (``"severe"``, ratio 1000) or an integer drawn uniformly from ``[5, 50]``
    (``"moderate"``) by ``generator``. One draw per class, the majority's draw then discarded, so a
    class's count does not depend on which class is the majority.

    Deliberate differences from the authors' code (github.com/arpitbansal297/Meta-Balance,
    ``MetaCifar/train.py``), and why: the majority class is an argument (default 0) instead of
    ``random.randint(0, 10)`` (which can return 10, one past the last class), so runs say which
    class is the head; the moderate counts are ``floor(5000 * (0.001 + U / 100))`` there, which
    reaches 54, while 5 to 50 is drawn here (the range this project's specification gives for
    the paper's moderate setting; the paper's full text could not be checked from here).
    """
    if setting not in METABALANCE_SETTINGS:
        raise ValueError(f"setting must be one of {tuple(METABALANCE_SETTINGS)}, got {setting!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(majority_class, int) or isinstance(majority_class, bool) or not 0 <= majority_class < num_classes:
        raise ValueError(f"majority_class must be an integer in [0, {num_classes}), got {majority_class!r}")
    low, high = METABALANCE_SETTINGS[setting]
    if not isinstance(majority_count, int) or majority_count < high:
        raise ValueError(f"majority_count must be an integer >= {high}, got {majority_count!r}")
    counts = torch.randint(low, high + 1, (num_classes,), generator=generator).tolist()
    counts[majority_class] = majority_count
    return counts


def cifar10_metabalance(
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    setting: str = "severe",
    majority_class: int = 0,
) -> LongTailedDataset:
    """CIFAR-10 as in MetaBalance's image experiments: class ``majority_class`` (default 0,
    airplane) keeps its 5000 training images, the nine others 5 each (``setting="severe"``) or
    5 to 50 each drawn by ``seed`` (``"moderate"``); see :func:`metabalance_counts`.

    Which images are kept is drawn by ``seed`` too (one generator: counts first, then images).
    The authors' code keeps the first images of each class in file order instead. The test split
    is the whole balanced CIFAR-10 test set, as the authors' code writes it. ``imbalance_ratio`` and ``profile``
    do not apply and must stay ``None``.
    """
    name = f"cifar10_metabalance_{setting}"
    _check_split(name, split, ("train", "test"))
    _refuse_profile(name, imbalance_ratio, profile)
    _check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    counts = metabalance_counts(setting, majority_class, generator=generator)
    base = load_cifar(10, root, train=split == "train", download=download)
    if split == "test":
        return LongTailedDataset(base, transform=transform)
    indices = long_tailed_indices(labels_of(base).numpy(), counts, generator)
    return LongTailedDataset(base, indices, transform=transform)


DATASETS.register("cifar10_metabalance_severe")(functools.partial(cifar10_metabalance, setting="severe"))
DATASETS.register("cifar10_metabalance_moderate")(functools.partial(cifar10_metabalance, setting="moderate"))


# --------------------------------------------------------------------------------------------
# MNIST from the idx files
# --------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (LeCun's MNIST format), gzipped when its name ends in ``.gz``.

    Format: two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of dimensions ``d``, ``d``
    big-endian uint32 sizes, then the values, big-endian, row-major. Written here with NumPy
    rather than through ``torchvision.datasets.MNIST``: that class only reads the uncompressed
    files under ``<root>/MNIST/raw/``, so reading the ``.gz`` files where they are would need a
    download or an unpacked copy, and its parser checks with ``assert`` (gone under
    ``python -O``) and names no file. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the file for a bad gzip stream, a bad magic number, or a size that
    disagrees with the header (a truncated or padded file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx file {path} does not exist")
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is not a readable gzip file (corrupt or truncated): {error}") from error
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{path} is not an idx file: bad magic number {data[:4].hex()!r}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path} holds {len(data) - header} bytes of values but its header {shape} announces {expected}: "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


class IdxMNIST(Dataset):
    """MNIST read from its idx files (:func:`read_idx`); ``(PIL image of mode "L", label)`` per item.

    ``data`` is the ``(N, 28, 28)`` uint8 tensor and ``targets`` the ``(N,)`` int64 tensor, as in
    ``torchvision.datasets.MNIST``; ``classes`` are torchvision's names. ``images_path`` and
    ``labels_path`` are the two idx files; they must agree in length and the labels lie in 0..9.
    """

    def __init__(self, images_path: str | Path, labels_path: str | Path) -> None:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{images_path} must hold (N, rows, columns) uint8 images, got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise ValueError(f"{labels_path} must hold (N,) uint8 labels, got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        if labels.size and labels.max() >= len(MNIST_CLASSES):
            raise ValueError(f"{labels_path} has label {int(labels.max())}; MNIST labels lie in 0..9")
        self.data = torch.from_numpy(images)
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.classes = list(MNIST_CLASSES)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index].numpy()), int(self.targets[index])


def load_mnist(root: str | Path | None = None, train: bool = True, download: bool = False) -> IdxMNIST:
    """The full MNIST training (60,000) or test (10,000) set from ``data_root(root)/mnist/``.

    The files are ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` with or without ``.gz``;
    ``<root>/MNIST/raw/`` (torchvision's layout) is searched next, and ``download=True`` fills it
    with ``torchvision.datasets.MNIST(root, download=True)`` when neither has them.
    """
    root = data_root(root, holds="mnist/ with the MNIST idx files (download=True fetches them there)")
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folders = (root / "mnist", root / "MNIST" / "raw")

    def find() -> list[Path] | None:
        for folder in folders:
            for suffix in (".gz", ""):
                paths = [folder / (name + suffix) for name in names]
                if all(path.is_file() for path in paths):
                    return paths
        return None

    paths = find()
    if paths is None and download:
        MNIST(str(root), train=train, download=True)
        paths = find()
    if paths is None:
        raise FileNotFoundError(
            f"MNIST not found under {root}: put {names[0]}.gz and {names[1]}.gz in {folders[0]}, "
            f"or pass download=True (torchvision fetches them to {folders[1]})"
        )
    return IdxMNIST(*paths)


@DATASETS.register("mnist_lt")
def mnist_lt(
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    max_count: int | None = None,
) -> LongTailedDataset:
    """MNIST-LT: the CIFAR-LT construction on MNIST (ratio 100, exponential by default).

    There is no canonical MNIST-LT; ``n_max`` defaults to the smallest MNIST training class (5421
    images of the digit 5) so every digit can supply its count. ``split="test"`` is the whole
    test set (10,000, as MNIST has it: 892 to 1135 per digit, not exactly balanced).
    """
    _check_split("mnist_lt", split, ("train", "test"))
    _check_profile(imbalance_ratio, profile)
    _check_seed(seed)
    base = load_mnist(root, train=split == "train", download=download)
    if split == "test":
        return LongTailedDataset(base, transform=transform)
    return make_long_tailed(
        base,
        imbalance_ratio=100 if imbalance_ratio is None else imbalance_ratio,
        profile="exponential" if profile is None else profile,
        seed=seed,
        max_count=max_count,
        transform=transform,
    )


# --------------------------------------------------------------------------------------------
# ImageNet-LT, iNaturalist 2018, Places-LT from their split files
# --------------------------------------------------------------------------------------------


class SplitFileDataset(Dataset):
    """Images listed in a split file, one ``relative/path.jpg label`` per line (the format of the
    ImageNet-LT, Places-LT and iNaturalist 2018 lists).

    Paths are relative to ``root`` (a leading ``/``, as some copies of the lists have, is
    dropped); the label is the last whitespace-separated field, so a path may contain spaces;
    blank lines are skipped. Images are opened with torchvision's ``default_loader`` (PIL, RGB)
    when an item is read, not before. ``classes`` are ``"0"``, ``"1"``, ... up to ``num_classes``
    (default: the largest label + 1). Attributes ``samples`` (``(path, label)`` pairs, as in
    ``ImageFolder``), ``targets``, ``class_counts``, ``classes``.

    Raises ``FileNotFoundError`` for a missing split file and ``ValueError`` naming the file and
    the line for a line without a label, a label that is not a non-negative integer, one at or
    beyond ``num_classes``, or a file without a single entry.
    """

    def __init__(
        self,
        root: str | Path,
        split_file: str | Path,
        transform: Callable[[Any], Any] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {transform!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        root, split_file = Path(root).expanduser(), Path(split_file).expanduser()
        if not split_file.is_file():
            raise FileNotFoundError(f"split file {split_file} does not exist")
        samples = []
        with open(split_file, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                fields = line.strip().rsplit(None, 1)
                if len(fields) != 2:
                    raise ValueError(
                        f"{split_file}, line {number}: expected 'relative/path label', got {line.strip()!r}"
                    )
                relative, label = fields
                if not (label.isascii() and label.isdigit()):
                    raise ValueError(f"{split_file}, line {number}: label {label!r} is not a non-negative integer")
                if num_classes is not None and int(label) >= num_classes:
                    raise ValueError(
                        f"{split_file}, line {number}: label {label} is not below num_classes={num_classes}"
                    )
                samples.append((str(root / relative.lstrip("/")), int(label)))
        if not samples:
            raise ValueError(f"split file {split_file} lists no image")
        self.root = root
        self.split_file = split_file
        self.transform = transform
        self.samples = samples
        self.targets = [label for _, label in samples]
        size = num_classes if num_classes is not None else max(self.targets) + 1
        self.classes = [str(label) for label in range(size)]
        self.class_counts = np.bincount(self.targets, minlength=size).tolist()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = default_loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def _split_file_dataset(name, root, split, imbalance_ratio, profile, seed, transform, download, image_root):
    _refuse_profile(name, imbalance_ratio, profile)
    if download:
        raise ValueError(f"{name} cannot be downloaded automatically; see the docstring of {name} for where to get it")
    _check_seed(seed)
    spec = SPLIT_FILES[name]
    _check_split(name, split, tuple(spec["splits"]))
    folder = data_root(root, holds=f"{spec['folder']}/") / spec["folder"]
    split_file = folder / spec["splits"][split]
    if not split_file.is_file():
        raise FileNotFoundError(
            f"{name} split file {split_file.name} not found in {folder}: put the standard split files "
            f"{sorted(set(spec['splits'].values()))} there, with the images at the paths they list "
            "(or pass image_root=<folder the paths are relative to>)"
        )
    base = SplitFileDataset(
        image_root if image_root is not None else folder, split_file, num_classes=spec["num_classes"]
    )
    return LongTailedDataset(base, transform=transform)


@DATASETS.register("imagenet_lt")
def imagenet_lt(
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    image_root: str | Path | None = None,
) -> LongTailedDataset:
    """ImageNet-LT (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019):
    1000 classes, 1280 to 5 training images per class; splits ``"train"``, ``"val"``, ``"test"``.

    Reads ``<root>/imagenet_lt/ImageNet_LT_{train,val,test}.txt`` (from the OLTR release,
    github.com/zhmiao/OpenLongTailRecognition-OLTR); the listed paths (``train/n01440764/...``)
    are relative to that folder, or to ``image_root`` (an ILSVRC-2012 copy, which needs an
    account at image-net.org). The profile is the split files'; ``seed`` is unused.
    """
    return _split_file_dataset(
        "imagenet_lt", root, split, imbalance_ratio, profile, seed, transform, download, image_root
    )


@DATASETS.register("inaturalist")
def inaturalist(
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    image_root: str | Path | None = None,
) -> LongTailedDataset:
    """iNaturalist 2018 (Van Horn et al., "The iNaturalist Species Classification and Detection
    Dataset", CVPR 2018): 8142 species, naturally long-tailed; splits ``"train"``, ``"val"`` and
    ``"test"`` (= ``"val"``, the split the literature reports).

    Reads ``<root>/inaturalist18/iNaturalist18_{train,val}.txt`` (as released with Kang et al.
    2020, github.com/facebookresearch/classifier-balancing); images from
    github.com/visipedia/inat_comp (2018). ``seed`` is unused.
    """
    return _split_file_dataset(
        "inaturalist", root, split, imbalance_ratio, profile, seed, transform, download, image_root
    )


@DATASETS.register("places_lt")
def places_lt(
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    image_root: str | Path | None = None,
) -> LongTailedDataset:
    """Places-LT (Liu et al. 2019, as ImageNet-LT): 365 scene classes, 4980 to 5 training images
    per class; splits ``"train"``, ``"val"``, ``"test"``.

    Reads ``<root>/places_lt/Places_LT_{train,val,test}.txt`` (OLTR release); images from
    Places-365-Standard (places2.csail.mit.edu). ``seed`` is unused.
    """
    return _split_file_dataset(
        "places_lt", root, split, imbalance_ratio, profile, seed, transform, download, image_root
    )


# --------------------------------------------------------------------------------------------
# The front door, and the class-count profile for people
# --------------------------------------------------------------------------------------------


def build_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    imbalance_ratio: float | None = None,
    profile: str | None = None,
    seed: int = 0,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    **options: Any,
) -> LongTailedDataset:
    """Build the dataset registered as ``name`` (``DATASETS.names()``; see the module docstring).

    Every builder takes the same arguments: ``root`` (default ``$EQUIPOISE_DATA``), ``split``,
    ``imbalance_ratio`` and ``profile`` (``None``: the dataset's own, 100 and ``"exponential"``
    for the CIFAR/MNIST-LT builders; datasets with a fixed profile refuse any other value),
    ``seed`` (which examples are kept; unused by the split-file datasets), ``transform`` (applied
    lazily) and ``download`` (torchvision's downloaders, CIFAR and MNIST only). ``options`` go to
    the builder: ``max_count`` (CIFAR/MNIST-LT), ``majority_class`` (MetaBalance),
    ``image_root`` (split-file datasets). Test splits are never subsampled.
    """
    return DATASETS.get(name)(
        root=root,
        split=split,
        imbalance_ratio=imbalance_ratio,
        profile=profile,
        seed=seed,
        transform=transform,
        download=download,
        **options,
    )


def dataset_from_config(data: Any, split: str = "train", augment: bool | None = None) -> LongTailedDataset:
    """The ``split`` of the dataset a ``DataConfig`` (``equipoise.vision.config``) describes.

    ``augment`` (default: ``split == "train"``) picks the training transform of
    ``data.augment`` (``equipoise.vision.transforms.build_transform``) or the evaluation one.
    """
    from equipoise.vision.transforms import build_transform

    if augment is None:
        augment = split == "train"
    return build_dataset(
        data.dataset,
        root=data.root,
        split=split,
        imbalance_ratio=data.imbalance_ratio,
        profile=data.profile,
        seed=data.seed,
        transform=build_transform(data.augment, train=augment, image_size=data.image_size),
        download=data.download,
        **data.options,
    )


def _counts_and_names(dataset: Any) -> tuple[list[int], list[str]]:
    counts = getattr(dataset, "class_counts", None)
    if counts is None:
        counts = np.bincount(labels_of(dataset).numpy()).tolist()
    names = getattr(dataset, "classes", None)
    names = list(names) if names is not None and len(names) == len(counts) else [str(c) for c in range(len(counts))]
    return list(counts), names


def describe(dataset: Any, max_rows: int = 20) -> str:
    """The class-count profile of ``dataset`` as markdown: a summary line and a table of each
    class's count, share of the examples, and imbalance ratio ``n_max / n_c`` (``inf`` for an
    empty class), largest class first.

    Counts come from ``dataset.class_counts`` or else ``labels_of(dataset)``, names from
    ``dataset.classes``. With more than ``max_rows`` classes, the ``max_rows // 2`` largest and
    smallest are shown around a ``...`` row.
    """
    if not isinstance(max_rows, int) or max_rows < 2:
        raise ValueError(f"max_rows must be an integer >= 2, got {max_rows!r}")
    counts, names = _counts_and_names(dataset)
    total, largest = sum(counts), max(counts)
    smallest = min(counts)
    ratio = largest / smallest if smallest else math.inf
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    rows: list[dict[str, Any]] = [
        {
            "class": c,
            "name": names[c],
            "count": counts[c],
            "share": counts[c] / total,
            "imbalance ratio": largest / counts[c] if counts[c] else math.inf,
        }
        for c in order
    ]
    if len(rows) > max_rows:
        half = max_rows // 2
        rows = rows[:half] + [dict.fromkeys(rows[0], "...")] + rows[-half:]
    summary = (
        f"{total} examples in {len(counts)} classes; largest class {largest}, smallest {smallest}, "
        f"imbalance ratio {ratio:.4g}\n\n"
    )
    return summary + markdown_table(rows)


def plot_class_counts(
    class_counts: Sequence[int] | np.ndarray | torch.Tensor,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "Training examples per class",
) -> Path:
    """Bar chart of the examples per class (class index order, log-scale y axis) written to the PNG ``path``.

    Drawn on a bare matplotlib ``Figure`` (Agg canvas), so pyplot's global state and backend
    are left alone. Class names label the bars up to 40 classes. Returns ``path``.
    """
    counts_tensor = as_class_counts(class_counts)
    check_class_counts(counts_tensor, allow_zero=True)
    counts = counts_tensor.numpy()
    if class_names is not None and len(class_names) != len(counts):
        raise ValueError(f"class_names has {len(class_names)} names for {len(counts)} classes")
    from matplotlib.figure import Figure

    size = len(counts)
    figure = Figure(figsize=(min(max(6.0, 0.3 * size + 2), 16.0), 4.5), dpi=120)
    axis = figure.subplots()
    axis.bar(np.arange(size), np.where(counts > 0, counts, np.nan), width=0.8, color="tab:blue", edgecolor="black")
    axis.set_yscale("log")
    axis.set_ylim(bottom=0.8, top=max(float(counts.max()), 1.0) * 1.5)
    if size <= 40:
        labels = list(class_names) if class_names is not None else [str(c) for c in range(size)]
        axis.set_xticks(np.arange(size), labels, rotation=90 if class_names is not None else 0, fontsize="small")
    axis.set_xlabel("class")
    axis.set_ylabel("examples (log scale)")
    positive = counts[counts > 0]
    ratio = f"{positive.max() / counts.min():.4g}" if counts.min() > 0 else "inf"
    axis.set_title(f"{title}\n{int(counts.sum())} examples, imbalance ratio {ratio}", fontsize="medium")
    axis.grid(True, axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
