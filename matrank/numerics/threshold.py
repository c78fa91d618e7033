"""Threshold selection from a spectrum: the widest-plateau rule on a log scale.

The counting curve ``N(τ) = #{i : |λ_i| > τ}`` is a staircase. A numerical rank is
well defined when the staircase has a long flat step: a range of thresholds, spanning
decades, over which the count does not change. We choose ``τ`` at the geometric centre of
the widest such step above the operator's noise floor (research notes, algorithms §1.3)
and report the step's width, so that a user can see how much the answer depends on it.
When a second step is at least half as wide (and a decade or more), the rank is ambiguous:
the choice names that step's count and threshold too, and estimators report
``Status.AMBIGUOUS_PLATEAU`` instead of a confident answer.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = [
    "INTERVAL_DELTA",
    "CountInterval",
    "CountingCurve",
    "ThresholdChoice",
    "counting_curve",
    "flat_stretch_threshold",
    "noise_floor",
    "plateau_threshold",
    "resolve_threshold",
]


@dataclasses.dataclass(frozen=True, eq=False)
class CountingCurve:
    """The counting curve ``N(τ)``: how many eigenvalues exceed each threshold ``τ``.

    Attributes
    ----------
    thresholds : numpy.ndarray
        Increasing thresholds, log-spaced.
    counts : numpy.ndarray
        ``N(τ)`` at each threshold (non-increasing; floats for stochastic estimators).
    stderr : numpy.ndarray or None
        Standard error of each count, where the estimator is stochastic.
    values : numpy.ndarray or None
        The magnitudes the curve counts, where it counts known values (eigenvalues,
        Ritz values): then ``N`` is read off them at any threshold, not the grid.
    kind : str
        What a count off the curve is: ``"exact"`` (eigenvalues, or Ritz values within
        ``resolution`` of them), ``"at least"`` (Ritz values of a Krylov basis: by
        Cauchy interlacing no more of them than of the eigenvalues exceed any
        threshold) or ``"estimate"`` (stochastic, with ``stderr``).
    resolution : float
        How far the true eigenvalues may lie from ``values`` (Weyl): a count at a
        threshold with a value within it is an estimate only.
    """

    thresholds: np.ndarray
    counts: np.ndarray
    stderr: np.ndarray | None = None
    values: np.ndarray | None = None
    kind: str = "estimate"
    resolution: float = 0.0

    def at(self, threshold: float) -> float:
        """``N(threshold)`` read off the curve (the count at the nearest grid point below)."""
        below = int(np.searchsorted(self.thresholds, threshold, side="right")) - 1
        return float(self.counts[min(max(below, 0), len(self.thresholds) - 1)])

    def interval(self, threshold: float, delta: float = 0.5) -> CountInterval:
        """How the count moves with ``τ``: ``N`` at ``τ·(1 − δ)`` and ``τ·(1 + δ)``
        (:class:`CountInterval`).

        Known ``values`` are counted at each end exactly; the rest of the curve (a
        stochastic part) is read between grid points linearly in ``log τ``.
        """
        if not 0 < delta < 1:
            raise ValueError(f"delta must lie in (0, 1); got {delta!r}")
        ends = (threshold * (1 - delta), threshold * (1 + delta))
        values = np.sort(self.values) if self.values is not None else np.zeros(0)
        rest = self.counts - (
            values.size - np.searchsorted(values, self.thresholds, "right")
        )
        grid = np.log(self.thresholds)

        def count(end: float) -> float:
            return float((values > end).sum()) + float(np.interp(math.log(end), grid, rest))

        def kind(end: float) -> str:
            if self.stderr is not None or self.values is None:
                # under the lowest threshold the curve reads that threshold's count: N
                # does not increase with τ, so that is a lower bound
                return "at least" if end < self.thresholds[0] else "estimate"
            # the unseen eigenvalues lie within ``resolution`` of zero, the seen ones
            # of ``values``: an end that close to either is not read exactly
            near = end <= self.resolution or bool(
                (np.abs(values - end) <= self.resolution).any()
            )
            return "estimate" if self.resolution > 0 and near else self.kind

        stderr = None
        if self.stderr is not None:
            stderr = tuple(float(np.interp(math.log(e), grid, self.stderr)) for e in ends)
        return CountInterval(
            delta,
            ends,
            (count(ends[0]), count(ends[1])),
            stderr,  # type: ignore[arg-type]
            (kind(ends[0]), kind(ends[1])),
        )


#: Default ``δ`` of :meth:`CountingCurve.interval`: the count at half and at one and a
#: half times the threshold.
INTERVAL_DELTA = 0.5


@dataclasses.dataclass(frozen=True)
class CountInterval:
    """How much the count moves with the threshold: ``N(τ·(1 − δ))`` and
    ``N(τ·(1 + δ))``. On a spectrum with a gap at ``τ`` the two are equal; on a gapless
    one (a trained network's curvature) their spread is what the rank means.

    Attributes
    ----------
    delta : float
        The relative move of the threshold, in ``(0, 1)``.
    thresholds : tuple of float
        ``(τ·(1 − δ), τ·(1 + δ))``.
    counts : tuple of float
        ``N`` at each (the first is the larger).
    stderr : tuple of float or None
        Standard error of each count, for a stochastic estimate.
    kinds : tuple of str
        What each count is: ``"exact"``, ``"at least"`` (a lower bound: Ritz values,
        or a threshold under the lowest the method resolves) or ``"estimate"``.
    """

    delta: float
    thresholds: tuple[float, float]
    counts: tuple[float, float]
    stderr: tuple[float, float] | None
    kinds: tuple[str, str]

    @property
    def width(self) -> float:
        """``N(τ·(1 − δ)) − N(τ·(1 + δ))``: how many eigenvalues lie within ``δ`` of
        ``τ`` (as far as the two counts are exact)."""
        return self.counts[0] - self.counts[1]

    def __str__(self) -> str:
        def one(i: int) -> str:
            count = self.counts[i]
            text = str(int(count)) if float(count).is_integer() else f"{count:.1f}"
            if self.stderr is not None:
                text += f" ± {self.stderr[i]:.2g}"
            prefix = "at least " if self.kinds[i] == "at least" else ""
            return f"{prefix}{text} at τ·{1 + (2 * i - 1) * self.delta:g} = " + (
                f"{self.thresholds[i]:.3g}"
            )

        kinds = self.kinds[0] if self.kinds[0] == self.kinds[1] else "/".join(self.kinds)
        return f"{one(0)} … {one(1)} ({kinds})"


def noise_floor(largest: float, n: int, eps: float, defect: float = 0.0) -> float:
    """``max(λmax·n·eps, defect)``: numpy's ``matrix_rank`` tolerance, raised to the
    operator's measured asymmetry (rounding makes both, and nothing under them counts)."""
    return max(largest * n * eps, defect)


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """The threshold chosen from a spectrum and how clear-cut the choice was.

    Attributes
    ----------
    threshold : float
        Geometric centre of the widest plateau.
    lower, upper : float
        Edges of that plateau: the largest magnitude not counted (or the noise floor) and
        the smallest magnitude counted.
    decades : float
        Width of the plateau, ``log10(upper / lower)``.
    runner_up_decades : float
        Width of the second-widest plateau; close to ``decades`` means an ambiguous rank.
    runner_up_threshold, runner_up_count : float or None
        The centre of that plateau and the count there, when it competes: at least
        ``COMPETING`` times as wide as the chosen one and a decade or more.
    """

    threshold: float
    lower: float
    upper: float
    decades: float
    runner_up_decades: float
    runner_up_threshold: float | None = None
    runner_up_count: float | None = None

    @property
    def ambiguous(self) -> bool:
        """Whether a second plateau competes with the chosen one (see ``COMPETING``)."""
        return self.decades >= 1.0 and self.runner_up_threshold is not None


#: A plateau at least this fraction of the chosen one's width (and ≥ 1 decade) competes.
COMPETING = 0.5


def _competes(width: float, chosen: float) -> bool:
    return width >= 1.0 and width >= COMPETING * chosen


def plateau_threshold(
    magnitudes: np.ndarray, floor: float, *, preference: float = 1.0
) -> ThresholdChoice:
    """Choose ``τ`` at the centre of a wide plateau of ``N(τ)`` above ``floor``.

    Parameters
    ----------
    magnitudes : array_like
        Absolute eigenvalues (any order; any length).
    floor : float
        Noise floor: magnitudes at or below it are indistinguishable from zero. Must be
        positive unless every magnitude is zero.
    preference : float, default=1.0
        Among plateaus at least ``preference`` times as wide as the widest one (in
        decades), the highest wins; 1 takes the widest.

    Returns
    -------
    ThresholdChoice

    Notes
    -----
    The candidate plateaus lie between consecutive magnitudes above the floor, and
    between the smallest of them and the floor itself (the plateau that makes a full rank
    visible). Widths are measured in decades, because Hessian spectra span many.

    The widest plateau wins. A band of small eigenvalues decades under the signal but
    far above rounding (an approximate minimum, a float32 operator, features on other
    scales) makes two plateaus of similar width; then neither count is the rank, and the
    choice says so (``ambiguous``, with the other plateau's count and threshold), so that
    the caller reports both instead of a confident number.

    Examples
    --------
    >>> choice = plateau_threshold(np.array([1.0, 0.5, 1e-3, 1e-15]), floor=1e-13)
    >>> round(math.log10(choice.threshold), 1), round(choice.decades, 1), choice.ambiguous
    (-8.0, 10.0, False)
    >>> # a band 4 decades under the signal, 5 decades above the floor: two ranks compete
    >>> band = plateau_threshold(np.array([1.0, 1e-4, 5e-5, 1e-5]), floor=1e-10)
    >>> round(math.log10(band.threshold), 1), band.ambiguous, band.runner_up_count
    (-7.5, True, 1.0)
    """
    values = np.sort(np.abs(np.asarray(magnitudes, dtype=np.float64)))[::-1]
    above = values[values > floor]
    if above.size == 0:
        return ThresholdChoice(float(floor), 0.0, float(floor), math.inf, 0.0)
    edges = np.append(above, floor)
    with np.errstate(divide="ignore"):
        widths = np.log10(edges[:-1] / edges[1:])
    widest = float(widths.max())
    # edges descend, so the first comparable plateau is the highest one
    best = int(np.flatnonzero(widths >= preference * widest)[0])
    upper, lower = float(edges[best]), float(edges[best + 1])
    others = np.where(np.arange(widths.size) == best, -np.inf, widths)
    second = int(np.argmax(others)) if widths.size > 1 else -1
    runner_up = float(widths[second]) if second >= 0 else 0.0
    competing = second >= 0 and _competes(runner_up, float(widths[best]))
    return ThresholdChoice(
        threshold=math.sqrt(upper) * math.sqrt(lower),  # no overflow at 1e300
        lower=lower,
        upper=upper,
        decades=float(widths[best]),
        runner_up_decades=runner_up,
        runner_up_threshold=(
            math.sqrt(edges[second]) * math.sqrt(edges[second + 1]) if competing else None
        ),
        runner_up_count=float(second + 1) if competing else None,
    )


def flat_stretch_threshold(
    thresholds: np.ndarray, samples: np.ndarray, *, preference: float = 1.0
) -> ThresholdChoice:
    """The plateau rule for an estimated counting curve: the widest flat stretch.

    Parameters
    ----------
    thresholds : array_like
        ``(G,)`` increasing thresholds, log-spaced.
    samples : array_like
        ``(m, G)`` per-probe estimates of ``N(t)`` at each threshold (``m ≥ 2``), as a
        stochastic estimator makes them: their mean is the counting curve.
    preference : float, default=1.0
        As in :func:`plateau_threshold`: among disjoint stretches at least ``preference``
        times as wide as the widest, the highest wins.

    Returns
    -------
    ThresholdChoice
        The geometric centre of the chosen stretch, its edges (grid points) and widths.

    Notes
    -----
    A stretch ``[t_a, t_b]`` is flat when the estimated number of eigenvalues inside it,
    ``N(t_a) − N(t_b)``, is below ``0.5 + 2·stderr`` -- the stderr of that difference from
    the per-probe spread (the curves at ``t_a`` and ``t_b`` share probes, so the
    difference is far more precise than either end). This is the rule of
    :func:`plateau_threshold` read off a curve instead of a list of eigenvalues: the
    flat stretch is the plateau, its width in decades decides, and a second stretch at
    least half as wide makes the choice ambiguous.

    Unlike a full spectrum, the curve ends at its lowest threshold. A stretch with more
    decades of rising curve beneath it than its own width, still rising at the bottom
    (over its lowest quarter decade), is not taken: it splits a few large eigenvalues
    from a continuum whose gap, if any, lies below the curve's end (a network Hessian:
    one outlier a decade above a spread over many). Then ``decades`` is 0 and
    ``runner_up_decades`` the rejected stretch's width.
    """
    t = np.asarray(thresholds, dtype=np.float64)
    values = np.asarray(samples, dtype=np.float64)
    m, size = values.shape
    mean = values.mean(axis=0)
    covariance = np.atleast_2d(np.cov(values, rowvar=False))
    variance = np.diag(covariance)
    spread = variance[:, None] + variance[None, :] - 2 * covariance
    stderr = np.sqrt(np.maximum(spread, 0.0) / m)
    flat = mean[:, None] - mean[None, :] <= 0.5 + 2 * stderr
    # reach[a]: the last b such that every stretch [a, b'] with b' ≤ b is flat
    reach = np.empty(size, dtype=np.int64)
    for a in range(size):
        broken = np.flatnonzero(~flat[a, a:])
        reach[a] = a + (broken[0] - 1 if broken.size else size - 1 - a)
    logs = np.log10(t)
    widths = logs[reach] - logs
    # maximal stretches, widest first, kept when disjoint from those already kept
    stretches: list[tuple[int, int]] = []
    for a in np.argsort(-widths, kind="stable"):
        b = int(reach[a])
        if b > a and all(b < lo or a > hi for lo, hi in stretches):
            stretches.append((int(a), b))
    if not stretches:
        return ThresholdChoice(float(t[0]), float(t[0]), float(t[0]), 0.0, 0.0)
    widest = logs[stretches[0][1]] - logs[stretches[0][0]]
    comparable = [s for s in stretches if logs[s[1]] - logs[s[0]] >= preference * widest]
    lo, hi = max(comparable, key=lambda s: s[0])
    others = [(logs[b] - logs[a], a, b) for a, b in stretches if (a, b) != (lo, hi)]
    runner_up = max(others, default=(0.0, 0, 0))
    # A gap with a continuum beneath it, wider than the gap and still rising where the
    # curve ends, separates a few large eigenvalues from a spread of smaller ones whose
    # own gap, if any, lies out of sight: not a rank.
    bottom = min(int(np.searchsorted(logs, logs[0] + 0.25)), size - 1)
    if logs[lo] - logs[0] > logs[hi] - logs[lo] and not flat[0, bottom]:
        return ThresholdChoice(
            float(t[0]), float(t[0]), float(t[0]), 0.0, float(logs[hi] - logs[lo])
        )
    competing = _competes(runner_up[0], float(logs[hi] - logs[lo]))
    centre = math.sqrt(t[runner_up[1]]) * math.sqrt(t[runner_up[2]])
    return ThresholdChoice(
        threshold=math.sqrt(t[lo]) * math.sqrt(t[hi]),
        lower=float(t[lo]),
        upper=float(t[hi]),
        decades=float(logs[hi] - logs[lo]),
        runner_up_decades=float(runner_up[0]),
        runner_up_threshold=centre if competing else None,
        runner_up_count=(
            float(np.interp(math.log10(centre), logs, mean)) if competing else None
        ),
    )


def resolve_threshold(
    magnitudes: np.ndarray, floor: float, threshold: float | str | None
) -> tuple[float, ThresholdChoice | None]:
    """The threshold an estimator uses: the user's, the floor, or the plateau rule's.

    ``threshold="floor"`` counts everything above the noise floor (numpy's rule for a
    dense matrix). ``None`` applies the plateau rule; without a plateau of at least one
    decade it falls back to the floor, and callers report that as ``Status.NO_PLATEAU``
    when the returned choice has ``decades < 1``. The choice is ``None`` when the user
    set τ or asked for the floor.
    """
    if threshold == "floor":
        return floor, None
    if threshold is not None:
        return float(threshold), None
    choice = plateau_threshold(magnitudes, floor)
    return (choice.threshold if choice.decades >= 1.0 else floor), choice


def counting_curve(
    magnitudes: np.ndarray,
    low: float,
    high: float,
    *,
    n_points: int = 200,
    kind: str = "exact",
) -> CountingCurve:
    """``N(τ)`` of a known spectrum on a log grid of thresholds from ``low`` to ``high``
    (``kind``: what the magnitudes are, :class:`CountingCurve`)."""
    low = max(low, np.finfo(np.float64).tiny)
    high = max(high, low * 10)
    thresholds = np.geomspace(low, high, n_points)
    values = np.sort(np.abs(np.asarray(magnitudes, dtype=np.float64)))
    counts = values.size - np.searchsorted(values, thresholds, side="right")
    return CountingCurve(
        thresholds=thresholds, counts=counts.astype(np.float64), values=values, kind=kind
    )
