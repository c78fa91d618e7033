"""The scikit-learn layer: estimator checks, known ranks, a real pipeline on digits."""

import numpy as np
import pytest
import sklearn.datasets
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import matrank
from matrank.sklearn import RankEstimator, RankSVD


@parametrize_with_checks([RankEstimator(), RankSVD(random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def low_rank_data(samples=300, rank=7, features=40, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((samples, rank)) @ rng.standard_normal((rank, features)) + 3.0
    )


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_covariance_rank_matches_dense_truth(method):
    X = low_rank_data()
    centred = X - X.mean(axis=0)
    truth = np.linalg.matrix_rank(centred.T @ centred, hermitian=True)
    estimator = RankEstimator(method=method, random_state=0).fit(X)
    assert estimator.rank_ == truth == 7
    assert estimator.rank_stderr_ is None and estimator.n_features_in_ == 40
    assert estimator.result_.method == method


def test_gram_counts_the_mean_direction_and_precomputed_takes_a_matrix():
    X = low_rank_data()  # the +3 offset adds a direction the covariance centres away
    assert RankEstimator(kind="gram").fit(X).rank_ == 8
    gram = X.T @ X
    assert RankEstimator(kind="precomputed").fit(gram).rank_ == 8
    with pytest.raises(
        matrank.MatrankValueError, match="a square matrix for kind='precomputed'"
    ):
        RankEstimator(kind="precomputed").fit(X)
    with pytest.raises(matrank.MatrankValueError, match="`kind` must be one of"):
        RankEstimator(kind="cov").fit(X)


def test_many_features_go_through_an_operator():
    X = low_rank_data(samples=60, rank=5, features=5000)  # auto: lanczos above 4096
    estimator = RankEstimator(random_state=0).fit(X)
    assert estimator.rank_ == 5 and estimator.result_.method == "lanczos"
    assert estimator.result_.cost["matvecs"] > 0


def test_ranksvd_keeps_the_rank_and_round_trips():
    X = low_rank_data()
    svd = RankSVD(random_state=0).fit(X)
    assert svd.n_components_ == 7
    scores = svd.transform(X)
    assert scores.shape == (300, 7)
    np.testing.assert_allclose(svd.inverse_transform(scores), X, atol=1e-8)
    assert list(svd.get_feature_names_out()) == [f"ranksvd{i}" for i in range(7)]


def test_ranksvd_in_a_digits_pipeline_and_grid_search():
    X, y = load_digits(return_X_y=True)
    pipeline = make_pipeline(
        StandardScaler(), RankSVD(random_state=0), LogisticRegression(max_iter=2000)
    )
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.mean() > 0.9
    fitted = pipeline.fit(X, y).named_steps["ranksvd"]
    # the scaled digits have 3 constant pixels: covariance rank 61 of 64
    assert fitted.n_components_ == np.linalg.matrix_rank(
        np.cov(StandardScaler().fit_transform(X).T), hermitian=True
    )
    # threshold=1.0 reaches the estimator: Kaiser's rule on the correlation matrix
    scaled = StandardScaler().fit_transform(X)
    kaiser = int((np.linalg.eigvalsh(np.cov(scaled.T)) > 1.0).sum())
    assert RankSVD(threshold=1.0).fit(scaled).n_components_ == kaiser < 61
    search = GridSearchCV(pipeline, {"ranksvd__threshold": [None, 1.0]}, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 2
    best = search.best_estimator_.named_steps["ranksvd"]
    assert best.threshold == search.best_params_["ranksvd__threshold"]
    # "floor" with every method that documents it (polynomial used to fail inside the
    # search): numpy's count
    methods = {"ranksvd__method": ["exact", "lanczos", "polynomial"]}
    search = GridSearchCV(
        pipeline.set_params(ranksvd__threshold="floor"), methods, cv=2, error_score="raise"
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 3
    for method in methods["ranksvd__method"]:
        svd = RankSVD(method=method, threshold="floor", random_state=0).fit(scaled)
        assert svd.n_components_ == 61, method


def _expected_status(eigenvalues, floor):
    """The plateau verdict from first principles: the log-gaps of |λ| above the floor."""
    above = np.sort(np.abs(eigenvalues))[::-1]
    above = above[above > floor]
    widths = np.sort(np.log10(np.append(above, floor)[:-1] / np.append(above, floor)[1:]))
    widest, second = widths[-1], (widths[-2] if widths.size > 1 else 0.0)
    if widest < 1:
        return "NO_PLATEAU"
    return "AMBIGUOUS_PLATEAU" if second >= max(1.0, 0.5 * widest) else "CONVERGED"


@pytest.mark.parametrize(
    "load", ["iris", "diabetes", "digits", "linnerud", "wine", "breast_cancer"]
)
@pytest.mark.parametrize("standardise", [False, True])
def test_bundled_datasets_count_right_and_never_converge_on_a_contested_plateau(
    load, standardise
):
    X = getattr(sklearn.datasets, f"load_{load}")().data.astype(np.float64)
    if standardise:
        X = StandardScaler().fit_transform(X)
    estimator = RankEstimator().fit(X)
    result = estimator.result_
    covariance = np.cov(X, rowvar=False)
    eigenvalues = np.linalg.eigvalsh(covariance)
    # numpy's count at the reported threshold (no eigenvalue sits within 1e-6 of it)
    assert np.abs(np.abs(eigenvalues) - result.threshold).min() > 1e-6 * result.threshold
    assert result.rank == np.sum(np.abs(eigenvalues) > result.threshold)
    floor = result.diagnostics.noise_floor
    assert result.status.name == _expected_status(eigenvalues, floor)
    if result.status.name == "AMBIGUOUS_PLATEAU":  # both candidates named, both right
        plateau = result.diagnostics.plateau
        other = plateau["runner_up_threshold"]
        assert plateau["runner_up_count"] == np.sum(np.abs(eigenvalues) > other)
        assert "candidates:" in str(result)


def test_raw_breast_cancer_is_full_rank_and_says_a_second_plateau_competes():
    result = RankEstimator().fit(sklearn.datasets.load_breast_cancer().data).result_
    assert (
        result.rank
        == 30
        == np.linalg.matrix_rank(
            np.cov(sklearn.datasets.load_breast_cancer().data, rowvar=False)
        )
    )
    assert result.status is matrank.Status.AMBIGUOUS_PLATEAU
    assert result.diagnostics.plateau["runner_up_count"] == 1
