"""The Lanczos count past its exact budget: deflation by the converged Ritz vectors, then
stochastic Lanczos quadrature on the complement."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch

from ..._result import Status
from ..._run import Run
from ...numerics.chebyshev import ChebyshevFrame
from ...numerics.deflation import converged_basis, projected
from ...numerics.krylov import BlockKrylov
from ...numerics.quadrature import lanczos_quadrature
from ...numerics.threshold import ThresholdChoice, noise_floor, resolve_threshold
from ...numerics.trace import mean_and_stderr, probe_block
from .plan import BASIS_BYTES, LanczosPlan

__all__ = ["SlqCount", "slq_count"]


@dataclasses.dataclass(frozen=True)
class SlqCount:
    """The count past the basis: ``deflated + mean`` of the probes' counts."""

    rank: float
    stderr: float | None
    status: Status
    threshold: float  #: τ of the count (re-read from the nodes under the plateau rule)
    floor: float  #: the noise floor, raised by the nodes' top where it is higher
    diagnostics: dict[str, Any]


def slq_count(
    run: Run,
    plan: LanczosPlan,
    krylov: BlockKrylov,
    values: torch.Tensor,
    vectors: torch.Tensor,
    threshold: float,
    floor: float,
) -> SlqCount:
    """Deflate by the converged Ritz vectors above τ, then SLQ on the complement."""
    meter, generator = run.meter, run.generator
    n, dtype, device = meter.dim, meter.dtype, meter.device
    residuals = krylov.residual_norms(vectors)
    converged = (values.abs() - residuals > threshold) & (residuals <= 1e-3 * values.abs())
    captured = converged_basis(krylov, vectors, converged)  # (n, c)
    deflated = int(captured.shape[1])
    remaining = plan.max_matvecs - meter.matvecs
    steps = min(plan.slq_steps, n - deflated)
    n_probes = plan.n_probes or remaining // steps
    if n_probes < 2 or steps < 2:
        return SlqCount(
            float((values.abs() > threshold).sum()),
            None,
            Status.BUDGET_EXHAUSTED,
            threshold,
            floor,
            {"path": "krylov (budget too small for SLQ)"},
        )

    product = projected(meter.hvp, captured)

    probes = probe_block(
        n,
        n_probes,
        kind=plan.probes,
        generator=generator,
        dtype=dtype,
        device=device,
        orthogonal_to=captured,
    )
    chunk = max(1, BASIS_BYTES // (8 * n * steps))
    all_nodes: list[torch.Tensor] = []
    all_weights: list[torch.Tensor] = []
    halves: list[tuple[torch.Tensor, torch.Tensor]] = []
    for begin in range(0, n_probes, chunk):
        block = functools.partial(
            _with_half_rule, product, probes[:, begin : begin + chunk], steps
        )
        # a recorded block holds both rules (an older journal, the whole rule only)
        nodes, weights, half = run.cached(f"slq {begin}", block, expect=_both_rules)
        all_nodes.append(nodes)
        all_weights.append(weights)
        halves.append(half)
    nodes, weights = torch.cat(all_nodes), torch.cat(all_weights)
    # the nodes see the whole spectrum: their top raises a floor that a small basis
    # (or none) set too low, so that nothing under rounding is ever counted
    top = float(nodes.abs().max()) if nodes.numel() else 0.0
    floor = max(floor, noise_floor(top, n, plan.eps))
    diagnostics: dict[str, Any] = {}
    choice = None
    if plan.threshold == "floor":
        threshold = floor
    elif plan.threshold is None:
        threshold, choice = _reread(values, converged, nodes, weights, floor)
        diagnostics["plateau"] = dataclasses.asdict(choice)
    samples = (weights * (nodes.abs() > threshold)).sum(dim=1)
    mean, stderr = mean_and_stderr(samples)
    unresolved = _unresolved(nodes, weights, threshold, floor, steps)
    moved, moved_stderr = _moved(samples, halves, threshold)
    diagnostics.update(path="slq", deflated=deflated, slq_probes=n_probes)
    diagnostics.update(slq_steps=steps, slq_samples=samples.numpy())
    diagnostics.update(slq_threshold=float(threshold), slq_unresolved=unresolved)
    diagnostics.update(slq_moved=moved)
    status = Status.of_choice(choice)
    remedy = _remedy(unresolved, stderr, (moved, moved_stderr, mean), steps, threshold)
    if remedy is not None:
        status = Status.BELOW_RESOLUTION
        diagnostics["remedy"] = remedy
    return SlqCount(deflated + mean, stderr, status, threshold, floor, diagnostics)


def _remedy(
    unresolved: float,
    stderr: float,
    moved: tuple[float, float, float],
    steps: int,
    threshold: float,
) -> str | None:
    """Why the count is not resolved at τ, with what to change, or ``None``:
    eigenvalues within the quadrature's reach around zero inside an indefinite
    spectrum (:func:`_unresolved`), or a count that moved by three of its stderr, at
    least one and 2 % of it, as the rule doubled (``moved``: the move, its stderr and
    the count; :func:`_moved`)."""
    change = (
        "raise `dense_max` (the exact dense count) or `max_basis` (a certified Krylov "
        "count), or pass a larger `threshold=`"
    )
    if unresolved >= max(1.0, stderr):
        return (
            f"about {unresolved:.3g} eigenvalues lie within the resolution of {steps}-step "
            "quadrature around zero, inside an indefinite spectrum, and "
            f"τ = {threshold:.3g} is among them: the count is not resolved; {change}"
        )
    shift, spread, count = moved
    if abs(shift) >= max(1.0, 3 * spread, 0.02 * count):
        return (
            f"the count moved by {shift:.3g} ± {spread:.2g} from {steps // 2} to {steps} "
            f"quadrature nodes: τ = {threshold:.3g} lies where the spectrum is still "
            f"unresolved (a continuum reaching towards zero); {change} (or `slq_steps`)"
        )
    return None


def _with_half_rule(
    product: Any, probes: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The ``steps``-node rule of each probe, and the rule of its first ``steps // 2``
    steps (free: the leading part of the same Lanczos run)."""
    half: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(nodes: torch.Tensor, weights: torch.Tensor) -> bool:
        half.append((nodes, weights))
        return False

    checks = [steps // 2] if steps >= 4 else []
    nodes, weights = lanczos_quadrature(
        product, probes, steps, fixed_node=0.0, enough=keep, checks=checks
    )
    return nodes, weights, (half[0] if half else (nodes, weights))


def _both_rules(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 3


def _moved(
    samples: torch.Tensor,
    halves: list[tuple[torch.Tensor, torch.Tensor]],
    threshold: float,
) -> tuple[float, float]:
    """How much each probe's count moved from the half rule to the whole one (mean and
    stderr of the paired differences): a count that still moves as the quadrature
    doubles its resolution has not converged at τ. A PSD spectrum keeps zero at the
    end of its interval, where the reach of :func:`_unresolved` does not apply, but a
    continuum towards zero (a trained network's GGN over twelve decades) still hides
    eigenvalues above τ in the zero node's mass: 644 counted, ``CONVERGED``, where
    1222 lie above τ (by hand; ``tests/test_lanczos.py`` holds a log-uniform case)."""
    half = torch.cat(
        [(weights * (nodes.abs() > threshold)).sum(dim=1) for nodes, weights in halves]
    )
    return mean_and_stderr(samples - half)


def _unresolved(
    nodes: torch.Tensor, weights: torch.Tensor, threshold: float, floor: float, steps: int
) -> float:
    """Eigenvalues per probe that the quadrature cannot place on either side of τ.

    A rule of ``steps`` nodes integrates polynomials of degree ``2·steps − 1``, which
    resolve a step only to about ``3π/(2·steps − 1)`` in the angle ``arccos x`` of the
    spectrum's interval (the polynomial filter's reach). In an indefinite spectrum
    zero lies inside the interval, where that angle spans ``±0.07·‖H‖`` at 64 steps,
    and the node fixed at zero is no Gauss–Radau end point: the mass of a continuum
    around zero (a trained network's Hessian) splits between nodes at random. A τ
    under the reach, with node mass between the noise floor and the reach, is then
    unresolved (``tests/test_lanczos.py``: 700 eigenvalues counted more than five
    stderr off, ``CONVERGED``, before). A PSD spectrum keeps zero at the end, where
    the rule is sound."""
    if not nodes.numel() or float(nodes.min()) >= -floor:
        return 0.0
    frame = ChebyshevFrame(float(nodes.min()), max(0.0, float(nodes.max())))
    reach = frame.reach(3 * math.pi / max(1, 2 * steps - 1))
    if threshold >= reach:
        return 0.0
    magnitudes = nodes.abs()
    near = (magnitudes > floor) & (magnitudes <= reach)
    return float((weights * near).sum(dim=1).mean())


def _reread(
    values: torch.Tensor,
    converged: torch.Tensor,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    floor: float,
) -> tuple[float, ThresholdChoice]:
    """τ by the plateau rule on the Ritz values and the quadrature nodes that carry real
    mass (≥ 0.01 eigenvalue per probe; nodes in a spectral gap carry almost none)."""
    pooled = torch.cat([values.abs(), nodes[weights >= 0.01].abs()]).numpy()
    threshold, choice = resolve_threshold(pooled, floor, None)
    assert choice is not None  # the plateau rule always reports its choice
    if choice.runner_up_threshold is not None:  # a count of nodes: read it as one
        other = choice.runner_up_threshold
        kept = int((values[converged].abs() > other).sum())
        rest = (weights * (nodes.abs() > other)).sum(dim=1).mean()
        choice = dataclasses.replace(choice, runner_up_count=kept + float(rest))
    return threshold, choice
