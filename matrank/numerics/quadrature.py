"""Gauss quadrature of ``vᵀf(A)v`` by Lanczos: the nodes and weights SLQ averages."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["lanczos_quadrature"]

Matmat = Callable[[torch.Tensor], torch.Tensor]


def lanczos_quadrature(
    matmat: Matmat,
    probes: torch.Tensor,
    steps: int,
    *,
    fixed_node: float | None = None,
    enough: Callable[[torch.Tensor, torch.Tensor], bool] | None = None,
    checks: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss quadrature nodes and weights of ``vᵀ f(A) v`` for each probe column.

    Runs ``steps`` Lanczos steps on every column of ``probes`` at once (one block product
    per step), with full reorthogonalization of each column's basis. Returns ``nodes`` and
    ``weights`` of shape ``(m, steps)``: ``vᵀf(A)v ≈ Σ_j weights[j]·f(nodes[j])``, the
    weights summing to ``‖v‖²`` (Golub & Meurant; Ubaru, Chen & Saad 2017).

    ``fixed_node=a`` gives the Gauss–Radau rule instead (``steps + 1`` nodes, one of them
    ``a``): the tridiagonal matrix is extended by ``α̃ = a + δ_k`` with
    ``(T_k − aI)δ = β_k² e_k`` (Golub & Meurant, *Matrices, Moments and Quadrature*,
    §6.2). With ``a = 0`` a point mass of exact zeros -- which a Gauss rule of few nodes
    smears onto a small positive node -- lands on the node at zero.

    ``enough(nodes, weights)`` is asked after each step count in ``checks`` with the
    rule of that many steps (the Lanczos coefficients of ``j`` steps are the first ``j``
    of a longer run); when it answers ``True`` the run stops there and returns that rule.
    """
    n, m = probes.shape
    steps = max(1, min(steps, n))
    norms = torch.linalg.vector_norm(probes, dim=0)
    basis = torch.zeros(m, steps, n, dtype=probes.dtype, device=probes.device)
    alpha = torch.zeros(m, steps, dtype=torch.float64)
    beta = torch.zeros(m, steps, dtype=torch.float64)
    q = (probes / norms).T  # (m, n)
    active = steps
    for j in range(steps):
        basis[:, j] = q
        w = matmat(q.T).T  # (m, n)
        a = (w * q).sum(1)
        alpha[:, j] = a.to(device="cpu", dtype=torch.float64)
        w = w - a[:, None] * q
        if j > 0:
            w = (
                w
                - beta[:, j - 1, None].to(dtype=w.dtype, device=w.device) * basis[:, j - 1]
            )
        for _ in range(2):  # full reorthogonalization, twice
            w = w - torch.einsum(
                "mk,mkn->mn",
                torch.einsum("mkn,mn->mk", basis[:, : j + 1], w),
                basis[:, : j + 1],
            )
        b = torch.linalg.vector_norm(w, dim=1)
        beta[:, j] = b.to(device="cpu", dtype=torch.float64)
        if j + 1 == steps:
            break
        if enough is not None and j + 1 in checks:
            rule = _rule(alpha[:, : j + 1], beta[:, : j + 1], norms, fixed_node)
            if enough(*rule):
                return rule
        # A column whose Krylov space became invariant stops contributing new nodes: a
        # zero beta decouples the rest of its tridiagonal matrix, whose nodes then carry
        # zero weight.
        safe = torch.where(b > 0, b, torch.ones_like(b))
        q = torch.where((b > 0)[:, None], w / safe[:, None], torch.zeros_like(w))
    return _rule(alpha[:, :active], beta[:, :active], norms, fixed_node)


def _rule(
    alpha: torch.Tensor, beta: torch.Tensor, norms: torch.Tensor, fixed_node: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the Gauss (or Gauss–Radau) rule of a Jacobi matrix."""
    steps = alpha.shape[1]
    off = beta[:, : steps - 1]
    if fixed_node is not None:
        alpha, off = _radau(alpha, off, beta[:, steps - 1], fixed_node)
    T = torch.diag_embed(alpha)
    T = T + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
    nodes, vectors = torch.linalg.eigh(T)
    weights = (
        vectors[:, 0, :] ** 2 * (norms.to(device="cpu", dtype=torch.float64) ** 2)[:, None]
    )
    return nodes, weights


def _radau(
    alpha: torch.Tensor, off: torch.Tensor, last: torch.Tensor, node: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Jacobi matrix extended by one row so that ``node`` is one of its eigenvalues."""
    m, k = alpha.shape
    shifted = torch.diag_embed(alpha - node)
    shifted = shifted + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
    rhs = torch.zeros(m, k, 1, dtype=torch.float64)
    rhs[:, -1, 0] = last**2
    delta, info = torch.linalg.solve_ex(shifted, rhs)
    delta = delta[:, -1, 0]
    # a column whose Krylov space is invariant (β_k = 0), or where node already is a
    # node (T_k − aI singular), keeps its Gauss rule: the new node decouples
    usable = (last > 0) & (info == 0) & torch.isfinite(delta)
    extended = torch.where(usable, node + delta, torch.full_like(delta, node))
    coupling = torch.where(usable, last, torch.zeros_like(last))
    return torch.cat([alpha, extended[:, None]], 1), torch.cat([off, coupling[:, None]], 1)
