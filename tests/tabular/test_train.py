"""Oracle tests for ``equipoise.tabular.train``.

The oracles: the resampling methods equal naive training on what ``core.resampling.resample``
returns for the same seed; one or two SGD steps equal a hand-written Nesterov step on a loss
written out by hand (class-weighted BCE) or taken from a peer (torchvision's focal loss); the
meta-learning batches are checked row by row through an id column; ms_metabalance's choice is
recomputed with scikit-learn's ``roc_auc_score`` over separately trained MetaBalance runs.
The data are a stand-in for the paper's tasks (``make_classification`` with a 9:1 imbalance)
and the networks small MLPs, so that the file runs in seconds.
"""

import functools
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score
from torch import nn
from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

from equipoise.core.resampling import FAISS_RESAMPLERS, available_resamplers, resample
from equipoise.tabular import train
from equipoise.tabular.train import (
    DEFAULT_LEARNING_RATES,
    DEFAULT_WEIGHT_DECAY,
    METHODS,
    RESAMPLING_METHODS,
    fit,
    predict_logits,
    predict_proba,
)

FAST = {"network": (8,), "epochs": 2, "progress": False}


def _data(n=400, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=6, n_informative=4, n_redundant=0, weights=[0.9, 0.1], flip_y=0, random_state=seed
    )
    return X.astype(np.float32), y.astype(np.int64)


def _with_ids(n_negative, n_positive, seed=0):
    """Rows whose first feature is their index, so that a batch tells which rows it holds."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.zeros(n_negative), np.ones(n_positive)]).astype(np.int64)
    X = np.c_[np.arange(y.size), rng.standard_normal((y.size, 3)) + y[:, None]].astype(np.float32)
    return X, y


def _tiny_network(in_features, seed):
    """A 2-unit ReLU MLP with weights from ``seed`` (the same module for the same seed)."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_features, 2), nn.ReLU(), nn.Linear(2, 1), nn.Flatten(0))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model


def _states_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _hand_nesterov(parameters, loss_of, steps, lr, weight_decay, momentum=0.9):
    """``steps`` SGD steps with Nesterov momentum and weight decay, written out (torch.optim.SGD's
    documented update): d = g + wd p; b = m b + d (b = d at the first step); p -= lr (d + m b)."""
    parameters = [p.detach().clone().requires_grad_(True) for p in parameters]
    buffers = None
    for _ in range(steps):
        gradients = torch.autograd.grad(loss_of(parameters), parameters)
        with torch.no_grad():
            directions = [g + weight_decay * p for g, p in zip(gradients, parameters)]
            buffers = directions if buffers is None else [momentum * b + d for b, d in zip(buffers, directions)]
            for p, d, b in zip(parameters, directions, buffers):
                p -= lr * (d + momentum * b)
    return [p.detach() for p in parameters]


def _forward(parameters, X):
    w1, b1, w2, b2 = parameters
    return (torch.relu(torch.as_tensor(X) @ w1.T + b1) @ w2.T + b2).squeeze(1)


# --------------------------------------------------------------------------------------------
# Registry and defaults
# --------------------------------------------------------------------------------------------


def test_methods_cover_table_2_and_resamplers_are_core_names():
    expected = {
        "naive",
        *RESAMPLING_METHODS,
        "class_weighted",
        "focal",
        "meta_weight_net",
        "l2rw",
        "metabalance",
        "ms_metabalance",
    }
    assert set(METHODS.names()) == expected
    assert set(RESAMPLING_METHODS) <= set(available_resamplers())
    for task in ("loan", "fraud"):
        assert set(DEFAULT_LEARNING_RATES[task]) == expected


