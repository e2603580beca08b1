"""COCO-format detection data: images with box targets for torchvision detection models.

>>> from torch.utils.data import DataLoader
>>> from equipoise.detection.data import HorizontalFlip, collate, frequency_groups, load_coco128
>>> train = load_coco128(transforms=HorizontalFlip(0.5))      # root from EQUIPOISE_DATA
>>> loader = DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate)
>>> groups = frequency_groups(train.class_image_counts())     # LVIS rare / common / frequent

:class:`CocoDetection` reads a COCO "instances" file (Lin, Maire, Belongie, Hays, Perona, Ramanan,
Dollar, Zitnick, "Microsoft COCO: Common Objects in Context", ECCV 2014; format at
https://cocodataset.org/#format-data) through pycocotools and yields ``(image, target)`` pairs in
the form torchvision's detection models (RetinaNet, Faster R-CNN, ...) take in training:

- ``image``: float32 ``(3, H, W)`` in [0, 1], RGB (grayscale JPEGs are expanded to three
  channels), decoded by PIL (``torchvision.io.decode_image`` is deprecated from torchvision 0.29 on
  in favour of TorchCodec; PIL gives the same pixels for COCO's JPEGs), EXIF orientation not
  applied: COCO's boxes and ``width``/``height`` refer to the stored pixels, and a file whose size
  differs from its entry raises ``ValueError``;
- ``target["boxes"]``: float32 ``(n, 4)``, ``x1, y1, x2, y2`` in pixels (COCO's ``[x, y, width,
  height]`` converted and clipped to the image);
- ``target["labels"]``: int64 ``(n,)``, contiguous labels ``0..K-1`` (label ``k`` is COCO category
  ``category_ids[k]``; COCO's own ids run from 1 to 90 with gaps);
- ``target["image_id"]``: the COCO image id (int); ``target["orig_size"]``: ``(H, W)`` (ints).

What is left out of the training targets, each counted in ``dropped`` and logged at INFO:
crowd annotations (``iscrowd=1``: one box around a group of objects, which COCO evaluation treats
as a region where detections are ignored, not as an object to find), degenerate boxes (width or
height below ``min_box_size`` pixels after clipping: torchvision's detection models refuse boxes of
zero width or height) and annotations of categories not kept (``other_categories``). Images left
without a box stay in the dataset (pure background, which RetinaNet's focal loss uses) unless
``drop_empty=True``. Evaluation (``equipoise.detection.metrics``) reads the untouched annotations
from ``dataset.coco``, crowd regions included, as the COCO protocol does.

Class statistics for long-tail methods count training targets (crowd and degenerate boxes
excluded): :meth:`CocoDetection.class_image_counts` (images containing each class, the frequency
LVIS groups and repeat-factor sampling use), :meth:`CocoDetection.class_box_counts` and
:meth:`CocoDetection.image_labels` (the classes present in each image).
:func:`frequency_groups` splits classes into rare / common / frequent as LVIS does (Gupta, Dollar,
Girshick, "LVIS: A Dataset for Large Vocabulary Instance Segmentation", CVPR 2019: rare 1-10
training images, common 11-100, frequent more than 100).

Where the data come from: COCO 2017 from https://cocodataset.org (``annotations_trainval2017.zip``
holds ``annotations/instances_train2017.json`` and ``instances_val2017.json``; the images are in
``train2017.zip`` and ``val2017.zip``). COCO128 (:func:`load_coco128`) is Ultralytics' 128-image
sample: the first 128 images of COCO train2017 with their boxes (939 boxes, 10 of them crowd; 80
categories declared, 71 present; two images without any box), stored in the COCO layout
``<root>/coco128/val2017/*.jpg`` and ``<root>/coco128/annotations/instances_val2017.json`` (the file
names are the layout's, the images are from train2017 as their ``coco_url`` says). ``root`` is an
argument or, when ``None``, the environment variable ``EQUIPOISE_DATA``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as tvf

from equipoise.core.paths import data_root
from equipoise.core.validation import ArrayLike, as_class_counts, check_class_counts

__all__ = [
    "COCO128_FOLDER",
    "CocoDetection",
    "HorizontalFlip",
    "flip_horizontal",
    "collate",
    "frequency_groups",
    "load_coco128",
]

logger = logging.getLogger(__name__)

#: The folder of COCO128 under the data root.
COCO128_FOLDER = "coco128"

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

_WHERE_COCO = (
    "COCO 2017 comes from https://cocodataset.org (annotations_trainval2017.zip holds "
    "annotations/instances_train2017.json and instances_val2017.json; images in train2017.zip and "
    "val2017.zip). COCO128 (Ultralytics' first 128 train2017 images) is expected as "
    f"<root>/{COCO128_FOLDER}/val2017/*.jpg and <root>/{COCO128_FOLDER}/annotations/instances_val2017.json, "
    "with root passed as root= or set in the environment variable EQUIPOISE_DATA"
)


class CocoDetection(Dataset):
    """Images and box targets of a COCO "instances" file (see the module docstring for the format).

    Args:
        images: the folder holding the images named by the file's ``file_name`` entries.
        annotations: the COCO json file (``instances_*.json``).
        categories: the COCO category ids to keep, in label order (label ``k`` is ``categories[k]``);
            default every declared category, sorted by id (80 for COCO).
        drop_empty: leave out images with no box left (default keep them as background).
        min_box_size: boxes whose width or height, after clipping to the image, is below this many
            pixels are degenerate and dropped (default 1.0). Boxes of zero width or height, which
            torchvision's models refuse, are dropped whatever ``min_box_size`` says.
        transforms: ``transforms(image, target) -> (image, target)``, applied in ``__getitem__``
            (e.g. :class:`HorizontalFlip`); :meth:`load` gives an item without it.

    Attributes:
        coco: the ``pycocotools.coco.COCO`` object of the whole file (every annotation, crowd too).
        image_ids: the COCO ids of the dataset's images, in item order (increasing id).
        category_ids: ``category_ids[label]`` is the COCO category id of ``label``.
        class_names: ``class_names[label]``, the category names.
        dropped: counts of what the targets leave out: ``crowd``, ``degenerate``,
            ``other_categories`` (annotations) and ``empty_images_dropped`` (images).

    Raises:
        FileNotFoundError: the folder or the file is missing (the message says where COCO comes from).
        ValueError: the file is malformed: not a COCO instances dict, an image without a positive
            ``width``/``height``, an annotation whose ``bbox`` is not 4 finite numbers with width
            and height >= 0, whose ``category_id`` or ``image_id`` is not declared, a duplicate id, or
            ``categories`` naming an undeclared category. The message names the file and the id.
    """

    def __init__(
        self,
        images: str | os.PathLike,
        annotations: str | os.PathLike,
        categories: Sequence[int] | None = None,
        drop_empty: bool = False,
        min_box_size: float = 1.0,
        transforms: Transform | None = None,
    ) -> None:
        for name, value in (("images", images), ("annotations", annotations)):
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
        if isinstance(min_box_size, bool) or not isinstance(min_box_size, (int, float)):
            raise TypeError(f"min_box_size must be a number, got {type(min_box_size).__name__}")
        if not math.isfinite(min_box_size) or min_box_size < 0:
            raise ValueError(f"min_box_size must be a finite number >= 0, got {min_box_size}")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"transforms must be callable or None, got {type(transforms).__name__}")
        self.images_dir = Path(images)
        self.annotations_file = Path(annotations)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {self.images_dir}. {_WHERE_COCO}")
        if not self.annotations_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {self.annotations_file}. {_WHERE_COCO}")
        self.transforms = transforms
        self.min_box_size = float(min_box_size)

        content = _read_annotations(self.annotations_file)
        declared = {category["id"]: str(category["name"]) for category in content["categories"]}
        if categories is None:
            self.category_ids = sorted(declared)
        else:
            self.category_ids = _check_categories(categories, declared, self.annotations_file)
        self.class_names = [declared[category_id] for category_id in self.category_ids]
        self.coco = COCO()
        self.coco.dataset = content
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints its progress
            self.coco.createIndex()

        label_of = {category_id: label for label, category_id in enumerate(self.category_ids)}
        self.dropped = {"crowd": 0, "degenerate": 0, "other_categories": 0, "empty_images_dropped": 0}
        self.image_ids: list[int] = []
        self._files: list[Path] = []
        self._sizes: list[tuple[int, int]] = []
        self._boxes: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        for image in sorted(content["images"], key=lambda entry: entry["id"]):
            height, width = image["height"], image["width"]
            boxes, labels = [], []
            for annotation in self.coco.imgToAnns.get(image["id"], []):
                label = label_of.get(annotation["category_id"])
                if label is None:
                    self.dropped["other_categories"] += 1
                    continue
                if annotation.get("iscrowd", 0):
                    self.dropped["crowd"] += 1
                    continue
                x, y, box_width, box_height = annotation["bbox"]
                x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
                x2, y2 = min(max(x + box_width, 0.0), width), min(max(y + box_height, 0.0), height)
                if x2 - x1 < self.min_box_size or y2 - y1 < self.min_box_size or x2 <= x1 or y2 <= y1:
                    self.dropped["degenerate"] += 1
                    continue
                boxes.append((x1, y1, x2, y2))
                labels.append(label)
            if drop_empty and not boxes:
                self.dropped["empty_images_dropped"] += 1
                continue
            self.image_ids.append(int(image["id"]))
            self._files.append(self.images_dir / image["file_name"])
            self._sizes.append((int(height), int(width)))
            self._boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            self._labels.append(torch.tensor(labels, dtype=torch.int64))
        logger.info(
            "%s: %d images, %d boxes of %d categories kept; dropped %d crowd and %d degenerate boxes "
            "(width or height < %g px), %d annotations of other categories, %d images without boxes",
            self.annotations_file,
            len(self.image_ids),
            sum(len(labels) for labels in self._labels),
            len(self.category_ids),
            self.dropped["crowd"],
            self.dropped["degenerate"],
            self.min_box_size,
            self.dropped["other_categories"],
            self.dropped["empty_images_dropped"],
        )

    @property
    def num_classes(self) -> int:
        """``K``, the number of kept categories."""
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, index: int) -> tuple[torch.Tensor, Target]:
        """Item ``index`` without ``transforms``: the image as stored and its target (fresh tensors)."""
        path = self._files[index]
        if not path.is_file():
            raise FileNotFoundError(f"image {path} of COCO image id {self.image_ids[index]} not found. {_WHERE_COCO}")
        with Image.open(path) as file:
            image = tvf.pil_to_tensor(file.convert("RGB"))  # grayscale expanded, alpha dropped; uint8 (3, H, W)
        height, width = self._sizes[index]
        if tuple(image.shape[-2:]) != (height, width):
            raise ValueError(
                f"{path}: the image is {image.shape[-1]}x{image.shape[-2]} (width x height) but "
                f"{self.annotations_file} says {width}x{height} for image id {self.image_ids[index]}"
            )
        target = {
            "boxes": self._boxes[index].clone(),
            "labels": self._labels[index].clone(),
            "image_id": self.image_ids[index],
            "orig_size": (height, width),
        }
        return image.to(torch.float32).div_(255), target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, target = self.load(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def image_labels(self) -> list[list[int]]:
        """The sorted distinct labels of each image's target, in item order (for repeat-factor sampling)."""
        return [sorted(set(labels.tolist())) for labels in self._labels]

    def class_image_counts(self) -> torch.Tensor:
        """int64 ``(K,)``: how many of the dataset's images contain each class (training targets)."""
        counts = torch.zeros(self.num_classes, dtype=torch.int64)
        for labels in self._labels:
            counts[labels.unique()] += 1
        return counts

    def class_box_counts(self) -> torch.Tensor:
        """int64 ``(K,)``: how many boxes of each class the training targets hold."""
        if not self._labels:
            return torch.zeros(self.num_classes, dtype=torch.int64)
        return torch.bincount(torch.cat(self._labels), minlength=self.num_classes)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.annotations_file.name}: {len(self)} images, "
            f"{int(self.class_box_counts().sum())} boxes, {self.num_classes} classes, dropped={self.dropped})"
        )


