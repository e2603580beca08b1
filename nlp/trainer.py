"""A ``transformers.Trainer`` that trains with any core imbalance loss, sample weights or a class-aware sampler.

Why a subclass: the stock ``Trainer`` takes its loss from the model, and every Hugging Face
classification head computes plain cross-entropy (``compute_loss_func`` exists, but it gets
neither the class counts nor the sample weights, and the Trainer's sampler is fixed to random
or length-grouped sampling). :class:`ImbalancedTrainer` keeps everything else of the Trainer
(optimiser, schedule, mixed precision, distribution, evaluation) and changes three hooks:

- ``compute_loss``: the labels (and ``sample_weight``) are taken out of the batch, the model
  runs without them, and the core loss built by name (``equipoise.core.losses.build_loss``)
  is applied to the logits flattened to ``(N, C)`` (``N`` tokens for tagging, examples for
  sequence classification), in float32 (``logits.float()``), on the positions whose label is
  not ``-100`` only (padding, special tokens and sub-word continuations contribute nothing);
- ``_get_train_sampler``: a core sampler (``equipoise.core.samplers``, e.g.
  ``"class_balanced"``, ``"square_root"``) built from the training labels, for sequence
  classification only (a tagged sentence holds many classes, so it has no single class to
  sample by);
- ``_set_signature_columns_if_needed``: the column ``sample_weight`` is kept by the Trainer's
  ``remove_unused_columns`` (on by default), as if it were a model input; the model never sees
  it.

Losses (see ``equipoise.core.losses`` for the formulas and defaults):

- self-adjusting dice (Li, Sun, Meng, Liang, Wu, Li. "Dice Loss for Data-imbalanced NLP
  Tasks", ACL 2020): ``loss="dice"``, paper defaults ``smooth = 1``, ``alpha = 0.01`` and the
  squared denominator ``p^2 + y^2``; their NER and MRC results are with BERT/RoBERTa tagging;
  ``loss_options={"batch_dice": True}`` is the set-level form (one dice per class over the
  non-ignored tokens or rows of each micro-batch; no per-row loss, so no sample weights);
- focal loss (Lin, Goyal, Girshick, He, Dollar. "Focal Loss for Dense Object Detection", ICCV
  2017): ``loss="focal"`` (the softmax form, ``gamma = 2``);
- class-balanced loss (Cui, Jia, Lin, Song, Belongie. "Class-Balanced Loss Based on Effective
  Number of Samples", CVPR 2019): ``loss="class_balanced"``, or its weights on cross-entropy
  with ``loss_options={"weight": "effective_number"}``;
- every other registered loss whose targets are class indices (``ldam``, ``balanced_softmax``,
  ``logit_adjusted``, ``vs``, ``squentropy``, ``dual_focal``, ...). Losses with ``"binary"``
  targets (``sigmoid_focal``, ``asymmetric``) get one-hot targets.

Losses that need the training class counts (``ldam``, ``class_balanced``, ``balanced_softmax``,
``vs``, ``logit_adjusted`` and the weight names below) get ``class_counts`` from the trainer
argument or, when it is not given, counted over the training set's labels (``-100`` skipped).

Class weights (``loss_options["weight"]``, for the losses that take a ``weight`` argument:
``cross_entropy``, ``focal``, ``ldam``, ``ldam_hinge``):

- ``"inverse_frequency"``: ``n_c ** -p`` normalised to sum to ``C``
  (``inverse_frequency_weights``), ``p = loss_options["weight_power"]``, default 1 (0.5 is the
  square-root weighting);
- ``"effective_number"``: ``(1 - beta) / (1 - beta ** n_c)`` normalised to sum to ``C``
  (``effective_number_weights``, Cui et al. 2019), ``beta = loss_options["weight_beta"]``,
  default 0.9999;
- a tensor or list of ``C`` numbers: used as given.

A class-weighted cross-entropy is then ``F.cross_entropy(weight=w)``, whose mean divides by the
sum of the weights of the targets.

Sample weights (one per example: a ``sample_weight`` column of the dataset), as in the
system that won DepSign-LT-EDI@RANLP 2023 (Garcia, Gomes, Barbosa Junior, Borges, da Silva.
"DeepLearningBrasil@LT-EDI-2023: Exploring Deep Learning Techniques for Detecting Depression
in Social Media Text", LT-EDI 2023), which made its classifier robust to the imbalance of the
three depression levels by weighting each example's loss:

    loss = sum_i s_i * l_i / sum_i s_i

with ``l_i`` the core loss of row ``i`` (``reduction="none"``, summed over the classes for the
one-hot targets of ``sigmoid_focal``/``asymmetric``; for tagging every token of example ``i``
gets ``s_i``, and the sums run over the non-ignored tokens). ``l_i`` includes any
class weight, so with all ``s_i = 1`` a class-weighted loss is averaged over the rows rather
than divided by the sum of the class weights. Under gradient accumulation the denominator is
the sum of the weights over *all* the micro-batches of the optimiser step (counted when the
Trainer fetches them), so ``k`` micro-batches give exactly the gradient of the weighted mean
over the ``k`` batches together; examples of weight 0 have no effect at all. With several
processes (DDP), each process normalises by its own micro-batches' weights and DDP averages
the processes' gradients.

Without sample weights, each micro-batch's loss is the core loss's own ``"mean"`` over that
micro-batch, and the Trainer divides it by the number of accumulation steps
(``loss_is_scaled_for_ga = False``): the step's gradient is the mean of the micro-batch means.
That is exact without accumulation (the default) and whenever the micro-batches hold equally
many non-ignored tokens; otherwise tokens of a short micro-batch weigh a little more. The
Trainer's ``num_items_in_batch`` (a count of non-ignored labels) is not used: it would be the
right denominator only for losses whose mean is a plain count, not for class-weighted ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn

from equipoise.core.losses import LOSSES, build_loss, effective_number_weights, inverse_frequency_weights
from equipoise.core.samplers import SAMPLERS
from equipoise.core.validation import ArrayLike, as_class_counts, check_class_counts
from equipoise.nlp.data import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "SAMPLE_WEIGHT_COLUMN", "ImbalancedTrainer"]

#: Label of positions that contribute nothing (padding, special tokens, sub-word continuations).

#: Name of the dataset column (and batch key) holding one weight per example.
SAMPLE_WEIGHT_COLUMN = "sample_weight"

_LABEL_KEYS = ("labels", "label", "label_ids")
_CLASS_WEIGHTS = ("inverse_frequency", "effective_number")
# Set by the trainer itself: the rows it passes are already free of ignored positions.
_RESERVED_OPTIONS = {
    "reduction": "the trainer reduces the loss itself (mean, or the sample-weighted mean)",
    "ignore_index": f"the trainer drops the positions labelled {IGNORE_INDEX} before calling the loss",
    "class_counts": "pass class_counts= to the trainer instead",
}


class ImbalancedTrainer(transformers.Trainer):
    """``transformers.Trainer`` with a core loss by name, sample weights and a class-aware sampler.

    See the module docstring for the papers, the class-weight names, the sample-weight formula
    and what happens under gradient accumulation. Every ``Trainer`` argument is accepted; the
    extra ones are keyword-only:

    Args:
        loss: name of a registered core loss (``equipoise.core.losses.available_losses()``).
            Default ``"cross_entropy"``, which with no options is the Trainer's own loss.
        loss_options: keyword arguments of the loss (``{"gamma": 2.0}``, ``{"alpha": 0.01}``,
            ...), plus ``"weight"`` as a name (``"inverse_frequency"``, ``"effective_number"``)
            or ``C`` numbers, and ``"weight_power"`` / ``"weight_beta"`` for the named weights.
            ``reduction``, ``ignore_index`` and ``class_counts`` are set by the trainer.
        class_counts: ``(C,)`` training examples (tokens, for tagging) per class, for the
            losses and weights that need them. Default: counted over the training set's
            ``labels``/``label`` column, ``-100`` skipped.
        sampler: name of a core sampler (``"class_balanced"``, ``"square_root"``, ``"power"``,
            ...) for the training set; sequence classification only. Seeded with
            ``args.data_seed`` (or ``args.seed``); each process draws the whole epoch and the
            Trainer's data loader splits it across processes.
        sampler_options: keyword arguments of the sampler (``{"q": 0.3}`` for ``"power"``).

    Attributes:
        loss_fn: the built loss module; ``class_counts``: the counts given to it (``None`` if
        none was needed).
    """

    # Each micro-batch's loss is a per-batch mean; the Trainer divides it by the number of
    # accumulation steps. Sample-weighted steps set it to True (see ``training_step``).
    loss_is_scaled_for_ga: bool | None = False

    def __init__(
        self,
        *args: Any,
        loss: str = "cross_entropy",
        loss_options: Mapping[str, Any] | None = None,
        class_counts: ArrayLike | None = None,
        sampler: str | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        loss_class = LOSSES.get(loss)  # unknown names raise ValueError listing the known ones
        if loss_options is not None and not isinstance(loss_options, Mapping):
            raise TypeError(f"loss_options must be a dict of keyword arguments, got {type(loss_options).__name__}")
        if sampler is not None:
            SAMPLERS.get(sampler)
        if sampler_options is not None and not isinstance(sampler_options, Mapping):
            raise TypeError(
                f"sampler_options must be a dict of keyword arguments, got {type(sampler_options).__name__}"
            )
        if sampler is None and sampler_options:
            raise ValueError(f"sampler_options {dict(sampler_options)} given without a sampler")
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("compute_loss_func replaces the loss; ImbalancedTrainer builds it from loss= instead")
        self._accumulated_sample_weight: torch.Tensor | None = None
        self._sample_weight_normaliser: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        if self.label_smoother is not None:
            raise ValueError(
                f"args.label_smoothing_factor={self.args.label_smoothing_factor} is ignored by ImbalancedTrainer: "
                "use loss='cross_entropy', loss_options={'label_smoothing': ...}"
            )
        self.loss_name = loss
        self.sampler_name = sampler
        self.sampler_options = dict(sampler_options or {})
        config = getattr(self.model, "config", None)
        self._num_labels: int | None = getattr(config, "num_labels", None)
        self._id2label: Mapping[int, str] = dict(getattr(config, "id2label", None) or {})
        self.loss_fn, self.class_counts = self._build_loss(loss_class, dict(loss_options or {}), class_counts)
        self.loss_fn.to(self.args.device)
        if sampler is not None:
            if self.args.train_sampling_strategy != "random":
                raise ValueError(
                    f"sampler={sampler!r} replaces args.train_sampling_strategy="
                    f"{self.args.train_sampling_strategy!r}; leave it at 'random'"
                )
            if self.train_dataset is not None:
                self._build_sampler(self.train_dataset)  # fail now, not at the first epoch

    # ---- construction ---------------------------------------------------------------------

    def _class_name(self, index: int) -> str:
        name = self._id2label.get(index)
        return f"class {index}" + (f" ({name!r})" if name is not None else "")

    def _build_loss(
        self, loss_class: type, options: dict[str, Any], class_counts: ArrayLike | None
    ) -> tuple[nn.Module, torch.Tensor | None]:
        name = self.loss_name
        parameters = inspect.signature(loss_class).parameters
        for key, reason in _RESERVED_OPTIONS.items():
            if key in options:
                raise ValueError(f"loss_options[{key!r}] is not accepted: {reason}")
        weight = options.pop("weight", None)
        weight_power = options.pop("weight_power", None)
        weight_beta = options.pop("weight_beta", None)
        accepted = sorted(key for key in parameters if key not in _RESERVED_OPTIONS)
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            raise ValueError(f"loss {name!r} takes no option {unknown[0]!r}; its options are {accepted}")
        if weight is not None and "weight" not in parameters:
            with_weight = [n for n in LOSSES.names() if "weight" in inspect.signature(LOSSES.get(n)).parameters]
            raise ValueError(f"loss {name!r} takes no class weight; losses that do: {with_weight}")
        if weight_power is not None and weight != "inverse_frequency":
            raise ValueError("loss_options['weight_power'] goes with weight='inverse_frequency'")
        if weight_beta is not None and weight != "effective_number":
            raise ValueError("loss_options['weight_beta'] goes with weight='effective_number'")
        if isinstance(weight, str) and weight not in _CLASS_WEIGHTS:
            raise ValueError(f"loss_options['weight'] = {weight!r} is not a class weight name; known: {_CLASS_WEIGHTS}")
        needs_counts = isinstance(weight, str) or (
            "class_counts" in parameters and not ("class_priors" in parameters and "class_priors" in options)
        )
        counts = self._class_counts(class_counts) if needs_counts else None
        if counts is not None:
            self._check_no_empty_class(counts, class_counts is None)
            if "class_counts" in parameters:
                options["class_counts"] = counts
        if weight == "inverse_frequency":
            options["weight"] = inverse_frequency_weights(counts, power=1.0 if weight_power is None else weight_power)
        elif weight == "effective_number":
            options["weight"] = effective_number_weights(counts, beta=0.9999 if weight_beta is None else weight_beta)
        elif weight is not None:
            options["weight"] = self._explicit_weight(weight)
        return build_loss(name, **options), counts

    def _explicit_weight(self, weight: Any) -> torch.Tensor:
        tensor = torch.as_tensor(weight, dtype=torch.float32)
        if tensor.dim() != 1 or (self._num_labels is not None and tensor.numel() != self._num_labels):
            raise ValueError(
                f"loss_options['weight'] must hold one weight per class ({self._num_labels}), "
                f"got shape {tuple(tensor.shape)}"
            )
        return tensor

    def _class_counts(self, class_counts: ArrayLike | None) -> torch.Tensor:
        if class_counts is not None:
            counts = as_class_counts(class_counts)
            check_class_counts(counts, self._num_labels, allow_zero=True)
            return counts
        if self.train_dataset is None:
            raise ValueError(
                f"loss {self.loss_name!r} needs class_counts, and there is no train_dataset to count them from: "
                "pass class_counts="
            )
        labels, _ = _training_labels(self.train_dataset, self._num_labels)
        labels = labels[labels != IGNORE_INDEX]
        if labels.numel() == 0:
            raise ValueError("the training set has no label other than -100: nothing to count classes from")
        num_classes = self._num_labels if self._num_labels is not None else int(labels.max()) + 1
        return torch.bincount(labels, minlength=num_classes).to(torch.float64)

    def _check_no_empty_class(self, counts: torch.Tensor, counted: bool) -> None:
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            where = "the training set has no example of" if counted else "class_counts gives 0 for"
            raise ValueError(
                f"{where} {self._class_name(int(empty[0]))}, but loss {self.loss_name!r} (with its class weights) "
                "needs a positive count for every class (its formula divides by the count or takes its log): "
                "drop the class from the label set, or give class_counts= with every count >= 1"
            )

    def _build_sampler(self, dataset: Any) -> torch.utils.data.Sampler:
        labels, per_token = _training_labels(dataset, self._num_labels)
        if per_token:
            raise ValueError(
                f"sampler={self.sampler_name!r} draws examples by their class, but this training set is token "
                "tagging (a sequence of labels per example, many classes in one sentence): use a loss such as "
                "'dice' or class-weighted 'cross_entropy' instead of a sampler"
            )
        if bool((labels == IGNORE_INDEX).any()):
            position = int(torch.nonzero(labels == IGNORE_INDEX)[0, 0])
            raise ValueError(f"example {position} of the training set has label -100: a sampler needs a class for each")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        options = {"num_classes": self._num_labels, "seed": seed, "num_replicas": 1, "rank": 0}
        return SAMPLERS.build(self.sampler_name, labels=labels, **{**options, **self.sampler_options})

    # ---- Trainer hooks --------------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> None:
        # Keep the sample weights through remove_unused_columns, as if the model took them.
        super()._set_signature_columns_if_needed()
        if SAMPLE_WEIGHT_COLUMN not in self._signature_columns:
            self._signature_columns.append(SAMPLE_WEIGHT_COLUMN)

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        if self.sampler_name is None:
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return self._build_sampler(dataset)

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, torch.Tensor | int | None]:
        """The Trainer's micro-batches of one optimiser step; also sums their sample weights."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._accumulated_sample_weight = _total_sample_weight(batch_samples, device)
        return batch_samples, num_items_in_batch

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """The Trainer's step; a sample-weighted batch is normalised by the weights of the whole step."""
        normaliser = self._accumulated_sample_weight if SAMPLE_WEIGHT_COLUMN in inputs else None
        self._sample_weight_normaliser = normaliser
        self.loss_is_scaled_for_ga = normaliser is not None
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._sample_weight_normaliser = None
            self.loss_is_scaled_for_ga = False

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The core loss on the model's logits; ``labels`` and ``sample_weight`` never reach the model.

        ``num_items_in_batch`` is accepted for the Trainer's signature and not used (see the
        module docstring).
        """
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        sample_weight = inputs.pop(SAMPLE_WEIGHT_COLUMN, None)
        if labels is None:
            raise ValueError(f"the batch has no 'labels' (keys: {sorted(inputs)}): ImbalancedTrainer needs them")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        loss = self.loss_from_logits(logits, labels, sample_weight)
        return (loss, outputs) if return_outputs else loss

    # ---- the loss -------------------------------------------------------------------------

    def loss_from_logits(
        self, logits: torch.Tensor, labels: torch.Tensor, sample_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The training loss of ``(..., C)`` logits and ``(...)`` labels (``-100`` ignored), float32.

        ``logits`` is ``(B, C)`` for sequence classification or ``(B, T, C)`` for tagging;
        ``sample_weight`` is ``(B,)``. What :meth:`compute_loss` returns for the batch.
        """
        num_classes = _check_logits_and_labels(logits, labels, self._num_labels)
        flat_logits = logits.reshape(-1, num_classes).float()
        flat_labels = labels.reshape(-1)
        valid = flat_labels != IGNORE_INDEX
        rows = flat_logits[valid]
        targets = flat_labels[valid]
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, labels)
            weights = weights.reshape(-1, *([1] * (labels.dim() - 1))).expand(labels.shape).reshape(-1)[valid]
        if targets.numel() == 0:  # every position ignored: 0, still attached to the graph
            return flat_logits.sum() * 0.0
        if getattr(self.loss_fn, "target_kind", "index") == "binary":
            targets = nn.functional.one_hot(targets, num_classes).to(rows.dtype)
        loss_fn = self.loss_fn.to(rows.device)
        if sample_weight is None:
            return loss_fn(rows, targets)
        per_row = _per_row_loss(loss_fn, rows, targets)
        normaliser = self._sample_weight_normaliser
        total = weights.sum() if normaliser is None else normaliser.to(rows.device)
        return (weights * per_row).sum() / total.clamp_min(torch.finfo(torch.float32).tiny)


