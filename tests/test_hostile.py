"""What an adversarial pass found (issue 22): hostile inputs get a right answer, a
non-converged status naming the cause, or a MatrankError naming it -- never a confident
wrong number and never a crash from deep inside torch or numpy."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import matrank
from matrank.numerics.threshold import noise_floor, resolve_threshold
from matrank.testing import rotated_spectrum

A = rotated_spectrum(30, 5, cond=2.0, seed=0)  # 5 eigenvalues in [0.5, 1], 25 zeros
COUNTING = ["exact", "lanczos", "polynomial", "auto"]

# decades of scale each input dtype holds with room for a spectrum of one decade
SCALES = {"float16": 2, "bfloat16": 30, "float32": 30, "float64": 300}
EPS = {
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}


def as_input(matrix64, dtype):
    if dtype == "bfloat16":
        return torch.tensor(matrix64).to(torch.bfloat16)
    return matrix64.astype(dtype)


def dense_count(matrix, dtype):
    """The count in float64 on the float64 version of the input, with its dtype's eps."""
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.double().numpy()
    matrix = np.asarray(matrix, dtype=np.float64)
    peak = np.abs(matrix).max()
    if peak == 0:
        return 0
    # a power of two brings the entries near 1 exactly: no overflow in the rule's math
    values = np.abs(np.linalg.eigvalsh(matrix * 2.0 ** -math.floor(math.log2(peak))))
    floor = noise_floor(values.max(), len(values), EPS[dtype])
    scaled = values
    threshold, _ = resolve_threshold(scaled, floor, None)
    return int((scaled > threshold).sum())


@pytest.mark.parametrize("method", COUNTING)
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1.0, 1e150, 1e300])
def test_a_positive_multiple_has_the_same_rank_at_every_scale(method, scale):
    result = matrank.estimate_rank(A * scale, method=method, seed=0)
    assert result.rank == 5 and result.status is matrank.Status.CONVERGED
    assert 0.5 * scale > result.threshold > 0
    identity = matrank.estimate_rank(np.eye(30) * scale, method=method, seed=0)
    assert identity.rank == 30 and math.isfinite(identity.threshold)


@given(
    dtype=st.sampled_from(list(SCALES)),
    exponent=st.floats(-1.0, 1.0),
    n=st.integers(4, 20),
    rank=st.integers(0, 20),
    seed=st.integers(0, 2**16),
)
def test_counts_agree_with_the_dense_count_across_scales_and_dtypes(
    dtype, exponent, n, rank, seed
):
    rank = min(rank, n)
    scale = 10.0 ** (exponent * SCALES[dtype])
    matrix = as_input(rotated_spectrum(n, rank, cond=2.0, seed=seed) * scale, dtype)
    expected = dense_count(matrix, dtype)
    for method in ("exact", "lanczos", "polynomial"):
        result = matrank.estimate_rank(matrix, method=method, seed=0)
        # without a plateau both count at the floor, so they agree there too
        assert result.rank == expected, (method, result.rank, expected, result.status)


@pytest.mark.parametrize("method", COUNTING)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_half_precision_is_counted_with_its_own_eps(method, dtype):
    result = matrank.estimate_rank(as_input(A, dtype), method=method, seed=0)
    assert result.rank == 5
    eps = EPS[dtype]
    assert result.diagnostics["noise_floor"] >= 30 * eps * 0.5  # λmax ≥ 0.5
