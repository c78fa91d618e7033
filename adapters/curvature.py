"""The generalised Gauss–Newton matrix of a PyTorch model's loss, as an oracle.

``G = Σ_chunks (m_c/N)·J_cᵀ Λ_c J_c``: ``J_c`` the Jacobian of the model's outputs on
chunk ``c`` with respect to the selected parameters, ``Λ_c`` the Hessian of the chunk's
(mean) loss with respect to those outputs. ``G`` is the Hessian with the term that
carries the model's own curvature left out; it is positive semi-definite wherever the
loss is convex in the outputs (squared error, cross-entropy), at a minimum or not,
which is where a rank of the curvature is asked away from a minimum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, grad, jvp, vjp

from matrank._oracle import Capability

from ._data import batch_len
from .pytorch import TorchLoss

__all__ = ["TorchGGN"]


class TorchGGN(TorchLoss):
    """The generalised Gauss–Newton matrix ``JᵀΛJ`` of a model's loss at its weights.

    Takes the arguments of :class:`TorchLoss` but ``cache_hvp`` (the same data handling,
    chunking, eval-mode and determinism checks); ``gradient_tol`` defaults to ``None``
    because the GGN is asked for at any point. Its products are ``G·V``, one column at a time in
    ``vmap``: ``J v`` by forward mode (``jvp`` of the outputs), ``Λ (J v)`` by a
    pullback through the gradient of the loss in the outputs (exact for any loss,
    squared error and cross-entropy included), and ``Jᵀ`` by the outputs' pullback.

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
    >>> int(matrank.estimate_rank(G, method="exact").rank)   # three samples
    3
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        data: Any,
        *,
        gradient_tol: float | None = None,
        **options: Any,
    ) -> None:
        # no cache of the gradient's graph: the products never use it
        super().__init__(
            model, loss_fn, data, cache_hvp=False, gradient_tol=gradient_tol, **options
        )
        self.hvp_mode = "generalised Gauss-Newton (jvp, output Hessian, vjp)"

    @property
    def capabilities(self) -> Capability:
        return Capability.HVP

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """``G V`` at ``θ0`` for a block ``(n, b) -> (n, b)``."""
        total = torch.zeros_like(V)
        for inputs, targets in self._chunks():
            weight = batch_len((inputs, targets)) / self._n_samples
            column = self._chunk_product(inputs, targets)
            if V.shape[1] == 1:
                total[:, 0] += weight * column(V[:, 0])
            else:
                total += weight * self._batched(column, V.T).T
        return total

    def _chunk_product(
        self, inputs: Any, targets: Any
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ J_cᵀ Λ_c J_c v`` on one chunk (its pullbacks built once)."""
        theta0 = self._theta0

        def outputs(theta: torch.Tensor) -> torch.Tensor:
            parameters = {**self._fixed, **self.unflatten(theta)}
            return functional_call(self.model, parameters, (inputs,))

        def output_loss(output: torch.Tensor) -> torch.Tensor:
            return self.loss_fn(output, targets)

        forward = vjp(outputs, theta0)  # (outputs, their pullback)
        output, pull_outputs = forward[0], forward[1]
        # Λ is symmetric: its product is the pullback of the gradient in the outputs
        pull_gradient = vjp(grad(output_loss), output)[1]

        def column(v: torch.Tensor) -> torch.Tensor:
            along = jvp(outputs, (theta0,), (v,))[1]
            (curved,) = pull_gradient(along)
            (pulled,) = pull_outputs(curved)
            return pulled

        return column

    def __repr__(self) -> str:
        return "TorchGGN" + super().__repr__()[len("TorchLoss") :]
