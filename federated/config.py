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
    table = _write_report(config, stats, result, output)
    print(table)
    return result


def _write_report(config: FederatedRunConfig, stats: PartitionStats, result: SimulationResult, output: Path) -> str:
    """``report.md`` (the run, the partition, the last round's metrics and per-class accuracy) and
    ``per_class_accuracy.png``; returns the metrics table."""
    from equipoise.core.metrics import plot_per_class

    final, simulation, client = result.final, config.simulation, config.simulation.client
    percent = {key: "–" if final.get(key) is None else f"{100 * final[key]:.1f}" for key in _FINAL_METRICS}
    row = {
        "rounds": len(result.history),
        **{label: percent[key] for key, label in _FINAL_METRICS.items()},
        "MB sent": f"{sum(r['bytes_down'] + r['bytes_up'] for r in result.history) / 1e6:.1f}",
        "seconds": f"{sum(r['seconds'] for r in result.history):.1f}",
    }
    table = markdown_table([row])
    summary = stats.summary()
    class_rows = stats.counts.sum(axis=0)
    holders = (stats.counts > 0).sum(axis=0)
    lines = [
        f"# Federated simulation: {config.description or config.data.name}",
        "",
        f"- Data: {config.data.name}, {summary['rows']:,} training rows over {summary['clients']} clients "
        f"({' '.join(map(str, filter(None, (config.partition.scheme, config.partition.options))))}, seed "
        f"{config.partition.seed}); client sizes "
        f"{summary['min_size']} to {summary['max_size']} (median {summary['median_size']:g}), "
        f"{summary['mean_classes_per_client']:.2f} classes per client on average, mean total-variation distance "
        f"of a client's label mix to the global one {summary['mean_tv_distance']:.3f} (0: IID).",
        f"- Training: {' '.join(map(str, filter(None, (simulation.strategy, simulation.strategy_options))))}, "
        f"{simulation.clients_per_round} "
        f"clients per round; each client {client.local_epochs} local epoch(s), batch {client.batch_size}, lr "
        f"{client.lr}, loss {client.loss}; model {config.model}, classifier {simulation.classifier}.",
        "- Metrics on the test split after the last round, in percent; seconds: the rounds' wall time summed.",
        "",
        table,
    ]
    per_class = final.get("per_class_accuracy")
    setting = f"{config.data.name}, {config.partition.scheme} {config.partition.options or ''}, {simulation.strategy}"
    if per_class is not None:
        lines += [
            "## Per class, last round",
            "",
            markdown_table(
                [
                    {
                        "class": c,
                        "training rows": int(class_rows[c]),
                        "clients holding it": int(holders[c]),
                        "test accuracy %": f"{100 * accuracy:.1f}",
                    }
                    for c, accuracy in enumerate(per_class)
                ]
            ),
            "![per-class accuracy](per_class_accuracy.png)",
            "",
        ]
        plot_per_class(
            {simulation.strategy: per_class},
            class_rows,
            output / "per_class_accuracy.png",
            title=f"Per-class test accuracy after round {len(result.history)}\n{setting}",
        )
    lines += ["![history](history.png)", "", "![partition](partition.png)", ""]
    (output / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return table


#: The last round's metrics in the report: history key -> column label.
_FINAL_METRICS = {
    "accuracy": "accuracy %",
    "balanced_accuracy": "balanced acc. %",
    "worst_class_accuracy": "worst class %",
}
