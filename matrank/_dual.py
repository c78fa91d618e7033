"""The dual form of a curvature that is a Gram matrix, ``H = BᵀB``.

When ``B`` has ``m`` rows and ``m < n``, ``H`` and the ``m × m`` matrix ``BBᵀ`` have the
same nonzero eigenvalues (``BᵀBv = λv`` with ``v ≠ 0`` and ``λ ≠ 0`` gives
``BBᵀ(Bv) = λ(Bv)`` with ``Bv ≠ 0``), so ``rank H = rank BBᵀ`` and the other ``n − m``
eigenvalues of ``H`` are zero. The generalised Gauss–Newton matrix ``JᵀΛJ`` is one
(``B = Λ^{1/2}J``, ``m`` = samples × outputs), the empirical Fisher ``Σ gᵢgᵢᵀ/N``
another (``m`` = samples): a model of a million parameters on 500 samples with ten
outputs has a 5000 × 5000 dual instead of a 10⁶-dimensional count.

Adapters that know such a ``B`` register :func:`dual_form`; ``method="exact"`` and
``"auto"`` use it when ``m < n``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch

from ._oracle import _CheckedOracle
from ._validation import MatrankValueError

__all__ = ["DualForm", "DualFormError", "DualGram", "dual_form"]


class DualFormError(MatrankValueError):
    """The dual form does not hold for this curvature as computed: a loss that couples
    the samples, or a ``Λ`` buried in its own rounding (low precision at saturated
    outputs). ``ExactRank(dual=None)`` then counts ``H`` from ``n`` products instead;
    ``dual=True`` raises it."""


@dataclasses.dataclass(frozen=True)
class DualGram:
    """``BBᵀ`` as computed, and what computing it cost.

    ``gram`` is float64 on the CPU, ``(m, m)`` with ``m ≤`` the form's ``size`` (rows that
    are exactly zero by structure -- cross-entropy's softmax direction -- may be left
    out). ``rows_computed`` counts rows of ``B`` evaluated, recomputations included;
    ``gradient_equivalents`` the same work in full-batch gradients (``N`` per-sample
    rows are one gradient's worth of backward passes). ``left_out`` bounds, in the
    norm, the part of ``H`` not in ``BᵀB`` (rows dropped as zero, and clamped rounding
    of a loss's Hessian in the outputs): no count goes below it.
    """

    gram: torch.Tensor
    rows_computed: int
    gradient_equivalents: float
    seconds: float
    details: dict[str, Any]
    left_out: float = 0.0


@dataclasses.dataclass(frozen=True)
class DualForm:
    """An oracle's Hessian as ``H = BᵀB``, ``B`` of at most ``size`` rows.

    ``compute()`` evaluates ``BBᵀ`` (:class:`DualGram`); ``what`` says what ``B`` is,
    for diagnostics; ``precision`` is the dtype ``B`` is computed in (its rounding sets
    the noise floor of the dual's eigenvalues). ``time_rows()``, where the adapter can
    time a sample of rows, returns ``(seconds, gradients)``: the predicted seconds of
    all ``size`` rows, from one block of rows computed twice (the first a warm-up), and
    the full-batch gradient equivalents that timing spent. ``"auto"`` uses it to weigh
    the dual against the dense path (:mod:`matrank._costs`); without it ``"auto"``
    falls back to a size rule.
    """

    size: int
    what: str
    precision: torch.dtype
    compute: Callable[[], DualGram]
    time_rows: Callable[[], tuple[float, float]] | None = None


@functools.singledispatch
def dual_form(oracle: Any) -> DualForm | None:
    """The dual form of an oracle's Hessian, or ``None`` when it has none.

    Adapters whose Hessian is a Gram matrix ``BᵀB`` register an implementation
    (:class:`matrank.adapters.TorchGGN`, :class:`matrank.adapters.TorchFisher`); the
    default is ``None``.
    """
    return None


@dual_form.register
def _(oracle: _CheckedOracle) -> DualForm | None:
    return dual_form(oracle.inner)
