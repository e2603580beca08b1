"""Repeat factor sampling (Gupta et al., LVIS 2019) against independent oracles: hand-worked
factors, detectron2's formula rewritten here in plain Python, the law of large numbers for the
stochastic rounding, and the DistributedSampler padding rule written out by hand."""

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from equipoise.core.samplers import SAMPLERS, RepeatFactorSampler, repeat_factors
from equipoise.core.testing import check_sampler


def _lvis_like(num_images=400, num_classes=60, seed=0):
    """Multi-label images with a long tail of classes: class c in about 1 / (c + 1) ** 1.5 of them."""
    rng = np.random.default_rng(seed)
    presence = rng.random((num_images, num_classes)) < 0.5 / (np.arange(num_classes) + 1.0) ** 1.5
    images = []
    for row in presence:
        classes = np.flatnonzero(row).tolist()
        images.append(classes + classes[:1])  # a duplicate instance in some images
    return images


IMAGES = _lvis_like()


def _detectron2_oracle(image_labels, threshold):
    """detectron2's ``repeat_factors_from_category_frequency``, rewritten over plain lists of classes."""
    images_with = defaultdict(int)
    for classes in image_labels:
        for category in set(classes):
            images_with[category] += 1
    category_factor = {
        category: max(1.0, math.sqrt(threshold / (count / len(image_labels))))
        for category, count in images_with.items()
    }
    return [max({category_factor[category] for category in classes}, default=1.0) for classes in image_labels]


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.int64)


# ----------------------------------------------------------------------------- the formula


def test_hand_worked_rare_class():
    # 1000 images; class 1 only in image 0 (f = 0.001), class 0 in all but the last (f = 0.999).
    image_labels = [[0, 1, 1, 1]] + [[0]] * 998 + [[]]
    factors = repeat_factors(image_labels, threshold=0.01)
    assert factors.dtype == torch.float64 and factors.shape == (1000,)
    expected = torch.ones(1000, dtype=torch.float64)
    expected[0] = math.sqrt(0.01 / 0.001)  # sqrt(10) = 3.1623
    torch.testing.assert_close(factors, expected, rtol=1e-15, atol=0)


def test_hand_worked_rarest_class_decides():
    # 10 images; class 0 in all (f = 1), class 1 in images 0, 1 (f = 0.2), class 2 in image 0 (f = 0.1).
    # t = 0.4: r_0 = 1, r_1 = sqrt(2), r_2 = 2; image 0 takes the max, 2; image 1 sqrt(2).
    image_labels = [[0, 1, 2], [1, 0]] + [[0]] * 8
    expected = [2.0, math.sqrt(2.0)] + [1.0] * 8
    torch.testing.assert_close(repeat_factors(image_labels, threshold=0.4), torch.tensor(expected, dtype=torch.float64))
    # A class at a quarter of the threshold is repeated twice: f = 0.1 = 0.4 / 4.
    assert float(repeat_factors(image_labels, threshold=0.4)[0]) == 2.0


def test_frequent_classes_and_unannotated_images_are_not_repeated():
    factors = repeat_factors([[0], [0, 1], [], [1]], threshold=0.001)
    torch.testing.assert_close(factors, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("threshold", [0.001, 0.01, 0.1, 1.5])
def test_matches_detectron2_formula(threshold):
    factors = repeat_factors(IMAGES, threshold=threshold)
    oracle = torch.tensor(_detectron2_oracle(IMAGES, threshold), dtype=torch.float64)
    torch.testing.assert_close(factors, oracle, rtol=1e-15, atol=0)
    if threshold == 0.01:
        assert (factors > 1).any() and (factors == 1).any()  # the data exercises both regimes


@settings(max_examples=50, deadline=None)
@given(
    image_labels=st.lists(st.lists(st.integers(0, 12), max_size=6), min_size=1, max_size=40),
    threshold=st.floats(1e-4, 2.0),
)
def test_property_matches_detectron2_formula(image_labels, threshold):
    factors = repeat_factors(image_labels, threshold=threshold)
    oracle = torch.tensor(_detectron2_oracle(image_labels, threshold), dtype=torch.float64)
    torch.testing.assert_close(factors, oracle, rtol=1e-15, atol=0)
    assert bool((factors >= 1).all())


def test_tensors_arrays_and_tuples_are_accepted_per_image():
    as_lists = repeat_factors([[0, 2], [1], [], [2, 2]], threshold=0.5)
    mixed = repeat_factors(
        (torch.tensor([0, 2]), np.array([1]), (), np.array([2, 2], dtype=np.uint8)), threshold=0.5, num_classes=3
    )
    torch.testing.assert_close(mixed, as_lists)


def test_single_label_data_is_one_class_per_image():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2])
    threshold = 0.05
    counts = np.array([90, 9, 1])
    oracle = np.maximum(1.0, np.sqrt(threshold * len(labels) / counts[labels.numpy()]))
    single = RepeatFactorSampler(labels=labels, threshold=threshold).repeat_factors
    nested = RepeatFactorSampler([[int(y)] for y in labels], threshold=threshold).repeat_factors
    np.testing.assert_allclose(single.numpy(), oracle, rtol=1e-15)
    torch.testing.assert_close(single, nested)


