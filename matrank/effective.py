"""Effective ranks: the measures papers use where a count of eigenvalues is ill-posed.

A trained network's curvature has no gap: how many eigenvalues lie above ``τ`` depends
on ``τ``. Three scale-free summaries of the whole spectrum do not:

- the stable rank ``‖H‖_F² / ‖H‖₂² = Σλ² / max λ²`` (at most the rank);
- the participation ratio ``tr(H)² / tr(H²) = (Σλ)² / Σλ²`` (the number of equal
  eigenvalues with the same first two moments);
- the entropy effective rank of Roy & Vetterli (2007), ``exp(−Σ pᵢ log pᵢ)`` with
  ``pᵢ = |λᵢ| / Σ|λⱼ|``;

beside the count of ``|λ| > τ`` split into positive and negative eigenvalues.
:func:`effective_ranks` reads them off the eigenvalues where a dense eigendecomposition
is affordable or a count already computed them (a rank result whose path was dense:
no product more), and otherwise estimates them from products: ``‖H‖₂`` by Lanczos
to 1e-8 (:func:`~matrank.numerics.krylov.spectral_bounds`), ``tr(H)`` and
``tr(H²)`` by Hutch++ (:func:`~matrank.numerics.trace.hutchpp`), ``tr|H|`` and
``tr(|H| log|H|)`` by stochastic Lanczos quadrature, each ratio's standard error by the
delta method; the split count by :class:`~matrank.LanczosRank`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from ._api import estimate_rank
from ._oracle import as_oracle
from ._result import RankResult
from ._validation import MatrankValueError, check_int, check_threshold, message
from .numerics.krylov import spectral_bounds
from .numerics.quadrature import lanczos_quadrature
from .numerics.trace import hutchpp, probe_block

__all__ = ["EffectiveRanks", "effective_ranks"]


@dataclasses.dataclass(frozen=True)
class EffectiveRanks:
    """What :func:`effective_ranks` measured; each ``*_stderr`` is 0 on the exact route.

    Attributes
    ----------
    stable_rank, participation_ratio, entropy_rank : float
        ``Σλ²/max λ²``, ``(Σλ)²/Σλ²`` and ``exp(−Σ pᵢ log pᵢ)``, ``pᵢ ∝ |λᵢ|``.
    stable_rank_stderr, participation_ratio_stderr, entropy_rank_stderr : float
    count, n_positive, n_negative : float
        The eigenvalues with ``|λ| > threshold``, and how many of them are positive and
        negative.
    count_stderr : float
    threshold : float
        ``τ`` of the count (given, or the one the rank method chose).
    route : str
        ``"exact"`` (eigenvalues) or ``"stochastic"`` (products).
    cost : dict
        ``matvecs`` and ``seconds``.
    """

    stable_rank: float
    stable_rank_stderr: float
    participation_ratio: float
    participation_ratio_stderr: float
    entropy_rank: float
    entropy_rank_stderr: float
    count: float
    count_stderr: float
    n_positive: float
    n_negative: float
    threshold: float
    route: str
    cost: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_eigenvalues(
        cls, eigenvalues: Any, threshold: float, *, cost: dict[str, float] | None = None
    ) -> EffectiveRanks:
        """The exact measures of a spectrum already computed (any order), with the
        count of ``|λ| > threshold`` split by sign."""
        values = np.asarray(eigenvalues, dtype=np.float64).ravel()
        if not np.isfinite(values).all():
            raise MatrankValueError(
                message("eigenvalues", "finite numbers", "a NaN or infinite value")
            )
        _check_number(threshold, "a number")
        above = np.abs(values) > threshold
        negative = int((above & (values < 0)).sum())
        return cls(
            **_exact(values),
            count=float(above.sum()),
            count_stderr=0.0,
            n_positive=float(above.sum() - negative),
            n_negative=float(negative),
            threshold=float(threshold),
            route="exact",
            cost=dict(cost or {"matvecs": 0, "seconds": 0.0}),
        )

    def __str__(self) -> str:
        def shown(name: str) -> str:
            value, stderr = getattr(self, name), getattr(self, name + "_stderr")
            return f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr else "")

        return (
            f"effective ranks ({self.route}): stable {shown('stable_rank')}, "
            f"participation {shown('participation_ratio')}, entropy "
            f"{shown('entropy_rank')}; |λ| > {self.threshold:.3g}: {self.count:g} = "
            f"{self.n_positive:g} positive + {self.n_negative:g} negative"
        )


def effective_ranks(
    obj: Any,
    *,
    threshold: float | None = None,
    seed: int | None = None,
    products: int = 600,
    dense_max: int = 4096,
    result: RankResult | None = None,
) -> EffectiveRanks:
    """The stable rank, participation ratio and entropy effective rank of a symmetric
    ``obj`` (anything :func:`matrank.as_oracle` takes), with the count of ``|λ| > τ``
    split by sign.

    Parameters
    ----------
    threshold : float or None
        ``τ`` of the count; ``None``: the threshold the rank method chooses (or
        ``result``'s).
    seed : int or None
        Seed of the probes (the stochastic route).
    products : int, default=600
        Products of each stochastic trace (Hutch++ for ``tr H`` and, at two products a
        column, ``tr H²``; SLQ probes × steps for ``tr|H|`` and ``tr|H|log|H|``).
    dense_max : int, default=4096
        Up to this ``n`` (and for any explicit matrix up to it) the eigenvalues are
        computed and every measure is exact.
    result : RankResult or None
        A count of ``obj`` already made: its count and sign split are reused (no count
        again), and where its path computed every eigenvalue (``exact``, or a Lanczos
        count that went dense) so are the measures, exact and without a product more.
        A ``threshold`` other than the result's is refused.
    """
    _check_number(threshold, "a number or None")
    check_int("seed", seed, low=0, allow_none=True)
    check_int("products", products, low=30)
    check_int("dense_max", dense_max, low=0)
    oracle = as_oracle(obj)
    start = time.perf_counter()
    if result is not None:
        if not isinstance(result, RankResult):
            raise MatrankValueError(message("result", "a RankResult or None", repr(result)))
        if threshold is not None and threshold != result.threshold:
            raise MatrankValueError(
                f"threshold {threshold!r} differs from the result's {result.threshold!r}: "
                "pass one of them (the count is reused at the result's threshold)"
            )
        found, matvecs = result, 0
    elif oracle.dim <= dense_max:
        found = estimate_rank(oracle, method="exact", threshold=threshold, seed=seed)
        matvecs = int(found.cost["matvecs"])
    else:
        found = estimate_rank(oracle, method="lanczos", threshold=threshold, seed=seed)
        matvecs = int(found.cost["matvecs"])
    spectrum = _spectrum(found, oracle.dim)
    if spectrum is not None:
        return EffectiveRanks.from_eigenvalues(
            spectrum,
            float(found.threshold or 0.0),
            cost={"matvecs": matvecs, "seconds": time.perf_counter() - start},
        )
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    measures, spent = _stochastic(oracle, products, generator)
    negative = found.n_negative or 0
    return EffectiveRanks(
        **measures,
        count=float(found.rank),
        count_stderr=float(found.stderr or 0.0),
        n_positive=float(found.rank) - negative,
        n_negative=float(negative),
        threshold=float(found.threshold or 0.0),
        route="stochastic",
        cost={"matvecs": matvecs + spent, "seconds": time.perf_counter() - start},
    )


def _check_number(threshold: Any, expected: str) -> None:
    """The one threshold rule, without ``"floor"``: the measures need a number."""
    check_threshold(threshold)
    if isinstance(threshold, str):
        raise MatrankValueError(message("threshold", expected, repr(threshold)))


def _spectrum(found: RankResult, n: int) -> np.ndarray | None:
    """Every nonzero eigenvalue of the counted matrix, where the count computed them:
    a dense path's (the exact method's, a Lanczos count's that went dense, or a dual's,
    whose zeros change no measure), or the Ritz values of a basis of all of ``R^n``."""
    values = found.diagnostics.get("eigenvalues")
    if values is None and found.diagnostics.get("basis_size") == n:
        values = found.diagnostics.get("ritz_values")
    if values is None or np.size(values) == 0:
        return None
    return np.asarray(values, dtype=np.float64)


def _exact(eigenvalues: np.ndarray) -> dict[str, float]:
    squares = float(np.sum(eigenvalues**2))
    magnitudes = np.abs(eigenvalues)
    top = float(magnitudes.max()) if magnitudes.size else 0.0
    if top == 0.0:
        measures = {"stable_rank": 0.0, "participation_ratio": 0.0, "entropy_rank": 0.0}
    else:
        p = magnitudes[magnitudes > 0] / magnitudes.sum()
        measures = {
            "stable_rank": squares / top**2,
            "participation_ratio": float(np.sum(eigenvalues)) ** 2 / squares,
            "entropy_rank": float(np.exp(-np.sum(p * np.log(p)))),
        }
    return {
        **measures,
        "stable_rank_stderr": 0.0,
        "participation_ratio_stderr": 0.0,
        "entropy_rank_stderr": 0.0,
    }


def _stochastic(
    oracle: Any, products: int, generator: torch.Generator
) -> tuple[dict[str, float], int]:
    n, dtype, device = oracle.dim, oracle.dtype, oracle.device
    matvecs = 0

    def H(V: torch.Tensor) -> torch.Tensor:
        nonlocal matvecs
        matvecs += V.shape[1]
        with torch.no_grad():
            return oracle.hvp(V).to(torch.float64)

    def H2(V: torch.Tensor) -> torch.Tensor:
        return H(H(V.to(dtype)).to(dtype))

    low, high, _ = spectral_bounds(
        lambda V: H(V.to(dtype)).to(V.dtype),
        n,
        steps=20,
        generator=generator,
        dtype=torch.float64,
        device=device,
        rtol=1e-8,
    )
    top = max(abs(low), abs(high))
    settings = {"generator": generator, "dtype": torch.float64, "device": device}
    trace, trace_se = hutchpp(lambda V: H(V.to(dtype)), n, products, **settings)
    squares, squares_se = hutchpp(H2, n, products // 2, **settings)
    steps = 30
    probes = probe_block(n, max(2, products // steps), kind="sphere", **settings)
    # Gauss–Radau with a node at zero: a null space's mass stays at zero instead of
    # being smeared onto small nodes, which would add to tr|H|
    nodes, weights = lanczos_quadrature(
        lambda V: H(V.to(dtype)).to(torch.float64), probes, steps, fixed_node=0.0
    )
    magnitude = nodes.abs()
    logs = torch.where(magnitude > 0, torch.log(magnitude.clamp_min(1e-300)), 0.0)
    mass = (weights * magnitude).sum(dim=1)  # per probe: vᵀ|H|v
    entropy = (weights * magnitude * logs).sum(dim=1)  # vᵀ|H|log|H|v
    stable = squares / top**2
    ratio = trace**2 / squares
    ratio_se = math.hypot(2 * trace / squares * trace_se, ratio / squares * squares_se)
    rank, rank_se = _entropy_rank(mass.double(), entropy.double())
    return {
        "stable_rank": stable,
        "stable_rank_stderr": squares_se / top**2,
        "participation_ratio": ratio,
        "participation_ratio_stderr": ratio_se,
        "entropy_rank": rank,
        "entropy_rank_stderr": rank_se,
    }, matvecs


def _entropy_rank(mass: torch.Tensor, entropy: torch.Tensor) -> tuple[float, float]:
    """``exp(log S − B/S)`` from per-probe samples of ``S = tr|H|`` and
    ``B = tr|H|log|H|``, and its stderr by the delta method (their sample covariance)."""
    S, B = float(mass.mean()), float(entropy.mean())
    value = math.exp(math.log(S) - B / S)
    samples = torch.stack([mass, entropy])
    covariance = torch.cov(samples).numpy() / mass.numel()
    gradient = np.array([1 / S + B / S**2, -1 / S])
    return value, value * math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
