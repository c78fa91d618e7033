"""The estimators: frozen dataclasses of hyperparameters with one verb, ``estimate``."""

from .exact import ExactRank
from .lanczos import LanczosRank
from .langevin import LangevinRank
from .polynomial import PolynomialRank

__all__ = ["ExactRank", "LanczosRank", "LangevinRank", "PolynomialRank"]
