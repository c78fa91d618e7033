"""LanczosRank on the Langevin paper's test problems: deep linear nets at a global minimum.

Run: .venv/bin/python benchmarks/lanczos_linear_nets.py [--d 8 16 32 64] [--trials 3]
Depth 5, square d × d layers, the paper's target T = ZZᵀ/√d, a fresh T per trial (the
paper drew one per d). Truth: rank d² of n = 5d² parameters. The spectrum's width in
decades comes from the closed form. Two runs per trial: the default plateau rule
("≠N(τ)" counts trials whose estimate differs from the closed-form count above the
threshold the estimator reported, "≠d²" those that differ from d² -- a Wishart target
can have an eigenvalue so small that the widest gap of the spectrum lies above it --,
"≠dense" those that differ from the count the dense eigendecomposition's plateau rule
gives (the closed-form spectrum above numpy's floor λmax·n·eps), "conv" those whose
status is CONVERGED), and ``threshold="floor"`` (count everything above the noise floor;
"floor ≠d²" and its "conv"). The last two columns quote the paper's Table 1 NRMSE for its
Langevin estimator and for Ubaru & Saad's.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import matrank
from matrank.adapters import LinearNetHessian
from matrank.numerics.threshold import plateau_threshold

PAPER_LANGEVIN = {8: 6.9, 16: 2.8, 32: 1.2, 64: 0.3, 128: 2.0, 256: 4.6}
PAPER_UBARU_SAAD = {8: 12.16, 16: 18.47, 32: 18.96, 64: 19.27, 128: 17.92, 256: 18.74}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    header = (
        f"{'d':>4s} {'n':>6s} {'d²':>5s} {'decades':>7s} {'≠N(τ)':>6s} {'≠d²':>4s} {'≠dense':>6s} "
        f"{'conv':>4s} {'matvecs':>7s} {'2r+200':>6s} {'s':>7s} {'floor ≠d²':>9s} {'conv':>4s} "
        f"{'matvecs':>7s} {'s':>7s} "
        f"{'Langevin %':>10s} {'U&S %':>6s}"
    )
    print(header)
    print("-" * len(header))
    for d in args.d:
        errors, misses, matvecs, seconds, decades = 0, 0, 0, 0.0, 0.0
        dense_misses, converged, floor_converged = 0, 0, 0
        floor_misses, floor_matvecs, floor_seconds = 0, 0, 0.0
        for trial in range(args.trials):
            problem = LinearNetHessian.random_minimum(d, d, 5, seed=trial)
            spectrum = problem.spectrum()
            decades = max(decades, math.log10(spectrum[0] / spectrum[-1]))
            floor = spectrum.max() * problem.dim * np.finfo(np.float64).eps
            dense = plateau_threshold(spectrum, floor)
            start = time.perf_counter()
            result = matrank.estimate_rank(problem, method="lanczos", seed=trial)
            seconds += time.perf_counter() - start
            errors += result.rank != (spectrum > result.threshold).sum()
            misses += result.rank != d * d
            dense_misses += result.rank != (spectrum > dense.threshold).sum()
            converged += result.status is matrank.Status.CONVERGED
            matvecs = max(matvecs, result.cost["matvecs"])
            start = time.perf_counter()
            result = matrank.estimate_rank(
                problem, method="lanczos", seed=trial, threshold="floor"
            )
            floor_seconds += time.perf_counter() - start
            floor_misses += result.rank != d * d
            floor_converged += result.status is matrank.Status.CONVERGED
            floor_matvecs = max(floor_matvecs, result.cost["matvecs"])
        print(
            f"{d:4d} {problem.dim:6d} {d * d:5d} {decades:7.1f} {errors:6d} {misses:4d} "
            f"{dense_misses:6d} {converged:4d} {matvecs:7d} {2 * d * d + 200:6d} "
            f"{seconds / args.trials:7.1f} {floor_misses:9d} {floor_converged:4d} "
            f"{floor_matvecs:7d} {floor_seconds / args.trials:7.1f} "
            f"{PAPER_LANGEVIN.get(d, float('nan')):10.1f} "
            f"{PAPER_UBARU_SAAD.get(d, float('nan')):6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
