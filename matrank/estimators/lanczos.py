"""Lanczos counting: exact counts by block Krylov, SLQ past the exact budget."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from .._oracle import Capability, as_oracle, input_eps
from .._result import RankResult, Status
from .._run import Run, sized_threads
from .._validation import check_choice, check_int, check_threshold
from ..numerics.counting import (
    Assessment,
    CountingState,
    assess_basis,
    verification_steps,
)
from ..numerics.krylov import BlockKrylov
from ..numerics.threshold import (
    counting_curve,
)
from ._lanczos_dense import (
    DENSE_MAX,
    affordable,
    dense_count,
    dense_is_cheaper,
    worth_switching,
)
from ._lanczos_pilot import PILOT_MIN_DIM, Pilot, run_pilot
from ._lanczos_slq import slq_count

__all__ = ["LanczosRank"]

# Memory for the Krylov basis and the SLQ bases, in bytes: the basis is n × k, so this
# caps k at 2 GB / (8n) in float64 (k = 1250 at n = 200,000).
_BASIS_BYTES = 2 * 1024**3
_WIDEST = 128


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
    dense_max : int, default=8192
        Largest ``n`` whose count switches to the dense path when the rank proves a
        large fraction of ``n`` (Notes); 0 never switches.
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
    can miss eigenvalues and still look certain (at ``n = 112,810``, 660 counted above
    ``3e-11·λmax`` where 681 lie; ``benchmarks/curvature_ranks.py``), so the floor is
    raised to it.

    ``verify_steps=None`` takes the fewest ``s`` with ``g^s ≥ 10·sqrt(n/block_size)``,
    ``g = τ/(largest uncounted |θ|)``: a hidden eigenvalue above ``τ``, amplified
    ``g``-fold a step from its random share, would surface.

    **Failure modes handled** (see :mod:`matrank.numerics.krylov`): Krylov breakdown at
    exact zeros (random restart), ghost eigenvalues (full reorthogonalization twice),
    multiplicities above ``block_size`` (restarts find the other copies).

    **Pilot and dense path.** From ``n = pilot_from`` four sphere probes of
    Gauss–Radau quadrature (a node at zero) estimate the count first: at least half of
    ``n ≤ dense_max`` goes to the dense path at once (``H`` read, or ``n`` products,
    and the exact rule; ``diagnostics["path"] == "dense"``); a count below ``n/8``
    starts the basis from the range of ``H`` (``Y = HΩ``, one wide block); otherwise
    one random block as above (``diagnostics["pilot"]``). While the basis grows
    (``n ≤ dense_max``), the count switches to the dense path when that, timed from the
    run's own products and a calibrated ``eigvalsh``, costs less than the cheapest
    certified Krylov count still could, or (while the count still grows with the
    basis) once the work besides products reaches a quarter of it; without a pilot,
    when a third of ``R^n`` has been explored and nine tenths of it counted. The basis
    is then completed to ``[Q, Q⊥]`` with only ``H·Q⊥`` computed, or ``H`` read again
    from the identity when that is cheaper (``diagnostics["dense_restart"]``); the
    eigenvalues are counted by the exact rule (``"dense (switched)"``). The dense path
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
        returns the last assessed count with ``Status.INTERRUPTED``. ``checkpoint``,
        ``checkpoint_every`` and ``keep_checkpoint`` as in :func:`matrank.estimate_rank`:
        the basis is saved after its assessments.
        """
        oracle = as_oracle(obj)
        n = oracle.dim
        max_basis = self.max_basis or min(n, 8192, max(64, _BASIS_BYTES // (8 * n)))
        if self.max_basis is None and self.max_matvecs is not None:
            # leave SLQ at least half of a budget the user fixed
            max_basis = min(max_basis, max(self.block_size, self.max_matvecs // 2))
        max_basis = min(max_basis, n)
        block = min(self.block_size, n, max_basis)
        # 4n + 8 blocks: enough for the symmetry probe and for any n that the basis can
        # span completely, where the count is exact by construction.
        max_matvecs = self.max_matvecs or min(
            max(4096, 2 * max_basis + 512), 4 * n + 8 * block
        )
        run = Run.begin(
            self,
            oracle,
            Capability.HVP,
            seed=seed,
            progress=progress,
            budget=max_matvecs,
            **checkpointing,
        )
        meter, generator = run.meter, run.generator
        dtype, device = oracle.dtype, oracle.device
        current = block
        eps = input_eps(oracle)

        krylov = BlockKrylov(meter.hvp, n, dtype, device, generator)
        diagnostics: dict[str, Any] = {}
        state = CountingState()
        status = Status.BUDGET_EXHAUSTED
        threshold = 0.0
        latest: Assessment | None = None
        interrupted, switched = False, False
        bar = run.bar
        saved = run.restore("krylov", expect=lambda state: krylov.fits(state["krylov"]))
        pilot: Pilot | None = None
        if saved is None and n >= self.pilot_from:
            pilot = Pilot(
                *run.cached(
                    "pilot",
                    lambda: dataclasses.astuple(
                        run_pilot(
                            run,
                            self.threshold,
                            eps,
                            dense_max=self.dense_max,
                            block=block,
                            max_basis=max_basis,
                        )
                    ),
                )
            )
            diagnostics["pilot"] = dataclasses.asdict(pilot)
            if pilot.path == "dense" and affordable(run, n, max_matvecs):
                try:
                    return dense_count(self, run, krylov, block, diagnostics)
                except KeyboardInterrupt:  # the pilot's estimate is the best so far
                    run.close()
                    diagnostics["path"] = "pilot"
                    return run.result(
                        pilot.count,
                        stderr=pilot.stderr,
                        threshold=pilot.threshold,
                        diagnostics=diagnostics,
                        status=Status.INTERRUPTED,
                    )
            if pilot.path == "range start":
                before = meter.matvecs
                krylov.start_from_range(pilot.start_block)
                bar.update(meter.matvecs - before)
        if saved is not None:
            if saved.get("pilot") is not None:
                diagnostics["pilot"] = saved["pilot"]
            krylov.load_state_dict(saved["krylov"])
            state = CountingState(*saved["counting"])
            current = saved["current"]
            latest = assess_basis(
                krylov,
                n,
                eps,
                self.block_size,
                self.threshold,
                unless_count_differs_from=saved["assessed_with"],
            )
            threshold = latest.threshold
        # after a range start the basis is assessed before any block is added
        assess_first = krylov.size > 0 and saved is None
        try:
            while True:
                if assess_first:
                    assess_first = False
                    state.steps += 1
                    latest = assess_basis(krylov, n, eps, self.block_size, self.threshold)
                    threshold = latest.threshold
                    state.assessed_size = krylov.size
                    required = self.verify_steps or verification_steps(
                        latest.values, threshold, latest.floor, n, block
                    )
                    state.update(latest.counted, latest.certain, required)
                    continue
                extra = 0
                if state.inject and krylov.next_kept > 0:
                    # A fresh random block: in place of the Krylov continuation when that is
                    # negligible next to τ (a stagnated sequence in a noise band), else beside it.
                    if krylov.next_norm <= 0.01 * threshold:
                        krylov.restart()
                    else:
                        extra = current
                if krylov.size >= n:  # the basis is all of R^n: the count is exact
                    status = Status.CONVERGED
                    break
                room = min(max_basis - krylov.size, max_matvecs - meter.matvecs)
                needed = min(current, n - krylov.size)
                if room < needed:
                    break
                extra = min(extra, room - needed)
                if state.inject:
                    state.begin_verification()
                before = meter.matvecs
                if krylov.extend(current, extra) == 0:
                    status = Status.CONVERGED
                    break
                state.steps += 1
                bar.update(meter.matvecs - before)
                # The Ritz problem costs O(k³): solve it when the basis has grown by k/8
                # columns since the last solve, so it stays a fixed fraction of the
                # orthogonalization work (always while verifying).
                if (
                    not state.verifying
                    and krylov.size - state.assessed_size < krylov.size // 8
                ):
                    continue
                grown_basis = krylov.size - state.assessed_size
                state.assessed_size = krylov.size
                # While the count still grows nothing can be certified: the eigenvalues
                # alone (a third of the cost of eigenpairs at k = 4500) decide that.
                assessed_with = state.last_count
                latest = assess_basis(
                    krylov,
                    n,
                    eps,
                    self.block_size,
                    self.threshold,
                    unless_count_differs_from=assessed_with,
                )
                values, floor, threshold = latest.values, latest.floor, latest.threshold
                count, certain = latest.counted, latest.certain
                bar.set_postfix(rank=count, basis=krylov.size, certain=certain)
                required = self.verify_steps or verification_steps(
                    values, threshold, floor, n, block
                )
                grown = count - state.last_count
                if state.update(count, certain, required):
                    status = Status.CONVERGED
                    break
                # Wide blocks make cheaper columns, but each widening adds random
                # columns the basis must carry: double the block (up to _WIDEST, the
                # fastest in benchmarks/lanczos_speed.py) while a step harvests nearly a
                # block of new counted eigenvalues; verification goes back to the base.
                if certain:
                    current = block
                elif grown >= 0.75 * current:
                    current = min(2 * current, max(block, _WIDEST), max(1, max_basis // 4))
                else:  # the harvest slows: carry on with what the Krylov sequence still holds
                    current = max(block, min(current, krylov.next_kept))
                if (
                    self.dense_max
                    and not certain
                    and affordable(run, n, max_matvecs)
                    and (
                        worth_switching(n, krylov.size, count, self.dense_max)
                        or (
                            pilot is not None
                            and n <= self.dense_max
                            and dense_is_cheaper(
                                run,
                                n,
                                krylov.size,
                                count,
                                pilot.count,
                                harvesting=grown >= 0.5 * grown_basis,
                            )
                        )
                    )
                ):
                    switched = True
                    break
                if max_basis < n and count > max_basis // 2 and not certain:
                    # A certain count needs a basis of r (distinct eigenvalues) to 2r
                    # (multiplicities): past half the budget, stop spending on the basis.
                    diagnostics["switched_early_at"] = krylov.size
                    break
                if run.due():
                    run.record(
                        "krylov",
                        {
                            "krylov": krylov.state_dict(),
                            "counting": dataclasses.astuple(state),
                            "current": current,
                            "assessed_with": assessed_with,
                            "pilot": diagnostics.get("pilot"),
                        },
                    )
        except KeyboardInterrupt:
            # Ctrl-C: the last assessment is the best estimate so far (the basis may be
            # mid-update, so nothing is recomputed from it).
            if latest is None:
                raise
            interrupted, status = True, Status.INTERRUPTED
        finally:
            if not switched:
                run.close()
        if switched:
            try:
                return dense_count(self, run, krylov, block, diagnostics)
            except KeyboardInterrupt:  # the last assessment stands, as in the loop
                interrupted, status = True, Status.INTERRUPTED
                run.close()

        # The last assessment stands unless the basis grew after it (an O(k³) solve).
        if not interrupted and (latest is None or latest.size != krylov.size):
            latest = assess_basis(krylov, n, eps, self.block_size, self.threshold)
        assert latest is not None  # an interrupt before any assessment re-raised
        values, vectors, largest = latest.values, latest.vectors, latest.largest
        floor, threshold, choice = latest.floor, latest.threshold, latest.choice
        count, certain = latest.counted, latest.certain
        diagnostics["symmetry_defect"] = krylov.symmetry_defect
        diagnostics["orthogonalization_seconds"] = krylov.orthogonalization_seconds
        magnitudes = values.abs().numpy()
        diagnostics.update(
            noise_floor=floor,
            ritz_values=values.numpy(),
            basis_size=krylov.size,
            random_columns=krylov.random_columns,
            block_steps=state.steps,
            certified=bool(certain and status is Status.CONVERGED),
            n_negative=int(((values.abs() > threshold) & (values < 0)).sum()),
            path="krylov",
        )
        if choice is not None:
            diagnostics["plateau"] = dataclasses.asdict(choice)
        rank, stderr = float(count), None
        if status is not Status.CONVERGED and not interrupted:
            if vectors is None:
                values, vectors = krylov.ritz()
            rank, stderr, status = slq_count(
                self,
                run,
                krylov,
                values,
                vectors,
                threshold,
                max_matvecs,
                diagnostics,
                eps,
            )
        elif (plateau := Status.of_choice(choice)) is not Status.CONVERGED:
            status = plateau
        elif status is Status.CONVERGED and krylov.size < n and threshold < floor:
            status = Status.BELOW_RESOLUTION  # a user's τ under resolution(...)
        counts = counting_curve(
            magnitudes, low=max(floor, largest * 1e-16) / 10, high=largest * 1.5
        )
        return run.result(
            rank,
            stderr=stderr,
            threshold=threshold,
            diagnostics=diagnostics,
            counts=counts,
            status=status,
        )
