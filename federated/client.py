"""Client side of federated learning: imbalance-aware local training, a fixed simplex-ETF head, evaluation.

What a client does in one round (the simulation engine calls :func:`local_train` once per client)::

    update = local_train(model, features, labels, global_weights, config, seed, client_id=3, server_round=7)
    update.weights         # the client's state_dict after local training, on the CPU
    update.num_examples    # len(labels)
    update.class_counts    # bincount of its labels (what class-aware strategies look at)
    update.metrics         # {"loss": mean training loss of the last local epoch, ...}

The pieces
----------
- :class:`ClientConfig`: the local optimisation (epochs, batch size, SGD with momentum and weight
  decay), the loss and FedProx's ``proximal_mu`` (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith 2020,
  "Federated Optimization in Heterogeneous Networks", MLSys; the term is
  :func:`equipoise.federated.strategies.proximal_term`). Validated when built.
- :func:`client_loss`: cross-entropy, or a prior-corrected loss from ``equipoise.core.losses`` built
  with the *client's own* label counts, so that each client corrects for its local label skew
  (balanced softmax, Ren et al. 2020; logit adjustment, Menon et al. 2021).
- :class:`SimplexETFClassifier` and :func:`attach_etf_head`: the fixed, synthetic classifier of
  FedETF (Li, Shang, He, Lin, Wu 2023, "No Fear of Classifier Biases: Neural Collapse Inspired
  Federated Learning with Synthetic and Fixed Classifier", ICCV).
- :func:`evaluate_model`: accuracy, balanced accuracy and per-class accuracy of a model on a split,
  computed by ``equipoise.core.metrics`` (on torchmetrics).

Classes a client never sees
---------------------------
Under Dirichlet label skew many clients hold no example of some classes. The prior-corrected
losses take ``log n_c``, and ``log 0 = -inf`` (the core refuses zero counts for that reason). Here a
count below ``count_floor`` (default 1) is raised to it before the loss is built: an absent class
is treated as if seen once. Reasons:

- the loss stays finite for *every* label: with a ``-inf`` shift the absent class drops out of the
  softmax entirely (the ``alpha = 0`` limit of FedRS's restricted softmax, Li and Zhan 2021, "FedRS:
  Federated Learning with Restricted Softmax for Label Distribution Non-IID Data", KDD), and a single
  example of that class, e.g. in a later round or a relabelled sample, gives an infinite loss;
- it still gives absent classes the largest correction of all (shift ``log 1 = 0``, the smallest),
  which is the point of the correction: the local model is discouraged the most from learning to
  never predict the classes it lacks;
- it is the add-one (Laplace) estimate of a class frequency, the usual way to keep a logarithm of
  empirical frequencies finite.

Determinism
-----------
:func:`local_train` uses no global random state: mini-batches are drawn with a ``torch.Generator``
seeded by ``seed``, and the model's own randomness (dropout) runs inside ``torch.random.fork_rng``
seeded with ``seed``, so the caller's random state is left as it was. Same inputs and seed give
identical weights (on the CPU; CUDA kernels may add their own non-determinism).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from equipoise.core.losses import build_loss
from equipoise.core.registry import Registry
from equipoise.core.validation import ArrayLike, as_class_counts, check_class_counts
from equipoise.federated.strategies import ClientUpdate, proximal_term

__all__ = [
    "CLIENT_LOSSES",
    "ClientConfig",
    "SimplexETFClassifier",
    "attach_etf_head",
    "client_loss",
    "evaluate_model",
    "local_train",
    "simplex_etf",
]

CLIENT_LOSSES: Registry = Registry("client loss")


# --------------------------------------------------------------------------------------------
# Losses built from the client's own label counts
# --------------------------------------------------------------------------------------------


@CLIENT_LOSSES.register("cross_entropy")
def _cross_entropy(class_counts: torch.Tensor, **options: Any) -> nn.Module:
    return build_loss("cross_entropy", **options)  # the counts are validated but not used


@CLIENT_LOSSES.register("balanced_softmax")
def _balanced_softmax(class_counts: torch.Tensor, **options: Any) -> nn.Module:
    return build_loss("balanced_softmax", class_counts=class_counts, **options)


@CLIENT_LOSSES.register("logit_adjusted")
def _logit_adjusted(class_counts: torch.Tensor, **options: Any) -> nn.Module:
    return build_loss("logit_adjusted", class_counts=class_counts, **options)  # priors n_c / sum(n)


def client_loss(name: str, class_counts: ArrayLike, *, count_floor: float = 1.0, **options: Any) -> nn.Module:
    """The loss a client trains with, built with the client's own label counts.

    ==================  ==========================================================================
    name                loss (``z``: the ``(N, C)`` logits, ``n``: the floored class counts)
    ==================  ==========================================================================
    cross_entropy       ``CE(z, y)``; the counts are not used
    balanced_softmax    ``CE(z + log n, y)`` (Ren et al. 2020, "Balanced Meta-Softmax for
                        Long-Tailed Visual Recognition", NeurIPS)
    logit_adjusted      ``CE(z + tau * log(n / sum n), y)`` (Menon et al. 2021, "Long-tail learning
                        via logit adjustment", ICLR); ``tau`` (default 1) in ``options``
    ==================  ==========================================================================

    Counts below ``count_floor`` (absent classes, count 0) are raised to it (see the module
    docstring for why), so the loss is finite for every label.

    Args:
        name: one of ``CLIENT_LOSSES.names()``.
        class_counts: the client's ``(C,)`` label counts (tensor, array or sequence), ``>= 0``, not
            all zero.
        count_floor: the smallest count a class enters the loss with, ``> 0`` (default 1).
        **options: passed on to the core loss (``reduction``, ``tau``, ``label_smoothing``, ...).

    Raises:
        ValueError: an unknown ``name`` (the message lists the known ones), bad counts or floor.
    """
    builder = CLIENT_LOSSES.get(name)
    counts = as_class_counts(class_counts)
    check_class_counts(counts, allow_zero=True)
    if not float(counts.sum()) > 0:
        raise ValueError(f"class_counts must not be all zero, got {counts.tolist()}")
    if isinstance(count_floor, bool) or not isinstance(count_floor, (int, float)) or not 0 < count_floor < math.inf:
        raise ValueError(f"count_floor must be a finite number > 0, got {count_floor!r}")
    return builder(counts.clamp_min(float(count_floor)), **options)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class ClientConfig:
    """How a client trains locally each round.

    Args:
        local_epochs: passes over the local data per round, an integer ``>= 1`` (default 1).
        batch_size: mini-batch size, an integer ``>= 1`` (default 32); the last batch may be smaller.
        lr: SGD learning rate, ``> 0`` (default 0.01).
        momentum: SGD momentum in ``[0, 1)`` (default 0). The optimiser is built afresh every round,
            so the momentum buffer starts at zero each round, as in FedAvg/FedProx clients.
        weight_decay: L2 penalty of SGD, ``>= 0`` (default 0).
        loss: a name for :func:`client_loss` (default ``"cross_entropy"``).
        loss_options: keyword arguments for :func:`client_loss` (``count_floor``, ``tau``, ...).
        proximal_mu: FedProx's ``mu >= 0`` (default 0: plain FedAvg local training).
        device: where to train, e.g. ``"cpu"`` or ``"cuda:0"`` (default ``"cpu"``).
    """

    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    loss: str = "cross_entropy"
    loss_options: dict[str, Any] = field(default_factory=dict)
    proximal_mu: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("local_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        _check_real(self.lr, "lr", low=0.0, low_inclusive=False)
        _check_real(self.momentum, "momentum", low=0.0, high=1.0)
        _check_real(self.weight_decay, "weight_decay", low=0.0)
        _check_real(self.proximal_mu, "proximal_mu", low=0.0)
        if self.loss not in CLIENT_LOSSES.names():
            raise ValueError(f"loss must be one of {CLIENT_LOSSES.names()}, got {self.loss!r}")
        if not isinstance(self.loss_options, Mapping):
            raise ValueError(f"loss_options must be a dict, got {type(self.loss_options).__name__}")
        self.loss_options = dict(self.loss_options)
        try:
            self.device = str(torch.device(self.device))
        except (RuntimeError, TypeError) as error:
            message = f"device must name a torch device such as 'cpu' or 'cuda:0', got {self.device!r}"
            raise ValueError(message) from error


def _check_real(value: Any, name: str, low: float, high: float | None = None, low_inclusive: bool = True) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not ok:
        interval = ("[" if low_inclusive else "(") + f"{low}, " + (f"{high})" if high is not None else "inf)")
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


# --------------------------------------------------------------------------------------------
# FedETF: a fixed simplex equiangular tight frame classifier
# --------------------------------------------------------------------------------------------


def simplex_etf(dim: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """A ``(dim, num_classes)`` simplex ETF: ``W = sqrt(K / (K - 1)) * U (I_K - 1 1^T / K)``.

    ``U`` is ``(dim, K)`` with orthonormal columns, the Q factor of a Gaussian matrix drawn from
    ``seed`` (signs fixed by ``diag(R) > 0``, so ``U`` is Haar-distributed and a function of the
    seed alone). Then ``W^T W = K / (K - 1) * (I - 1 1^T / K)``: unit columns with pairwise cosine
    ``-1 / (K - 1)``, the structure neural collapse converges to (Papyan, Han, Donoho 2020). Built
    in float64, returned in float32. Needs ``num_classes >= 2`` and ``dim >= num_classes``.
    """
    for value, name in ((dim, "dim"), (num_classes, "num_classes"), (seed, "seed")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 for a simplex ETF, got {num_classes}")
    if dim < num_classes:
        raise ValueError(
            f"dim must be >= num_classes for U with {num_classes} orthonormal columns, got dim={dim}; "
            "add a projection to a wider feature (projection_dim) or use a wider backbone"
        )
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(dim, num_classes, generator=generator, dtype=torch.float64)
    orthonormal, upper = torch.linalg.qr(gaussian)  # reduced QR: (dim, K), (K, K)
    orthonormal = orthonormal * torch.sign(upper.diagonal())
    centering = torch.eye(num_classes, dtype=torch.float64) - 1.0 / num_classes
    return (math.sqrt(num_classes / (num_classes - 1)) * orthonormal @ centering).to(torch.float32)


class SimplexETFClassifier(nn.Module):
    """FedETF's fixed classifier: normalised features against a synthetic simplex ETF, times a temperature.

    Li, Shang, He, Lin, Wu. "No Fear of Classifier Biases: Neural Collapse Inspired Federated
    Learning with Synthetic and Fixed Classifier", ICCV 2023. Every client uses the same fixed
    ETF, so no client can bias the classifier towards its local classes; only the features learn::

        h      = P x            (optional projection, a trainable nn.Linear; identity if none)
        h_norm = h / max(||h||_2, 1e-12)
        logits = beta * h_norm @ W        with W = simplex_etf(d, K, seed), (d, K)

    Shapes: ``(N, in_features) -> (N, num_classes)``. ``W`` is a persistent *buffer*: not a
    parameter (no gradient, not in the optimiser or the proximal term), saved in the
    ``state_dict`` and identical on every client built with the same seed, so FedAvg leaves it
    unchanged. ``beta`` is a learnable scalar parameter (as in the paper), trained and averaged
    like any other.

    As in the reference implementation, a linear projection precedes the normalisation (there
    ``nn.Linear(feature_dim, d)``) and ``beta`` is a plain (unconstrained) parameter initialised at
    1.0 or 10.0 depending on the network; here ``temperature`` (default 1.0) sets it. Not
    implemented: the paper's balanced feature loss (use ``loss="balanced_softmax"`` in
    :class:`ClientConfig`, which applies the same ``log n_c`` correction to these logits) and its
    local fine-tuning stage for personalisation.

    Args:
        in_features: width of the incoming features.
        num_classes: ``K >= 2``.
        seed: seed of the ETF (default 0); give every client the same one.
        projection_dim: if given, ``d``: a trainable ``nn.Linear(in_features, d)`` projects the
            features first; if ``None`` (default) there is no projection and ``d = in_features``.
            ``d >= num_classes`` is required.
        temperature: initial ``beta``, finite and ``> 0`` (default 1.0). With unit features and
            unit ETF columns the logits lie in ``[-beta, beta]``, so ``beta`` bounds how confident
            the classifier can be.
        learn_temperature: train ``beta`` (default True, the paper) or keep it a fixed buffer.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        seed: int = 0,
        projection_dim: int | None = None,
        temperature: float = 1.0,
        learn_temperature: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be an integer >= 1, got {in_features!r}")
        if projection_dim is not None and (
            isinstance(projection_dim, bool) or not isinstance(projection_dim, int) or projection_dim < 1
        ):
            raise ValueError(f"projection_dim must be None or an integer >= 1, got {projection_dim!r}")
        _check_real(temperature, "temperature", low=0.0, low_inclusive=False)
        dim = in_features if projection_dim is None else projection_dim
        self.in_features, self.num_classes, self.seed = in_features, num_classes, seed
        self.projection = nn.Identity() if projection_dim is None else nn.Linear(in_features, projection_dim)
        self.register_buffer("etf", simplex_etf(dim, num_classes, seed))
        initial = torch.tensor(float(temperature))
        if learn_temperature:
            self.temperature = nn.Parameter(initial)
        else:
            self.register_buffer("temperature", initial)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = self.projection(features)
        normalised = projected / projected.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
        return self.temperature * (normalised @ self.etf)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, seed={self.seed}"


def attach_etf_head(
    model: nn.Module, num_classes: int, seed: int = 0, *, name: str | None = None, **options: Any
) -> SimplexETFClassifier:
    """Replace a model's linear classifier by a :class:`SimplexETFClassifier`, in place.

    The replaced layer is the submodule called ``name`` (a dotted path such as ``"fc"`` or
    ``"classifier.2"``), by default the *last* ``nn.Linear`` (in ``named_modules`` order) with
    ``num_classes`` outputs. The new head takes the old layer's ``in_features``; ``options`` go to
    :class:`SimplexETFClassifier` (``projection_dim``, ``temperature``, ...). Meant for small
    models whose classifier is one ``nn.Linear`` reached by attribute or ``nn.Sequential`` index;
    the model's ``forward`` must call that submodule on ``(N, in_features)`` features.

    Returns:
        The new head (the model now holds it under the old name).

    Raises:
        ValueError: no such linear layer, or it does not have ``num_classes`` outputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if name is None:
        candidates = [
            key
            for key, module in model.named_modules()
            if isinstance(module, nn.Linear) and module.out_features == num_classes
        ]
        if not candidates:
            raise ValueError(f"model has no nn.Linear with {num_classes} outputs (num_classes) to replace")
        name = candidates[-1]
    try:
        layer = model.get_submodule(name)
    except AttributeError as error:
        raise ValueError(f"model has no submodule name={name!r}") from error
    if not isinstance(layer, nn.Linear) or layer.out_features != num_classes:
        raise ValueError(f"model.{name} must be an nn.Linear with {num_classes} outputs (num_classes), got {layer}")
    head = SimplexETFClassifier(layer.in_features, num_classes, seed=seed, **options)
    head.to(device=layer.weight.device)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, head)
    return head


# --------------------------------------------------------------------------------------------
# Local training and evaluation
# --------------------------------------------------------------------------------------------


def local_train(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    global_weights: Mapping[str, torch.Tensor],
    config: ClientConfig,
    seed: int,
    *,
    client_id: str | int = 0,
    server_round: int | None = None,
    num_classes: int | None = None,
) -> ClientUpdate:
    """Train ``model`` from ``global_weights`` on one client's data; return its :class:`ClientUpdate`.

    Loads ``global_weights`` into ``model`` (strictly: same keys), moves it to ``config.device``
    and runs ``config.local_epochs`` epochs of ``torch.optim.SGD(lr, momentum, weight_decay)`` over
    mini-batches of ``config.batch_size``, reshuffled every epoch. The objective of a batch is::

        client_loss(config.loss, counts, **config.loss_options)(model(x), y)
            + proximal_term(model, global_weights, config.proximal_mu)      (only when mu > 0)

    where ``counts`` are the class counts of *all* of this client's ``labels``. ``model`` is
    trained in place (and left on ``config.device``, in the train/eval mode it had).

    Args:
        model: returns ``(N, num_classes)`` logits.
        features: ``(N, ...)`` floating tensor, finite.
        labels: ``(N,)`` integer class indices in ``[0, num_classes)``.
        global_weights: the global ``state_dict`` of this round.
        config: a :class:`ClientConfig`.
        seed: an integer; determines the batch order and the model's randomness (dropout).
        client_id: reported in the update and in errors (default 0; ``ClientUpdate`` takes a
            ``str`` or ``int``, not ``None``).
        server_round: reported in errors, optional.
        num_classes: the number of classes; by default the width of the model's output on one
            example (computed in eval mode, without gradients).

    Returns:
        ``ClientUpdate(client_id, weights, num_examples=N, class_counts, metrics)``: weights are a
        CPU copy of the ``state_dict``; ``class_counts`` the ``(num_classes,)`` bincount of
        ``labels``; ``metrics["loss"]`` the example-weighted mean of the client loss over the last
        epoch (without the proximal term), and ``metrics["proximal_term"]`` its mean when mu > 0.

    Raises:
        ValueError: bad arguments (empty data, mismatched lengths, NaN/inf features, labels out of
            range, a seed that is not an integer).
        FloatingPointError: the loss became NaN or infinite (naming the client, round, epoch, batch).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, ClientConfig):
        raise TypeError(f"config must be a ClientConfig, got {type(config).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(global_weights, Mapping):
        raise TypeError(f"global_weights must be a mapping of names to tensors, got {type(global_weights).__name__}")
    _check_data(features, labels)
    where = f"client {client_id!r}" + (f" in round {server_round}" if server_round is not None else "")
    device = torch.device(config.device)
    was_training = model.training
    model.to(device)
    try:
        model.load_state_dict(global_weights, strict=True)
    except RuntimeError as error:
        raise ValueError(f"global_weights do not fit the model: {error}") from error
    if num_classes is None:
        model.eval()
        with torch.no_grad():
            num_classes = int(model(features[:1].to(device)).shape[1])
    _check_labels(labels, num_classes)
    labels = labels.to(torch.int64)
    counts = torch.bincount(labels, minlength=num_classes)
    # The data were validated above; the per-batch checks are off so that a non-finite loss reaches
    # the FloatingPointError below instead of failing the core loss's logit check.
    criterion = client_loss(config.loss, counts, **{"validate_args": False, **config.loss_options}).to(device)
    mu = config.proximal_mu
    anchor = {
        key: global_weights[key].detach().to(device=param.device, dtype=param.dtype)
        for key, param in model.named_parameters()
    }
    trainable = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    size = labels.numel()
    model.train()
    fork_devices = []  # CUDA devices whose random state fork_rng saves and restores
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        for epoch in range(config.local_epochs):
            order = torch.randperm(size, generator=generator)
            loss_sum, proximal_sum = 0.0, 0.0
            for batch, start in enumerate(range(0, size, config.batch_size)):
                index = order[start : start + config.batch_size]
                inputs, targets = features[index].to(device), labels[index].to(device)
                loss = criterion(model(inputs), targets)
                objective = loss
                if mu > 0:
                    proximal = proximal_term(model, anchor, mu)
                    objective = loss + proximal
                    proximal_sum += float(proximal.detach()) * index.numel()
                value = float(objective.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"{where}: the training loss became {value} at epoch {epoch}, batch {batch}; "
                        "lower lr, check the features' scale or the global weights"
                    )
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * index.numel()
    model.train(was_training)
    metrics: dict[str, Any] = {"loss": loss_sum / size}
    if mu > 0:
        metrics["proximal_term"] = proximal_sum / size
    weights = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    return ClientUpdate(
        client_id=client_id, weights=weights, num_examples=size, class_counts=counts.cpu(), metrics=metrics
    )


def evaluate_model(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy and per-class accuracy of ``model`` on ``(features, labels)``.

    The model runs in eval mode without gradients, in batches of ``batch_size``, on the device of
    its first parameter (CPU if it has none), and is put back in its previous mode. The counts come
    from one confusion matrix, ``torch.bincount(label * C + prediction)``, the same counts as
    :func:`equipoise.core.metrics.evaluate_classification` (torchmetrics) but without importing
    torchmetrics: that import takes about 4 s, which the simulation's server would pay on its first
    evaluation, a third of a 20-round MNIST simulation (the tests compare with scikit-learn):

    - ``accuracy``: fraction of correct predictions (argmax of the logits);
    - ``balanced_accuracy``: mean recall over the classes *present* in ``labels`` (as
      ``sklearn.metrics.balanced_accuracy_score``; torchmetrics' macro average would count an
      absent class as 0, which penalises a client split for classes it does not hold);
    - ``worst_class_accuracy``: the smallest recall among the present classes;
    - ``per_class_accuracy``: ``num_classes`` recalls, ``None`` for classes absent from ``labels``;
    - ``num_examples``: ``len(labels)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    _check_data(features, labels)
    _check_labels(labels, num_classes)
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        batches = [features[start : start + batch_size] for start in range(0, len(labels), batch_size)]
        logits = torch.cat([model(batch.to(device)).cpu() for batch in batches])
    model.train(was_training)
    if logits.dim() != 2 or logits.shape[1] != num_classes:
        shape = tuple(logits.shape)
        raise ValueError(f"model returned logits of shape {shape}, expected (N, {num_classes}) (num_classes)")
    labels = labels.to(torch.int64)
    predictions = logits.argmax(dim=1)
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    confusion = confusion.view(num_classes, num_classes).to(torch.float64)
    support = confusion.sum(dim=1)
    present = support > 0
    recall = confusion.diagonal() / support.clamp_min(1)
    return {
        "accuracy": float(confusion.diagonal().sum() / len(labels)),
        "balanced_accuracy": float(recall[present].mean()),
        "worst_class_accuracy": float(recall[present].min()),
        "per_class_accuracy": [float(value) if seen else None for value, seen in zip(recall, present, strict=True)],
        "num_examples": len(labels),
    }


def _check_data(features: Any, labels: Any) -> None:
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        raise ValueError(f"features must be a floating-point tensor, got {type(features).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise ValueError("labels must be a 1-D tensor of class indices")
    if labels.numel() == 0:
        raise ValueError("labels is empty: a client needs at least one example")
    if features.dim() < 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features has {features.shape[0] if features.dim() else 0} rows but labels has {labels.shape[0]} entries"
        )
    finite = torch.isfinite(features)
    if not bool(finite.all()):
        index = tuple(int(i) for i in torch.nonzero(~finite)[0])
        raise ValueError(f"features has non-finite values: features{list(index)} = {features[index].item()}")


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"labels must lie in [0, {num_classes}) (num_classes={num_classes}), got {bad}")
