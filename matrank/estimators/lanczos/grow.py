"""The Lanczos count's start and growth: the basis grows by blocks until its count is
certified, the dense path is cheaper, or the basis or budget is spent."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import torch

from ..._run import Interim, Run
from ...numerics.counting import (
    Assessment,
    CountingState,
    assess_basis,
    verification_steps,
)
from ...numerics.krylov import BlockKrylov
from ..completion import Kept, Offer, kept_span
from .dense import affordable, dense_is_cheaper, worth_switching
from .pilot import Pilot, run_pilot
from .plan import LanczosPlan

__all__ = ["End", "Growth", "adopt_offer", "grow_basis", "pilot_interim", "start_basis"]

# the widest block the harvest doubles to (the fastest in benchmarks/lanczos_speed.py)
_WIDEST = 128


class End(enum.Enum):
    """Why the basis stopped growing."""

    CERTIFIED = "certified"  #: the count is exact (or the basis is all of R^n)
    DENSE = "dense"  #: the dense path is cheaper from here
    SPENT = "spent"  #: the basis or the budget is spent: SLQ reads the rest


@dataclasses.dataclass
class Growth:
    """The growing basis and its bookkeeping (what a checkpoint keeps)."""

    krylov: BlockKrylov
    state: CountingState
    current: int  #: columns of the next block
    pilot: Pilot | None = None
    #: the pilot's products ``(V, HV)`` as two ``(n, c)`` blocks, for a range sketch
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    #: products ``auto`` took choosing this count (in the run's units), where no pilot
    #: of the count's own runs
    offered: Kept | None = None
    latest: Assessment | None = None
    switched_early_at: int | None = None
    #: why the count goes to the dense path (a sentence), once it does
    dense_reason: str | None = None
    #: what the Gaussian tests of :mod:`.sharpen` measured, where they lowered the floor
    sharpened: dict[str, Any] | None = None

    def kept(self) -> Kept | None:
        """The span of the products taken before the basis, for the dense path."""
        if self.offered is not None:
            return self.offered
        return None if self.pairs is None else kept_span(*self.pairs)

    @property
    def threshold(self) -> float:
        return 0.0 if self.latest is None else self.latest.threshold

    def diagnostics(self) -> dict[str, Any]:
        """What the phases before the readout add to the diagnostics."""
        found: dict[str, Any] = {}
        if self.pilot is not None:
            found["pilot"] = dataclasses.asdict(self.pilot)
        if self.switched_early_at is not None:
            found["switched_early_at"] = self.switched_early_at
        if self.dense_reason is not None:
            found["dense_reason"] = self.dense_reason
        if self.sharpened is not None:
            found["sharpened"] = self.sharpened
        return found


def start_basis(run: Run, plan: LanczosPlan, krylov: BlockKrylov) -> Growth:
    """A restored basis, or a fresh empty one after the pilot (where ``n`` asks for one);
    a range start then goes through :mod:`.sketch`, else the first block is random."""
    saved = run.restore("krylov", expect=lambda state: krylov.fits(state["krylov"]))
    if saved is not None:
        krylov.load_state_dict(saved["krylov"])
        growth = Growth(
            krylov,
            CountingState(*saved["counting"]),
            saved["current"],
            pilot=None if saved["pilot"] is None else Pilot(**saved["pilot"]),
        )
        growth.latest = _assess(plan, growth, unless=saved["assessed_with"])
        return growth
    growth = Growth(krylov, CountingState(), plan.block)
    if plan.n >= plan.pilot_from:
        run.enter("pilot")
        found = run.cached("pilot", lambda: _piloted(run, plan), expect=_fits(plan.n))
        growth.pilot = Pilot(*found["pilot"])
        growth.pairs = found["pairs"]
    return growth


def adopt_offer(growth: Growth, offer: Offer, factor: float) -> None:
    """``auto``'s products and pilot (:class:`~..completion.Offer`), where this count
    has none of its own: the products for the dense path, the pilot's estimate for its
    timed switch (the path stays a Krylov count from a random block: ``auto`` chose
    it). A restored basis keeps the pilot its checkpoint recorded."""
    if growth.pairs is not None:
        return
    if offer.kept is not None:
        growth.offered = offer.kept.scaled(factor)
    if growth.pilot is None and offer.pilot is not None:
        count, stderr, threshold, growing, products = offer.pilot
        growth.pilot = Pilot(count, stderr, threshold, products, "krylov", 0, growing)


def _piloted(run: Run, plan: LanczosPlan) -> dict[str, Any]:
    """The pilot, and its products where a range sketch may use them (in memory)."""
    from .sketch import PILOT_PAIRS_MAX_DIM

    record: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    if plan.n <= PILOT_PAIRS_MAX_DIM:
        record = []
    pilot = run_pilot(
        run,
        plan.threshold,
        plan.eps,
        dense_max=plan.dense_max,
        block=plan.block,
        max_basis=plan.max_basis,
        record=record,
    )
    pairs = None
    if record:
        pairs = (torch.cat([v for v, _ in record], 1), torch.cat([y for _, y in record], 1))
    return {"pilot": dataclasses.astuple(pilot), "pairs": pairs}


def _fits(n: int) -> Any:
    """Whether a recorded pilot fits a run in ``R^n``: a pilot's fields, pairs of
    ``n``-vectors with finite images."""

    def fits(state: dict[str, Any]) -> bool:
        pairs = state["pairs"]
        return len(state["pilot"]) == len(dataclasses.fields(Pilot)) and (
            pairs is None
            or (
                pairs[0].shape == pairs[1].shape
                and pairs[0].shape[0] == n
                and bool(torch.isfinite(pairs[1]).all())
            )
        )

    return fits


def pilot_interim(pilot: Pilot) -> Interim:
    """The pilot's estimate: the best so far until the basis is assessed."""
    return Interim(
        pilot.count,
        pilot.stderr,
        pilot.threshold,
        {"pilot": dataclasses.asdict(pilot), "path": "pilot"},
    )


