"""Polynomial (Chebyshev) filter rank estimator of Ubaru & Saad (ICML 2016)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ..._oracle import Capability
from ..._result import RankResult
from ..._run import Run, sized_threads
from ..._validation import (
    MatrankValueError,
    check_choice,
    check_int,
    check_jobs,
    check_threshold,
    message,
)
from ...theory import expected_count
from .default import DEFAULT_BUDGET, DefaultFilter
from .ubaru_saad import ubaru_saad_estimate, ubaru_saad_gap

__all__ = ["PolynomialRank", "expected_count", "ubaru_saad_gap"]


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
    threshold : float, "floor" or None, default=None
        The step's edge ``τ > 0`` (``|λ| > τ`` counts); ``None`` takes it from the density
        of states (each variant with its own rule). ``"floor"`` counts everything above
        the noise floor, as ``exact`` does: the default variant answers it from the whole
        space (``n ≤ 2048`` products within the budget, no ``degree``, ``n_probes`` or
        ``deflate``) and refuses it otherwise, since no filter reaches the floor. A
        given ``τ`` that no degree up to the cap reaches is counted from the whole
        space too where ``n`` fits the budget and ``UNREACHED_WHOLE_MAX`` (8192).
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
    n_jobs : int, optional
        Compute the probes' moments on joblib workers (``joblib.Parallel``'s ``n_jobs``;
        the caller's backend, loky by default), in blocks of at most 8 of the probes
        ``n_jobs=None`` draws: the estimate is the same for every ``n_jobs`` and
        backend, and equal to ``n_jobs=None``'s to rounding (a product of a block of 8
        columns need not round like one of 40). The default variant; the oracle must
        pickle.

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
    a pilot: the spectrum costs less than any filter. Then 64 Lanczos steps on
    ``(I − YYᵀ)A(I − YYᵀ)`` bound what is left (``diagnostics["complement_top"]``,
    :func:`~matrank.numerics.deflation.complement_bound`; a block Krylov basis holds
    only as many copies of a repeated eigenvalue as it had start columns, a fresh run
    sees the rest). If the basis is invariant and the bound is under the noise floor,
    the spectrum above the floor is known and the exact methods' plateau rule sets
    ``τ``: an exact count, stderr 0, no probes (likewise if probes find nothing left).
    When the bound and the pairs' residuals certify the Ritz count at ``τ``
    (:meth:`~.capture.SpectrumCapture.certified`, Li & Li's quadratic bound), it is the
    answer (stderr 0, path ``"deflated (complement below τ)"``, no further probes): the
    probes would only add the filter's tail over the complement's eigenvalues just
    under ``τ``, a bias of one sign (+5 on the digits CNN's 185 at the reach); while it
    is not certified a partial basis doubles, within half the remaining budget and 1 GB
    (not when ``deflate`` caps it). A given ``τ`` above the bounds' top is counted 0
    where 64 fresh Lanczos steps bound ``‖A‖`` under it, and refused otherwise.
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
    threshold: float | str | None = None
    max_matvecs: int | None = None
    deflate: int | None = None
    n_points: int = 100
    lanczos_steps: int = 30
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, ("default", "ubaru-saad"))
        check_int("degree", self.degree, low=2, allow_none=True)
        check_int("n_probes", self.n_probes, low=2, allow_none=True)
        check_threshold(self.threshold, self.method, self.threshold_refused)
        check_int("max_matvecs", self.max_matvecs, low=64, allow_none=True)
        check_int("deflate", self.deflate, low=0, allow_none=True)
        check_int("n_points", self.n_points, low=8)
        check_int("lanczos_steps", self.lanczos_steps, low=2)
        check_jobs(self.n_jobs)
        if self.variant == "ubaru-saad":
            if self.threshold == "floor":
                raise MatrankValueError(
                    message(
                        "threshold",
                        "a real number or None with variant='ubaru-saad' (a filter "
                        "does not reach the noise floor; variant='default' answers "
                        "'floor' from the whole space)",
                        "'floor'",
                    )
                )
            for name in ("max_matvecs", "deflate", "n_jobs"):
                if getattr(self, name) is not None:
                    raise MatrankValueError(
                        message(
                            name,
                            "None with variant='ubaru-saad' (its cost is degree·n_probes, "
                            "in one process)",
                            repr(getattr(self, name)),
                        )
                    )

    method: ClassVar[str] = "polynomial"
    threshold_refused: ClassVar[dict[str, str]] = {
        "zero": "a step filter at 0 counts rounding too; use threshold='floor'"
    }

    @sized_threads
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
        estimate yet: the result is NaN, ``diagnostics["interrupted_in"]`` names the
        phase. Checkpoint options as in :func:`matrank.estimate_rank`: probe blocks and
        the deflation basis are saved.
        """
        with Run.begin(
            self,
            obj,
            Capability.HVP,
            seed=seed,
            progress=progress,
            budget=self.max_matvecs or DEFAULT_BUDGET,
            **checkpointing,
        ) as run:
            options = dataclasses.replace(self, threshold=run.threshold(self.threshold))
            if self.variant == "ubaru-saad":
                return ubaru_saad_estimate(options, run)
            return DefaultFilter(options, run).estimate()
        return run.stopped()
