"""PyTorch losses whose Hessian rank is known in closed form."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

__all__ = ["linear_network_loss"]


def linear_network_loss(
    d_in: int,
    hidden: Sequence[int],
    d_out: int,
    *,
    n_samples: int = 200,
    data_rank: int | None = None,
    seed: int = 0,
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A bias-free deep linear network at a random point, and data for its squared loss.

    Returns ``(model, inputs, targets)`` in float64: ``nn.Linear`` layers without bias
    (widths ``d_in → hidden… → d_out``), weights drawn by torch's default initialization
    from ``seed``, inputs of rank ``data_rank`` (``min(n_samples, d_in)`` when ``None``)
    and Gaussian targets, so the point is generic and not a minimum. With
    ``torch.nn.functional.mse_loss`` the Hessian's rank is
    :func:`matrank.theory.linear_network_ranks` ``(d_in, hidden, d_out,
    data_rank=...).hessian`` (pass ``gradient_tol=None`` to ``TorchLoss``: the gradient
    is not zero there).

    Examples
    --------
    >>> import torch, matrank
    >>> from matrank.adapters import TorchLoss
    >>> from matrank.theory import linear_network_ranks
    >>> model, X, Y = linear_network_loss(6, [3, 4], 5, n_samples=40)
    >>> oracle = TorchLoss(model, torch.nn.functional.mse_loss, (X, Y), gradient_tol=None)
    >>> int(matrank.estimate_rank(oracle, method="exact").rank)
    48
    >>> linear_network_ranks(6, [3, 4], 5).hessian
    48
    """
    generator = torch.Generator().manual_seed(seed)
    widths = [d_in, *hidden, d_out]
    rank = min(n_samples, d_in) if data_rank is None else data_rank
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [
            torch.nn.Linear(a, b, bias=False, dtype=torch.float64)
            for a, b in itertools.pairwise(widths)
        ]
    model = torch.nn.Sequential(*layers)
    factors = torch.randn(n_samples, rank, generator=generator, dtype=torch.float64)
    mixing = torch.randn(rank, d_in, generator=generator, dtype=torch.float64)
    inputs = factors @ mixing / rank**0.5
    targets = torch.randn(n_samples, d_out, generator=generator, dtype=torch.float64)
    return model, inputs, targets
