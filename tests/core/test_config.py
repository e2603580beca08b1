"""The typed config system (``equipoise.core.config``) against hand-written expectations.

The schemas below are small dataclasses written for these tests: a nested section, a
``Literal``, ``X | None`` fields, ``list[tuple[int, float]]``, ``dict[str, Any]`` and the four
scalar types. Every expected value is written out by hand (or, for the properties, is the
input itself: ``repr`` of a finite float read back as YAML is the float).
"""

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from equipoise.core.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
    load_recipe,
    merge,
    parse_overrides,
)


@dataclass
class Optim:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    nesterov: bool = False
    steps: list[tuple[int, float]] = field(default_factory=lambda: [(160, 0.01)])

    def __post_init__(self) -> None:
        # A plain ValueError: config_from_dict turns it into a ConfigError naming the section.
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class Run:
    name: str = "run"
    epochs: int = 10
    ratio: float | None = None
    mode: Literal["fast", "slow"] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    optim: Optim = field(default_factory=Optim)
    amp: bool = True


@dataclass
class WithOptionalSection:
    optim: Optim | None = None


@dataclass
class WithDerived:
    epochs: int = 10
    total_steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.total_steps = self.epochs * 100


@dataclass
class Unsupported:
    tags: set[int] = field(default_factory=set)


RUN_KEYS = "name, epochs, ratio, mode, options, optim, amp"
OPTIM_KEYS = "name, lr, nesterov, steps"


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- parse_overrides


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e-3", 0.001),  # PyYAML alone (YAML 1.1) reads this as the string "1e-3"
        ("1E5", 100000.0),
        ("-2.5e-10", -2.5e-10),
        ("+3e2", 300.0),
        ("0.05", 0.05),
        (".5", 0.5),
        ("30", 30),
        ("-7", -7),
        ("true", True),
        ("false", False),
        ("null", None),
        ("~", None),
        ("", None),
        ("hello", "hello"),
        ("results/vision/run", "results/vision/run"),
        ("'1e-3'", "1e-3"),
        ('"true"', "true"),
        ("a=b", "a=b"),
        ("[160, 180]", [160, 180]),
        ("[[160, 0.01], [180, 1e-4]]", [[160, 0.01], [180, 0.0001]]),
        ("[]", []),
        ("{max_margin: 0.3, names: [a, b]}", {"max_margin": 0.3, "names": ["a", "b"]}),
    ],
)
def test_override_values_are_yaml(text, expected):
    value = parse_overrides([f"x={text}"])["x"]
    assert value == expected
    assert type(value) is type(expected)


def test_override_dotted_keys_nest():
    parsed = parse_overrides(["optim.lr=0.05", "epochs=30", "optim.name=adamw", "a.b.c=1", " name = x "])
    assert parsed == {"optim": {"lr": 0.05, "name": "adamw"}, "epochs": 30, "a": {"b": {"c": 1}}, "name": "x"}


def test_later_override_wins():
    assert parse_overrides(["epochs=1", "epochs=2"]) == {"epochs": 2}
    assert parse_overrides(["optim.lr=1", "optim.lr=2"]) == {"optim": {"lr": 2}}
    # A whole section given later replaces the keys set before it ...
    assert parse_overrides(["optim.lr=1", "optim={name: sgd}"]) == {"optim": {"name": "sgd"}}
    # ... and keys set after a section go into it.
    assert parse_overrides(["optim={name: sgd}", "optim.lr=1"]) == {"optim": {"name": "sgd", "lr": 1}}


