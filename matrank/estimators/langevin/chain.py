"""The Langevin chain: one fused Euler–Maruyama step, its noise, the automatic step.

Tensor work only; :class:`~matrank.LangevinRank` decides what to run and reads the
result.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from ..._oracle import gradient_precision
from ..._run import Run
from ..._validation import MatrankValueError, message
from ...numerics.krylov import spectral_bounds
from .noise import Noise, group_seeds, group_sizes

__all__ = [
    "ChainStep",
    "Chains",
    "ChainsSoFar",
    "Diverged",
    "chain_reading",
    "chain_steps",
    "largest_curvature",
    "quadratic_defect",
    "run_chains",
]


class Diverged(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


@dataclasses.dataclass(frozen=True)
class ChainStep:
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

    low, high, _ = spectral_bounds(
        difference, n, steps=steps, generator=generator, dtype=dtype, device=device
    )
    if not math.isfinite(high) or not math.isfinite(low):
        raise MatrankValueError(
            message("theta0", "a point with finite gradients nearby", "non-finite ones")
        )
    # the bounds are widened by residuals: a negative low end as large as the top says
    # that the curvature the chains would see is mostly negative
    if not high > 1e-6 * abs(low) or -low > high:
        raise MatrankValueError(
            message(
                "theta0",
                "a minimum of the loss (Langevin samples around one)",
                f"a point whose curvature reaches {low:.3g} below against {high:.3g} "
                "above: a maximum or a saddle; count |λ| with method='lanczos' or "
                "'exact' (Hessian-vector products)",
            )
        )
    return high


def chain_reading(
    meter: Any,
    step: ChainStep,
    theta: torch.Tensor,
    delta: torch.Tensor,
    noise: Noise,
    readout: str,
    sigma2: float,
    loss0: float,
) -> torch.Tensor:
    """One step of every chain (``theta`` and ``delta`` in place) and its reading in
    rank units (float64, on the CPU)."""
    gradient = meter.grad(theta)
    if readout == "loss":
        # L_k, before the update, as in the authors' code
        excess = meter.loss(theta).double() - loss0
        if step.tilt is not None:
            excess = excess - torch.linalg.vecdot(delta, step.tilt).double()
    noise_dtype = torch.float32 if meter.dtype == torch.float64 else meter.dtype
    xi = noise.draw().to(device=meter.device, dtype=noise_dtype)
    virial = step.advance(delta, theta, meter.theta0, gradient, xi)
    if readout == "loss":
        return (4.0 / sigma2 * excess).cpu()
    return (virial.double() / sigma2).cpu()


@dataclasses.dataclass
class ChainsSoFar:
    """The readings of the chains running now: ``readings[:done]`` are complete (what a
    Ctrl-C reads)."""

    readings: torch.Tensor = dataclasses.field(default_factory=lambda: torch.empty(0, 0))
    done: int = 0
    delta: torch.Tensor | None = None  #: each chain's last ``θ − θ0`` (once they end)


def quadratic_defect(
    meter: Any, delta: torch.Tensor, gradient0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per chain, how far the gradient at ``θ0 ± δ`` is from a quadratic's
    ``∇f(θ0) ± Hδ``: its even part ``‖g₊ + g₋ − 2∇f(θ0)‖ / ‖g₊ − g₋‖`` and its odd part
    ``‖(g₊ − g₋)/2 − s‖ / max(‖(g₊ − g₋)/2‖, ‖s‖)``, ``s = g(θ0 + δ/2) − g(θ0 − δ/2)``.

    For a quadratic loss both are rounding (``s = Hδ``, the secant of every length).
    A kink's curvature (a ReLU network's) is even in ``δ``: the even part ≈ 1. A loss
    that flattens or steepens along the way -- a well the chains left, large third
    derivatives -- keeps an odd gradient whose secant changes with the distance: the
    odd part ≈ 1 (an odd gradient is all a symmetric well's can be, so the even part
    alone never sees it). Half the distance, not a difference quotient at ``θ0``: kinks
    next to ``θ0`` that the chains cross both ways would make the latter a jump.
    Costs four gradients per chain."""
    theta0 = meter.theta0
    chains = delta.shape[0]
    gradients = meter.grad(
        torch.cat([theta0 + delta, theta0 - delta, theta0 + delta / 2, theta0 - delta / 2])
    ).double()
    plus, minus, half_plus, half_minus = gradients.split(chains)
    tiny = torch.finfo(torch.float64).tiny
    odd = (plus - minus) / 2
    model = half_plus - half_minus  # Hδ, as the secant at half the distance sees it
    even = torch.linalg.vector_norm(plus + minus - 2 * gradient0.double(), dim=1)
    size = torch.linalg.vector_norm(odd, dim=1)
    off = torch.linalg.vector_norm(odd - model, dim=1)
    scale = torch.maximum(size, torch.linalg.vector_norm(model, dim=1)).clamp_min(tiny)
    return (even / (2 * size).clamp_min(tiny)).cpu(), (off / scale).cpu()


