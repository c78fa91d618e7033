"""The Lanczos count's dense switch: when the rank is a large fraction of ``n``.

A Krylov basis that must hold ``r ≈ n`` columns costs more orthogonalization than the
dense path's one ``eigvalsh``. The basis ``Q`` already built is kept: it is completed
to an orthonormal basis ``[Q, Q⊥]`` of ``R^n``, only ``H·Q⊥`` is computed (``n − k``
products, so ``n`` in all, as materializing ``H`` would take), and the eigenvalues of
``[Q, Q⊥]ᵀH[Q, Q⊥]`` -- ``H``'s own -- are counted by the exact methods' rule
(:mod:`..completion`, which ``auto``'s dense path shares).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from ..._costs import eigvalsh_seconds, matmul_seconds
from ..._oracle import agree, collective, input_eps, materialize
from ..._result import RankResult
from ..._run import Run
from ...numerics.krylov import BlockKrylov
from ...numerics.threshold import noise_floor
from ..completion import (
    Kept,
    completed,
    completed_kept,
    extended,
    extending_pays,
    restart_is_cheaper,
)
from ..exact import count_spectrum

__all__ = [
    "DENSE_MAX",
    "STALLED_EXTRA",
    "STALLED_SHARE",
    "UNRESOLVED_SHARE",
    "affordable",
    "dense_count",
    "dense_is_cheaper",
    "worth_switching",
]

#: Dense ``n × n`` float64 matrices the dense path holds at its peak (the image, its
#: symmetrized copy, the completed basis or LAPACK's copy and workspace).
_PEAK_MATRICES = 6


def _dense_limit() -> int:
    """Largest ``n`` whose dense path fits in this machine's physical memory, and at
    least 8192 (1.5 GB of three matrices): 22,947 on this project's 24 GiB machines."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX: the old fixed limit
        return 8192
    return max(8192, math.isqrt(memory // (8 * _PEAK_MATRICES)))


#: Largest ``n`` whose count may switch to the dense path: ``_PEAK_MATRICES`` float64
#: ``n × n`` matrices in this machine's memory (at least 8192). The path chosen never
#: changes the count, only what it costs.
DENSE_MAX = _dense_limit()
#: Share of the dense path's cost that a Krylov count past its expected basis (a
#: gapless spectrum: Ritz values crowd τ and certify slowly) may spend besides
#: products before it switches (ski rental; the switch keeps its products unless a
#: restart from the identity is cheaper, when they are spent too).
STALLED_SHARE = 0.15
#: Columns beyond ``2·count`` that a count with a gap at τ certifies within (the issue's
#: target, ``2r + 200``); past them, without a pilot, the count is read as stalled.
STALLED_EXTRA = 200
#: Share of the dense path's cost (its whole time, products included) after which a
#: count that outgrew the pilot's estimate switches (see :func:`dense_is_cheaper`).
UNRESOLVED_SHARE = 0.1


def dense_is_cheaper(
    run: Run,
    n: int,
    size: int,
    count: int,
    pilot: tuple[float, float] | None,
    *,
    block: int,
) -> str | None:
    """Why ``n`` products and one ``eigvalsh`` now cost less than the Krylov count (a
    sentence for ``diagnostics["dense_reason"]``), or ``None`` while they do not.

    Costs in seconds, from this run's own products and a calibrated ``eigvalsh`` and
    matrix product (:mod:`matrank._costs`). The reasons to switch:

    - the count has passed the pilot's estimate (``pilot``: its count and stderr) by
      three standard errors and a block: the pilot's quadrature lumped eigenvalues it
      could not resolve with zero (a continuum reaching towards zero, as a trained
      network's curvature has), so its estimate bounds nothing. The run switches
      once its whole time, products included, reaches ``UNRESOLVED_SHARE`` of the
      dense path: a Krylov count that would certify before that loses nothing, any
      other costs at most ``1 + UNRESOLVED_SHARE`` dense paths;
    - the Krylov count's own cost, as :func:`_krylov_dearer` reads it.

    Without a pilot (``n < pilot_from``, a count ``auto`` did not choose) nothing
    estimates the rank: only a basis past ``2·count + STALLED_EXTRA`` (what a count with
    a gap at τ certifies within: the catalogue's lie at ``0.1–1.0 ×`` it) still
    uncertain is read as stalled, by the same rule.
    """
    meter = run.meter
    if meter.timed_matvecs == 0:
        return None
    # clocks differ between the ranks of a data-parallel oracle: rank 0's decide (the
    # run's seconds are read after the one-off calibration, which they include)
    eig, product = agree(meter, (eigvalsh_seconds(n) / n**3, matmul_seconds(n) / n**3))
    per_product, elapsed = agree(
        meter, (meter.hvp_seconds / meter.timed_matvecs, run.seconds() - meter.hvp_seconds)
    )
    dense = n * per_product + eig * n**3
    if pilot is None:
        needed = 2 * count + STALLED_EXTRA
        if needed <= size and elapsed >= STALLED_SHARE * dense:
            return _stalled(size, needed, count, elapsed, dense) + (
                "; no pilot below pilot_from"
            )
        return None
    floor, spread = pilot
    if count > floor + 3 * spread + block and run.seconds() >= UNRESOLVED_SHARE * dense:
        return (
            f"the count ({count}, basis {size}) passed the pilot's {floor:.0f} ± "
            f"{spread:.2g}: a spectrum the pilot could not resolve near τ, with "
            f"{run.seconds():.3g} s spent against a dense path of {dense:.3g} s "
            f"(UNRESOLVED_SHARE = {UNRESOLVED_SHARE:g})"
        )
    # under the pilot's estimate the count is bounded by it, and the basis it needs is
    # priced (a count that still grows block by block there is no reason to switch)
    rates = (per_product, eig, product)
    return _krylov_dearer(n, size, count, floor, rates, elapsed, dense)


def _krylov_dearer(
    n: int,
    size: int,
    count: int,
    floor: float,
    rates: tuple[float, float, float],
    elapsed: float,
    dense: float,
) -> str | None:
    """Why the Krylov count costs more than the dense path (``dense`` seconds), or
    ``None``; ``rates``: seconds a product, and per ``n³`` of ``eigvalsh`` and of a
    matrix product; ``elapsed``: the run's seconds besides products.

    - the cheapest certified Krylov count still costs more: it needs a basis past
      ``K = max(1.15·count, floor)`` (``floor``: the pilot's estimate of the rank), that
      is ``K − k`` more products, the Gram–Schmidt work of growing the basis from
      ``k`` to ``K`` (two passes, ``≈ 4n(K² − k²)`` flops) and one Ritz problem with
      vectors of size ``K`` (about three ``eigvalsh``);
    - a basis already past ``K`` with the count still uncertain is a spectrum without
      a gap at τ (a trained network's curvature), where Ritz values near τ converge
      slowly and nothing bounds the basis either: the switch comes once the time
      besides products reaches ``STALLED_SHARE`` of the dense path.
    """
    per_product, eig, product = rates
    needed = max(1.15 * count, floor, count + 1.0)
    if needed <= size:
        if elapsed >= STALLED_SHARE * dense:
            return _stalled(size, needed, count, elapsed, dense)
        return None
    # a matrix product of n × n × n (2n³ flops) takes `product`·n³ seconds
    krylov = (
        per_product * (needed - size)
        + product * 2 * n * (needed**2 - size**2)
        + 3 * eig * needed**3
    )
    if krylov > dense:
        return (
            f"a certified count needs a basis of about {needed:.0f} (now {size}): "
            f"{krylov:.3g} s more against a dense path of {dense:.3g} s"
        )
    return None


def _stalled(size: int, needed: float, count: int, elapsed: float, dense: float) -> str:
    """The stalled rule's reason: a basis past what its count should need, uncertain."""
    return (
        f"a basis of {size}, past the {needed:.0f} its count ({count}) should need, "
        f"still uncertain after {elapsed:.3g} s besides products against a dense path "
        f"of {dense:.3g} s: no gap at τ (STALLED_SHARE = {STALLED_SHARE:g} of the "
        "dense path spent)"
    )


def affordable(run: Run, n: int, max_matvecs: int) -> bool:
    """Whether the dense path fits the product budget: free for an explicit matrix, at
    most ``n`` more products otherwise (a budget the user fixed is never overrun)."""
    if materialize.dispatch(type(run.oracle)) is not materialize.dispatch(object):
        return True
    return run.meter.matvecs + n <= max_matvecs


def worth_switching(n: int, size: int, count: int, limit: int) -> str | None:
    """Why the basis should stop growing in favour of the dense path, or ``None``: a
    third of ``R^n`` explored and nine tenths of it counted, so that the rank is at
    least a third of ``n`` and a certified count would need a basis of ``r`` to
    ``2r``."""
    if n <= limit and n // 3 <= size < n and count >= 0.9 * size:
        return (
            f"a basis of {size} (a third of n = {n}) counted {count}: a rank that "
            "large needs a basis of r to 2r, dearer than n products and eigvalsh"
        )
    return None


def dense_count(
    run: Run,
    threshold: float | str | None,
    krylov: BlockKrylov,
    block: int,
    diagnostics: dict[str, Any],
    kept: Kept | None = None,
) -> RankResult:
    """Complete the basis, compute ``H·Q⊥``, and count ``H``'s eigenvalues exactly.

    ``kept``: products taken before the basis (the pilot's, or ``auto``'s calibration
    and pilot), whose span is not read again where that costs less
    (``diagnostics["kept_products"]``): from an empty basis (the pilot's choice) ``Q⊥``
    is the identity, and an explicit matrix is read as it is, anything else costs
    ``n`` products less the kept span; a Krylov basis is first extended by the part of
    the kept span outside it (:func:`~matrank.estimators.completion.extended`).
    ``diagnostics``: what the phases before found (the pilot), copied into the
    result's.
    """
    run.enter("dense")
    diagnostics = dict(diagnostics)
    meter = run.meter
    basis = krylov.Q
    n, k = basis.shape
    diagnostics["switched_to_dense_at"] = k
    free = materialize.dispatch(type(run.oracle)) is not materialize.dispatch(object)
    if k and (free or _restart_is_cheaper(meter, n, k)):
        diagnostics["dense_restart"] = "identity"
        basis, k = basis[:, :0], 0
    if k == 0 and free:
        run.enter("eigvalsh")
        dense = materialize(run.oracle).to("cpu", torch.float64) * run.factor
        dense = 0.5 * (dense + dense.T)
        return _count(threshold, run, krylov, dense, 0.0, diagnostics)
    if collective(meter) is not None:  # each rank would orthonormalize in its rounding
        kept = None
    if k == 0 and kept is not None:
        if not _restart_is_cheaper(meter, n, kept.basis.shape[1]):
            symmetric, defect, record = completed_kept(run, kept, block)
            diagnostics["kept_products"] = record
            return _count(threshold, run, krylov, symmetric, defect, diagnostics)
        kept = None
    if kept is None or not _extending_pays(meter, n, k, kept.basis.shape[1]):
        symmetric, defect = completed(run, basis, krylov.T, block)
        return _count(threshold, run, krylov, symmetric, defect, diagnostics)
    basis, corner, added, asymmetry = extended(basis, krylov.T, kept)
    symmetric, defect = completed(run, basis, corner, block, (kept.basis, kept.image))
    defect = max(defect, asymmetry)
    diagnostics["kept_products"] = {"columns": added, "of": kept.taken, "defect": defect}
    return _count(threshold, run, krylov, symmetric, defect, diagnostics)


def _extending_pays(meter: Any, n: int, k: int, p: int) -> bool:
    """:func:`~matrank.estimators.completion.extending_pays` at this run's own product
    rate (no timed products yet: extend)."""
    if not meter.timed_matvecs:
        return True
    return extending_pays(meter.hvp_seconds / meter.timed_matvecs, n, k, p)


def _restart_is_cheaper(meter: Any, n: int, k: int) -> bool:
    """:func:`~matrank.estimators.completion.restart_is_cheaper` at this run's own
    product rate (no timed products yet: keep the basis)."""
    if not meter.timed_matvecs:
        return False
    return restart_is_cheaper(meter.hvp_seconds / meter.timed_matvecs, n, k)


def _count(
    threshold: float | str | None,
    run: Run,
    krylov: BlockKrylov,
    symmetric: torch.Tensor,
    asymmetry: float,
    diagnostics: dict[str, Any],
) -> RankResult:
    """The exact rule on the eigenvalues of a symmetric ``n × n`` float64 matrix."""
    n = symmetric.shape[0]
    values = np.linalg.eigvalsh(symmetric.numpy())[::-1].copy()
    del symmetric
    largest = float(np.abs(values).max()) if values.size else 0.0
    eps = input_eps(run.meter)
    floor = noise_floor(largest, n, eps, max(asymmetry, krylov.symmetry_defect))
    diagnostics.update(
        orthogonalization_seconds=krylov.orthogonalization_seconds,
        symmetry_defect=krylov.symmetry_defect,
        ritz_values=values,
        basis_size=n,
        random_columns=krylov.random_columns,
        certified=True,
        path="dense (switched)" if krylov.size else "dense",
    )
    return count_spectrum(run, values, floor, threshold, diagnostics)
