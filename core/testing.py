"""Conformance checks that every registered component must pass (as imbalanced-learn's
``check_samplers_*``).

``check_sampler(build, labels)`` and ``check_calibrator(build, make_data)`` do the same for the
other two kinds: a sampler is a ``torch.utils.data.Sampler`` that is deterministic by seed and
epoch and splits an epoch across DDP ranks like ``DistributedSampler``; a calibrator refuses
to run before ``fit``, refuses bad input, refuses the data it was fitted on as test data and
survives a ``state_dict`` round trip.

``check_loss(name)`` builds the loss registered as ``name`` and checks the contract every
equipoise loss promises: finite values and gradients for logits of +-1e4 in float32 and for
fp16/bf16 inputs, reductions that agree with each other, a module equal to its function,
non-negative values, a ``state_dict`` that survives ``torch.save``/``torch.load(weights_only=True)``,
and bad input that raises ``TypeError``/``ValueError`` instead of computing. A new loss is
covered the moment it is registered: the test suite runs ``check_loss`` over
``available_losses()``.

Conventions the checks rely on (and that keep names consistent across the package):

- the module class has ``functional`` (its function) and ``target_kind`` (``"index"`` for
  ``(N,)`` integer targets, ``"binary"`` for float targets of the logits' shape);
- the module stores each hyper-parameter under the function's parameter name, so
  ``module.functional(logits, target, **hyper_parameters(module))`` equals ``module(logits, target)``;
- class statistics are passed to constructors as ``class_counts`` (or ``class_priors``).
"""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from equipoise.core.losses import LOSSES

__all__ = [
    "check_calibrator",
    "check_loss",
    "check_sampler",
    "example_class_counts",
    "hyper_parameters",
    "loss_inputs",
    "random_logits",
    "random_targets",
]

_NOT_HYPER = {"logits", "target", "targets", "validate_args"}


def example_class_counts(num_classes: int = 5) -> torch.Tensor:
    """A long-tailed count profile (ratio 100 between the first and the last class)."""
    ratio = torch.tensor(100.0) ** (-torch.arange(num_classes, dtype=torch.float64) / (num_classes - 1))
    return torch.floor(1000 * ratio)


def random_logits(*shape: int, seed: int = 0, scale: float = 2.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``scale * N(0, 1)`` logits of ``shape`` from a generator seeded with ``seed``.

    Drawn in float64 and then cast, so every dtype gets the same values, rounded.
    """
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)


def random_targets(num_classes: int, size: int, seed: int = 0) -> torch.Tensor:
    """``size`` integer class indices in ``[0, num_classes)`` from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, (size,), generator=generator)


def _constructor_kwargs(cls: type, class_counts: torch.Tensor) -> dict[str, Any]:
    parameters = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "class_counts" in parameters:
        kwargs["class_counts"] = class_counts
    elif "class_priors" in parameters:
        kwargs["class_priors"] = class_counts / class_counts.sum()
    if "auto_update" in parameters:
        kwargs["auto_update"] = False  # online statistics (EQLv2) change between the checks' calls by design
    return kwargs


def hyper_parameters(module: nn.Module) -> dict[str, Any]:
    """The keyword arguments of ``module.functional`` read from the module's attributes."""
    parameters = inspect.signature(module.functional).parameters
    return {name: getattr(module, name) for name in parameters if name not in _NOT_HYPER}


