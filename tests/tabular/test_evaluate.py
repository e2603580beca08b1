"""Tabular evaluation, checkpoints, the train/eval scripts and the Table 2 benchmark, against oracles:
scikit-learn's ``roc_auc_score``, ``average_precision_score``, ``f1_score`` and
``confusion_matrix``, torchmetrics' multiclass calibration error, the mean and standard error
written out by hand, and the same scores recomputed from a reloaded checkpoint.

The scripts run on the real loan-default file (``EQUIPOISE_DATA``, or ``../shared/data``) for one
or two epochs; those tests skip without it.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from equipoise.tabular.data import TabularData, prepare
from equipoise.tabular.evaluate import FORMAT, evaluate, load_checkpoint, model_from_checkpoint, save_checkpoint
from equipoise.tabular.train import METHODS, fit, predict_proba

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
needs_loan = pytest.mark.skipif(
    not (SHARED / "loan_default" / "loan_data.csv").is_file(),
    reason="needs the shared real data: set EQUIPOISE_DATA to the shared data folder (CI sets it)",
)


@pytest.fixture(scope="module")
def split():
    """A loan-shaped stand-in (19 features, 1 in 6 positive) with a validation part."""
    X, y = make_classification(
        n_samples=1200, n_features=19, n_informative=6, weights=[0.84], flip_y=0.05, random_state=0
    )
    data = TabularData(
        X=X.astype(np.float32),
        y=y.astype(np.int64),
        feature_names=[f"f{i}" for i in range(19)],
        scale_columns=[],
        name="standin",
    )
    return prepare(data, seed=0, val_size=0.25)


@pytest.fixture(scope="module")
def model(split):
    return fit("naive", split.X_train, split.y_train, network="loan", seed=0, epochs=3, progress=False)


def _f1_best_threshold(scores, labels):
    """Brute force over every distinct score: the smallest threshold with the highest F1."""
    best, chosen = -1.0, None
    for threshold in sorted(set(scores.tolist())):
        value = f1_score(labels, (scores >= threshold).astype(int), zero_division=0)
        if value > best + 1e-12:
            best, chosen = value, threshold
    return chosen


def test_evaluate_matches_sklearn_and_torchmetrics(split, model, tmp_path):
    report = evaluate(model, split, tmp_path / "report", title="stand-in")
    scores = predict_proba(model, split.X_test)
    labels = split.y_test
    threshold = _f1_best_threshold(predict_proba(model, split.X_val), split.y_val)
    assert report.scalars["threshold"] == pytest.approx(threshold, rel=1e-6)
    assert report.scalars["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert report.scalars["auprc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    predicted = (scores >= report.scalars["threshold"]).astype(int)
    assert report.confusion_matrix == confusion_matrix(labels, predicted).tolist()
    assert report.scalars["f1"] == pytest.approx(f1_score(labels, predicted), abs=1e-9)
    # ECE by hand: 15 equal bins (lo, hi] of the confidence max(p, 1 - p), count-weighted |accuracy - confidence|.
    confidence = np.maximum(scores, 1 - scores)
    correct = (scores >= 0.5).astype(int) == labels
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    expected_ece = sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins)
    ) / len(labels)
    assert report.scalars["ece"] == pytest.approx(float(expected_ece), abs=1e-6)
    assert report.scalars["positive_rate_test"] == pytest.approx(labels.mean())
    for name in ("report.md", "metrics.json", "curves.png", "reliability.png", "confusion_matrix.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written["scalars"]["auroc"] == pytest.approx(report.scalars["auroc"])
    assert "maximises F1 on the validation split" in (tmp_path / "report" / "report.md").read_text()


def test_without_validation_the_threshold_is_one_half(split, model):
    no_val = prepare(
        TabularData(X=split.X_test, y=split.y_test, feature_names=split.feature_names, scale_columns=[], name="t"),
        seed=0,
    )
    report = evaluate(model, no_val)
    assert report.scalars["threshold"] == 0.5
    scores = predict_proba(model, no_val.X_test)
    assert report.confusion_matrix == confusion_matrix(no_val.y_test, (scores >= 0.5).astype(int)).tolist()


def test_checkpoint_round_trip_gives_the_same_scores(split, model, tmp_path):
    path = save_checkpoint(model, tmp_path / "run" / "model.pt", dataset="loan", seed=3, val_size=0.25)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["seed"] == 3 and raw["val_size"] == 0.25 and raw["in_features"] == 19
    restored, checkpoint = model_from_checkpoint(path)
    assert checkpoint["training_record"]["method"] == "naive"
    np.testing.assert_array_equal(predict_proba(restored, split.X_test), predict_proba(model, split.X_test))
    assert [entry.name for entry in path.parent.iterdir()] == ["model.pt"]  # no temporary file left


def test_bad_checkpoints_raise_clear_errors(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "equipoise.vision/1"}, foreign)
    with pytest.raises(ValueError, match="not an equipoise.tabular/1 checkpoint"):
        load_checkpoint(foreign)
    wrong = save_checkpoint(model, tmp_path / "wrong.pt", dataset="loan", seed=0)
    checkpoint = torch.load(wrong, weights_only=True)
    checkpoint["network"] = "fraud"
    checkpoint["in_features"] = 30
    torch.save(checkpoint, wrong)
    with pytest.raises(ValueError, match="does not fit the 'fraud' network"):
        model_from_checkpoint(wrong)
    with pytest.raises(ValueError, match="dataset must be one of"):
        save_checkpoint(model, tmp_path / "x.pt", dataset="mnist", seed=0)


@needs_loan
def test_train_then_eval_scripts_agree(tmp_path):
    env = {**os.environ, "EQUIPOISE_DATA": str(SHARED), "EQUIPOISE_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    train = [sys.executable, str(ROOT / "tools" / "train_tabular.py"), "loan_naive", "method=focal"]
    train += ["epochs=1", "seed=1", f"output={run}", "--no-progress", "options.gamma=1.5"]
    result = subprocess.run(train, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "auroc" in result.stdout
    trained = json.loads((run / "metrics.json").read_text())["scalars"]
    evaluate_command = [sys.executable, str(ROOT / "tools" / "eval_tabular.py"), "--checkpoint", str(run / "model.pt")]
    result = subprocess.run(evaluate_command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())["scalars"]
    assert evaluated == pytest.approx(trained)
    record = load_checkpoint(run / "model.pt")["training_record"]
    assert record["options"] == {"gamma": 1.5} and record["epochs"] == 1 and record["seed"] == 1
    # The run's state is in checkpoint.pt: the same command resumes it (finished: the same network again).
    assert (run / "checkpoint.pt").is_file() and (run / "config.yaml").is_file()
    first = load_checkpoint(run / "model.pt")["state_dict"]
    result = subprocess.run(train, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    again = load_checkpoint(run / "model.pt")["state_dict"]
    assert first.keys() == again.keys() and all(torch.equal(first[key], again[key]) for key in first)
    # Another run's settings with the same folder: refused, naming the checkpoint and what differs.
    result = subprocess.run([*train, "seed=2"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 2 and "checkpoint.pt" in result.stderr and "seed" in result.stderr


def _script(name: str):
    """The module of ``tools/benchmarks/<name>.py`` (tools scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "tools" / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _benchmark():
    return _script("tabular")


def test_benchmark_summary_is_mean_and_standard_error():
    bench = _benchmark()
    runs = [
        {"method": "naive", "seed": 0, "auroc": 0.60, "auprc": 0.20, "seconds": 1.0},
        {"method": "naive", "seed": 1, "auroc": 0.70, "auprc": 0.30, "seconds": 3.0},
        {"method": "naive", "seed": 2, "auroc": 0.65, "auprc": 0.40, "seconds": 2.0},
        {"method": "focal", "seed": 0, "error": "diverged", "seconds": 4.0},
        {"method": "focal", "seed": 1, "auroc": 0.5, "auprc": 0.1, "seconds": 2.0},
    ]
    rows = {row["method"]: row for row in bench.summarise(runs, "loan", ["naive", "focal", "l2rw"])}
    # mean 0.65; sample std sqrt(((-.05)^2 + .05^2 + 0) / 2) = 0.05; SE = 0.05 / sqrt(3)
    assert rows["naive"]["auroc"] == pytest.approx(0.65)
    assert rows["naive"]["auroc_se"] == pytest.approx(round(0.05 / math.sqrt(3), 4))
    assert rows["naive"]["auprc_se"] == pytest.approx(round(0.1 / math.sqrt(3), 4))
    assert rows["naive"]["paper_auroc"] == 0.655 and rows["naive"]["seconds_per_run"] == 2.0
    assert rows["focal"]["seeds"] == 1 and rows["focal"]["diverged"] == 1
    assert math.isnan(rows["focal"]["auroc_se"])
    assert rows["l2rw"]["seeds"] == 0 and "auroc" not in rows["l2rw"]
    assert sorted(bench.TABLE_ORDER) == sorted(bench.SCHEDULE_ORDER) == METHODS.names()  # every method, once
    # The authors' epoch: one pass of the under-sampled query loader, batches of 16.
    assert bench.authors_meta_steps(np.array([0] * 50 + [1] * 17)) == math.ceil(34 / 16)


@needs_loan
def test_benchmark_runs_scores_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIPOISE_DATA", str(SHARED))
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    bench = _benchmark()
    arguments = ["--dataset", "loan", "--seeds", "2", "--epochs", "1", "--methods", "naive", "random_under"]
    arguments += ["--jobs", "1", "--output", str(tmp_path / "out")]
    assert bench.main(arguments) == 0
    payload = json.loads((tmp_path / "out" / "loan.json").read_text())
    run = next(r for r in payload["runs"] if r["method"] == "naive" and r["seed"] == 1)
    split = prepare("loan", seed=1)
    model = fit("naive", split.X_train, split.y_train, network="loan", seed=1, epochs=1, progress=False)
    assert run["auroc"] == pytest.approx(roc_auc_score(split.y_test, predict_proba(model, split.X_test)), abs=1e-6)
    assert [row["method"] for row in payload["rows"]] == ["naive", "random_under"]
    assert (tmp_path / "out" / "loan.png").stat().st_size > 0 and "± " in (tmp_path / "out" / "loan.md").read_text()
    lines = (tmp_path / "out" / "loan_runs.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert bench.main(arguments) == 0  # resumed: nothing retrained, the same table
    assert (tmp_path / "out" / "loan_runs.jsonl").read_text().splitlines() == lines
    assert json.loads((tmp_path / "out" / "loan.json").read_text())["rows"] == payload["rows"]
    records = [json.loads(line) for line in lines]
    original = next(r for r in records if r["method"] == "naive" and r["seed"] == 1)
    stale = [{**r, "lr": 0.5} if r is original else r for r in records]  # a rate no longer the default
    (tmp_path / "out" / "loan_runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    assert bench.main(arguments) == 0  # that run alone is trained again, at the default rate
    rerun = [json.loads(line) for line in (tmp_path / "out" / "loan_runs.jsonl").read_text().splitlines()]
    assert len(rerun) == 5
    assert {**rerun[-1], "seconds": 0} == {**original, "seconds": 0}


@needs_loan
def test_rate_check_takes_the_largest_rate_whose_every_seed_keeps_the_threshold(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EQUIPOISE_DATA", str(SHARED))
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    rates = _script("tabular_rates")
    worst = {}  # oracle: the worst validation AUC-ROC over two seeds, one epoch, scored by scikit-learn
    for lr in rates.GRID:
        scores = []
        for seed in (0, 1):
            split = prepare("loan", seed=seed, val_size=0.2)
            model = fit("naive", split.X_train, split.y_train, seed=seed, epochs=1, lr=lr, progress=False)
            scores.append(roc_auc_score(split.y_val, predict_proba(model, split.X_val)))
        worst[lr] = min(scores)
    threshold = worst[0.1] + 1e-4  # 0.1 fails by construction
    expected = next((lr for lr in rates.GRID[1:] if worst[lr] >= threshold), None)
    tried = rates.GRID if expected is None else rates.GRID[: rates.GRID.index(expected) + 1]
    arguments = ["--dataset", "loan", "--methods", "naive", "--seeds", "2", "--epochs", "1", "--jobs", "1"]
    assert rates.main([*arguments, "--threshold", str(threshold), "--output", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "rates_loan.json").read_text())
    rows = {row["lr"]: row for row in payload["rows"]}
    assert sorted(rows, reverse=True) == list(tried)
    assert [lr for lr, row in rows.items() if row["chosen"] == "yes"] == ([] if expected is None else [expected])
    assert all(row["worst validation AUC-ROC"] == pytest.approx(worst[lr], abs=1e-4) for lr, row in rows.items())
    for bad, message in [
        (["--methods", "naive", "--start", "0.3"], "--start rates must be in the grid"),
        (["--methods", "naive", "l2rw", "--start", "0.1", "0.05", "0.02"], "one per method (2), got 3"),
        (["--methods", "naive", "--seeds", "0"], "--seeds and --epochs must be >= 1, got 0 and 3"),
    ]:
        with pytest.raises(SystemExit):
            rates.main(["--dataset", "loan", *bad])
        assert message in capsys.readouterr().err


def test_scripts_reject_bad_arguments_with_a_message(capsys):
    train_script = importlib.util.spec_from_file_location("train_tabular", ROOT / "tools" / "train_tabular.py")
    module = importlib.util.module_from_spec(train_script)
    train_script.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.main(["loan_naive", "options.gamma=2"])  # naive takes no options: the error names them
    assert "method 'naive' takes no option ['gamma']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["loan_naive", "methd=focal"])
    assert "methd" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _benchmark().main(["--dataset", "loan", "--seeds", "1"])
    assert "--seeds must be at least 2" in capsys.readouterr().err


@needs_loan
def test_reference_models_choose_on_validation_and_score_the_test(tmp_path, monkeypatch, capsys):
    from sklearn.linear_model import LogisticRegression

    monkeypatch.setenv("EQUIPOISE_DATA", str(SHARED))
    monkeypatch.setenv("EQUIPOISE_CACHE", str(tmp_path / "cache"))
    reference = _script("tabular_reference")
    network = {"rows": [{"method": "focal", "auroc": 0.6, "auroc_se": 0.01, "auprc": 0.3, "auprc_se": 0.02,
                         "seeds": 5, "seconds_per_run": 6.0}, {"method": "l2rw", "seeds": 0}]}  # fmt: skip
    (tmp_path / "loan.json").write_text(json.dumps(network))
    arguments = ["--dataset", "loan", "--seeds", "2", "--models", "logistic_regression", "--output", str(tmp_path)]
    assert reference.main(arguments) == 0
    expected = []  # oracle: C by validation AUC-ROC, refitted on the training part, scored on the test part
    for seed in (0, 1):
        tuning = prepare("loan", seed=seed, val_size=0.2)
        valid = {}
        for c in (0.01, 0.1, 1.0, 10.0):
            fitted = LogisticRegression(C=c, max_iter=5000).fit(tuning.X_train, tuning.y_train)
            valid[c] = roc_auc_score(tuning.y_val, fitted.predict_proba(tuning.X_val)[:, 1])
        split = prepare("loan", seed=seed)
        best = max(valid, key=valid.get)
        fitted = LogisticRegression(C=best, max_iter=5000).fit(split.X_train, split.y_train)
        expected.append(roc_auc_score(split.y_test, fitted.predict_proba(split.X_test)[:, 1]))
    payload = json.loads((tmp_path / "reference_loan.json").read_text())
    rows = {row["model"]: row for row in payload["rows"]}
    assert rows["logistic_regression"]["auroc"] == pytest.approx(np.mean(expected), abs=1e-4)
    assert rows["logistic_regression"]["seeds"] == 2
    assert rows["network: focal (tabular.py)"]["AUC-ROC"] == "0.600 ± 0.010"
    assert "| logistic_regression |" in (tmp_path / "reference_loan.md").read_text()
    for bad, message in [(["--seeds", "1"], "--seeds must be at least 2"), (["--jobs", "0"], "--jobs must be >= 1")]:
        with pytest.raises(SystemExit):
            reference.main(["--dataset", "loan", *bad])
        assert message in capsys.readouterr().err
