"""The shipped vision recipes, their typed config and the schedule and loss they build.

Oracles: the papers' settings written out by hand (Cao et al. 2019 for LDAM-DRW; Bansal et al.
2021 for MetaBalance), the LDAM reference code's ``adjust_learning_rate`` rewritten here, cosine
values computed with ``math.cos``, the core losses built directly (and LDAM's formula, eq. 10,
by hand), and the YAML files read with plain PyYAML. Three subprocess calls check the CLI.
Nothing here reads image data or trains.
"""

import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml

import equipoise.vision.models  # noqa: F401 - registers the CIFAR ResNets and cnn_small with timm
from equipoise.core.config import ConfigError, config_from_dict, config_to_dict
from equipoise.core.losses import (
    LOSSES,
    ClassBalancedLoss,
    FocalLoss,
    LDAMLoss,
    VSLoss,
)
from equipoise.core.samplers import SAMPLERS
from equipoise.vision.config import (
    DataConfig,
    LossConfig,
    MetaBalanceConfig,
    MixupConfig,
    ModelConfig,
    OptimizerConfig,
    SamplerConfig,
    TrainConfig,
    available_recipes,
    load_train_config,
    recipes_dir,
)
from equipoise.vision.data import DATASETS
from equipoise.vision.train import build_criterion, learning_rate

