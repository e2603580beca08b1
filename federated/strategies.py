"""Server-side aggregation strategies for federated learning, behind one small interface.

The interface
-------------
Weights are a model's ``state_dict``: ``dict[str, torch.Tensor]``, on the CPU. Each round the
server collects one :class:`ClientUpdate` per client (its weights, its number of training
examples, optionally its class counts and metrics) and calls::

    result = strategy.aggregate(global_weights, updates, server_round)   # -> AggregationResult
    result.weights      # the new global state_dict (same keys, shapes, dtypes as global_weights)
    result.accepted     # client ids that were aggregated
    result.rejected     # client id -> reason, for updates that failed validation
    result.info         # per-round details, e.g. the coefficient each client got

:meth:`Strategy.aggregate` does the same work for every strategy, once:

1. **Validation.** An update must have exactly the global's keys, with the same shapes, dtypes and
   devices, and only finite values in its floating tensors. An update failing any check is
   *rejected*: it is left out of the round (never averaged in, never raising), its reason names
   the key and the offending shape, dtype or value, it is logged, and it is counted in
   ``result.rejected`` and ``result.info["num_rejected"]``. If fewer than ``min_updates``
   (default 1) remain, :class:`AggregationError` is raised.
2. **Non-floating tensors** (integer, bool and complex entries such as BatchNorm's
   ``num_batches_tracked``) are not averaged: the new global takes them from the accepted update
   with the most examples (the first such update in the given order on a tie), because an average
   of counters or masks is not a counter or a mask, and the largest client's value is the one
   that best describes the aggregated model. ``result.info["non_floating_source"]`` names it.
3. **The hook.** The subclass's ``combine(global_weights, updates, server_round)`` sees only the
   floating tensors, as float64 copies (of the global and of each accepted update), and returns
   the new floating tensors (float64 or any floating dtype), optionally with a dict of info:
   ``return weights`` or ``return weights, info``. Doing the arithmetic in float64 keeps the
   average of many float16/bfloat16/float32 clients exact to the last bit of the stored dtype.
4. **Cast back.** Each result is cast to its tensor's dtype; a non-finite result (an overflow when
   casting to float16, say) raises :class:`AggregationError` and leaves the strategy's state as it
   was before the round.

Two more methods complete the contract: ``configure_client(server_round) -> dict`` (what clients
should do this round, e.g. FedProx's ``{"proximal_mu": mu}``; default ``{}``) and
``state_dict()`` / ``load_state_dict(state)`` for the server state a checkpoint must keep
(momentum, Adam moments; default: none). A state holds only tensors and plain Python values, so
it saves and loads with ``torch.load(weights_only=True)``.

Writing a strategy
------------------
A new aggregation is a ``combine`` method; validation, buffers, dtypes and rejection come from
the base class. A FedAvg in which no client counts for more than ``cap`` examples::

    from equipoise.federated.strategies import STRATEGIES, Strategy, weighted_average

    @STRATEGIES.register("capped_fedavg")
    class CappedFedAvg(Strategy):
        def __init__(self, cap: int = 500, *, min_updates: int = 1) -> None:
            super().__init__(min_updates=min_updates)
            self.cap = cap

        def combine(self, global_weights, updates, server_round):
            sizes = [min(update.num_examples, self.cap) for update in updates]
            return weighted_average(updates, sizes)

The strategies
--------------
==============  ================  ===============================================================
name            class             paper
==============  ================  ===============================================================
fedavg          FedAvg            McMahan, Moore, Ramage, Hampson, Agüera y Arcas 2017,
                                  "Communication-Efficient Learning of Deep Networks from
                                  Decentralized Data" (AISTATS)
fedprox         FedProx           Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith 2020, "Federated
                                  Optimization in Heterogeneous Networks" (MLSys); the client
                                  adds :func:`proximal_term` to its loss
fedavgm         FedAvgM           Hsu, Qi, Brown 2019, "Measuring the Effects of Non-Identical
                                  Data Distribution for Federated Visual Classification"
fedadam         FedAdam           Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan
                                  2021, "Adaptive Federated Optimization" (ICLR)
ida             InverseDistance   Yeganeh, Farshad, Navab, Albarqouni 2020, "Inverse Distance
                                  Aggregation for Federated Learning with Non-IID Data"
                                  (MICCAI DCL workshop)
median          CoordinateMedian  Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust
                                  Distributed Learning: Towards Optimal Statistical Rates" (ICML)
trimmed_mean    TrimmedMean       Yin, Chen, Ramchandran, Bartlett 2018 (as above)
==============  ================  ===============================================================

Build one by name with :func:`build_strategy` (``build_strategy("fedavgm", momentum=0.9)``).
Memory: ``aggregate`` holds float64 copies of the accepted updates' floating tensors, i.e. about
twice the size of the float32 updates themselves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from equipoise.core.registry import Registry
from equipoise.core.validation import check_int

__all__ = [
    "STRATEGIES",
    "AggregationError",
    "AggregationResult",
    "ClientUpdate",
    "CoordinateMedian",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "InverseDistance",
    "Strategy",
    "TrimmedMean",
    "build_strategy",
    "proximal_term",
    "weighted_average",
]

logger = logging.getLogger(__name__)

STRATEGIES: Registry = Registry("aggregation strategy")

ClientId = str | int
Weights = dict[str, torch.Tensor]

# How many key names an error message lists before it says "and N more".
_MAX_NAMES = 5


class AggregationError(ValueError):
    """A round cannot be aggregated: too few valid updates, or a non-finite result."""


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class ClientUpdate:
    """What one client sends back after a round of local training.

    Args:
        client_id: the client's name or number (``str`` or ``int``), unique within a round.
        weights: its ``state_dict`` after local training (checked against the global by
            :meth:`Strategy.aggregate`, which rejects a mismatching update rather than raising).
        num_examples: the number of training examples it used, an integer ``>= 1``.
        class_counts: optional per-class example counts, a 1-D tensor, array or sequence of
            non-negative integers; stored as an int64 tensor. Not used by the strategies here,
            available to class-aware ones.
        metrics: optional training metrics (loss, accuracy, ...), a dict.
    """

    client_id: ClientId
    weights: Mapping[str, torch.Tensor]
    num_examples: int
    class_counts: torch.Tensor | np.ndarray | Sequence[int] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.client_id, np.integer):
            self.client_id = int(self.client_id)
        if isinstance(self.client_id, bool) or not isinstance(self.client_id, (str, int)):
            raise TypeError(
                f"client_id must be a str or an int, got {type(self.client_id).__name__} {self.client_id!r}"
            )
        if not isinstance(self.weights, Mapping):
            raise TypeError(
                f"weights of client {self.client_id!r} must be a mapping of names to tensors (a state_dict), "
                f"got {type(self.weights).__name__}"
            )
        check_int(self.num_examples, f"num_examples of client {self.client_id!r}", minimum=1)
        self.num_examples = int(self.num_examples)
        if self.class_counts is not None:
            self.class_counts = _as_class_counts(self.class_counts, f"class_counts of client {self.client_id!r}")
        if not isinstance(self.metrics, Mapping):
            raise TypeError(f"metrics of client {self.client_id!r} must be a dict, got {type(self.metrics).__name__}")


@dataclass
class AggregationResult:
    """The outcome of one round: the new global weights and what happened to each update.

    Attributes:
        weights: the new global ``state_dict`` (the global's keys, in its order, shapes and dtypes).
        accepted: ids of the clients whose updates were aggregated, in the given order.
        rejected: client id -> reason, for the updates that failed validation.
        info: details of the round: ``num_accepted``, ``num_rejected``, ``num_examples`` (client id
            -> count), ``non_floating_source`` (the client whose integer/bool tensors were kept,
            ``None`` when the model has none) and what the strategy adds, e.g. ``coefficients``
            (client id -> weight in the average, summing to 1).
    """

    weights: Weights
    accepted: list[ClientId]
    rejected: dict[ClientId, str]
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


class Strategy:
    """Base class of every aggregation strategy (see the module docstring for the contract).

    Subclasses implement :meth:`combine`; they may override :meth:`configure_client`,
    :meth:`state_dict` and :meth:`load_state_dict`. ``min_updates`` is also a class attribute
    (default 1), so a subclass without an ``__init__`` works.

    Args:
        min_updates: the fewest valid updates a round may be aggregated from, ``>= 1``.
    """

    min_updates: int = 1

    def __init__(self, *, min_updates: int = 1) -> None:
        check_int(min_updates, "min_updates", minimum=1)
        self.min_updates = int(min_updates)

    # -- the hook -------------------------------------------------------------------------

    def combine(
        self, global_weights: Weights, updates: list[ClientUpdate], server_round: int
    ) -> Weights | tuple[Weights, dict[str, Any]]:
        """Return the new floating tensors (and optionally a dict of info) from the accepted updates.

        Called by :meth:`aggregate` with float64 copies of the floating tensors only, and with at
        least ``min_updates`` updates, all of which passed validation. The returned dict must have
        exactly ``global_weights``' keys and shapes.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement combine(global_weights, updates, server_round)"
        )

    # -- the rest of the contract ---------------------------------------------------------

    def configure_client(self, server_round: int) -> dict[str, Any]:
        """What clients should do in ``server_round`` (sent with the global weights); default ``{}``."""
        check_int(server_round, "server_round", minimum=0)
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The server state a checkpoint must keep (tensors and plain values); default: none."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; this default accepts only an empty state."""
        _check_state_keys(self, state, expected=())

    # -- the template ---------------------------------------------------------------------

    def aggregate(
        self,
        global_weights: Mapping[str, torch.Tensor],
        updates: Iterable[ClientUpdate],
        server_round: int,
    ) -> AggregationResult:
        """Validate ``updates`` against ``global_weights``, combine the valid ones, cast back.

        Args:
            global_weights: the global ``state_dict`` the clients started this round from.
            updates: one :class:`ClientUpdate` per client, with distinct ``client_id``.
            server_round: the round number (an integer ``>= 0``), passed on to :meth:`combine`.

        Raises:
            AggregationError: fewer than ``min_updates`` updates pass validation, or the
                combined weights are not finite in their dtype.
            TypeError, ValueError: bad arguments from the caller (not from the clients): a
                malformed ``global_weights``, an update that is not a :class:`ClientUpdate`,
                duplicate client ids, or a ``combine`` returning the wrong keys or shapes.
        """
        check_int(server_round, "server_round", minimum=0)
        _check_global(global_weights)
        updates = list(updates)
        _check_updates(updates)

        accepted: list[ClientUpdate] = []
        rejected: dict[ClientId, str] = {}
        for update in updates:
            reason = _rejection_reason(global_weights, update.weights)
            if reason is None:
                accepted.append(update)
            else:
                rejected[update.client_id] = reason
                logger.warning("round %d: rejected the update of client %r: %s", server_round, update.client_id, reason)
        if len(accepted) < self.min_updates:
            reasons = "; ".join(f"{client_id!r}: {reason}" for client_id, reason in rejected.items()) or "none"
            raise AggregationError(
                f"{type(self).__name__}: only {len(accepted)} of {len(updates)} updates passed validation in round "
                f"{server_round}, fewer than min_updates={self.min_updates} (rejected: {reasons})"
            )

        floating = [name for name, tensor in global_weights.items() if tensor.is_floating_point()]
        has_non_floating = len(floating) < len(global_weights)
        source = max(accepted, key=lambda update: update.num_examples)  # max keeps the first of ties
        global64 = {name: _float64_copy(global_weights[name]) for name in floating}
        accepted64 = [
            replace(update, weights={name: _float64_copy(update.weights[name]) for name in floating})
            for update in accepted
        ]

        saved_state = self.state_dict()
        try:
            combined, extra_info = _split_result(self.combine(global64, accepted64, server_round), self)
            _check_combined(combined, global_weights, floating, self)
            weights: Weights = {}
            for name, reference in global_weights.items():
                if name in combined:
                    value = combined[name].detach().to(device=reference.device, dtype=reference.dtype)
                    _check_finite_result(value, name, self, server_round)
                else:
                    value = source.weights[name].detach().clone()
                weights[name] = value
        except Exception:
            self.load_state_dict(saved_state)  # a failed round leaves the server state as it was
            raise

        info: dict[str, Any] = {
            "num_accepted": len(accepted),
            "num_rejected": len(rejected),
            "num_examples": {update.client_id: update.num_examples for update in accepted},
            "non_floating_source": source.client_id if has_non_floating else None,
        }
        info.update(extra_info)
        return AggregationResult(
            weights=weights, accepted=[update.client_id for update in accepted], rejected=rejected, info=info
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_updates={self.min_updates})"


