"""Evolution-strategies covariance route: the rank from loss values alone."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from .._oracle import Capability, CostMeter
from .._result import RankResult, Status
from .._run import Interim, Run, sized_threads
from .._validation import (
    MatrankError,
    MatrankValueError,
    MatrankWarning,
    check_choice,
    check_int,
    check_real,
    message,
)
from ..numerics.trace import mean_and_stderr

__all__ = ["EvolutionRank", "null_band"]


@dataclasses.dataclass(frozen=True)
class _Look:
    """One look at the kept samples' covariance: its eigenvalues against the null band."""

    eigenvalues: np.ndarray
    edge: float  #: the null band's lower edge
    tw: float  #: its Tracy–Widom scale
    cut: float  #: edge − 4 scales: a variance below it is a curved direction
    count: int
    margin: float  #: the nearest eigenvalue's distance from the cut, in scales
    nearest: float
    widened: int  #: variances far above the band's top (negative curvature)

    @classmethod
    def of(cls, covariance: torch.Tensor, n: int, kept: int) -> _Look:
        eigenvalues = np.linalg.eigvalsh(covariance.numpy())
        edge, tw = null_band(n, kept)
        cut = edge - 4 * tw
        # selection by the loss widens the samples only along negative curvature: a
        # variance far above the null band's top is a saddle (a minimum never does it)
        top, top_scale = null_band_top(n, kept)
        distances = np.abs(eigenvalues - cut)
        nearest = int(np.argmin(distances))
        # the null cluster's own smallest eigenvalue sits near the edge, ≥ 4 scales
        # above the cut by construction: the margin measures the curved directions'
        return cls(
            eigenvalues=eigenvalues,
            edge=edge,
            tw=tw,
            cut=cut,
            count=int((eigenvalues < cut).sum()),
            margin=float(distances[nearest] / tw) if tw > 0 else math.inf,
            nearest=float(eigenvalues[nearest]),
            widened=int((eigenvalues > top + 6 * top_scale).sum()),
        )


@dataclasses.dataclass
class _Sampling:
    """The kept samples: the ``n × n`` sum of ``uuᵀ`` and the running tallies."""

    total: torch.Tensor
    per_population: int
    kept: int = 0
    populations: int = 0
    soft: list[float] = dataclasses.field(default_factory=list)
    excess: float = 0.0
    history: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    # first look when the null band is (1 ± 1/4)²: deficits under 0.44 are invisible
    # before that, and no count can be trusted
    next_check: int = 64
    look: _Look | None = None

    @classmethod
    def fresh(cls, n: int, options: EvolutionRank) -> _Sampling:
        per = (
            1
            if options.selection == "comma"
            else max(1, round(options.keep * options.population))
        )
        total = torch.zeros(n, n, dtype=torch.float64)
        return cls(total, per, next_check=max(16 * n, 64))

    def add(self, chosen: torch.Tensor, excess: float) -> None:
        n = self.total.shape[0]
        self.total += chosen.T @ chosen
        self.kept += self.per_population
        self.populations += 1
        self.soft.append(n - float((chosen**2).sum(dim=1).mean()))
        self.excess += excess

    def assess(self, *, record: bool = True) -> _Look:
        look = _Look.of(self.total / self.kept, self.total.shape[0], self.kept)
        if record:
            self.look = look
            self.history.append((self.kept, look.count))
        return look

    #: what a checkpoint keeps, in this order (the look is recomputed)
    SAVED: ClassVar[tuple[str, ...]] = (
        "total",
        "kept",
        "populations",
        "soft",
        "excess",
        "history",
        "next_check",
    )

    def state(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.SAVED)

    def load(self, saved: tuple[Any, ...]) -> None:
        for name, value in zip(self.SAVED, saved, strict=True):
            setattr(self, name, value)


def null_band(dimension: int, kept: int) -> tuple[float, float]:
    """Lower edge and fluctuation scale of the smallest eigenvalue of a white Wishart.

    The sample covariance of ``kept`` standard Gaussian vectors in ``dimension``
    dimensions has its eigenvalues in the Marchenko–Pastur band
    ``(1 ± sqrt(dimension/kept))²``; the smallest one fluctuates around the lower edge on
    the Tracy–Widom scale ``(1 − sqrt(q))·(1/sqrt(p) − 1/sqrt(N))^{1/3}/sqrt(N)``
    (Johnstone 2001; Ma 2012 for the smallest eigenvalue), ``p = dimension``,
    ``N = kept``, ``q = p/N``. Returns ``(edge, scale)``.
    """
    p, n = float(dimension), float(kept)
    root = math.sqrt(p / n)
    edge = (1 - root) ** 2
    scale = (1 - root) * (1 / math.sqrt(p) - 1 / math.sqrt(n)) ** (1 / 3) / math.sqrt(n)
    return edge, scale


