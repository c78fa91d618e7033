"""LanczosRank against the catalogue and against dense ground truth; its failure modes."""

import math

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given, settings

import matrank
from matrank.numerics.krylov import BlockKrylov, spectral_bounds
from matrank.numerics.quadrature import lanczos_quadrature
from matrank.numerics.threshold import plateau_threshold
from matrank.numerics.trace import mean_and_stderr, probe_block
from matrank.testing import (
    catalogue,
    laplacian,
    mixed_spectrum_operator,
    projector,
    rotated_spectrum,
)
from matrank.testing.strategies import low_rank_psd

CASES = catalogue(max_n=3000)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_exact_count_on_the_catalogue_within_the_matvec_target(case):
    result = matrank.estimate_rank(case.matrix(), method="lanczos", seed=0)
    assert result.rank == case.rank
    assert result.stderr is None
    assert result.status is matrank.Status.CONVERGED
    assert result.diagnostics.certified
    # issue target: an exact count costs at most 2r + 200 matvecs
    assert result.cost["matvecs"] <= 2 * case.rank + 200


@given(low_rank_psd(max_n=48))
def test_agrees_with_the_dense_count(case):
    matrix, rank = case
    result = matrank.estimate_rank(matrix, method="lanczos", seed=0, block_size=8)
    assert result.rank == rank == matrank.estimate_rank(matrix, method="exact").rank


@given(low_rank_psd(max_n=48, noise_band=True))
@settings(max_examples=20)
def test_agrees_with_the_dense_count_under_a_noise_band(case):
    matrix, rank = case
    assert (
        matrank.estimate_rank(matrix, method="lanczos", seed=1, block_size=8).rank == rank
    )


def test_multiplicity_beyond_the_block_size_is_found_by_restarts():
    # one eigenvalue of multiplicity 60; a block Krylov space sees at most 4 copies of it
    result = matrank.LanczosRank(block_size=4).estimate(projector(300, 60, seed=1), seed=0)
    assert result.rank == 60
    assert result.diagnostics.random_columns >= 60 - 4


def test_single_vector_lanczos_counts_a_projector():
    # the failure the research notes checked: plain Lanczos sees 1 of 30 equal eigenvalues
    result = matrank.LanczosRank(block_size=1).estimate(projector(120, 30, seed=2), seed=0)
    assert result.rank == 30


def test_breakdown_at_exact_zeros_is_an_invariant_subspace():
    krylov = _krylov(projector(200, 10, seed=3), seed=0)
    krylov.extend(16)  # V: its image lies in the 10-dimensional range
    krylov.extend(16)  # the range, found: its image is inside the basis
    assert krylov.next_kept == 0 and krylov.B.numel() == 0
    values, _ = krylov.ritz()
    assert int((values.abs() > 0.5).sum()) == 10


def test_no_ghost_eigenvalues_after_many_more_steps_than_needed():
    eigenvalues = np.geomspace(1.0, 1e-3, 12)
    matrix = rotated_spectrum(150, 12, cond=1e3, seed=4)
    krylov = _krylov(matrix, seed=0)
    for _ in range(20):  # 20 steps of 4 = 80 columns for a rank-12 operator
        krylov.extend(4)
    Q = krylov.Q
    np.testing.assert_allclose((Q.T @ Q).numpy(), np.eye(Q.shape[1]), atol=1e-12)
    values, _ = krylov.ritz()
    counted = np.sort(values[values.abs() > 1e-6].numpy())[::-1]
    # every eigenvalue once, none duplicated
    np.testing.assert_allclose(counted, eigenvalues, rtol=1e-10)