def _per_row_loss(loss_fn: nn.Module, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(N,)`` loss of each row: the module with ``reduction="none"`` (summed over classes for binary targets)."""
    if getattr(loss_fn, "batch_dice", False):
        raise ValueError(
            "sample weights weigh each row's loss, but loss_options['batch_dice']=True makes dice one value per "
            "batch (a dice per class over all its rows): drop the sample weights or batch_dice"
        )
    reduction = loss_fn.reduction
    loss_fn.reduction = "none"  # every core loss module keeps its reduction in this attribute
    try:
        per_row = loss_fn(rows, targets)
    finally:
        loss_fn.reduction = reduction
    return per_row.sum(dim=1) if per_row.dim() == 2 else per_row


def _check_logits_and_labels(logits: torch.Tensor, labels: torch.Tensor, num_labels: int | None) -> int:
    """Check the shapes and the label range; return the number of classes ``C``."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        kind = type(labels).__name__ if not isinstance(labels, torch.Tensor) else f"dtype {labels.dtype}"
        raise TypeError(
            f"labels must be integer class ids (single-label classification or tagging), got {kind}; "
            "multi-label and regression targets are not supported"
        )
    if logits.dim() < 2 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match logits of shape {tuple(logits.shape)}: "
            "expected labels of shape logits.shape[:-1]"
        )
    num_classes = logits.shape[-1]
    if num_labels is not None and num_classes != num_labels:
        raise ValueError(f"the model returned {num_classes} logits per position, but config.num_labels={num_labels}")
    if num_classes < 2:
        raise ValueError(f"ImbalancedTrainer needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        position = tuple(int(i) for i in torch.nonzero(bad)[0])
        value = int(labels[position])
        raise ValueError(
            f"labels contain {value} (at batch position {position}), outside [0, {num_classes}) for a model with "
            f"{num_classes} labels; use {IGNORE_INDEX} for positions to ignore"
        )
    return num_classes


def _check_sample_weight(sample_weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(sample_weight, torch.Tensor):
        raise TypeError(f"sample_weight must be a tensor (one number per example), got {type(sample_weight).__name__}")
    if sample_weight.shape != labels.shape[:1]:
        raise ValueError(
            f"sample_weight must have shape (batch,) = {tuple(labels.shape[:1])}, got {tuple(sample_weight.shape)}"
        )
    weights = sample_weight.to(torch.float32)
    bad = ~torch.isfinite(weights) | (weights < 0)
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"sample_weight[{position}] = {float(weights[position])} must be finite and >= 0")
    return weights


def _total_sample_weight(batches: list, device: torch.device) -> torch.Tensor | None:
    """Sum of the sample weights of the non-ignored rows of ``batches``; ``None`` unless all have weights."""
    if not batches or not all(isinstance(b, Mapping) and SAMPLE_WEIGHT_COLUMN in b and "labels" in b for b in batches):
        return None
    total = torch.zeros((), dtype=torch.float32, device=device)
    for batch in batches:
        labels, weights = batch["labels"], batch[SAMPLE_WEIGHT_COLUMN]
        if not isinstance(labels, torch.Tensor) or not isinstance(weights, torch.Tensor):
            return None
        valid = (labels != IGNORE_INDEX).to(torch.float32)
        weights = weights.to(torch.float32).reshape(-1, *([1] * (labels.dim() - 1)))
        total = total + (weights * valid).sum().to(device)
    return total


def _label_rows(dataset: Any) -> Any:
    """The label of every example (an int, or a sequence of ints for tagging), without running a model."""
    columns = getattr(dataset, "column_names", None)
    if columns is not None:  # Hugging Face datasets.Dataset
        key = next((k for k in _LABEL_KEYS if k in columns), None)
        if key is None:
            raise ValueError(f"the training set has no label column {_LABEL_KEYS}; its columns are {list(columns)}")
        column = dataset[key]
        return column if isinstance(column, (list, np.ndarray, torch.Tensor)) else list(column)
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"the labels of a {type(dataset).__name__} cannot be read without iterating it: pass class_counts="
        )
    rows = []
    for index in range(len(dataset)):
        item = dataset[index]
        key = next((k for k in _LABEL_KEYS if isinstance(item, Mapping) and k in item), None)
        if key is None:
            raise ValueError(f"example {index} of the training set has no label (looked for keys {_LABEL_KEYS})")
        rows.append(item[key])
    return rows


