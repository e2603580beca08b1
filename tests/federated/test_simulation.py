"""Oracle tests for the federated simulation engine (equipoise.federated.simulation).

The references are computed another way: a hand-written server loop (the same seeded client
sampling re-derived with NumPy, ``local_train`` called client by client, the example-weighted
average and FedAvgM's momentum written out in float64), Ray runs against serial runs and resumed
runs against uninterrupted ones (bit for bit), accuracies recomputed from the weights with argmax
counts and scikit-learn, byte counts from the parameter shapes, and the ETF head from
``simplex_etf``. The data are a tiny synthetic ``uint8`` image set (1x8x8, 4 classes, 6 clients)
and a model defined here; one test runs SimpleCNN on a slice of the real MNIST when it is present.

Ray is started once for the module (2 CPUs); the engine uses it as it is. The tests are imported
with ``--import-mode=importlib``, so this module is not importable by Ray's workers: its functions
(``model_fn``, ``train_fn``) are sent by value (``register_pickle_by_value``).
"""

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score
from torch import nn

from equipoise.federated.client import ClientConfig, SimplexETFClassifier, local_train, simplex_etf
from equipoise.federated.data import FederatedData, load_federated_data
from equipoise.federated.models import simple_cnn
from equipoise.federated.simulation import (
    CHECKPOINT_FORMAT,
    SimulationConfig,
    SimulationError,
    SimulationResult,
    simulate,
)
from equipoise.federated.strategies import ClientUpdate

torch.set_num_threads(1)

DATA_ROOT = Path(os.environ.get("EQUIPOISE_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")

NUM_CLASSES, SIDE, HIDDEN = 4, 8, 16
CLIENT_SIZES = (20, 30, 40, 50, 45, 55)  # unequal, so the example weighting matters
CLIENT = ClientConfig(batch_size=8, lr=0.05)
FAILING_CLIENT, DYING_CLIENT, NAN_CLIENT = 2, 2, 3


# --------------------------------------------------------------------------------------------
# Data, model and train functions (module level: Ray receives them by value)
# --------------------------------------------------------------------------------------------


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, NUM_CLASSES))


def _images(size: int, rng: np.random.Generator, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, NUM_CLASSES, size)
    noisy = templates[labels] + rng.normal(0.0, 40.0, (size, 1, SIDE, SIDE))
    return np.clip(noisy, 0, 255).astype(np.uint8), labels


def _make_data() -> FederatedData:
    """One noisy 8x8 template per class: learnable in a few rounds, 240 training rows."""
    rng = np.random.default_rng(0)
    templates = rng.uniform(0, 255, (NUM_CLASSES, 1, SIDE, SIDE))
    train_x, train_y = _images(sum(CLIENT_SIZES), rng, templates)
    test_x, test_y = _images(80, rng, templates)
    return FederatedData(train_x, train_y, test_x, test_y, NUM_CLASSES, mean=(0.45,), std=(0.3,), name="tiny")


DATA = _make_data()
CLIENT_ROWS = np.split(np.random.default_rng(1).permutation(len(DATA.train_y)), np.cumsum(CLIENT_SIZES)[:-1])


def _raising_train(model, features, labels, global_weights, config, seed, **kwargs) -> ClientUpdate:
    """``local_train``, except that ``FAILING_CLIENT`` always raises."""
    if kwargs["client_id"] == FAILING_CLIENT:
        raise ValueError(f"client {FAILING_CLIENT} refuses")
    return local_train(model, features, labels, global_weights, config, seed, **kwargs)


def _faulty_worker_train(model, features, labels, global_weights, config, seed, **kwargs) -> ClientUpdate:
    """Client 1 always raises; client ``DYING_CLIENT`` kills its worker process in round 1."""
    if kwargs["client_id"] == 1:
        raise ValueError("client 1 refuses")
    if kwargs["client_id"] == DYING_CLIENT and kwargs["server_round"] == 1:
        os._exit(1)
    return local_train(model, features, labels, global_weights, config, seed, **kwargs)


