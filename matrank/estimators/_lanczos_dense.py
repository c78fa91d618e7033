"""The Lanczos count's dense switch: when the rank is a large fraction of ``n``.

A Krylov basis that must hold ``r ≈ n`` columns costs more orthogonalization than the
dense path's one ``eigvalsh``. The basis ``Q`` already built is kept: it is completed
to an orthonormal basis ``[Q, Q⊥]`` of ``R^n``, only ``H·Q⊥`` is computed (``n − k``
products, so ``n`` in all, as materializing ``H`` would take), and the eigenvalues of
``[Q, Q⊥]ᵀH[Q, Q⊥]`` -- ``H``'s own -- are counted by the exact methods' rule.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .._oracle import input_precision
from .._result import RankResult
from .._run import Run
from ..numerics.krylov import BlockKrylov
from ..numerics.threshold import noise_floor
from .exact import count_spectrum

__all__ = ["DENSE_MAX", "dense_count", "worth_switching"]

#: Largest ``n`` whose count may switch to the dense path (three ``n × n`` float64
#: matrices in memory: 1.5 GB at 8192).
DENSE_MAX = 8192


def worth_switching(n: int, size: int, count: int, limit: int) -> bool:
    """Whether the basis should stop growing in favour of the dense path: a third of
    ``R^n`` explored and nine tenths of it counted, so that the rank is at least a
    third of ``n`` and a certified count would need a basis of ``r`` to ``2r``."""
    return n <= limit and n // 3 <= size < n and count >= 0.9 * size


def dense_count(
    options: Any,
    run: Run,
    krylov: BlockKrylov,
    block: int,
    diagnostics: dict[str, Any],
) -> RankResult:
    """Complete the basis, compute ``H·Q⊥``, and count ``H``'s eigenvalues exactly."""
    meter = run.meter
    basis = krylov.Q
    n, k = basis.shape
    diagnostics["switched_to_dense_at"] = k
    complement = torch.linalg.qr(basis, mode="complete").Q[:, k:]

    def product(first: int) -> torch.Tensor:
        image = meter.hvp(complement[:, first : first + block])
        run.bar.update(image.shape[1])
        return image

    image = torch.cat(
        [
            run.cached(f"dense {first}", functools.partial(product, first)).to(basis.device)
            for first in range(0, n - k, block)
        ],
        dim=1,
    )
    run.close()
    coupling = (basis.T @ image).to("cpu", torch.float64)
    corner = (complement.T @ image).to("cpu", torch.float64)
    del image
    projected = torch.empty(n, n, dtype=torch.float64)
    projected[:k, :k] = krylov.T
    projected[:k, k:] = coupling
    projected[k:, :k] = coupling.T
    projected[k:, k:] = 0.5 * (corner + corner.T)
    asymmetry = float(torch.linalg.matrix_norm(corner - corner.T))
    del corner
    values = np.linalg.eigvalsh(projected.numpy())[::-1].copy()
    largest = float(np.abs(values).max()) if values.size else 0.0
    eps = float(torch.finfo(input_precision(meter)).eps)
    floor = noise_floor(largest, n, eps, max(asymmetry, krylov.symmetry_defect))
    diagnostics.update(
        symmetry_defect=krylov.symmetry_defect,
        ritz_values=values,
        basis_size=n,
        random_columns=krylov.random_columns,
        certified=True,
        path="dense (switched)",
    )
    return count_spectrum(run, values, floor, options.threshold, diagnostics)
