"""Adapters that turn matrices, operators and models into matrank oracles.

Importing this package registers the explicit-matrix adapters with
:func:`matrank.as_oracle`; importing :mod:`matrank` does so too.
"""

from . import curvature, dense, function, linear_net, pytorch
from .curvature import TorchFisher, TorchGGN
from .dense import DenseOracle, LinearOperatorOracle, SparseOracle
from .function import LossFunction
from .linear_net import LinearNetHessian
from .pytorch import TorchLoss, adam_preconditioner

__all__ = [
    "DenseOracle",
    "LinearNetHessian",
    "LinearOperatorOracle",
    "LossFunction",
    "SparseOracle",
    "TorchFisher",
    "TorchGGN",
    "TorchLoss",
    "adam_preconditioner",
    "curvature",
    "dense",
    "function",
    "linear_net",
    "pytorch",
]
