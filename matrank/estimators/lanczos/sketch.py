"""The Lanczos count's range start: one randomized sketch, certified a posteriori.

When the pilot's count is well above the block size and below ``n/8``, the rank is
reached from the range of ``H`` (:mod:`matrank.numerics.sketch`): the pilot's own
products join the sketch as they are, a Gaussian block fills it up to the pilot's count
less one standard error, then blocks of ten Gaussian test columns each check the basis
before joining it (doubling while every column still brings a new direction), until
Halko, Martinsson & Tropp's test and Weyl's theorem make the count exact. A rank ``r``
with a gap costs about ``r + 20`` products in all, the pilot's included; no product of
the basis is taken.

A sketch that cannot certify the count by ``max(start_block, pilot columns) +
2·block_size`` columns (no gap at ``τ``, a tail above rounding, a ``τ`` under the noise
floor) hands its basis to the Krylov count, which takes its image (``k`` products) and
goes on as from any start.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from ..._result import RankResult, Status
from ..._run import Run
from ...numerics.krylov import asymmetry
from ...numerics.sketch import TEST_COLUMNS, RangeSketch, SketchRitz
from ...numerics.threshold import noise_floor, resolve_threshold
from ..exact import known_count
from .grow import Growth
from .plan import BASIS_BYTES, LanczosPlan

__all__ = ["PILOT_PAIRS_MAX_DIM", "sketch_start"]

#: Largest ``n`` whose pilot products (64 columns and their images) are kept for the
#: sketch: a quarter of the basis memory.
PILOT_PAIRS_MAX_DIM = BASIS_BYTES // (4 * 64 * 2 * 8)


@dataclasses.dataclass
class _Log:
    """What the sketch did, block by block: enough to replay it bit for bit."""

    blocks: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    symmetry_defect: float = 0.0

    def columns(self, kind: str) -> int:
        return sum(width for which, width in self.blocks if which == kind)


def sketch_start(run: Run, plan: LanczosPlan, growth: Growth) -> RankResult | None:
    """The certified count, or ``None`` with the sketch's basis started in
    ``growth.krylov`` (module notes)."""
    run.enter("sketch")
    pilot, meter = growth.pilot, run.meter
    assert pilot is not None
    most = min(max(pilot.start_block, pilot.matvecs) + 2 * plan.block, plan.max_basis)
    sketch = RangeSketch(plan.n, meter.dtype, meter.device)
    log = _restored(run, plan, sketch)
    if log is None:
        log = _Log()
        if growth.pairs is not None:
            _join(sketch, log, "pilot", *growth.pairs, test=False)
        first = math.floor(pilot.count - pilot.stderr) - sketch.size
        first = min(first, plan.max_basis - sketch.width, _room(run, plan))
        if first > 0:
            _draw(run, sketch, log, "gaussian", first)
    width = TEST_COLUMNS
    while sketch.width + width <= most and width <= _room(run, plan):
        _draw(run, sketch, log, "test", width)
        found = _certified(run, plan, growth, sketch, log)
        if found is not None:
            return found
        # every column new: the basis is far from the range, double the next test
        width = 2 * width if sketch.absorb() == width else TEST_COLUMNS
        if run.due():
            run.record(
                "sketch",
                {
                    "omega": sketch.omega,
                    "image": sketch.image,
                    "norms": sketch.norms,
                    "blocks": log.blocks,
                    "symmetry_defect": log.symmetry_defect,
                },
            )
    before = meter.matvecs
    sketch.absorb()
    growth.krylov.start_from_basis(sketch.Q, log.symmetry_defect)
    growth.krylov.random_columns += log.columns("gaussian") + log.columns("test")
    run.bar.update(meter.matvecs - before)
    return None


def _room(run: Run, plan: LanczosPlan) -> int:
    return plan.max_matvecs - run.meter.matvecs


def _draw(run: Run, sketch: RangeSketch, log: _Log, kind: str, width: int) -> int:
    """``width`` Gaussian columns (drawn in float32 on the CPU: any Gaussian block will
    do) and their products; the first block's pairs measure the asymmetry."""
    meter = run.meter
    omega = torch.randn(sketch.n, width, generator=run.generator, dtype=torch.float32)
    omega = omega.to(dtype=meter.dtype, device=meter.device)
    image = meter.hvp(omega)
    run.bar.update(width)
    if log.columns("gaussian") + log.columns("test") == 0:
        log.symmetry_defect = asymmetry(omega[:, :32], image[:, :32])
    return _join(sketch, log, kind, omega, image, test=kind == "test")


