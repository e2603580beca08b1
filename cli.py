"""The ``equipoise`` command line: argument parsing and a call into the library, nothing more.

    equipoise demo
    equipoise train {vision,nlp,detection,tabular} ...
    equipoise evaluate {vision,nlp,detection,tabular} ...
    equipoise federated simulate RECIPE [key=value ...]
    equipoise zoo {list,info,download,publish} ...
    equipoise recipes {list,show} [DOMAIN] [RECIPE] [key=value ...]
    equipoise report RUN_DIR [RUN_DIR ...]

``train`` and ``evaluate`` take the arguments of the matching ``tools/`` script, defined once in
``equipoise.<domain>.commands``. Importing a domain loads torch and more (seconds), so each of those
sub-commands adds its arguments only when it is the one parsed (:class:`_LazyParser`): ``equipoise
--help``, ``equipoise train --help`` and ``equipoise zoo list`` import no domain and no torch.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import importlib
import json
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from equipoise import __version__

__all__ = ["build_parser", "main", "parse_args_with_overrides"]

#: The domains of ``train`` and ``evaluate``; each has ``equipoise.<domain>.commands``.
DOMAINS = ("vision", "nlp", "detection", "tabular")

#: Recipe-driven domains: the module holding ``recipes_dir()`` and the config loader, the loader's
#: name, and the command that runs a recipe.
_RECIPES = {
    "vision": ("equipoise.vision.config", "load_train_config", "equipoise train vision"),
    "tabular": ("equipoise.tabular.config", "load_train_config", "equipoise train tabular"),
    "nlp": ("equipoise.nlp.train", "load_nlp_train_config", "equipoise train nlp"),
    "detection": ("equipoise.detection.train", "load_detection_train_config", "equipoise train detection"),
    "federated": ("equipoise.federated.config", "load_federated_config", "equipoise federated simulate"),
}

_TRAIN = {
    "vision": (
        "long-tailed image classification (timm backbones) from a recipe",
        "Train a long-tailed image classifier from a recipe (a shipped name, see --list, or a YAML file) with "
        "key=value overrides, validated before any work starts. Writes config.yaml, checkpoint.pt (running the "
        "same command again resumes; Ctrl-C leaves it resumable), log.jsonl and metrics.json under OUTPUT.\n"
        "  equipoise train vision ldam_drw\n"
        "  equipoise train vision mnist_lt loss.name=logit_adjusted --device cpu --output results/vision/mnist_la\n"
        "  equipoise train vision my_recipe.yaml epochs=30 --show",
    ),
    "nlp": (
        "fine-tune a transformer on CoNLL-2003 tagging or imbalanced IMDB from a recipe",
        "Fine-tune a transformer on imbalanced NLP data from a recipe (a shipped name, see --list, or a YAML "
        "file) with key=value overrides (YAML values: lr=3e-5, sampler=null), validated before any work starts. "
        "Running the same command again resumes from OUTPUT/checkpoints (one per epoch). The model lands in "
        "OUTPUT/model (equipoise evaluate nlp OUTPUT/model), the Trainer's log in OUTPUT/train_log.json.\n"
        "  equipoise train nlp conll_minilm_dice\n"
        "  equipoise train nlp imdb_minilm_ldam_drw epochs=3 drw_epoch=2 --output results/nlp/ldam3",
    ),
    "detection": (
        "RetinaNet with a focal / BCE / EQLv2 / Seesaw head from a recipe",
        "Train a RetinaNet whose classification head uses an imbalance-aware sigmoid loss, from a recipe (a "
        "shipped name, see --list, or a YAML file) with key=value overrides, validated before any work starts. "
        "Running the same command again resumes from OUTPUT/checkpoint.pt; the trained model lands in "
        "OUTPUT/model.pt (equipoise evaluate detection OUTPUT/model.pt).\n"
        "  equipoise train detection coco128_mobilenet_focal\n"
        "  equipoise train detection coco128_mobilenet_eqlv2 iterations=100 --output /tmp/eqlv2",
    ),
    "tabular": (
        "one method of MetaBalance's Table 2 on loan default or credit-card fraud, from a recipe",
        "Train one method on a tabular data set from a recipe (a shipped name, see --list, or a YAML file) with "
        "key=value overrides (method=..., the method's options as options.KEY=VALUE), validated before any work "
        "starts; the paper's settings for the method unless overridden. Writes config.yaml, checkpoint.pt (every "
        "epoch; running the same command again resumes, Ctrl-C leaves it resumable), model.pt and the test-split "
        "report (report.md, metrics.json, curves.png, reliability.png, confusion_matrix.png) under OUTPUT.\n"
        "  equipoise train tabular loan_metabalance\n"
        "  equipoise train tabular fraud_naive method=focal options.gamma=1.5 epochs=20",
    ),
}

_EVALUATE = {
    "vision": (
        "a vision checkpoint on its test split, with optional post-hoc calibration",
        "Evaluate a long-tailed vision checkpoint on its balanced test split: prints the metrics table and writes "
        "report.md, metrics.json and the plots to --output.\n"
        "  equipoise evaluate vision --checkpoint results/vision/ce/checkpoint.pt --calibrate logit_adjustment",
    ),
    "nlp": (
        "a saved NLP model (OUTPUT/model of a training run) on a split of its data set",
        "Evaluate a saved NLP model folder (OUTPUT/model, holding equipoise_nlp.json) on a split of its data set: "
        "entity-level scores for CoNLL-2003, per-class errors and calibration for IMDB. Writes the report to "
        "OUTPUT/eval-<split> unless --output says.\n"
        "  equipoise evaluate nlp results/nlp/conll_minilm_dice/model --split valid",
    ),
    "detection": (
        "a trained detector (OUTPUT/model.pt) with COCO box AP, by frequency group",
        "Evaluate a trained detector with COCO box AP overall, by object size and for the rare / common / "
        "frequent classes. Writes report.md, metrics.json, detections.json and plots beside the model "
        "(eval-<set>) unless --output says.\n"
        "  equipoise evaluate detection results/detection/coco128_mobilenet_focal/model.pt",
    ),
    "tabular": (
        "a tabular checkpoint on the test split of its data set",
        "Evaluate a tabular checkpoint on the test split rebuilt from its seed and validation share (the rows "
        "it was tested on at training): AUC-ROC, AUC-PR, F1 at the validation-chosen threshold and more.\n"
        "  equipoise evaluate tabular --checkpoint results/tabular/runs/loan-metabalance-s0/model.pt",
    ),
}

_REPORT_DESCRIPTION = (
    "Read the metrics of each RUN_DIR and print one markdown table: a row per run, a column per metric (the union "
    "over the runs, in the order the files list them; blank where a run lacks one; --metrics picks and orders "
    "them). With --output, also write it as OUTPUT/NAME.md and "
    "OUTPUT/NAME.json.\n"
    "\n"
    "Where a RUN_DIR's numbers are read from, the first that exists:\n"
    "  RUN_DIR/metrics.json          vision and tabular training runs, or an evaluation folder given as RUN_DIR\n"
    "  RUN_DIR/eval-*/metrics.json   nlp and detection evaluations (written to eval-<split> beside the model):\n"
    "                                one row per eval folder, named RUN_DIR/eval-<split>\n"
    "  RUN_DIR/history.json          federated simulations: the last evaluated round\n"
    "\n"
    'The numbers kept are the top-level ones of the file, or of its "metrics" section (detection) or its '
    '"scalars" section (tabular); for a vision evaluation, the scalars of each calibration variant (the '
    "uncalibrated ones as they are, the others as VARIANT/metric). Per-class tables are left out. A RUN_DIR with "
    "none of these files is an error (exit code 2).\n"
    "\n"
    "  equipoise report results/vision/ce results/vision/ldam_drw results/vision/logit_adjusted\n"
    "  equipoise report results/nlp/conll_minilm_ce results/nlp/conll_minilm_dice --output results/nlp --name nlp"
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps a description's prose lines to the terminal and keeps indented lines (examples, tables) as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        wrap = functools.partial(textwrap.fill, width=width, initial_indent=indent, subsequent_indent=indent)
        lines = text.splitlines()
        return "\n".join(indent + line if not line or line.startswith(" ") else wrap(line) for line in lines)


class _LazyParser(argparse.ArgumentParser):
    """A sub-command's parser that adds its arguments (``add_arguments(parser)``) when first parsed or printed."""

    def __init__(self, *args: Any, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_arguments = add_arguments

    def _complete(self) -> None:
        if self._add_arguments is not None:
            add_arguments, self._add_arguments = self._add_arguments, None
            add_arguments(self)

    def parse_known_args(self, args=None, namespace=None):  # what argparse calls on a chosen sub-command
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()


# --------------------------------------------------------------------------------------------
# train / evaluate / federated simulate
# --------------------------------------------------------------------------------------------


def _device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--output`` of a recipe-driven command: shorthands for two overrides."""
    parser.add_argument(
        "--device",
        type=_device,
        default=None,
        metavar="DEVICE",
        help="auto | cpu | cuda | cuda:N; the same as the override device=DEVICE (default: the recipe's)",
    )
    parser.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="run folder; the same as the override output=DIR (default: the recipe's)",
    )


def _config_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides ``--device``/``--output`` stand for, placed after the positional ones (the options win)."""
    overrides = [] if args.device is None else [f"device={args.device}"]
    if args.output is not None:
        overrides.append(f"output={json.dumps(args.output)}")  # quoted: a YAML string whatever the folder's name
    return overrides


def _add_domain_arguments(domain: str, action: str, parser: argparse.ArgumentParser) -> None:
    commands = importlib.import_module(f"equipoise.{domain}.commands")
    getattr(commands, f"add_{action}_arguments")(parser)
    if action == "train" and domain in _RECIPES:
        _add_config_options(parser)


def _run_domain(domain: str, action: str, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    commands = importlib.import_module(f"equipoise.{domain}.commands")
    if action == "train" and domain in _RECIPES:
        args.overrides = [*args.overrides, *_config_overrides(args)]
    return getattr(commands, f"run_{action}")(parser, args)


def _add_domain_commands(commands: Any, action: str, texts: dict[str, tuple[str, str]]) -> None:
    group = commands.add_parser(
        action,
        help=f"{action} a model: {', '.join(DOMAINS)}",
        description=f"{action.capitalize()} a model of one domain; `equipoise {action} DOMAIN --help` for its options.",
    )
    domains = group.add_subparsers(dest="domain", metavar="DOMAIN", required=True, parser_class=_LazyParser)
    for domain in DOMAINS:
        summary, description = texts[domain]
        parser = domains.add_parser(
            domain,
            help=summary,
            description=description,
            formatter_class=_Formatter,
            add_arguments=functools.partial(_add_domain_arguments, domain, action),
        )
        parser.set_defaults(run=functools.partial(_run_domain, domain, action, parser))


def _federated_simulate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from equipoise.core.config import recipe_config_from_args
    from equipoise.federated.config import load_federated_config, recipes_dir, run_federated

    args.overrides = [*args.overrides, *_config_overrides(args)]
    config = recipe_config_from_args(parser, args, load_federated_config, recipes_dir())
    if config is None:
        return 0
    try:
        run_federated(config, resume=not args.no_resume, progress=not args.no_progress)
    except FileNotFoundError as error:  # the data: say what is missing, no traceback
        parser.error(str(error))
    except KeyboardInterrupt:
        print(f"interrupted; the same command resumes from {config.output}/checkpoint.pt", file=sys.stderr)
        return 130
    print(f"finished: {config.output} (report.md, history.json/png, partition.json/png, checkpoint.pt)")
    return 0


def _add_federated(commands: Any) -> None:
    federated = commands.add_parser(
        "federated",
        help="federated learning on skewed clients (simulate)",
        description="Federated learning on skewed (non-IID) clients.",
    )
    federated_commands = federated.add_subparsers(dest="federated_command", metavar="COMMAND", required=True)
    simulate = federated_commands.add_parser(
        "simulate",
        help="run a federated simulation from a recipe (YAML) with key=value overrides",
        description="Partition a dataset over virtual clients, train them on a pool of Ray workers and aggregate "
        "on the server, round after round. Writes checkpoint.pt (running the same command again resumes), "
        "history.json/png, partition.json/png and report.md under OUTPUT. Examples:\n"
        "  equipoise federated simulate mnist_dirichlet\n"
        "  equipoise federated simulate mnist_dirichlet simulation.strategy=fedprox "
        "simulation.strategy_options.proximal_mu=0.01 --output results/federated/fedprox\n"
        "  equipoise federated simulate my_setup.yaml ray_address=auto",
        formatter_class=_Formatter,
    )
    # The arguments of equipoise.core.config.add_recipe_arguments, written out: importing equipoise.core
    # loads torch, a second on every `equipoise --help`.
    simulate.add_argument("recipe", nargs="?", help="a shipped recipe name (see --list) or a YAML file")
    simulate.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. simulation.rounds=5"
    )
    simulate.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    simulate.add_argument("--show", action="store_true", help="print the merged config and exit")
    simulate.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT/checkpoint.pt exists")
    simulate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_config_options(simulate)
    simulate.set_defaults(run=functools.partial(_federated_simulate, simulate))


# --------------------------------------------------------------------------------------------
# zoo
# --------------------------------------------------------------------------------------------


def _zoo(
    action: Callable[[argparse.Namespace], None],
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
) -> int:
    """Run a zoo command; its errors exit with code 1 and one line, as ``tools/download_zoo.py`` does."""
    try:
        action(args)
    except (ValueError, OSError) as error:  # a bad name or index, a refused file, no network: one clear line
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    return 0


def _zoo_list(args: argparse.Namespace) -> None:
    from equipoise.zoo import list_entries

    for entry in list_entries(args.index):
        print(entry.summary())


def _zoo_info(args: argparse.Namespace) -> None:
    from equipoise.zoo import entry_info

    print(entry_info(args.name, index=args.index, cache_dir=args.cache_dir))


def _zoo_download(args: argparse.Namespace) -> None:
    from equipoise.zoo import download

    offline = True if args.offline else None  # None: EQUIPOISE_OFFLINE / HF_HUB_OFFLINE decide
    progress = not args.no_progress
    print(download(args.name, cache_dir=args.cache_dir, index=args.index, progress=progress, offline=offline))


def _zoo_publish(args: argparse.Namespace) -> None:
    from equipoise.core.checkpoint import load_state_dict_file
    from equipoise.zoo import extract_weights, publish

    weights = Path(args.checkpoint)
    try:
        load_state_dict_file(weights)
    except ValueError:  # an equipoise checkpoint (or a bad file, which extract_weights names)
        weights = extract_weights(weights, args.weights_out or weights.parent / f"{args.name}.pth")
        print(f"wrote the network weights of {args.checkpoint} to {weights}")
    if args.metrics is None and (Path(args.checkpoint).parent / "metrics.json").is_file():
        args.metrics = str(Path(args.checkpoint).parent / "metrics.json")
    entry = publish(
        weights,
        name=args.name,
        domain=args.domain,
        architecture=args.architecture,
        dataset=args.dataset,
        method=args.method,
        url=args.url,
        license=args.license,
        metrics_path=args.metrics,
        recipe=args.recipe,
        index_path=args.index,
        notes=args.notes,
    )
    where = args.index or "the default index ($EQUIPOISE_ZOO_INDEX's first file, else beside the checkpoint)"
    print(f"published {entry.summary()}\n  sha256 {entry.sha256}\n  in {where}; host {weights} at {entry.source}")


def _add_zoo(commands: Any) -> None:
    from equipoise.zoo import DOMAINS as ZOO_DOMAINS  # equipoise.zoo imports neither torch nor a domain

    zoo = commands.add_parser(
        "zoo",
        help="the model zoo: list, describe, download (verified) and publish weights",
        description="Published weights declared with their proof (source, full sha256, size). Entries come from\n"
        "the index shipped with equipoise, then the files in $EQUIPOISE_ZOO_INDEX, then --index (a later\n"
        "entry of the same name overrides an earlier one). Downloads go to $EQUIPOISE_CACHE/zoo (default\n"
        "~/.cache/equipoise/zoo), resume a cut transfer and are verified before use. Errors exit with code 1.\n\n"
        "Examples:\n"
        "  equipoise zoo list\n"
        "  equipoise zoo info resnet50.tv_in1k\n"
        "  equipoise zoo download mobilenet_v2.tv_in1k\n"
        "  equipoise zoo download my_model --index team_zoo.json --cache-dir /data/zoo\n"
        "  equipoise zoo publish runs/r50/weights.pt --name my_model --domain detection ... --index team_zoo.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    zoo_commands = zoo.add_subparsers(dest="zoo_command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--index",
        action="append",
        metavar="PATH",
        help="an extra index file (repeatable), read after the others (default: none)",
    )
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache-dir", metavar="DIR", help="the cache folder (default: $EQUIPOISE_CACHE/zoo)")
    listing = zoo_commands.add_parser(
        "list",
        parents=[common],
        help="one line per entry: name, architecture, dataset, method, metrics, size",
        description="One line per zoo entry: name, architecture, dataset, method, metrics and size.",
        formatter_class=_Formatter,
    )
    info = zoo_commands.add_parser(
        "info",
        parents=[common, cache],
        help="every field of an entry, its index file and whether it is cached",
        description="Every field of a zoo entry, the index file it comes from and whether it is cached.",
        formatter_class=_Formatter,
    )
    info.add_argument("name", metavar="NAME", help="an entry name (see `equipoise zoo list`)")
    fetch = zoo_commands.add_parser(
        "download",
        parents=[common, cache],
        help="download and verify an entry's file, then print its path",
        description="Download an entry's file (resuming a cut transfer), verify its size and full sha256, and "
        "print the path of the verified file; a cached file is verified and used without the network.",
        formatter_class=_Formatter,
    )
    fetch.add_argument("name", metavar="NAME", help="an entry name (see `equipoise zoo list`)")
    fetch.add_argument("--offline", action="store_true", help="use the cache only (also EQUIPOISE_OFFLINE=1)")
    fetch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    publish = zoo_commands.add_parser(
        "publish",
        help="declare trained weights (a run's checkpoint or a state_dict file) as an entry of your own index",
        description="Declare trained weights as a zoo entry. CHECKPOINT is a run's checkpoint (vision "
        "checkpoint.pt, tabular or detection model.pt, a federated checkpoint.pt), whose network weights are "
        "written first as a plain state_dict file (--weights-out), or such a state_dict file itself (what "
        "torch.load(weights_only=True) reads as a dict of tensors). Its sha256 and size are measured and the entry "
        "is added to --index (replacing one of the same name), with the metrics of the metrics.json beside the "
        "checkpoint unless --metrics says. Host the weights file at --url and share the index: anyone pointing "
        "EQUIPOISE_ZOO_INDEX or --index at it downloads the file, verified.\n"
        "  equipoise zoo publish runs/ce/checkpoint.pt --name team.resnet32.ce --domain vision \\\n"
        "      --architecture resnet32_cifar --dataset cifar10_lt --method cross-entropy --license MIT \\\n"
        "      --url https://example.org/team.resnet32.ce.pth --recipe ce --index team_zoo.json",
        formatter_class=_Formatter,
    )
    publish.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="a run's checkpoint, or a weights file (a state_dict)"
    )
    publish.add_argument(
        "--weights-out",
        default=None,
        metavar="PATH",
        help="where a checkpoint's weights are written (default: NAME.pth beside the checkpoint)",
    )
    publish.add_argument("--name", required=True, help="entry name: lower-case letters, digits, '.', '_', '-'")
    publish.add_argument("--domain", required=True, choices=ZOO_DOMAINS, help=" | ".join(ZOO_DOMAINS))
    publish.add_argument("--architecture", required=True, help="what was trained, e.g. resnet32_cifar")
    publish.add_argument("--dataset", required=True, help="on what, e.g. cifar10_lt")
    publish.add_argument("--method", required=True, help="with which imbalance method, e.g. ldam-drw")
    publish.add_argument("--url", required=True, help="where the file is hosted: http(s)://... or hf://owner/repo/path")
    publish.add_argument("--license", required=True, help="SPDX identifier of the weights' license, e.g. MIT")
    publish.add_argument(
        "--metrics",
        metavar="JSON",
        default=None,
        help="a run's metrics.json: its top-level numbers (default: the metrics.json beside CHECKPOINT, if any)",
    )
    publish.add_argument("--recipe", default=None, help="the recipe that produced the weights (default: none)")
    publish.add_argument(
        "--index",
        metavar="PATH",
        default=None,
        help="the index file to create or update (default: the first file of $EQUIPOISE_ZOO_INDEX, else "
        "zoo_index.json beside the weights)",
    )
    publish.add_argument("--notes", default="", help="provenance, anything a reader should know (default: none)")
    for parser, action in ((listing, _zoo_list), (info, _zoo_info), (fetch, _zoo_download), (publish, _zoo_publish)):
        parser.set_defaults(run=functools.partial(_zoo, action, parser))


