"""PolynomialRank (default) on every gapped catalogue case, with and without deflation.

Run: .venv/bin/python benchmarks/polynomial_catalogue.py [--max-n 200000] [--seeds 2]
Columns: true rank r; for the default (deflation on) and for ``deflate=0`` (probes only):
the worst |z| = |estimate − r| / stderr over the seeds (0 when the count is exact; a
count off by more than rounding with stderr 0 shows as inf), the path (``exact``, ``τ``
for "complement below τ", ``probes``), the default's matvecs (worst).
``(n−r)·p0`` is the null-space count the plain damped step would have added -- the
uncorrected filter's value at zero times the nullity -- which the default removes exactly.
"""

from __future__ import annotations

import argparse
import math
import time

import matrank
from matrank.testing import catalogue


def z_score(result, truth):
    error = abs(result.rank - truth)
    if error <= 1e-6 * max(truth, 1):
        return 0.0
    return error / result.stderr if result.stderr else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    header = (
        f"{'case':36s} {'n':>7s} {'r':>5s} | {'|z|':>5s} {'path':>8s} {'matvecs':>7s} | "
        f"{'|z| probes':>10s} {'(n−r)·p0':>9s} {'s':>6s}"
    )
    print(header)
    print("-" * len(header))
    for case in catalogue(max_n=args.max_n):
        matrix = case.matrix()
        worst, worst_probes, matvecs, paths, leak, seconds = 0.0, 0.0, 0, set(), 0.0, 0.0
        for seed in range(args.seeds):
            start = time.perf_counter()
            result = matrank.PolynomialRank().estimate(matrix, seed=seed)
            probes = matrank.PolynomialRank(deflate=0).estimate(matrix, seed=seed)
            seconds += time.perf_counter() - start
            worst = max(worst, z_score(result, case.rank))
            worst_probes = max(worst_probes, z_score(probes, case.rank))
            matvecs = max(matvecs, result.cost["matvecs"])
            path = result.diagnostics.get("path", "probes")
            paths.add({"deflated (exact)": "exact"}.get(path, path.split()[-1]))
            p0 = abs(probes.diagnostics.get("uncorrected_filter_at_zero", 0.0))
            leak = max(leak, (case.n - case.rank) * p0)
        print(
            f"{case.name:36s} {case.n:7d} {case.rank:5d} | {worst:5.2f} "
            f"{'/'.join(sorted(paths)):>8s} {matvecs:7d} | {worst_probes:10.2f} "
            f"{leak:9.2g} {seconds / args.seeds:6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
