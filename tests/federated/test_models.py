"""Oracle tests for the federated models (equipoise.federated.models).

The references are computed another way: parameter counts by hand from the layer sizes of
NIID-Bench's simple CNN, and the forward pass written out with ``torch.nn.functional``.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equipoise.federated.client import SimplexETFClassifier, attach_etf_head
from equipoise.federated.models import SimpleCNN, simple_cnn

torch.set_num_threads(1)


def _expected_parameters(in_channels: int, side: int, num_classes: int = 10) -> int:
    conv1 = in_channels * 6 * 25 + 6
    conv2 = 6 * 16 * 25 + 16
    fc1 = 16 * side * side * 120 + 120
    fc2 = 120 * 84 + 84
    fc3 = 84 * num_classes + num_classes
    return conv1 + conv2 + fc1 + fc2 + fc3


def _forward_by_hand(model: SimpleCNN, images: torch.Tensor) -> torch.Tensor:
    conv1, conv2 = model.features[0], model.features[3]
    fc1, fc2 = model.hidden[0], model.hidden[2]
    x = F.max_pool2d(F.relu(F.conv2d(images, conv1.weight, conv1.bias)), 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, conv2.weight, conv2.bias)), 2)
    x = x.reshape(len(images), -1)
    x = F.relu(F.linear(F.relu(F.linear(x, fc1.weight, fc1.bias)), fc2.weight, fc2.bias))
    return F.linear(x, model.classifier.weight, model.classifier.bias)


@pytest.mark.parametrize(
    ("in_channels", "image_size", "side", "total"),
    [(1, 28, 4, 44426), (3, 32, 5, 62006), (1, 16, 1, None), (3, 29, 4, None)],
)
def test_simple_cnn_shapes_parameter_count_and_forward(in_channels, image_size, side, total):
    torch.manual_seed(0)  # test-only: reproducible weights and inputs
    model = SimpleCNN(in_channels, 10, image_size)
    count = sum(parameter.numel() for parameter in model.parameters())
    assert count == _expected_parameters(in_channels, side)
    if total is not None:  # the well-known totals: LeNet-5 on MNIST and on CIFAR-10
        assert count == total
    assert model.hidden[0].in_features == 16 * side * side
    images = torch.randn(3, in_channels, image_size, image_size)
    logits = model(images)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, _forward_by_hand(model, images), rtol=1e-6, atol=1e-6)


def test_simple_cnn_factory_builds_the_same_network():
    torch.manual_seed(1)
    built = simple_cnn(3, 5, 32)
    torch.manual_seed(1)
    direct = SimpleCNN(in_channels=3, num_classes=5, image_size=32)
    assert isinstance(built, SimpleCNN) and built.classifier.out_features == 5
    for (name, a), (_, b) in zip(built.state_dict().items(), direct.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert "in_channels=3, num_classes=5, image_size=32" in repr(built)


def test_the_etf_head_replaces_the_classifier():
    model = SimpleCNN(1, 10, 28)
    head = attach_etf_head(model, 10, seed=0)
    assert model.classifier is head and isinstance(head, SimplexETFClassifier) and head.in_features == 84
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"in_channels": 0}, r"in_channels must be an integer >= 1, got 0"),
        ({"in_channels": 1.0}, r"in_channels must be an integer >= 1, got 1.0"),
        ({"num_classes": 1}, r"num_classes must be an integer >= 2, got 1"),
        ({"num_classes": True}, r"num_classes must be an integer >= 2, got True"),
        ({"image_size": 15}, r"image_size must be an integer >= 16, got 15"),
        ({"image_size": "28"}, r"image_size must be an integer >= 16, got '28'"),
    ],
)
def test_simple_cnn_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        SimpleCNN(**arguments)


@pytest.mark.parametrize(
    "shape",
    [(2, 1, 32, 32), (2, 3, 28, 28), (1, 28, 28), (2, 1, 28, 27)],
)
def test_simple_cnn_rejects_a_wrong_input_shape_naming_the_expected_one(shape):
    model = SimpleCNN(1, 10, 28)
    got = ", ".join(map(str, shape))
    with pytest.raises(ValueError, match=rf"images must have shape \(N, 1, 28, 28\), got \({got}\)"):
        model(torch.zeros(shape))


def test_simple_cnn_is_a_module_with_a_linear_classifier():
    model = SimpleCNN()
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 84
    assert (model.in_channels, model.num_classes, model.image_size) == (1, 10, 28)
