"""The MetaBalance tabular networks against hand computations: parameter counts worked out layer by
layer, the forward pass recomputed from the weights with plain tensor algebra, dropout seen
through its effect, and seeded construction compared with a build under an explicit seed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equipoise.tabular.models import NETWORKS, FeedForward, build_network, fraud_network, loan_network

LOAN_FEATURES, FRAUD_FEATURES = 19, 30  # the inputs equipoise.tabular.data produces


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _manual_forward(net: FeedForward, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode forward from the weights alone: relu(x W^T + b) per hidden layer, then the head."""
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    for linear in linears:
        x = torch.clamp(x @ linear.weight.T + linear.bias, min=0)
    return (x @ net.head.weight.T + net.head.bias)[:, 0]


def test_parameter_counts_by_hand():
    # Loan: 19 -> 25 -> 1: (19 * 25 + 25) + (25 * 1 + 1) = 500 + 26.
    assert _count(build_network("loan", LOAN_FEATURES)) == 19 * 25 + 25 + 25 + 1 == 526
    # Fraud: 30 -> 16 -> 24 -> 20 -> 24 -> 1.
    fraud = (30 * 16 + 16) + (16 * 24 + 24) + (24 * 20 + 20) + (20 * 24 + 24) + (24 + 1)
    assert fraud == 496 + 408 + 500 + 504 + 25 == 1933
    assert _count(build_network("fraud", FRAUD_FEATURES)) == fraud
    # Any widths: sum of (inputs + 1) * outputs over the layers.
    net = FeedForward(7, hidden=(3, 5), dropout={0: 0.2})
    assert _count(net) == (7 + 1) * 3 + (3 + 1) * 5 + (5 + 1) * 1
    assert _count(FeedForward(4, hidden=())) == 5  # logistic regression


def test_layer_order_and_dropout_placement():
    fraud = build_network("fraud", FRAUD_FEATURES)
    kinds = [type(m) for m in fraud.layers]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert fraud.layers[4].p == 0.5  # after the second hidden layer's ReLU
    widths = [(m.in_features, m.out_features) for m in fraud.layers if isinstance(m, nn.Linear)]
    assert widths == [(30, 16), (16, 24), (24, 20), (20, 24)]
    assert (fraud.head.in_features, fraud.head.out_features) == (24, 1)
    loan = build_network("loan", LOAN_FEATURES)
    assert [type(m) for m in loan.layers] == [nn.Linear, nn.ReLU]
    assert not any(isinstance(m, nn.Dropout) for m in loan.modules())


@pytest.mark.parametrize("name, in_features", [("loan", LOAN_FEATURES), ("fraud", FRAUD_FEATURES)])
def test_output_is_one_logit_per_example(name, in_features):
    net = build_network(name, in_features, seed=0).eval()
    x = torch.randn(37, in_features, generator=torch.Generator().manual_seed(1))
    logits = net(x)
    assert logits.shape == (37,) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, _manual_forward(net, x))
    loss = F.binary_cross_entropy_with_logits(logits, (torch.arange(37) % 5 == 0).float())
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())


def test_dropout_is_deterministic_in_eval_and_random_in_train():
    x = torch.randn(256, FRAUD_FEATURES, generator=torch.Generator().manual_seed(2))
    fraud = build_network("fraud", FRAUD_FEATURES, seed=0)
    fraud.eval()
    torch.testing.assert_close(fraud(x), fraud(x), rtol=0, atol=0)
    fraud.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        first, second = fraud(x), fraud(x)
    assert not torch.equal(first, second)
    # Train mode with dropout switched off equals eval mode: dropout is the only difference.
    fraud.layers[4].p = 0.0
    torch.testing.assert_close(fraud(x), _manual_forward(fraud, x))
    # The loan network has no dropout: train mode is deterministic too.
    loan = build_network("loan", LOAN_FEATURES, seed=0).train()
    y = torch.randn(64, LOAN_FEATURES, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loan(y), loan(y), rtol=0, atol=0)


def test_dropout_zeroes_the_second_hidden_layer():
    """With p close to 1 nearly every unit after the second hidden layer is dropped: the logits then
    collapse towards what the network gives for a zero activation there."""
    net = FeedForward(6, hidden=(4, 5, 3), dropout={1: 0.999}).train()
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(4))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        logits = net(x)
    third = net.layers[5]  # Linear(5, 3), right after the dropout
    constant = net.head(torch.relu(third.bias)).squeeze(-1)  # the zeroed second layer feeds only biases on
    assert (logits == constant).float().mean() > 0.95


def test_seeded_construction_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = build_network("fraud", FRAUD_FEATURES, seed=11)
    b = build_network("fraud", FRAUD_FEATURES, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    c = build_network("fraud", FRAUD_FEATURES, seed=12)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
    # Oracle: the same network built by hand under an explicit seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        manual = FeedForward(FRAUD_FEATURES, hidden=(16, 24, 20, 24), dropout={1: 0.5})
    for pa, pm in zip(a.state_dict().values(), manual.state_dict().values()):
        assert torch.equal(pa, pm)
    # Without a seed the default generator is used (and advanced), as for any nn.Module.
    build_network("loan", LOAN_FEATURES)
    assert not torch.equal(torch.get_rng_state(), state)


def test_registry_and_overrides():
    assert NETWORKS.names() == ["fraud", "loan"]
    assert NETWORKS.get("loan") is loan_network and NETWORKS.get("fraud") is fraud_network
    net = build_network("fraud", 8, seed=0, dropout={})
    assert net.hidden == (16, 24, 20, 24) and not any(isinstance(m, nn.Dropout) for m in net.modules())
    assert build_network("loan", 8, hidden=(10, 10)).hidden == (10, 10)
    assert "hidden=(16, 24, 20, 24), dropout={1: 0.5}" in repr(build_network("fraud", 30))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: build_network("mlp", 4), ValueError, "unknown tabular network 'mlp'; known: fraud, loan"),
        (lambda: build_network("loan", 0), ValueError, "in_features must be an integer >= 1, got 0"),
        (lambda: build_network("loan", 3.0), ValueError, "in_features must be an integer >= 1, got 3.0"),
        (lambda: build_network("loan", 4, seed=1.5), TypeError, "seed must be an integer or None, got 1.5"),
        (lambda: FeedForward(4, hidden=(8, 0)), ValueError, r"layer widths >= 1, got \[8, 0\]"),
        (lambda: FeedForward(4, hidden=(8, 2.5)), ValueError, "hidden must hold integer layer widths"),
        (lambda: FeedForward(4, hidden=8), TypeError, "hidden must be a sequence of layer widths"),
        (lambda: FeedForward(4, hidden=(8, 8), dropout={2: 0.5}), ValueError, r"indices in \[0, 2\), got 2"),
        (lambda: FeedForward(4, hidden=(), dropout={0: 0.5}), ValueError, r"indices in \[0, 0\)"),
        (lambda: FeedForward(4, dropout={0: 1.0}), ValueError, r"probabilities must lie in \[0, 1\), got 1.0"),
        (lambda: FeedForward(4, dropout={0: -0.1}), ValueError, "probabilities must lie in"),
        (lambda: FeedForward(4, dropout=[0.5]), TypeError, "dropout must be a mapping"),
    ],
)
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()
