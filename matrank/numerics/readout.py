"""Reading a count off a soft filter: burn-in, the matched threshold, the edge term.

Pure functions on numpy arrays, shared by the estimators whose answer is a soft count
``Σ_i w(λ_i)`` (the Langevin readout, a damped polynomial step).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .trace import mean_and_stderr

__all__ = [
    "edge_variance",
    "edge_width",
    "level",
    "matched_threshold",
    "matched_threshold_terms",
    "mser_start",
    "runaway",
    "window_average",
    "window_drift",
]

_THRESHOLD_RESAMPLES = 40
_SHAPES = np.linspace(-0.5, 1.0, 31)  # c of the counting curve's fit (LangevinRank Notes)


def edge_variance(filter_values: np.ndarray, ell: np.ndarray) -> float:
    """``κ = ∫(w(ℓ) − 1[ℓ > 0])² dℓ``: the soft count's variance per eigenvalue density.

    ``w`` is a filter sampled at ``ℓ = log(λ/τ)``. For eigenvalues placed as a Poisson
    process with ``s`` of them per e-fold of ``λ`` near ``τ``, the soft count minus the
    hard count ``N(τ)`` has variance ``s·κ``.
    """
    return float(np.trapezoid((filter_values - (ell > 0)) ** 2, ell))


def mser_start(trace: np.ndarray, batches: int = 100) -> int:
    """Start of the averaging window by MSER (White 1997), within the first half.

    Over batch means ``y_j`` the truncation ``d`` minimising
    ``Σ_{i≥d}(y_i − ȳ_d)² / (J − d)²`` -- the squared standard error of the mean of what
    is kept -- balancing the initial transient's bias against the variance of a short
    window.
    """
    size = max(1, trace.size // batches)
    count = trace.size // size
    if count < 4:
        return 0
    y = trace[trace.size - count * size :].reshape(count, size).mean(axis=1)
    offset = trace.size - count * size
    best, best_d = math.inf, 0
    for d in range(count // 2 + 1):
        kept = y[d:]
        score = float(((kept - kept.mean()) ** 2).sum()) / kept.size**2
        if score < best:
            best, best_d = score, d
    return offset + best_d * size


def matched_threshold(
    trace: np.ndarray, step_size: float, begin: int
) -> tuple[float, dict[str, float]]:
    """The ``τ`` whose hard count the window ``trace[begin:]`` of the virial matches.

    See :class:`LangevinRank`, Notes: a power-law fit of the readout against
    ``log 2ηk`` over the last 31/32 of the run gives the local shape ``c ∈ [−0.5, 1]``
    of the counting curve; ``τ = [Γ(1+c)·mean k^{−c}]^{1/c}/(2η)`` over the averaged
    steps.
    """
    steps = trace.size
    k = np.arange(max(begin, 1), steps, dtype=np.float64)
    shape, slope = 0.0, 0.0
    edges = np.unique(np.geomspace(max(8, steps // 32), steps, 17).astype(int))
    if edges.size >= 6:
        x = np.array([np.log(np.arange(a, b)).mean() for a, b in itertools.pairwise(edges)])
        y = np.array([trace[a:b].mean() for a, b in itertools.pairwise(edges)])
        x = x - math.log(steps)
        best = math.inf
        for c in _SHAPES:
            basis = x if abs(c) < 1e-9 else -np.expm1(-c * x) / c
            design = np.stack([np.ones_like(x), basis], axis=1)
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            residual = float(((design @ coef - y) ** 2).sum())
            if residual < best:
                best, shape, slope = residual, float(c), float(coef[1])
        if slope <= 0:
            shape = 0.0
    if abs(shape) < 1e-9:
        tau = math.exp(-np.euler_gamma - float(np.log(k).mean())) / (2 * step_size)
    else:
        factor = math.gamma(1 + shape) * float(np.mean(k ** (-shape)))
        tau = factor ** (1 / shape) / (2 * step_size)
    return tau, {"shape": shape, "slope": slope}


def level(trace: np.ndarray, step_size: float, threshold: float, slope: float) -> float:
    """The readout near the step whose filter ``1 − e^{−2kηλ}`` centres on ``threshold``.

    ``k = e^{−γ_E}/(2ητ)`` (the matched step of a locally log-flat density), averaged
    over ``[k/1.3, 1.3k]``; past the run's end ``K``, the readings over ``[K/1.3, K)``
    plus ``slope`` per e-fold of ``k/K``. The readings are the soft count at each step,
    so differences of this level between two thresholds approximate the difference of
    their hard counts.
    """
    steps = trace.size
    k = math.exp(-np.euler_gamma) / (2 * step_size * threshold)
    if k >= steps:
        end = float(trace[int(steps / 1.3) :].mean())
        return end + max(slope, 0.0) * math.log(k / steps)
    k = max(k, 1.0)
    low = int(k / 1.3)
    high = min(steps, max(int(k * 1.3), low + 1))
    return float(trace[low:high].mean())


def edge_width(step_size: float, threshold: float, begin: int, steps: int) -> float:
    """``κ = ∫(w(ℓ) − 1[ℓ > 0])² dℓ`` of the window's filter in ``ℓ = log(λ/τ)``.

    ``w(λ) = mean_k 1 − e^{−2ηkλ}`` over the averaged steps ``k ∈ [begin, steps)``. For
    eigenvalues placed as a Poisson process with ``s`` of them per e-fold of ``λ`` near
    ``τ``, the soft count minus the hard count ``N(τ)`` has variance ``s·κ`` (0.37 for
    a window over the last half of the run; more regular spectra vary less).
    """
    k = np.unique(np.linspace(max(begin, 1), max(steps - 1, 1), 256).astype(int))
    ell = np.linspace(-12.0, 8.0, 4001)
    rate = 2 * step_size * threshold * np.exp(ell)
    w = (-np.expm1(-np.outer(rate, k.astype(np.float64)))).mean(axis=1)
    return edge_variance(w, ell)


def window_average(readings: torch.Tensor, begin: int) -> tuple[float, float, np.ndarray]:
    """Mean of ``readings[begin:]`` (steps × chains), its stderr, and each chain's mean.

    The stderr is the spread between chains; with one chain, that of 20 batch means over
    time (approximate: successive readings are correlated).
    """
    window = readings[begin:]
    per_chain = window.mean(dim=0)
    if readings.shape[1] >= 2:
        rank, stderr = mean_and_stderr(per_chain)
    else:
        parts = np.array_split(window[:, 0].numpy(), min(20, window.shape[0]))
        _, stderr = mean_and_stderr(
            torch.tensor([float(p.mean()) for p in parts], dtype=torch.float64)
        )
        rank = float(per_chain[0])
    return float(rank), float(stderr), per_chain.numpy()


def window_drift(readings: torch.Tensor, begin: int) -> tuple[float, float]:
    """How the readout moved over ``readings[begin:]``: the last third's mean minus the
    first third's, and its stderr from the per-chain differences (``inf`` with one chain
    or fewer than three steps, where there is nothing to compare)."""
    window = readings[begin:]
    third = window.shape[0] // 3
    if third < 1 or readings.shape[1] < 2:
        return 0.0, math.inf
    difference = window[-third:].mean(dim=0) - window[:third].mean(dim=0)
    mean, stderr = mean_and_stderr(difference)
    return float(mean), float(stderr)


def matched_threshold_terms(
    readings: torch.Tensor, step_size: float, begin: int
) -> tuple[float, dict[str, float], float, float]:
    """The matched ``τ``, its fit, and the two stderr terms it adds to the count.

    ``τ`` is itself estimated: it is refitted on chains resampled with replacement, and
    what moving ``τ`` to each refit's value changes in the count is read off the readings
    themselves (the soft count at the step whose filter centres on ``τ``), so that the
    stderr is that of the estimate as ``N(τ)`` -- a slope times the spread of ``log τ``
    would miss it where the fit's shape is undetermined and its slope at ``τ`` ≈ 0 while
    eigenvalues sit across the ``τ``'s it allows. The edge term: even at the right ``τ``
    a soft count differs from the hard one by ``Σ(w(λ) − 1[λ > τ])``, whose variance for
    eigenvalues spread at the fitted density in ``log λ`` is ``slope·κ``.
    """
    steps, chains = readings.shape
    mean_trace = readings.mean(dim=1).numpy()
    threshold, fit = matched_threshold(mean_trace, step_size, begin)
    spread = 0.0
    if chains >= 2:
        resample = np.random.default_rng(0)
        refits = [
            matched_threshold(
                readings[:, resample.integers(0, chains, chains)].mean(dim=1).numpy(),
                step_size,
                begin,
            )[0]
            for _ in range(_THRESHOLD_RESAMPLES)
        ]
        base = level(mean_trace, step_size, threshold, fit["slope"])
        moved = [level(mean_trace, step_size, t, fit["slope"]) - base for t in refits]
        spread = math.sqrt(float(np.mean(np.square(moved))))
    edge = math.sqrt(
        max(fit["slope"], 0.0) * edge_width(step_size, threshold, begin, steps)
    )
    return threshold, fit, spread, edge


def runaway(readings: torch.Tensor, begin: int) -> dict[str, float] | None:
    """Evidence that the chains run away along negative curvature, or ``None``.

    At a stable minimum each virial reading of a quadratic is ``≥ 0`` and its
    expectation never decreases with ``k`` (``Σ_μ 1 − (1 − ημ)^{2k}``); along a negative
    eigenvalue the term ``1 − (1 + η|μ|)^{2k}`` falls without bound. Flagged when the
    window's estimate is negative by more than 3 standard errors, or when its last third
    lies below its middle third by more than 4 standard errors of the chains'
    differences and by more than half an eigenvalue.
    """
    window = readings[begin:]
    steps, chains = window.shape
    if chains < 2 or steps < 9:
        return None
    mean, stderr = mean_and_stderr(window.mean(dim=0))
    third = steps // 3
    drops = window[third : 2 * third].mean(dim=0) - window[2 * third :].mean(dim=0)
    drop, drop_stderr = mean_and_stderr(drops)
    if mean < -3 * stderr or (drop > 4 * drop_stderr and drop > 0.5):
        return {
            "estimate": mean,
            "stderr": stderr,
            "drop": drop,
            "drop_stderr": drop_stderr,
        }
    return None