def chain_steps(
    meter: Any,
    step: ChainStep,
    delta: torch.Tensor,
    noise: Noise,
    readings: torch.Tensor,
    first: int,
    last: int,
    *,
    readout: str,
    sigma2: float,
    loss0: float,
    after: Callable[[int], bool] | None = None,
) -> int:
    """The chain loop: steps ``first … last − 1`` of the chains ``δ`` (in place), the
    reading of step ``k`` in ``readings[k]``; ``after(k)`` with ``k`` steps done may stop
    it. Returns the steps done. Raises :class:`Diverged` when a reading leaves the range
    a stable chain can reach."""
    # |reading| of a stable chain near a minimum is ≈ rank ± O(sqrt(n)); a diverging
    # one grows geometrically and passes this within a few dozen steps
    bound = 1e6 * (meter.dim + 1)
    theta = meter.theta0 + delta  # θ0 + δ, updated in place
    for k in range(first, last):
        readings[k] = chain_reading(
            meter, step, theta, delta, noise, readout, sigma2, loss0
        )
        if not bool(torch.isfinite(readings[k]).all()) or (
            abs(float(readings[k].mean())) > bound
        ):
            raise Diverged(k)
        if after is not None and after(k + 1):
            return k + 1
    return last


@dataclasses.dataclass
class Chains:
    """The chains of one run between steps: what the progress bar shows, what the
    checks read and what a checkpoint journals under ``key``."""

    run: Run
    key: str
    delta: torch.Tensor
    readings: torch.Tensor
    noise: Noise
    extra: list[Any]
    checks: list[int]
    settled: Callable[[torch.Tensor], bool]
    sofar: ChainsSoFar
    shown: int = 0

    def after(self, k: int) -> bool:
        """``k`` steps done: show them, run a check that falls here (``True``: stop) and
        write the checkpoint when it is due."""
        self.sofar.done = k
        n_steps, n_chains = self.readings.shape
        if k - self.shown >= max(1, n_steps // 100) or k == n_steps:
            self.run.bar.update(k - self.shown)
            self.shown = k
            window = self.readings[k // 2 : k].mean(dim=0)
            postfix = {"rank": f"{float(window.mean()):.1f}"}
            if n_chains >= 2:
                postfix["stderr"] = f"{float(window.std()) / math.sqrt(n_chains):.2g}"
            self.run.bar.set_postfix(postfix)
        if self.checks and k == self.checks[0]:
            self.checks.pop(0)
            if self.settled(self.readings[:k]):
                return True
        if self.run.due():
            self.run.record(
                self.key,
                {
                    "delta": self.delta,
                    "step": k,
                    "readings": self.readings[:k],
                    "extra": self.extra,
                    "checks": self.checks,
                    "noise": self.noise.state(),
                },
            )
        return False

    def restore(self) -> int:
        """Load the chains journalled under ``key`` (in place); the step to go on from."""
        n_steps, n_chains = self.readings.shape
        saved = self.run.restore(
            self.key,
            expect=lambda state: (
                tuple(state["delta"].shape) == tuple(self.delta.shape)
                and 0 < state["step"] <= n_steps
                and tuple(state["readings"].shape) == (state["step"], n_chains)
                and len(state["extra"]) == len(self.extra)
                and [len(group) for group in state["noise"]]
                == [len(group) for group in self.noise.groups]
            ),
        )
        if saved is None:
            return 0
        self.delta.copy_(saved["delta"])
        first = saved["step"]
        self.readings[:first] = saved["readings"]
        self.extra[:] = saved["extra"]
        self.checks[:] = saved["checks"]
        self.noise.load(saved["noise"])
        self.shown = first
        return first


def run_chains(
    run: Run,
    step: ChainStep,
    *,
    n_steps: int,
    n_chains: int,
    readout: str,
    sigma2: float,
    loss0: float,
    checks: list[int],
    settled: Callable[[torch.Tensor], bool],
    extra: list[Any],
    attempt: int,
    sofar: ChainsSoFar,
    n_jobs: int | None = None,
) -> torch.Tensor:
    """Run the chains from ``θ0`` for ``n_steps``; the readings (steps × chains, rank
    units), kept in ``sofar`` as they come.

    At each step of ``checks``, ``settled(readings so far)`` may stop the run early.
    The chains, the readings, the noise and ``extra`` (the caller's record of its checks)
    are checkpointed under ``"chains {attempt}"``. With ``n_jobs`` the chains' groups
    run on joblib workers (:func:`.parallel.in_groups`), in segments that end at the
    checks and at ``SEGMENTS`` evenly spaced steps; each group draws the same noise
    either way (:mod:`.noise`). Raises
    :class:`Diverged` when a reading leaves the range a stable chain can reach.
    """
    from .parallel import in_groups

    meter = run.meter
    sizes = group_sizes(n_chains)
    noise = Noise(sizes, meter.dim, group_seeds(run.generator, attempt, len(sizes)))
    chains = Chains(
        run=run,
        key=f"chains {attempt}",
        delta=torch.zeros(n_chains, meter.dim, dtype=meter.dtype, device=meter.device),
        readings=torch.empty(n_steps, n_chains, dtype=torch.float64),
        noise=noise,
        extra=extra,
        checks=list(checks),
        settled=settled,
        sofar=sofar,
    )
    first = chains.restore()
    sofar.readings, sofar.done = chains.readings, first
    common: dict[str, Any] = {"readout": readout, "sigma2": sigma2, "loss0": loss0}
    try:
        if n_jobs is None:
            done = chain_steps(
                meter, step, chains.delta, noise, chains.readings, first, n_steps,
                after=chains.after, **common,
            )  # fmt: skip
        else:
            done = in_groups(chains, step, first, n_jobs=n_jobs, **common)
    finally:
        noise.close()
    sofar.delta = chains.delta
    return chains.readings[:done]
