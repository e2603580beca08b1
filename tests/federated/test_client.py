"""Oracle tests for the federated client (equipoise.federated.client).

The references are computed another way: the losses by hand with ``F.cross_entropy`` on shifted
logits, local training by hand-written SGD steps (gradients from ``torch.autograd`` on a
functional call, momentum and weight decay as in the SGD update rule), the ETF by its Gram
matrix, and the evaluation by scikit-learn's ``accuracy_score``/``balanced_accuracy_score``.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score
from torch import nn
from torch.func import functional_call

from equipoise.federated.client import (
    CLIENT_LOSSES,
    ClientConfig,
    SimplexETFClassifier,
    attach_etf_head,
    client_loss,
    evaluate_model,
    local_train,
    simplex_etf,
)
from equipoise.federated.strategies import ClientUpdate

torch.set_num_threads(1)

NUM_FEATURES, NUM_CLASSES = 8, 4


def _mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)  # test-only: builds a reproducible initial model
    return nn.Sequential(nn.Linear(NUM_FEATURES, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, NUM_CLASSES))


def _data(size: int = 24, seed: int = 0, classes=(0, 1, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes)[torch.randint(len(classes), (size,), generator=generator)]
    features = torch.randn(size, NUM_FEATURES, generator=generator)
    return features, labels


def _clusters(size: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A linearly separable toy problem: one tight Gaussian cluster per class."""
    generator = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(NUM_CLASSES, NUM_FEATURES, generator=generator)
    labels = torch.arange(size) % NUM_CLASSES
    return centers[labels] + 0.3 * torch.randn(size, NUM_FEATURES, generator=generator), labels


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


# --------------------------------------------------------------------------------------------
# client_loss
# --------------------------------------------------------------------------------------------

LOGITS = torch.tensor([[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 1.5], [-2.0, 0.7, 0.0, 0.4]], dtype=torch.float64)
TARGETS = torch.tensor([0, 3, 2])
COUNTS = torch.tensor([5, 0, 2, 1])  # class 1 absent: counted as count_floor
FLOORED = torch.tensor([5.0, 1.0, 2.0, 1.0], dtype=torch.float64)


def test_client_loss_cross_entropy_is_plain_cross_entropy():
    loss = client_loss("cross_entropy", COUNTS)
    assert torch.allclose(loss(LOGITS, TARGETS), F.cross_entropy(LOGITS, TARGETS), atol=1e-12)


def test_client_loss_balanced_softmax_is_cross_entropy_on_logits_plus_log_floored_counts():
    loss = client_loss("balanced_softmax", COUNTS)
    expected = F.cross_entropy(LOGITS + FLOORED.log(), TARGETS)
    assert torch.allclose(loss(LOGITS, TARGETS), expected, atol=1e-12)
    half = client_loss("balanced_softmax", COUNTS, count_floor=0.5)
    floored = torch.tensor([5.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    assert torch.allclose(half(LOGITS, TARGETS), F.cross_entropy(LOGITS + floored.log(), TARGETS), atol=1e-12)


def test_client_loss_logit_adjusted_uses_floored_priors_and_tau():
    loss = client_loss("logit_adjusted", COUNTS, tau=0.5)
    priors = FLOORED / FLOORED.sum()
    expected = F.cross_entropy(LOGITS + 0.5 * priors.log(), TARGETS)
    assert torch.allclose(loss(LOGITS, TARGETS), expected, atol=1e-12)


@pytest.mark.parametrize("name", ["balanced_softmax", "logit_adjusted"])
def test_client_loss_is_finite_with_gradients_on_an_absent_class(name):
    logits = LOGITS.clone().requires_grad_(True)
    value = client_loss(name, COUNTS)(logits, torch.tensor([1, 1, 1]))  # only the absent class
    value.backward()
    assert math.isfinite(value.item()) and bool(torch.isfinite(logits.grad).all())


def test_client_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="known: .*balanced_softmax.*cross_entropy.*logit_adjusted"):
        client_loss("focal_typo", COUNTS)
    with pytest.raises(ValueError, match="all zero"):
        client_loss("balanced_softmax", [0, 0, 0])
    with pytest.raises(ValueError, match="class_counts"):
        client_loss("balanced_softmax", [3, -1, 2])
    with pytest.raises(ValueError, match="count_floor"):
        client_loss("balanced_softmax", COUNTS, count_floor=0)
    assert set(CLIENT_LOSSES.names()) == {"balanced_softmax", "cross_entropy", "logit_adjusted"}


# --------------------------------------------------------------------------------------------
# ClientConfig
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("local_epochs", 0),
        ("local_epochs", 1.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("weight_decay", -1e-4),
        ("proximal_mu", -0.1),
        ("proximal_mu", float("inf")),
        ("loss", "focal"),
        ("loss_options", [1]),
        ("device", "gpu7"),
    ],
)
def test_client_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ClientConfig(**{field: value})


