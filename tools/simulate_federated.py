"""Run a federated simulation from a recipe, with key=value overrides (same as `equipoise federated simulate`).

    python tools/simulate_federated.py mnist_dirichlet                       # 100 MNIST clients, FedAvg
    python tools/simulate_federated.py mnist_dirichlet simulation.strategy=ida output=results/federated/ida
    python tools/simulate_federated.py niid_bench_cifar10                    # the NIID-Bench GPU recipe
    python tools/simulate_federated.py my_setup.yaml ray_address=auto        # on a running Ray cluster
    python tools/simulate_federated.py --list                                # the shipped recipes

Running the same command again resumes from OUTPUT/checkpoint.pt (Ctrl-C leaves it resumable).
"""

from __future__ import annotations

import sys

from equipoise.cli import main

if __name__ == "__main__":
    sys.exit(main(["federated", "simulate", *sys.argv[1:]]))
