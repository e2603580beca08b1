"""Oracle tests for the federated aggregation strategies (equipoise.federated.strategies).

The references are computed another way: hand-worked numbers, a ``torch.stack`` weighted mean,
NumPy loops over the papers' update rules (FedAvgM, FedAdam, IDA), ``numpy.median`` and
``scipy.stats.trim_mean``, and ``torch.autograd`` for the proximal term's gradient.
"""

import io

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from equipoise.federated.strategies import (
    STRATEGIES,
    AggregationError,
    AggregationResult,
    ClientUpdate,
    CoordinateMedian,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    InverseDistance,
    Strategy,
    TrimmedMean,
    build_strategy,
    proximal_term,
)

# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


def _model_state(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A Linear + BatchNorm state_dict: floating parameters and buffers, and an int64 counter."""
    with torch.random.fork_rng(devices=[]):  # seeded construction without touching the global generator
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(dtype)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _perturbed(state: dict[str, torch.Tensor], seed: int, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """``state`` plus Gaussian noise on every floating entry; the counter set to ``10 * seed``."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in state.items():
        if tensor.is_floating_point():
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64) * scale
            out[name] = (tensor.double() + noise).to(tensor.dtype)
            if name.endswith("running_var"):
                out[name] = out[name].abs()
        else:
            out[name] = torch.full_like(tensor, 10 * seed)
    return out


def _updates(states, counts, prefix: str = "c") -> list[ClientUpdate]:
    return [ClientUpdate(f"{prefix}{i}", state, count) for i, (state, count) in enumerate(zip(states, counts))]


