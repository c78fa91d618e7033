"""Langevin exponential filter of Bar, Mulayoff, Michaeli & Talmon (AAAI 2024)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from typing import Any, ClassVar

import torch

from ..._oracle import Capability
from ..._result import RankResult, Status
from ..._run import Interim, Run, doubling_checks, sized_threads
from ..._validation import (
    MatrankValueError,
    MatrankWarning,
    check_choice,
    check_int,
    check_jobs,
    check_real,
    check_threshold,
    message,
)
from ...theory import expected_loss_curve, expected_virial_curve, stationary_loss
from .chain import (
    ChainsSoFar,
    ChainStep,
    Diverged,
    largest_curvature,
    quadratic_defect,
    run_chains,
)
from .plan import (
    LangevinPlan,
    aimed,
    noise_variance,
    preconditioner_root,
    rebudgeted,
    resolve_plan,
)
from .readout import Attempt, Start, read, settled_at, summarize

__all__ = [
    "LangevinRank",
    "expected_loss_curve",
    "expected_virial_curve",
    "stationary_loss",
]


_MAX_REDUCTIONS = 6
# The median even-to-odd gradient ratio above which the chains left the quadratic
# region (rounding for a quadratic, ≈ 1 across a kink; measured on trained nets in
# benchmarks/README.md, first_try.py)
_QUADRATIC_DEFECT = 0.25
_VIRIAL_STEP = 1.5  # η·μmax of the automatic step with the virial readout
# Elements per chunk of the fused update on a CPU (2 MB of float64 per array): the
# passes over the chains' state then run in cache (3× faster at d = 256).
_CHUNK_ELEMENTS = 2**18


@dataclasses.dataclass(frozen=True, kw_only=True)
class LangevinRank:
    """Rank from preconditioned Langevin dynamics near a minimum (gradients only).

    Parameters
    ----------
    variant : {"default", "paper"}, default="default"
        ``"paper"``: Algorithm 1 of Bar et al. -- one chain, ``η = 1e-4``, 15,000 steps,
        the loss readout of eq. 20 over the last two thirds. ``"default"``: 8 chains in
        one batch, the virial readout, ``η`` from gradients, ``σ²`` from the scale of
        ``θ0``, a burn-in rule and the threshold matched to the filter that ran.
    step_size : float or "auto", optional
        ``η``, stable while ``η·(μmax(G^{1/2}HG^{1/2}) + γ) < 2``. ``"auto"`` (the
        default's) measures ``μmax`` by 20 Lanczos steps on gradient differences (40
        gradients) and takes ``1.5/(μmax + γ)`` (virial) or ``0.1/μmax`` (loss).
    sigma2 : float or "auto", optional
        ``σ²``. ``"auto"`` (the default's) keeps each coordinate's random walk at
        ``max(1e-4, eps^{1/3})`` times the RMS of ``θ0``, and at least
        ``10·η·‖G^{1/2}∇L(θ0)‖²`` (``diagnostics["sigma2_rule"]`` says which).
    n_steps : int, optional
        Steps per chain; by default what ``max_gradients`` leaves, per chain.
    n_average : int, optional
        Average the last ``n_average`` steps; by default MSER burn-in (default
        variant) or the last two thirds (paper).
    n_chains : int, optional
        Chains run as one batch (one batched gradient a step): 8, or 1 (paper).
    preconditioner : array_like or None, default=None
        Positive diagonal of ``G``; see :func:`matrank.adapters.adam_preconditioner`.
    readout : {"loss", "virial"}, optional
        ``"loss"``: eq. 20, ``4/σ²·(L_k − L0)``. ``"virial"`` (the default's):
        ``((2 − ηγ)δᵀ∇f − η∇fᵀG∇f)/σ²`` from the gradients alone.
    localization : float, default=0.0
        ``γ``: a restoring drift ``−ηγ(θ − θ0)``; eigenvalues well below ``γ`` are not
        counted, and the reported threshold is ``max(γ, τ)``.
    max_gradients : int, default=15000
        Gradient budget of the default variant, all chains and the automatic step.
    threshold : float or None, default=None
        Count the eigenvalues above this ``τ``: the run is made long enough for its
        filter to be matched there (``n_steps ≈ e^{−γ_E}/(2ητ)`` with the window's
        burn-in); ``None`` counts above the ``τ`` the budget reaches.
    rtol : float, optional
        Stop at a doubling of the run once the stderr and the growth since the last
        doubling are both ``≤ rtol·rank``; else ``BUDGET_EXHAUSTED``.
    n_jobs : int, optional
        Run the chains' groups (up to 4) on joblib workers (``joblib.Parallel``'s
        ``n_jobs``; the backend is the caller's, loky by default), in segments between
        which the run checks, shows progress and checkpoints. Each group draws its noise
        from a generator seeded by the run's seed and the group's index whether a worker
        or this process steps it, so the estimate is the same for every ``n_jobs``
        (``None`` included) and backend, to the bit where the oracle's batched gradient
        of a group's chains does not depend on the other chains in the batch (a
        ``TorchLoss``; a BLAS product of 2 rows may round apart from one of 8). The
        oracle must pickle.

    Notes
    -----
    On a quadratic, per eigenvalue ``μ`` of ``M = G^{1/2}HG^{1/2}``, the loss readout has
    expectation ``(1 − (1 − ημ)^{2k})/(1 − ημ/2)`` at step ``k``, the virial
    ``μ/(μ+γ)·(1 − (1 − η(μ+γ))^{2k})`` (:mod:`matrank.theory`): the virial counts each
    equilibrated mode exactly once, so ``η`` may sit near the stability limit. Its
    filter is ``P(E < 2kημ)``, ``E ~ Exp(1)``; the default reports the ``τ`` whose hard
    count the soft count matches, from a fit ``R(ℓ) = a + s(1 − e^{−c(ℓ−ℓ_K)})/c`` of the
    readout against ``ℓ = log 2ηk`` (``−0.5 ≤ c ≤ 1``):
    ``τ = [Γ(1+c)·mean_k k^{−c}]^{1/c}/(2η)`` (:func:`matrank.numerics.readout.
    matched_threshold`). The paper variant reports ``1/(2ηK)``.

    The stderr is the spread between chains (or of 20 batch means for one chain); the
    default adds in quadrature the count's change over 40 bootstrap refits of ``τ`` and
    the soft count's edge term ``sqrt(s·κ)``, so that ``rank ± stderr`` speaks of
    ``N(τ)`` (``diagnostics`` ``"sampling_stderr"``, ``"threshold_stderr"``,
    ``"edge_stderr"``). The default runs on ``L(θ) − ∇L(θ0)ᵀ(θ − θ0)``: the same Hessian,
    ``θ0`` exactly stationary. A diverging chain halves ``η`` and restarts.

    Cost: ``n_chains·n_steps`` gradients (+40 for the automatic step, +1 for ``∇L(θ0)``),
    and as many loss evaluations with the loss readout. How the defaults were measured:
    ``benchmarks/README.md`` (Table 1, coverage, the digits CNN).

    References
    ----------
    Bar, Mulayoff, Michaeli & Talmon, "The expected loss of preconditioned Langevin
    dynamics reveals the Hessian rank", AAAI 2024, Algorithm 1, eqs. 20–21, Theorem 1.
    White, "An effective truncation heuristic for bias reduction in simulation output",
    Simulation 69(6), 1997 (MSER).

    Examples
    --------
    >>> import numpy as np, matrank
    >>> from matrank.testing import rotated_spectrum
    >>> A = rotated_spectrum(20, 5, cond=2.0, seed=0)
    >>> estimator = matrank.LangevinRank(variant="paper", step_size=0.05, sigma2=1.0,
    ...                                  n_steps=3000, n_average=2000, n_chains=32)
    >>> result = estimator.estimate(A, seed=0)
    >>> curve = expected_loss_curve(np.linalg.eigvalsh(A), step_size=0.05, sigma2=1.0,
    ...                             n_steps=3000)
    >>> expected = 4 / 1.0 * curve[-2000:].mean()  # what eq. 20 estimates, exactly
    >>> bool(abs(result.rank - expected) < 4 * result.stderr)
    True
    >>> round(matrank.LangevinRank().estimate(A, seed=0).rank)  # default: virial, auto η
    5
    """

    variant: str = "default"
    step_size: float | str | None = None
    sigma2: float | str | None = None
    n_steps: int | None = None
    n_average: int | None = None
    n_chains: int | None = None
    preconditioner: Any = None
    readout: str | None = None
    localization: float = 0.0
    max_gradients: int = 15000
    threshold: float | None = None
    rtol: float | None = None
    n_jobs: int | None = None

    method: ClassVar[str] = "langevin"
    threshold_refused: ClassVar[dict[str, str]] = {
        "floor": "its threshold is where its filter is matched, 1/(2ηk) for a run of "
        "k steps, and no run reaches the noise floor; use method='exact' or 'lanczos'",
        "zero": "a filter matched at 0 needs an endless run",
    }

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, ("default", "paper"))
        if isinstance(self.step_size, str) and self.step_size != "auto":
            raise MatrankValueError(
                message("step_size", "a positive number or 'auto'", repr(self.step_size))
            )
        if self.step_size not in (None, "auto"):
            check_real("step_size", self.step_size, low=0.0, closed="right")
        if isinstance(self.sigma2, str) and self.sigma2 != "auto":
            raise MatrankValueError(
                message("sigma2", "a positive number or 'auto'", repr(self.sigma2))
            )
        if self.sigma2 not in (None, "auto"):
            check_real("sigma2", self.sigma2, low=0.0, closed="right")
        check_int("n_chains", self.n_chains, low=1, allow_none=True)
        if self.readout is not None:
            check_choice("readout", self.readout, ("loss", "virial"))
        check_real("localization", self.localization, low=0.0)
        check_int("max_gradients", self.max_gradients, low=1)
        check_real("rtol", self.rtol, low=0.0, closed="neither", allow_none=True)
        check_threshold(self.threshold, self.method, self.threshold_refused)
        if self.threshold is not None and (self.variant == "paper" or self.n_steps):
            raise MatrankValueError(
                message(
                    "threshold",
                    "None with variant='paper' or a given n_steps (the run's length "
                    "is what sets the threshold the filter reaches)",
                    repr(self.threshold),
                )
            )
        check_int("n_steps", self.n_steps, low=1, allow_none=True)
        check_int("n_average", self.n_average, low=1, allow_none=True)
        check_jobs(self.n_jobs)
        self.plan()  # the checks that need the variant's defaults

    def plan(self) -> LangevinPlan:
        """The options with the variant's defaults filled in (see
        :func:`~.plan.resolve_plan`): what ``estimate`` runs."""
        return resolve_plan(self)

    @sized_threads
    def estimate(
        self,
        obj: Any,
        *,
        seed: int | None = None,
        progress: bool = False,
        **checkpointing: Any,
    ) -> RankResult:
        """Run the chains and read the rank off the time average of the readout.

        ``progress=True`` shows a tqdm bar of steps with the running estimate; Ctrl-C
        returns the estimate from the steps run so far with ``Status.INTERRUPTED``.
        Checkpoint options as in :func:`matrank.estimate_rank`: the chains are saved
        between steps.
        """
        plan = self.plan()
        needs = Capability.GRAD | (
            Capability.LOSS if plan.readout == "loss" else Capability.NONE
        )
        with Run.begin(
            self,
            obj,
            needs,
            seed=seed,
            progress=progress,
            total=plan.n_steps,
            unit="step",
            **checkpointing,
        ) as run:
            options = dataclasses.replace(self, threshold=run.threshold(self.threshold))
            return options._phases(run, plan)
        return run.stopped()

    def _phases(self, run: Run, plan: LangevinPlan) -> RankResult:
        """start (``L(θ0)``, ``∇L(θ0)``, ``μmax``) → chains (restarted with half the step
        while they diverge) → check (the loss quadratic where they went) → readout."""
        root = preconditioner_root(self, run.meter)
        run.enter("start")
        loss0, tilt, mu_max = run.cached("start", lambda: self._start(run, plan, root))
        if tilt is not None:
            tilt = tilt.to(run.meter.device)
        start = Start(loss0, tilt, mu_max, root)
        if plan.step_size == "auto":
            factor = _VIRIAL_STEP if plan.readout == "virial" else 0.1
            eta = factor / (mu_max + self.localization)
        else:
            eta = float(plan.step_size)
        reductions: list[dict[str, float]] = []
        sofar = ChainsSoFar()
        attempt: Attempt | None = None

        def interim() -> Interim | None:  # Ctrl-C: the steps run so far
            if attempt is None or sofar.done < 2:
                return None
            readings = sofar.readings[: sofar.done]
            summary = summarize(self, attempt.plan, readings, attempt.eta, interrupted=True)
            found = read(
                self, attempt, start, readings, summary, reductions, interrupted=True
            )
            return found[0]

        run.interim = interim
        while True:
            plan, eta = aimed(self, plan, eta, run)
            if reductions:  # a restart spends what the failed chains left, no more
                plan = rebudgeted(self, plan, run, reductions)
            run.enter("chains")
            attempt = Attempt(plan, eta, *noise_variance(run.meter, plan, root, eta, tilt))
            try:
                readings, summary, status = self._chains(
                    run, attempt, start, len(reductions), sofar
                )
                break
            except Diverged as diverged:
                eta = self._restart(eta, diverged, reductions)
        run.enter("check")
        assert sofar.delta is not None
        gradient0 = tilt if tilt is not None else run.meter.grad(run.meter.theta0[None])[0]
        even, odd = quadratic_defect(run.meter, sofar.delta, gradient0)
        defect = torch.maximum(even, odd)
        run.enter("readout")
        found, evidence = read(
            self, attempt, start, readings, summary, reductions, interrupted=False
        )
        found.diagnostics["quadratic_defect"] = defect.numpy()
        found.diagnostics["quadratic_defect_parts"] = {
            "even": even.numpy(),
            "odd": odd.numpy(),
        }
        if evidence is not None:
            status = Status.NEGATIVE_CURVATURE
        elif status is Status.CONVERGED and float(defect.median()) > _QUADRATIC_DEFECT:
            status = Status.NOT_QUADRATIC
        elif status is Status.CONVERGED and found.diagnostics["drift"][0] < (
            -3 * found.diagnostics["drift"][1]
        ):
            status = Status.NOT_STATIONARY  # equilibration only ever raises a count
        return run.result(
            found.rank,
            stderr=found.stderr,
            threshold=found.threshold,
            diagnostics=found.diagnostics,
            status=status,
        )

    def _restart(
        self, eta: float, diverged: Diverged, reductions: list[dict[str, float]]
    ) -> float:
        """The step size to restart diverged chains with (half), or a refusal."""
        if self.variant == "paper":
            raise MatrankValueError(
                message(
                    "step_size",
                    "small enough for a stable chain (η·μmax < 2), at a minimum",
                    f"{eta:g}, with which the chain diverged at step {diverged.step}",
                )
            ) from None
        if len(reductions) == _MAX_REDUCTIONS:
            # η·μmax ≤ 1.5/64 by now: no instability is left that a smaller step would
            # cure, only curvature that is negative
            raise MatrankValueError(
                message(
                    "theta0",
                    "a minimum of the loss (chains stable at some step size)",
                    f"a point where the chains ran away at every step size tried, down "
                    f"to η = {eta:.3g} (step {diverged.step}): negative curvature, a "
                    "saddle or a maximum; count |λ| with method='lanczos' or 'exact' "
                    "(Hessian-vector products)",
                )
            ) from None
        reductions.append({"step_size": eta, "diverged_at": diverged.step})
        warnings.warn(
            f"the Langevin chains diverged at step {diverged.step} with "
            f"η = {eta:.3g}; restarting them with η = {eta / 2:.3g}",
            MatrankWarning,
            stacklevel=5,
        )
        return eta / 2

    def _start(
        self, run: Run, plan: LangevinPlan, root: torch.Tensor | None
    ) -> tuple[float, torch.Tensor | None, float | None]:
        """``L(θ0)`` (loss readout), ``∇L(θ0)`` (default variant) and ``μmax`` (auto η)."""
        meter, theta0 = run.meter, run.meter.theta0
        loss0 = float(meter.loss(theta0[None])[0]) if plan.readout == "loss" else 0.0
        # The default runs on L(θ) − ∇L(θ0)ᵀ(θ − θ0): the same Hessian, and θ0 stationary
        # even where training stopped short (a residual gradient would otherwise drive
        # the chains along it and dominate a readout divided by a small σ²).
        tilt = None if self.variant == "paper" else meter.grad(theta0[None])[0]
        mu_max = None
        if plan.step_size == "auto":
            ones = torch.ones(meter.dim, dtype=meter.dtype, device=meter.device)
            mu_max = largest_curvature(meter, ones if root is None else root, run.generator)
        return loss0, tilt, mu_max

    def _chains(
        self,
        run: Run,
        attempt: Attempt,
        start: Start,
        index: int,
        sofar: ChainsSoFar,
    ) -> tuple[torch.Tensor, dict[str, Any], Status]:
        """The chains from ``θ0``; readings (steps × chains, rank units), summary, status."""
        plan, eta, sigma2 = attempt.plan, attempt.eta, attempt.sigma2
        root, tilt, loss0 = start.root, start.tilt, start.loss0
        meter = run.meter
        n, device = meter.dim, meter.device
        total, chains = plan.n_steps, plan.n_chains
        step = ChainStep(
            eta=eta,
            gamma=self.localization,
            noise_scale=math.sqrt(eta * sigma2),
            tilt=tilt,
            root=root,
            squared=None if root is None else root**2,
            width=n if device.type != "cpu" else max(1, _CHUNK_ELEMENTS // chains),
        )
        rounds: list[dict[str, Any]] = []

        def settled(readings: torch.Tensor) -> bool:
            summary = summarize(self, plan, readings, eta)
            rounds.append(
                {
                    "steps": readings.shape[0],
                    "rank": summary["rank"],
                    "stderr": summary["stderr"],
                }
            )
            return settled_at(self, rounds)

        checks = [] if self.rtol is None else list(doubling_checks(128, total))[:-1]
        common: dict[str, Any] = {
            "n_steps": total,
            "n_chains": chains,
            "readout": plan.readout,
            "sigma2": sigma2,
            "loss0": loss0,
            "checks": checks,
            "settled": settled,
            "sofar": sofar,
        }
        readings = run_chains(
            run, step, extra=rounds, attempt=index, n_jobs=self.n_jobs, **common
        )
        status = Status.CONVERGED
        done = readings.shape[0]
        summary = summarize(self, plan, readings, eta)
        if self.rtol is not None and status is Status.CONVERGED:
            rounds.append(
                {"steps": done, "rank": summary["rank"], "stderr": summary["stderr"]}
            )
            if not settled_at(self, rounds):
                status = Status.BUDGET_EXHAUSTED
                growth = [
                    f"{b['rank'] - a['rank']:+.3g}" for a, b in itertools.pairwise(rounds)
                ]
                warnings.warn(
                    f"the Langevin estimate did not settle to rtol={self.rtol:g} in "
                    f"{done} steps (growth per doubling: {', '.join(growth[-4:])}; "
                    f"stderr {summary['stderr']:.3g}): eigenvalues keep equilibrating "
                    f"as 1/(2ηk) falls; raise max_gradients or accept the threshold "
                    f"{summary['threshold']:.3g}",
                    MatrankWarning,
                    stacklevel=3,
                )
            summary["diagnostics"]["rounds"] = rounds
        return readings, summary, status
