"""Data-level resampling: one front for imbalanced-learn's samplers, and SMOTE in torch.

:func:`resample` builds an imbalanced-learn sampler by name and calls its ``fit_resample``;
nothing is re-implemented. The names and the classes they stand for are in ``RESAMPLERS``
(:func:`available_resamplers`):

- over-sampling: ``random_over``, ``smote`` (Chawla et al. 2002), ``borderline_smote``
  (Han et al. 2005), ``svm_smote`` (Nguyen et al. 2011), ``kmeans_smote`` (Douzas et al. 2018),
  ``adasyn`` (He et al. 2008), ``smotenc`` and ``smoten`` (categorical features);
- under-sampling: ``random_under``, ``near_miss``, ``cluster_centroids``, ``tomek_links``,
  ``edited_nearest_neighbours``, ``repeated_edited_nearest_neighbours``, ``all_knn``,
  ``condensed_nearest_neighbour``, ``one_sided_selection``, ``neighbourhood_cleaning_rule``,
  ``instance_hardness_threshold``;
- combined: ``smote_enn``, ``smote_tomek``.

:func:`smote` is SMOTE written in torch, for features that live on a GPU (embeddings during
decoupled classifier re-training, for instance), where imbalanced-learn would force a copy to
NumPy and back; it follows imbalanced-learn's ``sampling_strategy`` semantics exactly.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
import torch
from imblearn.combine import SMOTEENN, SMOTETomek
from imblearn.over_sampling import (
    ADASYN,
    SMOTE,
    SMOTEN,
    SMOTENC,
    SVMSMOTE,
    BorderlineSMOTE,
    KMeansSMOTE,
    RandomOverSampler,
)
from imblearn.under_sampling import (
    AllKNN,
    ClusterCentroids,
    CondensedNearestNeighbour,
    EditedNearestNeighbours,
    InstanceHardnessThreshold,
    NearMiss,
    NeighbourhoodCleaningRule,
    OneSidedSelection,
    RandomUnderSampler,
    RepeatedEditedNearestNeighbours,
    TomekLinks,
)

from equipoise.core.registry import Registry

__all__ = ["FAISS_RESAMPLERS", "RESAMPLERS", "SAMPLING_STRATEGIES", "available_resamplers", "resample", "smote"]

#: Name -> imbalanced-learn sampler class; ``resample(X, y, name)`` builds and runs one.
RESAMPLERS: Registry = Registry("resampler")

for _name, _cls in {
    "random_over": RandomOverSampler,
    "smote": SMOTE,
    "borderline_smote": BorderlineSMOTE,
    "svm_smote": SVMSMOTE,
    "kmeans_smote": KMeansSMOTE,
    "adasyn": ADASYN,
    "smotenc": SMOTENC,
    "smoten": SMOTEN,
    "random_under": RandomUnderSampler,
    "near_miss": NearMiss,
    "cluster_centroids": ClusterCentroids,
    "tomek_links": TomekLinks,
    "edited_nearest_neighbours": EditedNearestNeighbours,
    "repeated_edited_nearest_neighbours": RepeatedEditedNearestNeighbours,
    "all_knn": AllKNN,
    "condensed_nearest_neighbour": CondensedNearestNeighbour,
    "one_sided_selection": OneSidedSelection,
    "neighbourhood_cleaning_rule": NeighbourhoodCleaningRule,
    "instance_hardness_threshold": InstanceHardnessThreshold,
    "smote_enn": SMOTEENN,
    "smote_tomek": SMOTETomek,
}.items():
    RESAMPLERS.register(_name)(_cls)

#: The string values of ``sampling_strategy`` that :func:`smote` accepts (imbalanced-learn's,
#: less ``"majority"``, which asks an over-sampler to do nothing useful and is refused there too).
SAMPLING_STRATEGIES = ("auto", "not majority", "minority", "not minority", "all")

# Methods whose neighbour count is not called ``k_neighbors`` (for the error message).
_NEIGHBOUR_PARAMETER = {"adasyn": "n_neighbors", "smote_enn": "smote.k_neighbors", "smote_tomek": "smote.k_neighbors"}
_NEIGHBOURS_ERROR = re.compile(r"n_neighbors = (\d+), n_samples_fit = (\d+)")

#: Resamplers whose neighbour searches ``neighbors="faiss"`` runs on faiss: name -> the sampler's
#: neighbour-count arguments, each with imbalanced-learn's default and the extra neighbour it adds
#: for the point itself (``check_neighbors_object``'s ``additional_neighbor``).
FAISS_RESAMPLERS: dict[str, dict[str, tuple[int, int]]] = {
    "smote": {"k_neighbors": (5, 1)},
    "borderline_smote": {"k_neighbors": (5, 1), "m_neighbors": (10, 1)},
    "svm_smote": {"k_neighbors": (5, 1), "m_neighbors": (10, 1)},
    "kmeans_smote": {"k_neighbors": (2, 1)},
    "adasyn": {"n_neighbors": (5, 1)},
    "near_miss": {"n_neighbors": (3, 0), "n_neighbors_ver3": (3, 0)},
    "edited_nearest_neighbours": {"n_neighbors": (3, 1)},
    "repeated_edited_nearest_neighbours": {"n_neighbors": (3, 1)},
    "all_knn": {"n_neighbors": (3, 1)},
    "smote_enn": {},
}
# Resamplers with no neighbour search: neighbors="faiss" changes nothing for them.
_NO_NEIGHBOURS = {"random_over", "random_under", "cluster_centroids", "instance_hardness_threshold"}

# Distances are computed in row blocks of at most this many entries (64 MiB in float32).
_MAX_DISTANCE_ENTRIES = 1 << 24


def available_resamplers() -> list[str]:
    """Names accepted by :func:`resample`, sorted."""
    return RESAMPLERS.names()


# ----------------------------------------------------------------------------------------
# resample: the imbalanced-learn front
# ----------------------------------------------------------------------------------------


def resample(
    X: Any, y: Any, method: str, *, seed: int | None = None, neighbors: str = "sklearn", **kwargs: Any
) -> tuple[Any, Any]:
    """Resample ``(X, y)`` with the imbalanced-learn sampler registered as ``method``.

    Delegates to ``imblearn``: ``RESAMPLERS.get(method)(random_state=seed, **kwargs).fit_resample(X, y)``
    (``random_state`` only where the class takes one; the others are deterministic and ignore
    ``seed``). Each sampler's defaults are imbalanced-learn's, which are the papers' (SMOTE:
    ``k_neighbors=5``, ``sampling_strategy="auto"``, i.e. every class up to the majority count).

    Args:
        X: ``(n_samples, n_features)`` NumPy array, pandas DataFrame, SciPy sparse matrix or
            torch tensor.
        y: ``(n_samples,)`` labels: NumPy array, pandas Series, list or torch tensor.
        method: a name from :func:`available_resamplers`.
        seed: seed of the sampler's random draws; the same seed gives the same result.
        neighbors: ``"sklearn"`` (imbalanced-learn's own ``NearestNeighbors``) or ``"faiss"``:
            every neighbour search of the methods in :data:`FAISS_RESAMPLERS` runs on faiss's
            exact flat index (:class:`equipoise.core.neighbors.FaissNearestNeighbors`, 2-3x
            faster on large tables); each integer neighbour count ``k`` becomes that estimator
            with imbalanced-learn's count (``k`` plus the point itself where it adds one), so
            the result equals ``"sklearn"``'s up to float32 rounding and the order of tied
            distances. ``smote_enn`` gets a SMOTE and an ENN built as its defaults are, with
            faiss inside; methods without neighbour search ignore it; the others refuse it.
        kwargs: the sampler's own arguments (``k_neighbors``, ``sampling_strategy``, ...).

    Returns:
        ``(X_resampled, y_resampled)`` of the kinds given: DataFrames and Series stay pandas
        (imbalanced-learn does that), tensors come back as tensors of the input's dtype and
        device. Tensors make a round trip through NumPy on the CPU and are detached (no
        gradient flows through a resampler); for features on a GPU, :func:`smote` stays there.

    Raises:
        ValueError: unknown ``method``; ``X``/``y`` of different lengths; ``y`` not 1-D; a
            single class; NaN or inf in ``X``; a class too small for the SMOTE family's
            neighbour search (the message names the class, its size, and how far to lower
            ``k_neighbors``); ``neighbors`` not ``"sklearn"``/``"faiss"``, or ``"faiss"`` for a
            method whose search imbalanced-learn builds itself.
        TypeError: a keyword the sampler does not take, or ``random_state`` given instead of ``seed``;
            ``neighbors="faiss"`` with sparse ``X``, or with ``smote_enn``'s own ``smote``/``enn``.
        ImportError: ``neighbors="faiss"`` without the faiss package.
    """
    sampler_class = RESAMPLERS.get(method)
    if neighbors not in ("sklearn", "faiss"):
        raise ValueError(f"neighbors must be 'sklearn' or 'faiss', got {neighbors!r}")
    parameters = inspect.signature(sampler_class).parameters
    if "random_state" in kwargs:
        raise TypeError("pass seed=..., not random_state=...: resample sets the sampler's random_state from seed")
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise TypeError(
            f"{method} ({sampler_class.__name__}) takes no argument {unknown}; it takes {sorted(parameters)}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if "random_state" in parameters:
        kwargs["random_state"] = seed

    X_in, X_tensor = _to_numpy(X)
    y_in, y_tensor = _to_numpy(y)
    labels = _check_resample_inputs(X_in, y_in)
    if neighbors == "faiss":
        if scipy.sparse.issparse(X_in) and method not in _NO_NEIGHBOURS:
            raise TypeError(
                "neighbors='faiss' searches dense arrays: pass X dense, or neighbors='sklearn' for sparse X"
            )
        sampler_class, kwargs = _with_faiss_neighbours(method, sampler_class, kwargs)
    try:
        X_out, y_out = sampler_class(**kwargs).fit_resample(X_in, y_in)
    except ValueError as error:
        raise _explain_neighbours_error(error, method, labels) from error

    if X_tensor is not None:
        X_out = _back_to_tensor(X_out, X_tensor)
    if y_tensor is not None:
        y_out = _back_to_tensor(y_out, y_tensor)
    return X_out, y_out


def _with_faiss_neighbours(method: str, sampler_class: type, kwargs: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The sampler class and arguments that run ``method``'s neighbour searches on faiss."""
    from equipoise.core.neighbors import _import_faiss

    if method in _NO_NEIGHBOURS:
        return sampler_class, kwargs
    if method not in FAISS_RESAMPLERS:
        raise ValueError(
            f"neighbors='faiss' is not available for {method!r} (imbalanced-learn builds its neighbour search "
            f"itself); it is for {sorted(FAISS_RESAMPLERS)}"
        )
    _import_faiss()
    if method == "smote_enn":
        given = sorted({"smote", "enn"} & set(kwargs))
        if given:
            raise TypeError(
                f"smote_enn with neighbors='faiss' builds its own SMOTE and ENN; pass neighbors='sklearn' with your "
                f"own {given}, or put FaissNearestNeighbors inside them yourself"
            )
        # SMOTEENN's own defaults (imbalanced-learn's _validate_estimator), with faiss searches inside.
        smote = {
            "sampling_strategy": kwargs.get("sampling_strategy", "auto"),
            "random_state": kwargs.get("random_state"),
        }
        enn = {"sampling_strategy": "all", "n_jobs": kwargs.get("n_jobs")}
        smote = SMOTE(**_faiss_counts("smote", smote, kwargs.get("n_jobs")))
        enn = EditedNearestNeighbours(**_faiss_counts("edited_nearest_neighbours", enn, kwargs.get("n_jobs")))
        return sampler_class, {**kwargs, "smote": smote, "enn": enn}
    kwargs = _faiss_counts(method, kwargs, kwargs.get("n_jobs"))
    return (_FaissAllKNN if method == "all_knn" else sampler_class), kwargs


def _faiss_counts(method: str, kwargs: dict[str, Any], n_jobs: int | None) -> dict[str, Any]:
    """``kwargs`` with each integer neighbour count of ``method`` (:data:`FAISS_RESAMPLERS`, the
    default where absent) replaced by a faiss search of imbalanced-learn's size for it."""
    from equipoise.core.neighbors import FaissNearestNeighbors

    kwargs = dict(kwargs)
    for name, (default, extra) in FAISS_RESAMPLERS[method].items():
        count = kwargs.get(name, default)
        if isinstance(count, (int, np.integer)) and not isinstance(count, bool):
            kwargs[name] = FaissNearestNeighbors(int(count) + extra, n_jobs=n_jobs)
    return kwargs


class _FaissEditedNearestNeighbours(EditedNearestNeighbours):
    """ENN whose integer ``n_neighbors`` builds a faiss search (AllKNN sets an integer each pass)."""

    def _validate_estimator(self) -> None:
        from equipoise.core.neighbors import FaissNearestNeighbors

        if isinstance(self.n_neighbors, (int, np.integer)):
            self.nn_ = FaissNearestNeighbors(int(self.n_neighbors) + 1, n_jobs=self.n_jobs)
        else:
            super()._validate_estimator()


class _FaissAllKNN(AllKNN):
    """AllKNN whose passes (ENN with 1, 2, ... neighbours) search on faiss.

    imbalanced-learn's AllKNN gives its ENN an integer neighbour count on each pass, so an
    estimator passed as ``n_neighbors`` sets only the number of passes; this subclass swaps the
    ENN for one that builds :class:`~equipoise.core.neighbors.FaissNearestNeighbors` from it.
    """

    def _validate_estimator(self) -> None:
        super()._validate_estimator()
        self.enn_ = _FaissEditedNearestNeighbours(**self.enn_.get_params(deep=False))


def _to_numpy(data: Any) -> tuple[Any, torch.Tensor | None]:
    """Tensors -> NumPy on the CPU (bfloat16, which NumPy lacks, through float32); others as given."""
    if not isinstance(data, torch.Tensor):
        return data, None
    tensor = data.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.to(torch.float32)
    return tensor.cpu().numpy(), data


def _back_to_tensor(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=like.dtype)


def _check_resample_inputs(X: Any, y: Any) -> np.ndarray:
    """Shapes, finiteness and the number of classes; returns ``y`` as a 1-D array."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per sample), got shape {labels.shape}")
    shape = getattr(X, "shape", None)
    if shape is None:
        X = np.asarray(X)
        shape = X.shape
    if len(shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(shape)}")
    if shape[0] != labels.shape[0]:
        raise ValueError(f"X and y must have the same length, got {shape[0]} rows in X and {labels.shape[0]} labels")
    if shape[0] == 0:
        raise ValueError("X is empty: nothing to resample")
    classes = pd.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"y must hold at least 2 classes to resample between, got only {classes.tolist()}")
    _check_finite_features(X)
    return labels


def _check_finite_features(X: Any) -> None:
    if scipy.sparse.issparse(X):
        values = X.data
        if np.issubdtype(values.dtype, np.number) and not np.isfinite(values).all():
            raise ValueError("X contains a non-finite value (NaN or inf) among its stored entries")
        return
    if isinstance(X, pd.DataFrame):
        numeric = X.select_dtypes(include="number").to_numpy(dtype=np.float64)
        missing = pd.isna(X).to_numpy()
        if missing.any() or not np.isfinite(numeric).all():
            bad = missing | _nonfinite_in_frame(X)
            row, column = np.argwhere(bad)[0]
            raise ValueError(f"X contains a missing or non-finite value at row {row}, column {X.columns[column]!r}")
        return
    array = np.asarray(X)
    bad = ~np.isfinite(array) if np.issubdtype(array.dtype, np.number) else pd.isna(array)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(f"X contains a non-finite value {array[row, column]} at row {row}, column {column}")


def _nonfinite_in_frame(X: pd.DataFrame) -> np.ndarray:
    bad = np.zeros(X.shape, dtype=bool)
    for position, column in enumerate(X.columns):
        if pd.api.types.is_numeric_dtype(X[column]):
            bad[:, position] = ~np.isfinite(X[column].to_numpy(dtype=np.float64))
    return bad


def _explain_neighbours_error(error: ValueError, method: str, labels: np.ndarray) -> ValueError:
    """Turn scikit-learn's 'Expected n_neighbors <= n_samples_fit' into a message naming the class."""
    match = _NEIGHBOURS_ERROR.search(str(error))
    if match is None:
        return error
    needed = int(match.group(1))
    classes, counts = np.unique(labels, return_counts=True)
    small = [(c, int(n)) for c, n in zip(classes.tolist(), counts.tolist()) if n < needed]
    parameter = _NEIGHBOUR_PARAMETER.get(method, "k_neighbors")
    if not small:
        return ValueError(f"{method}: {error}; lower {parameter}")
    described = ", ".join(f"class {c!r} has {n} samples" for c, n in small)
    fewest = min(n for _, n in small)
    return ValueError(
        f"{method} needs {needed} samples ({parameter} + 1, with {parameter} = {needed - 1}) in each class it "
        f"over-samples, but {described}: lower {parameter} to at most {fewest - 1}, or drop or merge the class"
    )


# ----------------------------------------------------------------------------------------
# smote: SMOTE in torch
# ----------------------------------------------------------------------------------------


def smote(
    features: torch.Tensor,
    labels: torch.Tensor,
    k_neighbors: int = 5,
    sampling_strategy: str | float | Mapping[int, int] = "auto",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SMOTE on the features' device (Chawla, Bowyer, Hall, Kegelmeyer. "SMOTE: Synthetic
    Minority Over-sampling Technique", JAIR 16, 2002).

    For each class ``c`` to over-sample by ``n_c`` samples, with ``x_1 .. x_m`` its samples:
    find each ``x_i``'s ``k_neighbors`` nearest neighbours within class ``c`` (Euclidean),
    then ``n_c`` times draw a base point ``x_i`` uniformly, one of its ``k`` neighbours
    ``x_nn`` uniformly and a gap ``u ~ U[0, 1)``, and emit::

        x_new = x_i + u * (x_nn - x_i)      (label c)

    Written in torch because imbalanced-learn's ``SMOTE`` (which :func:`resample` ``"smote"``
    calls) works on NumPy arrays: for features on a GPU it would copy them to the host and
    back. The result equals imbalanced-learn's in distribution, not draw for draw.

    ``sampling_strategy`` follows imbalanced-learn exactly:

    - ``"auto"`` = ``"not majority"``: every class but the majority up to the majority count;
    - ``"minority"``: the smallest class only; ``"not minority"``: all but the smallest;
      ``"all"``: every class (ties go to the smallest label, as in imbalanced-learn);
    - a float ``r`` in ``(0, 1]``, binary problems only: the minority grows to
      ``int(r * n_majority)`` samples (it must grow);
    - a dict ``{class: target_count}``, each target at least the class's current count.

    Paper default: ``k_neighbors = 5``. Deliberate difference from the paper: it creates
    ``N/100`` samples from *every* minority sample in turn; here (as in imbalanced-learn) base
    points are drawn at random, which allows any target count. Neighbours exclude the point
    itself; distances are computed exactly (``torch.cdist`` without the matrix-product
    shortcut, whose rounding can reorder near neighbours) in blocks of rows to bound memory,
    in at least float32.

    Args:
        features: ``(N, D)`` floating features, on any device.
        labels: ``(N,)`` integer labels (any integer values).
        k_neighbors: neighbours per point; each over-sampled class needs more than this many samples.
        sampling_strategy: see above.
        generator: source of the random draws; draws are made on its device (CPU for
            ``torch.Generator()``) and moved to the features'. ``None``: torch's default generator.

    Returns:
        ``(features_resampled, labels_resampled)``: the original samples first, then the
        synthetic ones class by class in increasing label order (imbalanced-learn's layout),
        in the features' dtype and device.
    """
    _check_smote_inputs(features, labels, k_neighbors)
    classes, counts = torch.unique(labels, return_counts=True)
    class_counts = dict(zip(classes.tolist(), counts.tolist()))
    to_generate = _samples_to_generate(sampling_strategy, class_counts)
    for label, amount in to_generate.items():
        if amount > 0 and class_counts[label] <= k_neighbors:
            raise ValueError(
                f"class {label} has {class_counts[label]} samples, but SMOTE with k_neighbors={k_neighbors} needs "
                f"at least k_neighbors + 1 = {k_neighbors + 1} to over-sample it: lower k_neighbors to at most "
                f"{class_counts[label] - 1}, or leave class {label} out of sampling_strategy"
            )

    draw_device = generator.device if generator is not None else features.device
    new_features, new_labels = [features], [labels]
    for label, amount in to_generate.items():
        if amount == 0:
            continue
        members = features[labels == label]
        neighbours = _nearest_neighbours(members, k_neighbors)
        base = torch.randint(len(members), (amount,), generator=generator, device=draw_device).to(features.device)
        slot = torch.randint(k_neighbors, (amount,), generator=generator, device=draw_device).to(features.device)
        gap = torch.rand(amount, 1, generator=generator, device=draw_device, dtype=torch.float64)
        gap = gap.to(device=features.device, dtype=features.dtype)
        start = members[base]
        new_features.append(start + gap * (members[neighbours[base, slot]] - start))
        new_labels.append(labels.new_full((amount,), label))
    return torch.cat(new_features), torch.cat(new_labels)


def _check_smote_inputs(features: torch.Tensor, labels: torch.Tensor, k_neighbors: int) -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor, got dtype {features.dtype}")
    if features.dim() != 2:
        raise ValueError(f"features must have shape (N, D), got shape {tuple(features.shape)}")
    if features.numel() == 0:
        raise ValueError(f"features is empty (shape {tuple(features.shape)}): nothing to over-sample")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer classes, got dtype {labels.dtype}")
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"labels must have shape (N,) = ({features.shape[0]},) to match features of shape "
            f"{tuple(features.shape)}, got shape {tuple(labels.shape)}"
        )
    if labels.device != features.device:
        raise ValueError(f"labels are on {labels.device} but features on {features.device}; put them on one device")
    if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, int) or k_neighbors < 1:
        raise ValueError(f"k_neighbors must be a positive integer, got {k_neighbors!r}")
    finite = torch.isfinite(features)
    if not bool(finite.all()):
        index = tuple(int(i) for i in torch.nonzero(~finite)[0])
        raise ValueError(f"features contains a non-finite value {features[index].item()} at index {index}")


def _samples_to_generate(strategy: Any, class_counts: dict[int, int]) -> dict[int, int]:
    """imbalanced-learn's ``check_sampling_strategy`` for over-sampling: class -> samples to add, by label."""
    if len(class_counts) < 2:
        raise ValueError(f"labels must hold at least 2 classes to over-sample, got only {list(class_counts)}")
    # dicts are in increasing label order, and max/min return the first of tied keys, as in imbalanced-learn
    majority = max(class_counts, key=class_counts.get)
    minority = min(class_counts, key=class_counts.get)
    majority_count = class_counts[majority]
    if isinstance(strategy, str):
        if strategy in ("auto", "not majority"):
            targeted = [c for c in class_counts if c != majority]
        elif strategy == "minority":
            targeted = [minority]
        elif strategy == "not minority":
            targeted = [c for c in class_counts if c != minority]
        elif strategy == "all":
            targeted = list(class_counts)
        else:
            raise ValueError(
                f"sampling_strategy must be one of {SAMPLING_STRATEGIES}, a float or a dict, got {strategy!r}"
            )
        return {c: majority_count - class_counts[c] for c in targeted}
    if isinstance(strategy, Mapping):
        result = {}
        for label, target in sorted(strategy.items()):
            if label not in class_counts:
                raise ValueError(
                    f"sampling_strategy names class {label!r}, which is not in labels {list(class_counts)}"
                )
            if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
                raise ValueError(f"sampling_strategy[{label!r}] must be an integer count, got {target!r}")
            if target < class_counts[label]:
                raise ValueError(
                    f"sampling_strategy[{label!r}] = {target} is below class {label}'s {class_counts[label]} samples; "
                    "an over-sampler can only add samples"
                )
            result[label] = int(target) - class_counts[label]
        return result
    if isinstance(strategy, (float, int)) and not isinstance(strategy, bool):
        if not (math.isfinite(strategy) and 0 < strategy <= 1):
            raise ValueError(f"sampling_strategy as a float must lie in (0, 1], got {strategy!r}")
        if len(class_counts) != 2:
            raise ValueError(
                f"sampling_strategy can be a float only for 2 classes, got {len(class_counts)}; use a dict instead"
            )
        result = {c: int(majority_count * strategy - n) for c, n in class_counts.items() if c != majority}
        if any(amount <= 0 for amount in result.values()):
            raise ValueError(
                f"sampling_strategy={strategy} asks for {int(majority_count * strategy)} minority samples, no more "
                f"than the {class_counts[minority]} there are: raise the ratio"
            )
        return result
    raise TypeError(f"sampling_strategy must be a string, a float or a dict, got {type(strategy).__name__}")


def _nearest_neighbours(points: torch.Tensor, k_neighbors: int) -> torch.Tensor:
    """``(M, k)`` indices of each point's ``k`` nearest other points, nearest first."""
    work = points.to(torch.promote_types(points.dtype, torch.float32))
    rows_per_block = max(1, _MAX_DISTANCE_ENTRIES // len(work))
    neighbours = []
    for start in range(0, len(work), rows_per_block):
        block = work[start : start + rows_per_block]
        distances = torch.cdist(block, work, compute_mode="donot_use_mm_for_euclid_dist")
        rows = torch.arange(len(block), device=work.device)
        distances[rows, rows + start] = math.inf  # a point is not its own neighbour
        neighbours.append(distances.topk(k_neighbors, dim=1, largest=False).indices)
    return torch.cat(neighbours)
