"""Federated recipes, `run_federated` and the `equipoise federated simulate` command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from equipoise.cli import main
from equipoise.core.config import ConfigError
from equipoise.federated.config import (
    FederatedRunConfig,
    available_recipes,
    load_federated_config,
    recipes_dir,
    run_federated,
)
from equipoise.federated.data import load_federated_data
from equipoise.federated.partition import partition

DATA = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
needs_mnist = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"MNIST not found under {DATA}")


def test_shipped_recipes_load_and_hold_the_published_settings():
    assert available_recipes() == ["mnist_dirichlet", "niid_bench_cifar10", "niid_bench_cifar10_fedprox"]
    mnist = load_federated_config("mnist_dirichlet")
    assert (mnist.partition.num_clients, mnist.partition.options, mnist.simulation.clients_per_round) == (
        100,
        {"alpha": 0.1},
        10,
    )
    assert (mnist.simulation.rounds, mnist.simulation.client.local_epochs, mnist.simulation.client.lr) == (20, 1, 0.01)
    niid = load_federated_config("niid_bench_cifar10")
    client = niid.simulation.client
    # NIID-Bench (Li et al. 2022) CIFAR-10: 10 parties, beta 0.5, 50 rounds of 10 epochs, SGD 0.01/0.9/1e-5, batch 64
    assert (niid.data.name, niid.partition.num_clients, niid.partition.options["alpha"]) == ("cifar10", 10, 0.5)
    assert (niid.simulation.rounds, niid.simulation.clients_per_round) == (50, 10)
    assert (client.local_epochs, client.lr, client.momentum, client.weight_decay, client.batch_size) == (
        10,
        0.01,
        0.9,
        1e-5,
        64,
    )
    fedprox = load_federated_config("niid_bench_cifar10_fedprox")
    assert fedprox.simulation.strategy == "fedprox" and fedprox.simulation.strategy_options == {"proximal_mu": 0.01}
    assert fedprox.simulation.client == client  # everything else from its base
    assert (recipes_dir() / "mnist_dirichlet.yaml").is_file()


def test_overrides_reach_nested_sections_and_bad_keys_are_named():
    config = load_federated_config(
        "mnist_dirichlet", ["simulation.strategy=ida", "simulation.client.loss=balanced_softmax", "backend=serial"]
    )
    assert (config.simulation.strategy, config.simulation.client.loss, config.backend) == (
        "ida",
        "balanced_softmax",
        "serial",
    )
    with pytest.raises(ConfigError, match="simulation.rouns"):
        load_federated_config("mnist_dirichlet", ["simulation.rouns=3"])
    with pytest.raises(ConfigError, match="strategy"):
        load_federated_config("mnist_dirichlet", ["simulation.strategy=nope"])
    with pytest.raises(ConfigError, match="data.name"):
        load_federated_config("mnist_dirichlet", ["data.name=svhn"])
    with pytest.raises(ConfigError, match="backend"):
        load_federated_config("mnist_dirichlet", ["backend=threads"])
    with pytest.raises(FileNotFoundError, match="mnist_dirichlet"):
        load_federated_config("no_such_recipe")


def test_cli_lists_and_shows_recipes(capsys):
    assert main(["federated", "simulate", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in available_recipes())
    assert main(["federated", "simulate", "mnist_dirichlet", "simulation.rounds=3", "--show"]) == 0
    shown = capsys.readouterr().out
    assert "rounds: 3" in shown and "alpha: 0.1" in shown
    with pytest.raises(SystemExit):
        main(["federated", "simulate"])  # a recipe is needed
    assert "needs a recipe" in capsys.readouterr().err


@needs_mnist
def test_cli_simulation_writes_every_output_and_matches_the_library(tmp_path, capsys):
    output = tmp_path / "run"
    overrides = [
        "simulation.rounds=2",
        "partition.num_clients=20",
        "simulation.clients_per_round=3",
        "simulation.client.batch_size=64",
        "backend=serial",
        f"data.root={DATA}",
        f"output={output}",
    ]
    assert main(["federated", "simulate", "mnist_dirichlet", *overrides, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    names = ("report.md", "history.json", "history.png", "partition.json", "partition.png", "config.yaml")
    for name in (*names, "per_class_accuracy.png"):
        assert (output / name).is_file(), name
    history = json.loads((output / "history.json").read_text())["history"]
    assert [record["round"] for record in history] == [1, 2]
    assert f"| 2 | {100 * history[-1]['accuracy']:.1f} |" in printed  # the table printed is the last round's
    # The partition written is the one the recipe asks for.
    labels = load_federated_data("mnist", DATA).train_y
    parts = partition(labels, "dirichlet", 20, seed=0, alpha=0.1)
    # The report's per-class table: the classes' training rows, the clients holding them, the last accuracies.
    report = (output / "report.md").read_text()
    class_rows = np.bincount(np.asarray(labels), minlength=10)
    holders = [sum(bool((np.asarray(labels)[part] == c).any()) for part in parts) for c in range(10)]
    for c, accuracy in enumerate(history[-1]["per_class_accuracy"]):
        assert f"| {c} | {class_rows[c]} | {holders[c]} | {100 * accuracy:.1f} |" in report
    summary = json.loads((output / "partition.json").read_text())
    assert summary["min_size"] == min(len(p) for p in parts) and summary["rows"] == len(labels)
    # Running the same command again resumes: nothing is retrained, the same weights come back.
    before = torch.load(output / "checkpoint.pt", weights_only=True)["weights"]
    config = load_federated_config("mnist_dirichlet", overrides)
    result = run_federated(config, progress=False)
    assert all(torch.equal(result.weights[key], before[key]) for key in before)
    assert len(result.history) == 2


def test_run_config_validates_its_own_fields():
    with pytest.raises(ValueError, match="model"):
        FederatedRunConfig(model="resnet")
    with pytest.raises(ValueError, match="backend"):
        FederatedRunConfig(backend="threads")
    assert np.isclose(FederatedRunConfig().partition.options["alpha"], 0.5)