def test_ritz_residuals_bound_the_distance_to_an_eigenvalue():
    matrix = rotated_spectrum(200, 40, cond=1e2, seed=5)
    krylov = _krylov(matrix, seed=1)
    krylov.extend(8)
    krylov.extend(8)  # far from converged
    values, vectors = krylov.ritz()
    residuals = krylov.residual_norms(vectors)
    ritz_vectors = krylov.Q @ vectors
    true = np.linalg.norm(
        matrix @ ritz_vectors.numpy() - ritz_vectors.numpy() * values.numpy(), axis=0
    )
    np.testing.assert_allclose(residuals.numpy(), true, rtol=1e-6, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(matrix)
    distance = np.abs(values.numpy()[:, None] - eigenvalues[None]).min(axis=1)
    assert np.all(distance <= residuals.numpy() * (1 + 1e-9))


def test_quadrature_is_exact_for_low_degree_polynomials():
    matrix = rotated_spectrum(60, 25, cond=1e2, seed=6)
    A = torch.from_numpy(matrix)
    probes = torch.randn(
        60, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    steps = 6
    nodes, weights = lanczos_quadrature(lambda V: A @ V, probes, steps)
    assert nodes.shape == weights.shape == (3, steps)
    for power in range(2 * steps):  # Gauss quadrature is exact up to degree 2k − 1
        quadrature = (weights * nodes**power).sum(1)
        exact = (probes * (torch.linalg.matrix_power(A, power) @ probes)).sum(0)
        np.testing.assert_allclose(quadrature.numpy(), exact.numpy(), rtol=1e-8, atol=1e-10)


def test_spectral_bounds_bracket_the_spectrum():
    matrix = rotated_spectrum(300, 30, cond=1e2, negative=5, seed=7)
    A = torch.from_numpy(matrix)
    low, high, matvecs = spectral_bounds(
        lambda V: A @ V,
        300,
        steps=40,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
        device=torch.device("cpu"),
    )
    eigenvalues = np.linalg.eigvalsh(matrix)
    assert low <= eigenvalues.min() and high >= eigenvalues.max()
    assert high <= eigenvalues.max() * (1 + 1e-8) and matvecs == 40


def test_probes():
    generator = torch.Generator().manual_seed(0)
    kw = {"generator": generator, "dtype": torch.float64, "device": torch.device("cpu")}
    sphere = probe_block(50, 7, kind="sphere", **kw)
    np.testing.assert_allclose(
        torch.linalg.vector_norm(sphere, dim=0).numpy(), math.sqrt(50)
    )
    signs = probe_block(50, 7, kind="rademacher", **kw)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    Q = torch.linalg.qr(torch.randn(50, 5, generator=generator, dtype=torch.float64)).Q
    projected = probe_block(50, 7, kind="sphere", orthogonal_to=Q, **kw)
    assert float((Q.T @ projected).abs().max()) < 1e-12
    np.testing.assert_allclose(
        torch.linalg.vector_norm(projected, dim=0).numpy(), math.sqrt(45)
    )
    mean, stderr = mean_and_stderr(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and stderr == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


def test_slq_path_is_unbiased_within_its_stated_stderr():
    # rank 700 of 2000 with a 100-column basis budget: past the exact reach, so SLQ
    matrix = rotated_spectrum(2000, 700, cond=1e2, seed=8)
    z_scores = []
    for seed in range(8):
        result = matrank.estimate_rank(
            matrix, method="lanczos", seed=seed, max_basis=96, max_matvecs=1200, dense_max=0
        )
        assert result.diagnostics.path == "slq" and result.stderr > 0
        assert result.cost["matvecs"] <= 1200
        z_scores.append((result.rank - 700) / result.stderr)
    z_scores = np.array(z_scores)
    # each within 4 stderr, and the spread matches the stated stderr: the mean of 8
    # squared z-scores has expectation 1 and standard deviation 0.5
    assert np.all(np.abs(z_scores) < 4), z_scores
    assert 0.15 < np.mean(z_scores**2) < 3.0, z_scores


def test_slq_inside_an_indefinite_spectrum_is_not_reported_converged_unresolved():
    """300 of 700 eigenvalues negative, |λ| in [0.01, 1]: zero lies inside the
    spectrum, where a 64-step rule resolves only ±0.07·‖H‖ and its node at zero is no
    Gauss–Radau end point. The count was 604–623 ± 6–7 for 700, CONVERGED; now it is
    BELOW_RESOLUTION with the remedy. With |λ| in [0.1, 1] (above the reach) SLQ is
    right and converged; and a basis that may go dense counts exactly."""
    options = {"method": "lanczos", "max_basis": 96, "max_matvecs": 1200}
    crowded = rotated_spectrum(2000, 700, cond=1e2, negative=300, seed=8)
    clear = rotated_spectrum(2000, 700, cond=10, negative=300, seed=8)
    for seed in range(2):
        result = matrank.estimate_rank(crowded, seed=seed, dense_max=0, **options)
        assert (
            result.diagnostics.path == "slq" and abs(result.rank - 700) > 5 * result.stderr
        )
        assert result.status is matrank.Status.BELOW_RESOLUTION and not result.converged
        assert result.diagnostics.slq_unresolved >= 1
        assert "`dense_max`" in result.diagnostics["remedy"]
        fine = matrank.estimate_rank(clear, seed=seed, dense_max=0, **options)
        assert (
            fine.status is matrank.Status.CONVERGED and fine.diagnostics.slq_unresolved == 0
        )
        assert abs(fine.rank - 700) < 4 * fine.stderr
    exact = matrank.estimate_rank(crowded, seed=0, **options)
    assert exact.diagnostics.path == "dense (switched)" and exact.rank == 700
    assert exact.status is matrank.Status.CONVERGED


def test_slq_in_a_psd_continuum_towards_zero_is_not_reported_converged():
    """A trained GGN's spectrum: PSD, log-uniform over twelve decades down into
    rounding. Zero is the end of the interval, but the zero node's mass still holds
    eigenvalues above a small τ that a 64-step rule cannot separate from it; the count
    moves as the rule doubles (the half rule is free: the same Lanczos run), which ends
    it BELOW_RESOLUTION. A gapped PSD spectrum at the same τ does not move and stays
    CONVERGED within its stderr."""
    options = {"method": "lanczos", "max_basis": 96, "max_matvecs": 1200, "dense_max": 0}
    continuum = np.concatenate([np.geomspace(1.0, 1e-14, 1400), np.zeros(600)])
    truth = int((continuum > 1e-9).sum())
    gapped = np.concatenate([np.geomspace(1.0, 1e-2, truth), np.zeros(2000 - truth)])
    for seed in range(2):
        found = matrank.estimate_rank(
            mixed_spectrum_operator(continuum, seed=seed),
            seed=seed,
            threshold=1e-9,
            **options,
        )
        assert found.diagnostics.path == "slq" and found.diagnostics.slq_unresolved == 0
        assert (
            abs(found.rank - truth) > 5 * found.stderr
        )  # wrong: it must not say converged
        assert found.status is matrank.Status.BELOW_RESOLUTION and not found.converged
        assert (
            found.diagnostics.slq_moved > 0 and "`slq_steps`" in found.diagnostics["remedy"]
        )
        fine = matrank.estimate_rank(
            mixed_spectrum_operator(gapped, seed=seed), seed=seed, threshold=1e-9, **options
        )
        assert fine.status is matrank.Status.CONVERGED, fine.diagnostics.get("remedy")
        assert abs(fine.rank - truth) < 4 * fine.stderr


def test_budget_exhausted_is_reported_with_remediation():
    matrix = rotated_spectrum(400, 150, seed=9)
    options = {"method": "lanczos", "max_basis": 64, "max_matvecs": 80, "seed": 0}
    result = matrank.estimate_rank(matrix, dense_max=0, **options)
    assert result.status is matrank.Status.BUDGET_EXHAUSTED and not result.converged
    assert "`max_matvecs` for lanczos" in result.status.value
    # where the dense path is possible (an explicit matrix: read, no products) a spent
    # basis ends there, exact, instead of in SLQ's estimate
    dense = matrank.estimate_rank(matrix, **options)
    assert dense.status is matrank.Status.CONVERGED and dense.rank == 150
    assert dense.diagnostics.path == "dense (switched)" and dense.cost["matvecs"] <= 80
    assert "the basis (64 of at most 64) is spent" in dense.diagnostics.dense_reason


def test_threshold_override_counts_what_it_is_told():
    matrix = rotated_spectrum(300, 40, cond=1e4, seed=10)
    levels = np.geomspace(1.0, 1e-4, 40)
    for threshold in (0.3, 1e-2, 2e-3):
        result = matrank.estimate_rank(
            matrix, method="lanczos", threshold=threshold, seed=0
        )
        assert result.rank == (levels > threshold).sum() and result.threshold == threshold


def test_indefinite_counts_by_magnitude():
    result = matrank.estimate_rank(
        rotated_spectrum(300, 30, negative=11, seed=11), method="lanczos", seed=0
    )
    assert result.rank == 30 and result.diagnostics.n_negative == 11


def test_same_seed_is_bit_identical():
    matrix = rotated_spectrum(500, 60, cond=1e5, seed=12)
    first = matrank.estimate_rank(matrix, method="lanczos", seed=5)
    second = matrank.estimate_rank(matrix, method="lanczos", seed=5)
    assert first.rank == second.rank and first.threshold == second.threshold
    assert first.cost["matvecs"] == second.cost["matvecs"]
    np.testing.assert_array_equal(
        first.diagnostics.ritz_values, second.diagnostics.ritz_values
    )


def test_auto_uses_lanczos_beyond_the_dense_size():
    spectrum = np.concatenate(
        [np.geomspace(1.0, 1e-3, 50), np.zeros(4950)]
    )  # n = 5000 > 4096
    result = matrank.estimate_rank(mixed_spectrum_operator(spectrum, seed=0))
    assert result.method == "lanczos" and result.rank == 50 and result.stderr is None
    assert "the Lanczos count, whose pilot and timed cost model" in result.diagnostics.auto
    assert "then dense" not in result.diagnostics.auto  # rank 50: the Krylov count
    # a rank of most of n: the pilot sends it dense, and auto says so
    spectrum = np.concatenate([np.geomspace(1.0, 1e-2, 3000), np.zeros(1200)])
    result = matrank.estimate_rank(mixed_spectrum_operator(spectrum, seed=0), seed=0)
    assert result.rank == 3000 and result.diagnostics.path == "dense"
    assert "; then dense: the pilot counted" in result.diagnostics.auto
    # rank 4950 is past the exact reach of a 1024-column basis: without the dense path
    # (which the pilot would choose, and which is tested in test_lanczos_paths), SLQ
    matrix = laplacian(50, 100, kind="cycle", seed=13)
    result = matrank.estimate_rank(matrix, seed=0, max_basis=1024, dense_max=0)
    assert result.diagnostics.path == "slq"
    assert abs(result.rank - 4950) < 4 * result.stderr


def test_hyperparameter_messages():
    with pytest.raises(
        matrank.MatrankValueError, match=r"`block_size` must be an int in \[1, inf\); got 0"
    ):
        matrank.LanczosRank(block_size=0)
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`n_probes` must be an int in \[2, inf\) or None; got 1",
    ):
        matrank.LanczosRank(n_probes=1)
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`probes` must be one of 'sphere', 'rademacher', 'gaussian'; got 'normal'",
    ):
        matrank.LanczosRank(probes="normal")
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`max_matvecs` must be an int in \[1, inf\) or None; got -5",
    ):
        matrank.estimate_rank(np.eye(3), method="lanczos", max_matvecs=-5)


