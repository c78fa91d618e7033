"""EvolutionRank on gapped quadratics: loss evaluations needed against n and r.

Run: .venv/bin/python benchmarks/evolution_quadratics.py [--n 8 16 32 64] [--seeds 2]

Each case is a Haar-rotated quadratic ``½θᵀHθ`` with ``r`` eigenvalues log-spaced over
``[1/cond, 1]`` (cond = 4 by default) and ``n − r`` exact zeros, seen through loss values
only. Columns: the estimates over the seeds, how many were exact, the loss evaluations
used (mean), the margin of the cut in Tracy–Widom scales (worst), seconds (mean), and
the soft count ``n − tr Ĉ`` (mean) for comparison.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import matrank
from matrank.testing import rotated_spectrum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cond", type=float, default=4.0)
    parser.add_argument("--keep", type=float, default=0.1)
    args = parser.parse_args()
    estimator = matrank.EvolutionRank(keep=args.keep)
    print(
        f"{'n':>3s} {'r':>3s} | {'estimates':>12s} {'exact':>5s} {'evals':>9s} "
        f"{'margin':>6s} {'s':>6s} | {'soft':>6s}"
    )
    for n in args.n:
        for r in sorted({1, n // 4, n // 2, 3 * n // 4, n}):
            estimates, evals, margins, seconds, soft = [], [], [], 0.0, []
            for seed in range(args.seeds):
                matrix = rotated_spectrum(n, r, cond=args.cond, seed=1000 * n + seed)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", matrank.MatrankWarning)
                    result = estimator.estimate(matrix, seed=seed)
                seconds += time.perf_counter() - start
                estimates.append(int(result.rank))
                evals.append(result.cost["evals"])
                margins.append(result.diagnostics["margin"])
                soft.append(result.diagnostics["soft_count"])
            exact = sum(e == r for e in estimates)
            shown = ",".join(str(e) for e in estimates)
            print(
                f"{n:3d} {r:3d} | {shown:>12s} {exact:3d}/{args.seeds} "
                f"{np.mean(evals):9.3g} {min(margins):6.1f} {seconds / args.seeds:6.1f} | "
                f"{np.mean(soft):6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
