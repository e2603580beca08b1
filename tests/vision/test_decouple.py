"""Decoupled classifier re-balancing of a vision checkpoint against oracles computed another way.

A tiny stage-1 run (``cnn_small`` on MNIST-LT, ratio 100, 100 images in the head class, 242 in
all, a few SGD steps) is saved once per module. Its training features are recomputed here batch
by batch with ``forward_features`` / ``forward_head`` (not through the module's extractor), and
each method's saved head is checked against core run directly on them: ``tau_normalize``,
``fit_tau_normalization``, ``LearnableWeightScaling``, ``retrain_classifier``; weight balancing
against one projected SGD step written out by hand (the class-balanced weights from their
formula, the MaxNorm projection as a row rescaling). Needs the MNIST idx files of the shared data
(``EQUIPOISE_DATA``, else ``../shared/data``); skipped without them.
"""

import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equipoise.core.calibration import (
    LearnableWeightScaling,
    fit_tau_normalization,
    fit_weight_balancing,
    retrain_classifier,
    tau_normalize,
)
from equipoise.core.config import config_to_dict
from equipoise.vision.checkpoint import FORMAT, build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from equipoise.vision.config import DataConfig, ModelConfig, TrainConfig
from equipoise.vision.data import dataset_from_config
from equipoise.vision.decouple import DECOUPLING_METHODS, dataset_features, decouple, method_options

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
pytestmark = pytest.mark.skipif(
    not (DATA / "mnist").is_dir(),
    reason=f"needs the MNIST idx files under {DATA / 'mnist'} (set EQUIPOISE_DATA to the shared data folder)",
)

METHODS = ("crt", "lws", "tau_norm", "weight_balancing")
# Few epochs keep each fit well under a second; the defaults are exercised by the CLI test.
FAST = {
    "crt": {"epochs": 3, "batch_size": 64},
    "lws": {"epochs": 3, "batch_size": 64},
    "tau_norm": {"tau": 0.7},
    "weight_balancing": {"epochs": 3},
}


def _config(classifier: str = "linear") -> TrainConfig:
    return TrainConfig(
        data=DataConfig(
            dataset="mnist_lt", root=str(DATA), augment="mnist", imbalance_ratio=100, options={"max_count": 100}
        ),
        model=ModelConfig(name="cnn_small", classifier=classifier),
        eval_batch_size=128,
        seed=0,
        progress=False,
    )


def _save_stage1(path: Path, config: TrainConfig, steps: int) -> Path:
    train = dataset_from_config(config.data, split="train", augment=False)
    model = build_model(config, train.num_classes)
    if steps:
        images = torch.stack([train[i][0] for i in range(len(train))])
        labels = torch.tensor(train.targets)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        generator = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(steps):
            batch = torch.randint(len(train), (64,), generator=generator)
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    checkpoint = {
        "format": FORMAT,
        "stage": "train",
        "config": config_to_dict(config),
        "epoch": 1,
        "model": model.state_dict(),
        "class_counts": train.class_counts,
        "class_names": train.classes,
        "optimizer": None,
        "scaler": None,
        "rng": None,
        "metrics": {},
    }
    return save_checkpoint(path, checkpoint)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    return _save_stage1(tmp_path_factory.mktemp("stage1") / "checkpoint.pt", _config(), steps=40)


@pytest.fixture(scope="module")
def cosine_stage1(tmp_path_factory) -> Path:
    return _save_stage1(tmp_path_factory.mktemp("cosine") / "checkpoint.pt", _config("cosine"), steps=0)


@pytest.fixture(scope="module")
def features(stage1):
    """Training features and labels recomputed by hand, with the stage-1 model in eval mode."""
    model, checkpoint = model_from_checkpoint(stage1)
    config = _config()
    train = dataset_from_config(config.data, split="train", augment=False)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(train), config.eval_batch_size):
            images = torch.stack([train[i][0] for i in range(start, min(start + config.eval_batch_size, len(train)))])
            chunks.append(model.forward_head(model.forward_features(images), pre_logits=True))
    return torch.cat(chunks), torch.tensor(train.targets), checkpoint


