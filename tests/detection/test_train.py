"""Detection training: recipes and config checks, the schedule, the image order, end-to-end runs on COCO128.

Oracles: detectron2's WarmupMultiStepLR written out by hand, boxes flipped by hand, the weights of
an uninterrupted run (bit for bit on the CPU, single-threaded) for resumption after a stop and
after Ctrl-C, and the saved model's predictions against the in-memory model's.
"""

import dataclasses
import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from equipoise.core.config import ConfigError, config_to_dict
from equipoise.detection import train as train_module
from equipoise.detection.train import (
    CHECKPOINT_FORMAT,
    DetectionTrainConfig,
    available_recipes,
    load_detection_train_config,
    load_trained_model,
    train_detection,
)

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
needs_coco128 = pytest.mark.skipif(
    not (SHARED / "coco128" / "annotations" / "instances_val2017.json").is_file(),
    reason="needs the shared COCO128 copy: set EQUIPOISE_DATA (CI sets it)",
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(output, **changes) -> DetectionTrainConfig:
    options = {
        "dataset": "coco128",
        "data_root": str(SHARED),
        "backbone": "mobilenet_v2_fpn",
        "backbone_weights": None,
        "fpn_channels": 16,
        "min_size": 64,
        "max_size": 96,
        "iterations": 4,
        "batch_size": 2,
        "lr": 0.01,
        "warmup_iterations": 2,
        "lr_steps": [3],
        "checkpoint_every": 2,
        "log_every": 1,
        "output": str(output),
    }
    return DetectionTrainConfig(**{**options, **changes})


def weights(model_path):
    return torch.load(model_path, weights_only=True)["model"]


def assert_same(left, right):
    assert left.keys() == right.keys()
    assert not [key for key in left if not torch.equal(left[key], right[key])]


# --------------------------------------------------------------------------------------------- recipes


def test_recipes_load_and_cpu_ones_differ_only_in_the_loss():
    assert available_recipes() == [
        "coco128_mobilenet_bce",
        "coco128_mobilenet_eqlv2",
        "coco128_mobilenet_focal",
        "coco128_mobilenet_seesaw",
        "coco_r50_fpn_1x",
    ]
    base = config_to_dict(load_detection_train_config("coco128_mobilenet_focal"))
    losses = {}
    for name in available_recipes()[:4]:
        config = config_to_dict(load_detection_train_config(name))
        different = {key for key in config if config[key] != base[key]}
        assert different <= {"description", "paper", "loss", "loss_options", "output"}, name
        assert config["output"] == f"results/detection/{name}" and config["paper"]
        losses[name] = (config["loss"], config["loss_options"])
        assert (config["optimizer"], config["lr"]) == ("adamw", 1e-4), name  # SGD stalls at this budget
    assert losses == {
        "coco128_mobilenet_bce": ("sigmoid_focal", {"alpha": 0.75, "gamma": 0.0}),
        "coco128_mobilenet_eqlv2": ("eqlv2", {"gamma": 12.0, "mu": 0.8, "alpha": 4.0}),
        "coco128_mobilenet_focal": ("sigmoid_focal", {}),
        "coco128_mobilenet_seesaw": ("sigmoid_seesaw", {"p": 0.8, "q": 2.0}),
    }


def test_gpu_recipe_is_the_detectron2_1x_schedule():
    config = load_detection_train_config("coco_r50_fpn_1x")
    assert (config.backbone, config.iterations, config.batch_size, config.lr) == ("resnet50_fpn", 90000, 16, 0.01)
    assert (config.lr_steps, config.warmup_iterations, config.weight_decay) == ([60000, 80000], 1000, 1e-4)
    assert (config.optimizer, config.momentum) == ("sgd", 0.9)
    assert (config.min_size, config.max_size, config.loss, config.prior_probability) == (
        800,
        1333,
        "sigmoid_focal",
        0.01,
    )


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("loss=cross_entropy", "takes class indices"),
        ("loss=sigmoid_seesaw", "unexpected keyword argument 'alpha'"),
        ("iterations=0", "iterations must be an integer >= 1"),
        ("hflip=1.5", r"hflip must be in \[0, 1\]"),
        ("lr_steps=[300,200]", "lr_steps must be increasing"),
        ("backbone=vgg", "backbone must be one of"),
        ("sampler=class_balanced", "sampler"),
        ("max_size=100", "max_size must be >= min_size"),
        ("dataset=coco", "needs images=<image folder> and annotations"),
        ("itterations=5", "did you mean 'iterations'"),
        ("optimizer=adam", "optimizer"),
    ],
)
def test_bad_config_names_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_detection_train_config("coco128_mobilenet_bce", [override])


