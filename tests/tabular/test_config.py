"""The tabular recipes and their typed config: every shipped recipe loads, bad values name the key."""

import pytest

from equipoise.core.config import ConfigError
from equipoise.tabular.config import available_recipes, load_train_config
from equipoise.tabular.train import available_methods


@pytest.mark.parametrize("name", available_recipes())
def test_every_recipe_loads_and_names_its_paper(name):
    config = load_train_config(name)
    assert config.method in available_methods() and config.paper and config.description
    assert config.output == f"results/tabular/runs/{config.dataset}-{config.method}-s{config.seed}"


def test_overrides_and_the_default_output_follow_the_method_and_seed():
    config = load_train_config("loan_naive", ["method=focal", "options.gamma=1.5", "seed=3"])
    assert (config.method, config.options, config.output) == (
        "focal",
        {"gamma": 1.5},
        "results/tabular/runs/loan-focal-s3",
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("method=bogus", "method must be one of"),
        ("dataset=mnist", "dataset"),
        ("val_size=0", "val_size must lie in"),
        ("epochs=0", "epochs must be >= 1"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("seed=-1", "seed must be >= 0"),
        ("lr=0", "lr must be > 0"),
        ("weight_decay=-1", "weight_decay must be >= 0"),
        ("momentum=1", "momentum must lie in"),
        ("methd=focal", "methd"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config("loan_naive", [override])
