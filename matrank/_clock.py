"""The one clock that timed decisions read.

Three choices in matrank are made from measured seconds: ``auto``'s dense rule for an
operator (one timed block of products), the Lanczos count's switch to the dense path
(its own products against a calibrated ``eigvalsh``), and when a checkpoint is due. A
run's ``cost["seconds"]`` is read from the same clock. Every such read goes through
:func:`now`, so that a test can put a :class:`SteppingClock` in its place
(:func:`matrank.testing.stepping_clock`): a clock that advances a fixed step per read
makes each timed choice a function of the control flow alone, the same on a machine
four times faster or slower, loaded or idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["SteppingClock", "now"]

_source: Callable[[], float] = time.perf_counter


def now() -> float:
    """Seconds on the decision clock (``time.perf_counter`` unless a test pinned it)."""
    return _source()


class SteppingClock:
    """A clock that reads ``step`` seconds later at each call: deterministic time.

    :meth:`advance` moves it on by a given amount, so that a test's operator can say
    what its products cost without taking that long.
    """

    def __init__(self, step: float = 1e-3) -> None:
        self.step = step
        self.reads = 0
        self.advanced = 0.0

    def __call__(self) -> float:
        self.reads += 1
        return self.reads * self.step + self.advanced

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (as a slow product would)."""
        self.advanced += seconds
