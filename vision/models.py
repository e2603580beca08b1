"""Image classifiers for long-tailed learning: the CIFAR ResNets of the LDAM paper, registered with
timm, and any timm model by name with a linear or cosine classifier.

>>> from equipoise.vision.models import create_model, extract_features, feature_dim
>>> model = create_model("resnet32_cifar", num_classes=10, classifier="cosine", seed=0)  # LDAM's model
>>> model = create_model("resnet18", num_classes=100)           # any timm model, randomly initialised
>>> features = extract_features(model, images)                  # (N, feature_dim(model)), for cRT / LWS

CIFAR ResNets (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
Section 4.2), the backbone of Cao et al. 2019 (LDAM-DRW) and of most CIFAR-LT papers::

    3x3 conv, 16 filters -> BN -> ReLU
    stage 1: n basic blocks, 16 channels, 32x32 maps (for 32x32 inputs)
    stage 2: n basic blocks, 32 channels, 16x16 maps (first block has stride 2)
    stage 3: n basic blocks, 64 channels,  8x8  maps (first block has stride 2)
    global average pooling -> linear classifier (64 -> num_classes)
    basic block: relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x))
    depth = 6n + 2

| timm name | depth | n | parameters (10 classes) | paper (Table 6) |
|---|---|---|---|---|
| resnet20_cifar | 20 | 3 | 269,722 | 0.27M |
| resnet32_cifar | 32 | 5 | 464,154 | 0.46M |
| resnet44_cifar | 44 | 7 | 658,586 | 0.66M |
| resnet56_cifar | 56 | 9 | 853,018 | 0.85M |

Shortcuts are the paper's option A, which its CIFAR experiments use: identity, and where a block
halves the map and doubles the channels, the input subsampled with stride 2 and zero-padded with
the missing channels (half before, half after the input's channels, as the reference code
pads). Option A adds no parameters. Initialisation follows the LDAM reference code
(kaidic/LDAM-DRW, ``models/resnet_cifar.py``): ``kaiming_normal_`` (fan-in, ReLU gain) on every
convolution and linear weight; biases and batch norms keep PyTorch's defaults. The reference
code normalises CIFAR inputs with mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994,
0.2010); ``pretrained_cfg`` records them for ``timm.data.resolve_data_config``.

Written by hand because neither timm nor torchvision has this architecture (their ResNets are the
four-stage ImageNet ones with projection shortcuts); timm supplies everything else: the registry,
the factory, pretrained_cfg and the data config.

Deliberate differences from the reference code, none of which changes what is computed on
CIFAR's square inputs:

- the classifier attribute is ``fc`` (timm's ResNet name, given in ``pretrained_cfg["classifier"]``)
  rather than ``linear``; a reference checkpoint loads after renaming ``linear.*`` to ``fc.*``
  (and transposing a ``NormedLinear`` weight, which the reference stores as ``(in, out)``);
- the option-A shortcut is a named module rather than a ``LambdaLayer`` over a lambda, so that the
  model pickles (``torch.save(model)``, multiprocessing) and prints what it does; it subsamples
  with the block's stride where the reference always uses ``::2`` (the same here: both happen
  together);
- global average pooling averages the whole map; the reference's ``avg_pool2d(out, out.size(3))``
  does the same for square maps only;
- the cosine head is :class:`equipoise.core.losses.NormedLinear` (weight ``(out, in)``), chosen
  with ``classifier="cosine"`` rather than ``use_norm=True``.

Registration: importing this module registers the four names with timm's own registry
(``timm.models.register_model``), so that ``timm.create_model("resnet32_cifar", num_classes=100)``
works and ``timm.list_models("*_cifar")`` lists them. timm 1.0 warns and overwrites when a name is
registered twice; here re-executing this same module (``importlib.reload``) replaces the entries
quietly, while a name already registered by any other module raises ``ValueError`` -- that is
how a second copy of this file imported under another name (``import vision.models`` from the
repository root) is caught, as :class:`equipoise.core.registry.Registry` does for its kinds.

Randomness: building a model draws its initial weights from PyTorch's default generator, as
every ``nn.Module`` does. :func:`create_model` takes ``seed``: the weights are then drawn inside
``torch.random.fork_rng`` from that seed, so the same seed gives the same model and the caller's
random state is left untouched (nothing is seeded globally).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, model_entrypoint, register_model
from torch import nn

from equipoise.core.losses import NormedLinear

__all__ = [
    "CIFAR_RESNET_DEPTHS",
    "CLASSIFIER_KINDS",
    "CifarResNet",
    "SmallCNN",
    "cnn_small",
    "create_model",
    "extract_features",
    "feature_dim",
    "replace_classifier",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet44_cifar",
    "resnet56_cifar",
]

CLASSIFIER_KINDS = ("linear", "cosine")
"""Heads :func:`create_model` and :func:`replace_classifier` build: ``nn.Linear`` or ``NormedLinear``."""

CIFAR_RESNET_DEPTHS = {"resnet20_cifar": 20, "resnet32_cifar": 32, "resnet44_cifar": 44, "resnet56_cifar": 56}
"""The CIFAR ResNets registered with timm, by name, and their depths (6n + 2)."""

_STAGE_CHANNELS = (16, 32, 64)
_STAGE_STRIDES = (1, 2, 2)


class _ZeroPadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2016): ``x[:, :, ::stride, ::stride]`` with zero channels added.

    ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``; the
    ``out_channels - in_channels`` zero channels are split before and after the input's, as the
    LDAM reference code does (``planes // 4`` on each side). No parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad's pairs run from the last dimension backwards: (W, W, H, H, C, C).
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels=({self.pad_before}, {self.pad_after})"


class _BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, **factory: Any) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, **factory)
        self.bn1 = nn.BatchNorm2d(out_channels, **factory)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False, **factory)
        self.bn2 = nn.BatchNorm2d(out_channels, **factory)
        self.act2 = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = _ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016 (Section 4.2) with option-A shortcuts; see the module docstring.

    Follows timm's model interface: ``num_classes``, ``num_features`` (64), ``forward_features``
    (``(N, in_chans, H, W) -> (N, 64, H / 4, W / 4)``), ``forward_head(x, pre_logits=False)``
    (global average pooling, dropout, classifier: ``(N, 64)`` features or ``(N, num_classes)``
    logits), ``get_classifier()`` and ``reset_classifier(num_classes)``. No pretrained weights
    exist; ``features_only`` is not supported.

    Args:
        depth: ``6n + 2`` layers, at least 8 (20, 32, 44, 56 in the paper; 32 in LDAM).
        num_classes: classifier outputs; ``0`` gives no classifier (``forward`` returns the
            pooled features), as in timm.
        in_chans: input channels (3 for CIFAR).
        drop_rate: dropout before the classifier (timm's ``drop_rate``); 0 in the paper.
        device, dtype: where and in which dtype to build the parameters (timm's factory kwargs).
    """

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not _is_int(depth) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 for an integer n >= 1 (20, 32, 44, 56, ...), got {depth!r}")
        if not _is_int(num_classes) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if not _is_int(in_chans) or in_chans < 1:
            raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
        if not (isinstance(drop_rate, (int, float)) and 0.0 <= drop_rate < 1.0):
            raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate!r}")
        factory = {"device": device, "dtype": dtype}
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.num_classes = num_classes
        self.drop_rate = float(drop_rate)
        self.num_features = self.head_hidden_size = _STAGE_CHANNELS[-1]

        self.conv1 = nn.Conv2d(in_chans, _STAGE_CHANNELS[0], 3, stride=1, padding=1, bias=False, **factory)
        self.bn1 = nn.BatchNorm2d(_STAGE_CHANNELS[0], **factory)
        self.act1 = nn.ReLU(inplace=True)
        in_channels = _STAGE_CHANNELS[0]
        stages = []
        for out_channels, stride in zip(_STAGE_CHANNELS, _STAGE_STRIDES):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(_BasicBlock(in_channels, out_channels, stride if index == 0 else 1, **factory))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = self._new_classifier(num_classes, **factory)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def _new_classifier(self, num_classes: int, **factory: Any) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        return nn.Linear(self.num_features, num_classes, **factory)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, H, W) -> (N, 64, H / 4, W / 4)``: the stem and the three stages."""
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, dropout and the classifier; ``pre_logits=True`` stops before it."""
        x = x.mean(dim=(2, 3))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The classifier module (``fc``)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace ``fc`` by a new ``kaiming_normal_``-initialised linear layer (``0``: no classifier).

        ``global_pool`` is accepted for timm's signature; only average pooling exists here.
        """
        if not _is_int(num_classes) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool must be None or 'avg' (CifarResNet's only pooling), got {global_pool!r}")
        weight = self.conv1.weight
        self.num_classes = num_classes
        self.fc = self._new_classifier(num_classes, device=weight.device, dtype=weight.dtype)
        if isinstance(self.fc, nn.Linear):
            nn.init.kaiming_normal_(self.fc.weight)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, num_classes={self.num_classes}"


def _cifar_cfg(depth: int) -> dict[str, Any]:
    return {
        "url": "",  # no pretrained weights
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.4914, 0.4822, 0.4465),  # the LDAM reference code's normalisation
        "std": (0.2023, 0.1994, 0.2010),
        "first_conv": "conv1",
        "classifier": "fc",
        "paper_ids": "arXiv:1512.03385",
        "paper_name": "Deep Residual Learning for Image Recognition",
        "description": f"CIFAR ResNet-{depth} with option-A shortcuts (He et al. 2016, Section 4.2)",
    }


# timm's register_model reads the module attribute `default_cfgs` to attach each pretrained_cfg.
default_cfgs = generate_default_cfgs({name: _cifar_cfg(depth) for name, depth in CIFAR_RESNET_DEPTHS.items()})


def _register(entrypoint: Callable[..., CifarResNet]) -> Callable[..., CifarResNet]:
    """``timm.models.register_model``, quiet when this same module is re-executed, loud for a clash."""
    name = entrypoint.__name__
    if not is_model(name):
        return register_model(entrypoint)
    existing = model_entrypoint(name)
    owner = f"{existing.__module__}.{existing.__qualname__}"
    if owner != f"{entrypoint.__module__}.{entrypoint.__qualname__}":
        raise ValueError(
            f"timm model {name!r} is already registered by {owner}, so {entrypoint.__module__} cannot register "
            "it; names must be unique. If both are this file imported under two names ('vision.models' from the "
            "repository root), import it only as 'equipoise.vision.models'"
        )
    # The same module executed again (importlib.reload): replace the entry with the new function,
    # without timm's "Overwriting ..." warning, which is meant for clashes.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f"Overwriting {name} in registry", category=UserWarning)
        return register_model(entrypoint)


def _create_cifar_resnet(name: str, pretrained: bool, **kwargs: Any) -> CifarResNet:
    if pretrained:
        raise ValueError(f"no pretrained weights exist for {name!r}; create it with pretrained=False")
    return build_model_with_cfg(CifarResNet, name, pretrained=False, depth=CIFAR_RESNET_DEPTHS[name], **kwargs)


@_register
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-20 (He et al. 2016), option-A shortcuts, 0.27M parameters."""
    return _create_cifar_resnet("resnet20_cifar", pretrained, **kwargs)