# ----------------------------------------------------------------------------- the epochs


def test_integer_factors_give_exactly_that_many_copies_each_epoch():
    factors = [1.0, 2.0, 3.0, 1.0, 4.0, 0.0]
    sampler = RepeatFactorSampler(repeat_factors=factors, seed=7)
    for epoch in range(5):
        drawn = _epoch(sampler, epoch)
        assert len(drawn) == len(sampler) == 11
        np.testing.assert_array_equal(np.bincount(drawn.numpy(), minlength=len(factors)), factors)


def test_mean_count_per_epoch_converges_to_the_repeat_factor():
    factors = torch.tensor([1.0, 1.25, 1.5, 2.7, math.sqrt(10.0), 0.3, 5.0, 1.999], dtype=torch.float64)
    num_epochs = 3000
    sampler = RepeatFactorSampler(repeat_factors=factors, seed=11)
    counts = np.stack(
        [np.bincount(_epoch(sampler, epoch).numpy(), minlength=len(factors)) for epoch in range(num_epochs)]
    )
    # Each epoch's count is floor(r) + Bernoulli(frac(r)): always one of those two values, with
    # variance frac (1 - frac), so the mean over E epochs has standard error sqrt(frac (1 - frac) / E).
    whole = np.floor(factors.numpy())
    fraction = factors.numpy() - whole
    assert np.isin(counts - whole, [0, 1]).all()
    standard_error = np.sqrt(fraction * (1 - fraction) / num_epochs)
    np.testing.assert_array_less(np.abs(counts.mean(axis=0) - factors.numpy()), 5 * standard_error + 1e-12)
    # Integer factors never vary.
    assert (counts[:, [0, 6]] == whole[[0, 6]]).all()


def test_epoch_length_varies_and_len_agrees_with_iteration():
    sampler = RepeatFactorSampler(IMAGES, threshold=0.05, seed=2)
    factors = sampler.repeat_factors
    lengths = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        announced = len(sampler)
        drawn = list(sampler)
        assert announced == len(drawn) == sampler.num_samples
        assert len(sampler) == announced  # asking again does not redraw
        lengths.append(announced)
        # Every image at least floor(r_i) times and at most ceil(r_i) times.
        hits = np.bincount(drawn, minlength=len(IMAGES))
        assert (hits >= np.floor(factors.numpy())).all() and (hits <= np.ceil(factors.numpy())).all()
    assert len(set(lengths)) > 1
    # The expected length is sum r_i; the variance of the length is sum frac (1 - frac).
    fraction = (factors - factors.floor()).numpy()
    standard_error = math.sqrt((fraction * (1 - fraction)).sum() / len(lengths))
    assert abs(np.mean(lengths) - sampler.expected_num_samples) < 5 * standard_error
    assert sampler.expected_num_samples == pytest.approx(float(factors.sum()))


def test_same_seed_and_epoch_give_the_same_order():
    first = RepeatFactorSampler(IMAGES, threshold=0.05, seed=4)
    second = RepeatFactorSampler(IMAGES, threshold=0.05, seed=4)
    for epoch in (0, 3):
        assert torch.equal(_epoch(first, epoch), _epoch(second, epoch))
    assert not torch.equal(_epoch(first, 1), _epoch(first, 2))
    assert not torch.equal(_epoch(first, 1), _epoch(RepeatFactorSampler(IMAGES, threshold=0.05, seed=5), 1))
    epoch_zero = _epoch(first, 0)
    _epoch(first, 5)
    assert torch.equal(_epoch(first, 0), epoch_zero)


def test_no_shuffle_keeps_the_copies_together_in_index_order():
    sampler = RepeatFactorSampler(repeat_factors=[2.0, 1.0, 3.0, 1.5], shuffle=False, seed=0)
    for epoch in range(6):
        drawn = _epoch(sampler, epoch).tolist()
        assert drawn[:6] == [0, 0, 1, 2, 2, 2]
        assert drawn[6:] in ([3], [3, 3])


def test_keeps_the_sampler_contract():
    check_sampler(lambda **options: RepeatFactorSampler(IMAGES, threshold=0.05, **options), torch.arange(len(IMAGES)))


