"""Deflation by converged Ritz pairs, and a bound on what deflation left.

Shared by the Lanczos count's stochastic path and the polynomial filter: the Ritz pairs a
Krylov basis has converged are counted exactly, and probes see only the complement
``(I − YYᵀ)A(I − YYᵀ)`` of their span ``Y``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .krylov import BlockKrylov

__all__ = ["complement_bound", "converged_basis", "projected"]

Matmat = Callable[[torch.Tensor], torch.Tensor]


def converged_basis(
    krylov: BlockKrylov, vectors: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """``(n, c)`` orthonormal span of the Ritz vectors ``Q·vectors[:, keep]``.

    A QR pass restores orthonormality lost to rounding in the basis.
    """
    captured = krylov.Q @ vectors[:, keep].to(dtype=krylov.dtype, device=krylov.device)
    return torch.linalg.qr(captured).Q if captured.shape[1] else captured


def projected(matmat: Matmat, captured: torch.Tensor) -> Matmat:
    """``V -> (I − YYᵀ)A(I − YYᵀ)V`` for an orthonormal ``Y`` (``A`` itself if empty)."""
    if captured.shape[1] == 0:
        return matmat

    def product(V: torch.Tensor) -> torch.Tensor:
        V = V - captured @ (captured.T @ V)
        W = matmat(V)
        return W - captured @ (captured.T @ W)

    return product


def complement_bound(
    matmat: Matmat,
    captured: torch.Tensor,
    *,
    steps: int,
    generator: torch.Generator,
    callback: Callable[[int], None] | None = None,
) -> float:
    """Largest ``|θ| + ‖r‖`` of ``steps`` Lanczos steps on the deflated operator.

    The Krylov basis that found ``Y`` also holds the complement's top, but a repeated
    eigenvalue has only as many copies there as its block had columns; a fresh run on
    the projected operator sees every copy that deflation missed. A breakdown restarts
    from a fresh random direction.
    """
    n = captured.shape[0]
    krylov = BlockKrylov(
        projected(matmat, captured), n, captured.dtype, captured.device, generator
    )
    while krylov.size < steps:
        spent = krylov.extend(1)
        if callback is not None:
            callback(spent)
    values, vectors = krylov.ritz()
    residuals = krylov.residual_norms(vectors)
    return float((values.abs() + residuals).max())