def null_band_top(dimension: int, kept: int) -> tuple[float, float]:
    """Upper edge ``(1 + sqrt(p/N))²`` of the white Wishart's band and the Tracy–Widom
    scale of its largest eigenvalue, ``(1 + sqrt(q))·(1/sqrt(N) + 1/sqrt(p))^{1/3}/sqrt(N)``
    (Johnstone 2001)."""
    p, n = float(dimension), float(kept)
    root = math.sqrt(p / n)
    scale = (1 + root) * (1 / math.sqrt(n) + 1 / math.sqrt(p)) ** (1 / 3) / math.sqrt(n)
    return (1 + root) ** 2, scale


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvolutionRank:
    """Rank from the covariance of the best Gaussian samples around the minimum.

    Parameters
    ----------
    selection : {"truncation", "comma"}, default="truncation"
        ``"truncation"`` keeps the ``keep`` fraction of lowest losses of every population;
        ``"comma"`` keeps only the best one, a ``(1, λ)`` selection (sharper deficits,
        ``population`` evaluations per kept sample).
    population : int, default=200
        Samples per population (``λ``), evaluated as one batch.
    keep : float, default=0.1
        Fraction kept by truncation selection.
    scale : float or "auto", default="auto"
        Sampling radius ``s`` (``θ = θ0 + s·u``, ``u ~ N(0, I)``). ``"auto"`` picks an
        ``s`` at which the loss is quadratic: the mean antithetic second difference
        ``(f(θ0 + su) + f(θ0 − su) − 2f0)/2`` must be above rounding and grow 4-fold
        from ``s/2`` to ``s`` (within 5 %); ``diagnostics["quadratic_ratio"]`` reports it.
    max_evals : int, default=2,000,000
        Budget of loss evaluations.
    max_dim : int, default=2048
        Larger problems are refused: the count needs ``≳ 4n/(1 − c)²`` kept samples
        (``c`` the largest curved variance ratio) and an ``n × n`` covariance.

    Notes
    -----
    For samples ``u ~ N(0, I)`` around a minimum and any selection that looks only at
    the loss, the kept samples' covariance ``C`` is diagonal in the Hessian's eigenbasis
    (sign symmetry), and every null direction keeps variance exactly 1: the loss cannot
    see it. A curved direction ``μ`` shrinks; under truncation selection approximately
    to ``1/(1 + βs²μ)`` (exponential tilting, research notes §7), with ``β`` read off the
    kept samples as ``r_soft / (2·E[Δf])``. The rank is the number of eigenvalues of the
    sample covariance ``Ĉ`` below the null cluster's reach: the Marchenko–Pastur lower
    edge for ``n`` white directions and ``N`` kept samples, minus four Tracy–Widom
    scales (:func:`null_band`). ``diagnostics["margin"]`` is the distance, in those
    scales, from the cut to the nearest eigenvalue; under 2 the count is not resolved, a
    :class:`MatrankWarning` says how many evaluations would resolve it, and the status is
    ``BUDGET_EXHAUSTED``. The soft count ``n − tr Ĉ`` with its stderr over populations
    is ``diagnostics["soft_count"]``/``["soft_stderr"]``. The reported threshold is the
    Hessian eigenvalue whose tilted variance sits at the cut (approximate).

    Sampling runs until the count is the same at three successive doublings of ``N``
    (from ``N = 16n``, where the null band is ``(1 ± 1/4)²``) with a margin of 2 or more,
    or the budget is spent; only the ``n × n`` sum of kept
    ``uuᵀ`` is stored. Cost: loss evaluations only (``cost["evals"]``), about
    ``4n/(keep·(1 − c)²)`` -- fine for ``n`` in the tens to hundreds, prohibitive beyond;
    for many equally curved directions the deficit per direction shrinks (the selected
    loss concentrates), so high ranks need more.

    References
    ----------
    Shir, Roslund & Yehudayoff, arXiv:1606.07262 (2016); Shir & Yehudayoff, Theoretical
    Computer Science (2019), arXiv:1806.03674.

    Examples
    --------
    >>> import numpy as np, matrank
    >>> from matrank.adapters import LossFunction
    >>> f = lambda X: (X[:, :3] ** 2).sum(axis=1) + 0.5 * X[:, 3] ** 2
    >>> result = matrank.EvolutionRank().estimate(LossFunction(f, np.zeros(10)), seed=0)
    >>> result.rank
    4.0
    """

    selection: str = "truncation"
    population: int = 200
    keep: float = 0.1
    scale: float | str = "auto"
    max_evals: int = 2_000_000
    max_dim: int = 2048

    def __post_init__(self) -> None:
        check_choice("selection", self.selection, ("truncation", "comma"))
        check_int("population", self.population, low=2)
        check_real("keep", self.keep, low=0.0, high=1.0, closed="right")
        if self.scale != "auto":
            if isinstance(self.scale, str):
                check_choice("scale", self.scale, ("auto",))
            check_real("scale", self.scale, low=0.0, closed="neither")
        check_int("max_evals", self.max_evals, low=1000)
        check_int("max_dim", self.max_dim, low=1)

    method: ClassVar[str] = "evolution"
    threshold_unsupported: ClassVar[str] = (
        "its cut is the null band's edge for the samples kept, and the threshold it "
        "reports is approximate, so it cannot aim at one; use method='exact' or "
        "'lanczos' (Hessian-vector products) or 'langevin' (gradients)"
    )

    @sized_threads
    def estimate(
        self,
        obj: Any,
        *,
        seed: int | None = None,
        progress: bool = False,
        **checkpointing: Any,
    ) -> RankResult:
        """Estimate the rank of the loss's Hessian at ``theta0`` from loss values.

        ``progress=True`` shows a bar of loss evaluations; Ctrl-C returns the count of
        the samples kept so far with ``Status.INTERRUPTED`` (NaN before the first
        population). Checkpoint options as in :func:`matrank.estimate_rank`: the kept
        samples' sum is saved between populations.
        """
        with Run.begin(
            self,
            obj,
            Capability.LOSS,
            seed=seed,
            progress=progress,
            budget=self.max_evals,
            unit="eval",
            **checkpointing,
        ) as run:
            return self._phases(run)
        return run.stopped()

    def _phases(self, run: Run) -> RankResult:
        """scale → sample → readout."""
        meter = run.meter
        n = meter.dim
        if n > self.max_dim:
            raise MatrankValueError(
                message(
                    "obj",
                    f"at most max_dim = {self.max_dim} parameters (the count needs about "
                    "4n kept samples and an n × n covariance)",
                    f"n = {n}",
                )
            )
        run.enter("scale")
        theta0 = run.oracle.theta0.to(dtype=meter.dtype, device=meter.device)
        loss0, scale, ratio = run.cached(
            "scale", lambda: self._scale_and_loss0(meter, theta0, run.generator)
        )
        if scale is None:  # flat at every scale tried: no curvature at all
            flat = {
                "scale": None,
                "quadratic_ratio": None,
                "margin": math.inf,
                "flat": True,
            }
            return run.result(0, stderr=None, threshold=None, diagnostics=flat)
        run.enter("sample")
        sampling = _Sampling.fresh(n, self)
        run.interim = lambda: self._read(sampling, scale, ratio, loss0)[0]
        saved = run.restore(
            "sampling", expect=lambda state: tuple(state[0].shape) == (n, n)
        )
        if saved is not None:
            sampling.load(saved)
        status = self._sample(run, theta0, loss0, scale, sampling)
        run.enter("readout")
        found, look = self._read(sampling, scale, ratio, loss0)
        if found is None or look is None:
            raise MatrankValueError(
                message("max_evals", "enough for one population", self.max_evals)
            )
        if look.widened:
            status = Status.NEGATIVE_CURVATURE
        elif look.margin < 2:
            status = Status.BUDGET_EXHAUSTED
            needed = self._evals_to_resolve(look.nearest, n, sampling.per_population)
            warnings.warn(
                f"the count {look.count} is not resolved: an eigenvalue of the "
                f"kept-sample covariance ({look.nearest:.3f}) lies within "
                f"{look.margin:.1f} Tracy–Widom scales of the null cluster's cut "
                f"({look.cut:.3f}); about {needed:.2g} loss evaluations would separate it",
                MatrankWarning,
                stacklevel=3,
            )
        return run.result(
            found.rank,
            stderr=None,
            threshold=found.threshold,
            diagnostics=found.diagnostics,
            status=status,
        )

    def _sample(
        self,
        run: Run,
        theta0: torch.Tensor,
        loss0: float,
        scale: float,
        sampling: _Sampling,
    ) -> Status:
        """Populations until the count holds through three doublings of the kept
        samples (``CONVERGED``), the directions widen, or the budget is spent."""
        meter, n = run.meter, run.meter.dim
        while meter.evals + self.population <= self.max_evals:
            u = torch.randn(
                self.population, n, generator=run.generator, dtype=torch.float64
            )
            points = theta0 + scale * u.to(dtype=meter.dtype, device=meter.device)
            delta = meter.loss(points).to(torch.float64).cpu() - loss0
            run.bar.update(self.population)
            if not bool(torch.isfinite(delta).all()):
                raise MatrankError(
                    f"the loss is not finite at distance ~{scale * math.sqrt(n):.3g} "
                    "from theta0; pass a smaller `scale`"
                )
            best = torch.argsort(delta)[: sampling.per_population]
            sampling.add(u[best], float(delta[best].sum()))
            if sampling.kept >= sampling.next_check:
                sampling.next_check *= 2
                look = sampling.assess()
                run.bar.set_postfix(rank=look.count, kept=sampling.kept)
                if look.widened:
                    return Status.BUDGET_EXHAUSTED
                # stable while N grew 4-fold (the cut's τ fell ≈ 2-fold): a plateau
                counts = [count for _, count in sampling.history[-3:]]
                if len(counts) == 3 and len(set(counts)) == 1 and look.margin >= 2:
                    return Status.CONVERGED
            if run.due():
                run.record("sampling", sampling.state())
        return Status.BUDGET_EXHAUSTED

    def _read(
        self, sampling: _Sampling, scale: float, ratio: float | None, loss0: float
    ) -> tuple[Interim | None, _Look | None]:
        """The count of the samples kept so far, its threshold and diagnostics, and the
        look at the covariance it comes from."""
        kept = sampling.kept
        if kept == 0:  # nothing kept: nothing to say
            return None, None
        look = sampling.look
        if look is None or sampling.history[-1][0] != kept:
            look = sampling.assess(record=False)
        soft = torch.tensor(sampling.soft, dtype=torch.float64)
        soft_mean, soft_stderr = mean_and_stderr(soft)
        excess = sampling.excess
        beta = soft_mean / (2 * excess / kept) if excess > 0 and soft_mean > 0 else None
        cut = look.cut
        threshold = (1 - cut) / (beta * scale**2 * cut) if beta and 0 < cut < 1 else None
        diagnostics = {
            "selection": self.selection,
            "scale": scale,
            "quadratic_ratio": ratio,
            "kept": kept,
            "populations": sampling.populations,
            "covariance": (sampling.total / kept).numpy(),
            "covariance_eigenvalues": look.eigenvalues,
            "cut": cut,
            "null_edge": look.edge,
            "tracy_widom_scale": look.tw,
            "margin": look.margin,
            "soft_count": soft_mean,
            "soft_stderr": soft_stderr,
            "tilt": beta,
            "history": list(sampling.history),
            "loss0": loss0,
            "widened_directions": look.widened,
        }
        return Interim(float(look.count), None, threshold, diagnostics), look

    def _evals_to_resolve(self, value: float, n: int, kept_per_population: int) -> float:
        """Evaluations for a kept count ``N`` whose null edge clears ``value`` by 10 %."""
        target = min(max(value, 0.0) * 1.1 + 0.05, 0.99)
        needed_kept = n / (1 - math.sqrt(target)) ** 2
        return needed_kept / kept_per_population * self.population

    def _scale_and_loss0(
        self, meter: CostMeter, theta0: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, float | None, float | None]:
        """``f(θ0)``, and the scale and its check (see :meth:`_scale`)."""
        loss0 = float(meter.loss(theta0[None])[0])
        if not math.isfinite(loss0):
            raise MatrankValueError(message("theta0", "a point with a finite loss", loss0))
        return (loss0, *self._scale(meter, theta0, loss0, generator))

    def _scale(
        self,
        meter: CostMeter,
        theta0: torch.Tensor,
        loss0: float,
        generator: torch.Generator,
    ) -> tuple[float | None, float | None]:
        """``s`` at which the loss is quadratic (or the user's), and the check's ratio."""
        n = meter.dim
        u = torch.randn(16, n, generator=generator, dtype=torch.float64).to(
            dtype=meter.dtype, device=meter.device
        )

        def second_difference(s: float) -> float:
            both = meter.loss(torch.cat([theta0 + s * u, theta0 - s * u]))
            both = both.to(torch.float64).cpu()
            return float((both[:16] + both[16:] - 2 * loss0).mean() / 2)

        if self.scale != "auto":
            s = float(self.scale)
            full, half = second_difference(s), second_difference(s / 2)
            return s, (full / half if half > 0 else None)
        eps = float(torch.finfo(meter.dtype).eps)
        noise = 1e4 * eps * max(abs(loss0), np.finfo(np.float64).tiny)
        size = float(theta0.abs().max())
        s = 1e-3 * max(size, 1.0)
        grown = 0
        for _ in range(40):
            full = second_difference(s)
            if full < -noise:
                raise MatrankValueError(
                    message(
                        "theta0",
                        "a minimum of the loss",
                        f"a point where the loss decreases by {-full:.3g} on average at "
                        f"distance {s * math.sqrt(n):.3g}",
                    )
                )
            if full <= noise:
                grown += 1
                if grown > 12:
                    return None, None
                s *= 10
                continue
            half = second_difference(s / 2)
            ratio = full / half if half > 0 else math.inf
            if abs(ratio / 4 - 1) <= 0.05:
                return s, ratio
            s /= 4
        raise MatrankError(
            "found no sampling scale at which the loss is quadratic around theta0 (the "
            "second difference never grew 4-fold from s/2 to s); pass `scale=` explicitly"
        )
