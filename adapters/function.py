"""A black-box loss as an oracle: a Python callable and the point it is minimised at.

The evolution-strategies route needs nothing but loss values, so a plain function is
enough: ``LossFunction(f, theta0)`` wraps ``f`` -- batched over rows, or called row by
row -- into an oracle with the ``loss`` capability only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from matrank._oracle import Capability
from matrank._validation import MatrankTypeError, MatrankValueError, message

__all__ = ["LossFunction"]


class LossFunction:
    """The oracle of a black-box loss ``f`` near its minimum ``theta0``: values only.

    Parameters
    ----------
    fn : callable
        ``f(theta) -> losses``. With ``batched=True`` (default) it takes a ``(b, n)``
        array and returns ``b`` losses; else it takes one ``(n,)`` point and returns a
        number. It receives what it was given: numpy arrays when ``theta0`` is a numpy
        array (or a list), torch tensors when it is a tensor.
    theta0 : array_like or torch.Tensor
        The minimum, shape ``(n,)``.
    batched : bool, default=True
        Whether ``fn`` evaluates a batch of rows in one call.
    dtype : torch.dtype or None
        Computation dtype; ``None`` keeps ``theta0``'s floating dtype (float64 for
        integers and lists).

    Examples
    --------
    >>> import numpy as np
    >>> f = lambda X: (X[:, :2] ** 2).sum(axis=1)  # curved in 2 of 5 directions
    >>> oracle = LossFunction(f, np.zeros(5))
    >>> oracle.dim, oracle.capabilities
    (5, <Capability.LOSS: 1>)
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        theta0: Any,
        *,
        batched: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not callable(fn):
            raise MatrankTypeError(message("fn", "a callable", type(fn).__name__))
        self._numpy = not isinstance(theta0, torch.Tensor)
        point = torch.as_tensor(np.asarray(theta0) if self._numpy else theta0)
        if point.ndim != 1 or point.numel() == 0:
            raise MatrankValueError(
                message("theta0", "a non-empty 1-D point", f"shape {tuple(point.shape)}")
            )
        if dtype is None:
            dtype = point.dtype if point.dtype in (torch.float32, torch.float64) else None
        self._dtype = dtype or torch.float64
        self._theta0 = point.to(self._dtype)
        if not bool(torch.isfinite(self._theta0).all()):
            raise MatrankValueError(message("theta0", "finite", "non-finite entries"))
        self._fn, self._batched = fn, batched

    dim = property(lambda self: int(self._theta0.numel()))
    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._theta0.device)
    theta0 = property(lambda self: self._theta0)
    capabilities = property(lambda self: Capability.LOSS)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """``f`` at every row of ``theta`` ``(b, n)``, as a ``(b,)`` tensor."""
        given = theta.cpu().numpy() if self._numpy else theta
        if self._batched:
            values = self._fn(given)
        else:
            values = [self._fn(row) for row in given]
        if isinstance(values, torch.Tensor):
            out = values.detach().to(dtype=self._dtype, device=theta.device)
        else:
            out = torch.as_tensor(
                np.asarray(values, dtype=np.float64), device=theta.device
            ).to(self._dtype)
        out = out.reshape(-1)
        if out.numel() != theta.shape[0]:
            raise MatrankValueError(
                message(
                    "fn",
                    f"one loss per row ({theta.shape[0]} rows)",
                    f"{out.numel()} values",
                )
            )
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise MatrankValueError(
                message(
                    "fn",
                    "finite at the points sampled (a loss that is NaN or infinite "
                    "there has no Hessian to count; pass a smaller `scale`)",
                    f"{bad} of {out.numel()} values not finite",
                )
            )
        return out

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a black-box loss has loss values only")

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a black-box loss has loss values only")

    def __repr__(self) -> str:
        return f"LossFunction(n={self.dim}, batched={self._batched})"
