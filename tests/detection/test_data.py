"""COCO detection data against independent oracles: the COCO128 annotation file re-read here with the
json module and its boxes converted by hand, the images decoded by PIL, hand-flipped coordinates,
hand-worked LVIS groups, and small (bad) COCO files written by the tests.

The real files come from ``EQUIPOISE_DATA`` (or ``../shared/data``); those tests skip without them.
"""

import collections
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equipoise.detection.data import (
    CocoDetection,
    HorizontalFlip,
    collate,
    frequency_groups,
    load_coco128,
)

SHARED = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
COCO128 = SHARED / "coco128"
ANNOTATIONS = COCO128 / "annotations" / "instances_val2017.json"
SKIP_REASON = "needs the shared COCO128 copy: set EQUIPOISE_DATA to the shared data folder (CI sets it)"
needs_coco128 = pytest.mark.skipif(not ANNOTATIONS.is_file(), reason=SKIP_REASON)

# Published facts of COCO128 (README of the shared data).
NUM_IMAGES, NUM_BOXES, NUM_CROWD, NUM_DECLARED, NUM_PRESENT = 128, 939, 10, 80, 71


@pytest.fixture(scope="module")
def raw():
    return json.loads(ANNOTATIONS.read_text())


@pytest.fixture(scope="module")
def dataset():
    return load_coco128(SHARED)


def _by_hand(annotations, category_ids):
    """COCO [x, y, w, h] to sorted [x1, y1, x2, y2] rows and their labels, the crowd left out."""
    rows = sorted(
        (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3], a["category_id"])
        for a in annotations
        if not a["iscrowd"] and a["category_id"] in category_ids
    )
    return rows


def _as_rows(target, category_ids):
    boxes = target["boxes"].tolist()
    return sorted((*box, category_ids[label]) for box, label in zip(boxes, target["labels"].tolist()))


@needs_coco128
def test_published_counts_and_json_counts(raw, dataset):
    assert len(raw["images"]) == NUM_IMAGES and len(raw["annotations"]) == NUM_BOXES
    assert sum(a["iscrowd"] for a in raw["annotations"]) == NUM_CROWD
    assert len(raw["categories"]) == NUM_DECLARED
    assert len({a["category_id"] for a in raw["annotations"]}) == NUM_PRESENT

    assert len(dataset) == NUM_IMAGES
    assert dataset.num_classes == NUM_DECLARED
    assert dataset.category_ids == sorted(c["id"] for c in raw["categories"])
    names = {c["id"]: c["name"] for c in raw["categories"]}
    assert dataset.class_names == [names[i] for i in dataset.category_ids]
    assert dataset.image_ids == sorted(i["id"] for i in raw["images"])
    assert dataset.dropped == {"crowd": NUM_CROWD, "degenerate": 0, "other_categories": 0, "empty_images_dropped": 0}
    assert len(dataset.coco.anns) == NUM_BOXES  # the evaluation ground truth keeps everything

    not_crowd = [a for a in raw["annotations"] if not a["iscrowd"]]
    boxes = collections.Counter(a["category_id"] for a in not_crowd)
    images = collections.Counter(c for c, _ in {(a["category_id"], a["image_id"]) for a in not_crowd})
    box_counts, image_counts = dataset.class_box_counts(), dataset.class_image_counts()
    assert box_counts.dtype == image_counts.dtype == torch.int64
    assert box_counts.tolist() == [boxes[c] for c in dataset.category_ids]
    assert image_counts.tolist() == [images[c] for c in dataset.category_ids]
    assert int(box_counts.sum()) == NUM_BOXES - NUM_CROWD
    assert int((image_counts > 0).sum()) == NUM_PRESENT

    per_image = collections.defaultdict(set)
    for a in not_crowd:
        per_image[a["image_id"]].add(dataset.category_ids.index(a["category_id"]))
    assert dataset.image_labels() == [sorted(per_image[i]) for i in dataset.image_ids]


