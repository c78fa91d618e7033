"""``auto``'s route for a matrix known by its products: the dense path or the Krylov count.

Both are priced in seconds on one model. The dense path costs ``n`` products and one
``eigvalsh`` (a timed block of products, :mod:`matrank._costs`). The Krylov count
costs what its basis needs: for a rank ``r`` with a gap, about ``2r`` products and
four blocks more (the catalogue's counts lie at ``0.1–1.0 × (2r + 200)``), and its
orthogonalization (each new block against the basis, twice: ``2·k²·n``
multiply-adds at the product rate of :mod:`matrank._costs`) and Ritz problems. ``r`` comes
from the Lanczos count's own pilot (:func:`~matrank.estimators.lanczos.pilot.quadrature_count`:
four probes of quadrature, 64 products at first), which also tells a spectrum the
quadrature cannot resolve at ``τ`` (a count still growing with the steps, from an
eighth of ``n``): a Krylov count must resolve every Ritz value near ``τ`` there and
ends on the dense path, so that goes dense at once. Above ``AUTO_EXACT_MAX_DIM`` the
Lanczos count prices itself (its pilot and switch); below it the choice is made here.

The polynomial filter joins the model where it answers the question asked: at a
given ``τ`` that its capped degree resolves (:func:`_filter_price`), priced at its
budget's products; cheapest, it is taken, and its count carries a standard error.
Without a ``τ`` it would pick its own from the density of states, and under its reach
it counts from the whole space, the dense path: not priced, and the reason says so.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch

from . import _clock
from ._costs import eigvalsh_seconds, gram_seconds
from ._oracle import Oracle, agree, collective, input_eps
from ._scaling import scale_factor
from .estimators.completion import Kept, Offer, kept_span, restart_is_cheaper
from .estimators.lanczos.pilot import (
    DENSE_FRACTION,
    PILOT_PRODUCTS,
    UNRESOLVED_FRACTION,
    quadrature_count,
)
from .estimators.polynomial.capture import REACH
from .estimators.polynomial.default import DEFAULT_BUDGET, DEGREE_CAP
from .numerics.chebyshev import ChebyshevFrame
from .numerics.threshold import noise_floor

__all__ = ["AUTO_DENSE_SECONDS", "calibrated", "kept_products", "operator_route"]

#: An operator's dense path (``n`` products and one ``eigvalsh``) predicted to take at
#: most this many seconds is taken by ``"auto"`` without pricing a Krylov count: the
#: pilot's products and the Krylov count's fixed costs (its assessments, Python per
#: block) would be a share of it.
AUTO_DENSE_SECONDS = 0.25

_TIMING_COLUMNS = 32
# The Krylov count's blocks beyond 2r.
_KRYLOV_EXTRA = 128


def operator_route(
    oracle: Oracle, key: Any, no_dual: str, threshold: Any, seed: int | None
) -> tuple[str, int, str, Offer | None]:
    """``"exact"``, ``"lanczos"`` or ``"polynomial"`` for an operator of
    ``n ≤ AUTO_EXACT_MAX_DIM``, the products the choice spent, why, and for the exact
    routes what they may use of it (:class:`~matrank.estimators.completion.Offer`): the
    span of its products (:func:`kept_products`) and, for a Krylov count, the pilot's
    estimate that prices its switch to the dense path."""
    taken: list[tuple[torch.Tensor, torch.Tensor]] = []
    route, timed, reason, seconds, pilot = _route(
        oracle, key, no_dual, threshold, seed, taken
    )
    if route == "polynomial":
        return route, timed, reason, None
    # the dense path completes the kept span where that is cheaper than reading it
    # again; a Krylov count extends its basis by it should it switch to that path
    kept = kept_products(oracle, taken, seconds if route == "exact" else None)
    if route == "exact":
        pilot = None
    if kept is None and pilot is None:
        return route, timed, reason, None
    return route, timed, reason, Offer(oracle.dim, kept, pilot)


def _route(
    oracle: Oracle,
    key: Any,
    no_dual: str,
    threshold: Any,
    seed: int | None,
    taken: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[str, int, str, float, tuple[float, float, float, bool, int] | None]:
    """:func:`operator_route`'s choice, with the calibrated seconds a product and the
    pilot's estimate (``None`` where none ran); the products join ``taken``."""
    n = oracle.dim
    calibration, timed = calibrated(oracle, key, taken)
    seconds = calibration["product_seconds"]
    dense = float(agree(oracle, n * seconds + calibration["eigh_seconds"]))
    how = (
        "the calibration kept for this operator"
        if timed == 0
        else "timed on the second of two blocks of products, the first a warm-up"
    )
    head = (
        f"dimension {n}, an operator whose {n} products and eigendecomposition take "
        f"about {dense:.2g} s ({how}; {seconds:.3g} s a product){no_dual}"
    )
    if dense <= AUTO_DENSE_SECONDS:
        return (
            "exact",
            timed,
            f"{head}: exact, too cheap to price a Krylov count",
            seconds,
            None,
        )
    if n <= PILOT_PRODUCTS + _KRYLOV_EXTRA:
        return (
            "exact",
            timed,
            (
                f"{head}: exact, the pilot's {PILOT_PRODUCTS} products and a Krylov count's "
                f"{_KRYLOV_EXTRA} beyond 2r would be n already"
            ),
            seconds,
            None,
        )
    count, stderr, growing, extent, cut, spent = _pilot(oracle, key, threshold, seed, taken)
    timed += spent
    estimate = (count, stderr, cut, growing, spent)
    pilot = f"; the pilot counted {count:.0f} ± {stderr:.2g} " + (
        f"({spent} products)" if spent else "(kept for this operator)"
    )
    polynomial, filtered = _filter_price(oracle, seconds, threshold, extent)
    pilot += filtered
    if growing and count >= UNRESOLVED_FRACTION * n:
        priced = (
            f"{pilot}, still growing with its quadrature's steps: a spectrum unresolved "
            "at τ, whose Krylov count ends on the dense path"
        )
        krylov = math.inf
    elif count >= DENSE_FRACTION * n:
        priced, krylov = f"{pilot}, at least half of n", math.inf
    else:
        products = min(n, math.ceil(2 * (count + 2 * stderr)) + _KRYLOV_EXTRA)
        krylov = float(
            agree(
                oracle,
                products * seconds
                + 2 * gram_seconds(products, n)
                + 2 * eigvalsh_seconds(products),
            )
        )
        priced = f"{pilot}: a Krylov count of about {products} products, {krylov:.2g} s"
    if polynomial < min(dense, krylov):
        verdict = "the polynomial filter, its count an estimate with a standard error"
        route, reason = "polynomial", f"{head}{priced}; cheapest: {verdict}"
    elif krylov < dense:
        route, reason = "lanczos", f"{head}{priced}, less: block Krylov counting"
    elif krylov == math.inf:
        route, reason = "exact", f"{head}{priced}: exact"
    else:
        route, reason = "exact", f"{head}{priced}, no less: exact"
    return route, timed, reason, seconds, estimate