# --------------------------------------------------------------------------------------------
# Helpers for strategies
# --------------------------------------------------------------------------------------------


def weighted_average(updates: Sequence[ClientUpdate], weights: Sequence[float] | torch.Tensor) -> Weights:
    """``sum_k weights[k] * w_k / sum_k weights[k]`` for every key of the updates' weights.

    ``weights`` are non-negative, finite, one per update, with a positive sum (they need not sum
    to 1). Accumulates in float64 and returns float64. The products are summed before dividing by
    the total, so identical float32 (or float16, bfloat16) updates with integer ``weights`` (example
    counts) average back to themselves exactly.
    """
    if not updates:
        raise ValueError("updates is empty: nothing to average")
    weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if weights.shape != (len(updates),):
        raise ValueError(f"weights must have one entry per update ({len(updates)}), got shape {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or not float(weights.sum()) > 0:
        raise ValueError(f"weights must be finite, >= 0 and have a positive sum, got {weights.tolist()}")
    total = float(weights.sum())
    factors = weights.tolist()
    average: Weights = {}
    for name, first in updates[0].weights.items():
        accumulator = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for factor, update in zip(factors, updates):
            if factor:
                accumulator.add_(update.weights[name], alpha=factor)
        average[name] = accumulator.div_(total)
    return average


def _coefficients(updates: Sequence[ClientUpdate], weights: Sequence[float] | torch.Tensor) -> dict[ClientId, float]:
    """Client id -> ``weights[k] / sum(weights)``, for ``info["coefficients"]``."""
    values = torch.as_tensor(weights, dtype=torch.float64)
    values = values / values.sum()
    return {update.client_id: float(value) for update, value in zip(updates, values)}


def _example_weighted(updates: Sequence[ClientUpdate]) -> tuple[Weights, dict[str, Any]]:
    """FedAvg's average and its info (each client weighted by its number of examples)."""
    counts = [update.num_examples for update in updates]
    return weighted_average(updates, counts), {"coefficients": _coefficients(updates, counts)}


# --------------------------------------------------------------------------------------------
# FedAvg, FedProx
# --------------------------------------------------------------------------------------------


@STRATEGIES.register("fedavg")
class FedAvg(Strategy):
    """Federated Averaging: the example-weighted mean of the client models.

    McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", AISTATS 2017 (Algorithm 1, server side)::

        w_{t+1} = sum_k n_k w_k / sum_k n_k        (n_k = num_examples of client k)

    No hyper-parameters on the server (the paper's C, E, B are client-side and sampling choices).
    ``info["coefficients"]`` holds ``n_k / sum_k n_k``.
    """

    def combine(self, global_weights, updates, server_round):
        return _example_weighted(updates)


@STRATEGIES.register("fedprox")
class FedProx(FedAvg):
    """FedProx: FedAvg on the server, a proximal term in every client's loss.

    Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith. "Federated Optimization in Heterogeneous
    Networks", MLSys 2020. Each client approximately minimises::

        h_k(w; w_t) = F_k(w) + mu / 2 * ||w - w_t||^2

    (add :func:`proximal_term` to the local loss); the server aggregates exactly as
    :class:`FedAvg` (the paper's Algorithm 2 also tolerates partial work from stragglers, which is
    a client-side matter). :meth:`configure_client` returns ``{"proximal_mu": mu}``.

    Args:
        proximal_mu: ``mu >= 0``; 0 makes it FedAvg. The paper selects ``mu`` per dataset from
            ``{0.001, 0.01, 0.1, 1}`` and has no single default (Flower's defaults to 0, with a
            warning); equipoise defaults to 0.01, a mild pull from that grid.
        min_updates: see :class:`Strategy`.
    """

    def __init__(self, proximal_mu: float = 0.01, *, min_updates: int = 1) -> None:
        super().__init__(min_updates=min_updates)
        _check_number(proximal_mu, "proximal_mu", low=0.0)
        self.proximal_mu = float(proximal_mu)

    def configure_client(self, server_round: int) -> dict[str, Any]:
        check_int(server_round, "server_round", minimum=0)
        return {"proximal_mu": self.proximal_mu}

    def __repr__(self) -> str:
        return f"FedProx(proximal_mu={self.proximal_mu}, min_updates={self.min_updates})"


def proximal_term(
    model_or_params: nn.Module | Mapping[str, torch.Tensor],
    global_weights: Mapping[str, torch.Tensor],
    mu: float,
) -> torch.Tensor:
    """FedProx's proximal term ``mu / 2 * sum_p ||w_p - w_t,p||^2``, to add to a client's loss.

    Li et al. 2020 (see :class:`FedProx`). The norm is *squared* and halved, so the gradient with
    respect to each parameter is ``mu * (w - w_t)``. Some code bases get this wrong: Flower's
    FedProx documentation sums the unsquared norms ``(w - w_t).norm(2)`` (whose gradient has unit
    length whatever the distance and is undefined at ``w = w_t``), and others drop the ``1/2``
    (doubling the effective ``mu``).

    Args:
        model_or_params: the client's model (its ``named_parameters()`` are used; buffers are not
            parameters and are left out) or a mapping of names to parameter tensors.
        global_weights: the global ``state_dict`` received at the start of the round; every
            parameter name must be in it, with the parameter's shape. Detached and moved to each
            parameter's device and dtype (pass them already there to save the copy every step).
        mu: ``>= 0``, e.g. ``strategy.configure_client(round)["proximal_mu"]``.

    Returns:
        A scalar tensor, differentiable with respect to the parameters.
    """
    _check_number(mu, "mu", low=0.0)
    if isinstance(model_or_params, nn.Module):
        params = dict(model_or_params.named_parameters())
    elif isinstance(model_or_params, Mapping):
        params = dict(model_or_params)
    else:
        raise TypeError(
            "model_or_params must be an nn.Module or a mapping of names to tensors, "
            f"got {type(model_or_params).__name__}"
        )
    if not params:
        raise ValueError("model_or_params has no parameters")
    if not isinstance(global_weights, Mapping):
        raise TypeError(f"global_weights must be a mapping of names to tensors, got {type(global_weights).__name__}")
    missing = [name for name in params if name not in global_weights]
    if missing:
        raise ValueError(f"global_weights lacks the parameter(s) {_names(missing)}")
    total: torch.Tensor | None = None
    for name, param in params.items():
        reference = global_weights[name]
        if not isinstance(reference, torch.Tensor) or reference.shape != param.shape:
            shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
            raise ValueError(f"global_weights[{name!r}] is {shape}, but the parameter has shape {tuple(param.shape)}")
        squared = (param - reference.detach().to(device=param.device, dtype=param.dtype)).square().sum()
        total = squared if total is None else total + squared
    return total * (mu / 2)


# --------------------------------------------------------------------------------------------
# Server optimisers: FedAvgM, FedAdam
# --------------------------------------------------------------------------------------------


@STRATEGIES.register("fedavgm")
class FedAvgM(Strategy):
    """FedAvg with server momentum: heavy-ball SGD on the FedAvg pseudo-gradient.

    Hsu, Qi, Brown. "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
    Classification", arXiv:1909.06335, 2019. With ``avg`` the FedAvg average of the round::

        d       = w_t - avg                      (pseudo-gradient)
        v       = momentum * v + d               (v = 0 before the first round)
        w_{t+1} = w_t - server_lr * v

    ``momentum = 0, server_lr = 1`` is FedAvg. The momentum buffer ``v`` (float64) is the server
    state (:meth:`state_dict` key ``"momentum_buffer"``). ``info["coefficients"]`` holds FedAvg's.

    Args:
        momentum: ``beta`` in ``[0, 1)``. The paper sweeps it with the server learning rate and
            reports results against the effective rate ``server_lr / (1 - momentum)``; 0.9 with
            ``server_lr = 1`` is the configuration of Flower's reproduction of the paper (Flower's
            ``FedAvgM`` class itself defaults to momentum 0, which is plain FedAvg).
        server_lr: ``> 0``, default 1.0 (paper and Flower).
        min_updates: see :class:`Strategy`.
    """

    def __init__(self, momentum: float = 0.9, server_lr: float = 1.0, *, min_updates: int = 1) -> None:
        super().__init__(min_updates=min_updates)
        _check_number(momentum, "momentum", low=0.0, high=1.0)
        _check_number(server_lr, "server_lr", low=0.0, low_inclusive=False)
        self.momentum = float(momentum)
        self.server_lr = float(server_lr)
        self._momentum_buffer: Weights = {}

    def combine(self, global_weights, updates, server_round):
        average, info = _example_weighted(updates)
        _check_buffer(self._momentum_buffer, global_weights, "momentum_buffer", self)
        buffer: Weights = {}
        new: Weights = {}
        for name, current in global_weights.items():
            pseudo_gradient = current - average[name]
            previous = self._momentum_buffer.get(name)
            buffer[name] = pseudo_gradient if previous is None else previous * self.momentum + pseudo_gradient
            new[name] = current - self.server_lr * buffer[name]
        self._momentum_buffer = buffer
        return new, info

    def state_dict(self) -> dict[str, Any]:
        return {"momentum_buffer": _clone(self._momentum_buffer)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_state_keys(self, state, expected=("momentum_buffer",))
        self._momentum_buffer = _load_tensors(state["momentum_buffer"], "momentum_buffer")

    def __repr__(self) -> str:
        return f"FedAvgM(momentum={self.momentum}, server_lr={self.server_lr}, min_updates={self.min_updates})"


@STRATEGIES.register("fedadam")
class FedAdam(Strategy):
    """FedAdam: Adam on the server, applied to the average client change.

    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan. "Adaptive Federated
    Optimization", ICLR 2021 (Algorithm 2, the FedAdam lines). With ``avg`` the FedAvg average::

        delta   = avg - w_t
        m       = beta1 * m + (1 - beta1) * delta            (m = 0 before the first round)
        v       = beta2 * v + (1 - beta2) * delta ** 2       (v = tau ** 2 before the first round)
        w_{t+1} = w_t + server_lr * m / (sqrt(v) + tau)

    As in the paper there is **no bias correction** (Flower's FedAdam multiplies the rate by
    ``sqrt(1 - beta2 ** t) / (1 - beta1 ** t)``, Kingma and Ba's correction; equipoise follows the
    paper). The paper asks for ``v_{-1} >= tau ** 2``; equipoise starts at ``tau ** 2`` (Flower
    starts at 0). Algorithm 2 writes the plain mean of the client changes; equipoise weights them
    by examples as FedAvg (and Flower) do: the two agree when the counts are equal. The moments
    (float64) are the server state (:meth:`state_dict` keys ``"first_moment"``,
    ``"second_moment"``).

    Defaults: ``beta1 = 0.9``, ``beta2 = 0.99`` (the paper's experiments and Flower agree);
    ``tau = 1e-3`` (the paper tunes ``tau`` on a grid of powers of ten that contains it; it is
    Flower's current default, where its older ``flwr.server.strategy.FedAdam`` used 1e-9, which
    makes the first steps nearly ``server_lr * sign(delta)`` whatever the size of ``delta``);
    ``server_lr = 0.1`` (the paper tunes the server rate per task on a grid and has no single
    value; 0.1 is Flower's default).

    Args:
        server_lr: ``eta > 0``.
        beta1: first-moment decay in ``[0, 1)``.
        beta2: second-moment decay in ``[0, 1)``.
        tau: adaptivity ``> 0`` (larger: closer to momentum SGD with rate ``server_lr / tau``).
        min_updates: see :class:`Strategy`.
    """

    def __init__(
        self,
        server_lr: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        *,
        min_updates: int = 1,
    ) -> None:
        super().__init__(min_updates=min_updates)
        _check_number(server_lr, "server_lr", low=0.0, low_inclusive=False)
        _check_number(beta1, "beta1", low=0.0, high=1.0)
        _check_number(beta2, "beta2", low=0.0, high=1.0)
        _check_number(tau, "tau", low=0.0, low_inclusive=False)
        self.server_lr = float(server_lr)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.tau = float(tau)
        self._first_moment: Weights = {}
        self._second_moment: Weights = {}

    def combine(self, global_weights, updates, server_round):
        average, info = _example_weighted(updates)
        _check_buffer(self._first_moment, global_weights, "first_moment", self)
        _check_buffer(self._second_moment, global_weights, "second_moment", self)
        first: Weights = {}
        second: Weights = {}
        new: Weights = {}
        for name, current in global_weights.items():
            delta = average[name] - current
            previous_first = self._first_moment.get(name, torch.zeros_like(current))
            previous_second = self._second_moment.get(name, torch.full_like(current, self.tau**2))
            first[name] = previous_first * self.beta1 + (1 - self.beta1) * delta
            second[name] = previous_second * self.beta2 + (1 - self.beta2) * delta.square()
            new[name] = current + self.server_lr * first[name] / (second[name].sqrt() + self.tau)
        self._first_moment, self._second_moment = first, second
        return new, info

    def state_dict(self) -> dict[str, Any]:
        return {"first_moment": _clone(self._first_moment), "second_moment": _clone(self._second_moment)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_state_keys(self, state, expected=("first_moment", "second_moment"))
        first = _load_tensors(state["first_moment"], "first_moment")
        second = _load_tensors(state["second_moment"], "second_moment")
        if set(first) != set(second):
            raise ValueError("first_moment and second_moment must have the same keys")
        self._first_moment, self._second_moment = first, second

    def __repr__(self) -> str:
        return (
            f"FedAdam(server_lr={self.server_lr}, beta1={self.beta1}, beta2={self.beta2}, tau={self.tau}, "
            f"min_updates={self.min_updates})"
        )


# --------------------------------------------------------------------------------------------
# Inverse Distance Aggregation
# --------------------------------------------------------------------------------------------

_NORMS = ("l1", "l2")


@STRATEGIES.register("ida")
class InverseDistance(Strategy):
    """Inverse Distance Aggregation (IDA): clients far from the others count less.

    Yeganeh, Farshad, Navab, Albarqouni. "Inverse Distance Aggregation for Federated Learning with
    Non-IID Data", MICCAI DCL workshop 2020 (arXiv:2008.07665). With ``mean`` the plain
    (unweighted) mean of the accepted clients' models and ``d_k = ||w_k - mean||`` over all
    floating entries of the ``state_dict`` (flattened together; BatchNorm running statistics
    included)::

        alpha_k = (1 / d_k) / sum_j (1 / d_j)
        w_{t+1} = sum_k alpha_k w_k

    With ``weight_by_examples=True`` the inverse distance is multiplied by the number of examples
    before normalising (the paper's combination of IDA with FedAvg's sample counts)::

        alpha_k = (n_k / d_k) / sum_j (n_j / d_j)

    **Zero distance.** A client equal to the mean (all clients identical, a single client, or one
    that lies exactly at the mean) has an infinite inverse distance; the limit of the formula as
    its distance goes to 0 gives it all the weight. So when some distances are 0 (below the
    smallest normal float64), those clients share the weight (in proportion to their examples
    when ``weight_by_examples``) and the others get 0, without any NaN: identical clients give
    the uniform (or example-weighted) mean. Otherwise the weights are computed as
    ``d_min / d_k``, which cannot overflow.

    ``info`` holds ``coefficients`` (``alpha_k``) and ``distances`` (``d_k``).

    Args:
        weight_by_examples: multiply by ``n_k`` (default False, plain IDA).
        norm: ``"l1"`` (default: the paper's distance, as equipoise reads it) or ``"l2"``
            (Euclidean).
        min_updates: see :class:`Strategy`.
    """

    def __init__(self, weight_by_examples: bool = False, norm: str = "l1", *, min_updates: int = 1) -> None:
        super().__init__(min_updates=min_updates)
        if not isinstance(weight_by_examples, bool):
            raise ValueError(f"weight_by_examples must be True or False, got {weight_by_examples!r}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        self.weight_by_examples = weight_by_examples
        self.norm = norm

    def combine(self, global_weights, updates, server_round):
        mean = weighted_average(updates, [1.0] * len(updates))
        distances = torch.zeros(len(updates), dtype=torch.float64)
        for name, center in mean.items():
            for index, update in enumerate(updates):
                difference = update.weights[name] - center
                distances[index] += difference.abs().sum() if self.norm == "l1" else difference.square().sum()
        if self.norm == "l2":
            distances = distances.sqrt()
        if self.weight_by_examples:
            sizes = torch.tensor([update.num_examples for update in updates], dtype=torch.float64)
        else:
            sizes = torch.ones(len(updates), dtype=torch.float64)
        at_mean = distances < torch.finfo(torch.float64).tiny
        if bool(at_mean.any()):
            raw = sizes * at_mean
        else:
            raw = sizes * (distances.min() / distances)
        coefficients = raw / raw.sum()
        info = {
            "coefficients": {update.client_id: float(value) for update, value in zip(updates, coefficients)},
            "distances": {update.client_id: float(value) for update, value in zip(updates, distances)},
        }
        return weighted_average(updates, raw), info  # raw, not normalised: exact for identical clients

    def __repr__(self) -> str:
        return (
            f"InverseDistance(weight_by_examples={self.weight_by_examples}, norm={self.norm!r}, "
            f"min_updates={self.min_updates})"
        )


# --------------------------------------------------------------------------------------------
# Robust coordinate-wise statistics
# --------------------------------------------------------------------------------------------


def _sorted_stack(updates: Sequence[ClientUpdate], name: str) -> torch.Tensor:
    """The updates' tensors for ``name`` stacked on a new first dimension and sorted along it."""
    return torch.stack([update.weights[name] for update in updates]).sort(dim=0).values


@STRATEGIES.register("median")
class CoordinateMedian(Strategy):
    """Coordinate-wise median of the client models (robust to a minority of Byzantine clients).

    Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018 (Definition 1; the paper takes medians of gradients, here of
    models, as Flower's FedMedian does)::

        w_{t+1}[i] = median_k w_k[i]      for every coordinate i

    With an even number of clients the median is the mean of the two middle values (as
    ``numpy.median``; ``torch.median`` would return the lower one). Clients are not weighted by
    their examples: a weight would let one client claim a majority. No hyper-parameters.
    """

    def combine(self, global_weights, updates, server_round):
        count = len(updates)
        new: Weights = {}
        for name in global_weights:
            ordered = _sorted_stack(updates, name)
            middle = count // 2
            new[name] = ordered[middle] if count % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        return new


@STRATEGIES.register("trimmed_mean")
class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean: drop the largest and smallest values, average the rest.

    Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018 (Definition 2). For each coordinate, with ``K`` clients and
    ``k = floor(beta * K)`` (as ``scipy.stats.trim_mean``)::

        w_{t+1}[i] = mean of the K - 2k values of w_k[i] left after removing the k largest
                     and the k smallest

    Unweighted by examples, like :class:`CoordinateMedian`. ``info["trimmed_per_side"]`` is ``k``;
    note that with few clients ``k`` may be 0 (e.g. ``beta = 0.2`` and 4 clients), and the round
    is then a plain mean without any robustness.

    Args:
        beta: the fraction trimmed at *each* end, in ``[0, 0.5)``: 0.5 would leave no update to
            average. The paper's guarantee needs ``beta`` at least the fraction of Byzantine
            clients and has no default; 0.2 is Flower's (``FedTrimmedAvg``).
        min_updates: see :class:`Strategy`.
    """

    def __init__(self, beta: float = 0.2, *, min_updates: int = 1) -> None:
        super().__init__(min_updates=min_updates)
        _check_number(beta, "beta", low=0.0, high=0.5)
        self.beta = float(beta)

    def combine(self, global_weights, updates, server_round):
        count = len(updates)
        trimmed = int(self.beta * count)  # < count / 2 since beta < 0.5: at least one value is kept
        new = {name: _sorted_stack(updates, name)[trimmed : count - trimmed].mean(dim=0) for name in global_weights}
        return new, {"trimmed_per_side": trimmed}

    def __repr__(self) -> str:
        return f"TrimmedMean(beta={self.beta}, min_updates={self.min_updates})"


def build_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy registered as ``name`` (see ``STRATEGIES.names()``) with ``options``."""
    return STRATEGIES.build(name, **options)


# --------------------------------------------------------------------------------------------
# Validation (private)
# --------------------------------------------------------------------------------------------


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_MAX_NAMES])
    return shown + (f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


def _check_number(value: Any, name: str, low: float, high: float | None = None, low_inclusive: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real in ``[low, high)`` (``(low, ...)`` if not inclusive)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    ok = ok and math.isfinite(value) and (value >= low if low_inclusive else value > low)
    ok = ok and (high is None or value < high)
    if not ok:
        interval = ("[" if low_inclusive else "(") + f"{low}, " + (f"{high})" if high is not None else "inf)")
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def _as_class_counts(class_counts: Any, name: str) -> torch.Tensor:
    if isinstance(class_counts, torch.Tensor):
        counts = class_counts.detach().cpu()
    else:
        try:
            counts = torch.as_tensor(np.asarray(class_counts))
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be a 1-D sequence of integers, got {class_counts!r}") from error
    if counts.is_floating_point() or counts.is_complex() or counts.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {counts.dtype}")
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {tuple(counts.shape)}")
    if bool((counts < 0).any()):
        index = int(torch.nonzero(counts < 0)[0, 0])
        raise ValueError(f"{name}[{index}] = {int(counts[index])} is negative; counts must be >= 0")
    return counts.to(torch.int64)


def _check_global(global_weights: Any) -> None:
    if not isinstance(global_weights, Mapping):
        raise TypeError(f"global_weights must be a mapping of names to tensors, got {type(global_weights).__name__}")
    if not global_weights:
        raise ValueError("global_weights is empty: nothing to aggregate")
    for name, value in global_weights.items():
        if not isinstance(name, str):
            raise TypeError(f"global_weights keys must be strings, got {name!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"global_weights[{name!r}] must be a tensor, got {type(value).__name__}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"global_weights[{name!r}] has non-finite values: the global model is already broken")


def _check_updates(updates: list[Any]) -> None:
    seen: set[ClientId] = set()
    for position, update in enumerate(updates):
        if not isinstance(update, ClientUpdate):
            raise TypeError(f"updates[{position}] must be a ClientUpdate, got {type(update).__name__}")
        if update.client_id in seen:
            raise ValueError(f"client_id {update.client_id!r} appears twice among the updates; ids must be unique")
        seen.add(update.client_id)


def _rejection_reason(global_weights: Mapping[str, torch.Tensor], weights: Mapping[Any, Any]) -> str | None:
    """Why an update's ``weights`` cannot be aggregated with ``global_weights``, or ``None`` if they can."""
    missing = [name for name in global_weights if name not in weights]
    unexpected = [name for name in weights if name not in global_weights]
    if missing or unexpected:
        parts = ([f"missing key(s) {_names(missing)}"] if missing else []) + (
            [f"unexpected key(s) {_names(unexpected)}"] if unexpected else []
        )
        return "; ".join(parts)
    for name, reference in global_weights.items():
        value = weights[name]
        if not isinstance(value, torch.Tensor):
            return f"weights[{name!r}] is a {type(value).__name__}, not a tensor"
        if value.shape != reference.shape:
            return f"weights[{name!r}] has shape {tuple(value.shape)}, expected {tuple(reference.shape)}"
        if value.dtype != reference.dtype:
            return f"weights[{name!r}] has dtype {value.dtype}, expected {reference.dtype}"
        if value.device != reference.device:
            return f"weights[{name!r}] is on device {value.device}, expected {reference.device}"
        if value.is_floating_point() or value.is_complex():
            finite = torch.isfinite(value.detach())
            if not bool(finite.all()):
                bad = torch.nonzero(~finite)
                index = tuple(int(i) for i in bad[0])
                return (
                    f"weights[{name!r}] has {bad.shape[0]} non-finite value(s), "
                    f"the first {value[index].item()} at index {index}"
                )
    return None


def _float64_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(dtype=torch.float64, copy=True)


def _split_result(result: Any, strategy: Strategy) -> tuple[Mapping[str, torch.Tensor], dict[str, Any]]:
    if isinstance(result, tuple):
        if len(result) != 2 or not isinstance(result[1], Mapping):
            raise TypeError(f"{type(strategy).__name__}.combine must return weights or (weights, info dict)")
        return result[0], dict(result[1])
    return result, {}


def _check_combined(
    combined: Any, global_weights: Mapping[str, torch.Tensor], floating: list[str], strategy: Strategy
) -> None:
    owner = f"{type(strategy).__name__}.combine"
    if not isinstance(combined, Mapping):
        raise TypeError(f"{owner} must return a mapping of names to tensors, got {type(combined).__name__}")
    if set(combined) != set(floating):
        missing = [name for name in floating if name not in combined]
        unexpected = [name for name in combined if name not in set(floating)]
        raise ValueError(
            f"{owner} must return exactly the floating keys of the global weights; "
            f"missing {_names(missing) or 'none'}, unexpected {_names(unexpected) or 'none'}"
        )
    for name in floating:
        value = combined[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{owner} returned a non-floating value for {name!r}: {type(value).__name__}")
        if value.shape != global_weights[name].shape:
            raise ValueError(
                f"{owner} returned shape {tuple(value.shape)} for {name!r}, "
                f"expected {tuple(global_weights[name].shape)}"
            )


def _check_finite_result(value: torch.Tensor, name: str, strategy: Strategy, server_round: int) -> None:
    if not bool(torch.isfinite(value).all()):
        raise AggregationError(
            f"{type(strategy).__name__} produced non-finite values for {name!r} in round {server_round} "
            f"(in dtype {value.dtype}); the global weights and the server state are left unchanged"
        )


def _check_buffer(buffer: Weights, global_weights: Weights, name: str, strategy: Strategy) -> None:
    """A loaded or carried state must match the model it is applied to."""
    if not buffer:
        return
    if set(buffer) != set(global_weights) or any(buffer[key].shape != global_weights[key].shape for key in buffer):
        raise ValueError(
            f"{type(strategy).__name__}'s {name} was built for other parameters (keys or shapes differ from the "
            "global weights' floating tensors): was its state loaded from another model?"
        )


def _clone(tensors: Weights) -> Weights:
    return {name: tensor.detach().clone() for name, tensor in tensors.items()}


def _check_state_keys(strategy: Strategy, state: Any, expected: Sequence[str]) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict (from state_dict()), got {type(state).__name__}")
    if set(state) != set(expected):
        raise ValueError(
            f"{type(strategy).__name__} state must have the keys {sorted(expected)}, got {sorted(map(str, state))}"
        )


def _load_tensors(tensors: Any, name: str) -> Weights:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"state[{name!r}] must be a dict of tensors, got {type(tensors).__name__}")
    loaded: Weights = {}
    for key, value in tensors.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"state[{name!r}][{key!r}] must be a floating tensor under a string key")
        loaded[key] = value.detach().to(dtype=torch.float64, copy=True)
    return loaded
