"""What ``auto`` picks for a matvec-only LinearOperator, against each path.

A rank-77 Kronecker product ``L ⊗ R`` (n = 3600) as a matvec-only scipy LinearOperator
(one Python call per column, as users' operators often are): the dense path spends n
products, the Krylov count a few hundred. Prints each path's answer, products and
seconds, and auto's choice with its reason. ``--gapless TAU``: instead, a rotated
spectrum of ``n/3`` eigenvalues spaced evenly in log from 1 to 1e-6 (``n = --size²``),
counted at ``TAU``, where the eigenvalues crowd τ (1.4 % apart); ``--on-eigenvalue``
moves τ to ``1 + --offset`` (default 1e-9) times the nearest eigenvalue, whose Ritz
interval then straddles τ until the basis is large (``--offset 0``: at any basis short
of ``R^n``, the count then decided by rounding); only a switch to the dense path (where
rounding is 1e-16) ends it early.

    python benchmarks/auto_operator.py [--size 60]
        [--gapless 0.0123 [--on-eigenvalue [--offset 1e-9]]]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse.linalg

import matrank
from matrank.testing import haar_orthogonal, rotated_spectrum


def kronecker(size: int) -> scipy.sparse.linalg.LinearOperator:
    left = rotated_spectrum(size, 7, seed=0)
    right = rotated_spectrum(size, 11, seed=1)

    def matvec(vector: np.ndarray) -> np.ndarray:
        return (right @ vector.reshape(size, size) @ left.T).ravel()

    n = size * size
    return scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=matvec, rmatvec=matvec, dtype=np.float64
    )


def gapless(n: int) -> tuple[scipy.sparse.linalg.LinearOperator, np.ndarray]:
    values = np.zeros(n)
    values[: n // 3] = np.geomspace(1.0, 1e-6, n // 3)
    basis = haar_orthogonal(n, np.random.default_rng(0))
    matrix = (basis * values) @ basis.T
    operator = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=lambda v: matrix @ v, rmatvec=lambda v: matrix @ v, dtype=np.float64
    )
    return operator, values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=60)
    parser.add_argument("--gapless", type=float, default=None, metavar="TAU")
    parser.add_argument("--on-eigenvalue", action="store_true")
    parser.add_argument("--offset", type=float, default=1e-9)
    args = parser.parse_args()
    options = {}
    if args.gapless is None:
        operator = kronecker(args.size)
        print(f"Kronecker operator n = {operator.shape[0]}, rank 77")
    else:
        operator, values = gapless(args.size**2)
        tau = args.gapless
        if args.on_eigenvalue:
            tau = float(values[np.argmin(np.abs(values - tau))]) * (1 + args.offset)
        options["threshold"] = tau
        n = operator.shape[0]
        print(f"gapless operator n = {n}, {n // 3} eigenvalues 1…1e-6, τ = {tau!r}")
    print(f"{'path':8s} {'rank':>6s} {'matvecs':>8s} {'seconds':>8s}")
    for method in ("auto", "lanczos", "exact"):
        start = time.perf_counter()
        result = matrank.estimate_rank(operator, method=method, seed=0, **options)
        seconds = time.perf_counter() - start
        label = method if method != "auto" else f"auto→{result.method}"
        print(f"{label:8s} {result.rank:6g} {result.cost['matvecs']:8g} {seconds:8.2f}")
        if method == "auto":
            print(f"  reason: {result.diagnostics['auto']}")


if __name__ == "__main__":
    main()
