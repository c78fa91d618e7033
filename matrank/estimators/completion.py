"""The dense path from products already taken: a basis completed, not ``H`` re-read.

A count that ends on the dense path (``n`` products and one ``eigvalsh``) may have
spent products on the way: a Krylov basis, or ``auto``'s calibration (a block of
unit columns) and pilot (four Lanczos probes). An orthonormal ``Q`` (``n × k``) of
their span is completed to ``[Q, Q⊥]``, an orthonormal basis of ``R^n``; only
``H·Q⊥`` is computed (``n − k`` products), and the eigenvalues of
``[Q, Q⊥]ᵀH[Q, Q⊥]`` are ``H``'s own. Completing costs a complete QR and two
``n × n × (n − k)`` products, so it is done only where that is cheaper than the
``k`` products it saves (:func:`restart_is_cheaper`).

A pilot's Lanczos vectors are not orthonormal (four probes drawn independently, no
reorthogonalization: they lose orthogonality as Ritz values converge), so
:func:`kept_span` takes ``Q`` from a column-pivoted QR of them, keeping the leading
columns whose triangle ``R`` has condition at most ``KEPT_CONDITION``; then
``HQ = (HV)R⁻¹`` carries the products' rounding amplified by at most that factor. That
error is measured, not assumed: :func:`completed` compares ``Q⊥ᵀ(HQ)`` with the
fresh products' ``(QᵀHQ⊥)ᵀ`` and reports the discrepancy with the asymmetry, which
raises the noise floor as a materialized ``H``'s asymmetry does.

A Krylov basis that switches to the dense path is completed the same way; products
taken before it (``auto``'s, or its pilot's) first extend it by their span's part
outside it (:func:`extended`), so that they too are not taken again.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import torch

from .._costs import matmul_seconds
from .._run import Run

__all__ = [
    "KEPT_CONDITION",
    "Kept",
    "Offer",
    "completed",
    "completed_kept",
    "extended",
    "extending_pays",
    "kept_span",
    "offered",
    "offering",
    "restart_is_cheaper",
]

#: Largest condition number of the triangle of a column-pivoted QR of products'
#: inputs whose columns are kept (the rest are re-read with ``Q⊥``).
KEPT_CONDITION = 10.0
#: Columns a block of the completion's products holds (as ``materialize`` takes them:
#: a narrow block re-reads an explicit operator's memory once per 32 columns).
COMPLETION_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class Kept:
    """An orthonormal basis of products already taken, and its image under ``H``."""

    basis: torch.Tensor  #: ``Q``, ``(n, k)`` with orthonormal columns
    image: torch.Tensor  #: ``H·Q``, ``(n, k)``
    taken: int  #: the products they came from (``k`` of them kept)

    def scaled(self, factor: float) -> Kept:
        """The same span, its image in units ``factor`` times the operator's."""
        if factor == 1.0:
            return self
        return dataclasses.replace(self, image=self.image * factor)


def kept_span(vectors: torch.Tensor, images: torch.Tensor) -> Kept:
    """An orthonormal basis of ``vectors``' span (``(n, p)``) and its image, from
    ``images = H·vectors``: the leading ``k`` columns of a column-pivoted QR whose
    triangle has condition at most ``KEPT_CONDITION`` (see the module notes)."""
    dtype, device = vectors.dtype, vectors.device
    inputs = vectors.detach().to("cpu", torch.float64).numpy()
    outputs = images.detach().to("cpu", torch.float64).numpy()
    q, r, order = scipy.linalg.qr(inputs, mode="economic", pivoting=True)
    k = _well_conditioned(r)
    # HQ_k = HV_k R_k⁻¹: solve R_kᵀ X = (HV_k)ᵀ for X = (HQ_k)ᵀ
    image = scipy.linalg.solve_triangular(r[:k, :k], outputs[:, order[:k]].T, trans="T").T
    as_tensor = functools.partial(torch.as_tensor, dtype=dtype, device=device)
    return Kept(
        as_tensor(np.ascontiguousarray(q[:, :k])), as_tensor(image), inputs.shape[1]
    )


