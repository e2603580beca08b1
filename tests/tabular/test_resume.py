"""Exact checkpoint and resume of ``equipoise.tabular.train.fit(checkpoint=...)``.

The oracle: the same ``fit`` call without a checkpoint and without an interruption. A run is
interrupted by a ``KeyboardInterrupt`` raised right after the k-th ``_Run.after_epoch`` (after
that epoch's checkpoint was written), then called again with the same checkpoint path; its
network must equal the oracle's bit for bit (``torch.equal``) and its ``training_record``
(losses, validation scores, chosen pair ...) must be the same dict. The batch streams are
checked against a pass-by-pass oracle drawn from a generator of the same seed. The data are
400 synthetic rows (15% positives) and the networks tiny, so the file runs in seconds.
"""

import io
import re
import types

import numpy as np
import pytest
import torch

from equipoise.core.checkpoint import load_checkpoint
from equipoise.tabular import train
from equipoise.tabular.train import FIT_CHECKPOINT_FORMAT, fit

FAST = {"network": (8,), "epochs": 3, "progress": False}
META = {"meta_steps": 4, "meta_steps_per_epoch": 8}  # 3 epochs: 6 outer updates of 4 meta-steps
PAIRS = [("instance", "undersample"), ("balanced", "instance")]


def _data(features=5, rows=400, seed=0):
    """``rows`` standard-normal rows, about 15% positives shifted by 0.8 (a learnable signal)."""
    rng = np.random.RandomState(seed)
    y = (rng.rand(rows) < 0.15).astype(np.int64)
    X = (rng.randn(rows, features) + 0.8 * y[:, None]).astype(np.float32)
    return X, y


def _arguments(features=5, validation=False):
    X, y = _data(features)
    arguments = {"X_train": X, "y_train": y}
    if validation:
        arguments["X_val"], arguments["y_val"] = _data(features, rows=120, seed=1)
    return arguments


def _fit(method, arguments, **options):
    arguments = dict(arguments)
    return fit(method, arguments.pop("X_train"), arguments.pop("y_train"), **arguments, **options)


def _interrupt_after(monkeypatch, calls):
    """Make ``_Run.after_epoch`` raise ``KeyboardInterrupt`` once its ``calls``-th call has returned."""
    original = train._Run.after_epoch
    count = [0]

    def after_epoch(run):
        original(run)
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt

    monkeypatch.setattr(train._Run, "after_epoch", after_epoch)


def _assert_same_model(model, expected):
    assert model.state_dict().keys() == expected.state_dict().keys()
    for name, value in expected.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert model.training_record == expected.training_record