def test_client_config_defaults():
    config = ClientConfig()
    assert (config.local_epochs, config.batch_size, config.lr, config.momentum) == (1, 32, 0.01, 0.0)
    assert (config.weight_decay, config.loss, config.loss_options) == (0.0, "cross_entropy", {})
    assert (config.proximal_mu, config.device) == (0.0, "cpu")


# --------------------------------------------------------------------------------------------
# Simplex ETF
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "num_classes"), [(4, 4), (8, 5), (16, 10)])
def test_simplex_etf_gram_matrix(dim, num_classes):
    etf = simplex_etf(dim, num_classes, seed=3).double()
    identity = torch.eye(num_classes, dtype=torch.float64)
    expected = num_classes / (num_classes - 1) * (identity - torch.ones(num_classes, num_classes) / num_classes)
    assert etf.shape == (dim, num_classes)
    assert torch.allclose(etf.T @ etf, expected, atol=1e-6)
    norms = etf.norm(dim=0)
    cosines = (etf.T @ etf) / torch.outer(norms, norms)
    assert torch.allclose(norms, torch.ones(num_classes, dtype=torch.float64), atol=1e-6)
    off_diagonal = cosines[~torch.eye(num_classes, dtype=torch.bool)]
    assert torch.allclose(off_diagonal, torch.full_like(off_diagonal, -1 / (num_classes - 1)), atol=1e-6)


def test_simplex_etf_depends_only_on_the_seed():
    state = torch.get_rng_state()
    assert torch.equal(simplex_etf(8, 4, seed=1), simplex_etf(8, 4, seed=1))
    assert not torch.allclose(simplex_etf(8, 4, seed=1), simplex_etf(8, 4, seed=2))
    assert torch.equal(torch.get_rng_state(), state)  # no global random state used


def test_simplex_etf_needs_dim_at_least_num_classes():
    with pytest.raises(ValueError, match="dim"):
        simplex_etf(3, 4)
    with pytest.raises(ValueError, match="num_classes"):
        simplex_etf(8, 1)
    with pytest.raises(ValueError, match="dim"):
        SimplexETFClassifier(16, 10, projection_dim=8)


def test_etf_classifier_weights_are_a_buffer_and_logits_match_the_formula():
    head = SimplexETFClassifier(6, NUM_CLASSES, seed=5, temperature=2.5)
    assert "etf" in dict(head.named_buffers()) and "etf" in head.state_dict()
    assert all(param is not head.etf for param in head.parameters())
    assert not head.etf.requires_grad
    features = torch.randn(7, 6, generator=torch.Generator().manual_seed(0))
    expected = 2.5 * (features / features.norm(dim=1, keepdim=True)) @ simplex_etf(6, NUM_CLASSES, seed=5)
    logits = head(features)
    assert torch.allclose(logits, expected, atol=1e-6)
    logits.sum().backward()
    assert head.etf.grad is None and head.temperature.grad is not None
    fixed = SimplexETFClassifier(6, NUM_CLASSES, learn_temperature=False)
    assert len(list(fixed.parameters())) == 0
    projected = SimplexETFClassifier(3, NUM_CLASSES, projection_dim=5)
    assert projected(torch.randn(2, 3)).shape == (2, NUM_CLASSES) and projected.etf.shape == (5, NUM_CLASSES)


def test_attach_etf_head_replaces_the_last_classifier_and_checks_the_name():
    model = _mlp()
    head = attach_etf_head(model, NUM_CLASSES, seed=0)
    assert model[3] is head and head.in_features == 16
    assert torch.equal(model[3].etf, simplex_etf(16, NUM_CLASSES, seed=0))
    with pytest.raises(ValueError, match="num_classes"):
        attach_etf_head(_mlp(), 7)
    with pytest.raises(ValueError, match="name"):
        attach_etf_head(_mlp(), NUM_CLASSES, name="head")


