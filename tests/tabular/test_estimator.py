"""Tests of ``ImbalancedMLPClassifier``: scikit-learn's estimator checks, pipelines, and oracles.

Oracles: ``cross_val_score`` is recomputed fold by fold with ``roc_auc_score``; the estimator's
probabilities are recomputed from its network with ``equipoise.tabular.train.predict_proba``
and from a direct ``fit`` call with the same seed. Small MLPs and few epochs keep it fast.
"""

import numpy as np
import pytest
from imblearn.pipeline import make_pipeline as make_imblearn_pipeline
from imblearn.under_sampling import RandomUnderSampler
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from equipoise.tabular import train
from equipoise.tabular.estimator import ImbalancedMLPClassifier

SMALL = {"network": (16,), "epochs": 10, "random_state": 0}


def _data(n=600, seed=0, scale=1.0):
    X, y = make_classification(
        n_samples=n, n_features=6, n_informative=4, n_redundant=0, weights=[0.9, 0.1], flip_y=0, random_state=seed
    )
    return X * scale, y


@parametrize_with_checks(
    [
        ImbalancedMLPClassifier((8,), epochs=5, random_state=0),
        ImbalancedMLPClassifier((8,), "class_weighted", epochs=5, random_state=0),
        ImbalancedMLPClassifier((8,), "metabalance", epochs=5, random_state=0, method_options={"meta_steps": 2}),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_cross_val_score_in_an_imblearn_pipeline_equals_a_fold_by_fold_oracle():
    X, y = _data(scale=50.0)  # unscaled features: the pipeline's scaler matters
    settings = {**SMALL, "epochs": 40}  # about 80 rows remain after under-sampling: 4 batches an epoch
    pipeline = make_imblearn_pipeline(
        StandardScaler(), RandomUnderSampler(random_state=0), ImbalancedMLPClassifier(**settings)
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    scores = cross_val_score(pipeline, X, y, scoring="roc_auc", cv=folds)

    expected = []
    for train_rows, test_rows in folds.split(X, y):
        scaler = StandardScaler().fit(X[train_rows])
        X_kept, y_kept = RandomUnderSampler(random_state=0).fit_resample(scaler.transform(X[train_rows]), y[train_rows])
        classifier = ImbalancedMLPClassifier(**settings).fit(X_kept, y_kept)
        expected.append(roc_auc_score(y[test_rows], classifier.predict_proba(scaler.transform(X[test_rows]))[:, 1]))
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores.mean() > 0.8


def test_sklearn_pipeline_and_methods_through_method_options():
    X, y = _data()
    pipeline = make_pipeline(
        StandardScaler(), ImbalancedMLPClassifier(method="smote", method_options={"k_neighbors": 3}, **SMALL)
    )
    scores = cross_val_score(pipeline, X, y, scoring="roc_auc", cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.7)
    record = pipeline.fit(X, y)[-1].training_record_
    assert record["method"] == "smote" and record["options"] == {"neighbors": "faiss", "k_neighbors": 3}
    assert record["class_counts"][0] == record["class_counts"][1]  # SMOTE balanced the training set


def test_get_params_set_params_clone_round_trip():
    estimator = ImbalancedMLPClassifier("fraud", "metabalance", epochs=3, lr=0.05, method_options={"query": "balanced"})
    params = estimator.get_params()
    assert params == {
        "network": "fraud",
        "method": "metabalance",
        "epochs": 3,
        "batch_size": 24,
        "lr": 0.05,
        "weight_decay": None,
        "momentum": 0.9,
        "random_state": None,
        "device": "cpu",
        "progress": False,
        "validation_fraction": 0.2,
        "method_options": {"query": "balanced"},
    }
    twin = clone(estimator)
    assert twin is not estimator and twin.get_params() == params
    assert twin.get_params()["method_options"] is not params["method_options"]  # clone copies parameters
    assert twin.set_params(method="naive", network=(4, 4)) is twin
    assert twin.get_params() == {**params, "method": "naive", "network": (4, 4)}
    with pytest.raises(ValueError, match="Invalid parameter 'gamma'"):
        twin.set_params(gamma=2)


def test_clone_of_a_fitted_estimator_refits_to_the_same_predictions():
    X, y = _data()
    fitted = ImbalancedMLPClassifier(**SMALL).fit(X, y)
    twin = clone(fitted)
    with pytest.raises(NotFittedError):
        twin.predict(X)
    np.testing.assert_array_equal(twin.fit(X, y).predict_proba(X), fitted.predict_proba(X))


def test_probabilities_equal_the_network_and_a_direct_fit():
    X, y = _data()
    labels = np.where(y == 1, "fraud", "genuine")  # sorted: classes_ = ["fraud", "genuine"]
    estimator = ImbalancedMLPClassifier(**SMALL).fit(X, labels)
    assert list(estimator.classes_) == ["fraud", "genuine"] and estimator.n_features_in_ == 6
    proba = estimator.predict_proba(X)
    positive = train.predict_proba(estimator.model_, X.astype(np.float32))  # "genuine" is classes_[1]
    np.testing.assert_array_equal(proba[:, 1], positive)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    direct = train.fit("naive", X, (labels == "genuine").astype(int), network=(16,), epochs=10, seed=0, progress=False)
    np.testing.assert_array_equal(positive, train.predict_proba(direct, X))
    np.testing.assert_array_equal(estimator.predict(X), np.where(positive > 0.5, "genuine", "fraud"))
    np.testing.assert_array_equal(estimator.decision_function(X) > 0, positive > 0.5)


def test_ms_metabalance_chooses_on_a_held_out_part_of_the_training_data():
    X, y = _data()
    estimator = ImbalancedMLPClassifier(
        method="ms_metabalance",
        validation_fraction=0.25,
        method_options={"pairs": [("instance", "undersample"), ("balanced", "balanced")], "meta_steps": 4},
        **{**SMALL, "epochs": 2},
    ).fit(X, y)
    record = estimator.training_record_
    assert record["chosen_pair"] in {("instance", "undersample"), ("balanced", "balanced")}
    assert set(record["validation_scores"]) == {"instance/undersample", "balanced/balanced"}
    with pytest.raises(ValueError, match="validation_fraction"):
        ImbalancedMLPClassifier(method="ms_metabalance", validation_fraction=1.5, **SMALL).fit(X, y)


def test_random_state_none_records_a_seed_that_reproduces_the_fit():
    X, y = _data()
    first = ImbalancedMLPClassifier(network=(16,), epochs=3, random_state=None).fit(X, y)
    again = ImbalancedMLPClassifier(network=(16,), epochs=3, random_state=first.seed_).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X), again.predict_proba(X))
    assert first.training_record_["seed"] == first.seed_


def test_bad_input_raises():
    X, y = _data()
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        ImbalancedMLPClassifier(**SMALL).fit(X, np.arange(len(y)) % 3)
    with pytest.raises(ValueError, match="one class"):
        ImbalancedMLPClassifier(**SMALL).fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="unknown tabular training method 'bogus'"):
        ImbalancedMLPClassifier(method="bogus", **SMALL).fit(X, y)
    with pytest.raises(TypeError, match="takes no option"):
        ImbalancedMLPClassifier(method_options={"gamma": 2.0}, **SMALL).fit(X, y)
    with pytest.raises(ValueError, match="random_state must be >= 0"):
        ImbalancedMLPClassifier(network=(4,), random_state=-1).fit(X, y)
    fitted = ImbalancedMLPClassifier(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match="X has 5 features, but ImbalancedMLPClassifier is expecting 6"):
        fitted.predict_proba(X[:, :5])
