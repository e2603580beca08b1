"""The vision evaluation entry point against independent oracles.

A small CNN is trained for a few SGD steps on MNIST-LT (ratio 100, 492 images) and saved as a
checkpoint. The oracles read the MNIST idx files with ``gzip`` and NumPy and normalise the
pixels by hand (not through ``equipoise.vision.data``), run the model themselves on the test
positions :func:`evaluate` wrote to ``splits.json``, and score its predictions with
scikit-learn; logit adjustment and temperature scaling are recomputed from the core functions
on the oracle's validation logits. Needs the MNIST files under ``EQUIPOISE_DATA`` (else
``../shared/data``); skipped when absent, except the checks that need no data.
"""

import gzip
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score
from torch.utils.data import Subset

from equipoise.core.calibration import fit_tau, fit_temperature
from equipoise.core.config import config_to_dict
from equipoise.vision.checkpoint import FORMAT, build_model, model_from_checkpoint, save_checkpoint
from equipoise.vision.config import DataConfig, ModelConfig, TrainConfig
from equipoise.vision.data import DATASETS, SPLIT_FILES, LongTailedDataset, build_dataset, dataset_from_config
from equipoise.vision.evaluate import CALIBRATION_METHODS, evaluate, predict_logits, stratified_split
from equipoise.vision.transforms import build_transform

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
MNIST = DATA / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="needs MNIST under EQUIPOISE_DATA (CI sets it; locally EQUIPOISE_DATA=/work/shared/data)",
)
# MNIST-LT with max_count 200 and ratio 100: floor(200 * 100 ** (-i / 9)).
TRAIN_COUNTS = [200, 119, 71, 43, 25, 15, 9, 5, 3, 2]
LIMIT = 600
BOTH = ("logit_adjustment", "temperature")


