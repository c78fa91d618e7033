"""How the loss landscape changes as samples are added (Kiselev & Grabovoy, 2024).

With ``L_k = (1/k) Σ_{i≤k} ℓ_i`` the mean loss of the first ``k`` samples and ``θ*`` a
trained point, the paper bounds ``|L_{k+1}(θ) − L_k(θ)|`` by a loss term and a Hessian
term, ``‖H_{k+1} − H_k‖₂ = ‖H_{x_{k+1}} − H_k‖₂/(k+1)``, and plots only the loss
differences. :func:`dataset_size_study` measures both at ``θ*``: the differences
``Δ_k = |L_{k+1}(θ*) − L_k(θ*)|`` over random orderings of the samples, and, on a log grid
of ``k``, the Hessian difference's norm, ``λmax(H_k)``, ``tr(H_k)`` and ``rank(H_k)`` at
one threshold -- every Hessian product through :class:`matrank.adapters.TorchLoss` on the
first ``k`` samples, never a formed matrix.

Orderings are drawn from ``seed`` over a canonical order of the samples (by a hash of
each sample's bytes), so the study does not depend on the order the data came in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch

from ._api import estimate_rank
from ._oracle import materialize
from ._validation import MatrankTypeError, MatrankValueError, check_int, message
from .numerics.trace import mean_and_stderr, probe_block

__all__ = ["LandscapeStudy", "dataset_size_study", "theorem_constant"]

#: Up to this many parameters each ``H_k`` (and the added sample's Hessian) is formed from
#: ``n`` products with the identity's columns, and its norm, trace and rank are read off
#: the dense matrix (exact, no standard error); beyond, ARPACK's Lanczos on products,
#: Hutchinson's trace and the rank method on the operator.
DENSE_MAX_DIM = 1024

_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclasses.dataclass(frozen=True)
class LandscapeStudy:
    """What :func:`dataset_size_study` measured at ``θ*``.

    Attributes
    ----------
    losses : ndarray (N,)
        Per-sample losses ``ℓ_i(θ*)`` in the canonical sample order.
    k : ndarray (N − 1,)
        ``1 … N − 1``.
    delta_mean, delta_quantiles : ndarray
        Mean over orderings of ``Δ_k = |L_{k+1}(θ*) − L_k(θ*)|``, and its quantiles
        (rows: ``quantile_levels``), indexed like ``k``.
    sizes : ndarray
        The log grid of ``k`` where the Hessian terms were measured (first ordering).
    hessian_difference : ndarray
        ``‖H_{k+1} − H_k‖₂`` at each size.
    lambda_max, trace, trace_stderr : ndarray
        ``λmax(H_k)``, ``tr(H_k)`` and its standard error (0 where exact).
    rank, rank_stderr : ndarray
        ``rank(H_k)`` at ``threshold``, and its standard error (0 where exact).
    threshold : float
        The one threshold of every rank (from ``H_N`` unless given).
    dim : int
        Parameters ``n``.
    radii, measured, bound, theorem_bound, violations
        The quadratic term: at ``θ* + δ`` for random directions of length
        ``radius·‖θ*‖``, the largest ``|L_{k+1} − L_k|`` over the directions
        (``measured``, shape ``(sizes, radii)``); the paper's right-hand side with the
        measured Hessian difference, ``Δ_k(θ*) + ‖δ‖²·‖H_{k+1} − H_k‖₂`` (``bound``); the
        same with the theorem's constant ``2·C_H/(k + 1)`` for ``‖H_{x} − H_k‖₂``, where
        ``C_H = L√2·M_x²·M_W^{2L} + √2·M_W²(M_W^{2L} − 1)/(M_W² − 1)`` for a bias-free
        ReLU ``Sequential`` (NaN for other models); and where ``measured > bound``
        (the second-order expansion does not hold there).
    constant : float
        The theorem's ``C_H`` (NaN where it does not apply); its bound on
        ``‖H_{k+1} − H_k‖₂`` is ``2·C_H/(k + 1)``.
    seconds : dict
        Wall time by part: ``"threshold"`` (choosing it from ``H_N``), ``"hessian"``
        (norms and traces), ``"rank"`` and ``"quadratic"``.
    """

    losses: np.ndarray
    k: np.ndarray
    delta_mean: np.ndarray
    delta_quantiles: np.ndarray
    quantile_levels: tuple[float, ...]
    sizes: np.ndarray
    hessian_difference: np.ndarray
    lambda_max: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    rank: np.ndarray
    rank_stderr: np.ndarray
    threshold: float
    dim: int
    orderings: int
    radii: np.ndarray
    measured: np.ndarray
    bound: np.ndarray
    theorem_bound: np.ndarray
    violations: np.ndarray
    constant: float = float("nan")
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, numbers and strings (``json.dumps`` takes it)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                # NaN (no theorem constant) is not JSON: None instead
                if value.dtype.kind == "f":
                    value = value.astype(object)
                    value[np.isnan(value.astype(np.float64))] = None
                value = value.tolist()
            out[field.name] = value
        out["quantile_levels"] = list(self.quantile_levels)
        out["threshold"] = float(self.threshold)
        out["constant"] = None if np.isnan(self.constant) else self.constant
        return out


def canonical_order(inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Sample indices sorted by a hash of each sample's bytes (ties by the bytes)."""
    keys = []
    for i in range(inputs.shape[0]):
        raw = (
            inputs[i].detach().cpu().contiguous().numpy().tobytes()
            + b"|"
            + targets[i].detach().cpu().contiguous().numpy().tobytes()
        )
        keys.append((hashlib.blake2b(raw, digest_size=16).digest(), raw))
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def per_sample_losses(oracle: Any) -> np.ndarray:
    """``ℓ_i(θ0)``, ``loss_fn`` on each sample alone, for a
    :class:`~matrank.adapters.TorchLoss`: one forward pass per chunk, then the loss of
    each output row (a model's output for a sample does not depend on the others in
    eval mode)."""
    from torch.func import functional_call

    parameters = oracle.parameters_at(oracle.theta0)
    values: list[float] = []
    with torch.no_grad():
        for inputs, targets in oracle.chunks():
            output = functional_call(oracle.model, parameters, (inputs,))
            values.extend(
                float(oracle.loss_fn(output[i : i + 1], targets[i : i + 1]))
                for i in range(output.shape[0])
            )
    return np.array(values)