def _filter_price(
    oracle: Oracle, seconds: float, threshold: Any, extent: tuple[float, float]
) -> tuple[float, str]:
    """The polynomial filter's predicted seconds (``inf`` where it cannot answer the
    question asked) and a clause for the reason.

    The filter answers at a given ``τ`` only: with none (or ``"floor"``) it picks its
    own from the density of states, or (``n ≤ 2048``) counts the whole space, the dense
    path. Its capped degree resolves ``τ`` only from ``reach`` above zero (about
    ``1.4e-6`` of the spectrum's width; ``extent``: the pilot's extreme nodes, in the
    run's units as ``τ`` is scaled here); under that it counts from the whole space,
    the dense path again. Where it reaches ``τ`` it spends its budget on probes: that
    many products (its recurrences' vector work is a few ``n``-vectors a product)."""
    if not isinstance(threshold, float | int) or isinstance(threshold, bool):
        return math.inf, ""
    low, high = extent
    # a node below the noise floor's negative proves a negative eigenvalue (as the
    # filter's own bounds read their Ritz values); a rounding-level one does not
    negative = low < -noise_floor(max(high, -low), oracle.dim, input_eps(oracle))
    width = high - low if negative else high
    frame = ChebyshevFrame(
        low=low - 0.01 * width if negative else 0.0, high=high + 0.01 * width
    )
    reach = frame.reach(REACH / DEGREE_CAP)
    factor = scale_factor(oracle)
    if float(threshold) * factor < reach:
        return math.inf, (
            f", a polynomial filter resolving τ only from {reach / factor:.2g} "
            f"(degree {DEGREE_CAP})"
        )
    cost = float(agree(oracle, DEFAULT_BUDGET * seconds))
    return (
        cost,
        f", a polynomial filter at τ at most {DEFAULT_BUDGET} products, {cost:.2g} s",
    )


