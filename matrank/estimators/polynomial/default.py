"""One run of the default polynomial filter (see :class:`~matrank.PolynomialRank`, Notes).

Bounds, then either the whole space's spectrum or a pilot that picks the threshold and
the degree, deflation of a small top subspace, probes on the rest, and the edge term.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..._result import CountingCurve, RankResult, Status
from ..._run import Interim, Run
from ..._validation import (
    MatrankError,
    MatrankValueError,
    MatrankWarning,
    message,
)
from ...numerics.chebyshev import (
    chebyshev_moments,
    gaussian_damping,
    jackson_damping,
    step_coefficients,
)
from ...numerics.threshold import (
    ThresholdChoice,
    flat_stretch_threshold,
    resolve_threshold,
)
from ...numerics.trace import mean_and_stderr, probe_block
from .capture import (
    BASIS_BYTES,
    COMPLEMENT_STEPS,
    REACH,
    WHOLE_SPACE_MAX,
    SpectrumCapture,
)
from .parallel import PROBE_BLOCK, probe_moments
from .whole import unreached, whole_space

if TYPE_CHECKING:
    from . import PolynomialRank

__all__: list[str] = []

DEGREE_CAP = 4000  # moments; 2000 matvecs per probe
_PILOT_PROBES = 16
_BLOCK_BYTES = 128 * 1024**2  # probes in flight: four n × chunk blocks (≈ 1 GB peak)
# A Gaussian-damped step (width w in β) is Φ(−4.75) = 1e-6 at 4.75·w from its edge, and
# the series past degree D is below exp(−(D·w)²/2) = 1e-6 for D·w ≥ 5.3.
_GAUSS_EDGE, _GAUSS_TAIL = 4.75, 5.3


DEFAULT_BUDGET = 15_000


@dataclasses.dataclass(frozen=True)
class _Target:
    """What the pilot chose: the threshold, the filter's degree and damping."""

    threshold: float
    degree: int
    pilot_degree: int
    damping: np.ndarray
    pilot: np.ndarray  #: the pilot probes' moments
    choice: ThresholdChoice | None = None
    kernel: str = "jackson"
    c: np.ndarray | None = None  #: the damped step's Chebyshev coefficients

    @property
    def steps(self) -> int:
        return math.ceil(self.degree / 2)