def test_model_with_etf_head_trains_while_the_etf_stays_fixed():
    model = _mlp(seed=1)
    attach_etf_head(model, NUM_CLASSES, seed=0, temperature=1.0)
    features, labels = _clusters()
    start = _state(model)
    initial = F.cross_entropy(model(features), labels).item()
    config = ClientConfig(local_epochs=15, batch_size=16, lr=0.5, momentum=0.9)
    update = local_train(model, features, labels, start, config, seed=0)
    final = F.cross_entropy(model(features), labels).item()
    assert final < 0.5 * initial
    assert update.metrics["loss"] < initial
    assert torch.equal(update.weights["3.etf"], start["3.etf"])
    assert not torch.equal(update.weights["3.temperature"], start["3.temperature"])
    assert evaluate_model(model, features, labels, NUM_CLASSES)["accuracy"] == 1.0


# --------------------------------------------------------------------------------------------
# local_train
# --------------------------------------------------------------------------------------------


def _hand_sgd(model, global_weights, features, labels, loss_fn, epochs, lr, momentum, weight_decay, mu):
    """Full-batch SGD written out: d = grad(loss) + mu (w - w_t) + wd w; buf = m buf + d; w -= lr buf."""
    params = {key: value.clone() for key, value in global_weights.items() if key in dict(model.named_parameters())}
    anchor = {key: value.clone() for key, value in params.items()}
    buffers = {key: value for key, value in global_weights.items() if key not in params}
    momenta: dict[str, torch.Tensor] = {}
    for _ in range(epochs):
        leaves = {key: value.clone().requires_grad_(True) for key, value in params.items()}
        loss = loss_fn(functional_call(model, {**leaves, **buffers}, (features,)), labels)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        for key in params:
            step = grads[key] + mu * (params[key] - anchor[key]) + weight_decay * params[key]
            momenta[key] = step if key not in momenta else momentum * momenta[key] + step
            params[key] = params[key] - lr * momenta[key]
    return params


@pytest.mark.parametrize(
    ("loss", "epochs", "momentum", "weight_decay", "mu"),
    [
        ("cross_entropy", 1, 0.0, 0.0, 0.0),
        ("cross_entropy", 2, 0.0, 0.0, 0.5),  # the second step sees mu * (w1 - w_t)
        ("balanced_softmax", 3, 0.9, 0.01, 0.3),
    ],
)
def test_local_train_equals_hand_written_sgd(loss, epochs, momentum, weight_decay, mu):
    features, labels = _data(size=12)  # class 2 absent
    global_weights = _state(_mlp(seed=2))
    optimiser = {"lr": 0.1, "momentum": momentum, "weight_decay": weight_decay}
    config = ClientConfig(local_epochs=epochs, batch_size=64, loss=loss, proximal_mu=mu, **optimiser)
    update = local_train(_mlp(seed=9), features, labels, global_weights, config, seed=0, client_id="a")
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    if loss == "balanced_softmax":
        shift = counts.clamp_min(1).float().log()

        def loss_fn(logits, target):
            return F.cross_entropy(logits + shift, target)
    else:
        loss_fn = F.cross_entropy
    expected = _hand_sgd(_mlp(), global_weights, features, labels, loss_fn, epochs, 0.1, momentum, weight_decay, mu)
    for key, value in expected.items():
        assert torch.allclose(update.weights[key], value, atol=1e-6), key
    if epochs > 1 and mu > 0:  # the proximal term changed the result
        no_prox = _hand_sgd(_mlp(), global_weights, features, labels, loss_fn, epochs, 0.1, momentum, weight_decay, 0.0)
        assert any(not torch.allclose(no_prox[key], expected[key], atol=1e-5) for key in expected)
    assert isinstance(update, ClientUpdate) and update.client_id == "a"
    assert update.num_examples == 12
    assert torch.equal(update.class_counts, counts)
    assert ("proximal_term" in update.metrics) == (mu > 0)
    assert all(value.device.type == "cpu" for value in update.weights.values())


