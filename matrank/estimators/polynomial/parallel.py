"""Polynomial probe blocks on joblib workers (the partition: :mod:`.._workers`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..._oracle import CostMeter
from ..._run import Run
from ...numerics.chebyshev import chebyshev_moments
from .._workers import payload

__all__ = ["PROBE_BLOCK", "probe_moments"]

#: Probes per block of the polynomial filter with ``n_jobs``: a default run's 30–200
#: probes make 4–25 tasks.
PROBE_BLOCK = 8


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
    oracle = payload(meter)
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
