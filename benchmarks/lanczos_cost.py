"""The certified Lanczos count against the obvious alternative, side by side in one run.

Three inputs, each timed against what a user would otherwise run:

- ``sparse``: ``B Bᵀ`` behind ``aslinearoperator``-style products, ``B`` a sparse
  random ``n × r`` matrix (rank ``r`` exactly), against
  ``scipy.linalg.interpolative.estimate_rank`` (a randomized sketch, ``eps=1e-10``)
  and ``scipy.sparse.linalg.eigsh`` for the ``r + 10`` largest eigenvalues;
- ``dense``: a ``6000 × 6000`` rank-300 matrix (a rotated spectrum over three decades)
  against ``numpy.linalg.matrix_rank``;
- ``network``: the Hessian of a bias-free four-layer linear network (MSE, a random
  point, inputs of rank 30) through ``TorchLoss``, whose rank Singh, Bachmann &
  Hofmann's formula gives (``matrank.theory.linear_network_ranks``), against
  materializing ``H`` with ``n`` Hessian-vector products and one ``eigvalsh``; through
  ``method="lanczos"`` and ``method="auto"``.

For each: the answer, the products, the seconds in orthogonalization (the Krylov
basis; "-" where none is built), the total seconds and the ratio to the reference.

    OMP_NUM_THREADS=2 python benchmarks/lanczos_cost.py [--cases sparse dense network]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg.interpolative
import scipy.sparse
import scipy.sparse.linalg
import torch

import matrank
from matrank.testing import rotated_spectrum

ROW = "{:9s} {:34s} {:>8s} {:>8s} {:>8s} {:>8s} {:>7s}"


def _timed(compute):
    start = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - start


def _ours(label, case, obj, method, reference):
    result, seconds = _timed(lambda: matrank.estimate_rank(obj, method=method, seed=0))
    path = result.diagnostics.get("path", method)
    orth = result.diagnostics.get("orthogonalization_seconds")
    print(
        ROW.format(
            case,
            f"{label} ({path})",
            f"{result.rank:g}",
            f"{result.cost['matvecs']:g}",
            "-" if orth is None else f"{orth:.2f}",
            f"{seconds:.2f}",
            f"{seconds / reference:.2f}",
        )
    )


def _theirs(case, label, answer, products, seconds, reference):
    print(
        ROW.format(
            case,
            label,
            str(answer),
            str(products),
            "-",
            f"{seconds:.2f}",
            f"{seconds / reference:.2f}",
        )
    )


def sparse_case(n: int, rank: int) -> None:
    factor = scipy.sparse.random(n, rank, density=0.01, random_state=0, format="csr")
    transposed = factor.T.tocsr()
    calls = {"count": 0}

    def product(block):
        calls["count"] += 1 if block.ndim == 1 else block.shape[1]
        return factor @ (transposed @ block)

    operator = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=product, rmatvec=product, matmat=product, dtype=np.float64
    )
    answer, reference = _timed(
        lambda: scipy.linalg.interpolative.estimate_rank(
            operator, 1e-10, rng=np.random.default_rng(0)
        )
    )
    name = f"sparse n={n} r={rank}"
    _theirs(
        name, "interpolative.estimate_rank", answer, calls["count"], reference, reference
    )
    calls["count"] = 0
    values, seconds = _timed(
        lambda: scipy.sparse.linalg.eigsh(operator, k=rank + 10, which="LM")[0]
    )
    count = int((values > values.max() * n * np.finfo(float).eps).sum())
    _theirs(name, "eigsh (r + 10 largest)", count, calls["count"], seconds, reference)
    _ours("matrank lanczos", name, operator, "lanczos", reference)


def dense_case(n: int, rank: int) -> None:
    matrix = rotated_spectrum(n, rank, cond=1e3, seed=0)
    answer, reference = _timed(lambda: np.linalg.matrix_rank(matrix))
    name = f"dense n={n} r={rank}"
    _theirs(name, "numpy.linalg.matrix_rank", answer, "-", reference, reference)
    _ours("matrank lanczos", name, matrix, "lanczos", reference)
    _ours("matrank auto", name, matrix, "auto", reference)


def network_case(d_in: int, width: int, d_out: int, data_rank: int) -> None:
    from matrank.adapters import TorchLoss
    from matrank.testing import linear_network_loss
    from matrank.theory import linear_network_ranks

    hidden = [width] * 3
    model, inputs, targets = linear_network_loss(
        d_in, hidden, d_out, n_samples=300, data_rank=data_rank, seed=0
    )
    oracle = TorchLoss(
        model, torch.nn.functional.mse_loss, (inputs, targets), gradient_tol=None
    )
    n = oracle.dim
    truth = linear_network_ranks(d_in, hidden, d_out, data_rank=data_rank).hessian
    name = f"network n={n} r={truth}"

    def materialize_and_count():
        columns = []
        for first in range(0, n, 256):
            last = min(n, first + 256)
            eye = torch.zeros(n, last - first, dtype=torch.float64)
            eye[torch.arange(first, last), torch.arange(last - first)] = 1
            columns.append(oracle.hvp(eye))
        dense = torch.cat(columns, dim=1)
        magnitudes = np.abs(np.linalg.eigvalsh((0.5 * (dense + dense.T)).numpy()))
        # numpy's matrix_rank rule (the spectrum has a twelve-decade gap)
        return int((magnitudes > magnitudes.max() * n * np.finfo(float).eps).sum())

    answer, reference = _timed(materialize_and_count)
    _theirs(name, "materialize + eigvalsh", answer, n, reference, reference)
    _ours("matrank lanczos", name, oracle, "lanczos", reference)
    _ours("matrank auto", name, oracle, "auto", reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["sparse", "dense", "network"],
        choices=["sparse", "dense", "network"],
    )
    parser.add_argument("--sparse-n", type=int, default=200_000)
    parser.add_argument("--sparse-rank", type=int, default=120)
    parser.add_argument("--network-width", type=int, default=40)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    header = ROW.format(
        "case", "method", "answer", "products", "orth s", "seconds", "ratio"
    )
    print(header)
    print("-" * len(header))
    if "sparse" in args.cases:
        sparse_case(args.sparse_n, args.sparse_rank)
    if "dense" in args.cases:
        dense_case(6000, 300)
    if "network" in args.cases:
        network_case(50, args.network_width, 40, 30)


if __name__ == "__main__":
    main()
