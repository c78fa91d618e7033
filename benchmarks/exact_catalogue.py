"""ExactRank on the shared catalogue, beside numpy.linalg.matrix_rank(hermitian=True).

Run: .venv/bin/python benchmarks/exact_catalogue.py [--max-n 3000]
Prints one row per catalogue case: truth, matrank's exact count and threshold, the
plateau width it found (decades), numpy's count with its default tolerance, seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

import matrank
from matrank.testing import catalogue


def dense(matrix):
    if scipy.sparse.issparse(matrix):
        return matrix.toarray()
    if isinstance(matrix, scipy.sparse.linalg.LinearOperator):
        return matrix @ np.eye(matrix.shape[0])
    return np.asarray(matrix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=3000)
    args = parser.parse_args()
    header = f"{'case':40s} {'n':>5s} {'truth':>5s} {'exact':>5s} {'τ':>9s} {'plateau':>7s} {'numpy':>5s} {'s exact':>7s} {'s numpy':>7s}"
    print(header)
    print("-" * len(header))
    for case in catalogue(max_n=args.max_n):
        matrix = case.matrix()
        start = time.perf_counter()
        result = matrank.estimate_rank(matrix, method="exact")
        seconds = time.perf_counter() - start
        array = dense(matrix)
        start = time.perf_counter()
        numpy_rank = np.linalg.matrix_rank(array, hermitian=True)
        numpy_seconds = time.perf_counter() - start
        plateau = result.diagnostics["plateau"]["decades"]
        print(
            f"{case.name:40s} {case.n:5d} {case.rank:5d} {result.rank:5.0f} "
            f"{result.threshold:9.2e} {plateau:7.2f} {numpy_rank:5d} {seconds:7.2f} {numpy_seconds:7.2f}"
        )


if __name__ == "__main__":
    main()
