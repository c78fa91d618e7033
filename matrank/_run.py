"""The run every estimate shares: oracle, meter, generator, progress, checkpoints, result.

An estimator's ``estimate`` opens a :class:`Run` as a context manager and keeps only its
phases::

    with Run.begin(self, obj, Capability.HVP, seed=seed) as run:
        return self._phases(run, plan)
    return run.interruption

The run coerces the object and refuses missing capabilities once, seeds a local
generator, meters the oracle, shows progress (with the current :meth:`Run.enter`-ed
phase), writes and restores checkpoints, and assembles the :class:`~matrank.RankResult`.

Ctrl-C. A ``KeyboardInterrupt`` anywhere inside the ``with`` block ends the run with
``Status.INTERRUPTED``: the result is the best estimate so far, which each phase
offers as it gets one (:attr:`Run.interim`), or NaN where none exists yet (the pilot,
the first population); ``diagnostics["interrupted_in"]`` names the phase. With a
checkpoint open, the first Ctrl-C is deferred to the estimator's next check, where the
latest state is recorded and written before the run stops (a second Ctrl-C stops at
once): a rerun resumes from there.

Checkpoints. A run with ``checkpoint=PATH`` keeps a *journal*: named states that the
estimator records at its checks (:meth:`Run.record`), each with the generator state and
the meter's counts at that moment. The journal is written to ``PATH`` atomically
(temporary file, then rename) at most every ``checkpoint_every`` seconds and whenever the
estimator marks a check as one to keep. A rerun with the same path replays the
estimator's control flow, and each :meth:`Run.restore` hands back the recorded state and
resets the generator and the counts to what they were there: the work between is not
redone, and every later random draw, decision and count is the one the uninterrupted run
made (bit-identical on the CPU). A checkpoint written for another oracle, method, option
set or seed is refused, naming what differs. Files are read with
``torch.load(weights_only=True)``: loading runs no code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

import threadpoolctl
import torch
from tqdm.auto import tqdm

from . import _clock
from ._checkpoint import (
    Store,
    check_path,
    fingerprint,
    pack,
    refusal,
    run_identity,
    settings,
    unpack,
)
from ._diagnostics import diagnostics_for
from ._oracle import (
    Capability,
    CostMeter,
    Oracle,
    as_oracle,
    collective,
    require,
)
from ._result import CountingCurve, RankResult, Status
from ._scaling import Scaled, scale_factor, unscale
from ._validation import (
    MatrankTypeError,
    MatrankValueError,
    check_real,
    check_run_options,
    message,
)

__all__ = ["Interim", "Run", "doubling_checks", "run_identity", "sized_threads"]


# Up to this dimension an estimate runs on one thread: its products are too small for
# a thread pool to pay, and OpenMP and BLAS workers that spin between tiny operations
# cost 30-70x on a loaded machine (benchmarks/oversubscription.py).
SINGLE_THREAD_MAX_DIM = 512


def sized_threads(estimate: Callable[..., RankResult]) -> Callable[..., RankResult]:
    """Run an estimator's ``estimate`` on one thread when the problem is small.

    The object is coerced first (``as_oracle`` returns an oracle unchanged), and the
    thread counts of torch and of the BLAS and OpenMP pools are restored afterwards.
    """

    @functools.wraps(estimate)
    def wrapper(self: Any, obj: Any, **kwargs: Any) -> RankResult:
        oracle = as_oracle(obj)
        if oracle.dim > SINGLE_THREAD_MAX_DIM or torch.get_num_threads() == 1:
            return estimate(self, oracle, **kwargs)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpoolctl.threadpool_limits(1):
                return estimate(self, oracle, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def doubling_checks(first: int, total: int) -> Iterator[int]:
    """``first, 2·first, 4·first, …`` below ``total``, then ``total``: when to look."""
    check = first
    while check < total:
        yield check
        check *= 2
    yield total


@dataclasses.dataclass(frozen=True)
class Interim:
    """The best estimate a phase has so far: what Ctrl-C returns."""

    rank: float
    stderr: float | None
    threshold: float | None
    diagnostics: dict[str, Any]
    counts: CountingCurve | None = None


@dataclasses.dataclass
class Run:
    """One estimate in progress (see the module notes)."""

    method: str
    oracle: Oracle
    meter: CostMeter
    generator: torch.Generator
    bar: Any
    start: float
    seconds_before: float = 0.0
    store: Store | None = None
    factor: float = 1.0
    #: the phase running now (shown in the bar, named by an interrupted result)
    phase: str = "start"
    #: the best estimate so far, read when Ctrl-C comes (a phase sets it as it goes)
    interim: Callable[[], Interim | None] | None = None
    #: the result of a run that Ctrl-C ended (set when the ``with`` block exits)
    interruption: RankResult | None = None
    stopping: bool = False
    _handler: Any = None
    _closed: bool = False

    @classmethod
    def begin(
        cls,
        estimator: Any,
        obj: Any,
        needs: Capability,
        *,
        seed: int | None,
        progress: bool = False,
        total: float | None = None,
        budget: float | None = None,
        unit: str = "matvec",
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: float = 60.0,
        keep_checkpoint: bool = False,
    ) -> Run:
        """Coerce ``obj``, refuse what it cannot compute, seed, meter, open the store.

        ``total`` is the work the run will do (a bar with a real ETA); ``budget`` the most
        it may do (the bar shows the share of the budget and no ETA, and :meth:`close`
        fills it at the work actually done, so a run that converged early ends at 100 %).
        """
        start = _clock.now()
        method = estimator.method
        oracle = as_oracle(obj)
        for capability in (Capability.HVP, Capability.GRAD, Capability.LOSS):
            if capability in needs:
                require(oracle, capability, method)
        check_run_options(seed, progress)
        check_real("checkpoint_every", checkpoint_every, low=0.0)
        if not isinstance(keep_checkpoint, bool):
            raise MatrankValueError(
                message("keep_checkpoint", "True or False", repr(keep_checkpoint))
            )
        seed = None if seed is None else int(seed)
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        # loss values too: evolution's loss differences at 1e-308 are subnormal, and its
        # threshold underflowed to 0 (an oracle with no known magnitude keeps factor 1)
        factor = scale_factor(oracle)
        meter = CostMeter(oracle if factor == 1.0 else Scaled(oracle, factor))
        group = collective(oracle)
        if group is not None:
            group.same(run_identity(method, settings(estimator), seed, oracle))
        shape = {}
        if budget is not None:  # an upper bound: time to spend all of it means nothing
            total = budget
            shape["bar_format"] = (
                "{desc}: {percentage:3.0f}% of the budget|{bar}| {n_fmt}/{total_fmt} "
                "{unit} [{elapsed}]{postfix}"
            )
        bar = tqdm(
            total=total,
            desc=method,
            **shape,
            unit=unit,
            # a data-parallel oracle's ranks run the same estimate: rank 0 shows it
            disable=not progress or (group is not None and group.rank != 0),
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        run = cls(method, oracle, meter, generator, bar, start, factor=factor)
        if checkpoint is not None:
            if group is not None:
                raise MatrankValueError(
                    message(
                        "checkpoint",
                        "None with a distributed oracle (the ranks would write when "
                        "their own clocks say, and resume from different steps)",
                        repr(checkpoint),
                    )
                )
            if not isinstance(checkpoint, (str, os.PathLike)):
                raise MatrankTypeError(
                    message("checkpoint", "a path or None", type(checkpoint).__name__)
                )
            check_path(pathlib.Path(checkpoint))
            run.store = Store(
                pathlib.Path(checkpoint),
                fingerprint(estimator, oracle, seed),
                checkpoint_every,
                keep_checkpoint,
            )
        return run

    # -- the loop: phases and Ctrl-C -----------------------------------------------------

    def __enter__(self) -> Run:
        if self.store is not None and threading.current_thread() is threading.main_thread():
            self._handler = signal.signal(signal.SIGINT, self._defer)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._handler is not None:
            signal.signal(signal.SIGINT, self._handler)
            self._handler = None
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.interruption = self._interrupted()
            return True
        self.close()
        if kind is not None and self.store is not None:  # kept for a rerun
            self.store.release()
        return False

    def enter(self, phase: str) -> None:
        """Name the phase that runs now (shown beside the bar's method name)."""
        self.phase = phase
        self.bar.set_description_str(f"{self.method} [{phase}]", refresh=False)

    def stopped(self) -> RankResult:
        """The result of a run Ctrl-C ended (after its ``with`` block)."""
        assert self.interruption is not None, "the with block returned no result"
        return self.interruption

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:  # the second Ctrl-C: now
            raise KeyboardInterrupt
        self.stopping = True
        print(
            f"\n{self.method}: stopping at the next check to write the checkpoint "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    def _interrupted(self) -> RankResult:
        found = None if self.interim is None else self.interim()
        if found is None:  # nothing measured yet: no number to give
            found = Interim(math.nan, None, None, {})
        return self.result(
            found.rank,
            stderr=found.stderr,
            threshold=found.threshold,
            diagnostics={**found.diagnostics, "interrupted_in": self.phase},
            counts=found.counts,
            status=Status.INTERRUPTED,
        )

    # -- checkpoints ---------------------------------------------------------------------

    def restore(self, key: str, expect: Callable[[Any], bool] | None = None) -> Any:
        """The state recorded under ``key`` by an earlier run, or ``None``.

        A restored state resets the generator and the meter to that moment. ``expect``
        says whether a state fits this run (its shapes, its ranges); one that does not,
        or that ``expect`` cannot read, is refused naming the file.
        """
        if self.store is None or key not in self.store.journal:
            return None
        entry = self.store.journal[key]
        state = unpack(entry["state"])
        if expect is not None:
            try:
                fits = bool(expect(state))
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                fits = False
            if not fits:
                raise refusal(self.store.path, f"whose entry {key!r} does not fit this run")
        self.generator.set_state(entry["generator"])
        self.meter.matvecs, self.meter.gradients, self.meter.evals = entry["counts"]
        # the timed decisions (the Lanczos dense switch) read these: as they were then
        self.meter.hvp_seconds, self.meter.timed_matvecs = entry["timing"]
        self.seconds_before = entry["seconds"] - (_clock.now() - self.start)
        self.bar.update(entry["progress"] - self.bar.n)
        return state

    def due(self) -> bool:
        """Whether a checkpoint should be written now (one is open and
        ``checkpoint_every`` seconds have passed since the last write, or Ctrl-C asked
        the run to stop)."""
        return self.store is not None and (self.stopping or self.store.due())

    def record(self, key: str, state: Any) -> None:
        """Journal ``state`` under ``key`` and write the checkpoint (if one is open).

        ``state`` must describe everything the estimator needs to go on from here; its
        tensors are copied. Call it at a check when :meth:`due` says so. After a
        deferred Ctrl-C the run stops here, the state written.
        """
        store = self.store
        if store is None:
            return
        store.journal[key] = {
            "state": pack(state),
            "generator": self.generator.get_state(),
            "counts": [self.meter.matvecs, self.meter.gradients, self.meter.evals],
            "timing": [self.meter.hvp_seconds, self.meter.timed_matvecs],
            "seconds": self.seconds(),
            "progress": float(self.bar.n),
        }
        store.write()
        if self.stopping:
            raise KeyboardInterrupt

    def threshold(self, value: Any) -> Any:
        """A user's ``threshold`` in the run's units (the products are ``factor·H``);
        ``None`` and ``'floor'`` as they are. :meth:`result` scales the reported one
        back."""
        if value is None or isinstance(value, str) or self.factor == 1.0:
            return value
        return float(value) * self.factor

    def cached(
        self,
        key: str,
        compute: Callable[[], Any],
        expect: Callable[[Any], bool] | None = None,
    ) -> Any:
        """``compute()``, or its recorded value (checked by ``expect`` as in
        :meth:`restore`): a phase whose result is its state."""
        value = self.restore(key, expect)
        if value is None:
            value = compute()
            if self.due():
                self.record(key, value)
        return value

    # -- the result ----------------------------------------------------------------------

    def seconds(self) -> float:
        return self.seconds_before + _clock.now() - self.start

    def result(
        self,
        rank: float,
        *,
        stderr: float | None,
        threshold: float | None,
        diagnostics: dict[str, Any],
        counts: CountingCurve | None = None,
        status: Status = Status.CONVERGED,
    ) -> RankResult:
        """The :class:`RankResult`; a finished run removes its checkpoint (see
        ``keep_checkpoint``), an interrupted one leaves it for a rerun to resume."""
        self.close()
        if rank < 0:
            rank, stderr, status, diagnostics = _negative(rank, stderr, status, diagnostics)
        if self.store is not None:
            if status is Status.INTERRUPTED:  # kept for a rerun to resume
                self.store.release()
            else:
                self.store.finish()
        precision = self.meter.dtype
        if precision in _COARSE and status in (
            Status.NO_PLATEAU,
            Status.AMBIGUOUS_PLATEAU,
            Status.BELOW_RESOLUTION,
        ):
            diagnostics = {
                **diagnostics,
                "remedy": (
                    f"the oracle computes in {str(precision).removeprefix('torch.')}, "
                    "whose rounding floor lies where trained networks' spectra are "
                    "still continuous: rebuild it with dtype=torch.float64 (e.g. "
                    "TorchLoss(..., dtype=torch.float64); its products cost more) "
                    "before reading a rank off this curve"
                ),
            }
        if self.factor != 1.0:
            threshold, diagnostics, counts = unscale(
                self.factor, threshold, diagnostics, counts
            )
        return RankResult(
            rank=float(rank),
            stderr=None if stderr is None else float(stderr),
            threshold=None if threshold is None else float(threshold),
            method=self.method,
            cost=self.meter.cost(self.seconds()),
            diagnostics=diagnostics_for(self.method, diagnostics),
            counts=counts,
            status=status,
        )

    def close(self) -> None:
        """Close the progress bar; a budgeted bar ends at the work done (100 %)."""
        if self._closed:
            return
        self._closed = True
        bar = self.bar
        if (
            not bar.disable
            and bar.total
            and bar.n < bar.total
            and "budget" in (bar.bar_format or "")
        ):
            share = f"{100 * bar.n / bar.total:.0f}%"
            bar.bar_format = (
                "{desc}: done|{bar}| {n_fmt} {unit} (" + share + " of the budget) "
                "[{elapsed}]{postfix}"
            )
            bar.total = bar.n
            bar.set_description_str(self.method, refresh=False)  # no phase runs now
            bar.refresh()
        bar.close()


_COARSE = (torch.float32, torch.float16, torch.bfloat16)


def _negative(
    rank: float, stderr: float | None, status: Status, diagnostics: dict[str, Any]
) -> tuple[float, float | None, Status, dict[str, Any]]:
    """A rank is never negative. A soft count a little under zero (within two standard
    errors and one eigenvalue) is an empty count read with noise: 0. Anything more
    negative comes from a point that is not a minimum (a sampler's readout falls when
    the chains find negative curvature): NaN, with the raw estimate in diagnostics and,
    where the status claimed success, ``NEGATIVE_CURVATURE``."""
    if stderr is not None and -rank <= min(2 * stderr, 1.0):
        return 0.0, stderr, status, diagnostics
    diagnostics = {**diagnostics, "negative_estimate": rank}
    # chains that escape down a saddle have left the quadratic region too: the
    # negative curvature is the cause to name
    if status.converged or status is Status.NOT_QUADRATIC:
        status = Status.NEGATIVE_CURVATURE
    return math.nan, None, status, diagnostics
