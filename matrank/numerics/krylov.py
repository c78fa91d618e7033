"""Block Krylov subspaces with full reorthogonalization, and Lanczos quadrature.

Pure functions and a small state object on tensors; the operator is any callable
``matmat(V) -> A @ V`` on ``(n, b)`` blocks. Nothing here knows about oracles.

The rank-deficient regime is where textbook Lanczos fails, so the block process here
handles each failure explicitly:

- **breakdown** (the Krylov space becomes invariant, as it must when A has exact
  zeros): directions of the new block whose residual is below the deflation tolerance are
  dropped and replaced by random vectors orthogonal to the basis, so the process goes on
  exploring the complement and the block never shrinks;
- **ghost eigenvalues** (copies of converged Ritz values that appear when the basis
  loses orthogonality): classical Gram–Schmidt against the whole basis every step, with
  a second pass whenever the first cancelled enough to need it ("twice is enough",
  Giraud et al. 2005);
- **multiplicity** (a single-vector Krylov space sees a repeated eigenvalue once; a block
  space sees at most ``block_size`` copies): random restarts after breakdown find the
  remaining copies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "BlockKrylov",
    "CountingState",
    "certified_count",
    "lanczos_quadrature",
    "random_block",
    "spectral_bounds",
    "verification_steps",
]

Matmat = Callable[[torch.Tensor], torch.Tensor]


def random_block(
    n: int, b: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Gaussian ``(n, b)`` block drawn on the CPU from ``generator`` then moved.

    Drawing on the CPU keeps results bit-identical for a seed whatever the device.
    """
    block = torch.randn(n, b, generator=generator, dtype=torch.float64)
    return block.to(dtype=dtype, device=device)