# --------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------


def _recipes_list(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from equipoise.core.config import describe_recipes

    for domain in [args.domain] if args.domain else list(_RECIPES):
        module, _, command = _RECIPES[domain]
        print(f"{domain}: {command} RECIPE [key=value ...]")
        for line in describe_recipes(importlib.import_module(module).recipes_dir()).splitlines():
            print(f"  {line}")
        print()
    return 0


def _recipes_show(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from equipoise.core.config import ConfigError, dump_config

    module, loader, _ = _RECIPES[args.domain]
    load = getattr(importlib.import_module(module), loader)
    try:
        config = load(args.recipe, args.overrides)
    except (ConfigError, FileNotFoundError) as error:
        parser.error(str(error))
    print(dump_config(config), end="")
    return 0


def _add_recipes(commands: Any) -> None:
    recipes = commands.add_parser(
        "recipes",
        help="list the shipped recipes of every domain, or show a merged, validated config",
        description="The YAML recipes shipped with equipoise (vision, nlp, detection, federated).",
    )
    recipe_commands = recipes.add_subparsers(dest="recipes_command", metavar="COMMAND", required=True)
    listing = recipe_commands.add_parser(
        "list",
        help="every domain's recipes with their descriptions",
        description="List the shipped recipes of every domain (or of DOMAIN), one line each with its description.",
        formatter_class=_Formatter,
    )
    listing.add_argument(
        "domain", nargs="?", choices=list(_RECIPES), metavar="DOMAIN", help=f"{' | '.join(_RECIPES)} (default: all)"
    )
    show = recipe_commands.add_parser(
        "show",
        help="print the merged, validated config of a recipe and overrides",
        description="Print a recipe merged with key=value overrides (values are YAML) and validated against the "
        "domain's schema, as YAML: what `equipoise train DOMAIN RECIPE ... --show` prints.\n"
        "  equipoise recipes show nlp conll_minilm_dice lr=2e-4\n"
        "  equipoise recipes show vision my_recipe.yaml optimizer.lr=0.05",
        formatter_class=_Formatter,
    )
    show.add_argument("domain", choices=list(_RECIPES), metavar="DOMAIN", help=" | ".join(_RECIPES))
    show.add_argument("recipe", metavar="RECIPE", help="a shipped recipe name (see `recipes list`) or a YAML file")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=2e-4")
    listing.set_defaults(run=functools.partial(_recipes_list, listing))
    show.set_defaults(run=functools.partial(_recipes_show, show))


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _numbers(data: Any) -> dict[str, float]:
    """The metrics of a ``metrics.json`` as the report reads them (see ``_REPORT_DESCRIPTION``)."""
    if not isinstance(data, dict):
        return {}
    if isinstance(data.get("variants"), dict):  # a vision evaluation: one report per calibration variant
        numbers: dict[str, float] = {}
        for position, (variant, report) in enumerate(data["variants"].items()):
            prefix = "" if position == 0 else f"{variant}/"
            numbers.update({prefix + key: value for key, value in _numbers(report).items()})
        return numbers
    for section in ("metrics", "scalars"):
        if isinstance(data.get(section), dict):
            data = data[section]
            break
    return {key: value for key, value in data.items() if isinstance(value, (int, float)) and type(value) is not bool}


def _read_json(parser: argparse.ArgumentParser, path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        parser.error(f"cannot read {path}: {error}")


def _run_rows(parser: argparse.ArgumentParser, run: str) -> list[dict[str, Any]]:
    folder = Path(run)
    if not folder.is_dir():
        parser.error(f"RUN_DIR {run!r} is not a folder")
    if (folder / "metrics.json").is_file():
        sources = [(run, folder / "metrics.json")]
    else:
        sources = [(str(folder / path.parent.name), path) for path in sorted(folder.glob("eval-*/metrics.json"))]
    if sources:
        return [{"run": label, **_numbers(_read_json(parser, path))} for label, path in sources]
    if (folder / "history.json").is_file():  # a federated simulation
        history = _read_json(parser, folder / "history.json")
        records = history.get("history", []) if isinstance(history, dict) else []
        evaluated = [record for record in records if isinstance(record, dict) and "accuracy" in record]
        if evaluated:
            return [{"run": run, **_numbers(evaluated[-1])}]
    parser.error(f"RUN_DIR {run!r} holds no metrics.json (nor eval-*/metrics.json, nor an evaluated history.json)")


def _report(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    rows = [row for run in args.runs for row in _run_rows(parser, run)]
    from equipoise.core.reporting import markdown_table, write_table

    metrics = list(dict.fromkeys(key for row in rows for key in row if key != "run"))  # first-seen order
    if args.metrics:
        patterns = [pattern.strip() for pattern in args.metrics.split(",") if pattern.strip()]
        chosen = [[key for key in metrics if fnmatch.fnmatchcase(key, pattern)] for pattern in patterns]
        unmatched = [pattern for pattern, keys in zip(patterns, chosen) if not keys]
        if unmatched:
            parser.error(f"--metrics {', '.join(unmatched)} matches none of the runs' metrics: {', '.join(metrics)}")
        metrics = list(dict.fromkeys(key for keys in chosen for key in keys))
    columns = ["run", *metrics]
    print(markdown_table(rows, columns), end="")
    if args.output is not None:
        json_path, markdown_path = write_table(
            rows, args.output, args.name, "Run comparison", meta={"runs": list(args.runs)}, columns=columns
        )
        print(f"wrote {markdown_path} and {json_path}")
    return 0


def _add_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="one comparison table of the metrics of several runs",
        description=_REPORT_DESCRIPTION,
        formatter_class=_Formatter,
    )
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a run or evaluation folder (see above)")
    report.add_argument(
        "--output", default=None, metavar="DIR", help="also write NAME.md and NAME.json there (default: print only)"
    )
    report.add_argument("--name", default="report", help="file name of the written table (default: report)")
    report.add_argument(
        "--metrics",
        default=None,
        metavar="A,B,...",
        help="only these columns, in this order; shell-style patterns (e.g. 'accuracy,*/accuracy,ece') "
        "(default: every metric)",
    )
    report.set_defaults(run=functools.partial(_report, report))


# --------------------------------------------------------------------------------------------
# demo, the parser, main
# --------------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from equipoise.demo import DemoConfig, run_demo

    config = DemoConfig(
        seeds=tuple(args.seeds), imbalance_ratio=args.imbalance_ratio, epochs=args.epochs, device=args.device
    )
    run_demo(config, output=args.output, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equipoise",
        description="Learning from imbalanced data in PyTorch. `equipoise COMMAND --help` for a command's options.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"equipoise {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="six losses on long-tailed digits (scikit-learn's bundled data), about a minute on a CPU",
        description="Train one small network with CE, focal, class-balanced, LDAM-DRW, balanced softmax and "
        "logit-adjusted losses on long-tailed 8x8 digits, evaluate on a balanced test split, print one "
        "table and write it (markdown + JSON) with a per-class accuracy plot.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--output", default="results/demo", help="directory for results.md/json and the plot")
    demo.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="random seeds, one run per seed")
    demo.add_argument("--imbalance-ratio", type=float, default=50.0, help="largest / smallest training class")
    demo.add_argument("--epochs", type=int, default=60, help="training epochs per run")
    demo.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(run=_demo)

    _add_domain_commands(commands, "train", _TRAIN)
    _add_domain_commands(commands, "evaluate", _EVALUATE)
    _add_federated(commands)
    _add_zoo(commands)
    _add_recipes(commands)
    _add_report(commands)
    return parser


_OVERRIDE_TOKEN = re.compile(r"^[A-Za-z_][\w.]*=")


def parse_args_with_overrides(parser: Any, argv: Sequence[str] | None = None) -> Any:
    """``parser.parse_args(argv)``, except that ``key=value`` overrides may also follow an option
    (``RECIPE --no-progress epochs=2``): argparse collects a ``nargs="*"`` positional in one run of
    tokens only and would reject the later ones. Those join ``args.overrides`` in command-line order;
    any other unknown token is still an error (exit 2)."""
    args, extra = parser.parse_known_args(argv)
    overrides = [token for token in extra if _OVERRIDE_TOKEN.match(token)]
    unknown = [token for token in extra if not _OVERRIDE_TOKEN.match(token)]
    if unknown or (overrides and not isinstance(getattr(args, "overrides", None), list)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_with_overrides(parser, argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:  # train commands say how to resume; anything else just stops
        print("interrupted", file=sys.stderr)
        return 130
