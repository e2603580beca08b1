"""Evaluate a long-tailed vision checkpoint on its test split, with optional post-hoc calibration.

>>> from equipoise.vision.evaluate import evaluate
>>> result = evaluate("results/vision/run/checkpoint.pt", calibrate=("logit_adjustment", "temperature"))
>>> print(result.metrics_table())          # also in <checkpoint dir>/eval/checkpoint/report.md

What :func:`evaluate` does:

1. reads the checkpoint (``equipoise.vision.checkpoint``; ``torch.load(weights_only=True)``),
   rebuilds its model in eval mode and builds the *test* split of the checkpoint's dataset (or
   of another registered dataset with the same number of classes) with the evaluation transform;
2. optionally keeps a stratified, seeded subset of ``limit`` test images (smoke runs);
3. with calibration, fits the calibrators on a *validation* split and reports on a disjoint
   one. Datasets with a validation split of their own (ImageNet-LT, Places-LT) use it, and the
   whole test split is reported. The others (CIFAR-LT, MNIST-LT, and iNaturalist 2018, whose
   "test" split is its validation list) have none, so the test images are split per class: a
   seeded ``val_fraction`` of every class is the validation split, the rest the *reported*
   split. Every row of every table, the uncalibrated one included, is measured on the same
   reported split, so the rows are comparable; without calibration the reported split is the
   whole (subset of the) test split;
4. runs the model batched under ``torch.no_grad`` and measures each variant with
   ``equipoise.core.metrics.evaluate_classification``: overall and balanced accuracy,
   many/medium/few-shot accuracy (groups from the checkpoint's *training* ``class_counts``,
   Liu et al. 2019), macro-F1, ECE, per-class accuracy;
5. writes ``report.md``, ``metrics.json``, ``splits.json`` (when a subset or a split was used)
   and PNG plots into ``output``.

Calibration methods (:data:`CALIBRATION_METHODS`), each fitted on the validation logits and
applied to the uncalibrated logits of the reported split:

- ``logit_adjustment``: post-hoc logit adjustment, ``argmax_y z_y - tau * log(pi_y)`` with
  ``pi`` the training class priors of the checkpoint (Menon et al., "Long-tail learning via
  logit adjustment", ICLR 2021; ``equipoise.core.calibration.PosthocLogitAdjustment``, ``tau``
  searched on 0, 0.05, ..., 2 for the best validation balanced accuracy);
- ``temperature``: temperature scaling, ``z / T`` with ``T`` minimising the validation NLL (Guo
  et al., "On Calibration of Modern Neural Networks", ICML 2017;
  ``equipoise.core.calibration.TemperatureScaling``). It changes confidence, never the
  prediction, so its accuracy columns equal the uncalibrated ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from equipoise.core.calibration import (
    Calibrator,
    PosthocLogitAdjustment,
    TemperatureScaling,
    check_distinct_splits,
)
from equipoise.core.config import config_from_dict
from equipoise.core.device import resolve_device
from equipoise.core.metrics import (
    DEFAULT_SHOT_THRESHOLDS,
    MetricReport,
    evaluate_classification,
    plot_confusion_matrix,
    plot_per_class,
    plot_reliability,
    shot_groups,
)
from equipoise.core.reporting import markdown_table

__all__ = [
    "CALIBRATION_METHODS",
    "EvaluationResult",
    "evaluate",
    "predict_logits",
    "stratified_split",
]

CALIBRATION_METHODS = ("logit_adjustment", "temperature")
"""Post-hoc calibrations :func:`evaluate` can fit on a validation split, in the order reported."""

_UNCALIBRATED = "uncalibrated"
_LABELS = {_UNCALIBRATED: "uncalibrated", "logit_adjustment": "+ logit adjustment", "temperature": "+ temperature"}
_PER_CLASS_ROWS = 20  # report.md lists every class up to this many


@dataclass
class EvaluationResult:
    """What :func:`evaluate` measured, and where it wrote it.

    - ``reports``: one :class:`~equipoise.core.metrics.MetricReport` per variant,
      ``"uncalibrated"`` first, then the calibrations asked for, all on the reported split;
    - ``calibrators``: the fitted calibrators by method name (``tau``, ``temperature`` buffers);
    - ``logits`` ``(N, C)`` float32 (uncalibrated) and ``targets`` ``(N,)`` int64 of the reported
      split, on the CPU; ``predictions``: ``(N,)`` int64 per variant;
    - ``indices``: positions of the reported examples in the test split; ``val_indices``:
      positions of the validation examples in the split ``info["validation_split"]`` names
      (``"test"``, or ``"val"`` for a dataset with its own), empty without calibration;
    - ``output``: the folder written; ``files``: its files by role;
    - ``info``: checkpoint, dataset, device and split facts (as in ``metrics.json``).
    """

    reports: dict[str, MetricReport]
    calibrators: dict[str, Calibrator]
    logits: torch.Tensor
    targets: torch.Tensor
    predictions: dict[str, torch.Tensor]
    indices: torch.Tensor
    val_indices: torch.Tensor
    output: Path
    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def fitted(self) -> dict[str, dict[str, float]]:
        """The fitted value of each calibration: ``{"logit_adjustment": {"tau": ...}, ...}``."""
        return {name: _fitted_values(calibrator) for name, calibrator in self.calibrators.items()}

    def metrics_table(self) -> str:
        """The headline metrics of every variant as a markdown table (percentages)."""
        return _metrics_table(self.reports, self.fitted())


def stratified_split(
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    val_fraction: float | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, stratified ``(val_indices, test_indices)`` of examples with labels ``targets``.

    Each class's positions are shuffled once by ``torch.randperm`` with a generator seeded by
    ``seed`` (classes in index order). With ``limit``, the first ``k_c`` of class ``c`` are kept,
    ``k_c`` its share of ``limit`` by the largest-remainder method (``sum k_c == limit``,
    ``|k_c - limit * n_c / N| < 1``). With ``val_fraction``, the first ``v_c = round(val_fraction
    * k_c)`` of those go to validation, clamped to ``[1, k_c - 1]`` so that both parts hold every
    class with two or more examples (a class with one example goes to validation, where the
    calibrators need every class); without it, validation is empty. The subsets are nested: the
    same seed with a larger ``limit`` keeps the same examples and adds more. Both index tensors
    are sorted, int64.
    """
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.int64).reshape(-1)
    if labels.numel() == 0:
        raise ValueError("targets is empty: nothing to split")
    if bool((labels < 0).any()):
        raise ValueError("targets must be non-negative class indices")
    if val_fraction is not None:
        _check_fraction(val_fraction)
    _check_seed(seed)
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    counts = torch.bincount(labels)
    keep = counts.tolist() if limit is None or limit >= labels.numel() else _allocate(counts, limit)
    generator = torch.Generator().manual_seed(seed)
    val_parts, test_parts = [], []
    for label, (count, kept) in enumerate(zip(counts.tolist(), keep)):
        if count == 0:
            continue
        members = torch.nonzero(labels == label).flatten()
        chosen = members[torch.randperm(count, generator=generator)[:kept]]
        if val_fraction is None or kept == 0:
            num_val = 0
        elif kept == 1:
            num_val = 1
        else:
            num_val = min(max(int(math.floor(val_fraction * kept + 0.5)), 1), kept - 1)
        val_parts.append(chosen[:num_val])
        test_parts.append(chosen[num_val:])
    return torch.cat(val_parts).sort().values, torch.cat(test_parts).sort().values


