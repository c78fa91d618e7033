"""The stopping rule of the Lanczos count: when Ritz values make a count certain, and
how many verification steps a fresh random block must survive."""

from __future__ import annotations

import dataclasses
import math

from .krylov import BlockKrylov

__all__ = ["CountingState", "certified_count", "verification_steps"]


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
