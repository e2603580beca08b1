"""Flower's half of the federated MNIST benchmark: FedAvg on Flower's own Simulation Engine (Ray backend).

Runs only in the separate ``.venv-flower`` environment (``make flower-env``): ``flwr[simulation]`` pins its
own ray, which must not enter the project's ``.venv``. equipoise is not installed there, so the network is
loaded from ``federated/models.py`` by file path: the very same NIID-Bench simple CNN that equipoise trains.

The workload (FedAvg, McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): each round the server samples exactly ``clients_per_round`` of ``num_clients``
clients; each runs ``local_epochs`` epochs of SGD(lr, momentum) with cross-entropy on mini-batches of
``batch_size`` reshuffled every epoch; the server averages the weights by example count and measures the
global model's accuracy on the test set (centralised evaluation, no federated evaluation).

Flower API: ``flwr.simulation.run_simulation`` with a message-based ``ServerApp`` (``@app.main()`` driving
``flwr.serverapp.strategy.FedAvg.start``) and ``ClientApp`` (``@app.train()``). Flower 1.42 marks
``run_simulation`` deprecated in favour of ``flwr run``, but ``flwr run`` submits to a detached local
SuperLink daemon that outlives the command, which a benchmark timing one process tree cannot use;
``run_simulation`` drives the same Simulation Engine in-process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage reports from a benchmark; read at flwr import

import flwr  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

MODELS_PATH = Path(__file__).resolve().parents[2] / "federated" / "models.py"
SPEC_KEYS = ("num_clients", "clients_per_round", "rounds", "local_epochs", "batch_size", "lr", "momentum", "seed")
SPEC_KEYS += ("num_cpus_per_client", "num_cpus", "in_channels", "num_classes", "image_size")

_WORKER_CACHE: dict[str, tuple] = {}  # data path -> (train_x, train_y, rows_flat, rows_offsets, model), per process


def _simple_cnn(in_channels: int, num_classes: int, image_size: int) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("equipoise_federated_models", MODELS_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.simple_cnn(in_channels, num_classes, image_size)


def _worker_state(config: ConfigRecord) -> tuple:
    """Load the npz and build the network once per Ray worker process, not once per client call."""
    state = _WORKER_CACHE.get(config["data"])
    if state is None:
        torch.set_num_threads(int(config["threads"]))
        with np.load(config["data"]) as data:
            arrays = [torch.from_numpy(data[key]) for key in ("train_x", "train_y", "rows_flat", "rows_offsets")]
        model = _simple_cnn(int(config["in_channels"]), int(config["num_classes"]), int(config["image_size"]))
        state = _WORKER_CACHE[config["data"]] = (*arrays, model)
    return state


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Local SGD on this client's rows, starting from the global weights; replies weights and example count."""
    config = msg.content["config"]
    train_x, train_y, rows_flat, rows_offsets, model = _worker_state(config)
    client = int(context.node_config["partition-id"])
    rows = rows_flat[rows_offsets[client] : rows_offsets[client + 1]]
    client_x, client_y = train_x[rows], train_y[rows]
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=float(config["lr"]), momentum=float(config["momentum"]))
    seed = np.random.SeedSequence([int(config["seed"]), int(config["server-round"]), client]).generate_state(1)[0]
    generator = torch.Generator().manual_seed(int(seed))
    batch_size = int(config["batch_size"])
    for _ in range(int(config["local_epochs"])):
        for batch in torch.randperm(len(rows), generator=generator).split(batch_size):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(client_x[batch]), client_y[batch]).backward()
            optimizer.step()
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(rows)})}
    )
    return Message(content=content, reply_to=msg)


