"""Deflation by converged Ritz pairs, and a bound on what deflation left.

Shared by the Lanczos count's stochastic path and the polynomial filter: the Ritz pairs a
Krylov basis has converged are counted exactly, and probes see only the complement
``(I − YYᵀ)A(I − YYᵀ)`` of their span ``Y``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .krylov import BlockKrylov

__all__ = [
    "MISS_CHANCE",
    "complement_bound",
    "converged_basis",
    "lanczos_margin",
    "projected",
    "separated",
]

#: The chance that :func:`complement_bound` falls short of the complement's norm by more
#: than its margin (Kuczyński & Woźniakowski's bound for a random start).
MISS_CHANCE = 1e-6

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
    """A bound on ``‖(I − YYᵀ)A(I − YYᵀ)‖`` from ``steps`` Lanczos steps on it.

    The Krylov basis that found ``Y`` also holds the complement's top, but a repeated
    eigenvalue has only as many copies there as its block had columns; a fresh run on
    the projected operator, from a random start, sees every copy that deflation
    missed. A breakdown restarts from a fresh random direction.

    Ritz values approach the ends of the spectrum from inside. The bound is the larger
    of ``max |θ| + ‖r‖`` and ``max |θ|/(1 − 2ε)`` with ``ε`` from
    :func:`lanczos_margin`: each end of the spectrum lies within ``ε`` of its width
    past its Ritz value but with probability ``MISS_CHANCE/2``, and the width is at
    most twice the norm.
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
    margin = lanczos_margin(krylov.size, n)
    top = float(values.abs().max()) if values.numel() else 0.0
    scaled = top / (1 - 2 * margin) if margin < 0.5 else math.inf
    return max(float((values.abs() + residuals).max()), scaled)


def lanczos_margin(steps: int, n: int, chance: float = MISS_CHANCE) -> float:
    """``ε`` with ``λmax − θmax ≤ ε·(λmax − λmin)`` after ``steps`` Lanczos steps from a
    random start in ``R^n`` but with probability ``chance/2``: Kuczyński &
    Woźniakowski (1992) bound the chance of more by ``1.648·sqrt(n)·exp(−sqrt(ε)(2m −
    1))`` for a PSD operator, and Lanczos is shift-invariant (``A − λmin·I`` is PSD).
    64 steps at ``n = 20,000``: ``ε = 0.025``."""
    if steps < 1:
        return 1.0
    root = math.log(2 * 1.648 * math.sqrt(n) / chance) / (2 * steps - 1)
    return min(root * root, 1.0)


def separated(values: np.ndarray, coupling: float, rest: float, threshold: float) -> bool:
    """Whether ``A`` has exactly ``len(values)`` eigenvalues ``|λ| > threshold``.

    In the basis ``[Y, Y⊥]`` of orthonormal Ritz vectors ``Y`` (Ritz values ``values``,
    every ``|θ| > threshold``), ``A = [[Θ, Eᵀ], [E, C]]`` with ``‖E‖ ≤ coupling`` (the
    block residual ``‖AY − YΘ‖``) and ``‖C‖ ≤ rest`` (:func:`complement_bound`). Li &
    Li (LAA 2005): the ordered eigenvalues of ``A`` and of ``diag(Θ, C)`` differ by at
    most ``2‖E‖²/(η + sqrt(η² + 4‖E‖²))``, ``η`` the gap between the spectra of ``Θ``
    and ``C`` (at least ``min |θ| − rest``). The count is exact when that shift keeps
    every ``|θ|`` above ``threshold`` and ``rest`` below it -- a quadratic bound in the
    residual, where Weyl's (or Kahan's) is linear: a Ritz pair with residual ``10⁻³``
    of ``‖A‖`` moves its eigenvalue by ``10⁻⁶/η``, not ``10⁻³``.
    """
    low = float(np.abs(values).min()) if len(values) else math.inf
    gap = low - rest
    if not (rest < threshold < low and gap > 0):
        return False
    shift = 2 * coupling**2 / (gap + math.sqrt(gap**2 + 4 * coupling**2))
    return low - shift > threshold and rest + shift < threshold
