"""Langevin chain groups on joblib workers (the partition: :mod:`.._workers`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..._oracle import CostMeter
from ..._run import Run
from ..._validation import MatrankValueError, message
from .._workers import payload
from .chain import ChainsSoFar, ChainStep, Diverged, Noise, chain_reading

__all__ = ["CHAIN_GROUPS", "chain_groups"]

#: Groups of chains (fewer when there are fewer chains): the most workers a Langevin
#: estimate can use.
CHAIN_GROUPS = 4


def _group_segment(
    oracle: Any,
    step: ChainStep,
    state: dict[str, Any],
    first: int,
    last: int,
    readout: str,
    sigma2: float,
    loss0: float,
) -> tuple[dict[str, Any], torch.Tensor, float, int]:
    """Steps ``first … last − 1`` of one group: its new state, readings, gradients and
    loss evaluations spent."""
    meter = CostMeter(oracle)
    delta = state["delta"].to(meter.device)
    chains, n = delta.shape
    generator = torch.Generator()
    generator.set_state(state["generator"])
    noise = Noise(chains, n, generator)
    noise.load(state["noise"])
    readings = torch.empty(last - first, chains, dtype=torch.float64)
    bound = 1e6 * (n + 1)
    theta = meter.theta0 + delta
    try:
        for k in range(first, last):
            readings[k - first] = chain_reading(
                meter, step, theta, delta, noise, readout, sigma2, loss0
            )
            if not bool(torch.isfinite(readings[k - first]).all()) or (
                abs(float(readings[k - first].mean())) > bound
            ):
                raise Diverged(k)
    finally:
        noise.close()
    after = {
        "delta": delta.cpu(),
        "generator": generator.get_state(),
        "noise": noise.state(),
    }
    return after, readings, meter.gradients, meter.evals


def chain_groups(
    run: Run,
    step: ChainStep,
    *,
    n_steps: int,
    n_chains: int,
    readout: str,
    sigma2: float,
    loss0: float,
    checks: list[int],
    settled: Any,
    n_jobs: int,
    attempt: int,
    sofar: ChainsSoFar,
) -> torch.Tensor:
    """:func:`~.chain.run_chains` with the chains in ``CHAIN_GROUPS`` groups
    on joblib workers, in lockstep segments that end at the ``checks`` (where
    ``settled`` may stop the run) and at ``n_steps``."""
    import joblib

    if run.store is not None:
        raise MatrankValueError(
            message(
                "checkpoint",
                "None with n_jobs for Langevin (the chain groups' states live in the "
                "workers between checks and are not journalled)",
                "a path",
            )
        )
    meter = run.meter
    n = meter.dim
    groups = np.array_split(np.arange(n_chains), min(CHAIN_GROUPS, n_chains))
    base = int(torch.randint(0, 2**62, (1,), generator=run.generator))
    states: list[dict[str, Any]] = []
    for index, members in enumerate(groups):
        sequence = np.random.SeedSequence(base, spawn_key=(attempt, index))
        seed = int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        generator = torch.Generator().manual_seed(seed)
        noise = Noise(len(members), n, generator)
        states.append(
            {
                "delta": torch.zeros(len(members), n, dtype=meter.dtype),
                "generator": generator.get_state(),
                "noise": noise.state(),
            }
        )
        noise.close()
    readings = torch.empty(n_steps, n_chains, dtype=torch.float64)
    ends = sorted({*(c for c in checks if c < n_steps), n_steps})
    done, first = n_steps, 0
    sofar.readings, sofar.done = readings, 0
    oracle = payload(meter)
    with joblib.Parallel(n_jobs=n_jobs) as parallel:
        for last in ends:
            parts = parallel(
                joblib.delayed(_group_segment)(
                    oracle, step, state, first, last, readout, sigma2, loss0
                )
                for state in states
            )
            for position, (members, part) in enumerate(zip(groups, parts, strict=True)):
                states[position], block, grads, losses = part
                readings[first:last, members] = block
                meter.gradients += grads
                meter.evals += losses
            sofar.done = last
            run.bar.update(last - first)
            window = readings[last // 2 : last].mean(dim=0)
            run.bar.set_postfix({"rank": f"{float(window.mean()):.1f}"})
            first = last
            if last in checks and settled(readings[:last]):
                done = last
                break
    sofar.delta = torch.cat([state["delta"] for state in states]).to(meter.device)
    return readings[:done]