@pytest.mark.parametrize("method", ["naive", "smote", "metabalance", "cluster_centroids"])
def test_custom_networks_take_the_loan_defaults(method):
    X, y = _data()
    options = {"meta_steps": 2} if method == "metabalance" else {}
    model = fit(method, X, y, network=(4,), epochs=1, progress=False, **options)
    record = model.training_record
    assert record["lr"] == DEFAULT_LEARNING_RATES["loan"][method]
    assert record["weight_decay"] == DEFAULT_WEIGHT_DECAY["loan"][method] == 5e-4
    assert record["method"] == method and record["seed"] == 0


def test_named_networks_come_from_the_models_module():
    models = pytest.importorskip("equipoise.tabular.models", reason="equipoise.tabular.models is not written yet")
    X, y = _data()
    for task in ("loan", "fraud"):
        model = fit("naive", X, y, network=task, epochs=1, progress=False)
        expected = models.build_network(task, X.shape[1], 0)
        assert [p.shape for p in model.parameters()] == [p.shape for p in expected.parameters()]
        assert model.training_record["lr"] == DEFAULT_LEARNING_RATES[task]["naive"]
        assert model.training_record["weight_decay"] == DEFAULT_WEIGHT_DECAY[task]["naive"] == 5e-4
    fraud = fit("metabalance", X, y, network="fraud", epochs=1, meta_steps=2, progress=False).training_record
    assert (fraud["weight_decay"], fraud["beta"], fraud["lr"]) == (5e-2, 0.0, 0.02)


# --------------------------------------------------------------------------------------------
# Resampling methods train on exactly what core.resample returns
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_resampling_method_equals_naive_on_core_resample(method, monkeypatch):
    X, y = _data()
    calls = []

    def spy(X_in, y_in, name, *, seed=None, **kwargs):
        calls.append((name, seed, kwargs))
        return resample(X_in, y_in, name, seed=seed, **kwargs)

    monkeypatch.setattr(train, "resample", spy)
    model = fit(method, X, y, seed=3, lr=0.05, **FAST)
    options = {"neighbors": "faiss"} if method in FAISS_RESAMPLERS else {}
    assert calls == [(method, 3, options)]
    assert model.training_record["options"] == options

    X_resampled, y_resampled = resample(X, y, method, seed=3, **options)
    oracle = fit("naive", X_resampled, y_resampled, seed=3, lr=0.05, **FAST)
    assert _states_equal(model, oracle)
    assert model.training_record["class_counts"] == np.bincount(y_resampled, minlength=2).tolist()


def test_resampler_options_reach_imbalanced_learn_and_unknown_ones_raise():
    X, y = _data()
    model = fit("smote", X, y, k_neighbors=2, **FAST)
    X_resampled, y_resampled = resample(X, y, "smote", seed=0, k_neighbors=2, neighbors="faiss")
    assert _states_equal(model, fit("naive", X_resampled, y_resampled, lr=0.1, **FAST))
    sklearn_model = fit("smote", X, y, k_neighbors=2, neighbors="sklearn", **FAST)
    assert sklearn_model.training_record["options"] == {"neighbors": "sklearn", "k_neighbors": 2}
    X_resampled, y_resampled = resample(X, y, "smote", seed=0, k_neighbors=2)
    assert _states_equal(sklearn_model, fit("naive", X_resampled, y_resampled, lr=0.1, **FAST))
    with pytest.raises(TypeError, match="k_neighbours"):
        fit("smote", X, y, k_neighbours=2, **FAST)


# --------------------------------------------------------------------------------------------
# Losses and the optimiser against hand-written steps
# --------------------------------------------------------------------------------------------


def _one_batch(n_negative=9, n_positive=3):
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(n_negative), np.ones(n_positive)].astype(np.int64)
    X = (rng.standard_normal((y.size, 3)) + y[:, None]).astype(np.float32)
    return X, y


def _full_batch_fit(method, X, y, epochs, **options):
    return fit(
        method,
        X,
        y,
        network=_tiny_network,
        seed=5,
        epochs=epochs,
        batch_size=len(y),
        lr=0.3,
        weight_decay=0.01,
        progress=False,
        **options,
    )


