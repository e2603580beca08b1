"""FaissNearestNeighbors against scikit-learn's exact search and a hand-worked example; resample's
neighbors="faiss" against imbalanced-learn's own neighbour search, method by method."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors

from equipoise.core.neighbors import FaissNearestNeighbors
from equipoise.core.resampling import FAISS_RESAMPLERS, available_resamplers, resample

faiss = pytest.importorskip("faiss")


def _points(n=300, d=6, seed=0):
    # Continuous draws: no tied distances, so the neighbour order is unique.
    return np.random.default_rng(seed).normal(size=(n, d))


def test_hand_worked_example_on_a_line():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    search = FaissNearestNeighbors(n_neighbors=2).fit(points)
    distances, indices = search.kneighbors(np.array([[2.9], [6.0]]))
    # 2.9: 3 (0.1) then 1 (1.9); 6: 7 (1) then 3 (3).
    np.testing.assert_array_equal(indices, [[2, 1], [3, 2]])
    np.testing.assert_allclose(distances, [[0.1, 1.9], [1.0, 3.0]], atol=1e-5)
    # X=None: each point's neighbours without itself. 0 -> 1, 3; 1 -> 0, 3; 3 -> 1, 0 (2 vs 3); 7 -> 3, 1.
    np.testing.assert_array_equal(search.kneighbors(return_distance=False), [[1, 2], [0, 2], [1, 0], [2, 1]])


@pytest.mark.parametrize("query", ["other", "fitted", "none"])
def test_equals_sklearn_exact_search(query):
    points = _points()
    queries = {"other": _points(50, seed=1), "fitted": points, "none": None}[query]
    ours = FaissNearestNeighbors(n_neighbors=4).fit(points).kneighbors(queries)
    reference = NearestNeighbors(n_neighbors=4).fit(points).kneighbors(queries)
    np.testing.assert_array_equal(ours[1], reference[1])
    np.testing.assert_allclose(ours[0], reference[0], rtol=1e-5, atol=1e-5)
    assert ours[0].dtype == np.float64 and ours[1].dtype == np.int64


@pytest.mark.parametrize("mode", ["connectivity", "distance"])
def test_kneighbors_graph_equals_sklearn(mode):
    points = _points(80)
    ours = FaissNearestNeighbors(n_neighbors=3).fit(points).kneighbors_graph(points[:20], mode=mode)
    reference = NearestNeighbors(n_neighbors=3).fit(points).kneighbors_graph(points[:20], mode=mode)
    assert ours.shape == reference.shape == (20, 80)
    np.testing.assert_allclose(ours.toarray(), reference.toarray(), atol=1e-5)


def test_self_left_out_when_a_duplicate_ties_with_it():
    # Rows 0 and 1 are equal: for row 0 the search may list 1 before 0; scikit-learn's rule drops
    # the point itself wherever it is, else the first column.
    points = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    indices = FaissNearestNeighbors(n_neighbors=2).fit(points).kneighbors(return_distance=False)
    assert indices[0].tolist() == [1, 2] and indices[1].tolist() == [0, 2]
    assert all(row not in neighbours for row, neighbours in enumerate(indices.tolist()))


def test_clone_and_params_as_imbalanced_learn_uses_them():
    search = FaissNearestNeighbors(n_neighbors=6, n_jobs=2)
    copy = clone(search)
    assert copy.get_params() == {"n_neighbors": 6, "n_jobs": 2}
    copy.set_params(n_jobs=None)
    assert copy.n_jobs is None and search.n_jobs == 2


def test_n_jobs_sets_faiss_threads_for_the_search_only():
    before = faiss.omp_get_max_threads()
    seen = []
    search = FaissNearestNeighbors(n_neighbors=2, n_jobs=1).fit(_points(20))
    index_search = search._index.search

    def spy(queries, k):
        seen.append(faiss.omp_get_max_threads())
        return index_search(queries, k)

    search._index.search = spy
    search.kneighbors(_points(3, seed=2))
    assert seen == [1] and faiss.omp_get_max_threads() == before


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: FaissNearestNeighbors().kneighbors(_points(2)), ValueError, "not fitted"),
        (
            lambda: FaissNearestNeighbors(n_neighbors=0).fit(_points(5)),
            ValueError,
            "n_neighbors must be an integer >= 1, got 0",
        ),
        (lambda: FaissNearestNeighbors(n_neighbors=True).fit(_points(5)), ValueError, "n_neighbors must be an integer"),
        (lambda: FaissNearestNeighbors().fit(np.zeros((0, 3))), ValueError, "X is empty"),
        (lambda: FaissNearestNeighbors().fit(np.zeros(5)), ValueError, r"X must be 2-D .* shape \(5,\)"),
        (lambda: FaissNearestNeighbors().fit(np.array([["a", "b"]])), TypeError, "real numbers, got dtype <U1"),
        (lambda: FaissNearestNeighbors().fit(np.array([[0.0, np.nan]])), ValueError, "row 0, column 1: nan"),
        (lambda: FaissNearestNeighbors().fit(np.array([[1e39, 0.0]])), ValueError, "not finite in float32 .* 1e\\+39"),
        (
            lambda: FaissNearestNeighbors(n_neighbors=2).fit(_points(5)).kneighbors(np.zeros((1, 3))),
            ValueError,
            "X has 3 features, but FaissNearestNeighbors was fitted on 6",
        ),
        (
            lambda: FaissNearestNeighbors(n_neighbors=6).fit(_points(5)).kneighbors(_points(2)),
            ValueError,
            "n_neighbors = 6, n_samples_fit = 5",
        ),
        (
            lambda: FaissNearestNeighbors(n_neighbors=5).fit(_points(5)).kneighbors(),
            ValueError,
            "n_neighbors = 6, n_samples_fit = 5",
        ),
        (
            lambda: FaissNearestNeighbors(n_neighbors=2, n_jobs=0).fit(_points(5)).kneighbors(_points(1)),
            ValueError,
            "n_jobs must be an integer >= 1, got 0",
        ),
        (
            lambda: FaissNearestNeighbors(n_neighbors=2).fit(_points(5)).kneighbors_graph(mode="weights"),
            ValueError,
            "mode must be 'connectivity' or 'distance', got 'weights'",
        ),
    ],
)
def test_bad_input_raises_naming_it(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_missing_faiss_explains_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        FaissNearestNeighbors().fit(_points(5))
    with pytest.raises(ImportError, match="neighbors='sklearn'"):
        resample(*_imbalanced(), "smote", seed=0, neighbors="faiss")


# --------------------------------------------------------------------------------------------
# resample(..., neighbors="faiss")
# --------------------------------------------------------------------------------------------


def _imbalanced(seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0.0, 1.0, (400, 5)), rng.normal(1.0, 1.0, (50, 5))])
    y = np.r_[np.zeros(400, dtype=np.int64), np.ones(50, dtype=np.int64)]
    return X, y


_OPTIONS = {
    "kmeans_smote": {"cluster_balance_threshold": 0.0},
    "near_miss": {"version": 3},
}


@pytest.fixture
def faiss_searches(monkeypatch):
    """The ``n_neighbors`` of every faiss search made while the test runs."""
    sizes = []
    original = FaissNearestNeighbors.kneighbors

    def counting(self, *args, **kwargs):
        sizes.append(self.n_neighbors)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FaissNearestNeighbors, "kneighbors", counting)
    return sizes


@pytest.mark.parametrize("method", sorted(FAISS_RESAMPLERS))
def test_faiss_neighbours_give_imbalanced_learns_result(method, faiss_searches):
    X, y = _imbalanced()
    options = _OPTIONS.get(method, {})
    X_sklearn, y_sklearn = resample(X, y, method, seed=4, **options)
    assert not faiss_searches
    X_faiss, y_faiss = resample(X, y, method, seed=4, neighbors="faiss", **options)
    assert faiss_searches, f"{method} never searched on faiss"
    np.testing.assert_array_equal(y_faiss, y_sklearn)
    np.testing.assert_allclose(X_faiss, X_sklearn, atol=1e-6)


def test_all_knn_runs_every_pass_on_faiss(faiss_searches):
    X, y = _imbalanced(1)
    resample(X, y, "all_knn", neighbors="faiss", n_neighbors=3)
    # Passes with 1, 2, 3 neighbours (+ the point itself), one query per cleaned class each.
    assert sorted(set(faiss_searches)) == [2, 3, 4]


def test_user_neighbour_counts_are_kept():
    X, y = _imbalanced()
    expected = resample(X, y, "borderline_smote", seed=0, k_neighbors=3, m_neighbors=7)
    ours = resample(X, y, "borderline_smote", seed=0, k_neighbors=3, m_neighbors=7, neighbors="faiss")
    np.testing.assert_allclose(ours[0], expected[0], atol=1e-6)


def test_methods_without_neighbour_search_ignore_it_and_the_rest_refuse_it():
    X, y = _imbalanced()
    for method in ("random_over", "random_under", "cluster_centroids"):
        np.testing.assert_array_equal(
            resample(X, y, method, seed=2, neighbors="faiss")[0], resample(X, y, method, seed=2)[0]
        )
    for method in ("tomek_links", "smote_tomek", "one_sided_selection"):
        assert method in available_resamplers()
        with pytest.raises(ValueError, match=f"neighbors='faiss' is not available for '{method}'"):
            resample(X, y, method, neighbors="faiss")
    with pytest.raises(ValueError, match="neighbors must be 'sklearn' or 'faiss', got 'annoy'"):
        resample(X, y, "smote", neighbors="annoy")
    with pytest.raises(TypeError, match="neighbors='faiss' searches dense arrays"):
        resample(scipy.sparse.csr_matrix(X), y, "smote", neighbors="faiss")
    with pytest.raises(TypeError, match=r"builds its own SMOTE and ENN.*\['smote'\]"):
        resample(X, y, "smote_enn", neighbors="faiss", smote=None)


def test_a_class_too_small_is_named_as_with_sklearn():
    X, y = _imbalanced()
    X, y = X[:404], y[:404]
    X = np.vstack([X, X[-1:] + 1.0])
    y = np.r_[y[:400], np.ones(5, dtype=np.int64)]
    with pytest.raises(ValueError, match="class 1 has 5 samples: lower k_neighbors to at most 4"):
        resample(X, y, "smote", seed=0, neighbors="faiss")
