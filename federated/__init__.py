"""equipoise.federated: federated learning on skewed (non-IID) clients.

Available: client partitions of a labelled data set (``equipoise.federated.partition``: IID,
Dirichlet label skew, pathological shards, quantity skew, with per-client statistics and a
heat map) and server aggregation strategies behind one small interface
(``equipoise.federated.strategies``: FedAvg, FedProx, FedAvgM, FedAdam, inverse distance
aggregation, coordinate-wise median, trimmed mean; malformed or non-finite updates rejected) and
the client side (``equipoise.federated.client``: local SGD with FedProx's proximal term,
imbalance-aware losses from each client's own label counts, FedETF's fixed simplex-ETF head,
evaluation), the data a simulation shares (``equipoise.federated.data``), NIID-Bench's simple CNN
(``equipoise.federated.models``), the simulation engine on Ray (``equipoise.federated.simulation``)
and whole runs from a recipe (``equipoise.federated.config``; ``equipoise federated simulate``).
"""

from equipoise.federated.client import ClientConfig, SimplexETFClassifier, client_loss, evaluate_model, local_train
from equipoise.federated.data import FederatedData, load_federated_data
from equipoise.federated.models import SimpleCNN, simple_cnn
from equipoise.federated.partition import PARTITIONERS, PartitionStats, partition
from equipoise.federated.simulation import SimulationConfig, SimulationError, SimulationResult, simulate
from equipoise.federated.strategies import (
    STRATEGIES,
    AggregationError,
    AggregationResult,
    ClientUpdate,
    Strategy,
    build_strategy,
    proximal_term,
)

__all__ = [
    "PARTITIONERS",
    "STRATEGIES",
    "AggregationError",
    "AggregationResult",
    "ClientConfig",
    "ClientUpdate",
    "FederatedData",
    "PartitionStats",
    "SimpleCNN",
    "SimplexETFClassifier",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
    "Strategy",
    "build_strategy",
    "client_loss",
    "evaluate_model",
    "load_federated_data",
    "local_train",
    "partition",
    "proximal_term",
    "simple_cnn",
    "simulate",
]
