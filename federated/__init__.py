"""equipoise.federated: federated learning on skewed (non-IID) clients.

Available: client partitions of a labelled data set (``equipoise.federated.partition``: IID,
Dirichlet label skew, pathological shards, quantity skew, with per-client statistics and a
heat map) and server aggregation strategies behind one small interface
(``equipoise.federated.strategies``: FedAvg, FedProx, FedAvgM, FedAdam, inverse distance
aggregation, coordinate-wise median, trimmed mean; malformed or non-finite updates rejected).
Planned: imbalance-aware clients, the fixed simplex-ETF classifier and the Ray simulation engine.
"""

from equipoise.federated.partition import PARTITIONERS, PartitionStats, partition
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
    "ClientUpdate",
    "PartitionStats",
    "Strategy",
    "build_strategy",
    "partition",
    "proximal_term",
]
