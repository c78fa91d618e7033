"""Block Krylov subspaces with full reorthogonalization, and the certified count.

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
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "BlockKrylov",
    "asymmetry",
    "random_block",
    "spectral_bounds",
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


def asymmetry(block: torch.Tensor, image: torch.Tensor) -> float:
    """``‖A − Aᵀ‖_F`` estimated from a Gaussian block ``V`` and its image ``AV``.

    For independent Gaussian ``v_i, v_j`` and ``S = A − Aᵀ``, ``v_iᵀAv_j − v_jᵀAv_i =
    v_iᵀSv_j`` has mean 0 and variance ``‖S‖_F²``; the root mean square over the block's
    pairs is therefore the Frobenius norm that the exact count measures on the formed
    matrix (the maximum over the pairs would overstate it about threefold). One column
    gives no pair: 0.
    """
    cross = (block.T @ image).to(torch.float64)
    b = cross.shape[0]
    if b < 2:
        return 0.0
    pairs = (cross - cross.T)[torch.triu_indices(b, b, offset=1).unbind()]
    return float(pairs.square().mean().sqrt())


def _project_out(
    W: torch.Tensor,
    Q: torch.Tensor,
    negligible: float = 0.0,
    before: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram–Schmidt, twice when needed: ``W − Q(QᵀW)``, and the coefficients.

    The second pass runs when some column lost more than ``1 − 1/√2`` of its norm in the
    first (Kahan and Parlett's criterion, "twice is enough"): only then can the first
    pass's rounding, relative to what is left, spoil orthogonality. It is skipped when
    what is left has Frobenius norm at most ``negligible`` (the caller drops all of it).
    ``before``: ``W``'s column norms, when the caller has them.
    """
    coefficients = Q.T @ W
    projected = torch.addmm(W, Q, coefficients, alpha=-1)
    if before is None:
        before = torch.linalg.vector_norm(W, dim=0)
    after = torch.linalg.vector_norm(projected, dim=0)
    if not bool((after * math.sqrt(2) < before).any()):
        return projected, coefficients
    if float(torch.linalg.vector_norm(after)) <= negligible:
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
    #: seconds spent orthogonalizing (projections, QR, deflation), not in products
    orthogonalization_seconds: float = 0.0
    #: random blocks drawn in single precision (set by a range sketch's start)
    fast_draws: bool = False

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

    def outside(self, W: torch.Tensor) -> torch.Tensor:
        """``(I − QQᵀ)W``: what of ``W`` the basis leaves out (Gram–Schmidt, twice
        when needed)."""
        return _project_out(W.to(dtype=self.dtype, device=self.device), self.Q)[0]

    def extend(
        self, block_size: int, extra_random: int = 0, given: torch.Tensor | None = None
    ) -> int:
        """Apply A to the next block and grow the basis; returns the matvecs spent.

        The next block holds the kept directions of the previous residual, filled up to
        ``block_size`` with random directions orthogonal to the basis, plus
        ``extra_random`` more random directions (fresh probes that check for eigenvalues
        the Krylov sequence has not reached); ``given`` directions (``(n, c)``, made
        orthogonal to the basis here) take the place of the random ones.
        """
        kept = self._next
        if given is not None:
            self._append(kept)
            k = self.size
            clock = time.perf_counter()
            fresh = torch.linalg.qr(self.outside(given)).Q[:, : self.n - k]
            self.orthogonalization_seconds += time.perf_counter() - clock
            self._append(fresh)
            block = self.Q[:, k - kept.shape[1] :]
            if block.shape[1] == 0:  # the basis spans the space: nothing to apply A to
                return 0
            image = self.matmat(block)
            self.matvecs += block.shape[1]
            return self._absorb(block, image)
        fill = max(0, block_size - kept.shape[1]) + extra_random
        fill = min(fill, self.n - self.size - kept.shape[1])
        k = self.size
        if k == 0:
            return self._start(fill)
        self._append(kept)
        if fill > 0:
            if self.fast_draws:  # see start_from_basis
                fresh = torch.randn(
                    self.n, fill, generator=self.generator, dtype=torch.float32
                )
                fresh = fresh.to(dtype=self.dtype, device=self.device)
            else:
                fresh = random_block(self.n, fill, self.generator, self.dtype, self.device)
            clock = time.perf_counter()
            fresh, _ = _project_out(fresh, self.Q)
            fresh = torch.linalg.qr(fresh).Q
            self.orthogonalization_seconds += time.perf_counter() - clock
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

        The pairs of the Gaussian start block estimate ``‖A − Aᵀ‖_F`` (rounding included)
        at no extra matvec (:func:`asymmetry`); then ``V = QR`` and ``AQ = (AV)R⁻¹``.
        """
        V = random_block(self.n, b, self.generator, self.dtype, self.device)
        image = self.matmat(V)
        self.matvecs += b
        self.random_columns += b
        self.symmetry_defect = asymmetry(V, image)
        clock = time.perf_counter()
        Q, R = torch.linalg.qr(V)
        image = torch.linalg.solve_triangular(R, image, upper=True, left=False)
        self.orthogonalization_seconds += time.perf_counter() - clock
        self._append(Q)
        return self._absorb(Q, image)

    def start_from_basis(self, start: torch.Tensor, symmetry_defect: float) -> int:
        """First block: an orthonormal ``start`` (a range sketch's basis, whose
        ``symmetry_defect`` the sketch measured) and its image; returns the matvecs.

        When ``start`` spans ``range(A)`` its image lies in it: the residual vanishes and
        the Krylov space is invariant after one step. Later random blocks are drawn in
        float32 (a third of the time of float64 draws; any Gaussian block will do), on
        the CPU, so results do not depend on the device.
        """
        self.fast_draws = True
        self.symmetry_defect = symmetry_defect
        if start.shape[1] == 0:  # A is zero to rounding on the sketch
            return self._start(min(32, self.n))
        start = start.to(dtype=self.dtype, device=self.device)
        self._append(start)
        image = self.matmat(start)
        self.matvecs += start.shape[1]
        return self._absorb(start, image)

    def _absorb(self, kept: torch.Tensor, image: torch.Tensor) -> int:
        """Grow ``T`` by the block ``kept`` (already in the basis) and its image."""
        k = self.size - kept.shape[1]
        clock = time.perf_counter()
        norms = torch.linalg.vector_norm(image, dim=0)
        self.scale = max(self.scale, float(norms.max()))
        b = kept.shape[1]
        # The first Gram–Schmidt pass computes QᵀAU, which is also T's new columns.
        residual, coefficients = _project_out(image, self.Q, self.deflation_tol, norms)
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
        if self.size >= self.n:
            # A complete basis: every product's coefficients on all of Q are in T (the
            # part once dropped from an older block's residual re-enters T through the
            # later blocks' couplings), so AQ = QT to rounding and nothing is left out.
            self.dropped = 0.0
        self.orthogonalization_seconds += time.perf_counter() - clock
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
        whole = float(torch.linalg.vector_norm(residual))
        if whole <= self.deflation_tol:  # all of it is dropped: no factorization needed
            self.dropped = math.hypot(self.dropped, whole)
            self._next = residual[:, :0]
            self.B = torch.zeros(0, residual.shape[1], dtype=torch.float64)
            return
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
            "ints": [self.matvecs, self.last_size, self.random_columns, self.fast_draws],
        }

    def fits(self, state: dict) -> bool:
        """Whether ``state`` is a :meth:`state_dict` of a basis in ``R^n`` like this one:
        ``k ≤ capacity ≤ n`` rows, a ``k × k`` projection and a next block in ``R^n``."""
        basis, T = state["basis"], state["T"]
        k = int(basis.shape[0])
        return bool(
            basis.ndim == 2
            and basis.shape[1] == self.n
            and k <= int(state["capacity"]) <= self.n
            and tuple(T.shape) == (k, k)
            and state["next"].ndim == 2
            and state["next"].shape[0] == self.n
            and len(state["floats"]) == 3
            and len(state["ints"]) == 4
        )

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
        self.matvecs, self.last_size, self.random_columns = state["ints"][:3]
        self.fast_draws = bool(state["ints"][3]) if len(state["ints"]) > 3 else False

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
    rtol: float | None = None,
) -> tuple[float, float, int]:
    """Bounds ``(λmin, λmax)`` from ``steps`` Lanczos steps on one random vector.

    The extreme Ritz values widened by their residual norms: each such interval contains
    an eigenvalue, and extreme Ritz values converge first, so after a few tens of steps
    the widened extremes bracket the spectrum in practice (the probabilistic statement
    is Kuczyński & Woźniakowski 1992). With ``rtol``, the run goes on past ``steps``
    (up to ``n``) until both widenings are at most ``rtol·max|λ|``: the bounds are then
    the extreme eigenvalues to that accuracy. Returns the bounds and the matvecs spent.
    """
    krylov = BlockKrylov(matmat, n, dtype, device, generator)
    grown = _grow(krylov, max(1, min(steps, n)))
    low, high, widening = _widened_extremes(krylov, dtype)
    while rtol is not None and widening > rtol * max(abs(low), abs(high)) and grown:
        grown = _grow(krylov, 8)
        low, high, widening = _widened_extremes(krylov, dtype)
    return low, high, krylov.matvecs


def _grow(krylov: BlockKrylov, steps: int) -> int:
    """Up to ``steps`` single-vector Lanczos steps; how many ran (fewer: exhausted)."""
    return next((done for done in range(steps) if not krylov.extend(1)), steps)


def _widened_extremes(
    krylov: BlockKrylov, dtype: torch.dtype
) -> tuple[float, float, float]:
    """The extreme Ritz values, each widened by its residual (and the rounding of T's
    own eigenvalues), and the larger widening."""
    values, vectors = torch.linalg.eigh(krylov.T)
    rounding = 10 * krylov.size * float(torch.finfo(dtype).eps) * float(values.abs().max())
    residuals = krylov.residual_norms(vectors) + rounding
    low, high = values - residuals, values + residuals
    bottom, top = int(torch.argmin(low)), int(torch.argmax(high))
    widening = float(max(residuals[bottom], residuals[top]))
    return float(low[bottom]), float(high[top]), widening
