"""The Ubaru–Saad polynomial rank estimator as their published code computes it.

A port of the MATLAB reference of Ubaru & Saad (ICML 2016), re-derived in the research
notes (paper_peer §3): the baseline the Langevin paper compared against, kept faithful
on purpose, quirks included. :class:`~matrank.PolynomialRank` with
``variant="ubaru-saad"`` runs it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..._result import RankResult
from ..._run import Run
from ..._validation import MatrankValueError, message
from ...numerics.chebyshev import (
    chebyshev_moments,
    kpm_density,
    lanczos_sigma_damping,
    step_coefficients,
)
from ...numerics.krylov import spectral_bounds
from ...numerics.trace import mean_and_stderr, probe_block

if TYPE_CHECKING:
    from . import PolynomialRank

__all__ = ["ubaru_saad_density", "ubaru_saad_estimate", "ubaru_saad_gap"]

#: The faithful variant refuses an operator whose smallest eigenvalue is below
#: ``-PSD_TOLERANCE·‖H‖₂`` (checked to a tenth of it before refusing).
PSD_TOLERANCE = 1e-2


def ubaru_saad_estimate(options: PolynomialRank, run: Run) -> RankResult:
    """``λmin = 0``, the interval padded by ``1e-5``, unit Gaussian probes, moments by the
    plain recurrence, the Jackson-damped density on their grid, their ``find_gap`` rule,
    and a Lanczos-σ-damped step on ``[gap, λmax]`` (``PolynomialRank`` Notes)."""
    meter, generator = run.meter, run.generator
    n, dtype, device = meter.dim, meter.dtype, meter.device
    degree = options.degree or 50
    n_probes = options.n_probes or 300
    settings = {"generator": generator, "dtype": dtype, "device": device}
    steps = options.lanczos_steps
    smallest, largest, _ = spectral_bounds(meter.hvp, n, steps=steps, **settings)
    # Their λmin = 0 puts a negative eigenvalue outside [-1, 1], where the Chebyshev
    # series grows without bound (5.7e13 for 5 of 45 eigenvalues negative): refused.
    # The low end is the smallest Ritz value less its residual, a bound that stays loose
    # while that Ritz vector mixes a null space with the top (-33 against λmax 687 on a
    # PSD linear net, d = 8): before refusing, both ends are tightened to 1e-3 of the
    # norm, where a PSD operator's low end is above the limit.
    if smallest < -PSD_TOLERANCE * max(abs(largest), abs(smallest)):
        smallest, largest, _ = spectral_bounds(
            meter.hvp, n, steps=steps, rtol=PSD_TOLERANCE / 10, **settings
        )
    if smallest < -PSD_TOLERANCE * max(abs(largest), abs(smallest)):
        raise MatrankValueError(
            message(
                "obj",
                "positive semi-definite for variant='ubaru-saad' (it sets λmin = 0, as "
                "their code does); use the default variant or method='lanczos', which "
                "count |λ| and report the negative eigenvalues",
                f"an operator with an eigenvalue near {smallest:.3g} (λmax ≈ "
                f"{largest:.3g})",
            )
        )
    # U&S: λmin is not computed but set to 0; both ends padded by 1e-5 (absolute).
    low, high = -1e-5, largest + 1e-5
    center, half_width = (high + low) / 2, (high - low) / 2
    probes = probe_block(
        n, n_probes, kind="gaussian", generator=generator, dtype=dtype, device=device
    )
    probes = probes / torch.linalg.vector_norm(probes, dim=0)
    moments = run.cached(
        "moments",
        lambda: (
            chebyshev_moments(
                meter.hvp,
                probes,
                degree,
                center=center,
                half_width=half_width,
                doubling=False,
            )
            .cpu()
            .numpy()
        ),
    )  # (m, degree + 1)

    grid, density = ubaru_saad_density(moments, low, high, options.n_points)
    given = options.threshold
    assert not isinstance(given, str)  # 'floor' is refused with the options
    gap = ubaru_saad_gap(grid, density) if given is None else float(given)
    a = (gap - center) / half_width
    coefficients = step_coefficients(a, 1.0, degree) * lanczos_sigma_damping(degree)
    samples = n * (moments @ coefficients)
    mean, stderr = mean_and_stderr(torch.from_numpy(samples))
    filter_at_zero = float(
        np.polynomial.chebyshev.chebval((0.0 - center) / half_width, coefficients)
    )
    diagnostics = {
        "variant": options.variant,
        "degree": degree,
        "n_probes": n_probes,
        "lambda_max": largest,
        "density_grid": grid,
        "density": density,
        "filter_coefficients": coefficients,
        "filter_at_zero": filter_at_zero,
        "samples": samples,
    }
    return run.result(mean, stderr=stderr, threshold=gap, diagnostics=diagnostics)


def _ubaru_saad_jackson(count: int) -> np.ndarray:
    """The U&S code's Jackson factors for ``count`` moments (their "simpler formula")."""
    theta = math.pi / (count + 2)
    k = np.arange(count)
    return np.sin((k + 1) * theta) / ((count + 2) * math.sin(theta)) + (
        1 - (k + 1) / (count + 2)
    ) * np.cos(k * theta)


