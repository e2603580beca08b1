"""The detection evaluate entry point: a tiny model trained here on COCO128, scored and reported.

Oracles: pycocotools run directly on the written ``detections.json`` (loadRes + COCOeval), the
model's own predictions converted by hand, and the training set's class image counts.
"""

import contextlib
import importlib.util
import io
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from equipoise.detection.evaluate import evaluate_detection, predict
from equipoise.detection.train import DetectionTrainConfig, load_trained_model, train_detection

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
ANNOTATIONS = SHARED / "coco128" / "annotations" / "instances_val2017.json"
pytestmark = pytest.mark.skipif(
    not ANNOTATIONS.is_file(), reason="needs the shared COCO128 copy: set EQUIPOISE_DATA (CI sets it)"
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A MobileNetV2-FPN RetinaNet (random backbone, 16-wide FPN) after 6 iterations on COCO128 at 64-96 px."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = DetectionTrainConfig(
        data_root=str(SHARED),
        backbone="mobilenet_v2_fpn",
        backbone_weights=None,
        fpn_channels=16,
        min_size=64,
        max_size=96,
        iterations=6,
        batch_size=2,
        warmup_iterations=2,
        lr_steps=[],
        output=str(tmp_path_factory.mktemp("run")),
    )
    path = train_detection(config, progress=False)
    torch.set_num_threads(threads)
    return path


def test_report_files_and_numbers_agree_with_pycocotools_on_the_written_detections(model_path, tmp_path):
    metrics = evaluate_detection(
        model_path, output=tmp_path, data_root=SHARED, max_images=12, score_thresh=0.0, plot_images=2, progress=False
    )
    assert {path.name for path in tmp_path.iterdir()} >= {
        "metrics.json",
        "report.md",
        "detections.json",
        "detections.png",
        "ap_vs_frequency.png",
    }
    results = json.loads((tmp_path / "detections.json").read_text())
    assert results and {row["image_id"] for row in results} <= set(COCO(str(ANNOTATIONS)).getImgIds())
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(ANNOTATIONS))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(str(tmp_path / "detections.json")), "bbox")
        evaluation.params.imgIds = [ground_truth.dataset["images"][i]["id"] for i in range(12)]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # detections.json rounds boxes to 0.01 px: the APs agree to that rounding
    assert metrics["AP"] == pytest.approx(max(evaluation.stats[0], 0.0), abs=2e-3)
    assert metrics["AP50"] == pytest.approx(max(evaluation.stats[1], 0.0), abs=2e-3)
    assert metrics["counts"]["images"] == 12 and metrics["counts"]["detections"] == len(results)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["AP"] == pytest.approx(metrics["AP"])
    report = (tmp_path / "report.md").read_text()
    assert "![detections](detections.png)" in report and "rare" in report
    assert Image.open(tmp_path / "detections.png").size[0] > 300


def test_detections_json_is_the_models_output_in_coco_format(model_path, tmp_path):
    model, metadata = load_trained_model(model_path, score_thresh=0.0, detections_per_img=100)  # the evaluation's
    from equipoise.detection.data import load_coco128

    dataset = load_coco128(SHARED, categories=metadata["category_ids"])
    row = predict(model, dataset, torch.device("cpu"), batch_size=4, indices=[0, 1, 2, 3], progress=False)[3]
    evaluate_detection(
        model_path, output=tmp_path, data_root=SHARED, max_images=4, score_thresh=0.0, plot_images=0, progress=False
    )
    written = [r for r in json.loads((tmp_path / "detections.json").read_text()) if r["image_id"] == row["image_id"]]
    assert len(written) == len(row["boxes"]) > 0
    for result, box, score, label in zip(
        written, row["boxes"].tolist(), row["scores"].tolist(), row["labels"].tolist()
    ):
        assert result["category_id"] == metadata["category_ids"][label]
        assert result["bbox"] == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]], abs=0.011)
        assert result["score"] == pytest.approx(score)


def test_groups_come_from_the_training_counts_in_the_model(model_path, tmp_path):
    _, metadata = load_trained_model(model_path)
    counts = torch.tensor(metadata["class_image_counts"])
    metrics = evaluate_detection(
        model_path,
        output=tmp_path,
        data_root=SHARED,
        max_images=4,
        rare_max=2,
        common_max=5,
        plot_images=0,
        progress=False,
    )
    groups = metrics["groups"]
    assert groups["rare"]["classes"] == int(((counts >= 1) & (counts <= 2)).sum())
    assert groups["common"]["classes"] == int(((counts >= 3) & (counts <= 5)).sum())
    assert groups["frequent"]["classes"] == int((counts > 5).sum())


def test_bad_arguments_are_refused(model_path, tmp_path):
    with pytest.raises(ValueError, match="give both images and annotations"):
        evaluate_detection(model_path, images=str(tmp_path))
    with pytest.raises(ValueError, match="max_images must be a positive int"):
        evaluate_detection(model_path, max_images=0)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        evaluate_detection(model_path, device="cpu", fp16=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_detection(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt or not a torch checkpoint"):
        evaluate_detection(tmp_path / "bad.pt")


def test_script_prints_the_table_and_explains_errors(model_path, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("eval_detection_script", ROOT / "tools" / "eval_detection.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    arguments = [str(model_path), "--data-root", str(SHARED), "--max-images", "4", "--plot-images", "0"]
    assert script.main([*arguments, "--output", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| AP | AP50 | AP75 |" in out and "AP_rare" in out
    with pytest.raises(SystemExit) as exit_info:
        script.main([str(tmp_path / "missing.pt")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
