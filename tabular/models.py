"""The MetaBalance paper's feed-forward networks for loan default and credit-card fraud, built by name.

>>> from equipoise.tabular.models import build_network
>>> net = build_network("fraud", in_features=30, seed=0)
>>> logits = net(x)                      # x: (N, 30) float32 -> (N,) logits
>>> loss = F.binary_cross_entropy_with_logits(logits, y.float())

Bansal, Goldblum, Cherepanova, Schwarzschild, Bruss, Goldstein, "MetaBalance: High-Performance
Neural Networks for Class-Imbalanced Data", 2021 (arXiv 2106.09643), trains small fully connected
ReLU networks on the two tabular tasks, with binary cross-entropy:

| name | hidden layers | dropout | parameters (inputs of :mod:`equipoise.tabular.data`) |
|---|---|---|---|
| loan | 25 | none | 526 (19 inputs) |
| fraud | 16, 24, 20, 24 | 0.5 after the second hidden layer | 1,933 (30 inputs) |

Both end in one linear unit: the network gives ONE logit per example, shape ``(N,)``, for
``binary_cross_entropy_with_logits`` (a sigmoid of it is the probability of the positive class).
Deliberate choice: the weights keep PyTorch's default ``nn.Linear`` initialisation (the paper
does not specify one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from equipoise.core.registry import Registry

__all__ = ["NETWORKS", "FeedForward", "build_network", "fraud_network", "loan_network"]

NETWORKS: Registry[Callable[..., nn.Module]] = Registry("tabular network")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class FeedForward(nn.Module):
    """A fully connected ReLU network with one output logit per example.

    ``x -> [Linear(d_i, h_i) -> ReLU -> (Dropout(p_i) if i in dropout)] for each hidden width h_i
    -> Linear(h_last, 1) -> squeeze``. With ``hidden=()`` it is logistic regression.

    Args:
        in_features: number of input features ``D``, >= 1.
        hidden: widths of the hidden layers, each >= 1 (default ``(25,)``: the loan network).
        dropout: ``{index: p}``, dropout with probability ``p`` in [0, 1) after the ReLU of
            hidden layer ``index`` (0-based); default none. The fraud network uses ``{1: 0.5}``.

    Shapes: ``(N, D)`` float input, ``(N,)`` logits out.

    Attributes:
        layers: the hidden stack (``nn.Sequential``); ``head``: the final ``Linear(., 1)``.
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int] = (25,), dropout: Mapping[int, float] | None = None
    ) -> None:
        super().__init__()
        if not _is_int(in_features) or in_features < 1:
            raise ValueError(f"in_features must be an integer >= 1, got {in_features!r}")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of layer widths, got {type(hidden).__name__}")
        if any(not _is_int(width) or width < 1 for width in hidden):
            raise ValueError(f"hidden must hold integer layer widths >= 1, got {list(hidden)!r}")
        dropout = {} if dropout is None else dropout
        if not isinstance(dropout, Mapping):
            raise TypeError(f"dropout must be a mapping {{hidden layer index: probability}}, got {dropout!r}")
        for index, probability in dropout.items():
            if not _is_int(index) or not 0 <= index < len(hidden):
                raise ValueError(
                    f"dropout keys must be hidden layer indices in [0, {len(hidden)}), got {index!r} "
                    f"(hidden={list(hidden)})"
                )
            if not (isinstance(probability, (int, float)) and not isinstance(probability, bool)) or not (
                0 <= probability < 1
            ):
                raise ValueError(f"dropout probabilities must lie in [0, 1), got {probability!r} for layer {index}")
        self.in_features = int(in_features)
        self.hidden = tuple(int(width) for width in hidden)
        self.dropout = {int(index): float(probability) for index, probability in sorted(dropout.items())}
        layers: list[nn.Module] = []
        width = self.in_features
        for index, out_features in enumerate(self.hidden):
            layers += [nn.Linear(width, out_features), nn.ReLU()]
            if index in self.dropout:
                layers.append(nn.Dropout(self.dropout[index]))
            width = out_features
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x)).squeeze(-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, hidden={self.hidden}, dropout={self.dropout}"


@NETWORKS.register("loan")
def loan_network(in_features: int, **overrides: Any) -> FeedForward:
    """MetaBalance's loan-default network: one hidden layer of 25 ReLU units (``overrides`` go to FeedForward)."""
    return FeedForward(in_features, **{"hidden": (25,), "dropout": {}, **overrides})


@NETWORKS.register("fraud")
def fraud_network(in_features: int, **overrides: Any) -> FeedForward:
    """MetaBalance's fraud network: hidden layers 16, 24, 20, 24 (ReLU), dropout 0.5 after the second."""
    return FeedForward(in_features, **{"hidden": (16, 24, 20, 24), "dropout": {1: 0.5}, **overrides})


def build_network(name: str, in_features: int, seed: int | None = None, **overrides: Any) -> nn.Module:
    """The network registered as ``name`` (``"loan"``, ``"fraud"``) for ``in_features`` inputs.

    Args:
        name: a name of :data:`NETWORKS`; unknown names raise ``ValueError`` listing the known ones.
        in_features: number of input features, >= 1 (``TabularData.X.shape[1]``).
        seed: when given, the initial weights are drawn from this seed inside
            ``torch.random.fork_rng``: same seed, same network, and the caller's random state is
            unchanged. ``None`` draws from PyTorch's default generator as usual.
        **overrides: :class:`FeedForward` arguments replacing the paper's (``hidden``, ``dropout``).

    Returns:
        The network on the CPU in float32; ``net(x)`` maps ``(N, in_features)`` to ``(N,)`` logits.
    """
    factory = NETWORKS.get(name)
    if seed is not None and not _is_int(seed):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    if seed is None:
        return factory(in_features, **overrides)
    # The network is built on the CPU, so only the CPU generator is forked (no CUDA initialisation).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory(in_features, **overrides)
