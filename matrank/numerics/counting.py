"""The stopping rule of the Lanczos count: when Ritz values make a count certain, and
how many verification steps a fresh random block must survive."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch

from .krylov import BlockKrylov
from .threshold import ThresholdChoice, noise_floor, resolve_threshold

__all__ = [
    "Assessment",
    "CountingState",
    "assess_basis",
    "certified_count",
    "resolution",
    "verification_steps",
]


def resolution(krylov: BlockKrylov, block: int) -> float:
    """The smallest ``|λ|`` a fresh random block of ``block`` columns is sure to reveal.

    An eigenvector ``v`` outside the basis holds a share ``‖vᵀR‖ ≈ sqrt(block/(n − k))``
    of a random orthonormal block ``R`` orthogonal to the ``k``-column basis, so ``AR``
    carries ``|λ|`` times that along ``v``; below the deflation tolerance the whole image
    is dropped as rounding and the Krylov sequence never amplifies it. Three times the
    level at which it is dropped (a ``χ²`` with ``block`` degrees of freedom under a
    ninth of its mean: 1e-10 at 32 columns) is what verification can vouch for; a count
    at a lower ``τ`` could miss eigenvalues in between (an operator of ``n = 112,810``:
    21 of them at ``τ = 3e-11·λmax``).

    A basis of all ``n`` dimensions leaves no eigenvector outside and nothing to
    reveal: 0, and the noise floor alone bounds the count (as for the dense count).
    """
    if krylov.size >= krylov.n:
        return 0.0
    remaining = max(krylov.n - krylov.size, block)
    return 3.0 * krylov.deflation_tol * math.sqrt(remaining / block)


def verification_steps(values, threshold: float, floor: float, n: int, block: int) -> int:
    """Steps a fresh random block must leave a certain count unchanged: the fewest ``s``
    with ``g^s ≥ 10·sqrt(n/block)``, ``g = threshold / (largest uncounted |θ|)``, 1 to 5."""
    magnitudes = values.abs()
    below = magnitudes[magnitudes <= threshold]
    largest_below = max(float(below.max()) if below.numel() else 0.0, floor)
    if threshold <= 0 or largest_below <= 0:
        return 1
    gain = threshold / largest_below
    if gain <= 1.0:
        return 5
    target = math.log(10 * math.sqrt(max(n / block, 1.0)))
    return int(min(5, max(1, math.ceil(target / math.log(gain)))))


def certified_count(
    krylov: BlockKrylov, values, vectors, threshold: float
) -> tuple[int, bool]:
    """The count at ``threshold`` and whether the residual bounds make it certain.

    ``vectors=None`` is allowed at a breakdown, where every residual bound is the
    deflated remainder ``krylov.dropped`` whatever the Ritz vector.
    """
    magnitudes = values.abs()
    above = magnitudes > threshold
    count = int(above.sum())
    if count:
        block = (
            krylov.dropped
            if vectors is None
            else krylov.block_residual_norm(vectors[:, above])
        )
        if float(magnitudes[above].min()) - block <= threshold:
            return count, False
    below = ~above
    if below.any():
        residuals = (
            krylov.dropped if vectors is None else krylov.residual_norms(vectors[:, below])
        )
        if bool((magnitudes[below] + residuals > threshold).any()):
            return count, False
    return count, True


@dataclasses.dataclass
class CountingState:
    """Bookkeeping of the stopping rule: certain, then stable after a random block."""

    steps: int = 0
    assessed_size: int = 0
    last_count: int = 0
    inject: bool = False
    verifying: bool = False
    verified_count: int = -1
    steps_since: int = 0

    def begin_verification(self) -> None:
        self.inject = False
        self.verifying = True
        self.steps_since = 0

    def update(self, count: int, certain: bool, verify_steps: int) -> bool:
        """Record one assessed block step; True when the count is exact."""
        self.last_count = count
        if not certain:
            self.verifying, self.inject = False, False
            return False
        if self.verifying and count == self.verified_count:
            self.steps_since += 1
            return self.steps_since >= verify_steps
        # newly certain, or the count moved during verification: start (again)
        self.verified_count = count
        self.inject = True
        self.verifying = False
        return False


class Assessment(NamedTuple):
    """One look at a basis: its Ritz pairs, τ and the count there."""

    size: int
    values: torch.Tensor
    vectors: torch.Tensor | None  # None: values only (the count was still moving)
    largest: float
    floor: float
    threshold: float
    choice: ThresholdChoice | None
    counted: int
    certain: bool


def assess_basis(
    krylov: BlockKrylov,
    n: int,
    eps: float,
    block_size: int,
    option: float | str | None,
    *,
    unless_count_differs_from: int | None = None,
) -> Assessment:
    """Ritz pairs of the current basis, τ above its noise floor, and the count at τ.

    With ``unless_count_differs_from``, the Ritz values are computed first and, if
    the count at τ differs from that number, returned without vectors as uncertain.
    """
    # At a breakdown every Ritz residual is the deflated remainder: no vectors needed.
    breakdown = krylov.B.numel() == 0
    values, vectors = None, None
    if breakdown or unless_count_differs_from is not None:
        values = krylov.ritz_values()
    while True:
        if values is None:
            values, vectors = krylov.ritz()
        largest = float(values.abs().max()) if values.numel() else 0.0
        floor = max(
            noise_floor(largest, n, eps, krylov.symmetry_defect),
            resolution(krylov, block_size),
        )
        threshold, choice = resolve_threshold(values.abs().numpy(), floor, option)
        if vectors is not None or breakdown:
            count, certain = certified_count(krylov, values, vectors, threshold)
            break
        count = int((values.abs() > threshold).sum())
        if count != unless_count_differs_from:
            certain = False
            break
        values = None
    return Assessment(
        krylov.size, values, vectors, largest, floor, threshold, choice, count, certain
    )
