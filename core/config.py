"""Typed run configurations: dataclasses filled from YAML recipes and ``key=value`` overrides.

One config system for every domain (detectron2 has two; we keep one). A domain declares its
schema as (nested) dataclasses with type hints and defaults; a *recipe* is a YAML file with
the same keys, shipped in the package (``equipoise/<domain>/recipes/*.yaml``) or a user's own
path; command-line overrides are ``key=value`` strings with dotted keys for nested sections
(``optimizer.lr=0.05``), their values read as YAML (``1e-3``, ``true``, ``[160, 180]``, ``null``).

:func:`load_config` merges recipe and overrides and validates the result against the schema
*before* any work starts: an unknown key names the allowed keys, a wrongly typed value names
the key, the expected type and the value, and a ``Literal`` field names its allowed values.
Cross-field checks live in each dataclass's ``__post_init__``.

A recipe may start from another with ``base: other.yaml`` (a path relative to the recipe, or
a shipped recipe's name); its keys are merged over the base's, section by section.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "add_checkpoint_arguments",
    "add_recipe_arguments",
    "apply_overrides",
    "checkpoint_from_args",
    "config_from_dict",
    "config_to_dict",
    "describe_recipes",
    "dump_config",
    "load_config",
    "load_recipe",
    "merge",
    "package_recipes",
    "parse_overrides",
    "recipe_names",
    "recipe_config_from_args",
]

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading ``1e-3`` as a float, as YAML 1.2 does (PyYAML follows 1.1: a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema (a ``ValueError``)."""