def test_naive_steps_equal_hand_written_nesterov_sgd():
    X, y = _one_batch()
    model = _full_batch_fit("naive", X, y, epochs=2)  # full batches: two steps, the row order is irrelevant
    targets = torch.as_tensor(y, dtype=torch.float32)

    def bce(parameters):
        logits = _forward(parameters, X)
        return -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)).mean()

    expected = _hand_nesterov(_tiny_network(3, 5).parameters(), bce, steps=2, lr=0.3, weight_decay=0.01)
    for actual, wanted in zip(model.parameters(), expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
def test_class_weighted_loss_equals_hand_computation(normalize):
    X, y = _one_batch(n_negative=9, n_positive=3)
    model = _full_batch_fit("class_weighted", X, y, epochs=1, normalize=normalize)
    assert model.training_record["pos_weight"] == 3.0  # n_neg / n_pos
    targets = torch.as_tensor(y, dtype=torch.float32)

    def weighted_bce(parameters):
        logits = _forward(parameters, X)
        positive = -torch.log(torch.sigmoid(logits))
        negative = -torch.log(1 - torch.sigmoid(logits))
        total = (3.0 * targets * positive + (1 - targets) * negative).sum()
        return total / (3 * 3.0 + 9 * 1.0) if normalize else total / 12  # weighted mean, or plain mean

    expected = _hand_nesterov(_tiny_network(3, 5).parameters(), weighted_bce, steps=1, lr=0.3, weight_decay=0.01)
    for actual, wanted in zip(model.parameters(), expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.6, 0.5)])
def test_focal_step_equals_torchvision_focal_loss(alpha, gamma):
    X, y = _one_batch()
    options = {} if (alpha, gamma) == (0.25, 2.0) else {"alpha": alpha, "gamma": gamma}  # defaults: the paper's
    model = _full_batch_fit("focal", X, y, epochs=1, **options)
    targets = torch.as_tensor(y, dtype=torch.float32)

    def focal(parameters):
        return torchvision_focal_loss(_forward(parameters, X), targets, alpha=alpha, gamma=gamma, reduction="mean")

    expected = _hand_nesterov(_tiny_network(3, 5).parameters(), focal, steps=1, lr=0.3, weight_decay=0.01)
    for actual, wanted in zip(model.parameters(), expected):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Meta-learning methods: where their batches come from
# --------------------------------------------------------------------------------------------


def _spy_metabalance(monkeypatch):
    """Replace metabalance_step by a spy that records the batches each call reads, then runs the real step."""
    calls = []
    real = train.metabalance_step

    def spy(model, loss_fn, optimizer, support_batches, query_batches, *, meta_steps, **kwargs):
        support = list(itertools.islice(support_batches, meta_steps))
        query = list(itertools.islice(query_batches, meta_steps))
        calls.append((support, query, kwargs))
        return real(model, loss_fn, optimizer, support, query, meta_steps=meta_steps, **kwargs)

    monkeypatch.setattr(train, "metabalance_step", spy)
    return calls


def _ids_and_labels(batch):
    inputs, targets = batch
    return inputs[:, 0].long().tolist(), targets.long().tolist()


