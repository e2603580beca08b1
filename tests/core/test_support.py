"""Metrics, reporting, long-tailed profiles, device selection and validation messages."""

import json
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, recall_score

from equipoise.core.config import ConfigError
from equipoise.core.device import resolve_device
from equipoise.core.imbalance import long_tailed_counts, long_tailed_indices
from equipoise.core.metrics import classification_summary, plot_per_class
from equipoise.core.reporting import format_value, markdown_table, write_table
from equipoise.core.validation import check_class_counts, check_class_targets, check_int, check_logits


def test_cifar10_lt_counts_match_the_published_profile():
    # CIFAR-10-LT with imbalance ratio 100 (Cao et al. 2019; Cui et al. 2019).
    assert long_tailed_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tailed_counts(500, 4, 10, profile="step") == [500, 500, 50, 50]


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 10, 10), "max_count"),
        ((100, 1, 10), "num_classes"),
        ((100, 10, 0.5), "imbalance_ratio"),
        ((10, 10, 100), "no example"),
        ((100, 10, 10, "linear"), "profile"),
    ],
)
def test_long_tailed_counts_rejects_bad_values(args, match):
    with pytest.raises(ValueError, match=match):
        long_tailed_counts(*args)


def test_long_tailed_indices_draws_the_asked_counts_deterministically():
    labels = np.repeat(np.arange(3), 10)
    first = long_tailed_indices(labels, [10, 4, 1], torch.Generator().manual_seed(3))
    again = long_tailed_indices(labels, [10, 4, 1], torch.Generator().manual_seed(3))
    assert np.array_equal(first, again)
    assert np.bincount(labels[first]).tolist() == [10, 4, 1]
    with pytest.raises(ValueError, match="class 1 has 10 examples, fewer than the 11"):
        long_tailed_indices(labels, [1, 11, 1], torch.Generator())


def test_classification_summary_matches_sklearn():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.7, target, rng.integers(0, 4, 200))
    summary = classification_summary(torch.as_tensor(preds), torch.as_tensor(target), [100, 50, 10, 1])
    assert summary["accuracy"] == pytest.approx(float((preds == target).mean()))
    assert summary["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(target, preds))
    per_class = recall_score(target, preds, average=None)
    assert summary["per_class_accuracy"] == pytest.approx(per_class.tolist())
    assert summary["head_accuracy"] == pytest.approx(per_class[:2].mean())
    assert summary["tail_accuracy"] == pytest.approx(per_class[2:].mean())


def test_classification_summary_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="preds and target"):
        classification_summary(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), [1, 1])


def _plotted_axes(monkeypatch, *args):
    """Call plot_per_class and return the axes it drew (captured when the figure is closed)."""
    import matplotlib.pyplot as plt

    closed = []
    monkeypatch.setattr(plt, "close", lambda figure: closed.append(figure))
    path = plot_per_class(*args)
    assert path.read_bytes()[:4] == b"\x89PNG"
    return closed[0].axes[0]


def test_plot_per_class_puts_spread_counts_on_a_log_axis(tmp_path, monkeypatch):
    axis = _plotted_axes(monkeypatch, {"CE": [0.9, 0.5, 0.1], "LA": [0.8, 0.7, 0.5]}, [100, 10, 1], tmp_path / "p.png")
    assert axis.get_xscale() == "log" and axis.xaxis_inverted()  # head (100) on the left
    assert [label.get_text() for label in axis.get_xticklabels()] == ["1\n(2)", "10\n(1)", "100\n(0)"]
    lines = {line.get_label(): line.get_xydata().tolist() for line in axis.get_lines()}
    assert lines["CE"] == [[100, 0.9], [10, 0.5], [1, 0.1]]


def test_plot_per_class_spaces_nearly_equal_counts_evenly_in_count_order(tmp_path, monkeypatch):
    # MNIST's global counts under a federated split: within 14% of each other, the log ticks would collide.
    axis = _plotted_axes(monkeypatch, {"FedAvg": [0.1, 0.2, 0.3]}, [5923, 6742, 5958], tmp_path / "p.png")
    assert axis.get_xscale() == "linear"
    assert [label.get_text() for label in axis.get_xticklabels()] == ["6742\n(1)", "5958\n(2)", "5923\n(0)"]
    assert axis.get_lines()[0].get_xydata().tolist() == [[0, 0.2], [1, 0.3], [2, 0.1]]


def test_markdown_table_and_write_table(tmp_path):
    rows = [{"method": "CE", "accuracy": 0.81234}, {"method": "LA", "accuracy": 0.9}]
    table = markdown_table(rows)
    assert table.splitlines() == ["| method | accuracy |", "|---|---|", "| CE | 0.8123 |", "| LA | 0.9 |"]
    json_path, md_path = write_table(rows, tmp_path, "t", "Title", {"seed": 0})
    assert json.loads(json_path.read_text()) == {"meta": {"seed": 0}, "rows": rows}
    assert md_path.read_text().startswith("# Title\n\n- seed: 0\n")
    assert format_value(1.5e-5) == "1.50e-05"
    with pytest.raises(ValueError, match="rows is empty"):
        markdown_table([])


def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_validation_messages_name_argument_and_value():
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"target\[1\] = 7 is outside \[0, 4\)"):
        check_class_targets(torch.tensor([0, 7, 1]), logits)
    with pytest.raises(ValueError, match=r"logits contains a non-finite value nan at index \(2, 1\)"):
        bad = logits.clone()
        bad[2, 1] = float("nan")
        check_logits(bad)
    with pytest.raises(ValueError, match=r"class_counts\[1\] = -2.0 is negative"):
        check_class_counts(torch.tensor([3.0, -2.0]))
    with pytest.raises(ValueError, match=r"class_counts\[0\] is 0"):
        check_class_counts(torch.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        check_logits(np.zeros((2, 2)))


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(1)])
def test_check_int_takes_python_and_numpy_integers_at_or_above_the_minimum(value):
    check_int(value, "epochs", minimum=1)


@pytest.mark.parametrize("value", [0, -1, True, 1.0, 2.5, "3", None, np.float32(2)])
def test_check_int_refuses_non_integers_bools_and_small_values_naming_them(value):
    with pytest.raises(ValueError, match=rf"^epochs must be an integer >= 1, got {re.escape(repr(value))}$"):
        check_int(value, "epochs", minimum=1)
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):  # a config's own error type
        check_int(value, "epochs", minimum=1, error=ConfigError)


def test_check_int_without_numpy_takes_python_ints_only():
    check_int(3, "epochs", minimum=1, numpy=False)
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 1, got np.int64\(3\)"):
        check_int(np.int64(3), "epochs", minimum=1, numpy=False)


@pytest.mark.parametrize("exponent", [0.0, 0.01, 0.5, 1.0, 2.0, 2.5])
def test_power_is_exact_and_has_finite_gradients_at_zero(exponent):
    from equipoise.core.losses._common import power

    base = torch.tensor([0.0, -1e-9, 1e-30, 0.25, 1.0], dtype=torch.float32, requires_grad=True)
    value = power(base, exponent)
    expected = torch.tensor([0.0, 0.0, 1e-30, 0.25, 1.0], dtype=torch.float64).pow(exponent)
    if exponent == 0:
        expected = torch.ones(5, dtype=torch.float64)
    torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-38)  # float32 underflow
    if exponent != 0:  # exponent 0 gives constant ones, with no graph
        value.sum().backward()
        assert torch.isfinite(base.grad).all()
    # Clamping the base at float32's tiny instead would give tiny ** 0.01 = 0.42 at zero.
    assert value[0].item() == (1.0 if exponent == 0 else 0.0)