def _allocate(counts: torch.Tensor, limit: int) -> list[int]:
    """Largest-remainder shares of ``limit`` proportional to ``counts`` (ties to the lower class index)."""
    quota = counts.to(torch.float64) * limit / float(counts.sum())
    keep = quota.floor().to(torch.int64)
    remainder = quota - keep
    order = sorted(range(len(keep)), key=lambda c: (-float(remainder[c]), c))
    for c in order[: limit - int(keep.sum())]:
        keep[c] += 1
    return keep.tolist()


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    dataset: Dataset,
    device: str | torch.device = "auto",
    batch_size: int = 512,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
    description: str = "evaluating",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, targets)`` of ``model`` over ``dataset`` (``(image, label)`` items), in order.

    Batched, under ``torch.no_grad``, with ``model`` on ``device`` (``"auto"``: CUDA when
    present) in eval mode (the caller's mode is restored afterwards). ``amp`` runs the forward
    pass under ``torch.autocast`` in bfloat16 (float16 where bf16 is unsupported) on CUDA only;
    it is off by default because bf16 keeps 8 bits of mantissa, so logits near 10 would be rounded
    to steps of 0.06 before calibration and ECE read them. Logits come back as float32 on the
    CPU, targets as int64. A tqdm bar is shown unless ``progress=False``.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not _is_int(num_workers) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    device = resolve_device(device)
    # Its own generator: without one, a DataLoader draws its workers' base seed from the global
    # generator, and evaluating inside a training run would shift that run's random stream.
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
    )
    use_amp = amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    was_training = model.training
    model.to(device).eval()
    logits, targets = [], []
    try:
        for images, labels in tqdm(loader, desc=description, unit="batch", disable=not progress, leave=False):
            images = images.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                output = model(images)
            logits.append(output.float().cpu())
            targets.append(torch.as_tensor(labels, dtype=torch.int64))
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("dataset is empty: nothing to evaluate")
    return torch.cat(logits), torch.cat(targets)


