"""Client partitions against oracles: hand-worked shard assignments, exact counts recomputed with
``np.bincount``, a hand-worked summary, statistical bounds derived from the sampling distribution
(binomial standard errors, Dirichlet moments), invariants of the self-balancing rule checked cell by
cell, and coverage properties over random inputs with hypothesis."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from equipoise.federated.partition import (
    PARTITIONERS,
    PartitionStats,
    dirichlet_partition,
    iid_partition,
    partition,
    quantity_skew_partition,
    shard_partition,
)

OPTIONS = {"iid": {}, "dirichlet": {"alpha": 0.5}, "shards": {"shards_per_client": 2}, "quantity_skew": {"beta": 0.5}}
LONG_TAIL = np.array([4000, 2500, 1500, 1000, 600, 400])  # 10,000 rows, imbalance ratio 10


def _labels(class_counts, seed=0):
    """Labels with ``class_counts[c]`` rows of class ``c``, in a seeded random order."""
    labels = np.repeat(np.arange(len(class_counts)), class_counts)
    return np.random.default_rng(seed).permutation(labels)


def _counts(labels, parts, num_classes):
    """The (K, C) class counts, one ``np.bincount`` per client."""
    return np.stack([np.bincount(labels[rows], minlength=num_classes) for rows in parts])


def _assert_is_partition(parts, num_rows, num_clients):
    assert len(parts) == num_clients
    for rows in parts:
        assert rows.dtype == np.int64 and rows.ndim == 1
        assert np.all(np.diff(rows) > 0), "each client's rows are sorted and distinct"
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_rows))


def _assert_mix_close_to_global(labels, parts, num_classes, sigmas=5.0):
    """Every client's class shares within ``sigmas`` binomial standard errors of the global shares.

    A client of ``n`` rows drawn without replacement from the data has class shares with variance at
    most ``p (1 - p) / n`` (the hypergeometric variance is smaller than the binomial one), so a
    deviation of 5 standard errors has probability below 6e-7 per cell under the claim.
    """
    global_share = np.bincount(labels, minlength=num_classes) / len(labels)
    for rows in parts:
        share = np.bincount(labels[rows], minlength=num_classes) / len(rows)
        bound = sigmas * np.sqrt(global_share * (1 - global_share) / len(rows))
        assert np.all(np.abs(share - global_share) <= bound), (share, global_share, bound)


def test_registry_holds_the_four_schemes():
    assert PARTITIONERS.names() == ["dirichlet", "iid", "quantity_skew", "shards"]
    assert PARTITIONERS.get("iid") is iid_partition
    assert PARTITIONERS.get("shards") is shard_partition


@pytest.mark.parametrize("scheme", sorted(OPTIONS))
def test_every_row_goes_to_exactly_one_client(scheme):
    labels = _labels(LONG_TAIL)
    parts = partition(labels, scheme, 20, seed=1, **OPTIONS[scheme])
    _assert_is_partition(parts, len(labels), 20)


@pytest.mark.parametrize("scheme", sorted(OPTIONS))
def test_same_seed_same_partition_other_seed_other_partition(scheme):
    labels = _labels([300, 200, 100])
    first = partition(labels, scheme, 5, seed=7, **OPTIONS[scheme])
    again = partition(labels, scheme, 5, seed=7, **OPTIONS[scheme])
    other = partition(labels, scheme, 5, seed=8, **OPTIONS[scheme])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("scheme", sorted(OPTIONS))
def test_tensor_list_and_array_labels_agree(scheme):
    labels = _labels([40, 30, 30])
    from_array = partition(labels, scheme, 4, seed=3, **OPTIONS[scheme])
    from_tensor = partition(torch.from_numpy(labels), scheme, 4, seed=3, **OPTIONS[scheme])
    from_list = partition(labels.tolist(), scheme, 4, seed=3, **OPTIONS[scheme])
    for a, b, c in zip(from_array, from_tensor, from_list):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_partition_is_the_registered_function_with_seed_passed_on():
    labels = _labels(LONG_TAIL)
    expected = dirichlet_partition(labels, 10, 0.3, 5, min_size=20)
    got = partition(labels, "dirichlet", 10, seed=5, alpha=0.3, min_size=20)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    default_seed = partition(labels, "iid", 10)
    assert all(np.array_equal(a, b) for a, b in zip(iid_partition(labels, 10, 0), default_seed))


def test_unknown_scheme_lists_the_known_ones():
    known = "known: dirichlet, iid, quantity_skew, shards"
    with pytest.raises(ValueError, match=f"unknown partitioner 'labeldir'; {known}"):
        partition([0, 1], "labeldir", 2)


@settings(max_examples=60, deadline=None)
@given(
    class_counts=st.lists(st.integers(0, 30), min_size=1, max_size=6).filter(lambda counts: sum(counts) >= 1),
    num_clients=st.integers(1, 8),
    seed=st.integers(0, 2**32),
)
def test_all_schemes_partition_random_inputs(class_counts, num_clients, seed):
    labels = _labels(class_counts, seed=seed)
    num_clients = min(num_clients, len(labels))
    parts = {
        "iid": iid_partition(labels, num_clients, seed),
        "dirichlet": dirichlet_partition(labels, num_clients, 0.5, seed, min_size=0),
        "shards": shard_partition(labels, num_clients, 1, seed=seed),
        "quantity_skew": quantity_skew_partition(labels, num_clients, seed=seed, min_size=0),
    }
    for scheme, result in parts.items():
        _assert_is_partition(result, len(labels), num_clients)
        if scheme in ("iid", "shards"):  # one shard per client: the shards of array_split, sizes within 1
            sizes = [len(rows) for rows in result]
            assert max(sizes) - min(sizes) <= 1


# -- iid ----------------------------------------------------------------------------------------------


def test_iid_sizes_are_near_equal_and_mixes_close_to_global():
    labels = _labels(LONG_TAIL * 2)  # 20,000 rows
    parts = iid_partition(labels, 7, seed=0)
    # 20,000 = 7 * 2857 + 1: the first client holds one row more.
    assert [len(rows) for rows in parts] == [2858] + [2857] * 6
    _assert_mix_close_to_global(labels, parts, len(LONG_TAIL))


# -- shards -------------------------------------------------------------------------------------------


def test_shards_aligned_with_classes_give_each_client_at_most_two_classes():
    # 4 classes x 10 rows, 4 clients x 2 shards: 8 shards of 5 rows. Sorted by label, shards 0-1 hold
    # class 0, shards 2-3 class 1, and so on, so each client holds 5 rows of each of two classes or
    # all 10 rows of one class, and every class is split into exactly two shards.
    labels = np.repeat(np.arange(4), 10)
    for seed in range(10):
        counts = _counts(labels, shard_partition(labels, 4, 2, seed=seed), 4)
        assert np.all(np.isin(counts, [0, 5, 10]))
        assert np.all(np.count_nonzero(counts, axis=1) <= 2)
        np.testing.assert_array_equal(counts.sum(axis=0) // 5, [2, 2, 2, 2])
        np.testing.assert_array_equal(counts.sum(axis=1), [10, 10, 10, 10])


def test_shards_straddling_classes_hand_worked():
    # Class sizes 6, 4, 8, 2 (20 rows), 2 clients x 2 shards: 4 shards of 5 rows over the label order
    #   0 0 0 0 0 | 0 1 1 1 1 | 2 2 2 2 2 | 2 2 2 3 3
    # with class counts A = (5,0,0,0), B = (1,4,0,0), C = (0,0,5,0), D = (0,0,3,2). The two clients
    # hold one of the three pairings of these four shards.
    labels = _labels([6, 4, 8, 2], seed=11)
    pairings = {
        frozenset({(6, 4, 0, 0), (0, 0, 8, 2)}),  # A+B, C+D
        frozenset({(5, 0, 5, 0), (1, 4, 3, 2)}),  # A+C, B+D
        frozenset({(5, 0, 3, 2), (1, 4, 5, 0)}),  # A+D, B+C
    }
    seen = set()
    for seed in range(20):
        counts = _counts(labels, shard_partition(labels, 2, 2, seed=seed), 4)
        pairing = frozenset(tuple(int(v) for v in row) for row in counts)
        assert pairing in pairings
        seen.add(pairing)
    assert seen == pairings  # the shards are dealt at random (each pairing has probability 1/3)


def test_one_shard_per_client_gives_each_client_one_whole_class():
    labels = _labels([10, 10, 10, 10], seed=2)
    parts = shard_partition(labels, 4, 1, seed=0)
    held = sorted(tuple(rows) for rows in parts)
    expected = sorted(tuple(np.flatnonzero(labels == label)) for label in range(4))
    assert held == expected


def test_shard_ties_are_broken_at_random_not_by_position():
    # Class 0 is rows 0-9 and fills two shards of 5. Were ties kept in row order, the client holding
    # five rows of class 0 would always hold rows 0-4 or rows 5-9.
    labels = np.repeat(np.arange(4), 10)
    halves = set()
    for seed in range(10):
        for rows in shard_partition(labels, 4, 2, seed=seed):
            class_zero = rows[labels[rows] == 0]
            if len(class_zero) == 5:
                halves.add(tuple(class_zero))
    assert halves - {(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)}


def test_shard_remainder_rows_are_spread_not_dropped():
    # 43 rows in 8 shards: array_split gives three shards of 6 and five of 5, so clients of two
    # shards hold 10, 11 or 12 rows and all 43 rows are dealt.
    labels = _labels([20, 23])
    parts = shard_partition(labels, 4, 2, seed=0)
    _assert_is_partition(parts, 43, 4)
    assert {len(rows) for rows in parts} <= {10, 11, 12}


# -- dirichlet ----------------------------------------------------------------------------------------


def _top_client_share(counts):
    """For each class, the share of its rows held by the client holding most of them."""
    return counts.max(axis=0) / counts.sum(axis=0)


def test_dirichlet_small_alpha_gives_each_class_to_one_client():
    # Dir(0.01 * 1_10) puts almost all its mass on one client: the largest share of a draw averages
    # 0.94, and the mean of 10 such shares (one per class) fell below 0.75 in 1 of 10,000 simulated
    # partitions; an IID split scores ~0.12 (each client holds ~1/10 of every class).
    labels = _labels([500] * 10)
    parts = dirichlet_partition(labels, 10, 0.01, seed=0, min_size=0)
    stats = PartitionStats.from_partition(labels, parts)
    assert _top_client_share(stats.counts).mean() >= 0.7
    # A client holding one class of 10 equal ones is at TV distance 0.9 from the global mix, one
    # holding two whole classes at 0.8: over 200 seeds the mean never fell below 0.7, while an IID
    # split of these 5,000 rows scores ~0.04.
    assert stats.summary()["mean_tv_distance"] >= 0.6


def test_dirichlet_large_alpha_is_close_to_iid():
    # Dir(1000 * 1_10) has per-client shares 0.1 +- 0.003 (sd = sqrt(0.1 * 0.9 / 10001)): each class of
    # 500 rows gives each client 50 +- 1.5 rows plus at most one row of rounding, a relative error of
    # ~4% per cell, hence a mean TV distance of about 0.012 (at most 0.014 over 200 seeds) and sizes
    # of 500 +- 5 (the bound of 50 is 10 standard deviations).
    labels = _labels([500] * 10)
    parts = dirichlet_partition(labels, 10, 1000, seed=0)
    stats = PartitionStats.from_partition(labels, parts)
    assert stats.summary()["mean_tv_distance"] <= 0.05
    assert np.all(np.abs(stats.sizes - 500) <= 50)
    assert np.all(stats.counts > 0)


def test_dirichlet_min_size_redraws_until_every_client_has_enough_rows():
    labels = _labels([200] * 10)
    first_draw = dirichlet_partition(labels, 20, 0.5, seed=3, min_size=0)
    assert min(len(rows) for rows in first_draw) < 40  # the constraint below binds for this seed
    parts = dirichlet_partition(labels, 20, 0.5, seed=3, min_size=40)
    _assert_is_partition(parts, 2000, 20)
    assert min(len(rows) for rows in parts) >= 40


def test_dirichlet_impossible_min_size_raises_after_the_retries():
    # Two classes of 50 over 5 clients of at least 20 rows: only an exact 20-20-20-20-20 split would do.
    labels = _labels([50, 50])
    with pytest.raises(ValueError, match=r"min_size=20 .* in 6 draws .*lower min_size, raise alpha, use fewer clients"):
        dirichlet_partition(labels, 5, 0.01, seed=0, min_size=20, max_retries=5)
    with pytest.raises(ValueError, match="min_size=21 is impossible: num_clients=5 clients"):
        dirichlet_partition(labels, 5, 0.5, seed=0, min_size=21)


def test_dirichlet_self_balancing_skips_clients_above_the_average():
    # flwr-datasets' rule, checked cell by cell: classes are dealt in increasing order, and a client
    # that already holds more than N / K rows before class c receives none of class c.
    labels = _labels([300] * 10)
    average = len(labels) / 10
    parts = dirichlet_partition(labels, 10, 0.1, seed=0, min_size=0, self_balancing=True)
    _assert_is_partition(parts, len(labels), 10)
    counts = _counts(labels, parts, 10)
    held_before = np.cumsum(counts, axis=1) - counts  # rows held before each class is dealt
    full = held_before > average
    assert full.any(), "the rule must have applied at least once for the test to mean anything"
    assert np.all(counts[full] == 0)
    unbalanced = _counts(labels, dirichlet_partition(labels, 10, 0.1, seed=0, min_size=0), 10)
    held_before = np.cumsum(unbalanced, axis=1) - unbalanced
    assert np.any(unbalanced[held_before > average] > 0)  # without the rule, full clients keep receiving


# -- quantity skew ------------------------------------------------------------------------------------


def test_quantity_skew_varies_sizes_but_keeps_the_global_mix():
    labels = _labels(LONG_TAIL)
    parts = quantity_skew_partition(labels, 8, 0.5, seed=0)
    _assert_is_partition(parts, len(labels), 8)
    sizes = np.array([len(rows) for rows in parts])
    # Dir(0.5 * 1_8) shares have coefficient of variation sqrt((8 - 1) / (8 * 0.5 + 1)) = 1.18; their
    # max/min ratio has median ~270 and fell below 3 in 2 of 10,000 simulated draws, while IID sizes
    # differ by at most one row.
    assert sizes.max() >= 3 * sizes.min()
    _assert_mix_close_to_global(labels, parts, len(LONG_TAIL))


def test_quantity_skew_min_size_redraws_and_raises_when_impossible():
    # Dir(0.5 * 1_5) over 1,000 rows leaves every client 50 rows or more in ~9% of the draws, so the
    # re-draws succeed long before the default limit, while the first draw usually misses.
    labels = _labels([500, 500])
    first_draw = quantity_skew_partition(labels, 5, 0.5, seed=1, min_size=0)
    assert min(len(rows) for rows in first_draw) < 50  # the constraint below binds for this seed
    parts = quantity_skew_partition(labels, 5, 0.5, seed=1, min_size=50)
    _assert_is_partition(parts, 1000, 5)
    assert min(len(rows) for rows in parts) >= 50
    # 100 rows over 10 clients of at least 10: only an exact 10-10-...-10 split would do.
    with pytest.raises(ValueError, match=r"min_size=10 .* in 4 draws .*raise beta"):
        quantity_skew_partition(_labels([50, 50]), 10, 0.01, seed=0, min_size=10, max_retries=3)


# -- PartitionStats -----------------------------------------------------------------------------------


def test_stats_counts_equal_a_hand_count():
    labels = _labels(LONG_TAIL)
    parts = dirichlet_partition(labels, 12, 0.3, seed=4)
    stats = PartitionStats.from_partition(torch.from_numpy(labels), parts)
    expected = np.zeros((12, len(LONG_TAIL)), dtype=np.int64)
    for client, rows in enumerate(parts):
        for row in rows:
            expected[client, labels[row]] += 1
    np.testing.assert_array_equal(stats.counts, expected)
    assert stats.counts.dtype == np.int64
    np.testing.assert_array_equal(stats.sizes, [len(rows) for rows in parts])
    assert (stats.num_clients, stats.num_classes) == (12, len(LONG_TAIL))
    wider = PartitionStats.from_partition(labels, parts, num_classes=9)
    np.testing.assert_array_equal(wider.counts[:, :6], expected)
    assert not wider.counts[:, 6:].any()


def test_stats_summary_and_rows_hand_worked():
    # Client 0 holds labels 0, 0, 0, 1 and client 1 holds 1, 2. Global mix (1/2, 1/3, 1/6);
    # client 0: (3/4, 1/4, 0), TV = (1/4 + 1/12 + 1/6) / 2 = 1/4; client 1: (0, 1/2, 1/2),
    # TV = (1/2 + 1/6 + 1/3) / 2 = 1/2; mean 3/8.
    labels = np.array([0, 0, 0, 1, 1, 2])
    stats = PartitionStats.from_partition(labels, [np.array([0, 1, 2, 3]), np.array([4, 5])])
    np.testing.assert_array_equal(stats.counts, [[3, 1, 0], [0, 1, 1]])
    summary = stats.summary()
    assert summary == {
        "clients": 2,
        "rows": 6,
        "min_size": 2,
        "median_size": 3.0,
        "max_size": 4,
        "mean_classes_per_client": 2.0,
        "mean_tv_distance": pytest.approx(3 / 8),
    }
    assert stats.to_rows() == [
        {"client": 0, "size": 4, "classes_present": 2, "largest_class_share": 0.75},
        {"client": 1, "size": 2, "classes_present": 2, "largest_class_share": 0.5},
    ]
    table = stats.to_markdown()
    assert table.splitlines()[0] == "| client | size | classes_present | largest_class_share |"
    assert "| 0 | 4 | 2 | 0.75 |" in table


def test_stats_one_class_client_and_empty_client():
    # A client holding only class c is at TV distance 1 - n_c / n; an empty client has no mix and is
    # left out of the mean, and its largest-class share is NaN.
    labels = np.array([0, 0, 0, 1])
    stats = PartitionStats.from_partition(labels, [np.array([0, 1, 2]), np.array([3]), np.array([], dtype=int)])
    summary = stats.summary()
    assert summary["mean_tv_distance"] == pytest.approx(((1 - 3 / 4) + (1 - 1 / 4)) / 2)
    assert summary["min_size"] == 0 and summary["mean_classes_per_client"] == pytest.approx(2 / 3)
    assert math.isnan(stats.to_rows()[2]["largest_class_share"])


@pytest.mark.parametrize(
    ("parts", "num_classes", "error", "match"),
    [
        ([np.array([0, 9])], None, ValueError, "parts\\[0\\] holds row 9, outside the 4 rows"),
        ([np.array([0]), np.array([-1])], None, ValueError, "parts\\[1\\] holds row -1"),
        ([np.array([0.0, 1.0])], None, TypeError, "parts\\[0\\] must hold integer row indices"),
        ([np.zeros((2, 2), dtype=int)], None, ValueError, "parts\\[0\\] must be a 1-D array"),
        ([], None, ValueError, "parts is empty"),
        (5, None, TypeError, "parts must be a list"),
        ([np.array([0])], 1, ValueError, "num_classes=1 is too small: labels holds class id 2"),
        ([np.array([0])], 2.0, TypeError, "num_classes must be an int"),
    ],
)
def test_stats_bad_input(parts, num_classes, error, match):
    with pytest.raises(error, match=match):
        PartitionStats.from_partition(np.array([0, 1, 2, 0]), parts, num_classes=num_classes)


@pytest.mark.parametrize(
    ("client_counts", "per_class"), [(30, [1000] * 10), (4, [30, 20, 10])], ids=["log-scale", "linear"]
)
def test_heatmap_png_is_written(tmp_path, client_counts, per_class):
    labels = _labels(per_class)
    parts = dirichlet_partition(labels, client_counts, 0.1, seed=0, min_size=1)
    path = PartitionStats.from_partition(labels, parts).plot_heatmap(tmp_path / "plots" / "heatmap.png")
    assert path == tmp_path / "plots" / "heatmap.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# -- validation ---------------------------------------------------------------------------------------

GOOD = np.array([0, 1, 2, 0, 1, 2, 0, 1])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: iid_partition(GOOD.reshape(2, 4), 2, 0), ValueError, r"labels must be 1-D .*shape \(2, 4\)"),
        (lambda: iid_partition(GOOD.astype(float), 2, 0), TypeError, "labels must .*, got dtype float64"),
        (lambda: iid_partition(torch.rand(8), 2, 0), TypeError, "labels must hold integer class ids, got a tensor"),
        (lambda: iid_partition(GOOD.astype(bool), 2, 0), TypeError, "labels must .*, got dtype bool"),
        (lambda: iid_partition(np.array([0, 1, -3]), 2, 0), ValueError, r"labels\[2\] = -3 is negative"),
        (lambda: iid_partition(np.array([], dtype=int), 1, 0), ValueError, "labels is empty"),
        (lambda: iid_partition([], 1, 0), ValueError, "labels is empty"),
        (lambda: iid_partition(GOOD, 0, 0), ValueError, "num_clients must be >= 1, got 0"),
        (lambda: iid_partition(GOOD, 9, 0), ValueError, "num_clients=9 exceeds the 8 rows"),
        (lambda: iid_partition(GOOD, 2.0, 0), TypeError, "num_clients must be an int, got 2.0"),
        (lambda: iid_partition(GOOD, True, 0), TypeError, "num_clients must be an int, got True"),
        (lambda: iid_partition(GOOD, 2, 1.5), TypeError, "seed must be an int, got 1.5"),
        (lambda: iid_partition(GOOD, 2, None), TypeError, "seed must be an int, got None"),
        (lambda: iid_partition(GOOD, 2, -1), ValueError, "seed must be >= 0, got -1"),
        (lambda: dirichlet_partition(GOOD, 2, 0, 0), ValueError, "alpha must be > 0 and finite, got 0"),
        (lambda: dirichlet_partition(GOOD, 2, -0.5, 0), ValueError, "alpha must be > 0 and finite, got -0.5"),
        (lambda: dirichlet_partition(GOOD, 2, math.nan, 0), ValueError, "alpha must be > 0 and finite, got nan"),
        (lambda: dirichlet_partition(GOOD, 2, math.inf, 0), ValueError, "alpha must be > 0 and finite, got inf"),
        (lambda: dirichlet_partition(GOOD, 2, "0.5", 0), TypeError, "alpha must be a number, got '0.5'"),
        (lambda: dirichlet_partition(GOOD, 2, 0.5, "0"), TypeError, "seed must be an int, got '0'"),
        (lambda: dirichlet_partition(GOOD, 2, 0.5, 0, min_size=-1), ValueError, "min_size must be >= 0, got -1"),
        (lambda: dirichlet_partition(GOOD, 2, 0.5, 0, max_retries=-1), ValueError, "max_retries must be >= 0"),
        (lambda: dirichlet_partition(GOOD, 2, 0.5, 0, self_balancing=1), TypeError, "self_balancing must be a bool"),
        (lambda: quantity_skew_partition(GOOD, 2, 0.0, seed=0), ValueError, "beta must be > 0 and finite, got 0.0"),
        (lambda: quantity_skew_partition(GOOD, 2, math.nan, seed=0), ValueError, "beta must be > 0 and finite"),
        (lambda: quantity_skew_partition(GOOD, 2, None, seed=0), TypeError, "beta must be a number, got None"),
        (lambda: quantity_skew_partition(GOOD, 2, seed=0, min_size=5), ValueError, "min_size=5 is impossible"),
        (lambda: shard_partition(GOOD, 2, 0, seed=0), ValueError, "shards_per_client must be >= 1, got 0"),
        (lambda: shard_partition(GOOD, 2, 1.0, seed=0), TypeError, "shards_per_client must be an int, got 1.0"),
        (lambda: shard_partition(GOOD, 3, 3, seed=0), ValueError, "shards_per_client=3 with num_clients=3 asks for 9"),
        (lambda: shard_partition(GOOD, 2, seed=0.0), TypeError, "seed must be an int"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