def grow_basis(run: Run, plan: LanczosPlan, growth: Growth) -> End:
    """Grow the basis block by block (see :class:`~matrank.LanczosRank`'s notes)."""
    run.enter("grow")
    krylov, state = growth.krylov, growth.state
    pilot = growth.pilot
    if krylov.size and growth.latest is None:
        # a basis handed over by the range sketch is assessed before any block is added
        state.steps += 1
        growth.latest = _assess(plan, growth)
        state.assessed_size = krylov.size
        state.update(growth.latest.counted, growth.latest.certain, _required(plan, growth))
    while True:
        end = _extend(run, plan, growth)
        if end is not None:
            return end
        # The Ritz problem costs O(k³): solve it when the basis has grown by k/8
        # columns since the last solve, so it stays a fixed fraction of the
        # orthogonalization work (always while verifying).
        if not state.verifying and krylov.size - state.assessed_size < krylov.size // 8:
            continue
        state.assessed_size = krylov.size
        # While the count still grows nothing can be certified: the eigenvalues alone
        # (a third of the cost of eigenpairs at k = 4500) decide that.
        assessed_with = state.last_count
        latest = growth.latest = _assess(plan, growth, unless=assessed_with)
        count, certain = latest.counted, latest.certain
        run.bar.set_postfix(rank=count, basis=krylov.size, certain=certain)
        grown = count - state.last_count
        if state.update(count, certain, _required(plan, growth)):
            return End.CERTIFIED
        _widen(plan, growth, grown, certain)
        growth.dense_reason = _dense_pays(run, plan, growth)
        if growth.dense_reason is not None:
            return End.DENSE
        if plan.max_basis < plan.n and count > plan.max_basis // 2 and not certain:
            # A certain count needs a basis of r (distinct eigenvalues) to 2r
            # (multiplicities): past half the budget, stop spending on the basis.
            growth.switched_early_at = krylov.size
            return _spent(run, plan, growth)
        if run.due():
            run.record(
                "krylov",
                {
                    "krylov": krylov.state_dict(),
                    "counting": dataclasses.astuple(state),
                    "current": growth.current,
                    "assessed_with": assessed_with,
                    "pilot": None if pilot is None else dataclasses.asdict(pilot),
                },
            )


