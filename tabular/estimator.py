"""A scikit-learn classifier around :func:`equipoise.tabular.train.fit`: the paper's networks and
every Table 2 method of MetaBalance (Bansal et al. 2021) behind ``fit`` / ``predict_proba``.

>>> from imblearn.pipeline import make_pipeline
>>> from sklearn.model_selection import cross_val_score
>>> from sklearn.preprocessing import StandardScaler
>>> from equipoise.tabular.estimator import ImbalancedMLPClassifier
>>> model = make_pipeline(StandardScaler(), ImbalancedMLPClassifier(method="metabalance", random_state=0))
>>> cross_val_score(model, X, y, scoring="roc_auc", cv=5)

It follows scikit-learn's estimator contract (``check_estimator`` passes): constructor
arguments are stored as given and checked in :meth:`fit`; fitted state ends in ``_``
(``classes_``, ``n_features_in_``, ``model_``, ``seed_``, ``training_record_``); two classes of
any label type, the second of ``classes_`` (sorted) being the positive, rare class that the
methods re-balance towards. It is binary only, as the paper's tasks are.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from equipoise.tabular import train

__all__ = ["ImbalancedMLPClassifier"]


class ImbalancedMLPClassifier(ClassifierMixin, BaseEstimator):
    """Feed-forward network trained for a rare positive class with one of the MetaBalance paper's methods.

    Parameters:
        network: ``"loan"`` (one hidden layer of 25 ReLU units) or ``"fraud"`` (16, 24, 20, 24
            with dropout 0.5) from ``equipoise.tabular.models``, or a tuple of hidden-layer
            widths (a ReLU MLP; the loan task's default learning rate and weight decay).
        method: a name from ``equipoise.tabular.train.available_methods()``: ``"naive"``, the
            resampling methods (``"smote"`` ...), ``"class_weighted"``, ``"focal"``,
            ``"meta_weight_net"``, ``"l2rw"``, ``"metabalance"``, ``"ms_metabalance"``.
        epochs: passes over the training data. Paper: 100.
        batch_size: training batch size. Paper: 24.
        lr: SGD learning rate; ``None``: the paper's rate for the network's task and the method.
        weight_decay: SGD weight decay; ``None``: the paper's for the task (5e-4 loan, 5e-2 fraud).
        momentum: Nesterov momentum. Paper: 0.9.
        random_state: ``int`` seed, ``RandomState`` or ``None`` (a seed drawn from NumPy's global
            generator, as scikit-learn does); the seed used is stored in ``seed_``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. Default ``"cpu"``: the
            networks are tiny, and on batches of 24 the CPU is faster than a GPU.
        progress: show a progress bar while fitting.
        validation_fraction: fraction of the data ``fit`` receives held out (stratified, from
            ``random_state``) as the validation split of methods that choose on validation data
            (``ms_metabalance``); the others train on all of it. Never the test split.
        method_options: dict of the method's own options (``{"k_neighbors": 3}`` for SMOTE,
            ``{"query": "balanced"}`` for MetaBalance ...), see ``equipoise.tabular.train``.

    Attributes:
        classes_: the two labels, sorted; ``classes_[1]`` is the positive class.
        n_features_in_: number of features seen in ``fit``.
        model_: the trained ``torch.nn.Module`` (eval mode).
        seed_: the seed the run used.
        training_record_: ``model_.training_record`` (hyper-parameters, losses, choices).
    """

    def __init__(
        self,
        network: str | tuple[int, ...] = "loan",
        method: str = "naive",
        *,
        epochs: int = 100,
        batch_size: int = 24,
        lr: float | None = None,
        weight_decay: float | None = None,
        momentum: float = 0.9,
        random_state: int | np.random.RandomState | None = None,
        device: str = "cpu",
        progress: bool = False,
        validation_fraction: float = 0.2,
        method_options: dict[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.method = method
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.random_state = random_state
        self.device = device
        self.progress = progress
        self.validation_fraction = validation_fraction
        self.method_options = method_options

    def fit(self, X: Any, y: Any) -> ImbalancedMLPClassifier:
        """Train on ``X`` ``(n_samples, n_features)`` and the two-class labels ``y`` ``(n_samples,)``."""
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if classes.size == 1:
            raise ValueError(f"y holds one class ({classes[0]!r}): both classes are needed to train")
        if classes.size > 2:
            raise ValueError(
                f"Only binary classification is supported (the paper's tasks are binary): y holds {classes.size} "
                f"classes {classes.tolist()[:10]}"
            )
        options = dict(self.method_options or {})
        seed = self._seed()
        X_fit, y_fit, validation = X, encoded, {}
        if self.method == "ms_metabalance":
            fraction = self.validation_fraction
            if not (isinstance(fraction, numbers.Real) and 0 < fraction < 1):
                raise ValueError(f"validation_fraction must lie in (0, 1), got {fraction!r}")
            X_fit, X_val, y_fit, y_val = train_test_split(
                X, encoded, test_size=fraction, stratify=encoded, random_state=seed
            )
            validation = {"X_val": X_val, "y_val": y_val}
        network = self.network if isinstance(self.network, str) else tuple(self.network)
        self.model_ = train.fit(
            self.method,
            X_fit,
            y_fit,
            network=network,
            seed=seed,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            device=self.device,
            progress=self.progress,
            **validation,
            **options,
        )
        self.classes_ = classes
        self.seed_ = seed
        self.training_record_ = self.model_.training_record
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """``(n_samples,)`` logits: positive values favour ``classes_[1]``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return train.predict_logits(self.model_, X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n_samples, 2)`` probabilities of ``classes_[0]`` and ``classes_[1]``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        positive = train.predict_proba(self.model_, X)
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X: Any) -> np.ndarray:
        """The label of the more probable class (logit > 0 means ``classes_[1]``)."""
        check_is_fitted(self)
        return self.classes_[(self.decision_function(X) > 0).astype(np.int64)]

    def __sklearn_tags__(self):  # noqa: ANN204 (sklearn's Tags type)
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # the paper's tasks are binary; fit says so for 3+ classes
        return tags

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            if self.random_state < 0:
                raise ValueError(f"random_state must be >= 0, got {self.random_state}")
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
