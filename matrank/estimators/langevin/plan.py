"""The Langevin run's settings: the variant's defaults, the step aimed at a threshold,
the noise level, the preconditioner.

What :class:`~matrank.LangevinRank` resolves at ``estimate`` time and never writes back
into its fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from ..._run import Run
from ..._validation import MatrankTypeError, MatrankValueError, check_int, message

if TYPE_CHECKING:
    from . import LangevinRank

__all__ = [
    "CHECK_GRADIENTS",
    "LangevinPlan",
    "aimed",
    "noise_variance",
    "preconditioner_root",
    "rebudgeted",
    "resolve_plan",
]

_PAPER: dict[str, Any] = {
    "step_size": 1e-4,
    "sigma2": 2e-5,
    "n_chains": 1,
    "readout": "loss",
    "n_steps": 15000,
}
_DEFAULT: dict[str, Any] = {
    "step_size": "auto",
    "sigma2": "auto",
    "n_chains": 8,
    "readout": "virial",
}
_AUTO_STEP_GRADIENTS = 40  # largest_curvature: 20 Lanczos steps, two gradients each
# the shortest run aimed at a threshold: the fit of the readout needs a few octaves
_AIMED_MIN_STEPS = 512
# the shortest default run
_MIN_STEPS = 64
# σ² ≥ _RESIDUAL_NOISE·η·‖G^{1/2}∇L(θ0)‖²: the noise of one step outweighs the drift the
# residual gradient would cause by sqrt(10) (benchmarks/README.md, the digits CNN)
_RESIDUAL_NOISE = 10.0


@dataclasses.dataclass(frozen=True)
class LangevinPlan:
    """The options with the variant's defaults filled in, resolved at ``estimate``."""

    step_size: float | str
    sigma2: float | str
    n_chains: int
    readout: str
    n_steps: int
    n_average: int | None


#: Gradients per chain of the check that the loss is quadratic where the chains went
#: (∇f at θ0 ± δ and θ0 ± δ/2, δ each chain's last position), reserved
#: from ``max_gradients``.
CHECK_GRADIENTS = 4


