"""Class-aware samplers against independent oracles: the formulas in NumPy, hand-worked numbers,
imbalanced-learn's resamplers, and ``searchsorted`` for the guide-table class draw."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from equipoise.core.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    DeferredResampling,
    PowerSampler,
    ProgressivelyBalancedSampler,
    RandomOverSampler,
    RandomUnderSampler,
    SquareRootSampler,
    TemperatureSampler,
    cooldown_temperature,
    deferred_class_probabilities,
    labels_of,
    power_class_probabilities,
    progressive_class_probabilities,
    sample_by_class,
    temperature_class_probabilities,
)
from equipoise.core.samplers._common import _draw_classes
from equipoise.core.testing import check_sampler

COUNTS = np.array([400, 200, 100, 50, 25, 10])
DRAWS = 200_000
TOLERANCE = 0.01


def _long_tailed_labels(counts=COUNTS, seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    return torch.from_numpy(np.random.default_rng(seed).permutation(labels))


LABELS = _long_tailed_labels()

# The arguments each registered sampler needs besides the labels.
REQUIRED = {
    "power": {"q": 0.3},
    "progressive": {"total_epochs": 5},
    "temperature": {"cooldown_epoch": 2},
    "deferred_resampling": {"switch_epoch": 2},
}


def _build(name, labels=LABELS, **kwargs):
    return SAMPLERS.build(name, labels=labels, **{**REQUIRED.get(name, {}), **kwargs})


def _power_oracle(counts, q):
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.array([c**q if c > 0 else 0.0 for c in counts])
    return weights / weights.sum()


def _frequencies(sampler, labels=LABELS):
    drawn = labels[torch.tensor(list(sampler))]
    return np.bincount(drawn.numpy(), minlength=sampler.num_classes) / len(drawn)


# ----------------------------------------------------------------------------- registry


def test_every_sampler_of_the_issue_is_registered():
    assert set(SAMPLERS.names()) == {
        "class_balanced",
        "power",
        "square_root",
        "progressive",
        "temperature",
        "deferred_resampling",
        "repeat_factor",
        "random_over",
        "random_under",
    }
    assert SAMPLERS.get("square_root") is SquareRootSampler
    with pytest.raises(ValueError, match="unknown sampler 'balanced'; known: class_balanced"):
        SAMPLERS.get("balanced")


# ----------------------------------------------------------------------------- the contract, for every sampler


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_registered_sampler_keeps_the_contract(name):
    check_sampler(lambda **options: _build(name, **options), LABELS)


@pytest.mark.parametrize("num_replicas", [2, 7])
def test_ddp_contract_for_other_replica_counts(num_replicas):
    check_sampler(lambda **options: _build("class_balanced", **options), LABELS, num_replicas=num_replicas)


@settings(max_examples=40, deadline=None)
@given(
    num_labels=st.integers(1, 40),
    num_samples=st.integers(1, 60),
    num_replicas=st.integers(1, 9),
    seed=st.integers(0, 2**32),
)
def test_ddp_split_property(num_labels, num_samples, num_replicas, seed):
    labels = torch.arange(num_labels) % 3 if num_labels >= 3 else torch.zeros(num_labels, dtype=torch.int64)
    full = PowerSampler(labels, 0.5, num_samples, seed=seed, num_replicas=1, rank=0).indices()
    shares = [
        PowerSampler(labels, 0.5, num_samples, seed=seed, num_replicas=num_replicas, rank=rank).indices()
        for rank in range(num_replicas)
    ]
    per_rank = math.ceil(num_samples / num_replicas)
    assert {len(share) for share in shares} == {per_rank}
    padded = full.repeat(math.ceil(per_rank * num_replicas / num_samples))[: per_rank * num_replicas]
    for rank, share in enumerate(shares):
        torch.testing.assert_close(share, padded[rank::num_replicas])


def test_ddp_defaults_to_a_single_process_without_torch_distributed():
    sampler = ClassBalancedSampler(LABELS)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)


def test_num_samples_sets_the_epoch_length_over_all_ranks():
    assert len(ClassBalancedSampler(LABELS)) == len(LABELS)
    assert len(ClassBalancedSampler(LABELS, num_samples=10)) == 10
    assert len(ClassBalancedSampler(LABELS, num_samples=10, num_replicas=4, rank=3)) == 3
    assert len(list(ClassBalancedSampler(LABELS, num_samples=10, num_replicas=4, rank=3))) == 3


def test_epoch_draws_are_not_shifted_copies_of_other_seeds():
    # DistributedSampler seeds with seed + epoch, so (seed 0, epoch 1) repeats (seed 1, epoch 0); we do not.
    shifted = ClassBalancedSampler(LABELS, seed=0)
    shifted.set_epoch(1)
    assert list(shifted) != list(ClassBalancedSampler(LABELS, seed=1))


# ----------------------------------------------------------------------------- class frequencies


@pytest.mark.parametrize(
    "sampler, expected",
    [
        (ClassBalancedSampler(LABELS, DRAWS), _power_oracle(COUNTS, 0.0)),
        (SquareRootSampler(LABELS, DRAWS), _power_oracle(COUNTS, 0.5)),
        (PowerSampler(LABELS, 1.0, DRAWS), COUNTS / COUNTS.sum()),
        (PowerSampler(LABELS, -0.5, DRAWS), _power_oracle(COUNTS, -0.5)),
        (
            TemperatureSampler(LABELS, cooldown_epoch=None, temperature=3.0, num_samples=DRAWS),
            _power_oracle(COUNTS, 1 / 3),
        ),
    ],
    ids=["class_balanced", "square_root", "instance_balanced", "power_negative", "temperature"],
)
def test_class_frequencies_match_the_target(sampler, expected):
    np.testing.assert_allclose(_frequencies(sampler), expected, atol=TOLERANCE)
    np.testing.assert_allclose(sampler.class_probabilities().numpy(), expected, rtol=1e-12)


def test_samples_within_a_class_are_drawn_uniformly():
    sampler = ClassBalancedSampler(LABELS, DRAWS, seed=5)
    hits = np.bincount(np.array(list(sampler)), minlength=len(LABELS)) / DRAWS
    # Sample i is drawn with probability p(class of i) / n(class of i) = 1 / (C * n_y).
    expected = 1.0 / (len(COUNTS) * COUNTS[LABELS.numpy()])
    np.testing.assert_allclose(hits, expected, atol=0.002)
    assert (hits > 0).all()


def test_hand_worked_probabilities():
    torch.testing.assert_close(power_class_probabilities([9, 1], 0.5), torch.tensor([0.75, 0.25], dtype=torch.float64))
    torch.testing.assert_close(
        temperature_class_probabilities([9, 1], 2.0), torch.tensor([0.75, 0.25], dtype=torch.float64)
    )
    # t / T = 1 / 2: halfway between IB (3/4, 1/4) and CB (1/2, 1/2).
    torch.testing.assert_close(
        progressive_class_probabilities([3, 1], epoch=1, total_epochs=3),
        torch.tensor([0.625, 0.375], dtype=torch.float64),
    )
    torch.testing.assert_close(
        power_class_probabilities([4, 0, 1], 0.0), torch.tensor([0.5, 0, 0.5], dtype=torch.float64)
    )


def test_large_exponents_do_not_overflow():
    probabilities = power_class_probabilities([10**6, 10**5], 200.0)
    torch.testing.assert_close(probabilities, torch.tensor([1.0, 0.0], dtype=torch.float64))


# ----------------------------------------------------------------------------- schedules


def _progressive_oracle(counts, epoch, total_epochs):
    instance = counts / counts.sum()
    uniform = np.full(len(counts), 1.0 / len(counts))
    fraction = epoch / (total_epochs - 1) if total_epochs > 1 else 0.0
    fraction = min(fraction, 1.0)
    return (1 - fraction) * instance + fraction * uniform


@pytest.mark.parametrize("epoch", [0, 1, 3, 6, 9, 12])
def test_progressively_balanced_schedule(epoch):
    sampler = ProgressivelyBalancedSampler(LABELS, total_epochs=10, num_samples=DRAWS, seed=epoch)
    expected = _progressive_oracle(COUNTS, epoch, 10)
    np.testing.assert_allclose(sampler.class_probabilities(epoch).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(progressive_class_probabilities(COUNTS, epoch, 10).numpy(), expected, rtol=1e-12)
    sampler.set_epoch(epoch)
    np.testing.assert_allclose(_frequencies(sampler), expected, atol=TOLERANCE)


def test_progressive_endpoints_and_a_single_epoch():
    sampler = ProgressivelyBalancedSampler(LABELS, total_epochs=4)
    np.testing.assert_allclose(sampler.class_probabilities(0).numpy(), COUNTS / COUNTS.sum(), rtol=1e-12)
    np.testing.assert_allclose(sampler.class_probabilities(3).numpy(), np.full(6, 1 / 6), rtol=1e-12)
    single = ProgressivelyBalancedSampler(LABELS, total_epochs=1)
    np.testing.assert_allclose(single.class_probabilities(0).numpy(), COUNTS / COUNTS.sum(), rtol=1e-12)


@pytest.mark.parametrize("epoch", [0, 4, 5, 8])
def test_temperature_cooldown_schedule(epoch):
    sampler = TemperatureSampler(LABELS, cooldown_epoch=5, temperature=5.0, num_samples=DRAWS)
    tau = 5.0 if epoch < 5 else 1.0
    expected = COUNTS ** (1 / tau) / (COUNTS ** (1 / tau)).sum()
    assert sampler.temperature_at(epoch) == tau == cooldown_temperature(epoch, 5.0, 5, 1.0)
    np.testing.assert_allclose(sampler.class_probabilities(epoch).numpy(), expected, rtol=1e-12)
    sampler.set_epoch(epoch)
    np.testing.assert_allclose(_frequencies(sampler), expected, atol=TOLERANCE)


def test_temperature_defaults_follow_the_paper_and_none_keeps_it_fixed():
    sampler = TemperatureSampler(LABELS, cooldown_epoch=3)
    assert (sampler.temperature, sampler.final_temperature) == (5.0, 1.0)
    static = TemperatureSampler(LABELS, cooldown_epoch=None, temperature=2.0)
    assert static.temperature_at(0) == static.temperature_at(10**6) == 2.0
    assert cooldown_temperature(10**6) == 5.0


@pytest.mark.parametrize("epoch", [0, 2, 3, 10])
def test_deferred_resampling_schedule(epoch):
    sampler = DeferredResampling(LABELS, switch_epoch=3, num_samples=DRAWS)
    expected = COUNTS / COUNTS.sum() if epoch < 3 else np.full(6, 1 / 6)
    np.testing.assert_allclose(sampler.class_probabilities(epoch).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(deferred_class_probabilities(COUNTS, epoch, 3).numpy(), expected, rtol=1e-12)
    sampler.set_epoch(epoch)
    np.testing.assert_allclose(_frequencies(sampler), expected, atol=TOLERANCE)


def test_class_probabilities_default_to_the_current_epoch():
    sampler = DeferredResampling(LABELS, switch_epoch=1)
    sampler.set_epoch(1)
    torch.testing.assert_close(sampler.class_probabilities(), sampler.class_probabilities(1))


# ----------------------------------------------------------------------------- random over- and under-sampling


def _imblearn_counts(resampler_cls, strategy, labels=LABELS):
    features = np.arange(len(labels)).reshape(-1, 1)
    _, resampled = resampler_cls(sampling_strategy=strategy, random_state=0).fit_resample(features, labels.numpy())
    return np.bincount(resampled, minlength=int(labels.max()) + 1)


@pytest.mark.parametrize("strategy", ["auto", "not majority"])
def test_random_over_sampler_counts_match_imbalanced_learn(strategy):
    from imblearn.over_sampling import RandomOverSampler as ImblearnOverSampler

    sampler = RandomOverSampler(LABELS, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(sampler))
        counts = np.bincount(LABELS[indices].numpy(), minlength=6)
        np.testing.assert_array_equal(counts, _imblearn_counts(ImblearnOverSampler, strategy))
        assert set(indices.tolist()) == set(range(len(LABELS)))  # every original sample is kept
    assert len(sampler) == 6 * 400


@pytest.mark.parametrize("strategy", ["auto", "not minority"])
def test_random_under_sampler_counts_match_imbalanced_learn(strategy):
    from imblearn.under_sampling import RandomUnderSampler as ImblearnUnderSampler

    sampler = RandomUnderSampler(LABELS, seed=0)
    seen = set()
    for epoch in range(30):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        counts = np.bincount(LABELS[torch.tensor(indices)].numpy(), minlength=6)
        np.testing.assert_array_equal(counts, _imblearn_counts(ImblearnUnderSampler, strategy))
        assert len(set(indices)) == len(indices)  # without replacement, as imbalanced-learn's default
        seen.update(indices)
    assert len(sampler) == 6 * 10
    assert len(seen) > 0.5 * len(LABELS)  # a fresh subset each epoch


def test_over_sampler_duplicates_are_uniform_within_their_class():
    labels = torch.tensor([0] * 1000 + [1] * 4)
    sampler = RandomOverSampler(labels, seed=2)
    hits = np.bincount(np.array(list(sampler)), minlength=1004)
    # Each of the 4 minority samples: 1 original + Binomial(996, 1/4) duplicates.
    np.testing.assert_allclose(hits[1000:], 1 + 996 / 4, atol=55)  # 4 standard deviations
    assert (hits[:1000] == 1).all()


def test_over_and_under_samplers_shuffle_the_classes():
    for sampler in (RandomOverSampler(LABELS), RandomUnderSampler(LABELS)):
        drawn = LABELS[torch.tensor(list(sampler))]
        assert not bool((drawn[1:] >= drawn[:-1]).all())


# ----------------------------------------------------------------------------- empty classes


def test_a_named_empty_class_raises_with_its_index():
    labels = torch.tensor([0, 2, 2, 0])
    with pytest.raises(ValueError, match=r"class 1 has no sample in labels \(num_classes=3"):
        ClassBalancedSampler(labels, num_classes=3)
    with pytest.raises(ValueError, match=r"class 1 has no sample in labels \(classes are 0 .. max\(labels\)"):
        ClassBalancedSampler(labels)
    with pytest.raises(ValueError, match=r"class 3 has no sample.*num_classes=4"):
        RandomUnderSampler(torch.tensor([0, 1, 2]), num_classes=4)


def test_empty_classes_are_skipped_when_allowed():
    labels = torch.tensor([0] * 30 + [2] * 10)
    sampler = ClassBalancedSampler(labels, num_samples=DRAWS, num_classes=4, allow_empty_classes=True)
    np.testing.assert_allclose(sampler.class_probabilities().numpy(), [0.5, 0, 0.5, 0])
    np.testing.assert_allclose(_frequencies(sampler, labels), [0.5, 0, 0.5, 0], atol=TOLERANCE)
    progressive = ProgressivelyBalancedSampler(labels, total_epochs=2, num_classes=4, allow_empty_classes=True)
    np.testing.assert_allclose(progressive.class_probabilities(1).numpy(), [0.5, 0, 0.5, 0])
    over = RandomOverSampler(labels, num_classes=4, allow_empty_classes=True)
    under = RandomUnderSampler(labels, num_classes=4, allow_empty_classes=True)
    assert np.bincount(labels[torch.tensor(list(over))].numpy(), minlength=4).tolist() == [30, 0, 30, 0]
    assert np.bincount(labels[torch.tensor(list(under))].numpy(), minlength=4).tolist() == [10, 0, 10, 0]


# ----------------------------------------------------------------------------- scale


def test_more_labels_than_torch_multinomial_accepts():
    num_labels = 20_000_000  # above torch.multinomial's 2**24 categories
    with pytest.raises(RuntimeError, match="2\\^24"):
        torch.multinomial(torch.ones(2**24 + 1), 1)
    labels = torch.zeros(num_labels, dtype=torch.int64)
    labels[1::4] = 1
    labels[-7:] = 2  # a 7-sample class at the very end, beyond index 2**24
    sampler = PowerSampler(labels, 0.0, num_samples=60_000, seed=0)
    indices = sampler.indices()
    drawn = labels.index_select(0, indices)
    np.testing.assert_allclose(np.bincount(drawn.numpy(), minlength=3) / 60_000, [1 / 3] * 3, atol=TOLERANCE)
    assert int(indices.max()) > 2**24
    assert set(indices[drawn == 2].tolist()) == set(range(num_labels - 7, num_labels))


# ----------------------------------------------------------------------------- the class draw


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.one_of(st.just(0.0), st.floats(1e-9, 1e3)), min_size=1, max_size=300).filter(
        lambda w: sum(w) > 0
    ),
    seed=st.integers(0, 2**32),
)
def test_guide_table_draw_equals_inverting_the_cdf_by_search(weights, seed):
    probabilities = torch.tensor(weights, dtype=torch.float64)
    uniform = torch.rand(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    support = torch.nonzero(probabilities > 0).flatten()
    cdf = torch.cumsum(probabilities[support], 0)
    cdf /= cdf[-1].clone()
    cdf[-1] = 1.0
    expected = support[torch.searchsorted(cdf, uniform, right=True)]
    torch.testing.assert_close(_draw_classes(probabilities, uniform.clone()), expected)


def test_sample_by_class_functional():
    probabilities = [0.1, 0.0, 0.2, 0.3, 0.4, 0.0]
    indices = sample_by_class(LABELS, probabilities, num_samples=DRAWS, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(np.bincount(LABELS[indices].numpy(), minlength=6) / DRAWS, probabilities, atol=0.01)
    assert len(sample_by_class(LABELS, [1] * 6)) == len(LABELS)
    torch.testing.assert_close(sample_by_class(LABELS, [1] * 6, seed=4), sample_by_class(LABELS, [1] * 6, seed=4))
    with pytest.raises(ValueError, match="pass seed or generator, not both"):
        sample_by_class(LABELS, [1] * 6, generator=torch.Generator(), seed=1)
    with pytest.raises(ValueError, match="class 1 has probability 0.5 but no sample"):
        sample_by_class(torch.tensor([0, 2]), [0.25, 0.5, 0.25])
    with pytest.raises(ValueError, match="class_probabilities sum to 0"):
        sample_by_class(LABELS, [0.0] * 6)
    with pytest.raises(ValueError, match="labels contain class 5, but class_probabilities has only 3"):
        sample_by_class(LABELS, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"class_probabilities\[0\] = -1.0 is negative"):
        sample_by_class(LABELS, [-1.0, 1, 1, 1, 1, 1])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: ClassBalancedSampler([]), ValueError, "labels is empty"),
        (lambda: ClassBalancedSampler(torch.tensor([0, -1])), ValueError, r"labels\[1\] = -1 is negative"),
        (lambda: ClassBalancedSampler(torch.tensor([0.0, 1.0])), TypeError, "integer class indices"),
        (lambda: ClassBalancedSampler(torch.zeros(3, 2, dtype=torch.int64)), ValueError, "must be 1-D"),
        (
            lambda: ClassBalancedSampler(LABELS, num_classes=4),
            ValueError,
            r"= [45] is outside \[0, num_classes\) = \[0, 4\)",
        ),
        (lambda: ClassBalancedSampler(LABELS, num_classes=0), ValueError, "num_classes must be an integer >= 1"),
        (lambda: ClassBalancedSampler(LABELS, num_samples=0), ValueError, "num_samples must be an integer >= 1"),
        (lambda: ClassBalancedSampler(LABELS, num_samples=2.5), ValueError, "num_samples must be an integer"),
        (lambda: PowerSampler(LABELS, float("nan")), ValueError, "q must be a finite number, got nan"),
        (lambda: PowerSampler(LABELS, float("inf")), ValueError, "q must be a finite number, got inf"),
        (lambda: power_class_probabilities([1, 2], float("-inf")), ValueError, "q must be a finite"),
        (lambda: power_class_probabilities([0, 0], 1.0), ValueError, "class_counts are all 0"),
        (lambda: ProgressivelyBalancedSampler(LABELS, 0), ValueError, "total_epochs must be an integer >= 1, got 0"),
        (lambda: progressive_class_probabilities([1, 2], 0, 0), ValueError, "total_epochs must be an integer >= 1"),
        (lambda: TemperatureSampler(LABELS, 2, temperature=0.0), ValueError, "temperature must be > 0"),
        (lambda: TemperatureSampler(LABELS, 2, temperature=-1.0), ValueError, "temperature must be > 0"),
        (lambda: TemperatureSampler(LABELS, 2, final_temperature=float("inf")), ValueError, "final_temperature"),
        (lambda: TemperatureSampler(LABELS, -1), ValueError, "cooldown_epoch must be an integer >= 0, got -1"),
        (lambda: DeferredResampling(LABELS, -2), ValueError, "switch_epoch must be an integer >= 0, got -2"),
        (
            lambda: ClassBalancedSampler(LABELS, num_replicas=2, rank=2),
            ValueError,
            r"rank must lie in \[0, num_replicas\) = \[0, 2\), got rank=2",
        ),
        (lambda: ClassBalancedSampler(LABELS, num_replicas=0, rank=0), ValueError, "num_replicas must be an integer"),
        (lambda: ClassBalancedSampler(LABELS, num_replicas=2, rank=-1), ValueError, "rank must be an integer >= 0"),
        (lambda: ClassBalancedSampler(LABELS, seed=-3), ValueError, "seed must be an integer >= 0, got -3"),
        (
            lambda: ClassBalancedSampler(LABELS, seed=1, generator=torch.Generator()),
            ValueError,
            "pass seed or generator, not both",
        ),
        (lambda: ClassBalancedSampler(LABELS, generator=7), TypeError, "generator must be a torch.Generator"),
        (lambda: cooldown_temperature(-1), ValueError, "epoch must be an integer >= 0, got -1"),
    ],
)
def test_bad_input_raises(build, error, message):
    with pytest.raises(error, match=message):
        build()


@pytest.mark.parametrize("epoch", [-1, 1.5, True, "3"])
def test_set_epoch_rejects_anything_but_a_non_negative_integer(epoch):
    sampler = ClassBalancedSampler(LABELS)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        sampler.set_epoch(epoch)
    assert sampler.epoch == 0


def test_a_data_loader_gets_class_balanced_batches_from_labels_of():
    dataset = TensorDataset(torch.arange(len(LABELS)).unsqueeze(1), LABELS)
    sampler = ClassBalancedSampler(labels_of(dataset), num_samples=60_000, seed=0)
    loader = DataLoader(dataset, batch_size=500, sampler=sampler)
    seen = torch.cat([targets for _, targets in loader])
    assert len(loader) == 120 and seen.numel() == 60_000
    np.testing.assert_allclose(np.bincount(seen.numpy(), minlength=6) / 60_000, [1 / 6] * 6, atol=TOLERANCE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_labels_give_the_same_draw_as_cpu_labels():
    assert list(ClassBalancedSampler(LABELS.cuda(), seed=2)) == list(ClassBalancedSampler(LABELS, seed=2))


def test_benchmark_helpers_run_on_a_small_problem(monkeypatch):
    from equipoise.core.samplers import benchmark

    labels = benchmark.long_tailed_labels(10_000, num_classes=5, imbalance_ratio=16.0, seed=1)
    shares = 16.0 ** (-np.arange(5) / 4)
    expected = np.floor(10_000 * shares / shares.sum()).astype(int)
    expected[0] += 10_000 - expected.sum()
    np.testing.assert_array_equal(np.bincount(labels.numpy()), expected)
    assert not bool((labels[1:] >= labels[:-1]).all())  # shuffled

    def run():
        messages = []
        timings = benchmark.benchmark_samplers(4000, 10, 10.0, 1000, 1, False, log=messages.append)
        return timings, messages

    if benchmark._torchsampler() is not None:
        timings, _ = run()
        assert timings[2].library.startswith("torchsampler") and timings[2].num_labels == 1000
    monkeypatch.setattr(benchmark, "_torchsampler", lambda: None)
    timings, messages = run()
    assert [t.num_labels for t in timings] == [4000, 1000]
    assert all(0 < t.build_seconds <= t.tensor_seconds for t in timings)
    assert "torchsampler is not installed: skipping" in messages[0]
    with pytest.raises(ImportError, match="pip install torchsampler"):
        benchmark.time_torchsampler(labels)