def test_numpy_integers_are_refused_in_a_config_that_is_written_as_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"iterations must be an integer >= 1, got np.int64\(5\)"):
        tiny(tmp_path, iterations=np.int64(5))


def test_learning_rate_is_detectron2s_warmup_multistep():
    config = DetectionTrainConfig(warmup_iterations=100, warmup_factor=0.001, lr_steps=[300, 400], lr_gamma=0.1)
    for iteration in [0, 1, 50, 99, 100, 299, 300, 399, 400, 1000]:
        if iteration < 100:
            alpha = iteration / 100
            expected = 0.001 * (1 - alpha) + alpha
        else:
            expected = 1.0
        expected *= 0.1 ** ((iteration >= 300) + (iteration >= 400))
        assert train_module._learning_rate_factor(config, iteration) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------- order and flips


@needs_coco128
def test_batches_come_from_seed_and_epoch_and_resume_mid_epoch():
    config = tiny("unused", batch_size=3, hflip=0.5)
    dataset = train_module.training_dataset(config)
    epoch0 = train_module._epoch_batches(config, dataset, None, 0)
    assert epoch0 == train_module._epoch_batches(config, dataset, None, 0)
    assert epoch0 != train_module._epoch_batches(config, dataset, None, 1)
    assert len(epoch0) == 128 // 3 and all(len(batch) == 3 for batch in epoch0)
    indices = [index for batch in epoch0 for index, _ in batch]
    assert len(set(indices)) == len(indices) == 126
    flips = [flip for batch in epoch0 for _, flip in batch]
    assert 40 < sum(flips) < 86  # about half
    stream = train_module._batches_from(config, dataset, None, 0)
    whole = [next(stream) for _ in range(50)]
    resumed = train_module._batches_from(config, dataset, None, 45)
    assert [next(resumed) for _ in range(5)] == whole[45:]
    assert whole[42:] == train_module._epoch_batches(config, dataset, None, 1)[:8]


@needs_coco128
def test_flip_mirrors_image_and_boxes():
    config = tiny("unused")
    dataset = train_module.training_dataset(config)
    flipped = train_module._Flipped(dataset)
    (image, target), (mirror, mirrored) = flipped[(5, False)], flipped[(5, True)]
    width = image.shape[-1]
    assert torch.equal(mirror, image.flip(-1))
    expected = torch.stack(
        [width - target["boxes"][:, 2], target["boxes"][:, 1], width - target["boxes"][:, 0], target["boxes"][:, 3]], 1
    )
    torch.testing.assert_close(mirrored["boxes"], expected)
    assert torch.equal(mirrored["labels"], target["labels"])


# --------------------------------------------------------------------------------------------- end to end


@needs_coco128
def test_run_writes_model_log_and_config_and_the_model_reloads(tmp_path):
    config = tiny(tmp_path / "run")
    model_path = train_detection(config, progress=False)
    assert model_path == tmp_path / "run" / "model.pt"
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == config_to_dict(config)
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["iteration"] for entry in log] == [1, 2, 3, 4]
    lrs = [entry["lr"] for entry in log]
    assert lrs == pytest.approx([0.01 * (0.001 * 0.5 + 0.5), 0.01, 0.001, 0.001])  # lr after each step
    assert all(entry["loss"] == pytest.approx(entry["classification"] + entry["bbox_regression"]) for entry in log)

    model, metadata = load_trained_model(model_path, score_thresh=0.0)
    assert metadata["num_classes"] == 80 and len(metadata["category_ids"]) == 80
    assert metadata["class_image_counts"][0] == 61  # person
    assert_same(model.state_dict(), {k: v for k, v in weights(model_path).items() if k in model.state_dict()})


@needs_coco128
def test_stopped_run_resumes_to_the_uninterrupted_weights(tmp_path):
    straight = train_detection(tiny(tmp_path / "straight", hflip=0.5), progress=False)
    train_detection(tiny(tmp_path / "stopped", hflip=0.5, iterations=2), progress=False)
    checkpoint = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert (checkpoint["format"], checkpoint["iteration"]) == (CHECKPOINT_FORMAT, 2)
    resumed = train_detection(tiny(tmp_path / "stopped", hflip=0.5, iterations=4), progress=False)
    assert_same(weights(straight), weights(resumed))