def test_sparse_input_stays_sparse():
    matrix = scipy.sparse.csr_array(laplacian(20, 30, seed=14))
    assert matrank.estimate_rank(matrix, method="lanczos", seed=0).rank == 580


def _krylov(matrix, seed):
    A = torch.from_numpy(np.asarray(matrix, dtype=np.float64))
    return BlockKrylov(
        lambda V: A @ V,
        A.shape[0],
        torch.float64,
        torch.device("cpu"),
        torch.Generator().manual_seed(seed),
    )


def test_floor_threshold_counts_an_isolated_tiny_eigenvalue(isolated_smallest):
    matrix = isolated_smallest
    plateau = matrank.estimate_rank(matrix, method="lanczos", seed=0)
    floor = matrank.estimate_rank(matrix, method="lanczos", seed=0, threshold="floor")
    assert plateau.rank == 40 and floor.rank == 41
    assert floor.diagnostics.certified
    assert floor.threshold == floor.diagnostics.noise_floor


@pytest.mark.parametrize("restart", [True, False])
def test_a_rank_near_n_switches_to_the_dense_path(monkeypatch, restart):
    import scipy.sparse.linalg

    # Whether to read H again from the identity or to complete the basis is timed; fixed
    # here so that the products are exact: the completed basis's columns count towards
    # n, a restart spends them again
    monkeypatch.setattr(
        "matrank.estimators.lanczos.dense._restart_is_cheaper", lambda *args: restart
    )
    matrix = rotated_spectrum(600, 480, cond=1e3, seed=0)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    result = matrank.estimate_rank(operator, method="lanczos", seed=0)
    assert result.diagnostics.path == "dense (switched)"
    assert result.rank == 480 and result.diagnostics.certified
    switched_at = result.diagnostics.switched_to_dense_at
    assert 200 <= switched_at < 600
    assert "(a third of n = 600)" in result.diagnostics.dense_reason
    assert ("dense_restart" in result.diagnostics) is restart
    assert result.cost["matvecs"] == 600 + (switched_at if restart else 0)
    if restart:  # dense_max=0 keeps the Krylov count (once is enough: seconds)
        kept = matrank.estimate_rank(operator, method="lanczos", seed=0, dense_max=0)
        assert kept.diagnostics.path == "krylov" and kept.rank == 480


