"""Langevin exponential filter of Bar, Mulayoff, Michaeli & Talmon (AAAI 2024)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import torch

from .._oracle import Capability, gradient_precision
from .._result import RankResult, Status
from .._validation import (
    MatrankValueError,
    MatrankWarning,
    check_choice,
    check_int,
    check_real,
    message,
)
from ..numerics.krylov import spectral_bounds
from ..numerics.trace import mean_and_stderr
from ._common import prepare, progress_bar

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
# residual gradient would cause by sqrt(10) (on the digits CNN the estimate was broken at
# σ²/(η‖∇L(θ0)‖²) = 0.007 and sound from 0.56 on)
_RESIDUAL_NOISE = 10.0
_THRESHOLD_RESAMPLES = 40
_SHAPES = np.linspace(-0.5, 1.0, 31)  # c of the counting curve's fit (class Notes)
# Elements per chunk of the fused update on a CPU (2 MB of float64 per array): the
# passes over the chains' state then run in cache, 3× faster than whole-array passes at
# d = 256 (8 × 327,680 parameters: 5.0 against 16.7 ms a step).
_CHUNK_ELEMENTS = 2**18
# From this many normals a step, the noise comes in four parts from four generators
# seeded by the estimator's, drawn on up to four threads: torch's CPU normal_ runs on
# one thread, 10.4 ms for the 2.6M float32 normals of a d = 256 step. Smaller problems
# draw from the estimator's generator, one call a step.
_PARALLEL_NOISE = 2**20
_NOISE_PARTS = 4


class _Diverged(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


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

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, ("default", "paper"))
        paper = self.variant == "paper"
        fill = _PAPER if paper else _DEFAULT
        for name, value in fill.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.step_size != "auto":
            if isinstance(self.step_size, str):
                raise MatrankValueError(
                    message(
                        "step_size", "a positive number or 'auto'", repr(self.step_size)
                    )
                )
            check_real("step_size", self.step_size, low=0.0, closed="right")
        if self.sigma2 != "auto":
            if isinstance(self.sigma2, str):
                raise MatrankValueError(
                    message("sigma2", "a positive number or 'auto'", repr(self.sigma2))
                )
            check_real("sigma2", self.sigma2, low=0.0, closed="right")
        check_int("n_chains", self.n_chains, low=1)
        check_choice("readout", self.readout, ("loss", "virial"))
        check_real("localization", self.localization, low=0.0)
        check_int("max_gradients", self.max_gradients, low=1)
        check_real("rtol", self.rtol, low=0.0, closed="neither", allow_none=True)
        if paper and (self.localization or self.rtol is not None):
            raise MatrankValueError(
                message(
                    "variant='paper'",
                    "used without localization or rtol (the paper's algorithm has "
                    "neither; use variant='default')",
                    f"localization={self.localization}, rtol={self.rtol}",
                )
            )
        if self.localization and self.readout != "virial":
            raise MatrankValueError(
                message(
                    "localization",
                    "used with readout='virial' (eq. 20's loss readout has no "
                    "correction for the restoring drift)",
                    f"readout={self.readout!r}",
                )
            )
        if self.n_steps is None:
            overhead = (_AUTO_STEP_GRADIENTS if self.step_size == "auto" else 0) + (
                0 if paper else 1  # ∇f(θ0), subtracted by the default variant
            )
            steps = (self.max_gradients - overhead) // int(self.n_chains or 1)
            if steps < 2:
                raise MatrankValueError(
                    message(
                        "max_gradients",
                        f"enough for two steps of {self.n_chains} chains after the "
                        f"{overhead} gradients of ∇f(θ0) and the automatic step",
                        str(self.max_gradients),
                    )
                )
            object.__setattr__(self, "n_steps", steps)
        check_int("n_steps", self.n_steps, low=1)
        if self.n_average is None and paper:
            object.__setattr__(self, "n_average", max(1, 2 * int(self.n_steps or 0) // 3))
        check_int("n_average", self.n_average, low=1, high=self.n_steps, allow_none=True)

    def estimate(
        self, obj: Any, *, seed: int | None = None, progress: bool = False
    ) -> RankResult:
        """Run the chains and read the rank off the time average of the readout.

        ``progress=True`` shows a tqdm bar of steps with the running estimate; Ctrl-C
        returns the estimate from the steps run so far with ``Status.INTERRUPTED``.
        """
        start = time.perf_counter()
        needs = Capability.GRAD | (
            Capability.LOSS if self.readout == "loss" else Capability.NONE
        )
        oracle, meter, generator = prepare(obj, needs, "langevin", seed)
        n = oracle.dim
        root = self._preconditioner_root(n, oracle.dtype, oracle.device)
        loss0 = float(meter.loss(oracle.theta0[None])[0]) if self.readout == "loss" else 0.0
        # The default runs on L(θ) − ∇L(θ0)ᵀ(θ − θ0): the same Hessian, and θ0 stationary
        # even where training stopped short (a residual gradient would otherwise drive
        # the chains along it and dominate a readout divided by a small σ²).
        tilt = None if self.variant == "paper" else meter.grad(oracle.theta0[None])[0]
        mu_max = None
        if self.step_size == "auto":
            ones = torch.ones(n, dtype=oracle.dtype, device=oracle.device)
            mu_max = largest_curvature(meter, ones if root is None else root, generator)
            factor = _VIRIAL_STEP if self.readout == "virial" else 0.1
            eta = factor / (mu_max + self.localization)
        else:
            eta = float(cast(float, self.step_size))
        reductions: list[dict[str, float]] = []
        while True:
            try:
                sigma2, rule = self._noise_variance(meter, root, eta, tilt)
                readings, summary, status = self._run(
                    meter, root, eta, sigma2, tilt, loss0, generator, progress
                )
                break
            except _Diverged as diverged:
                if self.variant == "paper" or len(reductions) == _MAX_REDUCTIONS:
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
            "readout": self.readout,
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
        if self.readout == "loss":
            diagnostics["loss_excess"] = mean_trace * sigma2 / 4.0
        return RankResult(
            rank=summary["rank"],
            stderr=summary["stderr"],
            threshold=summary["threshold"],
            method="langevin",
            cost=meter.cost(time.perf_counter() - start),
            diagnostics=diagnostics,
            status=status,
        )

    def _run(
        self,
        meter: Any,
        root: torch.Tensor | None,
        eta: float,
        sigma2: float,
        tilt: torch.Tensor | None,
        loss0: float,
        generator: torch.Generator,
        progress: bool,
    ) -> tuple[torch.Tensor, dict[str, Any], Status]:
        """The chains from ``θ0``; readings (steps × chains, rank units), summary, status."""
        n, dtype, device = meter.dim, meter.dtype, meter.device
        theta0 = meter.theta0
        total, chains = cast(int, self.n_steps), cast(int, self.n_chains)
        delta = torch.zeros(chains, n, dtype=dtype, device=device)
        theta = theta0.expand(chains, n).clone()  # θ0 + δ, updated in place
        step = _Step(
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
        checks = [total]
        if self.rtol is not None:
            checks = [s for s in (128 * 2**i for i in range(40)) if s < total]
            checks.append(total)
        rounds: list[dict[str, Any]] = []
        status, done = Status.CONVERGED, total
        bar = progress_bar(progress, total, "langevin", "step")
        every = max(1, total // 100)
        noise = _Noise(chains, n, generator)
        try:
            for k in range(total):
                gradient = meter.grad(theta)
                if self.readout == "loss":
                    # L_k, before the update, as in the authors' code
                    excess = meter.loss(theta).double() - loss0
                    if tilt is not None:
                        excess = excess - torch.linalg.vecdot(delta, tilt).double()
                xi = noise.draw().to(
                    device=device, dtype=torch.float32 if dtype == torch.float64 else dtype
                )
                virial = step.advance(delta, theta, theta0, gradient, xi)
                if self.readout == "loss":
                    reading = 4.0 / sigma2 * excess
                else:
                    reading = virial.double() / sigma2
                readings[k] = reading.cpu()
                if not bool(torch.isfinite(readings[k]).all()) or (
                    abs(float(readings[k].mean())) > bound
                ):
                    raise _Diverged(k)
                if k % every == every - 1:
                    bar.update(every)
                    window = readings[k // 2 : k + 1].mean(dim=0)
                    postfix = {"rank": f"{float(window.mean()):.1f}"}
                    if chains >= 2:
                        postfix["stderr"] = f"{float(window.std()) / math.sqrt(chains):.2g}"
                    bar.set_postfix(postfix)
                if k + 1 == checks[0] and k + 1 < total:
                    checks.pop(0)
                    summary = self._summarize(readings[: k + 1], eta)
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
        except KeyboardInterrupt:
            # Ctrl-C: the estimate from the steps run so far, flagged as such.
            if k < 2:
                raise
            status, done = Status.INTERRUPTED, k
        finally:
            bar.close()
            noise.close()
        readings = readings[:done]
        summary = self._summarize(readings, eta, interrupted=status is Status.INTERRUPTED)
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
        self, meter: Any, root: torch.Tensor | None, eta: float, tilt: torch.Tensor | None
    ) -> tuple[float, str]:
        """``σ²`` and the rule that set it: the option, or for ``"auto"`` the one whose
        random walk stays small, raised to the residual gradient's floor."""
        if self.sigma2 != "auto":
            return float(cast(float, self.sigma2)), "given"
        theta0 = meter.theta0
        scale = float(theta0.double().pow(2).mean().sqrt()) or 1.0
        epsilon = max(1e-4, float(torch.finfo(meter.dtype).eps) ** (1 / 3))
        spread = 1.0 if root is None else float(root.double().pow(2).mean())
        small = (epsilon * scale) ** 2 / (eta * cast(int, self.n_steps) * spread)
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
        self, readings: torch.Tensor, eta: float, *, interrupted: bool = False
    ) -> dict[str, Any]:
        """Estimate, stderr and threshold from ``readings`` (steps × chains)."""
        steps, chains = readings.shape
        average = cast(int, self.n_average)
        mean_trace = readings.mean(dim=1).numpy()
        if self.variant == "paper" and not interrupted:
            begin = steps - average
        elif self.variant == "paper" or self.n_average is not None:
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
                base = _level(mean_trace, eta, threshold, fit["slope"])
                moved = [_level(mean_trace, eta, t, fit["slope"]) - base for t in refits]
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

    def _preconditioner_root(
        self, n: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor | None:
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


class _Noise:
    """Standard normals for every chain and parameter, a fresh ``(chains, n)`` each step.

    Drawn in float32 on the CPU (5× faster than float64 there) and promoted by the
    update: the moments the readout depends on are unchanged. From ``_PARALLEL_NOISE``
    normals a step, in ``_NOISE_PARTS`` parts from generators seeded by ``generator``,
    on up to as many threads as torch uses (the parts, and so the stream, do not
    depend on the thread count). The gain depends on idle cores: 10.3 → 5.3 ms on two
    idle cores, ≈ 9.4 ms between the gradient's products, whose OpenMP workers spin
    for a while after each parallel region (``OMP_WAIT_POLICY=PASSIVE``: 5.6 ms).
    """

    def __init__(self, chains: int, n: int, generator: torch.Generator) -> None:
        self.shape, self.generator = (chains, n), generator
        self.pool: ThreadPoolExecutor | None = None
        if chains * n >= _PARALLEL_NOISE:
            seeds = torch.randint(0, 2**62, (_NOISE_PARTS,), generator=generator)
            self.buffer = torch.empty(chains, n, dtype=torch.float32)
            self.parts = list(
                zip(
                    torch.tensor_split(self.buffer.view(-1), _NOISE_PARTS),
                    [torch.Generator().manual_seed(int(seed)) for seed in seeds],
                    strict=True,
                )
            )
            workers = min(_NOISE_PARTS, max(1, torch.get_num_threads()))
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="matrank-noise")

    def draw(self) -> torch.Tensor:
        if self.pool is None:
            return torch.randn(self.shape, generator=self.generator, dtype=torch.float32)
        for _ in self.pool.map(lambda part: part[0].normal_(generator=part[1]), self.parts):
            pass
        return self.buffer

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@dataclasses.dataclass(frozen=True)
class _Step:
    """One Euler–Maruyama step of every chain, fused with the virial readout.

    ``δ ← (1 − ηγ)δ − ηG∇f + sqrt(ησ²)·G^{1/2}ξ`` and ``θ = θ0 + δ`` in place, with
    ``∇f = ∇L(θ) − tilt``; returns ``(2 − ηγ)δᵀ∇f − η∇fᵀG∇f`` per chain (of the ``δ``
    before the step: σ² per equilibrated mode). On a CPU the parameters go in chunks of
    ``width`` columns, so that each chunk's passes stay in cache.
    """

    eta: float
    gamma: float
    noise_scale: float
    tilt: torch.Tensor | None
    root: torch.Tensor | None
    squared: torch.Tensor | None
    width: int

    def advance(
        self,
        delta: torch.Tensor,
        theta: torch.Tensor,
        theta0: torch.Tensor,
        gradient: torch.Tensor,
        xi: torch.Tensor,
    ) -> torch.Tensor:
        eta, gamma = self.eta, self.gamma
        virial = torch.zeros(delta.shape[0], dtype=delta.dtype, device=delta.device)
        for begin in range(0, delta.shape[1], self.width):
            part = slice(begin, begin + self.width)
            g = gradient[:, part]  # the oracle's tensor is read, never written
            if self.tilt is not None:
                g = g - self.tilt[part]
            drift = g if self.squared is None else self.squared[part] * g
            d = delta[:, part]
            virial += (2 - eta * gamma) * torch.linalg.vecdot(
                d, g
            ) - eta * torch.linalg.vecdot(g, drift)
            if gamma:
                d.mul_(1 - eta * gamma)
            d.add_(drift, alpha=-eta)
            if self.root is None:
                d.add_(xi[:, part], alpha=self.noise_scale)
            else:
                d.addcmul_(self.root[part], xi[:, part], value=self.noise_scale)
            torch.add(theta0[part], d, out=theta[:, part])
        return virial