def test_override_keys_under_a_scalar_are_refused():
    with pytest.raises(ConfigError, match=r"'epochs' is a value, not a section"):
        parse_overrides(["epochs=1", "epochs.x=2"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epochs", r"override 'epochs' is not of the form key=value"),
        ("", r"override '' is not of the form key=value"),
        ("=3", r"override '=3' has an empty key"),
        (" =3", r"override ' =3' has an empty key"),
        ("optim..lr=1", r"override 'optim..lr=1' has an empty key"),
        (".lr=1", r"override '.lr=1' has an empty key"),
        ("lr.=1", r"override 'lr.=1' has an empty key"),
        ("x=[1, 2", r"override 'x=\[1, 2': the value is not valid YAML"),
        (3, r"override 3 is not of the form key=value"),
    ],
)
def test_malformed_override_is_a_config_error(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(["epochs=1", item])


def test_overrides_as_one_string_is_a_type_error():
    with pytest.raises(TypeError, match=r"got the string 'epochs=3'"):
        parse_overrides("epochs=3")


def test_parse_overrides_of_nothing_is_empty():
    assert parse_overrides([]) == {}
    assert parse_overrides(()) == {}


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_repr_round_trips(value):
    parsed = parse_overrides([f"x={value!r}"])["x"]
    assert type(parsed) is float
    assert parsed == value


@settings(max_examples=200, deadline=None)
@given(st.integers())
def test_int_repr_round_trips(value):
    parsed = parse_overrides([f"x={value!r}"])["x"]
    assert type(parsed) is int
    assert parsed == value


_KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.tuples(_KEY, _KEY), st.integers(-1000, 1000), max_size=6))
def test_dotted_overrides_build_the_nested_dict(pairs):
    # Oracle: the two-level dict built by hand; section and leaf names never collide with a
    # flat key because every key here has exactly two parts.
    expected: dict[str, dict[str, int]] = {}
    for (section, key), value in pairs.items():
        expected.setdefault(section, {})[key] = value
    assert parse_overrides([f"{s}.{k}={v}" for (s, k), v in pairs.items()]) == expected


# --------------------------------------------------------------------------- merge


def test_merge_is_recursive_over_mappings():
    base = {"a": {"x": 1, "y": 2, "deep": {"p": 1, "q": 2}}, "b": 1}
    update = {"a": {"y": 3, "z": 4, "deep": {"q": 5}}, "c": 2}
    before = copy.deepcopy(base), copy.deepcopy(update)
    assert merge(base, update) == {"a": {"x": 1, "y": 3, "z": 4, "deep": {"p": 1, "q": 5}}, "b": 1, "c": 2}
    assert (base, update) == before  # neither input is modified


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([160, 180], [100]),  # lists are replaced, not concatenated or merged item by item
        ({"x": 1}, 3),  # a scalar replaces a mapping
        (3, {"x": 1}),  # a mapping replaces a scalar
        ({"x": 1}, None),  # null replaces a mapping
        ({"x": 1}, [1, 2]),
        ("text", 0.5),
    ],
)
def test_merge_replaces_non_mappings(old, new):
    assert merge({"k": old, "other": 1}, {"k": new}) == {"k": new, "other": 1}


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(_KEY, st.integers() | st.text(max_size=3) | st.none(), max_size=5),
    st.dictionaries(_KEY, st.integers() | st.text(max_size=3) | st.none(), max_size=5),
)
def test_merge_of_flat_dicts_is_dict_update(base, update):
    assert merge(base, update) == {**base, **update}


# --------------------------------------------------------------------------- config_from_dict


def test_empty_dict_gives_the_defaults():
    assert config_from_dict(Run, {}) == Run()


def test_values_are_converted_to_the_schema_types():
    config = config_from_dict(
        Run,
        {
            "name": "r",
            "epochs": 3,
            "ratio": 100,
            "mode": "slow",
            "options": {"gamma": 2, "nested": {"a": [1]}},
            "optim": {"name": "adamw", "lr": 1, "nesterov": True, "steps": [[160, 1], [180, 0.0001]]},
            "amp": False,
        },
    )
    expected = Run(
        name="r",
        epochs=3,
        ratio=100.0,
        mode="slow",
        options={"gamma": 2, "nested": {"a": [1]}},
        optim=Optim(name="adamw", lr=1.0, nesterov=True, steps=[(160, 1.0), (180, 0.0001)]),
        amp=False,
    )
    assert config == expected
    # int accepted for float and converted; YAML lists become the tuples the schema names
    assert type(config.ratio) is float and type(config.optim.lr) is float
    assert type(config.optim.steps) is list
    assert [type(step) for step in config.optim.steps] == [tuple, tuple]
    assert type(config.optim.steps[0][1]) is float


