"""How many gradients the default Langevin needs to count 99 % of d² on the paper's nets.

Run: .venv/bin/python benchmarks/langevin_budget.py [--d 8 16 32 64 128 256] [--trials 3]
     [--run-up-to 64] [--rtol 0.005]

Depth-5 linear nets of the paper's Table 1 (fresh target per trial, rank d²). For each
trial the closed-form spectrum gives the budget at which the default's expected soft
count reaches 0.99·d²: 8 chains at η = 1.5/μmax, the window over the last half of the
run, E = Σ mean_k (1 − (1 − ημ)^{2k}) (``paper_table1.window_filter``), gradients
8K + 41. The eigenvalue at the 1 % quantile, ``μ_1%``, says why: K ≈ 1/(2ημ_1%) steps.
For d ≤ ``--run-up-to`` the default then runs at that budget (``max_gradients``) and,
separately, with the adaptive budget (``rtol``, up to 4× the prediction): the
estimate's error against d² and the gradients it used.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from paper_table1 import nrmse, window_filter

import matrank
from matrank.adapters import LinearNetHessian

CHAINS, OVERHEAD = 8, 41


def expected_count(mu: np.ndarray, eta: float, steps: int) -> float:
    return float(window_filter(mu, eta, steps // 2, steps).sum())


def steps_for(mu: np.ndarray, share: float) -> int:
    """Smallest K with the expected window count ≥ share·rank (bisection)."""
    eta, target = 1.5 / mu.max(), share * mu.size
    low, high = 1, 2
    while expected_count(mu, eta, high) < target:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (
            (middle, high) if expected_count(mu, eta, middle) < target else (low, middle)
        )
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--run-up-to", type=int, default=64)
    parser.add_argument("--rtol", type=float, default=0.005)
    args = parser.parse_args()
    print(
        f"{'d':>4} {'d²':>6} {'μ_1%/μmax':>10} {'predicted grads':>16} {'×15k':>6} |"
        f" {'at prediction: NRMSE %':>22} {'s':>6} | {'rtol: NRMSE %':>13}"
        f" {'grads used':>18} {'s':>6}"
    )
    for d in args.d:
        budgets, quantiles, runs, seconds = [], [], [], []
        adaptive, used, adaptive_seconds = [], [], []
        for trial in range(args.trials):
            problem = LinearNetHessian.random_minimum(d, d, 5, seed=1000 + trial)
            mu = np.sort(np.asarray(problem.spectrum()))[::-1]
            quantiles.append(mu[math.ceil(0.99 * mu.size) - 1] / mu[0])
            budget = CHAINS * steps_for(mu, 0.99) + OVERHEAD
            budgets.append(budget)
            if d > args.run_up_to:
                continue
            start = time.perf_counter()
            result = matrank.LangevinRank(max_gradients=budget).estimate(
                problem, seed=trial
            )
            seconds.append(time.perf_counter() - start)
            runs.append(result.rank)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", matrank.MatrankWarning)
                settled = matrank.LangevinRank(
                    rtol=args.rtol, max_gradients=4 * budget
                ).estimate(problem, seed=trial)
            adaptive_seconds.append(time.perf_counter() - start)
            adaptive.append(settled.rank)
            used.append(settled.cost["gradients"])
        line = (
            f"{d:4d} {d * d:6d} {np.mean(quantiles):10.2e} {np.mean(budgets):16,.0f} "
            f"{np.mean(budgets) / 15000:6.1f} |"
        )
        if runs:
            line += (
                f" {nrmse(runs, d * d):22.2f} {np.mean(seconds):6.1f} |"
                f" {nrmse(adaptive, d * d):13.2f} "
                f"{min(used):8,d}–{max(used):<9,d} {np.mean(adaptive_seconds):6.1f}"
            )
        else:
            line += f" {'(not run)':>22} {'':6} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