def mser_start(trace: np.ndarray, batches: int = 100) -> int:
    """Start of the averaging window by MSER (White 1997), within the first half.

    Over batch means ``y_j`` the truncation ``d`` minimising
    ``Σ_{i≥d}(y_i − ȳ_d)² / (J − d)²`` -- the squared standard error of the mean of what
    is kept -- balancing the initial transient's bias against the variance of a short
    window.
    """
    size = max(1, trace.size // batches)
    count = trace.size // size
    if count < 4:
        return 0
    y = trace[trace.size - count * size :].reshape(count, size).mean(axis=1)
    offset = trace.size - count * size
    best, best_d = math.inf, 0
    for d in range(count // 2 + 1):
        kept = y[d:]
        score = float(((kept - kept.mean()) ** 2).sum()) / kept.size**2
        if score < best:
            best, best_d = score, d
    return offset + best_d * size


def matched_threshold(
    trace: np.ndarray, step_size: float, begin: int
) -> tuple[float, dict[str, float]]:
    """The ``τ`` whose hard count the window ``trace[begin:]`` of the virial matches.

    See :class:`LangevinRank`, Notes: a power-law fit of the readout against
    ``log 2ηk`` over the last 31/32 of the run gives the local shape ``c ∈ [−0.5, 1]``
    of the counting curve; ``τ = [Γ(1+c)·mean k^{−c}]^{1/c}/(2η)`` over the averaged
    steps.
    """
    steps = trace.size
    k = np.arange(max(begin, 1), steps, dtype=np.float64)
    shape, slope = 0.0, 0.0
    edges = np.unique(np.geomspace(max(8, steps // 32), steps, 17).astype(int))
    if edges.size >= 6:
        x = np.array([np.log(np.arange(a, b)).mean() for a, b in itertools.pairwise(edges)])
        y = np.array([trace[a:b].mean() for a, b in itertools.pairwise(edges)])
        x = x - math.log(steps)
        best = math.inf
        for c in _SHAPES:
            basis = x if abs(c) < 1e-9 else -np.expm1(-c * x) / c
            design = np.stack([np.ones_like(x), basis], axis=1)
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            residual = float(((design @ coef - y) ** 2).sum())
            if residual < best:
                best, shape, slope = residual, float(c), float(coef[1])
        if slope <= 0:
            shape = 0.0
    if abs(shape) < 1e-9:
        tau = math.exp(-np.euler_gamma - float(np.log(k).mean())) / (2 * step_size)
    else:
        factor = math.gamma(1 + shape) * float(np.mean(k ** (-shape)))
        tau = factor ** (1 / shape) / (2 * step_size)
    return tau, {"shape": shape, "slope": slope}


def _level(trace: np.ndarray, step_size: float, threshold: float, slope: float) -> float:
    """The readout near the step whose filter ``1 − e^{−2kηλ}`` centres on ``threshold``.

    ``k = e^{−γ_E}/(2ητ)`` (the matched step of a locally log-flat density), averaged
    over ``[k/1.3, 1.3k]``; past the run's end ``K``, the readings over ``[K/1.3, K)``
    plus ``slope`` per e-fold of ``k/K``. The readings are the soft count at each step,
    so differences of this level between two thresholds approximate the difference of
    their hard counts.
    """
    steps = trace.size
    k = math.exp(-np.euler_gamma) / (2 * step_size * threshold)
    if k >= steps:
        end = float(trace[int(steps / 1.3) :].mean())
        return end + max(slope, 0.0) * math.log(k / steps)
    k = max(k, 1.0)
    low = int(k / 1.3)
    high = min(steps, max(int(k * 1.3), low + 1))
    return float(trace[low:high].mean())


def edge_width(step_size: float, threshold: float, begin: int, steps: int) -> float:
    """``κ = ∫(w(ℓ) − 1[ℓ > 0])² dℓ`` of the window's filter in ``ℓ = log(λ/τ)``.

    ``w(λ) = mean_k 1 − e^{−2ηkλ}`` over the averaged steps ``k ∈ [begin, steps)``. For
    eigenvalues placed as a Poisson process with ``s`` of them per e-fold of ``λ`` near
    ``τ``, the soft count minus the hard count ``N(τ)`` has variance ``s·κ`` (0.37 for
    a window over the last half of the run; more regular spectra vary less).
    """
    k = np.unique(np.linspace(max(begin, 1), max(steps - 1, 1), 256).astype(int))
    ell = np.linspace(-12.0, 8.0, 4001)
    rate = 2 * step_size * threshold * np.exp(ell)
    w = (-np.expm1(-np.outer(rate, k.astype(np.float64)))).mean(axis=1)
    return float(np.trapezoid((w - (ell > 0)) ** 2, ell))


def expected_loss_curve(
    eigenvalues: np.ndarray, *, step_size: float, sigma2: float, n_steps: int
) -> np.ndarray:
    """``E[L_k] − L0`` of the Euler–Maruyama chain on a quadratic, ``k = 0 … n_steps−1``.

    ``(σ²/2) Σ_μ (1 − (1 − ημ)^{2k}) / (2 − ημ)`` over the eigenvalues ``μ`` of
    ``G^{1/2}HG^{1/2}`` (zeros contribute 0): the discrete counterpart of Theorem 1, eq. 5,
    ``(σ²/4) Σ (1 − e^{−2μt})``, to which it tends as ``η → 0`` with ``t = kη``.
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    mu = mu[mu > 0]
    k = np.arange(n_steps)[:, None]
    factor = 1 - step_size * mu[None]
    return (sigma2 / 2) * ((1 - factor ** (2 * k)) / (2 - step_size * mu[None])).sum(axis=1)


def largest_curvature(
    oracle: Any, root: torch.Tensor, generator: torch.Generator, *, steps: int = 20
) -> float:
    """``μmax(G^{1/2}HG^{1/2})`` at ``θ0`` from gradients only.

    Lanczos (:func:`matrank.numerics.krylov.spectral_bounds`, an upper bound widened by
    the Ritz residual) on the central difference
    ``G^{1/2}(∇f(θ0 + hG^{1/2}v) − ∇f(θ0 − hG^{1/2}v))/2h``, with ``h = eps^{1/3}`` times
    the scale of ``θ0`` (the step that balances truncation and rounding; eps of the
    precision the gradient is computed in, :func:`matrank._oracle.gradient_precision`).
    """
    theta0 = oracle.theta0
    n, dtype, device = oracle.dim, oracle.dtype, oracle.device
    eps = float(torch.finfo(gradient_precision(oracle)).eps)
    h = eps ** (1 / 3) * max(1.0, float(theta0.abs().max()))

    def difference(V: torch.Tensor) -> torch.Tensor:
        step = (h * root[:, None] * V).T  # (b, n)
        gradients = oracle.grad(torch.cat([theta0 + step, theta0 - step]))
        plus, minus = gradients[: V.shape[1]], gradients[V.shape[1] :]
        return root[:, None] * ((plus - minus).T / (2 * h))

    _, high, _ = spectral_bounds(
        difference, n, steps=steps, generator=generator, dtype=dtype, device=device
    )
    if not high > 0 or not math.isfinite(high):
        raise MatrankValueError(
            message(
                "step_size='auto'",
                "a loss with positive curvature at θ0",
                f"largest curvature estimate {high:.3g}",
            )
        )
    return high


def expected_virial_curve(
    eigenvalues: np.ndarray,
    *,
    step_size: float,
    n_steps: int,
    localization: float = 0.0,
) -> np.ndarray:
    """Expected virial readout per step (rank units), ``k = 0 … n_steps−1``.

    ``Σ_μ μ/(μ+γ)·(1 − (1 − η(μ+γ))^{2k})`` over the positive eigenvalues ``μ`` of
    ``G^{1/2}HG^{1/2}``: with ``γ = 0`` each equilibrated mode counts exactly one,
    whatever ``ημ < 2``.
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    mu = mu[mu > 0]
    k = np.arange(n_steps)[:, None]
    nu = mu + localization
    weight = mu / nu
    return (weight[None] * (1 - (1 - step_size * nu[None]) ** (2 * k))).sum(axis=1)


def stationary_loss(rank: int, *, sigma2: float) -> float:
    """Proposition 1's limit ``E[L] − L0 → σ²·rank/4`` (continuous time, ``Σ·G = σ²I``)."""
    return sigma2 * rank / 4
