"""The randomized range sketch (``matrank.numerics.sketch``) against dense eigenvalues:
its Weyl bound holds, a count it certifies is the true count, and it certifies a gapped
low rank in about ``r + 2·10`` products."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from matrank.numerics.sketch import TEST_COLUMNS, RangeSketch
from matrank.testing import rotated_spectrum


def _sketch(matrix, first, tests, seed=0, pairs=None):
    """``first`` Gaussian pairs (or ``pairs``), then ``tests`` blocks of test columns."""
    A = torch.as_tensor(matrix)
    n = A.shape[0]
    generator = torch.Generator().manual_seed(seed)
    sketch = RangeSketch(n, A.dtype, A.device)
    if pairs is not None:
        sketch.add(pairs, A @ pairs, test=False)
    if first:
        omega = torch.randn(n, first, generator=generator, dtype=A.dtype)
        sketch.add(omega, A @ omega, test=False)
    ritz = []
    for _ in range(tests):
        omega = torch.randn(n, TEST_COLUMNS, generator=generator, dtype=A.dtype)
        sketch.add(omega, A @ omega, test=True)
        ritz.append(sketch.ritz())
    return sketch, ritz


def _weyl_holds(matrix, ritz):
    """Every eigenvalue of ``A`` within ``η`` of the sketch's, padded with zeros."""
    truth = np.sort(np.linalg.eigvalsh(matrix))
    padded = np.zeros(matrix.shape[0])
    values = ritz.values.numpy()
    negative, positive = values[values < 0], values[values >= 0]
    padded[: negative.size] = negative
    padded[padded.size - positive.size :] = positive
    return np.abs(np.sort(padded) - truth).max() <= ritz.eta


def test_a_gapped_low_rank_is_certified_in_r_plus_two_test_blocks():
    n, rank = 800, 60
    matrix = rotated_spectrum(n, rank, cond=1e3, seed=1)
    # ten directions short: the first test block finds them, the second certifies
    sketch, ritz = _sketch(matrix, rank - 10, tests=2)
    last = ritz[-1]
    assert sketch.width == rank + TEST_COLUMNS
    assert sketch.size >= rank and _weyl_holds(matrix, last)
    assert ritz[0].eta > 1e-3 and last.eta < 1e-8
    for threshold in (1e-6, 1e-4, 5e-4):
        assert last.certain(threshold)
        assert int((last.values.abs() > threshold).sum()) == rank
    # a threshold within η of an eigenvalue, or under η, is not certain
    smallest = float(np.sort(np.abs(np.linalg.eigvalsh(matrix)))[-rank])
    assert not last.certain(smallest * (1 - 1e-15))
    assert not last.certain(last.eta / 2)


def test_before_a_test_nothing_is_certain():
    matrix = rotated_spectrum(200, 10, seed=0)
    sketch, _ = _sketch(matrix, 30, tests=0)
    assert sketch.ritz().eta == float("inf") and not sketch.ritz().certain(0.5)


def test_non_gaussian_pairs_join_and_the_count_stays_exact():
    # the Lanczos pilot's pairs are orthonormal Krylov columns, not Gaussian
    n, rank = 600, 40
    matrix = rotated_spectrum(n, rank, cond=1e2, negative=7, seed=2)
    krylov = torch.linalg.qr(torch.randn(n, 50, dtype=torch.float64)).Q
    sketch, ritz = _sketch(matrix, 0, tests=2, pairs=krylov)
    assert sketch.size >= rank and _weyl_holds(matrix, ritz[-1])
    assert ritz[-1].certain(1e-4)
    assert int((ritz[-1].values < -1e-4).sum()) == 7


def test_an_eigenvalue_at_1e_minus_10_of_the_largest_is_found_or_not_certified():
    n, rank = 500, 30
    matrix = rotated_spectrum(n, rank, cond=1e2, seed=3)
    vector = np.linalg.svd(matrix)[0][:, -1]  # a null direction
    matrix = matrix + 1e-10 * np.outer(vector, vector)
    _, ritz = _sketch(matrix, rank + 1, tests=2)
    last = ritz[-1]
    assert _weyl_holds(matrix, last)
    for threshold in (1e-11, 3e-11, 5e-11):
        if last.certain(threshold):
            assert int((last.values.abs() > threshold).sum()) == rank + 1
    assert last.certain(1e-6)


@given(
    rank=st.integers(0, 80),
    cond=st.floats(1.0, 1e8),
    noise_gap=st.sampled_from([None, 1e2, 1e6, 1e10]),
    first=st.integers(0, 100),
    tests=st.integers(1, 4),
    log_threshold=st.floats(-14, 0),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=40, deadline=None)
def test_a_certified_count_is_the_dense_count(
    rank, cond, noise_gap, first, tests, log_threshold, seed
):
    n = 300
    matrix = rotated_spectrum(n, rank, cond=cond, noise_gap=noise_gap, seed=seed)
    _, ritz = _sketch(matrix, first, tests, seed=seed)
    threshold = 10.0**log_threshold
    truth = int((np.abs(np.linalg.eigvalsh(matrix)) > threshold).sum())
    for estimate in ritz:
        assert _weyl_holds(matrix, estimate)
        if estimate.certain(threshold):
            assert int((estimate.values.abs() > threshold).sum()) == truth
