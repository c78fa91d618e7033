"""The top of the spectrum the polynomial filter works around: bounds and deflation.

Spectral bounds and the noise floor from a short Lanczos run; a Krylov basis that
captures a small top subspace, whose converged Ritz pairs then count exactly; and the
bound on what that capture left. :class:`~.default.DefaultFilter` builds on
it (a mixin: the two halves share the run's state, and nothing else uses either).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..._oracle import CostMeter, input_eps
from ..._run import Run
from ..._validation import MatrankValueError, message
from ...numerics.chebyshev import ChebyshevFrame, jackson_damping, kpm_density
from ...numerics.deflation import complement_bound, converged_basis, separated
from ...numerics.krylov import BlockKrylov
from ...numerics.threshold import noise_floor

if TYPE_CHECKING:
    from . import PolynomialRank

__all__ = ["SpectrumCapture"]

BASIS_BYTES = 1024**3  # the deflation basis
# Lanczos steps from a random start that bound the deflated operator (what deflation
# left), or the whole operator when τ lies above the bounds' top: within a margin of
# 2.5 % of the norm at n = 20,000 but with probability 1e-6 (Kuczyński & Woźniakowski;
# numerics.deflation.lanczos_margin). 32 steps would leave 10 %.
COMPLEMENT_STEPS = 64
# A Jackson-damped step is 1 − 2.5e-3 (2.5e-3) at an angular distance 3π/degree above
# (below) its edge, in β = arccos x: the filter "reaches" a threshold whose angle lies
# that far from zero's. On smooth densities its soft count then equals N(τ) within the
# Hutchinson error (benchmarks/polynomial_linear_nets.py).
REACH = 3 * math.pi
# Largest n whose whole space is taken: the dense work grows like n³ (benchmarks/README,
# polynomial catalogue), where a filter's 15,000 cheap products take seconds
WHOLE_SPACE_MAX = 2048
# Columns per product in the deflation and whole-space paths: a model's HVP holds its
# activations once per column
PRODUCT_COLUMNS = 32


class SpectrumCapture:
    """Bounds, the noise floor and the deflation basis of one polynomial run."""

    options: PolynomialRank
    run: Run
    meter: CostMeter
    generator: torch.Generator
    bar: Any
    n: int
    budget: int

    def _bounds(self) -> None:
        """Spectral bounds and the noise floor from ``lanczos_steps`` Lanczos steps."""
        meter, n = self.meter, self.n
        krylov = BlockKrylov(meter.hvp, n, meter.dtype, meter.device, self.generator)
        while krylov.size < min(self.options.lanczos_steps, n):
            before = meter.matvecs
            krylov.extend(1)
            self.bar.update(meter.matvecs - before)
            if krylov.next_kept == 0:  # an invariant subspace: the extremes are exact
                break
        values, vectors = krylov.ritz()
        residuals = krylov.residual_norms(vectors)
        eps = input_eps(meter)
        largest = float(values.abs().max()) if values.numel() else 0.0
        self.floor = noise_floor(largest, n, eps, krylov.symmetry_defect)
        high = float((values + residuals).max())
        # Ritz values are Rayleigh quotients: one below −floor proves a negative eigenvalue
        negative = float(values.min()) < -self.floor
        low = float((values - residuals).min()) if negative else 0.0
        width = max(high - low, 0.0)
        # Ritz values approach the ends from inside: a 1 % margin keeps the spectrum in
        # [−1, 1], where the Chebyshev polynomials stay bounded (checked on the moments).
        self.frame = ChebyshevFrame(
            low=low - 0.01 * width if negative else 0.0, high=high + 0.01 * width
        )
        self.low, self.high = self.frame.low, self.frame.high
        self.captured = torch.zeros(n, 0, dtype=meter.dtype, device=meter.device)
        self.deflated_values = np.zeros(0)
        # the deflated pairs' residuals AY − YΘ = U·rows + dropped (BlockKrylov's notes)
        self.residual_rows = np.zeros((0, 0))
        self.residual_dropped = 0.0
        self.basis_size = 0
        self.invariant = False
        self.exact_path = False
        self.complement_top = math.inf
        self.krylov: BlockKrylov | None = None

    def reach(self, degree: int) -> float:
        """The smallest threshold a degree resolves: its angle ``3π/degree`` from zero's."""
        return self.frame.reach(REACH / degree)

    def reaches(self, threshold: float, degree: int) -> bool:
        """Whether ``degree`` resolves ``threshold`` (to rounding of the reach itself)."""
        return threshold >= self.reach(degree) * (1 - 1e-12)

    def _deflate(self, expected: float, *, whole: bool = False) -> None:
        """Capture the top subspace when the basis can hold all of it.

        A basis of ``2r + 64`` columns (multiplicities cost up to ``2r``) captures a rank
        ``r`` whole, after which the probes see only what is left: the count becomes
        exact. When ``n`` columns fit, the basis takes the whole space instead
        (``whole=True``: within all of the remaining budget, not half). A partial
        capture reduces the variance only by the captured fraction at an ``O(n·k²)``
        orthogonalization cost (9× the probes' time for 30 % of the rank of the d = 64
        linear net), so it is not attempted.
        """
        meter, n = self.meter, self.n
        limit = self.options.deflate
        if limit is None:
            limit = (self.budget - meter.matvecs) // (1 if whole else 2)
        limit = min(limit, BASIS_BYTES // (8 * n), n)
        wanted = n if whole else min(2 * math.ceil(expected) + 64, n)
        if (expected < 0.5 and not whole) or wanted > limit:
            return
        if limit == n <= WHOLE_SPACE_MAX and self.options.deflate is None:
            wanted = n  # the whole space fits: its spectrum, down to the noise floor
        self.krylov = BlockKrylov(
            self._products, n, meter.dtype, meter.device, self.generator
        )
        self._extend(wanted)

    def _products(self, V: torch.Tensor) -> torch.Tensor:
        """``A @ V`` in products of at most ``PRODUCT_COLUMNS`` columns."""
        if V.shape[1] <= PRODUCT_COLUMNS:
            return self.meter.hvp(V)
        step = PRODUCT_COLUMNS
        return torch.cat(
            [self.meter.hvp(V[:, i : i + step]) for i in range(0, V.shape[1], step)], dim=1
        )

    def _extend(self, wanted: int) -> None:
        """Grow the deflation basis to ``wanted`` columns and take its converged pairs."""
        meter, n, krylov = self.meter, self.n, self.krylov
        assert krylov is not None
        # the whole space needs no Krylov structure, only few passes over the basis:
        # a block of n/8 (up to 256) columns is orthogonalized against it in 8
        # compute-bound passes, not n/32 memory-bound ones (its products still go
        # 32 columns at a time)
        block = max(32, min(256, n // 8)) if wanted >= n else 32
        key = f"deflation {wanted}"
        saved = self.run.restore(key)
        if saved is not None:
            krylov.load_state_dict(saved)
        while krylov.size < min(wanted, n):
            if self.run.due():
                self.run.record(key, krylov.state_dict())
            before = meter.matvecs
            krylov.extend(min(block, wanted - krylov.size))
            self.bar.update(meter.matvecs - before)
            # an invariant subspace: nothing more the Krylov sequence can find, though
            # copies of a repeated eigenvalue may remain; fresh random columns go on
            # when the whole space is wanted
            if krylov.next_kept == 0 and wanted < n:
                break
        values, vectors = krylov.ritz()
        residuals = krylov.residual_norms(vectors)
        # the basis's block start measured the operator's asymmetry (the bounds' single
        # vector could not): the floor rises to it, as in the exact and Lanczos counts
        self.floor = max(self.floor, krylov.symmetry_defect)
        keep = (residuals <= 1e-3 * values.abs()) & (values.abs() > self.floor)
        self.captured = converged_basis(krylov, vectors, keep)
        self.deflated_values = values[keep].numpy()
        last = vectors[krylov.size - krylov.last_size :][:, keep]
        self.residual_rows = (
            (krylov.B @ last).numpy()
            if krylov.B.numel()
            else np.zeros((0, int(keep.sum())))
        )
        self.residual_dropped = krylov.dropped
        self.basis_size = krylov.size
        self.invariant = krylov.next_kept == 0

    def _bound_complement(self) -> None:
        """Bound ``|λ|`` of what the deflation left (:func:`complement_bound`)."""
        steps = min(COMPLEMENT_STEPS, self.n - self.captured.shape[1])
        if steps < 1 or self.basis_size == self.n:  # the Ritz values are the spectrum
            self.complement_top = 0.0
            return
        self.complement_top = complement_bound(
            self.meter.hvp,
            self.captured,
            steps=steps,
            generator=self.generator,
            callback=self.bar.update,
        )

    def certified(self, threshold: float) -> bool:
        """Whether the deflated Ritz count at ``threshold`` is exact: nothing above it
        left in the complement, and the Ritz pairs near it too well converged to cross.

        With ``Y_hi`` the deflated pairs above ``τ`` and ``Y_lo`` the rest, ``A`` in the
        basis ``[Y_hi, Y_lo, Y⊥]`` couples ``Y_hi`` to the rest only by
        ``‖AY_hi − Y_hiΘ_hi‖`` (Ritz vectors of one basis are ``A``-orthogonal), and the
        rest has norm at most ``max(complement_top, max |θ_lo|) + ‖AY_lo − Y_loΘ_lo‖``
        (Weyl); :func:`~matrank.numerics.deflation.separated` decides.
        """
        if self.exact_path:  # the whole space: the values are the spectrum
            return True
        values = self.deflated_values
        above = np.abs(values) > threshold
        if self.residual_rows.shape[1] != values.size:  # residuals not recorded
            return False

        def coupling(columns: np.ndarray) -> float:
            if not columns.any():
                return 0.0
            rows = self.residual_rows[:, columns]
            norm = float(np.linalg.norm(rows, 2)) if rows.size else 0.0
            return norm + self.residual_dropped

        below = np.abs(values[~above])
        inside = float(below.max()) if below.size else 0.0
        rest = max(self.complement_top, inside) + coupling(~above)
        return separated(values[above], coupling(above), rest, threshold)

    def zero_above(self, threshold: float) -> None:
        """Check that a given ``τ`` above the bounds' top has nothing above it: a fresh
        Lanczos run of ``COMPLEMENT_STEPS`` bounds ``‖A‖`` under it; else refuse (no filter
        reaches past the frame's end)."""
        if self.budget - self.meter.matvecs >= COMPLEMENT_STEPS:
            self.complement_top = complement_bound(
                self.meter.hvp,
                torch.zeros(self.n, 0, dtype=self.meter.dtype, device=self.meter.device),
                steps=min(COMPLEMENT_STEPS, self.n),
                generator=self.generator,
                callback=self.bar.update,
            )
            if self.certified(threshold):
                return
        raise MatrankValueError(
            message(
                "threshold",
                f"below the spectral bound {max(self.high, -self.low):.6g} (or above "
                f"the bound on ‖A‖, {self.complement_top:.6g}, for a count of 0); "
                "method='lanczos' or 'exact' count at any τ",
                repr(threshold),
            )
        )

    # -- read off the probes (DefaultFilter) -------------------------------------------

    def _edge(
        self, moments: np.ndarray, c: np.ndarray, degree: int, t: float, grid: np.ndarray
    ) -> float:
        """The edge term: the soft count's spread about ``N(τ)`` at the right ``τ``.

        Eigenvalues inside the filter's transition count fractionally. Placed at random
        with ``s`` per e-fold of ``λ`` near ``τ`` (the probes' counting curve over the
        e-fold above ``τ``; deflated eigenvalues count hard and are left out), the soft
        count minus ``N(τ)`` has variance ``s·κ``, ``κ = ∫(p(τe^ℓ) − 1[ℓ > 0])² dℓ`` for
        the filter ``p`` that ran. Zero inside a plateau, where ``s = 0``.
        """
        low = max(t, float(grid[0]))
        high = min(math.e * low, float(grid[-1]))
        if not high > low:
            return 0.0
        damping = jackson_damping(degree)
        ends = np.stack([self.frame.step(x, degree, damping) for x in (low, high)], axis=1)
        soft = (moments[:, : degree + 1] @ ends).mean(axis=0)
        slope = max(float(soft[0] - soft[1]) / math.log(high / low), 0.0)
        ell = np.linspace(-8.0, min(8.0, math.log(max(self.high, t) / t)), 2001)
        p = np.polynomial.chebyshev.chebval(self.frame.x(t * np.exp(ell)), c)
        kappa = float(np.trapezoid((p - (ell > 0)) ** 2, ell))
        return math.sqrt(slope * kappa)

    def _blur(self, moments: np.ndarray, grid: np.ndarray, degree: int) -> np.ndarray:
        """At each threshold of ``grid``, the errors of the probes' (Jackson-step) curve
        that their spread does not see, in quadrature: the edge term of :meth:`_edge`
        for that step (eigenvalues inside its transition count fractionally), and its
        smoothing bias: a Jackson step is ``N`` convolved with a kernel of angular
        width ``σ_β ≈ π/(degree + 2)``, ``σ_λ = half·sin β·σ_β`` in ``λ``, so the soft
        count is off by ``≈ ½σ_λ²·N''`` where the density falls across the step. Read
        at every eighth threshold, linear in ``log τ`` between."""
        frame, damping = self.frame, jackson_damping(degree)
        steps = np.stack([frame.step(t, degree, damping) for t in grid], axis=1)
        soft = (moments[:, : degree + 1] @ steps).mean(axis=0)
        beta = np.arccos(np.clip(frame.x(grid), -1, 1))
        width = frame.half * np.sin(beta) * math.pi / (degree + 2)
        bias = 0.5 * width**2 * np.abs(np.gradient(np.gradient(soft, grid), grid))
        some = np.unique(np.r_[np.arange(0, grid.size, 8), grid.size - 1])
        edge = [self._edge(moments, steps[:, i], degree, grid[i], grid) for i in some]
        edge = np.interp(np.log(grid), np.log(grid[some]), edge)
        return np.hypot(edge, bias) * (grid <= self.complement_top)

    def _density(self, moments: np.ndarray, degree: int) -> dict[str, Any]:
        """Eigenvalues per unit λ on a grid: the probes' moments plus the deflated θ's."""
        m = moments[:, : degree + 1]
        weight = self.n - self.captured.shape[1]
        mean = m.mean(axis=0) / np.maximum(m[:, :1].mean(), 1e-300) * weight
        k = np.arange(degree + 1)
        angles = np.arccos(np.clip(self.frame.x(self.deflated_values), -1, 1))
        mean = mean + np.cos(np.outer(angles, k)).sum(axis=0)
        x = np.cos(np.linspace(math.pi, 0, self.options.n_points + 2)[1:-1])
        density = kpm_density(mean, jackson_damping(degree), x) / self.frame.half
        return {"density_grid": self.frame.center + self.frame.half * x, "density": density}
