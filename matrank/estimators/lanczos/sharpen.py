"""The Lanczos count's sharper resolution: a Gaussian test of the certified basis.

The resolution floor of :func:`matrank.numerics.counting.resolution` is what a fresh
*orthonormal* random block is sure to reveal: its share of a hidden eigenvector is
``sqrt(b/(n − k))``, and an image under the deflation tolerance is dropped. A Gaussian
test block ``Ω`` (ten columns) measures instead what the basis ``Q`` leaves out (Halko,
Martinsson & Tropp 2011, §4.3):

    ε = 10·sqrt(2/π)·max_i ‖(I − QQᵀ)Hω_i‖ ≥ ‖(I − QQᵀ)H‖   but with probability 10⁻¹⁰,

and with ``T = QᵀHQ`` (the basis's Ritz problem), ``H = QTQᵀ + (I − QQᵀ)H +
QQᵀH(I − QQᵀ)``, so by Weyl's theorem every eigenvalue of ``H`` lies within
``η = 2ε + ‖H − Hᵀ‖`` of a Ritz value or of zero. A count at ``τ > η`` with no Ritz
value within ``η`` of ``τ`` is exact: the floor drops from the resolution to ``η``,
about the rounding of one product. A test whose residual is above that (an eigenvalue
the Krylov sequence never reached) joins the basis as the next block, so the next test
finds it counted; a residual of full rank (a band of more than ten directions the
basis has not reached) ends the tests, one block spent.

It runs after a certified Krylov count, and only where the resolution could have hidden
something: a threshold ``'floor'`` or below the resolution, Ritz values between the
noise floor and the resolution, or a plateau choice that a lower floor would change
(the lowest plateau ends at the resolution, and reaching down to the noise floor it
would win or stop competing).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..._run import Run
from ...numerics.counting import Assessment
from ...numerics.sketch import HMT_FACTOR, TEST_COLUMNS
from ...numerics.threshold import noise_floor, plateau_threshold, resolve_threshold
from .grow import Growth
from .plan import LanczosPlan

__all__ = ["sharpen", "wanted"]

#: Tests at most: a first to find what the basis misses, then to certify.
_TESTS = 3


def wanted(plan: LanczosPlan, latest: Assessment) -> bool:
    """Whether the resolution, not the noise floor, may have hidden a count."""
    noise = noise_floor(latest.largest, plan.n, plan.eps)
    if latest.floor <= noise * (1 + 1e-12) or latest.size >= plan.n:
        return False
    option = plan.threshold
    if option == "floor" or (isinstance(option, float | int) and option < latest.floor):
        return True
    if option is not None:
        return False
    magnitudes = latest.values.abs()
    if bool(((magnitudes > noise) & (magnitudes <= latest.floor)).any()):
        return True
    return _floor_decides(magnitudes.numpy(), latest, noise)


def _floor_decides(magnitudes: np.ndarray, latest: Assessment, noise: float) -> bool:
    """Whether the plateau rule's answer hangs on the resolution: its lowest plateau,
    from the smallest counted magnitude down to the floor, would change the count or
    its ambiguity were it to reach the noise floor (a count of d² of a deep linear net
    whose smallest eigenvalue lies 2 decades above the resolution but 4 above
    rounding, ambiguous against the gap above it until the floor drops)."""
    choice = latest.choice
    seen = magnitudes[magnitudes > latest.floor]
    if choice is None or seen.size == 0:
        return False
    lowest = plateau_threshold(seen, noise)
    return (lowest.ambiguous, int((seen > lowest.threshold).sum())) != (
        choice.ambiguous,
        latest.counted,
    )


def sharpen(run: Run, plan: LanczosPlan, growth: Growth) -> dict[str, Any] | None:
    """Test the certified basis and, where its bound allows, count at a lower floor:
    ``growth.latest`` becomes that certified assessment. Returns what the tests
    measured, or ``None`` where they could not lower the floor."""
    run.enter("sharpen")
    krylov, meter = growth.krylov, run.meter
    assert growth.latest is not None
    resolution = growth.latest.floor
    for tests in range(1, _TESTS + 1):
        if plan.max_matvecs - meter.matvecs < 2 * TEST_COLUMNS:
            return None
        omega = torch.randn(
            plan.n, TEST_COLUMNS, generator=run.generator, dtype=torch.float64
        )
        image = meter.hvp(omega.to(dtype=meter.dtype, device=meter.device))
        run.bar.update(TEST_COLUMNS)
        residual = krylov.outside(image)
        bound = HMT_FACTOR * float(torch.linalg.vector_norm(residual, dim=0).max())
        eta = 2 * bound + krylov.symmetry_defect
        found = _certified(plan, growth, eta)
        if found is not None:
            growth.latest = found
            return {
                "tests": tests,
                "range_bound": bound,
                "eta": eta,
                "resolution": resolution,
            }
        if not _few_missed(residual, growth) or krylov.size >= plan.n:
            return None  # a band out of reach, or a basis that spans the space already
        before = meter.matvecs
        krylov.extend(plan.block, given=residual)
        run.bar.update(meter.matvecs - before)
    return None


def _few_missed(residual: torch.Tensor, growth: Growth) -> bool:
    """Whether what the basis misses looks like fewer directions than a test holds.

    Were ``(I − QQᵀ)H`` of rank ten or more above the floor, every column of the
    test's residual would carry it and its smallest singular value would stay above
    the floor: a band the basis has not reached, which a test's ten directions cannot
    take in. Spending nothing more there keeps a noise band's count at its price."""
    latest = growth.latest
    assert latest is not None
    smallest = float(torch.linalg.svdvals(residual.to(torch.float64)).min())
    return 2 * HMT_FACTOR * smallest < latest.floor


def _certified(plan: LanczosPlan, growth: Growth, eta: float) -> Assessment | None:
    """The assessment at the floor ``η`` when Weyl makes its count exact."""
    krylov = growth.krylov
    values, vectors = krylov.ritz()
    magnitudes = values.abs()
    largest = float(magnitudes.max()) if magnitudes.numel() else 0.0
    noise = noise_floor(largest, plan.n, plan.eps, krylov.symmetry_defect)
    floor = max(noise, eta)
    latest = growth.latest
    assert latest is not None
    if floor >= latest.floor:
        return None
    threshold, choice = resolve_threshold(magnitudes.numpy(), floor, plan.threshold)
    if not math.isfinite(threshold) or threshold <= eta:
        return None
    above = magnitudes > threshold
    if bool((magnitudes[above] - eta <= threshold).any()):
        return None
    if bool((magnitudes[~above] + eta > threshold).any()):
        return None
    counted = int(above.sum())
    return Assessment(
        krylov.size, values, vectors, largest, floor, threshold, choice, counted, True
    )