ROOT = Path(__file__).resolve().parents[2]
RECIPES = available_recipes()
# CIFAR-10-LT, ratio 100: floor(5000 * 100 ** (-i / 9)).
COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _logits_and_targets(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(n, len(COUNTS), generator=generator) * 3
    targets = torch.randint(0, len(COUNTS), (n,), generator=generator)
    return logits, targets


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/train_vision.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- every recipe


def test_available_recipes_are_the_yaml_files():
    files = [path for path in recipes_dir().iterdir() if path.suffix == ".yaml"]
    assert RECIPES == sorted(path.name.removesuffix(".yaml") for path in files)
    assert {"ce", "ldam_drw", "metabalance", "os_mixup", "os_cutmix"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads_and_names_its_paper(name):
    config = load_train_config(name)
    assert isinstance(config, TrainConfig)
    # The recipe file itself says what it reproduces (not inherited from its base).
    raw = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(raw.get("paper"), str) and raw["paper"].strip()
    assert isinstance(raw.get("description"), str) and raw["description"].strip()
    assert (config.paper, config.description) == (raw["paper"], raw["description"])
    # by path, the same config; through config_to_dict and back, the same config
    assert load_train_config(recipes_dir() / f"{name}.yaml") == config
    assert config_from_dict(TrainConfig, config_to_dict(config)) == config
    # every name it uses exists in its registry
    assert config.data.dataset in DATASETS.names()
    assert timm.is_model(config.model.name)
    assert config.loss.name in LOSSES.names()
    assert config.sampler.name is None or config.sampler.name in SAMPLERS.names()
    build_criterion(config, COUNTS)  # the loss options fit the loss


def test_recipes_write_to_their_own_output():
    # Runs resume from OUTPUT/checkpoint.pt: two recipes sharing a folder would resume each other.
    outputs = {name: load_train_config(name).output for name in RECIPES}
    assert outputs == {name: f"results/vision/{name}" for name in RECIPES}


def test_ldam_drw_is_the_papers_setting():
    # Cao, Wei, Gaidon, Arechiga, Ma, NeurIPS 2019, Section 5 and the reference code's CIFAR defaults.
    config = load_train_config("ldam_drw")
    expected = TrainConfig(
        description=config.description,
        paper=config.paper,
        data=DataConfig(dataset="cifar10_lt", imbalance_ratio=100.0, profile="exponential", augment="cifar"),
        model=ModelConfig(name="resnet32_cifar", classifier="cosine"),
        loss=LossConfig(name="ldam", options={"max_margin": 0.5, "scale": 30.0}, drw_epoch=160, drw_beta=0.9999),
        sampler=SamplerConfig(name=None),
        optimizer=OptimizerConfig(
            name="sgd",
            lr=0.1,
            momentum=0.9,
            nesterov=False,
            weight_decay=2e-4,
            warmup_epochs=5,
            schedule="step",
            lr_steps=[(160, 0.01), (180, 0.0001)],
        ),
        mixup=MixupConfig(),
        metabalance=MetaBalanceConfig(enabled=False),
        epochs=200,
        batch_size=128,
        seed=0,
        output="results/vision/ldam_drw",
    )
    assert config == expected
    assert "Cao et al. 2019" in config.paper
    assert not config.mixup.enabled


def test_metabalance_is_the_papers_setting():
    config = load_train_config("metabalance")
    assert config.model.name == "resnet18"
    assert config.data.dataset == "cifar10_metabalance_severe"
    assert config.metabalance == MetaBalanceConfig(
        enabled=True, support_batch=20, query_batch=30, inner_lr=0.01, meta_steps=80
    )
    assert config.sampler.name is None and not config.mixup.enabled
    assert "Bansal et al. 2021" in config.paper


@pytest.mark.parametrize(
    ("name", "mixup_alpha", "cutmix_alpha"),
    [("os_mixup", 1.0, 0.0), ("os_cutmix", 0.0, 1.0)],
)
def test_oversampling_mixup_recipes(name, mixup_alpha, cutmix_alpha):
    config = load_train_config(name)
    assert config.mixup == MixupConfig(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha)
    assert config.mixup.enabled
    assert config.sampler == SamplerConfig(name="class_balanced")
    assert config.batch_size % 2 == 0
    # the rest is the cross-entropy baseline
    baseline = load_train_config("ce")
    assert config == dataclasses.replace(
        baseline,
        description=config.description,
        paper=config.paper,
        sampler=config.sampler,
        mixup=config.mixup,
        output=config.output,
    )


# --------------------------------------------------------------------------- overrides


def test_overrides_apply_on_top_of_the_recipe():
    recipe = load_train_config("ldam_drw")
    assert load_train_config("ldam_drw", ["epochs=30"]) == dataclasses.replace(recipe, epochs=30)
    shorter = load_train_config("ldam_drw", ["epochs=30", "loss.drw_epoch=24", "optimizer.lr_steps=[[24, 0.01]]"])
    assert shorter.epochs == 30 and shorter.loss.drw_epoch == 24
    assert shorter.optimizer.lr_steps == [(24, 0.01)]  # a list override replaces the list
    assert shorter.optimizer.lr == 0.1 and shorter.model.classifier == "cosine"
    # a dotted key inside the options updates that option and keeps the others
    assert load_train_config("ldam_drw", ["loss.options.max_margin=0.3"]).loss.options == {
        "max_margin": 0.3,
        "scale": 30.0,
    }
    assert load_train_config("ldam_drw", ["optimizer.weight_decay=1e-3"]).optimizer.weight_decay == 0.001


@pytest.mark.parametrize(
    ("recipe", "overrides", "expected"),
    [
        ("ldam_drw", ["loss.options={max_margin: 0.3}"], {"max_margin": 0.3}),
        ("ldam_drw", ["loss.options={}"], {}),
        ("cb_focal", ["loss.name=focal", "loss.options={gamma: 2.0}"], {"gamma": 2.0}),
    ],
)
def test_a_mapping_override_replaces_the_options(recipe, overrides, expected):
    assert load_train_config(recipe, overrides).loss.options == expected


@pytest.mark.parametrize(
    ("recipe", "overrides", "message"),
    [
        ("os_mixup", ["batch_size=127"], "mixup needs an even batch_size (timm's Mixup pairs examples), got 127"),
        ("os_cutmix", ["batch_size=63"], "mixup needs an even batch_size"),
        ("ce", ["mixup.mixup_alpha=0.2", "batch_size=5"], "mixup needs an even batch_size"),
        ("metabalance", ["sampler.name=class_balanced"], "metabalance draws its own support and query batches"),
        ("metabalance", ["mixup.mixup_alpha=0.2"], "metabalance draws its own support and query batches"),
        ("metabalance", ["metabalance.support_batch=0"], "metabalance.support_batch, query_batch and meta_steps"),
        ("ldam_drw", ["optimizer.lr=-0.1"], "optimizer.lr must be > 0, got -0.1"),
        ("ldam_drw", ["optimizer.lr=0"], "optimizer.lr must be > 0, got 0.0"),
        ("ldam_drw", ["optimizer.lr_steps=[[180, 0.01], [160, 0.0001]]"], "optimizer.lr_steps must be increasing"),
        ("ldam_drw", ["optimizer.lr_steps=[[160, 0]]"], "with factors > 0"),
        ("ldam_drw", ["optimizer.warmup_epochs=-1"], "optimizer.warmup_epochs must be >= 0, got -1"),
        ("ce", ["epochs=0"], "epochs must be >= 1, got 0"),
        ("ce", ["loss.drw_beta=1"], "loss.drw_beta must be in [0, 1), got 1.0"),
        ("ce", ["loss.drw_epoch=-1"], "loss.drw_epoch must be >= 0 or null, got -1"),
        ("ce", ["data.imbalance_ratio=0.5"], "data.imbalance_ratio must be >= 1, got 0.5"),
        ("ce", ["mixup.prob=1.5"], "mixup.prob and mixup.switch_prob must be in [0, 1]"),
        ("ce", ["max_steps_per_epoch=0"], "max_steps_per_epoch must be >= 1 or null, got 0"),
        ("ce", ["epoch=3"], "unknown key 'epoch' (did you mean 'epochs'?)"),
        ("ce", ["optimizer.name=adam"], "optimizer.name must be one of 'sgd', 'adamw'; got 'adam'"),
        ("ce", ["batch_size=true"], "batch_size must be an integer, got True"),
    ],
)
def test_cross_checks_raise_config_errors(recipe, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_train_config(recipe, overrides)


def test_the_checks_refuse_only_what_they_should():
    assert load_train_config("os_mixup", ["batch_size=64"]).batch_size == 64
    assert load_train_config("ce", ["batch_size=127"]).batch_size == 127  # odd is fine without mixup
    assert load_train_config("metabalance", ["sampler.name=null"]).sampler.name is None
    steps = load_train_config("ldam_drw", ["optimizer.lr_steps=[]"]).optimizer.lr_steps
    assert steps == []


# --------------------------------------------------------------------------- learning rate


def _ldam_reference_lr(epoch: int, lr: float = 0.1) -> float:
    """``adjust_learning_rate`` of the LDAM-DRW reference code (cifar_train.py), epochs from 0."""
    epoch = epoch + 1
    if epoch <= 5:
        return lr * epoch / 5
    if epoch > 180:
        return lr * 0.0001
    if epoch > 160:
        return lr * 0.01
    return lr


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 0.02), (1, 0.04), (4, 0.1), (5, 0.1), (159, 0.1), (160, 0.001), (179, 0.001), (180, 0.00001), (199, 0.00001)],
)
def test_ldam_schedule_by_hand(epoch, expected):
    optimizer = load_train_config("ldam_drw").optimizer
    assert learning_rate(optimizer, epoch, 200) == pytest.approx(expected, rel=1e-12, abs=0)


