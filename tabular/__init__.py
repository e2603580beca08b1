"""equipoise.tabular: rare-event tabular prediction (credit-card fraud, loan default).

The MetaBalance paper's tasks (Bansal et al. 2021): data loaders with a stratified split and
scaling fitted on the training rows (``equipoise.tabular.data``), the paper's feed-forward
networks (``equipoise.tabular.models``), every method of its Table 2 behind one ``fit``
(``equipoise.tabular.train``), a scikit-learn estimator (``equipoise.tabular.estimator``) and
checkpoints with a test-split report (``equipoise.tabular.evaluate``).
"""

from equipoise.tabular.data import DATASETS, TabularData, TabularSplit, load_dataset, prepare
from equipoise.tabular.estimator import ImbalancedMLPClassifier
from equipoise.tabular.evaluate import evaluate, load_checkpoint, model_from_checkpoint, save_checkpoint
from equipoise.tabular.models import NETWORKS, FeedForward, build_network
from equipoise.tabular.train import METHODS, available_methods, fit, predict_proba

__all__ = [
    "DATASETS",
    "METHODS",
    "NETWORKS",
    "FeedForward",
    "ImbalancedMLPClassifier",
    "TabularData",
    "TabularSplit",
    "available_methods",
    "build_network",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_dataset",
    "model_from_checkpoint",
    "predict_proba",
    "prepare",
    "save_checkpoint",
]
