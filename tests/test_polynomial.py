"""PolynomialRank, faithful Ubaru–Saad mode: its expectation, gap rule and messages."""

import numpy as np
import pytest

import matrank
from matrank.adapters import LinearNetHessian
from matrank.estimators.polynomial import ubaru_saad_gap
from matrank.testing import rotated_spectrum


def expected_soft_count(result, spectrum, n):
    """Σ_i p(λ_i) over the whole spectrum (zeros included) for the filter that ran."""
    largest = result.diagnostics["lambda_max"]
    low, high = -1e-5, largest + 1e-5
    center, half = (high + low) / 2, (high - low) / 2
    coefficients = result.diagnostics["filter_coefficients"]
    values = np.polynomial.chebyshev.chebval((spectrum - center) / half, coefficients)
    return values.sum() + (n - len(spectrum)) * result.diagnostics["filter_at_zero"]


def test_faithful_mode_is_unbiased_for_its_soft_count_on_the_paper_problem():
    problem = LinearNetHessian.random_minimum(8, 8, 5, seed=0)
    spectrum = problem.spectrum()
    z_scores = []
    for seed in range(4):
        result = matrank.estimate_rank(
            problem, method="polynomial", variant="ubaru-saad", seed=seed, n_probes=60
        )
        assert result.cost["matvecs"] == 60 * 50 + 30
        # their gap rule settles at 1.24 % of λmax on these spectra (paper_peer §3)
        assert result.threshold / result.diagnostics["lambda_max"] == pytest.approx(
            0.012376, rel=1e-3
        )
        assert result.diagnostics["filter_at_zero"] == pytest.approx(-4.95e-3, rel=0.02)
        z_scores.append(
            (result.rank - expected_soft_count(result, spectrum, problem.dim))
            / result.stderr
        )
    assert np.all(np.abs(z_scores) < 4), z_scores
    # and the soft count under-counts d² = 64 by 10-20 %, as in the paper's Table 1
    assert 0.80 < result.rank / 64 < 0.90


def test_well_separated_spectrum_is_counted_within_its_stderr():
    matrix = rotated_spectrum(200, 30, cond=2.0, seed=0)
    for seed in range(3):
        result = matrank.estimate_rank(
            matrix, method="polynomial", variant="ubaru-saad", seed=seed, n_probes=80
        )
        eigenvalues = np.linalg.eigvalsh(matrix)
        expected = expected_soft_count(result, eigenvalues, 200)
        assert abs(result.rank - expected) < 4 * result.stderr
        assert abs(result.rank - 30) < 4 * result.stderr


def test_gap_rule_on_a_two_cluster_density():
    grid = np.linspace(0, 1, 125)
    # a null-space peak decaying from 0, then a signal cluster above 0.6: the gap is the
    # midpoint of where the decay flattens and where the cluster starts
    density = 50 * np.exp(-grid / 0.02) + np.where(grid > 0.6, 2.0, 0.0)
    gap = ubaru_saad_gap(grid, density)
    assert 0.3 < gap < 0.4


def test_threshold_override_and_messages():
    matrix = rotated_spectrum(100, 10, cond=2.0, seed=1)
    result = matrank.estimate_rank(
        matrix,
        method="polynomial",
        variant="ubaru-saad",
        threshold=0.25,
        n_probes=20,
        seed=0,
    )
    assert result.threshold == 0.25
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`variant` must be one of 'default', 'ubaru-saad'; got 'paper'",
    ):
        matrank.PolynomialRank(variant="paper")
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`degree` must be an int in \[2, inf\) or None; got 1",
    ):
        matrank.PolynomialRank(degree=1)


def test_same_seed_is_bit_identical():
    matrix = rotated_spectrum(80, 10, cond=2.0, seed=2)
    estimator = matrank.PolynomialRank(variant="ubaru-saad", n_probes=10)
    first, second = estimator.estimate(matrix, seed=3), estimator.estimate(matrix, seed=3)
    np.testing.assert_array_equal(
        first.diagnostics["samples"], second.diagnostics["samples"]
    )
    assert estimator.estimate(matrix, seed=4).rank != first.rank
