"""Independent work of one estimate on joblib workers: Langevin chain groups, probe blocks.

With ``n_jobs`` set, an estimator splits its independent work into a fixed partition
that does not depend on ``n_jobs`` -- ``CHAIN_GROUPS`` groups of chains, each with its
own generator seeded from the run's generator and the group's index; probe blocks of at
most ``PROBE_BLOCK`` columns, drawn in the calling process in the serial order -- and
hands the parts to ``joblib.Parallel``. The backend is the caller's (loky by default; a
``joblib.parallel_config(backend="dask")`` or ``"ray"`` context sends the same parts
there). Each part runs the same arithmetic on the same inputs wherever it runs, so the
estimate is the same for every ``n_jobs`` and backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._oracle import CostMeter, collective
from .._result import Status
from .._run import Run
from .._validation import MatrankValueError, message
from ..numerics.chebyshev import chebyshev_moments
from ._langevin_chain import ChainStep, Diverged, Noise, chain_reading

__all__ = ["CHAIN_GROUPS", "PROBE_BLOCK", "chain_groups", "probe_moments"]

#: Groups of chains (fewer when there are fewer chains): the most workers a Langevin
#: estimate can use.
CHAIN_GROUPS = 4
#: Probes per block of the polynomial filter with ``n_jobs``: a default run's 30–200
#: probes make 4–25 tasks.
PROBE_BLOCK = 8


def _payload(meter: CostMeter) -> Any:
    """The oracle to send: the metered one (scaled, checked) without the meter."""
    if collective(meter) is not None:
        raise MatrankValueError(
            message(
                "n_jobs",
                "None with a distributed oracle (its ranks already share the work; a "
                "process group does not move to a joblib worker)",
                "a number of jobs",
            )
        )
    return meter.oracle


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
) -> tuple[torch.Tensor, Status]:
    """:func:`~._langevin_chain.run_chains` with the chains in ``CHAIN_GROUPS`` groups
    on joblib workers, in lockstep segments that end at the ``checks`` (where
    ``settled`` may stop the run) and at ``n_steps``."""
    import joblib

    if run.store is not None:
        run.close()
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
    states = []
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
    status, done, first = Status.CONVERGED, n_steps, 0
    oracle = _payload(meter)
    try:
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
                run.bar.update(last - first)
                window = readings[last // 2 : last].mean(dim=0)
                run.bar.set_postfix({"rank": f"{float(window.mean()):.1f}"})
                first = last
                if last in checks and settled(readings[:last]):
                    done = last
                    break
    except KeyboardInterrupt:
        if first < 2:
            raise
        status, done = Status.INTERRUPTED, first
    finally:
        run.close()
    return readings[:done], status


def _block_moments(
    oracle: Any, probes: torch.Tensor, steps: int, center: float, half_width: float
) -> tuple[np.ndarray, int]:
    meter = CostMeter(oracle)
    moments = chebyshev_moments(
        meter.hvp, probes, steps, center=center, half_width=half_width
    )
    return moments.cpu().numpy(), meter.matvecs


def probe_moments(
    run: Run,
    blocks: list[tuple[str, torch.Tensor]],
    steps: int,
    *,
    center: float,
    half_width: float,
    n_jobs: int,
) -> list[np.ndarray]:
    """The Chebyshev moments of each ``(key, probes)`` block on joblib workers; blocks a
    checkpoint holds are read back, the others computed and journalled."""
    import joblib

    meter = run.meter
    results: dict[str, np.ndarray] = {}
    missing = []
    for key, probes in blocks:
        saved = run.restore(key)
        if saved is None:
            missing.append((key, probes))
        else:
            results[key] = saved
    oracle = _payload(meter)
    parts = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_block_moments)(oracle, probes.cpu(), steps, center, half_width)
        for _, probes in missing
    )
    for (key, _), (moments, matvecs) in zip(missing, parts, strict=True):
        meter.matvecs += matvecs
        run.bar.update(matvecs)
        results[key] = moments
        if run.due():
            run.record(key, moments)
    return [results[key] for key, _ in blocks]
