"""Rows of ``B`` for curvatures ``JᵀΛJ`` with per-sample ``Λ``, and the Gram matrix ``BBᵀ``.

Both the generalised Gauss–Newton matrix and the empirical Fisher are
``Σ_i J_iᵀ W_i J_i``: ``J_i`` the Jacobian of sample ``i``'s outputs (``C`` of them) in
the parameters, ``W_i`` a PSD ``C × C`` block (the weighted Hessian of the loss in the
outputs, or ``q_i q_iᵀ/N`` with ``q_i`` the loss's gradient in the outputs). Factoring
``W_i = L_iᵀL_i`` makes the curvature ``BᵀB`` with rows ``B_i = L_i J_i``; each row is one
per-sample vector–Jacobian product, batched over rows and samples with ``vmap``.

The Gram matrix is formed in panels of rows that fit in a memory budget: the first panel
in one pass over the data, the others in further passes that compute only the rows at or
after the panel (the blocks before it are known by symmetry).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.func import functional_call, vjp, vmap

__all__ = ["Factors", "gram_in_panels", "sample_rows"]

#: Bytes of rows one ``vmap`` call produces at most (its intermediates scale with it).
_BLOCK_BYTES = 64 * 2**20


class Factors:
    """Per-sample factors of one data chunk: ``L (m_c, R, C)`` and which rows to keep.

    Rows left out (structural zeros of ``W_i``, and the rounding-level negative
    eigenvalues clamped to make it PSD) are computed all the same: the sum of their
    squared norms bounds what leaving them out changes in the curvature (Weyl), and
    raises the noise floor to it.
    """

    def __init__(self, factor: torch.Tensor, keep: torch.Tensor) -> None:
        self.factor, self.keep = factor, keep
        self.rows = int(keep.sum())


def sample_rows(
    oracle: Any, inputs: torch.Tensor, factors: Factors
) -> Iterator[tuple[torch.Tensor, int, float]]:
    """The kept rows ``L_i J_i`` of a chunk's samples, in blocks ``(k, n)`` in order,
    each with the number of rows computed for it (the left-out ones included) and the
    squared Frobenius norm of the left-out rows."""
    theta0 = oracle.theta0
    width = factors.factor.shape[1]
    per_sample = width * oracle.dim * theta0.element_size()
    step = max(1, _BLOCK_BYTES // max(per_sample, 1))

    def rows_of(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        def output(theta: torch.Tensor) -> torch.Tensor:
            parameters = oracle.parameters_at(theta)
            return functional_call(oracle.model, parameters, (x[None],)).reshape(-1)

        pull = vjp(output, theta0)[1]
        return vmap(lambda row: pull(row)[0])(factor)

    for start in range(0, factors.factor.shape[0], step):
        stop = min(factors.factor.shape[0], start + step)
        keep = factors.keep[start:stop]
        if not bool(factors.factor[start:stop].any()):
            continue  # no row at all (a sample the loss does not curve)
        x, factor = inputs[start:stop], factors.factor[start:stop]
        block = oracle.map_rows(rows_of, x, factor)
        left_out = float(block[~keep].double().square().sum())
        yield block[keep], block.shape[0] * block.shape[1], left_out


def gram_in_panels(
    chunks: Callable[[], Iterator[tuple[torch.Tensor, Factors]]],
    row_blocks: Callable[
        [torch.Tensor, Factors], Iterator[tuple[torch.Tensor, int, float]]
    ],
    total_rows: int,
    dim: int,
    itemsize: int,
    memory: int,
) -> tuple[torch.Tensor, int, int, float, float]:
    """``BBᵀ`` (float64, CPU) from the rows of each chunk, in panels of at most
    ``memory / 2`` bytes of rows (the whole of ``B`` in one pass when it fits).

    Returns the Gram matrix, the rows computed (recomputations included), the number of
    passes over the data, the seconds spent in the Gram products, and the squared norm
    of the rows left out.
    """
    panel = max(1, total_rows) if total_rows * dim * itemsize <= memory else None
    if panel is None:
        panel = max(1, memory // (2 * dim * itemsize))
    gram = torch.zeros(total_rows, total_rows, dtype=torch.float64)
    computed, passes, product_seconds, left_out = 0, 0, 0.0, 0.0
    for panel_start in range(0, max(total_rows, 1), panel):  # (one pass when empty)
        panel_stop = min(total_rows, panel_start + panel)
        passes += 1
        held: list[torch.Tensor] = []
        position = 0
        for inputs, factors in chunks():
            chunk_stop = position + factors.rows
            if passes > 1 and chunk_stop <= panel_start:  # known by symmetry
                position = chunk_stop
                continue
            for block, work, dropped in row_blocks(inputs, factors):
                first, position = position, position + block.shape[0]
                computed += work
                if passes == 1:  # the first pass visits every chunk
                    left_out += dropped
                # the part of the block inside the panel joins it
                inside = block[max(0, panel_start - first) : max(0, panel_stop - first)]
                if inside.shape[0]:
                    held.append(inside)
                    if position >= panel_stop:
                        panel_rows = torch.cat(held).to("cpu", torch.float64)
                        held = []
                        start = time.perf_counter()
                        # the panel against itself and the rows after it in this block
                        after = block[max(0, panel_stop - first) :].to("cpu", torch.float64)
                        gram[panel_start:panel_stop, panel_start:panel_stop] = (
                            panel_rows @ panel_rows.T
                        )
                        if after.shape[0]:
                            cross = panel_rows @ after.T
                            gram[panel_start:panel_stop, panel_stop:position] = cross
                        product_seconds += time.perf_counter() - start
                elif block.shape[0] and first >= panel_stop:
                    start = time.perf_counter()
                    cross = panel_rows @ block.to("cpu", torch.float64).T
                    gram[panel_start:panel_stop, first:position] = cross
                    product_seconds += time.perf_counter() - start
                else:
                    pass  # rows before the panel inside a chunk that reaches it
    upper = torch.triu(gram, diagonal=1)
    gram = torch.triu(gram) + upper.T
    return gram, computed, passes, product_seconds, left_out
