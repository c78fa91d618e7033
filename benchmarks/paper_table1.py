"""The Langevin paper's Table 1: NRMSE of rank estimates on deep-linear-net Hessians.

Run: .venv/bin/python benchmarks/paper_table1.py [--d 8 16 32 64] [--trials 5]
Protocol (research notes, paper_peer §1): depth 5, square d × d layers, Σx = I,
T = ZZᵀ/√d drawn fresh for every trial (the paper drew one per d), σ² = 2e-5, η = 1e-4,
15,000 steps averaged over the last 10,000, G = I; Ubaru & Saad with degree 50 and 300
probes. NRMSE = sqrt(mean((estimate − d²)²)) / d², in %. Also printed: the exact
expectation of each faithful estimator on each trial's spectrum (closed form), so the
table separates estimator bias from Monte-Carlo noise, and LanczosRank's exact count.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import matrank
from matrank.adapters import LinearNetHessian
from matrank.estimators.langevin import expected_loss_curve

PAPER = {  # Table 1 of Bar et al. 2024, NRMSE in %
    "langevin": {8: 6.9, 16: 2.8, 32: 1.2, 64: 0.3, 128: 2.0, 256: 4.6},
    "ubaru-saad": {8: 12.16, 16: 18.47, 32: 18.96, 64: 19.27, 128: 17.92, 256: 18.74},
}


def nrmse(values, truth):
    return 100 * float(np.sqrt(np.mean((np.asarray(values) - truth) ** 2))) / truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'d':>4s} {'d²':>5s} | {'Langevin':>8s} {'E[·]':>6s} {'paper':>5s} {'s':>5s} | "
        f"{'U&S':>6s} {'E[·]':>6s} {'paper':>5s} {'s':>5s} | {'Lanczos':>7s} (NRMSE %)"
    )
    for d in args.d:
        truth = d * d
        langevin, langevin_expected, us, us_expected, lanczos = [], [], [], [], []
        seconds = {"langevin": 0.0, "polynomial": 0.0}
        for trial in range(args.trials):
            problem = LinearNetHessian.random_minimum(d, d, 5, seed=100 + trial)
            spectrum = problem.spectrum()
            start = time.perf_counter()
            result = matrank.estimate_rank(problem, method="langevin", seed=trial)
            seconds["langevin"] += time.perf_counter() - start
            langevin.append(result.rank)
            curve = expected_loss_curve(
                spectrum, step_size=1e-4, sigma2=2e-5, n_steps=15000
            )
            langevin_expected.append(4 / 2e-5 * curve[-10000:].mean())
            start = time.perf_counter()
            result = matrank.estimate_rank(problem, method="polynomial", seed=trial)
            seconds["polynomial"] += time.perf_counter() - start
            us.append(result.rank)
            largest = result.diagnostics["lambda_max"]
            low, high = -1e-5, largest + 1e-5
            mapped = (spectrum - (high + low) / 2) / ((high - low) / 2)
            coefficients = result.diagnostics["filter_coefficients"]
            us_expected.append(
                np.polynomial.chebyshev.chebval(mapped, coefficients).sum()
                + (problem.dim - truth) * result.diagnostics["filter_at_zero"]
            )
            if d <= 32:
                lanczos.append(
                    matrank.estimate_rank(problem, method="lanczos", seed=trial).rank
                )
        print(
            f"{d:4d} {truth:5d} | {nrmse(langevin, truth):8.2f} {nrmse(langevin_expected, truth):6.2f} "
            f"{PAPER['langevin'][d]:5.1f} {seconds['langevin'] / args.trials:5.1f} | "
            f"{nrmse(us, truth):6.2f} {nrmse(us_expected, truth):6.2f} {PAPER['ubaru-saad'][d]:5.1f} "
            f"{seconds['polynomial'] / args.trials:5.1f} | "
            f"{nrmse(lanczos, truth) if lanczos else float('nan'):7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
