"""The result every estimator returns."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._diagnostics import Diagnostics, diagnostics_for
from ._validation import MatrankValueError
from .numerics.threshold import (
    INTERVAL_DELTA,
    CountingCurve,
    CountInterval,
    ThresholdChoice,
)

__all__ = ["SCHEMA", "CountInterval", "CountingCurve", "RankResult", "Status"]


class Status(enum.Enum):
    """How an estimate ended; the value is the remediation text shown to users.

    Lineax's ``RESULTS`` taught us that a status is only useful if it says what to
    change.
    """

    CONVERGED = "converged"
    NO_PLATEAU = (
        "no plateau of at least one decade in the counting curve N(τ): the numerical rank "
        "is not well defined at any threshold; read `result.counts` or pass `threshold=`"
    )
    BUDGET_EXHAUSTED = (
        "budget exhausted before the count stabilised; raise the method's budget "
        "(`max_matvecs` for lanczos and polynomial, `max_gradients` for langevin, "
        "`max_evals` for evolution) or pass a larger `threshold=`"
    )
    AMBIGUOUS_PLATEAU = (
        "two plateaus of the counting curve N(τ) compete (the other is at least half as "
        "wide): the count at the wider one is reported and diagnostics['plateau'] names "
        "the other (runner_up_count, runner_up_threshold); neither is the rank on its own "
        "-- pass the `threshold=` your problem calls for"
    )
    NOT_STATIONARY = (
        "the sampler's readout fell over its averaging window (the last third under the "
        "first by more than 3 standard errors, diagnostics['drift']): the chains are not "
        "sampling a stationary distribution around θ0, and no filter explains a falling "
        "count; lower `step_size` or `sigma2`, raise `localization`, or count with "
        "method='lanczos' or 'exact' (Hessian-vector products)"
    )
    NOT_QUADRATIC = (
        "the loss is not quadratic where the sampler's chains went (diagnostics"
        "['quadratic_defect']: the gradients at θ0 ± δ of their last positions are not "
        "∇f(θ0) ± Hδ, as a quadratic's are): kinks (ReLU), a well they left, a saddle "
        "or large higher-order terms gave them another curvature than the Hessian H at "
        "θ0; lower "
        "`sigma2` or raise `localization` to keep them closer, or count the Hessian "
        "with method='lanczos' or 'exact' (Hessian-vector products)"
    )
    INTERRUPTED = "interrupted by the user; the estimate is the best one so far"
    BELOW_RESOLUTION = (
        "the threshold is below the smallest eigenvalue the method can vouch for "
        "(diagnostics['noise_floor']): eigenvalues between the two may be uncounted; pass "
        "a larger `threshold=`, or count with method='exact'"
    )
    NEGATIVE_CURVATURE = (
        "the samples found negative curvature: theta0 is a saddle point or a maximum, not "
        "a minimum, and a count from a sampler around it is meaningless; move theta0 to "
        "a minimum, or count |λ| with method='lanczos' or 'exact' (Hessian-vector "
        "products), which report the negative ones in diagnostics['n_negative']"
    )

    @property
    def converged(self) -> bool:
        """Whether the estimate means what it claims (a plateau-less curve still does)."""
        return self in (Status.CONVERGED, Status.NO_PLATEAU, Status.AMBIGUOUS_PLATEAU)

    @classmethod
    def of_choice(cls, choice: ThresholdChoice | None) -> Status:
        """What a plateau choice implies: no plateau, two competing ones, or a rank."""
        if choice is None:
            return cls.CONVERGED
        if choice.decades < 1.0:
            return cls.NO_PLATEAU
        return cls.AMBIGUOUS_PLATEAU if choice.ambiguous else cls.CONVERGED


#: Version of :meth:`RankResult.to_dict`'s layout. 2: ``"schema"`` itself, and the cost
#: keys ``"gradients"``/``"evals"`` (were ``"grads"``/``"loss_evals"``). 3:
#: ``"count_interval"``.
SCHEMA = 3


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class RankResult:
    """An estimate of the numerical rank, with its uncertainty and its cost.

    Attributes
    ----------
    rank : float
        The estimate: the number of eigenvalues above ``threshold`` (``int(round(rank))``
        for an integer).
    stderr : float or None
        Standard error of ``rank``; ``None`` when the estimator is deterministic.
    threshold : float or None
        The eigenvalue threshold effectively used.
    method : str
        The estimator that ran (``"exact"``, ``"lanczos"``, ...).
    cost : dict
        ``"matvecs"``, ``"gradients"``, ``"evals"`` (loss evaluations) and ``"seconds"``
        actually spent, named as the budgets ``max_matvecs``, ``max_gradients`` and
        ``max_evals`` (``"grads"`` and ``"loss_evals"`` still read, with a
        ``FutureWarning``).
    diagnostics : Diagnostics
        What the method measured on the way (spectrum, plateau, chains, ...): the
        method's frozen dataclass in :mod:`matrank._diagnostics` (e.g.
        :class:`~matrank.LangevinDiagnostics`), read by attribute or as a read-only
        mapping; ``to_dict()["diagnostics"]`` is its JSON form.
    counts : CountingCurve or None
        ``N(τ)`` on a grid of thresholds, where the estimator can provide it.
    count_interval : CountInterval or None
        ``N`` at ``τ·(1 ∓ δ)`` (``δ = 0.5``; :meth:`count_interval_at` for another),
        read off ``counts``: how much the count moves with the threshold.
    status : Status
        How the estimate ended; ``status.value`` is remediation text.
    """

    rank: float
    stderr: float | None
    threshold: float | None
    method: str
    cost: Mapping[str, float]
    diagnostics: Diagnostics = dataclasses.field(default_factory=Diagnostics)
    counts: CountingCurve | None = None
    status: Status = Status.CONVERGED

    def __post_init__(self) -> None:
        # a mapping given (``dataclasses.replace(result, diagnostics={...})``) becomes
        # the method's class, which refuses a field it does not declare
        typed = diagnostics_for(self.method, self.diagnostics)
        object.__setattr__(self, "diagnostics", typed)

    @property
    def converged(self) -> bool:
        """Whether the estimator reached its stopping rule (see :class:`Status`)."""
        return self.status.converged

    @property
    def n_negative(self) -> int | None:
        """``N⁻``: how many of the counted eigenvalues are negative (``None`` where the
        method sees no signs: the samplers, the polynomial filter)."""
        value = self.diagnostics.get("n_negative")
        return None if value is None or math.isnan(self.rank) else int(value)

    @property
    def n_positive(self) -> int | None:
        """``N⁺ = rank − N⁻``: how many of the counted eigenvalues are positive."""
        negative = self.n_negative
        return None if negative is None else round(self.rank) - negative

    @property
    def count_interval(self) -> CountInterval | None:
        """``N`` at ``τ·(1 − δ)`` and ``τ·(1 + δ)`` for the default ``δ = 0.5``."""
        return self.count_interval_at(INTERVAL_DELTA)

    def count_interval_at(self, delta: float) -> CountInterval | None:
        """``N`` at ``τ·(1 − δ)`` and ``τ·(1 + δ)``, ``0 < δ < 1``: exact where the
        method counted known eigenvalues, lower bounds from a Krylov basis's Ritz
        values, an estimate with a stderr on each end from the polynomial filter's
        curve; ``None`` where the method counts at one threshold only (the samplers)."""
        if not (isinstance(delta, float | int) and 0 < delta < 1):
            raise MatrankValueError(
                f"`delta` must be a number in (0, 1), the threshold's relative move; "
                f"got {delta!r}"
            )
        if self.counts is None or self.threshold is None or math.isnan(self.rank):
            return None
        return self.counts.interval(self.threshold, float(delta))

    def __int__(self) -> int:
        return round(self.rank)

    def __repr__(self) -> str:
        uncertainty = "" if self.stderr is None else f", stderr={self.stderr:.3g}"
        threshold = "None" if self.threshold is None else f"{self.threshold:.3g}"
        return (
            f"RankResult(rank={_format_rank(self.rank)}{uncertainty}, "
            f"threshold={threshold}, method={self.method!r}, "
            f"status={self.status.name}, cost={{{_format_cost(self.cost)}}})"
        )

    def __str__(self) -> str:
        return self.describe()

    def describe(self, delta: float = INTERVAL_DELTA, *, interval: bool = False) -> str:
        """``str(result)``: the count, its cost, and what its status asks; with the
        count interval at ``delta`` when the spectrum has no plateau, or ``interval``."""
        uncertainty = "" if self.stderr is None else f" ± {self.stderr:.3g}"
        threshold = "None" if self.threshold is None else f"{self.threshold:.3g}"
        text = f"rank {_format_rank(self.rank)}{uncertainty}"
        negative = self.n_negative
        if negative:
            text += f" = {self.n_positive} positive + {negative} negative"
        text += f" (method={self.method}, threshold={threshold}, "
        text += f"{_format_cost(self.cost)})"
        if negative:
            text += (
                f"\n  note: {negative} of the counted eigenvalues are negative: the "
                "matrix is indefinite (at a saddle point, not a minimum) and the rank "
                "counts |λ| > threshold"
            )
        if self.status is not Status.CONVERGED:
            text += f"\n  status: {self.status.value}"
        found = self.count_interval_at(delta)
        if (interval or self.status is Status.NO_PLATEAU) and found is not None:
            text += f"\n  count interval: {found}"
        if self.diagnostics.get("remedy"):
            text += f"\n  remedy: {self.diagnostics['remedy']}"
        plateau = self.diagnostics.get("plateau") or {}
        if self.status is Status.AMBIGUOUS_PLATEAU and plateau.get("runner_up_count"):
            text += (
                f"\n  candidates: {_format_rank(self.rank)} at threshold "
                f"{threshold} ({plateau['decades']:.2f} decades), "
                f"{_format_rank(round(plateau['runner_up_count'], 2))} at threshold "
                f"{plateau['runner_up_threshold']:.3g} "
                f"({plateau['runner_up_decades']:.2f} decades)"
            )
        return text

    def to_dict(self, *, delta: float = INTERVAL_DELTA) -> dict[str, Any]:
        """A JSON-ready dictionary (arrays become lists), versioned by ``"schema"``
        (:data:`SCHEMA`; README's "Result JSON" lists each version's changes);
        ``delta`` is the count interval's."""
        interval = self.count_interval_at(delta)
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "rank": self.rank,
            "stderr": self.stderr,
            "threshold": self.threshold,
            "method": self.method,
            "cost": dict(self.cost),
            "status": self.status.name.lower(),
            "converged": self.converged,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "count_interval": None
            if interval is None
            else {
                "delta": interval.delta,
                "thresholds": list(interval.thresholds),
                "counts": list(interval.counts),
                "stderr": None if interval.stderr is None else list(interval.stderr),
                "kinds": list(interval.kinds),
            },
        }
        if self.counts is not None:
            out["counts"] = {
                "thresholds": self.counts.thresholds.tolist(),
                "counts": self.counts.counts.tolist(),
            }
        out["diagnostics"] = {k: _jsonable(v) for k, v in self.diagnostics.items()}
        return out


def _format_rank(rank: float) -> str:
    return str(int(rank)) if float(rank).is_integer() else f"{rank:.2f}"


def _format_cost(cost: Mapping[str, float]) -> str:
    parts = [f"{cost[k]:g} {k}" for k in ("matvecs", "gradients", "evals") if cost.get(k)]
    parts.append(f"{cost.get('seconds', math.nan):.3g} s")
    return ", ".join(parts)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