def _training_labels(dataset: Any, num_labels: int | None) -> tuple[torch.Tensor, bool]:
    """All labels of ``dataset`` as one flat int64 tensor (``-100`` kept), and whether they are per token.

    Raises ``ValueError`` naming the first label outside ``[0, num_labels)`` that is not ``-100``.
    """
    rows = _label_rows(dataset)
    if isinstance(rows, torch.Tensor):
        rows = rows.cpu().numpy()
    try:
        array = np.asarray(rows)
    except ValueError:  # ragged token labels
        array = None
    if array is not None and array.dtype != object:
        per_token = array.ndim > 1
        lengths = np.full(len(array), int(np.prod(array.shape[1:])))
        flat = array.reshape(-1)
    else:
        pieces = [np.asarray(row).reshape(-1) for row in rows]
        per_token = True
        lengths = np.array([piece.size for piece in pieces])
        flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if flat.size and flat.dtype.kind not in "iu":
        raise TypeError(f"training labels must be integer class ids, got dtype {flat.dtype}")
    labels = torch.from_numpy(flat.astype(np.int64))
    out_of_range = labels < 0 if num_labels is None else (labels < 0) | (labels >= num_labels)
    bad = out_of_range & (labels != IGNORE_INDEX)
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0, 0])
        example = int(np.searchsorted(np.cumsum(lengths), position, side="right"))
        allowed = ">= 0" if num_labels is None else f"[0, {num_labels})"
        raise ValueError(
            f"the training set's labels contain {int(labels[position])} (example {example}), outside {allowed}; "
            f"use {IGNORE_INDEX} for positions to ignore"
        )
    return labels, per_token
