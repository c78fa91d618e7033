"""A randomized range sketch with an a-posteriori certificate: low rank in one sketch.

Pairs ``(Ω, Y = AΩ)`` are gathered block by block, and ``Q`` is an orthonormal basis of
the numerically non-zero directions of ``Y``. A block of ``p`` Gaussian *test* columns
checks the basis before it joins it (Halko, Martinsson & Tropp 2011, §4.3, Lemma 4.1):

    ‖(I − QQᵀ)A‖ ≤ 10·sqrt(2/π)·max_i ‖(I − QQᵀ)Aω_i‖   with probability ≥ 1 − 10^(−p).

``T = QᵀAQ`` needs no product of ``Q``: ``QᵀY = T·QᵀΩ + QᵀA(I − QQᵀ)Ω``, so the
least-squares ``T̂ = QᵀY·(QᵀΩ)⁺`` (HMT §5.5's single-pass estimate), symmetrized, is
``T`` to within ``ε·‖(I − QQᵀ)Ω(QᵀΩ)⁺‖₂``, ``ε`` the bound above (symmetrizing does not
increase the error of a symmetric ``T``). The norm is read from the small matrices:
``‖(I − QQᵀ)ΩX⁺‖₂² = λ_max(X⁺ᵀ(ΩᵀΩ − XᵀX)X⁺)`` with ``X = QᵀΩ``. With
``A = QTQᵀ + (I − QQᵀ)A + QQᵀA(I − QQᵀ)``,

    ‖A − QT̂Qᵀ‖ ≤ η = 2ε + ε·‖(I − QQᵀ)Ω(QᵀΩ)⁺‖₂,

and by Weyl's theorem the eigenvalues of ``A`` lie within ``η`` of those of ``T̂``
padded with ``n − k`` zeros. A count at ``τ > η`` with no eigenvalue of ``T̂`` within
``η`` of ``τ`` is therefore exact (:meth:`RangeSketch.certain`): a rank ``r`` with a gap
costs about ``r + 2p`` products, nothing spent on the image of ``Q``.

The pairs need not be Gaussian (the Lanczos pilot's products join as they are); only
the test columns must be, and drawn after the basis they test.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

__all__ = ["HMT_FACTOR", "TEST_COLUMNS", "RangeSketch", "SketchRitz"]

#: Gaussian columns per test: the bound fails with probability at most 10^(−10).
TEST_COLUMNS = 10
#: Halko, Martinsson & Tropp's factor: ``‖(I − QQᵀ)A‖ ≤ HMT_FACTOR·max ‖(I − QQᵀ)Aω_i‖``.
HMT_FACTOR = 10 * math.sqrt(2 / math.pi)


@dataclasses.dataclass(frozen=True)
class SketchRitz:
    """The sketch's eigenvalue estimates and how far ``A``'s may lie from them."""

    values: torch.Tensor  #: eigenvalues of ``T̂`` (float64, ascending)
    eta: float  #: ``‖A − QT̂Qᵀ‖`` bound (``inf`` before a test)
    size: int  #: ``k``, the basis dimension

    def certain(self, threshold: float) -> bool:
        """Whether ``#{|λ| > threshold}`` equals ``#{|θ| > threshold}`` by Weyl."""
        magnitudes = self.values.abs()
        above = magnitudes > threshold
        return bool(
            self.eta < threshold
            and bool((magnitudes[above] - self.eta > threshold).all())
            and bool((magnitudes[~above] + self.eta <= threshold).all())
        )


class _Blocks:
    """Columns kept as the blocks they came in (no copy to append; products by block)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.blocks: list[torch.Tensor] = []

    @property
    def size(self) -> int:
        return sum(int(block.shape[1]) for block in self.blocks)

    def whole(self, like: torch.Tensor) -> torch.Tensor:
        """The ``(n, size)`` matrix (a copy)."""
        return torch.cat(self.blocks, dim=1) if self.blocks else like.new_zeros(self.n, 0)

    def transposed_times(self, other: torch.Tensor) -> torch.Tensor:
        """``Bᵀ·other`` for the whole ``B``."""
        if not self.blocks:
            return other.new_zeros(0, other.shape[1])
        return torch.cat([block.T @ other for block in self.blocks])

    def times(self, coefficients: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out − B·coefficients``."""
        start = 0
        for block in self.blocks:
            width = block.shape[1]
            out = torch.addmm(out, block, coefficients[start : start + width], alpha=-1)
            start += width
        return out