def test_metabalance_query_batches_come_from_the_under_sampled_pool(monkeypatch):
    X, y = _with_ids(n_negative=100, n_positive=20)
    calls = _spy_metabalance(monkeypatch)
    model = fit("metabalance", X, y, network=(4,), epochs=1, meta_steps=5, meta_steps_per_epoch=10, progress=False)
    assert model.training_record["outer_updates"] == 2 == len(calls)
    assert all(kwargs["inner_lr"] == 0.01 and kwargs["beta"] == 0.01 for *_, kwargs in calls)  # loan defaults

    query = [batch for _, batches, _ in calls for batch in batches]
    assert [len(batch[1]) for batch in query] == [16, 16, 8] * 3 + [16]  # a pass: the pool of 2 x 20 rows
    for start in (0, 3, 6):
        rows, labels = zip(*(_ids_and_labels(batch) for batch in query[start : start + 3]))
        rows, labels = sum(rows, []), sum(labels, [])
        assert len(set(rows)) == 40  # every pool row once
        assert labels.count(1) == labels.count(0) == 20  # the pool is exactly balanced
        assert all(y[row] == label for row, label in zip(rows, labels))

    support = [batch for batches, _, _ in calls for batch in batches]
    assert [len(batch[1]) for batch in support] == [24] * 5 + [24] * 5  # 120 rows: 5 batches per pass
    first_pass = sum((_ids_and_labels(batch)[0] for batch in support[:5]), [])
    assert sorted(first_pass) == list(range(120))  # instance-wise: the training set once


def test_metabalance_default_epoch_is_one_support_pass(monkeypatch):
    X, y = _with_ids(n_negative=100, n_positive=20)
    calls = _spy_metabalance(monkeypatch)
    model = fit("metabalance", X, y, network=(4,), epochs=7, meta_steps=4, progress=False)
    per_epoch = math.ceil(120 / 24)
    assert model.training_record["meta_steps_per_epoch"] == per_epoch
    assert model.training_record["outer_updates"] == len(calls) == 7 * per_epoch // 4


@pytest.mark.parametrize("strategy", ["balanced", "undersample"])
def test_metabalance_strategies_balance_the_classes(strategy, monkeypatch):
    X, y = _with_ids(n_negative=100, n_positive=10)
    calls = _spy_metabalance(monkeypatch)
    fit("metabalance", X, y, network=(4,), epochs=1, support=strategy, query=strategy, meta_steps=6, progress=False)
    (support, query, _), *_ = calls
    if strategy == "balanced":  # every batch exactly half and half; the minority cycles
        for batch in support + query:
            assert _ids_and_labels(batch)[1].count(1) * 2 == len(batch[1])
    else:  # a pass of the pool of 2 x 10 rows: 24 > 20 rows, so one batch per pass holds the whole pool
        for batch in support:
            rows, labels = _ids_and_labels(batch)
            assert len(set(rows)) == 20 and labels.count(1) == 10


@pytest.mark.parametrize("method", ["meta_weight_net", "l2rw"])
def test_meta_batches_are_class_balanced_training_rows(method, monkeypatch):
    X, y = _with_ids(n_negative=100, n_positive=20)
    step_name = "meta_weight_net_step" if method == "meta_weight_net" else "learning_to_reweight_step"
    real = getattr(train, step_name)
    seen = []

    def spy(*args, **kwargs):
        batch, meta_batch = (args[5], args[6]) if method == "meta_weight_net" else (args[3], args[4])
        seen.append((_ids_and_labels(batch), _ids_and_labels(meta_batch)))
        return real(*args, **kwargs)

    monkeypatch.setattr(train, step_name, spy)
    model = fit(method, X, y, network=(4,), epochs=2, progress=False)
    assert len(seen) == 2 * math.ceil(120 / 24)  # one step per training batch
    for (rows, labels), (meta_rows, meta_labels) in seen:
        assert meta_labels.count(1) == meta_labels.count(0) == 12
        assert all(y[row] == label for row, label in zip(rows + meta_rows, labels + meta_labels))
    epoch = sorted(sum((rows for (rows, _), _ in seen[:5]), []))
    assert epoch == list(range(120))
    assert len(model.training_record["loss_history"]) == 2


# --------------------------------------------------------------------------------------------
# ms_metabalance: chosen on validation data only
# --------------------------------------------------------------------------------------------

PAIRS = [("instance", "undersample"), ("balanced", "balanced"), ("undersample", "instance")]
MS_OPTIONS = {"network": (8,), "epochs": 2, "meta_steps": 4, "progress": False, "seed": 1}