CASES = {
    "naive": ("naive", {}, 1, {}),
    "random_over": ("random_over", {}, 2, {}),
    "focal": ("focal", {}, 1, {}),
    # The fraud network has dropout (torch's global generator); meta batches of 16 make the meta
    # stream's passes (25 batches) straddle the epochs (17 batches), so it resumes mid-pass.
    "meta_weight_net_fraud": ("meta_weight_net", {"features": 30}, 2, {"network": "fraud", "meta_batch_size": 16}),
    "l2rw": ("l2rw", {}, 2, {}),
    "metabalance": ("metabalance", {}, 3, META),
    "metabalance_fraud": ("metabalance", {"features": 30}, 4, {**META, "network": "fraud", "support": "balanced"}),
    "keep_best": ("naive", {"validation": True}, 2, {"keep_best": True}),
    # 6 updates per pair: inside the first pair, right after its last update, inside the second
    # (the second pair wins: PAIRS reversed), and inside the second with keep_best (the first
    # pair wins: its network comes from the checkpoint).
    "ms_metabalance_first_pair": ("ms_metabalance", {"validation": True}, 3, {**META, "pairs": PAIRS}),
    "ms_metabalance_pair_end": ("ms_metabalance", {"validation": True}, 6, {**META, "pairs": PAIRS}),
    "ms_metabalance_second_pair": ("ms_metabalance", {"validation": True}, 10, {**META, "pairs": PAIRS[::-1]}),
    "ms_metabalance_keep_best": (
        "ms_metabalance",
        {"validation": True},
        8,
        {**META, "pairs": PAIRS, "keep_best": True},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_an_interrupted_run_resumes_to_the_uninterrupted_network(case, tmp_path, monkeypatch):
    method, data, calls, options = CASES[case]
    arguments = _arguments(**data)
    options = {**FAST, **options}
    expected = _fit(method, arguments, **options)
    path = tmp_path / "run" / "fit.pt"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, calls)
        with pytest.raises(KeyboardInterrupt):
            _fit(method, arguments, checkpoint=path, **options)
    saved = load_checkpoint(path, FIT_CHECKPOINT_FORMAT, required=["fingerprint", "finished", "outer", "run"])
    assert not saved["finished"]
    done = calls - 6 * saved["outer"].get("pair", 0)  # ms_metabalance: 6 updates per finished pair
    assert len(saved["run"]["history"]) == done
    resumed = _fit(method, arguments, checkpoint=path, **options)
    _assert_same_model(resumed, expected)
    assert load_checkpoint(path, FIT_CHECKPOINT_FORMAT)["finished"]


FINISHED = {
    "naive_keep_best": ("naive", {"keep_best": True}),
    "random_over": ("random_over", {}),
    "ms_metabalance": ("ms_metabalance", {**META, "pairs": PAIRS}),
}


@pytest.mark.parametrize("case", FINISHED)
def test_a_finished_checkpoint_returns_the_same_model_without_training(case, tmp_path, monkeypatch):
    method, options = FINISHED[case]
    arguments = _arguments(validation=True)
    options = {**FAST, **options}
    path = tmp_path / "fit.pt"
    first = _fit(method, arguments, checkpoint=path, **options)
    assert load_checkpoint(path, FIT_CHECKPOINT_FORMAT)["finished"]
    _assert_same_model(first, _fit(method, arguments, **options))

    def no_training(run):
        raise AssertionError("a finished checkpoint trained again")

    monkeypatch.setattr(train._Run, "after_epoch", no_training)  # called after every trained epoch
    again = _fit(method, arguments, checkpoint=path, **options)
    _assert_same_model(again, first)


@pytest.mark.parametrize(
    ("change", "key"),
    [({"seed": 1}, "seed"), ({"lr": 0.02}, "lr"), ({"epochs": 4}, "epochs"), ({"network": (9,)}, "network")],
)
def test_another_runs_checkpoint_raises_naming_the_file_and_keys(change, key, tmp_path):
    arguments = _arguments()
    path = tmp_path / "fit.pt"
    _fit("naive", arguments, checkpoint=path, **{**FAST, "epochs": 1})
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*\({key} differ"):
        _fit("naive", arguments, checkpoint=path, **{**FAST, "epochs": 1, **change})


def test_other_data_or_options_raise(tmp_path):
    arguments = _arguments()
    path = tmp_path / "fit.pt"
    _fit("focal", arguments, checkpoint=path, **{**FAST, "epochs": 1})
    other = {**arguments, "X_train": arguments["X_train"] + 1}
    with pytest.raises(ValueError, match=r"\(X_train_sha256 differ"):
        _fit("focal", other, checkpoint=path, **{**FAST, "epochs": 1})
    with pytest.raises(ValueError, match=r"\(method_options differ"):
        _fit("focal", arguments, checkpoint=path, gamma=1.0, **{**FAST, "epochs": 1})
    with pytest.raises(ValueError, match=r"\(method differ"):
        _fit("naive", arguments, checkpoint=path, **{**FAST, "epochs": 1})


def test_a_corrupt_or_foreign_checkpoint_raises(tmp_path):
    arguments = _arguments()
    path = tmp_path / "fit.pt"
    _fit("naive", arguments, checkpoint=path, **FAST)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        _fit("naive", arguments, checkpoint=truncated, **FAST)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "equipoise.tabular/1"}, foreign)
    with pytest.raises(ValueError, match="format"):
        _fit("naive", arguments, checkpoint=foreign, **FAST)
    with pytest.raises(ValueError, match="folder"):
        _fit("naive", arguments, checkpoint=tmp_path, **FAST)
    with pytest.raises(TypeError, match="checkpoint"):
        _fit("naive", arguments, checkpoint=3, **FAST)


def _stream_run(labels, seed):
    labels = torch.as_tensor(labels)
    generator = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(label_tensor=labels, generator=generator, device=torch.device("cpu"))


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("strategy", ["instance", "balanced", "undersample"])
def test_a_stream_continues_its_sequence_from_its_state_dict(strategy):
    _, labels = _data()
    whole = train._batch_stream(_stream_run(labels, seed=5), 16, strategy)
    expected = [next(whole) for _ in range(80)]  # several passes of each strategy
    first = _stream_run(labels, seed=5)
    stream = train._batch_stream(first, 16, strategy)
    assert all(torch.equal(next(stream), batch) for batch in expected[:31])
    state, generator_state = _round_trip(stream.state_dict()), first.generator.get_state()
    second = _stream_run(labels, seed=99)  # another generator: everything must come from the state
    resumed = train._batch_stream(second, 16, strategy)
    second.generator.set_state(generator_state)
    resumed.load_state_dict(state)
    assert all(torch.equal(next(resumed), batch) for batch in expected[31:])


def test_an_instance_stream_is_one_permutation_per_pass():
    """The oracle: ``torch.randperm`` from a generator of the same seed, pass after pass, cut into batches."""
    _, labels = _data()
    stream = train._batch_stream(_stream_run(labels, seed=3), 24, "instance")
    generator = torch.Generator().manual_seed(3)
    passes = [torch.randperm(labels.size, generator=generator) for _ in range(3)]
    expected = [batch for order in passes for batch in order.split(24)]
    assert all(torch.equal(next(stream), batch) for batch in expected)


def test_a_stream_refuses_another_streams_state():
    _, labels = _data()
    stream = train._batch_stream(_stream_run(labels, seed=0), 16, "instance")
    next(stream)
    with pytest.raises(ValueError, match="balanced"):
        train._batch_stream(_stream_run(labels, seed=0), 16, "balanced").load_state_dict(stream.state_dict())
