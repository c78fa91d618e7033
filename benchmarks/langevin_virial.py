"""The virial readout with an automatic step size against the paper's mode, same budget.

Run: .venv/bin/python benchmarks/langevin_virial.py [--d 8 16 32] [--trials 3]
Deep linear nets at a global minimum (depth 5, the paper's target, a fresh target per
trial). Paper mode: η = 1e-4, σ² = 2e-5, 15,000 steps of one chain, eq. 20. Virial:
``step_size="auto"`` (η = 1/μmax from 40 gradients), 8 chains × 1870 steps (15,000
gradients in all), the last 2/3 averaged. Printed per d: d², the mean closed-form
count N(τ) at the threshold the virial run reports (eigenvalues above 1/(2ηK)),
each mode's mean estimate ± its mean stderr, NRMSE against d² and against the exact
expectation of what it computes, and seconds.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import matrank
from matrank.adapters import LinearNetHessian
from matrank.estimators.langevin import expected_virial_curve


def nrmse(values, truth) -> float:
    values, truth = np.asarray(values, float), np.asarray(truth, float)
    return 100 * math.sqrt(np.mean(((values - truth) / truth) ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true", help="virial runs only")
    args = parser.parse_args()
    print(
        f"{'d':>4s} {'d²':>5s} | {'paper':>8s} {'±':>5s} {'NRMSE%':>6s} {'s':>5s} | "
        f"{'virial':>8s} {'±':>5s} {'NRMSE%':>6s} {'E[·]%':>6s} {'N(τ)':>7s} {'s':>5s}"
    )
    for d in args.d:
        paper, paper_se, paper_s = [], [], 0.0
        virial, virial_se, virial_s, expected, counted = [], [], 0.0, [], []
        for trial in range(args.trials):
            problem = LinearNetHessian.random_minimum(d, d, 5, seed=trial)
            spectrum = np.asarray(problem.spectrum())
            if not args.skip_paper:
                start = time.perf_counter()
                result = matrank.estimate_rank(problem, method="langevin", seed=trial)
                paper_s += time.perf_counter() - start
                paper.append(result.rank)
                paper_se.append(result.stderr)
            else:
                paper.append(math.nan)
                paper_se.append(math.nan)
            steps = 15000 // 8
            start = time.perf_counter()
            result = matrank.estimate_rank(
                problem,
                method="langevin",
                seed=trial,
                readout="virial",
                step_size="auto",
                n_chains=8,
                n_steps=steps,
                n_average=2 * steps // 3,
            )
            virial_s += time.perf_counter() - start
            virial.append(result.rank)
            virial_se.append(result.stderr)
            curve = expected_virial_curve(
                spectrum, step_size=result.diagnostics["step_size"], n_steps=steps
            )
            expected.append(curve[-(2 * steps // 3) :].mean())
            counted.append(int((spectrum > result.threshold).sum()))
        truth = [d * d] * args.trials
        print(
            f"{d:4d} {d * d:5d} | {np.mean(paper):8.1f} {np.mean(paper_se):5.1f} "
            f"{nrmse(paper, truth):6.2f} {paper_s / args.trials:5.1f} | "
            f"{np.mean(virial):8.1f} {np.mean(virial_se):5.1f} {nrmse(virial, truth):6.2f} "
            f"{nrmse(virial, expected):6.2f} {np.mean(counted):7.1f} {virial_s / args.trials:5.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
