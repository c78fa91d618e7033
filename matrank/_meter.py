"""The cost meter every run reads: what an estimator spent, and that each product was
finite."""

from __future__ import annotations

from typing import Any

import torch

from . import _clock
from ._validation import OperatorContractError, message

__all__ = ["CostMeter"]


class CostMeter:
    """Wraps an oracle and counts what an estimator spends.

    Counts are per vector: a block ``hvp`` of ``b`` columns is ``b`` matvecs and a batched
    ``grad`` of ``b`` rows is ``b`` gradients, so costs compare across block sizes.
    """

    def __init__(self, oracle: Any) -> None:
        self.oracle = oracle
        self.matvecs = 0
        # gradients; a dual route adds its per-sample rows as fractions of a gradient
        self.grads: float = 0
        self.loss_evals = 0
        # seconds in products and the products timed (since this meter was made; a
        # restored count is not timed): what one more product is expected to cost
        self.hvp_seconds = 0.0
        self.timed_matvecs = 0

    dim = property(lambda self: self.oracle.dim)
    dtype = property(lambda self: self.oracle.dtype)
    device = property(lambda self: self.oracle.device)
    theta0 = property(lambda self: self.oracle.theta0)
    capabilities = property(lambda self: self.oracle.capabilities)

    # Counted once the oracle has answered: an interrupted call did not happen.
    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        value = self.oracle.loss(theta)
        self.loss_evals += theta.shape[0]
        return value

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        value = self.oracle.grad(theta)
        self.grads += theta.shape[0]
        return value

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        start = _clock.now()
        value = self.oracle.hvp(V)
        self.hvp_seconds += _clock.now() - start
        # the built-in adapters' products too (a user's are checked on the way in): a
        # NaN at θ0 otherwise surfaces as an SVD or eigensolver failure far from here
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise OperatorContractError(
                message(
                    "oracle.hvp",
                    "finite (no NaN or Inf)",
                    f"{bad} non-finite entries in a block of {V.shape[1]} products "
                    f"after {self.matvecs} (a model whose derivatives are not finite "
                    "at theta0?)",
                )
            )
        self.matvecs += V.shape[1]
        self.timed_matvecs += V.shape[1]
        return value

    def cost(self, seconds: float) -> dict[str, float]:
        """The cost dictionary of a :class:`RankResult`."""
        return {
            "matvecs": self.matvecs,
            "grads": self.grads,
            "loss_evals": self.loss_evals,
            "seconds": seconds,
        }