def test_ms_metabalance_picks_the_pair_with_the_best_validation_auc():
    X, y = _data(n=600, seed=2)
    X_train, y_train, X_val, y_val = X[:400], y[:400], X[400:], y[400:]
    model = fit("ms_metabalance", X_train, y_train, X_val=X_val, y_val=y_val, pairs=PAIRS, **MS_OPTIONS)

    oracle_scores = {}
    oracle_models = {}
    for support, query in PAIRS:
        single = fit("metabalance", X_train, y_train, support=support, query=query, **MS_OPTIONS)
        oracle_models[(support, query)] = single
        oracle_scores[(support, query)] = roc_auc_score(y_val, predict_proba(single, X_val))
    best = max(PAIRS, key=lambda pair: oracle_scores[pair])
    record = model.training_record
    assert record["chosen_pair"] == best
    assert _states_equal(model, oracle_models[best])
    for (support, query), score in oracle_scores.items():
        assert record["validation_scores"][f"{support}/{query}"] == pytest.approx(score, abs=1e-6)  # float32 AUROC


def test_ms_metabalance_scores_only_the_validation_split():
    X, y = _data(n=600, seed=2)
    X_train, y_train, X_val, y_val = X[:400], y[:400], X[400:500], y[400:500]
    scored = []

    def scorer(y_true, proba):
        scored.append((y_true.copy(), proba.shape))
        return {0: 0.2, 1: 0.9, 2: 0.5}[len(scored) - 1]  # the second pair wins

    model = fit("ms_metabalance", X_train, y_train, X_val=X_val, y_val=y_val, pairs=PAIRS, scorer=scorer, **MS_OPTIONS)
    assert len(scored) == len(PAIRS)
    assert all(np.array_equal(labels, y_val) and shape == (100,) for labels, shape in scored)
    assert model.training_record["chosen_pair"] == PAIRS[1]


def test_ms_metabalance_requires_validation_data():
    X, y = _data()
    with pytest.raises(ValueError, match="X_val and y_val"):
        fit("ms_metabalance", X, y, pairs=PAIRS, **FAST)
    with pytest.raises(ValueError, match="pairs"):
        fit("ms_metabalance", X, y, X_val=X, y_val=y, pairs=[("instance", "bogus")], **FAST)
    with pytest.raises(TypeError, match="pairs"):
        fit("ms_metabalance", X, y, X_val=X, y_val=y, support="instance", **FAST)


# --------------------------------------------------------------------------------------------
# Determinism, prediction, bad input
# --------------------------------------------------------------------------------------------


def _dropout_network(in_features, seed):
    torch.manual_seed(seed)  # inside fit's forked generator
    return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1), nn.Flatten(0))


@pytest.mark.parametrize("method", ["naive", "smote", "meta_weight_net", "metabalance"])
def test_same_seed_same_network_and_global_rng_untouched(method):
    X, y = _data()
    options = {"network": _dropout_network, "epochs": 1, "progress": False}
    if method == "metabalance":
        options["meta_steps"] = 3
    state = torch.get_rng_state()
    first = fit(method, X, y, seed=4, **options)
    assert torch.equal(torch.get_rng_state(), state)
    assert _states_equal(first, fit(method, X, y, seed=4, **options))
    assert not _states_equal(first, fit(method, X, y, seed=5, **options))


def test_predict_proba_is_the_sigmoid_of_the_forward():
    X, y = _data()
    model = fit("naive", X, y, **FAST).train()
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(torch.as_tensor(X))).double().numpy()
    model.train()
    np.testing.assert_allclose(predict_proba(model, X), expected, rtol=1e-6)
    np.testing.assert_allclose(predict_logits(model, X), np.log(expected / (1 - expected)), rtol=1e-4, atol=1e-5)
    assert model.training  # the mode is restored
    assert predict_proba(model, X).dtype == np.float64


def _bad(**changes):
    X, y = _data(n=100)
    arguments = {"method": "naive", "X_train": X, "y_train": y, **FAST}
    arguments.update(changes)
    return arguments


