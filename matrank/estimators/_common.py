"""The preamble every estimator shares: coerce, refuse clearly, seed, meter."""

from __future__ import annotations

import sys
from typing import Any

import torch
from tqdm.auto import tqdm

from .._oracle import Capability, CostMeter, Oracle, as_oracle, require
from .._validation import check_int


def prepare(
    obj: Any, needs: Capability, method: str, seed: int | None
) -> tuple[Oracle, CostMeter, torch.Generator]:
    """The oracle, a meter around it, and a CPU generator seeded by ``seed``.

    ``needs`` may combine capabilities; each missing one is refused with its own message.
    Randomness is drawn on the CPU from this local generator (never global seeds) so that
    one integer seed gives bit-identical results whatever the oracle's device.
    """
    oracle = as_oracle(obj)
    for capability in (Capability.HVP, Capability.GRAD, Capability.LOSS):
        if capability in needs:
            require(oracle, capability, method)
    check_int("seed", seed, low=0, allow_none=True)
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    return oracle, CostMeter(oracle), generator


def progress_bar(enabled: bool, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr, or a no-op one when ``enabled`` is false."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