def test_ldam_schedule_matches_the_reference_code_at_every_epoch():
    optimizer = load_train_config("ldam_drw").optimizer
    actual = [learning_rate(optimizer, epoch, 200) for epoch in range(200)]
    assert actual == pytest.approx([_ldam_reference_lr(epoch) for epoch in range(200)], rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("recipe", "epoch", "expected"),
    [
        # metabalance: lr 0.01, no warm-up, 30 epochs: 0.01 / 2 * (1 + cos(pi * epoch / 30))
        ("metabalance", 0, 0.01),
        ("metabalance", 10, 0.0075),  # cos(pi / 3) = 1/2
        ("metabalance", 15, 0.005),  # cos(pi / 2) = 0
        ("metabalance", 20, 0.0025),  # cos(2 pi / 3) = -1/2
        ("metabalance", 29, 0.005 * (1 + math.cos(math.pi * 29 / 30))),
        # mnist_lt: lr 0.05, one warm-up epoch, 10 epochs: t = (epoch - 1) / 9 after warm-up
        ("mnist_lt", 0, 0.05),  # warm-up: 0.05 * (0 + 1) / 1
        ("mnist_lt", 1, 0.05),
        ("mnist_lt", 4, 0.0375),  # t = 3 / 9, cos(pi / 3) = 1/2
        ("mnist_lt", 9, 0.025 * (1 + math.cos(math.pi * 8 / 9))),
    ],
)
def test_cosine_schedule_by_hand(recipe, epoch, expected):
    config = load_train_config(recipe)
    assert config.optimizer.schedule == "cosine"
    assert learning_rate(config.optimizer, epoch, config.epochs) == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_constant_schedule_after_warm_up():
    optimizer = OptimizerConfig(lr=0.3, warmup_epochs=2, schedule="constant")
    assert [learning_rate(optimizer, epoch, 100) for epoch in (0, 1, 2, 50, 99)] == pytest.approx(
        [0.15, 0.3, 0.3, 0.3, 0.3], rel=1e-12
    )


# --------------------------------------------------------------------------- criterion


