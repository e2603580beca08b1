"""The learning-rate stability check behind the tabular rates that are not the authors'.

    python tools/benchmarks/tabular_rates.py --dataset fraud --methods random_over l2rw --start 0.05 0.005

For each method, the rates of the grid (the authors' 0.1, 0.05, 0.02, 0.01, 0.005 and on down
to 0.001), from ``--start`` down, are tried until one passes. A rate passes when, on every seed
``0..--seeds-1``, ``--epochs`` epochs on 80% of that seed's training part (the split of
``equipoise.tabular.data.prepare(seed=s, val_size=0.2)``) end without a non-finite loss and keep
the validation AUC-ROC (the other 20%) at or above ``--threshold`` after every epoch. A network
that collapses to one score (all ReLUs dead) scores 0.5 and fails. The test split is never
read: this is a stability check, not a tuning (``equipoise.tabular.train``'s module docstring
lists the rates it chose and why).

Runs go ``--jobs`` at a time in single-threaded processes; each finished run is appended to
``OUTPUT/rates_DATASET_runs.jsonl`` and a second call reuses it. The table (every rate tried,
the worst validation AUC-ROC over seeds and epochs, the chosen rate) goes to
``OUTPUT/rates_DATASET.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

GRID = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
VAL_SIZE = 0.2


def check_one(dataset: str, method: str, lr: float, seed: int, epochs: int) -> dict[str, Any]:
    """Train ``method`` at ``lr`` on seed ``seed``'s 80% part; the validation AUC-ROC after each epoch."""
    from equipoise.tabular.data import prepare
    from equipoise.tabular.train import fit

    split = prepare(dataset, seed=seed, val_size=VAL_SIZE)
    began = time.perf_counter()
    record: dict[str, Any] = {"method": method, "lr": lr, "seed": seed, "epochs": epochs}
    try:
        model = fit(
            method,
            split.X_train,
            split.y_train,
            network=dataset,
            seed=seed,
            epochs=epochs,
            lr=lr,
            device="cpu",
            progress=False,
            X_val=split.X_val,
            y_val=split.y_val,
            keep_best=True,
        )
        history = model.training_record["validation_auroc_history"]
        record["validation_auroc"] = [round(float(score), 6) for score in history]
    except FloatingPointError as error:
        record["error"] = str(error)
    record["seconds"] = round(time.perf_counter() - began, 1)
    return record


def passed(record: dict[str, Any], threshold: float) -> bool:
    return "error" not in record and min(record["validation_auroc"]) >= threshold


class _InProcess:
    """``--jobs 1``: runs in this process, with its threads as they are (a pool's interface)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, function: Any, *args: Any) -> Future:
        future: Future = Future()
        future.set_result(function(*args))
        return future


def main(argv: list[str] | None = None) -> int:
    from equipoise.tabular.train import available_methods

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["loan", "fraud"], required=True, help="which task")
    parser.add_argument("--methods", nargs="+", required=True, choices=available_methods(), help="methods to check")
    parser.add_argument(
        "--start", nargs="+", type=float, help="first rate to try, one per method or one for all (default: 0.1)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="validation AUC-ROC to keep after every epoch (default: %(default)s, the five-seed line; see "
        "equipoise.tabular.train)",
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="runs side by side")
    parser.add_argument("--output", default="results/tabular", help="results folder (default: %(default)s)")
    args = parser.parse_args(argv)
    starts = args.start or [GRID[0]]
    if len(starts) not in (1, len(args.methods)):
        parser.error(f"--start takes one rate or one per method ({len(args.methods)}), got {len(starts)}")
    if any(start not in GRID for start in starts):
        parser.error(f"--start rates must be in the grid {GRID}, got {starts}")
    if args.seeds < 1 or args.epochs < 1:
        parser.error(f"--seeds and --epochs must be >= 1, got {args.seeds} and {args.epochs}")
    starts = dict(zip(args.methods, starts * len(args.methods) if len(starts) == 1 else starts))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    runs_path = output / f"rates_{args.dataset}_runs.jsonl"
    done: dict[tuple[str, float, int, int], dict[str, Any]] = {}
    if runs_path.is_file():
        for line in runs_path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            done[record["method"], record["lr"], record["seed"], record["epochs"]] = record

    from equipoise.core.reporting import write_table
    from equipoise.tabular.data import load_dataset

    load_dataset(args.dataset)  # parse (and cache) the CSV once, before the workers read it
    import multiprocessing

    from equipoise.core.benchmark import single_thread_worker

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rates = {method: GRID.index(start) for method, start in starts.items()}  # index of the rate under test
    chosen: dict[str, float | None] = {}
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    context = multiprocessing.get_context("spawn")
    executor = (
        _InProcess()
        if args.jobs == 1
        else ProcessPoolExecutor(args.jobs, mp_context=context, initializer=single_thread_worker)
    )
    with executor as pool:
        pending: dict[Any, tuple[str, float]] = {}

        def submit(method: str) -> None:
            lr = GRID[rates[method]]
            results[method, lr] = []
            for seed in range(args.seeds):
                key = (method, lr, seed, args.epochs)
                if key in done:
                    results[method, lr].append(done[key])
                else:
                    pending[pool.submit(check_one, args.dataset, method, lr, seed, args.epochs)] = (method, lr)

        def settle(method: str) -> None:
            """Decide ``method``'s rate under test when its runs are in; move down the grid on a failure."""
            lr = GRID[rates[method]]
            records = results[method, lr]
            if any(not passed(record, args.threshold) for record in records):
                for future, owner in list(pending.items()):
                    if owner == (method, lr) and future.cancel():
                        del pending[future]
                if rates[method] + 1 == len(GRID):
                    chosen[method] = None
                    return
                rates[method] += 1
                submit(method)
                if len(results[method, GRID[rates[method]]]) == args.seeds:
                    settle(method)
            elif len(records) == args.seeds:
                chosen[method] = lr

        for method in args.methods:
            submit(method)
            if len(results[method, GRID[rates[method]]]) == args.seeds:
                settle(method)
        while pending:
            future = next(as_completed(list(pending)))
            method, lr = pending.pop(future)
            record = future.result()
            with runs_path.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
            results[method, lr].append(record)
            verdict = "pass" if passed(record, args.threshold) else "FAIL"
            outcome = record.get("validation_auroc", record.get("error"))
            print(f"{method} lr {lr} seed {record['seed']}: {outcome} {verdict}", flush=True)
            if method not in chosen and GRID[rates[method]] == lr:
                settle(method)

    rows = []
    for (method, lr), records in results.items():
        scores = [min(record["validation_auroc"]) for record in records if "error" not in record]
        rows.append(
            {
                "method": method,
                "lr": lr,
                "seeds run": len(records),
                "failed seeds": sorted(record["seed"] for record in records if not passed(record, args.threshold)),
                "worst validation AUC-ROC": round(min(scores), 4) if scores else "",
                "diverged": sum("error" in record for record in records),
                "chosen": "yes" if chosen.get(method) == lr else "",
            }
        )
    meta = {
        "rule": f"largest rate of {list(GRID)} from the start down at which {args.epochs} epochs keep the "
        f"validation AUC-ROC >= {args.threshold} after every epoch on every seed, without divergence",
        "dataset": args.dataset,
        "seeds": f"0..{args.seeds - 1} (80% of each seed's training part; validation: the other 20%)",
        "chosen": ", ".join(f"{method} {chosen.get(method)}" for method in args.methods),
    }
    json_path, markdown_path = write_table(rows, output, f"rates_{args.dataset}", "Learning-rate stability check", meta)
    print(markdown_path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