def _well_conditioned(r: np.ndarray, largest: float | None = None) -> int:
    """The most leading columns of a pivoted QR's triangle with condition at most
    ``KEPT_CONDITION`` (``largest``: relative to that singular value, not the
    triangle's own): the condition of the leading ``k × k`` triangle only grows with
    ``k`` (its Gram matrix is a leading block of the next one's, so the extreme
    eigenvalues interlace), so a bisection finds it."""

    def fits(k: int) -> bool:
        values = np.linalg.svd(r[:k, :k], compute_uv=False)
        top = values[0] if largest is None else largest
        return bool(values[-1] > 0 and top <= KEPT_CONDITION * values[-1])

    low, high = 0, min(r.shape)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def extended(
    basis: torch.Tensor, corner: torch.Tensor, kept: Kept
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """``[Q, P]``, ``[Q, P]ᵀH[Q, P]`` (float64), ``P``'s columns and the asymmetry of
    ``PᵀHP`` as the kept images give it (a defect, as in :func:`completed_kept`): ``P``, what of
    the kept span lies outside an orthonormal ``Q`` (``corner``: ``QᵀHQ``, as a Krylov
    basis knows it), so that a completion of ``[Q, P]`` reads ``P``'s directions from
    the kept products instead of taking them again.

    ``W = (I − QQᵀ)X`` (``X``: the kept basis, twice projected) has a pivoted QR whose
    leading ``j`` columns have singular values at least ``1/KEPT_CONDITION`` (``X``'s
    columns have unit norm: directions nearly in ``Q`` add nothing and would amplify
    the kept images' rounding); ``P = W_j R⁻¹`` and, ``HQ`` never formed,
    ``QᵀHP = (QᵀHX_j − T·C_j)R⁻¹`` and ``PᵀHP = (PᵀHX_j − (QᵀHP)ᵀC_j)R⁻¹``
    with ``C = QᵀX``."""
    inputs, images = kept.basis.to(basis), kept.image.to(basis)
    coefficients = basis.T @ inputs
    outside = inputs - basis @ coefficients
    again = basis.T @ outside  # the second pass: orthogonal to Q to rounding
    outside -= basis @ again
    coefficients += again
    q, r, order = scipy.linalg.qr(
        outside.to("cpu", torch.float64).numpy(), mode="economic", pivoting=True
    )
    j = _well_conditioned(r, largest=1.0)
    if j == 0:
        return basis, corner, 0, 0.0
    chosen = torch.as_tensor(order[:j])
    triangle = torch.as_tensor(r[:j, :j])
    taken = coefficients[:, chosen].to("cpu", torch.float64)
    image = images[:, chosen]
    added = torch.as_tensor(np.ascontiguousarray(q[:, :j])).to(basis)

    def right_solve(rows: torch.Tensor) -> torch.Tensor:  # rows·R⁻¹
        return torch.linalg.solve_triangular(triangle, rows, upper=True, left=False)

    to_cpu = functools.partial(torch.Tensor.to, device="cpu", dtype=torch.float64)
    corner = corner.to("cpu", torch.float64)
    coupling = right_solve(to_cpu(basis.T @ image) - corner @ taken)
    inner = right_solve(to_cpu(added.T @ image) - coupling.T @ taken)
    k = corner.shape[0]
    grown = torch.empty(k + j, k + j, dtype=torch.float64)
    grown[:k, :k] = corner
    grown[:k, k:] = coupling
    grown[k:, :k] = coupling.T
    grown[k:, k:] = 0.5 * (inner + inner.T)
    asymmetry = float(torch.linalg.matrix_norm(inner - inner.T))
    return torch.cat([basis, added], 1), grown, j, asymmetry


def extending_pays(per_product: float, n: int, k: int, p: int) -> bool:
    """Whether :func:`extended` (two projections of ``p`` columns on ``k``, a QR of
    ``n × p`` and the corner's products: about ``(5kp + 3p²)/n²`` matrix products of
    size ``n``) costs less than the ``p`` products it may save."""
    return p * per_product > matmul_seconds(n) * (5 * k * p + 3 * p * p) / n**2


def restart_is_cheaper(per_product: float, n: int, k: int) -> bool:
    """Whether ``k`` more products (``per_product`` seconds each) cost less than
    completing a basis of ``k`` columns: a complete QR and two ``n × n × (n − k)``
    products, priced as about ``2 + 2k/n`` matrix products of size ``n``."""
    return k * per_product < matmul_seconds(n) * (2 + 2 * k / n)


def completed(
    run: Run,
    basis: torch.Tensor,
    corner: torch.Tensor,
    block: int,
    check: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, float]:
    """``[Q, Q⊥]ᵀH[Q, Q⊥]`` (``n × n``, float64, symmetrized) and its measured defect.

    ``basis``: ``Q`` (``(n, k)``, orthonormal; ``k = 0``: ``Q⊥`` is the identity and the
    result ``H`` itself); ``corner``: ``QᵀHQ``, as the caller knows it; ``check``:
    vectors ``X`` and their images ``HX`` known from earlier products, whose
    ``Q⊥ᵀ(HX)`` must agree with the fresh products' ``(XᵀHQ⊥)ᵀ``. The defect is the
    Frobenius norm of the fresh block's asymmetry, or of that disagreement when larger.
    """
    meter = run.meter
    n, k = basis.shape
    complement = None if k == 0 else torch.linalg.qr(basis, mode="complete").Q[:, k:]
    block = max(block, COMPLETION_BLOCK)

    def columns(first: int) -> torch.Tensor:
        last = min(n, first + block)
        if complement is not None:
            return complement[:, first:last]
        eye = torch.zeros(n, last - first, dtype=meter.dtype, device=meter.device)
        eye[torch.arange(first, last), torch.arange(last - first)] = 1
        return eye

    def product(first: int) -> torch.Tensor:
        image = meter.hvp(columns(first))
        run.bar.update(image.shape[1])
        return image

    blocks = [
        run.cached(f"dense {first}", functools.partial(product, first)).to(meter.device)
        for first in range(0, n - k, block)
    ]
    image = torch.cat(blocks, 1) if blocks else basis.new_zeros(n, 0)
    run.enter("eigvalsh")
    if complement is None:  # Q⊥ = I: the image is H itself
        dense = image.to("cpu", torch.float64)
        del image
        asymmetry = float(torch.linalg.matrix_norm(dense - dense.T))
        return 0.5 * (dense + dense.T), asymmetry
    coupling = (basis.T @ image).to("cpu", torch.float64)
    corner_fresh = (complement.T @ image).to("cpu", torch.float64)
    defect = float(torch.linalg.matrix_norm(corner_fresh - corner_fresh.T))
    if check is not None:
        vectors, images = check
        fresh = coupling if vectors is basis else vectors.T @ image
        known = (complement.T @ images).to("cpu", torch.float64)
        disagreement = known - fresh.T.to("cpu", torch.float64)
        defect = max(defect, float(torch.linalg.matrix_norm(disagreement)))
        del known, fresh, disagreement
    del image
    projected = torch.empty(n, n, dtype=torch.float64)
    projected[:k, :k] = corner.to("cpu", torch.float64)
    projected[:k, k:] = coupling
    projected[k:, :k] = coupling.T
    projected[k:, k:] = 0.5 * (corner_fresh + corner_fresh.T)
    return projected, defect


def completed_kept(
    run: Run, kept: Kept, block: int, factor: float = 1.0
) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """:func:`completed` from products already taken: ``[Q, Q⊥]ᵀH[Q, Q⊥]``, its defect
    (the fresh block's asymmetry, the kept image's disagreement with the fresh
    products, or the kept corner's asymmetry, whichever is largest) and the record for
    ``diagnostics["kept_products"]``. ``factor``: the run's scale, where the kept
    products are in the operator's own units and the run's are scaled."""
    image = kept.scaled(factor).image
    corner = (kept.basis.T @ image).to("cpu", torch.float64)
    symmetric, defect = completed(
        run, kept.basis, 0.5 * (corner + corner.T), block, (kept.basis, image)
    )
    defect = max(defect, float(torch.linalg.matrix_norm(corner - corner.T)))
    record = {"columns": kept.basis.shape[1], "of": kept.taken, "defect": defect}
    return symmetric, defect, record


# -- what `auto` learned choosing, handed to the route it chose ----------------------------


@dataclasses.dataclass(frozen=True)
class Offer:
    """What ``auto`` learned choosing a route, for the one estimate it runs."""

    dim: int  #: the operator's dimension
    kept: Kept | None = None  #: the products it took, their span kept
    #: its pilot's estimate at the same threshold: count, standard error, the threshold
    #: its nodes gave (in units of ``scale_factor``), whether it still grew, products
    pilot: tuple[float, float, float, bool, int] | None = None


_OFFERED: contextvars.ContextVar[Offer | None] = contextvars.ContextVar(
    "matrank_offer", default=None
)


@contextlib.contextmanager
def offering(offer: Offer | Kept | None) -> Iterator[None]:
    """Within the block, :func:`offered` hands ``offer`` (what ``auto`` learned choosing:
    the products it took, its pilot's estimate; products alone stand for an offer of
    their dimension) to the estimate it runs -- of that call only, so that a model
    changed between two calls is never read from stale products."""
    if isinstance(offer, Kept):
        offer = Offer(offer.basis.shape[0], offer)
    token = _OFFERED.set(offer)
    try:
        yield
    finally:
        _OFFERED.reset(token)


def offered(n: int, dtype: torch.dtype) -> Offer | None:
    """The offer to this estimate, if it is for ``R^n`` (the products only if in
    ``dtype``); taken once (a second estimate in the same block reads ``H`` itself)."""
    offer = _OFFERED.get()
    _OFFERED.set(None)
    if offer is None or offer.dim != n:
        return None
    kept = offer.kept
    if kept is not None and (kept.basis.shape[0] != n or kept.basis.dtype != dtype):
        return dataclasses.replace(offer, kept=None)
    return offer
