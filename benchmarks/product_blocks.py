"""Seconds a product column costs at each block width, on the trained networks.

The dense paths read ``H`` in blocks of 256 columns (``materialize``, the completion of
``matrank.estimators.completion``), the polynomial filter's whole space in blocks of
32. For an explicit operator a wide block reads the matrix's memory once per block;
for a network's curvature a block's intermediate tensors grow with its width. This
times both on the same oracle, one after the other, so their ratio is measured in one
run.

    OMP_NUM_THREADS=2 python benchmarks/product_blocks.py --models cnn --curvatures ggn

Each width's products are timed over ``--columns`` columns (the first block of each
width is a warm-up, not timed). A width given twice (``--widths 32 256 32 256``) is
timed twice, so that the machine's drift within the run is seen beside the ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from trained_curvature import build, oracle_of, train


def seconds_per_column(oracle, width: int, columns: int) -> float:
    generator = torch.Generator().manual_seed(0)

    def block() -> torch.Tensor:
        return torch.randn(oracle.dim, width, generator=generator, dtype=oracle.dtype)

    with torch.no_grad():
        oracle.hvp(block())  # warm-up
        start = time.perf_counter()
        for _ in range(max(1, columns // width)):
            oracle.hvp(block())
        elapsed = time.perf_counter() - start
    return elapsed / (max(1, columns // width) * width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn"])
    parser.add_argument("--curvatures", nargs="+", default=["ggn", "fisher", "hessian"])
    parser.add_argument("--widths", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--columns", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print(
        f"torch threads {torch.get_num_threads()}; seconds a column, {args.columns} columns a width"
    )
    for name in args.models:
        model, loss_fn, data, decay = build(name)
        train(model, loss_fn, data, decay, args.steps)
        for curvature in args.curvatures:
            oracle = oracle_of(curvature, model, loss_fn, data)
            # a width named twice is timed twice, in order: the machine's drift between
            # the two shows beside the widths' ratio
            times = [(w, seconds_per_column(oracle, w, args.columns)) for w in args.widths]
            cells = "  ".join(f"{w:4d}: {s:.4f}" for w, s in times)
            base = times[0][1]
            ratios = "  ".join(f"{s / base:.2f}" for _, s in times)
            print(
                f"  {name:10s} {curvature:8s} n = {oracle.dim:6d}  {cells}  ratio {ratios}"
            )


if __name__ == "__main__":
    main()
