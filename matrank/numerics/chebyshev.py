"""Chebyshev moments, damping kernels, step-filter coefficients and the KPM density.

The polynomial filter of Ubaru & Saad (ICML 2016) and the kernel polynomial method for
the density of states (Weiße, Wellein, Alvermann & Fehske, Rev. Mod. Phys. 78, 2006) both
read one table of moments ``y_k(v) = vᵀ T_k(B) v`` with ``B = (A − c)/h`` mapping the
spectrum into ``[−1, 1]``; everything else here is arithmetic on that table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "ChebyshevFrame",
    "chebyshev_moments",
    "gaussian_damping",
    "jackson_damping",
    "kpm_density",
    "lanczos_sigma_damping",
    "step_coefficients",
]


def chebyshev_moments(
    matmat: Callable[[torch.Tensor], torch.Tensor],
    probes: torch.Tensor,
    steps: int,
    *,
    center: float,
    half_width: float,
    doubling: bool = True,
    callback: Callable[[int], None] | None = None,
    resume: dict[str, Any] | None = None,
    save: Callable[[Callable[[], dict[str, Any]]], None] | None = None,
) -> torch.Tensor:
    """Moments ``vᵀT_k(B)v`` of every probe column, ``B = (A − center)/half_width``.

    Parameters
    ----------
    matmat : callable
        ``V -> A @ V`` on ``(n, m)`` blocks.
    probes : torch.Tensor
        ``(n, m)`` probe block; all probes advance together (one block product a step).
    steps : int
        Matvecs per probe.
    center, half_width : float
        The affine map of ``[λmin, λmax]`` onto ``[−1, 1]``.
    doubling : bool, default=True
        Use ``T_{2k} = 2T_k² − T_0`` and ``T_{2k+1} = 2T_{k+1}T_k − T_1`` to get
        ``2·steps + 1`` moments from ``steps`` matvecs (Weiße et al. 2006, eq. 34); else
        ``steps + 1`` moments by the plain recurrence (as the U&S code does).
    callback : callable or None
        Called with ``m`` after every block product (progress reporting).
    resume, save : optional
        ``save`` is called after every block product with a function that returns the
        recurrence's state (a dict of tensors); passing such a state as ``resume`` goes
        on from there, with the same ``probes``, to the same moments.

    Returns
    -------
    torch.Tensor
        ``(m, K)`` float64 moments, ``K = 2·steps + 1`` or ``steps + 1``.

    Notes
    -----
    Streams: only ``T_{k−1}v`` and ``T_kv`` are kept, so memory is three blocks whatever
    ``steps``.
    """

    scratch = torch.empty_like(probes)

    def advance(current: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """``T_{k+1}v = 2B·T_kv − T_{k−1}v`` (``B·T_0v`` for the first), written into the
        product's own storage: one block is allocated and one freed per step, so the
        allocator reuses it (fresh temporaries each step made glibc's heap grow to
        4.8 GB at n = 2·10⁵ over 100 steps of 16 probes)."""
        out = matmat(current)
        alive = (current, probes, scratch) if previous is None else (current, previous)
        if out._base is not None or any(out.data_ptr() == t.data_ptr() for t in alive):
            out = out.clone()  # an answer aliasing a block still in use (identity, a view)
        out.sub_(current, alpha=center)
        if previous is None:
            out.div_(half_width)
        else:
            out.mul_(2 / half_width).sub_(previous)
        if callback is not None:
            callback(current.shape[1])
        return out

    def dot(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        return torch.mul(X, Y, out=scratch).sum(0).to(torch.float64)

    if resume is None:
        previous, current = probes, advance(probes, None)
        first = 1
        if doubling:
            moments = [dot(probes, probes), dot(current, probes)]
        else:
            moments = [dot(probes, previous), dot(probes, current)]
    else:
        first = int(resume["step"])
        previous = resume["previous"].to(probes.device)
        current = resume["current"].to(probes.device)
        moments = list(resume["moments"].unbind(1))

    def state(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "previous": previous,
            "current": current,
            "moments": torch.stack(moments, dim=1),
        }

    if not doubling:
        for step in range(first, steps):
            previous, current = current, advance(current, previous)
            moments.append(dot(probes, current))
            if save is not None:
                save(functools.partial(state, step + 1))
        return torch.stack(moments, dim=1)
    t0t0, t1t0 = moments[0], moments[1]
    for k in range(first, steps + 1):
        moments.append(2 * dot(current, current) - t0t0)  # T_{2k}
        if k < steps:
            following = advance(current, previous)
            moments.append(2 * dot(following, current) - t1t0)  # T_{2k+1}
            previous, current = current, following
            if save is not None:
                save(functools.partial(state, k + 1))
    return torch.stack(moments, dim=1)


def jackson_damping(degree: int) -> np.ndarray:
    """Jackson kernel factors ``g_0 … g_degree`` (positive kernel: the damped series of a
    non-negative function stays non-negative; Weiße et al. 2006, eq. 71)."""
    m = degree + 2
    theta = math.pi / m
    k = np.arange(degree + 1)
    return (1 - k / m) * np.cos(k * theta) + np.sin(k * theta) * math.cos(theta) / (
        m * math.sin(theta)
    )


def gaussian_damping(degree: int, width: float) -> np.ndarray:
    """Factors ``exp(−(k·width)²/2)``: the series of a function convolved, in the angle
    ``β = arccos x``, with a Gaussian of standard deviation ``width``.

    A step damped this way is ``Φ(−δ/width)`` at an angular distance ``δ`` from its edge --
    exponentially small tails where Jackson's decay like ``(degree·δ)^{−3}`` -- and the
    terms past ``degree`` are below ``exp(−(degree·width)²/2)``.
    """
    k = np.arange(degree + 1)
    return np.exp(-0.5 * (k * width) ** 2)


def lanczos_sigma_damping(degree: int) -> np.ndarray:
    """Lanczos σ-factors ``sinc(kπ/(degree + 1))``, the damping the U&S code applies to
    its rank filter."""
    k = np.arange(degree + 1)
    return np.sinc(k / (degree + 1))


def step_coefficients(low: float, high: float, degree: int) -> np.ndarray:
    """Chebyshev coefficients of the indicator of ``[low, high] ⊂ [−1, 1]``, undamped.

    ``γ_0 = (β_1 − β_2)/π``, ``γ_k = 2(sin kβ_1 − sin kβ_2)/(πk)`` with ``β_1 = arccos low``,
    ``β_2 = arccos high`` (Ubaru & Saad 2016, §3).
    """
    beta_low = math.acos(min(1.0, max(-1.0, low)))
    beta_high = math.acos(min(1.0, max(-1.0, high)))
    k = np.arange(1, degree + 1)
    coefficients = np.empty(degree + 1)
    coefficients[0] = (beta_low - beta_high) / math.pi
    coefficients[1:] = 2 * (np.sin(k * beta_low) - np.sin(k * beta_high)) / (math.pi * k)
    return coefficients


def kpm_density(
    mean_moments: np.ndarray, damping: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """The kernel-polynomial density of states on ``grid ⊂ (−1, 1)``.

    ``φ(x) = (g_0μ_0 + 2 Σ_{k≥1} g_kμ_kT_k(x)) / (π sqrt(1 − x²))`` with ``μ_k`` the probe
    mean of ``vᵀT_k(B)v / ‖v‖²``; it integrates to 1 over ``[−1, 1]`` (a density per unit
    of ``x``; multiply by ``n`` for eigenvalues per unit).
    """
    series = np.asarray(mean_moments, dtype=np.float64) * damping[: len(mean_moments)]
    series = series.copy()
    series[1:] *= 2
    values = np.polynomial.chebyshev.chebval(grid, series)
    return values / (math.pi * np.sqrt(1 - grid**2))


@dataclasses.dataclass(frozen=True)
class ChebyshevFrame:
    """The interval ``[low, high]`` a filter lives on, and the step filters on it.

    ``x = (λ − center)/half`` maps the interval onto ``[−1, 1]``; a filter's resolution
    is measured in the angle ``β = arccos x``, in which a degree-``D`` Chebyshev series
    resolves about ``π/D`` everywhere. ``low < 0`` means the operator has negative
    eigenvalues, counted by magnitude (steps on both sides of zero).
    """

    low: float
    high: float

    @property
    def center(self) -> float:
        return (self.high + self.low) / 2

    @property
    def half(self) -> float:
        return max((self.high - self.low) / 2, float(np.finfo(np.float64).tiny))

    @property
    def beta_zero(self) -> float:
        """The angle of the eigenvalue 0."""
        return self.angle(0.0)

    def x(self, t: Any) -> Any:
        """``(t − center)/half`` for a number or an array."""
        return (np.asarray(t, dtype=np.float64) - self.center) / self.half

    def angle(self, t: float) -> float:
        """``β = arccos x`` of the eigenvalue ``t``."""
        return math.acos(min(1.0, max(-1.0, (t - self.center) / self.half)))

    def midpoint(self, lower: float, upper: float) -> float:
        """The eigenvalue whose angle is halfway between those of ``lower`` and ``upper``;
        with ``lower = 0`` and negative eigenvalues, the side nearer zero in angle."""
        angle = (self.angle(lower) + self.angle(upper)) / 2
        midpoint = self.center + self.half * math.cos(angle)
        if self.low < 0:
            mirrored = (self.angle(-lower) + self.angle(-upper)) / 2
            midpoint = max(midpoint, -(self.center + self.half * math.cos(mirrored)))
        return midpoint

    def reach(self, shift: float) -> float:
        """The smallest threshold whose angle lies ``shift`` from zero's (both sides when
        there are negative eigenvalues)."""
        angle = self.beta_zero - shift
        reach = self.center + self.half * math.cos(angle) if angle > 0 else self.high
        if self.low < 0:
            angle = self.beta_zero + shift
            below = (
                self.center + self.half * math.cos(angle) if angle < math.pi else self.low
            )
            reach = max(reach, -below)
        return reach

    def separation(self, t: float) -> float:
        """Smallest angle between ``±t`` and zero (the side that has eigenvalues)."""
        separation = abs(self.beta_zero - self.angle(t))
        if self.low < 0:
            separation = min(separation, abs(self.angle(-t) - self.beta_zero))
        return separation

    def step(self, t: float, degree: int, damping: np.ndarray) -> np.ndarray:
        """Damped step ``1{|λ| > t}``, shifted and scaled so that ``p(0) = 0`` exactly.

        A plain damped step has ``p(0)`` of ``1e-3 … 1e-5``, which an exact null space
        of dimension ``n − r`` multiplies into phantom eigenvalues.
        """
        c = np.zeros(degree + 1)
        upper = (t - self.center) / self.half
        if upper < 1:
            c += step_coefficients(upper, 1.0, degree)
        lower = (-t - self.center) / self.half
        if self.low < 0 and lower > -1:
            c += step_coefficients(-1.0, lower, degree)
        c *= damping[: degree + 1]
        at_zero = float(np.polynomial.chebyshev.chebval(self.x(0.0), c))
        c[0] -= at_zero
        return c / (1 - at_zero)