@_register
def resnet32_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32 (He et al. 2016), option-A shortcuts, 0.46M parameters: LDAM's backbone."""
    return _create_cifar_resnet("resnet32_cifar", pretrained, **kwargs)


@_register
def resnet44_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-44 (He et al. 2016), option-A shortcuts, 0.66M parameters."""
    return _create_cifar_resnet("resnet44_cifar", pretrained, **kwargs)


@_register
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-56 (He et al. 2016), option-A shortcuts, 0.85M parameters."""
    return _create_cifar_resnet("resnet56_cifar", pretrained, **kwargs)


def create_model(
    name: str,
    num_classes: int,
    classifier: str = "linear",
    pretrained: bool = False,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the timm model ``name`` (``timm.create_model``) with a linear or cosine classifier.

    Args:
        name: any name ``timm.list_models()`` knows, including ``resnet32_cifar`` & co. (above).
            Unknown names raise ``ValueError`` listing similar ones.
        num_classes: classifier outputs, >= 1 (for a model without a head, use
            :func:`extract_features` or ``timm.create_model(name, num_classes=0)``).
        classifier: ``"linear"`` keeps timm's own head; ``"cosine"`` replaces it with
            :class:`~equipoise.core.losses.NormedLinear` (cosine logits in [-1, 1], the head LDAM
            expects), through :func:`replace_classifier`.
        pretrained: passed to timm (downloads weights for timm models that have them; the CIFAR
            ResNets have none and raise). With ``"cosine"`` the new head is untrained.
        seed: when given, initial weights are drawn from this seed inside
            ``torch.random.fork_rng``: same seed, same model, and the caller's random state is
            unchanged. ``None`` draws from PyTorch's default generator as usual.
        **kwargs: passed to ``timm.create_model`` (``drop_rate``, ``in_chans``, ``device`` ...).

    Returns:
        The model; ``model(x)`` gives ``(N, num_classes)`` logits.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string naming a timm model, got {type(name).__name__}")
    if not is_model(name):
        similar = _similar_model_names(name)
        hint = f"similar names: {', '.join(similar)}" if similar else "see timm.list_models()"
        raise ValueError(f"unknown model name {name!r}; {hint}")
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    _check_kind(classifier, "classifier")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool, got {pretrained!r}")
    if seed is not None and not _is_int(seed):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")

    def build() -> nn.Module:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
        if classifier == "cosine":
            replace_classifier(model, "cosine")
        return model

    if seed is None:
        return build()
    # Fork the CPU generator and every CUDA one (models built with device="cuda" draw from it),
    # so that seeding here never leaks into the caller's random state.
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        return build()


def replace_classifier(model: nn.Module, kind: str = "cosine", num_classes: int | None = None) -> nn.Module:
    """Replace a timm model's classifier in place by a new ``"cosine"`` or ``"linear"`` head.

    The head is found by the name in ``model.pretrained_cfg["classifier"]`` (timm's convention;
    nested names such as ``"head.fc"`` and tuples of heads, as in distilled ViTs, included), or,
    without a pretrained_cfg, by locating ``model.get_classifier()`` among its submodules. The
    new head keeps the old one's ``in_features``, device and dtype, and ``num_classes`` outputs
    (default: the old ``out_features``); ``model.num_classes`` is updated.

    ``"cosine"`` builds :class:`~equipoise.core.losses.NormedLinear` (logits
    ``normalize(x) @ normalize(W).T`` in [-1, 1], its own initialisation); ``"linear"`` builds a
    fresh ``nn.Linear`` with PyTorch's default initialisation (to retrain a classifier, as cRT
    does). timm's ``reset_classifier`` would afterwards put back a linear head.

    Shapes: the head maps ``(N, in_features)`` to ``(N, num_classes)``; heads that are not linear
    layers (1x1 convolutions) raise ``TypeError``, and a model without a head
    (``num_classes=0``) raises ``ValueError``.

    Returns:
        ``model``, for chaining.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_kind(kind, "kind")
    if num_classes is not None and (not _is_int(num_classes) or num_classes < 1):
        raise ValueError(f"num_classes must be an integer >= 1 or None, got {num_classes!r}")
    for head_name in _classifier_names(model):
        old = model.get_submodule(head_name)
        if isinstance(old, nn.Identity):
            raise ValueError(
                f"model {type(model).__name__} has no classifier ({head_name!r} is nn.Identity, i.e. "
                "num_classes=0); create it with num_classes >= 1"
            )
        if not isinstance(old, (nn.Linear, NormedLinear)):
            raise TypeError(
                f"replace_classifier needs a linear classifier, but {type(model).__name__}.{head_name} is "
                f"{type(old).__name__}"
            )
        out_features = old.out_features if num_classes is None else num_classes
        head_class = NormedLinear if kind == "cosine" else nn.Linear
        new = head_class(old.in_features, out_features).to(device=old.weight.device, dtype=old.weight.dtype)
        parent_name, _, attribute = head_name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, new)
        if hasattr(model, "num_classes"):
            model.num_classes = out_features
    return model


def feature_dim(model: nn.Module) -> int:
    """Width of the features the classifier reads: ``extract_features(model, x).shape[1]``.

    timm's ``head_hidden_size`` where the model has it (it differs from ``num_features`` when the
    head has its own layers before the classifier, as in MobileNetV3), else ``num_features``.
    """
    for attribute in ("head_hidden_size", "num_features"):
        value = getattr(model, attribute, None)
        if _is_int(value) and value > 0:
            return int(value)
    raise TypeError(f"model {type(model).__name__} has neither head_hidden_size nor num_features (not a timm model?)")


def extract_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``model.forward_head(model.forward_features(x), pre_logits=True)``.

    What decoupled classifiers train on (cRT, LWS: Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis,
    "Decoupling Representation and Classifier for Long-Tailed Recognition", ICLR 2020): the pooled features the
    classifier reads. ``(N, C, H, W) -> (N, feature_dim(model))``. Runs in the model's current
    mode and records gradients as usual: wrap it in ``torch.no_grad()`` and call
    ``model.eval()`` to extract features from a frozen backbone.
    """
    if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
        raise TypeError(f"model {type(model).__name__} needs timm's forward_features and forward_head methods")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor of images, got dtype {x.dtype}")
    if x.dim() != 4 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    if features.dim() != 2:
        raise ValueError(
            f"pre-logit features of {type(model).__name__} have shape {tuple(features.shape)}, not (N, D); "
            "is its global pooling disabled (global_pool='')?"
        )
    return features