def test_optional_fields_take_null():
    config = config_from_dict(Run, {"ratio": None, "mode": None})
    assert config.ratio is None and config.mode is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": 5}, "name must be a string, got 5"),
        ({"epochs": True}, "epochs must be an integer, got True"),  # bool is an int in Python, not here
        ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
        ({"epochs": "3"}, "epochs must be an integer, got '3'"),
        ({"amp": "yes"}, "amp must be true or false, got 'yes'"),
        ({"amp": 1}, "amp must be true or false, got 1"),
        ({"optim": {"lr": True}}, "optim.lr must be a number, got True"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be a number, got 'fast'"),
        ({"optim": {"nesterov": None}}, "optim.nesterov must be true or false, got None"),
        ({"ratio": "big"}, "ratio must be float or null, got 'big'"),
        ({"ratio": False}, "ratio must be float or null, got False"),
        ({"optim": {"name": "adam"}}, "optim.name must be one of 'sgd', 'adamw'; got 'adam'"),
        ({"mode": "medium"}, "mode must be one of 'fast', 'slow' or null, got 'medium'"),
        ({"optim": {"steps": 5}}, "optim.steps must be a list (list[tuple[int, float]]), got 5"),
        ({"optim": {"steps": [[160]]}}, "optim.steps[0] must be a list of 2 items (tuple[int, float]), got [160]"),
        ({"optim": {"steps": [[160, "a"]]}}, "optim.steps[0][1] must be a number, got 'a'"),
        ({"optim": {"steps": [[1.5, 0.1]]}}, "optim.steps[0][0] must be an integer, got 1.5"),
        ({"options": [1]}, "options must be a mapping (dict[str, Any]), got [1]"),
        ({"options": {1: 2}}, "options key must be a string, got 1"),
    ],
)
def test_type_errors_name_the_key_and_the_value(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(Run, data)


def test_literal_refuses_an_equal_value_of_another_type():
    @dataclass
    class Level:
        level: Literal[1, 2] = 1

    assert config_from_dict(Level, {"level": 2}).level == 2
    with pytest.raises(ConfigError, match=re.escape("level must be one of 1, 2; got True")):
        config_from_dict(Level, {"level": True})  # True == 1, but it is not the integer 1
    with pytest.raises(ConfigError, match=re.escape("level must be one of 1, 2; got 2.0")):
        config_from_dict(Level, {"level": 2.0})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epoch": 3}, f"unknown key 'epoch' (did you mean 'epochs'?); allowed keys: {RUN_KEYS}"),
        ({"optim": {"lrr": 0.1}}, f"unknown key 'optim.lrr' (did you mean 'lr'?); allowed keys: {OPTIM_KEYS}"),
        ({"zzzzzz": 1}, f"unknown key 'zzzzzz'; allowed keys: {RUN_KEYS}"),
    ],
)
def test_unknown_key_suggests_the_close_match_and_lists_the_allowed_keys(data, message):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(Run, data)
    assert str(caught.value) == message


def test_section_given_a_scalar_or_null():
    with pytest.raises(ConfigError, match=re.escape("section 'optim' must be a mapping of keys to values, got 3")):
        config_from_dict(Run, {"optim": 3})
    with pytest.raises(ConfigError, match=re.escape("optim must be a section of keys (Optim), got null")):
        config_from_dict(Run, {"optim": None})
    with pytest.raises(ConfigError, match=re.escape("the config must be a mapping of keys to values, got [1]")):
        config_from_dict(Run, [1])


def test_post_init_value_error_becomes_a_config_error_naming_the_section():
    with pytest.raises(ConfigError) as caught:
        config_from_dict(Run, {"optim": {"lr": -1}})
    assert str(caught.value) == "lr must be > 0, got -1.0 in section 'optim'"
    assert isinstance(caught.value, ValueError)  # callers may catch ValueError


def test_optional_section():
    assert config_from_dict(WithOptionalSection, {}).optim is None
    assert config_from_dict(WithOptionalSection, {"optim": {"lr": 0.5}}).optim == Optim(lr=0.5)


def test_unknown_key_in_an_optional_section_is_named():
    with pytest.raises(ConfigError, match=re.escape("unknown key 'optim.lrr' (did you mean 'lr'?)")):
        config_from_dict(WithOptionalSection, {"optim": {"lrr": 0.1}})


def test_schema_errors_are_type_errors():
    with pytest.raises(TypeError, match="schema must be a dataclass type"):
        config_from_dict(dict, {})
    with pytest.raises(TypeError, match="schema must be a dataclass type"):
        config_from_dict(Run(), {})  # an instance, not the type
    with pytest.raises(TypeError, match=r"config schema type .* of tags is not supported"):
        config_from_dict(Unsupported, {"tags": [1]})


# --------------------------------------------------------------------------- config_to_dict


