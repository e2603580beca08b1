"""Non-neural reference models on the Table 2 splits: how far above the networks can these splits go?

    python tools/benchmarks/tabular_reference.py --dataset loan     # 42 s on 2 cores
    python tools/benchmarks/tabular_reference.py --dataset fraud    # 228k training rows: far longer (not timed)

Practitioners on tabular data compare any network with logistic regression and tree ensembles
first. This benchmark fits three scikit-learn models on exactly the splits of
``tools/benchmarks/tabular.py`` (seed ``s``: ``equipoise.tabular.data.prepare(seed=s)``, the
stratified 80/20 split, scaling fitted on the training part) and reports their test AUC-ROC and
AUC-PR as mean and standard error over the seeds, beside the best method of the network table
(``OUTPUT/DATASET.json``, when that benchmark has run):

- logistic regression (L2; ``C`` from 0.01, 0.1, 1, 10),
- random forest (500 trees; ``min_samples_leaf`` from 5, 20, 50),
- histogram gradient boosting (``learning_rate`` 0.03 or 0.1 by ``max_leaf_nodes`` 7 or 31;
  300 iterations).

Each model's setting is chosen per seed on a validation part (20% of that seed's training part,
stratified; ``prepare(seed=s, val_size=0.2)``), by validation AUC-ROC; the chosen setting is
then refitted on the whole training part and scored once on the test part, which takes no part
in the choice. The table goes to ``OUTPUT/reference_DATASET.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Model name -> the grid of settings tried on the validation part.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)],
    "random_forest": [{"min_samples_leaf": leaf} for leaf in (5, 20, 50)],
    "gradient_boosting": [
        {"learning_rate": rate, "max_leaf_nodes": leaves} for rate in (0.03, 0.1) for leaves in (7, 31)
    ],
}


def build(model: str, setting: dict[str, Any], seed: int, jobs: int) -> Any:
    """The scikit-learn estimator ``model`` with ``setting`` (one entry of :data:`GRIDS`)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if model == "logistic_regression":
        return LogisticRegression(max_iter=5000, **setting)
    if model == "random_forest":
        return RandomForestClassifier(n_estimators=500, n_jobs=jobs, random_state=seed, **setting)
    if model == "gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=300, early_stopping=False, random_state=seed, **setting)
    raise ValueError(f"model must be one of {sorted(GRIDS)}, got {model!r}")


def run_one(dataset: str, model: str, seed: int, jobs: int) -> dict[str, Any]:
    """Choose ``model``'s setting on seed ``seed``'s validation part, refit on its training part, score the test."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from equipoise.tabular.data import prepare

    began = time.perf_counter()
    tuning = prepare(dataset, seed=seed, val_size=0.2)
    scores = []
    for setting in GRIDS[model]:
        estimator = build(model, setting, seed, jobs).fit(tuning.X_train, tuning.y_train)
        scores.append(roc_auc_score(tuning.y_val, estimator.predict_proba(tuning.X_val)[:, 1]))
    chosen = GRIDS[model][int(np.argmax(scores))]
    split = prepare(dataset, seed=seed)
    estimator = build(model, chosen, seed, jobs).fit(split.X_train, split.y_train)
    proba = estimator.predict_proba(split.X_test)[:, 1]
    return {
        "model": model,
        "seed": seed,
        "setting": chosen,
        "valid_auroc": float(max(scores)),
        "auroc": float(roc_auc_score(split.y_test, proba)),
        "auprc": float(average_precision_score(split.y_test, proba)),
        "seconds": time.perf_counter() - began,
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n)) of ``values``."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(array.size))


def summarise(
    records: list[dict[str, Any]], models: list[str], network_table: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One row per model (mean ± SE over seeds), then the network table's best method when given."""
    rows = []
    for model in models:
        runs = [record for record in records if record["model"] == model]
        auroc, auroc_se = mean_se([run["auroc"] for run in runs])
        auprc, auprc_se = mean_se([run["auprc"] for run in runs])
        settings = sorted({json.dumps(run["setting"], sort_keys=True) for run in runs})
        rows.append(
            {
                "model": model,
                "AUC-ROC": f"{auroc:.3f} ± {auroc_se:.3f}",
                "AUC-PR": f"{auprc:.3f} ± {auprc_se:.3f}",
                "auroc": round(auroc, 4),
                "seeds": len(runs),
                "settings chosen": "; ".join(settings),
                "s/run": round(float(np.mean([run["seconds"] for run in runs])), 2),
            }
        )
    if network_table is not None:
        best = max((row for row in network_table["rows"] if "auroc" in row), key=lambda row: row["auroc"])
        rows.append(
            {
                "model": f"network: {best['method']} (tabular.py)",
                "AUC-ROC": f"{best['auroc']:.3f} ± {best['auroc_se']:.3f}",
                "AUC-PR": f"{best['auprc']:.3f} ± {best['auprc_se']:.3f}",
                "auroc": best["auroc"],
                "seeds": best["seeds"],
                "settings chosen": "",
                "s/run": best["seconds_per_run"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["loan", "fraud"], required=True, help="which half of Table 2")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, the splits of tabular.py (default: 5)")
    parser.add_argument("--models", nargs="+", choices=sorted(GRIDS), help="a subset of the models (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="random forest threads (default: %(default)s)")
    parser.add_argument("--output", default="results/tabular", help="results folder (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2 (a standard error needs two runs), got {args.seeds}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")

    from tqdm.auto import tqdm

    from equipoise.core.reporting import write_table

    models = args.models or list(GRIDS)
    output = Path(args.output)
    wall = time.perf_counter()
    records = []
    with tqdm(total=len(models) * args.seeds, desc=f"{args.dataset}: reference models", unit="run") as bar:
        for model in models:
            for seed in range(args.seeds):
                records.append(run_one(args.dataset, model, seed, args.jobs))
                bar.set_postfix_str(f"{model} seed {seed}: AUROC {records[-1]['auroc']:.3f}", refresh=False)
                bar.update()
    network_path = output / f"{args.dataset}.json"
    network = json.loads(network_path.read_text(encoding="utf-8")) if network_path.is_file() else None
    rows = summarise(records, models, network)
    meta = {
        "dataset": args.dataset,
        "splits": f"tools/benchmarks/tabular.py's: prepare(seed=s), s = 0..{args.seeds - 1}, test AUC-ROC/AUC-PR",
        "model selection": "per seed, the grid setting with the best AUC-ROC on 20% of the training part, refitted",
        "network table": str(network_path) if network is not None else "not found (run tabular.py first)",
        "wall seconds": round(time.perf_counter() - wall, 1),
    }
    columns = ["model", "AUC-ROC", "AUC-PR", "seeds", "settings chosen", "s/run"]
    write_table(rows, output, f"reference_{args.dataset}", f"Reference models, {args.dataset}", meta, columns)
    (output / f"reference_{args.dataset}_runs.json").write_text(json.dumps(records, indent=2) + "\n")
    print((output / f"reference_{args.dataset}.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
