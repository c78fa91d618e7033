"""PolynomialRank, faithful Ubaru–Saad mode: its expectation, gap rule and messages."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import matrank
from matrank.adapters import LinearNetHessian
from matrank.estimators.polynomial import expected_count, ubaru_saad_gap
from matrank.testing import haar_orthogonal, mixed_spectrum_operator, rotated_spectrum
from matrank.testing.strategies import low_rank_psd


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
        assert result.threshold / result.diagnostics.lambda_max == pytest.approx(
            0.012376, rel=1e-3
        )
        assert result.diagnostics.filter_at_zero == pytest.approx(-4.95e-3, rel=0.02)
        z_scores.append(
            (result.rank - expected_count(result, spectrum, problem.dim)) / result.stderr
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
        expected = expected_count(result, eigenvalues)
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faithful_mode_runs_on_every_psd_linear_net(seed):
    # seed 1's first 30 Lanczos steps bound λmin below by -33 (λmax 687): a loose
    # residual, not an eigenvalue; it was refused as indefinite
    problem = LinearNetHessian.random_minimum(8, 8, 5, seed=seed)
    result = matrank.PolynomialRank(variant="ubaru-saad", n_probes=10).estimate(
        problem, seed=seed
    )
    assert 0 < result.rank < 2 * 64


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(60, 240),
    null_share=st.floats(0.3, 0.9),
    decades=st.floats(0.0, 8.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_faithful_mode_refuses_an_operator_exactly_when_it_is_indefinite(
    n, null_share, decades, seed
):
    # a PSD spectrum with a large null space and the rest spread over `decades` is never
    # refused, whatever the first Lanczos bound says; one eigenvalue at -3 % of the
    # norm always is, and the message names it to within the tightened 1e-3
    rng = np.random.default_rng(seed)
    rank = max(1, int(n * (1 - null_share)))
    positive = 10 ** -rng.uniform(0, decades, rank)
    spectrum = np.r_[np.sort(positive)[::-1], np.zeros(n - rank)]
    rotation = haar_orthogonal(n, rng)
    estimator = matrank.PolynomialRank(variant="ubaru-saad", n_probes=4)
    psd = (rotation * spectrum) @ rotation.T
    assert estimator.estimate(psd, seed=seed).rank > 0
    spectrum[-1] = -0.03 * spectrum.max()
    with pytest.raises(matrank.MatrankValueError, match="positive semi-definite") as caught:
        estimator.estimate((rotation * spectrum) @ rotation.T, seed=seed)
    named = float(str(caught.value).split("eigenvalue near ")[1].split(" ")[0])
    assert named == pytest.approx(-0.03 * spectrum.max(), abs=2e-3 * spectrum.max())


def test_same_seed_is_bit_identical():
    matrix = rotated_spectrum(80, 10, cond=2.0, seed=2)
    estimator = matrank.PolynomialRank(variant="ubaru-saad", n_probes=10)
    first, second = estimator.estimate(matrix, seed=3), estimator.estimate(matrix, seed=3)
    np.testing.assert_array_equal(first.diagnostics.samples, second.diagnostics.samples)
    assert estimator.estimate(matrix, seed=4).rank != first.rank


# -- the default variant -------------------------------------------------------------------


def test_default_filter_is_unbiased_for_its_soft_count_and_ignores_the_null_space():
    # rank 40 in n = 1500: 1460 null eigenvalues, which the U&S step counts at p(0) each
    matrix = rotated_spectrum(1500, 40, cond=30.0, seed=0)
    eigenvalues = np.linalg.eigvalsh(matrix)
    z_scores = []
    for seed in range(5):
        result = matrank.PolynomialRank(deflate=0, max_matvecs=3000).estimate(
            matrix, seed=seed
        )
        assert result.diagnostics.filter_at_zero == pytest.approx(0.0, abs=1e-12)
        assert result.diagnostics.deflated == 0
        assert result.cost["matvecs"] <= 3000
        assert result.status is matrank.Status.CONVERGED
        # the edge sits in the gap between 0 and the smallest signal eigenvalue 1/30
        assert 0 < result.threshold < 1 / 30
        z_scores.append((result.rank - expected_count(result, eigenvalues)) / result.stderr)
        assert abs(result.rank - 40) < 4 * result.stderr
    assert np.all(np.abs(z_scores) < 4), z_scores


def test_default_soft_count_equals_n_tau_on_the_linear_net_beyond_its_gaps():
    # a continuous spectrum over 5 decades: no plateau, τ at the filter's reach
    problem = LinearNetHessian.random_minimum(16, 16, 5, seed=1)
    spectrum = problem.spectrum()
    estimator = matrank.PolynomialRank(deflate=0, max_matvecs=6000)
    z_scores = []
    for seed in range(4):
        result = estimator.estimate(problem, seed=seed)
        assert result.status is matrank.Status.NO_PLATEAU
        assert result.threshold == pytest.approx(result.diagnostics.reach)
        counted = int((spectrum > result.threshold).sum())
        z_scores.append((result.rank - counted) / result.stderr)
    assert np.all(np.abs(z_scores) < 4), z_scores


def test_deflation_captures_a_small_rank_whole_and_counts_it_exactly():
    matrix = rotated_spectrum(600, 25, cond=1e3, seed=3)
    result = matrank.PolynomialRank().estimate(matrix, seed=0)
    assert result.diagnostics.deflated == 25
    assert result.diagnostics.path == "deflated (exact)"
    assert result.rank == pytest.approx(25, abs=1e-9)
    assert result.stderr < 1e-9
    # the exact path applies the exact methods' plateau rule to the captured spectrum
    assert result.threshold == pytest.approx(
        matrank.estimate_rank(matrix, method="exact").threshold, rel=0.05
    )


def _rotated(spectrum: np.ndarray, seed: int) -> np.ndarray:
    q = haar_orthogonal(spectrum.size, np.random.default_rng(seed))
    return (q * spectrum) @ q.T


CONTINUUM = np.r_[10.0 * np.arange(1, 301) ** -2.0, np.zeros(5700)]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_deflation_that_holds_everything_above_the_reach_counts_it_exactly(seed):
    # A continuum denser toward zero, as on the digits CNN, in n = 6000 (more than the
    # 4,000 products: no whole-space basis): the reach is 5.7e-3 (41 eigenvalues above
    # it). Counting the complement's probes too added the Jackson tail of its
    # eigenvalues under τ, all on one side: 49.5 ± 1.2, 48.7 ± 1.2, 48.2 ± 1.1 for
    # N(τ) = 41. The Ritz count is taken where Li & Li's bound certifies it: seeds 0,
    # 1 and 3 after 192 columns (44–46 pairs, bound 4.7e-3 to 5.2e-3), seed 2 after one
    # doubling (its first basis converged only 30 of the 41; 320 columns, bound 6e-4).
    # With 32 complement steps (a 10 % margin) seeds 0 and 1 were not certified.
    result = matrank.PolynomialRank(max_matvecs=4000).estimate(
        mixed_spectrum_operator(CONTINUUM, seed=seed), seed=seed
    )
    diagnostics = result.diagnostics
    assert diagnostics.path == "deflated (complement below τ)"
    assert (
        np.sort(CONTINUUM)[::-1][diagnostics.deflated]
        <= diagnostics.complement_top
        < result.threshold
    )
    assert result.rank == (CONTINUUM > result.threshold).sum()
    assert result.stderr == 0.0
    assert result.cost["matvecs"] < 4000  # the complement's probes were not needed


def test_a_space_that_fits_the_budget_is_captured_whole_without_a_pilot():
    # n = 400 products fit the 4,000: the products of the unit vectors are the matrix,
    # and the exact methods' plateau rule reads its eigenvalues; a filter would cost more
    spectrum = np.r_[10.0 * np.arange(1, 301) ** -2.0, np.zeros(100)]
    matrix = _rotated(spectrum, 0)
    result = matrank.PolynomialRank(max_matvecs=4000).estimate(matrix, seed=0)
    exact = matrank.estimate_rank(matrix, method="exact")
    assert result.diagnostics.path == "deflated (exact)"
    values = result.diagnostics.deflated_values
    assert np.all(np.diff(np.abs(values)) <= 0)  # by magnitude, as Ritz values come
    np.testing.assert_allclose(values, np.sort(spectrum)[::-1][:300], rtol=1e-9)
    assert result.rank == exact.rank == 300 and result.stderr == 0
    assert result.threshold == pytest.approx(exact.threshold, rel=0.05)
    assert result.cost["matvecs"] <= 400 + 30  # the basis and the bounds
    assert result.counts.at(result.threshold * 1.001) == 300
    # with settings for the filter (a user's cap on the basis), the pilot runs and
    # a partial capture follows
    capped = matrank.PolynomialRank(max_matvecs=4000, deflate=200).estimate(matrix, seed=0)
    assert capped.diagnostics.basis_size <= 200
    assert capped.diagnostics.path != "deflated (exact)"
    assert capped.diagnostics.degree > 0


COPIES = np.r_[np.ones(120), 0.01 * np.arange(1, 301) ** -2.0, np.zeros(5580)]


def test_copies_that_deflation_missed_send_the_count_back_to_the_probes():
    # 120 copies of 1 over a continuum under 1e-2: a block Krylov basis holds only some
    # copies of a repeated eigenvalue (96 here); with the basis capped at 400 columns the
    # check on the deflated operator sees the other 24 and the probes count them
    result = matrank.PolynomialRank(max_matvecs=4000, deflate=400).estimate(
        mixed_spectrum_operator(COPIES, seed=0), seed=0
    )
    copies = int((np.abs(result.diagnostics.deflated_values - 1) < 1e-6).sum())
    assert copies < 120
    assert result.diagnostics.complement_top >= 1.0
    assert result.diagnostics.path == "probes"
    assert abs(result.rank - 120) <= 4 * result.stderr


def test_a_basis_that_left_copies_behind_grows_until_nothing_is_left():
    # uncapped, the basis doubles while the bound stays above τ: 512 columns hold all
    # 120 copies and the continuum, invariant, and the exact plateau rule then counts
    # every non-zero eigenvalue (the widest gap is the 6 decades under 1.1e-7)
    result = matrank.PolynomialRank(max_matvecs=4000).estimate(
        mixed_spectrum_operator(COPIES, seed=0), seed=0
    )
    copies = int((np.abs(result.diagnostics.deflated_values - 1) < 1e-6).sum())
    assert copies == 120
    assert result.diagnostics.path == "deflated (exact)"
    assert result.rank == 420 and result.stderr == 0
    assert result.cost["matvecs"] < 4000


def test_user_threshold_sets_the_degree_from_its_angle():
    matrix = rotated_spectrum(400, 30, cond=10.0, seed=4)
    eigenvalues = np.linalg.eigvalsh(matrix)
    wide = matrank.PolynomialRank(threshold=0.05, deflate=0, max_matvecs=2000)
    narrow = matrank.PolynomialRank(threshold=0.0005, deflate=0, max_matvecs=2000)
    first, second = wide.estimate(matrix, seed=0), narrow.estimate(matrix, seed=0)
    assert first.threshold == 0.05
    # degree ∝ sqrt(λmax/τ): 100× smaller τ, 10× the degree
    ratio = second.diagnostics.degree / first.diagnostics.degree
    assert 8 < ratio < 12
    for result in (first, second):
        expected = expected_count(result, eigenvalues)
        assert abs(result.rank - expected) < 4 * result.stderr
        assert abs(result.rank - 30) < 4 * result.stderr


def test_indefinite_matrix_counts_both_signs():
    matrix = rotated_spectrum(300, 20, cond=10.0, negative=6, seed=5)
    result = matrank.PolynomialRank(deflate=0, max_matvecs=3000).estimate(matrix, seed=1)
    assert result.diagnostics.lambda_min < -0.09
    assert abs(result.rank - 20) < 4 * result.stderr
    assert abs(result.rank - expected_count(result, np.linalg.eigvalsh(matrix))) < (
        4 * result.stderr
    )


def test_noise_band_under_the_gap_is_left_out():
    # 560 eigenvalues from 1e-5 down to 1e-15 under a signal in [1e-2, 1]
    matrix = rotated_spectrum(600, 40, cond=100.0, noise_gap=1e3, seed=6)
    result = matrank.PolynomialRank(deflate=0, max_matvecs=4000).estimate(matrix, seed=2)
    assert result.status is matrank.Status.CONVERGED
    assert 1e-5 < result.threshold < 1e-2
    assert abs(result.rank - 40) < 4 * result.stderr


def test_counting_curve_and_density_follow_the_spectrum():
    matrix = rotated_spectrum(500, 30, cond=100.0, seed=7)
    eigenvalues = np.linalg.eigvalsh(matrix)
    result = matrank.PolynomialRank(deflate=0, max_matvecs=4000).estimate(matrix, seed=0)
    curve = result.counts
    # above the signal nothing is counted, and inside the gap everything is
    top = curve.thresholds > 1.5
    assert np.all(np.abs(curve.counts[top]) < 4 * curve.stderr[top] + 0.5)
    gap = (curve.thresholds > 2e-3) & (curve.thresholds < 5e-3)
    assert np.all(np.abs(curve.counts[gap] - 30) < 4 * curve.stderr[gap] + 0.5)
    grid, density = result.diagnostics.density_grid, result.diagnostics.density
    # eigenvalues per unit λ: the mass above 0.05 is the count there (trapezoid on the
    # Chebyshev grid; the Jackson blur moves a little mass across 0.05)
    mask = grid > 0.05
    mass = np.trapezoid(density[mask], grid[mask])
    assert mass == pytest.approx((eigenvalues > 0.05).sum(), abs=4)


def test_default_messages():
    with pytest.raises(matrank.MatrankValueError, match=r"`threshold` must be a real"):
        matrank.PolynomialRank(threshold=0.0)
    with pytest.raises(matrank.MatrankValueError, match=r"variant='ubaru-saad'"):
        matrank.PolynomialRank(variant="ubaru-saad", threshold="floor")
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`deflate` must be None with variant='ubaru-saad'",
    ):
        matrank.PolynomialRank(variant="ubaru-saad", deflate=10)
    matrix = rotated_spectrum(300, 10, seed=8)
    with pytest.raises(matrank.MatrankValueError, match=r"`max_matvecs` must be enough"):
        matrank.PolynomialRank(max_matvecs=64, threshold=1e-3).estimate(matrix)
    # between the bounds' top (1 % past λmax) and the bound on ‖A‖ (4 % past it at 64
    # steps, n = 300): neither a filter nor a count of 0
    top = np.linalg.eigvalsh(matrix).max()
    with pytest.raises(matrank.MatrankValueError, match=r"`threshold` must be below"):
        matrank.PolynomialRank(threshold=top * 1.025).estimate(matrix, seed=0)


@pytest.mark.parametrize("seed", range(3))
def test_a_threshold_above_the_norm_counts_zero_and_just_below_it_does_not(seed):
    # λmax = 1 (the signal's top) in n = 300: a τ past the bounds' top is answered 0
    # only where a fresh 64-step Lanczos run bounds ‖A‖ under it (the run that
    # blocked the landscape study's k = 1); 1 − 1e-9 lies under λmax and inside the
    # bounds' frame (1 % past it), where a 0 would be wrong: seeds 0 and 1 certify the
    # Ritz count 1, seed 2's probes give 0.50 ± 0.45
    matrix = rotated_spectrum(300, 10, seed=seed)
    above = matrank.PolynomialRank(threshold=1.2).estimate(matrix, seed=seed)
    assert above.rank == 0 and above.stderr == 0
    assert above.status is matrank.Status.CONVERGED
    assert 1.0 <= above.diagnostics.complement_top < 1.2
    assert above.diagnostics.path == "deflated (complement below τ)"
    near = matrank.PolynomialRank(threshold=1 - 1e-9).estimate(matrix, seed=seed)
    if near.stderr == 0:
        assert near.rank == 1
    else:
        assert abs(near.rank - 1) <= 3 * near.stderr


def test_threshold_below_the_reach_of_a_fixed_degree_warns():
    matrix = rotated_spectrum(200, 10, cond=1e4, seed=9)
    with pytest.warns(matrank.MatrankWarning, match=r"below the reach .* of degree 20"):
        matrank.PolynomialRank(threshold=1e-4, degree=20, n_probes=4).estimate(matrix)


def test_full_rank_captured_whole_leaves_empty_probes():
    # the basis is all of R^n: the probes of its (empty) complement are zero vectors
    result = matrank.PolynomialRank().estimate(np.eye(30), seed=0)
    assert result.rank == 30 and result.stderr == 0
    assert result.diagnostics.path == "deflated (exact)"


def test_zero_operator_has_rank_zero():
    result = matrank.PolynomialRank().estimate(np.zeros((50, 50)), seed=0)
    assert result.rank == 0 and result.stderr == 0


@settings(max_examples=8, deadline=None)
@given(case=low_rank_psd(max_n=120, max_cond=1e3))
def test_default_agrees_with_the_dense_rank_within_its_stderr(case):
    matrix, rank = case
    result = matrank.PolynomialRank(max_matvecs=3000).estimate(matrix, seed=0)
    # the Gaussian step's tails are 1e-6 at the plateau's edges: at most 1e-6 per eigenvalue
    assert abs(result.rank - rank) <= 4 * result.stderr + 1e-6 * matrix.shape[0]


def test_floor_is_the_exact_count_from_the_whole_space_or_refused():
    # the exact methods' "floor" (everything above the noise floor, however small and
    # isolated): the whole space's spectrum answers it; a filter never could
    spectrum = np.concatenate([np.geomspace(1e-9, 1.0, 12), np.zeros(88)])
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    matrix = (basis * spectrum) @ basis.T
    exact = matrank.estimate_rank(matrix, method="exact", threshold="floor")
    result = matrank.estimate_rank(matrix, method="polynomial", threshold="floor", seed=0)
    assert result.rank == exact.rank == 12 and result.stderr == 0.0
    assert result.threshold == pytest.approx(exact.threshold, rel=1e-6)
    big = rotated_spectrum(3000, 10, seed=2)
    with pytest.raises(matrank.MatrankValueError, match=r"'floor' needs the whole space"):
        matrank.estimate_rank(big, method="polynomial", threshold="floor", seed=0)


def test_a_threshold_no_degree_reaches_is_counted_from_the_whole_space(monkeypatch):
    """At τ = 1e-8·λmax the capped degree (4000) reaches only 1.4e-6: the filter would
    spend its 15,000 products and end BELOW_RESOLUTION (it did, before). The n = 300
    products of the whole space count it exactly instead, and say why; a τ under the
    noise floor stays unresolved; past UNREACHED_WHOLE_MAX the filter runs as before."""
    from matrank.estimators.polynomial import whole

    spectrum = np.concatenate([np.geomspace(1e-11, 1.0, 150), np.zeros(150)])
    basis = haar_orthogonal(300, np.random.default_rng(0))
    matrix = (basis * spectrum) @ basis.T
    truth = int((np.linalg.eigvalsh(matrix) > 1e-8).sum())
    result = matrank.estimate_rank(matrix, method="polynomial", threshold=1e-8, seed=0)
    assert result.rank == truth == 109 and result.stderr == 0
    assert result.status is matrank.Status.CONVERGED
    assert result.cost["matvecs"] <= 300 + 30  # the bounds' Lanczos steps and n
    assert "under the reach" in result.diagnostics.whole_space
    low = matrank.estimate_rank(matrix, method="polynomial", threshold=1e-15, seed=0)
    assert low.status is matrank.Status.BELOW_RESOLUTION
    assert "under the noise floor" in low.diagnostics["remedy"]
    monkeypatch.setattr(whole, "UNREACHED_WHOLE_MAX", 299)
    with pytest.warns(matrank.MatrankWarning, match="below the reach"):
        filtered = matrank.estimate_rank(
            matrix, method="polynomial", threshold=1e-8, seed=0
        )
    assert filtered.status is matrank.Status.BELOW_RESOLUTION
    assert filtered.diagnostics.whole_space is None and filtered.cost["matvecs"] > 10_000


def test_a_threshold_under_the_filters_reach_is_not_reported_converged():
    """Degree 60 reaches 6.2e-3 of λmax; at τ = 1e-6 the eigenvalues between count
    partially (239 ± 15 where 450 lie above τ): the run warns and ends
    BELOW_RESOLUTION with the remedy, never CONVERGED (it was, before)."""
    H = rotated_spectrum(1200, 600, cond=1e8, seed=0)
    truth = int((np.linalg.eigvalsh(H) > 1e-6).sum())
    estimator = matrank.PolynomialRank(
        threshold=1e-6, degree=60, max_matvecs=1000, deflate=0
    )
    with pytest.warns(matrank.MatrankWarning, match="below the reach"):
        result = estimator.estimate(H, seed=0)
    assert result.diagnostics.reach > 1e-3
    assert abs(result.rank - truth) > 5 * result.stderr  # the count is indeed wrong
    assert result.status is matrank.Status.BELOW_RESOLUTION and not result.converged
    assert "raise `degree`" in result.diagnostics["remedy"]
