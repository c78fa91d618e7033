"""Scaling a run by a power of two, and reading its outputs back in the input's units.

A matrix and any positive multiple of it have the same rank. Products of size near the
ends of the float range make norms, squares and geometric means overflow or underflow;
a power-of-two factor (exact in floating point) brings them near 1 for the run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from ._oracle import Oracle, magnitude
from ._result import CountingCurve

__all__ = ["Scaled", "scale_factor", "unscale"]


# Outside this window of an operator's magnitude, the products are scaled by a power of
# two (exact in floating point) so that norms, squares and geometric means neither
# overflow nor underflow; every eigenvalue-valued output is scaled back.
_SAFE_MAGNITUDE = (2.0**-200, 2.0**200)


def scale_factor(oracle: Oracle) -> float:
    """The power of two that brings the operator's magnitude near 1 (1 inside the
    safe window). The exponent stays in float64's range: a subnormal magnitude
    (below 2^-1022) is brought up by 2^1023, into the window all the same."""
    size = magnitude(oracle)
    if size is None or not size > 0 or _SAFE_MAGNITUDE[0] <= size <= _SAFE_MAGNITUDE[1]:
        return 1.0
    return 2.0 ** min(-round(math.log2(size)), 1023)


class Scaled:
    """``factor·H`` (and ``factor·f``, ``factor·∇f``) for an oracle ``H``."""

    def __init__(self, inner: Oracle, factor: float) -> None:
        self.inner, self.factor = inner, factor

    dim = property(lambda self: self.inner.dim)
    dtype = property(lambda self: self.inner.dtype)
    device = property(lambda self: self.inner.device)
    theta0 = property(lambda self: self.inner.theta0)
    capabilities = property(lambda self: self.inner.capabilities)

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        return self.inner.hvp(V) * self.factor

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        return self.inner.grad(theta) * self.factor

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self.inner.loss(theta) * self.factor


# Diagnostics in units of eigenvalues (the density is per unit eigenvalue: inverse)
_EIGENVALUE_KEYS = (
    "noise_floor",
    "numpy_rule",
    "eigenvalues",
    "ritz_values",
    "symmetry_defect",
    "slq_threshold",
    "lambda_min",
    "lambda_max",
    "deflated_values",
    "complement_top",
    "reach",
    "density_grid",
    "mu_max",
    # Langevin: σ² and the losses scale with H, the step inversely
    "sigma2",
    "loss0",
    "loss_excess",
    "gradient_norm_at_theta0",
)


def unscale(
    factor: float,
    threshold: float | None,
    diagnostics: dict[str, Any],
    counts: CountingCurve | None,
) -> tuple[float | None, dict[str, Any], CountingCurve | None]:
    """Outputs of a run on ``factor·H`` in the units of ``H``."""

    def back(value: Any) -> Any:
        return value / factor if value is not None else None

    diagnostics = dict(diagnostics)
    for key in _EIGENVALUE_KEYS:
        if key in diagnostics:
            diagnostics[key] = back(diagnostics[key])
    for key in ("density", "step_size"):  # per unit eigenvalue
        if diagnostics.get(key) is not None:
            # a density of a spectrum at 1e-320 is past float64's range: inf, silently
            with np.errstate(over="ignore"):
                diagnostics[key] = diagnostics[key] * factor
    if "plateau" in diagnostics:
        plateau = dict(diagnostics["plateau"])
        for key in ("threshold", "lower", "upper", "runner_up_threshold"):
            plateau[key] = back(plateau.get(key))
        diagnostics["plateau"] = plateau
    diagnostics["scaled_by"] = factor
    if counts is not None:
        counts = dataclasses.replace(
            counts,
            thresholds=counts.thresholds / factor,
            values=None if counts.values is None else counts.values / factor,
            resolution=counts.resolution / factor,
        )
    return back(threshold), diagnostics, counts