def _mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test images, normalised as the ``mnist`` transform does, and labels, read by hand."""
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz", "rb") as file:
        pixels = np.frombuffer(file.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz", "rb") as file:
        labels = np.frombuffer(file.read(), dtype=np.uint8, offset=8).astype(np.int64)
    return (pixels.astype(np.float32) / 255 - 0.1307) / 0.3081, labels


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs MNIST under EQUIPOISE_DATA")
    config = TrainConfig(
        data=DataConfig(
            dataset="mnist_lt", root=str(DATA), augment="mnist", imbalance_ratio=100, options={"max_count": 200}
        ),
        model=ModelConfig(name="cnn_small"),
    )
    train = dataset_from_config(config.data, split="train")
    assert train.class_counts == TRAIN_COUNTS
    images = torch.stack([train[i][0] for i in range(len(train))])
    labels = torch.tensor(train.targets)
    model = build_model(config, len(train.classes)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = torch.randint(len(labels), (32,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("run") / "last.pt"
    save_checkpoint(
        path,
        {
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
        },
    )
    return path


@pytest.fixture(scope="module")
def calibrated(checkpoint):
    return evaluate(checkpoint, device="cpu", calibrate=BOTH, limit=LIMIT, seed=0, progress=False)


@pytest.fixture(scope="module")
def oracle(checkpoint, calibrated):
    """Logits and labels of the validation and reported examples, computed without the library."""
    images, labels = _mnist_test()
    splits = json.loads((calibrated.output / "splits.json").read_text())
    model, _ = model_from_checkpoint(checkpoint, "cpu")
    with torch.no_grad():
        logits = {part: model(torch.from_numpy(images[splits[part]])).double() for part in ("validation", "reported")}
    return {
        "splits": splits,
        "val_logits": logits["validation"],
        "val_labels": torch.from_numpy(labels[splits["validation"]]),
        "logits": logits["reported"],
        "labels": labels[splits["reported"]],
    }


def _metrics(result) -> dict:
    return json.loads((result.output / "metrics.json").read_text())


# --------------------------------------------------------------------------------------------
# No data needed
# --------------------------------------------------------------------------------------------


def test_stratified_split_is_disjoint_proportional_nested_and_seeded():
    targets = np.repeat(np.arange(5), [50, 31, 7, 2, 1])
    rng = np.random.default_rng(0)
    targets = targets[rng.permutation(len(targets))]
    val, test = stratified_split(targets, val_fraction=0.5, seed=3, limit=40)
    assert not set(val.tolist()) & set(test.tolist())
    kept = np.bincount(targets[torch.cat([val, test]).numpy()], minlength=5)
    assert kept.sum() == 40
    assert np.all(np.abs(kept - 40 * np.bincount(targets) / len(targets)) < 1)
    val_counts = np.bincount(targets[val.numpy()], minlength=5)
    for k, v in zip(kept, val_counts):
        expected = 0 if k == 0 else 1 if k == 1 else min(max(math.floor(0.5 * k + 0.5), 1), k - 1)
        assert v == expected
    again = stratified_split(targets, val_fraction=0.5, seed=3, limit=40)
    assert torch.equal(again[0], val) and torch.equal(again[1], test)
    other = stratified_split(targets, val_fraction=0.5, seed=4, limit=40)
    assert not torch.equal(other[1], test)
    # Nested: a larger limit keeps the examples of a smaller one.
    small = set(torch.cat(stratified_split(targets, None, seed=3, limit=20)).tolist())
    assert small <= set(torch.cat([val, test]).tolist())
    # Without val_fraction: nothing for validation; without limit: everything.
    empty, everything = stratified_split(targets)
    assert empty.numel() == 0 and everything.tolist() == list(range(len(targets)))


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(tmp_path / "missing.pt", device="cpu")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        evaluate(corrupt, device="cpu")
    with pytest.raises(ValueError, match="logit_adjustment, temperature"):
        evaluate(corrupt, calibrate=("temperature", "platt"))
    with pytest.raises(ValueError, match="allowed"):
        evaluate(corrupt, calibrate="logit-adjustment")
    for fraction in (0, 1, 1.5, -0.1, True, "half"):
        with pytest.raises(ValueError, match="val_fraction"):
            evaluate(corrupt, calibrate=BOTH, val_fraction=fraction)
    with pytest.raises(ValueError, match="limit"):
        evaluate(corrupt, limit=0)
    with pytest.raises(ValueError, match="unknown dataset 'no_such_set'; known: .*mnist_lt"):
        evaluate(corrupt, dataset="no_such_set")
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([0, 1, 1], val_fraction=1.0)
    assert CALIBRATION_METHODS == ("logit_adjustment", "temperature")


# --------------------------------------------------------------------------------------------
# On MNIST-LT
# --------------------------------------------------------------------------------------------


@needs_mnist
def test_metrics_equal_sklearn_on_the_models_own_predictions(calibrated, oracle):
    predictions = oracle["logits"].argmax(dim=1).numpy()
    labels = oracle["labels"]
    assert torch.allclose(calibrated.logits.double(), oracle["logits"], atol=1e-4)
    assert np.array_equal(calibrated.targets.numpy(), labels)
    assert np.array_equal(calibrated.predictions["uncalibrated"].numpy(), predictions)
    scalars = _metrics(calibrated)["variants"]["uncalibrated"]["scalars"]
    assert scalars["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-6)
    assert scalars["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predictions), abs=1e-6)
    assert scalars["macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro"), abs=1e-6)
    recall = recall_score(labels, predictions, average=None, labels=range(10))
    for group, members in (("many", [0, 1]), ("medium", [2, 3, 4]), ("few", [5, 6, 7, 8, 9])):
        assert scalars[f"{group}_shot_accuracy"] == pytest.approx(recall[members].mean(), abs=1e-6)
    # ECE with 15 equal-width bins (lo, hi], by hand.
    probs = torch.softmax(oracle["logits"], dim=1).numpy()
    confidence, correct = probs.max(axis=1), predictions == labels
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    ece = sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
        for b in range(15)
        if (bins == b).any()
    )
    assert scalars["ece"] == pytest.approx(ece, abs=1e-4)
    # The model learned something: better than chance (10 %) on the balanced test split.
    assert scalars["accuracy"] > 0.15 and scalars["balanced_accuracy"] > 0.15


@needs_mnist
def test_validation_and_reported_splits_are_disjoint_and_stratified(calibrated, oracle):
    _, labels = _mnist_test()
    splits = oracle["splits"]
    val, reported = np.array(splits["validation"]), np.array(splits["reported"])
    assert splits["validation_split"] == "test"
    assert not set(val) & set(reported)
    assert np.array_equal(reported, calibrated.indices.numpy()) and np.array_equal(val, calibrated.val_indices.numpy())
    kept = np.bincount(labels[np.concatenate([val, reported])], minlength=10)
    assert kept.sum() == LIMIT
    assert np.all(np.abs(kept - LIMIT * np.bincount(labels) / len(labels)) < 1)
    val_counts = np.bincount(labels[val], minlength=10)
    assert np.all(np.abs(val_counts - 0.5 * kept) <= 0.5)
    info = _metrics(calibrated)
    assert info["validation_per_class"] == val_counts.tolist()
    assert info["reported_per_class"] == np.bincount(labels[reported], minlength=10).tolist()


@needs_mnist
def test_logit_adjustment_is_argmax_of_logits_minus_tau_log_priors(calibrated, oracle):
    priors = torch.tensor(TRAIN_COUNTS, dtype=torch.float64) / sum(TRAIN_COUNTS)
    tau = _metrics(calibrated)["fitted"]["logit_adjustment"]["tau"]
    assert tau == fit_tau(oracle["val_logits"], oracle["val_labels"], priors)
    expected = (oracle["logits"] - tau * priors.log()).argmax(dim=1).numpy()
    assert np.array_equal(calibrated.predictions["logit_adjustment"].numpy(), expected)
    variant = _metrics(calibrated)["variants"]["logit_adjustment"]
    labels = oracle["labels"]
    assert variant["scalars"]["accuracy"] == pytest.approx(accuracy_score(labels, expected), abs=1e-6)
    assert variant["scalars"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, expected), abs=1e-6)
    assert variant["confusion_matrix"] == confusion_matrix(labels, expected, labels=range(10)).tolist()


@needs_mnist
def test_temperature_keeps_predictions_and_is_the_validation_nll_minimiser(calibrated, oracle):
    temperature = _metrics(calibrated)["fitted"]["temperature"]["temperature"]
    assert temperature == pytest.approx(float(fit_temperature(oracle["val_logits"], oracle["val_labels"])), rel=1e-4)
    assert torch.equal(calibrated.predictions["temperature"], calibrated.predictions["uncalibrated"])
    nll = [F.cross_entropy(oracle["val_logits"] / t, oracle["val_labels"]) for t in (temperature, 1.0)]
    assert nll[0] <= nll[1]
    scalars = _metrics(calibrated)["variants"]
    assert scalars["temperature"]["scalars"]["accuracy"] == scalars["uncalibrated"]["scalars"]["accuracy"]


@needs_mnist
def test_report_metrics_and_plots_are_written(checkpoint, calibrated):
    output = calibrated.output
    assert output == calibrated.files["report"].parent == checkpoint.parent / "eval" / "last"
    metrics = json.loads((output / "metrics.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert list(metrics["variants"]) == ["uncalibrated", "logit_adjustment", "temperature"]
    assert metrics["train_class_counts"] == TRAIN_COUNTS and metrics["device"] == "cpu"
    assert metrics["validation_examples"] + metrics["reported_examples"] == LIMIT
    report = (output / "report.md").read_text()
    for text in (
        "# Evaluation of `last.pt`",
        str(calibrated.info["checkpoint"]),
        "Dataset: `mnist_lt`",
        "Device: cpu",
        f"Validation split: {metrics['validation_examples']} of those images (50 % of each class, seed 0), used only",
        f"Reported split: the other {metrics['reported_examples']} images",
        "| variant | accuracy | balanced acc. | many-shot | medium-shot | few-shot |",
        "+ logit adjustment (tau = ",
        "+ temperature (T = ",
        "## Accuracy by shot group",
        "| 9 - nine | 2 | few |",
    ):
        assert text in report, text
    accuracy = metrics["variants"]["uncalibrated"]["scalars"]["accuracy"]
    assert f"| uncalibrated | {100 * accuracy:.2f} |" in report
    links = [line[line.index("](") + 2 : -1] for line in report.splitlines() if line.startswith("![")]
    assert sorted(links) == sorted(path.name for path in calibrated.files.values() if path.suffix == ".png")
    assert len(links) == 6  # per-class, 3 reliability diagrams, 2 confusion matrices
    for name in links:
        with Image.open(output / name) as image:
            assert image.format == "PNG" and min(image.size) >= 400
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 10  # something is drawn


@needs_mnist
def test_cli_prints_the_metrics_table(checkpoint, tmp_path):
    command = [
        sys.executable,
        str(ROOT / "tools" / "eval_vision.py"),
        "--checkpoint",
        str(checkpoint),
        "--output",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--calibrate",
        "logit_adjustment",
        "--limit",
        "200",
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["validation_examples"] + metrics["reported_examples"] == 200
    assert list(metrics["variants"]) == ["uncalibrated", "logit_adjustment"]
    accuracy = metrics["variants"]["logit_adjustment"]["scalars"]["accuracy"]
    assert "| variant | accuracy | balanced acc." in done.stdout
    assert (
        f"+ logit adjustment (tau = {metrics['fitted']['logit_adjustment']['tau']:.2f}) | {100 * accuracy:.2f} |"
        in (done.stdout)
    )
    assert (tmp_path / "out" / "report.md").is_file()


def _load_cli():
    spec = importlib.util.spec_from_file_location("eval_vision_cli", ROOT / "tools" / "eval_vision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    cli = _load_cli()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "missing.pt' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", "x.pt", "--calibrate", "platt"])
    assert "invalid choice: 'platt'" in capsys.readouterr().err


def _tiny_builder(num_classes: int):
    """A registered-dataset stand-in: MNIST test images relabelled into ``num_classes`` classes."""

    def build(root=None, split="test", imbalance_ratio=None, profile=None, seed=0, transform=None, download=False):
        base = build_dataset("mnist_lt", root=str(DATA), split="test")
        base.targets = [label % num_classes for label in base.targets]
        base.classes = [str(c) for c in range(num_classes)]
        # The "val" split is the even positions of the test set, the "test" split the odd ones.
        return LongTailedDataset(base, indices=np.arange(split == "test", 2000, 2), transform=transform)

    return build


@needs_mnist
def test_dataset_override_needs_the_same_number_of_classes(checkpoint, monkeypatch):
    # The registry has no way to unregister; monkeypatch restores its private dict afterwards.
    monkeypatch.setitem(DATASETS._entries, "three_classes", _tiny_builder(3))
    with pytest.raises(ValueError, match="'three_classes' has 3 classes but checkpoint .* predicts 10"):
        evaluate(checkpoint, dataset="three_classes", device="cpu", progress=False)


@needs_mnist
def test_a_dataset_with_its_own_validation_split_reports_on_the_whole_test_split(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._entries, "ten_with_val", _tiny_builder(10))
    monkeypatch.setitem(SPLIT_FILES, "ten_with_val", {"splits": {"train": "a", "val": "b", "test": "c"}})
    result = evaluate(
        checkpoint, dataset="ten_with_val", output=tmp_path, device="cpu", calibrate="logit_adjustment", progress=False
    )
    assert result.info["validation_split"] == "val" and result.info["val_fraction"] is None
    assert result.indices.tolist() == list(range(1000)) and result.val_indices.tolist() == list(range(1000))
    images, labels = _mnist_test()
    model, _ = model_from_checkpoint(checkpoint, "cpu")
    with torch.no_grad():
        val_logits = model(torch.from_numpy(images[0:2000:2])).double()
    priors = torch.tensor(TRAIN_COUNTS, dtype=torch.float64) / sum(TRAIN_COUNTS)
    assert result.fitted()["logit_adjustment"]["tau"] == fit_tau(val_logits, torch.from_numpy(labels[0:2000:2]), priors)
    assert np.array_equal(result.targets.numpy(), labels[1:2000:2])
    assert "the val split of `ten_with_val`, all 1000 images" in (tmp_path / "report.md").read_text()


@needs_mnist
def test_predict_logits_keeps_order_and_restores_the_training_mode(checkpoint):
    model, _ = model_from_checkpoint(checkpoint, "cpu")
    test_set = build_dataset("mnist_lt", root=str(DATA), split="test", transform=build_transform("mnist", train=False))
    images, labels = _mnist_test()
    model.train()
    logits, targets = predict_logits(model, Subset(test_set, range(70)), "cpu", batch_size=32, progress=False)
    assert model.training
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images[:70]))
    assert torch.allclose(logits, expected, atol=1e-4) and targets.tolist() == labels[:70].tolist()
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(model, test_set, "cpu", batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_mnist
def test_cuda_matches_cpu(checkpoint, calibrated, tmp_path):
    # cuDNN convolutions may run in TF32 (10-bit mantissa): compare loosely, predictions closely.
    for amp in (False, True):
        result = evaluate(
            checkpoint, output=tmp_path / str(amp), device="cuda", calibrate=BOTH, limit=LIMIT, amp=amp, progress=False
        )
        assert result.info["device"].startswith("cuda") and result.info["amp"] == amp
        assert torch.equal(result.indices, calibrated.indices) and result.logits.dtype == torch.float32
        assert torch.allclose(result.logits, calibrated.logits, atol=0.1 if amp else 0.02, rtol=0.02)
        agree = (result.predictions["uncalibrated"] == calibrated.predictions["uncalibrated"]).float().mean()
        assert agree > (0.97 if amp else 0.99)