@needs_coco128
@pytest.mark.parametrize("image_id", [9, 86, 315, 250])  # plain, grayscale JPEG, with 2 crowd boxes, no boxes
def test_items_match_json_and_pil(raw, dataset, image_id):
    index = dataset.image_ids.index(image_id)
    image, target = dataset[index]
    entry = next(i for i in raw["images"] if i["id"] == image_id)
    pil = np.asarray(Image.open(COCO128 / "val2017" / entry["file_name"]).convert("RGB"), dtype=np.float32) / 255
    assert image.dtype == torch.float32 and image.shape == (3, entry["height"], entry["width"])
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), pil)
    assert target["image_id"] == image_id and target["orig_size"] == (entry["height"], entry["width"])
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].shape == (len(target["labels"]), 4)
    expected = _by_hand([a for a in raw["annotations"] if a["image_id"] == image_id], set(dataset.category_ids))
    np.testing.assert_allclose(
        np.array(_as_rows(target, dataset.category_ids)).reshape(-1, 5),
        np.array(expected).reshape(-1, 5),
        rtol=0,
        atol=1e-4,
    )
    if image_id == 86:
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


@needs_coco128
def test_category_subset_order_and_drops(raw, caplog):
    kept = [62, 1, 3, 10]  # label order as given; traffic light (10) has a 1.81 x 1.93 px box
    with caplog.at_level(logging.INFO, logger="equipoise.detection.data"):
        subset = load_coco128(SHARED, categories=kept, drop_empty=True, min_box_size=2.0)
    assert subset.category_ids == kept and subset.class_names == ["chair", "person", "car", "traffic light"]
    kept_anns = [a for a in raw["annotations"] if a["category_id"] in kept]
    crowd = sum(a["iscrowd"] for a in kept_anns)
    degenerate = sum(1 for a in kept_anns if not a["iscrowd"] and min(a["bbox"][2], a["bbox"][3]) < 2.0)
    good = [a for a in kept_anns if not a["iscrowd"] and min(a["bbox"][2], a["bbox"][3]) >= 2.0]
    with_boxes = {a["image_id"] for a in good}
    assert subset.dropped == {
        "crowd": crowd,
        "degenerate": degenerate,
        "other_categories": NUM_BOXES - len(kept_anns),
        "empty_images_dropped": NUM_IMAGES - len(with_boxes),
    }
    assert crowd > 0 and degenerate > 0
    assert subset.image_ids == sorted(with_boxes)
    counts = collections.Counter(a["category_id"] for a in good)
    assert subset.class_box_counts().tolist() == [counts[c] for c in kept]
    _, target = subset[subset.image_ids.index(good[0]["image_id"])]
    expected = _by_hand([a for a in good if a["image_id"] == good[0]["image_id"]], set(kept))
    np.testing.assert_allclose(np.array(_as_rows(target, kept)), np.array(expected), atol=1e-4)
    message = " ".join(record.getMessage() for record in caplog.records)
    assert f"dropped {crowd} crowd and {degenerate} degenerate boxes" in message
    assert f"{NUM_IMAGES - len(with_boxes)} images without boxes" in message


@needs_coco128
def test_flip_against_hand_flipped_coordinates(dataset):
    index = dataset.image_ids.index(9)
    image, target = dataset.load(index)
    width = image.shape[-1]
    flipped_image, flipped = HorizontalFlip(p=1.0)(image, target)
    expected = [[width - x2, y1, width - x1, y2] for x1, y1, x2, y2 in target["boxes"].tolist()]
    np.testing.assert_allclose(flipped["boxes"].numpy(), np.array(expected, dtype=np.float32), atol=1e-4)
    assert type(flipped["boxes"]) is torch.Tensor and flipped["boxes"].dtype == torch.float32
    np.testing.assert_array_equal(flipped_image.numpy(), image.numpy()[:, :, ::-1])
    assert torch.equal(flipped["labels"], target["labels"]) and flipped["image_id"] == 9
    # Flipping twice is the identity; p=0 never flips.
    twice_image, twice = HorizontalFlip(p=1.0)(flipped_image, flipped)
    assert torch.equal(twice_image, image) and torch.allclose(twice["boxes"], target["boxes"], atol=1e-4)
    same_image, same = HorizontalFlip(p=0.0)(image, target)
    assert same_image is image and same is target
    # Through the dataset's transforms.
    flipping = load_coco128(SHARED, transforms=HorizontalFlip(1.0))
    through_image, through = flipping[index]
    assert torch.equal(through_image, flipped_image) and torch.allclose(through["boxes"], flipped["boxes"])