def _join(
    sketch: RangeSketch,
    log: _Log,
    kind: str,
    omega: torch.Tensor,
    image: torch.Tensor,
    *,
    test: bool,
    norms: torch.Tensor | None = None,
) -> int:
    log.blocks.append((kind, int(omega.shape[1])))
    return sketch.add(omega, image, test=test, norms=norms)


def _restored(run: Run, plan: LanczosPlan, sketch: RangeSketch) -> _Log | None:
    """The sketch an earlier run recorded, replayed block by block (the same bits)."""

    def fits(state: dict) -> bool:
        width = sum(int(w) for _, w in state["blocks"])
        return bool(
            state["omega"].shape == state["image"].shape == (plan.n, width)
            and tuple(state["norms"].shape) == (width,)
            and all(kind in ("pilot", "gaussian", "test") for kind, _ in state["blocks"])
            and bool(torch.isfinite(state["image"]).all())
        )

    state = run.restore("sketch", expect=fits)
    if state is None:
        return None
    log = _Log(symmetry_defect=float(state["symmetry_defect"]))
    start = 0
    for kind, width in state["blocks"]:
        columns = slice(start, start + int(width))
        _join(
            sketch,
            log,
            kind,
            state["omega"][:, columns].to(sketch.device),
            state["image"][:, columns].to(sketch.device),
            test=kind == "test",
            norms=state["norms"][columns].to(sketch.device),
        )
        sketch.absorb()  # every recorded test block had failed and joined the basis
        start += int(width)
    return log


def _certified(
    run: Run, plan: LanczosPlan, growth: Growth, sketch: RangeSketch, log: _Log
) -> RankResult | None:
    """The result when the sketch's count at its threshold is exact, else ``None``."""
    ritz = sketch.ritz()
    magnitudes = ritz.values.abs()
    largest = float(magnitudes.max()) if ritz.size else 0.0
    # ``η`` is the sketch's resolution, as the Krylov basis has its own
    floor = max(noise_floor(largest, plan.n, plan.eps, log.symmetry_defect), ritz.eta)
    threshold, choice = resolve_threshold(magnitudes.numpy(), floor, plan.threshold)
    if threshold < floor or not ritz.certain(threshold):
        return None
    counted = magnitudes > threshold
    assert growth.pilot is not None
    diagnostics: dict[str, Any] = {
        "pilot": dataclasses.asdict(growth.pilot),
        "path": "sketch",
        "sketch": _summary(sketch, log, ritz),
        "symmetry_defect": log.symmetry_defect,
        "orthogonalization_seconds": sketch.orthogonalization_seconds,
        "noise_floor": floor,
        "ritz_values": ritz.values.numpy(),
        "basis_size": ritz.size,
        "random_columns": log.columns("gaussian") + log.columns("test"),
        "block_steps": len(log.blocks),
        "certified": True,
        "n_negative": int((counted & (ritz.values < 0)).sum()),
    }
    if choice is not None:
        diagnostics["plateau"] = dataclasses.asdict(choice)
    return known_count(  # Weyl: each Ritz value lies within η of an eigenvalue
        run,
        magnitudes.numpy(),
        threshold,
        floor,
        diagnostics,
        Status.of_choice(choice),
        resolution=ritz.eta,
    )


def _summary(sketch: RangeSketch, log: _Log, ritz: SketchRitz) -> dict[str, Any]:
    return {
        "columns": sketch.width,
        "pilot_columns": log.columns("pilot"),
        "test_blocks": sum(kind == "test" for kind, _ in log.blocks),
        "range_bound": sketch.bound,
        "eta": ritz.eta,
    }
