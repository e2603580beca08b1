"""Vision models against independent oracles: the parameter counts of He et al. 2016 (Table 6)
and a closed-form count, option A's shortcut written out by hand, cosine logits recomputed with
``F.cosine_similarity``, the kaiming-normal standard deviation ``sqrt(2 / fan_in)``, and timm's
own registry and factory.

Every model is randomly initialised (``pretrained=False``: nothing is downloaded) and small:
CIFAR ResNets, timm's ``resnet18``, ``mobilenetv2_100``, ``mobilenetv3_small_050`` and
``test_convnext`` (a nested ``head.fc`` classifier) on 32x32 inputs.
"""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.data import resolve_data_config
from torch import nn

import equipoise.vision.models as models
from equipoise.core.losses import LDAMLoss, NormedLinear
from equipoise.vision.models import (
    CIFAR_RESNET_DEPTHS,
    CifarResNet,
    create_model,
    extract_features,
    feature_dim,
    replace_classifier,
)

ROOT = Path(__file__).resolve().parents[2]

# He et al. 2016, Table 6 (and the LDAM reference code's header): parameters in millions.
PAPER_PARAMETERS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6}

# timm models with a linear head at another attribute: "fc", "classifier", nested "head.fc", and
# one whose pre-logit width (head_hidden_size 1024) differs from num_features (288).
TIMM_MODELS = ["resnet18", "mobilenetv2_100", "mobilenetv3_small_050", "test_convnext"]


