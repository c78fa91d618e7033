"""The Langevin estimate's readout: the rank, its stderr and threshold from the readings
of the chains (the time average after a burn-in), and the diagnostics."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from ..._run import Interim
from ...numerics.readout import (
    matched_threshold_terms,
    mser_start,
    runaway,
    window_average,
    window_drift,
)
from .plan import LangevinPlan

if TYPE_CHECKING:
    from . import LangevinRank

__all__ = ["Attempt", "Start", "read", "settled_at", "summarize"]


@dataclasses.dataclass(frozen=True)
class Start:
    """What the chains start from: ``L(θ0)``, the tilt ``∇L(θ0)``, ``μmax``, ``Σ^½``."""

    loss0: float
    tilt: torch.Tensor | None
    mu_max: float | None
    root: torch.Tensor | None


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One run of the chains: its plan, step size and noise variance (and the rule
    that chose the variance)."""

    plan: LangevinPlan
    eta: float
    sigma2: float
    rule: Any


def read(
    options: LangevinRank,
    attempt: Attempt,
    start: Start,
    readings: torch.Tensor,
    summary: dict[str, Any],
    reductions: list[dict[str, float]],
    *,
    interrupted: bool,
) -> tuple[Interim, Any]:
    """The estimate and its diagnostics from ``readings``, and the evidence of
    negative curvature (virial readout of a finished run) or ``None``."""
    plan = attempt.plan
    mean_trace = readings.mean(dim=1).numpy()
    evidence = None
    if plan.readout == "virial" and not interrupted:
        evidence = runaway(readings, summary["diagnostics"]["burn_in"])
    tilt = start.tilt
    diagnostics: dict[str, Any] = {
        "negative_curvature": evidence,
        "variant": options.variant,
        "readout": plan.readout,
        "step_size": attempt.eta,
        "mu_max": start.mu_max,
        "sigma2": attempt.sigma2,
        "sigma2_rule": attempt.rule,
        "gradient_norm_at_theta0": (
            None if tilt is None else float(torch.linalg.vector_norm(tilt))
        ),
        "localization": options.localization,
        "readings": mean_trace,
        "loss0": start.loss0,
        "steps_done": readings.shape[0],
        "step_reductions": reductions,
        "drift": window_drift(readings, summary["diagnostics"]["burn_in"]),
        **summary["diagnostics"],
    }
    if plan.readout == "loss":
        diagnostics["loss_excess"] = mean_trace * attempt.sigma2 / 4.0
    found = Interim(summary["rank"], summary["stderr"], summary["threshold"], diagnostics)
    return found, evidence


def settled_at(options: LangevinRank, rounds: list[dict[str, Any]]) -> bool:
    if options.rtol is None or len(rounds) < 2:
        return False
    last, previous = rounds[-1], rounds[-2]
    scale = options.rtol * max(abs(last["rank"]), 1.0)
    return last["stderr"] <= scale and abs(last["rank"] - previous["rank"]) <= scale


def summarize(
    options: LangevinRank,
    plan: LangevinPlan,
    readings: torch.Tensor,
    eta: float,
    *,
    interrupted: bool = False,
) -> dict[str, Any]:
    """Estimate, stderr and threshold from ``readings`` (steps × chains)."""
    steps, _chains = readings.shape
    average = plan.n_average or 0
    mean_trace = readings.mean(dim=1).numpy()
    if options.variant == "paper" and not interrupted:
        begin = steps - average
    elif plan.n_average is not None:
        begin = steps - average if average < steps else steps // 2
    else:
        begin = mser_start(mean_trace)
    rank, stderr, per_chain = window_average(readings, begin)
    diagnostics: dict[str, Any] = {
        "n_average": steps - begin,
        "burn_in": begin,
        "per_chain": per_chain,
    }
    if options.variant == "paper":
        threshold = 1.0 / (2 * eta * max(steps, 1))
    else:
        threshold, fit, spread, edge = matched_threshold_terms(readings, eta, begin)
        diagnostics.update(
            threshold_fit=fit,
            sampling_stderr=float(stderr),
            threshold_stderr=spread,
            edge_stderr=edge,
        )
        stderr = math.sqrt(float(stderr) ** 2 + spread**2 + edge**2)
        threshold = max(threshold, options.localization)
    return {
        "rank": float(rank),
        "stderr": float(stderr),
        "threshold": threshold,
        "diagnostics": diagnostics,
    }