def _override_items(overrides: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Each ``key=value`` as (the dotted key's parts, the value read as YAML)."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides must be a sequence of 'key=value' strings, got the string {overrides!r}")
    items = []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (for example optimizer.lr=0.05)")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = _load_yaml(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({error})") from None
        items.append((key.split("."), value))
    return items


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {'.'.join(path[: depth + 1])!r} is a value, not a section")
        else:
            child = node[part] = dict(child)
        node = child
    node[path[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optimizer.lr=0.05", "epochs=30"]`` -> ``{"optimizer": {"lr": 0.05}, "epochs": 30}``.

    Values are parsed as YAML scalars or flow collections; a later override of the same key wins.
    """
    return apply_overrides({}, overrides)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with each ``key=value`` set at its dotted key (a copy; ``data`` is left as it is).

    A value *replaces* what the key held, mappings included: ``loss.options={gamma: 2}`` leaves
    no other option behind (a recipe's ``base:``, by contrast, merges section by section).
    """
    result = dict(data)
    for path, value in _override_items(overrides):
        _set_path(result, path, value)
    return result


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, anything else in ``update`` replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(recipe: str | Path, recipes_dir: str | Path | None = None, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a recipe into a plain dict, resolving ``base:`` chains.

    ``recipe`` is a path to a YAML file, or the name of a file in ``recipes_dir`` (with or
    without ``.yaml``). Missing files raise ``FileNotFoundError`` listing the shipped recipes.
    """
    path = _find_recipe(recipe, recipes_dir)
    if path in _seen:
        chain = " -> ".join(str(p.name) for p in (*_seen, path))
        raise ConfigError(f"recipe base chain loops: {chain}")
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {path} is not valid YAML: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of keys to values, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"recipe {path}: base must be a recipe name or path, got {base!r}")
    local = path.parent / base
    base_data = load_recipe(local if local.is_file() else base, recipes_dir, (*_seen, path))
    return merge(base_data, data)


def _find_recipe(recipe: str | Path, recipes_dir: str | Path | None) -> Path:
    if not isinstance(recipe, (str, Path)):
        raise TypeError(f"recipe must be a path or a recipe name, got {type(recipe).__name__}")
    path = Path(recipe).expanduser()
    if path.is_file():
        return path.resolve()
    if recipes_dir is not None and not path.is_absolute():
        for candidate in (Path(recipes_dir) / path, Path(recipes_dir) / f"{path}.yaml"):
            if candidate.is_file():
                return candidate.resolve()
    shipped = sorted(p.stem for p in Path(recipes_dir).glob("*.yaml")) if recipes_dir is not None else []
    hint = f"; shipped recipes: {', '.join(shipped)}" if shipped else ""
    raise FileNotFoundError(f"recipe {str(recipe)!r} is neither a file nor a shipped recipe name{hint}")


def load_config(
    schema: type[T],
    recipe: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    recipes_dir: str | Path | None = None,
) -> T:
    """The ``schema`` dataclass filled from ``recipe`` (file, shipped name or dict) and ``overrides``."""
    if recipe is None:
        data: dict[str, Any] = {}
    elif isinstance(recipe, Mapping):
        data = dict(recipe)
    else:
        data = load_recipe(recipe, recipes_dir)
    return config_from_dict(schema, apply_overrides(data, overrides))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (YAML/JSON-safe, ``torch.load(weights_only=True)``-safe) of a config dataclass."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


def config_from_dict(schema: type[T], data: Mapping[str, Any], _prefix: str = "") -> T:
    """Build ``schema`` from ``data``, checking keys and types recursively (see the module docstring)."""
    if not (dataclasses.is_dataclass(schema) and isinstance(schema, type)):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    if not isinstance(data, Mapping):
        where = f"section {_prefix.rstrip('.')!r}" if _prefix else "the config"
        raise ConfigError(f"{where} must be a mapping of keys to values, got {data!r}")
    fields = {field.name: field for field in dataclasses.fields(schema) if field.init}
    derived = {field.name for field in dataclasses.fields(schema) if not field.init}
    data = {key: value for key, value in data.items() if key not in derived}  # recomputed, as config_to_dict wrote them
    hints = typing.get_type_hints(schema)
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown key {_prefix + str(key)!r}{hint}; allowed keys: {', '.join(fields)}")
    values = {key: _convert(hints[key], value, f"{_prefix}{key}") for key, value in data.items()}
    try:
        return schema(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        where = f" in section {_prefix.rstrip('.')!r}" if _prefix else ""
        raise ConfigError(f"{error}{where}") from None


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        arguments = typing.get_args(hint)
        if value is None and type(None) in arguments:
            return None
        sections = [argument for argument in arguments if dataclasses.is_dataclass(argument)]
        if isinstance(value, Mapping) and len(sections) == 1:
            return _convert(sections[0], value, key)
        for argument in arguments:
            if argument is type(None):
                continue
            try:
                return _convert(argument, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {_describe(hint)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise ConfigError(f"{key} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if value is None:
            raise ConfigError(f"{key} must be a section of keys ({_describe(hint)}), got null")
        return config_from_dict(hint, value, f"{key}.")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list ({_describe(hint)}), got {value!r}")
        arguments = typing.get_args(hint)
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            if len(arguments) != len(value):
                raise ConfigError(f"{key} must be a list of {len(arguments)} items ({_describe(hint)}), got {value!r}")
            items = [_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(arguments, value, strict=True))]
        else:
            item_hint = arguments[0] if arguments else Any
            items = [_convert(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping ({_describe(hint)}), got {value!r}")
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        return {_convert(key_hint, k, f"{key} key"): _convert(value_hint, v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"config schema type {hint!r} of {key} is not supported")


# --------------------------------------------------------------------------------------------
# Shipped recipes, as every domain's command line lists and shows them
# --------------------------------------------------------------------------------------------


def package_recipes(package: str) -> Path:
    """The ``recipes`` folder shipped inside ``package`` (e.g. ``"equipoise.vision"``)."""
    return Path(str(resources.files(package) / "recipes"))


def recipe_names(recipes_dir: str | Path) -> list[str]:
    """The names (file stems) of the ``*.yaml`` recipes in ``recipes_dir``, sorted."""
    return sorted(path.stem for path in Path(recipes_dir).glob("*.yaml"))


def describe_recipes(recipes_dir: str | Path) -> str:
    """One line per recipe in ``recipes_dir``: its name and its ``description`` key (``--list``)."""
    names = recipe_names(recipes_dir)
    width = max((len(name) for name in names), default=0) + 2
    lines = []
    for name in names:
        data = yaml.safe_load((Path(recipes_dir) / f"{name}.yaml").read_text(encoding="utf-8")) or {}
        lines.append(f"{name:{width}s}{data.get('description', '')}")
    return "\n".join(lines)


def dump_config(config: Any) -> str:
    """A config dataclass as the YAML a recipe would hold (``--show``)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def add_recipe_arguments(parser: Any, override_example: str) -> None:
    """The arguments every recipe-driven command takes: ``recipe``, ``key=value`` overrides, ``--list``, ``--show``."""
    parser.add_argument("recipe", nargs="?", help="a shipped recipe name (see --list) or a YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"config overrides, e.g. {override_example}")
    parser.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    parser.add_argument("--show", action="store_true", help="print the merged config and exit")


def recipe_config_from_args(parser: Any, args: Any, load: Any, recipes_dir: str | Path) -> Any | None:
    """Handle :func:`add_recipe_arguments`' arguments: print for ``--list``/``--show`` and return ``None``,
    else return ``load(args.recipe, args.overrides)``; a missing recipe or a bad config ends in
    ``parser.error`` (exit code 2, the message on stderr)."""
    if args.list:
        print(describe_recipes(recipes_dir))
        return None
    if args.recipe is None:
        parser.error("this command needs a recipe (see --list)")
    try:
        config = load(args.recipe, args.overrides)
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.show:
        print(dump_config(config), end="")
        return None
    return config


def add_checkpoint_arguments(parser: Any, help: str) -> None:
    """The checkpoint of an evaluate command, as ``CHECKPOINT`` or ``--checkpoint CHECKPOINT`` (either; the
    positional form is the one the nlp and detection commands take, so ``equipoise evaluate DOMAIN PATH``
    works for every domain). Read it back with :func:`checkpoint_from_args`."""
    parser.add_argument("checkpoint_path", nargs="?", metavar="CHECKPOINT", help=help)
    parser.add_argument("--checkpoint", default=None, metavar="PATH", help="the same, as an option")


def checkpoint_from_args(parser: Any, args: Any) -> str:
    """The checkpoint :func:`add_checkpoint_arguments` read; ``parser.error`` when neither form or two different
    paths were given."""
    given = [path for path in (args.checkpoint_path, args.checkpoint) if path is not None]
    if not given:
        parser.error("the checkpoint is missing: pass CHECKPOINT (or --checkpoint CHECKPOINT)")
    if len(given) == 2 and given[0] != given[1]:
        parser.error(f"two checkpoints given: {given[0]!r} and --checkpoint {given[1]!r}; pass one")
    return given[0]
