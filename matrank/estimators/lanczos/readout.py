"""The Lanczos count's readout: the last assessment as a result, SLQ past the basis."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..._result import RankResult, Status
from ..._run import Interim, Run
from ...numerics.counting import Assessment, assess_basis
from ...numerics.threshold import counting_curve
from .grow import End, Growth, pilot_interim
from .plan import LanczosPlan
from .slq import slq_count

__all__ = ["interim", "readout"]


def interim(growth: Growth) -> Interim | None:
    """The last assessment as it stands, or the pilot's estimate before one: what
    Ctrl-C returns."""
    if growth.latest is not None:
        return _assessed(growth, growth.latest, certified=False)
    return None if growth.pilot is None else pilot_interim(growth.pilot)


def readout(run: Run, plan: LanczosPlan, growth: Growth, end: End) -> RankResult:
    """The count at the last assessment (made again if the basis grew after it), or,
    when the basis was spent before the count was certain, SLQ on its complement."""
    run.enter("readout")
    krylov = growth.krylov
    latest = growth.latest
    if latest is None or latest.size != krylov.size:  # an O(k³) solve: only if needed
        latest = growth.latest = assess_basis(
            krylov, plan.n, plan.eps, plan.block_size, plan.threshold
        )
    found = _assessed(growth, latest, certified=latest.certain and end is End.CERTIFIED)
    rank, stderr, diagnostics = found.rank, found.stderr, found.diagnostics
    threshold = latest.threshold
    status = Status.CONVERGED if end is End.CERTIFIED else Status.BUDGET_EXHAUSTED
    if end is not End.CERTIFIED:
        run.enter("slq")
        values, vectors = latest.values, latest.vectors
        if vectors is None:
            values, vectors = krylov.ritz()
        slq = slq_count(run, plan, krylov, values, vectors, threshold, latest.floor)
        rank, stderr, status = slq.rank, slq.stderr, slq.status
        threshold = slq.threshold
        diagnostics.update(noise_floor=slq.floor, **slq.diagnostics)
    elif (plateau := Status.of_choice(latest.choice)) is not Status.CONVERGED:
        status = plateau
    elif krylov.size < plan.n and threshold < latest.floor:
        status = Status.BELOW_RESOLUTION  # a user's τ under resolution(...)
    return run.result(
        rank,
        stderr=stderr,
        threshold=threshold,
        diagnostics=diagnostics,
        counts=found.counts,
        status=status,
    )


def _assessed(growth: Growth, latest: Assessment, *, certified: bool) -> Interim:
    krylov, values = growth.krylov, latest.values
    diagnostics: dict[str, Any] = {
        **growth.diagnostics(),
        "symmetry_defect": krylov.symmetry_defect,
        "orthogonalization_seconds": krylov.orthogonalization_seconds,
        "noise_floor": latest.floor,
        "ritz_values": values.numpy(),
        "basis_size": krylov.size,
        "random_columns": krylov.random_columns,
        "block_steps": growth.state.steps,
        "certified": bool(certified),
        "n_negative": int(((values.abs() > latest.threshold) & (values < 0)).sum()),
        "path": "krylov",
    }
    if latest.choice is not None:
        diagnostics["plateau"] = dataclasses.asdict(latest.choice)
    largest, floor = latest.largest, latest.floor
    counts = counting_curve(  # Ritz values: lower bounds by interlacing
        values.abs().numpy(),
        low=max(floor, largest * 1e-16) / 10,
        high=largest * 1.5,
        kind="at least",
    )
    return Interim(float(latest.counted), None, latest.threshold, diagnostics, counts)
