"""A whole federated simulation from one config file: data, partition, model, clients, server.

A recipe is YAML (shipped ones in ``equipoise/federated/recipes``; ``base:`` chains and
``key=value`` overrides as everywhere in equipoise, see :mod:`equipoise.core.config`)::

    data: {name: mnist}                      # mnist | cifar10 (root: $EQUIPOISE_DATA by default)
    partition: {scheme: dirichlet, num_clients: 100, options: {alpha: 0.1}}
    model: simple_cnn
    simulation:
      rounds: 20
      clients_per_round: 10
      strategy: fedavg
      client: {local_epochs: 1, batch_size: 32, lr: 0.01, momentum: 0.9}
    output: results/federated/mnist_dirichlet

:func:`run_federated` builds everything and calls :func:`equipoise.federated.simulation.simulate`;
besides the simulation's checkpoint, ``history.json`` and ``history.png`` it writes the partition's
heat map and statistics (``partition.png``, ``partition.json``), the config (``config.yaml``) and
a ``report.md`` with the final accuracies. ``equipoise federated simulate RECIPE`` and
``tools/simulate_federated.py RECIPE`` run it from the command line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from equipoise.core.config import config_to_dict, load_config, package_recipes, recipe_names
from equipoise.core.reporting import markdown_table
from equipoise.federated.data import DATASET_STATS, load_federated_data
from equipoise.federated.models import simple_cnn
from equipoise.federated.partition import PARTITIONERS, PartitionStats, partition
from equipoise.federated.simulation import SimulationConfig, SimulationResult, simulate

__all__ = [
    "DataSection",
    "FederatedRunConfig",
    "PartitionSection",
    "available_recipes",
    "load_federated_config",
    "recipes_dir",
    "run_federated",
]

MODELS = ("simple_cnn",)


@dataclass
class DataSection:
    """``name``: ``mnist`` or ``cifar10``; ``root``: the data folder (default ``$EQUIPOISE_DATA``);
    ``download``: let torchvision fetch a missing copy."""

    name: str = "mnist"
    root: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        if self.name not in DATASET_STATS:
            raise ValueError(f"data.name must be one of {sorted(DATASET_STATS)}, got {self.name!r}")


@dataclass
class PartitionSection:
    """``scheme``: a name of :data:`~equipoise.federated.partition.PARTITIONERS`; ``num_clients``;
    ``seed``; ``options``: the scheme's keyword arguments (``alpha``, ``min_size``, ...)."""

    scheme: str = "dirichlet"
    num_clients: int = 100
    seed: int = 0
    options: dict[str, Any] = field(default_factory=lambda: {"alpha": 0.5})

    def __post_init__(self) -> None:
        if self.scheme not in PARTITIONERS.names():
            raise ValueError(f"partition.scheme must be one of {PARTITIONERS.names()}, got {self.scheme!r}")
        if isinstance(self.num_clients, bool) or not isinstance(self.num_clients, int) or self.num_clients < 1:
            raise ValueError(f"partition.num_clients must be an integer >= 1, got {self.num_clients!r}")


@dataclass
class FederatedRunConfig:
    """One simulation: data, partition, model, the server and clients, where and how to run.

    ``backend``: ``ray`` or ``serial``; ``ray_address`` joins a cluster; ``ray_temp_dir`` is where
    Ray keeps its temporary files; ``num_cpus``/``num_gpus`` size a local Ray start; ``device`` is
    where the server evaluates (``auto``: CUDA when present).
    """

    description: str = ""
    data: DataSection = field(default_factory=DataSection)
    partition: PartitionSection = field(default_factory=PartitionSection)
    model: str = "simple_cnn"
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    output: str = "results/federated/run"
    backend: str = "ray"
    ray_address: str | None = None
    ray_temp_dir: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {list(MODELS)}, got {self.model!r}")
        if self.backend not in ("ray", "serial"):
            raise ValueError(f"backend must be 'ray' or 'serial', got {self.backend!r}")


def recipes_dir() -> Path:
    """The folder of the recipes shipped with the package."""
    return package_recipes("equipoise.federated")


def available_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return recipe_names(recipes_dir())


def load_federated_config(recipe: str | Path | dict | None = None, overrides: Sequence[str] = ()) -> FederatedRunConfig:
    """A validated :class:`FederatedRunConfig` from a shipped recipe name or a YAML path, plus overrides."""
    return load_config(FederatedRunConfig, recipe, overrides, recipes_dir())


def run_federated(config: FederatedRunConfig, *, resume: bool = True, progress: bool = True) -> SimulationResult:
    """Load the data, partition it, simulate, and write the outputs listed in the module docstring."""
    import yaml

    data = load_federated_data(config.data.name, config.data.root, download=config.data.download)
    rows = partition(
        data.train_y,
        config.partition.scheme,
        config.partition.num_clients,
        config.partition.seed,
        **config.partition.options,
    )
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
    stats = PartitionStats.from_partition(data.train_y, rows, num_classes=data.num_classes)
    (output / "partition.json").write_text(json.dumps(stats.summary(), indent=1, default=float), encoding="utf-8")
    stats.plot_heatmap(
        output / "partition.png", title=f"{data.name}: {config.partition.scheme} {config.partition.options}"
    )
    channels, side = data.input_shape[0], data.input_shape[-1]
    model_fn = functools.partial(simple_cnn, channels, data.num_classes, side)
    result = simulate(
        model_fn,
        data,
        rows,
        config.simulation,
        output_dir=output,
        resume=resume,
        backend=config.backend,
        ray_address=config.ray_address,
        ray_temp_dir=config.ray_temp_dir,
        num_cpus=config.num_cpus,
        num_gpus=config.num_gpus,
        device=config.device,
        progress=progress,
    )
    final = result.final
    row = {
        "rounds": len(result.history),
        "accuracy": final.get("accuracy"),
        "balanced_accuracy": final.get("balanced_accuracy"),
        "worst_class_accuracy": final.get("worst_class_accuracy"),
        "MB_sent": sum(r["bytes_down"] + r["bytes_up"] for r in result.history) / 1e6,
        "seconds": sum(r["seconds"] for r in result.history),
    }
    table = markdown_table([row])
    lines = [f"# Federated simulation: {config.description or config.data.name}", "", table, ""]
    lines += ["Partition: " + json.dumps(stats.summary(), default=float), ""]
    lines += ["![history](history.png)", "", "![partition](partition.png)", ""]
    (output / "report.md").write_text("\n".join(lines), encoding="utf-8")
    print(table)
    return result
