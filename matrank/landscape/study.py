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
import torch

from .._api import estimate_rank
from .._validation import MatrankTypeError, MatrankValueError, check_int, message
from . import hessian
from .hessian import dense_spectrum, extremes, ordering_terms, summarize

__all__ = [
    "LandscapeStudy",
    "canonical_order",
    "dataset_size_study",
    "loss_differences",
    "per_sample_losses",
    "theorem_constant",
]


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
        The log grid of ``k`` where the Hessian terms were measured, each over the
        first ``hessian_orderings`` orderings.
    hessian_difference, hessian_difference_spread : ndarray
        ``‖H_{k+1} − H_k‖₂`` at each size: the mean over the orderings and their
        standard deviation.
    lambda_max, lambda_max_spread : ndarray
        ``λmax(H_k)``: mean and spread.
    trace, trace_spread, trace_stderr : ndarray
        ``tr(H_k)``: mean and spread over the orderings, and the standard error of the
        mean from the estimator's own (0 where exact).
    rank, rank_spread, rank_stderr : ndarray
        ``rank(H_k)`` at ``threshold``: mean, spread and the estimator's standard error
        of the mean (0 where exact).
    hessian_orderings : int
        How many orderings the Hessian terms were measured over.
    threshold : float
        The one threshold of every rank (from ``H_N`` unless given).
    dim : int
        Parameters ``n``.
    radii, measured, bound, theorem_bound, violations
        The quadratic term: at ``θ* + δ`` for random directions of length
        ``radius·‖θ*‖``, the largest ``|L_{k+1} − L_k|`` over the directions
        (``measured``, shape ``(sizes, radii)``, of the ordering where it came closest
        to its bound); that ordering's right-hand side with its measured Hessian
        difference, ``Δ_k(θ*) + ‖δ‖²·‖H_{k+1} − H_k‖₂`` (``bound``); the
        same with the theorem's constant ``2·C_H/(k + 1)`` for ``‖H_{x} − H_k‖₂``, where
        ``C_H = L√2·M_x²·M_W^{2L} + √2·M_W²(M_W^{2L} − 1)/(M_W² − 1)`` for a bias-free
        ReLU ``Sequential`` (NaN for other models); and where ``measured > bound`` in
        any of the orderings (the second-order expansion does not hold there).
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
    hessian_difference_spread: np.ndarray
    lambda_max: np.ndarray
    lambda_max_spread: np.ndarray
    trace: np.ndarray
    trace_spread: np.ndarray
    trace_stderr: np.ndarray
    rank: np.ndarray
    rank_spread: np.ndarray
    rank_stderr: np.ndarray
    hessian_orderings: int
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

    @classmethod
    def from_dict(cls, record: Any) -> LandscapeStudy:
        """The study :meth:`to_dict` wrote, checked first: every field present, numbers
        where numbers belong, the arrays' shapes consistent, the measurements finite;
        :class:`~matrank.MatrankValueError` in one line otherwise."""
        from .record import study_from_dict

        return study_from_dict(record)


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
    hessian_orderings: int = 10,
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
    hessian_orderings : int, default=10
        The first this many orderings (all of them when there are fewer) also measure
        the Hessian terms and the quadratic term at each size: their mean and spread.
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
        Products of Hutch++'s ``tr(H_k)`` when ``n > DENSE_MAX_DIM``.
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
    from ..adapters import TorchLoss  # the user-facing layer reaches the adapters

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
    check_int("hessian_orderings", hessian_orderings, low=1)
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
    hessian_orderings = min(hessian_orderings, orderings)

    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    n = full.dim
    clock = time.perf_counter()
    if threshold is None:
        if relative_threshold is not None:
            top = (
                dense_spectrum(full).max()
                if n <= hessian.DENSE_MAX_DIM
                else extremes(full.hvp, full, generator)[1]
            )
            threshold = relative_threshold * float(top)
        else:
            chosen = estimate_rank(full, method=method, seed=seed).threshold
            if chosen is None:
                raise MatrankValueError(
                    message("method", "one that reports a threshold", repr(method))
                )
            threshold = float(chosen)
    seconds = {"threshold": time.perf_counter() - clock, "hessian": 0.0}
    seconds.update(rank=0.0, quadratic=0.0)
    scale = float(torch.linalg.vector_norm(full.theta0)) or 1.0
    unit = torch.randn(directions, n, generator=generator, dtype=torch.float64)
    unit = unit / torch.linalg.vector_norm(unit, dim=1, keepdim=True)
    constant = theorem_constant(model, inputs)
    lengths = radii_array * scale
    steps = (torch.as_tensor(lengths)[:, None, None] * unit).reshape(-1, n)  # radius-major
    points = full.theta0[None] + steps.to(full.dtype)
    rows: list[list[dict[str, Any]]] = []
    for k in grid:
        per_ordering = []
        for ordering in permutations[:hessian_orderings]:
            terms = ordering_terms(
                oracle(ordering[:k]),
                oracle(ordering[k : k + 1]),
                int(k),
                generator=generator,
                trace_products=trace_probes,
                rank=lambda H: estimate_rank(
                    H, method=method, seed=seed, threshold=threshold
                ),
                points=points,
                seconds=seconds,
            )
            loss_delta = abs(losses[ordering[k]] - losses[ordering[:k]].mean()) / (k + 1)
            terms["bound"] = loss_delta + lengths**2 * terms["difference"]
            terms["theorem"] = loss_delta + lengths**2 * 2 * constant / (k + 1)
            terms["measured"] = terms["change"].reshape(len(lengths), -1).max(axis=1)
            per_ordering.append(terms)
        rows.append(per_ordering)
        if on_size is not None:
            on_size(int(k))
    summary = summarize(rows)
    return LandscapeStudy(
        losses=losses,
        k=np.arange(1, N),
        delta_mean=deltas.mean(axis=0),
        delta_quantiles=np.quantile(deltas, _QUANTILES, axis=0),
        quantile_levels=_QUANTILES,
        sizes=grid,
        hessian_orderings=hessian_orderings,
        threshold=threshold,
        dim=n,
        orderings=orderings,
        radii=radii_array,
        constant=constant,
        seconds=seconds,
        **summary,
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
