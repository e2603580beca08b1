"""Stage 2 of decoupled long-tailed training: re-balance the classifier of a trained model, backbone frozen.

>>> from equipoise.vision.decouple import decouple
>>> path = decouple("results/vision/ce/checkpoint.pt", "crt")          # -> results/vision/ce/crt/checkpoint.pt
>>> path = decouple("results/vision/ce/checkpoint.pt", "tau_norm", tau=1.0)
>>> from equipoise.vision.checkpoint import model_from_checkpoint
>>> model, checkpoint = model_from_checkpoint(path)                     # a plain model with an nn.Linear head

:func:`decouple` reads a stage-1 checkpoint (``equipoise.vision.checkpoint``), rebuilds its
model, extracts the penultimate features of the *training* split once (evaluation transform, eval
mode, no gradients), re-balances the classifier on those frozen features with one of the methods
below, folds the result into a plain ``nn.Linear`` classifier of the model, and writes a new
checkpoint in the same format: ``stage`` is the method, ``epoch``, ``class_counts`` and
``class_names`` are the stage-1 ones, ``optimizer``/``scaler``/``rng`` are ``None`` (nothing to
resume), ``metrics`` is ``{"decoupling": <what the fit chose and did>}``, and ``config`` is the
stage-1 config with ``model.classifier = "linear"``, so ``model_from_checkpoint`` rebuilds the
decoupled model and evaluation code needs nothing special. Every backbone weight and buffer is
copied bit for bit; only the classifier changes.

The math lives in core (``equipoise.core.calibration.decoupling`` and ``.weight_balancing``);
this module extracts features, dispatches by name, folds and saves.

| method | paper | head after the fit (``W`` ``(C, D)``, ``b`` ``(C,)``: the stage-1 head) |
|---|---|---|
| ``crt`` | Kang et al. 2020 | a new ``nn.Linear``, class-balanced sampling (``retrain_classifier``) |
| ``tau_norm`` | Kang et al. 2020 | ``W_i / ||W_i|| ** tau``, ``b`` unchanged (``tau_normalize``) |
| ``lws`` | Kang et al. 2020 | ``f_i * W_i``, ``f_i * b_i``, ``f`` learnt (``LearnableWeightScaling``) |
| ``weight_balancing`` | Alshammari et al. 2022 | ``W``, ``b`` fine-tuned under MaxNorm (``fit_weight_balancing``) |

Kang, Xie, Rohrbach, Yan, Gordo, Feng, Kalantidis, "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020. Defaults are core's (10 epochs, batch 512, SGD momentum 0.9,
learning rate 0.2 with cosine decay to 0; weight decay 5e-4 for cRT and none for the LWS scales):

- ``crt`` options: ``epochs``, ``lr``, ``weight_decay``, ``batch_size``, ``momentum``. The new head
  starts from zeros (core's deliberate difference: the problem is convex in the head). Works on
  any stage-1 head, the cosine ``NormedLinear`` included, since the head is replaced.
- ``lws`` options: ``epochs``, ``lr``, ``batch_size``, ``momentum``. ``logit_i = f_i * (W_i . x +
  b_i) = (f_i W_i) . x + f_i b_i``, so the scales fold exactly into the linear head.
- ``tau_norm`` options: ``tau`` (a number >= 0: used as given), ``taus`` (the grid searched when
  ``tau`` is not given, default ``DEFAULT_NORM_TAUS`` = 0, 0.1, ..., 2) and ``tau_split``. The
  paper picks ``tau`` on *validation* data. Which data here, and why: the test split is never used
  for fitting. ImageNet-LT and Places-LT have a validation split distinct from their test split,
  and ``tau_split`` defaults to ``"val"`` for them. CIFAR-LT and MNIST-LT have only train and
  test, and iNaturalist 2018's ``"val"`` *is* the split the literature reports as its test; for
  these ``tau_split`` defaults to ``"train"``: ``tau`` is chosen by balanced accuracy (mean
  per-class recall) on the training split's own features. That is an honest fallback, not the
  paper's protocol: the backbone was fitted to those very images, so the training features
  separate the classes better than unseen ones and the search tends to pick a smaller ``tau``
  (often 0, ties going to the smallest). A user with held-out data of their own chooses ``tau``
  on it and passes ``tau=``. The split used is recorded in ``metrics["decoupling"]["tau_split"]``.

Alshammari, Wang, Ramanan, Kong, "Long-Tailed Recognition via Weight Balancing", CVPR 2022.
Stage 1 is plain cross-entropy with a tuned (larger) weight decay: a recipe, nothing to do here.
Stage 2, ``weight_balancing``, is core's ``fit_weight_balancing``
(``equipoise.core.calibration.weight_balancing``, which holds the formula, where the defaults
come from and the deliberate differences from the reference code): the stage-1 head is
fine-tuned on the frozen features with the class-balanced loss of Cui et al. 2019, SGD with
weight decay, and the MaxNorm constraint by projected gradient descent (rows of ``W`` kept within
a radius relative to the stage-1 row norms; the bias is not constrained). Options and defaults,
from the authors' CIFAR-100-LT second-stage demo: ``epochs`` 10, ``lr`` 0.01 with cosine decay
to 0, ``momentum`` 0.9, ``weight_decay`` 0.1, ``batch_size`` 64 with instance-balanced
shuffling, ``beta`` 0.9999 and ``max_norm_threshold`` 0.1 (``radius = min_i ||W_i|| + threshold
* (max_i ||W_i|| - min_i ||W_i||)``). The radius and the mean loss of each epoch are recorded in
the metrics (``max_norm_radius``, ``epoch_losses``); the last epoch is kept.

Randomness: every method draws from a ``torch.Generator`` seeded with ``seed`` (class-balanced
batches, shuffling); nothing is seeded globally. Same checkpoint, options and seed on the same
device: the same output.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from equipoise.core.calibration import (
    DEFAULT_NORM_TAUS,
    LearnableWeightScaling,
    fit_tau_normalization,
    fit_weight_balancing,
    retrain_classifier,
    tau_normalize,
)
from equipoise.core.config import config_from_dict
from equipoise.core.device import resolve_device
from equipoise.core.losses import NormedLinear
from equipoise.core.registry import Registry
from equipoise.core.validation import check_non_negative, check_positive
from equipoise.vision.checkpoint import FORMAT, load_checkpoint, model_from_checkpoint, save_checkpoint
from equipoise.vision.config import TrainConfig
from equipoise.vision.data import SPLIT_FILES, dataset_from_config
from equipoise.vision.models import extract_features

__all__ = ["DECOUPLING_METHODS", "dataset_features", "decouple", "method_options"]


@dataclass(frozen=True)
class _Method:
    """A decoupling method: ``fit(stage1, **options) -> (weight, bias, details)``; whether it replaces the head."""

    fit: Callable[..., tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]]
    replaces_head: bool
    options_of: Callable[..., Any] | None = None  # where the options' defaults are declared (default: fit)


DECOUPLING_METHODS: Registry[_Method] = Registry("decoupling method")
"""The methods :func:`decouple` knows, by name: ``crt``, ``lws``, ``tau_norm``, ``weight_balancing``."""


@dataclass
class _Stage1:
    """What every method fits on: frozen training features ``(N, D)`` and labels ``(N,)`` on the
    compute device, the stage-1 head's ``weight`` ``(C, D)`` and ``bias`` ``(C,)`` (``None`` for a
    head without one, or for a head cRT replaces), a seeded CPU generator, and ``features_of(split)``
    for methods that read another split."""

    features: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    generator: torch.Generator
    features_of: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    tau_splits: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# The public entry points
# --------------------------------------------------------------------------------------------


def method_options(method: str) -> dict[str, Any]:
    """The options of ``method`` and their defaults, e.g. ``{"epochs": 10, "lr": 0.2, ...}`` for ``"crt"``."""
    entry = DECOUPLING_METHODS.get(method)
    return {
        name: parameter.default
        for name, parameter in inspect.signature(entry.options_of or entry.fit).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "generator"
    }


def decouple(
    checkpoint: str | Path,
    method: str,
    output: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Re-balance the classifier of the stage-1 ``checkpoint`` with ``method`` and save a new checkpoint.

    Args:
        checkpoint: path of a vision checkpoint (``equipoise.vision.checkpoint``), normally stage 1.
        method: one of :data:`DECOUPLING_METHODS` (``crt``, ``lws``, ``tau_norm``,
            ``weight_balancing``; see the module docstring).
        output: where to write; default ``<checkpoint's folder>/<method>/checkpoint.pt``. It may
            not be ``checkpoint`` itself.
        device: where features are extracted and the head is fitted (``"auto"``: CUDA when present).
        seed: seeds the generator of class-balanced batches and shuffling (no global seeding).
        progress: show a tqdm bar while extracting features.
        **options: the method's options (:func:`method_options` lists them with their defaults).

    Returns:
        The path of the new checkpoint.

    Raises:
        ValueError: an unknown method (listing the known ones), an unknown or invalid option
            (naming it), a head the method cannot re-balance (a cosine ``NormedLinear`` head with
            ``tau_norm``, ``lws`` or ``weight_balancing``), or a training split whose class counts
            differ from the checkpoint's.
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, one of {', '.join(DECOUPLING_METHODS.names())}; got {method!r}")
    spec = DECOUPLING_METHODS.get(method)
    options = _resolve_options(method, options)
    if not isinstance(checkpoint, (str, Path)):
        raise TypeError(f"checkpoint must be a path, got {type(checkpoint).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    source = Path(checkpoint)
    target = source.parent / method / "checkpoint.pt" if output is None else Path(output)
    if target.resolve() == source.resolve():
        raise ValueError(f"output {str(target)!r} is the stage-1 checkpoint itself; write the result elsewhere")
    compute = resolve_device(device)

    stage1 = load_checkpoint(source)
    model, _ = model_from_checkpoint(stage1, compute)
    model.requires_grad_(False)
    head_name, head = _find_head(model)
    if not spec.replaces_head:
        _check_linear_head(head, head_name, method)

    config = config_from_dict(TrainConfig, stage1["config"])
    num_classes = len(stage1["class_counts"])

    def features_of(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = dataset_from_config(config.data, split=split, augment=False)
        if split == "train" and list(dataset.class_counts) != list(stage1["class_counts"]):
            raise ValueError(
                f"the training split built from the checkpoint's config has class counts {list(dataset.class_counts)}, "
                f"but the checkpoint was trained on {list(stage1['class_counts'])}: the data under "
                f"{config.data.root or '$EQUIPOISE_DATA'} is not the data stage 1 saw"
            )
        return dataset_features(
            model,
            dataset,
            batch_size=config.eval_batch_size,
            device=compute,
            num_workers=config.data.num_workers,
            progress=progress,
            description=f"features ({split})",
        )

    features, labels = features_of("train")
    weight = bias = None
    if not spec.replaces_head:
        weight = head.weight.detach().clone()
        bias = None if head.bias is None else head.bias.detach().clone()
    state = _Stage1(
        features=features,
        labels=labels,
        num_classes=num_classes,
        weight=weight,
        bias=bias,
        generator=torch.Generator().manual_seed(seed),
        features_of=features_of,
        tau_splits=_tau_splits(config.data.dataset),
    )
    new_weight, new_bias, details = spec.fit(state, **options)
    _install_head(model, head_name, head, new_weight, new_bias)

    new_config = copy.deepcopy(stage1["config"])
    new_config["model"]["classifier"] = "linear"
    details = {
        "method": method,
        "source": str(source),
        "source_stage": stage1["stage"],
        "seed": seed,
        "options": options,
        **details,
    }
    return save_checkpoint(
        target,
        {
            "format": FORMAT,
            "stage": method,
            "config": new_config,
            "epoch": stage1["epoch"],
            "model": {key: value.detach().cpu() for key, value in model.state_dict().items()},
            "class_counts": list(stage1["class_counts"]),
            "class_names": list(stage1["class_names"]),
            "optimizer": None,
            "scaler": None,
            "rng": None,
            "metrics": {"decoupling": details},
        },
    )


def dataset_features(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 512,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    progress: bool = True,
    description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features ``(N, D)`` (float32) and labels ``(N,)`` (int64) of every item of ``dataset``, in order.

    ``dataset[i]`` is ``(image, label)`` with the image a ``(C, H, W)`` tensor. Batches of
    ``batch_size`` go through :func:`~equipoise.vision.models.extract_features` in eval mode
    under ``torch.no_grad()`` on ``device`` (the model is moved there and left in eval mode);
    both results stay on ``device``. A tqdm bar counts batches unless ``progress`` is false.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: no features to extract")
    target = resolve_device(device)
    model.to(target).eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=target.type == "cuda"
    )
    features, labels = [], []
    with torch.no_grad():
        for images, batch_labels in tqdm(loader, desc=description, disable=not progress, unit="batch", leave=False):
            features.append(extract_features(model, images.to(target, non_blocking=True)).float())
            labels.append(torch.as_tensor(batch_labels, dtype=torch.long).to(target))
    return torch.cat(features), torch.cat(labels)


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_momentum(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _check_optional_tau(name: str, value: Any) -> None:
    if value is not None:
        _check_number(name, value, check_non_negative)


def _check_taus(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers >= 0 (null: the default grid), got {value!r}")
    for item in value:
        _check_number(name, item, check_non_negative)


def _check_tau_split(name: str, value: Any) -> None:
    if value not in (None, "train", "val"):
        raise ValueError(f"{name} must be 'train', 'val' or null (choose for the dataset), got {value!r}")


def _check_beta(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _check_number(name: str, value: Any, check: Callable[[float, str], None]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    check(value, name)


_OPTION_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "epochs": _check_count,
    "batch_size": _check_count,
    "lr": lambda name, value: _check_number(name, value, check_positive),
    "weight_decay": lambda name, value: _check_number(name, value, check_non_negative),
    "momentum": _check_momentum,
    "tau": _check_optional_tau,
    "taus": _check_taus,
    "tau_split": _check_tau_split,
    "beta": _check_beta,
    "max_norm_threshold": lambda name, value: _check_number(name, value, check_non_negative),
}


def _resolve_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's defaults updated with ``options``, every value checked; unknown names raise ``ValueError``."""
    defaults = method_options(method)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]!r} for decoupling method {method!r}; its options are "
            + ", ".join(f"{name}={value!r}" for name, value in defaults.items())
        )
    resolved = {**defaults, **options}
    for name, value in resolved.items():
        _OPTION_CHECKS[name](name, value)
    return resolved