def test_flip_probability_and_generator():
    image, target = torch.rand(3, 4, 10), {"boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]]), "labels": torch.tensor([0])}

    def flips(seed):
        flip = HorizontalFlip(p=0.3, generator=torch.Generator().manual_seed(seed))
        return [flip(image, target)[1]["boxes"][0, 0].item() == 7.0 for _ in range(2000)]

    first = flips(0)
    assert first == flips(0) and first != flips(1)
    # Binomial(2000, 0.3): standard deviation 20.5, so 0.3 +- 0.05 is about 5 standard deviations.
    assert abs(sum(first) / len(first) - 0.3) < 0.05
    for p in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="p must be a probability"):
            HorizontalFlip(p)


def test_collate():
    batch = [(torch.zeros(3, 2, 2), {"image_id": 1}), (torch.ones(3, 4, 5), {"image_id": 2})]
    images, targets = collate(batch)
    assert isinstance(images, list) and isinstance(targets, list)
    assert [i.shape for i in images] == [(3, 2, 2), (3, 4, 5)] and [t["image_id"] for t in targets] == [1, 2]


def test_frequency_groups_hand_example():
    counts = [0, 1, 10, 11, 100, 101, 5000, 3]
    assert frequency_groups(counts) == {"rare": [1, 2, 7], "common": [3, 4], "frequent": [5, 6]}
    assert frequency_groups(torch.tensor(counts), rare_max=1, common_max=11) == {
        "rare": [1],
        "common": [2, 3, 7],
        "frequent": [4, 5, 6],
    }
    for kwargs in ({"rare_max": 0}, {"rare_max": 10, "common_max": 10}, {"rare_max": 20, "common_max": 5}):
        with pytest.raises(ValueError, match="rare_max"):
            frequency_groups(counts, **kwargs)
    with pytest.raises(TypeError, match="rare_max"):
        frequency_groups(counts, rare_max=2.5)
    with pytest.raises(ValueError, match="negative"):
        frequency_groups([1, -1])
    with pytest.raises(ValueError, match="whole numbers"):
        frequency_groups([1.5, 2])


# --------------------------------------------------------------------------------------------
# Small COCO files written here
# --------------------------------------------------------------------------------------------


