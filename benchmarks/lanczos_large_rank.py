"""Rank beyond the exact budget: LanczosRank's SLQ path, accuracy and stderr coverage.

Run: .venv/bin/python benchmarks/lanczos_large_rank.py [--n 100000] [--rank 20000]
     [--seeds 10] [--max-matvecs 3000]
One operator R diag(s) Rᵀ (fast random orthogonal R, eigenvalues log-spaced over two
decades, then zeros); one estimate per seed. Prints each estimate ± stderr, its error,
z = error / stderr, then the relative error and the share of seeds whose ±2·stderr
interval covers the truth.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import matrank
from matrank.testing import mixed_spectrum_operator, spectrum_levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rank", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-matvecs", type=int, default=3000)
    args = parser.parse_args()
    spectrum = np.concatenate(
        [spectrum_levels(args.rank, cond=1e2), np.zeros(args.n - args.rank)]
    )
    operator = mixed_spectrum_operator(spectrum, seed=1)
    print(f"n = {args.n}, rank = {args.rank}, max_matvecs = {args.max_matvecs}")
    print(
        f"{'seed':>4s} {'estimate':>10s} {'stderr':>7s} {'error %':>8s} {'z':>6s} {'matvecs':>7s} {'s':>6s}"
    )
    z_scores, errors = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        result = matrank.estimate_rank(
            operator, method="lanczos", seed=seed, max_matvecs=args.max_matvecs
        )
        seconds = time.perf_counter() - start
        error = result.rank - args.rank
        z = error / result.stderr if result.stderr else float("nan")
        z_scores.append(z)
        errors.append(error / args.rank)
        print(
            f"{seed:4d} {result.rank:10.1f} {result.stderr or 0:7.1f} {100 * error / args.rank:8.3f} "
            f"{z:6.2f} {result.cost['matvecs']:7d} {seconds:6.1f}",
            flush=True,
        )
    errors, z_scores = np.array(errors), np.array(z_scores)
    print(f"relative RMS error: {100 * np.sqrt(np.mean(errors**2)):.3f} %")
    print(f"max |relative error|: {100 * np.abs(errors).max():.3f} %")
    print(
        f"±2 stderr covers the truth in {np.mean(np.abs(z_scores) <= 2) * 100:.0f} % of seeds"
    )


if __name__ == "__main__":
    main()
