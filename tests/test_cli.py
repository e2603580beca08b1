"""The ``equipoise`` command line: every sub-command's help, recipes against the files on disk, config errors
before any work, the zoo against its index file, and ``report`` against tables written out by hand.

Nothing here trains: ``--show``/``--list`` paths, a bad key, and a training function replaced by one that
raises ``KeyboardInterrupt`` (Ctrl-C) are enough to test what the command line itself does.
"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import equipoise
from equipoise.cli import main
from equipoise.core.config import config_to_dict

PACKAGE = Path(equipoise.__file__).resolve().parent
RECIPE_DOMAINS = ("vision", "nlp", "detection", "federated", "tabular")


def _plain(value):
    """Tuples as lists, as YAML gives them back."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _recipe_files(domain: str) -> list[str]:
    return sorted(path.stem for path in (PACKAGE / domain / "recipes").glob("*.yaml"))


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


# --------------------------------------------------------------------------------------------
# Import time and help
# --------------------------------------------------------------------------------------------


def test_import_and_top_level_commands_load_no_torch(tmp_path):
    code = (
        "import sys\n"
        "import equipoise.cli\n"
        "assert 'torch' not in sys.modules, 'import equipoise.cli'\n"
        "for argv in (['--help'], ['train', '--help'], ['evaluate', '--help'], ['recipes', '--help']):\n"
        "    try:\n"
        "        equipoise.cli.main(argv)\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 0, argv\n"
        "    assert 'torch' not in sys.modules, argv\n"
        "assert equipoise.cli.main(['zoo', 'list']) == 0\n"
        "loaded = sorted(name for name in sys.modules if name.split('.')[0] in ('torch', 'timm', 'transformers'))\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


HELP = {
    (): ["demo", "train", "evaluate", "federated", "zoo", "recipes", "report"],
    ("demo",): ["--seeds", "--epochs", "--device", "--output", "(default: results/demo)"],
    ("train",): ["vision", "nlp", "detection", "tabular"],
    ("evaluate",): ["vision", "nlp", "detection", "tabular"],
    **{
        ("train", domain): ["--list", "--show", "--no-resume", "--no-progress", "key=value", "--device", "--output"]
        + ["(default: the recipe's)"]
        for domain in ("vision", "nlp", "detection", "tabular")
    },
    ("evaluate", "vision"): ["CHECKPOINT", "--checkpoint", "--calibrate", "--device", "--output", "(default: auto"],
    ("evaluate", "nlp"): ["MODEL_FOLDER", "--split", "--device", "--output", "(default: test)"],
    ("evaluate", "detection"): ["MODEL_PT", "--images", "--device", "--output", "(default: 0.05)"],
    ("evaluate", "tabular"): ["CHECKPOINT", "--checkpoint", "--device", "--output", "(default: <checkpoint dir>/eval)"],
    ("federated",): ["simulate"],
    ("federated", "simulate"): ["--list", "--show", "--no-resume", "--no-progress", "--device", "--output"],
    ("zoo",): ["list", "info", "download", "publish"],
    ("zoo", "list"): ["--index"],
    ("zoo", "info"): ["NAME", "--index", "--cache-dir"],
    ("zoo", "download"): ["NAME", "--offline", "--cache-dir", "(default: $EQUIPOISE_CACHE/zoo)"],
    ("zoo", "publish"): ["--name", "--domain", "--url", "--license", "--metrics", "--index", "sha256"],
    ("recipes",): ["list", "show"],
    ("recipes", "list"): ["DOMAIN", "(default: all)"],
    ("recipes", "show"): ["DOMAIN", "RECIPE", "key=value"],
    ("report",): ["RUN_DIR", "eval-*/metrics.json", "history.json", "--output", "--name", "--metrics"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda command: " ".join(command) or "equipoise")
def test_every_command_has_help_with_its_options(command, capsys):
    assert _exit_code([*command, "--help"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # unwrapped: argparse wraps to the terminal's width
    missing = [text for text in HELP[command] if text not in printed]
    assert not missing, printed


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


def test_recipes_list_names_every_shipped_recipe_with_its_description(capsys):
    assert main(["recipes", "list"]) == 0
    listed: dict[str, list[str]] = {}
    lines: dict[str, str] = {}
    domain = None
    for line in capsys.readouterr().out.splitlines():
        if line and not line.startswith(" "):
            domain = line.split(":")[0]
            listed[domain] = []
        elif line.strip():
            name = line.split()[0]
            listed[domain].append(name)
            lines[f"{domain}/{name}"] = line
    assert {domain: listed[domain] for domain in RECIPE_DOMAINS} == {d: _recipe_files(d) for d in RECIPE_DOMAINS}
    for domain in RECIPE_DOMAINS:
        for name in _recipe_files(domain):
            raw = yaml.safe_load((PACKAGE / domain / "recipes" / f"{name}.yaml").read_text(encoding="utf-8"))
            assert " ".join(raw["description"].split()) in " ".join(lines[f"{domain}/{name}"].split())
    assert main(["recipes", "list", "detection"]) == 0
    only = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith(" ")]
    assert only == _recipe_files("detection")


def test_recipes_show_prints_the_merged_validated_config(capsys):
    from equipoise.nlp.train import load_nlp_train_config

    assert main(["recipes", "show", "nlp", "conll_minilm_dice", "lr=2e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == _plain(config_to_dict(load_nlp_train_config("conll_minilm_dice", ["lr=2e-4"])))
    assert shown["lr"] == 2e-4 and shown["loss"] == "dice"
    assert _exit_code(["recipes", "show", "nlp", "conll_minilm_dice", "lr=fast"]) == 2
    assert "lr must be a number" in capsys.readouterr().err
    assert _exit_code(["recipes", "show", "nlp", "no_such_recipe"]) == 2
    assert "conll_minilm_dice" in capsys.readouterr().err  # the shipped names, to choose from


# --------------------------------------------------------------------------------------------
# train: --list, --show, errors before any work, Ctrl-C
# --------------------------------------------------------------------------------------------


def test_train_list_and_show_merge_recipe_overrides_and_options(tmp_path, capsys):
    from equipoise.detection.train import load_detection_train_config
    from equipoise.vision.config import load_train_config

    assert main(["train", "vision", "--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == _recipe_files("vision")
    output = tmp_path / "run"
    argv = ["train", "vision", "ce", "epochs=3", "device=cuda", "--device", "cpu", "--output", str(output)]
    assert main([*argv, "--no-progress", "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    overrides = ["epochs=3", "device=cpu", f"output={output}", "progress=false"]
    assert shown == _plain(config_to_dict(load_train_config("ce", overrides)))
    assert (shown["device"], shown["output"], shown["progress"]) == ("cpu", str(output), False)  # options win
    # --output is a folder name, never read as YAML: "2024" stays a string.
    assert main(["train", "detection", "coco128_mobilenet_eqlv2", "iterations=10", "--output", "2024", "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = load_detection_train_config("coco128_mobilenet_eqlv2", ["iterations=10", "output='2024'"])
    assert shown == _plain(config_to_dict(expected)) and shown["output"] == "2024"
    assert not output.exists()


def test_overrides_may_follow_options_and_keep_their_order(capsys):
    # argparse alone rejects key=value tokens after an option; they join the overrides, later ones winning.
    assert main(["train", "tabular", "loan_naive", "epochs=3", "--show", "seed=2", "epochs=4", "--no-progress"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["epochs"], shown["seed"], shown["progress"]) == (4, 2, False)
    assert main(["recipes", "show", "vision", "mnist_lt", "epochs=2"]) == 0
    capsys.readouterr()
    for argv, bad in ((["train", "vision", "mnist_lt", "--show", "stray"], "stray"), (["zoo", "list", "a=1"], "a=1")):
        assert _exit_code(argv) == 2
        assert f"unrecognized arguments: {bad}" in capsys.readouterr().err


def test_train_bad_key_is_a_usage_error_before_any_work(tmp_path, capsys):
    output = tmp_path / "run"
    argv = ["train", "detection", "coco128_mobilenet_focal", "itterations=5", "--output", str(output)]
    assert _exit_code(argv) == 2
    captured = capsys.readouterr()
    assert "did you mean 'iterations'" in captured.err and "usage: equipoise train detection" in captured.err
    assert captured.out == "" and not output.exists() and list(tmp_path.iterdir()) == []
    assert _exit_code(["train", "nlp", "conll_minilm_dice", "--device", "gpu"]) == 2
    assert "must be auto, cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
    assert _exit_code(["train", "nlp", "conll_minilm_dice", "--device", "cuda:1"]) == 2  # nlp trains on one device
    assert "device must be one of" in capsys.readouterr().err
    assert _exit_code(["train", "vision"]) == 2
    assert "needs a recipe" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("domain", "recipe", "train_function", "resumes_from"),
    [
        ("detection", "coco128_mobilenet_focal", "equipoise.detection.train.train_detection", "checkpoint.pt"),
        ("nlp", "conll_minilm_ce", "equipoise.nlp.train.train_nlp", "checkpoints"),
    ],
)
def test_ctrl_c_during_training_exits_130_and_says_the_command_resumes(
    domain, recipe, train_function, resumes_from, tmp_path, monkeypatch, capsys
):
    received = []

    def interrupted(config, resume, progress):
        received.append((config.output, config.device, resume, progress))
        raise KeyboardInterrupt

    monkeypatch.setattr(train_function, interrupted)
    output = str(tmp_path / "run")
    argv = ["train", domain, recipe, "--output", output, "--device", "cpu", "--no-resume", "--no-progress"]
    assert main(argv) == 130
    assert received == [(output, "cpu", False, False)]
    assert f"the same command resumes from {output}/{resumes_from}" in capsys.readouterr().err


def test_federated_simulate_takes_device_and_output(tmp_path, capsys):
    from equipoise.federated.config import load_federated_config

    output = tmp_path / "fed"
    argv = ["federated", "simulate", "mnist_dirichlet", "simulation.rounds=3", "--device", "cpu"]
    assert main([*argv, "--output", str(output), "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = load_federated_config("mnist_dirichlet", ["simulation.rounds=3", "device=cpu", f"output={output}"])
    assert shown == _plain(config_to_dict(expected)) and not output.exists()


@pytest.mark.parametrize("domain", ["vision", "tabular"])
def test_evaluate_takes_the_checkpoint_as_an_argument_or_an_option(domain, tmp_path, capsys):
    missing = str(tmp_path / "missing.pt")
    for form in ([missing], ["--checkpoint", missing], [missing, "--checkpoint", missing]):
        assert _exit_code(["evaluate", domain, *form]) == 2  # reaches the file: it names it
        assert "missing.pt" in capsys.readouterr().err
    assert _exit_code(["evaluate", domain]) == 2
    assert "the checkpoint is missing: pass CHECKPOINT" in capsys.readouterr().err
    assert _exit_code(["evaluate", domain, missing, "--checkpoint", str(tmp_path / "other.pt")]) == 2
    assert "two checkpoints given" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# zoo
# --------------------------------------------------------------------------------------------


def test_zoo_list_prints_the_shipped_entries(monkeypatch, capsys):
    monkeypatch.delenv("EQUIPOISE_ZOO_INDEX", raising=False)
    shipped = json.loads((PACKAGE / "zoo_index.json").read_text(encoding="utf-8"))["entries"]
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == sorted(entry["name"] for entry in shipped)
    for entry in shipped:
        line = next(line for line in lines if line.startswith(f"{entry['name']}:"))
        assert f"{entry['architecture']} on {entry['dataset']}" in line and f"{entry['size'] / 2**20:.1f} MiB" in line
    assert _exit_code(["zoo", "info", "no.such.entry"]) == 1
    assert "unknown zoo entry 'no.such.entry'" in capsys.readouterr().err


def test_zoo_publish_declares_a_state_dict_in_a_team_index(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EQUIPOISE_ZOO_INDEX", raising=False)
    weights = tmp_path / "weights.pth"
    torch.save({"weight": torch.arange(6.0).reshape(2, 3)}, weights)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"metrics": {"AP": 12.5, "per_class": [1, 2]}, "title": "x"}))
    index = tmp_path / "team_zoo.json"
    argv = ["zoo", "publish", str(weights), "--name", "team.tiny", "--domain", "detection", "--architecture", "linear"]
    argv += ["--dataset", "toy", "--method", "focal", "--url", "https://example.org/weights.pth", "--license", "MIT"]
    assert main([*argv, "--metrics", str(metrics), "--index", str(index)]) == 0
    (entry,) = json.loads(index.read_text())["entries"]
    data = weights.read_bytes()
    assert (entry["sha256"], entry["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
    assert entry["metrics"] == {"AP": 12.5} and entry["recipe"] is None
    assert entry["sha256"] in capsys.readouterr().out
    assert main(["zoo", "list", "--index", str(index)]) == 0
    assert "team.tiny: linear on toy, focal (detection); AP 12.5" in capsys.readouterr().out
    assert main(["zoo", "info", "team.tiny", "--index", str(index), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "no (downloads to" in capsys.readouterr().out


@pytest.mark.parametrize(
    "saved, key",
    [
        ({"format": "equipoise.vision/1", "model": None, "optimizer": {"state": {}}, "epoch": 3}, "model"),
        ({"format": "equipoise.tabular/1", "state_dict": None, "dataset": "loan"}, "state_dict"),
        ({"format": "equipoise.federated/1", "weights": None, "round": 2}, "weights"),
    ],
)
def test_zoo_publish_takes_a_runs_checkpoint_and_publishes_its_weights(saved, key, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EQUIPOISE_ZOO_INDEX", raising=False)
    state = {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.ones(2)}
    run = tmp_path / "run"
    run.mkdir()
    torch.save({**saved, key: state}, run / "checkpoint.pt")
    (run / "metrics.json").write_text(json.dumps({"scalars": {"auroc": 0.75}, "per_class": []}))  # picked up
    index = tmp_path / "team_zoo.json"
    argv = ["zoo", "publish", str(run / "checkpoint.pt"), "--name", "team.run", "--domain", "vision"]
    argv += ["--architecture", "a", "--dataset", "d", "--method", "m", "--url", "https://example.org/w.pth"]
    assert main([*argv, "--license", "MIT", "--index", str(index)]) == 0
    weights = run / "team.run.pth"  # the network's state_dict alone, the form the zoo serves
    assert f"host {weights} at https://example.org/w.pth" in capsys.readouterr().out
    loaded = torch.load(weights, weights_only=True)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[name], state[name]) for name in state)
    (entry,) = json.loads(index.read_text())["entries"]
    assert entry["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest() and entry["metrics"] == {"auroc": 0.75}


def test_zoo_publish_refuses_a_file_without_weights(tmp_path, capsys):
    argv = ["--name", "team.x", "--domain", "vision", "--architecture", "a", "--dataset", "d", "--method", "m"]
    argv += ["--url", "https://example.org/w.pth", "--license", "MIT", "--index", str(tmp_path / "zoo.json")]
    cases = {
        "history.json": (b'{"history": []}', "is corrupt or not a torch checkpoint"),
        "foreign.pt": ({"format": "other/1", "model": {"w": torch.zeros(1)}}, "not an equipoise checkpoint"),
        "empty.pt": ({"format": "equipoise.vision/1", "epoch": 1}, "holds no weights under model, state_dict"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
        assert _exit_code(["zoo", "publish", str(path), *argv]) == 1
        assert message in capsys.readouterr().err and not (tmp_path / "team.x.pth").exists()


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def test_report_builds_one_table_across_domains(tmp_path, capsys):
    from equipoise.core.reporting import markdown_table

    runs = {name: tmp_path / name for name in ("vision", "tabular", "detection", "nlp", "federated")}
    # vision training: the scalars of evaluate_classification, flat (None where undefined)
    _write(runs["vision"] / "metrics.json", {"accuracy": 0.75, "balanced_accuracy": 0.5, "few_shot_accuracy": None})
    # tabular: MetricReport.to_dict()
    _write(runs["tabular"] / "metrics.json", {"scalars": {"auroc": 0.9, "accuracy": 0.95}, "per_class": [{"a": 1}]})
    # detection evaluation: {"title", "meta", "metrics"} in eval-<images folder> beside the model
    detection = {"title": "t", "meta": {"seed": 0}, "metrics": {"AP": 12.5, "AP50": 30.0, "groups": {"rare": {}}}}
    _write(runs["detection"] / "eval-coco128" / "metrics.json", detection)
    # nlp evaluations: flat, with nested sections, in eval-<split>; two splits, two rows
    nlp = {"task": "tagging", "f1": 0.875, "accuracy": 0.96, "evaluation": {"examples": 12}, "labels": ["O"]}
    _write(runs["nlp"] / "eval-test" / "metrics.json", nlp)
    _write(runs["nlp"] / "eval-valid" / "metrics.json", {**nlp, "f1": 0.9})
    # federated: history.json, the last evaluated round
    history = [
        {"round": 1, "accuracy": 0.5, "train_loss": 1.0, "clients": [1, 2]},
        {"round": 2, "accuracy": 0.625, "train_loss": 0.5, "clients": [3, 4]},
        {"round": 3, "train_loss": 0.25, "clients": [5, 6]},
    ]
    _write(runs["federated"] / "history.json", {"fingerprint": {}, "history": history})

    assert main(["report", *map(str, runs.values()), "--output", str(tmp_path / "out"), "--name", "all"]) == 0
    expected = [
        {"run": str(runs["vision"]), "accuracy": 0.75, "balanced_accuracy": 0.5},
        {"run": str(runs["tabular"]), "accuracy": 0.95, "auroc": 0.9},
        {"run": str(runs["detection"] / "eval-coco128"), "AP": 12.5, "AP50": 30.0},
        {"run": str(runs["nlp"] / "eval-test"), "accuracy": 0.96, "f1": 0.875},
        {"run": str(runs["nlp"] / "eval-valid"), "accuracy": 0.96, "f1": 0.9},
        {"run": str(runs["federated"]), "accuracy": 0.625, "round": 2, "train_loss": 0.5},
    ]
    # The metrics in the order the files list them, the runs in the order given.
    columns = ["run", "accuracy", "balanced_accuracy", "auroc", "AP", "AP50", "f1", "round", "train_loss"]
    table = markdown_table(expected, columns)
    printed = capsys.readouterr().out
    assert printed.startswith(table)
    assert "| " + str(runs["vision"]) + " | 0.75 | 0.5 |  |  |  |  |  |  |" in printed  # blank where missing
    written = json.loads((tmp_path / "out" / "all.json").read_text())
    assert written["rows"] == expected and written["meta"]["runs"] == list(map(str, runs.values()))
    assert table in (tmp_path / "out" / "all.md").read_text()
    # --metrics: these columns, in this order, shell-style patterns allowed
    assert main(["report", *map(str, runs.values()), "--metrics", "f1, AP*,accuracy"]) == 0
    assert capsys.readouterr().out == markdown_table(expected, ["run", "f1", "AP", "AP50", "accuracy"])
    assert _exit_code(["report", str(runs["vision"]), "--metrics", "accuracy,auprc"]) == 2
    assert "--metrics auprc matches none of the runs' metrics: accuracy, balanced_accuracy" in capsys.readouterr().err


def test_report_on_a_folder_without_metrics_exits_2_naming_it(tmp_path, capsys):
    good = tmp_path / "good"
    _write(good / "metrics.json", {"accuracy": 0.5})
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _exit_code(["report", str(good), str(empty)]) == 2
    captured = capsys.readouterr()
    assert f"RUN_DIR {str(empty)!r} holds no metrics.json" in captured.err and captured.out == ""
    assert _exit_code(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