def _images(batch: int = 2, size: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _closed_form_count(depth: int, num_classes: int, in_chans: int = 3) -> int:
    """Parameters of the option-A CIFAR ResNet counted by hand: 3x3 convolutions without bias,
    BatchNorm (weight and bias per channel), a linear classifier with bias, no shortcut weights."""
    blocks = (depth - 2) // 6
    count = in_chans * 16 * 9 + 2 * 16  # stem
    previous = 16
    for channels in (16, 32, 64):
        for _ in range(blocks):
            count += previous * channels * 9 + channels * channels * 9 + 2 * (2 * channels)
            previous = channels
    return count + 64 * num_classes + num_classes


def _cosine_logits(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``cos(f_i, w_j)`` for every example i and class j, through ``F.cosine_similarity``."""
    return F.cosine_similarity(features[:, None, :], weight[None, :, :], dim=-1)


# --- the CIFAR ResNets -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CIFAR_RESNET_DEPTHS))
def test_parameter_count_matches_the_paper(name):
    depth = CIFAR_RESNET_DEPTHS[name]
    model = timm.create_model(name, num_classes=10)
    count = _parameter_count(model)
    assert count == _closed_form_count(depth, 10)
    # The paper prints two significant digits (0.27M covers 0.265M-0.275M): rounding alone is up
    # to 0.005M / 0.27M = 1.9%, hence the 2% tolerance. Option B (1x1 projection shortcuts)
    # would add 2 * (16*32 + 32*64 + BN) = 5,312 parameters, outside it for ResNet-20 and -32.
    assert count == pytest.approx(PAPER_PARAMETERS[depth], rel=0.02)


@settings(max_examples=12, deadline=None)
@given(
    blocks=st.integers(min_value=1, max_value=3),
    num_classes=st.integers(min_value=0, max_value=50),
    in_chans=st.integers(min_value=1, max_value=4),
)
def test_parameter_count_closed_form_for_any_depth(blocks, num_classes, in_chans):
    model = CifarResNet(depth=6 * blocks + 2, num_classes=num_classes, in_chans=in_chans)
    # num_classes=0 means no classifier (nn.Identity): the formula's 64 * 0 + 0 covers it.
    assert _parameter_count(model) == _closed_form_count(6 * blocks + 2, num_classes, in_chans)


@pytest.mark.parametrize("name", sorted(CIFAR_RESNET_DEPTHS))
def test_shapes_on_cifar_inputs(name):
    model = timm.create_model(name, num_classes=10).eval()
    x = _images()
    features = model.forward_features(x)
    assert features.shape == (2, 64, 8, 8)
    pooled = model.forward_head(features, pre_logits=True)
    torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
    logits = model(x)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, pooled @ model.fc.weight.T + model.fc.bias)


def test_option_a_shortcuts_add_no_parameters_and_pad_with_zeros():
    model = timm.create_model("resnet32_cifar")
    shortcuts = [module.shortcut for module in model.modules() if hasattr(module, "shortcut")]
    assert len(shortcuts) == 15  # 3 stages x 5 blocks
    assert sum(_parameter_count(shortcut) for shortcut in shortcuts) == 0
    padding = [s for s in shortcuts if not isinstance(s, nn.Identity)]
    assert len(padding) == 2  # the first block of stages 2 and 3

    # By hand: subsample every second row and column, put the 16 channels in the middle of 32.
    x = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(1))
    expected = torch.zeros(2, 32, 3, 3)
    for row in range(3):
        for column in range(3):
            expected[:, 8:24, row, column] = x[:, :, 2 * row, 2 * column]
    torch.testing.assert_close(padding[0](x), expected, rtol=0, atol=0)


def test_kaiming_normal_init_like_the_reference():
    model = create_model("resnet56_cifar", num_classes=10, seed=0)
    # The 17 stage-3 convolutions 64 -> 64 (fan-in 576): 626,688 weights, std sqrt(2 / 576).
    weights = torch.cat(
        [block.conv2.weight.flatten() for block in model.layer3]
        + [block.conv1.weight.flatten() for block in model.layer3[1:]]
    )
    assert weights.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.01)
    assert weights.mean().item() == pytest.approx(0.0, abs=0.001)
    # The classifier's weight too (fan-in 64, 640 weights: a loose check).
    assert model.fc.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.15)


def test_float64_model_keeps_its_dtype():
    model = CifarResNet(depth=8, num_classes=3, dtype=torch.float64).eval()
    assert model(_images(dtype=torch.float64)).dtype == torch.float64
    replace_classifier(model, "cosine")
    assert model.fc.weight.dtype == torch.float64
    assert model(_images(dtype=torch.float64)).dtype == torch.float64


# --- timm's registry and factory ---------------------------------------------------------------


def test_registered_with_timm_and_reset_classifier():
    assert set(CIFAR_RESNET_DEPTHS) <= set(timm.list_models("*_cifar"))
    model = timm.create_model("resnet32_cifar", num_classes=100, pretrained=False).eval()
    assert isinstance(model, CifarResNet) and model.depth == 32
    assert model.num_classes == 100 and model(_images()).shape == (2, 100)
    assert model.pretrained_cfg["classifier"] == "fc" and model.default_cfg is model.pretrained_cfg
    assert model.get_classifier() is model.fc

    config = resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 32, 32)
    assert config["mean"] == pytest.approx((0.4914, 0.4822, 0.4465))

    model.reset_classifier(7)
    assert model.num_classes == 7 and model(_images()).shape == (2, 7)
    model.reset_classifier(0)
    x = _images()
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x), pre_logits=True))


def test_timm_kwargs_reach_the_model():
    model = timm.create_model("resnet20_cifar", num_classes=4, in_chans=1, drop_rate=0.2)
    assert model.conv1.in_channels == 1 and model.drop_rate == 0.2
    model.train()
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    assert model(x).shape == (3, 4)


def test_registering_the_same_name_from_another_module_raises():
    def resnet20_cifar(pretrained=False, **kwargs):  # a clash: same name, another module
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="'resnet20_cifar' is already registered by equipoise.vision.models"):
        models._register(resnet20_cifar)
    assert timm.models.model_entrypoint("resnet20_cifar") is models.resnet20_cifar


def test_reload_is_quiet_and_a_second_copy_raises():
    """In a fresh interpreter (reloading here would swap the classes under the other tests)."""
    code = (
        "import importlib, warnings, timm, equipoise.vision.models as m\n"
        "warnings.simplefilter('error')\n"
        "old = m.CifarResNet\n"
        "importlib.reload(m)\n"
        "assert m.CifarResNet is not old\n"
        "assert type(timm.create_model('resnet32_cifar')) is m.CifarResNet\n"
        "try:\n"
        "    import vision.models\n"  # the namespace trap: this file again, from the repository root
        "except ValueError as error:\n"
        "    print('raised:', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "raised: timm model 'resnet20_cifar' is already registered by equipoise.vision.models" in result.stdout


# --- any timm model: create_model, replace_classifier, extract_features -------------------------


def test_create_model_cosine_head_gives_cosine_similarities():
    model = create_model("resnet32_cifar", num_classes=5, classifier="cosine", seed=0).eval()
    assert isinstance(model.fc, NormedLinear) and model.fc.in_features == 64 and model.num_classes == 5
    x = _images(batch=4)
    with torch.no_grad():
        logits = model(x)
        expected = _cosine_logits(extract_features(model, x), model.fc.weight)
    assert logits.shape == (4, 5)
    assert logits.abs().max() <= 1.0
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_create_model_linear_keeps_timms_head():
    model = create_model("resnet18", num_classes=3, seed=0)
    assert type(model.fc) is nn.Linear and model.fc.out_features == 3


@pytest.mark.parametrize("name", ["resnet32_cifar", *TIMM_MODELS])
def test_replace_classifier_for_timm_models(name):
    model = timm.create_model(name, num_classes=3, pretrained=False).eval()
    head_name = model.pretrained_cfg["classifier"]
    in_features = model.get_submodule(head_name).in_features

    assert replace_classifier(model, "cosine") is model
    head = model.get_submodule(head_name)
    assert isinstance(head, NormedLinear) and model.get_classifier() is head
    assert (head.in_features, head.out_features, model.num_classes) == (in_features, 3, 3)
    x = _images()
    with torch.no_grad():
        logits = model(x)
        features = extract_features(model, x)
    torch.testing.assert_close(logits, _cosine_logits(features, head.weight), rtol=1e-5, atol=1e-6)

    replace_classifier(model, "linear", num_classes=4)
    head = model.get_submodule(head_name)
    assert type(head) is nn.Linear and (head.in_features, head.out_features) == (in_features, 4)
    assert model.num_classes == 4
    with torch.no_grad():
        torch.testing.assert_close(model(x), features @ head.weight.T + head.bias)


def test_replace_classifier_without_pretrained_cfg_uses_get_classifier():
    model = CifarResNet(depth=8, num_classes=6)  # built directly: no pretrained_cfg
    replace_classifier(model, "cosine")
    assert isinstance(model.fc, NormedLinear) and model.fc.out_features == 6


@pytest.mark.parametrize("name", ["resnet32_cifar", *TIMM_MODELS])
def test_extract_features_are_what_the_classifier_reads(name):
    model = timm.create_model(name, num_classes=3).eval()
    x = _images(batch=3)
    with torch.no_grad():
        features = extract_features(model, x)
        logits = model(x)
    classifier = model.get_classifier()
    assert features.shape == (3, feature_dim(model)) == (3, classifier.in_features)
    if name != "mobilenetv3_small_050":  # its head has a 288 -> 1024 layer before the classifier
        assert feature_dim(model) == model.num_features
    torch.testing.assert_close(logits, classifier(features))


def test_training_step_decreases_the_ldam_loss():
    """LDAM's setting (cosine head, scale 30) on one tiny batch: small plain SGD steps go downhill.

    BatchNorm in training mode normalises with this batch's statistics, so the loss is a fixed
    function of the parameters and each step with a small learning rate must lower it.
    """
    model = create_model("resnet20_cifar", num_classes=4, classifier="cosine", seed=0).train()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.arange(16) % 4
    loss_fn = LDAMLoss(class_counts=[100, 30, 10, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        loss = loss_fn(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    losses.append(loss_fn(model(x), target).item())
    assert all(math.isfinite(value) for value in losses)
    assert all(after < before for before, after in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.85 * losses[0], losses


def test_initialisation_is_deterministic_under_a_seed():
    def build(seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return timm.create_model("resnet20_cifar", num_classes=10).state_dict()

    first, again, other = build(0), build(0), build(1)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])

    # create_model(seed=...) is the same thing, and leaves the caller's random state alone.
    state = torch.get_rng_state()
    model = create_model("resnet20_cifar", num_classes=10, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(value, first[key]) for key, value in model.state_dict().items())
    cosine = [create_model("resnet20_cifar", num_classes=10, classifier="cosine", seed=5) for _ in range(2)]
    torch.testing.assert_close(cosine[0].fc.weight, cosine[1].fc.weight, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cpu = create_model("resnet32_cifar", num_classes=10, classifier="cosine", seed=0).eval()
    gpu = create_model("resnet32_cifar", num_classes=10, classifier="cosine", seed=0, device="cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    x = _images(batch=8)
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-4)
        assert extract_features(gpu, x.cuda()).device.type == "cuda"


# --- bad input ---------------------------------------------------------------------------------


def test_create_model_rejects_bad_input():
    with pytest.raises(ValueError, match=r"unknown model name 'resnet32'; similar names: .*resnet32_cifar"):
        create_model("resnet32", num_classes=10)
    with pytest.raises(ValueError, match=r"unknown model name 'resnett18'; similar names: .*resnet18"):
        create_model("resnett18", num_classes=10)
    with pytest.raises(ValueError, match=r"unknown model name 'zzzzqqqq'; see timm.list_models\(\)"):
        create_model("zzzzqqqq", num_classes=10)
    with pytest.raises(TypeError, match="name must be a string"):
        create_model(32, num_classes=10)
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match=f"num_classes must be an integer >= 1, got {bad!r}"):
            create_model("resnet20_cifar", num_classes=bad)
    with pytest.raises(ValueError, match=r"classifier must be one of \('linear', 'cosine'\), got 'softmax'"):
        create_model("resnet20_cifar", num_classes=10, classifier="softmax")
    with pytest.raises(TypeError, match="pretrained must be a bool, got 'yes'"):
        create_model("resnet20_cifar", num_classes=10, pretrained="yes")
    with pytest.raises(TypeError, match="seed must be an integer or None, got 1.5"):
        create_model("resnet20_cifar", num_classes=10, seed=1.5)
    with pytest.raises(ValueError, match="no pretrained weights exist for 'resnet32_cifar'"):
        create_model("resnet32_cifar", num_classes=10, pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights exist for 'resnet56_cifar'"):
        timm.create_model("resnet56_cifar", pretrained=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 33}, "depth must be 6n \\+ 2 .* got 33"),
        ({"depth": 2}, "depth must be 6n \\+ 2 .* got 2"),
        ({"depth": 32.0}, "depth must be 6n \\+ 2 .* got 32.0"),
        ({"num_classes": -1}, "num_classes must be an integer >= 0, got -1"),
        ({"in_chans": 0}, "in_chans must be an integer >= 1, got 0"),
        ({"drop_rate": 1.0}, r"drop_rate must lie in \[0, 1\), got 1.0"),
        ({"drop_rate": -0.1}, r"drop_rate must lie in \[0, 1\), got -0.1"),
    ],
)
def test_cifar_resnet_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CifarResNet(**kwargs)


def test_reset_classifier_rejects_bad_arguments():
    model = CifarResNet(depth=8)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 0, got -2"):
        model.reset_classifier(-2)
    with pytest.raises(ValueError, match="global_pool must be None or 'avg'.*got 'max'"):
        model.reset_classifier(3, global_pool="max")


class _ConvHead(nn.Module):
    """A classifier that is a 1x1 convolution, named the timm way."""

    pretrained_cfg = {"classifier": "head.0"}

    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(8, 3, 1))


def test_replace_classifier_rejects_bad_input():
    model = CifarResNet(depth=8, num_classes=3)
    with pytest.raises(ValueError, match=r"kind must be one of \('linear', 'cosine'\), got 'normed'"):
        replace_classifier(model, "normed")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1 or None, got 0"):
        replace_classifier(model, "cosine", num_classes=0)
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        replace_classifier("resnet18", "cosine")
    with pytest.raises(ValueError, match=r"has no classifier \('fc' is nn.Identity"):
        replace_classifier(timm.create_model("resnet20_cifar", num_classes=0), "cosine")
    with pytest.raises(TypeError, match=r"needs a linear classifier, but _ConvHead.head.0 is Conv2d"):
        replace_classifier(_ConvHead(), "cosine")
    with pytest.raises(TypeError, match="cannot find the classifier of Sequential"):
        replace_classifier(nn.Sequential(nn.Linear(4, 2)), "cosine")


def test_extract_features_and_feature_dim_reject_bad_input():
    model = CifarResNet(depth=8)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        extract_features(model, [[0.0]])
    with pytest.raises(TypeError, match="floating-point tensor of images, got dtype torch.uint8"):
        extract_features(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(3, 32, 32\)"):
        extract_features(model, torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(0, 3, 32, 32\)"):
        extract_features(model, torch.zeros(0, 3, 32, 32))
    with pytest.raises(TypeError, match="Linear needs timm's forward_features and forward_head"):
        extract_features(nn.Linear(3, 2), torch.zeros(2, 3, 32, 32))
    unpooled = timm.create_model("resnet18", num_classes=3, global_pool="")
    with pytest.raises(ValueError, match=r"have shape \(2, 512, 1, 1\), not \(N, D\)"):
        extract_features(unpooled, _images())
    with pytest.raises(TypeError, match="Linear has neither head_hidden_size nor num_features"):
        feature_dim(nn.Linear(3, 2))
