"""The estimators: frozen dataclasses of hyperparameters with one verb, ``estimate``."""

from .exact import ExactRank

__all__ = ["ExactRank"]
