"""The federated simulation engine: many virtual clients multiplexed over a pool of Ray actors.

One round::

    sample clients_per_round of the K clients (seeded)        the server's RNG
    global_ref = ray.put(global_weights)                      once per round, not once per client
    each sampled client -> an idle worker actor:               the worker holds the model (built once)
        rows -> data.features(rows), data.labels(rows)         the data sit in the object store once
        local_train(model, x, y, global weights, config, seed) equipoise.federated.client
    strategy.aggregate(global_weights, updates, round)         equipoise.federated.strategies
    evaluate the new global model on the test set              accuracy, balanced accuracy
    checkpoint (weights, strategy state, history, RNG)         resume gives the same result

Design
------
- **Clients are data, not processes.** A client is a set of row indices into one shared training
  set (:class:`~equipoise.federated.data.FederatedData`, ``ray.put`` once when the pool starts;
  NumPy arrays are read from shared memory without a copy). The pool has as many workers as the
  per-client resources allow (``num_cpus_per_client``, fractional ``num_gpus_per_client``), at most
  ``clients_per_round``; each worker builds the model once and reuses it for every client it
  trains. Memory therefore grows with the number of *workers* and with the updates of one round,
  not with the number of clients: 1,000 clients cost 1,000 index arrays.
- **Faults.** A client whose training raises, or whose worker process dies, is left out of the
  round: its failure is logged with the traceback (``logging`` at ERROR, logger
  ``equipoise.federated.simulation``) and recorded in the round's history under ``failures``; a
  dead worker is replaced by a new actor before its next task. The round is aggregated when at
  least ``min_fit_clients`` updates came back, else :class:`SimulationError` is raised (the last
  checkpoint stays as it was). Updates with NaN/inf or wrong shapes are rejected by the strategy.
- **Determinism and resume.** Client sampling and client seeds come from a
  ``numpy.random.Generator`` seeded by ``seed``; updates are aggregated in the sampled order
  whatever order the workers finish in. After every round the server state (global weights,
  ``strategy.state_dict()``, the history and the RNG state) is written atomically to
  ``output_dir/checkpoint.pt`` (format ``equipoise.federated/1``, read with
  ``weights_only=True``), and a simulation started with the same setup resumes from it: the result
  is the same as an uninterrupted run (bit for bit on the CPU). Raising ``rounds`` extends a
  finished run.
- **Backends.** ``backend="ray"`` (default) starts a local Ray instance with ``num_cpus`` CPUs,
  or joins a cluster with ``ray_address``; Ray's temporary files go under ``ray_temp_dir`` when
  given. ``backend="serial"`` trains the clients one after another in this process with the same
  sampling, seeds and aggregation (same result as Ray on the CPU): for debugging and small tests.
- **Outputs** (with ``output_dir``): ``checkpoint.pt``, ``history.json`` (rewritten every round),
  and at the end ``history.png`` (global and balanced accuracy per round, the per-client
  accuracies when ``client_evaluation`` is on, and the megabytes sent). A tqdm bar counts rounds.

Why by hand: Ray provides actors and the object store; ``ray.util.ActorPool`` schedules tasks but
neither replaces a dead actor nor reports which task failed, and Flower's simulation engine (a
separate framework with its own server) is what this engine is benchmarked against
(``tools/benchmarks/federated.py``).
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from equipoise.core.checkpoint import load_checkpoint, save_checkpoint
from equipoise.core.device import resolve_device
from equipoise.core.validation import check_int
from equipoise.federated.client import ClientConfig, attach_etf_head, evaluate_model, local_train
from equipoise.federated.data import FederatedData
from equipoise.federated.strategies import STRATEGIES, ClientUpdate, Strategy, build_strategy

__all__ = [
    "CHECKPOINT_FORMAT",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
    "simulate",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "equipoise.federated/1"
_CHECKPOINT_KEYS = ("round", "weights", "strategy", "history", "rng", "fingerprint")


class SimulationError(RuntimeError):
    """A round could not be completed (too few clients reported)."""


@dataclass
class SimulationConfig:
    """What the server does: rounds, client sampling, aggregation, resources.

    Args:
        rounds: the number of rounds, ``>= 1`` (default 20).
        clients_per_round: clients sampled uniformly without replacement each round, ``>= 1``
            (default 10; at most the number of clients).
        min_fit_clients: the fewest updates a round may be aggregated from, ``>= 1`` (default 1).
        strategy: a name of :data:`~equipoise.federated.strategies.STRATEGIES` (default
            ``"fedavg"``); ``strategy_options`` are its keyword arguments. FedProx's ``proximal_mu``
            reaches the clients through ``Strategy.configure_client``.
        client: each client's local training (:class:`~equipoise.federated.client.ClientConfig`).
        classifier: ``"learned"`` (default) or ``"etf"``: replace the model's last linear layer by
            FedETF's fixed simplex-ETF head (:func:`~equipoise.federated.client.attach_etf_head`,
            the same head on the server and every client).
        num_cpus_per_client, num_gpus_per_client: Ray resources of one worker (default 1 CPU, 0
            GPUs; fractional GPUs share a device). With GPUs the clients train on ``cuda``.
        num_workers: the size of the worker pool; by default as many as the resources allow, at
            most ``clients_per_round``.
        evaluate_every: evaluate the global model on the test set every this many rounds and after
            the last (default 1).
        client_evaluation: each sampled client also reports the accuracy of the global model it
            received on its own training rows (``client_accuracy`` in the history; default off).
        seed: seeds the initial model, the client sampling and the clients' seeds (default 0).
    """

    rounds: int = 20
    clients_per_round: int = 10
    min_fit_clients: int = 1
    strategy: str = "fedavg"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    client: ClientConfig = field(default_factory=ClientConfig)
    classifier: str = "learned"
    num_cpus_per_client: float = 1.0
    num_gpus_per_client: float = 0.0
    num_workers: int | None = None
    evaluate_every: int = 1
    client_evaluation: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "clients_per_round", "min_fit_clients", "evaluate_every"):
            check_int(getattr(self, name), name, 1)
        if self.num_workers is not None:
            check_int(self.num_workers, "num_workers", 1)
        check_int(self.seed, "seed", 0)
        if self.min_fit_clients > self.clients_per_round:
            raise ValueError(
                f"min_fit_clients ({self.min_fit_clients}) must be <= clients_per_round ({self.clients_per_round})"
            )
        if self.strategy not in STRATEGIES.names():
            raise ValueError(f"strategy must be one of {STRATEGIES.names()}, got {self.strategy!r}")
        if not isinstance(self.strategy_options, Mapping):
            raise ValueError(f"strategy_options must be a dict, got {type(self.strategy_options).__name__}")
        if isinstance(self.client, Mapping):
            self.client = ClientConfig(**self.client)
        if not isinstance(self.client, ClientConfig):
            raise TypeError(f"client must be a ClientConfig, got {type(self.client).__name__}")
        if self.classifier not in ("learned", "etf"):
            raise ValueError(f"classifier must be 'learned' or 'etf', got {self.classifier!r}")
        for name in ("num_cpus_per_client", "num_gpus_per_client"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.num_cpus_per_client == 0 and self.num_gpus_per_client == 0:
            raise ValueError("num_cpus_per_client and num_gpus_per_client cannot both be 0")
        if not isinstance(self.client_evaluation, bool):
            raise ValueError(f"client_evaluation must be true or false, got {self.client_evaluation!r}")

    def build_strategy(self) -> Strategy:
        """The strategy named by ``strategy`` with ``strategy_options`` and ``min_fit_clients``."""
        options = dict(self.strategy_options)
        options.setdefault("min_updates", self.min_fit_clients)
        return build_strategy(self.strategy, **options)


@dataclass
class SimulationResult:
    """The outcome: the final global ``weights`` (a CPU ``state_dict``), the per-round ``history``
    (a list of dicts, see :func:`simulate`), the ``model`` holding the weights, and ``output_dir``."""

    weights: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    model: nn.Module
    output_dir: Path | None = None

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluated round's record."""
        evaluated = [record for record in self.history if "accuracy" in record]
        return evaluated[-1] if evaluated else {}


