"""The Lanczos count's pilot: a few SLQ probes that choose the path before any basis.

Four sphere probes of 16 Lanczos steps each (64 products; a Gauss–Radau rule with a
node at zero, so that exact zeros count as zeros) estimate the count at the threshold
the run will use, to within ``sqrt(2r(1 − r/n)/4)`` plus the quadrature's bias:
eigenvalues near zero (an indefinite Hessian) share the zero node at first, so where
the dense path is possible the steps double (to 128, at most ``n/16`` products) while
the count still grows by a tenth -- past 32 steps only while that growth could still
reach an eighth of ``n`` by the last step (:func:`_enough`). That is enough to choose
where the work goes:

- **dense**: a rank of at least half of ``n`` (``n ≤ dense_max``) needs a Krylov basis
  of ``r`` to ``2r`` columns, whose orthogonalization costs more than ``n`` products and
  one ``eigvalsh``; the count goes straight to the dense path. So does a count of at
  least an eighth of ``n`` still growing by a tenth at the last doubling: the
  quadrature has not resolved the spectrum at ``τ`` (a trained network's Hessian:
  164, 728, 2189 and 3950 at 16 to 128 steps, 12,536 dense), where a Krylov count
  must resolve every Ritz value near ``τ`` and costs more than the dense path;
- **range start**: a rank well above the block size, below ``n/8``, is reached by
  one randomized range sketch certified a posteriori (:mod:`.sketch`), the pilot's own
  products its first columns, instead of a sequence of doubling Krylov blocks, each
  orthogonalized against all before it;
- otherwise the Krylov count starts from one random block as before.

The pilot only decides the path: the count is certified (or computed densely) as if it
had not run, so a wrong guess costs time, never the answer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from ..._run import Run
from ...numerics.quadrature import lanczos_quadrature
from ...numerics.threshold import noise_floor, resolve_threshold
from ...numerics.trace import mean_and_stderr, probe_block

__all__ = ["PILOT_MIN_DIM", "PILOT_PRODUCTS", "Pilot", "quadrature_count", "run_pilot"]

#: Smallest ``n`` the pilot runs at (``auto``'s dense limit): below it the dense path
#: takes seconds and the Krylov count its own switch (a third of ``n`` explored, nine
#: tenths counted) decides.
PILOT_MIN_DIM = 4096
_PROBES, _STEPS, _MOST_STEPS = 4, 16, 128
#: Products of the pilot's first rule (four probes of 16 steps); it may double them.
PILOT_PRODUCTS = _PROBES * _STEPS
#: Fraction of ``n`` from which the pilot's count sends the run to the dense path.
DENSE_FRACTION = 0.5
#: Fraction of ``n`` from which a count still growing with the steps (the quadrature
#: has not resolved the spectrum at ``τ``) sends the run to the dense path.
UNRESOLVED_FRACTION = 0.125


@dataclasses.dataclass(frozen=True)
class Pilot:
    """What the pilot saw and what it chose."""

    count: float  #: estimated count at ``threshold``
    stderr: float  #: its standard error over the probes
    threshold: float  #: the threshold its nodes gave
    matvecs: int
    path: str  #: "dense", "range start" or "krylov"
    start_block: int  #: columns of the range start (0 unless that path)
    #: whether the count still grew by a tenth at the last doubling of the steps
    growing: bool = False


def run_pilot(
    run: Run,
    threshold: float | str | None,
    eps: float,
    *,
    dense_max: int,
    block: int,
    max_basis: int,
    record: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Pilot:
    """SLQ with four probes, and the path its count chooses (see the module notes).

    ``record``: a list the products join as ``(V, HV)`` pairs, kept for a range start
    or the dense path (emptied when the path is another).
    """
    meter = run.meter

    def product(block: torch.Tensor) -> torch.Tensor:
        image = meter.hvp(block)
        if record is not None:
            record.append((block.clone(), image))
        return image

    before = meter.matvecs
    count, stderr, cut, growing, _ = quadrature_count(
        product,
        meter.dim,
        threshold,
        eps,
        generator=run.generator,
        dtype=meter.dtype,
        device=meter.device,
        grow=meter.dim <= dense_max,
    )
    spent = meter.matvecs - before
    run.bar.update(spent)
    n = meter.dim
    path, start = _choose(count, stderr, growing, n, dense_max, block, max_basis)
    if record is not None and path not in ("range start", "dense"):
        record.clear()
    return Pilot(count, stderr, cut, spent, path, start, growing)


def quadrature_count(
    product: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    threshold: float | str | None,
    eps: float,
    *,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    grow: bool,
) -> tuple[float, float, float, bool, tuple[float, float]]:
    """The pilot's estimate: four sphere probes of Gauss–Radau quadrature (a node at
    zero), 16 steps, doubled to at most ``n/16`` products while the count still grows
    (``grow``: where the dense path is possible; :func:`_enough`). Returns the count at
    the threshold (``threshold``, or the plateau rule on the nodes), its standard error
    over the probes, that threshold, whether the count still grew by a tenth at the
    last doubling (a spectrum unresolved at ``τ``), and the smallest and largest node
    (inside the spectrum: ``auto`` prices the polynomial filter's reach from them)."""
    probes = probe_block(
        n, _PROBES, kind="sphere", generator=generator, dtype=dtype, device=device
    )
    # Near-zero eigenvalues (an indefinite Hessian) share the zero node's weight at
    # few steps: the count grows with the steps.
    most = max(_STEPS, min(_MOST_STEPS, n // (16 * _PROBES))) if grow else _STEPS
    counts: list[tuple[float, float, float]] = []

    def count_of(nodes: torch.Tensor, weights: torch.Tensor) -> tuple[float, float, float]:
        magnitudes = nodes.abs()
        floor = noise_floor(float(magnitudes.max()), n, eps)
        if isinstance(threshold, (int, float)):
            cut = float(threshold)
        else:
            cut, _ = resolve_threshold(
                magnitudes[weights >= 0.01].numpy(), floor, threshold
            )
        mean, stderr = mean_and_stderr((weights * (magnitudes > cut)).sum(dim=1))
        return mean, stderr, cut

    def enough(nodes: torch.Tensor, weights: torch.Tensor) -> bool:
        counts.append(count_of(nodes, weights))
        return _enough([c[0] for c in counts], n, most, checks)

    checks = [steps for steps in (8, 16, 32, 64) if steps < most]
    nodes, weights = lanczos_quadrature(
        product, probes, most, fixed_node=0.0, enough=enough, checks=checks
    )
    count, stderr, cut = count_of(nodes, weights)
    # still growing at the last comparison: the final rule against the last check's,
    # or (stopped at a check: its rule returned) that check's against the one before
    means = [c[0] for c in counts]
    if nodes.shape[1] - 1 not in checks:  # the Radau rule of `steps` has steps + 1 nodes
        means.append(count)
    growing = len(means) > 1 and means[-1] > 1.1 * means[-2]
    return count, stderr, cut, growing, (float(nodes.min()), float(nodes.max()))


def _enough(counts: list[float], n: int, most: int, checks: list[int]) -> bool:
    """Whether the pilot's quadrature stops at this check (``counts``: the count at
    each check so far, the steps of ``checks``).

    The rule of 8 steps only tells whether the count grows by 16 (free: the first 8 of
    16 steps' coefficients). A count that grows goes on to 32 steps, then while its
    latest growth could still reach the dense rule's eighth of ``n`` by the last step:
    a gapless spectrum's count grows faster after 16 steps than before (the trained
    MLP's Hessian: 164, 728, 2189, 3950 at 16 to 128 steps), a gapped one's slower (a
    rank of 300 over four decades: 218, 259, 291)."""
    if len(counts) < 2:
        return False
    count, before = counts[-1], counts[-2]
    if count >= DENSE_FRACTION * n or count <= 1.1 * before:
        return True
    if len(counts) < 3:
        return False
    doublings = math.log2(most / checks[len(counts) - 1])
    return bool(count * (count / before) ** doublings < UNRESOLVED_FRACTION * n)


def _choose(
    count: float,
    stderr: float,
    growing: bool,
    n: int,
    dense_max: int,
    block: int,
    max_basis: int,
) -> tuple[str, int]:
    """The path the pilot's count chooses, and the columns of a range start."""
    if n <= dense_max and (
        count >= DENSE_FRACTION * n or (growing and count >= UNRESOLVED_FRACTION * n)
    ):
        return "dense", 0
    # oversample by half a block or a twentieth, and two standard errors: an
    # underestimate only leaves the rest to the Krylov continuation
    wanted = math.ceil(count + max(block / 2, 0.05 * count) + 2 * stderr)
    if count >= 2 * block and wanted <= min(max_basis // 2, n // 8):
        return "range start", wanted
    return "krylov", 0
