"""Long-tailed vision benchmarks: one command each, a table printed, JSON + markdown under results/vision/.

    python tools/benchmarks/vision_lt.py mnist        # MNIST-LT ratio 100, small CNN, every method, 3 seeds
    python tools/benchmarks/vision_lt.py cifar        # CIFAR-10-LT ratio 100, ResNet-32, LDAM recipe on a CPU budget
    python tools/benchmarks/vision_lt.py throughput   # training images/s with each loss relative to cross-entropy
    python tools/benchmarks/vision_lt.py gpu          # the full 200-epoch recipes (run where a GPU is)

Runs resume: a finished run is read back from its checkpoint, an interrupted one continues.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from equipoise.core.calibration import posthoc_logit_adjustment
from equipoise.core.config import config_from_dict
from equipoise.core.metrics import evaluate_classification
from equipoise.core.reporting import write_table
from equipoise.vision.checkpoint import model_from_checkpoint
from equipoise.vision.config import TrainConfig, load_train_config
from equipoise.vision.data import dataset_from_config
from equipoise.vision.evaluate import predict_logits
from equipoise.vision.train import train

# (row name, recipe, extra overrides)
MNIST_METHODS = [
    ("CE", "mnist_lt", []),
    ("focal", "mnist_lt", ["loss.name=focal", "loss.options={gamma: 1.0}"]),
    ("CB-focal", "mnist_lt", ["loss.name=class_balanced", "loss.options={beta: 0.9999, loss_type: focal, gamma: 1.0}"]),
    ("LDAM-DRW", "mnist_lt", ["loss.name=ldam", "model.classifier=cosine", "loss.drw_epoch=5"]),
    ("logit-adjusted", "mnist_lt", ["loss.name=logit_adjusted"]),
    ("balanced softmax", "mnist_lt", ["loss.name=balanced_softmax"]),
    ("VS", "mnist_lt", ["loss.name=vs"]),
    ("DRS", "mnist_lt", ["sampler.name=deferred_resampling", "sampler.options={switch_epoch: 5}"]),
    ("OS-mixup", "mnist_lt", ["sampler.name=class_balanced", "mixup.mixup_alpha=1.0"]),
]
MNIST_EPOCHS = 6  # DRW and DRS switch at epoch 5 (0-based): the last sixth, near 160 of 200
CIFAR_RUNS = [
    ("CE", "ce"),
    ("focal", "focal"),
    ("CB-focal", "cb_focal"),
    ("LDAM-DRW", "ldam_drw"),
    ("logit-adjusted", "logit_adjusted"),
    ("balanced softmax", "balanced_softmax"),
]
PAPER_CIFAR10 = {"CE": 70.36, "focal": 70.38, "CB-focal": 74.57, "LDAM-DRW": 77.03, "logit-adjusted": 77.67}
THROUGHPUT_LOSSES = ["cross_entropy", "focal", "class_balanced", "ldam", "logit_adjusted", "balanced_softmax", "vs"]


def _cifar_budget(epochs: int) -> tuple[list[str], int]:
    """The LDAM schedule scaled to ``epochs``: warm-up 1, lr x0.01 at 80% and x0.0001 at 90%, DRW at 80%."""
    drw, late = round(0.8 * epochs), round(0.9 * epochs)
    return [
        f"epochs={epochs}",
        "optimizer.warmup_epochs=1",
        f"optimizer.lr_steps=[[{drw}, 0.01], [{late}, 0.0001]]",
        "channels_last=true",
    ], drw


def _row(name: str, scalars: dict, seconds: float, **extra) -> dict:
    def pct(key):
        value = scalars.get(key)
        return None if value is None else round(100 * value, 2)

    row = {
        "method": name,
        "accuracy": pct("accuracy"),
        "balanced_accuracy": pct("balanced_accuracy"),
        "many_shot": pct("many_shot_accuracy"),
        "medium_shot": pct("medium_shot_accuracy"),
        "few_shot": pct("few_shot_accuracy"),
        "worst_class": pct("worst_class_accuracy"),
        "seconds": round(seconds, 1),
        **extra,
    }
    # Shot groups without classes (CIFAR-10-LT has none under 20 images) are left out.
    return {key: value for key, value in row.items() if value is not None or key in extra}


def _std(values: torch.Tensor) -> float:
    return float(values.std()) if values.numel() > 1 else 0.0


def _run_seconds(run_dir: Path) -> float:
    log = run_dir / "log.jsonl"
    return sum(json.loads(line)["seconds"] for line in log.read_text().splitlines()) if log.is_file() else 0.0


def _test_logits(checkpoint_path: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model, checkpoint = model_from_checkpoint(checkpoint_path)
    config = config_from_dict(TrainConfig, checkpoint["config"])
    logits, labels = predict_logits(model, dataset_from_config(config.data, "test"), progress=False)
    return logits, labels, checkpoint


def _train_one(recipe: str, overrides: list[str], threads: int) -> str:
    torch.set_num_threads(threads)
    return str(train(load_train_config(recipe, overrides)))


def _train_all(runs: list[tuple[str, list[str]]], jobs: int) -> list[Path]:
    """Train ``(recipe, overrides)`` runs, ``jobs`` at a time in separate processes of ``2 // jobs`` threads.

    On a small shared CPU, single-threaded processes side by side lose less to other load than
    one process whose OpenMP threads wait for each other.
    """
    threads = max(1, torch.get_num_threads() // jobs)
    if jobs == 1:
        return [Path(_train_one(recipe, overrides, threads)) for recipe, overrides in runs]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        results = [pool.apply_async(_train_one, (recipe, overrides, threads)) for recipe, overrides in runs]
        return [Path(result.get()) for result in results]


def cifar(args: argparse.Namespace) -> list[dict]:
    budget, drw = _cifar_budget(args.epochs)
    root = Path(args.output) / "cifar10_lt_runs"
    rows: list[dict] = []
    runs = []
    for _, recipe in CIFAR_RUNS:
        overrides = [*budget, f"output={root / recipe}", f"progress={str(args.progress).lower()}"]
        if recipe == "ldam_drw":
            overrides.append(f"loss.drw_epoch={drw}")
        runs.append((recipe, overrides))
    timing_path = root / "training_wall_time.json"
    unfinished = any(not (root / recipe / "metrics.json").is_file() for _, recipe in CIFAR_RUNS)
    training_started = time.perf_counter()
    run_dirs = _train_all(runs, args.jobs)
    if unfinished or not timing_path.is_file():
        # Wall time of the invocation that trained; a later invocation only reads finished runs.
        wall = {"seconds": round(time.perf_counter() - training_started, 1), "processes": args.jobs}
        timing_path.write_text(json.dumps(wall) + "\n", encoding="utf-8")
    training_wall = json.loads(timing_path.read_text(encoding="utf-8"))["seconds"]
    for (name, _), run_dir in zip(CIFAR_RUNS, run_dirs):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        rows.append(_row(name, metrics, _run_seconds(run_dir), paper_accuracy=PAPER_CIFAR10.get(name)))
        print(f"{name}: balanced accuracy {rows[-1]['balanced_accuracy']}", flush=True)
    ce_checkpoint = root / "ce" / "checkpoint.pt"
    derived_started = time.perf_counter()
    logits, labels, checkpoint = _test_logits(ce_checkpoint)
    counts = checkpoint["class_counts"]
    priors = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    adjusted = posthoc_logit_adjustment(logits, priors, tau=1.0)
    report = evaluate_classification(adjusted, labels, class_counts=counts)
    rows.append(_row("CE + post-hoc LA (tau 1)", report.scalars, time.perf_counter() - derived_started))
    from equipoise.vision.decouple import decouple

    # tau-norm with tau = 1: CIFAR-10-LT has no validation split to choose tau on, and choosing
    # it on the training features picks tau = 0, i.e. no change (see equipoise.vision.decouple).
    for method, name, options in (("crt", "CE + cRT", {}), ("tau_norm", "CE + tau-norm (tau 1)", {"tau": 1.0})):
        step_started = time.perf_counter()
        path = decouple(ce_checkpoint, method, progress=args.progress, **options)
        logits, labels, _ = _test_logits(path)
        report = evaluate_classification(logits, labels, class_counts=counts)
        rows.append(_row(name, report.scalars, time.perf_counter() - step_started, stage2=str(path)))
    ce_balanced = rows[0]["balanced_accuracy"]
    for row in rows:
        row["vs_ce"] = round(row["balanced_accuracy"] - ce_balanced, 2)
    derived_seconds = sum(row["seconds"] for row in rows[len(CIFAR_RUNS) :])
    meta = {
        "dataset": "CIFAR-10-LT, imbalance ratio 100 (shared JPEG copy), balanced test set of 10,000",
        "model": "resnet32_cifar",
        "epochs": args.epochs,
        "schedule": " ".join(budget),
        "device": "cpu",
        "processes": args.jobs,
        "threads per process": max(1, torch.get_num_threads() // args.jobs),
        "training wall time, six runs (s)": training_wall,
        "stage-2 and post-hoc rows (s)": round(derived_seconds, 1),
        "whole table wall time (s)": round(training_wall + derived_seconds, 1),
        "seconds column": "training time of each run (its processes ran two at a time) or of the stage-2 step",
    }
    write_table(rows, args.output, "cifar10_lt", title="CIFAR-10-LT ratio 100, ResNet-32 (CPU budget)", meta=meta)
    return rows


def mnist(args: argparse.Namespace) -> list[dict]:
    root = Path(args.output) / "mnist_lt_runs"
    per_method: dict[str, list[dict]] = {}
    plan = []
    for seed in range(args.seeds):
        for name, recipe, extra in MNIST_METHODS:
            slug = name.lower().replace(" ", "_").replace("-", "_")
            overrides = [*extra, f"epochs={MNIST_EPOCHS}", f"seed={seed}", f"data.seed={seed}"]
            overrides.append(f"output={root / f'{slug}_seed{seed}'}")
            plan.append((name, recipe, [*overrides, "progress=false"]))
    run_dirs = _train_all([(recipe, overrides) for _, recipe, overrides in plan], args.jobs)
    for (name, _, _), run_dir in zip(plan, run_dirs):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        logits, labels, checkpoint = _test_logits(run_dir / "checkpoint.pt")
        # MNIST-LT's rarest class has 54 images, so the usual few-shot group (< 20) is empty:
        # "tail" is the accuracy on the three rarest classes.
        tail = sorted(range(10), key=lambda c: checkpoint["class_counts"][c])[:3]
        predictions = logits.argmax(1)
        tail_accuracy = sum(float((predictions[labels == c] == c).float().mean()) for c in tail) / 3
        per_method.setdefault(name, []).append(
            {**metrics, "tail_accuracy": tail_accuracy, "seconds": _run_seconds(run_dir)}
        )
    rows = []
    for name, runs in per_method.items():
        balanced = torch.tensor([r["balanced_accuracy"] for r in runs], dtype=torch.float64) * 100
        tail = torch.tensor([r["tail_accuracy"] for r in runs], dtype=torch.float64) * 100
        accuracy = torch.tensor([r["accuracy"] for r in runs], dtype=torch.float64) * 100
        rows.append(
            {
                "method": name,
                "balanced_accuracy": round(float(balanced.mean()), 2),
                "balanced_accuracy_std": round(_std(balanced), 2),
                "tail_3_accuracy": round(float(tail.mean()), 2),
                "tail_3_accuracy_std": round(_std(tail), 2),
                "accuracy": round(float(accuracy.mean()), 2),
                "seeds": len(runs),
                "seconds": round(sum(r["seconds"] for r in runs), 1),
            }
        )
    ce = rows[0]["balanced_accuracy"]
    for row in rows:
        row["vs_ce"] = round(row["balanced_accuracy"] - ce, 2)
    meta = {
        "dataset": "MNIST-LT ratio 100 (counts 5421 ... 54), full balanced test set",
        "model": "cnn_small",
        "recipe": f"mnist_lt with epochs={MNIST_EPOCHS} (SGD lr 0.05, cosine, batch 128)",
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
    }
    write_table(rows, args.output, "mnist_lt", title=f"MNIST-LT ratio 100, small CNN, {args.seeds} seeds", meta=meta)
    return rows


def throughput(args: argparse.Namespace) -> list[dict]:
    """Training images/s of ResNet-32 on CIFAR-10-LT with each loss: rounds over the losses, medians."""
    speeds: dict[str, list[float]] = {loss: [] for loss in THROUGHPUT_LOSSES}
    for repeat in range(args.repeats):
        # Each round starts with a different loss, so no loss always runs first (a cold round).
        shift = repeat % len(THROUGHPUT_LOSSES)
        for loss in THROUGHPUT_LOSSES[shift:] + THROUGHPUT_LOSSES[:shift]:
            out = Path(args.output) / "throughput_runs" / f"{loss}_{repeat}"
            overrides = ["epochs=1", f"loss.name={loss}", f"max_steps_per_epoch={args.steps}", "progress=false"]
            overrides += [f"output={out}", "channels_last=true", "evaluate=false"]
            if loss == "ldam":
                overrides.append("model.classifier=cosine")
            run_dir = train(load_train_config("ce", overrides), resume=False)
            speeds[loss].append(json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])["images_per_second"])
    rows = [
        {"loss": loss, "images_per_second": round(float(torch.tensor(values).median()), 1), "runs": len(values)}
        for loss, values in speeds.items()
    ]
    base = rows[0]["images_per_second"]
    for row in rows:
        row["cost_vs_ce_percent"] = round(100 * (base / row["images_per_second"] - 1), 2)
        row["within_5_percent"] = "yes" if row["cost_vs_ce_percent"] <= 5 else "**no**"
    meta = {
        "model": "resnet32_cifar (channels_last), batch 128, CIFAR-10-LT ratio 100 with augmentation",
        "timed": f"{args.steps} training steps per run (data loading included), median of {args.repeats} rounds",
        "threads": torch.get_num_threads(),
    }
    write_table(rows, args.output, "throughput", title="Training throughput per loss relative to CE", meta=meta)
    return rows


GPU_RECIPES = [
    # (dataset, method, command, paper top-1 %, source)
    ("CIFAR-10-LT r100", "CE", "ce", 70.36, "Cao et al. 2019, Table 2"),
    ("CIFAR-10-LT r100", "LDAM-DRW", "ldam_drw", 77.03, "Cao et al. 2019, Table 2"),
    ("CIFAR-10-LT r100", "logit-adjusted", "logit_adjusted", 77.67, "Menon et al. 2021, Table 3"),
    ("CIFAR-100-LT r100", "CE", "ce data.dataset=cifar100_lt", 38.32, "Cao et al. 2019, Table 2"),
    ("CIFAR-100-LT r100", "LDAM-DRW", "ldam_drw data.dataset=cifar100_lt", 42.04, "Cao et al. 2019, Table 2"),
]


def gpu(args: argparse.Namespace) -> list[dict]:
    """The full 200-epoch recipes (about 20 minutes each on one modern GPU), with the papers' numbers.

    Prints the commands; with ``--run`` it trains them here (``device=auto``) and fills in the
    measured top-1 accuracy.
    """
    rows = []
    for dataset, method, recipe, paper, source in GPU_RECIPES:
        slug = recipe.replace(" data.dataset=", "_").replace("_lt", "")
        command = f"python tools/train_vision.py {recipe} output={args.output}/gpu/{slug}"
        row = {"dataset": dataset, "method": method, "command": command, "paper_top1": paper, "source": source}
        if args.run:
            name, *overrides = recipe.split()
            run_dir = train(load_train_config(name, [*overrides, f"output={args.output}/gpu/{slug}", "progress=false"]))
            row["measured_top1"] = round(100 * json.loads((run_dir / "metrics.json").read_text())["accuracy"], 2)
        rows.append(row)
    write_table(rows, args.output, "gpu_recipes", title="200-epoch recipes (GPU) and the papers' top-1 accuracy")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["mnist", "cifar", "throughput", "gpu"])
    parser.add_argument("--output", default="results/vision", help="results folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="cifar: epochs of the CPU budget (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="mnist: seeds per method (default: %(default)s)")
    parser.add_argument(
        "--steps", type=int, default=30, help="throughput: steps per timed epoch (default: %(default)s)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="throughput: timed runs per loss (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained side by side (default: %(default)s)")
    parser.add_argument("--run", action="store_true", help="gpu: train the recipes here, not only list them")
    parser.add_argument("--progress", action="store_true", help="show per-epoch progress bars")
    args = parser.parse_args(argv)
    run, table = {
        "mnist": (mnist, "mnist_lt"),
        "cifar": (cifar, "cifar10_lt"),
        "throughput": (throughput, "throughput"),
        "gpu": (gpu, "gpu_recipes"),
    }[args.benchmark]
    run(args)
    print((Path(args.output) / f"{table}.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