# --------------------------------------------------------------------------------------------
# The worker: one model, many clients
# --------------------------------------------------------------------------------------------


@dataclass
class _ClientTask:
    client_id: int
    rows: np.ndarray
    seed: int
    server_round: int
    config: ClientConfig
    evaluate: bool


TrainFn = Callable[..., ClientUpdate]


def _build_model(model_fn: Callable[[], nn.Module], classifier: str, num_classes: int, seed: int) -> nn.Module:
    model = model_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
    if classifier == "etf":
        attach_etf_head(model, num_classes, seed=seed)
    return model


class ClientWorker:
    """Trains one client after another with one model (a Ray actor, or in-process for ``serial``)."""

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        data: FederatedData,
        classifier: str,
        seed: int,
        num_threads: int | None,
        train_fn: TrainFn | None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        with torch.random.fork_rng():  # the caller's random state is left as it was (the weights are replaced anyway)
            self.model = _build_model(model_fn, classifier, data.num_classes, seed)
        self.data = data
        self.train_fn = train_fn or local_train

    def ready(self) -> bool:
        """Answers once the worker is built (the pool waits for it before the first round)."""
        return True

    def fit(self, task: _ClientTask, global_weights: Mapping[str, torch.Tensor]) -> ClientUpdate:
        features, labels = self.data.features(task.rows), self.data.labels(task.rows)
        before: dict[str, Any] = {}
        if task.evaluate:
            self.model.load_state_dict(global_weights, strict=True)
            self.model.to(task.config.device)
            before = evaluate_model(self.model, features, labels, self.data.num_classes)
        update = self.train_fn(
            self.model,
            features,
            labels,
            global_weights,
            task.config,
            task.seed,
            client_id=task.client_id,
            server_round=task.server_round,
            num_classes=self.data.num_classes,
        )
        if not isinstance(update, ClientUpdate):
            raise TypeError(f"train_fn must return a ClientUpdate, got {type(update).__name__}")
        if before:
            update.metrics["client_accuracy"] = before["accuracy"]
        return update