def test_local_train_reports_the_mean_loss_of_the_last_epoch():
    features, labels = _data(size=10)
    global_weights = _state(_mlp())
    update = local_train(_mlp(), features, labels, global_weights, ClientConfig(batch_size=4, lr=1e-12), seed=0)
    expected = F.cross_entropy(_mlp()(features), labels).item()  # lr ~ 0: every batch sees the global model
    assert update.metrics["loss"] == pytest.approx(expected, rel=1e-5)


def test_local_train_is_deterministic_and_leaves_the_global_random_state_alone():
    features, labels = _data(size=40)
    global_weights = _state(_mlp(dropout=0.5))
    config = ClientConfig(local_epochs=2, batch_size=8, lr=0.05, momentum=0.9)
    state = torch.get_rng_state()
    first = local_train(_mlp(dropout=0.5), features, labels, global_weights, config, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    second = local_train(_mlp(dropout=0.5), features, labels, global_weights, config, seed=11)
    other = local_train(_mlp(dropout=0.5), features, labels, global_weights, config, seed=12)
    assert all(torch.equal(first.weights[key], second.weights[key]) for key in first.weights)
    assert any(not torch.equal(first.weights[key], other.weights[key]) for key in first.weights)


def test_local_train_rejects_bad_inputs_naming_them():
    features, labels = _data(size=8)
    weights = _state(_mlp())
    config = ClientConfig()
    with pytest.raises(ValueError, match="labels is empty"):
        local_train(_mlp(), features[:0], labels[:0], weights, config, seed=0)
    with pytest.raises(ValueError, match="labels must lie in"):
        local_train(_mlp(), features, torch.full((8,), NUM_CLASSES), weights, config, seed=0)
    with pytest.raises(ValueError, match="labels must lie in"):
        local_train(_mlp(), features, torch.full((8,), -1), weights, config, seed=0)
    bad = features.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="features has non-finite"):
        local_train(_mlp(), bad, labels, weights, config, seed=0)
    with pytest.raises(ValueError, match="features has 8 rows"):
        local_train(_mlp(), features, labels[:5], weights, config, seed=0)
    with pytest.raises(ValueError, match="labels must hold integer"):
        local_train(_mlp(), features, labels.float(), weights, config, seed=0, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="global_weights do not fit"):
        local_train(_mlp(), features, labels, {"0.weight": weights["0.weight"]}, config, seed=0)
    with pytest.raises(ValueError, match="seed"):
        local_train(_mlp(), features, labels, weights, config, seed=1.5)


def test_local_train_raises_floating_point_error_on_a_non_finite_loss():
    features, labels = _data(size=8)
    weights = {key: value.abs() * 1e30 + 1e30 for key, value in _state(_mlp()).items()}  # overflows to inf
    with pytest.raises(FloatingPointError, match=r"client 'c7' in round 3: .* epoch 0, batch 0"):
        local_train(_mlp(), features, labels, weights, ClientConfig(), seed=0, client_id="c7", server_round=3)


# --------------------------------------------------------------------------------------------
# evaluate_model
# --------------------------------------------------------------------------------------------


def test_evaluate_model_equals_sklearn():
    features, labels = _data(size=50, seed=4)  # class 2 absent
    model = _mlp(seed=5)
    result = evaluate_model(model, features, labels, NUM_CLASSES, batch_size=7)
    preds = model(features).argmax(dim=1).numpy()
    truth = labels.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that a predicted class is absent from y_true
        balanced = balanced_accuracy_score(truth, preds)
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, preds))
    assert result["balanced_accuracy"] == pytest.approx(balanced)
    recalls = recall_score(truth, preds, labels=[0, 1, 3], average=None)
    assert result["per_class_accuracy"][2] is None
    assert np.allclose([result["per_class_accuracy"][c] for c in (0, 1, 3)], recalls)
    assert result["worst_class_accuracy"] == pytest.approx(recalls.min())
    assert result["num_examples"] == 50
    assert model.training  # mode restored


def test_evaluate_model_rejects_bad_inputs():
    features, labels = _data(size=6)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_model(_mlp(), features, labels, NUM_CLASSES, batch_size=0)
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_model(_mlp(), features, labels, 3)  # labels go up to 3
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_model(_mlp(), features, labels % 2, 5)  # the model has 4 outputs
