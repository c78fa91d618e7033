"""The cost meter every run reads: what an estimator spent, and that each product was
finite."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch

from . import _clock
from ._validation import OperatorContractError, message

__all__ = ["Cost", "CostMeter"]


class Cost(dict):
    """A result's cost: ``matvecs``, ``gradients``, ``evals`` (loss evaluations) and
    ``seconds``, named as the budgets ``max_matvecs``, ``max_gradients`` and
    ``max_evals`` are. The spellings before result schema 2, ``"grads"`` and
    ``"loss_evals"``, still read, with a ``FutureWarning``."""

    RENAMED: ClassVar[dict[str, str]] = {"grads": "gradients", "loss_evals": "evals"}

    def __missing__(self, key: str) -> float:
        if key in self.RENAMED:
            new = self.RENAMED[key]
            warnings.warn(
                f"cost[{key!r}] is now cost[{new!r}] (the name of its budget); the old "
                "key will be removed",
                FutureWarning,
                stacklevel=2,
            )
            return self[new]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self or key in self.RENAMED else default


class CostMeter:
    """Wraps an oracle and counts what an estimator spends.

    Counts are per vector: a block ``hvp`` of ``b`` columns is ``b`` matvecs and a batched
    ``grad`` of ``b`` rows is ``b`` gradients, so costs compare across block sizes.
    """

    def __init__(self, oracle: Any) -> None:
        self.oracle = oracle
        self.matvecs = 0
        # gradients; a dual route adds its per-sample rows as fractions of a gradient
        self.gradients: float = 0
        self.evals = 0
        # seconds in products and the products timed (since this meter was made; a
        # restored count is not timed): what one more product is expected to cost
        self.hvp_seconds = 0.0
        self.timed_matvecs = 0

    inner = property(lambda self: self.oracle)  # what unwrap follows
    dim = property(lambda self: self.oracle.dim)
    dtype = property(lambda self: self.oracle.dtype)
    device = property(lambda self: self.oracle.device)
    theta0 = property(lambda self: self.oracle.theta0)
    capabilities = property(lambda self: self.oracle.capabilities)

    # Counted once the oracle has answered: an interrupted call did not happen.
    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        value = self.oracle.loss(theta)
        self.evals += theta.shape[0]
        return value

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        value = self.oracle.grad(theta)
        self.gradients += theta.shape[0]
        return value

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 0:  # no products: the oracle is not asked (a model's vmap or
            # loop over no columns fails, and nothing would be learned)
            return V.new_zeros(self.oracle.dim, 0, dtype=self.dtype)
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

    def cost(self, seconds: float) -> Cost:
        """The cost dictionary of a :class:`RankResult`."""
        return Cost(
            matvecs=self.matvecs,
            gradients=self.gradients,
            evals=self.evals,
            seconds=seconds,
        )
