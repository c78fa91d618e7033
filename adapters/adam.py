"""Adam's diagonal preconditioner, read from an optimizer, for Langevin's ``G``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from matrank._validation import MatrankValueError, message

if TYPE_CHECKING:
    from .pytorch import TorchLoss

__all__ = ["adam_preconditioner"]


def adam_preconditioner(
    optimizer: torch.optim.Optimizer, oracle: TorchLoss
) -> torch.Tensor:
    """Adam's diagonal preconditioner ``G = 1/(sqrt(v̂) + ε)`` in ``oracle``'s θ order.

    ``v̂`` is the bias-corrected second-moment estimate (``exp_avg_sq / (1 − β₂^step)``)
    of each selected parameter, read from ``optimizer.state``; ``ε`` and ``β₂`` from the
    parameter's group. Adam's update is then ``θ ← θ − lr·G·m̂``, so ``G`` is what the
    Langevin paper freezes at the minimum for its DnCNN experiment; pass it as
    ``LangevinRank(preconditioner=...)``.

    Raises
    ------
    MatrankValueError
        When a selected parameter has no Adam state (not in the optimizer, or never
        stepped), or the optimizer keeps no ``exp_avg_sq``.
    """
    named = dict(oracle.model.named_parameters())
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    pieces = []
    for name in oracle.names:
        parameter = named[name]
        state = optimizer.state.get(parameter, {})
        if id(parameter) not in groups or "exp_avg_sq" not in state:
            raise MatrankValueError(
                message(
                    "optimizer",
                    "Adam state (exp_avg_sq after at least one step) for every selected "
                    "parameter",
                    f"none for {name!r}",
                )
            )
        group = groups[id(parameter)]
        step = float(state["step"])
        beta2 = group["betas"][1]
        second = state["exp_avg_sq"].detach().to(torch.float64) / (1 - beta2**step)
        pieces.append((1.0 / (second.sqrt() + group["eps"])).reshape(-1))
    return torch.cat(pieces).to(dtype=oracle.dtype, device=oracle.device)
