"""The Lanczos count's plan: its options resolved against the operator, once."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..._oracle import Oracle, input_eps

if TYPE_CHECKING:
    from . import LanczosRank

__all__ = ["LanczosPlan"]

# Memory for the Krylov basis and the SLQ bases, in bytes: the basis is n × k, so this
# caps k at 2 GB / (8n) in float64 (k = 1250 at n = 200,000).
BASIS_BYTES = 2 * 1024**3


@dataclasses.dataclass(frozen=True)
class LanczosPlan:
    """What one Lanczos count runs with (the defaults of :class:`LanczosRank` resolved)."""

    n: int
    threshold: float | str | None
    block: int  #: the base block: ``block_size`` at most ``n`` and ``max_basis``
    block_size: int  #: as given (the resolution's verification width)
    max_basis: int
    max_matvecs: int
    eps: float  #: the rounding unit of the operator's input
    verify_steps: int | None
    dense_max: int
    pilot_from: int
    n_probes: int | None
    slq_steps: int
    probes: str

    @classmethod
    def of(cls, options: LanczosRank, oracle: Oracle) -> LanczosPlan:
        """Resolve a :class:`LanczosRank`'s options for ``oracle``."""
        n = oracle.dim
        max_basis = options.max_basis or min(n, 8192, max(64, BASIS_BYTES // (8 * n)))
        if options.max_basis is None and options.max_matvecs is not None:
            # leave SLQ at least half of a budget the user fixed
            max_basis = min(max_basis, max(options.block_size, options.max_matvecs // 2))
        max_basis = min(max_basis, n)
        block = min(options.block_size, n, max_basis)
        # 4n + 8 blocks: enough for the symmetry probe and for any n that the basis can
        # span completely, where the count is exact by construction.
        # Where the dense path is possible, room for it after a full basis (k products
        # kept, n − k more; or n from the identity): the exact count is then always in
        # reach of the default budget, never an SLQ estimate in its place.
        dense = 2 * n + 8 * block if 0 < n <= options.dense_max else 0
        max_matvecs = options.max_matvecs or min(
            max(4096, 2 * max_basis + 512, dense), 4 * n + 8 * block
        )
        return cls(
            n=n,
            threshold=options.threshold,
            block=block,
            block_size=options.block_size,
            max_basis=max_basis,
            max_matvecs=max_matvecs,
            eps=input_eps(oracle),
            verify_steps=options.verify_steps,
            dense_max=options.dense_max,
            pilot_from=options.pilot_from,
            n_probes=options.n_probes,
            slq_steps=options.slq_steps,
            probes=options.probes,
        )