def loss_inputs(
    target_kind: str,
    batch_size: int = 16,
    num_classes: int = 5,
    scale: float = 3.0,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits ``(batch_size, num_classes)`` and matching targets of the given kind."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    logits = scale * torch.randn(batch_size, num_classes, generator=generator, dtype=torch.float64)
    labels = torch.arange(batch_size) % num_classes  # every class present
    if target_kind == "index":
        target = labels
    else:
        target = torch.nn.functional.one_hot(labels, num_classes).to(torch.float64)
        target = torch.maximum(
            target, (torch.rand(target.shape, generator=generator, dtype=torch.float64) < 0.2).to(torch.float64)
        )
    return logits.to(dtype), (target if target_kind == "index" else target.to(dtype))


def _build(name: str, **overrides: Any) -> nn.Module:
    cls = LOSSES.get(name)
    return cls(**{**_constructor_kwargs(cls, example_class_counts()), **overrides})


def _assert_finite(value: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise AssertionError(f"{what} is not finite: {value}")


def _assert_raises(errors: tuple[type[Exception], ...], call: Callable[[], Any], what: str) -> None:
    try:
        call()
    except errors:
        return
    except Exception as error:  # noqa: BLE001 - the point is to report the wrong type
        raise AssertionError(f"{what} raised {type(error).__name__}: {error}, expected {errors}") from error
    raise AssertionError(f"{what} did not raise {errors}")


def check_loss(name: str, device: str | torch.device = "cpu") -> None:
    """Run every conformance check on the loss registered as ``name`` on ``device``.

    Raises ``AssertionError`` (or the unexpected exception) on the first failure.
    """
    device = torch.device(device)
    module = _build(name).to(device)
    kind = module.target_kind
    if kind not in ("index", "binary"):
        raise AssertionError(f"{name}: target_kind must be 'index' or 'binary', got {kind!r}")
    if not callable(getattr(module, "functional", None)):
        raise AssertionError(f"{name}: the module must expose its function as `functional`")

    # Module equals function, and the value is non-negative.
    logits, target = (t.to(device) for t in loss_inputs(kind))
    value = module(logits, target)
    expected = module.functional(logits, target, **hyper_parameters(module))
    torch.testing.assert_close(value, expected, msg=f"{name}: module and function disagree")
    if float(value) < 0:
        raise AssertionError(f"{name}: negative loss {float(value)}")

    # Reductions agree.
    per_element = _build(name, reduction="none").to(device)(logits, target)
    total = _build(name, reduction="sum").to(device)(logits, target)
    torch.testing.assert_close(per_element.sum(), total, msg=f"{name}: 'none'.sum() != 'sum'")
    if bool((per_element < 0).any()):
        raise AssertionError(f"{name}: negative per-element loss")

    # Finite values and gradients at +-1e4 (fp32) and in half precision.
    extreme, extreme_target = (t.to(device) for t in loss_inputs(kind, scale=1.0))
    extreme = (extreme.sign() * 1e4).requires_grad_()
    loss = module(extreme, extreme_target)
    loss.backward()
    _assert_finite(loss, f"{name}: loss at logits +-1e4")
    _assert_finite(extreme.grad, f"{name}: gradient at logits +-1e4")
    # ... and correct: the float32 value matches the same loss computed in float64.
    reference = module(extreme.detach().double(), extreme_target.double() if kind == "binary" else extreme_target)
    torch.testing.assert_close(
        loss.double(), reference, rtol=1e-5, atol=1e-5, msg=f"{name}: float32 and float64 disagree at logits +-1e4"
    )
    for dtype in (torch.float16, torch.bfloat16):
        half, half_target = (t.to(device) for t in loss_inputs(kind, scale=20.0, dtype=dtype))
        half.requires_grad_()
        loss = module(half, half_target)
        loss.backward()
        _assert_finite(loss, f"{name}: {dtype} loss")
        _assert_finite(half.grad, f"{name}: {dtype} gradient")
        if loss.dtype not in (torch.float32, torch.float64):
            raise AssertionError(f"{name}: {dtype} logits must give a float32 loss, got {loss.dtype}")

    # state_dict survives a save/load round trip with weights_only=True.
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    cls = type(module)
    rebuilt_kwargs = _constructor_kwargs(cls, torch.ones_like(example_class_counts()))
    rebuilt = cls(**rebuilt_kwargs).to(device)
    rebuilt.load_state_dict(state)
    torch.testing.assert_close(rebuilt(logits, target), value, msg=f"{name}: state_dict round trip changed the loss")

    # Bad input raises.
    bad_logits = logits.clone()
    bad_logits[0, 0] = float("nan")
    _assert_raises((ValueError,), lambda: module(bad_logits, target), f"{name}: NaN logits")
    bad_logits[0, 0] = float("inf")
    _assert_raises((ValueError,), lambda: module(bad_logits, target), f"{name}: inf logits")
    _assert_raises((ValueError,), lambda: module(logits[:0], target[:0]), f"{name}: empty batch")
    _assert_raises((ValueError,), lambda: module(logits, target[:-1]), f"{name}: target of the wrong length")
    _assert_raises((TypeError,), lambda: module(logits.long(), target), f"{name}: integer logits")
    if kind == "index":
        out_of_range = target.clone()
        out_of_range[0] = logits.shape[1]
        _assert_raises((ValueError,), lambda: module(logits, out_of_range), f"{name}: target = C")
        out_of_range[0] = -1
        _assert_raises((ValueError,), lambda: module(logits, out_of_range), f"{name}: target = -1")
        _assert_raises((TypeError,), lambda: module(logits, target.float()), f"{name}: float class targets")
    else:
        _assert_raises((TypeError,), lambda: module(logits, target.long()), f"{name}: integer binary targets")
        outside = target.clone()
        outside[0, 0] = 2.0
        _assert_raises((ValueError,), lambda: module(logits, outside), f"{name}: binary target 2.0")
    _assert_raises((ValueError,), lambda: _build(name, reduction="average"), f"{name}: unknown reduction")
    constructor = inspect.signature(cls).parameters
    if "class_counts" in constructor:
        counts = example_class_counts()
        _assert_raises((ValueError,), lambda: cls(class_counts=-counts), f"{name}: negative class_counts")
        wrong_length = cls(class_counts=counts[:-1]).to(device)
        _assert_raises((ValueError,), lambda: wrong_length(logits, target), f"{name}: class_counts of the wrong length")


def check_sampler(build: Callable[..., Sampler], labels: torch.Tensor, num_replicas: int = 3) -> None:
    """The contract of every equipoise sampler, for a sampler built as ``build(**options)``.

    ``build`` receives ``seed``/``generator`` and ``num_replicas``/``rank`` keyword arguments
    (the labels are the caller's: ``labels`` is only used to check the index range). Checks:
    a ``Sampler`` whose iteration has ``len(sampler)`` Python ints in ``[0, len(labels))``; the
    same draw for the same seed and epoch, another for another seed or epoch, ``set_epoch``
    back to an earlier epoch repeating it; a ``generator`` seeding it deterministically; and
    DDP shares of equal length that, interleaved, give back the single-process draw padded by
    wrapping, as ``DistributedSampler`` does.
    """
    sampler = build(seed=3)
    if not isinstance(sampler, Sampler):
        raise AssertionError(f"{type(sampler).__name__} is not a torch.utils.data.Sampler")
    first = list(sampler)
    if len(first) != len(sampler):
        raise AssertionError(f"iteration gave {len(first)} indices, len() says {len(sampler)}")
    if not all(type(index) is int for index in first[:100]):
        raise AssertionError("iteration must yield Python ints")
    if min(first) < 0 or max(first) >= len(labels):
        raise AssertionError(f"indices outside [0, {len(labels)}): {min(first)} .. {max(first)}")
    if list(sampler) != first or list(build(seed=3)) != first:
        raise AssertionError("the same seed and epoch gave another draw")
    if list(build(seed=4)) == first:
        raise AssertionError("another seed gave the same draw")
    sampler.set_epoch(1)
    if list(sampler) == first:
        raise AssertionError("set_epoch(1) did not change the draw")
    sampler.set_epoch(0)
    if list(sampler) != first:
        raise AssertionError("set_epoch(0) did not give back the first epoch's draw")
    seeded = [list(build(generator=torch.Generator().manual_seed(9))) for _ in range(2)]
    if seeded[0] != seeded[1]:
        raise AssertionError("the same generator seed gave two draws")

    single = build(seed=1, num_replicas=1, rank=0)
    single.set_epoch(2)
    expected = torch.tensor(list(single))
    shares = []
    for rank in range(num_replicas):
        share = build(seed=1, num_replicas=num_replicas, rank=rank)
        share.set_epoch(2)
        shares.append(torch.tensor(list(share)))
    per_rank = math.ceil(len(expected) / num_replicas)
    if {len(share) for share in shares} != {per_rank}:
        raise AssertionError(f"DDP shares of lengths {[len(s) for s in shares]}, expected {per_rank} each")
    padding = per_rank * num_replicas - len(expected)
    padded = torch.cat([expected, expected.repeat(math.ceil(padding / len(expected)) + 1)[:padding]])
    if not torch.equal(torch.stack(shares, dim=1).flatten(), padded):
        raise AssertionError("the DDP shares do not interleave into the single-process draw")


def check_calibrator(
    build: Callable[[], nn.Module],
    make_data: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device = "cpu",
) -> None:
    """The contract of every equipoise calibrator built as ``build()``.

    ``make_data(num_samples, seed)`` returns inputs (logits or features) and labels. Checks:
    using it before ``fit`` raises ``RuntimeError``; NaN inputs and out-of-range labels raise
    ``ValueError``; ``fit`` returns the calibrator; the transform of other data is finite and
    keeps the batch size; ``check_not_fitted_on`` refuses the fitting data (and a copy of it)
    as test data and accepts other data; the fitted state survives ``torch.save`` and
    ``torch.load(weights_only=True)``.
    """
    x, labels = (t.to(device) for t in make_data(90, 0))
    test_x, _ = (t.to(device) for t in make_data(90, 1))
    calibrator = build().to(device)
    if getattr(calibrator, "fitted", None) is not False:
        raise AssertionError("a new calibrator must report fitted == False")
    _assert_raises((RuntimeError,), lambda: calibrator(test_x), "use before fit")
    bad = x.clone()
    bad.view(-1)[0] = float("nan")
    _assert_raises((ValueError,), lambda: calibrator.fit(bad, labels), "fit on NaN inputs")
    wrong = labels.clone()
    wrong[0] = 10_000
    _assert_raises((ValueError,), lambda: calibrator.fit(x, wrong), "fit with a label out of range")
    if calibrator.fit(x, labels) is not calibrator or not calibrator.fitted:
        raise AssertionError("fit must return the calibrator and mark it fitted")
    with torch.no_grad():
        out = calibrator(test_x)
    if out.shape[0] != test_x.shape[0] or not bool(torch.isfinite(out).all()):
        raise AssertionError("the transform must keep the batch size and be finite")
    _assert_raises((ValueError,), lambda: calibrator.check_not_fitted_on(x), "the fitting data as test data")
    _assert_raises((ValueError,), lambda: calibrator.check_not_fitted_on(x.clone()), "a copy of the fitting data")
    calibrator.check_not_fitted_on(test_x)
    buffer = io.BytesIO()
    torch.save(calibrator.state_dict(), buffer)
    buffer.seek(0)
    rebuilt = build().to(device)
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(test_x), out, msg="state_dict round trip changed the transform")
    _assert_raises((ValueError,), lambda: rebuilt.check_not_fitted_on(x), "the fitting data after a reload")