def test_config_to_dict_is_plain_and_round_trips():
    config = Run(
        name="r",
        epochs=7,
        ratio=50.0,
        mode="fast",
        options={"gamma": 2.0, "names": ["a"]},
        optim=Optim(name="adamw", lr=1e-3, nesterov=True, steps=[(10, 0.1), (20, 0.01)]),
        amp=False,
    )
    data = config_to_dict(config)
    assert data == {
        "name": "r",
        "epochs": 7,
        "ratio": 50.0,
        "mode": "fast",
        "options": {"gamma": 2.0, "names": ["a"]},
        "optim": {"name": "adamw", "lr": 1e-3, "nesterov": True, "steps": [(10, 0.1), (20, 0.01)]},
        "amp": False,
    }
    assert type(data["optim"]) is dict
    assert config_from_dict(Run, data) == config
    assert config_from_dict(Run, config_to_dict(Run())) == Run()
    # through YAML text (what a run writes as config.yaml) and back
    assert load_config(Run, yaml.safe_load(yaml.safe_dump(data))) == config


def test_config_to_dict_refuses_non_instances():
    with pytest.raises(TypeError, match="config must be a dataclass instance, got type"):
        config_to_dict(Run)
    with pytest.raises(TypeError, match="config must be a dataclass instance, got dict"):
        config_to_dict({"epochs": 1})


def test_round_trip_with_a_derived_field():
    config = WithDerived(epochs=3)
    assert config_from_dict(WithDerived, config_to_dict(config)) == config


# --------------------------------------------------------------------------- recipes


def test_load_config_from_nothing_a_dict_and_overrides():
    assert load_config(Run) == Run()
    assert load_config(Run, None, ["epochs=3", "optim.lr=1e-3"]) == Run(epochs=3, optim=Optim(lr=0.001))
    recipe = {"epochs": 5, "optim": {"name": "adamw", "lr": 0.5}}
    assert load_config(Run, recipe, ["optim.lr=0.2"]) == Run(epochs=5, optim=Optim(name="adamw", lr=0.2))
    assert recipe == {"epochs": 5, "optim": {"name": "adamw", "lr": 0.5}}  # not modified


def test_recipe_file_reads_1e_3_as_a_float(tmp_path):
    path = _write(tmp_path / "r.yaml", "optim:\n  lr: 1e-3\n  steps: [[5, 1e-1]]\nratio: 1e2\n")
    config = load_config(Run, path)
    assert config == Run(ratio=100.0, optim=Optim(lr=0.001, steps=[(5, 0.1)]))
    assert load_config(Run, str(path), ["epochs=4"]) == dataclasses.replace(config, epochs=4)


def test_base_chain_merges_section_by_section(tmp_path):
    _write(tmp_path / "base.yaml", "name: base\nepochs: 5\noptim: {name: adamw, lr: 0.5}\noptions: {a: 1}\n")
    _write(tmp_path / "child.yaml", "base: base.yaml\nepochs: 7\noptim:\n  lr: 0.2\n")
    # a relative base path is read from the recipe's own folder, not the working directory
    grand = _write(tmp_path / "sub" / "grand.yaml", "base: ../child.yaml\noptions: {b: 2}\namp: false\n")
    assert load_recipe(grand) == {
        "name": "base",
        "epochs": 7,
        "optim": {"name": "adamw", "lr": 0.2},
        "options": {"a": 1, "b": 2},
        "amp": False,
    }
    assert load_config(Run, grand, ["optim.nesterov=true"]) == Run(
        name="base", epochs=7, options={"a": 1, "b": 2}, optim=Optim(name="adamw", lr=0.2, nesterov=True), amp=False
    )


def test_base_by_shipped_name(tmp_path):
    shipped = tmp_path / "shipped"
    _write(shipped / "root.yaml", "epochs: 50\nname: root\n")
    mine = _write(tmp_path / "mine" / "mine.yaml", "base: root\nepochs: 2\n")
    assert load_recipe(mine, shipped) == {"epochs": 2, "name": "root"}
    # shipped recipes are found by name, with or without .yaml
    assert load_recipe("root", shipped) == {"epochs": 50, "name": "root"}
    assert load_recipe("root.yaml", shipped) == {"epochs": 50, "name": "root"}
    assert load_config(Run, "root", ["amp=false"], recipes_dir=shipped) == Run(name="root", epochs=50, amp=False)


def test_base_loops_are_detected(tmp_path):
    _write(tmp_path / "a.yaml", "base: b.yaml\nepochs: 1\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nepochs: 2\n")
    with pytest.raises(ConfigError, match=re.escape("recipe base chain loops: a.yaml -> b.yaml -> a.yaml")):
        load_recipe(tmp_path / "a.yaml")
    _write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match=re.escape("recipe base chain loops: self.yaml -> self.yaml")):
        load_recipe(tmp_path / "self.yaml")


