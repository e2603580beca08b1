"""The typed configuration of a tabular run, and the recipes shipped with the package.

A recipe is a YAML file in ``equipoise/tabular/recipes/`` with the keys of :class:`TabularConfig`:
the data set and the method of MetaBalance's Table 2, the method's own options, and the training
settings (the paper's unless the recipe or an override says otherwise: ``null`` learning rate and
weight decay take the method's defaults, :data:`equipoise.tabular.train.DEFAULT_LEARNING_RATES`).
``load_train_config("loan_metabalance", ["method=focal", "options.gamma=1.5"])`` merges a recipe and
``key=value`` overrides and validates the result before any work starts (``equipoise.core.config``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from equipoise.core.config import ConfigError, load_config, package_recipes, recipe_names

__all__ = ["TabularConfig", "available_recipes", "load_train_config", "recipes_dir"]


@dataclass
class TabularConfig:
    """One run: ``fit(method, ...)`` on a seed's training split, then the test-split report."""

    description: str = ""
    paper: str = ""
    dataset: Literal["loan", "fraud"] = "loan"
    method: str = "naive"  # a name of equipoise.tabular.train.available_methods()
    options: dict[str, Any] = field(default_factory=dict)  # the method's own options (gamma, meta_steps ...)
    seed: int = 0  # of the 80/20 split and of the run
    val_size: float = 0.2  # validation share of the training part (threshold, ms_metabalance, keep_best)
    epochs: int = 100
    batch_size: int = 24
    lr: float | None = None  # None: the method's rate for the task
    weight_decay: float | None = None  # None: the task's
    momentum: float = 0.9
    keep_best: bool = False  # the epoch with the best validation AUC-ROC instead of the last
    data_root: str | None = None  # None: $EQUIPOISE_DATA
    device: str = "auto"
    progress: bool = True
    output: str | None = None  # None: results/tabular/runs/DATASET-METHOD-sSEED

    def __post_init__(self) -> None:
        from equipoise.tabular.train import available_methods

        methods = available_methods()
        if self.method not in methods:
            raise ConfigError(f"method must be one of {methods}, got {self.method!r}")
        if not 0 < self.val_size < 1:
            raise ConfigError(f"val_size must lie in (0, 1), got {self.val_size!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed!r}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be > 0 (or null for the method's rate), got {self.lr!r}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay must be >= 0 (or null for the task's), got {self.weight_decay!r}")
        if not 0 < self.momentum < 1:
            raise ConfigError(f"momentum must lie in (0, 1), got {self.momentum!r}")
        if self.output is None:
            self.output = f"results/tabular/runs/{self.dataset}-{self.method}-s{self.seed}"


def recipes_dir() -> Path:
    """The folder of the recipes shipped with the package."""
    return package_recipes("equipoise.tabular")


def available_recipes() -> list[str]:
    """Names of the shipped recipes (``loan_metabalance``, ``fraud_naive`` ...)."""
    return recipe_names(recipes_dir())


def load_train_config(recipe: str | Path | dict | None = None, overrides: Sequence[str] = ()) -> TabularConfig:
    """A validated :class:`TabularConfig` from a shipped recipe name or a YAML path, plus overrides."""
    return load_config(TabularConfig, recipe, overrides, recipes_dir())