def resolve_plan(options: LangevinRank) -> LangevinPlan:
    """The variant's defaults for the options left at ``None`` (never written back:
    ``dataclasses.replace`` then behaves like a fresh construction)."""
    paper = options.variant == "paper"
    fill = _PAPER if paper else _DEFAULT
    values: dict[str, Any] = {
        name: fill[name] if getattr(options, name) is None else getattr(options, name)
        for name in ("step_size", "sigma2", "n_chains", "readout")
    }
    n_chains, readout = int(values["n_chains"]), values["readout"]
    if paper and (options.localization or options.rtol is not None):
        raise MatrankValueError(
            message(
                "variant='paper'",
                "used without localization or rtol (the paper's algorithm has "
                "neither; use variant='default')",
                f"localization={options.localization}, rtol={options.rtol}",
            )
        )
    if options.localization and readout != "virial":
        raise MatrankValueError(
            message(
                "localization",
                "used with readout='virial' (eq. 20's loss readout has no "
                "correction for the restoring drift)",
                f"readout={readout!r}",
            )
        )
    n_steps = options.n_steps
    if n_steps is None and paper:
        n_steps = int(_PAPER["n_steps"])
    # the default's burn-in rule and threshold fit read a few octaves of the run: fewer
    # steps give a number that N(τ) at its τ does not back
    least = 2 if paper else _MIN_STEPS
    if n_steps is None:
        # ∇f(θ0), the automatic step's products, and the quadratic check at the end
        overhead = (_AUTO_STEP_GRADIENTS if values["step_size"] == "auto" else 0) + 1
        overhead += CHECK_GRADIENTS * n_chains
        n_steps = (options.max_gradients - overhead) // n_chains
        if n_steps < least:
            raise MatrankValueError(
                message(
                    "max_gradients",
                    f"enough for {least} steps of {n_chains} chains after the "
                    f"{overhead} gradients of ∇f(θ0), the automatic step and the "
                    "quadratic check (at least "
                    f"{least * n_chains + overhead})",
                    str(options.max_gradients),
                )
            )
    elif n_steps < least:
        raise MatrankValueError(
            message(
                "n_steps",
                f"at least {least} with variant='default' (its burn-in rule and "
                "threshold fit need a few octaves of the run)",
                str(n_steps),
            )
        )
    n_average = options.n_average
    if n_average is None and paper:
        n_average = max(1, 2 * n_steps // 3)
    check_int("n_average", n_average, low=1, high=n_steps, allow_none=True)
    return LangevinPlan(
        step_size=values["step_size"],
        sigma2=values["sigma2"],
        n_chains=n_chains,
        readout=readout,
        n_steps=n_steps,
        n_average=n_average,
    )


def aimed(
    options: LangevinRank, plan: LangevinPlan, eta: float, run: Run
) -> tuple[LangevinPlan, float]:
    """The run length and step whose filter is matched at ``threshold``.

    A window over the second half of ``K`` steps is matched at ``τ ≈ 0.763/(2ηK)`` on
    a log-flat density (``e^{−γ_E − mean log(k/K)}``, ``mean log(k/K) = −0.307``):
    ``K`` from ``η``, or, for a ``τ`` that fewer than ``_AIMED_MIN_STEPS`` steps would
    reach, a smaller ``η`` at that many steps.
    """
    if options.threshold is None:
        return plan, eta
    reach = math.exp(-0.5772156649 + 0.3069) / (2 * options.threshold)
    steps = math.ceil(reach / eta)
    if steps < _AIMED_MIN_STEPS:
        steps, eta = _AIMED_MIN_STEPS, reach / _AIMED_MIN_STEPS
    budget = resolve_plan(options).n_steps
    if steps > budget:
        raise MatrankValueError(
            message(
                "threshold",
                f"reachable within max_gradients={options.max_gradients} (τ = "
                f"{options.threshold:.3g} at η = {eta:.3g} needs {steps} steps of "
                f"{plan.n_chains} chains; {budget} fit): raise max_gradients, or use "
                "method='lanczos' where Hessian-vector products exist",
                repr(options.threshold),
            )
        )
    run.bar.total = steps
    return dataclasses.replace(plan, n_steps=steps), eta


def rebudgeted(
    options: LangevinRank, plan: LangevinPlan, run: Run, reductions: list[dict[str, float]]
) -> LangevinPlan:
    """The plan after a divergence: as many steps as ``max_gradients`` still pays
    for (a user's ``n_steps`` stands), refused when under the plan's minimum."""
    spent = int(run.meter.gradients) + CHECK_GRADIENTS * plan.n_chains
    left = (options.max_gradients - spent) // plan.n_chains
    if options.n_steps is not None or left >= plan.n_steps:
        return plan
    least = 2 if options.variant == "paper" else _MIN_STEPS
    if left < least or options.threshold is not None:  # an aimed run cannot shrink
        raise MatrankValueError(
            message(
                "max_gradients",
                "enough for the chains after their restarts at smaller steps",
                f"{options.max_gradients}, spent down to {left} steps of "
                f"{plan.n_chains} chains after {len(reductions)} divergences (last "
                f"at η = {reductions[-1]['step_size']:.3g}); raise max_gradients or "
                "pass a smaller step_size",
            )
        )
    run.bar.total = left
    return dataclasses.replace(plan, n_steps=left)


def noise_variance(
    meter: Any,
    plan: LangevinPlan,
    root: torch.Tensor | None,
    eta: float,
    tilt: torch.Tensor | None,
) -> tuple[float, str]:
    """``σ²`` and the rule that set it: the option, or for ``"auto"`` the one whose
    random walk stays small, raised to the residual gradient's floor."""
    if plan.sigma2 != "auto":
        return float(plan.sigma2), "given"
    theta0 = meter.theta0
    scale = float(theta0.double().pow(2).mean().sqrt()) or 1.0
    epsilon = max(1e-4, float(torch.finfo(meter.dtype).eps) ** (1 / 3))
    spread = 1.0 if root is None else float(root.double().pow(2).mean())
    small = (epsilon * scale) ** 2 / (eta * plan.n_steps * spread)
    if tilt is None:
        return small, "random walk"
    residual = tilt.double() if root is None else (root * tilt).double()
    floor = _RESIDUAL_NOISE * eta * float(residual.pow(2).sum())
    return (floor, "residual gradient") if floor > small else (small, "random walk")


def preconditioner_root(options: LangevinRank, meter: Any) -> torch.Tensor | None:
    n, dtype, device = meter.dim, meter.dtype, meter.device
    if options.preconditioner is None:
        return None
    try:
        diagonal = torch.as_tensor(options.preconditioner, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise MatrankTypeError(
            message(
                "preconditioner",
                f"a positive diagonal of length {n} (array_like of numbers)",
                repr(options.preconditioner)[:80],
            )
        ) from None
    if (
        diagonal.numel() != n
        or not bool(torch.isfinite(diagonal).all())
        or not bool((diagonal > 0).all())
    ):
        raise MatrankValueError(
            message(
                "preconditioner",
                f"a positive diagonal of length {n}",
                f"{diagonal.numel()} entries"
                + (f", minimum {float(diagonal.min()):.3g}" if diagonal.numel() else ""),
            )
        )
    return diagonal.sqrt().to(dtype=dtype, device=device)
