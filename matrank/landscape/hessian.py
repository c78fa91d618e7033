"""The Hessian terms of one ordering at one size, and their summary over orderings.

Up to ``DENSE_MAX_DIM`` parameters each ``H_k`` (and the added sample's Hessian) is
formed by :func:`~matrank.materialize`, and its norm, trace and rank are read off the
dense matrix (exact, no standard error); beyond, Lanczos to 1e-10 on products
(:func:`~matrank.numerics.krylov.spectral_bounds`), Hutch++'s trace
(:func:`~matrank.numerics.trace.hutchpp`) and the rank method on the operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._oracle import materialize
from ..numerics.krylov import spectral_bounds
from ..numerics.trace import hutchpp

__all__ = [
    "DENSE_MAX_DIM",
    "dense",
    "dense_spectrum",
    "extremes",
    "ordering_terms",
    "summarize",
]

#: Up to this many parameters the Hessians are formed and read exactly.
DENSE_MAX_DIM = 1024


def ordering_terms(
    H_k: Any,
    H_x: Any,
    k: int,
    *,
    generator: torch.Generator,
    trace_products: int,
    rank: Callable[[Any], Any],
    points: torch.Tensor,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """One ordering's terms at size ``k``: ``‖H_{k+1} − H_k‖₂``, ``λmax(H_k)``,
    ``tr(H_k)``, ``rank(H_k)`` (with their standard errors) and ``|L_{k+1} − L_k|`` at
    the displaced points (radius-major)."""
    clock = time.perf_counter()
    terms: dict[str, Any] = {}
    ranked: Any = H_k
    if H_k.dim <= DENSE_MAX_DIM:
        ranked = dense(H_k)
        difference = np.linalg.eigvalsh((dense(H_x) - ranked) / (k + 1))
        terms["difference"] = float(np.abs(difference).max())
        terms["lmax"] = float(np.linalg.eigvalsh(ranked).max())
        terms["trace"], terms["trace_se"] = float(np.trace(ranked)), 0.0
    else:

        def apply(V: torch.Tensor) -> torch.Tensor:
            return (H_x.hvp(V) - H_k.hvp(V)) / (k + 1)

        low, high = extremes(apply, H_k, generator)
        terms["difference"] = max(abs(low), abs(high))
        terms["lmax"] = extremes(H_k.hvp, H_k, generator)[1]
        with torch.no_grad():
            terms["trace"], terms["trace_se"] = hutchpp(
                H_k.hvp,
                H_k.dim,
                trace_products,
                generator=generator,
                dtype=H_k.dtype,
                device=H_k.device,
            )
    seconds["hessian"] += time.perf_counter() - clock
    clock = time.perf_counter()
    result = rank(ranked)
    terms["rank"], terms["rank_se"] = result.rank, result.stderr or 0.0
    seconds["rank"] += time.perf_counter() - clock
    clock = time.perf_counter()
    with torch.no_grad():
        change = (H_x.loss(points) - H_k.loss(points)) / (k + 1)
    terms["change"] = change.abs().to(torch.float64).numpy()
    seconds["quadratic"] += time.perf_counter() - clock
    return terms


def summarize(rows: list[list[dict[str, Any]]]) -> dict[str, np.ndarray]:
    """Mean and spread over the orderings at each size; the quadratic term of the
    ordering closest to its bound, and whether any ordering broke it."""
    out: dict[str, np.ndarray] = {}
    names = {
        "difference": "hessian_difference",
        "lmax": "lambda_max",
        "trace": "trace",
        "rank": "rank",
    }
    for key, name in names.items():
        values = np.array([[terms[key] for terms in row] for row in rows])
        out[name] = values.mean(axis=1)
        count = values.shape[1]
        out[name + "_spread"] = values.std(axis=1, ddof=1) if count > 1 else 0 * out[name]
    for key, name in (("trace_se", "trace_stderr"), ("rank_se", "rank_stderr")):
        errors = np.array([[terms[key] for terms in row] for row in rows])
        out[name] = np.sqrt((errors**2).mean(axis=1) / errors.shape[1])
    measured = np.array([[terms["measured"] for terms in row] for row in rows])
    bound = np.array([[terms["bound"] for terms in row] for row in rows])
    theorem = np.array([[terms["theorem"] for terms in row] for row in rows])
    # a zero bound (a dead network's zero Hessian and equal losses) is broken by any
    # change at all
    ratio = np.where(
        bound > 0,
        measured / np.where(bound > 0, bound, 1.0),
        np.where(measured > 0, np.inf, 0.0),
    )
    closest = np.argmax(ratio, axis=1)[:, None, :]  # (sizes, 1, radii)
    out["measured"] = np.take_along_axis(measured, closest, axis=1)[:, 0]
    out["bound"] = np.take_along_axis(bound, closest, axis=1)[:, 0]
    out["theorem_bound"] = np.take_along_axis(theorem, closest, axis=1)[:, 0]
    out["violations"] = np.asarray((measured > bound * (1 + 1e-9)).any(axis=1))
    return out


def dense(oracle: Any) -> np.ndarray:
    """``H`` in float64 (:func:`~matrank.materialize`: free for an explicit matrix, ``n``
    products otherwise), symmetrized (the products are symmetric to rounding)."""
    with torch.no_grad():
        dense = materialize(oracle).to("cpu", torch.float64).numpy()
    return 0.5 * (dense + dense.T)


def dense_spectrum(oracle: Any) -> np.ndarray:
    return np.linalg.eigvalsh(dense(oracle))


def extremes(
    apply: Callable[[torch.Tensor], torch.Tensor], oracle: Any, generator: torch.Generator
) -> tuple[float, float]:
    """The smallest and largest eigenvalue of the symmetric operator ``apply`` (blocks
    ``(n, b)`` in the oracle's dtype) to 1e-10 of its norm: Lanczos from a seeded start
    until the residual bounds are that tight (:func:`spectral_bounds`)."""
    with torch.no_grad():
        low, high, _ = spectral_bounds(
            apply,
            oracle.dim,
            steps=20,
            generator=generator,
            dtype=oracle.dtype,
            device=oracle.device,
            rtol=1e-10,
        )
    return low, high