def evaluate(
    checkpoint: str | Path,
    dataset: str | None = None,
    output: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    calibrate: Sequence[str] | str = (),
    val_fraction: float = 0.5,
    seed: int = 0,
    limit: int | None = None,
    data_root: str | Path | None = None,
    num_workers: int | None = None,
    amp: bool = False,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate the checkpoint at ``checkpoint`` on a test split and write a report (module docstring).

    Args:
        checkpoint: path of an ``equipoise.vision`` checkpoint. Missing: ``FileNotFoundError``;
            corrupt or not a vision checkpoint: ``ValueError``.
        dataset: a registered dataset name (``equipoise.vision.data.DATASETS``) whose test split
            replaces that of the checkpoint's ``config.data.dataset``; it must have as many classes
            as the checkpoint (else ``ValueError``). The checkpoint's evaluation transform is kept.
        output: folder for the report; default ``<checkpoint dir>/eval/<checkpoint stem>``
            (``..._<dataset>`` when ``dataset`` is given).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        batch_size: images per forward pass; default the checkpoint's ``eval_batch_size``.
        calibrate: methods of :data:`CALIBRATION_METHODS` to fit on a validation split (a single
            name may be given as a string); unknown names raise ``ValueError`` listing them.
        val_fraction: share of each class of the test split used for validation when calibrating
            a dataset without a validation split of its own, in (0, 1) (default 0.5).
        seed: seed of the validation split and of the ``limit`` subsets.
        limit: keep a stratified, seeded subset of this many test images (``None``: all); a
            dataset's own validation split is cut to the same size.
        data_root: data folder overriding the checkpoint's ``config.data.root`` (whose ``None``
            means ``$EQUIPOISE_DATA``).
        num_workers: DataLoader workers; default the checkpoint's ``config.data.num_workers``.
        amp: autocast on CUDA (see :func:`predict_logits`); off by default.
        progress: show a tqdm bar.

    Returns:
        An :class:`EvaluationResult`; ``metrics.json`` and ``report.md`` hold the same numbers.
    """
    from equipoise.vision.checkpoint import load_checkpoint, model_from_checkpoint
    from equipoise.vision.config import TrainConfig
    from equipoise.vision.data import DATASETS, dataset_from_config

    methods = _check_methods(calibrate)
    _check_fraction(val_fraction)
    _check_seed(seed)
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if dataset is not None:
        DATASETS.get(dataset)  # unknown names raise, listing the known ones
    resolved = resolve_device(device)
    path = Path(checkpoint)
    state = load_checkpoint(path)
    config = config_from_dict(TrainConfig, state["config"])
    class_counts = [int(count) for count in state["class_counts"]]
    class_names = [str(name) for name in state["class_names"]]
    num_classes = len(class_counts)

    data_config = _test_data_config(config.data, dataset, data_root, DATASETS)
    test_set = dataset_from_config(data_config, split="test")
    if test_set.num_classes != num_classes:
        raise ValueError(
            f"dataset {data_config.dataset!r} has {test_set.num_classes} classes but checkpoint {str(path)!r} "
            f"predicts {num_classes}; pass a dataset with {num_classes} classes"
        )
    model, _ = model_from_checkpoint(state, resolved)

    targets_all = np.asarray(test_set.targets)
    if methods and _has_own_validation_split(data_config.dataset):
        val_source = "val"
        val_set = dataset_from_config(data_config, split="val")
        if val_set.num_classes != num_classes:
            raise ValueError(
                f"the val split of {data_config.dataset!r} has {val_set.num_classes} classes, not {num_classes}"
            )
        _, val_indices = stratified_split(val_set.targets, None, seed, limit)
        _, indices = stratified_split(targets_all, None, seed, limit)
    else:
        val_source = "test" if methods else None  # None: no calibration, no validation split
        val_set = test_set
        val_indices, indices = stratified_split(targets_all, val_fraction if methods else None, seed, limit)
    if indices.numel() == 0:
        raise ValueError(f"limit={limit} leaves no test image to report on once the validation images are set aside")
    run = {
        "device": resolved,
        "batch_size": config.eval_batch_size if batch_size is None else batch_size,
        "num_workers": config.data.num_workers if num_workers is None else num_workers,
        "amp": amp,
        "progress": progress,
    }
    about = f"{path.name} on {data_config.dataset}"
    val_logits = torch.empty(0, num_classes)
    val_targets = torch.empty(0, dtype=torch.int64)
    if val_indices.numel():
        val_logits, val_targets = predict_logits(
            model, Subset(val_set, val_indices.tolist()), description=f"{about}, validation", **run
        )
    test_logits, test_targets = predict_logits(model, Subset(test_set, indices.tolist()), description=about, **run)

    calibrators = _fit_calibrators(methods, class_counts, val_logits, val_targets, test_logits)
    variants = {_UNCALIBRATED: test_logits}
    variants.update({name: calibrator(test_logits) for name, calibrator in calibrators.items()})
    reports = {
        name: evaluate_classification(scores, test_targets, class_counts=class_counts, class_names=class_names)
        for name, scores in variants.items()
    }
    predictions = {name: scores.argmax(dim=1) for name, scores in variants.items()}

    if output is None:
        suffix = f"_{dataset}" if dataset is not None else ""
        output = path.parent / "eval" / f"{path.stem}{suffix}"
    output = Path(output)
    info = {
        "checkpoint": str(path),
        "stage": state["stage"],
        "epoch": int(state["epoch"]),
        "model": config.model.name,
        "dataset": data_config.dataset,
        "trained_on": config.data.dataset,
        "split": "test",
        "device": str(resolved),
        "amp": bool(amp and resolved.type == "cuda"),
        "test_examples": len(test_set),
        "limit": limit,
        "seed": seed,
        "validation_split": val_source,
        "val_fraction": val_fraction if val_source == "test" else None,
        "validation_examples": val_indices.numel(),
        "reported_examples": indices.numel(),
        "validation_per_class": _per_class_counts(np.asarray(val_set.targets), val_indices, num_classes),
        "reported_per_class": _per_class_counts(targets_all, indices, num_classes),
        "train_class_counts": class_counts,
        "class_names": class_names,
        "test_class_names": [str(name) for name in test_set.classes],
        "shot_thresholds": list(DEFAULT_SHOT_THRESHOLDS),
        "shot_groups": shot_groups(class_counts),
    }
    result = EvaluationResult(
        reports=reports,
        calibrators=calibrators,
        logits=test_logits,
        targets=test_targets,
        predictions=predictions,
        indices=indices,
        val_indices=val_indices,
        output=output,
        info=info,
    )
    result.files = _write_outputs(result)
    return result


# --------------------------------------------------------------------------------------------
# Checks and steps
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")


def _check_seed(seed: int) -> None:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_methods(calibrate: Sequence[str] | str) -> list[str]:
    names = [calibrate] if isinstance(calibrate, str) else list(calibrate)
    unknown = [name for name in names if name not in CALIBRATION_METHODS]
    if unknown:
        raise ValueError(
            f"unknown calibrate method {unknown[0]!r}; allowed: {', '.join(CALIBRATION_METHODS)} (or none)"
        )
    return [name for name in CALIBRATION_METHODS if name in names]


def _test_data_config(data: Any, dataset: str | None, data_root: str | Path | None, registry: Any) -> Any:
    """The checkpoint's ``DataConfig``, pointed at another dataset or data root when asked."""
    changes: dict[str, Any] = {}
    if data_root is not None:
        changes["root"] = str(data_root)
    if dataset is not None and dataset != data.dataset:
        # The training profile (ratio, shape, max_count ...) does not apply to another dataset's
        # test split, and builders with a fixed profile refuse it: keep only the options the new
        # builder takes besides max_count (image_root, for instance).
        import inspect

        accepted = inspect.signature(registry.get(dataset)).parameters
        options = {key: value for key, value in data.options.items() if key in accepted and key != "max_count"}
        changes.update(dataset=dataset, imbalance_ratio=None, profile=None, options=options)
    return dataclasses.replace(data, **changes) if changes else data


