"""The oracle contract check, shipped so that users can test their own oracles."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._oracle import Capability, as_oracle, gradient_precision
from .._validation import OperatorContractError

__all__ = ["check_oracle"]


def check_oracle(obj: Any, *, seed: int = 0, n_probes: int = 4, rtol: float | None = None):
    """Check that an oracle keeps the protocol; raise listing every violation.

    Checks, for what the oracle's ``capabilities`` claim: shapes and dtypes of ``hvp``,
    ``grad`` and ``loss`` answers; that a block product equals the products of its
    columns; symmetry ``⟨Ax, y⟩ = ⟨x, Ay⟩``; linearity; determinism of repeated
    products; and, when both ``grad`` and ``hvp`` exist, that a central difference of
    gradients at ``theta0`` matches ``hvp``.

    Parameters
    ----------
    obj : object
        An oracle or anything :func:`matrank.as_oracle` accepts.
    seed : int, default=0
        Seed of the local generator for the probes.
    n_probes : int, default=4
        Block size of the probes.
    rtol : float or None
        Relative tolerance of the algebraic checks; default ``100·sqrt(n)·eps`` of the
        oracle's dtype (rounding in a symmetric product grows like ``sqrt(n)·eps``).

    Returns
    -------
    dict
        The measured relative defects, by check name.

    Raises
    ------
    OperatorContractError
        With one line per violated check.

    Examples
    --------
    >>> import numpy as np
    >>> defects = check_oracle(np.diag([2.0, 1.0, 0.0]))
    >>> sorted(defects)
    ['blocks', 'determinism', 'finite_difference', 'linearity', 'symmetry']
    """
    oracle = as_oracle(obj)
    n, dtype, device = oracle.dim, oracle.dtype, oracle.device
    eps = torch.finfo(dtype).eps
    rtol = 100 * math.sqrt(n) * eps if rtol is None else rtol
    generator = torch.Generator().manual_seed(seed)

    def probes(k: int) -> torch.Tensor:
        return torch.randn(n, k, generator=generator, dtype=torch.float64).to(
            dtype=dtype, device=device
        )

    failures: list[str] = []
    defects: dict[str, float] = {}

    def record(name: str, defect: float, tolerance: float, what: str) -> None:
        defects[name] = defect
        if not defect <= tolerance:
            failures.append(f"{what}: relative defect {defect:.3g} > {tolerance:.3g}")

    capabilities = oracle.capabilities
    if Capability.HVP in capabilities:
        V = probes(n_probes)
        AV = oracle.hvp(V)
        _shape(AV, (n, n_probes), dtype, "hvp(V)", failures)
        scale = float(AV.norm()) or 1.0
        columns = torch.cat([oracle.hvp(V[:, j : j + 1]) for j in range(n_probes)], dim=1)
        record(
            "blocks",
            float((columns - AV).norm()) / scale,
            rtol,
            "hvp of a block != hvp of its columns",
        )
        record(
            "determinism",
            float((oracle.hvp(V) - AV).norm()) / scale,
            rtol,
            "hvp is not deterministic",
        )
        half = n_probes // 2 or 1
        x, y = V[:, :half], V[:, half : 2 * half] if n_probes > 1 else V[:, :half]
        ax, ay = AV[:, :half], AV[:, half : 2 * half] if n_probes > 1 else AV[:, :half]
        cross = float(((y * ax).sum(0) - (x * ay).sum(0)).abs().max())
        norm = float((ax.norm(dim=0) * y.norm(dim=0)).max()) or 1.0
        record("symmetry", cross / norm, rtol, "⟨Ax, y⟩ != ⟨x, Ay⟩")
        combo = oracle.hvp(2.0 * V[:, :1] - 3.0 * V[:, -1:])
        expected = 2.0 * AV[:, :1] - 3.0 * AV[:, -1:]
        record(
            "linearity", float((combo - expected).norm()) / scale, rtol, "hvp is not linear"
        )
    if Capability.GRAD in capabilities:
        theta = oracle.theta0[None, :] + probes(n_probes).T
        g = oracle.grad(theta)
        _shape(g, (n_probes, n), dtype, "grad(theta)", failures)
        if Capability.HVP in capabilities:
            # Central differences at theta0 have error O(h²) in the step: h = eps^(1/3),
            # eps of the precision the gradient is computed in.
            eps = torch.finfo(gradient_precision(oracle)).eps
            v = probes(1).T / math.sqrt(n)
            h = eps ** (1 / 3) * max(1.0, float(oracle.theta0.abs().max()))
            plus = oracle.grad(oracle.theta0[None, :] + h * v)
            minus = oracle.grad(oracle.theta0[None, :] - h * v)
            difference = ((plus - minus) / (2 * h)).T
            hv = oracle.hvp(v.T)
            relative = float((difference - hv).norm()) / (float(hv.norm()) or 1.0)
            record(
                "finite_difference",
                relative,
                1e3 * eps ** (2 / 3),
                "grad differences != hvp",
            )
    if Capability.LOSS in capabilities:
        theta = oracle.theta0[None, :] + probes(n_probes).T
        _shape(oracle.loss(theta), (n_probes,), dtype, "loss(theta)", failures)
    if failures:
        raise OperatorContractError(
            f"{type(getattr(oracle, 'inner', oracle)).__name__} breaks the oracle contract:\n- "
            + "\n- ".join(failures)
        )
    return defects


def _shape(
    result: Any, shape: tuple[int, ...], dtype: torch.dtype, what: str, failures: list[str]
):
    if not isinstance(result, torch.Tensor):
        failures.append(f"{what} returned a {type(result).__name__}, not a torch.Tensor")
    elif tuple(result.shape) != shape or result.dtype != dtype:
        failures.append(
            f"{what} returned shape {tuple(result.shape)} and dtype {result.dtype}; "
            f"expected {shape} and {dtype}"
        )