def _tiny(tmp_path, annotations, size=(20, 30), images=None):
    """A 20x30 (height x width) image and an instances file with ``annotations``; returns both paths."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(folder / "a.jpg")
    content = {
        "images": images or [{"id": 5, "file_name": "a.jpg", "height": 20, "width": 30}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": annotations,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(content))
    return folder, path


def _annotation(id, bbox, category_id=7, **extra):
    return {"id": id, "image_id": 5, "category_id": category_id, "bbox": bbox, "iscrowd": 0, **extra}


def test_clipping_and_degenerate_boxes_by_hand(tmp_path):
    folder, path = _tiny(
        tmp_path,
        [
            _annotation(1, [-5, 2, 10, 30], category_id=3),  # clipped to [0, 2, 5, 20]
            _annotation(2, [25, 10, 10, 5]),  # clipped to [25, 10, 30, 15]
            _annotation(3, [40, 0, 5, 5]),  # entirely right of the image: degenerate
            _annotation(4, [1, 1, 0.5, 8]),  # 0.5 px wide: degenerate under min_box_size=1
            _annotation(5, [1, 1, 8, 8], iscrowd=1),
        ],
    )
    dataset = CocoDetection(folder, path)
    assert dataset.category_ids == [3, 7] and dataset.class_names == ["dog", "cat"]
    image, target = dataset[0]
    assert image.shape == (3, 20, 30)
    assert target["boxes"].tolist() == [[0.0, 2.0, 5.0, 20.0], [25.0, 10.0, 30.0, 15.0]]
    assert target["labels"].tolist() == [0, 1]
    assert dataset.dropped == {"crowd": 1, "degenerate": 2, "other_categories": 0, "empty_images_dropped": 0}
    assert CocoDetection(folder, path, min_box_size=0.0).dropped["degenerate"] == 1  # zero width always goes


def test_image_without_boxes_kept_or_dropped(tmp_path):
    folder, path = _tiny(tmp_path, [])
    kept = CocoDetection(folder, path)
    _, target = kept[0]
    assert len(kept) == 1 and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert kept.image_labels() == [[]] and kept.class_image_counts().tolist() == [0, 0]
    dropped = CocoDetection(folder, path, drop_empty=True)
    assert len(dropped) == 0 and dropped.dropped["empty_images_dropped"] == 1


@pytest.mark.parametrize(
    ("annotation", "problem"),
    [
        (_annotation(11, [1, 2, 3]), "annotation id 11: bbox must be 4 finite numbers"),
        (_annotation(12, [1, 2, float("nan"), 3]), "annotation id 12: bbox must be 4 finite numbers"),
        (_annotation(13, [1, 2, "3", 4]), "annotation id 13: bbox must be 4 finite numbers"),
        (_annotation(14, [1, 2, -3, 4]), "annotation id 14: bbox width and height must be >= 0"),
        (_annotation(15, [1, 2, 3, 4], category_id=99), "annotation id 15: category_id 99 is not among"),
        ({**_annotation(16, [1, 2, 3, 4]), "image_id": 6}, "annotation id 16: image_id 6 is not among"),
        (_annotation(17, [1, 2, 3, 4], area=float("inf")), "annotation id 17: area must be a finite number"),
    ],
)
def test_malformed_annotations_raise(tmp_path, annotation, problem):
    folder, path = _tiny(tmp_path, [_annotation(1, [1, 1, 4, 4]), annotation])
    with pytest.raises(ValueError, match=problem) as error:
        CocoDetection(folder, path)
    assert str(path) in str(error.value)


def test_malformed_files_raise(tmp_path):
    folder, path = _tiny(tmp_path, [_annotation(1, [1, 1, 4, 4]), _annotation(1, [2, 2, 4, 4])])
    with pytest.raises(ValueError, match="duplicate annotation id 1"):
        CocoDetection(folder, path)
    folder, path = _tiny(tmp_path, [], images=[{"id": 5, "file_name": "a.jpg", "height": 0, "width": 30}])
    with pytest.raises(ValueError, match="image id 5: height must be a positive integer"):
        CocoDetection(folder, path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="holds a JSON object"):
        CocoDetection(folder, path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoDetection(folder, path)
    folder, path = _tiny(tmp_path, [])
    with pytest.raises(ValueError, match="categories names 4"):
        CocoDetection(folder, path, categories=[7, 4])
    with pytest.raises(ValueError, match="duplicates"):
        CocoDetection(folder, path, categories=[7, 7])
    with pytest.raises(ValueError, match="min_box_size"):
        CocoDetection(folder, path, min_box_size=-1)


def test_image_size_disagreeing_with_the_file_raises(tmp_path):
    folder, path = _tiny(tmp_path, [_annotation(1, [1, 1, 4, 4])], size=(30, 20))
    with pytest.raises(ValueError, match="says 30x20 for image id 5"):
        CocoDetection(folder, path)[0]


def test_missing_paths_explain_where_coco_comes_from(tmp_path, monkeypatch):
    folder, path = _tiny(tmp_path, [])
    with pytest.raises(FileNotFoundError, match="annotation file not found.*cocodataset.org"):
        CocoDetection(folder, tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="image folder not found.*COCO128"):
        CocoDetection(tmp_path / "missing", path)
    with pytest.raises(FileNotFoundError, match="coco128"):
        load_coco128(tmp_path)
    monkeypatch.delenv("EQUIPOISE_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="EQUIPOISE_DATA"):
        load_coco128()
    (folder / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="a.jpg of COCO image id 5"):
        CocoDetection(folder, path)[0]


@needs_coco128
def test_targets_train_torchvision_retinanet(dataset):
    """The contract: a collated batch goes straight into torchvision's RetinaNet in training mode."""
    from torchvision.models.detection import retinanet_resnet50_fpn

    torch.manual_seed(0)  # the test's own model initialisation, not library code
    model = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=dataset.num_classes, min_size=128, max_size=160
    )
    model.train()
    # An image with boxes (one flipped) and one without any box.
    images, targets = collate([dataset[0], HorizontalFlip(1.0)(*dataset[1]), dataset[dataset.image_ids.index(250)]])
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(bool(torch.isfinite(value)) for value in losses.values())
