"""The Lanczos count past its exact budget: deflation by the converged Ritz vectors, then
stochastic Lanczos quadrature on the complement."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from .._result import Status
from .._run import Run
from ..numerics.deflation import converged_basis, projected
from ..numerics.krylov import BlockKrylov
from ..numerics.quadrature import lanczos_quadrature
from ..numerics.threshold import noise_floor, resolve_threshold
from ..numerics.trace import mean_and_stderr, probe_block

__all__ = ["slq_count"]

# Memory for the SLQ bases, in bytes (as for the Krylov basis).
_BASIS_BYTES = 2 * 1024**3


def slq_count(
    options: Any,
    run: Run,
    krylov: BlockKrylov,
    values: torch.Tensor,
    vectors: torch.Tensor,
    threshold: float,
    max_matvecs: int,
    diagnostics: dict[str, Any],
    eps: float,
) -> tuple[float, float | None, Status]:
    """Deflate by the converged Ritz vectors above τ, then SLQ on the complement."""
    meter, generator = run.meter, run.generator
    n, dtype, device = meter.dim, meter.dtype, meter.device
    residuals = krylov.residual_norms(vectors)
    converged = (values.abs() - residuals > threshold) & (residuals <= 1e-3 * values.abs())
    captured = converged_basis(krylov, vectors, converged)  # (n, c)
    deflated = int(captured.shape[1])
    remaining = max_matvecs - meter.matvecs
    steps = min(options.slq_steps, n - deflated)
    n_probes = options.n_probes or remaining // steps
    if n_probes < 2 or steps < 2:
        diagnostics.update(path="krylov (budget too small for SLQ)")
        return float((values.abs() > threshold).sum()), None, Status.BUDGET_EXHAUSTED

    product = projected(meter.hvp, captured)

    probes = probe_block(
        n,
        n_probes,
        kind=options.probes,
        generator=generator,
        dtype=dtype,
        device=device,
        orthogonal_to=captured,
    )
    chunk = max(1, _BASIS_BYTES // (8 * n * steps))
    all_nodes: list[torch.Tensor] = []
    all_weights: list[torch.Tensor] = []
    for begin in range(0, n_probes, chunk):
        block = functools.partial(
            lanczos_quadrature,
            product,
            probes[:, begin : begin + chunk],
            steps,
            fixed_node=0.0,
        )
        nodes, weights = run.cached(f"slq {begin}", block)
        all_nodes.append(nodes)
        all_weights.append(weights)
    nodes, weights = torch.cat(all_nodes), torch.cat(all_weights)
    # the nodes see the whole spectrum: their top raises a floor that a small basis
    # (or none) set too low, so that nothing under rounding is ever counted
    top = float(nodes.abs().max()) if nodes.numel() else 0.0
    floor = max(diagnostics["noise_floor"], noise_floor(top, n, eps))
    diagnostics["noise_floor"] = floor
    choice = None
    if options.threshold == "floor":
        threshold = floor
    elif options.threshold is None:
        # Re-read τ from the quadrature nodes that carry real mass (≥ 0.01 eigenvalue
        # per probe); nodes in a spectral gap carry almost none.
        pooled = torch.cat([values.abs(), nodes[weights >= 0.01].abs()]).numpy()
        threshold, choice = resolve_threshold(pooled, floor, None)
        assert choice is not None  # the plateau rule always reports its choice
        if choice.runner_up_threshold is not None:  # a count of nodes: read it as one
            other = choice.runner_up_threshold
            kept = int((values[converged].abs() > other).sum())
            rest = (weights * (nodes.abs() > other)).sum(dim=1).mean()
            choice = dataclasses.replace(choice, runner_up_count=kept + float(rest))
        diagnostics["plateau"] = dataclasses.asdict(choice)
    samples = (weights * (nodes.abs() > threshold)).sum(dim=1)
    mean, stderr = mean_and_stderr(samples)
    diagnostics.update(
        path="slq",
        deflated=deflated,
        slq_probes=n_probes,
        slq_steps=steps,
        slq_samples=samples.numpy(),
        slq_threshold=float(threshold),
    )
    return deflated + mean, stderr, Status.of_choice(choice)
