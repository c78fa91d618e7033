"""What ``auto`` picks for a Kronecker-structured LinearOperator, against both paths.

A rank-77 Kronecker product ``L ⊗ R`` (n = 3600) as a matvec-only scipy LinearOperator
(one Python call per column, as users' operators often are): the dense path spends n
products, the Krylov count a few hundred. Prints each path's answer, products and
seconds, and auto's choice with its reason.

    python benchmarks/auto_operator.py [--size 60]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse.linalg

import matrank
from matrank.testing import rotated_spectrum


def kronecker(size: int) -> scipy.sparse.linalg.LinearOperator:
    left = rotated_spectrum(size, 7, seed=0)
    right = rotated_spectrum(size, 11, seed=1)

    def matvec(vector: np.ndarray) -> np.ndarray:
        return (right @ vector.reshape(size, size) @ left.T).ravel()

    n = size * size
    return scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=matvec, rmatvec=matvec, dtype=np.float64
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=60)
    args = parser.parse_args()
    operator = kronecker(args.size)
    print(f"Kronecker operator n = {operator.shape[0]}, rank 77")
    print(f"{'path':8s} {'rank':>6s} {'matvecs':>8s} {'seconds':>8s}")
    for method in ("auto", "lanczos", "exact"):
        start = time.perf_counter()
        result = matrank.estimate_rank(operator, method=method, seed=0)
        seconds = time.perf_counter() - start
        label = method if method != "auto" else f"auto→{result.method}"
        print(f"{label:8s} {result.rank:6g} {result.cost['matvecs']:8g} {seconds:8.2f}")
        if method == "auto":
            print(f"  reason: {result.diagnostics['auto']}")


if __name__ == "__main__":
    main()