def loss_differences(
    losses: np.ndarray, orderings: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``Δ_k`` for ``k = 1 … N − 1`` over ``orderings`` permutations: ``(orderings, N − 1)``
    and the permutations ``(orderings, N)``."""
    n = losses.size
    permutations = np.stack([rng.permutation(n) for _ in range(orderings)])
    ordered = losses[permutations]
    means = np.cumsum(ordered, axis=1) / np.arange(1, n + 1)
    return np.abs(np.diff(means, axis=1)), permutations


def dataset_size_study(
    model: torch.nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    sizes: Sequence[int] | None = None,
    n_sizes: int = 20,
    orderings: int = 100,
    seed: int | None = None,
    threshold: float | None = None,
    relative_threshold: float | None = None,
    method: str = "auto",
    trace_probes: int = 64,
    radii: Sequence[float] = (1e-3, 1e-2, 1e-1),
    directions: int = 4,
    dtype: torch.dtype | None = None,
    on_size: Callable[[int], None] | None = None,
) -> LandscapeStudy:
    """Measure the loss and Hessian terms of Kiselev & Grabovoy's bound at a trained point.

    Parameters
    ----------
    model, loss_fn
        As for :class:`matrank.adapters.TorchLoss` (``loss_fn`` the batch mean); the
        model's current weights are ``θ*``.
    data : (inputs, targets) tensors
        The ``N`` samples, in any order.
    sizes : sequence of int or None
        The ``k`` (``1 ≤ k < N``) where the Hessian terms are measured; ``None``: about
        ``n_sizes`` log-spaced values from 1 to ``N − 1``.
    orderings : int, default=100
        Random orderings of the samples for ``Δ_k`` (the paper's 100).
    seed : int or None
        Seed of the orderings, the eigen-solvers' starts, the trace probes and the
        rank estimates.
    threshold : float or None
        The eigenvalue threshold of every ``rank(H_k)`` (eigenvalues count by their
        magnitude: ``θ*`` need not be a minimum); ``None`` takes the threshold the rank
        estimate of ``H_N`` (all the samples) chooses, or ``relative_threshold``.
    relative_threshold : float or None
        With ``threshold=None``: the threshold is this fraction of ``λmax(H_N)``.
    method : str, default="auto"
        The rank method (``matrank.estimate_rank``).
    trace_probes : int, default=64
        Rademacher probes of ``tr(H_k)`` when ``n > DENSE_MAX_DIM``.
    radii : sequence of float, default=(1e-3, 1e-2, 1e-1)
        Lengths of the displacements ``δ`` of the quadratic term, relative to ``‖θ*‖``.
    directions : int, default=4
        Random directions per radius.
    dtype : torch.dtype or None
        Compute dtype (``torch.float64`` for reference accuracy).
    on_size : callable or None
        Called with each ``k`` once its terms are measured (a progress bar's hook).

    Returns
    -------
    LandscapeStudy
    """
    from .adapters import TorchLoss  # the user-facing layer reaches the adapters

    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise MatrankTypeError(
            message("data", "an (inputs, targets) pair of tensors", type(data).__name__)
        )
    inputs, targets = data
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise MatrankTypeError(message("data", "tensors", type(inputs).__name__))
    N = int(inputs.shape[0])
    if N < 2:
        raise MatrankValueError(message("data", "at least two samples", N))
    check_int("orderings", orderings, low=1)
    check_int("n_sizes", n_sizes, low=1)
    check_int("trace_probes", trace_probes, low=1)
    check_int("directions", directions, low=1)
    radii_array = np.asarray(radii, dtype=np.float64)
    if radii_array.ndim != 1 or radii_array.size == 0 or not (radii_array > 0).all():
        raise MatrankValueError(message("radii", "positive numbers", radii))
    check_int("seed", seed, low=0, allow_none=True)
    if relative_threshold is not None and (
        threshold is not None or not 0 < relative_threshold < 1
    ):
        raise MatrankValueError(
            message(
                "relative_threshold",
                "a fraction in (0, 1), with threshold=None",
                relative_threshold,
            )
        )
    grid = (
        np.unique(np.round(np.geomspace(1, N - 1, n_sizes)).astype(np.int64))
        if sizes is None
        else np.asarray(sizes, dtype=np.int64)
    )
    if grid.ndim != 1 or grid.size == 0 or grid.min() < 1 or grid.max() > N - 1:
        raise MatrankValueError(message("sizes", f"integers in [1, {N - 1}]", sizes))

    order = canonical_order(inputs, targets)
    inputs, targets = inputs[order], targets[order]

    def oracle(index: np.ndarray) -> Any:
        chosen = torch.as_tensor(index)
        return TorchLoss(
            model,
            loss_fn,
            (inputs[chosen], targets[chosen]),
            dtype=dtype,
            gradient_tol=None,
        )

    full = oracle(np.arange(N))
    losses = per_sample_losses(full)
    rng = np.random.default_rng(seed)
    deltas, permutations = loss_differences(losses, orderings, rng)
    first = permutations[0]

    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    n = full.dim
    clock = time.perf_counter()
    if threshold is None:
        if relative_threshold is not None:
            top = (
                _dense_spectrum(full).max()
                if n <= DENSE_MAX_DIM
                else _largest(full.hvp, full, generator, which="LA")
            )
            threshold = relative_threshold * float(top)
        else:
            chosen = estimate_rank(full, method=method, seed=seed).threshold
            if chosen is None:
                raise MatrankValueError(
                    message("method", "one that reports a threshold", repr(method))
                )
            threshold = float(chosen)
    seconds = {"threshold": time.perf_counter() - clock}
    columns: dict[str, list[float]] = {
        key: [] for key in ("difference", "lmax", "trace", "trace_se", "rank", "rank_se")
    }
    scale = float(torch.linalg.vector_norm(full.theta0)) or 1.0
    unit = torch.randn(directions, n, generator=generator, dtype=torch.float64)
    unit = unit / torch.linalg.vector_norm(unit, dim=1, keepdim=True)
    constant = theorem_constant(model, inputs)
    measured: list[list[float]] = []
    bounds: list[np.ndarray] = []
    theorem: list[np.ndarray] = []
    for key in ("hessian", "rank", "quadratic"):
        seconds[key] = 0.0
    for k in grid:
        clock = time.perf_counter()
        H_k = oracle(first[:k])
        H_x = oracle(first[k : k + 1])
        ranked: Any = H_k
        if n <= DENSE_MAX_DIM:
            ranked = _dense(H_k)
            added = _dense(H_x)
            difference = np.linalg.eigvalsh((added - ranked) / (k + 1))
            columns["difference"].append(float(np.abs(difference).max()))
            columns["lmax"].append(float(np.linalg.eigvalsh(ranked).max()))
            columns["trace"].append(float(np.trace(ranked)))
            columns["trace_se"].append(0.0)
        else:

            def apply(
                V: torch.Tensor, H_k: Any = H_k, H_x: Any = H_x, k: int = int(k)
            ) -> torch.Tensor:
                return (H_x.hvp(V) - H_k.hvp(V)) / (k + 1)

            columns["difference"].append(_largest(apply, full, generator))
            columns["lmax"].append(_largest(H_k.hvp, full, generator, which="LA"))
            trace, trace_se = _trace(H_k, trace_probes, generator)
            columns["trace"].append(trace)
            columns["trace_se"].append(trace_se)
        seconds["hessian"] += time.perf_counter() - clock
        clock = time.perf_counter()
        result = estimate_rank(ranked, method=method, seed=seed, threshold=threshold)
        columns["rank"].append(result.rank)
        columns["rank_se"].append(result.stderr or 0.0)
        seconds["rank"] += time.perf_counter() - clock
        clock = time.perf_counter()
        loss_delta = abs(losses[first[k]] - losses[first[:k]].mean()) / (k + 1)
        worst = []
        for length in radii_array * scale:
            steps = length * unit
            points = full.theta0[None] + steps.to(full.dtype)
            with torch.no_grad():
                change = (H_x.loss(points) - H_k.loss(points)) / (k + 1)
            worst.append(float(change.abs().max()))
        measured.append(worst)
        squares = (radii_array * scale) ** 2
        bounds.append(loss_delta + squares * columns["difference"][-1])
        theorem.append(loss_delta + squares * 2 * constant / (k + 1))
        seconds["quadratic"] += time.perf_counter() - clock
        if on_size is not None:
            on_size(int(k))
    return LandscapeStudy(
        losses=losses,
        k=np.arange(1, N),
        delta_mean=deltas.mean(axis=0),
        delta_quantiles=np.quantile(deltas, _QUANTILES, axis=0),
        quantile_levels=_QUANTILES,
        sizes=grid,
        hessian_difference=np.array(columns["difference"]),
        lambda_max=np.array(columns["lmax"]),
        trace=np.array(columns["trace"]),
        trace_stderr=np.array(columns["trace_se"]),
        rank=np.array(columns["rank"]),
        rank_stderr=np.array(columns["rank_se"]),
        threshold=threshold,
        dim=n,
        orderings=orderings,
        radii=radii_array,
        measured=np.array(measured),
        bound=np.array(bounds),
        theorem_bound=np.array(theorem),
        violations=np.array(measured) > np.array(bounds) * (1 + 1e-9),
        constant=constant,
        seconds=seconds,
    )


def theorem_constant(model: torch.nn.Module, inputs: torch.Tensor) -> float:
    """Kiselev & Grabovoy's bound on a sample's ``‖H_i‖₂`` for a bias-free ReLU network
    (a ``Sequential`` of bias-free ``Linear`` and ``ReLU`` layers) with cross-entropy:
    ``L√2·M_x²·M_W^{2L} + √2·M_W²(M_W^{2L} − 1)/(M_W² − 1)``, ``M_W`` the largest
    spectral norm of the ``L`` weight matrices and ``M_x`` the largest ``‖x_i‖``; NaN for
    any other model."""
    layers = list(model.children()) if isinstance(model, torch.nn.Sequential) else []
    linear = [m for m in layers if isinstance(m, torch.nn.Linear)]
    plain = all(isinstance(m, (torch.nn.Linear, torch.nn.ReLU)) for m in layers)
    if not linear or not plain or any(m.bias is not None for m in linear):
        return float("nan")
    depth = len(linear)
    with torch.no_grad():
        m_w = max(float(torch.linalg.matrix_norm(m.weight.double(), ord=2)) for m in linear)
        m_x = float(
            torch.linalg.vector_norm(inputs.double().reshape(len(inputs), -1), dim=1).max()
        )
    power = m_w ** (2 * depth)
    tail = (
        2**0.5 * depth
        if abs(m_w**2 - 1) < 1e-12
        else 2**0.5 * m_w**2 * (power - 1) / (m_w**2 - 1)
    )
    return depth * 2**0.5 * m_x**2 * power + tail


def _dense(oracle: Any) -> np.ndarray:
    """``H`` in float64 (:func:`~matrank.materialize`: free for an explicit matrix, ``n``
    products otherwise), symmetrized (the products are symmetric to rounding)."""
    with torch.no_grad():
        dense = materialize(oracle).to("cpu", torch.float64).numpy()
    return 0.5 * (dense + dense.T)


def _dense_spectrum(oracle: Any) -> np.ndarray:
    return np.linalg.eigvalsh(_dense(oracle))


def _largest(
    apply: Callable[[torch.Tensor], torch.Tensor],
    oracle: Any,
    generator: torch.Generator,
    which: str = "LM",
) -> float:
    """The largest ``|λ|`` (``"LM"``) or largest ``λ`` (``"LA"``) of the symmetric
    operator ``apply`` (blocks ``(n, b)`` in the oracle's dtype), by ARPACK's Lanczos
    from a seeded start."""
    n = oracle.dim

    def matvec(v: np.ndarray) -> np.ndarray:
        V = torch.as_tensor(v, dtype=oracle.dtype).reshape(n, -1)
        with torch.no_grad():
            return apply(V).to(torch.float64).numpy()

    operator = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=matvec, matmat=matvec, dtype=np.float64
    )
    start = torch.randn(n, generator=generator, dtype=torch.float64).numpy()
    values = scipy.sparse.linalg.eigsh(
        operator, k=1, which=which, v0=start, tol=1e-12, return_eigenvectors=False
    )
    return float(np.abs(values).max() if which == "LM" else values.max())


def _trace(oracle: Any, probes: int, generator: torch.Generator) -> tuple[float, float]:
    """``tr(H)`` by the Hutchinson mean of Rademacher probes, with its standard error."""
    signs = probe_block(
        oracle.dim,
        probes,
        kind="rademacher",
        generator=generator,
        dtype=oracle.dtype,
        device=oracle.device,
    )
    with torch.no_grad():
        return mean_and_stderr((signs * oracle.hvp(signs)).sum(dim=0))