def _nan_train(model, features, labels, global_weights, config, seed, **kwargs) -> ClientUpdate:
    """``local_train``, with every weight of ``NAN_CLIENT``'s update set to NaN."""
    update = local_train(model, features, labels, global_weights, config, seed, **kwargs)
    if kwargs["client_id"] == NAN_CLIENT:
        poisoned = {key: torch.full_like(value, float("nan")) for key, value in update.weights.items()}
        update = replace(update, weights=poisoned)
    return update


def _recording_train(calls: list, model, features, labels, global_weights, config, seed, **kwargs) -> ClientUpdate:
    """``local_train`` that records what it was called with (serial backend only: in this process)."""
    calls.append(
        {
            "round": kwargs["server_round"],
            "client": kwargs["client_id"],
            "proximal_mu": config.proximal_mu,
            "global_weights": {key: value.clone() for key, value in global_weights.items()},
        }
    )
    return local_train(model, features, labels, global_weights, config, seed, **kwargs)


# --------------------------------------------------------------------------------------------
# The oracle: the server loop written out by hand
# --------------------------------------------------------------------------------------------


def _hand_server_loop(
    config: SimulationConfig,
    *,
    data: FederatedData = DATA,
    client_rows=CLIENT_ROWS,
    model_fn=_tiny_model,
    client_config: ClientConfig | None = None,
    server_momentum: float | None = None,
    exclude=lambda client_id, server_round: False,
) -> dict:
    """FedAvg (or FedAvgM with ``server_momentum``, server_lr 1) as a plain loop.

    Returns ``weights`` (the global weights before round 1 and after every round), ``clients``
    (the sampled ids per round) and ``updates`` (the aggregated ``ClientUpdate`` s per round).
    """
    client_config = config.client if client_config is None else client_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = model_fn()
    weights = {key: value.detach().clone() for key, value in model.state_dict().items()}
    rng = np.random.default_rng(config.seed)
    trajectory, sampled, all_updates = [weights], [], []
    velocity: dict[str, torch.Tensor] = {}
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the engine does for num_cpus_per_client=1
    try:
        for server_round in range(1, config.rounds + 1):
            chosen = np.sort(rng.choice(len(client_rows), size=config.clients_per_round, replace=False))
            seeds = rng.integers(0, 2**31 - 1, size=len(chosen))
            updates = []
            for client_id, seed in zip(chosen.tolist(), seeds.tolist(), strict=True):
                if exclude(client_id, server_round):
                    continue
                rows = client_rows[client_id]
                update = local_train(
                    model,
                    data.features(rows),
                    data.labels(rows),
                    weights,
                    client_config,
                    seed,
                    client_id=client_id,
                    server_round=server_round,
                    num_classes=data.num_classes,
                )
                updates.append(update)
            total = sum(update.num_examples for update in updates)
            new = {}
            for name, current in weights.items():
                weighted_sum = torch.zeros(current.shape, dtype=torch.float64)
                for update in updates:
                    weighted_sum += update.num_examples * update.weights[name].double()
                average = weighted_sum / total
                if server_momentum is not None:  # v = beta v + (w - avg); w <- w - v
                    step = current.double() - average
                    velocity[name] = step if name not in velocity else server_momentum * velocity[name] + step
                    average = current.double() - velocity[name]
                new[name] = average.to(current.dtype)
            weights = new
            trajectory.append(weights)
            sampled.append(chosen.tolist())
            all_updates.append(updates)
    finally:
        torch.set_num_threads(saved_threads)
    return {"weights": trajectory, "clients": sampled, "updates": all_updates}


def _predict(weights: dict[str, torch.Tensor], features: torch.Tensor, model_fn=_tiny_model) -> np.ndarray:
    model = model_fn()
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        return model(features).argmax(dim=1).numpy()


