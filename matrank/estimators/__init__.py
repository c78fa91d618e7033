"""The estimators: frozen dataclasses of hyperparameters with one verb, ``estimate``."""

from .evolution import EvolutionRank
from .exact import ExactRank
from .lanczos import LanczosRank
from .langevin import LangevinRank
from .polynomial import PolynomialRank

__all__ = ["EvolutionRank", "ExactRank", "LanczosRank", "LangevinRank", "PolynomialRank"]