def test_missing_recipe_lists_the_shipped_names(tmp_path):
    shipped = tmp_path / "shipped"
    _write(shipped / "beta.yaml", "epochs: 1\n")
    _write(shipped / "alpha.yaml", "epochs: 2\n")
    _write(shipped / "notes.txt", "not a recipe\n")
    with pytest.raises(FileNotFoundError) as caught:
        load_recipe("gamma", shipped)
    message = "recipe 'gamma' is neither a file nor a shipped recipe name"
    assert str(caught.value) == f"{message}; shipped recipes: alpha, beta"
    with pytest.raises(FileNotFoundError, match=r"^recipe 'gamma' is neither a file nor a shipped recipe name$"):
        load_recipe("gamma")
    _write(tmp_path / "orphan.yaml", "base: nowhere.yaml\n")
    with pytest.raises(FileNotFoundError, match="'nowhere.yaml'.*shipped recipes: alpha, beta"):
        load_recipe(tmp_path / "orphan.yaml", shipped)


def test_invalid_recipes_name_the_file(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"recipe {bad.resolve()} is not valid YAML")):
        load_recipe(bad)
    listed = _write(tmp_path / "listed.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"recipe {listed.resolve()} must be a mapping") + ".*got list"):
        load_recipe(listed)
    numbered = _write(tmp_path / "numbered.yaml", "base: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"recipe {numbered.resolve()}: base must be a recipe name")):
        load_recipe(numbered)
    with pytest.raises(TypeError, match="recipe must be a path or a recipe name, got int"):
        load_recipe(3)


def test_empty_recipe_gives_the_defaults(tmp_path):
    empty = _write(tmp_path / "empty.yaml", "# nothing but a comment\n")
    assert load_recipe(empty) == {}
    assert load_config(Run, empty) == Run()


def test_recipe_errors_surface_through_load_config(tmp_path):
    path = _write(tmp_path / "r.yaml", "optim:\n  name: adam\n")
    with pytest.raises(ConfigError, match=re.escape("optim.name must be one of 'sgd', 'adamw'; got 'adam'")):
        load_config(Run, path)
    with pytest.raises(ConfigError, match=re.escape("unknown key 'epoch' (did you mean 'epochs'?)")):
        load_config(Run, None, ["epoch=3"])


def test_describe_recipes_lists_names_and_descriptions_and_dump_config_round_trips(tmp_path):
    from dataclasses import dataclass

    from equipoise.core.config import describe_recipes, dump_config, load_config, recipe_names

    (tmp_path / "b_long_name.yaml").write_text("description: second one\nlr: 0.5\n")
    (tmp_path / "a.yaml").write_text("lr: 0.1\n")  # no description
    (tmp_path / "notes.txt").write_text("not a recipe")
    assert recipe_names(tmp_path) == ["a", "b_long_name"]
    assert describe_recipes(tmp_path).splitlines() == ["a            ", "b_long_name  second one"]

    @dataclass
    class Small:
        description: str = ""
        lr: float = 1.0

    config = load_config(Small, "b_long_name", recipes_dir=tmp_path)
    assert dump_config(config) == "description: second one\nlr: 0.5\n"
    assert load_config(Small, yaml.safe_load(dump_config(config))) == config


def test_recipe_arguments_list_show_load_and_refuse(tmp_path, capsys):
    import argparse
    from dataclasses import dataclass

    from equipoise.core.config import add_recipe_arguments, recipe_config_from_args

    @dataclass
    class Small:
        description: str = ""
        lr: float = 1.0

    (tmp_path / "base.yaml").write_text("description: the base\nlr: 0.5\n")

    def load(recipe, overrides):
        return load_config(Small, recipe, overrides, tmp_path)

    parser = argparse.ArgumentParser(prog="tool")
    add_recipe_arguments(parser, "lr=0.1")

    def run(*argv):
        return recipe_config_from_args(parser, parser.parse_args(argv), load, tmp_path)

    assert run("--list") is None and capsys.readouterr().out == "base  the base\n"
    assert run("base", "lr=0.25", "--show") is None and capsys.readouterr().out == "description: the base\nlr: 0.25\n"
    assert run("base", "lr=0.25") == Small(description="the base", lr=0.25)
    for argv, message in ((("",), "needs a recipe"), (("base", "rate=1"), "unknown key 'rate'"), (("nope",), "nope")):
        with pytest.raises(SystemExit):
            run(*[a for a in argv if a])
        assert message in capsys.readouterr().err