def _extend(run: Run, plan: LanczosPlan, growth: Growth) -> End | None:
    """Add the next block (and a fresh random one when verification starts); an end
    when the basis cannot grow."""
    krylov, state = growth.krylov, growth.state
    extra = 0
    if state.inject and krylov.next_kept > 0:
        # A fresh random block: in place of the Krylov continuation when that is
        # negligible next to τ (a stagnated sequence in a noise band), else beside it.
        if krylov.next_norm <= 0.01 * growth.threshold:
            krylov.restart()
        else:
            extra = growth.current
    if krylov.size >= plan.n:  # the basis is all of R^n: the count is exact
        return End.CERTIFIED
    room = min(plan.max_basis - krylov.size, plan.max_matvecs - run.meter.matvecs)
    needed = min(growth.current, plan.n - krylov.size)
    if room < needed:
        return _spent(run, plan, growth)
    extra = min(extra, room - needed)
    if state.inject:
        state.begin_verification()
    before = run.meter.matvecs
    if krylov.extend(growth.current, extra) == 0:
        return End.CERTIFIED
    state.steps += 1
    run.bar.update(run.meter.matvecs - before)
    return None


def _spent(run: Run, plan: LanczosPlan, growth: Growth) -> End:
    """The basis is spent uncertain: the dense count where it is possible (exact, and
    about the products SLQ would take), else SLQ on the complement."""
    if 0 < plan.n <= plan.dense_max and affordable(run, plan.n, plan.max_matvecs):
        growth.dense_reason = (
            f"the basis ({growth.krylov.size} of at most {plan.max_basis}) is spent "
            "with the count uncertain: the dense count, exact where SLQ would estimate"
        )
        return End.DENSE
    return End.SPENT


def _widen(plan: LanczosPlan, growth: Growth, grown: int, certain: bool) -> None:
    """Wide blocks make cheaper columns, but each widening adds random columns the basis
    must carry: double the block (up to ``_WIDEST``) while a step harvests nearly a
    block of new counted eigenvalues; verification goes back to the base."""
    block, current = plan.block, growth.current
    if certain:
        growth.current = block
    elif grown >= 0.75 * current:
        growth.current = min(2 * current, max(block, _WIDEST), max(1, plan.max_basis // 4))
    else:  # the harvest slows: carry on with what the Krylov sequence still holds
        growth.current = max(block, min(current, growth.krylov.next_kept))


def _dense_pays(run: Run, plan: LanczosPlan, growth: Growth) -> str | None:
    """Why to stop growing for the dense path (see :mod:`.dense`), or ``None``."""
    latest, krylov, pilot = growth.latest, growth.krylov, growth.pilot
    assert latest is not None
    if not plan.dense_max or latest.certain:
        return None
    if not affordable(run, plan.n, plan.max_matvecs):
        return None
    reason = worth_switching(plan.n, krylov.size, latest.counted, plan.dense_max)
    if reason is not None or plan.n > plan.dense_max:
        return reason
    return dense_is_cheaper(
        run,
        plan.n,
        krylov.size,
        latest.counted,
        None if pilot is None else (pilot.count, pilot.stderr),
        block=plan.block,
    )


def _assess(plan: LanczosPlan, growth: Growth, unless: int | None = None) -> Assessment:
    return assess_basis(
        growth.krylov,
        plan.n,
        plan.eps,
        plan.block_size,
        plan.threshold,
        unless_count_differs_from=unless,
    )


def _required(plan: LanczosPlan, growth: Growth) -> int:
    """Verification steps: the user's, or from the gap at τ."""
    latest = growth.latest
    assert latest is not None
    return plan.verify_steps or verification_steps(
        latest.values, latest.threshold, latest.floor, plan.n, plan.block
    )
