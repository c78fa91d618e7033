"""Test support shipped with the package: known-rank cases, the oracle contract check,
and a deterministic clock for code whose path a timing chooses.

``matrank.testing.strategies`` (hypothesis strategies) needs the ``test`` extra and is
imported on demand.
"""

from ._cases import (
    Case,
    catalogue,
    direct_sum,
    haar_orthogonal,
    kronecker,
    laplacian,
    mixed_spectrum_operator,
    outer_products,
    projector,
    rotated_spectrum,
    spectrum_levels,
)
from ._clock import stepping_clock
from ._contract import check_oracle
from ._networks import linear_network_loss

__all__ = [
    "Case",
    "catalogue",
    "check_oracle",
    "direct_sum",
    "haar_orthogonal",
    "kronecker",
    "laplacian",
    "linear_network_loss",
    "mixed_spectrum_operator",
    "outer_products",
    "projector",
    "rotated_spectrum",
    "spectrum_levels",
    "stepping_clock",
]