def test_ldam_criterion_gets_the_training_counts():
    logits, targets = _logits_and_targets()
    criterion = build_criterion(load_train_config("ldam_drw"), COUNTS)
    assert isinstance(criterion, LDAMLoss)
    torch.testing.assert_close(criterion.class_counts, torch.tensor(COUNTS, dtype=criterion.class_counts.dtype))
    torch.testing.assert_close(criterion(logits, targets), LDAMLoss(COUNTS, 0.5, 30.0)(logits, targets))
    # Cao et al. 2019, eq. 10, by hand: margins 0.5 * (n_min / n_j) ** (1/4) on the true class, scale 30.
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    margins = 0.5 * (counts.min() / counts) ** 0.25
    shifted = logits.double() - F.one_hot(targets, len(COUNTS)) * margins[targets, None]
    expected = F.cross_entropy(30.0 * shifted, targets)
    torch.testing.assert_close(criterion(logits, targets).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("recipe", "oracle"),
    [
        ("ce", lambda logits, targets: F.cross_entropy(logits, targets)),
        (
            "balanced_softmax",
            lambda logits, targets: F.cross_entropy(logits + torch.tensor(COUNTS).float().log(), targets),
        ),
        (
            "logit_adjusted",
            lambda logits, targets: F.cross_entropy(
                logits + (torch.tensor(COUNTS).float() / sum(COUNTS)).log(), targets
            ),
        ),
        ("focal", lambda logits, targets: FocalLoss(gamma=1.0)(logits, targets)),
        (
            "cb_focal",
            lambda logits, targets: ClassBalancedLoss(COUNTS, beta=0.9999, loss_type="focal", gamma=1.0)(
                logits, targets
            ),
        ),
        ("vs", lambda logits, targets: VSLoss(COUNTS, gamma=0.3, tau=1.0)(logits, targets)),
    ],
)
def test_criterion_equals_the_core_loss(recipe, oracle):
    logits, targets = _logits_and_targets()
    criterion = build_criterion(load_train_config(recipe), COUNTS)
    torch.testing.assert_close(criterion(logits, targets), oracle(logits, targets), rtol=1e-5, atol=1e-6)


def test_criterion_keeps_counts_given_in_the_options():
    config = load_train_config("ldam_drw", ["loss.options.class_counts=[1, 1, 1, 1, 1, 1, 1, 1, 1, 100]"])
    criterion = build_criterion(config, COUNTS)
    assert criterion.class_counts.tolist() == [1] * 9 + [100]


def test_criterion_under_mixup_is_per_example():
    logits, targets = _logits_and_targets()
    criterion = build_criterion(load_train_config("os_mixup"), COUNTS)
    torch.testing.assert_close(criterion(logits, targets), F.cross_entropy(logits, targets, reduction="none"))
    ldam = build_criterion(load_train_config("ldam_drw", ["mixup.mixup_alpha=1.0"]), COUNTS)
    per_example = ldam(logits, targets)
    assert per_example.shape == (len(targets),)
    torch.testing.assert_close(per_example, LDAMLoss(COUNTS, 0.5, 30.0, reduction="none")(logits, targets))


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        (
            TrainConfig(loss=LossConfig(name="ldamm")),
            r"loss\.name 'ldamm' is not a core loss; choose one of .*\bldam\b",
        ),
        (
            TrainConfig(loss=LossConfig(name="ldam", options={"margin": 0.3, "scale": 30.0})),
            r"loss\.options \['margin'\] are not options of 'ldam'; it takes .*max_margin",
        ),
        (
            TrainConfig(loss=LossConfig(name="balanced_softmax", drw_epoch=160)),
            r"loss\.drw_epoch needs a loss with per-class weights; 'balanced_softmax' has none",
        ),
    ],
    ids=["name", "option", "drw"],
)
def test_criterion_refuses_unknown_names_and_options(config, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_criterion(config, COUNTS)


# --------------------------------------------------------------------------- command line


def test_cli_lists_every_recipe():
    result = _cli("--list")
    assert result.returncode == 0, result.stderr
    listed = dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if line.strip())
    assert listed == {name: load_train_config(name).description for name in RECIPES}


def test_cli_show_prints_the_merged_config():
    result = _cli("--show", "ldam_drw", "epochs=3")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^epochs: 3$", result.stdout, flags=re.MULTILINE)
    shown = yaml.safe_load(result.stdout)
    assert config_from_dict(TrainConfig, shown) == load_train_config("ldam_drw", ["epochs=3"])


def test_cli_unknown_key_exits_2_naming_it():
    result = _cli("--show", "ldam_drw", "epoch=3")
    assert result.returncode == 2
    assert "unknown key 'epoch' (did you mean 'epochs'?)" in result.stderr
    assert result.stdout == ""