def _round_trip(state):
    """Through torch.save / torch.load(weights_only=True), as a checkpoint would go."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert list(first) == list(second)
    for name in first:
        assert first[name].dtype == second[name].dtype, name
        assert torch.equal(first[name], second[name]), name


# --------------------------------------------------------------------------------------------
# FedAvg
# --------------------------------------------------------------------------------------------


def test_fedavg_hand_worked():
    global_weights = {"w": torch.zeros(2), "b": torch.zeros(())}
    first = ClientUpdate("a", {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.0)}, num_examples=1)
    second = ClientUpdate("b", {"w": torch.tensor([5.0, 6.0]), "b": torch.tensor(4.0)}, num_examples=3)
    result = FedAvg().aggregate(global_weights, [first, second], server_round=1)
    # w: (1 * [1, 2] + 3 * [5, 6]) / 4 = [16, 20] / 4; b: (1 * 0 + 3 * 4) / 4 = 3.
    assert torch.equal(result.weights["w"], torch.tensor([4.0, 5.0]))
    assert torch.equal(result.weights["b"], torch.tensor(3.0))
    assert result.info["coefficients"] == {"a": 0.25, "b": 0.75}
    assert result.accepted == ["a", "b"] and result.rejected == {}
    assert result.info["num_accepted"] == 2 and result.info["num_rejected"] == 0
    assert result.info["non_floating_source"] is None  # no integer tensors in this model

    # Three clients: (2 * 1 + 3 * 2 + 5 * 4) / 10 = 2.8, and (2 * -1 + 3 * 0 + 5 * 1) / 10 = 0.3.
    clients = [([1.0, -1.0], 2), ([2.0, 0.0], 3), ([4.0, 1.0], 5)]
    updates = [ClientUpdate(i, {"w": torch.tensor(w)}, n) for i, (w, n) in enumerate(clients)]
    result = FedAvg().aggregate({"w": torch.zeros(2)}, updates, server_round=7)
    assert torch.equal(result.weights["w"], torch.tensor([2.8, 0.3]))
    assert result.info["coefficients"] == pytest.approx({0: 0.2, 1: 0.3, 2: 0.5}, abs=1e-15)


def test_fedavg_equals_stacked_weighted_mean():
    global_weights = _model_state(0)
    states = [_perturbed(global_weights, seed) for seed in (1, 2, 3)]
    counts = [10, 25, 7]
    result = FedAvg().aggregate(global_weights, _updates(states, counts), server_round=1)
    share = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    for name, reference in global_weights.items():
        if not reference.is_floating_point():
            continue
        stacked = torch.stack([state[name].double() for state in states])
        expected = torch.tensordot(share, stacked, dims=1).to(reference.dtype)
        torch.testing.assert_close(result.weights[name], expected, rtol=2e-7, atol=1e-7)
    # The integer counter is not averaged: it comes from the client with the most examples.
    assert torch.equal(result.weights["1.num_batches_tracked"], torch.tensor(20))
    assert result.info["non_floating_source"] == "c1"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fedavg_identical_updates_with_equal_counts_are_returned_exactly(dtype):
    global_weights = _model_state(0, dtype)
    state = _perturbed(global_weights, seed=4)
    updates = _updates([state, state, state], [17, 17, 17])
    result = FedAvg().aggregate(global_weights, updates, server_round=1)
    _assert_same_weights(result.weights, state)
    # Outputs are new tensors, not views of the inputs.
    assert all(result.weights[name].data_ptr() != state[name].data_ptr() for name in state)


# --------------------------------------------------------------------------------------------
# FedAvgM and FedAdam against hand-written loops of the papers' formulas
# --------------------------------------------------------------------------------------------

COUNTS = [3, 5, 8]


def _client_rounds(num_rounds: int = 3, seed: int = 0) -> list[list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    return [[{"w": rng.normal(size=(3, 4)), "b": rng.normal(size=3)} for _ in COUNTS] for _ in range(num_rounds)]


def _initial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100)
    return {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=3)}


def _run(strategy: Strategy, current: dict[str, torch.Tensor], rounds, first_round: int = 1):
    outputs = []
    for server_round, clients in enumerate(rounds, start=first_round):
        updates = [
            ClientUpdate(f"c{i}", {k: torch.from_numpy(v) for k, v in client.items()}, count)
            for i, (client, count) in enumerate(zip(clients, COUNTS))
        ]
        current = strategy.aggregate(current, updates, server_round).weights
        outputs.append(current)
    return outputs


def _fedavg_numpy(clients, key):
    return sum(n * client[key] for n, client in zip(COUNTS, clients)) / sum(COUNTS)


def _fedavgm_oracle(initial, rounds, momentum, server_lr):
    w = {k: v.copy() for k, v in initial.items()}
    velocity = {k: np.zeros_like(v) for k, v in w.items()}
    outputs = []
    for clients in rounds:
        for k in w:
            pseudo_gradient = w[k] - _fedavg_numpy(clients, k)
            velocity[k] = momentum * velocity[k] + pseudo_gradient
            w[k] = w[k] - server_lr * velocity[k]
        outputs.append({k: v.copy() for k, v in w.items()})
    return outputs


def _fedadam_oracle(initial, rounds, server_lr, beta1, beta2, tau):
    w = {k: v.copy() for k, v in initial.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    v = {k: np.full_like(x, tau**2) for k, x in w.items()}  # the paper's v_{-1} >= tau^2, at its minimum
    outputs = []
    for clients in rounds:
        for k in w:
            delta = _fedavg_numpy(clients, k) - w[k]
            m[k] = beta1 * m[k] + (1 - beta1) * delta
            v[k] = beta2 * v[k] + (1 - beta2) * delta**2
            w[k] = w[k] + server_lr * m[k] / (np.sqrt(v[k]) + tau)
        outputs.append({k: x.copy() for k, x in w.items()})
    return outputs


def _as_tensors(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v.copy()) for k, v in weights.items()}


def test_fedavgm_equals_hand_loop_over_three_rounds():
    rounds, initial = _client_rounds(), _initial()
    outputs = _run(FedAvgM(momentum=0.8, server_lr=0.7), _as_tensors(initial), rounds)
    expected = _fedavgm_oracle(initial, rounds, momentum=0.8, server_lr=0.7)
    for got, want in zip(outputs, expected):
        for k in want:
            np.testing.assert_allclose(got[k].numpy(), want[k], rtol=1e-12, atol=1e-12)
    # The momentum matters: without it (and without the carried state) round 3 differs.
    assert not np.allclose(expected[2]["w"], _fedavgm_oracle(initial, rounds, 0.0, 0.7)[2]["w"])


def test_fedadam_equals_hand_loop_over_three_rounds():
    rounds, initial = _client_rounds(seed=1), _initial()
    options = {"server_lr": 0.05, "beta1": 0.85, "beta2": 0.95, "tau": 1e-2}
    outputs = _run(FedAdam(**options), _as_tensors(initial), rounds)
    expected = _fedadam_oracle(initial, rounds, **options)
    for got, want in zip(outputs, expected):
        for k in want:
            np.testing.assert_allclose(got[k].numpy(), want[k], rtol=1e-12, atol=1e-12)


def test_fedadam_defaults_match_the_documented_values():
    strategy = FedAdam()
    assert (strategy.server_lr, strategy.beta1, strategy.beta2, strategy.tau) == (0.1, 0.9, 0.99, 1e-3)
    rounds, initial = _client_rounds(seed=2), _initial()
    outputs = _run(strategy, _as_tensors(initial), rounds)
    expected = _fedadam_oracle(initial, rounds, 0.1, 0.9, 0.99, 1e-3)
    np.testing.assert_allclose(outputs[-1]["w"].numpy(), expected[-1]["w"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "build", [lambda: FedAvgM(momentum=0.9, server_lr=0.5), lambda: FedAdam(server_lr=0.2, tau=1e-2)]
)
def test_server_state_round_trips_through_torch_save(build):
    rounds, initial = _client_rounds(num_rounds=3, seed=3), _initial()
    strategy = build()
    after_two = _run(strategy, _as_tensors(initial), rounds[:2])[-1]
    state = strategy.state_dict()
    saved = _round_trip(state)
    # state_dict returns copies: changing them does not touch the strategy.
    for tensors in state.values():
        for tensor in tensors.values():
            tensor.fill_(123.0)
    current = strategy.state_dict()
    assert all(torch.equal(saved[key][name], current[key][name]) for key in saved for name in saved[key])
    restored = build()
    restored.load_state_dict(saved)
    third = _run(strategy, after_two, rounds[2:], first_round=3)[-1]
    third_restored = _run(restored, after_two, rounds[2:], first_round=3)[-1]
    _assert_same_weights(third, third_restored)
    # The state carries information: a fresh strategy does not give the same third round.
    third_fresh = _run(build(), after_two, rounds[2:], first_round=3)[-1]
    assert not torch.allclose(third["w"], third_fresh["w"])


def test_fedavgm_without_momentum_and_unit_rate_is_fedavg():
    global_weights = _model_state(0)
    states = [_perturbed(global_weights, seed) for seed in (1, 2, 3)]
    updates = _updates(states, [4, 9, 2])
    plain = FedAvg().aggregate(global_weights, updates, server_round=1)
    momentum_free = FedAvgM(momentum=0.0, server_lr=1.0)
    for server_round in (1, 2):  # the (zero) momentum carried to round 2 changes nothing
        result = momentum_free.aggregate(global_weights, updates, server_round)
        for name in plain.weights:
            torch.testing.assert_close(result.weights[name], plain.weights[name], rtol=0, atol=1e-7)
        assert result.info["coefficients"] == plain.info["coefficients"]


# --------------------------------------------------------------------------------------------
# FedProx
# --------------------------------------------------------------------------------------------


def test_fedprox_aggregates_as_fedavg_and_configures_mu():
    global_weights = _model_state(0)
    updates = _updates([_perturbed(global_weights, seed) for seed in (1, 2)], [3, 11])
    strategy = FedProx(proximal_mu=0.3)
    _assert_same_weights(
        strategy.aggregate(global_weights, updates, 1).weights, FedAvg().aggregate(global_weights, updates, 1).weights
    )
    assert strategy.configure_client(5) == {"proximal_mu": 0.3}
    assert FedProx().configure_client(0) == {"proximal_mu": 0.01}
    assert FedAvg().configure_client(1) == {}


def test_proximal_term_value_and_gradient():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.BatchNorm1d(4))  # BatchNorm buffers are not parameters
    global_weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator))
    mu = 0.3
    value = proximal_term(model, global_weights, mu)
    differences = np.concatenate(
        [(p.detach().double() - global_weights[n].double()).numpy().ravel() for n, p in model.named_parameters()]
    )
    assert value.dim() == 0
    assert value.item() == pytest.approx(mu / 2 * float(np.sum(differences**2)), rel=1e-6)
    gradients = torch.autograd.grad(value, list(model.parameters()))
    for (name, param), gradient in zip(model.named_parameters(), gradients):
        torch.testing.assert_close(gradient, mu * (param.detach() - global_weights[name]))
    # A mapping of parameters gives the same value.
    as_dict = proximal_term(dict(model.named_parameters()), global_weights, mu)
    torch.testing.assert_close(as_dict, value)


def test_proximal_term_at_the_global_point_is_zero_with_zero_gradient():
    model = nn.Linear(3, 2)
    global_weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    value = proximal_term(model, global_weights, mu=1.0)
    gradients = torch.autograd.grad(value, list(model.parameters()))
    assert value.item() == 0.0
    assert all(torch.equal(gradient, torch.zeros_like(gradient)) for gradient in gradients)  # no NaN, unlike ||.||


def test_proximal_term_rejects_bad_arguments():
    model = nn.Linear(3, 2)
    global_weights = dict(model.state_dict())
    with pytest.raises(ValueError, match="mu"):
        proximal_term(model, global_weights, mu=-1.0)
    with pytest.raises(ValueError, match="'bias'"):
        proximal_term(model, {"weight": global_weights["weight"]}, mu=0.1)
    with pytest.raises(ValueError, match="shape"):
        proximal_term(model, {**global_weights, "bias": torch.zeros(3)}, mu=0.1)
    with pytest.raises(TypeError, match="model_or_params"):
        proximal_term([torch.zeros(2)], global_weights, mu=0.1)


# --------------------------------------------------------------------------------------------
# Inverse Distance Aggregation
# --------------------------------------------------------------------------------------------


def _ida_oracle(states, counts, norm, weight_by_examples):
    keys = [name for name, tensor in states[0].items() if tensor.is_floating_point()]
    flat = np.stack([np.concatenate([state[k].double().numpy().ravel() for k in keys]) for state in states])
    center = flat.mean(axis=0)
    if norm == "l1":
        distances = np.abs(flat - center).sum(axis=1)
    else:
        distances = np.sqrt(((flat - center) ** 2).sum(axis=1))
    raw = (np.asarray(counts, dtype=np.float64) if weight_by_examples else 1.0) / distances
    coefficients = raw / raw.sum()
    weights = {k: sum(c * state[k].double().numpy() for c, state in zip(coefficients, states)) for k in keys}
    return coefficients, distances, weights


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("weight_by_examples", [False, True])
def test_ida_equals_numpy(norm, weight_by_examples):
    global_weights = _model_state(0, torch.float64)
    states = [_perturbed(global_weights, seed, scale=scale) for seed, scale in ((1, 0.1), (2, 0.5), (3, 2.0))]
    counts = [30, 10, 50]
    strategy = InverseDistance(weight_by_examples=weight_by_examples, norm=norm)
    result = strategy.aggregate(global_weights, _updates(states, counts), server_round=1)
    coefficients, distances, weights = _ida_oracle(states, counts, norm, weight_by_examples)
    np.testing.assert_allclose(list(result.info["coefficients"].values()), coefficients, rtol=1e-10)
    np.testing.assert_allclose(list(result.info["distances"].values()), distances, rtol=1e-10)
    for k, expected in weights.items():
        np.testing.assert_allclose(result.weights[k].numpy(), expected, rtol=1e-10, atol=1e-12)
    # The far client (scale 2) counts least without counts; sizes can change that.
    assert coefficients.argmin() == 2 or weight_by_examples


def test_ida_identical_clients_give_the_uniform_mean_without_nan():
    global_weights = _model_state(0)
    state = _perturbed(global_weights, seed=5)
    result = InverseDistance().aggregate(global_weights, _updates([state] * 3, [1, 2, 7]), server_round=1)
    assert result.info["coefficients"] == pytest.approx({"c0": 1 / 3, "c1": 1 / 3, "c2": 1 / 3}, abs=1e-15)
    assert list(result.info["distances"].values()) == [0.0, 0.0, 0.0]
    _assert_same_weights(result.weights, state)
    # With counts, identical clients share the weight by examples (the FedAvg coefficients).
    identical = _updates([state] * 3, [1, 2, 7])
    by_examples = InverseDistance(weight_by_examples=True).aggregate(global_weights, identical, server_round=1)
    assert by_examples.info["coefficients"] == pytest.approx({"c0": 0.1, "c1": 0.2, "c2": 0.7}, abs=1e-15)
    # A single client is at its own mean.
    single = InverseDistance().aggregate(global_weights, _updates([state], [4]), 1)
    assert single.info["coefficients"] == {"c0": 1.0}


def test_ida_client_exactly_at_the_mean_takes_all_the_weight():
    # Per coordinate: a = m - d, b = m + d, c = m, with dyadic values so the mean is exact.
    global_weights = {"w": torch.zeros(2)}
    values = {"a": [1.0, -2.0], "b": [3.0, 0.0], "c": [2.0, -1.0]}
    updates = [ClientUpdate(name, {"w": torch.tensor(value)}, 5) for name, value in values.items()]
    result = InverseDistance().aggregate(global_weights, updates, server_round=1)
    assert result.info["coefficients"] == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert result.info["distances"]["c"] == 0.0
    assert torch.equal(result.weights["w"], torch.tensor([2.0, -1.0]))


# --------------------------------------------------------------------------------------------
# Coordinate-wise median and trimmed mean (Yin et al. 2018)
# --------------------------------------------------------------------------------------------


def _stack_updates(stacks: dict[str, np.ndarray]) -> list[ClientUpdate]:
    count = next(iter(stacks.values())).shape[0]
    rng = np.random.default_rng(count)
    return [
        ClientUpdate(i, {k: torch.from_numpy(v[i].copy()) for k, v in stacks.items()}, int(rng.integers(1, 100)))
        for i in range(count)
    ]


def _random_stacks(count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(count, 4, 3)), "b": rng.normal(size=(count, 3))}


@pytest.mark.parametrize("count", [1, 2, 5, 6])
def test_median_equals_numpy(count):
    stacks = _random_stacks(count, seed=count)
    global_weights = {k: torch.zeros(v.shape[1:], dtype=torch.float64) for k, v in stacks.items()}
    result = CoordinateMedian().aggregate(global_weights, _stack_updates(stacks), server_round=1)
    for k, stack in stacks.items():
        np.testing.assert_allclose(result.weights[k].numpy(), np.median(stack, axis=0), rtol=1e-15, atol=0)


@pytest.mark.parametrize("count, beta", [(7, 0.2), (10, 0.1), (5, 0.0), (9, 0.34), (4, 0.2), (3, 0.49)])
def test_trimmed_mean_equals_scipy(count, beta):
    stacks = _random_stacks(count, seed=10 + count)
    global_weights = {k: torch.zeros(v.shape[1:], dtype=torch.float64) for k, v in stacks.items()}
    result = TrimmedMean(beta=beta).aggregate(global_weights, _stack_updates(stacks), server_round=1)
    for k, stack in stacks.items():
        expected = stats.trim_mean(stack, proportiontocut=beta, axis=0)
        np.testing.assert_allclose(result.weights[k].numpy(), expected, rtol=1e-12, atol=1e-15)
    assert result.info["trimmed_per_side"] == int(beta * count)


def test_median_and_trimmed_mean_shrug_off_a_hostile_client():
    honest = _random_stacks(6, seed=3)
    hostile = {k: np.full((1, *v.shape[1:]), 1e6) for k, v in honest.items()}
    stacks = {k: np.concatenate([honest[k], hostile[k]]) for k in honest}
    global_weights = {k: torch.zeros(v.shape[1:]) for k, v in honest.items()}
    updates = [
        ClientUpdate(u.client_id, {k: t.float() for k, t in u.weights.items()}, u.num_examples)
        for u in _stack_updates(stacks)
    ]
    for strategy in (CoordinateMedian(), TrimmedMean(beta=0.2)):
        result = strategy.aggregate(global_weights, updates, server_round=1)
        for k, stack in honest.items():
            got = result.weights[k].double().numpy()
            assert np.all(got >= stack.min(axis=0) - 1e-6) and np.all(got <= stack.max(axis=0) + 1e-6), strategy
    # FedAvg, by contrast, is dragged far away by the single hostile client.
    averaged = FedAvg().aggregate(global_weights, updates, server_round=1)
    assert averaged.weights["w"].abs().min() > 1e3


# --------------------------------------------------------------------------------------------
# Validation and rejection (done once, in the base class)
# --------------------------------------------------------------------------------------------


def _corrupt(kind: str, weights: dict) -> dict:
    weights = {name: tensor.clone() for name, tensor in weights.items()}
    if kind == "nan":
        weights["0.weight"][1, 2] = float("nan")
    elif kind == "inf":
        weights["0.bias"][0] = float("-inf")
    elif kind == "missing_key":
        del weights["1.running_var"]
    elif kind == "extra_key":
        weights["head.weight"] = torch.zeros(2, 3)
    elif kind == "wrong_shape":
        weights["0.weight"] = weights["0.weight"].T.contiguous()
    elif kind == "wrong_dtype":
        weights["0.bias"] = weights["0.bias"].double()
    elif kind == "wrong_integer_dtype":
        weights["1.num_batches_tracked"] = weights["1.num_batches_tracked"].int()
    elif kind == "not_a_tensor":
        weights["0.bias"] = weights["0.bias"].tolist()
    elif kind == "wrong_device":
        weights["1.bias"] = torch.empty(3, device="meta")
    return weights


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("nan", ["'0.weight'", "nan", "(1, 2)"]),
        ("inf", ["'0.bias'", "-inf", "(0,)"]),
        ("missing_key", ["missing", "'1.running_var'"]),
        ("extra_key", ["unexpected", "'head.weight'"]),
        ("wrong_shape", ["'0.weight'", "shape (4, 3)", "expected (3, 4)"]),
        ("wrong_dtype", ["'0.bias'", "torch.float64", "expected torch.float32"]),
        ("wrong_integer_dtype", ["'1.num_batches_tracked'", "torch.int32", "expected torch.int64"]),
        ("not_a_tensor", ["'0.bias'", "not a tensor"]),
        ("wrong_device", ["'1.bias'", "meta"]),
    ],
)
@pytest.mark.parametrize("name", ["fedavg", "ida", "median", "trimmed_mean"])
def test_bad_update_is_rejected_and_the_rest_aggregated_as_if_it_were_absent(kind, fragments, name):
    global_weights = _model_state(0)
    good = [_perturbed(global_weights, seed) for seed in (1, 2)]
    bad = _corrupt(kind, _perturbed(global_weights, 3))
    # The bad client has the most examples: had it counted, it would dominate every result.
    updates = [ClientUpdate("good1", good[0], 5), ClientUpdate("bad", bad, 100), ClientUpdate("good2", good[1], 7)]
    result = build_strategy(name).aggregate(global_weights, updates, server_round=2)
    assert result.accepted == ["good1", "good2"]
    assert list(result.rejected) == ["bad"]
    for fragment in fragments:
        assert fragment in result.rejected["bad"], (fragment, result.rejected["bad"])
    assert result.info["num_rejected"] == 1 and result.info["num_accepted"] == 2
    assert result.info["non_floating_source"] == "good2"
    without = build_strategy(name).aggregate(global_weights, [updates[0], updates[2]], server_round=2)
    _assert_same_weights(result.weights, without.weights)


def test_all_rejected_or_too_few_raise_aggregation_error():
    global_weights = _model_state(0)
    bad = [ClientUpdate(i, _corrupt("nan", _perturbed(global_weights, i)), 3) for i in range(2)]
    with pytest.raises(AggregationError, match="only 0 of 2") as raised:
        FedAvg().aggregate(global_weights, bad, server_round=1)
    assert isinstance(raised.value, ValueError) and "'0.weight'" in str(raised.value)
    good = _updates([_perturbed(global_weights, seed) for seed in (4, 5)], [1, 1])
    with pytest.raises(AggregationError, match="min_updates=3"):
        FedAvg(min_updates=3).aggregate(global_weights, good + bad[:1], server_round=1)
    with pytest.raises(AggregationError, match="only 0 of 0"):
        FedAvg().aggregate(global_weights, [], server_round=1)
    assert FedAvg(min_updates=2).aggregate(global_weights, good + bad[:1], 1).accepted == ["c0", "c1"]


def test_integer_and_bool_buffers_follow_the_client_with_most_examples():
    global_weights = {**_model_state(0), "mask": torch.tensor([True, False, True])}
    states = [_perturbed(global_weights, seed) for seed in (1, 2, 3)]
    for state, mask in zip(states, ([False] * 3, [True] * 3, [False, True, False])):
        state["mask"] = torch.tensor(mask)
    seen = {}

    class Recorder(Strategy):
        def combine(self, global_weights, updates, server_round):
            seen["global"] = {k: v.dtype for k, v in global_weights.items()}
            seen["update"] = {k: v.dtype for k, v in updates[0].weights.items()}
            return {k: v.clone() for k, v in global_weights.items()}

    # counts 10, 30, 30: the tie goes to the first of the largest (c1).
    result = Recorder().aggregate(global_weights, _updates(states, [10, 30, 30]), server_round=1)
    assert torch.equal(result.weights["1.num_batches_tracked"], torch.tensor(20))
    assert torch.equal(result.weights["mask"], torch.tensor([True, True, True]))
    assert result.info["non_floating_source"] == "c1"
    floating = [k for k, v in global_weights.items() if v.is_floating_point()]
    assert list(seen["global"]) == floating and list(seen["update"]) == floating  # no integer/bool tensors
    assert set(seen["global"].values()) == {torch.float64} == set(seen["update"].values())


def test_caller_errors_raise():
    global_weights = _model_state(0)
    updates = _updates([_perturbed(global_weights, 1)] * 2, [1, 1])
    updates[1].client_id = "c0"
    with pytest.raises(ValueError, match="'c0' appears twice"):
        FedAvg().aggregate(global_weights, updates, server_round=1)
    with pytest.raises(ValueError, match="server_round"):
        FedAvg().aggregate(global_weights, updates[:1], server_round=-1)
    with pytest.raises(TypeError, match=r"updates\[0\]"):
        FedAvg().aggregate(global_weights, [global_weights], server_round=1)
    broken = {**global_weights, "0.bias": torch.tensor([0.0, float("nan"), 0.0])}
    with pytest.raises(ValueError, match="global_weights\\['0.bias'\\]"):
        FedAvg().aggregate(broken, updates[:1], server_round=1)
    with pytest.raises(ValueError, match="empty"):
        FedAvg().aggregate({}, updates[:1], server_round=1)


def test_client_update_validates_its_fields():
    weights = {"w": torch.zeros(2)}
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="num_examples"):
            ClientUpdate("a", weights, bad)
    for bad in (1.5, None, True):
        with pytest.raises(TypeError, match="client_id"):
            ClientUpdate(bad, weights, 1)
    with pytest.raises(TypeError, match="weights"):
        ClientUpdate("a", [torch.zeros(2)], 1)
    with pytest.raises(ValueError, match="1-D"):
        ClientUpdate("a", weights, 1, class_counts=[[1, 2]])
    with pytest.raises(TypeError, match="integers"):
        ClientUpdate("a", weights, 1, class_counts=[1.5, 2.0])
    with pytest.raises(ValueError, match=r"class_counts of client 'a'\[0\] = -1"):
        ClientUpdate("a", weights, 1, class_counts=[-1, 2])
    update = ClientUpdate(np.int64(7), weights, np.int32(3), class_counts=np.array([3, 4], dtype=np.int16))
    assert update.client_id == 7 and type(update.client_id) is int and update.num_examples == 3
    assert torch.equal(update.class_counts, torch.tensor([3, 4])) and update.class_counts.dtype == torch.int64
    assert update.metrics == {}


# --------------------------------------------------------------------------------------------
# User-defined strategies go through the same base class
# --------------------------------------------------------------------------------------------


class FedMax(Strategy):
    """A toy: the coordinate-wise maximum of the client models."""

    def combine(self, global_weights, updates, server_round):
        return {name: torch.stack([u.weights[name] for u in updates]).amax(dim=0) for name in global_weights}


def test_user_written_strategy_gets_validation_buffers_and_dtypes_for_free():
    global_weights = _model_state(0, torch.float16)
    states = [_perturbed(global_weights, seed) for seed in (1, 2, 3)]
    poisoned = _corrupt("nan", _perturbed(global_weights, 4))
    updates = _updates(states, [5, 9, 2]) + [ClientUpdate("poisoned", poisoned, 1000)]
    result = FedMax().aggregate(global_weights, updates, server_round=1)
    assert list(result.rejected) == ["poisoned"] and "nan" in result.rejected["poisoned"]
    for name, reference in global_weights.items():
        assert result.weights[name].dtype == reference.dtype
        if reference.is_floating_point():
            assert torch.equal(result.weights[name], torch.stack([s[name] for s in states]).amax(dim=0))
    assert torch.equal(result.weights["1.num_batches_tracked"], torch.tensor(20))
    assert isinstance(result, AggregationResult) and FedMax().min_updates == 1


def test_combine_must_return_the_floating_keys_and_shapes():
    global_weights = _model_state(0)
    updates = _updates([_perturbed(global_weights, 1)], [1])

    class DropsAKey(Strategy):
        def combine(self, global_weights, updates, server_round):
            return {k: v for k, v in global_weights.items() if k != "0.bias"}

    class WrongShape(Strategy):
        def combine(self, global_weights, updates, server_round):
            return {k: v.reshape(-1) for k, v in global_weights.items()}

    with pytest.raises(ValueError, match="missing '0.bias'"):
        DropsAKey().aggregate(global_weights, updates, server_round=1)
    with pytest.raises(ValueError, match="shape"):
        WrongShape().aggregate(global_weights, updates, server_round=1)
    with pytest.raises(NotImplementedError, match="combine"):
        Strategy().aggregate(global_weights, updates, server_round=1)


def test_a_round_that_overflows_raises_and_leaves_the_state_unchanged():
    global_weights = {"w": torch.tensor([60000.0, 1.0], dtype=torch.float16)}
    strategy = FedAvgM(momentum=0.5, server_lr=2.0)
    calm = [ClientUpdate("a", {"w": torch.tensor([59990.0, 1.5], dtype=torch.float16)}, 1)]
    after = strategy.aggregate(global_weights, calm, server_round=1).weights
    state = strategy.state_dict()
    wild = [ClientUpdate("a", {"w": torch.tensor([-60000.0, 1.0], dtype=torch.float16)}, 1)]
    with pytest.raises(AggregationError, match="non-finite.*'w'"):
        strategy.aggregate(after, wild, server_round=2)  # 6e4 - 2 * 1.2e5 overflows float16
    assert torch.equal(strategy.state_dict()["momentum_buffer"]["w"], state["momentum_buffer"]["w"])


def test_load_state_dict_checks_its_input():
    with pytest.raises(ValueError, match="keys"):
        FedAvg().load_state_dict({"momentum_buffer": {}})
    FedAvg().load_state_dict({})
    with pytest.raises(ValueError, match=r"\['momentum_buffer'\]"):
        FedAvgM().load_state_dict({"velocity": {}})
    with pytest.raises(TypeError, match="floating tensor"):
        FedAdam().load_state_dict({"first_moment": {"w": torch.zeros(2, dtype=torch.int64)}, "second_moment": {}})
    # A state from another model is refused when it is applied.
    strategy = FedAvgM()
    strategy.load_state_dict({"momentum_buffer": {"w": torch.zeros(5)}})
    with pytest.raises(ValueError, match="another model"):
        strategy.aggregate({"w": torch.zeros(2)}, [ClientUpdate(0, {"w": torch.ones(2)}, 1)], server_round=1)


# --------------------------------------------------------------------------------------------
# Hyper-parameters and the registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, options, argument",
    [
        (FedAvgM, {"momentum": 1.0}, "momentum"),
        (FedAvgM, {"momentum": -0.1}, "momentum"),
        (FedAvgM, {"server_lr": 0.0}, "server_lr"),
        (FedAdam, {"server_lr": -1.0}, "server_lr"),
        (FedAdam, {"beta1": 1.0}, "beta1"),
        (FedAdam, {"beta2": float("nan")}, "beta2"),
        (FedAdam, {"tau": 0.0}, "tau"),
        (FedProx, {"proximal_mu": -0.5}, "proximal_mu"),
        (FedProx, {"proximal_mu": float("inf")}, "proximal_mu"),
        (TrimmedMean, {"beta": 0.5}, "beta"),
        (TrimmedMean, {"beta": -0.1}, "beta"),
        (InverseDistance, {"norm": "l3"}, "norm"),
        (InverseDistance, {"weight_by_examples": 1}, "weight_by_examples"),
        (FedAvg, {"min_updates": 0}, "min_updates"),
        (CoordinateMedian, {"min_updates": True}, "min_updates"),
    ],
)
def test_hyper_parameters_are_validated_at_construction(cls, options, argument):
    with pytest.raises(ValueError) as raised:
        cls(**options)
    message = str(raised.value)
    assert argument in message and repr(options[argument]) in message


def test_registry_and_build_strategy():
    assert STRATEGIES.names() == ["fedadam", "fedavg", "fedavgm", "fedprox", "ida", "median", "trimmed_mean"]
    strategy = build_strategy("fedavgm", momentum=0.5)
    assert isinstance(strategy, FedAvgM) and strategy.momentum == 0.5 and strategy.server_lr == 1.0
    assert isinstance(build_strategy("ida"), InverseDistance)
    with pytest.raises(ValueError, match="fedavg"):
        build_strategy("krum")


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_registered_strategy_aggregates_and_checkpoints(name):
    global_weights = _model_state(0)
    rounds = [_updates([_perturbed(global_weights, 10 * r + i) for i in range(4)], [3, 1, 4, 1]) for r in range(3)]
    strategy = build_strategy(name)
    current = global_weights
    for server_round, updates in enumerate(rounds[:2], start=1):
        current = strategy.aggregate(current, updates, server_round).weights
    restored = build_strategy(name)
    restored.load_state_dict(_round_trip(strategy.state_dict()))
    third = strategy.aggregate(current, rounds[2], 3)
    _assert_same_weights(third.weights, restored.aggregate(current, rounds[2], 3).weights)
    for tensor_name, tensor in third.weights.items():
        assert tensor.dtype == global_weights[tensor_name].dtype and tensor.shape == global_weights[tensor_name].shape
        assert not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())
    assert isinstance(strategy.configure_client(3), dict)