def ubaru_saad_density(
    moments: np.ndarray, low: float, high: float, n_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """The U&S density of states: their non-uniform grid and normalisation.

    The grid is ``−1+h … 0`` in steps ``h/2`` then ``h … 1−h`` in steps ``2h``,
    ``h = 2/(n_points + 1)``; the density is divided by ``Σφ · (λ_2 − λ_1)`` (the fine
    spacing), so it is in absolute ``1/λ`` units and does not integrate to 1 -- kept, as
    their ``find_gap`` tolerances are absolute.
    """
    h = 2 / (n_points + 1)
    fine = np.arange(-1 + h, 0 + 1e-12, h / 2)
    coarse = np.arange(h, 1 - h + 1e-12, 2 * h)
    points = np.concatenate([fine, coarse])
    count = moments.shape[1]
    mean = moments.mean(axis=0) * _ubaru_saad_jackson(count) / math.pi
    # kpm_density doubles every term but the first and divides by π sqrt(1 − x²): the
    # U&S scaling (2/(π·m), first term halved) in one call.
    density = kpm_density(mean * math.pi, np.ones(count), points)
    center = (high + low) / 2
    width = (high - low) / 2 + 2 * np.finfo(np.float64).eps
    grid = center + width * points
    density = density / (density.sum() * (grid[1] - grid[0]))
    return grid, density


def ubaru_saad_gap(grid: np.ndarray, density: np.ndarray) -> float:
    """U&S ``find_gap``: the first gap of a density of states, as their code computes it.

    Smooths ``|φ_i| + φ_{i+2} + φ_{i+3}`` (their loop skips the shift by one), takes the
    first point below ``(N+1)/2`` whose forward difference is ``≥ −0.01``, then the first
    later point where the smoothed density exceeds ``(1 − Σ_{j≤i1} s_j/(N+1))/4``; the gap
    is the midpoint of the two grid points.
    """
    npts = len(density)
    smoothed = np.abs(density).copy()
    for shift in (2, 3):
        smoothed[: npts - shift] += density[shift:]
    smoothed /= 4
    slope = np.append(np.diff(smoothed), 0.0)
    high_values = (npts + 1) * 0.5
    total, first = 0.0, npts - 1
    for i in range(npts):
        total += smoothed[i]
        if smoothed[i] > high_values:
            continue
        if slope[i] >= -0.01:
            first = i
            break
    tolerance = (1 - total / (npts + 1)) * 0.25
    later = [i for i in range(first + 1, npts) if smoothed[i] >= tolerance]
    second = later[0] if later else min(first + 1, npts - 1)
    return float((grid[first] + grid[second]) / 2)