def test_without_a_pilot_a_count_that_cannot_certify_switches_past_2r_plus_200():
    """Below ``pilot_from`` the count has no pilot. τ a ten-millionth above an
    eigenvalue (1e-10 apart: the dense path decides it, no Ritz interval does short of
    ``R^n``): Krylov alone grows its basis to all of ``R^n``. Past ``2r + 200`` columns
    uncertain, what a count with a gap at τ certifies within, the time besides products
    (the stepping clock) reaching STALLED_SHARE of the dense path switches to it; a
    count with a gap is unaffected (τ = 1e-3 certifies at 768 on both paths)."""
    import scipy.sparse.linalg

    from matrank.estimators.lanczos.dense import STALLED_EXTRA

    n = 1500
    spectrum = np.exp(-np.arange(n) / 30.0)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    operator = scipy.sparse.linalg.aslinearoperator((q * spectrum) @ q.T)
    tau = float(spectrum[207]) * (1 + 1e-7)
    truth = int((spectrum > tau).sum())
    switched = matrank.LanczosRank(threshold=tau).estimate(operator, seed=0)
    krylov = matrank.LanczosRank(threshold=tau, dense_max=0).estimate(operator, seed=0)
    for result in (switched, krylov):
        assert result.status is matrank.Status.CONVERGED and result.rank == truth == 207
    assert krylov.diagnostics.basis_size == n and krylov.cost["matvecs"] == n
    diagnostics = switched.diagnostics
    assert diagnostics.pilot is None and diagnostics.path == "dense (switched)"
    assert "no pilot below pilot_from" in diagnostics.dense_reason
    assert 2 * truth + STALLED_EXTRA <= diagnostics.switched_to_dense_at < n
    gapped = matrank.LanczosRank(threshold=1e-3).estimate(operator, seed=0)
    assert gapped.diagnostics.path == "krylov" and gapped.cost["matvecs"] == 768


