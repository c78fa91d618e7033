"""The dense path from products already taken (matrank.estimators.completion)."""

import re

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

import matrank
from matrank.estimators.completion import (
    KEPT_CONDITION,
    Kept,
    extended,
    kept_span,
    offering,
)
from matrank.testing import haar_orthogonal


def _operator(matrix, clock=None, seconds=0.0):
    def matvec(vector):
        if clock is not None:
            clock.advance(seconds)
        return matrix @ vector

    return scipy.sparse.linalg.LinearOperator(
        matrix.shape, matvec=matvec, rmatvec=matvec, dtype=np.float64
    )


def _rotated(values, seed):
    basis = haar_orthogonal(len(values), np.random.default_rng(seed))
    return (basis * values) @ basis.T


def _lanczos_vectors(matrix, steps, seed):
    """Plain Lanczos vectors, no reorthogonalization: they lose orthogonality once a
    Ritz value converges, as the pilot's do."""
    rng = np.random.default_rng(seed)
    vectors = [rng.standard_normal(matrix.shape[0])]
    vectors[0] /= np.linalg.norm(vectors[0])
    previous, beta = np.zeros_like(vectors[0]), 0.0
    for _ in range(steps - 1):
        w = matrix @ vectors[-1] - beta * previous
        w -= (w @ vectors[-1]) * vectors[-1]
        beta = np.linalg.norm(w)
        previous = vectors[-1]
        vectors.append(w / beta)
    return np.stack(vectors, axis=1)


def test_the_kept_span_is_orthonormal_well_conditioned_and_mapped_by_h():
    matrix = _rotated(np.geomspace(1.0, 1e-12, 200), seed=0)
    krylov = _lanczos_vectors(matrix, 60, seed=1)  # the top Ritz values converge by 60
    duplicate = krylov[:, :5] + 1e-14 * np.random.default_rng(2).standard_normal((200, 5))
    vectors = np.concatenate([np.eye(200)[:, :8], krylov, duplicate], axis=1)
    kept = kept_span(torch.from_numpy(vectors), torch.from_numpy(matrix @ vectors))
    q, image = kept.basis.numpy(), kept.image.numpy()
    k = q.shape[1]
    assert kept.taken == 73 and 8 < k <= 68  # the near-copies are left out
    np.testing.assert_allclose(q.T @ q, np.eye(k), atol=1e-13)
    # H·Q from the products alone, within the condition bound of their rounding
    assert np.abs(image - matrix @ q).max() < 1e3 * KEPT_CONDITION * np.finfo(float).eps


