"""The dense path's cost, one calibration for every timed choice.

``auto`` (whether an operator's ``n`` products and one ``eigvalsh`` take seconds, and
whether a Gram curvature's dual -- its rows, ``BBᵀ`` and an ``m × m`` ``eigvalsh`` --
costs less than that dense path) and the Lanczos count (whether to switch to that
dense path, and whether to read ``H`` again from the identity) predict the same two
things: an ``eigvalsh`` and an ``n × n`` matrix product of size ``n``. Both scale as
``n³``, but their rate per ``n³`` does not: at ``n = 1024`` LAPACK's tridiagonal
reduction still runs from cache and the rate there overstated a 17,610 × 17,610
``eigvalsh`` 1.6–2.6-fold on the 2-core machines, at 256 more (auto's dense prediction
was 3× too high at n = 4096).
So each size is timed at the nearest power of two at or below it, between 256 and
2048 (0.7 s of ``eigvalsh`` on two cores, once a process). Measured by hand on the
2-core machine (2026-12-06, seconds per ``n³``): 1.2e-10 at 1024, 8.6e-11 at 2048,
6.0e-11 at 4096, 6.6e-11 at 6144, 7.6e-11 at 17,610 -- the 2048 rate overstates
17,610 1.1-fold and 4096–6144 1.3–1.4-fold, on the side of keeping the Krylov count.

The timings read :func:`matrank._clock.now`, so a test's stepping clock makes the
choices that use them deterministic.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _clock

__all__ = ["dual_seconds", "eigvalsh_seconds", "gram_seconds", "matmul_seconds"]

_SMALLEST, _LARGEST = 256, 2048


def eigvalsh_seconds(n: int) -> float:
    """Predicted seconds of one ``eigvalsh`` of an ``n × n`` float64 matrix."""
    return _rates(_calibration_size(n))[0] * float(n) ** 3


def matmul_seconds(n: int) -> float:
    """Predicted seconds of one ``n × n`` by ``n × n`` float64 matrix product."""
    return _rates(_calibration_size(n))[1] * float(n) ** 3


def gram_seconds(m: int, n: int) -> float:
    """Predicted seconds of ``BBᵀ`` for an ``m × n`` float64 ``B`` (``m²n`` multiply-adds
    at the product rate of the size at or below ``n``)."""
    return _rates(_calibration_size(n))[1] * float(m) ** 2 * float(n)


def dual_seconds(m: int, n: int, rows_seconds: float) -> float:
    """Predicted seconds of a Gram curvature's dual count: the ``m`` rows of ``B``
    (``rows_seconds``, timed by the adapter), ``BBᵀ`` and one ``m × m`` ``eigvalsh``."""
    return rows_seconds + gram_seconds(m, n) + eigvalsh_seconds(m)


def _calibration_size(n: int) -> int:
    size = _SMALLEST
    while 2 * size <= min(n, _LARGEST):
        size *= 2
    return size


@functools.cache
def _rates(size: int) -> tuple[float, float]:
    """Seconds per ``n³`` of ``eigvalsh`` and of a matrix product at ``size``, after a
    warm-up of the smallest size (thread start-up, LAPACK's first call)."""
    rng = np.random.default_rng(0)
    warm = rng.standard_normal((_SMALLEST, _SMALLEST))
    np.linalg.eigvalsh(warm + warm.T)
    matrix = rng.standard_normal((size, size))
    matrix = matrix + matrix.T
    start = _clock.now()
    np.linalg.eigvalsh(matrix)
    middle = _clock.now()
    matrix @ matrix
    end = _clock.now()
    return (middle - start) / size**3, (end - middle) / size**3