def _has_own_validation_split(dataset: str) -> bool:
    """Whether ``dataset`` has a validation split distinct from its test split (ImageNet-LT, Places-LT).

    iNaturalist 2018's ``"test"`` is its validation list, and CIFAR/MNIST-LT have none.
    """
    from equipoise.vision.data import SPLIT_FILES

    splits = SPLIT_FILES.get(dataset, {}).get("splits", {})
    return "val" in splits and splits["val"] != splits.get("test")


def _fit_calibrators(
    methods: list[str],
    class_counts: list[int],
    val_logits: torch.Tensor,
    val_targets: torch.Tensor,
    test_logits: torch.Tensor,
) -> dict[str, Calibrator]:
    calibrators: dict[str, Calibrator] = {}
    if not methods:
        return calibrators
    check_distinct_splits(val_logits, test_logits, "validation logits", "reported test logits")
    for name in methods:
        if name == "logit_adjustment":
            if min(class_counts) <= 0:
                raise ValueError(
                    "logit_adjustment needs every class in the training split (it takes log(prior)); "
                    f"the checkpoint's class_counts are {class_counts}"
                )
            total = float(sum(class_counts))
            calibrator: Calibrator = PosthocLogitAdjustment([count / total for count in class_counts])
        else:
            calibrator = TemperatureScaling()
        try:
            calibrator.fit(val_logits, val_targets)
        except ValueError as error:
            raise ValueError(
                f"fitting {name} on the validation split ({val_logits.shape[0]} examples) failed: {error}"
            ) from error
        calibrator.check_not_fitted_on(test_logits, "reported test logits")
        calibrators[name] = calibrator
    return calibrators