@dataclasses.dataclass
class RangeSketch:
    """Pairs ``(Ω, AΩ)`` (columns of unit ``‖ω‖``), the basis ``Q`` of their images, and
    the small matrices ``QᵀΩ``, ``QᵀY`` and ``ΩᵀΩ`` the estimate of ``T`` reads."""

    n: int
    dtype: torch.dtype
    device: torch.device
    scale: float = 0.0  #: the largest ``‖Aω‖`` of a unit column (``≤ ‖A‖``)
    bound: float = math.inf  #: the latest test's bound ``ε`` on ``‖(I − QQᵀ)A‖``
    orthogonalization_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.norms = torch.zeros(0, dtype=self.dtype, device=self.device)
        self._omega, self._image, self._Q = (_Blocks(self.n) for _ in range(3))
        self._X = torch.zeros(0, 0, dtype=torch.float64)  # QᵀΩ
        self._Z = torch.zeros(0, 0, dtype=torch.float64)  # QᵀY
        self._G = torch.zeros(0, 0, dtype=torch.float64)  # ΩᵀΩ
        self._pending: torch.Tensor | None = None  # a test block's residual

    @property
    def omega(self) -> torch.Tensor:
        """``(n, w)`` unit columns ``Ω`` (a copy); ``‖ω‖`` before scaling in
        :attr:`norms`."""
        return self._omega.whole(self.norms)

    @property
    def image(self) -> torch.Tensor:
        """``(n, w)`` images ``AΩ`` (a copy)."""
        return self._image.whole(self.norms)

    @property
    def Q(self) -> torch.Tensor:
        """``(n, k)`` orthonormal basis of the images' directions (a copy)."""
        return self._Q.whole(self.norms)

    @property
    def width(self) -> int:
        """Pairs gathered."""
        return int(self.norms.shape[0])

    @property
    def size(self) -> int:
        """Dimension ``k`` of the basis."""
        return self._Q.size

    def add(
        self,
        omega: torch.Tensor,
        image: torch.Tensor,
        *,
        test: bool,
        norms: torch.Tensor | None = None,
    ) -> int:
        """Join a block of pairs; returns the directions it added to ``Q``.

        ``test=True``: the columns are standard Gaussian, drawn after the current basis,
        and set :attr:`bound` from their residuals; their directions join ``Q`` only at
        :meth:`absorb` (or the next :meth:`add`), so that :meth:`ritz` first reads the
        basis the test tested. ``norms``: the pairs are :attr:`omega`'s and
        :attr:`image`'s columns already (a replay), and these the norms they were
        divided by.
        """
        self.absorb()
        clock = time.perf_counter()
        if norms is None:
            norms = torch.linalg.vector_norm(omega, dim=0)
            omega, image = omega / norms, image / norms
        # one memory layout whatever the oracle returned: BLAS rounds a transposed
        # operand differently, and a replay must give the same bits
        omega, image = omega.contiguous(), image.contiguous()
        Q = self._Q
        coefficients = Q.transposed_times(image)
        residual = Q.times(coefficients, image)
        correction = Q.transposed_times(residual)  # twice is enough
        residual = Q.times(correction, residual)
        coefficients += correction
        if test:  # ‖(I − QQᵀ)Aω_i‖ for the Gaussian ω_i = norms_i·(unit column)
            lengths = torch.linalg.vector_norm(residual, dim=0) * norms
            self.bound = HMT_FACTOR * float(lengths.max())
        self.scale = max(self.scale, float(torch.linalg.vector_norm(image, dim=0).max()))
        self._G = _bordered(self._G, self._omega.transposed_times(omega), omega.T @ omega)
        self._X = torch.cat([self._X, _small(Q.transposed_times(omega))], dim=1)
        self._Z = torch.cat([self._Z, _small(coefficients)], dim=1)
        self._omega.blocks.append(omega)
        self._image.blocks.append(image)
        self.norms = torch.cat([self.norms, norms])
        self._pending = residual
        self.orthogonalization_seconds += time.perf_counter() - clock
        return 0 if test else self.absorb()

    def absorb(self) -> int:
        """Add the directions of the latest block's residual to ``Q``; returns how
        many (none when no block waits)."""
        residual, self._pending = self._pending, None
        if residual is None:
            return 0
        clock = time.perf_counter()
        fresh = self._directions(residual)
        Q = self._Q
        for block in fresh:
            rows = [block.T @ pairs for pairs in self._omega.blocks]
            self._X = torch.cat([self._X, _small(torch.cat(rows, dim=1))])
            rows = [block.T @ pairs for pairs in self._image.blocks]
            self._Z = torch.cat([self._Z, _small(torch.cat(rows, dim=1))])
            Q.blocks.append(block)
        self.orthogonalization_seconds += time.perf_counter() - clock
        return sum(int(block.shape[1]) for block in fresh)

    def _directions(self, residual: torch.Tensor) -> list[torch.Tensor]:
        """Orthonormal directions of ``residual`` (orthogonal to ``Q``) above the
        rounding of a product (``100·sqrt(n)·eps·scale``, the Krylov basis's deflation
        tolerance); what is dropped stays visible to the next test.

        Gram-matrix passes (BLAS-3, a tenth of a Householder QR's time): each takes the
        directions within ``1e6`` of the largest left (``sqrt(100·eps)`` in single
        precision), whose Gram eigenvalues are accurate, projects them out, and looks
        again at the rest.
        """
        tolerance = 100 * math.sqrt(self.n) * torch.finfo(self.dtype).eps * self.scale
        relative = max(1e-12, 100 * float(torch.finfo(self.dtype).eps))
        found: list[torch.Tensor] = []
        while residual.shape[1] and float(torch.linalg.vector_norm(residual)) > tolerance:
            squares, vectors = torch.linalg.eigh(_small(residual.T @ residual))
            keep = squares > max(relative * float(squares[-1]), tolerance**2)
            if not bool(keep.any()):
                break
            fresh = residual @ (vectors[:, keep] / squares[keep].sqrt()).to(residual)
            if float(squares[keep][0]) < (1e-4 * self.scale) ** 2:
                # U = R·V/σ magnifies R's rounding-level overlap with the basis by 1/σ
                for basis in (*self._Q.blocks, *found):
                    fresh = _projected(fresh, basis)
            found.append(_orthonormal(fresh))
            residual = _projected(residual, found[-1])
        return found

    def ritz(self) -> SketchRitz:
        """``T̂``'s eigenvalues and ``η`` (module notes)."""
        k = self.size
        if k == 0:
            values = torch.zeros(0, dtype=torch.float64)
            return SketchRitz(values, 2 * self.bound, 0)
        X = self._X
        # X⁺ = XᵀL⁻ᵀL⁻¹ = BᵀL⁻¹ with XXᵀ = LLᵀ, B = L⁻¹X: a Cholesky (a twentieth of an
        # SVD's time at k = 4000); X's condition is that of the pairs on the basis
        factor, failed = torch.linalg.cholesky_ex(X @ X.T)
        if failed:  # a direction the pairs do not reach: no estimate of T there
            values = torch.linalg.eigvalsh(_symmetric(self._Z @ torch.linalg.pinv(X)))
            return SketchRitz(values, math.inf, k)
        B = torch.linalg.solve_triangular(factor, X, upper=False)
        inverse = torch.linalg.solve_triangular(factor.T, B, upper=True).T  # X⁺, (w, k)
        estimate = _symmetric(self._Z @ inverse)
        complement = self._G - X.T @ X  # Ωᵀ(I − QQᵀ)Ω
        leak = torch.linalg.eigvalsh(_symmetric(inverse.T @ complement @ inverse))[-1]
        eta = self.bound * (2 + math.sqrt(max(float(leak), 0.0)))
        return SketchRitz(torch.linalg.eigvalsh(estimate), eta, k)


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.T)


def _projected(block: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``(I − basis·basisᵀ)·block``."""
    return torch.addmm(block, basis, basis.T @ block, alpha=-1)


def _orthonormal(block: torch.Tensor) -> torch.Tensor:
    """Cholesky QR of a block whose columns are nearly orthonormal already (overlaps
    up to ``1e-4``); Householder where rounding broke that promise."""
    factor, failed = torch.linalg.cholesky_ex(_small(block.T @ block))
    if failed:
        return torch.linalg.qr(block).Q
    inverse = torch.linalg.solve_triangular(
        factor, torch.eye(factor.shape[0], dtype=torch.float64), upper=False
    )
    return block @ inverse.T.to(block)


def _small(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.to(device="cpu", dtype=torch.float64)


def _bordered(
    gram: torch.Tensor, cross: torch.Tensor, corner: torch.Tensor
) -> torch.Tensor:
    """``[[G, C], [Cᵀ, D]]`` from the Gram matrix of the old columns, their products
    with the new ones and the new ones' own."""
    cross, corner = _small(cross), _small(corner)
    return torch.cat([torch.cat([gram, cross], dim=1), torch.cat([cross.T, corner], dim=1)])