@pytest.mark.parametrize("num_replicas", [2, 3, 7])
def test_replica_shards_are_disjoint_and_cover_the_epoch(num_replicas):
    single = RepeatFactorSampler(IMAGES, threshold=0.05, seed=8)
    for epoch in (0, 1):
        full = _epoch(single, epoch)
        per_rank = math.ceil(len(full) / num_replicas)
        padding = per_rank * num_replicas - len(full)
        # DistributedSampler's rule: pad by wrapping to the start, then rank r keeps positions r, r + R, ...
        padded = torch.cat([full, full[:padding]])
        positions = []
        for rank in range(num_replicas):
            share = RepeatFactorSampler(IMAGES, threshold=0.05, seed=8, num_replicas=num_replicas, rank=rank)
            drawn = _epoch(share, epoch)
            assert len(share) == len(drawn) == per_rank
            rank_positions = list(range(rank, per_rank * num_replicas, num_replicas))
            assert torch.equal(drawn, padded[rank_positions])
            positions.extend(rank_positions)
        # The shares take disjoint positions which together cover the padded epoch list.
        assert sorted(positions) == list(range(len(padded)))


def test_built_by_name_and_from_a_dataset():
    assert SAMPLERS.get("repeat_factor") is RepeatFactorSampler
    by_name = SAMPLERS.build("repeat_factor", image_labels=IMAGES, threshold=0.05, seed=3)

    class Detections(Dataset):
        def __len__(self):
            return len(IMAGES)

        def __getitem__(self, index):
            return index

        def image_labels(self):
            return IMAGES

    from_dataset = RepeatFactorSampler.from_dataset(Detections(), threshold=0.05, seed=3)
    torch.testing.assert_close(from_dataset.repeat_factors, by_name.repeat_factors)
    assert list(from_dataset) == list(by_name)
    loader = DataLoader(Detections(), batch_size=32, sampler=from_dataset)
    assert torch.cat(list(loader)).tolist() == list(by_name)
    with pytest.raises(TypeError, match="image_labels\\(\\) method"):
        RepeatFactorSampler.from_dataset(list(range(5)))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"image_labels": []}, ValueError, "image_labels is empty"),
        ({"image_labels": [[0], [2, -1]]}, ValueError, r"image_labels\[1\] contains class -1; .* >= 0"),
        ({"image_labels": [[0], [3]], "num_classes": 3}, ValueError, r"image_labels\[1\] contains class 3, outside"),
        ({"image_labels": [[0], [0.5]]}, TypeError, r"image_labels\[1\] must hold integer class indices"),
        ({"image_labels": [[True]]}, TypeError, "integer class indices"),
        ({"image_labels": [1, 2, 3]}, TypeError, r"image_labels\[0\] must be a sequence .* pass labels="),
        ({"image_labels": "abc"}, TypeError, "image_labels must be a sequence"),
        ({"image_labels": [[0]], "threshold": 0.0}, ValueError, "threshold must be > 0"),
        ({"image_labels": [[0]], "threshold": -0.1}, ValueError, "threshold must be > 0"),
        ({"image_labels": [[0]], "threshold": math.nan}, ValueError, "threshold must be a finite number"),
        ({"image_labels": [[0]], "num_classes": 0}, ValueError, "num_classes must be an integer >= 1"),
    ],
)
def test_bad_image_labels_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        repeat_factors(**kwargs)
    with pytest.raises(error, match=match):
        RepeatFactorSampler(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "exactly one of image_labels, labels and repeat_factors, got none"),
        (
            {"image_labels": [[0]], "repeat_factors": [1.0]},
            ValueError,
            "got image_labels and repeat_factors",
        ),
        ({"labels": [0, 1], "repeat_factors": [1.0, 1.0]}, ValueError, "got labels and repeat_factors"),
        ({"repeat_factors": [1.0, -1.0]}, ValueError, r"repeat_factors\[1\] = -1.0 must be finite and >= 0"),
        ({"repeat_factors": [1.0, math.inf]}, ValueError, r"repeat_factors\[1\] = inf"),
        ({"repeat_factors": [0.0, 0.0]}, ValueError, "repeat_factors are all 0"),
        ({"repeat_factors": [[1.0]]}, ValueError, "non-empty 1-D"),
        ({"labels": [0, -1]}, ValueError, r"labels\[1\] = -1 is negative"),
        ({"labels": [0, 4], "num_classes": 4}, ValueError, r"labels\[1\] contains class 4, outside"),
        ({"image_labels": [[0]], "shuffle": 1}, TypeError, "shuffle must be a bool"),
        ({"image_labels": [[0]], "seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"image_labels": [[0]], "num_replicas": 2, "rank": 2}, ValueError, "rank must lie in"),
    ],
)
def test_bad_sampler_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        RepeatFactorSampler(**kwargs)


def test_bad_epoch_raises():
    sampler = RepeatFactorSampler([[0]])
    with pytest.raises(ValueError, match="epoch must be an integer >= 0, got -1"):
        sampler.set_epoch(-1)
