"""Invariants of the numerical rank, on hypothesis-generated known-rank matrices."""

import itertools

import numpy as np
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

import matrank
from matrank.testing import haar_orthogonal
from matrank.testing.strategies import low_rank_psd


def exact_rank(matrix, **options):
    return matrank.estimate_rank(matrix, method="exact", **options).rank


@given(low_rank_psd())
def test_exact_recovers_the_constructed_rank(case):
    matrix, rank = case
    assert exact_rank(matrix) == rank


@given(low_rank_psd(noise_band=True))
def test_exact_sees_through_a_noise_band(case):
    matrix, rank = case
    assert exact_rank(matrix) == rank


@given(low_rank_psd(), st.integers(0, 2**32 - 1))
def test_invariant_under_orthogonal_similarity(case, seed):
    matrix, rank = case
    q = haar_orthogonal(matrix.shape[0], np.random.default_rng(seed))
    rotated = q @ matrix @ q.T
    assert exact_rank(0.5 * (rotated + rotated.T)) == exact_rank(matrix) == rank


@given(low_rank_psd(), st.floats(1e-6, 1e6))
def test_invariant_under_positive_scaling(case, scale):
    matrix, rank = case
    assert exact_rank(scale * matrix) == rank


@given(low_rank_psd(max_n=10, max_cond=1e2), low_rank_psd(max_n=10, max_cond=1e2))
def test_kronecker_product_multiplies_ranks(a, b):
    (matrix_a, rank_a), (matrix_b, rank_b) = a, b
    assert exact_rank(np.kron(matrix_a, matrix_b)) == rank_a * rank_b


@given(low_rank_psd(max_n=32), low_rank_psd(max_n=32))
def test_direct_sum_adds_ranks(a, b):
    (matrix_a, rank_a), (matrix_b, rank_b) = a, b
    assert exact_rank(scipy.linalg.block_diag(matrix_a, matrix_b)) == rank_a + rank_b


@given(low_rank_psd(), st.lists(st.floats(1e-14, 10.0), min_size=2, max_size=6))
def test_bounded_and_monotone_in_the_threshold(case, thresholds):
    matrix, _ = case
    counts = [exact_rank(matrix, threshold=t) for t in sorted(thresholds)]
    assert all(0 <= c <= matrix.shape[0] for c in counts)
    assert all(a >= b for a, b in itertools.pairwise(counts))
