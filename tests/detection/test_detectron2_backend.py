"""The detectron2 engine: EquipoiseRetinaNet against detectron2's own RetinaNet (runs where detectron2 is installed).

detectron2 is not on PyPI and builds from source (README, Detection); without it these tests skip.
Oracle: detectron2's stock RetinaNet with the same weights and inputs: with the sigmoid focal loss
at the config's alpha and gamma the losses are equal; with alpha-balanced BCE, ``loss_cls`` is
``torchvision.ops.sigmoid_focal_loss(gamma=0)`` over the same anchors divided by the same normaliser.
"""

import pytest
import torch

detectron2 = pytest.importorskip(
    "detectron2", reason="detectron2 is not installed: it builds from source (see README, Detection)"
)


def _config(loss, options=""):
    from detectron2.config import get_cfg

    from equipoise.detection.detectron2_backend import add_equipoise_config

    cfg = add_equipoise_config(get_cfg())
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "EquipoiseRetinaNet"
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RETINANET.NUM_CLASSES = 3
    cfg.MODEL.EQUIPOISE.LOSS = loss
    cfg.MODEL.EQUIPOISE.LOSS_OPTIONS = options
    return cfg


def _inputs():
    from detectron2.structures import Boxes, Instances

    generator = torch.Generator().manual_seed(0)
    instances = Instances((96, 128))
    instances.gt_boxes = Boxes(torch.tensor([[8.0, 10.0, 60.0, 80.0], [70.0, 20.0, 120.0, 90.0]]))
    instances.gt_classes = torch.tensor([2, 0])
    return [{"image": torch.randint(0, 255, (3, 96, 128), generator=generator).float(), "instances": instances}]


def _pair(loss, options=""):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    cfg = _config(loss, options)
    torch.manual_seed(0)
    ours = build_model(cfg).train()
    stock_cfg = cfg.clone()
    stock_cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    stock = build_model(stock_cfg).train()
    stock.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("head_loss.")})
    with EventStorage():
        return ours(_inputs()), stock(_inputs())


def test_focal_loss_in_the_subclass_equals_detectron2s_retinanet():
    ours, stock = _pair("sigmoid_focal")
    assert ours.keys() == stock.keys() == {"loss_cls", "loss_box_reg"}
    for key in ours:
        torch.testing.assert_close(ours[key], stock[key])


def test_alpha_balanced_bce_replaces_only_the_classification_term():
    ours, stock = _pair("sigmoid_focal", "{alpha: 0.75, gamma: 0.0}")
    torch.testing.assert_close(ours["loss_box_reg"], stock["loss_box_reg"])
    assert not torch.allclose(ours["loss_cls"], stock["loss_cls"])


def test_missing_section_and_bad_options_are_explained():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "EquipoiseRetinaNet"
    with pytest.raises(ValueError, match="add_equipoise_config"):
        build_model(cfg)
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        build_model(_config("sigmoid_focal", "[1, 2]"))