@given(
    rank=st.integers(1, 60),
    taken=st.integers(1, 80),
    seed=st.integers(0, 2**16),
)
def test_a_count_from_kept_products_is_the_dense_count(rank, taken, seed):
    rng = np.random.default_rng(seed)
    values = np.zeros(80)
    values[:rank] = np.geomspace(1.0, 1e-6, rank) * rng.choice([-1.0, 1.0], rank)
    matrix = _rotated(values, seed)
    vectors = np.concatenate(
        [
            _lanczos_vectors(matrix, max(1, taken // 2), seed),
            rng.standard_normal((80, taken)),
        ],
        axis=1,
    )[:, :taken]
    kept = kept_span(torch.from_numpy(vectors), torch.from_numpy(matrix @ vectors))
    with offering(kept):
        result = matrank.ExactRank(threshold=1e-8).estimate(_operator(matrix))
    columns = result.diagnostics.kept_products["columns"]
    assert columns == kept.basis.shape[1] >= 1
    assert result.cost["matvecs"] == 80 - columns
    assert result.rank == rank
    np.testing.assert_allclose(
        np.sort(result.diagnostics.eigenvalues), np.sort(values), atol=1e-12
    )


def test_kept_products_that_do_not_match_h_raise_the_floor():
    """A kept image off by 1e-6 (a model changed between the products, say) is measured
    where it meets the fresh products, and no eigenvalue under that is counted."""
    values = np.zeros(100)
    values[:30] = np.geomspace(1.0, 1e-9, 30)
    matrix = _rotated(values, seed=3)
    vectors = np.random.default_rng(4).standard_normal((100, 20))
    kept = kept_span(torch.from_numpy(vectors), torch.from_numpy(matrix @ vectors))
    honest = matrank.ExactRank(threshold="floor")
    with offering(kept):
        assert honest.estimate(_operator(matrix)).rank == 30
    wrong = Kept(kept.basis, kept.image + 1e-6 * torch.randn_like(kept.image), kept.taken)
    with offering(wrong):
        result = honest.estimate(_operator(matrix))
    defect = result.diagnostics.kept_products["defect"]
    assert 1e-6 < defect < 1e-4
    assert result.diagnostics.noise_floor >= defect
    assert result.rank < 30  # the eigenvalues under the defect are not claimed


def test_offered_products_serve_one_estimate_of_their_own_dimension():
    matrix = _rotated(np.r_[np.ones(5), np.zeros(45)], seed=5)
    vectors = torch.from_numpy(np.random.default_rng(6).standard_normal((50, 10)))
    kept = kept_span(vectors, torch.from_numpy(matrix) @ vectors)
    with offering(kept):  # another dimension: read in full, and the offer is spent
        other = matrank.ExactRank().estimate(_operator(np.eye(40)))
        spent = matrank.ExactRank().estimate(_operator(matrix))
    with offering(kept):
        first = matrank.ExactRank().estimate(_operator(matrix))
        second = matrank.ExactRank().estimate(_operator(matrix))
    assert spent.cost["matvecs"] == 50 and spent.diagnostics.kept_products is None
    assert first.cost["matvecs"] == 40 and first.rank == 5
    assert second.cost["matvecs"] == 50 and second.diagnostics.kept_products is None
    assert other.cost["matvecs"] == 40 and other.rank == 40
    assert matrank.ExactRank().estimate(_operator(matrix)).cost["matvecs"] == 50


@pytest.mark.parametrize("seconds", [1e-3, 1e-6])
def test_auto_keeps_its_pilots_products_where_reading_them_again_costs_more(clock, seconds):
    """A gapless spectrum sends auto to the dense path after its calibration (32 unit
    columns, timed twice) and pilot. At 1 ms a product on the suite's clock their span
    is completed, not read again; at 1 µs reading it again is cheaper."""
    matrix = _rotated(np.geomspace(1.0, 1e-9, 600), seed=7)
    result = matrank.estimate_rank(_operator(matrix, clock, seconds), seed=0)
    reason = result.diagnostics.auto
    assert result.method == "exact"
    found = re.search(r"the pilot counted [^(]*\((\d+) products\)", reason)
    pilot = int(found.group(1)) if found else 0
    truth = matrank.estimate_rank(matrix, method="exact")
    assert result.rank == truth.rank and result.threshold == pytest.approx(truth.threshold)
    kept = result.diagnostics.kept_products
    if seconds == 1e-6:  # too cheap to pilot; completing would cost more than 32 products
        assert kept is None and result.cost["matvecs"] == 64 + 600 and pilot == 0
        return
    assert pilot > 0 and 32 < kept["columns"] <= 32 + pilot and kept["of"] == 32 + pilot
    assert result.cost["matvecs"] == 64 + pilot + 600 - kept["columns"]
    np.testing.assert_allclose(
        result.diagnostics.eigenvalues, truth.diagnostics.eigenvalues, atol=1e-13
    )


@pytest.mark.parametrize("scale", [1e-250, 1.0, 1e250])
def test_kept_products_are_read_in_the_runs_units_at_every_scale(clock, scale):
    """Outside float64's safe window the run scales its products by a power of two; the
    kept ones, taken by auto from the operator itself, are scaled alike."""
    values = np.zeros(600)
    values[:300] = np.geomspace(1.0, 1e-6, 300)
    matrix = _rotated(values, seed=8)
    result = matrank.estimate_rank(_operator(scale * matrix, clock, 1e-3), seed=0)
    assert result.method == "exact" and result.diagnostics.kept_products["columns"] > 32
    assert result.rank == 300 and result.status is matrank.Status.CONVERGED
    np.testing.assert_allclose(
        np.sort(result.diagnostics.eigenvalues) / scale, np.sort(values), atol=1e-12
    )


@given(
    k=st.integers(1, 40),
    fresh=st.integers(0, 20),
    near=st.integers(0, 10),
    seed=st.integers(0, 2**16),
)
def test_a_basis_extended_by_a_kept_span_is_orthonormal_and_its_corner_h_projected(
    k, fresh, near, seed
):
    """A Krylov basis ``Q`` (``QᵀHQ`` known) extended by the kept span's directions
    outside it: ``[Q, P]`` orthonormal, its corner ``[Q, P]ᵀH[Q, P]`` from the kept
    images alone, and directions within 1e-3 of ``Q`` left out (their images would
    carry the rounding a thousandfold), Gaussian ones not."""
    rng = np.random.default_rng(seed)
    n = 60
    values = rng.standard_normal(n) * np.geomspace(1.0, 1e-8, n)
    matrix = _rotated(values, seed)
    basis = np.linalg.qr(rng.standard_normal((n, k)))[0]
    vectors = np.concatenate(
        [
            rng.standard_normal((n, fresh)),
            basis @ rng.standard_normal((k, near)) + 1e-4 * rng.standard_normal((n, near)),
        ],
        axis=1,
    )
    if vectors.shape[1] == 0:
        return
    kept = kept_span(torch.from_numpy(vectors), torch.from_numpy(matrix @ vectors))
    Q = torch.from_numpy(basis)
    grown, corner, added, asymmetry = extended(Q, Q.T @ torch.from_numpy(matrix) @ Q, kept)
    assert added <= min(fresh, n - k)
    assert (added > 0) == (fresh > 0)  # the near directions add nothing by themselves
    whole = grown.numpy()
    assert whole.shape == (n, k + added)
    np.testing.assert_allclose(whole[:, :k], basis)
    np.testing.assert_allclose(whole.T @ whole, np.eye(k + added), atol=1e-12)
    np.testing.assert_allclose(corner.numpy(), whole.T @ matrix @ whole, atol=1e-12)
    assert asymmetry < 1e-12


def test_auto_hands_its_products_to_a_krylov_count_that_switches_dense(clock):
    """An indefinite cluster near zero hides from auto's pilot (17 of 265 above τ), so
    auto prices a Krylov count. That count takes auto's pilot as its own: once its count
    passes the pilot's estimate it switches to the dense path (at a basis of 96, not
    the third of ``n`` it would explore without one), where the calibration's and
    pilot's products extend its basis instead of being taken again: the count and
    eigenvalues are the dense ones."""
    values = np.zeros(600)
    values[:15] = np.geomspace(1.0, 0.1, 15)
    values[15:265] = np.geomspace(1e-6, 2e-6, 250) * np.where(np.arange(250) % 2, 1, -1)
    matrix = _rotated(values, seed=9)
    result = matrank.estimate_rank(_operator(matrix, clock, 1e-3), threshold=1e-8, seed=0)
    reason, diagnostics = result.diagnostics.auto, result.diagnostics
    assert result.method == "lanczos" and diagnostics.path == "dense (switched)", reason
    pilot = int(re.search(r"the pilot counted [^(]*\((\d+) products\)", reason).group(1))
    assert diagnostics.pilot["matvecs"] == pilot and diagnostics.pilot["path"] == "krylov"
    assert "passed the pilot's 17" in diagnostics.dense_reason
    assert diagnostics.switched_to_dense_at < 600 // 3
    kept = diagnostics.kept_products
    assert kept["of"] == 32 + pilot and 0 < kept["columns"] <= 32 + pilot
    assert kept["defect"] < 1e-13
    # 64 timing products and the pilot's, then n less the kept directions
    assert result.cost["matvecs"] == 64 + pilot + 600 - kept["columns"]
    truth = matrank.estimate_rank(matrix, method="exact", threshold=1e-8)
    assert result.rank == truth.rank == 265
    np.testing.assert_allclose(
        diagnostics.ritz_values, truth.diagnostics.eigenvalues, atol=1e-13
    )
