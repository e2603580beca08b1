"""The vision training loop: exact resumption, mixup's loss, DDP shares, files written, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from equipoise.core.losses import CrossEntropyLoss
from equipoise.vision import train as train_module
from equipoise.vision.checkpoint import load_checkpoint
from equipoise.vision.config import load_train_config
from equipoise.vision.train import _mixed_loss, train

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("EQUIPOISE_DATA", REPO.parent / "shared" / "data"))
needs_mnist = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason=f"MNIST idx files not found under {DATA}")

# A small MNIST-LT (counts 100 ... 1, 242 images) and short epochs: seconds per run.
SMALL = [
    f"data.root={DATA}",
    "data.options={max_count: 100}",
    "max_steps_per_epoch=4",
    "batch_size=32",
    "eval_batch_size=1000",
    "progress=false",
    "optimizer.schedule=cosine",
]


def _config(output: Path, *overrides: str):
    return load_train_config("mnist_lt", [*SMALL, f"output={output}", *overrides])


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


# Every source of randomness at once: a class-balanced sampler, CutMix per example (NumPy's
# generator inside timm), dropout, augmentation-free MNIST, DRW switching mid-run.
RANDOM_RUN = [
    "epochs=3",
    "sampler.name=class_balanced",
    "mixup.cutmix_alpha=1.0",
    "mixup.mixup_alpha=0.4",
    "mixup.mode=elem",
    "loss.name=ldam",
    "model.classifier=cosine",
    "loss.drw_epoch=1",
]


@needs_mnist
def test_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    straight = train(_config(tmp_path / "straight", *RANDOM_RUN))

    saves = []
    real_save = train_module.save_checkpoint

    def save_then_interrupt(path, checkpoint):
        real_save(path, checkpoint)
        saves.append(checkpoint["epoch"])
        if checkpoint["epoch"] == 2:
            raise KeyboardInterrupt  # Ctrl-C right after epoch 2 was saved

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "resumed", *RANDOM_RUN))
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    assert saves == [1, 2]
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 2
    resumed = train(_config(tmp_path / "resumed", *RANDOM_RUN))

    expected, actual = _weights(straight), _weights(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    lines = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    straight_lines = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [line["train_loss"] for line in lines] == [line["train_loss"] for line in straight_lines]


@needs_mnist
def test_a_run_writes_its_files_and_a_weights_only_checkpoint(tmp_path):
    run_dir = train(_config(tmp_path / "run", "epochs=2", "eval_every=1"))
    for name in ("config.yaml", "class_counts.md", "class_counts.png", "checkpoint.pt", "log.jsonl", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".*tmp*"))  # atomic writes leave no temporary file
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["stage"] == "train"
    assert checkpoint["class_counts"] == [100, 59, 35, 21, 12, 7, 4, 2, 1, 1]
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all("test_balanced_accuracy" in line for line in lines)
    # 4 steps of 32 images per epoch
    assert [line["images"] for line in lines] == [128, 128]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["balanced_accuracy"] == lines[-1]["test_balanced_accuracy"]
    # a finished run called again trains nothing more and keeps its weights
    before = _weights(run_dir)
    train(_config(tmp_path / "run", "epochs=2", "eval_every=1"))
    assert all(torch.equal(before[k], v) for k, v in _weights(run_dir).items())
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2


@needs_mnist
def test_progress_output_shows_each_epoch_and_the_test_metrics(tmp_path, capsys):
    # MNIST-LT's shot groups leave "few" empty (None): the epoch line must still print.
    train(_config(tmp_path / "run", "epochs=1", "progress=true"))
    output = capsys.readouterr()
    line = next(line for line in (output.out + output.err).splitlines() if line.startswith("epoch 1/1:"))
    assert "train_loss" in line and "test_balanced_accuracy" in line and "None" not in line


@needs_mnist
def test_resuming_with_a_different_config_is_refused(tmp_path):
    train(_config(tmp_path / "run", "epochs=1"))
    with pytest.raises(ValueError, match=r"optimizer.lr: 0.05 -> 0.2"):
        train(_config(tmp_path / "run", "epochs=2", "optimizer.lr=0.2"))


@needs_mnist
def test_a_corrupt_checkpoint_is_named(tmp_path):
    run_dir = train(_config(tmp_path / "run", "epochs=1"))
    data = (run_dir / "checkpoint.pt").read_bytes()
    (run_dir / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"checkpoint\.pt.*corrupt"):
        train(_config(tmp_path / "run", "epochs=2"))


def test_missing_data_says_where_to_put_it(tmp_path):
    config = load_train_config("mnist_lt", [f"data.root={tmp_path}", f"output={tmp_path / 'run'}", "progress=false"])
    with pytest.raises(FileNotFoundError, match="MNIST"):
        train(config)


def test_train_refuses_a_plain_dict(tmp_path):
    with pytest.raises(TypeError, match="TrainConfig"):
        train({"epochs": 1})


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mixed_loss_equals_soft_target_cross_entropy(mode):
    """lam * CE(z, y) + (1 - lam) * CE(z, y_flip) is cross-entropy against timm's soft targets."""
    from timm.data import Mixup

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 8, 8, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 1])
    logits = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    mixup = Mixup(mixup_alpha=1.0, mode=mode, label_smoothing=0.0, num_classes=4)
    _, soft = mixup(images, labels)
    expected = -(soft.double() * F.log_softmax(logits, dim=1)).sum(1).mean()
    actual = _mixed_loss(CrossEntropyLoss(reduction="none"), logits, labels, soft)
    torch.testing.assert_close(actual.double(), expected)


@needs_mnist
def test_metabalance_epoch_runs_and_logs_a_finite_loss(tmp_path):
    run_dir = train(
        _config(
            tmp_path / "meta",
            "epochs=1",
            "metabalance.enabled=true",
            "metabalance.meta_steps=2",
            "metabalance.support_batch=8",
            "metabalance.query_batch=10",
            "metabalance.updates_per_epoch=2",
        )
    )
    line = json.loads((run_dir / "log.jsonl").read_text().splitlines()[0])
    assert torch.isfinite(torch.tensor(line["train_loss"]))
    assert line["images"] == 2 * 10  # two outer updates, counted by their query batch size


@needs_mnist
@pytest.mark.slow
def test_torchrun_ddp_splits_each_epoch_between_two_processes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from equipoise.vision.config import load_train_config\n"
        "from equipoise.vision.train import train\n"
        "train(load_train_config('mnist_lt', sys.argv[1:]))\n"
    )
    output = tmp_path / "ddp"
    overrides = [o for o in SMALL if not o.startswith("max_steps")]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    command += [str(script), *overrides, "epochs=1", "device=cpu", f"output={output}", "sampler.name=square_root"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (output / "log.jsonl").read_text().splitlines()
    assert len(lines) == 1  # rank 0 writes once
    # 242 images, two ranks of ceil(242 / 2) = 121 each, batches of 32: 4 batches per rank
    assert json.loads(lines[0])["images"] == 2 * 121
    checkpoint = load_checkpoint(output / "checkpoint.pt")
    assert len(checkpoint["rng"]) == 2  # every rank's random state, for an exact resume
    assert not any(key.startswith("module.") for key in checkpoint["model"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@needs_mnist
def test_cuda_amp_run(tmp_path):
    run_dir = train(_config(tmp_path / "cuda", "epochs=1", "device=cuda", "amp=true", "channels_last=true"))
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["scaler"]["scale"] > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["balanced_accuracy"] <= 1.0
