"""The polynomial filter's whole-space path: when ``n`` products fit the budget, the
products of the identity's columns are the matrix, and its spectrum needs no filter."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..._result import RankResult, Status
from ...numerics.threshold import counting_curve, resolve_threshold
from .capture import PRODUCT_COLUMNS

if TYPE_CHECKING:
    from .default import DefaultFilter

__all__ = ["UNREACHED_WHOLE_MAX", "WHOLE_SPACE_DENSITY_DEGREE", "unreached", "whole_space"]

# Chebyshev moments of the density of states drawn from the whole space's eigenvalues
WHOLE_SPACE_DENSITY_DEGREE = 200

#: Largest ``n`` whose whole space the default filter takes for a given ``τ`` that no
#: degree up to the cap reaches: the filter would spend its whole budget (15,000
#: products) on a count it cannot vouch for, where ``n`` products and an ``eigvalsh``
#: (about 30 s and 0.5 GB at this size on two cores) count it exactly.
UNREACHED_WHOLE_MAX = 8192


def unreached(self: DefaultFilter, threshold: Any, remaining: int) -> str | None:
    """Why a given ``τ`` is counted from the whole space, or ``None`` (then the filter
    counts it): the degree ``τ`` asks for, capped, does not reach it, and the ``n``
    products fit both the budget left and ``UNREACHED_WHOLE_MAX``."""
    if not isinstance(threshold, float | int):
        return None
    degree = self.planned_degree(float(threshold))
    if self.reaches(float(threshold), degree) or self.n > min(
        remaining, UNREACHED_WHOLE_MAX
    ):
        return None
    reach = self.reach(degree)
    return (
        f"threshold {threshold:.3g} lies under the reach {reach:.3g} of degree {degree}, "
        f"the highest the filter takes: its count there would not be vouched for, and "
        f"the whole space's {self.n} products cost less than its budget ({remaining})"
    )


def whole_space(self: DefaultFilter, why: str | None = None) -> RankResult:
    """The spectrum from the products of all ``n`` unit vectors, no probes.

    When the budget left after the bounds holds ``n ≤ WHOLE_SPACE_MAX`` products,
    any filter would cost more than the spectrum itself: the products of the
    identity's columns are the matrix, whose symmetric part's eigenvalues the exact
    methods' plateau rule reads (a Krylov basis of all of ``R^n`` gives the same
    values after an ``O(n³)`` orthogonalization: 2000 × 2000, 3.4 s against 1 s).
    The asymmetry of the products, ``‖A − Aᵀ‖_F`` as in the exact count, joins the
    noise floor. ``why`` (:func:`unreached`) is a given ``τ``'s reason, kept in the
    diagnostics; such a ``τ`` under the noise floor ends ``BELOW_RESOLUTION``.
    """
    meter, n = self.meter, self.n
    block = PRODUCT_COLUMNS
    columns = []

    def product(first: int) -> torch.Tensor:
        before = meter.matvecs
        unit = torch.zeros(n, min(block, n - first), dtype=meter.dtype)
        unit[first : first + unit.shape[1]] = torch.eye(unit.shape[1], dtype=meter.dtype)
        image = meter.hvp(unit.to(meter.device)).to("cpu", torch.float64)
        self.bar.update(meter.matvecs - before)
        return image

    for first in range(0, n, block):
        columns.append(self.run.cached(f"unit {first}", functools.partial(product, first)))
    matrix = torch.cat(columns, dim=1)
    asymmetry = float(torch.linalg.matrix_norm(matrix - matrix.T))  # as exact
    self.floor = max(self.floor, asymmetry)
    values = np.linalg.eigvalsh((0.5 * (matrix + matrix.T)).numpy())
    values = values[np.argsort(-np.abs(values))]  # as the Ritz values come
    self.deflated_values = values[np.abs(values) > self.floor]
    self.basis_size = n
    magnitudes = np.abs(self.deflated_values)
    threshold, choice = resolve_threshold(magnitudes, self.floor, self.options.threshold)
    self.exact_path, self.complement_top = True, 0.0
    status = Status.of_choice(choice)
    degree = WHOLE_SPACE_DENSITY_DEGREE
    diagnostics: dict[str, Any] = {
        "degree": 0,
        "n_probes": 0,
        "samples": np.zeros(0),
        "edge_stderr": 0.0,
        **({"plateau": dataclasses.asdict(choice)} if choice is not None else {}),
        "whole_space": why,
        **self._density(np.zeros((1, degree + 1)), degree),
    }
    counts = counting_curve(np.abs(values), self.floor, self.high)  # all of them
    counts = dataclasses.replace(counts, stderr=np.zeros_like(counts.counts))
    if why is not None and threshold < self.floor:
        status = Status.BELOW_RESOLUTION
        diagnostics["remedy"] = (
            f"threshold {threshold:.3g} is under the noise floor {self.floor:.3g}: "
            "eigenvalues below the floor are rounding; count above it"
        )
    rank = float((magnitudes > threshold).sum())
    return self._result(rank, 0.0, threshold, status, diagnostics, counts)
