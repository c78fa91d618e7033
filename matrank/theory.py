"""What the stochastic estimators estimate, in closed form on a known spectrum.

Tests and benchmarks hold estimates to these expectations within their standard error;
users can read a result against a spectrum they know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ._result import RankResult
from ._validation import MatrankValueError, message

__all__ = [
    "LinearNetworkRanks",
    "expected_count",
    "expected_loss_curve",
    "expected_virial_curve",
    "linear_network_ranks",
    "stationary_loss",
]


def expected_loss_curve(
    eigenvalues: np.ndarray, *, step_size: float, sigma2: float, n_steps: int
) -> np.ndarray:
    """``E[L_k] − L0`` of the Euler–Maruyama chain on a quadratic, ``k = 0 … n_steps−1``.

    ``(σ²/2) Σ_μ (1 − (1 − ημ)^{2k}) / (2 − ημ)`` over the eigenvalues ``μ`` of
    ``G^{1/2}HG^{1/2}`` (zeros contribute 0): the discrete counterpart of Theorem 1, eq. 5,
    ``(σ²/4) Σ (1 − e^{−2μt})``, to which it tends as ``η → 0`` with ``t = kη``.
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    mu = mu[mu > 0]
    k = np.arange(n_steps)[:, None]
    factor = 1 - step_size * mu[None]
    return (sigma2 / 2) * ((1 - factor ** (2 * k)) / (2 - step_size * mu[None])).sum(axis=1)


def expected_virial_curve(
    eigenvalues: np.ndarray,
    *,
    step_size: float,
    n_steps: int,
    localization: float = 0.0,
) -> np.ndarray:
    """Expected virial readout per step (rank units), ``k = 0 … n_steps−1``.

    ``Σ_μ μ/(μ+γ)·(1 − (1 − η(μ+γ))^{2k})`` over the positive eigenvalues ``μ`` of
    ``G^{1/2}HG^{1/2}``: with ``γ = 0`` each equilibrated mode counts exactly one,
    whatever ``ημ < 2``.
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    mu = mu[mu > 0]
    k = np.arange(n_steps)[:, None]
    nu = mu + localization
    weight = mu / nu
    return (weight[None] * (1 - (1 - step_size * nu[None]) ** (2 * k))).sum(axis=1)


def stationary_loss(rank: int, *, sigma2: float) -> float:
    """Proposition 1's limit ``E[L] − L0 → σ²·rank/4`` (continuous time, ``Σ·G = σ²I``)."""
    return sigma2 * rank / 4


def expected_count(result: RankResult, eigenvalues: Any, dim: int | None = None) -> float:
    """What a polynomial estimate estimates, on a known spectrum: ``Σ_i p(λ_i)``.

    Parameters
    ----------
    result : RankResult
        A result of :class:`PolynomialRank` (either variant).
    eigenvalues : array_like
        Eigenvalues of the operator; with ``dim`` given, only the non-zero ones (the
        other ``dim − len(eigenvalues)`` are exact zeros, as a closed-form spectrum
        lists them).
    dim : int or None
        The operator's dimension, when ``eigenvalues`` leaves the zeros out.

    Returns
    -------
    float
        The filter summed over the spectrum, for the default variant over the part the
        probes estimate (its deflated eigenvalues count exactly above ``τ`` in the
        estimate and by the filter here; both agree away from ``τ``). On the deflated
        paths (``diagnostics["path"]`` other than ``"probes"``) the estimate is the
        exact count above ``τ``, and so is this. The estimate is unbiased for it: tests
        and benchmarks hold estimates to it within their stderr.
    """
    values = np.asarray(eigenvalues, dtype=np.float64).ravel()
    diagnostics = result.diagnostics
    if diagnostics.get("path", "probes") != "probes":
        return float((np.abs(values) > result.threshold).sum())
    if diagnostics["variant"] == "ubaru-saad":
        low, high = -1e-5, diagnostics["lambda_max"] + 1e-5
    else:
        low, high = diagnostics["lambda_min"], diagnostics["lambda_max"]
    center, half = (high + low) / 2, (high - low) / 2
    coefficients = diagnostics["filter_coefficients"]
    total = float(
        np.polynomial.chebyshev.chebval((values - center) / half, coefficients).sum()
    )
    if dim is not None:
        zero = float(np.polynomial.chebyshev.chebval(-center / half, coefficients))
        total += (dim - values.size) * zero
    return total


class LinearNetworkRanks(NamedTuple):
    """Ranks of a deep linear network's loss curvature at a generic point."""

    outer: int  #: the outer-product (Gauss–Newton) part
    functional: int  #: the functional part
    hessian: int  #: the loss Hessian


def linear_network_ranks(
    d_in: int, hidden: Sequence[int], d_out: int, *, data_rank: int | None = None
) -> LinearNetworkRanks:
    """Singh, Bachmann & Hofmann's (NeurIPS 2021) ranks for a bias-free linear network.

    ``f(x) = W_L⋯W_1 x`` with hidden widths ``M_1 … M_{L−1}``, squared loss, at a
    generic point (random weights, not a minimum), with inputs spanning ``r`` dimensions
    (``r = rank(Σ_xx)``, ``data_rank``; ``d_in`` when ``None``). With
    ``q = min(r, K, M_1, …)`` and ``s = min(r, K)``: the outer-product part has rank
    ``q(r + K − q)``, the functional part ``2q·ΣM + 2qs − Lq²``, and the Hessian their
    sum plus ``q(q − 2s)``. For cross-entropy pass ``d_out = K − 1``.

    Examples
    --------
    >>> linear_network_ranks(25, [5, 10], 10)   # the authors' notebook case
    LinearNetworkRanks(outer=150, functional=175, hessian=250)
    """
    widths = [int(w) for w in hidden]
    r = d_in if data_rank is None else min(int(data_rank), d_in)
    if min([d_in, d_out, r, *widths]) < 1:
        raise MatrankValueError(
            message("widths", "positive", f"d_in={d_in}, hidden={widths}, d_out={d_out}")
        )
    depth = len(widths) + 1
    q = min([r, d_out, *widths])
    s = min(r, d_out)
    outer = q * (r + d_out - q)
    functional = 2 * q * sum(widths) + 2 * q * s - depth * q * q
    return LinearNetworkRanks(outer, functional, outer + functional + q * (q - 2 * s))
