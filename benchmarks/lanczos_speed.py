"""Speed and accuracy side by side: LanczosRank, numpy.matrix_rank, scipy's estimate_rank.

Run: .venv/bin/python benchmarks/lanczos_speed.py [--n 6000] [--rank 300] [--repeats 3]
On one dense PSD matrix of known rank (eigenvalues log-spaced over 4 decades, then
zeros): the rank each method reports and the median seconds of ``--repeats`` runs, all
in one process so that the ratios are comparable. scipy's
``interpolative.estimate_rank(A, eps)`` is a randomized *relative* tolerance method;
it is run at eps = 1e-6 and 1e-10 (the signal spans 1e-4 … 1).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.linalg.interpolative as interpolative

import matrank
from matrank.testing import rotated_spectrum


def timed(function, repeats: int):
    seconds, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        seconds.append(time.perf_counter() - start)
    return value, statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--rank", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    matrix = rotated_spectrum(args.n, args.rank, cond=1e4, seed=0)
    rows = []
    numpy_rank, numpy_seconds = timed(
        lambda: np.linalg.matrix_rank(matrix, hermitian=True), args.repeats
    )
    rows.append(
        ("numpy.linalg.matrix_rank(hermitian=True)", numpy_rank, "-", numpy_seconds)
    )
    result, seconds = timed(
        lambda: matrank.estimate_rank(matrix, method="lanczos", seed=0), args.repeats
    )
    rows.append(("matrank lanczos", result.rank, result.cost["matvecs"], seconds))
    result, seconds = timed(lambda: matrank.estimate_rank(matrix, method="exact"), 1)
    rows.append(("matrank exact", result.rank, "-", seconds))
    for eps in (1e-6, 1e-10):
        rank, seconds = timed(
            lambda eps=eps: interpolative.estimate_rank(matrix, eps), args.repeats
        )
        rows.append((f"scipy interpolative.estimate_rank(eps={eps:g})", rank, "-", seconds))
    print(f"n = {args.n}, true rank = {args.rank}")
    print(f"{'method':48s} {'rank':>6s} {'matvecs':>7s} {'seconds':>8s} {'vs numpy':>8s}")
    for name, rank, matvecs, seconds in rows:
        print(
            f"{name:48s} {rank:6g} {matvecs!s:>7s} {seconds:8.3f} {numpy_seconds / seconds:7.1f}×"
        )


if __name__ == "__main__":
    main()
