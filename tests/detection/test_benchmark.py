"""``tools/benchmarks/detection.py cpu`` on a toy budget: every recipe trained, scored and tabled once.

Oracles: the evaluation entry point run again on each written model (the table's AP must be its
AP), the recipes' own configs for the optimiser line, and the runs file (a second call trains nothing).
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from equipoise.detection.evaluate import evaluate_detection

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
pytestmark = pytest.mark.skipif(
    not (SHARED / "coco128" / "annotations" / "instances_val2017.json").is_file(),
    reason="needs the shared COCO128 copy: set EQUIPOISE_DATA (CI sets it)",
)
TOY = [
    "backbone_weights=null",
    "fpn_channels=16",
    "min_size=64",
    "max_size=96",
    "iterations=2",
    "batch_size=2",
    "warmup_iterations=1",
    "lr_steps=[]",
    "checkpoint_every=2",
    "log_every=1",
]


def _benchmark():
    spec = importlib.util.spec_from_file_location("detection_benchmark", ROOT / "tools" / "benchmarks" / "detection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_table_has_every_recipe_its_optimiser_and_resumes(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bench = _benchmark()
        arguments = ["cpu", *TOY, "--output", str(tmp_path), "--root", str(SHARED), "--no-progress"]
        assert bench.main(arguments) == 0
        payload = json.loads((tmp_path / "cpu.json").read_text())
        rows = payload["rows"]
        assert [row["recipe"] for row in rows] == bench.CPU_RECIPES
        assert payload["meta"]["optimiser"].startswith("adamw lr 0.0001, weight decay 0.0001, 1-iteration warm-up")
        assert payload["meta"]["overrides"] == " ".join(TOY)
        for row in rows:
            if row.get("diverged"):
                continue
            again = evaluate_detection(
                tmp_path / row["recipe"] / "model.pt", data_root=SHARED, progress=False, rare_max=2, common_max=5
            )
            assert row["AP"] == again["AP"] and row["AP_rare"] == again["groups"]["rare"]["AP"], row["recipe"]
            assert row["schedule"] == "2 it x 2 img, 64-96 px"
        lines = (tmp_path / "cpu_runs.jsonl").read_text().splitlines()
        assert len(lines) == len(bench.CPU_RECIPES)
        assert bench.main(arguments) == 0  # every recipe already done: nothing trained again
        assert (tmp_path / "cpu_runs.jsonl").read_text().splitlines() == lines
        assert "| coco128_mobilenet_focal |" in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
