"""Hypothesis strategies for small symmetric PSD matrices of known rank.

Hypothesis draws sizes, ranks, condition numbers and an integer seed; numpy builds the
matrix (raw float arrays drawn by hypothesis would have meaningless conditioning).
Requires the ``test`` extra (hypothesis).
"""

from __future__ import annotations

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

    With ``noise_band=True`` the null eigenvalues are replaced by a band at least
    ``1e3`` below the smallest signal eigenvalue.
    """
    n = draw(st.integers(1, max_n), label="n")
    rank = draw(st.integers(0, n), label="rank")
    cond = draw(st.floats(1.0, max_cond), label="cond")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    noise_gap = draw(st.floats(1e3, 1e8), label="noise_gap") if noise_band else None
    return rotated_spectrum(n, rank, cond=cond, noise_gap=noise_gap, seed=seed), rank