# --------------------------------------------------------------------------------------------
# The head
# --------------------------------------------------------------------------------------------


def _find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier's dotted name and module (``model.get_classifier()`` found among the submodules)."""
    get_classifier = getattr(model, "get_classifier", None)
    if not callable(get_classifier):
        raise ValueError(f"model {type(model).__name__} has no get_classifier(): decoupling needs timm's interface")
    head = get_classifier()
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"model {type(model).__name__} has {type(head).__name__} as classifier (several heads?); "
            "decoupling re-balances a single linear classifier"
        )
    for name, module in model.named_modules():
        if module is head and name:
            return name, head
    raise ValueError(f"the classifier of {type(model).__name__} is not one of its submodules")


def _check_linear_head(head: nn.Module, head_name: str, method: str) -> None:
    if isinstance(head, NormedLinear):
        raise ValueError(
            f"{method} re-balances the weight of a linear head, but the classifier {head_name!r} is a cosine "
            "NormedLinear, whose logits normalise every class row to norm 1: row norms carry no class bias to "
            "tau-normalise, scales and a MaxNorm radius are divided out again, and no nn.Linear reproduces its "
            "logits. Use method 'crt', which replaces the head by a new linear one"
        )
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"{method} needs an nn.Linear classifier, but {head_name!r} is {type(head).__name__}; "
            "use method 'crt', which replaces the head"
        )


