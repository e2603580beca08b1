"""The shared calibration helpers, and the contract every registered calibrator keeps."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, recall_score

from equipoise.core.calibration import (
    CALIBRATORS,
    TemperatureScaling,
    check_distinct_splits,
    fingerprint,
    same_data,
)
from equipoise.core.calibration._common import balanced_accuracy, worst_class_accuracy
from equipoise.core.testing import check_calibrator, random_logits, random_targets

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
]


# --------------------------------------------------------------------------------------------
# fingerprints and split checks
# --------------------------------------------------------------------------------------------


def test_same_data_recognises_the_tensor_and_its_copies_only():
    x = random_logits(50, 4, seed=0)
    assert same_data(x, x)
    assert same_data(x, x.clone())
    assert not same_data(x, x.float())  # a copy cast to another dtype holds other (rounded) values
    assert not same_data(x, random_logits(50, 4, seed=1))
    assert not same_data(x, x[:-1])
    assert not same_data(x, x.flip(0))  # the same values in another order
    changed = x.clone()
    changed[25, 2] += 1e-6
    assert not same_data(x, changed)
    square = random_logits(4, 4, seed=2)
    assert not same_data(square, square.t())  # same storage, other layout, other data


def test_fingerprint_reads_shape_sums_and_samples():
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    summary = fingerprint(x)
    assert summary[:5].tolist() == [2, 2, 3, -1, -1]
    assert summary[5].item() == 15.0
    weights = 1 + np.arange(6) / 257
    assert summary[6].item() == pytest.approx(float((np.arange(6) * weights).sum()), rel=1e-15)
    assert summary[7].item() == 15.0
    # 16 evenly spaced positions round(k * 5 / 15), k = 0..15, of the flat values 0..5
    assert summary[8:].tolist() == [round(k * 5 / 15) for k in range(16)]
    assert summary.shape == (24,)


def test_check_distinct_splits_names_both_arguments():
    x = random_logits(10, 3, seed=0)
    with pytest.raises(ValueError, match="val_logits and test_logits are the same data"):
        check_distinct_splits(x, x, "val_logits", "test_logits")
    with pytest.raises(ValueError, match="same data"):
        check_distinct_splits(x, x.clone(), "val_logits", "test_logits")
    check_distinct_splits(x, random_logits(10, 3, seed=1), "val_logits", "test_logits")


def test_freed_memory_reused_by_another_tensor_is_not_a_false_alarm():
    calibrator = TemperatureScaling()
    labels = random_targets(3, 64, seed=0)
    logits = random_logits(64, 3, seed=0, dtype=torch.float32) + 2 * torch.nn.functional.one_hot(labels, 3)
    calibrator.fit(logits, labels)
    del logits
    for seed in range(1, 6):  # the allocator is likely to hand the freed block to one of these
        calibrator.check_not_fitted_on(random_logits(64, 3, seed=seed, dtype=torch.float32))


def test_fingerprint_survives_dtype_casts_of_the_module():
    logits, labels = random_logits(40, 3, seed=3), random_targets(3, 40, seed=3)
    calibrator = TemperatureScaling().fit(logits, labels).half().float()
    assert calibrator.fit_fingerprint.dtype == torch.int64
    with pytest.raises(ValueError, match="fitted on"):
        calibrator.check_not_fitted_on(logits)


def test_balanced_and_worst_class_accuracy_match_sklearn():
    logits, labels = random_logits(200, 4, seed=5), random_targets(4, 200, seed=6)
    predicted = logits.argmax(1).numpy()
    assert balanced_accuracy(logits, labels, 4) == pytest.approx(balanced_accuracy_score(labels.numpy(), predicted))
    worst = recall_score(labels.numpy(), predicted, average=None).min()
    assert worst_class_accuracy(logits, labels, 4) == pytest.approx(worst)


# --------------------------------------------------------------------------------------------
# every registered calibrator keeps the contract
# --------------------------------------------------------------------------------------------


def _features(num_samples, seed, num_classes=3, dim=4):
    means = 2.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(100))
    labels = torch.arange(num_samples) % num_classes
    generator = torch.Generator().manual_seed(seed)
    return means[labels] + torch.randn(num_samples, dim, generator=generator), labels


def _logits(num_samples, seed, num_classes=3):
    features, labels = _features(num_samples, seed, num_classes, dim=num_classes)
    return features.double(), labels


def _binary(num_samples, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % 2
    return labels.double() + torch.randn(num_samples, generator=generator, dtype=torch.float64), labels


_WEIGHT = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
CASES = {
    "temperature": (dict, _logits),
    "vector_scaling": (lambda: {"num_classes": 3}, _logits),
    "logit_adjustment": (lambda: {"class_priors": [0.5, 0.3, 0.2]}, _logits),
    "tau_normalization": (lambda: {"weight": _WEIGHT}, _features),
    "lws": (lambda: {"weight": _WEIGHT, "bias": torch.zeros(3)}, _features),
    "crt": (lambda: {"num_features": 4, "num_classes": 3, "epochs": 2, "batch_size": 32}, _features),
    "llr": (lambda: {"num_features": 4, "num_classes": 3, "rhos": [0.0, 1.0]}, _features),
    "weight_balancing": (
        lambda: {"weight": _WEIGHT, "bias": torch.zeros(3), "epochs": 2, "batch_size": 32, "lr": 0.1},
        _features,
    ),
    "threshold": (dict, _binary),
    "em_prior_correction": (lambda: {"num_classes": 3}, _logits),
}


def test_every_registered_calibrator_has_a_case():
    assert set(CASES) == set(CALIBRATORS.names())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_registered_calibrator_keeps_the_contract(name, device):
    make_kwargs, make_data = CASES[name]
    check_calibrator(lambda: CALIBRATORS.build(name, **make_kwargs()), lambda n, seed: make_data(n, seed=seed), device)