def _server_app(data_path: str, spec: dict, history: list[dict]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        random.seed(spec["seed"])  # FedAvg samples clients with the `random` module
        torch.manual_seed(spec["seed"])
        model = _simple_cnn(spec["in_channels"], spec["num_classes"], spec["image_size"])
        initial_arrays = ArrayRecord(model.state_dict())
        with np.load(data_path) as data:
            test_x, test_y = torch.from_numpy(data["test_x"]), torch.from_numpy(data["test_y"])

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if server_round == 0:  # Flower also evaluates the initial weights; the benchmark does not
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            model.eval()
            with torch.inference_mode():
                correct = sum(
                    int((model(images).argmax(1) == labels).sum())
                    for images, labels in zip(test_x.split(1000), test_y.split(1000), strict=True)
                )
            history.append({"round": server_round, "accuracy": correct / len(test_y)})
            return MetricRecord({"accuracy": correct / len(test_y)})

        def count_replies(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
            if len(records) != spec["clients_per_round"]:  # FedAvg would go on with fewer: a benchmark must not
                raise RuntimeError(f"{len(records)} of {spec['clients_per_round']} clients replied")
            return MetricRecord({"clients": len(records)})

        strategy = FedAvg(
            fraction_train=spec["clients_per_round"] / spec["num_clients"],
            fraction_evaluate=0.0,
            min_train_nodes=spec["clients_per_round"],  # max(int(n * fraction), min): exactly clients_per_round
            min_available_nodes=spec["num_clients"],
            train_metrics_aggr_fn=count_replies,
        )
        train_config = {key: spec[key] for key in ("lr", "momentum", "batch_size", "local_epochs", "seed")}
        train_config |= {key: spec[key] for key in ("in_channels", "num_classes", "image_size")}
        train_config |= {"data": data_path, "threads": spec["num_cpus_per_client"]}
        strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=spec["rounds"],
            train_config=ConfigRecord(train_config),
            evaluate_fn=evaluate,
        )

    return app


def run(data_path: str, spec: dict, ray_temp_dir: str | None = None) -> list[dict]:
    """Run the federated workload of ``spec`` on Flower's Simulation Engine; return the per-round accuracy."""
    if missing := [key for key in SPEC_KEYS if key not in spec]:
        raise ValueError(f"spec lacks {missing}")
    if not 1 <= spec["clients_per_round"] <= spec["num_clients"]:
        raise ValueError(f"clients_per_round must be in [1, num_clients], got {spec['clients_per_round']}")
    if not Path(data_path).is_file():
        raise FileNotFoundError(f"--data {data_path!r} does not exist")
    with np.load(data_path) as data:
        if len(data["rows_offsets"]) != spec["num_clients"] + 1:
            raise ValueError(f"rows_offsets has {len(data['rows_offsets'])} entries, want num_clients + 1")
    torch.set_num_threads(spec["num_cpus"])  # the server's evaluation runs while no client trains
    init_args = {"num_cpus": spec["num_cpus"], "include_dashboard": False}
    if ray_temp_dir is not None:
        init_args["_temp_dir"] = str(Path(ray_temp_dir).resolve())
    history: list[dict] = []
    run_simulation(
        server_app=_server_app(str(Path(data_path).resolve()), spec, history),
        client_app=client_app,
        num_supernodes=spec["num_clients"],
        backend_config={
            "client_resources": {"num_cpus": spec["num_cpus_per_client"], "num_gpus": 0.0},
            "init_args": init_args,
        },
    )
    if len(history) != spec["rounds"]:
        raise RuntimeError(f"the simulation evaluated {len(history)} of {spec['rounds']} rounds")
    return history


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="npz: train_x, train_y, test_x, test_y, rows_flat, rows_offsets")
    parser.add_argument("--spec", required=True, help="JSON workload: num_clients, clients_per_round, rounds, ...")
    parser.add_argument("--output", required=True, help="JSON result to write")
    parser.add_argument("--ray-temp-dir", default=None, help="Ray's temporary directory (ray.init _temp_dir)")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    history = run(args.data, spec, args.ray_temp_dir)
    result = {"engine": "flower", "flwr_version": flwr.__version__, "ray_version": ray.__version__}
    result |= {"torch_version": torch.__version__, "rounds": spec["rounds"], "history": history}
    result |= {"accuracy": history[-1]["accuracy"], "inner_wall_s": time.perf_counter() - started}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    # Run as the importable module `flower_mnist` (its folder is on sys.path, which Flower hands to the Ray
    # workers), not as `__main__`: Ray then pickles the ClientApp's functions by reference, and each worker
    # imports this module once and keeps _WORKER_CACHE across client calls. Pickled by value from
    # `__main__`, every call would arrive with fresh, empty module globals.
    import flower_mnist

    flower_mnist.main()
