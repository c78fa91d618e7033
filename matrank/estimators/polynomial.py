"""Polynomial (Chebyshev) filter rank estimator of Ubaru & Saad (ICML 2016)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from .._oracle import Capability
from .._result import CountingCurve, RankResult, Status
from .._run import Run
from .._validation import (
    MatrankError,
    MatrankValueError,
    MatrankWarning,
    check_choice,
    check_int,
    check_real,
    message,
)
from ..numerics.chebyshev import (
    chebyshev_moments,
    gaussian_damping,
    jackson_damping,
    kpm_density,
    step_coefficients,
)
from ..numerics.krylov import BlockKrylov
from ..numerics.threshold import (
    ThresholdChoice,
    counting_curve,
    flat_stretch_threshold,
    resolve_threshold,
)
from ..numerics.trace import mean_and_stderr, probe_block
from ..theory import expected_count
from .ubaru_saad import ubaru_saad_estimate, ubaru_saad_gap

__all__ = ["PolynomialRank", "expected_count", "ubaru_saad_gap"]

_DEFAULT_BUDGET = 15_000
_DEGREE_CAP = 4000  # moments; 2000 matvecs per probe
_PILOT_PROBES = 16
_BASIS_BYTES = 1024**3  # the deflation basis
_BLOCK_BYTES = 128 * 1024**2  # probes in flight: four n × chunk blocks (≈ 1 GB peak)
# A Jackson-damped step is 1 − 2.5e-3 (2.5e-3) at an angular distance 3π/degree above
# (below) its edge, in β = arccos x: the filter "reaches" a threshold whose angle lies
# that far from zero's. On smooth densities its soft count then equals N(τ) within the
# Hutchinson error (benchmarks/polynomial_linear_nets.py).
_REACH = 3 * math.pi
# A Gaussian-damped step (width w in β) is Φ(−4.75) = 1e-6 at 4.75·w from its edge, and
# the series past degree D is below exp(−(D·w)²/2) = 1e-6 for D·w ≥ 5.3.
_GAUSS_EDGE, _GAUSS_TAIL = 4.75, 5.3
# Lanczos steps on the deflated operator for the top of what deflation left: the top
# Ritz value plus its residual, from a random start (Kuczyński & Woźniakowski: after m
# steps the top Ritz value misses λmax by a factor 1 − ε with probability ≲ √n·e^{−2m√ε}).
_COMPLEMENT_STEPS = 32
# Chebyshev moments of the density of states drawn from the whole space's eigenvalues
_WHOLE_SPACE_DENSITY_DEGREE = 200
# Largest n whose whole space is taken: the dense work grows like n³ (eigenvalues of the
# products of the unit vectors at n = 2000: ≈ 1 s; a Krylov basis of all of R^n after a
# pilot at n = 5120: 60 s on 2 cores), where a filter's 15,000 cheap products take seconds
_WHOLE_SPACE_MAX = 2048
# Columns per product in the deflation and whole-space paths: a model's HVP holds its
# activations once per column
_PRODUCT_COLUMNS = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolynomialRank:
    """Rank as the trace of a damped Chebyshev step filter (Ubaru & Saad 2016).

    Parameters
    ----------
    variant : {"default", "ubaru-saad"}, default="default"
        ``"default"``: a filter that cannot count the null space (``p(0) = 0`` exactly),
        deflation of the captured top subspace, the threshold from the widest flat stretch
        of the estimated counting curve, and the degree from the angle between that
        threshold and its plateau's edges (``≈ sqrt(λmax/τ)``); see Notes.
        ``"ubaru-saad"`` reproduces the baseline the Langevin paper compared against: the
        authors' published MATLAB, re-derived (research notes, paper_peer §3) --
        ``λmin = 0``, the interval padded by ``1e-5``, unit Gaussian probes, moments by the
        plain recurrence, the Jackson-damped KPM density on their grid, their ``find_gap``
        rule, and a Lanczos-σ-damped step on ``[ε, λmax]``.
    degree : int or None, default=None
        Chebyshev degree. ``"ubaru-saad"``: 50 (one matvec per degree per probe).
        ``"default"``: chosen from the threshold (moments are doubled, so a degree costs
        half a matvec per probe).
    n_probes : int or None, default=None
        Probe vectors. ``"ubaru-saad"``: 300. ``"default"``: as many as the budget allows.
    threshold : float or None, default=None
        The step's edge ``τ`` (``|λ| > τ`` counts); ``None`` takes it from the density of
        states (each variant with its own rule).
    max_matvecs : int or None, default=None
        Budget of the ``"default"`` variant, 15,000 when ``None`` (the faithful mode's
        cost is fixed by ``degree·n_probes``).
    deflate : int or None, default=None
        ``"default"`` only: most Krylov columns spent on capturing the top subspace;
        ``None`` means half the budget left after the pilot (and at most 1 GB of basis);
        ``0`` switches deflation off. Deflation runs only when the pilot's count ``r``
        fits: ``2r + 64`` columns within this limit.
    n_points : int, default=100
        Points of the density grid (``Npts`` of the U&S code).
    lanczos_steps : int, default=30
        Lanczos steps for the spectral bounds when there is no deflation basis to read
        them from.

    Notes
    -----
    Both variants estimate ``tr p(A) = Σ_i p(λ_i)`` for a polynomial ``p ≈ 1{|λ| > τ}``
    from moments ``vᵀT_k(B)v`` of random probes; the density of states, the threshold
    and the count all come from the same moments.

    **Default.** (1) Bounds from ``lanczos_steps`` Lanczos steps (a 1 % margin; a Ritz
    value below the noise floor's negative proves negative eigenvalues, which are then
    counted too, as ``|λ| > τ``). (2) A pilot of 16 sphere probes at high degree gives
    the estimated counting curve ``N(t)`` for ``t`` from the filter's reach to ``λmax``;
    its widest flat stretch, at least a decade wide, is the plateau
    (:func:`matrank.numerics.threshold.flat_stretch_threshold`). (3) Inside a plateau the
    step's edge ``τ`` sits at the plateau's angular midpoint (its lower end taken as zero
    when it reaches the bottom of the pilot's grid), and the step is Gaussian-damped (tails ``1e-6`` at the plateau's edges, where Jackson's decay
    only like ``(degree·δ)^{−3}``), at the lowest degree that achieves it, and the rest of
    the budget buys probes at that degree. Without a plateau (a continuous spectrum, as
    on deep-linear-network Hessians) the status is ``NO_PLATEAU`` and ``τ`` is the
    *reach* of the pilot's degree ``D`` -- the threshold whose angle ``arccos x`` lies
    ``3π/D`` from zero's, ``≈ (3π/(2D))²·λmax`` for a PSD operator: the soft count of a
    Jackson step there equals ``N(τ)`` on smooth densities, and eigenvalues below it are
    out of reach of this degree. (4) When the pilot's count ``r`` fits a Krylov basis of
    ``2r + 64`` columns, the converged Ritz pairs (residual ``≤ 1e-3·|θ|``) span a
    deflated ``Y``: their values above ``τ`` count exactly and fresh probes, uniform on
    the sphere of ``range(Y)⊥``, estimate only the rest (Hutch++'s split). For
    ``n ≤ 2048`` (the basis's dense work grows like ``n³``) whose ``n`` products fit
    half the remaining budget (``deflate`` not set) the basis takes the whole space;
    when they fit the budget left after the bounds and no filter setting is given
    (``threshold``, ``degree``, ``n_probes``, ``deflate``), it does so at once, without
    a pilot: the spectrum costs less than any filter. Then 32 Lanczos steps on
    ``(I − YYᵀ)A(I − YYᵀ)`` bound what is left (largest ``|θ| + ‖r‖``,
    ``diagnostics["complement_top"]``; a block Krylov basis holds only as many copies of
    a repeated eigenvalue as it had start columns, a fresh run sees the rest). If the
    basis is invariant and the bound is under the noise floor, the spectrum above the
    floor is known and the exact methods' plateau rule sets ``τ``: an exact count,
    stderr 0, no probes (likewise if probes find nothing left). When the bound is under
    ``τ``, the complement holds nothing to count and the Ritz count is the answer
    (stderr 0, path ``"deflated (complement below τ)"``, no further probes): the probes
    would only add the filter's tail over the complement's eigenvalues just under
    ``τ``, a bias of one sign (+5 on the digits CNN's 185 at the reach); while the
    bound stays at or above ``τ`` a partial basis doubles, within half the remaining
    budget and 1 GB (not when ``deflate`` caps it).
    (5) The filter is shifted and scaled so that
    ``p(0) = 0`` exactly: an exact null space, however large, adds nothing (the plain
    step's ``p(0)`` of ``1e-3`` … ``1e-5`` counts ``(n − r)·p(0)`` phantom eigenvalues).
    Negative eigenvalues below ``−τ`` are counted too when the bounds show any.
    Cost: at most ``max_matvecs`` matvecs; ``diagnostics`` hold the degree, the reach,
    the deflated count, the density of states and the per-probe samples; ``counts`` is
    the estimated ``N(t)`` with its stderr.

    **Faithful.** ``degree·n_probes + lanczos_steps`` matvecs (15,030 at the defaults).
    The estimate is ``n·mean_v Σ_k σ_kγ_k vᵀT_k(B)v`` over unit probes; the σ-damped step
    is slightly negative at 0 (``p(0) ≈ −5e-3`` on the linear-net Hessians), so every
    null eigenvalue subtracts a little, and its gap rule settles at ``≈ 1.24 %`` of
    ``λmax`` on continuous spectra: the 11–20 % under-count of the Langevin paper's
    Table 1. ``diagnostics["filter_at_zero"]`` reports ``p(0)``.

    The standard error is ``std/sqrt(n_probes)`` of the per-probe samples: the estimate
    is unbiased for ``Σ_i p(λ_i)``, the filter applied to the spectrum -- a soft count,
    equal to ``N(τ)`` up to the eigenvalues within the filter's transition.

    References
    ----------
    Ubaru & Saad, "Fast methods for estimating the numerical rank of large matrices",
    ICML 2016, §3–4; Weiße et al., Rev. Mod. Phys. 78 (2006), §II (KPM); Meyer, Musco,
    Musco & Woodruff, "Hutch++", SOSA 2021 (deflation).

    Examples
    --------
    >>> import matrank
    >>> from matrank.testing import rotated_spectrum
    >>> A = rotated_spectrum(200, 30, cond=2.0, seed=0)
    >>> result = matrank.PolynomialRank(max_matvecs=2000).estimate(A, seed=0)
    >>> abs(result.rank - 30) < 4 * result.stderr + 1e-9
    True
    """

    variant: str = "default"
    degree: int | None = None
    n_probes: int | None = None
    threshold: float | None = None
    max_matvecs: int | None = None
    deflate: int | None = None
    n_points: int = 100
    lanczos_steps: int = 30

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, ("default", "ubaru-saad"))
        check_int("degree", self.degree, low=2, allow_none=True)
        check_int("n_probes", self.n_probes, low=2, allow_none=True)
        check_real("threshold", self.threshold, low=0.0, closed="right", allow_none=True)
        check_int("max_matvecs", self.max_matvecs, low=64, allow_none=True)
        check_int("deflate", self.deflate, low=0, allow_none=True)
        check_int("n_points", self.n_points, low=8)
        check_int("lanczos_steps", self.lanczos_steps, low=2)
        if self.variant == "ubaru-saad":
            for name in ("max_matvecs", "deflate"):
                if getattr(self, name) is not None:
                    raise MatrankValueError(
                        message(
                            name,
                            "None with variant='ubaru-saad' (its cost is degree·n_probes)",
                            repr(getattr(self, name)),
                        )
                    )

    method: ClassVar[str] = "polynomial"

    def estimate(
        self,
        obj: Any,
        *,
        seed: int | None = None,
        progress: bool = False,
        **checkpointing: Any,
    ) -> RankResult:
        """Estimate the rank of ``obj`` (see the class notes).

        ``progress`` shows a bar of matvecs spent (the default variant). Ctrl-C while
        the final probes run returns the estimate from the probes so far with
        ``Status.INTERRUPTED``; before them (bounds, pilot, deflation) there is no
        estimate yet and ``KeyboardInterrupt`` propagates. Checkpoint options as in
        :func:`matrank.estimate_rank`: probe blocks and the deflation basis are saved.
        """
        run = Run.begin(
            self,
            obj,
            Capability.HVP,
            seed=seed,
            progress=progress,
            total=self.max_matvecs or _DEFAULT_BUDGET,
            **checkpointing,
        )
        try:
            if self.variant == "ubaru-saad":
                return ubaru_saad_estimate(self, run)
            return _DefaultFilter(self, run).estimate()
        finally:
            run.close()


class _DefaultFilter:
    """One run of the default variant (see :class:`PolynomialRank`, Notes)."""

    def __init__(self, options: PolynomialRank, run: Run) -> None:
        self.options, self.run = options, run
        self.meter, self.generator, self.bar = run.meter, run.generator, run.bar
        self.n = run.meter.dim
        self.calls = 0  # moments() calls so far: each names its checkpoint keys
        self.interrupted = False
        self.budget = options.max_matvecs or _DEFAULT_BUDGET

    # -- the spectrum's frame ------------------------------------------------------------

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
        eps = float(torch.finfo(meter.dtype).eps)
        largest = float(values.abs().max()) if values.numel() else 0.0
        self.floor = max(largest * n * eps, krylov.symmetry_defect)
        high = float((values + residuals).max())
        # Ritz values are Rayleigh quotients: one below −floor proves a negative eigenvalue
        negative = float(values.min()) < -self.floor
        low = float((values - residuals).min()) if negative else 0.0
        width = max(high - low, 0.0)
        # Ritz values approach the ends from inside: a 1 % margin keeps the spectrum in
        # [−1, 1], where the Chebyshev polynomials stay bounded (checked on the moments).
        self.high = high + 0.01 * width
        self.low = low - 0.01 * width if negative else 0.0
        self.center = (self.high + self.low) / 2
        self.half = max((self.high - self.low) / 2, np.finfo(np.float64).tiny)
        self.beta_zero = self._angle(0.0)
        self.captured = torch.zeros(n, 0, dtype=meter.dtype, device=meter.device)
        self.deflated_values = np.zeros(0)
        self.basis_size = 0
        self.invariant = False
        self.exact_path = False
        self.complement_top = math.inf
        self.krylov: BlockKrylov | None = None

    def _whole_space(self) -> RankResult:
        """The spectrum from the products of all ``n`` unit vectors, no probes.

        When the budget left after the bounds holds ``n ≤ _WHOLE_SPACE_MAX`` products,
        any filter would cost more than the spectrum itself: the products of the
        identity's columns are the matrix, whose symmetric part's eigenvalues the exact
        methods' plateau rule reads (a Krylov basis of all of ``R^n`` gives the same
        values after an ``O(n³)`` orthogonalization: 2000 × 2000, 3.4 s against 1 s).
        The asymmetry of the products joins the noise floor.
        """
        meter, n = self.meter, self.n
        block = _PRODUCT_COLUMNS
        columns = []

        def product(first: int) -> torch.Tensor:
            before = meter.matvecs
            unit = torch.zeros(n, min(block, n - first), dtype=meter.dtype)
            unit[first : first + unit.shape[1]] = torch.eye(
                unit.shape[1], dtype=meter.dtype
            )
            image = meter.hvp(unit.to(meter.device)).to("cpu", torch.float64)
            self.bar.update(meter.matvecs - before)
            return image

        for first in range(0, n, block):
            columns.append(
                self.run.cached(f"unit {first}", lambda first=first: product(first))
            )
        matrix = torch.cat(columns, dim=1)
        asymmetry = float((matrix - matrix.T).abs().max())
        self.floor = max(self.floor, asymmetry)
        values = np.linalg.eigvalsh((0.5 * (matrix + matrix.T)).numpy())
        values = values[np.argsort(-np.abs(values))]  # as the Ritz values come
        self.deflated_values = values[np.abs(values) > self.floor]
        self.basis_size = n
        magnitudes = np.abs(self.deflated_values)
        threshold, choice = resolve_threshold(magnitudes, self.floor, None)
        assert choice is not None
        self.exact_path, self.complement_top = True, 0.0
        status = Status.CONVERGED if choice.decades >= 1 else Status.NO_PLATEAU
        degree = _WHOLE_SPACE_DENSITY_DEGREE
        diagnostics: dict[str, Any] = {
            "degree": 0,
            "n_probes": 0,
            "samples": np.zeros(0),
            "edge_stderr": 0.0,
            "plateau": dataclasses.asdict(choice),
            **self._density(np.zeros((1, degree + 1)), degree),
        }
        counts = counting_curve(magnitudes, self.floor, self.high)
        counts = dataclasses.replace(counts, stderr=np.zeros_like(counts.counts))
        rank = float((magnitudes > threshold).sum())
        return self._result(rank, 0.0, threshold, status, diagnostics, counts)

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
        limit = min(limit, _BASIS_BYTES // (8 * n), n)
        wanted = n if whole else min(2 * math.ceil(expected) + 64, n)
        if (expected < 0.5 and not whole) or wanted > limit:
            return
        if limit == n <= _WHOLE_SPACE_MAX and self.options.deflate is None:
            wanted = n  # the whole space fits: its spectrum, down to the noise floor
        self.krylov = BlockKrylov(
            self._products, n, meter.dtype, meter.device, self.generator
        )
        self._extend(wanted)

    def _products(self, V: torch.Tensor) -> torch.Tensor:
        """``A @ V`` in products of at most ``_PRODUCT_COLUMNS`` columns."""
        if V.shape[1] <= _PRODUCT_COLUMNS:
            return self.meter.hvp(V)
        step = _PRODUCT_COLUMNS
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
        keep = (residuals <= 1e-3 * values.abs()) & (values.abs() > self.floor)
        captured = krylov.Q @ vectors[:, keep].to(dtype=meter.dtype, device=meter.device)
        self.captured = torch.linalg.qr(captured).Q if captured.shape[1] else captured
        self.deflated_values = values[keep].numpy()
        self.basis_size = krylov.size
        self.invariant = krylov.next_kept == 0

    def _bound_complement(self) -> None:
        """Bound ``|λ|`` of what the deflation left: Lanczos on ``(I − YYᵀ)A(I − YYᵀ)``.

        The Krylov basis that found ``Y`` also holds the complement's top, but a repeated
        eigenvalue has only as many copies there as the block had columns; a fresh run on
        the projected operator sees every copy that deflation missed. The bound is the
        largest ``|θ| + ‖r‖`` of its Ritz pairs.
        """
        meter, captured = self.meter, self.captured
        steps = min(_COMPLEMENT_STEPS, self.n - captured.shape[1])
        if steps < 1 or self.basis_size == self.n:  # the Ritz values are the spectrum
            self.complement_top = 0.0
            return

        def projected(block: torch.Tensor) -> torch.Tensor:
            block = block - captured @ (captured.T @ block)
            image = meter.hvp(block)
            return image - captured @ (captured.T @ image)

        krylov = BlockKrylov(projected, self.n, meter.dtype, meter.device, self.generator)
        while krylov.size < steps:
            before = meter.matvecs
            krylov.extend(1)  # after a breakdown, a fresh random direction
            self.bar.update(meter.matvecs - before)
        values, vectors = krylov.ritz()
        residuals = krylov.residual_norms(vectors)
        self.complement_top = float((values.abs() + residuals).max())

    def _angle(self, t: float) -> float:
        """``β = arccos x`` of the eigenvalue ``t``."""
        return math.acos(min(1.0, max(-1.0, (t - self.center) / self.half)))

    def _midpoint(self, lower: float, upper: float) -> float:
        """The eigenvalue whose angle is halfway between those of ``lower`` and ``upper``;
        with ``lower = 0`` and negative eigenvalues, the side nearer zero in angle."""
        angle = (self._angle(lower) + self._angle(upper)) / 2
        midpoint = self.center + self.half * math.cos(angle)
        if self.low < 0:
            mirrored = (self._angle(-lower) + self._angle(-upper)) / 2
            midpoint = max(midpoint, -(self.center + self.half * math.cos(mirrored)))
        return midpoint

    def reach(self, degree: int) -> float:
        """The smallest threshold a degree resolves: its angle ``3π/degree`` from zero's."""
        shift = _REACH / degree
        angle = self.beta_zero - shift
        reach = self.center + self.half * math.cos(angle) if angle > 0 else self.high
        if self.low < 0:
            angle = self.beta_zero + shift
            below = (
                self.center + self.half * math.cos(angle) if angle < math.pi else self.low
            )
            reach = max(reach, -below)
        return reach

    def _separation(self, t: float) -> float:
        """Smallest angle between ``±t`` and zero (the side that has eigenvalues)."""
        separation = abs(self.beta_zero - self._angle(t))
        if self.low < 0:
            separation = min(separation, abs(self._angle(-t) - self.beta_zero))
        return separation

    # -- moments and filters -------------------------------------------------------------

    def moments(self, count: int, steps: int, *, final: bool = False) -> np.ndarray:
        """``(count, 2·steps + 1)`` moments of sphere probes in ``range(Y)⊥``.

        Blocks of probes and the steps of their recurrence are checkpointed. ``final``:
        a Ctrl-C keeps the blocks done so far and marks the run interrupted.
        """
        meter, n = self.meter, self.n
        self.calls += 1
        if count == 0:
            return np.zeros((0, 2 * steps + 1))
        chunk = max(1, _BLOCK_BYTES // (32 * n))
        pieces: list[np.ndarray] = []

        def block(size: int, key: str) -> np.ndarray:
            probes = probe_block(
                n,
                size,
                kind="sphere",
                generator=self.generator,
                dtype=meter.dtype,
                device=meter.device,
                orthogonal_to=self.captured,
            )
            partial = key + " partial"

            def save(state: Any) -> None:
                if self.run.due():
                    self.run.record(partial, state())

            return (
                chebyshev_moments(
                    meter.hvp,
                    probes,
                    steps,
                    center=self.center,
                    half_width=self.half,
                    callback=self.bar.update,
                    resume=self.run.restore(partial),
                    save=save,
                )
                .cpu()
                .numpy()
            )

        try:
            for begin in range(0, count, chunk):
                size = min(chunk, count - begin)
                key = f"moments {self.calls}:{begin}"
                pieces.append(
                    self.run.cached(key, lambda size=size, key=key: block(size, key))
                )
        except KeyboardInterrupt:
            # the probes measured before this call (the pilot's) carry the estimate
            if not final:
                raise
            self.interrupted = True
        if not pieces:
            return np.zeros((0, 2 * steps + 1))
        moments = np.concatenate(pieces)
        # |vᵀT_k(B)v| ≤ ‖v‖² while the spectrum lies in [−1, 1]; T_k grows fast outside
        norms = moments[:, :1]
        bound = np.maximum(norms, np.finfo(np.float64).tiny)  # a probe of an empty ⊥
        excess = float(np.max(np.abs(moments) / bound)) if norms.size else 0.0
        if excess > 1.01:
            raise MatrankError(
                f"the spectrum reaches outside the bounds [{self.low:.6g}, {self.high:.6g}] "
                f"from the Krylov run (a Chebyshev moment is {excess:.3g}·‖v‖²): the "
                "operator is probably not symmetric or not deterministic; check it with "
                "matrank.check_oracle"
            )
        return moments

    def coefficients(self, t: float, degree: int, damping: np.ndarray) -> np.ndarray:
        """Damped step ``1{|λ| > t}``, shifted and scaled so that ``p(0) = 0`` exactly."""
        c = np.zeros(degree + 1)
        upper = (t - self.center) / self.half
        if upper < 1:
            c += step_coefficients(upper, 1.0, degree)
        lower = (-t - self.center) / self.half
        if self.low < 0 and lower > -1:
            c += step_coefficients(-1.0, lower, degree)
        c *= damping[: degree + 1]
        at_zero = float(np.polynomial.chebyshev.chebval(self._x(0.0), c))
        c[0] -= at_zero
        return c / (1 - at_zero)

    def _x(self, t: Any) -> Any:
        return (np.asarray(t, dtype=np.float64) - self.center) / self.half

    def samples(self, moments: np.ndarray, c: np.ndarray, threshold: float) -> np.ndarray:
        """Per-probe counts: the deflated Ritz values above ``τ`` plus the probe's.

        The deflated part is a hard count: those eigenvalues are known (to a residual
        ``≤ 1e-3·|θ|``), so the filter's transition blurs only the rest.
        """
        captured = int((np.abs(self.deflated_values) > threshold).sum())
        if threshold > self.complement_top:  # nothing left above τ: the rest only leaks
            return np.full(len(moments), float(captured))
        return moments[:, : len(c)] @ c + captured

    def curve(self, moments: np.ndarray, degree: int, grid: np.ndarray) -> np.ndarray:
        """``(m, G)`` per-probe counts at every threshold of ``grid`` (Jackson steps)."""
        damping = jackson_damping(degree)
        table = np.stack([self.coefficients(t, degree, damping) for t in grid], axis=1)
        magnitudes = np.sort(np.abs(self.deflated_values))
        captured = magnitudes.size - np.searchsorted(magnitudes, grid, side="right")
        soft = moments[:, : degree + 1] @ table
        soft[:, grid > self.complement_top] = 0.0
        return soft + captured

    def grid(self, degree: int) -> np.ndarray:
        low = max(self.reach(degree), self.floor, np.finfo(np.float64).tiny)
        return np.geomspace(low, max(self.high, 10 * low), 160)

    # -- the run -------------------------------------------------------------------------

    def estimate(self) -> RankResult:
        options, meter = self.options, self.meter
        self._bounds()
        if self.high <= self.floor * 1.02:  # the operator is zero up to rounding
            return self._result(0.0, 0.0, self.floor, Status.CONVERGED, {})
        remaining = self.budget - meter.matvecs
        settings = (options.threshold, options.degree, options.n_probes, options.deflate)
        if settings == (None,) * 4 and self.n <= min(remaining, _WHOLE_SPACE_MAX):
            return self._whole_space()
        choice: ThresholdChoice | None = None
        status = Status.CONVERGED
        kernel = "jackson"
        pilot_count = min(_PILOT_PROBES, options.n_probes or _PILOT_PROBES)
        if options.threshold is not None:
            threshold = options.threshold
            if threshold >= max(self.high, -self.low):
                raise MatrankValueError(
                    message(
                        "threshold",
                        f"below the spectral bound {max(self.high, -self.low):.6g}",
                        repr(threshold),
                    )
                )
            separation = self._separation(threshold)
            degree = options.degree or _even(
                min(_DEGREE_CAP, max(16, 2 * _REACH / separation))
            )
            pilot_degree = degree
            damping = jackson_damping(degree)
            steps = math.ceil(degree / 2)
            pilot_count = min(pilot_count, self._affordable(remaining // steps))
            pilot = self.moments(pilot_count, steps)
        else:
            if options.degree:
                pilot_steps = math.ceil(options.degree / 2)
            else:
                pilot_steps = int(
                    min(_DEGREE_CAP // 2, max(8, 0.4 * remaining // pilot_count))
                )
            pilot_degree = 2 * pilot_steps
            pilot_count = min(pilot_count, self._affordable(remaining // pilot_steps))
            pilot = self.moments(pilot_count, pilot_steps)
            grid = self.grid(pilot_degree)
            choice = flat_stretch_threshold(grid, self.curve(pilot, pilot_degree, grid))
            if choice.decades >= 1.0:
                # The edge at the plateau's angular midpoint, where a degree separates
                # the two sides best; a plateau reaching the grid's bottom reaches zero
                # (what lies below the pilot's reach is invisible, and p(0) = 0).
                lower = 0.0 if choice.lower <= grid[0] else choice.lower
                threshold = self._midpoint(lower, choice.upper)
                separation = self._angle(threshold) - self._angle(choice.upper)
                degree = options.degree or _even(
                    min(pilot_degree, max(16, _GAUSS_EDGE * _GAUSS_TAIL / separation))
                )
                # the steepest Gaussian step whose tails are 1e-6 at both plateau edges
                width = max(separation / _GAUSS_EDGE, _GAUSS_TAIL / degree)
                damping, kernel = gaussian_damping(degree, width), "gaussian"
            else:
                status = Status.NO_PLATEAU
                degree = pilot_degree
                threshold = self.reach(degree)
                damping = jackson_damping(degree)
        steps = math.ceil(degree / 2)
        pilot = pilot[:, : 2 * steps + 1]
        c = self.coefficients(threshold, degree, damping)
        pilot_samples = self.samples(pilot, c, threshold)
        mean, stderr = mean_and_stderr(torch.from_numpy(pilot_samples))
        if options.n_probes is None:
            self._deflate(mean + 2 * stderr)
        if self.captured.shape[1]:
            self._bound_complement()
            # A partial capture with something left above τ leaves the probes a soft
            # count whose tail under τ is one-sided: double the basis while half the
            # remaining budget (and 1 GB) allows, until the bound falls under τ
            while (
                self.complement_top >= threshold
                and not self.invariant
                and self.options.deflate is None
                and self.basis_size < self.n
            ):
                grown = min(2 * self.basis_size, self.n)
                room = (self.budget - meter.matvecs - _COMPLEMENT_STEPS) // 2
                if grown - self.basis_size > room or grown > _BASIS_BYTES // (8 * self.n):
                    break
                self._extend(grown)
                self._bound_complement()
            known = self.invariant and self.complement_top <= self.floor
            # the pilot saw the whole space; the rest sees range(Y)⊥ only
            if known:  # nothing left above the noise floor: the probes would agree
                moments = np.zeros((pilot_count, 2 * steps + 1))
            else:
                moments = self.moments(pilot_count, steps)
            samples = self.samples(moments, c, threshold)
            if threshold > self.complement_top and not known:
                pass  # the count is the Ritz count; more probes would only refine N(t < τ)
            elif np.ptp(samples) > 1e-9 * (1 + abs(samples.mean())):
                more = (self.budget - meter.matvecs) // steps
                more_moments = self.moments(max(0, more), steps, final=True)
                moments = np.concatenate([moments, more_moments])
            elif self.invariant and options.threshold is None:
                # The basis is invariant and the probes agree to rounding: the spectrum
                # above the floor is known exactly, and the exact methods' plateau rule
                # applies to it (down to the noise floor, past any filter's reach).
                threshold, choice = resolve_threshold(
                    np.abs(self.deflated_values), self.floor, None
                )
                assert choice is not None
                status = Status.CONVERGED if choice.decades >= 1 else Status.NO_PLATEAU
                self.exact_path = True
        else:
            if options.n_probes:
                more = options.n_probes - len(pilot)
            else:
                more = (self.budget - meter.matvecs) // steps
            moments = np.concatenate([pilot, self.moments(max(0, more), steps, final=True)])
        reach = self.reach(degree)
        if threshold < reach * (1 - 1e-12) and not self.exact_path:
            warnings.warn(
                f"threshold {threshold:.3g} is below the reach {reach:.3g} of degree "
                f"{degree}: eigenvalues near it count partially; raise `degree` (cost "
                "grows like sqrt(λmax/τ))",
                MatrankWarning,
                stacklevel=4,
            )
        samples = self.samples(moments, c, threshold)
        mean, stderr = mean_and_stderr(torch.from_numpy(samples))
        if self.exact_path:  # the probes carry rounding only: the count is the Ritz count
            mean = float((np.abs(self.deflated_values) > threshold).sum())
            stderr = 0.0
        grid = self.grid(degree)
        table = self.curve(moments, degree, grid)
        edge = 0.0
        if not self.exact_path and not threshold > self.complement_top:
            edge = self._edge(moments, c, degree, threshold, grid)
            stderr = math.hypot(stderr, edge)
        counts = CountingCurve(
            thresholds=grid,
            counts=table.mean(axis=0),
            stderr=table.std(axis=0, ddof=1) / math.sqrt(len(table)),
        )
        raw = (
            step_coefficients(self._x(threshold), 1.0, degree) * damping[: degree + 1]
            if self._x(threshold) < 1
            else np.zeros(degree + 1)
        )
        diagnostics: dict[str, Any] = {
            "degree": degree,
            "n_probes": len(samples),
            "kernel": kernel,
            "reach": reach,
            "filter_coefficients": c,
            "filter_at_zero": float(np.polynomial.chebyshev.chebval(self._x(0.0), c)),
            "uncorrected_filter_at_zero": float(
                np.polynomial.chebyshev.chebval(self._x(0.0), raw)
            ),
            "samples": samples,
            "edge_stderr": edge,
        }
        if choice is not None:
            diagnostics["plateau"] = dataclasses.asdict(choice)
        diagnostics["pilot_degree"] = pilot_degree
        diagnostics["pilot_probes"] = pilot_count
        diagnostics.update(self._density(moments, degree))
        return self._result(mean, stderr, threshold, status, diagnostics, counts)

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
        ends = np.stack(
            [self.coefficients(x, degree, damping) for x in (low, high)], axis=1
        )
        soft = (moments[:, : degree + 1] @ ends).mean(axis=0)
        slope = max(float(soft[0] - soft[1]) / math.log(high / low), 0.0)
        ell = np.linspace(-8.0, min(8.0, math.log(max(self.high, t) / t)), 2001)
        p = np.polynomial.chebyshev.chebval(self._x(t * np.exp(ell)), c)
        kappa = float(np.trapezoid((p - (ell > 0)) ** 2, ell))
        return math.sqrt(slope * kappa)

    def _path(self, threshold: float) -> str:
        if self.exact_path:
            return "deflated (exact)"
        if threshold > self.complement_top:
            return "deflated (complement below τ)"
        return "probes"

    def _affordable(self, count: int) -> int:
        if count < 2:
            raise MatrankValueError(
                message(
                    "max_matvecs",
                    "enough for two probes after the Krylov run",
                    f"{self.budget} ({self.meter.matvecs} spent on bounds and deflation)",
                )
            )
        return count

    def _density(self, moments: np.ndarray, degree: int) -> dict[str, Any]:
        """Eigenvalues per unit λ on a grid: the probes' moments plus the deflated θ's."""
        m = moments[:, : degree + 1]
        weight = self.n - self.captured.shape[1]
        mean = m.mean(axis=0) / np.maximum(m[:, :1].mean(), 1e-300) * weight
        k = np.arange(degree + 1)
        angles = np.arccos(np.clip(self._x(self.deflated_values), -1, 1))
        mean = mean + np.cos(np.outer(angles, k)).sum(axis=0)
        x = np.cos(np.linspace(math.pi, 0, self.options.n_points + 2)[1:-1])
        density = kpm_density(mean, jackson_damping(degree), x) / self.half
        return {"density_grid": self.center + self.half * x, "density": density}

    def _result(
        self,
        rank: float,
        stderr: float,
        threshold: float,
        status: Status,
        diagnostics: dict[str, Any],
        counts: CountingCurve | None = None,
    ) -> RankResult:
        diagnostics = {
            "variant": "default",
            "lambda_min": self.low,
            "lambda_max": self.high,
            "noise_floor": self.floor,
            "deflated": int(self.deflated_values.size),
            "deflated_values": self.deflated_values,
            "path": self._path(threshold),
            "complement_top": self.complement_top,
            "basis_size": self.basis_size,
            **diagnostics,
        }
        if self.interrupted:
            status = Status.INTERRUPTED
        return self.run.result(
            rank,
            stderr=stderr,
            threshold=threshold,
            diagnostics=diagnostics,
            counts=counts,
            status=status,
        )


def _even(value: float) -> int:
    """The even integer at or above ``value`` (doubled moments come in even degrees)."""
    return 2 * math.ceil(value / 2)