def _assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for key in expected:
        assert actual[key].dtype == expected[key].dtype, key
        assert torch.equal(actual[key], expected[key]), f"{key}: max |diff| {(actual[key] - expected[key]).abs().max()}"


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def _serial(config: SimulationConfig, **kwargs) -> SimulationResult:
    return simulate(_tiny_model, DATA, CLIENT_ROWS, config, backend="serial", progress=False, **kwargs)


def _param_bytes(weights: dict[str, torch.Tensor]) -> int:
    return sum(value.numel() * value.element_size() for value in weights.values())


@pytest.fixture(scope="module")
def ray_session():
    """Ray started once for the module; the engine uses an initialised Ray as it is."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    temp_dir = tempfile.mkdtemp(prefix="eqray", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    try:
        yield ray
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        shutil.rmtree(temp_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The server loop against the hand-written oracle
# --------------------------------------------------------------------------------------------


def test_serial_fedavg_equals_the_hand_written_server_loop():
    config = SimulationConfig(rounds=3, clients_per_round=4, client=CLIENT, seed=3)
    result = _serial(config)
    oracle = _hand_server_loop(config)

    _assert_same_weights(result.weights, oracle["weights"][-1])
    _assert_same_weights(result.model.state_dict(), oracle["weights"][-1])
    test_x, test_y = DATA.features(split="test"), DATA.labels(split="test").numpy()
    assert len(result.history) == 3
    for server_round, record in enumerate(result.history, start=1):
        updates = oracle["updates"][server_round - 1]
        assert record["round"] == server_round
        assert record["clients"] == oracle["clients"][server_round - 1]
        assert record["num_updates"] == 4 and record["failures"] == {} and record["rejected"] == {}
        assert record["num_examples"] == sum(len(CLIENT_ROWS[k]) for k in record["clients"])
        expected_loss = sum(u.metrics["loss"] * u.num_examples for u in updates) / record["num_examples"]
        assert record["train_loss"] == pytest.approx(expected_loss, rel=1e-12)
        predictions = _predict(oracle["weights"][server_round], test_x)
        recalls = recall_score(test_y, predictions, average=None, labels=range(NUM_CLASSES), zero_division=0)
        assert record["accuracy"] == pytest.approx(accuracy_score(test_y, predictions), abs=1e-7)
        assert record["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(test_y, predictions), abs=1e-6)
        assert record["per_class_accuracy"] == pytest.approx(recalls.tolist(), abs=1e-6)
        assert record["worst_class_accuracy"] == pytest.approx(recalls.min(), abs=1e-6)
    assert result.final == result.history[-1]
    assert result.history[-1]["accuracy"] > 0.5  # 4 classes: the run learned something, the oracle is not vacuous


def test_serial_fedavg_on_mnist_with_simple_cnn_equals_the_hand_written_loop():
    if not (DATA_ROOT / "mnist").is_dir():
        pytest.skip(f"MNIST not found under {DATA_ROOT / 'mnist'} (set EQUIPOISE_DATA)")
    mnist = load_federated_data("mnist", root=DATA_ROOT)
    train_rows, test_rows = np.arange(300), np.arange(200)
    data = FederatedData(
        mnist.train_x[train_rows],
        mnist.train_y[train_rows],
        mnist.test_x[test_rows],
        mnist.test_y[test_rows],
        10,
        mean=mnist.mean,
        std=mnist.std,
        name="mnist-slice",
    )
    client_rows = np.array_split(np.arange(300), 3)
    model_fn = functools.partial(simple_cnn, 1, 10, 28)
    config = SimulationConfig(rounds=2, clients_per_round=2, client=ClientConfig(batch_size=20, lr=0.05), seed=1)
    result = simulate(model_fn, data, client_rows, config, backend="serial", progress=False)
    oracle = _hand_server_loop(config, data=data, client_rows=client_rows, model_fn=model_fn)
    _assert_same_weights(result.weights, oracle["weights"][-1])
    predictions = _predict(oracle["weights"][-1], data.features(split="test"), model_fn=model_fn)
    assert result.history[-1]["accuracy"] == pytest.approx(accuracy_score(data.test_y, predictions), abs=1e-7)


def test_serial_simulation_leaves_the_callers_torch_random_state_alone():
    before = torch.get_rng_state()
    _serial(SimulationConfig(rounds=1, clients_per_round=2, client=CLIENT))
    assert torch.equal(torch.get_rng_state(), before)


# --------------------------------------------------------------------------------------------
# Ray against serial
# --------------------------------------------------------------------------------------------


def test_ray_equals_serial_bit_for_bit_and_puts_the_weights_once_per_round(ray_session, monkeypatch):
    ray = ray_session
    config = SimulationConfig(rounds=3, clients_per_round=4, client=CLIENT, seed=5)
    serial = _serial(config)

    put_types = []
    original_put = ray.put

    def counting_put(value, *args, **kwargs):
        put_types.append(type(value).__name__)
        return original_put(value, *args, **kwargs)

    monkeypatch.setattr(ray, "put", counting_put)
    rng_before = torch.get_rng_state()
    result = simulate(_tiny_model, DATA, CLIENT_ROWS, config, backend="ray", progress=False)

    assert ray.is_initialized()  # an initialised Ray is used as it is, not shut down
    _assert_same_weights(result.weights, serial.weights)
    assert [r["accuracy"] for r in result.history] == [r["accuracy"] for r in serial.history]
    assert _without_seconds(result.history) == _without_seconds(serial.history)
    # the data once when the pool starts, then the global weights once per round (not once per client)
    assert sorted(put_types) == sorted(["FederatedData"] + ["dict"] * config.rounds)
    assert torch.equal(torch.get_rng_state(), rng_before)


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def test_a_failing_client_is_left_out_logged_and_recorded(caplog):
    config = SimulationConfig(rounds=2, clients_per_round=6, client=CLIENT, seed=2)
    with caplog.at_level(logging.ERROR, logger="equipoise.federated.simulation"):
        result = _serial(config, train_fn=_raising_train)
    oracle = _hand_server_loop(config, exclude=lambda client_id, server_round: client_id == FAILING_CLIENT)

    _assert_same_weights(result.weights, oracle["weights"][-1])
    for record in result.history:
        assert record["num_updates"] == config.clients_per_round - 1
        assert record["failures"] == {str(FAILING_CLIENT): f"ValueError: client {FAILING_CLIENT} refuses"}
        assert record["num_examples"] == len(DATA.train_y) - CLIENT_SIZES[FAILING_CLIENT]
    errors = [r for r in caplog.records if r.name == "equipoise.federated.simulation" and r.levelno == logging.ERROR]
    assert len(errors) == config.rounds
    for server_round, record in enumerate(errors, start=1):
        message = record.getMessage()
        assert f"round {server_round}: client {FAILING_CLIENT} failed: ValueError" in message
        assert "Traceback (most recent call last)" in message and "_raising_train" in message


def test_too_few_clients_raise_simulation_error_and_keep_the_last_checkpoint(tmp_path):
    config = SimulationConfig(rounds=1, clients_per_round=6, min_fit_clients=6, client=CLIENT)
    first = _serial(config, output_dir=tmp_path)
    with pytest.raises(SimulationError, match=r"round 2: only 5 of 6 clients reported.*min_fit_clients=6"):
        _serial(replace(config, rounds=2), output_dir=tmp_path, train_fn=_raising_train)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["round"] == 1
    _assert_same_weights(checkpoint["weights"], first.weights)


def test_a_non_finite_update_is_rejected_and_the_rest_aggregated():
    config = SimulationConfig(rounds=2, clients_per_round=6, client=CLIENT, seed=4)
    result = _serial(config, train_fn=_nan_train)
    oracle = _hand_server_loop(config, exclude=lambda client_id, server_round: client_id == NAN_CLIENT)
    _assert_same_weights(result.weights, oracle["weights"][-1])
    for record, updates in zip(result.history, oracle["updates"], strict=True):
        assert list(record["rejected"]) == [str(NAN_CLIENT)] and record["failures"] == {}
        assert record["num_updates"] == 5
        expected_loss = sum(u.metrics["loss"] * u.num_examples for u in updates) / sum(u.num_examples for u in updates)
        assert record["train_loss"] == pytest.approx(expected_loss, rel=1e-12)


def test_ray_survives_a_raising_client_and_a_dead_worker(ray_session):
    # 4 clients, all sampled, on 2 workers: worker 0 gets clients 0 then 2, worker 1 gets 1 then 3, so
    # the worker that client 2 kills in round 1 has nothing else queued behind it.
    client_rows = CLIENT_ROWS[:4]
    config = SimulationConfig(rounds=3, clients_per_round=4, client=CLIENT, seed=6)
    result = simulate(
        _tiny_model, DATA, client_rows, config, backend="ray", train_fn=_faulty_worker_train, progress=False
    )
    assert [record["round"] for record in result.history] == [1, 2, 3]
    first, *later = result.history
    assert set(first["failures"]) == {"1", str(DYING_CLIENT)}
    assert first["failures"]["1"] == "ValueError: client 1 refuses"
    assert first["failures"][str(DYING_CLIENT)].startswith("worker died")
    assert first["num_updates"] == 2
    for record in later:  # the dead worker was replaced: client 2 trains again
        assert record["failures"] == {"1": "ValueError: client 1 refuses"}
        assert record["num_updates"] == 3
    oracle = _hand_server_loop(
        config,
        client_rows=client_rows,
        exclude=lambda client_id, server_round: client_id == 1 or (client_id == DYING_CLIENT and server_round == 1),
    )
    _assert_same_weights(result.weights, oracle["weights"][-1])


# --------------------------------------------------------------------------------------------
# Checkpoints and resume
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fedavg", "fedavgm"])
def test_resume_continues_and_equals_an_uninterrupted_run(tmp_path, strategy):
    config = SimulationConfig(rounds=4, clients_per_round=3, client=CLIENT, strategy=strategy, seed=7)
    uninterrupted = _serial(config)
    _serial(replace(config, rounds=2), output_dir=tmp_path)
    calls: list = []
    resumed = _serial(config, output_dir=tmp_path, train_fn=functools.partial(_recording_train, calls))

    assert sorted({call["round"] for call in calls}) == [3, 4]  # only the missing rounds ran
    _assert_same_weights(resumed.weights, uninterrupted.weights)
    assert _without_seconds(resumed.history) == _without_seconds(uninterrupted.history)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["format"] == CHECKPOINT_FORMAT and checkpoint["round"] == 4
    _assert_same_weights(checkpoint["weights"], uninterrupted.weights)
    if strategy == "fedavgm":
        buffer = checkpoint["strategy"]["momentum_buffer"]
        assert set(buffer) == set(uninterrupted.weights) and any(bool(v.abs().sum() > 0) for v in buffer.values())


def test_a_checkpoint_past_the_requested_rounds_is_refused(tmp_path):
    config = SimulationConfig(rounds=3, clients_per_round=2, client=CLIENT)
    _serial(config, output_dir=tmp_path)
    with pytest.raises(ValueError, match="rounds"):
        _serial(replace(config, rounds=2), output_dir=tmp_path)


def test_fedavgm_through_the_engine_equals_server_momentum_by_hand():
    config = SimulationConfig(
        rounds=3, clients_per_round=3, client=CLIENT, strategy="fedavgm", strategy_options={"momentum": 0.9}, seed=8
    )
    result = _serial(config)
    oracle = _hand_server_loop(config, server_momentum=0.9)
    _assert_same_weights(result.weights, oracle["weights"][-1])


def test_ray_resume_equals_an_uninterrupted_serial_run(ray_session, tmp_path):
    config = SimulationConfig(rounds=4, clients_per_round=4, client=CLIENT, seed=9)
    uninterrupted = _serial(config)
    ray_run = functools.partial(simulate, _tiny_model, DATA, CLIENT_ROWS, backend="ray", progress=False)
    ray_run(replace(config, rounds=2), output_dir=tmp_path)
    resumed = ray_run(config, output_dir=tmp_path)
    _assert_same_weights(resumed.weights, uninterrupted.weights)
    assert _without_seconds(resumed.history) == _without_seconds(uninterrupted.history)


@pytest.mark.parametrize(
    ("change", "difference"),
    [
        ({"seed": 1}, "seed"),
        ({"strategy": "fedavgm"}, "strategy"),
        ({"client": replace(CLIENT, lr=0.1)}, "client"),
    ],
)
def test_a_checkpoint_from_another_setup_is_refused(tmp_path, change, difference):
    config = SimulationConfig(rounds=1, clients_per_round=2, client=CLIENT)
    _serial(config, output_dir=tmp_path)
    with pytest.raises(ValueError, match=rf"different simulation \(differs in \['{difference}'\]\).*resume=False"):
        _serial(replace(config, rounds=2, **change), output_dir=tmp_path)


def test_a_checkpoint_from_another_partition_is_refused(tmp_path):
    config = SimulationConfig(rounds=1, clients_per_round=2, client=CLIENT)
    _serial(config, output_dir=tmp_path)
    swapped = [CLIENT_ROWS[1], CLIENT_ROWS[0], *CLIENT_ROWS[2:]]
    with pytest.raises(ValueError, match=r"differs in \['partition_digest'\]"):
        simulate(_tiny_model, DATA, swapped, replace(config, rounds=2), output_dir=tmp_path, backend="serial")


def test_a_corrupt_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a torch checkpoint at all")
    config = SimulationConfig(rounds=1, clients_per_round=2, client=CLIENT)
    with pytest.raises(ValueError, match="corrupt"):
        _serial(config, output_dir=tmp_path)


def test_resume_false_starts_afresh_over_another_setups_checkpoint(tmp_path):
    config = SimulationConfig(rounds=2, clients_per_round=2, client=CLIENT, seed=0)
    _serial(config, output_dir=tmp_path)
    other = replace(config, seed=1, rounds=1)
    fresh = _serial(other)
    restarted = _serial(other, output_dir=tmp_path, resume=False)
    _assert_same_weights(restarted.weights, fresh.weights)
    assert _without_seconds(restarted.history) == _without_seconds(fresh.history)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["round"] == 1 and json.loads(checkpoint["fingerprint"])["seed"] == 1


# --------------------------------------------------------------------------------------------
# Strategies, heads and client evaluation through the engine
# --------------------------------------------------------------------------------------------


def test_fedprox_sends_proximal_mu_to_the_clients():
    mu = 0.5
    config = SimulationConfig(
        rounds=2, clients_per_round=3, client=CLIENT, strategy="fedprox", strategy_options={"proximal_mu": mu}
    )
    calls: list = []
    result = _serial(config, train_fn=functools.partial(_recording_train, calls))
    assert {call["proximal_mu"] for call in calls} == {mu}
    oracle = _hand_server_loop(config, client_config=replace(CLIENT, proximal_mu=mu))
    _assert_same_weights(result.weights, oracle["weights"][-1])
    plain = _hand_server_loop(replace(config, strategy="fedavg", strategy_options={}))
    assert not torch.equal(result.weights["1.weight"], plain["weights"][-1]["1.weight"])  # the term acted


def test_etf_classifier_is_in_the_result_model_and_stays_fixed():
    config = SimulationConfig(rounds=3, clients_per_round=3, client=CLIENT, classifier="etf", seed=11)
    calls: list = []
    result = _serial(config, train_fn=functools.partial(_recording_train, calls))
    head = result.model[3]
    assert isinstance(head, SimplexETFClassifier)
    expected_etf = simplex_etf(HIDDEN, NUM_CLASSES, seed=config.seed)
    assert torch.equal(head.etf, expected_etf)
    assert torch.equal(result.weights["3.etf"], expected_etf)
    assert {call["round"] for call in calls} == {1, 2, 3}
    for call in calls:  # the global ETF every client receives, round after round
        assert torch.equal(call["global_weights"]["3.etf"], expected_etf)
    first = calls[0]["global_weights"]
    assert not torch.equal(result.weights["1.weight"], first["1.weight"])  # the features did train


def test_client_evaluation_reports_the_received_global_models_accuracy_on_own_rows():
    config = SimulationConfig(rounds=2, clients_per_round=3, client=CLIENT, client_evaluation=True, seed=12)
    result = _serial(config)
    oracle = _hand_server_loop(config)
    _assert_same_weights(result.weights, oracle["weights"][-1])  # evaluating does not change training
    for server_round, record in enumerate(result.history, start=1):
        received = oracle["weights"][server_round - 1]
        expected = {}
        for client_id in record["clients"]:
            rows = CLIENT_ROWS[client_id]
            predictions = _predict(received, DATA.features(rows))
            expected[str(client_id)] = accuracy_score(DATA.train_y[rows], predictions)
        assert record["client_accuracy"].keys() == expected.keys()
        for client_id, accuracy in expected.items():
            assert record["client_accuracy"][client_id] == pytest.approx(accuracy, abs=1e-7)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def test_output_dir_holds_history_json_and_png(tmp_path):
    config = SimulationConfig(rounds=3, clients_per_round=4, client=CLIENT, evaluate_every=2)
    result = _serial(config, output_dir=tmp_path)
    assert result.output_dir == tmp_path
    payload = json.loads((tmp_path / "history.json").read_text())
    history = payload["history"]
    assert len(history) == config.rounds
    assert payload["fingerprint"]["seed"] == config.seed and payload["fingerprint"]["strategy"] == "fedavg"
    size = _param_bytes(result.weights)
    assert size == 4 * (SIDE * SIDE * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES)
    for server_round, record in enumerate(history, start=1):
        assert {"round", "clients", "bytes_down", "bytes_up"} <= record.keys()
        assert record["round"] == server_round and len(record["clients"]) == config.clients_per_round
        assert record["bytes_down"] == size * config.clients_per_round
        assert record["bytes_up"] == size * record["num_updates"]
        assert ("accuracy" in record) == (server_round in (2, 3))  # every 2nd round and the last
    assert history == result.history
    assert result.final["round"] == 3
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


_OWN_RAY_SCRIPT = """
import json, sys, torch
from torch import nn
import numpy as np
from equipoise.federated.data import FederatedData
from equipoise.federated.simulation import SimulationConfig, simulate
import ray