def _fitted_values(calibrator: Calibrator) -> dict[str, float]:
    if isinstance(calibrator, PosthocLogitAdjustment):
        return {"tau": float(calibrator.tau)}
    if isinstance(calibrator, TemperatureScaling):
        return {"temperature": float(calibrator.temperature)}
    return {}


def _per_class_counts(targets: np.ndarray, indices: torch.Tensor, num_classes: int) -> list[int]:
    return np.bincount(targets[indices.numpy()], minlength=num_classes).tolist()


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _variant_label(name: str, fitted: dict[str, dict[str, float]]) -> str:
    values = fitted.get(name, {})
    if "tau" in values:
        return f"{_LABELS[name]} (tau = {values['tau']:.2f})"
    if "temperature" in values:
        return f"{_LABELS[name]} (T = {values['temperature']:.3f})"
    return _LABELS[name]


def _metrics_table(reports: dict[str, MetricReport], fitted: dict[str, dict[str, float]]) -> str:
    columns = {
        "accuracy": "accuracy",
        "balanced_accuracy": "balanced acc.",
        "many_shot_accuracy": "many-shot",
        "medium_shot_accuracy": "medium-shot",
        "few_shot_accuracy": "few-shot",
        "worst_class_accuracy": "worst class",
        "macro_f1": "macro-F1",
        "ece": "ECE",
    }
    rows = [
        {
            "variant": _variant_label(name, fitted),
            **{label: _percent(report.scalars.get(key)) for key, label in columns.items()},
        }
        for name, report in reports.items()
    ]
    return markdown_table(rows)


