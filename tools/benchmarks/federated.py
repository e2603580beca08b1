"""Federated benchmarks: equipoise's Ray engine against Flower's, quality under label skew, scale.

    python tools/benchmarks/federated.py flower     # same MNIST federation on both engines (needs `make flower-env`)
    python tools/benchmarks/federated.py quality    # MNIST and CIFAR-10, Dirichlet 0.1 / 0.5, five methods
    python tools/benchmarks/federated.py scale      # 1,000 clients: time per round and peak memory

flower: MNIST (EQUIPOISE_DATA), NIID-Bench's simple CNN, 100 clients with Dirichlet(0.1) label
skew (one partition, computed here and given to both), 10 clients per round, 1 local epoch of SGD
(lr 0.01, momentum 0.9, batch 32), 20 rounds of FedAvg, the server evaluating on the 10,000 test
images after every round, 2 CPUs with one per client. Each engine runs as a child process
(equipoise's in this venv, Flower 1.42's ``run_simulation`` in ``.venv-flower`` through
``tools/benchmarks/flower_mnist.py``); wall time is start to exit, memory the peak over the child's
whole process tree (Ray's processes included) of the summed PSS and RSS
(:func:`equipoise.core.benchmark.run_measured`). Both get the same normalised float32 arrays.

quality: 10 clients, all of them every round, Dirichlet alpha 0.1 and 0.5; FedAvg, FedProx
(mu 0.01), IDA, FedAvg with balanced-softmax clients, FedAvg with FedETF's fixed simplex-ETF head.
A CPU budget (``--rounds``, ``--local-epochs``) far below NIID-Bench's 50 rounds x 10 epochs
(the ``niid_bench_cifar10`` recipe ships that setting for a GPU). Finished runs are appended to
``OUTPUT/quality_runs.jsonl`` and skipped when the benchmark is run again (``--fresh``: start over).

scale: MNIST over 1,000 clients (Dirichlet 0.5), 100 and then all 1,000 per round, against 100
clients with 100 per round: seconds per round and peak memory of the process tree.

Tables and JSON go to ``OUTPUT`` (default ``results/federated``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from equipoise.core.benchmark import run_measured
from equipoise.core.reporting import write_table

ROOT = Path(__file__).resolve().parents[2]
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
FLOWER_SPEC = dict(num_clients=100, clients_per_round=10, rounds=20, local_epochs=1, batch_size=32, lr=0.01)
FLOWER_SPEC.update(
    momentum=0.9, seed=0, num_cpus_per_client=1, num_cpus=2, in_channels=1, num_classes=10, image_size=28
)
METHODS = {
    "FedAvg": {"strategy": "fedavg"},
    "FedProx (mu 0.01)": {"strategy": "fedprox", "strategy_options": {"proximal_mu": 0.01}},
    "IDA": {"strategy": "ida"},
    "FedAvg + balanced softmax": {"strategy": "fedavg", "loss": "balanced_softmax"},
    "FedAvg + ETF head": {"strategy": "fedavg", "classifier": "etf"},
}


def _spec_config(spec: dict[str, Any]):
    from equipoise.federated.client import ClientConfig
    from equipoise.federated.simulation import SimulationConfig

    client = ClientConfig(
        local_epochs=spec["local_epochs"], batch_size=spec["batch_size"], lr=spec["lr"], momentum=spec["momentum"]
    )
    keys = ("rounds", "clients_per_round", "seed", "num_cpus_per_client")
    return SimulationConfig(client=client, **{key: spec[key] for key in keys})


def write_npz(path: Path, data, rows: list[np.ndarray]) -> None:
    """The arrays both engines read: normalised float32 images, labels and the client rows."""
    offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    np.savez(
        path,
        train_x=data.features(split="train").numpy(),
        train_y=data.train_y.astype(np.int64),
        test_x=data.features(split="test").numpy(),
        test_y=data.test_y.astype(np.int64),
        rows_flat=np.concatenate(rows).astype(np.int64),
        rows_offsets=offsets,
    )


def engine(args: argparse.Namespace) -> None:
    """Child process: equipoise's engine on an npz + spec, the result as JSON."""
    from equipoise.federated.data import FederatedData
    from equipoise.federated.models import simple_cnn
    from equipoise.federated.simulation import simulate

    spec = json.loads(Path(args.spec).read_text())

    def load() -> FederatedData:  # handed over, not kept: the engine then holds the images only in Ray's store
        with np.load(args.data) as arrays:
            return FederatedData(*(arrays[key] for key in ("train_x", "train_y", "test_x", "test_y")), num_classes=10)

    with np.load(args.data) as arrays:
        offsets, flat = arrays["rows_offsets"], arrays["rows_flat"]
    rows = [flat[offsets[k] : offsets[k + 1]] for k in range(len(offsets) - 1)]
    model_fn = functools.partial(simple_cnn, spec["in_channels"], spec["num_classes"], spec["image_size"])
    options = {"num_cpus": spec["num_cpus"], "ray_temp_dir": args.ray_temp_dir, "progress": False}
    result = simulate(model_fn, load(), rows, _spec_config(spec), **options)
    history = [{key: r.get(key) for key in ("round", "accuracy", "seconds")} for r in result.history]
    payload = {"engine": "equipoise", "history": history, "accuracy": result.final["accuracy"]}
    Path(args.output).write_text(json.dumps(payload, indent=1))


