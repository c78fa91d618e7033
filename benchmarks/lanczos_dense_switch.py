"""The Lanczos count's dense switch on an operator whose rank is most of ``n``.

A rank-``r`` rotated spectrum (three decades) behind ``aslinearoperator`` (products
only): the full Krylov count (``dense_max=0``), the count that switches to the dense
path, and ``method="exact"`` (materialize with ``n`` products, then ``eigvalsh``), each
with its answer, products and seconds, in one run.

    python benchmarks/lanczos_dense_switch.py [--n 3000] [--rank 2400]
"""

from __future__ import annotations

import argparse
import time

import scipy.sparse.linalg

import matrank
from matrank.testing import rotated_spectrum


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rank", type=int, default=2400)
    args = parser.parse_args()
    matrix = rotated_spectrum(args.n, args.rank, cond=1e3, seed=0)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    print(f"operator n = {args.n}, rank {args.rank}")
    print(f"{'path':18s} {'rank':>6s} {'matvecs':>8s} {'seconds':>8s}")
    runs = [
        ("krylov", "lanczos", {"dense_max": 0}),
        ("switched", "lanczos", {}),
        ("exact", "exact", {}),
    ]
    for label, method, options in runs:
        start = time.perf_counter()
        result = matrank.estimate_rank(operator, method=method, seed=0, **options)
        seconds = time.perf_counter() - start
        path = result.diagnostics.get("path", method).replace(" (switched)", "")
        print(
            f"{label + ' (' + path + ')':18s} {result.rank:6g} "
            f"{result.cost['matvecs']:8g} {seconds:8.2f}"
        )


if __name__ == "__main__":
    main()