def _classifier_names(model: nn.Module) -> tuple[str, ...]:
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    names = config.get("classifier")
    if isinstance(names, str):
        return (names,)
    if isinstance(names, (tuple, list)) and names:
        return tuple(names)
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for module_name, module in model.named_modules():
            if module is head and module_name:
                return (module_name,)
    raise TypeError(
        f"cannot find the classifier of {type(model).__name__}: it has no pretrained_cfg['classifier'] "
        "and no get_classifier() returning one of its submodules"
    )


def _similar_model_names(name: str, limit: int = 10) -> list[str]:
    """timm names containing ``name``, else the closest spellings (difflib), at most ``limit``."""
    similar = timm.list_models(f"*{name}*")
    if not similar:
        similar = difflib.get_close_matches(name, timm.list_models(), n=limit, cutoff=0.6)
    return list(similar)[:limit]


def _check_kind(kind: str, argument: str) -> None:
    if kind not in CLASSIFIER_KINDS:
        raise ValueError(f"{argument} must be one of {CLASSIFIER_KINDS}, got {kind!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# A small CNN for MNIST-sized images
# --------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """The two-convolution network of the PyTorch MNIST example, in timm's model interface.

    ``conv 3x3 (32) -> ReLU -> conv 3x3 (64) -> ReLU -> max-pool 2 -> adaptive average pool to
    4x4 -> flatten (1024) -> dropout -> linear (1024 -> 128) -> ReLU -> classifier``;
    ``num_features`` is 128, the width the classifier reads (``forward_head(pre_logits=True)``).
    Small enough to train on MNIST-LT on a CPU in seconds per epoch; registered as ``cnn_small``
    (1 input channel by default). The adaptive pooling keeps a 4x4 spatial layout (the digits'
    shapes) at any input size, where the example flattens a fixed 12x12 map.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        drop_rate: float = 0.25,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not _is_int(num_classes) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if not _is_int(in_chans) or in_chans < 1:
            raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
        if not (isinstance(drop_rate, (int, float)) and 0.0 <= drop_rate < 1.0):
            raise ValueError(f"drop_rate must lie in [0, 1), got {drop_rate!r}")
        factory = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.drop_rate = float(drop_rate)
        self.num_features = self.head_hidden_size = 128
        self.conv1 = nn.Conv2d(in_chans, 32, 3, padding=1, **factory)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, **factory)
        self.hidden = nn.Linear(64 * 4 * 4, self.num_features, **factory)
        self.fc = nn.Linear(self.num_features, num_classes, **factory) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, H, W) -> (N, 64, H / 2, W / 2)``."""
        return F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling, dropout, hidden layer and classifier; ``pre_logits=True`` stops before the classifier."""
        x = F.dropout(F.adaptive_avg_pool2d(x, 4).flatten(1), p=self.drop_rate, training=self.training)
        x = F.relu(self.hidden(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new linear classifier with ``num_classes`` outputs (``0``: none)."""
        if not _is_int(num_classes) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        weight = self.hidden.weight
        self.num_classes = num_classes
        self.fc = (
            nn.Linear(self.num_features, num_classes, device=weight.device, dtype=weight.dtype)
            if num_classes
            else nn.Identity()
        )


default_cfgs.update(
    generate_default_cfgs(
        {
            "cnn_small": {
                "url": "",
                "num_classes": 10,
                "input_size": (1, 28, 28),
                "mean": (0.1307,),
                "std": (0.3081,),
                "first_conv": "conv1",
                "classifier": "fc",
                "description": "two-convolution CNN of the PyTorch MNIST example, pooled to 4x4",
            }
        }
    )
)


@_register
def cnn_small(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """A small two-convolution CNN for MNIST-sized images (see :class:`SmallCNN`)."""
    if pretrained:
        raise ValueError("no pretrained weights exist for 'cnn_small'; create it with pretrained=False")
    return build_model_with_cfg(SmallCNN, "cnn_small", pretrained=False, **kwargs)
