"""The ``equipoise`` command line: argument parsing and a call into the library, nothing more."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from equipoise import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equipoise",
        description="Learning from imbalanced data in PyTorch.",
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
        "simulation.strategy_options.proximal_mu=0.01 output=results/federated/fedprox\n"
        "  equipoise federated simulate my_setup.yaml ray_address=auto",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    return parser


def _federated_simulate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from equipoise.core.config import recipe_config_from_args
    from equipoise.federated.config import load_federated_config, recipes_dir, run_federated

    config = recipe_config_from_args(parser, args, load_federated_config, recipes_dir())
    if config is None:
        return 0
    try:
        run_federated(config, resume=not args.no_resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    print(f"finished: {config.output} (report.md, history.json/png, partition.json/png, checkpoint.pt)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from equipoise.demo import DemoConfig, run_demo

        config = DemoConfig(
            seeds=tuple(args.seeds), imbalance_ratio=args.imbalance_ratio, epochs=args.epochs, device=args.device
        )
        run_demo(config, output=args.output, progress=not args.no_progress)
    elif args.command == "federated":
        return _federated_simulate(parser, args)
    return 0