def _project_out(W: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram–Schmidt, twice when needed: ``W − Q(QᵀW)``, and the coefficients.

    The second pass runs when some column lost more than ``1 − 1/√2`` of its norm in the
    first (Kahan and Parlett's criterion, "twice is enough"): only then can the first
    pass's rounding, relative to what is left, spoil orthogonality.
    """
    coefficients = Q.T @ W
    projected = W - Q @ coefficients
    before = torch.linalg.vector_norm(W, dim=0)
    after = torch.linalg.vector_norm(projected, dim=0)
    if not bool((after * math.sqrt(2) < before).any()):
        return projected, coefficients
    correction = Q.T @ projected
    return projected - Q @ correction, coefficients + correction


@dataclasses.dataclass
class BlockKrylov:
    """A growing orthonormal Krylov basis ``Q`` with ``T = QᵀAQ`` and the next block.

    After each :meth:`extend`, ``AQ = QT + U_next·B + E`` with ``‖E‖ ≤ dropped``: the
    residual of a Ritz vector ``Qs`` is ``‖B·s_last‖`` (``s_last`` = the rows of ``s`` for
    the newest block) up to ``dropped``, with no cancellation -- which is what makes small
    Ritz values certifiable.

    Attributes
    ----------
    Q : torch.Tensor
        ``(n, k)`` orthonormal basis.
    T : torch.Tensor
        ``(k, k)`` float64 projection ``QᵀAQ``.
    B : torch.Tensor
        ``(b_next, b_last)`` coefficients of the newest block's residual in the next
        block's kept directions.
    dropped : float
        Bound on the norm of everything deflated so far.
    """

    matmat: Matmat
    n: int
    dtype: torch.dtype
    device: torch.device
    generator: torch.Generator
    relative_tol: float | None = None
    _buffer: torch.Tensor = dataclasses.field(init=False)
    _size: int = 0
    T: torch.Tensor = dataclasses.field(init=False)
    B: torch.Tensor = dataclasses.field(init=False)
    dropped: float = 0.0
    scale: float = 0.0
    symmetry_defect: float = 0.0
    matvecs: int = 0
    last_size: int = 0
    random_columns: int = 0
    _next: torch.Tensor = dataclasses.field(init=False)
    _next_kept: int = 0

    def __post_init__(self) -> None:
        # Stored transposed, (capacity, n): the basis Q = _buffer[:k].T is then
        # column-major, the layout BLAS multiplies fastest, and appending is a row write.
        self._buffer = torch.zeros(0, self.n, dtype=self.dtype, device=self.device)
        self.T = torch.zeros(0, 0, dtype=torch.float64)
        self.B = torch.zeros(0, 0, dtype=torch.float64)
        self._next = torch.zeros(self.n, 0, dtype=self.dtype, device=self.device)

    @property
    def Q(self) -> torch.Tensor:
        """``(n, k)`` orthonormal basis (a view of a buffer that grows by doubling)."""
        return self._buffer[: self._size].T

    @property
    def size(self) -> int:
        """Dimension ``k`` of the basis."""
        return self._size

    def _append(self, block: torch.Tensor) -> None:
        needed = self._size + block.shape[1]
        if needed > self._buffer.shape[0]:
            capacity = min(self.n, max(needed, 2 * self._buffer.shape[0]))
            grown = torch.empty(capacity, self.n, dtype=self.dtype, device=self.device)
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : needed] = block.T
        self._size = needed

    @property
    def next_kept(self) -> int:
        """Directions the next block carries over from the Krylov sequence (0 at breakdown)."""
        return int(self._next.shape[1])

    @property
    def next_norm(self) -> float:
        """Norm of the residual the next block carries (``‖B‖₂``; 0 at breakdown)."""
        return float(torch.linalg.matrix_norm(self.B, ord=2)) if self.B.numel() else 0.0

    def restart(self) -> None:
        """Drop the Krylov continuation; the next block is all random.

        The dropped residual ``‖B‖₂`` joins :attr:`dropped`, so every later residual
        bound stays valid. Worth it only when ``‖B‖`` is negligible next to the gap that
        is being certified (a stagnated sequence exploring a noise band).
        """
        self.dropped = math.hypot(self.dropped, self.next_norm)
        self._next = self._next[:, :0]
        self.B = self.B[:0]

    def extend(self, block_size: int, extra_random: int = 0) -> int:
        """Apply A to the next block and grow the basis; returns the matvecs spent.

        The next block holds the kept directions of the previous residual, filled up to
        ``block_size`` with random directions orthogonal to the basis, plus
        ``extra_random`` more random directions (fresh probes that check for eigenvalues
        the Krylov sequence has not reached).
        """
        kept = self._next
        fill = max(0, block_size - kept.shape[1]) + extra_random
        fill = min(fill, self.n - self.size - kept.shape[1])
        k = self.size
        if k == 0:
            return self._start(fill)
        self._append(kept)
        if fill > 0:
            fresh = random_block(self.n, fill, self.generator, self.dtype, self.device)
            fresh, _ = _project_out(fresh, self.Q)
            fresh = torch.linalg.qr(fresh).Q
            self.random_columns += fill
            self._append(fresh)
            kept = self.Q[:, k:]
        if kept.shape[1] == 0:
            return 0
        image = self.matmat(kept)
        self.matvecs += kept.shape[1]
        return self._absorb(kept, image)

    def _start(self, b: int) -> int:
        """First block: Gaussian ``V``, and the symmetry test read off ``V`` and ``AV``.

        ``max |v_iᵀAv_j − v_jᵀAv_i|`` over the pairs of the Gaussian start block estimates
        ``‖A − Aᵀ‖_F`` (rounding included) at no extra matvec; then ``V = QR`` and
        ``AQ = (AV)R⁻¹``.
        """
        V = random_block(self.n, b, self.generator, self.dtype, self.device)
        image = self.matmat(V)
        self.matvecs += b
        self.random_columns += b
        cross = V.T @ image
        self.symmetry_defect = float((cross - cross.T).abs().max())
        Q, R = torch.linalg.qr(V)
        image = torch.linalg.solve_triangular(R, image, upper=True, left=False)
        self._append(Q)
        return self._absorb(Q, image)

    def _absorb(self, kept: torch.Tensor, image: torch.Tensor) -> int:
        """Grow ``T`` by the block ``kept`` (already in the basis) and its image."""
        k = self.size - kept.shape[1]
        self.scale = max(self.scale, float(torch.linalg.vector_norm(image, dim=0).max()))
        b = kept.shape[1]
        # The first Gram–Schmidt pass computes QᵀAU, which is also T's new columns.
        residual, coefficients = _project_out(image, self.Q)
        T = torch.zeros(k + b, k + b, dtype=torch.float64)
        T[:k, :k] = self.T
        # T and B live on the CPU in float64 (small eigenproblems), whatever the device
        coupling = coefficients[:k].to(device="cpu", dtype=torch.float64)
        T[:k, k:] = coupling
        T[k:, :k] = coupling.T
        diagonal = coefficients[k:].to(device="cpu", dtype=torch.float64)
        T[k:, k:] = 0.5 * (diagonal + diagonal.T)
        self.T = T
        self.last_size = b
        self._split_residual(residual)
        return b

    @property
    def deflation_tol(self) -> float:
        """Residual directions below this norm are dropped (numerically in the basis).

        ``100·sqrt(n)·eps`` relative to the largest product norm seen (≈ ‖A‖): the level
        of rounding in a product and its reorthogonalization.
        """
        relative = self.relative_tol
        if relative is None:
            relative = 100 * math.sqrt(self.n) * float(torch.finfo(self.dtype).eps)
        return relative * self.scale

    def _split_residual(self, residual: torch.Tensor) -> None:
        """``residual = U_next·B + dropped part`` by an SVD with deflation."""
        # QR first: the SVD of the small triangular factor is cheaper than a tall SVD.
        factor_q, factor_r = torch.linalg.qr(residual)
        small_u, S, Vh = torch.linalg.svd(factor_r)
        U = factor_q @ small_u
        keep = S > self.deflation_tol
        if (~keep).any():
            # Bound the dropped part by its largest singular value, accumulated in
            # quadrature over steps (they are orthogonal contributions per step).
            self.dropped = math.hypot(self.dropped, float(S[~keep].max()))
        # U = W·V/σ turns W's rounding-level overlap with Q, O(eps·‖A‖), into
        # O(eps·‖A‖/σ) — up to 1/(100√n) at the deflation tolerance. When the smallest
        # kept σ is that small, one more projection and a QR restore orthogonality at
        # the cost of an O(eps·‖A‖) change in the recurrence; above 1e-4·‖A‖ the
        # overlap stays under 1e4·eps and the extra pass (a fifth of a step's
        # orthogonalization) is skipped.
        kept = U[:, keep]
        if keep.any() and float(S[keep].min()) < 1e-4 * self.scale:
            kept = kept - self.Q @ (self.Q.T @ kept)
            kept = torch.linalg.qr(kept).Q
        self._next = kept
        self.B = (S[keep, None] * Vh[keep]).to(device="cpu", dtype=torch.float64)

    def state_dict(self) -> dict[str, object]:
        """Everything :meth:`load_state_dict` needs to go on as if never stopped."""
        return {
            "basis": self._buffer[: self._size],
            "capacity": int(self._buffer.shape[0]),
            "T": self.T,
            "B": self.B,
            "next": self._next,
            "floats": [self.dropped, self.scale, self.symmetry_defect],
            "ints": [self.matvecs, self.last_size, self.random_columns],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (tensors go to this basis's device)."""
        basis = state["basis"]
        self._buffer = torch.empty(
            state["capacity"], self.n, dtype=self.dtype, device=self.device
        )
        self._buffer[: basis.shape[0]] = basis.to(self.device)
        self._size = int(basis.shape[0])
        self.T, self.B = state["T"], state["B"]
        self._next = state["next"].to(self.device)
        self.dropped, self.scale, self.symmetry_defect = state["floats"]
        self.matvecs, self.last_size, self.random_columns = state["ints"]

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz values (descending by magnitude) and vectors of ``T``, float64."""
        # numpy's LAPACK: 1.3× faster than torch's eigh on this CPU at k = 3000 (T is a
        # CPU float64 tensor, shared without a copy)
        values, vectors = map(torch.from_numpy, np.linalg.eigh(self.T.numpy()))
        order = torch.argsort(values.abs(), descending=True)
        return values[order], vectors[:, order]

    def ritz_values(self) -> torch.Tensor:
        """Ritz values alone (descending by magnitude), float64: no eigenvectors."""
        values = torch.from_numpy(np.linalg.eigvalsh(self.T.numpy()))
        return values[torch.argsort(values.abs(), descending=True)]

    def residual_norms(self, S: torch.Tensor) -> torch.Tensor:
        """Per-column residual norms ``‖A Qs − θ Qs‖`` of Ritz vectors ``S``."""
        last = S[self.size - self.last_size :]
        if self.B.numel() == 0:
            return torch.full((S.shape[1],), self.dropped, dtype=torch.float64)
        return torch.linalg.vector_norm(self.B @ last, dim=0) + self.dropped

    def block_residual_norm(self, S: torch.Tensor) -> float:
        """``‖A QS − QSΘ‖₂`` for a set of Ritz vectors (Kahan's bound applies to it)."""
        if S.shape[1] == 0:
            return 0.0
        last = S[self.size - self.last_size :]
        if self.B.numel() == 0:
            return self.dropped
        return float(torch.linalg.matrix_norm(self.B @ last, ord=2)) + self.dropped


def spectral_bounds(
    matmat: Matmat,
    n: int,
    *,
    steps: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[float, float, int]:
    """Bounds ``(λmin, λmax)`` from ``steps`` Lanczos steps on one random vector.

    The extreme Ritz values widened by their residual norms: each such interval contains
    an eigenvalue, and extreme Ritz values converge first, so after a few tens of steps
    the widened extremes bracket the spectrum in practice (the probabilistic statement
    is Kuczyński & Woźniakowski 1992). Returns the bounds and the matvecs spent.
    """
    krylov = BlockKrylov(matmat, n, dtype, device, generator)
    steps = max(1, min(steps, n))
    for _ in range(steps):
        if not krylov.extend(1):
            break
    values, vectors = torch.linalg.eigh(krylov.T)
    # widened by the residual, and by the rounding of T's own eigenvalues
    rounding = 10 * krylov.size * float(torch.finfo(dtype).eps) * float(values.abs().max())
    residuals = krylov.residual_norms(vectors) + rounding
    low = float((values - residuals).min())
    high = float((values + residuals).max())
    return low, high, krylov.matvecs


def lanczos_quadrature(
    matmat: Matmat, probes: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss quadrature nodes and weights of ``vᵀ f(A) v`` for each probe column.

    Runs ``steps`` Lanczos steps on every column of ``probes`` at once (one block product
    per step), with full reorthogonalization of each column's basis. Returns ``nodes`` and
    ``weights`` of shape ``(m, steps)``: ``vᵀf(A)v ≈ Σ_j weights[j]·f(nodes[j])``, the
    weights summing to ``‖v‖²`` (Golub & Meurant; Ubaru, Chen & Saad 2017).
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
        # A column whose Krylov space became invariant stops contributing new nodes: a
        # zero beta decouples the rest of its tridiagonal matrix, whose nodes then carry
        # zero weight.
        safe = torch.where(b > 0, b, torch.ones_like(b))
        q = torch.where((b > 0)[:, None], w / safe[:, None], torch.zeros_like(w))
    T = torch.diag_embed(alpha[:, :active])
    off = beta[:, : active - 1]
    T = T + torch.diag_embed(off, offset=1) + torch.diag_embed(off, offset=-1)
    nodes, vectors = torch.linalg.eigh(T)
    weights = (
        vectors[:, 0, :] ** 2 * (norms.to(device="cpu", dtype=torch.float64) ** 2)[:, None]
    )
    return nodes, weights


def verification_steps(values, threshold: float, floor: float, n: int, block: int) -> int:
    """Steps a fresh random block must leave a certain count unchanged: the fewest ``s``
    with ``g^s ≥ 10·sqrt(n/block)``, ``g = threshold / (largest uncounted |θ|)``, 1 to 5."""
    magnitudes = values.abs()
    below = magnitudes[magnitudes <= threshold]
    largest_below = max(float(below.max()) if below.numel() else 0.0, floor)
    if threshold <= 0 or largest_below <= 0:
        return 1
    gain = threshold / largest_below
    if gain <= 1.0:
        return 5
    target = math.log(10 * math.sqrt(max(n / block, 1.0)))
    return int(min(5, max(1, math.ceil(target / math.log(gain)))))


def certified_count(
    krylov: BlockKrylov, values, vectors, threshold: float
) -> tuple[int, bool]:
    """The count at ``threshold`` and whether the residual bounds make it certain.

    ``vectors=None`` is allowed at a breakdown, where every residual bound is the
    deflated remainder ``krylov.dropped`` whatever the Ritz vector.
    """
    magnitudes = values.abs()
    above = magnitudes > threshold
    count = int(above.sum())
    if count:
        block = (
            krylov.dropped
            if vectors is None
            else krylov.block_residual_norm(vectors[:, above])
        )
        if float(magnitudes[above].min()) - block <= threshold:
            return count, False
    below = ~above
    if below.any():
        residuals = (
            krylov.dropped if vectors is None else krylov.residual_norms(vectors[:, below])
        )
        if bool((magnitudes[below] + residuals > threshold).any()):
            return count, False
    return count, True


@dataclasses.dataclass
class CountingState:
    """Bookkeeping of the stopping rule: certain, then stable after a random block."""

    steps: int = 0
    assessed_size: int = 0
    last_count: int = 0
    inject: bool = False
    verifying: bool = False
    verified_count: int = -1
    steps_since: int = 0

    def begin_verification(self) -> None:
        self.inject = False
        self.verifying = True
        self.steps_since = 0

    def update(self, count: int, certain: bool, verify_steps: int) -> bool:
        """Record one assessed block step; True when the count is exact."""
        self.last_count = count
        if not certain:
            self.verifying, self.inject = False, False
            return False
        if self.verifying and count == self.verified_count:
            self.steps_since += 1
            return self.steps_since >= verify_steps
        # newly certain, or the count moved during verification: start (again)
        self.verified_count = count
        self.inject = True
        self.verifying = False
        return False
