"""Adapters that turn matrices, operators and models into matrank oracles.

Importing this package registers the explicit-matrix adapters with
:func:`matrank.as_oracle`; importing :mod:`matrank` does so too.
"""

from . import dense
from .dense import DenseOracle, LinearOperatorOracle, SparseOracle

__all__ = ["DenseOracle", "LinearOperatorOracle", "SparseOracle", "dense"]