def _head(state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return state["fc.weight"], state["fc.bias"]


def _run(stage1: Path, tmp_path: Path, method: str, **options) -> dict:
    path = decouple(stage1, method, tmp_path / method / "out.pt", device="cpu", progress=False, **options)
    assert path == tmp_path / method / "out.pt"
    return load_checkpoint(path)


# --------------------------------------------------------------------------------------------
# Every method: a checkpoint that rebuilds, the backbone untouched, logits = the folded head
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_a_checkpoint_that_rebuilds_with_the_backbone_unchanged(stage1, features, tmp_path, method):
    x, _, source = features
    decoupled = _run(stage1, tmp_path, method, **FAST[method])
    assert decoupled["stage"] == method
    assert decoupled["epoch"] == source["epoch"]
    assert decoupled["optimizer"] is None and decoupled["scaler"] is None and decoupled["rng"] is None
    assert decoupled["class_counts"] == source["class_counts"] and decoupled["class_names"] == source["class_names"]
    assert decoupled["config"]["model"]["classifier"] == "linear"
    assert decoupled["metrics"]["decoupling"]["method"] == method
    assert set(decoupled["model"]) == set(source["model"])
    for key, value in source["model"].items():
        if not key.startswith("fc."):
            assert torch.equal(decoupled["model"][key], value), key  # bit for bit
    model, _ = model_from_checkpoint(decoupled)
    assert type(model.get_classifier()) is nn.Linear
    weight, bias = _head(decoupled["model"])
    assert not torch.equal(weight, source["model"]["fc.weight"])
    with torch.no_grad():
        logits = model.forward_head(model.forward_features(_images(16)), pre_logits=False)
        expected = F.linear(model.forward_head(model.forward_features(_images(16)), pre_logits=True), weight, bias)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def _images(count: int) -> torch.Tensor:
    train = dataset_from_config(_config().data, split="train", augment=False)
    return torch.stack([train[i][0] for i in range(count)])


def test_default_output_is_next_to_the_checkpoint(stage1):
    path = decouple(stage1, "tau_norm", device="cpu", progress=False, tau=0.5)
    assert path == stage1.parent / "tau_norm" / "checkpoint.pt"
    assert load_checkpoint(path)["stage"] == "tau_norm"


def test_dataset_features_match_the_model_head(stage1, features):
    x, labels, _ = features
    model, _ = model_from_checkpoint(stage1)
    train = dataset_from_config(_config().data, split="train", augment=False)
    extracted, extracted_labels = dataset_features(model, train, batch_size=128, device="cpu", progress=False)
    torch.testing.assert_close(extracted, x, rtol=0, atol=0)
    assert torch.equal(extracted_labels, labels)
    with torch.no_grad():
        logits = model(torch.stack([train[i][0] for i in range(8)]))
    torch.testing.assert_close(F.linear(extracted[:8], model.fc.weight, model.fc.bias), logits)


# --------------------------------------------------------------------------------------------
# Each method against core run on the same features
# --------------------------------------------------------------------------------------------


def test_tau_norm_with_a_given_tau_is_tau_normalize(stage1, features, tmp_path):
    _, _, source = features
    decoupled = _run(stage1, tmp_path, "tau_norm", tau=0.7)
    weight, bias = _head(decoupled["model"])
    assert torch.equal(weight, tau_normalize(source["model"]["fc.weight"], 0.7))
    assert torch.equal(bias, source["model"]["fc.bias"])
    assert decoupled["metrics"]["decoupling"]["tau"] == 0.7


def test_tau_norm_without_tau_fits_on_the_training_features(stage1, features, tmp_path):
    x, labels, source = features
    taus = [0.0, 0.5, 1.0, 1.5, 2.0]
    decoupled = _run(stage1, tmp_path, "tau_norm", taus=taus)
    details = decoupled["metrics"]["decoupling"]
    expected = fit_tau_normalization(x, labels, source["model"]["fc.weight"], source["model"]["fc.bias"], taus)
    assert details["tau_split"] == "train"
    assert details["tau"] == expected
    assert torch.equal(_head(decoupled["model"])[0], tau_normalize(source["model"]["fc.weight"], expected))


def test_tau_norm_refuses_a_validation_split_mnist_lt_does_not_have(stage1, tmp_path):
    with pytest.raises(ValueError, match="no validation split"):
        _run(stage1, tmp_path, "tau_norm", tau_split="val")


def test_lws_folded_head_gives_the_core_calibrator_logits(stage1, features, tmp_path):
    x, labels, source = features
    decoupled = _run(stage1, tmp_path, "lws", epochs=3, batch_size=64)
    scaling = LearnableWeightScaling(source["model"]["fc.weight"], source["model"]["fc.bias"])
    scaling.fit(x, labels, epochs=3, batch_size=64, generator=torch.Generator().manual_seed(0))
    weight, bias = _head(decoupled["model"])
    with torch.no_grad():
        expected = scaling(x)
    torch.testing.assert_close(F.linear(x, weight, bias), expected, rtol=1e-5, atol=1e-5)
    assert decoupled["metrics"]["decoupling"]["scales"] == pytest.approx(scaling.scales.tolist(), abs=1e-6)
    assert not torch.allclose(scaling.scales, torch.ones_like(scaling.scales))  # the fit moved the scales


def test_crt_head_is_core_retrain_classifier(stage1, features, tmp_path):
    x, labels, _ = features
    decoupled = _run(stage1, tmp_path, "crt", epochs=3, batch_size=64, lr=0.1)
    head = retrain_classifier(
        x, labels, 10, epochs=3, batch_size=64, lr=0.1, generator=torch.Generator().manual_seed(0), device="cpu"
    )
    weight, bias = _head(decoupled["model"])
    torch.testing.assert_close(weight, head.weight.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bias, head.bias.detach(), rtol=1e-5, atol=1e-6)


def test_crt_replaces_a_cosine_head_by_a_linear_one(cosine_stage1, tmp_path):
    decoupled = _run(cosine_stage1, tmp_path, "crt", epochs=1)
    assert decoupled["config"]["model"]["classifier"] == "linear"
    model, _ = model_from_checkpoint(decoupled)
    assert type(model.fc) is nn.Linear and set(decoupled["model"]) >= {"fc.weight", "fc.bias"}


def test_weight_balancing_head_is_core_fit_weight_balancing(stage1, features, tmp_path):
    """The arithmetic is tested in tests/core/test_weight_balancing.py; here: decouple folds core's result."""
    x, labels, source = features
    decoupled = _run(stage1, tmp_path, "weight_balancing", epochs=2, batch_size=64, max_norm_threshold=0.3)
    weight, bias, details = fit_weight_balancing(
        x,
        labels,
        source["model"]["fc.weight"],
        source["model"]["fc.bias"],
        epochs=2,
        batch_size=64,
        max_norm_threshold=0.3,
        generator=torch.Generator().manual_seed(0),
    )
    got_weight, got_bias = _head(decoupled["model"])
    torch.testing.assert_close(got_weight, weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_bias, bias, rtol=1e-5, atol=1e-6)
    assert decoupled["metrics"]["decoupling"]["max_norm_radius"] == pytest.approx(details["max_norm_radius"])
    assert float(got_weight.norm(dim=1).max()) <= details["max_norm_radius"] * (1 + 1e-6)


def test_same_seed_same_head_other_seed_other_head(stage1, tmp_path):
    paths = [
        decouple(stage1, "crt", tmp_path / f"{name}.pt", device="cpu", seed=seed, progress=False, epochs=1)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    first, again, other = (load_checkpoint(path)["model"]["fc.weight"] for path in paths)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tau_norm", "lws", "weight_balancing"])
def test_cosine_head_is_refused_by_methods_that_rescale_it(cosine_stage1, tmp_path, method):
    with pytest.raises(ValueError, match="NormedLinear.*'crt'"):
        _run(cosine_stage1, tmp_path, method, **FAST[method])


def test_unknown_method_names_it_and_lists_the_known_ones(stage1, tmp_path):
    with pytest.raises(ValueError, match=r"'nope'.*crt, lws, tau_norm, weight_balancing"):
        decouple(stage1, "nope", tmp_path / "out.pt")


@pytest.mark.parametrize(
    ("method", "options", "named"),
    [
        ("crt", {"epoch": 3}, "'epoch'"),
        ("crt", {"epochs": 0}, "epochs"),
        ("lws", {"lr": -1.0}, "lr"),
        ("tau_norm", {"tau": -0.5}, "tau"),
        ("tau_norm", {"taus": []}, "taus"),
        ("tau_norm", {"tau_split": "test"}, "tau_split"),
        ("weight_balancing", {"beta": 1.0}, "beta"),
        ("weight_balancing", {"momentum": 1.5}, "momentum"),
        ("weight_balancing", {"max_norm_threshold": "big"}, "max_norm_threshold"),
    ],
)
def test_bad_options_are_named(stage1, tmp_path, method, options, named):
    with pytest.raises(ValueError, match=named):
        decouple(stage1, method, tmp_path / "out.pt", **options)


def test_missing_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        decouple(tmp_path / "absent.pt", "crt")


def test_output_may_not_overwrite_the_stage1_checkpoint(stage1):
    with pytest.raises(ValueError, match="stage-1 checkpoint itself"):
        decouple(stage1, "tau_norm", stage1, tau=1.0)


def test_training_split_other_than_stage1s_is_refused(stage1, tmp_path):
    checkpoint = load_checkpoint(stage1)
    checkpoint["config"]["data"]["options"] = {"max_count": 120}
    moved = save_checkpoint(tmp_path / "moved.pt", checkpoint)
    with pytest.raises(ValueError, match="class counts"):
        decouple(moved, "tau_norm", tmp_path / "out.pt", device="cpu", progress=False, tau=1.0)


def test_method_options_list_the_defaults():
    assert set(DECOUPLING_METHODS.names()) == set(METHODS)
    assert method_options("crt") == {"epochs": 10, "lr": 0.2, "weight_decay": 5e-4, "batch_size": 512, "momentum": 0.9}
    wb = method_options("weight_balancing")
    assert (wb["epochs"], wb["lr"], wb["weight_decay"], wb["batch_size"], wb["max_norm_threshold"]) == (
        10,
        0.01,
        0.1,
        64,
        0.1,
    )


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "decouple_vision.py"), *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_cli_writes_the_checkpoint(stage1, tmp_path):
    output = tmp_path / "cli" / "lws.pt"
    result = _cli(
        "--checkpoint", str(stage1), "--method", "lws", "--output", str(output), "--device", "cpu",
        "--no-progress", "epochs=2", "lr=0.1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert str(output) in result.stdout
    decoupled = load_checkpoint(output)
    assert decoupled["stage"] == "lws"
    assert decoupled["metrics"]["decoupling"]["options"] == {"epochs": 2, "lr": 0.1, "batch_size": 512, "momentum": 0.9}
    assert not math.isnan(float(decoupled["model"]["fc.weight"].sum()))


def test_cli_help_lists_methods_and_a_bad_option_fails_cleanly(stage1, tmp_path, capsys):
    # In-process (the subprocess test above covers the script as a program): its main() with argv.
    main = runpy.run_path(str(ROOT / "tools" / "decouple_vision.py"), run_name="decouple_vision")["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "weight_balancing: epochs=10" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(stage1), "--method", "crt", "--output", str(tmp_path / "x.pt"), "epoch=3"])
    assert exit_info.value.code == 2
    assert "unknown option 'epoch'" in capsys.readouterr().err