@needs_coco128
def test_adamw_run_keeps_adams_moments_in_the_checkpoint_and_resumes_exactly(tmp_path):
    straight = train_detection(tiny(tmp_path / "straight", optimizer="adamw", lr=1e-3), progress=False)
    train_detection(tiny(tmp_path / "stopped", optimizer="adamw", lr=1e-3, iterations=2), progress=False)
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)["optimizer"]
    first = next(iter(state["state"].values()))
    assert {"exp_avg", "exp_avg_sq"} <= first.keys() and "momentum_buffer" not in first
    assert state["param_groups"][0]["weight_decay"] == 1e-4
    resumed = train_detection(tiny(tmp_path / "stopped", optimizer="adamw", lr=1e-3, iterations=4), progress=False)
    assert_same(weights(straight), weights(resumed))
    sgd = train_detection(tiny(tmp_path / "sgd", lr=1e-3), progress=False)
    assert not torch.equal(
        weights(sgd)["head.classification_head.cls_logits.weight"],
        weights(straight)["head.classification_head.cls_logits.weight"],
    )


def interrupt_at_step(monkeypatch, step, action):
    """Make the ``step``-th optimiser step call ``action()`` first (a Ctrl-C arriving mid-iteration)."""
    calls = {"n": 0}
    original = torch.optim.SGD.step

    def step_with_interrupt(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            action()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step_with_interrupt)


@needs_coco128
def test_ctrl_c_finishes_the_iteration_saves_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = tiny(tmp_path / "straight", loss="eqlv2", checkpoint_every=10)
    straight = train_detection(config, progress=False)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may ignore SIGINT)
    try:
        interrupt_at_step(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGINT))
        with pytest.raises(KeyboardInterrupt):
            train_detection(dataclasses.replace(config, output=str(tmp_path / "run")), progress=False)
        monkeypatch.undo()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"] == 3
    assert not (tmp_path / "run" / "model.pt").exists()
    resumed = train_detection(dataclasses.replace(config, output=str(tmp_path / "run")), progress=False)
    assert_same(weights(straight), weights(resumed))  # EQLv2's gradient statistics included


@needs_coco128
def test_immediate_interrupt_keeps_the_last_whole_checkpoint(tmp_path, monkeypatch):
    config = tiny(tmp_path / "straight", loss="sigmoid_seesaw", checkpoint_every=2)
    straight = train_detection(config, progress=False)

    def second_ctrl_c():
        raise KeyboardInterrupt

    interrupt_at_step(monkeypatch, 4, second_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_detection(dataclasses.replace(config, output=str(tmp_path / "run")), progress=False)
    monkeypatch.undo()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"] == 2
    resumed = train_detection(dataclasses.replace(config, output=str(tmp_path / "run")), progress=False)
    assert_same(weights(straight), weights(resumed))  # Seesaw's class counts included


@needs_coco128
def test_resuming_with_another_config_is_refused_and_no_resume_starts_over(tmp_path):
    train_detection(tiny(tmp_path / "run", iterations=2), progress=False)
    with pytest.raises(ConfigError, match="lr differ"):
        train_detection(tiny(tmp_path / "run", iterations=4, lr=0.02), progress=False)
    train_detection(tiny(tmp_path / "run", iterations=2, lr=0.02), resume=False, progress=False)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]["lr"] == 0.02


@needs_coco128
def test_non_finite_loss_or_weights_stop_with_a_clear_error(tmp_path, monkeypatch):
    from equipoise.core.losses import SigmoidFocalLoss

    with pytest.raises((FloatingPointError, ValueError), match="non-finite"):  # weights blown up after step 1
        train_detection(tiny(tmp_path / "big", lr=1e30, warmup_iterations=0, lr_steps=[]), progress=False)
    monkeypatch.setattr(SigmoidFocalLoss, "forward", lambda self, logits, targets: logits.sum() * float("nan"))
    with pytest.raises(FloatingPointError, match="loss became non-finite at iteration 0"):
        train_detection(tiny(tmp_path / "nan"), progress=False)


@needs_coco128
def test_repeat_factor_sampler_draws_rare_class_images_more_often(tmp_path):
    config = tiny(tmp_path / "run", sampler="repeat_factor", repeat_threshold=0.1)
    dataset = train_module.training_dataset(config)
    from equipoise.core.samplers import RepeatFactorSampler

    sampler = RepeatFactorSampler.from_dataset(dataset, threshold=0.1, seed=config.seed)
    batches = train_module._epoch_batches(config, dataset, sampler, 0)
    drawn = torch.bincount(torch.tensor([index for batch in batches for index, _ in batch]), minlength=len(dataset))
    factors = sampler.repeat_factors
    assert drawn[factors > 2].float().mean() > drawn[factors == 1].float().mean()
    train_detection(dataclasses.replace(config, iterations=2), progress=False)


def test_tools_script_lists_and_shows(capsys):
    spec = importlib.util.spec_from_file_location("train_detection_script", ROOT / "tools" / "train_detection.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == available_recipes()
    assert script.main(["coco128_mobilenet_eqlv2", "iterations=10", "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["loss"], shown["iterations"]) == ("eqlv2", 10)