def kept_products(
    oracle: Oracle, taken: list[tuple[torch.Tensor, torch.Tensor]], seconds: float | None
) -> Kept | None:
    """The span of the products ``auto`` took choosing a route (its calibration's unit
    columns, its pilot's Lanczos vectors), for the dense path to complete rather than
    read again (:mod:`matrank.estimators.completion`); ``None`` where reading them
    again costs less at the calibrated rate (``seconds`` a product; ``None``: not
    priced here, as for a Krylov count, whose switch prices it), or for a
    data-parallel oracle, whose ranks would each orthonormalize in their own
    rounding."""
    if not taken or collective(oracle) is not None:
        return None
    images = torch.cat([y for _, y in taken], 1)
    if not bool(torch.isfinite(images).all()):
        return None  # the dense path reads H and refuses it, saying why
    kept = kept_span(torch.cat([v for v, _ in taken], 1), images)
    if seconds is not None and restart_is_cheaper(seconds, oracle.dim, kept.basis.shape[1]):
        return None
    return kept


# The pilot's estimate, kept per operator like the calibration (with the threshold and
# seed it was made for), so that a later call takes the same route for free.
_PILOTS: weakref.WeakKeyDictionary[Any, dict[Any, tuple[float, float, bool]]] = (
    weakref.WeakKeyDictionary()
)


def _pilot(
    oracle: Oracle,
    key: Any,
    threshold: Any,
    seed: int | None,
    taken: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[float, float, bool, tuple[float, float], float, int]:
    """The pilot's count, its standard error, whether it still grew, its extreme nodes
    and the threshold they gave (in the run's units), and the products spent (0 when
    kept from an earlier call on ``key``); the products join ``taken``."""
    option = threshold if isinstance(threshold, float | int | str) else None
    kept = recall(_PILOTS, key) or {}
    if (option, seed) in kept:
        return (*kept[option, seed], 0)
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    spent = [0]
    # in the run's units: a magnitude outside float64's safe window would overflow the
    # quadrature's recurrence (an operator of 1e250 failed in eigh); kept products
    # stay in the operator's own, as the route's run scales its own
    factor = scale_factor(oracle)

    def product(block: torch.Tensor) -> torch.Tensor:
        spent[0] += block.shape[1]
        image = oracle.hvp(block)
        if taken is not None:
            taken.append((block.clone(), image))
        return image * factor

    with torch.no_grad():
        count, stderr, cut, growing, extent = quadrature_count(
            product,
            oracle.dim,
            option * factor if isinstance(option, float | int) else option,
            input_eps(oracle),
            generator=generator,
            dtype=oracle.dtype,
            device=oracle.device,
            grow=True,
        )
    found = (
        float(agree(oracle, count)),
        float(agree(oracle, stderr)),
        bool(agree(oracle, growing)),
        (float(agree(oracle, extent[0])), float(agree(oracle, extent[1]))),
        float(agree(oracle, cut)),
    )
    remember(_PILOTS, key, {**kept, (option, seed): found})
    return (*found, spent[0])


# The calibration of an operator's products, kept per operator for the life of the
# object, so that the same operator gets the same route on every call of a session.
_CALIBRATIONS: weakref.WeakKeyDictionary[Any, dict[str, float]] = (
    weakref.WeakKeyDictionary()
)


def calibrated(
    oracle: Oracle, key: Any, taken: list[tuple[torch.Tensor, torch.Tensor]] | None = None
) -> tuple[dict[str, float], int]:
    """Seconds a product and an ``n × n`` ``eigvalsh`` take (the latter predicted by
    :mod:`matrank._costs`), and the products spent
    timing them: two blocks, the first a warm-up (tracing, caches, thread start-up:
    1.9 s against 3 ms for the next block of a 275-parameter GGN), the second timed.
    Recorded for ``key`` (the object the user passed), so that a later call on it
    reuses the numbers and takes the same route; the timed block joins ``taken``."""
    known = recall(_CALIBRATIONS, key)
    if known is not None:
        return known, 0
    n = oracle.dim
    columns = min(_TIMING_COLUMNS, n)
    block = torch.zeros(n, columns, dtype=oracle.dtype, device=oracle.device)
    block[:columns] = torch.eye(columns, dtype=oracle.dtype, device=oracle.device)
    with torch.no_grad():
        oracle.hvp(block)
        start = _clock.now()
        image = oracle.hvp(block)
        seconds = _clock.now() - start
    if taken is not None:
        taken.append((block, image))
    calibration = {
        "product_seconds": seconds / columns,
        "eigh_seconds": eigvalsh_seconds(n),
    }
    remember(_CALIBRATIONS, key, calibration)
    return calibration, 2 * columns


def recall(table: weakref.WeakKeyDictionary[Any, Any], key: Any) -> Any:
    """What ``table`` holds for ``key``; ``None`` when nothing, or when ``key`` cannot
    be weakly referenced (then every call measures afresh)."""
    try:
        return table.get(key)
    except TypeError:
        return None


def remember(table: weakref.WeakKeyDictionary[Any, Any], key: Any, value: Any) -> None:
    try:
        table[key] = value
    except TypeError:  # not weakly referable
        pass