def test_a_gapless_spectrum_switches_to_the_dense_path_once_krylov_stalls(monkeypatch):
    """λ_i = exp(−i/30): 208 eigenvalues above τ = 1e-3, neighbours 3 % apart at τ,
    so Ritz values crowd τ and certify slowly. Once the basis passes its own count
    by 15 % uncertain, the time besides products (the stepping clock: a function of
    the control flow) reaching STALLED_SHARE of the dense path switches to it, and the
    count is the dense one. Without the switch Krylov certifies the same count."""
    import scipy.sparse.linalg

    from matrank.estimators.lanczos import pilot
    from matrank.estimators.lanczos.dense import STALLED_SHARE

    n = 1500
    spectrum = np.exp(-np.arange(n) / 30.0)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    operator = scipy.sparse.linalg.aslinearoperator((q * spectrum) @ q.T)
    truth = int((spectrum > 1e-3).sum())
    assert truth == 208 and 0 < STALLED_SHARE < 0.25
    # the pilot's unresolved rule off: it would send this spectrum to the dense path
    # before any basis (tested below)
    with monkeypatch.context() as patch:
        patch.setattr(pilot, "UNRESOLVED_FRACTION", 1.0)
        switched = matrank.LanczosRank(threshold=1e-3, pilot_from=1).estimate(
            operator, seed=0
        )
    krylov = matrank.LanczosRank(threshold=1e-3, pilot_from=1, dense_max=0).estimate(
        operator, seed=0
    )
    for result in (switched, krylov):
        assert result.status is matrank.Status.CONVERGED and result.rank == truth
    assert switched.diagnostics.path == "dense (switched)"
    assert "no gap at τ" in switched.diagnostics.dense_reason
    assert krylov.diagnostics.dense_reason is None
    at = switched.diagnostics.switched_to_dense_at
    assert truth < at < krylov.diagnostics.basis_size
    assert krylov.diagnostics.path == "krylov"
    # The pilot's quadrature count still grows with its steps here (a spectrum it
    # cannot resolve at τ) and is above n/8: straight to the dense path, saying why,
    # before any basis (the switch's products are no fewer: its basis completes to R^n)
    piloted = matrank.LanczosRank(threshold=1e-3, pilot_from=1).estimate(operator, seed=0)
    assert piloted.status is matrank.Status.CONVERGED and piloted.rank == truth
    assert piloted.diagnostics.path == "dense" and piloted.diagnostics.pilot["growing"]
    assert "still growing" in piloted.diagnostics.dense_reason
    assert piloted.cost["matvecs"] <= switched.cost["matvecs"]
    assert piloted.diagnostics.switched_to_dense_at == 0  # no basis before it
    # the pilot's products are dear on the suite's clock against a QR and two products
    # of n = 1500: their span is completed, and only the rest of R^n is read
    kept = piloted.diagnostics.kept_products
    spent = piloted.diagnostics.pilot["matvecs"]
    assert 0 < kept["columns"] <= kept["of"] == spent
    assert piloted.cost["matvecs"] == spent + n - kept["columns"]
    assert kept["defect"] < 1e-12  # λmax = 1: the kept image matches H to rounding


