"""Stochastic trace estimation: probes, the Girard–Hutchinson mean, deflation.

``tr f(A)`` is estimated as the mean of ``vᵀf(A)v`` over random probes ``v`` with
``E[vvᵀ] = I``. Variances for a symmetric ``P = f(A)`` (T. Chen, RandNLA notes ch. 6):
Gaussian ``2‖P‖_F²``; Rademacher ``2(‖P‖_F² − Σ P_ii²)``; uniform on the sphere of radius
``√n``: ``(2n/(n+2))(‖P‖_F² − tr(P)²/n)``. For a rank-r projector the sphere's variance
``≈ 2r(1 − r/n)`` is the smallest, which is why it is the default for counting.

Deflation (Hutch++ in spirit; Meyer, Musco, Musco & Woodruff 2021): with ``Q`` an
orthonormal basis of a nearly invariant subspace, ``tr f(A) = tr(Qᵀf(A)Q) + tr(P⊥f(A)P⊥)``
exactly, with ``P⊥ = I − QQᵀ``; the first term is the count of its Ritz values when ``Q``
is invariant, and only the second is estimated -- with a variance that no longer carries
the part of the count that ``Q`` captured.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .krylov import random_block

__all__ = ["hutchpp", "mean_and_stderr", "probe_block"]


def probe_block(
    n: int,
    m: int,
    *,
    kind: str,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    orthogonal_to: torch.Tensor | None = None,
) -> torch.Tensor:
    """``m`` probe columns with ``E[vvᵀ] = I`` (on the complement of ``orthogonal_to``).

    ``kind`` is ``"rademacher"``, ``"gaussian"`` or ``"sphere"`` (uniform on the sphere of
    radius ``√d``, ``d`` the dimension of the space probed). With ``orthogonal_to = Q``
    the probes are projected onto the complement of ``range(Q)`` first, so they estimate
    ``tr(P⊥ f(A) P⊥)``; the sphere radius is then ``√(n − k)``.
    """
    if kind == "rademacher":
        signs = torch.randint(0, 2, (n, m), generator=generator, dtype=torch.int8)
        block = (2.0 * signs.to(torch.float64) - 1.0).to(dtype=dtype, device=device)
    elif kind in ("gaussian", "sphere"):
        block = random_block(n, m, generator, dtype, device)
    else:
        raise ValueError(f"unknown probe kind {kind!r}")
    dimension = n
    if orthogonal_to is not None and orthogonal_to.shape[1]:
        for _ in range(2):
            block = block - orthogonal_to @ (orthogonal_to.T @ block)
        dimension = n - orthogonal_to.shape[1]
    if kind == "sphere":
        block = block / torch.linalg.vector_norm(block, dim=0) * math.sqrt(dimension)
    return block


def mean_and_stderr(samples: torch.Tensor) -> tuple[float, float]:
    """Sample mean and its standard error (``std/√m``; ``inf`` for one sample)."""
    samples = samples.to(torch.float64).flatten()
    mean = float(samples.mean())
    if samples.numel() < 2:
        return mean, math.inf
    return mean, float(samples.std(unbiased=True)) / math.sqrt(samples.numel())


def hutchpp(
    matmat: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    products: int,
    *,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[float, float]:
    """``tr(A)`` of a symmetric operator from ``products`` products, with its stderr:
    Hutch++ (Meyer, Musco, Musco & Woodruff 2021).

    A third of the products sketch ``range(A)`` (``Q = orth(AS)``, Rademacher ``S``), a
    third read ``tr(QᵀAQ)`` exactly, and the rest are Rademacher probes of the complement,
    ``tr(P⊥AP⊥)`` by their mean; the stderr is that mean's. Where the spectrum decays --
    a Hessian's -- the top of it leaves the variance. Under three products: Hutchinson.
    """
    sketch = products // 3
    if sketch == 0 or n <= sketch:
        probes = probe_block(
            n, max(1, products), kind="rademacher", generator=generator, dtype=dtype,
            device=device,
        )  # fmt: skip
        return mean_and_stderr((probes * matmat(probes)).sum(dim=0))
    start = probe_block(
        n, sketch, kind="rademacher", generator=generator, dtype=dtype, device=device
    )
    Q = torch.linalg.qr(matmat(start)).Q
    top = float(torch.trace(Q.T @ matmat(Q)))
    probes = probe_block(
        n,
        products - 2 * sketch,
        kind="rademacher",
        generator=generator,
        dtype=dtype,
        device=device,
        orthogonal_to=Q,
    )
    rest, stderr = mean_and_stderr((probes * matmat(probes)).sum(dim=0))
    return top + rest, stderr