def _install_head(
    model: nn.Module, head_name: str, old: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None
) -> None:
    """Put an ``nn.Linear`` holding ``weight`` and ``bias`` where the classifier ``old`` was."""
    reference = next(old.parameters())
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=reference.device)
    head.to(reference.dtype).requires_grad_(False)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    parent_name, _, attribute = head_name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, head)


# --------------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------------


def _crt(
    stage1: _Stage1,
    *,
    epochs: int = 10,
    lr: float = 0.2,
    weight_decay: float = 5e-4,
    batch_size: int = 512,
    momentum: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    head = retrain_classifier(
        stage1.features,
        stage1.labels,
        stage1.num_classes,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        momentum=momentum,
        generator=stage1.generator,
        device=stage1.features.device,
    )
    return head.weight.detach(), head.bias.detach(), {}


def _tau_splits(dataset: str) -> tuple[str, ...]:
    """Splits ``tau`` may be chosen on: ``("train", "val")`` when the dataset has a validation split
    distinct from its test split (ImageNet-LT, Places-LT), else ``("train",)``."""
    splits = SPLIT_FILES.get(dataset, {}).get("splits", {})
    if "val" in splits and splits["val"] != splits.get("test"):
        return ("train", "val")
    return ("train",)


def _tau_norm(
    stage1: _Stage1,
    *,
    tau: float | None = None,
    taus: Sequence[float] | None = None,
    tau_split: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    if tau is not None:
        return tau_normalize(stage1.weight, tau), stage1.bias, {"tau": float(tau), "tau_split": None}
    if tau_split is None:
        tau_split = stage1.tau_splits[-1]
    elif tau_split not in stage1.tau_splits:
        raise ValueError(
            f"tau_split={tau_split!r}, but this dataset has no validation split distinct from its test split "
            "(choosing tau on the test split would overstate the result); use tau_split='train' or pass tau="
        )
    if tau_split == "train":
        features, labels = stage1.features, stage1.labels
    else:
        features, labels = stage1.features_of(tau_split)
    grid = DEFAULT_NORM_TAUS if taus is None else taus
    chosen = fit_tau_normalization(features, labels, stage1.weight, stage1.bias, grid)
    return tau_normalize(stage1.weight, chosen), stage1.bias, {"tau": float(chosen), "tau_split": tau_split}


def _lws(
    stage1: _Stage1,
    *,
    epochs: int = 10,
    lr: float = 0.2,
    batch_size: int = 512,
    momentum: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    scaling = LearnableWeightScaling(stage1.weight, stage1.bias).fit(
        stage1.features,
        stage1.labels,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        momentum=momentum,
        generator=stage1.generator,
    )
    scales = scaling.scales.detach().to(stage1.weight)
    bias = None if stage1.bias is None else scales * stage1.bias
    return scales.unsqueeze(1) * stage1.weight, bias, {"scales": scales.cpu().tolist()}


def _weight_balancing(stage1: _Stage1, **options: Any) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Alshammari et al. 2022, stage 2: core's ``fit_weight_balancing``, whose signature holds the defaults."""
    return fit_weight_balancing(
        stage1.features, stage1.labels, stage1.weight, stage1.bias, generator=stage1.generator, **options
    )


DECOUPLING_METHODS.register("crt")(_Method(_crt, replaces_head=True))
DECOUPLING_METHODS.register("lws")(_Method(_lws, replaces_head=False))
DECOUPLING_METHODS.register("tau_norm")(_Method(_tau_norm, replaces_head=False))
DECOUPLING_METHODS.register("weight_balancing")(
    _Method(_weight_balancing, replaces_head=False, options_of=fit_weight_balancing)
)