def _hidden_operator(n=20000):
    import scipy.sparse.linalg

    spectrum = np.zeros(n)
    spectrum[:50] = np.linspace(1.0, 2.0, 50)
    spectrum[50] = 1e-10  # between numpy's floor (8.9e-12) and the resolution
    return spectrum, scipy.sparse.linalg.aslinearoperator(scipy.sparse.diags(spectrum))


def test_a_gaussian_test_lowers_the_floor_from_the_resolution_to_eta():
    """A fresh block of b columns holds ≈ sqrt(b/n) of an eigenvector it must reveal,
    and an image below the deflation tolerance δ is dropped: Krylov alone certifies
    nothing under 3δ·sqrt((n − k)/b), which hides the eigenvalue at 1e-10. A Gaussian
    test measures what the basis leaves out, its residual joins the basis, and the
    next test's bound η lets Weyl certify the count down to the noise floor."""
    spectrum, operator = _hidden_operator()
    n = spectrum.size
    # δ is relative to the largest product norm seen, between 1 and ‖A‖ = 2 here
    delta = 100 * math.sqrt(n) * np.finfo(np.float64).eps
    numpy_floor = n * np.finfo(np.float64).eps * 2.0
    for threshold in (5e-11, "floor"):
        result = matrank.LanczosRank(threshold=threshold).estimate(operator, seed=0)
        assert result.status is matrank.Status.CONVERGED, result.status
        assert result.rank == (spectrum > result.threshold).sum() == 51
        sharpened = result.diagnostics.sharpened
        k = result.diagnostics.basis_size
        resolution = 3 * delta * math.sqrt((n - k) / 32)
        assert 0.95 <= sharpened["resolution"] / resolution <= 2.1
        assert sharpened["resolution"] > 1e-10 > 100 * sharpened["eta"]
        floor = max(sharpened["eta"], numpy_floor)
        assert result.diagnostics.noise_floor == pytest.approx(floor, rel=1e-9)
        assert result.cost["matvecs"] <= 64 + 2 * 51 + 200
    chosen = matrank.LanczosRank().estimate(operator, seed=0)  # the widest gap
    assert chosen.status is matrank.Status.CONVERGED and chosen.rank == 50
    below = matrank.LanczosRank(threshold=1e-13).estimate(operator, seed=0)
    assert below.status is matrank.Status.BELOW_RESOLUTION
    assert not below.status.converged and "threshold=" in below.status.value


def test_a_lowest_plateau_cut_short_by_the_resolution_is_tested_down_to_rounding():
    """The smallest eigenvalue, 4e-4, lies 3.4 decades under the rest and 5.9 above the
    Krylov resolution: the plateau under it competes with the gap above it (within a
    factor 2), so without the Gaussian tests the count is AMBIGUOUS_PLATEAU. Down to
    the noise floor (8.9e-12) the plateau spans 7.7 decades, the gap above no longer
    competes, and the count, 51, is what the dense eigendecomposition says (a deep
    linear net at d = 32, seed 0, where the lone smallest eigenvalue sits this way)."""
    import scipy.sparse.linalg

    n = 20000
    spectrum = np.zeros(n)
    spectrum[:50] = np.linspace(1.0, 2.0, 50)
    spectrum[50] = 4e-4
    operator = scipy.sparse.linalg.aslinearoperator(scipy.sparse.diags(spectrum))
    # the dense answer: the plateau rule on the eigenvalues above numpy's floor
    dense = plateau_threshold(spectrum, 2.0 * n * np.finfo(np.float64).eps)
    assert not dense.ambiguous and (spectrum > dense.threshold).sum() == 51
    result = matrank.LanczosRank().estimate(operator, seed=0)
    assert result.status is matrank.Status.CONVERGED, result.status
    assert result.rank == (spectrum > result.threshold).sum() == 51
    sharpened = result.diagnostics.sharpened
    assert sharpened is not None and sharpened["eta"] < 1e-10
    assert result.diagnostics.plateau["runner_up_count"] is None
    assert result.cost["matvecs"] <= 64 + 2 * 51 + 200


