"""The Gauss–Newton and empirical-Fisher curvatures of a PyTorch model's loss, as oracles.

Both are ``Σ_i J_iᵀ W_i J_i``: ``J_i`` the Jacobian of sample ``i``'s outputs with respect
to the selected parameters, ``W_i`` a positive semi-definite block in the outputs.

- The generalised Gauss–Newton matrix ``G = Σ_chunks (m_c/N)·J_cᵀ Λ_c J_c``, ``Λ_c`` the
  Hessian of the chunk's (mean) loss with respect to its outputs: the Hessian with the
  term that carries the model's own curvature left out, PSD wherever the loss is convex
  in the outputs (squared error, cross-entropy), at a minimum or not.
- The empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ``, ``g_i`` the gradient of sample
  ``i``'s loss: ``W_i = q_i q_iᵀ/N`` with ``q_i`` that loss's gradient in the outputs.
  Its scale is the mean loss's, so its eigenvalues compare with the Hessian's.

Products go through the outputs (``jvp``, the block, ``vjp``), never a per-sample
gradient. The rank goes through the dual: with ``W_i = L_iᵀL_i`` the curvature is ``BᵀB``
with rows ``L_i J_i``, and ``BBᵀ`` is at most (samples × outputs) square -- see
:func:`matrank.dual_form`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.func import functional_call, grad, jvp, vjp

from matrank import _clock
from matrank._dual import DualForm, DualFormError, DualGram, dual_form
from matrank._oracle import Capability
from matrank._validation import MatrankValueError, check_int, message

from ._data import batch_len
from ._dual_rows import Factors, gram_in_panels, sample_rows
from .pytorch import TorchLoss

__all__ = ["TorchFisher", "TorchGGN"]


class _OutputCurvature(TorchLoss):
    """``Σ_i J_iᵀ W_i J_i`` through the outputs; subclasses give ``W``."""

    kind = ""
    mode = ""

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        *,
        gradient_tol: float | None = None,
        dual_memory: int = 2**30,
        **options: Any,
    ) -> None:
        check_int("dual_memory", dual_memory, low=1)
        if options.get("distributed"):
            raise MatrankValueError(
                message(
                    "distributed",
                    f"False for {type(self).__name__} (its products and dual rows are "
                    "per process; TorchLoss is the data-parallel oracle)",
                    "True",
                )
            )
        self.dual_memory = dual_memory
        # no cache of the gradient's graph: the products never use it
        super().__init__(
            model, loss_fn, data, cache_hvp=False, gradient_tol=gradient_tol, **options
        )
        self.hvp_mode = self.mode
        self._check()

    def _check(self) -> None:
        """What the curvature needs of ``loss_fn`` beyond :class:`TorchLoss`'s checks."""

    @property
    def capabilities(self) -> Capability:
        return Capability.HVP

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """The curvature times a block ``(n, b) -> (n, b)`` at ``θ0``."""
        total = torch.zeros_like(V)
        for inputs, targets in self.chunks():
            column = self._chunk_product(inputs, targets)
            if V.shape[1] == 1:
                total[:, 0] += column(V[:, 0])
            else:
                total += self.map_rows(column, V.T).T
        return total

    # ------------------------------------------------------------------ pieces
    def _outputs(self, inputs: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def outputs(theta: torch.Tensor) -> torch.Tensor:
            parameters = self.parameters_at(theta)
            return functional_call(self.model, parameters, (inputs,))

        return outputs

    def _output_loss(self, targets: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda output: self.loss_fn(output, targets)

    def _chunk_product(
        self, inputs: Any, targets: Any
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ Σ_{i in chunk} J_iᵀ W_i J_i v`` (pullbacks built once)."""
        outputs = self._outputs(inputs)
        output, pull_outputs = vjp(outputs, self._theta0)
        block = self._output_block(output, targets, batch_len((inputs, targets)))

        def column(v: torch.Tensor) -> torch.Tensor:
            along = jvp(outputs, (self._theta0,), (v,))[1]
            (pulled,) = pull_outputs(block(along))
            return pulled

        return column

    def _output_block(
        self, output: torch.Tensor, targets: Any, size: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def _factors(self, output: torch.Tensor, targets: Any, size: int) -> Factors:
        raise NotImplementedError

    # ------------------------------------------------------------------ the dual
    def dual(self) -> DualForm:
        """``BBᵀ`` of the curvature ``BᵀB`` (see :func:`matrank.dual_form`).

        Its size is the number of rows kept: each sample's ``Λ_i`` is factored here (a
        forward pass and ``C`` products in the outputs, no parameter-space work), and
        its null directions (cross-entropy's softmax direction, and eigenvalues at
        rounding level of its largest) carry no row. Only the counts and the first
        chunk (for the rows' timing) are held, not the data.
        """
        chunks = self._chunk_factors()
        first = next(chunks)
        kept = first[1].rows + sum(f.rows for _, f in chunks)
        stated = self._n_samples * first[1].factor.shape[1]  # rows a sample
        return DualForm(
            size=kept,
            what=f"{self.kind}: rows L_i J_i, {kept} kept of {stated}",
            precision=self.dtype,
            compute=self._dual_gram,
            time_rows=functools.partial(self._time_rows, first, kept),
        )

    def _time_rows(
        self, first: tuple[torch.Tensor, Factors], size: int
    ) -> tuple[float, float]:
        """Predicted seconds of the dual's ``size`` kept rows, and the gradients spent:
        the first block of rows (``sample_rows``' memory-sized ``vmap``) of at most an
        eighth of the samples, computed twice, the second timed. A block smaller than
        the Gram pass's overstates the seconds a row, on the side of the primal."""
        inputs, factors = first
        # at most an eighth of the samples, so that timing adds at most a quarter
        k = max(1, min(len(factors.factor), self._n_samples // 8))
        inputs, factors = inputs[:k], Factors(factors.factor[:k], factors.keep[:k])
        spent, seconds, rows = 0, 0.0, 0
        for _ in range(2):
            start = _clock.now()
            block, work, _ = next(sample_rows(self, inputs, factors), (None, 0, 0.0))
            seconds = _clock.now() - start
            spent += work
            rows = 0 if block is None else block.shape[0]
        return seconds * size / max(1, rows), spent / self._n_samples

    def _chunk_factors(self) -> Iterator[tuple[torch.Tensor, Factors]]:
        for inputs, targets in self.chunks():
            if not isinstance(inputs, torch.Tensor):
                raise MatrankValueError(
                    message(
                        "data",
                        "tensor inputs for the dual route (a sample is a slice of them)",
                        type(inputs).__name__,
                    )
                )
            with torch.no_grad():
                output = self._outputs(inputs)(self._theta0)
            yield inputs, self._factors(output, targets, batch_len((inputs, targets)))

    def _dual_gram(self) -> DualGram:
        start = time.perf_counter()
        factors = list(self._chunk_factors())
        total = sum(f.rows for _, f in factors)
        gram, computed, passes, product_seconds, left_out = gram_in_panels(
            lambda: iter(factors),
            lambda inputs, f: sample_rows(self, inputs, f),
            total,
            self.dim,
            self._theta0.element_size(),
            self.dual_memory,
        )
        seconds = time.perf_counter() - start
        return DualGram(
            gram=gram,
            rows_computed=computed,
            gradient_equivalents=computed / self._n_samples,
            seconds=seconds,
            left_out=left_out,
            details={
                "rows": total,
                "passes": passes,
                "gram_seconds": product_seconds,
                "rows_seconds": seconds - product_seconds,
            },
        )


def _is_small(residual: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> bool:
    eps = torch.finfo(dtype).eps
    return bool(residual <= 1e3 * eps * scale + torch.finfo(dtype).tiny)


def _rounding(
    pull: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    probe: torch.Tensor,
    direct: torch.Tensor,
    generator: torch.Generator,
    shape: torch.Size,
) -> torch.Tensor:
    """How far ``Λ``'s product fails to be linear at ``probe`` (``direct``, its image;
    ``pull``: the product, on tensors of the outputs' ``shape``): a pure rounding
    measure of the same pullback. Rounding in ``Λ``'s products is relative to the
    terms they are built from, which can exceed ``Λ`` by orders (cross-entropy at near
    one-hot outputs: terms O(1), ``Λ`` O(1 − p)), where ``‖Λ‖`` alone would refuse a
    mean loss as coupled."""
    other = torch.randn(probe.shape, generator=generator, device=probe.device)
    other = other.to(probe.dtype)
    failure = (
        pull((probe + other).reshape(shape))[0] - pull(other.reshape(shape))[0]
    ).reshape(probe.shape) - direct
    return torch.linalg.vector_norm(failure)


class TorchGGN(_OutputCurvature):
    """The generalised Gauss–Newton matrix ``JᵀΛJ`` of a model's loss at its weights.

    Takes the arguments of :class:`TorchLoss` but ``cache_hvp`` (the same data handling,
    chunking, eval-mode and determinism checks); ``gradient_tol`` defaults to ``None``
    because the GGN is asked for at any point. Its products are ``G·V``, one column at a time in
    ``vmap``: ``J v`` by forward mode (``jvp`` of the outputs), ``Λ (J v)`` by a
    pullback through the gradient of the loss in the outputs (exact for any loss,
    squared error and cross-entropy included), and ``Jᵀ`` by the outputs' pullback.

    ``dual_memory`` (bytes, default 1 GiB) bounds the rows of ``B = Λ^{1/2}J`` held at
    once by the dual route (:func:`matrank.dual_form`): ``method="exact"`` and ``"auto"``
    count the rank on the (samples × outputs) square ``Λ^{1/2}JJᵀΛ^{1/2}`` when it is
    smaller than ``n``. The dual needs a loss that is a mean of per-sample terms (its
    ``Λ`` block-diagonal by sample, checked on a random probe) and convex in the
    outputs at ``θ0`` (``Λ ⪰ 0``, checked); it leaves out each sample's null
    directions of ``Λ`` (cross-entropy's: ``K − 1`` rows per sample).

    The oracle offers products only (``Capability.HVP``): no loss has ``G`` for its
    Hessian, so the gradient-only and loss-only methods (Langevin, evolution) refuse it.

    Examples
    --------
    >>> import torch, matrank
    >>> from matrank.adapters import TorchGGN
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 1, bias=False).double()
    >>> X, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    >>> G = TorchGGN(model, torch.nn.functional.mse_loss, (X, y))
    >>> torch.allclose(G.hvp(torch.eye(4, dtype=torch.float64)), 2 * X.T @ X / 3)
    True
    >>> result = matrank.estimate_rank(G, method="exact")   # three samples: a 3 × 3 dual
    >>> int(result.rank), result.diagnostics["dual"]["rows"]
    (3, 3)
    """

    kind = "generalised Gauss-Newton"
    mode = "generalised Gauss-Newton (jvp, output Hessian, vjp)"

    def _output_block(
        self, output: torch.Tensor, targets: Any, size: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        # Λ is symmetric: its product is the pullback of the gradient in the outputs
        pull_gradient = vjp(grad(self._output_loss(targets)), output)[1]
        weight = size / self._n_samples
        return lambda along: weight * pull_gradient(along)[0]

    def _factors(self, output: torch.Tensor, targets: Any, size: int) -> Factors:
        """``L_i`` with ``L_iᵀL_i = (m_c/N)·Λ_i`` from ``Λ``'s products with "combs"
        (``e_j`` in every sample's outputs at once), valid when ``Λ`` is block-diagonal
        by sample, which a random probe checks."""
        m, outputs = output.shape[0], output[0].numel()
        pull_gradient = vjp(grad(self._output_loss(targets)), output)[1]
        combs = torch.zeros(outputs, m, outputs, dtype=output.dtype, device=output.device)
        combs[torch.arange(outputs), :, torch.arange(outputs)] = 1
        columns = torch.stack(
            [pull_gradient(c.reshape(output.shape))[0].reshape(m, outputs) for c in combs]
        )
        blocks = columns.permute(1, 2, 0)  # blocks[i, a, j] = Λ_i[a, j]
        generator = torch.Generator(device=output.device).manual_seed(0)
        probe = torch.randn(m, outputs, generator=generator, device=output.device).to(
            output.dtype
        )
        direct = pull_gradient(probe.reshape(output.shape))[0].reshape(m, outputs)
        through = torch.einsum("iaj,ij->ia", blocks, probe)
        scale = torch.linalg.matrix_norm(blocks.reshape(m * outputs, outputs)) * (
            torch.linalg.vector_norm(probe)
        )
        residual = torch.linalg.vector_norm(direct - through)
        if not _is_small(residual, scale, output.dtype) and residual > 100 * _rounding(
            pull_gradient, probe, direct, generator, output.shape
        ):
            raise DualFormError(
                message(
                    "loss_fn",
                    "a mean of per-sample losses for the dual route (its Hessian in the "
                    "outputs block-diagonal by sample); use method='lanczos' or "
                    "ExactRank(dual=False)",
                    "a loss whose Hessian couples the samples of a chunk (or products "
                    "of Λ lost in their own rounding: outputs saturated beyond float "
                    "precision, where ExactRank(dual=None) counts from n products)",
                )
            )
        weighted = (size / self._n_samples) * 0.5 * (blocks + blocks.transpose(1, 2))
        values, vectors = torch.linalg.eigh(weighted)
        top = values.abs().amax(dim=1, keepdim=True)
        # Rounding in Λ is relative to the terms it is built from, not to its largest
        # eigenvalue (cross-entropy near a one-hot output: −0.04 of it measured), so
        # negative eigenvalues are clamped; their rows are left out of B and their
        # weight bounds the change (``left_out``), which the count's floor takes in.
        keep = values > 64 * outputs * torch.finfo(output.dtype).eps * top
        factor = values.abs().sqrt()[:, :, None] * vectors.transpose(1, 2)
        return Factors(factor, keep)

    def __repr__(self) -> str:
        return "TorchGGN" + TorchLoss.__repr__(self)[len("TorchLoss") :]


class TorchFisher(_OutputCurvature):
    """The empirical Fisher ``F = (1/N) Σ_i g_i g_iᵀ`` of a model's loss at its weights.

    ``g_i`` is the gradient of sample ``i``'s loss, ``loss_fn`` applied to that sample
    alone: ``loss_fn`` must be the mean of per-sample losses (torch's losses with
    ``reduction="mean"``; checked on the first samples at construction). The scale
    ``1/N`` is the mean loss's, so ``F``'s eigenvalues compare with the Hessian's and the
    GGN's. Takes the arguments of :class:`TorchGGN`; ``F`` is PSD at any point, of rank at
    most ``N``, and its dual (:func:`matrank.dual_form`) is the ``N × N`` Gram matrix of
    the per-sample gradients.

    Products are ``F·V`` without any per-sample gradient: ``J v`` by ``jvp``, each
    sample's ``q_iᵀ(J v)_i`` with ``q_i`` its loss's gradient in the outputs, and the
    outputs' pullback of ``q_i·q_iᵀ(J v)_i / N``.

    Examples
    --------
    >>> import torch, matrank
    >>> from matrank.adapters import TorchFisher
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(6, 1, bias=False).double()
    >>> X, y = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    >>> F = TorchFisher(model, torch.nn.functional.mse_loss, (X, y))
    >>> int(matrank.estimate_rank(F, method="exact").rank)   # four per-sample gradients
    4
    """

    kind = "empirical Fisher"
    mode = "empirical Fisher (jvp, per-sample output gradients, vjp)"

    def _output_gradients(
        self, output: torch.Tensor, targets: Any, size: int
    ) -> torch.Tensor:
        """``q_i``, each sample's loss gradient in its outputs, ``(m, C)``: ``m_c`` times
        the chunk mean's gradient."""
        q = grad(self._output_loss(targets))(output.detach())
        return (size * q).reshape(output.shape[0], -1)

    def _check(self) -> None:
        """``loss_fn`` is a mean of per-sample losses: each sample's gradient in the
        outputs is its own loss's, on the first samples."""
        inputs, targets = next(iter(self.chunks()))
        with torch.no_grad():
            output = self._outputs(inputs)(self._theta0)
        size = batch_len((inputs, targets))
        q = self._output_gradients(output, targets, size)
        for i in range(min(4, size)):
            alone = grad(self._output_loss(targets[i : i + 1]))(output[i : i + 1].detach())
            alone = alone.reshape(-1)
            scale = torch.linalg.vector_norm(alone) + torch.linalg.vector_norm(q[i])
            if not _is_small(torch.linalg.vector_norm(q[i] - alone), scale, self.dtype):
                raise MatrankValueError(
                    message(
                        "loss_fn",
                        "the mean of per-sample losses (reduction='mean'): the empirical "
                        "Fisher is built from each sample's own gradient",
                        f"a loss whose gradient for sample {i} differs from the gradient "
                        "of that sample's loss alone",
                    )
                )

    def _output_block(
        self, output: torch.Tensor, targets: Any, size: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        q = self._output_gradients(output, targets, size)
        n = self._n_samples

        def block(along: torch.Tensor) -> torch.Tensor:
            inner = (q * along.reshape(q.shape)).sum(dim=1, keepdim=True)
            return (q * inner / n).reshape(along.shape)

        return block

    def _factors(self, output: torch.Tensor, targets: Any, size: int) -> Factors:
        q = self._output_gradients(output, targets, size)
        factor = (q / self._n_samples**0.5)[:, None, :]
        return Factors(factor, (q != 0).any(dim=1, keepdim=True))

    def __repr__(self) -> str:
        return "TorchFisher" + TorchLoss.__repr__(self)[len("TorchLoss") :]


@dual_form.register
def _(oracle: _OutputCurvature) -> DualForm:
    return oracle.dual()
