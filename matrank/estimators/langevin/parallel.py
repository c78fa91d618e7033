"""Langevin chain groups on joblib workers (the partition: :mod:`.noise`)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import torch

from ..._oracle import CostMeter
from .._workers import payload
from .chain import ChainStep, chain_steps
from .noise import Noise

if TYPE_CHECKING:
    from .chain import Chains

__all__ = ["SEGMENTS", "in_groups"]

#: Segments of a run with ``n_jobs`` that end at no check: where its progress shows and
#: its checkpoint may be written (each segment sends the oracle to the workers).
SEGMENTS = 16


def _segment(
    oracle: Any,
    step: ChainStep,
    delta: torch.Tensor,
    noise_state: list[torch.Tensor],
    first: int,
    last: int,
    common: dict[str, Any],
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, float, int]:
    """Steps ``first … last − 1`` of one group on a worker: the same
    :func:`~.chain.chain_steps` as one process runs, on the group's chains and stream.
    Its chains and stream after, its readings, the gradients and loss evaluations."""
    meter = CostMeter(oracle)
    delta = delta.to(meter.device)
    noise = Noise([delta.shape[0]], meter.dim, [0])
    noise.load([noise_state])
    readings = torch.empty(last, delta.shape[0], dtype=torch.float64)
    try:
        chain_steps(meter, step, delta, noise, readings, first, last, **common)
    finally:
        noise.close()
    return delta.cpu(), noise.state()[0], readings[first:], meter.gradients, meter.evals


def in_groups(
    chains: Chains, step: ChainStep, first: int, *, n_jobs: int, **common: Any
) -> int:
    """:func:`~.chain.chain_steps` of every group on joblib workers, in lockstep segments
    that end at the checks, at ``SEGMENTS`` evenly spaced steps and at the end; after
    each the chains are whole in this process and ``chains.after`` runs as after a step
    of :func:`~.chain.chain_steps`. Returns the steps done."""
    import joblib

    run = chains.run
    meter = run.meter
    n_steps = chains.readings.shape[0]
    spacing = max(1, -(-n_steps // SEGMENTS))
    ends = sorted({*chains.checks, *range(spacing, n_steps, spacing), n_steps})
    bounds = list(itertools.accumulate(chains.noise.sizes, initial=0))
    rows = [slice(a, b) for a, b in itertools.pairwise(bounds)]
    oracle = payload(meter)
    with joblib.Parallel(n_jobs=n_jobs) as parallel:
        for last in (end for end in ends if end > first):
            states = chains.noise.state()
            parts = parallel(
                joblib.delayed(_segment)(
                    oracle, step, chains.delta[part].cpu(), state, first, last, common
                )
                for part, state in zip(rows, states, strict=True)
            )
            for group, (part, result) in enumerate(zip(rows, parts, strict=True)):
                delta, states[group], block, gradients, evals = result
                chains.delta[part] = delta.to(chains.delta.device)
                chains.readings[first:last, part] = block
                meter.gradients += gradients
                meter.evals += evals
            chains.noise.load(states)
            first = last
            if chains.after(last):
                return last
    return n_steps