def test_a_basis_that_spans_the_space_applies_nothing_more():
    # curvature_ranks.py: the sharpen step's test block joined a basis that had grown to
    # all 1626 dimensions of a CNN's GGN; the empty block went to the model, whose loop
    # over no columns raised (torch.stack of nothing)
    matrix = rotated_spectrum(12, 12, cond=10.0, seed=0)
    A = torch.from_numpy(matrix)
    asked = []

    def product(V):
        asked.append(V.shape[1])
        if V.shape[1] == 0:
            raise RuntimeError("stack expects a non-empty TensorList")
        return A @ V

    krylov = BlockKrylov(
        product, 12, torch.float64, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    while krylov.size < 12:
        krylov.extend(4)
    asked.clear()
    assert krylov.extend(4, given=torch.randn(12, 3, dtype=torch.float64)) == 0
    assert krylov.extend(4) == 0 and asked == [] and krylov.size == 12


def test_the_meter_answers_an_empty_block_without_asking_the_oracle():
    from matrank._meter import CostMeter

    class Refuses(matrank.adapters.DenseOracle):
        def hvp(self, V):
            assert V.shape[1] > 0, "asked for no products"
            return super().hvp(V)

    meter = CostMeter(Refuses(torch.eye(5, dtype=torch.float64)))
    empty = meter.hvp(torch.zeros(5, 0, dtype=torch.float64))
    assert empty.shape == (5, 0) and empty.dtype == torch.float64 and meter.matvecs == 0
    assert meter.hvp(torch.ones(5, 1, dtype=torch.float64)).shape == (5, 1)


def test_a_count_under_the_pilots_estimate_does_not_switch_for_growing():
    """The dense switch with a pilot: a count still growing block by block but under
    the pilot's (resolved) estimate prices the basis it needs and stays, however long
    the run has taken besides products (a d = 32 deep linear net switched at basis 736
    of its 1024 on a quarter-share rule, 5920 products for 1376); past the estimate by
    three standard errors and a block the pilot bounds nothing, and the unresolved rule
    switches."""
    from types import SimpleNamespace

    from matrank.estimators.lanczos.dense import dense_is_cheaper

    n = 5120
    meter = SimpleNamespace(timed_matvecs=800, hvp_seconds=800 * 1e-3)
    # ten times the dense path (n products of 1 ms and an eigvalsh) spent besides them
    run = SimpleNamespace(meter=meter, seconds=lambda: meter.hvp_seconds + 10 * n * 1e-3)
    pilot = (959.6, 15.4)
    assert dense_is_cheaper(run, n, 768, 736, pilot, block=32) is None
    reason = dense_is_cheaper(run, n, 1120, 1100, pilot, block=32)
    assert reason is not None and "passed the pilot's 960" in reason


def test_the_pilot_follows_a_growing_count_only_while_it_could_reach_the_dense_rule():
    """The pilot's stopping rule on the counts its quadrature printed (4 probes): the
    trained MLP's Hessian (n = 17,610; 12,536 above τ) grows faster after 16 steps and
    is followed to 128 steps; a gapped rank of 300 over four decades (n = 6000) grows
    slower and stops at 32, where its growth cannot reach n/8 by the last step."""
    from matrank.estimators.lanczos.pilot import _enough

    checks = [8, 16, 32, 64]
    mlp = [98.8, 164.3, 727.8, 2189.0]
    for k in range(1, len(mlp) + 1):
        assert not _enough(mlp[:k], 17610, 128, checks)
    gapped = [179.7, 218.2, 258.6]
    assert not _enough(gapped[:2], 6000, 93, checks)  # one ratio is too short to judge
    assert _enough(gapped, 6000, 93, checks)
    assert _enough([50.0, 51.0], 6000, 93, checks)  # converged
    assert _enough([3000.0, 9000.0], 17610, 128, checks)  # half of n: dense
