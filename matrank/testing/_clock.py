"""A deterministic clock for tests of code whose path a timing chooses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .. import _clock

__all__ = ["stepping_clock"]


@contextlib.contextmanager
def stepping_clock(step: float = 1e-3) -> Iterator[_clock.SteppingClock]:
    """Make every timed choice of matrank a function of the control flow alone.

    Inside the block, the clock that ``auto``'s dense rule, the Lanczos dense switch,
    checkpoint cadence and ``cost["seconds"]`` read advances ``step`` seconds per read
    instead of following the wall clock: the same inputs take the same path on a fast
    machine and a slow, loaded one. matrank's own test suite runs every test inside it.

    Parameters
    ----------
    step : float, default=1e-3
        Seconds the clock advances at each read.

    Yields
    ------
    SteppingClock
        The clock in use (``reads`` counts the reads so far).

    Examples
    --------
    >>> import numpy as np, scipy.sparse.linalg, matrank
    >>> from matrank.testing import rotated_spectrum, stepping_clock
    >>> matrix = rotated_spectrum(100, 9, seed=0)
    >>> with stepping_clock():  # two operators: auto's calibration is kept per object
    ...     first = matrank.estimate_rank(scipy.sparse.linalg.aslinearoperator(matrix), seed=0)
    ...     second = matrank.estimate_rank(scipy.sparse.linalg.aslinearoperator(matrix), seed=0)
    >>> first.method == second.method, first.cost["matvecs"] == second.cost["matvecs"]
    (True, True)
    """
    clock = _clock.SteppingClock(step)
    before = _clock._source
    _clock._source = clock
    try:
        yield clock
    finally:
        _clock._source = before
