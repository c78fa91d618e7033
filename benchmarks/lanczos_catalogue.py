"""LanczosRank on every gapped catalogue case: exact counts and their cost in matvecs.

Run: .venv/bin/python benchmarks/lanczos_catalogue.py [--max-n 200000] [--seeds 3]
Columns: true rank r, the estimate (worst over seeds), matvecs (worst over seeds), the
issue's target 2r + 200 and the ratio matvecs / (2r + 200), seconds (mean).
"""

from __future__ import annotations

import argparse
import time

import matrank
from matrank.testing import catalogue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    header = (
        f"{'case':36s} {'n':>7s} {'r':>5s} {'errors':>6s} {'matvecs':>7s} "
        f"{'2r+200':>6s} {'ratio':>5s} {'path':>6s} {'s':>6s}"
    )
    print(header)
    print("-" * len(header))
    for case in catalogue(max_n=args.max_n):
        matrix = case.matrix()
        errors, matvecs, seconds, paths = 0, 0, 0.0, set()
        for seed in range(args.seeds):
            start = time.perf_counter()
            result = matrank.estimate_rank(matrix, method="lanczos", seed=seed)
            seconds += time.perf_counter() - start
            errors += result.rank != case.rank
            matvecs = max(matvecs, result.cost["matvecs"])
            paths.add(result.diagnostics["path"])
        target = 2 * case.rank + 200
        print(
            f"{case.name:36s} {case.n:7d} {case.rank:5d} {errors:6d} {matvecs:7d} "
            f"{target:6d} {matvecs / target:5.2f} {'/'.join(sorted(paths)):>6s} "
            f"{seconds / args.seeds:6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
