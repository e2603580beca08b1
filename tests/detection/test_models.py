"""The RetinaNet builder and its loss head: against torchvision's own head and model, by hand, and the weights files.

Oracles: torchvision's stock ``RetinaNetClassificationHead`` / ``RetinaNet`` with the same weights
(its focal loss, per-image normalisation), ``torchvision.ops.sigmoid_focal_loss`` summed by hand
for the batch normalisation, the published sha256 of torchvision's MobileNetV2 file and its
tensors read directly.
"""

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetClassificationHead
from torchvision.ops import sigmoid_focal_loss

from equipoise.core.checkpoint import file_sha256
from equipoise.core.losses import EQLv2Loss, SigmoidFocalLoss, SigmoidSeesawLoss
from equipoise.detection.models import (
    BACKBONES,
    IMAGENET_WEIGHTS,
    LossClassificationHead,
    backbone_state_dict,
    build_retinanet,
    head_loss,
)

SHARED = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
MOBILENET_FILE = SHARED / "weights" / IMAGENET_WEIGHTS["mobilenet_v2"]["file"]
needs_weights = pytest.mark.skipif(
    not MOBILENET_FILE.is_file(), reason="needs the shared MobileNetV2 weights: set EQUIPOISE_DATA (CI sets it)"
)
TINY = {"backbone_weights": None, "fpn_channels": 16, "min_size": 64, "max_size": 96}


