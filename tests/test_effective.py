"""Effective ranks against their closed forms: exact on every small catalogue case, the
stochastic route on operators within 3 of its standard errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

import matrank
from matrank.testing import catalogue, rotated_spectrum


def _closed_forms(matrix):
    dense = matrix.toarray() if scipy.sparse.issparse(matrix) else np.asarray(matrix)
    eigenvalues = np.linalg.eigvalsh(dense.astype(np.float64))
    magnitudes = np.abs(eigenvalues)
    p = magnitudes[magnitudes > 0] / magnitudes.sum()
    return {
        "stable_rank": np.sum(eigenvalues**2) / magnitudes.max() ** 2,
        "participation_ratio": np.sum(eigenvalues) ** 2 / np.sum(eigenvalues**2),
        "entropy_rank": np.exp(-np.sum(p * np.log(p))),
    }, eigenvalues


SMALL = [case for case in catalogue() if case.n <= 1000 and case.rank > 0]


@pytest.mark.parametrize("case", SMALL, ids=[case.name for case in SMALL])
def test_the_exact_route_is_the_closed_form_on_the_catalogue(case):
    matrix = case.make()
    if isinstance(matrix, scipy.sparse.linalg.LinearOperator):
        matrix = matrix @ np.eye(case.n)
    expected, eigenvalues = _closed_forms(matrix)
    found = matrank.effective_ranks(matrix)
    assert found.route == "exact"
    for name, value in expected.items():
        assert getattr(found, name) == pytest.approx(value, rel=1e-10), name
        assert getattr(found, name + "_stderr") == 0.0
    assert found.count == case.rank
    negative = int(((eigenvalues < 0) & (np.abs(eigenvalues) > found.threshold)).sum())
    assert (found.n_positive, found.n_negative) == (case.rank - negative, negative)
    if "indefinite" in case.tags:
        assert found.n_negative > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_stochastic_route_is_within_three_stderr(seed):
    # a continuous spectrum over three decades plus an exact null space, seen only
    # through products; dense_max=0 forces the stochastic route
    matrix = rotated_spectrum(1500, 200, cond=1e3, seed=4)
    expected, _ = _closed_forms(matrix)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    found = matrank.effective_ranks(operator, seed=seed, dense_max=0)
    assert found.route == "stochastic" and found.cost["matvecs"] > 0
    for name, value in expected.items():
        stderr = getattr(found, name + "_stderr")
        assert 0 < stderr < 0.1 * value, name
        assert abs(getattr(found, name) - value) <= 3 * stderr, (name, value)
    assert found.count == 200 and found.n_negative == 0


def test_bad_options_are_refused():
    with pytest.raises(matrank.MatrankValueError, match="threshold"):
        matrank.effective_ranks(np.eye(3), threshold="floor")
    with pytest.raises(matrank.MatrankValueError, match="products"):
        matrank.effective_ranks(np.eye(3), products=2)
    zero = matrank.effective_ranks(np.zeros((4, 4)))
    assert (zero.stable_rank, zero.entropy_rank, zero.count) == (0.0, 0.0, 0.0)


def test_a_dense_count_is_reused_without_a_product_more():
    # a Lanczos count that went dense (a rank of most of n) already holds every
    # eigenvalue: the measures are exact and cost nothing; the count is the result's
    matrix = rotated_spectrum(600, 500, cond=1e2, seed=1)
    expected, eigenvalues = _closed_forms(matrix)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    result = matrank.LanczosRank(pilot_from=1).estimate(operator, seed=0)
    assert result.diagnostics["path"].startswith("dense")
    found = matrank.effective_ranks(operator, result=result, dense_max=0)
    assert found.route == "exact" and found.cost["matvecs"] == 0
    for name, value in expected.items():
        assert getattr(found, name) == pytest.approx(value, rel=1e-8), name
    assert found.count == result.rank == 500 and found.threshold == result.threshold
    same = matrank.EffectiveRanks.from_eigenvalues(eigenvalues, result.threshold)
    assert same.stable_rank == pytest.approx(found.stable_rank, rel=1e-8)
    assert (same.count, same.n_negative) == (500, 0)


def test_a_stochastic_count_is_reused_and_only_the_measures_cost_products():
    matrix = rotated_spectrum(1500, 200, cond=1e3, seed=4)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    result = matrank.estimate_rank(operator, method="lanczos", seed=0)
    found = matrank.effective_ranks(operator, result=result, seed=0, dense_max=0)
    alone = matrank.effective_ranks(operator, seed=0, dense_max=0)
    assert found.route == "stochastic" and found.count == result.rank == 200
    assert found.cost["matvecs"] == alone.cost["matvecs"] - result.cost["matvecs"]
    with pytest.raises(matrank.MatrankValueError, match="differs from the result"):
        matrank.effective_ranks(operator, result=result, threshold=1.0)
    with pytest.raises(matrank.MatrankValueError, match="finite"):
        matrank.EffectiveRanks.from_eigenvalues([1.0, np.nan], 0.1)
