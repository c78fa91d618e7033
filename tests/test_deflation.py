"""The deflated count's two bounds: Li & Li's test and the bound on the complement."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from matrank.numerics.deflation import complement_bound, lanczos_margin, separated
from matrank.testing import haar_orthogonal


def _count(matrix: np.ndarray, threshold: float) -> int:
    return int((np.abs(np.linalg.eigvalsh(matrix)) > threshold).sum())


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 8),
    st.floats(0.0, 0.8),
    st.floats(0.0, 0.99),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_a_separated_count_is_the_dense_count(
    counted, rest_size, coupling, rest, aligned, seed
):
    # A = [[Θ, Eᵀ], [E, C]] with |θ| > τ = 1, ‖E‖ = coupling, ‖C‖ = rest: whenever the
    # test says the count is len(Θ), eigvalsh agrees. ``aligned``: the worst case, the
    # coupling joins C's top (+rest) to the smallest θ made negative, which pushes the
    # top up towards τ (random couplings rarely come close)
    rng = np.random.default_rng(seed)
    theta = rng.uniform(1.0, 3.0, counted) * rng.choice([-1.0, 1.0], counted)
    if aligned:
        theta[0] = -rng.uniform(1.0, 1.5)
        c = np.diag(np.r_[rest, rng.uniform(-rest, rest, rest_size - 1)])
        e = np.zeros((rest_size, counted))
        e[0, 0] = coupling
    else:
        c = rng.standard_normal((rest_size, rest_size))
        c = c + c.T
        c *= rest / max(np.abs(np.linalg.eigvalsh(c)).max(), 1e-300)
        e = rng.standard_normal((rest_size, counted))
        e *= coupling / max(np.linalg.norm(e, 2), 1e-300)
    matrix = np.block([[np.diag(theta), e.T], [e, c]])
    if separated(theta, coupling, rest, 1.0):
        assert _count(matrix, 1.0) == counted


@pytest.mark.parametrize("coupling", np.linspace(0.05, 1.0, 20))
def test_the_test_is_quadratic_in_the_coupling_and_never_wrong(coupling):
    # [[−2, e], [e, 0.9]] at τ = 1: the coupling pushes 0.9 up, past τ once e > 0.548.
    # Knowing only ‖C‖ ≤ 0.9 (not its sign), the gap is 2 − 0.9 and the test holds up
    # to e ≈ 0.345, three times a linear (Weyl) bound's e < 0.1
    matrix = np.array([[-2.0, coupling], [coupling, 0.9]])
    count = _count(matrix, 1.0)
    holds = separated(np.array([-2.0]), coupling, 0.9, 1.0)
    assert holds == (coupling < 0.345)
    assert not holds or count == 1
    assert count == (1 if coupling < 0.547 else 2)


def test_nothing_counted_needs_only_the_rest_under_the_threshold():
    assert separated(np.zeros(0), 0.0, 0.5, 1.0)
    assert not separated(np.zeros(0), 0.0, 1.0, 1.0)
    assert not separated(np.array([2.0]), 0.0, 2.5, 1.0)  # the rest above the threshold


def test_the_lanczos_margin_falls_with_steps_and_bounds_the_shortfall():
    margins = [lanczos_margin(steps, 1000) for steps in (8, 16, 32, 64, 128)]
    assert margins == sorted(margins, reverse=True) and margins[0] == 1.0
    assert margins[-1] < 0.01
    # a uniform spectrum is the slowest for Lanczos's top; the shortfall of 32 steps
    # over 40 random starts stays under the margin
    n = 1000
    spectrum = np.linspace(-1.0, 1.0, n)
    q = haar_orthogonal(n, np.random.default_rng(0))
    matrix = torch.from_numpy((q * spectrum) @ q.T)
    empty = torch.zeros(n, 0, dtype=torch.float64)
    margin = lanczos_margin(32, n)
    for seed in range(40):
        bound = complement_bound(
            lambda V: matrix @ V,
            empty,
            steps=32,
            generator=torch.Generator().manual_seed(seed),
        )
        assert bound >= 1.0  # the norm, never missed
        assert bound <= (1 + 2 * margin) / (1 - 2 * margin) + 1e-12  # nor far past it