BAD_INPUTS = [
    (_bad(method="bogus"), ValueError, "unknown tabular training method 'bogus'"),
    (_bad(X_train=np.zeros(100, dtype=np.float32)), ValueError, "X_train must be 2-D"),
    (_bad(y_train=np.zeros((100, 1))), ValueError, "y_train must be 1-D"),
    (_bad(y_train=np.r_[np.zeros(50), np.ones(49)]), ValueError, "100 rows but y_train has 99"),
    (_bad(X_train=np.full((100, 6), np.nan)), ValueError, "non-finite value nan at row 0"),
    (_bad(y_train=np.r_[np.zeros(50), 2 * np.ones(50)].astype(int)), ValueError, r"binary labels 0/1.*\[0, 2\]"),
    (_bad(y_train=np.zeros(100)), ValueError, "single class"),
    (_bad(X_train=np.array([["a"] * 6] * 100)), TypeError, "X_train must hold numbers"),
    (_bad(y_train=np.array(["a", "b"] * 50)), TypeError, "y_train must hold 0/1 labels"),
    (_bad(gamma=2.0), TypeError, r"'naive' takes no option \['gamma'\]"),
    (_bad(method="focal", gama=2.0), TypeError, r"takes no option \['gama'\]"),
    (_bad(method="focal", alpha=1.5), ValueError, "alpha"),
    (_bad(epochs=0), ValueError, "epochs must be an integer >= 1"),
    (_bad(batch_size=2.5), ValueError, "batch_size"),
    (_bad(lr=-1.0), ValueError, "lr must be > 0"),
    (_bad(weight_decay=float("nan")), ValueError, "weight_decay"),
    (_bad(momentum=0.0), ValueError, "momentum"),
    (_bad(seed=-1), ValueError, "seed"),
    (_bad(X_val=np.zeros((10, 3), dtype=np.float32), y_val=np.r_[np.zeros(5), np.ones(5)]), ValueError, "3 features"),
    (_bad(X_val=np.zeros((10, 6), dtype=np.float32)), ValueError, "both X_val and y_val"),
    (_bad(network="cifar"), ValueError, "network must be one of"),
    (_bad(network=(8, 0)), TypeError, "network must be"),
    (_bad(network=lambda in_features, seed: "not a module"), TypeError, "must build a torch.nn.Module"),
    (_bad(method="metabalance", query="bogus"), ValueError, "query must be one of"),
    (_bad(method="class_weighted", pos_weight=-2.0), ValueError, "pos_weight"),
    (_bad(device="tpu"), ValueError, "device"),
]


@pytest.mark.parametrize(("arguments", "error", "message"), BAD_INPUTS)
def test_bad_input_raises_naming_it(arguments, error, message):
    arguments = dict(arguments)
    with pytest.raises(error, match=message):
        fit(arguments.pop("method"), arguments.pop("X_train"), arguments.pop("y_train"), **arguments)


def test_divergence_raises_instead_of_returning_a_nan_network():
    X, y = _data()
    with pytest.raises(FloatingPointError, match=r"naive diverged.*lr=1e\+30"):
        fit("naive", X * 1e10, y, lr=1e30, **FAST)


def test_predict_rejects_bad_features():
    X, y = _data()
    model = fit("naive", X, y, **FAST)
    with pytest.raises(ValueError, match="non-finite"):
        predict_proba(model, np.full((3, 6), np.inf))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        predict_proba("model", X)
    with pytest.raises(RuntimeError):  # the network's own shape error, 5 features for 6 inputs
        predict_proba(model, X[:, :5])


def test_inputs_of_other_kinds_are_accepted():
    X, y = _data()
    reference = fit("naive", X, y, **FAST)
    as_tensor = fit("naive", torch.as_tensor(X), torch.as_tensor(y), **FAST)
    as_lists = fit("naive", X.astype(np.float64).tolist(), (y == 1).tolist(), **FAST)
    assert _states_equal(reference, as_tensor) and _states_equal(reference, as_lists)


