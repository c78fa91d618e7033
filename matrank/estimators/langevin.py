"""Langevin exponential filter of Bar, Mulayoff, Michaeli & Talmon (AAAI 2024)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from .._oracle import Capability
from .._result import RankResult, Status
from .._run import Run, doubling_checks
from .._validation import (
    MatrankValueError,
    MatrankWarning,
    check_choice,
    check_int,
    check_real,
    message,
)
from ..numerics.readout import edge_width, level, matched_threshold, mser_start
from ..numerics.trace import mean_and_stderr
from ..theory import expected_loss_curve, expected_virial_curve, stationary_loss
from ._langevin_chain import ChainStep, Diverged, Noise, largest_curvature

__all__ = [
    "LangevinRank",
    "expected_loss_curve",
    "expected_virial_curve",
    "stationary_loss",
]


_PAPER = {
    "step_size": 1e-4,
    "sigma2": 2e-5,
    "n_chains": 1,
    "readout": "loss",
    "n_steps": 15000,
}
_DEFAULT = {"step_size": "auto", "sigma2": "auto", "n_chains": 8, "readout": "virial"}
_VIRIAL_STEP = 1.5  # η·μmax of the automatic step with the virial readout
_AUTO_STEP_GRADIENTS = 40  # largest_curvature: 20 Lanczos steps, two gradients each
_MAX_REDUCTIONS = 6
# σ² ≥ _RESIDUAL_NOISE·η·‖G^{1/2}∇L(θ0)‖²: the noise of one step outweighs the drift the
# residual gradient would cause by sqrt(10) (benchmarks/README.md, the digits CNN)
_RESIDUAL_NOISE = 10.0
_THRESHOLD_RESAMPLES = 40
# Elements per chunk of the fused update on a CPU (2 MB of float64 per array): the
# passes over the chains' state then run in cache (3× faster at d = 256).
_CHUNK_ELEMENTS = 2**18


@dataclasses.dataclass(frozen=True)
class LangevinPlan:
    """The options with the variant's defaults filled in, resolved at ``estimate``."""

    step_size: float | str
    sigma2: float | str
    n_chains: int
    readout: str
    n_steps: int
    n_average: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LangevinRank:
    """Rank from preconditioned Langevin dynamics near a minimum (gradients only).

    Parameters
    ----------
    variant : {"default", "paper"}, default="default"
        ``"paper"``: Algorithm 1 of Bar et al. -- one chain of Euler–Maruyama steps
        (their eq. 21) ``θ ← θ − ηG∇L(θ) + sqrt(ησ²)·G^{1/2}ξ`` from ``θ0`` with a fixed
        preconditioner ``G`` (``Σ·G⁻¹ = σ²I``), ``η = 1e-4``, 15,000 steps, and the
        estimate (their eq. 20) ``4/σ² · (mean of the last 10,000 losses − L(θ0))``.
        ``"default"``: 8 chains as one batch, the virial readout, ``η = 1.5/μmax`` from
        gradients (``step_size="auto"``), σ² small enough for the loss to be quadratic
        where the chains go, 15,000 gradients in all (``max_gradients``),
        the averaging window chosen by a burn-in rule, the threshold matched to the
        filter that ran, the step halved and the chains restarted if they diverge.
        Options left at ``None`` take the variant's values.
    step_size : float or "auto", default: "auto" (default), 1e-4 (paper)
        ``η``; stability needs ``η·(μmax(G^{1/2}HG^{1/2}) + γ) < 2``. ``"auto"``
        estimates ``μmax`` from gradients only -- 20 Lanczos steps on central
        differences of the gradient at ``θ0`` (40 gradients, counted in the cost) -- and
        sets ``η = 1.5/(μmax + γ)`` for the virial readout (a quarter below the stability
        limit: the smaller the threshold ``≈ 1/(2ηK)``, the more is counted), ``0.1/μmax`` for the loss
        readout (whose stiff-mode inflation ``1/(1 − ημ/2)`` is then at most 5 %);
        ``diagnostics["mu_max"]`` reports the estimate.
    sigma2 : float or "auto", default: "auto" (default), 2e-5 (paper)
        ``σ²``. On a quadratic the virial estimate does not depend on it (the readings
        are in rank units); on a real loss it sets how far the chains wander, and the
        cubic and quartic terms of the loss bias the estimate in proportion to it (at
        the paper's 2e-5: +1.6 % on a well-conditioned linear net, d = 16). ``"auto"``
        keeps every coordinate's random walk over the run, ``sqrt(ησ²·K·mean G)``, at
        ``ε`` times the RMS of ``θ0`` (1 if ``θ0 = 0``), ``ε = max(1e-4, eps^{1/3})``
        (1e-4 in float64, 4.9e-3 in float32, where the gradient's rounding would
        otherwise swamp the displacement), but never below
        ``10·η·‖G^{1/2}∇L(θ0)‖²``, where one step's noise outweighs the drift the
        residual gradient at ``θ0`` would cause by sqrt(10). The floor is for
        non-smooth losses: a ReLU network's training stalls where pre-activations sit
        at their kinks, ``∇L(θ0)`` does not vanish, and chains that stay within the
        kinks' reach read the jumps of the gradient, not the Hessian (the 737-parameter
        digits CNN: −8 ± 24 for a dense count of 53 at ``σ² = 1.2e-10``; 69 ± 5 for 65
        from ``σ² = 1e-8`` on). ``diagnostics["sigma2"]`` reports the value and
        ``diagnostics["sigma2_rule"]`` which rule set it.
    n_steps : int, optional
        Iterations per chain. Default: ``max_gradients`` (less the 40 of the automatic
        step and the 1 of ``∇L(θ0)``) divided by ``n_chains``; 15,000 for the paper
        variant.
    n_average : int, optional
        Average the last ``n_average`` iterations. Default: the paper's two thirds of
        the run; for the default variant the MSER burn-in rule (White 1997) on batch
        means picks the start of the window within the first half of the run.
    n_chains : int, optional
        Independent chains run as one batch (one batched gradient a step); 8 by
        default, 1 for the paper variant.
    preconditioner : array_like or None, default=None
        Diagonal of ``G`` (positive, length ``n``); ``None`` is the identity. For a
        PyTorch model, :func:`matrank.adapters.adam_preconditioner` builds it from an
        Adam optimizer's state, as in the paper's DnCNN experiment.
    readout : {"loss", "virial"}, optional
        ``"loss"`` (the paper's): eq. 20, ``4/σ²·(L_k − L0)`` (needs loss values).
        ``"virial"`` (the default's): ``((2 − ηγ)(θ_k − θ0)ᵀ∇f − η∇fᵀG∇f)/σ²`` from the
        gradients the chain computes anyway, whose expectation on a quadratic is
        ``Σ_μ (1 − (1 − ημ)^{2k})`` exactly (``γ = 0``): no ``1/(1 − ημ/2)`` inflation
        of stiff modes, so η can sit near the stability limit.
    localization : float, default=0.0
        ``γ ≥ 0`` (default variant): a restoring drift ``−ηγ(θ − θ0)`` keeps the chains
        near ``θ0`` in flat directions; the estimate becomes the soft count
        ``Σ_μ μ/(μ + γ)`` (eigenvalues well below ``γ`` are not counted), reached after
        ``≈ 1/(ηγ)`` steps. The reported threshold is then ``max(γ, τ)``.
    max_gradients : int, default=15000
        Gradient budget of the default variant (all chains, the automatic step
        included), used when ``n_steps`` is not given.
    rtol : float, optional
        Adaptive budget (default variant): check at 128, 256, … steps and stop once the
        standard error and the growth of the estimate since the previous check are both
        ``≤ rtol·rank``; ``Status.BUDGET_EXHAUSTED`` (with a warning giving the growth
        per doubling) if ``n_steps`` runs out first -- the filter keeps finding
        eigenvalues as ``1/(2ηk)`` falls.

    Notes
    -----
    On a quadratic, per eigenvalue ``μ`` of ``M = G^{1/2}HG^{1/2}`` the paper's readout
    has expectation ``(1 − (1 − ημ)^{2k}) / (1 − ημ/2)`` at step ``k``
    (:func:`expected_loss_curve`), the virial ``μ/(μ+γ)·(1 − (1 − η(μ+γ))^{2k})``
    (:func:`expected_virial_curve`), so both estimates' expectations on a known spectrum
    are exact. The virial's filter is ``P(E < 2kημ)`` for ``E ~ Exp(1)``: the average of
    the hard count ``N(E/(2ηk))``. The default variant reports as threshold the ``τ``
    whose hard count its soft count matches: fitting ``R(ℓ) = a + s(1 − e^{−c(ℓ−ℓ_K)})/c``
    to the readout against ``ℓ = log 2ηk`` over the last ``31/32`` of the run (a power-law
    density of eigenvalues near ``τ``), ``τ = [Γ(1+c)·mean_k k^{−c}]^{1/c}/(2η)`` over the
    averaged steps (``c → 0``: ``e^{−γ_E − mean log k}/(2η)``); the fit is in
    ``diagnostics["threshold_fit"]``. The shape is kept to ``−0.5 ≤ c ≤ 1``, where the
    matched ``τ`` of one step lies within a factor ``e^{±0.57}`` of the log-flat one:
    ``c = 1`` is a locally uniform density in ``λ`` (``τ = mean(1/k)/(2η)``); beyond it
    ``τ`` climbs towards the top of the filter, resting on the power law's extrapolation
    across the filter's lower tail, which the readings cannot tell from the last few
    eigenvalues of a spectrum that ends there (on the d = 8 linear nets a fit free up to
    ``c = 3`` put ``τ`` where the filter is ≈ 0.95, above eigenvalues it counted at
    0.74–0.91); towards ``c = −1``, ``Γ(1 + c)`` diverges and ``τ`` falls without bound
    (a spectrum piling up as ``i^{−1.5}``: a fit at ``c = −0.9`` put ``τ`` 3× too low,
    |z| = 4.6). The paper variant reports ``1/(2ηK)``.

    The standard error is the spread between chains (``n_chains ≥ 2``), else that of 20
    batch means over time (approximate: successive readings are correlated). In the
    default variant it also carries the uncertainty of the matched ``τ``: the fit is
    repeated on 40 resamplings of the chains, and the RMS change of the readings between
    the step whose filter centres on the fitted ``τ`` and those of the refits' ``τ``
    (the readings are soft counts, so this is the change of the count that moving
    ``τ`` makes) is added in quadrature; so is the edge term: a soft count differs from
    the hard one even at the right ``τ``, since eigenvalues inside the filter's edge count
    fractionally, with variance ``s·κ`` for ``s`` eigenvalues per e-fold near ``τ`` placed
    at random (:func:`edge_width`). ``diagnostics["sampling_stderr"]``,
    ``["threshold_stderr"]`` and ``["edge_stderr"]`` hold the three parts, so that
    ``rank ± stderr`` is a statement about ``N(τ)`` at the reported ``τ``.
    The default variant runs the chains on ``L(θ) − ∇L(θ0)ᵀ(θ − θ0)`` -- the same
    Hessian, with ``θ0`` exactly stationary even where training stopped short (else the
    residual gradient drives the chains along it); ``diagnostics
    ["gradient_norm_at_theta0"]`` reports ``‖∇L(θ0)‖``.

    Cost: ``n_chains·n_steps`` gradients (+40 for the automatic step, +1 for ``∇L(θ0)``
    in the default variant, + those of runs restarted after a divergence), and as many loss evaluations with the loss readout
    (none with the virial). ``diagnostics["readings"]`` is the readout per step (mean
    over chains) in rank units.

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
    rtol: float | None = None

    method: ClassVar[str] = "langevin"

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
        check_int("n_steps", self.n_steps, low=1, allow_none=True)
        check_int("n_average", self.n_average, low=1, allow_none=True)
        self.plan()  # the checks that need the variant's defaults

    def plan(self) -> LangevinPlan:
        """The variant's defaults for the options left at ``None`` (never written back:
        ``dataclasses.replace`` then behaves like a fresh construction)."""
        paper = self.variant == "paper"
        fill = _PAPER if paper else _DEFAULT
        values = {
            name: fill[name] if getattr(self, name) is None else getattr(self, name)
            for name in ("step_size", "sigma2", "n_chains", "readout")
        }
        n_chains, readout = int(values["n_chains"]), values["readout"]
        if paper and (self.localization or self.rtol is not None):
            raise MatrankValueError(
                message(
                    "variant='paper'",
                    "used without localization or rtol (the paper's algorithm has "
                    "neither; use variant='default')",
                    f"localization={self.localization}, rtol={self.rtol}",
                )
            )
        if self.localization and readout != "virial":
            raise MatrankValueError(
                message(
                    "localization",
                    "used with readout='virial' (eq. 20's loss readout has no "
                    "correction for the restoring drift)",
                    f"readout={readout!r}",
                )
            )
        n_steps = self.n_steps
        if n_steps is None and paper:
            n_steps = int(_PAPER["n_steps"])
        if n_steps is None:
            overhead = (_AUTO_STEP_GRADIENTS if values["step_size"] == "auto" else 0) + 1
            n_steps = (self.max_gradients - overhead) // n_chains
            if n_steps < 2:
                raise MatrankValueError(
                    message(
                        "max_gradients",
                        f"enough for two steps of {n_chains} chains after the "
                        f"{overhead} gradients of ∇f(θ0) and the automatic step",
                        str(self.max_gradients),
                    )
                )
        n_average = self.n_average
        if n_average is None and paper:
            n_average = max(1, 2 * n_steps // 3)
        check_int("n_average", n_average, low=1, high=n_steps, allow_none=True)
        return LangevinPlan(
            step_size=values["step_size"],
            sigma2=values["sigma2"],
            n_chains=n_chains,
            readout=readout,
            n_steps=n_steps,
            n_average=n_average,
        )

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
        run = Run.begin(
            self,
            obj,
            needs,
            seed=seed,
            progress=progress,
            total=plan.n_steps,
            unit="step",
            **checkpointing,
        )
        try:
            root = self._preconditioner_root(run.meter)
        except MatrankValueError:
            run.close()
            raise
        loss0, tilt, mu_max = run.cached("start", lambda: self._start(run, plan, root))
        if tilt is not None:
            tilt = tilt.to(run.meter.device)
        if plan.step_size == "auto":
            factor = _VIRIAL_STEP if plan.readout == "virial" else 0.1
            eta = factor / (mu_max + self.localization)
        else:
            eta = float(plan.step_size)
        reductions: list[dict[str, float]] = []
        while True:
            try:
                sigma2, rule = self._noise_variance(run.meter, plan, root, eta, tilt)
                readings, summary, status = self._chains(
                    run, plan, root, eta, sigma2, tilt, loss0, f"chains {len(reductions)}"
                )
                break
            except Diverged as diverged:
                if self.variant == "paper" or len(reductions) == _MAX_REDUCTIONS:
                    run.close()
                    raise MatrankValueError(
                        message(
                            "step_size",
                            "small enough for a stable chain (η·μmax < 2)",
                            f"{eta:g}, with which the chain diverged at step "
                            f"{diverged.step}"
                            + (f" after {len(reductions)} halvings" if reductions else ""),
                        )
                    ) from None
                reductions.append({"step_size": eta, "diverged_at": diverged.step})
                warnings.warn(
                    f"the Langevin chains diverged at step {diverged.step} with "
                    f"η = {eta:.3g}; restarting them with η = {eta / 2:.3g}",
                    MatrankWarning,
                    stacklevel=2,
                )
                eta /= 2
        mean_trace = readings.mean(dim=1).numpy()
        diagnostics: dict[str, Any] = {
            "variant": self.variant,
            "readout": plan.readout,
            "step_size": eta,
            "mu_max": mu_max,
            "sigma2": sigma2,
            "sigma2_rule": rule,
            "gradient_norm_at_theta0": (
                None if tilt is None else float(torch.linalg.vector_norm(tilt))
            ),
            "localization": self.localization,
            "readings": mean_trace,
            "loss0": loss0,
            "steps_done": readings.shape[0],
            "step_reductions": reductions,
            **summary.pop("diagnostics"),
        }
        if plan.readout == "loss":
            diagnostics["loss_excess"] = mean_trace * sigma2 / 4.0
        return run.result(
            summary["rank"],
            stderr=summary["stderr"],
            threshold=summary["threshold"],
            diagnostics=diagnostics,
            status=status,
        )

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
        plan: LangevinPlan,
        root: torch.Tensor | None,
        eta: float,
        sigma2: float,
        tilt: torch.Tensor | None,
        loss0: float,
        key: str,
    ) -> tuple[torch.Tensor, dict[str, Any], Status]:
        """The chains from ``θ0``; readings (steps × chains, rank units), summary, status."""
        meter = run.meter
        n, dtype, device = meter.dim, meter.dtype, meter.device
        theta0 = meter.theta0
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
        readings = torch.empty(total, chains, dtype=torch.float64)
        # |reading| of a stable chain near a minimum is ≈ rank ± O(sqrt(n)); a
        # diverging one grows geometrically and passes this within a few dozen steps
        bound = 1e6 * (n + 1)
        checks = [total] if self.rtol is None else list(doubling_checks(128, total))
        rounds: list[dict[str, Any]] = []
        status, done = Status.CONVERGED, total
        bar = run.bar
        every = max(1, total // 100)
        noise = Noise(chains, n, run.generator)
        delta = torch.zeros(chains, n, dtype=dtype, device=device)
        first = 0
        saved = run.restore(key)
        if saved is not None:
            delta = saved["delta"].to(device)
            first = saved["step"]
            readings[:first] = saved["readings"]
            rounds, checks = saved["rounds"], saved["checks"]
            noise.load(saved["noise"])
        theta = theta0 + delta  # θ0 + δ, updated in place
        k = first
        try:
            for k in range(first, total):
                gradient = meter.grad(theta)
                if plan.readout == "loss":
                    # L_k, before the update, as in the authors' code
                    excess = meter.loss(theta).double() - loss0
                    if tilt is not None:
                        excess = excess - torch.linalg.vecdot(delta, tilt).double()
                xi = noise.draw().to(
                    device=device, dtype=torch.float32 if dtype == torch.float64 else dtype
                )
                virial = step.advance(delta, theta, theta0, gradient, xi)
                if plan.readout == "loss":
                    reading = 4.0 / sigma2 * excess
                else:
                    reading = virial.double() / sigma2
                readings[k] = reading.cpu()
                if not bool(torch.isfinite(readings[k]).all()) or (
                    abs(float(readings[k].mean())) > bound
                ):
                    raise Diverged(k)
                if k % every == every - 1:
                    bar.update(every)
                    window = readings[k // 2 : k + 1].mean(dim=0)
                    postfix = {"rank": f"{float(window.mean()):.1f}"}
                    if chains >= 2:
                        postfix["stderr"] = f"{float(window.std()) / math.sqrt(chains):.2g}"
                    bar.set_postfix(postfix)
                if k + 1 == checks[0] and k + 1 < total:
                    checks.pop(0)
                    summary = self._summarize(plan, readings[: k + 1], eta)
                    rounds.append(
                        {
                            "steps": k + 1,
                            "rank": summary["rank"],
                            "stderr": summary["stderr"],
                        }
                    )
                    if self._settled(rounds):
                        status, done = Status.CONVERGED, k + 1
                        break
                if run.due():
                    run.record(
                        key,
                        {
                            "delta": delta,
                            "step": k + 1,
                            "readings": readings[: k + 1],
                            "rounds": rounds,
                            "checks": checks,
                            "noise": noise.state(),
                        },
                    )
        except KeyboardInterrupt:
            # Ctrl-C: the estimate from the steps run so far, flagged as such.
            if k < 2:
                raise
            status, done = Status.INTERRUPTED, k
        finally:
            run.close()
            noise.close()
        readings = readings[:done]
        summary = self._summarize(
            plan, readings, eta, interrupted=status is Status.INTERRUPTED
        )
        if self.rtol is not None and status is Status.CONVERGED:
            rounds.append(
                {"steps": done, "rank": summary["rank"], "stderr": summary["stderr"]}
            )
            if not self._settled(rounds):
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

    def _noise_variance(
        self,
        meter: Any,
        plan: LangevinPlan,
        root: torch.Tensor | None,
        eta: float,
        tilt: torch.Tensor | None,
    ) -> tuple[float, str]:
        """``σ²`` and the rule that set it: the option, or for ``"auto"`` the one whose
        random walk stays small, raised to the residual gradient's floor."""
        if plan.sigma2 != "auto":
            return float(plan.sigma2), "given"
        theta0 = meter.theta0
        scale = float(theta0.double().pow(2).mean().sqrt()) or 1.0
        epsilon = max(1e-4, float(torch.finfo(meter.dtype).eps) ** (1 / 3))
        spread = 1.0 if root is None else float(root.double().pow(2).mean())
        small = (epsilon * scale) ** 2 / (eta * plan.n_steps * spread)
        if tilt is None:
            return small, "random walk"
        residual = tilt.double() if root is None else (root * tilt).double()
        floor = _RESIDUAL_NOISE * eta * float(residual.pow(2).sum())
        return (floor, "residual gradient") if floor > small else (small, "random walk")

    def _settled(self, rounds: list[dict[str, Any]]) -> bool:
        if self.rtol is None or len(rounds) < 2:
            return False
        last, previous = rounds[-1], rounds[-2]
        scale = self.rtol * max(abs(last["rank"]), 1.0)
        return last["stderr"] <= scale and abs(last["rank"] - previous["rank"]) <= scale

    def _summarize(
        self,
        plan: LangevinPlan,
        readings: torch.Tensor,
        eta: float,
        *,
        interrupted: bool = False,
    ) -> dict[str, Any]:
        """Estimate, stderr and threshold from ``readings`` (steps × chains)."""
        steps, chains = readings.shape
        average = plan.n_average or 0
        mean_trace = readings.mean(dim=1).numpy()
        if self.variant == "paper" and not interrupted:
            begin = steps - average
        elif plan.n_average is not None:
            begin = steps - average if average < steps else steps // 2
        else:
            begin = mser_start(mean_trace)
        window = readings[begin:]
        per_chain = window.mean(dim=0)
        if chains >= 2:
            rank, stderr = mean_and_stderr(per_chain)
        else:
            parts = np.array_split(window[:, 0].numpy(), min(20, window.shape[0]))
            _, stderr = mean_and_stderr(
                torch.tensor([float(p.mean()) for p in parts], dtype=torch.float64)
            )
            rank = float(per_chain[0])
        diagnostics: dict[str, Any] = {
            "n_average": steps - begin,
            "burn_in": begin,
            "per_chain": per_chain.numpy(),
        }
        if self.variant == "paper":
            threshold = 1.0 / (2 * eta * max(steps, 1))
        else:
            threshold, fit = matched_threshold(mean_trace, eta, begin)
            # τ is itself estimated: refit on chains resampled with replacement and
            # read what moving τ to each refit's value changes in the count off the
            # readings themselves (the soft count at the step whose filter centres on
            # τ), so that the stderr is that of the estimate *as N(τ)*. A slope times
            # the spread of log τ would miss it where the fit's shape is undetermined
            # and its slope at τ ≈ 0 while eigenvalues sit across the τ's it allows.
            spread = 0.0
            if chains >= 2:
                resample = np.random.default_rng(0)
                refits = [
                    matched_threshold(
                        readings[:, resample.integers(0, chains, chains)]
                        .mean(dim=1)
                        .numpy(),
                        eta,
                        begin,
                    )[0]
                    for _ in range(_THRESHOLD_RESAMPLES)
                ]
                base = level(mean_trace, eta, threshold, fit["slope"])
                moved = [level(mean_trace, eta, t, fit["slope"]) - base for t in refits]
                spread = math.sqrt(float(np.mean(np.square(moved))))
            # a soft count is not a hard one even at the right τ: eigenvalues inside the
            # filter's edge count fractionally, by Σ(w(λ) − 1[λ > τ]) whose variance
            # for eigenvalues spread at the fitted density in log λ is slope·κ
            edge = math.sqrt(
                max(fit["slope"], 0.0) * edge_width(eta, threshold, begin, steps)
            )
            diagnostics.update(
                threshold_fit=fit,
                sampling_stderr=float(stderr),
                threshold_stderr=spread,
                edge_stderr=edge,
            )
            stderr = math.sqrt(float(stderr) ** 2 + spread**2 + edge**2)
            threshold = max(threshold, self.localization)
        return {
            "rank": float(rank),
            "stderr": float(stderr),
            "threshold": threshold,
            "diagnostics": diagnostics,
        }

    def _preconditioner_root(self, meter: Any) -> torch.Tensor | None:
        n, dtype, device = meter.dim, meter.dtype, meter.device
        if self.preconditioner is None:
            return None
        diagonal = torch.as_tensor(self.preconditioner, dtype=torch.float64).flatten()
        if diagonal.numel() != n or not bool((diagonal > 0).all()):
            raise MatrankValueError(
                message(
                    "preconditioner",
                    f"a positive diagonal of length {n}",
                    f"{diagonal.numel()} entries, minimum {float(diagonal.min()):.3g}",
                )
            )
        return diagonal.sqrt().to(dtype=dtype, device=device)