def _json_safe(value: Any) -> Any:
    """NaN and infinities to ``None`` (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _write_outputs(result: EvaluationResult) -> dict[str, Path]:
    output = result.output
    output.mkdir(parents=True, exist_ok=True)
    info, fitted = result.info, result.fitted()
    counts = info["train_class_counts"]
    names = info["class_names"]
    model_on = f"{info['model']} on {info['dataset']}"
    files: dict[str, Path] = {}

    # Temperature scaling never changes a prediction: its per-class accuracies and confusion
    # matrix are the uncalibrated ones, so only variants that can change predictions are drawn.
    changes_predictions = [name for name in result.reports if name != "temperature"]
    per_class = {
        _variant_label(name, fitted): [
            math.nan if row["recall"] is None else row["recall"] for row in result.reports[name].per_class
        ]
        for name in changes_predictions
    }
    files["per_class_plot"] = plot_per_class(
        per_class,
        counts,
        output / "per_class_accuracy.png",
        title=f"Per-class accuracy vs training frequency\n{model_on}",
    )
    for name, report in result.reports.items():
        files[f"reliability_{name}"] = plot_reliability(
            report.reliability, output / f"reliability_{name}.png", title=f"Reliability, {_LABELS[name]}\n{model_on}"
        )
    for name in changes_predictions:
        files[f"confusion_matrix_{name}"] = plot_confusion_matrix(
            result.reports[name].confusion_matrix,
            output / f"confusion_matrix_{name}.png",
            class_names=_tick_names(names),
            title=f"Confusion matrix, {_LABELS[name]} (rows: true class, normalised)\n{model_on}",
        )

    if info["limit"] is not None or result.val_indices.numel():
        files["splits"] = output / "splits.json"
        splits = {
            "validation_split": info["validation_split"],
            "seed": info["seed"],
            "limit": info["limit"],
            "val_fraction": info["val_fraction"],
            "validation": result.val_indices.tolist(),  # positions in the validation_split dataset
            "reported": result.indices.tolist(),  # positions in the test split
        }
        files["splits"].write_text(json.dumps(splits) + "\n")

    metrics = {
        **info,
        "fitted": fitted,
        "variants": {name: report.to_dict() for name, report in result.reports.items()},
    }
    files["metrics"] = output / "metrics.json"
    files["metrics"].write_text(json.dumps(_json_safe(metrics), indent=2) + "\n")
    files["report"] = output / "report.md"
    files["report"].write_text(_report_markdown(result, files))
    return files


def _caption(key: str) -> str:
    if key == "per_class_plot":
        return "Per-class accuracy against training examples of the class"
    for prefix, what in (("reliability_", "Reliability diagram"), ("confusion_matrix_", "Confusion matrix")):
        if key.startswith(prefix):
            return f"{what}, {_LABELS[key[len(prefix) :]]}"
    return key


def _tick_names(names: list[str]) -> list[str]:
    """Class names that fit under the columns of a confusion matrix of up to 10 classes.

    ``plot_confusion_matrix`` writes the x labels of up to 10 classes horizontally, where names
    such as ``"0 - zero"`` (MNIST) or ``"automobile"`` (CIFAR-10) run into each other: names are
    broken into lines at spaces, dashes and underscores, and words longer than 7 characters are
    hyphenated. More classes get rotated labels there and are left as they are.
    """
    if len(names) > 10:
        return names
    lines = []
    for name in names:
        words = [word for word in re.split(r"\s+-\s+|\s+|_", name) if word]
        broken = []
        for word in words:
            half = (len(word) + 1) // 2
            broken += [word[:half] + "-", word[half:]] if len(word) > 7 else [word]
        lines.append("\n".join(broken) or name)
    return lines


def _split_description(info: dict[str, Any]) -> list[str]:
    def subset(total: int, kept: int) -> str:
        if info["limit"] is not None and kept < total:
            return f"a stratified subset of {kept} of its {total} images (seed {info['seed']})"
        return f"all {total} images"

    dataset = f"`{info['dataset']}`"
    if info["validation_split"] == "val":
        kept = info["validation_examples"]
        which = f"all {kept} images" if info["limit"] is None else f"a stratified subset of {kept} images"
        return [
            f"- Validation split: the val split of {dataset}, {which}, used only to fit the calibrations.",
            f"- Reported split: the test split of {dataset}, "
            f"{subset(info['test_examples'], info['reported_examples'])}. Every number below is measured on it.",
        ]
    if info["validation_split"] == "test":
        kept = info["validation_examples"] + info["reported_examples"]
        share = f"{100 * info['val_fraction']:g} %"
        return [
            f"- Test split of {dataset}: {subset(info['test_examples'], kept)}. The dataset has no validation "
            "split of its own, so the test images are split per class:",
            f"- Validation split: {info['validation_examples']} of those images ({share} of each class, seed "
            f"{info['seed']}), used only to fit the calibrations.",
            f"- Reported split: the other {info['reported_examples']} images. Every number below, the "
            "uncalibrated row included, is measured on this split, so the rows are comparable.",
        ]
    return [
        f"- Reported split: the test split of {dataset}, {subset(info['test_examples'], info['reported_examples'])} "
        "(no calibration, so no validation split)."
    ]


def _report_markdown(result: EvaluationResult, files: dict[str, Path]) -> str:
    info, fitted = result.info, result.fitted()
    counts = info["train_class_counts"]
    names = info["class_names"]
    calibrated = bool(result.calibrators)
    positive = [count for count in counts if count > 0]
    ratio = f"{max(counts) / min(counts):.4g}" if min(counts) > 0 else "inf"
    lines = [
        f"# Evaluation of `{Path(info['checkpoint']).name}`",
        "",
        f"- Checkpoint: `{info['checkpoint']}` (stage `{info['stage']}`, epoch {info['epoch']}, "
        f"model `{info['model']}`, trained on `{info['trained_on']}`)",
        f"- Dataset: `{info['dataset']}`, test split; {len(counts)} classes, training counts "
        f"{max(counts)} to {min(positive) if positive else 0} (imbalance ratio {ratio})",
        f"- Device: {info['device']}" + (" (autocast)" if info["amp"] else ""),
    ]
    if info["dataset"] != info["trained_on"] and info["test_class_names"] != names:
        lines.append("- Note: the test dataset names its classes differently; the checkpoint's names are used below.")
    lines += ["", "## Splits", "", *_split_description(info), ""]
    lines += ["## Metrics (%)", "", result.metrics_table()]
    if calibrated:
        notes = []
        if "logit_adjustment" in fitted:
            notes.append(
                f"Logit adjustment (Menon et al. 2021): argmax z - tau * log(training prior), tau = "
                f"{fitted['logit_adjustment']['tau']:.2f} chosen on the validation split for balanced accuracy."
            )
        if "temperature" in fitted:
            notes.append(
                f"Temperature scaling (Guo et al. 2017): z / T, T = {fitted['temperature']['temperature']:.4f} "
                "minimising the validation NLL; predictions, hence accuracies, are the uncalibrated ones."
            )
        lines += [" ".join(notes), ""]

    groups = info["shot_groups"]
    many, few = info["shot_thresholds"]
    bounds = {"many": f"> {many}", "medium": f"{few}–{many}", "few": f"< {few}"}
    shot_rows = []
    for group, members in groups.items():
        row: dict[str, Any] = {
            "group": f"{group}-shot ({bounds[group]} training images)",
            "classes": len(members),
            "training images per class": (
                f"{max(counts[c] for c in members)}–{min(counts[c] for c in members)}" if members else "–"
            ),
        }
        for name, report in result.reports.items():
            row[_variant_label(name, fitted)] = _percent(report.scalars.get(f"{group}_shot_accuracy"))
        shot_rows.append(row)
    lines += ["## Accuracy by shot group (%)", "", "Mean per-class accuracy of the classes of each group.", ""]
    lines += [markdown_table(shot_rows)]

    if len(counts) <= _PER_CLASS_ROWS:
        shown = [name for name in result.reports if name != "temperature"]
        group_of = {c: group for group, members in groups.items() for c in members}
        class_rows = []
        for c in range(len(counts)):
            row = {
                "class": names[c],
                "training images": counts[c],
                "shot": group_of[c],
                "reported test images": info["reported_per_class"][c],
            }
            for name in shown:
                row[f"accuracy, {_LABELS[name]}"] = _percent(result.reports[name].per_class[c]["recall"])
            class_rows.append(row)
        lines += ["## Per class (%)", ""]
        if "temperature" in result.reports:
            lines += ["Temperature scaling leaves every per-class accuracy as uncalibrated.", ""]
        lines += [markdown_table(class_rows)]

    lines += ["## Plots", ""]
    for key, path in files.items():
        if path.suffix == ".png":
            lines += [f"![{_caption(key)}]({path.name})", ""]
    lines += [
        "Files: `metrics.json` (every metric, per class, reliability bins and confusion matrix per variant)"
        + (", `splits.json` (test-set positions of the validation and reported examples)" if "splits" in files else "")
        + ".",
        "",
    ]
    return "\n".join(lines)