def _mnist(root: str | None):
    from equipoise.federated.data import load_federated_data

    return load_federated_data("mnist", root)


def _measure(name: str, command: list[str], output: Path) -> dict[str, Any]:
    print(f"running {name}: {' '.join(command)}", flush=True)
    measured = run_measured(command)
    if measured["returncode"] != 0:
        raise SystemExit(f"{name} failed with exit code {measured['returncode']}")
    return {"engine": name, **measured, **json.loads(output.read_text())}


def flower(args: argparse.Namespace) -> None:
    from equipoise.federated.partition import partition

    if not FLOWER_PYTHON.is_file():
        raise SystemExit(f"{FLOWER_PYTHON} not found: run `make flower-env` first (Flower lives only there)")
    flwr_version = subprocess.run(
        [str(FLOWER_PYTHON), "-c", "import flwr, ray; print(flwr.__version__, ray.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    data = _mnist(args.root)
    rows = partition(data.train_y, "dirichlet", FLOWER_SPEC["num_clients"], seed=FLOWER_SPEC["seed"], alpha=0.1)
    results: dict[str, list[dict[str, Any]]] = {"equipoise": [], "flower": []}
    with tempfile.TemporaryDirectory(prefix="fed-") as work:
        work = Path(work)
        write_npz(work / "data.npz", data, rows)
        for repeat in range(args.repeats):  # the engines alternate, so a drift of the machine hits both
            (work / "spec.json").write_text(json.dumps({**FLOWER_SPEC, "seed": repeat}))
            common = ["--data", str(work / "data.npz"), "--spec", str(work / "spec.json")]
            for name, command in (
                ("equipoise", [sys.executable, __file__, "engine", *common]),
                ("flower", [str(FLOWER_PYTHON), str(ROOT / "tools/benchmarks/flower_mnist.py"), *common]),
            ):
                output = work / f"{name}.json"
                command += ["--output", str(output), "--ray-temp-dir", str(work / f"{name}{repeat}")]
                results[name].append(_measure(name, command, output))
    summary = {name: _summarise(runs) for name, runs in results.items()}
    flower_name = "flower {} (ray {})".format(*flwr_version)
    rows_out = [{"engine": "equipoise" if name == "equipoise" else flower_name, **summary[name]} for name in summary]
    ours, theirs = summary["equipoise"], summary["flower"]
    meta = {
        "workload": "MNIST, simple CNN, 100 clients Dirichlet(0.1), 10 per round, 1 local epoch, 20 rounds, FedAvg",
        "repeats": f"{args.repeats} runs per engine, alternating (seed r of the client sampling for equipoise; "
        "Flower samples its nodes with ids it draws itself)",
        "speedup (flower wall / equipoise wall)": theirs["wall_s"] / ours["wall_s"],
        "memory ratio (equipoise PSS / flower PSS)": ours["peak_pss_mb"] / theirs["peak_pss_mb"],
        "accuracy difference (equipoise - flower)": ours["final_accuracy"] - theirs["final_accuracy"],
    }
    _plot_curves([runs[0] for runs in results.values()], Path(args.output) / "flower.png")
    _report(rows_out, args.output, "flower", "equipoise vs Flower: the same federation, side by side", meta)


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the repeats; the accuracy with its standard deviation across them."""
    accuracy = np.array([run["accuracy"] for run in runs])
    return {
        "wall_s": float(np.mean([run["wall_s"] for run in runs])),
        "peak_pss_mb": float(np.mean([run["peak_pss_mb"] for run in runs])),
        "peak_rss_mb": float(np.mean([run["peak_rss_mb"] for run in runs])),
        "processes": max(run["peak_processes"] for run in runs),
        "final_accuracy": float(accuracy.mean()),
        "accuracy_sd": float(accuracy.std(ddof=1)) if len(runs) > 1 else float("nan"),
        "runs": len(runs),
    }


def _plot_curves(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for result in results:
        history = result["history"]
        label = f"{result['engine']} ({result['wall_s']:.0f} s, {result['peak_pss_mb']:.0f} MB)"
        axis.plot([h["round"] for h in history], [h["accuracy"] for h in history], marker=".", label=label)
    axis.set(xlabel="round", ylabel="test accuracy", title="MNIST, 100 clients, Dirichlet(0.1)")
    axis.grid(alpha=0.3)
    axis.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def quality(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import ray

    from equipoise.federated.client import ClientConfig
    from equipoise.federated.data import load_federated_data
    from equipoise.federated.models import simple_cnn
    from equipoise.federated.partition import partition
    from equipoise.federated.simulation import SimulationConfig, simulate

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    runs_path = output / "quality_runs.jsonl"
    if args.fresh:
        runs_path.unlink(missing_ok=True)
    done = {}
    if runs_path.is_file():
        for line in runs_path.read_text().splitlines():
            record = json.loads(line)
            done[(record["dataset"], record["alpha"], record["method"])] = record
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ray-"))
    try:
        for dataset in args.datasets:
            data = load_federated_data(dataset, args.root)
            model_fn = functools.partial(simple_cnn, data.input_shape[0], data.num_classes, data.input_shape[-1])
            for alpha in args.alphas:
                rows = partition(data.train_y, "dirichlet", 10, seed=0, alpha=alpha)
                for method in args.methods:
                    if (dataset, alpha, method) in done:
                        continue
                    options = dict(METHODS[method])
                    client = ClientConfig(
                        local_epochs=args.local_epochs, batch_size=64, lr=0.01, momentum=0.9, weight_decay=1e-5
                    )
                    client = replace(client, loss=options.pop("loss", "cross_entropy"))
                    config = SimulationConfig(rounds=args.rounds, clients_per_round=10, client=client, **options)
                    print(f"{dataset} alpha={alpha} {method}", flush=True)
                    result = simulate(model_fn, data, rows, config, progress=not args.no_progress)
                    record = {"dataset": dataset, "alpha": alpha, "method": method}
                    record.update({key: result.final[key] for key in ("accuracy", "balanced_accuracy")})
                    record["worst_class_accuracy"] = result.final["worst_class_accuracy"]
                    record["seconds"] = sum(r["seconds"] for r in result.history)
                    done[(dataset, alpha, method)] = record
                    with runs_path.open("a") as file:
                        file.write(json.dumps(record) + "\n")
    finally:
        ray.shutdown()
    rows_out = [done[key] for key in sorted(done, key=lambda k: (k[0], k[1], list(METHODS).index(k[2])))]
    meta = {
        "budget": f"{args.rounds} rounds x {args.local_epochs} local epochs, 10 clients all every round, "
        "SGD lr 0.01 momentum 0.9 weight decay 1e-5 batch 64 (NIID-Bench's optimiser; its 50 x 10 is the GPU recipe)",
        "reference": "NIID-Bench / Flower niid_bench, CIFAR-10 Dirichlet 0.5, 50 rounds x 10 epochs: "
        "FedAvg 62.47, FedProx 65.63",
    }
    _report(rows_out, args.output, "quality", "Quality under label skew (test accuracy of the global model)", meta)


def scale(args: argparse.Namespace) -> None:
    from equipoise.federated.partition import partition

    data = _mnist(args.root)
    results = []
    with tempfile.TemporaryDirectory(prefix="fed-scale-") as work:
        work = Path(work)
        for num_clients, per_round, rounds in ((100, 100, args.rounds), (1000, 100, args.rounds), (1000, 1000, 2)):
            rows = partition(data.train_y, "dirichlet", num_clients, seed=0, alpha=0.5)
            write_npz(work / "data.npz", data, rows)
            spec = {**FLOWER_SPEC, "num_clients": num_clients, "clients_per_round": per_round, "rounds": rounds}
            (work / "spec.json").write_text(json.dumps(spec))
            output = work / "out.json"
            command = [
                sys.executable,
                __file__,
                "engine",
                "--data",
                str(work / "data.npz"),
                "--spec",
                str(work / "spec.json"),
            ]
            measured = _measure("equipoise", [*command, "--output", str(output)], output)
            seconds = [h["seconds"] for h in measured["history"]]
            results.append(
                {
                    "clients": num_clients,
                    "clients_per_round": per_round,
                    "rounds": rounds,
                    "s_per_round (after the first)": float(np.mean(seconds[1:] or seconds)),
                    "first_round_s": seconds[0],
                    "wall_s": measured["wall_s"],
                    "peak_pss_mb": measured["peak_pss_mb"],
                    "peak_rss_mb": measured["peak_rss_mb"],
                    "final_accuracy": measured["accuracy"],
                }
            )
    meta = {
        "workload": "MNIST, simple CNN, Dirichlet(0.5), 1 local epoch, batch 32, FedAvg, 2 CPUs (2 workers)",
        "accuracy": "not the point here: over 1,000 clients each holds about 60 images, two SGD steps a round, "
        "and the average of 100 such updates moves the model about as far as two steps; a few rounds stay near chance",
    }
    _report(results, args.output, "scale", "Scale: many clients on one machine", meta)


def _report(rows: list[dict[str, Any]], output: str, name: str, title: str, meta: dict[str, Any]) -> None:
    json_path, markdown_path = write_table(rows, output, name, title, meta=meta)
    print(markdown_path.read_text())
    print(f"wrote {json_path} and {markdown_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/federated", help="where the tables go")
    parser.add_argument("--root", default=None, help="data folder (default: $EQUIPOISE_DATA)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="BENCHMARK")
    flower_parser = commands.add_parser("flower", help="equipoise vs Flower on the same MNIST federation")
    flower_parser.add_argument("--repeats", type=int, default=3, help="runs per engine (accuracy varies with sampling)")
    quality_parser = commands.add_parser("quality", help="five methods under Dirichlet label skew")
    quality_parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=["mnist", "cifar10"])
    quality_parser.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.5])
    quality_parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    quality_parser.add_argument("--rounds", type=int, default=10, help="rounds per run")
    quality_parser.add_argument("--local-epochs", type=int, default=1, help="local epochs per round")
    quality_parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs for Ray")
    quality_parser.add_argument("--fresh", action="store_true", help="ignore finished runs and start over")
    quality_parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    scale_parser = commands.add_parser("scale", help="1,000 clients: time per round and memory")
    scale_parser.add_argument("--rounds", type=int, default=5, help="rounds with 100 clients per round")
    child = commands.add_parser("engine", help="(internal) equipoise's engine on an npz + spec, for flower/scale")
    child.add_argument("--data", required=True)
    child.add_argument("--spec", required=True)
    child.add_argument("--output", required=True)
    child.add_argument("--ray-temp-dir", default=None)
    args = parser.parse_args(argv)
    {"flower": flower, "quality": quality, "scale": scale, "engine": engine}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