class DefaultFilter(SpectrumCapture):
    """One run of the default variant (see :class:`PolynomialRank`, Notes)."""

    def __init__(self, options: PolynomialRank, run: Run) -> None:
        self.options, self.run = options, run
        self.meter, self.generator, self.bar = run.meter, run.generator, run.bar
        self.n = run.meter.dim
        self.calls = 0  # moments() calls so far: each names its checkpoint keys
        self.pieces: list[np.ndarray] = []  # the probe blocks of the running call
        self.budget = options.max_matvecs or DEFAULT_BUDGET

    # -- the spectrum's frame ------------------------------------------------------------

    def planned_degree(self, threshold: float) -> int:
        """The degree a given ``τ`` asks for: its reach at ``τ``, at most the cap."""
        separation = self.frame.separation(threshold)
        return _even(min(DEGREE_CAP, max(16, 2 * REACH / separation)))

    # -- moments and filters -------------------------------------------------------------

    def moments(self, count: int, steps: int) -> np.ndarray:
        """``(count, 2·steps + 1)`` moments of sphere probes in ``range(Y)⊥``.

        Blocks of probes and the steps of their recurrence are checkpointed; the blocks
        done so far are :attr:`pieces` (what a Ctrl-C reads).
        """
        self.calls += 1
        pieces: list[np.ndarray] = []
        self.pieces = pieces
        if count == 0:
            return np.zeros((0, 2 * steps + 1))
        chunk = max(1, _BLOCK_BYTES // (32 * self.n))
        jobs = self.options.n_jobs
        starts = range(0, count, chunk)
        if jobs is not None:  # the serial path's probes, in tasks of PROBE_BLOCK
            drawn = torch.cat([self._draw(min(chunk, count - b)) for b in starts], dim=1)
            blocks = [
                (f"moments {self.calls}:{b}", drawn[:, b : b + PROBE_BLOCK])
                for b in range(0, count, PROBE_BLOCK)
            ]
            pieces.extend(
                probe_moments(
                    self.run,
                    blocks,
                    steps,
                    center=self.frame.center,
                    half_width=self.frame.half,
                    n_jobs=jobs,
                )
            )
        for begin in starts if jobs is None else ():
            size = min(chunk, count - begin)
            key = f"moments {self.calls}:{begin}"
            block = functools.partial(self._block, size, steps, key)
            pieces.append(self.run.cached(key, block))
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
                "matrank.testing.check_oracle"
            )
        return moments

    def _draw(self, size: int) -> torch.Tensor:
        """``size`` sphere probes orthogonal to the captured basis."""
        meter = self.meter
        return probe_block(
            self.n,
            size,
            kind="sphere",
            generator=self.generator,
            dtype=meter.dtype,
            device=meter.device,
            orthogonal_to=self.captured,
        )

    def _block(self, size: int, steps: int, key: str) -> np.ndarray:
        """One block's moments, its recurrence checkpointed under ``key + " partial"``."""
        probes = self._draw(size)
        partial = key + " partial"

        def save(state: Any) -> None:
            if self.run.due():
                self.run.record(partial, state())

        moments = chebyshev_moments(
            self.meter.hvp,
            probes,
            steps,
            center=self.frame.center,
            half_width=self.frame.half,
            callback=self.bar.update,
            resume=self.run.restore(partial),
            save=save,
        )
        return moments.cpu().numpy()

    def samples(self, moments: np.ndarray, c: np.ndarray, threshold: float) -> np.ndarray:
        """Per-probe counts: the deflated Ritz values above ``τ`` plus the probe's.

        The deflated part is a hard count: those eigenvalues are known (to a residual
        ``≤ 1e-3·|θ|``), so the filter's transition blurs only the rest.
        """
        captured = int((np.abs(self.deflated_values) > threshold).sum())
        if self.certified(threshold):  # nothing left above τ: the rest only leaks
            return np.full(len(moments), float(captured))
        return moments[:, : len(c)] @ c + captured

    def curve(self, moments: np.ndarray, degree: int, grid: np.ndarray) -> np.ndarray:
        """``(m, G)`` per-probe counts at every threshold of ``grid`` (Jackson steps)."""
        damping = jackson_damping(degree)
        table = np.stack([self.frame.step(t, degree, damping) for t in grid], axis=1)
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
        """bounds → (whole space | pilot → deflate → probes) → readout."""
        options, run = self.options, self.run
        run.enter("bounds")
        self._bounds()
        if self.high <= self.floor * 1.02:  # the operator is zero up to rounding
            return self._result(0.0, 0.0, self.floor, Status.CONVERGED, {})
        remaining = self.budget - self.meter.matvecs
        floor = options.threshold == "floor"
        settings = (options.degree, options.n_probes, options.deflate)
        whole = settings == (None,) * 3 and self.n <= min(remaining, WHOLE_SPACE_MAX)
        if whole and (options.threshold is None or floor):
            run.enter("whole space")
            return whole_space(self)
        if floor:
            raise MatrankValueError(
                message(
                    "threshold",
                    "a real number or None with method='polynomial' here: 'floor' "
                    f"needs the whole space (n ≤ {WHOLE_SPACE_MAX} products within "
                    "max_matvecs, no degree, n_probes or deflate), and no filter "
                    "reaches the noise floor; use method='lanczos' or 'exact'",
                    f"'floor' at n = {self.n} with {remaining} products left",
                )
            )
        given = options.threshold
        if isinstance(given, float | int) and given >= max(self.high, -self.low):
            self.zero_above(float(given))  # or refused
            return self._result(0.0, 0.0, float(given), Status.CONVERGED, {})
        why = unreached(self, given, remaining) if settings == (None,) * 3 else None
        if why is not None:
            run.enter("whole space")
            return whole_space(self, why)
        run.enter("pilot")
        target = self._pilot(remaining)
        run.enter("deflate")
        target, moments = self._probes(target)
        run.enter("readout")
        return self._result(*self._read(target, moments, warn=True))

    def _pilot(self, remaining: int) -> _Target:
        """Pilot probes, and the threshold, degree and damping they choose (or that the
        user's threshold implies)."""
        options = self.options
        pilot_count = min(_PILOT_PROBES, options.n_probes or _PILOT_PROBES)
        if options.threshold is not None:
            assert not isinstance(options.threshold, str)  # 'floor' went to the whole space
            threshold = float(options.threshold)  # below the bounds' top (estimate)
            degree = options.degree or self.planned_degree(threshold)
            steps = math.ceil(degree / 2)
            pilot_count = min(pilot_count, self._affordable(remaining // steps))
            pilot = self.moments(pilot_count, steps)
            return _Target(threshold, degree, degree, jackson_damping(degree), pilot)
        if options.degree:
            pilot_steps = math.ceil(options.degree / 2)
        else:
            pilot_steps = int(min(DEGREE_CAP // 2, max(8, 0.4 * remaining // pilot_count)))
        pilot_degree = 2 * pilot_steps
        pilot_count = min(pilot_count, self._affordable(remaining // pilot_steps))
        pilot = self.moments(pilot_count, pilot_steps)
        grid = self.grid(pilot_degree)
        choice = flat_stretch_threshold(grid, self.curve(pilot, pilot_degree, grid))
        if choice.decades < 1.0:
            threshold = self.reach(pilot_degree)
            damping = jackson_damping(pilot_degree)
            return _Target(threshold, pilot_degree, pilot_degree, damping, pilot, choice)
        # The edge at the plateau's angular midpoint, where a degree separates the two
        # sides best; a plateau reaching the grid's bottom reaches zero (what lies below
        # the pilot's reach is invisible, and p(0) = 0).
        lower = 0.0 if choice.lower <= grid[0] else choice.lower
        threshold = self.frame.midpoint(lower, choice.upper)
        separation = self.frame.angle(threshold) - self.frame.angle(choice.upper)
        degree = options.degree or _even(
            min(pilot_degree, max(16, _GAUSS_EDGE * _GAUSS_TAIL / separation))
        )
        # the steepest Gaussian step whose tails are 1e-6 at both plateau edges
        width = max(separation / _GAUSS_EDGE, _GAUSS_TAIL / degree)
        damping = gaussian_damping(degree, width)
        return _Target(threshold, degree, pilot_degree, damping, pilot, choice, "gaussian")

    def _probes(self, target: _Target) -> tuple[_Target, np.ndarray]:
        """Deflate a small top subspace (unless ``n_probes`` is fixed), then probe the
        rest: the moments the count is read from (and the target, which an invariant
        basis turns exact)."""
        options, meter, steps = self.options, self.meter, target.steps
        threshold = target.threshold
        pilot = target.pilot[:, : 2 * steps + 1]
        c = self.frame.step(threshold, target.degree, target.damping)
        target = dataclasses.replace(target, pilot=pilot, c=c)
        mean, stderr = mean_and_stderr(torch.from_numpy(self.samples(pilot, c, threshold)))
        if options.n_probes is None:
            self._deflate(mean + 2 * stderr)
        if not self.captured.shape[1]:
            run_more = options.n_probes - len(pilot) if options.n_probes else None
            more = (
                run_more if run_more is not None else (self.budget - meter.matvecs) // steps
            )
            return target, self._final(target, pilot, max(0, more))
        self._bound_complement()
        self._grow_capture(threshold)
        known = self.invariant and self.complement_top <= self.floor
        # the pilot saw the whole space; the rest sees range(Y)⊥ only
        if known:  # nothing left above the noise floor: the probes would agree
            moments = np.zeros((len(pilot), 2 * steps + 1))
        else:
            moments = self.moments(len(pilot), steps)
        samples = self.samples(moments, c, threshold)
        if self.certified(threshold) and not known:
            return target, moments  # the Ritz count; more probes refine only N(t < τ)
        if np.ptp(samples) > 1e-9 * (1 + abs(samples.mean())):
            more = (self.budget - meter.matvecs) // steps
            return target, self._final(target, moments, max(0, more))
        if self.invariant and options.threshold is None:
            # The basis is invariant and the probes agree to rounding: the spectrum above
            # the floor is known exactly, and the exact methods' plateau rule applies to
            # it (down to the noise floor, past any filter's reach).
            threshold, choice = resolve_threshold(
                np.abs(self.deflated_values), self.floor, None
            )
            self.exact_path = True
            target = dataclasses.replace(target, threshold=threshold, choice=choice)
        return target, moments

    def _grow_capture(self, threshold: float) -> None:
        """A partial capture with something left above τ leaves the probes a soft count
        whose tail under τ is one-sided: double the basis while half the remaining
        budget (and 1 GB) allows, until the count is certified (:meth:`certified`)."""
        while (
            not self.certified(threshold)
            and not self.invariant
            and self.options.deflate is None
            and self.basis_size < self.n
        ):
            grown = min(2 * self.basis_size, self.n)
            room = (self.budget - self.meter.matvecs - COMPLEMENT_STEPS) // 2
            if grown - self.basis_size > room or grown > BASIS_BYTES // (8 * self.n):
                break
            self._extend(grown)
            self._bound_complement()

    def _final(self, target: _Target, before: np.ndarray, count: int) -> np.ndarray:
        """``before`` and ``count`` more probes' moments; Ctrl-C from here reads the
        count off the probes measured so far."""
        self.run.enter("probes")
        self.run.interim = lambda: self._interim(target, before)
        return np.concatenate([before, self.moments(count, target.steps)])

    def _interim(self, target: _Target, before: np.ndarray) -> Interim:
        pieces = [before, *(piece for piece in self.pieces if len(piece))]
        rank, stderr, threshold, _, diagnostics, counts = self._read(
            target, np.concatenate(pieces), warn=False
        )
        return Interim(
            rank, stderr, threshold, self._diagnostics(threshold, diagnostics), counts
        )

    def _read(
        self, target: _Target, moments: np.ndarray, *, warn: bool
    ) -> tuple[float, float, float, Status, dict[str, Any], CountingCurve]:
        """The count at the target's threshold from ``moments``, its stderr (with the
        filter's edge term) and the curve."""
        threshold, degree, damping, c = (
            target.threshold,
            target.degree,
            target.damping,
            target.c,
        )
        assert c is not None
        reach = self.reach(degree)
        unreached = not self.reaches(threshold, degree) and not self.exact_path
        remedy = (
            f"threshold {threshold:.3g} is below the reach {reach:.3g} of degree "
            f"{degree}: eigenvalues near it count partially; raise `degree` (cost "
            "grows like sqrt(λmax/τ)), or count with method='lanczos' or 'exact'"
        )
        if warn and unreached:
            warnings.warn(remedy, MatrankWarning, stacklevel=5)
        samples = self.samples(moments, c, threshold)
        mean, stderr = mean_and_stderr(torch.from_numpy(samples))
        if self.exact_path:  # the probes carry rounding only: the count is the Ritz count
            mean = float((np.abs(self.deflated_values) > threshold).sum())
            stderr = 0.0
        grid = self.grid(degree)
        table = self.curve(moments, degree, grid)
        edge = 0.0
        if not self.exact_path and not self.certified(threshold):
            edge = self._edge(moments, c, degree, threshold, grid)
            stderr = math.hypot(stderr, edge)
        level, spread = (
            table.mean(axis=0),
            table.std(axis=0, ddof=1) / math.sqrt(len(table)),
        )
        hard = np.sort(np.abs(self.deflated_values))
        blur = 0.0 if self.exact_path else self._blur(moments, grid, degree)
        counts = CountingCurve(grid, level, np.hypot(spread, blur), values=hard)
        x = self.frame.x
        raw = (
            step_coefficients(x(threshold), 1.0, degree) * damping[: degree + 1]
            if x(threshold) < 1
            else np.zeros(degree + 1)
        )
        diagnostics: dict[str, Any] = {
            "degree": degree,
            "n_probes": len(samples),
            "kernel": target.kernel,
            "reach": reach,
            "filter_coefficients": c,
            "filter_at_zero": float(np.polynomial.chebyshev.chebval(x(0.0), c)),
            "uncorrected_filter_at_zero": float(
                np.polynomial.chebyshev.chebval(x(0.0), raw)
            ),
            "samples": samples,
            "edge_stderr": edge,
        }
        if target.choice is not None:
            diagnostics["plateau"] = dataclasses.asdict(target.choice)
        diagnostics["pilot_degree"] = target.pilot_degree
        diagnostics["pilot_probes"] = len(target.pilot)
        diagnostics.update(self._density(moments, degree))
        status = Status.of_choice(target.choice)
        if unreached:  # a count under the filter's reach is not vouched for
            status = Status.BELOW_RESOLUTION
            diagnostics["remedy"] = remedy
        return mean, stderr, threshold, status, diagnostics, counts

    def _path(self, threshold: float) -> str:
        if self.exact_path:
            return "deflated (exact)"
        if self.certified(threshold):
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

    def _result(
        self,
        rank: float,
        stderr: float,
        threshold: float,
        status: Status,
        diagnostics: dict[str, Any],
        counts: CountingCurve | None = None,
    ) -> RankResult:
        return self.run.result(
            rank,
            stderr=stderr,
            threshold=threshold,
            diagnostics=self._diagnostics(threshold, diagnostics),
            counts=counts,
            status=status,
        )

    def _diagnostics(self, threshold: float, found: dict[str, Any]) -> dict[str, Any]:
        return {
            "variant": "default",
            "lambda_min": self.low,
            "lambda_max": self.high,
            "noise_floor": self.floor,
            "deflated": int(self.deflated_values.size),
            "deflated_values": self.deflated_values,
            "path": self._path(threshold),
            "complement_top": self.complement_top,
            "basis_size": self.basis_size,
            **found,
        }


def _even(value: float) -> int:
    """The even integer at or above ``value`` (doubled moments come in even degrees)."""
    return 2 * math.ceil(value / 2)