def batch():
    """Two images, the second without objects, one object touching the border."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 80, 96, generator=generator), torch.rand(3, 64, 72, generator=generator)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [50.0, 10.0, 96.0, 70.0]]), "labels": torch.tensor([2, 0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    return images, targets


def head_inputs(num_classes=3, generator_seed=1):
    """Logits and matched indices of two images as RetinaNet hands them to the head."""
    generator = torch.Generator().manual_seed(generator_seed)
    logits = torch.randn(2, 50, num_classes, generator=generator)
    matched = [torch.randint(-2, 3, (50,), generator=generator), torch.randint(-2, 2, (50,), generator=generator)]
    targets = [{"labels": torch.tensor([1, 2, 0])}, {"labels": torch.tensor([2, 2])}]
    return targets, {"cls_logits": logits}, matched


def test_head_with_focal_and_image_normaliser_is_torchvisions_head():
    targets, outputs, matched = head_inputs()
    ours = LossClassificationHead(16, 9, 3, head_loss("sigmoid_focal", 3), normalizer="image")
    stock = RetinaNetClassificationHead(16, 9, 3)
    assert torch.equal(ours.compute_loss(targets, outputs, matched), stock.compute_loss(targets, outputs, matched))


def test_batch_normaliser_divides_the_summed_focal_loss_by_all_foreground_anchors():
    targets, outputs, matched = head_inputs()
    ours = LossClassificationHead(16, 9, 3, head_loss("sigmoid_focal", 3))
    total, foreground = 0.0, 0
    for target, logits, image_matched in zip(targets, outputs["cls_logits"], matched):
        rows = []
        for anchor in range(logits.shape[0]):
            index = int(image_matched[anchor])
            if index == -2:  # between thresholds: ignored
                continue
            one_hot = torch.zeros(3)
            if index >= 0:
                one_hot[target["labels"][index]] = 1.0
                foreground += 1
            rows.append((logits[anchor], one_hot))
        x = torch.stack([row[0] for row in rows])
        y = torch.stack([row[1] for row in rows])
        total = total + sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0, reduction="sum")
    torch.testing.assert_close(ours.compute_loss(targets, outputs, matched), total / foreground)


def test_no_foreground_anywhere_divides_by_one():
    targets, outputs, _ = head_inputs()
    matched = [torch.full((50,), -1), torch.full((50,), -1)]
    ours = LossClassificationHead(16, 9, 3, head_loss("sigmoid_focal", 3))
    expected = sigmoid_focal_loss(outputs["cls_logits"].reshape(-1, 3), torch.zeros(100, 3), reduction="sum")
    torch.testing.assert_close(ours.compute_loss(targets, outputs, matched), expected)


def test_head_layers_and_prior_bias_match_torchvision():
    ours = LossClassificationHead(16, 9, 5, head_loss("sigmoid_focal", 5), prior_probability=0.01)
    stock = RetinaNetClassificationHead(16, 9, 5, prior_probability=0.01)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in stock.state_dict().items()}
    torch.testing.assert_close(ours.cls_logits.bias, torch.full((45,), -math.log(99.0)))
    assert torch.sigmoid(ours.cls_logits.bias[0]).item() == pytest.approx(0.01)


def test_whole_model_losses_equal_torchvisions_retinanet_with_the_same_weights():
    torch.manual_seed(0)
    ours = build_retinanet(3, normalizer="image", **TINY).train()
    stock = RetinaNet(ours.backbone, 3, min_size=64, max_size=96).train()
    stock.load_state_dict(ours.state_dict())
    images, targets = batch()
    ours_losses, stock_losses = ours(images, targets), stock(images, targets)
    assert ours_losses.keys() == stock_losses.keys() == {"classification", "bbox_regression"}
    for key in ours_losses:
        torch.testing.assert_close(ours_losses[key], stock_losses[key])
    assert isinstance(ours.head.classification_head.loss, SigmoidFocalLoss)


@pytest.mark.parametrize(
    ("loss", "options", "kind"), [("eqlv2", {}, EQLv2Loss), ("sigmoid_seesaw", {}, SigmoidSeesawLoss)]
)
def test_long_tail_losses_train_through_the_model_and_keep_their_statistics(loss, options, kind):
    torch.manual_seed(0)
    model = build_retinanet(3, loss=loss, loss_options=options, **TINY).train()
    head_loss_module = model.head.classification_head.loss
    assert isinstance(head_loss_module, kind) and head_loss_module.reduction == "sum"
    images, targets = batch()
    losses = model(images, targets)
    assert all(torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    statistics = {key: value.clone() for key, value in head_loss_module.state_dict().items()}
    assert any(value.abs().sum() > 0 for value in statistics.values())  # gradients or counts were collected
    state = model.state_dict()
    assert all(f"head.classification_head.loss.{key}" in state for key in statistics)


def test_head_loss_validation():
    assert head_loss("eqlv2", 7).num_classes == 7
    with pytest.raises(ValueError, match="takes class indices"):
        head_loss("cross_entropy", 3)
    with pytest.raises(ValueError, match="must not set 'reduction'"):
        head_loss("sigmoid_focal", 3, {"reduction": "mean"})
    with pytest.raises(ValueError, match="unknown loss 'focall'"):
        head_loss("focall", 3)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"min_size": 16}, "min_size must be an int >= 32"),
        ({"min_size": 128, "max_size": 96}, "max_size must be >= min_size"),
        ({"backbone": "vgg16"}, "unknown detection backbone 'vgg16'"),
        ({"prior_probability": 1.0}, r"prior_probability must be in \(0, 1\)"),
        ({"normalizer": "anchors"}, "normalizer must be one of"),
        ({"trainable_backbone_layers": 6}, r"trainable_backbone_layers must be in \[0, 5\]"),
    ],
)
def test_builder_rejects_bad_arguments(changes, match):
    arguments = {"num_classes": 3, **TINY, **changes}
    with pytest.raises(ValueError, match=match):
        build_retinanet(**arguments)


def test_both_backbones_give_five_levels_of_the_fpn_width():
    assert set(BACKBONES.names()) == {"mobilenet_v2_fpn", "resnet50_fpn"}
    for name in BACKBONES.names():
        body = BACKBONES.build(name, weights=None, trainable_layers=5, fpn_channels=8)
        features = body(torch.rand(1, 3, 128, 128))
        assert [tuple(f.shape[1:]) for f in features.values()] == [
            (8, 16, 16),
            (8, 8, 8),
            (8, 4, 4),
            (8, 2, 2),
            (8, 1, 1),
        ]


@needs_weights
def test_mobilenet_imagenet_weights_are_verified_loaded_and_frozen_below_the_trainable_stages():
    state = torch.load(MOBILENET_FILE, weights_only=True)
    model = build_retinanet(
        3,
        backbone_weights=str(MOBILENET_FILE),
        trainable_backbone_layers=2,
        **{key: value for key, value in TINY.items() if key != "backbone_weights"},
    )
    body = model.backbone.body
    torch.testing.assert_close(body["0"][0].weight, state["features.0.0.weight"])
    torch.testing.assert_close(body["18"][0].weight, state["features.18.0.weight"])
    torch.testing.assert_close(body["13"].conv[1][1].running_mean, state["features.13.conv.1.1.running_mean"])
    trainable = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert trainable == {str(index) for index in range(7, 19)}  # the stride-16 and stride-32 stages
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())  # frozen batch norms


@needs_weights
def test_imagenet_lookup_uses_the_data_folder_and_a_tampered_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_DATA", str(SHARED))
    state = backbone_state_dict("mobilenet_v2", "imagenet")
    assert file_sha256(MOBILENET_FILE) == IMAGENET_WEIGHTS["mobilenet_v2"]["sha256"]
    assert torch.equal(
        state["features.0.0.weight"], torch.load(MOBILENET_FILE, weights_only=True)["features.0.0.weight"]
    )
    tampered = tmp_path / IMAGENET_WEIGHTS["mobilenet_v2"]["file"]
    shutil.copy(MOBILENET_FILE, tampered)
    with tampered.open("r+b") as file:
        file.seek(2000)
        byte = file.read(1)
        file.seek(2000)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="expected b03531047ffa.*refusing it"):
        backbone_state_dict("mobilenet_v2", tampered)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        backbone_state_dict("mobilenet_v2", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="architecture must be one of"):
        backbone_state_dict("vgg16", "imagenet")