def test_progress_bar_runs(capsys):
    X, y = _data(n=100)
    fit("naive", X, y, network=(4,), epochs=1, progress=True)
    fit("metabalance", X, y, network=(4,), epochs=1, progress=True, meta_steps=2)
    assert "naive (seed 0)" in capsys.readouterr().err


def test_partial_resolves_for_registered_resamplers():
    # The registry holds functools.partial objects bound to the sampler's name (not a keyword a
    # sampler option could override).
    trainer = METHODS.get("smote")
    assert isinstance(trainer, functools.partial) and trainer.args == ("smote",) and not trainer.keywords


@pytest.mark.parametrize("method", ["naive", "random_over", "meta_weight_net"])
def test_keep_best_returns_the_network_of_the_best_validation_epoch(method):
    """Oracle: a plain run of ``best_epoch + 1`` epochs (the validation scoring draws nothing random)
    and scikit-learn's AUROC of every epoch's network."""
    X, y = _data(600, seed=3)
    X_val, y_val = _data(300, seed=4)
    options = {"network": (8,), "progress": False, "seed": 2, "lr": 0.05}
    best = fit(method, X, y, epochs=6, X_val=X_val, y_val=y_val, keep_best=True, **options)
    record = best.training_record
    history = record["validation_auroc_history"]
    assert len(history) == 6 and record["keep_best"] is True
    assert record["best_index"] == int(np.argmax(history))  # argmax: the first of ties
    expected = []
    for epochs in range(1, 7):
        plain = fit(method, X, y, epochs=epochs, **options)
        expected.append(roc_auc_score(y_val, predict_proba(plain, X_val)))
        if epochs == record["best_index"] + 1:
            assert _states_equal(plain, best)
    np.testing.assert_allclose(history, expected, atol=1e-6)
    assert record["best_validation_auroc"] == pytest.approx(max(expected), abs=1e-6)


def test_keep_best_for_metabalance_scores_every_outer_update():
    X, y = _data(600, seed=3)
    X_val, y_val = _data(300, seed=4)
    model = fit(
        "metabalance", X, y, network=(8,), epochs=4, progress=False, X_val=X_val, y_val=y_val, keep_best=True,
        meta_steps=5,
    )  # fmt: skip
    record = model.training_record
    assert len(record["validation_auroc_history"]) == record["outer_updates"]
    assert roc_auc_score(y_val, predict_proba(model, X_val)) == pytest.approx(max(record["validation_auroc_history"]))


def test_keep_best_needs_validation_data_and_a_bool():
    X, y = _data()
    with pytest.raises(ValueError, match="keep_best selects the epoch on validation data"):
        fit("naive", X, y, network=(4,), epochs=1, progress=False, keep_best=True)
    with pytest.raises(TypeError, match="keep_best must be True or False"):
        fit("naive", X, y, network=(4,), epochs=1, progress=False, X_val=X, y_val=y, keep_best="yes")


def _dead_network(in_features, seed):
    """ReLUs that never fire (zero weights, negative biases): a constant logit, no gradient to revive them."""
    model = nn.Sequential(nn.Linear(in_features, 3), nn.ReLU(), nn.Linear(3, 1), nn.Flatten(0))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)
    return model


def test_a_collapsed_network_is_reported_not_silent():
    X, y = _data()
    with pytest.warns(RuntimeWarning, match="collapsed to a constant"):
        model = fit("naive", X, y, network=_dead_network, epochs=1, progress=False)
    assert model.training_record["collapsed"] is True
    scores = predict_proba(model, X)
    assert np.ptp(scores) == 0 and roc_auc_score(y, scores) == 0.5
    healthy = fit("naive", X, y, network=(8,), epochs=1, progress=False)
    assert healthy.training_record["collapsed"] is False
