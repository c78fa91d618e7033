"""Lanczos counting: exact counts by block Krylov, SLQ past the exact budget.

The phases, one module each: :mod:`.plan` (the options resolved), :mod:`.pilot` (four
SLQ probes choose the path), :mod:`.grow` (start and grow the basis until the count is
certified), :mod:`.dense` (the switch to ``n`` products and ``eigvalsh``),
:mod:`.readout` (the result, and :mod:`.slq` past the basis).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

from ..._oracle import Capability, as_oracle
from ..._result import RankResult
from ..._run import Run, sized_threads
from ..._validation import check_choice, check_int, check_threshold
from ...numerics.krylov import BlockKrylov
from ..completion import offered
from .dense import DENSE_MAX, affordable, dense_count
from .grow import End, adopt_offer, grow_basis, start_basis
from .pilot import DENSE_FRACTION, PILOT_MIN_DIM
from .plan import LanczosPlan
from .readout import interim, readout
from .sharpen import sharpen, wanted
from .sketch import sketch_start

__all__ = ["LanczosRank"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LanczosRank:
    """Count eigenvalues above a threshold with block Krylov; SLQ when the rank is large.

    Parameters
    ----------
    threshold : float, "floor" or None, default=None
        Count ``|λ| > τ``. ``None``: the plateau rule on the Ritz values above the noise
        floor ``max(λmax·n·eps, symmetry defect, resolution)``; ``"floor"``: everything
        above it. A given ``τ`` under the floor ends ``BELOW_RESOLUTION`` (Notes).
    block_size : int, default=32
        Columns per block product; at least the largest multiplicity is cheapest.
    max_matvecs : int or None, default=None
        Budget of products; ``None``: ``max(4096, 2·max_basis + 512)``, at most
        ``4n + 8·block_size``.
    max_basis : int or None, default=None
        Largest Krylov basis before the stochastic path; ``None``:
        ``min(n, 8192, 2 GB / (8n))``, at most half of a given ``max_matvecs``.
    verify_steps : int or None, default=None
        Block steps after a fresh random block that must leave the count unchanged;
        ``None``: from the gap (Notes), between 1 and 5.
    n_probes : int or None, default=None
        SLQ probes; ``None`` spends the remaining budget on as many as ``slq_steps`` allows.
    slq_steps : int, default=64
        Lanczos steps per SLQ probe (Gauss quadrature nodes per probe).
    probes : {"sphere", "rademacher", "gaussian"}, default="sphere"
        SLQ probe distribution (the sphere has the smallest variance for counting).
    dense_max : int, default=DENSE_MAX
        Largest ``n`` whose count switches to the dense path when the rank proves a
        large fraction of ``n`` or the Krylov count dearer (Notes); 0 never switches.
        The default: six ``n × n`` float64 matrices in physical memory, at least 8192.
    pilot_from : int, default=4096
        Smallest ``n`` at which a pilot (four SLQ probes) chooses the path first: the
        dense path, a start from the range of ``H``, or the Krylov count (Notes); a
        value above ``n`` switches it off.

    Notes
    -----
    **Exact path.** A block Krylov basis ``Q`` grows with full reorthogonalization; after
    each block, the Ritz values ``θ`` of ``T = QᵀAQ`` and their residuals ``ρ`` (read off
    the next block's coefficients, without cancellation) are checked at ``τ``. The count
    ``#{|θ| > τ}`` is certain when (a) by Kahan's theorem that many eigenvalues exceed
    ``τ`` (``min |θ| − ρ_block > τ`` over the counted Ritz values), (b) no other Ritz
    interval ``[|θ| − ρ, |θ| + ρ]`` reaches ``τ``, and (c) the count survives
    ``verify_steps`` block steps started from a fresh random block orthogonal to ``Q``
    -- an eigenvalue above ``τ`` that the Krylov sequence had missed is amplified by each
    step (by the gap ratio) and would surface, at the latest as a large residual in (b).
    Blocks double (up to 256 columns) while each step still harvests nearly a block of
    new counted eigenvalues. Cost: about ``r`` to ``2r`` matvecs for rank ``r`` plus a few
    base blocks.

    Verification sees an eigenvalue outside the basis only through its share
    ``≈ sqrt(b/(n − k))`` of a fresh block of ``b`` columns, and an image below the
    deflation tolerance ``δ = 100·sqrt(n)·eps·‖A‖`` is dropped as rounding: the count
    vouches only for ``τ`` above the **resolution** ``3δ·sqrt((n − k)/block_size)``,
    about ``53·n·eps·‖A‖`` at 32 columns -- 53 times numpy's floor. Below it a count
    can miss eigenvalues and still look certain (measured: ``benchmarks/README.md``,
    ``curvature_ranks.py``), so the floor is raised to it. A basis of all of ``R^n``
    has no resolution limit. Where the resolution may decide the count (a threshold
    under it, Ritz values between it and the noise floor, or a lowest plateau cut
    short by it), ten-column Gaussian tests of the basis lower it to about the
    rounding of one product (:mod:`.sharpen`).

    ``verify_steps=None`` takes the fewest ``s`` with ``g^s ≥ 10·sqrt(n/block_size)``,
    ``g = τ/(largest uncounted |θ|)``: a hidden eigenvalue above ``τ``, amplified
    ``g``-fold a step from its random share, would surface.

    **Failure modes handled** (see :mod:`matrank.numerics.krylov`): Krylov breakdown at
    exact zeros (random restart), ghost eigenvalues (full reorthogonalization twice),
    multiplicities above ``block_size`` (restarts find the other copies).

    **Pilot and dense path.** From ``n = pilot_from`` four sphere probes of
    Gauss–Radau quadrature (a node at zero) estimate the count first: at least half of
    ``n ≤ dense_max``, or an eighth of it still growing with the quadrature's steps (a
    spectrum unresolved at ``τ``, ``diagnostics["pilot"]["growing"]``), goes to the
    dense path at once (``H`` read, or ``n`` products less the span of the pilot's own
    where completing it is cheaper, ``diagnostics["kept_products"]``, and the exact
    rule; ``diagnostics["path"] == "dense"``); a count below ``n/8``
    goes to one randomized range sketch, the pilot's products included, certified a
    posteriori by Gaussian test columns and Weyl's theorem (``"sketch"``,
    :mod:`matrank.numerics.sketch`), or else handed to the Krylov count as its start;
    otherwise one random block as above (``diagnostics["pilot"]``). While the basis grows
    (``n ≤ dense_max``), the count switches to the dense path when that, timed from the
    run's own products and a calibrated ``eigvalsh``, costs less than the cheapest
    certified Krylov count still could (a basis of at least the pilot's estimate), or
    (a basis past the expected one, a spectrum without a gap at τ) a share
    ``STALLED_SHARE``, or (a
    count past the pilot's estimate by three standard errors and a block: a spectrum
    the pilot's quadrature could not resolve) once the run's whole time reaches
    ``UNRESOLVED_SHARE`` (10 %) of it; the reason is ``diagnostics["dense_reason"]``.
    Below ``pilot_from``, ``auto``'s pilot stands in where ``auto`` chose this count.
    Without a pilot, when a third of ``R^n`` has been explored and nine tenths of it
    counted, or when the basis is past ``2·count + STALLED_EXTRA`` (200: what a count
    with a gap at τ certifies within) still uncertain and the time besides products
    reaches ``STALLED_SHARE`` of the dense path (a τ within a Ritz interval's reach of
    an eigenvalue would otherwise grow the basis to all of ``R^n``). The basis
    is then completed to ``[Q, Q⊥]`` with only ``H·Q⊥`` computed, or ``H`` read again
    from the identity when that is cheaper (``diagnostics["dense_restart"]``); the
    eigenvalues are counted by the exact rule (``"dense (switched)"``). Products taken
    before the basis (the pilot's; ``auto``'s calibration and pilot where ``auto``
    chose this count) first extend ``Q`` by their span's part outside it, not read
    again (``diagnostics["kept_products"]``). The dense path
    never overruns a ``max_matvecs`` the user fixed. The pilot and the timings choose
    the path, never the count.

    **SLQ path.** When the basis reaches ``max_basis`` before the count is certain, the
    converged Ritz vectors above ``τ`` (``c`` of them) deflate the operator and the rest
    of the budget runs stochastic Lanczos quadrature on ``P⊥AP⊥`` with probes orthogonal
    to them: ``rank = c + mean_v Σ_j w_j·1{|node_j| > τ}``, with the standard error of
    that mean. Its variance is about ``2(r − c)(1 − (r − c)/n)/m`` for ``m`` sphere probes.

    Negative eigenvalues count by magnitude, as in :class:`ExactRank`;
    ``diagnostics["n_negative"]`` gives how many counted Ritz values are negative.

    References
    ----------
    Golub & Van Loan, *Matrix Computations* §10.3 (block Lanczos); Kahan (1967) and
    Parlett, *The Symmetric Eigenvalue Problem* §11.5 (residual bounds for Ritz
    clusters); Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38(4), 2017 (SLQ);
    research notes, algorithms §2 and §4.

    Examples
    --------
    >>> import matrank
    >>> from matrank.testing import projector
    >>> result = matrank.LanczosRank(block_size=16).estimate(projector(300, 40), seed=0)
    >>> result.rank, result.stderr, result.status.name
    (40.0, None, 'CONVERGED')
    """

    threshold: float | str | None = None
    block_size: int = 32
    max_matvecs: int | None = None
    max_basis: int | None = None
    verify_steps: int | None = None
    n_probes: int | None = None
    slq_steps: int = 64
    probes: str = "sphere"
    dense_max: int = DENSE_MAX
    pilot_from: int = PILOT_MIN_DIM

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        check_int("block_size", self.block_size, low=1)
        check_int("max_matvecs", self.max_matvecs, low=1, allow_none=True)
        check_int("max_basis", self.max_basis, low=1, allow_none=True)
        check_int("verify_steps", self.verify_steps, low=1, allow_none=True)
        check_int("n_probes", self.n_probes, low=2, allow_none=True)
        check_int("slq_steps", self.slq_steps, low=2)
        check_choice("probes", self.probes, ("sphere", "rademacher", "gaussian"))
        check_int("dense_max", self.dense_max, low=0)
        check_int("pilot_from", self.pilot_from, low=1)

    method: ClassVar[str] = "lanczos"

    @sized_threads
    def estimate(
        self,
        obj: Any,
        *,
        seed: int | None = None,
        progress: bool = False,
        **checkpointing: Any,
    ) -> RankResult:
        """Estimate the rank of ``obj``; see the class notes for the stopping rule.

        ``progress=True`` shows a tqdm bar of matvecs with the running count; Ctrl-C
        returns the last assessed count (the pilot's estimate before that, NaN before
        the pilot's) with ``Status.INTERRUPTED``. ``checkpoint``, ``checkpoint_every``
        and ``keep_checkpoint`` as in :func:`matrank.estimate_rank`: the basis is saved
        after its assessments.
        """
        oracle = as_oracle(obj)
        plan = LanczosPlan.of(self, oracle)
        with Run.begin(
            self,
            oracle,
            Capability.HVP,
            seed=seed,
            progress=progress,
            budget=plan.max_matvecs,
            **checkpointing,
        ) as run:
            return _count(
                run, dataclasses.replace(plan, threshold=run.threshold(plan.threshold))
            )
        return run.stopped()


def _count(run: Run, plan: LanczosPlan) -> RankResult:
    """pilot → dense, or sketch (the range start) → grow → dense or readout (SLQ past
    the basis)."""
    meter = run.meter
    krylov = BlockKrylov(meter.hvp, plan.n, meter.dtype, meter.device, run.generator)
    offer = offered(plan.n, meter.dtype)  # taken once, whatever the path
    growth = start_basis(run, plan, krylov)
    if offer is not None:  # auto's products and pilot, where the count runs no pilot
        adopt_offer(growth, offer, run.factor)
    # Ctrl-C from here: the last assessment, or the pilot's estimate before one
    run.interim = functools.partial(interim, growth)
    pilot = growth.pilot
    if pilot is not None and pilot.path == "dense" and growth.latest is None:
        if affordable(run, plan.n, plan.max_matvecs):
            why = (
                f", at least half of n = {plan.n}: a Krylov basis of r to 2r"
                if pilot.count >= DENSE_FRACTION * plan.n
                else f" of n = {plan.n}, still growing with its quadrature's steps: a "
                "spectrum unresolved at τ, whose Krylov count must resolve every Ritz "
                "value near τ and"
            )
            growth.dense_reason = (
                f"the pilot counted {pilot.count:.0f} ± {pilot.stderr:.2g}{why} costs "
                "more than n products and eigvalsh"
            )
            return dense_count(
                run,
                plan.threshold,
                krylov,
                plan.block,
                growth.diagnostics(),
                growth.kept(),
            )
    if pilot is not None and pilot.path == "range start" and krylov.size == 0:
        sketched = sketch_start(run, plan, growth)
        if sketched is not None:
            return sketched
    end = grow_basis(run, plan, growth)
    if end is End.DENSE:
        return dense_count(
            run, plan.threshold, krylov, plan.block, growth.diagnostics(), growth.kept()
        )
    latest = growth.latest
    if end is End.CERTIFIED and latest is not None and wanted(plan, latest):
        growth.sharpened = sharpen(run, plan, growth)
    return readout(run, plan, growth, end)