def model_fn():
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))

rng = np.random.default_rng(0)
x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
data = FederatedData(x[:30], y[:30], x[30:], y[30:], num_classes=2)
rows = np.array_split(np.arange(30), 3)
config = SimulationConfig(rounds=2, clients_per_round=2)
on_ray = simulate(model_fn, data, rows, config, backend="ray", ray_temp_dir=sys.argv[1], num_cpus=1, progress=False)
serial = simulate(model_fn, data, rows, config, backend="serial", progress=False)
same = all(torch.equal(on_ray.weights[key], serial.weights[key]) for key in serial.weights)
print(json.dumps({"initialized_after": ray.is_initialized(), "same_as_serial": same}))
"""


def test_the_engine_starts_ray_under_ray_temp_dir_and_shuts_it_down():
    pytest.importorskip("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="eqrt", dir="/tmp")) / "ray"  # short: socket paths are limited
    try:  # a fresh process: this module's Ray is already initialised, and the engine would use it
        completed = subprocess.run(
            [sys.executable, "-c", _OWN_RAY_SCRIPT, str(temp_dir)],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        report = json.loads(completed.stdout.strip().splitlines()[-1])
        assert report == {"initialized_after": False, "same_as_serial": True}
        assert list(temp_dir.glob("session_*")), f"no Ray session under {temp_dir}"
    finally:
        shutil.rmtree(temp_dir.parent, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rounds": 0}, r"rounds must be an integer >= 1, got 0"),
        ({"clients_per_round": 0}, r"clients_per_round must be an integer >= 1, got 0"),
        ({"evaluate_every": 1.5}, r"evaluate_every must be an integer >= 1, got 1.5"),
        ({"min_fit_clients": 5, "clients_per_round": 4}, r"min_fit_clients \(5\) must be <= clients_per_round \(4\)"),
        ({"strategy": "fedsgd"}, r"strategy must be one of .*'fedavg'.*got 'fedsgd'"),
        ({"strategy_options": [("momentum", 0.9)]}, r"strategy_options must be a dict"),
        ({"classifier": "foo"}, r"classifier must be 'learned' or 'etf', got 'foo'"),
        ({"num_cpus_per_client": -1}, r"num_cpus_per_client must be a number >= 0, got -1"),
        ({"num_gpus_per_client": float("nan")}, r"num_gpus_per_client must be a number >= 0, got nan"),
        ({"num_cpus_per_client": 0}, r"num_cpus_per_client and num_gpus_per_client cannot both be 0"),
        ({"num_workers": 0}, r"num_workers must be an integer >= 1, got 0"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        ({"client_evaluation": "yes"}, r"client_evaluation must be true or false, got 'yes'"),
    ],
)
def test_simulation_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**options)


def test_simulation_config_builds_the_client_config_from_a_dict_and_rejects_other_types():
    assert SimulationConfig(client={"lr": 0.1, "batch_size": 4}).client == ClientConfig(lr=0.1, batch_size=4)
    with pytest.raises(TypeError, match=r"client must be a ClientConfig, got int"):
        SimulationConfig(client=3)


def _rows_with(index: int, rows) -> list:
    client_rows = list(CLIENT_ROWS)
    client_rows[index] = rows
    return client_rows


@pytest.mark.parametrize(
    ("client_rows", "message"),
    [
        ([], r"client_rows must be a non-empty list"),
        ("0123", r"client_rows must be a non-empty list"),
        (_rows_with(2, np.array([], dtype=np.int64)), r"client_rows\[2\] must be a non-empty 1-D integer array"),
        (_rows_with(1, np.array([0.0, 1.0])), r"client_rows\[1\] must be a non-empty 1-D integer array, got float64"),
        (_rows_with(0, np.array([[0, 1]])), r"client_rows\[0\] must be a non-empty 1-D integer array"),
        (_rows_with(3, np.array([5, 240])), r"client_rows\[3\] has row 240, outside the 240 training rows"),
        (_rows_with(4, np.array([-1, 5])), r"client_rows\[4\] has row -1, outside the 240 training rows"),
    ],
)
def test_bad_client_rows_are_rejected(client_rows, message):
    with pytest.raises(ValueError, match=message):
        simulate(_tiny_model, DATA, client_rows, SimulationConfig(rounds=1, clients_per_round=1), backend="serial")


def test_more_clients_per_round_than_clients_is_rejected():
    config = SimulationConfig(rounds=1, clients_per_round=7, client=CLIENT)
    with pytest.raises(ValueError, match=r"clients_per_round \(7\) exceeds the number of clients \(6\)"):
        _serial(config)


def _not_a_model() -> int:
    return 3


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"backend": "dask"}, ValueError, r"backend must be 'ray' or 'serial', got 'dask'"),
        ({"model_fn": _not_a_model}, TypeError, r"model_fn must return an nn.Module, got int"),
        ({"model_fn": "mlp"}, TypeError, r"model_fn must be callable, got str"),
        ({"data": (DATA.train_x, DATA.train_y)}, TypeError, r"data must be a FederatedData, got tuple"),
        ({"config": {"rounds": 1}}, TypeError, r"config must be a SimulationConfig, got dict"),
    ],
)
def test_bad_simulate_arguments_are_rejected(arguments, error, message):
    call = {
        "model_fn": _tiny_model,
        "data": DATA,
        "client_rows": CLIENT_ROWS,
        "config": SimulationConfig(rounds=1, clients_per_round=2, client=CLIENT),
        "backend": "serial",
        "progress": False,
    }
    call.update(arguments)
    with pytest.raises(error, match=message):
        simulate(**call)
