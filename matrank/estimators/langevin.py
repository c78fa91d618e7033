"""Langevin exponential filter of Bar, Mulayoff, Michaeli & Talmon (AAAI 2024)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from .._oracle import Capability
from .._result import RankResult, Status
from .._validation import MatrankValueError, check_choice, check_int, check_real, message
from ..numerics.krylov import spectral_bounds
from ..numerics.trace import mean_and_stderr
from ._common import prepare, progress_bar

__all__ = [
    "LangevinRank",
    "expected_loss_curve",
    "expected_virial_curve",
    "stationary_loss",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LangevinRank:
    """Rank from the time-averaged loss of preconditioned Langevin dynamics.

    Parameters
    ----------
    variant : {"paper"}, default="paper"
        ``"paper"``: Algorithm 1 of Bar et al. -- Euler–Maruyama steps (their eq. 21)
        ``θ ← θ − ηG∇L(θ) + sqrt(ησ²)·G^{1/2}ξ`` from ``θ0`` with a fixed preconditioner
        ``G`` (noise covariance ``σ²G`` per unit time, so that ``Σ·G⁻¹ = σ²I``), and the
        estimate (their eq. 20) ``4/σ² · (mean of the last n_average losses − L(θ0))``.
        ``estimate_rank(..., method="auto")`` runs it on gradient-only oracles with
        ``readout="virial"`` and ``step_size="auto"`` (:data:`matrank.AUTO_OPTIONS`).
    step_size : float or "auto", default=1e-4
        ``η``; stability needs ``η·μmax(G^{1/2}HG^{1/2}) < 2``. ``"auto"`` estimates
        ``μmax`` from gradients only -- 20 Lanczos steps on central differences of the
        gradient at ``θ0`` (40 gradients, counted in the cost) -- and sets
        ``η = 1/μmax`` for the virial readout, ``0.1/μmax`` for the loss readout (whose
        stiff-mode inflation ``1/(1 − ημ/2)`` is then at most 5 %);
        ``diagnostics["mu_max"]`` reports the estimate.
    sigma2 : float, default=2e-5
        ``σ²``.
    n_steps : int, default=15000
        Iterations ``K_tot``.
    n_average : int, default=10000
        The last ``K_avg`` iterations are averaged.
    n_chains : int, default=1
        Independent chains run as one batch (one batched gradient a step).
    preconditioner : array_like or None, default=None
        Diagonal of ``G`` (positive, length ``n``); ``None`` is the identity. For a
        PyTorch model, :func:`matrank.adapters.adam_preconditioner` builds it from an
        Adam optimizer's state, as in the paper's DnCNN experiment.
    readout : {"loss", "virial"}, default="loss"
        ``"loss"``: eq. 20, ``4/σ²·(L_k − L0)`` (needs loss values). ``"virial"``:
        ``(2(θ_k − θ0)ᵀ∇f − η∇fᵀG∇f)/σ²`` from the gradients the chain computes anyway,
        whose expectation on a quadratic is ``Σ_μ (1 − (1 − ημ)^{2k})`` exactly: no
        ``1/(1 − ημ/2)`` inflation of stiff modes, so η can approach the stability limit.

    Notes
    -----
    For a quadratic loss, per eigenvalue ``μ`` of ``M = G^{1/2}HG^{1/2}`` the chain gives
    ``E[4(L_k − L0)/σ²] = (1 − (1 − ημ)^{2k}) / (1 − ημ/2)`` (research notes,
    algorithms §5): slow modes have not equilibrated (under-count) and stiff modes are
    inflated by ``1/(1 − ημ/2)`` (over-count). :func:`expected_loss_curve` gives that
    curve, so the estimate's expectation on a known spectrum is exact.

    The standard error is the spread between chains (``n_chains ≥ 2``), else that of 20
    batch means over time (approximate: successive losses are correlated).
    Cost: ``n_chains·n_steps`` gradients, and as many loss evaluations with the loss
    readout (none with the virial). ``diagnostics["readings"]`` is the readout per
    step (mean over chains) in rank units.

    References
    ----------
    Bar, Mulayoff, Michaeli & Talmon, "The expected loss of preconditioned Langevin
    dynamics reveals the Hessian rank", AAAI 2024, Algorithm 1, eqs. 20–21, Theorem 1.

    Examples
    --------
    >>> import numpy as np, matrank
    >>> from matrank.testing import rotated_spectrum
    >>> A = rotated_spectrum(20, 5, cond=2.0, seed=0)
    >>> estimator = matrank.LangevinRank(step_size=0.05, sigma2=1.0, n_steps=3000,
    ...                                  n_average=2000, n_chains=32)
    >>> result = estimator.estimate(A, seed=0)
    >>> curve = expected_loss_curve(np.linalg.eigvalsh(A), step_size=0.05, sigma2=1.0,
    ...                             n_steps=3000)
    >>> expected = 4 / 1.0 * curve[-2000:].mean()  # what eq. 20 estimates, exactly
    >>> bool(abs(result.rank - expected) < 4 * result.stderr)
    True
    """

    variant: str = "paper"
    step_size: float | str = 1e-4
    sigma2: float = 2e-5
    n_steps: int = 15000
    n_average: int = 10000
    n_chains: int = 1
    preconditioner: Any = None
    readout: str = "loss"

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, ("paper",))
        if self.step_size != "auto":
            if isinstance(self.step_size, str):
                raise MatrankValueError(
                    message(
                        "step_size", "a positive number or 'auto'", repr(self.step_size)
                    )
                )
            check_real("step_size", self.step_size, low=0.0, closed="right")
        check_real("sigma2", self.sigma2, low=0.0, closed="right")
        check_int("n_steps", self.n_steps, low=1)
        check_int("n_average", self.n_average, low=1, high=self.n_steps)
        check_int("n_chains", self.n_chains, low=1)
        check_choice("readout", self.readout, ("loss", "virial"))

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
        n, dtype, device = oracle.dim, oracle.dtype, oracle.device
        root = self._preconditioner_root(n, dtype, device)
        theta0 = oracle.theta0
        chains = self.n_chains
        theta = theta0.expand(chains, n).clone()
        loss0 = float(meter.loss(theta0[None])[0]) if self.readout == "loss" else 0.0
        mu_max = None
        if self.step_size == "auto":
            mu_max = largest_curvature(meter, root, generator)
            eta = (1.0 if self.readout == "virial" else 0.1) / mu_max
        else:
            eta = float(self.step_size)
        noise_scale = math.sqrt(eta * self.sigma2)
        first_averaged = self.n_steps - self.n_average
        sums = torch.zeros(chains, dtype=torch.float64)
        trace = np.empty(self.n_steps)  # mean reading over chains, in rank units
        batches = np.zeros(20)
        status, done = Status.CONVERGED, self.n_steps
        bar = progress_bar(progress, self.n_steps, "langevin", "step")
        every = max(1, self.n_steps // 100)
        try:
            for k in range(self.n_steps):
                gradient = meter.grad(theta)
                if self.readout == "loss":
                    # L_k, before the update, as in the authors' code
                    reading = (
                        4.0 / self.sigma2 * (meter.loss(theta).to(torch.float64) - loss0)
                    )
                else:
                    # the virial: 2(θ−θ0)ᵀ∇f − η∇fᵀG∇f, σ² per equilibrated mode
                    virial = 2 * ((theta - theta0) * gradient).sum(dim=1) - eta * (
                        (root * gradient) ** 2
                    ).sum(dim=1)
                    reading = virial.to(torch.float64) / self.sigma2
                reading = reading.cpu()
                trace[k] = float(reading.mean())
                if k >= first_averaged:
                    sums += reading
                    batches[(k - first_averaged) * 20 // self.n_average] += trace[k]
                if not math.isfinite(trace[k]):
                    raise MatrankValueError(
                        message(
                            "step_size",
                            "small enough for a stable chain (η·μmax < 2)",
                            f"{eta:g}, with which the chain diverged at step {k}",
                        )
                    )
                xi = torch.randn(chains, n, generator=generator, dtype=torch.float64).to(
                    dtype=dtype, device=device
                )
                theta = theta - eta * root**2 * gradient + noise_scale * root * xi
                if k % every == every - 1:
                    begin = first_averaged if k > first_averaged else k // 2
                    bar.update(every)
                    postfix = {"rank": f"{trace[begin : k + 1].mean():.1f}"}
                    if chains >= 2 and k > first_averaged:
                        running = sums / (k - first_averaged + 1)
                        postfix["stderr"] = (
                            f"{float(running.std()) / math.sqrt(chains):.2g}"
                        )
                    bar.set_postfix(postfix)
        except KeyboardInterrupt:
            # Ctrl-C: the estimate from the steps run so far -- the averaged ones if
            # any were reached, else the second half of the run -- flagged as such.
            if k < 2:
                raise
            status, done = Status.INTERRUPTED, k
        finally:
            bar.close()
        diagnostics: dict[str, Any] = {
            "variant": self.variant,
            "readout": self.readout,
            "step_size": eta,
            "mu_max": mu_max,
            "sigma2": self.sigma2,
            "readings": trace[:done],
            "loss0": loss0,
        }
        if self.readout == "loss":
            diagnostics["loss_excess"] = trace[:done] * self.sigma2 / 4.0
        if status is Status.INTERRUPTED:
            begin = first_averaged if done > first_averaged + 1 else done // 2
            window = trace[begin:done]
            batch_means = [
                float(part.mean()) for part in np.array_split(window, min(20, window.size))
            ]
            _, stderr = mean_and_stderr(torch.tensor(batch_means, dtype=torch.float64))
            diagnostics.update(n_average=done - begin, steps_done=done)
            return RankResult(
                rank=float(window.mean()),
                stderr=stderr,
                threshold=1.0 / (2 * eta * max(done, 1)),
                method="langevin",
                cost=meter.cost(time.perf_counter() - start),
                diagnostics=diagnostics,
                status=status,
            )
        per_chain = sums / self.n_average
        if chains >= 2:
            rank, stderr = mean_and_stderr(per_chain)
        else:
            counts = np.bincount(
                np.arange(self.n_average) * 20 // self.n_average, minlength=20
            )
            _, stderr = mean_and_stderr(torch.from_numpy(batches / counts))
            rank = float(per_chain[0])
        diagnostics.update(n_average=self.n_average, per_chain=per_chain.numpy())
        return RankResult(
            rank=rank,
            stderr=stderr,
            threshold=1.0 / (2 * eta * self.n_steps),
            method="langevin",
            cost=meter.cost(time.perf_counter() - start),
            diagnostics=diagnostics,
            status=Status.CONVERGED,
        )

    def _preconditioner_root(self, n: int, dtype: torch.dtype, device: torch.device):
        if self.preconditioner is None:
            return torch.ones(n, dtype=dtype, device=device)
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
    the scale of ``θ0`` (the step that balances truncation and rounding).
    """
    theta0 = oracle.theta0
    n, dtype, device = oracle.dim, oracle.dtype, oracle.device
    h = float(torch.finfo(dtype).eps) ** (1 / 3) * max(1.0, float(theta0.abs().max()))

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
    eigenvalues: np.ndarray, *, step_size: float, n_steps: int
) -> np.ndarray:
    """Expected virial readout per step (rank units), ``k = 0 … n_steps−1``.

    ``Σ_μ (1 − (1 − ημ)^{2k})`` over the positive eigenvalues ``μ`` of ``G^{1/2}HG^{1/2}``:
    each equilibrated mode counts exactly one, whatever ``ημ < 2``.
    """
    mu = np.asarray(eigenvalues, dtype=np.float64)
    mu = mu[mu > 0]
    k = np.arange(n_steps)[:, None]
    return (1 - (1 - step_size * mu[None]) ** (2 * k)).sum(axis=1)


def stationary_loss(rank: int, *, sigma2: float) -> float:
    """Proposition 1's limit ``E[L] − L0 → σ²·rank/4`` (continuous time, ``Σ·G = σ²I``)."""
    return sigma2 * rank / 4
