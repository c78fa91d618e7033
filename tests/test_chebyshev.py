"""Chebyshev moments, damping and the KPM density against dense eigendecomposition."""

import numpy as np
import pytest
import torch

from matrank.numerics.chebyshev import (
    chebyshev_moments,
    jackson_damping,
    kpm_density,
    lanczos_sigma_damping,
    step_coefficients,
)
from matrank.testing import haar_orthogonal

N = 80
EIGENVALUES = np.concatenate([np.geomspace(1.0, 1e-2, 20), np.zeros(N - 20)])
Q = haar_orthogonal(N, np.random.default_rng(0))
A = torch.from_numpy((Q * EIGENVALUES) @ Q.T)
CENTER, HALF = 0.5, 0.5 + 1e-3  # [−0.001, 1.001] onto [−1, 1]


def exact_moments(probes: np.ndarray, count: int) -> np.ndarray:
    mapped = (EIGENVALUES - CENTER) / HALF
    weights = (Q.T @ probes) ** 2  # (n, m)
    chebyshev = np.cos(np.arange(count)[:, None] * np.arccos(mapped)[None])  # (K, n)
    return (chebyshev @ weights).T


@pytest.mark.parametrize("doubling", [True, False])
def test_moments_match_the_eigendecomposition(doubling):
    probes = torch.randn(
        N, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    moments = chebyshev_moments(
        lambda V: A @ V, probes, 12, center=CENTER, half_width=HALF, doubling=doubling
    )
    count = 25 if doubling else 13
    assert moments.shape == (3, count)
    np.testing.assert_allclose(
        moments.numpy(), exact_moments(probes.numpy(), count), atol=1e-10
    )


def test_filter_trace_from_moments_is_the_filter_on_the_spectrum():
    degree = 40
    coefficients = step_coefficients(-0.9, 1.0, degree) * jackson_damping(degree)
    identity = torch.eye(N, dtype=torch.float64)  # exact trace: probes e_1 … e_n
    moments = chebyshev_moments(
        lambda V: A @ V, identity, 20, center=CENTER, half_width=HALF
    )
    trace = float((moments.numpy() @ coefficients).sum())
    mapped = (EIGENVALUES - CENTER) / HALF
    expected = np.polynomial.chebyshev.chebval(mapped, coefficients).sum()
    assert trace == pytest.approx(expected, rel=1e-10)


def test_damping_kernels():
    g = jackson_damping(50)
    assert g[0] == pytest.approx(1.0) and np.all(np.diff(g) < 0) and g[-1] > 0
    sigma = lanczos_sigma_damping(50)
    assert sigma[0] == 1.0 and sigma[-1] == pytest.approx(np.sinc(50 / 51))


def test_jackson_damped_step_is_between_zero_and_one():
    # a positive kernel: the damped step never leaves [0, 1] (no Gibbs overshoot)
    degree = 60
    values = np.polynomial.chebyshev.chebval(
        np.linspace(-1, 1, 2001),
        step_coefficients(0.2, 1.0, degree) * jackson_damping(degree),
    )
    assert values.min() > -1e-12 and values.max() < 1 + 1e-12


def test_density_integrates_to_one_and_peaks_at_the_null_cluster():
    identity = torch.eye(N, dtype=torch.float64)
    degree = 120
    moments = chebyshev_moments(
        lambda V: A @ V, identity, degree // 2, center=CENTER, half_width=HALF
    )
    mean = moments.numpy().mean(axis=0)
    grid = np.cos(np.linspace(np.pi - 1e-3, 1e-3, 4000))
    density = kpm_density(mean, jackson_damping(degree), grid)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=5e-3)
    zero = (0.0 - CENTER) / HALF
    assert abs(grid[np.argmax(density)] - zero) < 0.05


def test_moments_survive_an_operator_that_returns_its_input():
    # the recurrence writes into the product's storage: an identity oracle returning V
    # itself (or a view of it) must not corrupt T_k v
    probes = torch.randn(
        N, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    for matmat in (lambda V: V, lambda V: V[:, :]):
        moments = chebyshev_moments(matmat, probes, 5, center=0.0, half_width=2.0)
        # B = I/2: T_k(1/2) = cos(kπ/3), times ‖v‖²
        k = np.arange(11)
        expected = np.outer((probes**2).sum(0).numpy(), np.cos(k * np.arccos(0.5)))
        np.testing.assert_allclose(moments.numpy(), expected, rtol=1e-12, atol=1e-12)
