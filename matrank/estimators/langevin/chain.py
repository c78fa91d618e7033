"""The Langevin chain: one fused Euler–Maruyama step, its noise, the automatic step.

Tensor work only; :class:`~matrank.LangevinRank` decides what to run and reads the
result.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..._oracle import gradient_precision
from ..._run import Run
from ..._validation import MatrankValueError, message
from ...numerics.krylov import spectral_bounds

__all__ = [
    "ChainStep",
    "Diverged",
    "Noise",
    "chain_reading",
    "largest_curvature",
    "quadratic_defect",
    "run_chains",
]

# From this many normals a step, the noise comes in four parts from four generators
# seeded by the estimator's, drawn on up to four threads: torch's CPU normal_ runs on
# one thread (benchmarks/README.md, Langevin d = 256). Smaller problems draw from the
# estimator's generator, one call a step.
_PARALLEL_NOISE = 2**20
_NOISE_PARTS = 4


class Diverged(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


class Noise:
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

    def state(self) -> list[torch.Tensor]:
        """The part generators' states (the estimator's generator is saved by the run)."""
        return [generator.get_state() for _, generator in getattr(self, "parts", [])]

    def load(self, states: list[torch.Tensor]) -> None:
        for (_, generator), state in zip(getattr(self, "parts", []), states, strict=True):
            generator.set_state(state)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


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


def _restore(
    run: Run,
    key: str,
    delta: torch.Tensor,
    readings: torch.Tensor,
    noise: Noise,
    extra: list[Any],
    checks: list[int],
) -> tuple[int, list[int]]:
    """Load the chains journalled under ``key`` (in place); the step to go on from and
    the checks still ahead."""
    n_steps, n_chains = readings.shape
    saved = run.restore(
        key,
        expect=lambda state: (
            tuple(state["delta"].shape) == tuple(delta.shape)
            and 0 < state["step"] <= n_steps
            and tuple(state["readings"].shape) == (state["step"], n_chains)
            and len(state["extra"]) == len(extra)
        ),
    )
    if saved is None:
        return 0, checks
    delta.copy_(saved["delta"])
    first = saved["step"]
    readings[:first] = saved["readings"]
    extra[:] = saved["extra"]
    noise.load(saved["noise"])
    return first, saved["checks"]


@dataclasses.dataclass
class ChainsSoFar:
    """The readings of the chains running now: ``readings[:done]`` are complete (what a
    Ctrl-C reads)."""

    readings: torch.Tensor = dataclasses.field(default_factory=lambda: torch.empty(0, 0))
    done: int = 0
    delta: torch.Tensor | None = None  #: each chain's last ``θ − θ0`` (once they end)


def quadratic_defect(
    meter: Any, delta: torch.Tensor, gradient0: torch.Tensor
) -> torch.Tensor:
    """Per chain, ``‖∇f(θ0 + δ) + ∇f(θ0 − δ) − 2∇f(θ0)‖ / ‖∇f(θ0 + δ) − ∇f(θ0 − δ)‖``.

    For a quadratic loss the gradient is affine, its even part about ``θ0`` vanishes and
    the ratio is rounding. Where the chains went past the quadratic region -- a ReLU
    network's kinks, a saddle's escape, large third derivatives -- the curvature they
    sampled is not the Hessian at ``θ0`` (a kink's is even in ``δ``: ratio ≈ 1). Costs
    two gradients per chain."""
    theta0 = meter.theta0
    plus = meter.grad(theta0 + delta).double()
    minus = meter.grad(theta0 - delta).double()
    even = torch.linalg.vector_norm(plus + minus - 2 * gradient0.double(), dim=1)
    odd = torch.linalg.vector_norm(plus - minus, dim=1)
    return (even / odd.clamp_min(torch.finfo(torch.float64).tiny)).cpu()


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
    key: str,
    sofar: ChainsSoFar,
) -> torch.Tensor:
    """Run the chains from ``θ0`` for ``n_steps``; the readings (steps × chains, rank
    units), kept in ``sofar`` as they come.

    At each step of ``checks``, ``settled(readings so far)`` may stop the run early.
    The chains, the readings, the noise and ``extra`` (the caller's record of its checks)
    are checkpointed under ``key``. Raises :class:`Diverged` when a reading leaves the
    range a stable chain can reach.
    """
    meter = run.meter
    n, dtype, device = meter.dim, meter.dtype, meter.device
    theta0 = meter.theta0
    readings = torch.empty(n_steps, n_chains, dtype=torch.float64)
    # |reading| of a stable chain near a minimum is ≈ rank ± O(sqrt(n)); a diverging
    # one grows geometrically and passes this within a few dozen steps
    bound = 1e6 * (n + 1)
    done = n_steps
    bar = run.bar
    every = max(1, n_steps // 100)
    noise = Noise(n_chains, n, run.generator)
    delta = torch.zeros(n_chains, n, dtype=dtype, device=device)
    first, checks = _restore(run, key, delta, readings, noise, extra, checks)
    theta = theta0 + delta  # θ0 + δ, updated in place
    sofar.readings, sofar.done = readings, first
    try:
        for k in range(first, n_steps):
            readings[k] = chain_reading(
                meter, step, theta, delta, noise, readout, sigma2, loss0
            )
            if not bool(torch.isfinite(readings[k]).all()) or (
                abs(float(readings[k].mean())) > bound
            ):
                raise Diverged(k)
            sofar.done = k + 1
            if k % every == every - 1:
                bar.update(every)
                window = readings[k // 2 : k + 1].mean(dim=0)
                postfix = {"rank": f"{float(window.mean()):.1f}"}
                if n_chains >= 2:
                    postfix["stderr"] = f"{float(window.std()) / math.sqrt(n_chains):.2g}"
                bar.set_postfix(postfix)
            if checks and k + 1 == checks[0]:
                checks.pop(0)
                if settled(readings[: k + 1]):
                    done = k + 1
                    break
            if run.due():
                run.record(
                    key,
                    {
                        "delta": delta,
                        "step": k + 1,
                        "readings": readings[: k + 1],
                        "extra": extra,
                        "checks": checks,
                        "noise": noise.state(),
                    },
                )
    finally:
        noise.close()
    sofar.delta = delta
    return readings[:done]