class _SerialPool:
    """The clients of a round trained one after another in this process."""

    def __init__(self, worker_args: tuple, num_threads: int | None) -> None:
        self.worker = ClientWorker(*worker_args)
        self.num_threads = num_threads
        self.size = 1

    def run(self, tasks: list[_ClientTask], global_weights: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        updates, failures = {}, {}
        saved = torch.get_num_threads()
        if self.num_threads is not None:  # as many threads as a Ray worker gets: the same floating-point sums
            torch.set_num_threads(self.num_threads)
        try:
            for task in tasks:
                try:
                    updates[task.client_id] = self.worker.fit(task, global_weights)
                except Exception as error:  # a failing client is left out of the round, never fatal by itself
                    summary = f"{type(error).__name__}: {error}"
                    failures[task.client_id] = _log_failure(task, summary, traceback.format_exc())
        finally:
            torch.set_num_threads(saved)
        return updates, failures

    def close(self) -> None:
        pass


class _RayPool:
    """A pool of ``ClientWorker`` actors; dead actors are replaced, failed clients reported."""

    def __init__(
        self,
        data: FederatedData,
        config: SimulationConfig,
        *,
        address: str | None,
        num_cpus: int | None,
        num_gpus: int | None,
        temp_dir: str | Path | None,
    ) -> None:
        import ray

        self.ray = ray
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address is not None:
                options["address"] = address
            else:
                options.update(num_cpus=num_cpus, num_gpus=num_gpus)
                options["_system_config"] = {"enable_worker_prestart": False}  # actors only, no idle task workers
            if temp_dir is not None:
                Path(temp_dir).mkdir(parents=True, exist_ok=True)
                options["_temp_dir"] = str(Path(temp_dir).resolve())
            ray.init(**options)
        self.config = config
        self.size = config.num_workers or _pool_size(ray.cluster_resources(), config)
        self.data_ref = ray.put(data)  # the datasets go to the object store once
        self.actors: list[Any] = []

    def start(self, model_fn: Callable[[], nn.Module], classifier: str, seed: int, train_fn: TrainFn | None) -> None:
        """Start the workers (after the caller let go of its copy of the data: a lower peak of memory)."""
        ray, config = self.ray, self.config
        self.actor_class = ray.remote(ClientWorker).options(
            num_cpus=config.num_cpus_per_client, num_gpus=config.num_gpus_per_client
        )
        self.actor_args = (model_fn, self.data_ref, classifier, seed, _threads_per_client(config), train_fn)
        self.actors = [self._new_actor() for _ in range(self.size)]
        try:  # a model_fn that fails, or a worker that cannot start, is an error of the setup: raise it now
            ray.get([actor.ready.remote() for actor in self.actors])
        except ray.exceptions.RayError as error:
            self.close()
            raise RuntimeError(f"the simulation workers could not start: {error}") from error

    def _new_actor(self) -> Any:
        return self.actor_class.remote(*self.actor_args)

    def run(self, tasks: list[_ClientTask], global_weights: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        ray = self.ray
        global_ref = ray.put(global_weights)  # once per round, shared by every client of the round
        # Largest client first, one task per worker at a time, the next to whichever worker is free
        # first (greedy longest-processing-time scheduling): under label and quantity skew client
        # sizes differ a hundredfold, and a fixed assignment leaves workers idle behind a straggler.
        queue = deque(sorted(tasks, key=lambda task: -len(task.rows)))
        pending: dict[Any, tuple[int, Any, _ClientTask]] = {}

        def submit(slot: int) -> None:
            task = queue.popleft()
            actor = self.actors[slot]
            pending[actor.fit.remote(task, global_ref)] = (slot, actor, task)

        for slot in range(len(self.actors)):
            if queue:
                submit(slot)
        updates, failures = {}, {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            slot, actor, task = pending.pop(done[0])
            try:
                updates[task.client_id] = ray.get(done[0])
            except ray.exceptions.RayActorError as error:
                failures[task.client_id] = _log_failure(task, f"worker died: {type(error).__name__}", str(error))
                if self.actors[slot] is actor:  # replace it once, whatever else was queued on it
                    ray.kill(actor, no_restart=True)
                    self.actors[slot] = self._new_actor()
                    logger.warning("round %d: replaced the dead worker %d", task.server_round, slot)
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if getattr(error, "cause", None) is not None else error
                failures[task.client_id] = _log_failure(task, f"{type(cause).__name__}: {cause}", str(error))
            if queue:
                submit(slot)
        return updates, failures

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.owns_ray:
            self.ray.shutdown()


def _threads_per_client(config: SimulationConfig) -> int | None:
    """Torch threads of one worker: its whole CPUs, at least 1 (``None``: GPU-only workers keep the default)."""
    return max(1, int(config.num_cpus_per_client)) if config.num_cpus_per_client else None


def _pool_size(resources: Mapping[str, float], config: SimulationConfig) -> int:
    limits = [config.clients_per_round]
    if config.num_cpus_per_client > 0:
        limits.append(int(resources.get("CPU", 0) // config.num_cpus_per_client))
    if config.num_gpus_per_client > 0:
        limits.append(int(resources.get("GPU", 0) // config.num_gpus_per_client))
    size = min(limits)
    if size < 1:
        raise ValueError(
            f"the Ray cluster ({dict(resources)}) cannot fit one worker of num_cpus_per_client="
            f"{config.num_cpus_per_client}, num_gpus_per_client={config.num_gpus_per_client}"
        )
    return size


def _log_failure(task: _ClientTask, summary: str, details: str) -> str:
    logger.error("round %d: client %d failed: %s\n%s", task.server_round, task.client_id, summary, details)
    return summary


# --------------------------------------------------------------------------------------------
# The server loop
# --------------------------------------------------------------------------------------------


def simulate(
    model_fn: Callable[[], nn.Module],
    data: FederatedData,
    client_rows: Sequence[np.ndarray],
    config: SimulationConfig | None = None,
    *,
    output_dir: str | Path | None = None,
    resume: bool = True,
    backend: str = "ray",
    ray_address: str | None = None,
    ray_temp_dir: str | Path | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    device: str = "auto",
    train_fn: TrainFn | None = None,
    progress: bool = True,
) -> SimulationResult:
    """Run a federated simulation and return the final global model and the per-round history.

    Args:
        model_fn: builds the model, with no arguments (e.g. ``functools.partial(simple_cnn, 1, 10,
            28)``); called once by the server and once per worker, so it must be picklable for Ray
            (a module-level function or a ``partial`` of one). The initial global weights are
            ``model_fn()``'s under ``torch.manual_seed(config.seed)``.
        data: the shared training and test sets.
        client_rows: one array of training-set row indices per client (from
            :func:`equipoise.federated.partition.partition`), each non-empty.
        config: a :class:`SimulationConfig` (default: its defaults).
        output_dir: where ``checkpoint.pt``, ``history.json`` and ``history.png`` go; without it
            nothing is written and nothing can be resumed.
        resume: continue from ``output_dir/checkpoint.pt`` when there is one (default); with
            ``False`` an existing checkpoint is overwritten.
        backend: ``"ray"`` (default) or ``"serial"``.
        ray_address: join this Ray cluster (``"auto"``, ``"ray://host:10001"``) instead of starting
            a local instance; an already initialised Ray is used as it is.
        ray_temp_dir: Ray's temporary files (sessions, logs, sockets) go here (a local start only).
        num_cpus, num_gpus: resources of a local Ray start (default: what the machine has).
        device: where the server evaluates the global model (``"auto"``: CUDA when present).
        train_fn: replaces :func:`~equipoise.federated.client.local_train` (same signature), e.g.
            to customise the local objective.
        progress: show a tqdm bar over rounds.

    Returns:
        A :class:`SimulationResult`. Each history record has ``round`` (1-based), ``clients`` (the
        sampled ids), ``num_updates``, ``failures`` (id -> error), ``rejected`` (id -> reason),
        ``train_loss`` (example-weighted mean), ``bytes_down``/``bytes_up`` (weights sent to and
        from the clients), ``seconds``, and on evaluated rounds ``accuracy``,
        ``balanced_accuracy``, ``worst_class_accuracy``, ``per_class_accuracy``; with
        ``client_evaluation``, ``client_accuracy`` (id -> accuracy of the received global model
        on that client's rows).

    Raises:
        ValueError: bad arguments, or a checkpoint in ``output_dir`` from a different setup.
        SimulationError: fewer than ``min_fit_clients`` clients reported in a round.
        AggregationError: (a ``ValueError``) enough clients reported but fewer than
            ``min_fit_clients`` of their updates passed the strategy's validation.
    """
    config = SimulationConfig() if config is None else config
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"config must be a SimulationConfig, got {type(config).__name__}")
    if not isinstance(data, FederatedData):
        raise TypeError(f"data must be a FederatedData, got {type(data).__name__}")
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
    if backend not in ("ray", "serial"):
        raise ValueError(f"backend must be 'ray' or 'serial', got {backend!r}")
    client_rows = _check_client_rows(client_rows, len(data.train_y))
    if config.clients_per_round > len(client_rows):
        raise ValueError(
            f"clients_per_round ({config.clients_per_round}) exceeds the number of clients ({len(client_rows)})"
        )
    output = Path(output_dir) if output_dir is not None else None
    server_device = resolve_device(device)
    client_config = config.client
    if config.num_gpus_per_client > 0 and client_config.device == "cpu":
        client_config = replace(client_config, device="cuda")

    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = _build_model(model_fn, config.classifier, data.num_classes, config.seed)
    weights = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    strategy = config.build_strategy()
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, Any]] = []
    fingerprint = _fingerprint(config, data, client_rows, weights)
    start_round = 0
    checkpoint_path = output / "checkpoint.pt" if output is not None else None
    if checkpoint_path is not None and resume and checkpoint_path.is_file():
        start_round, weights, history = _restore(checkpoint_path, fingerprint, strategy, rng, weights)
        if start_round > config.rounds:
            raise ValueError(
                f"{checkpoint_path} is from round {start_round}, past the requested rounds={config.rounds}; "
                "ask for at least as many rounds, or pass resume=False or another output_dir to start afresh"
            )
        logger.info("resuming from %s after round %d", checkpoint_path, start_round)
    test_x, test_y = data.features(split="test"), data.labels(split="test")
    model.to(server_device)

    pool: _SerialPool | _RayPool | None = None
    try:
        if start_round < config.rounds:
            if backend == "serial":
                worker_args = (model_fn, data, config.classifier, config.seed, None, train_fn)
                pool = _SerialPool(worker_args, _threads_per_client(config))
                del worker_args
            else:
                resources = {"num_cpus": num_cpus, "num_gpus": num_gpus, "temp_dir": ray_temp_dir}
                pool = _RayPool(data, config, address=ray_address, **resources)
        # From here the server needs only the test tensors: with Ray the training set lives in the
        # object store, and a caller that handed ``data`` over without keeping it gets its memory
        # back before the workers start.
        num_classes = data.num_classes
        del data
        if isinstance(pool, _RayPool):
            pool.start(model_fn, config.classifier, config.seed, train_fn)
        bar = tqdm(
            range(start_round + 1, config.rounds + 1),
            desc="rounds",
            unit="round",
            disable=not progress,
            initial=start_round,
            total=config.rounds,
        )
        for server_round in bar:
            began = time.perf_counter()
            chosen = np.sort(rng.choice(len(client_rows), size=config.clients_per_round, replace=False))
            seeds = rng.integers(0, 2**31 - 1, size=len(chosen))
            round_config = replace(client_config, **strategy.configure_client(server_round))
            tasks = [
                _ClientTask(int(k), client_rows[k], int(s), server_round, round_config, config.client_evaluation)
                for k, s in zip(chosen, seeds, strict=True)
            ]
            updates, failures = pool.run(tasks, weights)
            ordered = [updates[int(k)] for k in chosen if int(k) in updates]
            if len(ordered) < config.min_fit_clients:
                raise SimulationError(
                    f"round {server_round}: only {len(ordered)} of {len(chosen)} clients reported, fewer than "
                    f"min_fit_clients={config.min_fit_clients} (failures: {failures})"
                )
            result = strategy.aggregate(weights, ordered, server_round)
            record = _round_record(server_round, chosen, ordered, failures, result.rejected, weights)
            weights = result.weights
            if server_round % config.evaluate_every == 0 or server_round == config.rounds:
                model.load_state_dict(weights)
                scores = evaluate_model(model, test_x, test_y, num_classes)
                record.update({key: scores[key] for key in _EVALUATION_KEYS})
                bar.set_postfix(accuracy=f"{scores['accuracy']:.4f}", balanced=f"{scores['balanced_accuracy']:.4f}")
            record["seconds"] = time.perf_counter() - began
            history.append(record)
            if output is not None:
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "round": server_round,
                    "weights": weights,
                    "strategy": strategy.state_dict(),
                    "history": json.dumps(history),
                    "rng": json.dumps(rng.bit_generator.state),
                    "fingerprint": fingerprint,
                }
                save_checkpoint(checkpoint_path, state)
                _write_json(output / "history.json", {"fingerprint": json.loads(fingerprint), "history": history})
        bar.close()
    finally:
        if pool is not None:
            pool.close()
    model.load_state_dict(weights)
    if output is not None:
        _write_json(output / "history.json", {"fingerprint": json.loads(fingerprint), "history": history})
        plot_history(history, output / "history.png")
    return SimulationResult(weights=weights, history=history, model=model, output_dir=output)


_EVALUATION_KEYS = ("accuracy", "balanced_accuracy", "worst_class_accuracy", "per_class_accuracy")


def _round_record(server_round, chosen, updates, failures, rejected, global_weights) -> dict[str, Any]:
    size = sum(tensor.numel() * tensor.element_size() for tensor in global_weights.values())
    accepted = [update for update in updates if update.client_id not in rejected]
    examples = sum(update.num_examples for update in accepted)
    losses = [(update.metrics.get("loss"), update.num_examples) for update in accepted]
    known = [(loss, n) for loss, n in losses if isinstance(loss, (int, float)) and math.isfinite(loss)]
    record: dict[str, Any] = {
        "round": server_round,
        "clients": [int(k) for k in chosen],
        "num_updates": len(accepted),
        "num_examples": examples,
        "failures": {str(k): v for k, v in failures.items()},
        "rejected": {str(k): v for k, v in rejected.items()},
        "train_loss": sum(loss * n for loss, n in known) / sum(n for _, n in known) if known else None,
        "bytes_down": size * len(chosen),
        "bytes_up": sum(sum(t.numel() * t.element_size() for t in u.weights.values()) for u in updates),
    }
    client_accuracy = {
        str(u.client_id): u.metrics["client_accuracy"] for u in updates if "client_accuracy" in u.metrics
    }
    if client_accuracy:
        record["client_accuracy"] = client_accuracy
    return record


def _check_client_rows(client_rows: Any, num_rows: int) -> list[np.ndarray]:
    if isinstance(client_rows, (str, bytes)) or not isinstance(client_rows, Sequence) or len(client_rows) == 0:
        raise ValueError("client_rows must be a non-empty list of row-index arrays, one per client")
    checked = []
    for k, rows in enumerate(client_rows):
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"client_rows[{k}] must be a non-empty 1-D integer array, got {rows.dtype} {rows.shape}")
        if rows.min() < 0 or rows.max() >= num_rows:
            bad = int(rows.min()) if rows.min() < 0 else int(rows.max())
            raise ValueError(f"client_rows[{k}] has row {bad}, outside the {num_rows} training rows")
        checked.append(rows.astype(np.int64, copy=False))
    return checked


def _fingerprint(config, data, client_rows, weights) -> str:
    """What a checkpoint must agree with to be resumed (``rounds`` may change: a run can be extended)."""
    setup = asdict(config)
    setup.pop("rounds")
    setup.pop("num_workers")
    digest = np.zeros(2, dtype=np.int64)
    for k, rows in enumerate(client_rows):
        digest += [len(rows), int(rows.sum() % 1_000_003) * (k + 1)]
    setup.update(
        data=data.name,
        train_rows=len(data.train_y),
        num_clients=len(client_rows),
        partition_digest=[int(v) for v in digest],
        model={key: list(value.shape) for key, value in weights.items()},
    )
    return json.dumps(setup, sort_keys=True, default=str)


def _restore(path: Path, fingerprint: str, strategy: Strategy, rng: np.random.Generator, weights: dict):
    state = load_checkpoint(path, format=CHECKPOINT_FORMAT, required=_CHECKPOINT_KEYS)
    if state["fingerprint"] != fingerprint:
        saved, current = json.loads(state["fingerprint"]), json.loads(fingerprint)
        differences = [key for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
        raise ValueError(
            f"{path} was written by a different simulation (differs in {differences}); pass resume=False "
            "or another output_dir to start afresh"
        )
    restored = state["weights"]
    if set(restored) != set(weights):
        raise ValueError(f"{path} holds weights for other parameters than the model's")
    strategy.load_state_dict(state["strategy"])
    rng.bit_generator.state = json.loads(state["rng"])
    return int(state["round"]), {key: restored[key] for key in weights}, json.loads(state["history"])


def _write_json(path: Path, payload: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    temporary.replace(path)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def plot_history(history: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Global and balanced test accuracy per round, per-client accuracies, and megabytes sent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    evaluated = [record for record in history if "accuracy" in record]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["round"] for r in evaluated], [r["accuracy"] for r in evaluated], marker="o", label="accuracy")
    left.plot(
        [r["round"] for r in evaluated],
        [r["balanced_accuracy"] for r in evaluated],
        marker="s",
        label="balanced accuracy",
    )
    for record in history:
        values = list(record.get("client_accuracy", {}).values())
        if values:
            left.scatter([record["round"]] * len(values), values, s=6, color="grey", alpha=0.4)
    if any("client_accuracy" in record for record in history):
        left.scatter([], [], s=6, color="grey", label="clients (global model on own rows)")
    left.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1), title=title or "global model")
    left.grid(alpha=0.3)
    left.legend(loc="lower right")
    rounds = [record["round"] for record in history]
    sent = np.cumsum([record["bytes_down"] + record["bytes_up"] for record in history]) / 1e6
    right.plot(rounds, sent, marker=".")
    right.set(xlabel="round", ylabel="MB sent (cumulative, both ways)", title="communication")
    right.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
