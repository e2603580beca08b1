"""equipoise.vision: long-tailed image classification on timm backbones.

Datasets (``equipoise.vision.data``): CIFAR-10/100-LT, MNIST-LT, ImageNet-LT, iNaturalist 2018,
Places-LT and the MetaBalance CIFAR-10 settings, built by name with ``build_dataset``; test
splits stay balanced. Models (``equipoise.vision.models``): the CIFAR ResNets of the LDAM paper
registered with timm (``timm.create_model("resnet32_cifar")``), and any timm model with a
linear or cosine (``NormedLinear``) head. Training, ``equipoise.vision.train.train`` (not
re-exported, so that ``equipoise.vision.train`` stays the module), runs a recipe
(``equipoise.vision.config``, YAML files in ``recipes/``); ``equipoise.vision.decouple``
re-balances the classifier of a trained checkpoint; ``equipoise.vision.evaluate`` (imported on
its own: it loads torchmetrics) writes the report. Importing this package imports timm;
importing ``equipoise.core`` does not.
"""

from equipoise.vision.config import TrainConfig, available_recipes, load_train_config
from equipoise.vision.data import (
    DATASETS,
    LongTailedDataset,
    SplitFileDataset,
    build_dataset,
    describe,
    extract_once,
    load_cifar,
    load_mnist,
    make_long_tailed,
    metabalance_counts,
    plot_class_counts,
    read_idx,
)
from equipoise.vision.models import (
    CIFAR_RESNET_DEPTHS,
    CLASSIFIER_KINDS,
    CifarResNet,
    create_model,
    extract_features,
    feature_dim,
    replace_classifier,
)

__all__ = [
    "CIFAR_RESNET_DEPTHS",
    "CLASSIFIER_KINDS",
    "DATASETS",
    "CifarResNet",
    "LongTailedDataset",
    "SplitFileDataset",
    "TrainConfig",
    "available_recipes",
    "build_dataset",
    "create_model",
    "describe",
    "extract_features",
    "extract_once",
    "feature_dim",
    "load_cifar",
    "load_mnist",
    "load_train_config",
    "make_long_tailed",
    "metabalance_counts",
    "plot_class_counts",
    "read_idx",
    "replace_classifier",
]
