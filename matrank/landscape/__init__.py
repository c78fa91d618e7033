"""How the loss landscape changes as samples are added (Kiselev & Grabovoy, 2024).

:func:`dataset_size_study` measures the loss and Hessian terms of their bound at a
trained point (:mod:`.study`); :mod:`.experiment` is the built-in experiment of
``matrank landscape`` (bias-free ReLU MLPs on the digits), whose command line is
:mod:`.cli`. The Hessian's products, dense forms, extreme eigenvalues, traces and ranks
come from the core: :class:`~matrank.adapters.TorchLoss`, :func:`~matrank.materialize`,
:func:`~matrank.numerics.krylov.spectral_bounds`, :func:`~matrank.numerics.trace.hutchpp`
and :func:`~matrank.estimate_rank`.
"""

from .hessian import DENSE_MAX_DIM
from .study import (
    LandscapeStudy,
    canonical_order,
    dataset_size_study,
    loss_differences,
    per_sample_losses,
    theorem_constant,
)

__all__ = [
    "DENSE_MAX_DIM",
    "LandscapeStudy",
    "canonical_order",
    "dataset_size_study",
    "loss_differences",
    "per_sample_losses",
    "theorem_constant",
]
