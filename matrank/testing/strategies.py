"""Hypothesis strategies for small symmetric PSD matrices of known rank.

Hypothesis draws sizes, ranks, condition numbers and an integer seed; numpy builds the
matrix (raw float arrays drawn by hypothesis would have meaningless conditioning).
Requires the ``test`` extra (hypothesis).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ._cases import rotated_spectrum

__all__ = ["low_rank_psd"]


@st.composite
def low_rank_psd(
    draw: Any, *, max_n: int = 64, max_cond: float = 1e4, noise_band: bool = False
) -> tuple[np.ndarray, int]:
    """A pair ``(matrix, rank)``: a rotated PSD spectrum of known rank with a wide gap.

    With ``noise_band=True`` the null eigenvalues are replaced by a dense band at least
    ``1e3`` below the smallest signal eigenvalue, reaching down into the rounding floor.
    Such a band is only noise next to some signal and when it is dense, so then the rank
    is at least 1, the band holds at least 12 eigenvalues (log-spacing under 1.5
    decades) and the gap above the band is at least twice any gap within the signal --
    otherwise the matrix is honestly ambiguous and no rule can be held to one answer.
    """
    n = draw(st.integers(13 if noise_band else 1, max_n), label="n")
    rank = draw(st.integers(1, n - 12) if noise_band else st.integers(0, n), label="rank")
    cond = draw(st.floats(1.0, max_cond), label="cond")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    noise_gap = None
    if noise_band:
        spacing = math.log10(cond) / (rank - 1) if rank > 1 else 0.0
        low = max(3.0, 2.0 * spacing + 0.1)
        noise_gap = 10 ** draw(
            st.floats(low, max(8.0, low + 1.0)), label="noise_gap_decades"
        )
    return rotated_spectrum(n, rank, cond=cond, noise_gap=noise_gap, seed=seed), rank
