"""The loss of a PyTorch model over a fixed dataset, as an oracle at its current weights.

``TorchLoss(model, loss_fn, data)`` is the function ``L(θ) = mean over the data of
loss_fn(model(x; θ), y)`` of the selected parameters ``θ`` (all that require grad by
default), at ``θ0`` = the model's current values. Everything goes through
:mod:`torch.func`: ``functional_call`` evaluates the model at any flat parameter vector
without touching the module, ``vmap`` batches ``B`` parameter vectors (Langevin chains,
evolution samples) into one pass, and ``hvp`` is a backward through the gradient's graph
at ``θ0``, kept from the first call (or, without the cache, forward-over-reverse, ``jvp``
of ``grad``, batched over the columns of the block). The dataset is processed in chunks whose
losses are weighted by their sizes, so memory stays bounded and the result is the
full-batch loss.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.func import functional_call, grad, hessian, jvp, vjp, vmap

from matrank._oracle import Capability, as_oracle
from matrank._validation import (
    MatrankError,
    MatrankTypeError,
    MatrankValueError,
    MatrankWarning,
    check_int,
    check_real,
    message,
)

from ._data import (
    batch_len,
    cast,
    check_data,
    check_loss_contract,
    select_parameters,
)
from ._distributed import Collective
from .adam import adam_preconditioner

__all__ = ["TorchLoss", "adam_preconditioner"]

_STOCHASTIC = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)


class TorchLoss:
    """Oracle of a model's full-batch loss around its current parameters.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model; read, never modified or moved.
    loss_fn : callable
        ``loss_fn(output, target) -> scalar``, the **mean** over the batch (torch's
        losses with the default ``reduction="mean"``): chunks are weighted by their size
        so that the oracle's loss is the mean over the whole dataset.
    data : (inputs, targets) tensors or a DataLoader
        The dataset, ``inputs`` and ``targets`` with the same first dimension, or a
        DataLoader yielding ``(inputs, targets)`` in a fixed order (a shuffling loader
        would change the function between calls, and is refused).
    params : sequence of str or None, default=None
        Names (as in ``model.named_parameters()``) of the parameters ``θ``; the others
        stay fixed at their values. ``None`` selects every parameter that requires grad.
    dtype : torch.dtype or None, default=None
        Compute in this floating dtype (``torch.float64`` for reference accuracy):
        parameters, buffers and floating data are cast on the fly. ``None`` keeps the
        parameters' dtype.
    chunk_size : int, default=1024
        Samples per forward pass for tensor data (a DataLoader's batches are used as
        they come). Batched calls multiply activation memory by their batch of parameter
        vectors: lower it if ``grad`` on many chains runs out of memory.
    vectorize : bool or None, default=None
        Batch parameter vectors (chains, HVP columns) with ``torch.func.vmap``;
        ``False`` loops over them. ``None`` vmaps except for a model with convolutions
        on a CPU: there 32 chains looped cost 31–39 gradients and vmapped 57–77 (more
        than one gradient over 32 copies of the data, 44–59: the batch outgrows the
        caches), while MLPs gain from vmap (12–30 against 39–55;
        ``benchmarks/torch_costs.py``). On a GPU vmap is the point.
    cache_hvp : bool or None, default=None
        Keep the first backward pass at ``θ0`` (its graph, built with
        ``create_graph=True``) and answer each HVP with one more backward through it:
        ``θ0`` never moves, so the forward and first backward need not be redone. One
        HVP then costs 1.7–2.9 gradients of a CNN instead of 2.8–3.7
        (``benchmarks/torch_costs.py``), but the graph of every chunk stays in memory
        for the oracle's lifetime. ``None`` caches when the data is one chunk (memory
        as for one full-batch double backward); ``True`` caches every chunk, ``False``
        recomputes each time (forward-over-reverse).
    gradient_tol : float or None, default=1e-3
        Warn (``MatrankWarning``) when ``‖∇L(θ0)‖`` exceeds it: rank estimates near a
        point that is not stationary are estimates of something else (Langevin's theory
        assumes a minimum). ``None`` skips the check and its gradient pass.
    distributed : bool, default=False
        Data-parallel: ``data`` is this process's shard, and every loss, gradient and
        HVP is the full-batch one over all the shards of ``process_group`` -- local sums
        (chunk means times their sizes over the global sample count, summed once at
        construction) combined by one ``torch.distributed.all_reduce`` per call, so
        uneven shards weigh exactly as in one process. Every rank must build the oracle
        and then call the same estimator with the same seed (SPMD); a check that fails
        on one rank raises on all of them. See "Past one machine" in the README.
    process_group : ProcessGroup or None, default=None
        The group to reduce over (``None``: the default group).

    Raises
    ------
    MatrankValueError
        For a model in train mode with dropout or batch-norm layers, a loss that is not
        deterministic, a shuffling DataLoader, inconsistent data, unknown or frozen
        parameter names, or a non-scalar loss.
    MatrankTypeError
        For a model that is not a ``torch.nn.Module`` or data of the wrong type.

    Notes
    -----
    ``θ`` is the selected parameters flattened in ``named_parameters()`` order; use
    :meth:`unflatten` to map a vector back to named tensors. The oracle lives on the
    model's device; data chunks are moved there as they are used. :meth:`dense_hessian`
    is ``torch.func.hessian`` of the full loss, the independent reference for small
    models; ``method="exact"`` builds the dense Hessian from ``n`` counted HVPs instead.

    Examples
    --------
    >>> import torch, matrank
    >>> from matrank.adapters import TorchLoss
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 1, bias=False)
    >>> X = torch.randn(20, 3)
    >>> oracle = TorchLoss(model, torch.nn.functional.mse_loss, (X, model(X).detach()),
    ...                    dtype=torch.float64)
    >>> oracle.dim, int(matrank.estimate_rank(oracle, method="exact").rank)
    (3, 3)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        *,
        params: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
        chunk_size: int = 1024,
        vectorize: bool | None = None,
        cache_hvp: bool | None = None,
        gradient_tol: float | None = 1e-3,
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise MatrankTypeError(
                message("model", "a torch.nn.Module", type(model).__name__)
            )
        if not callable(loss_fn):
            raise MatrankTypeError(message("loss_fn", "a callable", repr(loss_fn)))
        check_int("chunk_size", chunk_size, low=1)
        if vectorize is not None and not isinstance(vectorize, bool):
            raise MatrankTypeError(
                message("vectorize", "True, False or None", repr(vectorize))
            )
        if cache_hvp is not None and not isinstance(cache_hvp, bool):
            raise MatrankTypeError(
                message("cache_hvp", "True, False or None", repr(cache_hvp))
            )
        check_real("gradient_tol", gradient_tol, low=0.0, allow_none=True)
        if not isinstance(distributed, bool):
            raise MatrankTypeError(
                message("distributed", "True or False", repr(distributed))
            )
        self._collective = Collective(process_group) if distributed else None
        try:
            self._setup(
                model, loss_fn, data, params, dtype, chunk_size, vectorize, cache_hvp
            )
        except MatrankError as error:
            if self._collective is None:
                raise
            self._collective.together(error)
        if self._collective is not None:
            self._collective.together(None)
            local = torch.tensor([self._n_samples], dtype=torch.int64)
            self._n_samples = int(self._collective.sum(local)[0])
        if gradient_tol is not None:
            norm = float(torch.linalg.vector_norm(self.grad(self._theta0[None])))
            if norm > gradient_tol:
                warnings.warn(
                    f"‖∇L(θ0)‖ = {norm:.3g} > gradient_tol = {gradient_tol:g}: θ0 is not "
                    "a stationary point, so the Hessian there is not the Hessian at a "
                    "minimum (train further, or pass gradient_tol=None to silence this).",
                    MatrankWarning,
                    stacklevel=2,
                )

    def _setup(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        params: Sequence[str] | None,
        dtype: torch.dtype | None,
        chunk_size: int,
        vectorize: bool | None,
        cache_hvp: bool | None,
    ) -> None:
        """Everything that reads the model and this process's data (a distributed
        oracle's ranks agree on whether it failed, see ``__init__``)."""
        if model.training:
            stochastic = sorted(
                {type(m).__name__ for m in model.modules() if isinstance(m, _STOCHASTIC)}
            )
            if stochastic:
                raise MatrankValueError(
                    message(
                        "model",
                        "in eval mode when it has dropout or batch-norm layers (a "
                        "stochastic or batch-dependent loss has no fixed Hessian; call "
                        "model.eval())",
                        f"train mode with {', '.join(stochastic)}",
                    )
                )
        self.model = model
        self.loss_fn = loss_fn
        self.chunk_size = chunk_size
        names, selected, dtype = select_parameters(model, params, dtype)
        self.names = names
        self.shapes = [tuple(p.shape) for p in selected]
        self.dtype = dtype
        self.device = selected[0].device
        self.dim = sum(p.numel() for p in selected)
        with torch.no_grad():
            self._theta0 = torch.cat([p.detach().reshape(-1).to(dtype) for p in selected])
        if not bool(torch.isfinite(self._theta0).all()):
            bad = int((~torch.isfinite(self._theta0)).sum())
            raise MatrankValueError(
                message("model", "finite parameters", f"{bad} NaN or Inf entries")
            )
        with torch.no_grad():
            selected_names = set(names)
            self._fixed = {
                name: cast(t.detach(), dtype)
                for name, t in [*model.named_parameters(), *model.named_buffers()]
                if name not in selected_names
            }
        self._data = check_data(data, chunk_size)
        sizes = [batch_len(batch) for batch in self.chunks()]
        self._n_samples = sum(sizes)
        if self._n_samples == 0:
            raise MatrankValueError(message("data", "at least one sample", "none"))
        if vectorize is None:
            convolutional = any(
                isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules()
            )
            vectorize = not (convolutional and self.device.type == "cpu")
        self._vectorized = vectorize
        self._cache_hvp = len(sizes) == 1 if cache_hvp is None else cache_hvp
        self._graphs: list[tuple[torch.Tensor, torch.Tensor, float]] | None = None
        # one backward per column on a CPU (a vmapped backward through convolutions
        # ran ≈ 1.7× slower than the loop there), batched where the device has room
        self._batch_columns = vectorize and self.device.type != "cpu"
        self.hvp_mode = (
            "cached reverse-over-reverse" if self._cache_hvp else "forward-over-reverse"
        )
        self._check_deterministic()

    # ----------------------------------------------------------------- the protocol
    @property
    def theta0(self) -> torch.Tensor:
        return self._theta0

    @property
    def capabilities(self) -> Capability:
        return Capability.LOSS | Capability.GRAD | Capability.HVP

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """Full-batch loss at a batch of parameter vectors, ``(b, n) -> (b,)``."""
        return self._accumulate(lambda f: self.map_rows(f, theta))

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """Full-batch gradient at a batch of parameter vectors, ``(b, n) -> (b, n)``."""
        return self._accumulate(lambda f: self.map_rows(grad(f), theta))

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """Hessian at ``θ0`` times a block, ``(n, b) -> (n, b)``.

        With the cache (``cache_hvp``), one backward per column through the gradient
        graph built at the first call (for the whole block at once off the CPU). Without
        it, forward-over-reverse (``jvp`` of ``grad``), batched over columns. Some of torch's
        derivative formulas have no forward-mode version of their backward (``mse_loss``
        in torch 2.13 fails with "ZeroTensors are immutable"); then, once and for all,
        reverse-over-reverse: one backward graph per chunk whose pullback is batched
        over the columns (``H`` is symmetric, so ``vᵀH = (Hv)ᵀ``).
        """
        if self._cache_hvp:
            return self._cached_hvp(V)
        theta0 = self._theta0
        if self.hvp_mode == "forward-over-reverse":

            def column(f: Callable, v: torch.Tensor) -> torch.Tensor:
                return jvp(grad(f), (theta0,), (v,))[1]

            try:
                if V.shape[1] == 1:  # one column: no vmap and its tracing overhead
                    return self._accumulate(lambda f: column(f, V[:, 0]))[:, None]
                return self._accumulate(
                    lambda f: self.map_rows(lambda v: column(f, v), V.T)
                ).T
            except torch.OutOfMemoryError:
                raise
            except RuntimeError:
                self.hvp_mode = "reverse-over-reverse"

        def pulled(f: Callable) -> torch.Tensor:
            _, pullback = vjp(grad(f), theta0)
            if V.shape[1] == 1:
                return pullback(V[:, 0])[0][None]
            return self.map_rows(lambda v: pullback(v)[0], V.T)

        return self._accumulate(pulled).T

    def _cached_hvp(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` by a backward through each chunk's kept gradient graph at ``θ0``."""
        if self._graphs is None:
            graphs = []
            with torch.enable_grad():
                for inputs, targets in self.chunks():
                    theta = self._theta0.detach().clone().requires_grad_(True)
                    value = self._chunk_loss(inputs, targets)(theta)
                    (gradient,) = torch.autograd.grad(value, theta, create_graph=True)
                    weight = batch_len((inputs, targets)) / self._n_samples
                    graphs.append((theta, gradient, weight))
            self._graphs = graphs
        total = torch.zeros_like(V)
        for theta, gradient, weight in self._graphs:
            if not gradient.requires_grad:  # the gradient is constant: H = 0 here
                continue
            if self._batch_columns and V.shape[1] > 1:
                (part,) = torch.autograd.grad(
                    gradient,
                    theta,
                    V.T,
                    retain_graph=True,
                    is_grads_batched=True,
                    materialize_grads=True,
                )
                total += weight * part.T
            else:
                for j in range(V.shape[1]):
                    (part,) = torch.autograd.grad(
                        gradient,
                        theta,
                        V[:, j],
                        retain_graph=True,
                        materialize_grads=True,
                    )
                    total[:, j] += weight * part
        return total if self._collective is None else self._collective.sum(total)

    @property
    def collective(self) -> Collective | None:
        """The process group's wrapper of a distributed oracle (``None`` otherwise)."""
        return self._collective

    def __getstate__(self) -> dict[str, Any]:
        # a kept autograd graph cannot be pickled (joblib workers rebuild it); a process
        # group belongs to its process
        if self._collective is not None:
            raise MatrankValueError(
                message(
                    "oracle",
                    "a TorchLoss that can move to another process (n_jobs, estimate_many)",
                    "a distributed one: run one estimate per rank instead",
                )
            )
        return {**self.__dict__, "_graphs": None}

    # ------------------------------------------------------------------- helpers
    def parameters_at(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``functional_call``'s parameters and buffers at the flat ``θ``."""
        return {**self._fixed, **self.unflatten(theta)}

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named parameter tensors of a flat vector ``θ`` (views, no copies)."""
        sizes = [math.prod(shape) for shape in self.shapes]
        pieces = torch.split(theta, sizes)
        return {
            name: piece.reshape(shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }

    def dense_hessian(self) -> torch.Tensor:
        """``(n, n)`` Hessian at ``θ0`` by ``torch.func.hessian``, chunk by chunk."""
        return self._accumulate(lambda f: hessian(f)(self._theta0))

    def _chunk_loss(
        self, inputs: Any, targets: Any
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        def f(theta: torch.Tensor) -> torch.Tensor:
            parameters = self.parameters_at(theta)
            output = functional_call(self.model, parameters, (inputs,))
            value = self.loss_fn(output, targets)
            if not isinstance(value, torch.Tensor):
                raise MatrankTypeError(
                    message(
                        "loss_fn",
                        "a function returning a scalar torch.Tensor (a Python number "
                        "carries no gradient)",
                        f"one returning {type(value).__name__}",
                    )
                )
            if value.ndim != 0:
                raise MatrankValueError(
                    message(
                        "loss_fn",
                        "a scalar (the batch mean)",
                        f"shape {tuple(value.shape)}",
                    )
                )
            return value

        return f

    def chunks(self) -> Iterable[tuple[Any, Any]]:
        """The data's ``(inputs, targets)`` chunks in fixed order, dtype and device."""
        for inputs, targets in self._data():
            yield (
                cast(inputs, self.dtype, self.device),
                cast(targets, self.dtype, self.device),
            )

    def _accumulate(self, compute: Callable[[Callable], torch.Tensor]) -> torch.Tensor:
        """``Σ_chunks (m_c/N)·compute(loss of chunk c)``: the full-batch quantity."""
        total = None
        for inputs, targets in self.chunks():
            weight = batch_len((inputs, targets)) / self._n_samples
            part = compute(self._chunk_loss(inputs, targets)) * weight
            total = part if total is None else total + part
        assert total is not None
        return total if self._collective is None else self._collective.sum(total)

    def map_rows(self, function: Callable, *rows: torch.Tensor) -> torch.Tensor:
        """``function`` on each row (of each of ``rows`` together), by ``vmap`` or, for
        models vmap cannot trace, a loop (with one warning, then always the loop)."""
        if self._vectorized:
            try:
                return vmap(function)(*rows)
            except (RuntimeError, NotImplementedError) as error:
                if "vmap" not in str(error).lower() and "batch" not in str(error).lower():
                    raise
                self._vectorized = False
                warnings.warn(
                    f"torch.func.vmap cannot batch this model ({error}); falling back to "
                    "one pass per parameter vector, which is slower.",
                    MatrankWarning,
                    stacklevel=3,
                )
        return torch.stack([function(*row) for row in zip(*rows, strict=True)])

    def _check_deterministic(self) -> None:
        inputs, targets = next(iter(self.chunks()))
        parameters = self.parameters_at(self._theta0)
        check_loss_contract(
            lambda x: functional_call(self.model, parameters, (x,)),
            self.loss_fn,
            inputs,
            targets,
        )
        f = self._chunk_loss(inputs, targets)
        with torch.no_grad():
            first, second = f(self._theta0), f(self._theta0)
        if not bool(torch.isfinite(first).all()):
            raise MatrankValueError(
                message(
                    "loss_fn",
                    "finite at the model's parameters",
                    f"{float(first)} on the first chunk of data",
                )
            )
        if not torch.equal(first, second):
            raise MatrankValueError(
                message(
                    "loss_fn",
                    "deterministic at fixed parameters (no dropout, noise or sampling "
                    "inside the model or the loss)",
                    f"{float(first):.17g} then {float(second):.17g}",
                )
            )

    def __repr__(self) -> str:
        return (
            f"TorchLoss({type(self.model).__name__}, n={self.dim}, "
            f"samples={self._n_samples}, dtype={self.dtype}, device={self.device})"
        )


@as_oracle.register
def _(obj: TorchLoss) -> TorchLoss:
    return obj