def _read_annotations(path: Path) -> dict[str, Any]:
    """The parsed file after the checks :class:`CocoDetection` documents (pycocotools checks nothing)."""
    try:
        with path.open(encoding="utf-8") as file:
            content = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path}: a COCO instances file holds a JSON object, got {type(content).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(content.get(key), list):
            raise ValueError(f"{path}: a COCO instances file needs a list under {key!r}")

    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def check_ids(kind: str) -> set[int]:
        seen: set[int] = set()
        for position, entry in enumerate(content[kind]):
            if not isinstance(entry, dict) or isinstance(entry.get("id"), bool) or not isinstance(entry.get("id"), int):
                raise ValueError(f"{path}: {kind}[{position}] has no integer 'id'")
            if entry["id"] in seen:
                raise ValueError(f"{path}: duplicate {kind[:-1]} id {entry['id']}")
            seen.add(entry["id"])
        return seen

    category_ids = check_ids("categories")
    for category in content["categories"]:
        if "name" not in category:
            raise ValueError(f"{path}: category id {category['id']} has no 'name'")
    image_ids = check_ids("images")
    for image in content["images"]:
        if not isinstance(image.get("file_name"), str):
            raise ValueError(f"{path}: image id {image['id']} has no 'file_name'")
        for key in ("width", "height"):
            value = image.get(key)
            if not is_number(value) or value <= 0 or value != int(value):
                raise ValueError(f"{path}: image id {image['id']}: {key} must be a positive integer, got {value!r}")
    check_ids("annotations")
    for annotation in content["annotations"]:
        where = f"{path}: annotation id {annotation['id']}"
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(value) for value in bbox):
            raise ValueError(f"{where}: bbox must be 4 finite numbers [x, y, width, height], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"{where}: bbox width and height must be >= 0, got {bbox!r}")
        if annotation.get("category_id") not in category_ids:
            raise ValueError(
                f"{where}: category_id {annotation.get('category_id')!r} is not among the declared categories"
            )
        if annotation.get("image_id") not in image_ids:
            raise ValueError(f"{where}: image_id {annotation.get('image_id')!r} is not among the declared images")
        if annotation.get("iscrowd", 0) not in (0, 1):
            raise ValueError(f"{where}: iscrowd must be 0 or 1, got {annotation.get('iscrowd')!r}")
        if "area" in annotation and not is_number(annotation["area"]):
            raise ValueError(f"{where}: area must be a finite number, got {annotation['area']!r}")
    return content


def _check_categories(categories: Sequence[int], declared: Mapping[int, str], path: Path) -> list[int]:
    if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
        raise TypeError(f"categories must be a sequence of COCO category ids, got {type(categories).__name__}")
    kept = list(categories)
    if not kept:
        raise ValueError("categories is empty: keep at least one category")
    for category_id in kept:
        if isinstance(category_id, bool) or not isinstance(category_id, int):
            raise TypeError(f"categories must hold int COCO category ids, got {category_id!r}")
        if category_id not in declared:
            raise ValueError(f"categories names {category_id}, which {path} does not declare (ids {sorted(declared)})")
    if len(set(kept)) != len(kept):
        raise ValueError(f"categories holds duplicates: {kept}")
    return kept


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """``[(image, target), ...]`` to ``([image, ...], [target, ...])``, the input of torchvision's detection
    models (images of different sizes cannot be stacked; the model resizes and batches them itself)."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def load_coco128(root: str | os.PathLike | None = None, **kwargs: Any) -> CocoDetection:
    """COCO128 from ``<root>/coco128`` (``root`` defaults to ``$EQUIPOISE_DATA``).

    ``kwargs`` go to :class:`CocoDetection` (``categories``, ``drop_empty``, ``min_box_size``,
    ``transforms``). Default: 128 images, 929 boxes (939 less 10 crowd), 80 classes of which 71 occur.
    """
    folder = data_root(root, holds=f"{COCO128_FOLDER}/") / COCO128_FOLDER
    return CocoDetection(folder / "val2017", folder / "annotations" / "instances_val2017.json", **kwargs)


def frequency_groups(class_image_counts: ArrayLike, rare_max: int = 10, common_max: int = 100) -> dict[str, list[int]]:
    """Classes grouped by how many training images contain them, as LVIS defines the groups.

    Gupta, Dollar, Girshick, "LVIS: A Dataset for Large Vocabulary Instance Segmentation", CVPR 2019,
    Section 4: ``rare`` classes occur in 1 to ``rare_max`` (10) training images, ``common`` in
    ``rare_max + 1`` to ``common_max`` (100), ``frequent`` in more than ``common_max``. Classes in no
    training image belong to no group. Returns ``{"rare": [...], "common": [...], "frequent": [...]}``,
    the labels of each group in increasing order.

    ``class_image_counts``: ``(K,)`` non-negative integer counts (e.g.
    :meth:`CocoDetection.class_image_counts`); ``1 <= rare_max < common_max`` (ints).
    """
    for name, value in (("rare_max", rare_max), ("common_max", common_max)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= rare_max < common_max:
        raise ValueError(f"need 1 <= rare_max < common_max, got rare_max={rare_max}, common_max={common_max}")
    counts = as_class_counts(class_image_counts, name="class_image_counts")
    check_class_counts(counts, name="class_image_counts", allow_zero=True)
    if not bool((counts == counts.round()).all()):
        raise ValueError(f"class_image_counts must hold whole numbers, got {counts.tolist()}")
    return {
        "rare": torch.nonzero((counts >= 1) & (counts <= rare_max)).flatten().tolist(),
        "common": torch.nonzero((counts > rare_max) & (counts <= common_max)).flatten().tolist(),
        "frequent": torch.nonzero(counts > common_max).flatten().tolist(),
    }


def flip_horizontal(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """``image`` and its xyxy ``target["boxes"]`` mirrored left to right (torchvision's geometry)."""
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
    flipped = tvf.horizontal_flip(boxes).as_subclass(torch.Tensor)
    return tvf.horizontal_flip(image), {**target, "boxes": flipped}


class HorizontalFlip:
    """Training transform: with probability ``p``, mirror the image and its boxes left to right.

    The geometry is torchvision's (``transforms.v2.functional.horizontal_flip`` on the image and on
    the boxes as ``tv_tensors.BoundingBoxes``): for an image of width ``W``, ``x1' = W - x2`` and
    ``x2' = W - x1``; ``y`` is unchanged. ``torchvision.transforms.v2.RandomHorizontalFlip`` is not
    used as such because it draws from the global generator only and needs the target's boxes
    wrapped as ``tv_tensors``; here the coin comes from ``generator`` when one is given, else from
    torch's global generator, which a ``DataLoader`` seeds differently in each worker from its own
    ``generator`` (a generator passed here would be copied into every worker and flip alike).

    Called as ``flip(image, target)`` with ``image`` ``(C, H, W)`` and ``target["boxes"]`` xyxy
    ``(n, 4)``; returns a new ``(image, target)`` (other target entries are passed on).
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.p = float(p)
        self.generator = generator

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return image, target
        return flip_horizontal(image, target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"
