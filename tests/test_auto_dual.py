"""``"auto"`` weighs a Gram curvature's dual against the dense path by their costs.

A protocol oracle ``H = BᵀB`` registers a dual form whose row timing the test sets, so
that each branch of the cost model is reached on the suite's stepping clock (where an
``n × n`` ``eigvalsh`` of n = 600 is predicted at about 1.6e-3 s and the dense path,
with its 600 timed products, at about 2e-2 s).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import matrank
from matrank._costs import eigvalsh_seconds
from matrank._dual import DualForm, DualGram
from matrank.estimators.lanczos.dense import DENSE_MAX


@dataclasses.dataclass(eq=False)
class GramOracle:
    """``H = BᵀB`` for an ``m × n`` ``B``, with a dual form whose rows "take" ``rows_s``
    seconds (``None``: an adapter that cannot time its rows)."""

    B: torch.Tensor
    rows_s: float | None
    size: int | None = None  # the dual's stated size (default: B's rows)
    dtype: torch.dtype = torch.float64
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    capabilities: matrank.Capability = matrank.Capability.HVP
    timings: int = 0

    @property
    def dim(self) -> int:
        return self.B.shape[1]

    @property
    def theta0(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self.dtype)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        return self.B.T @ (self.B @ v)

    def time_rows(self) -> tuple[float, float]:
        self.timings += 1
        assert self.rows_s is not None
        return self.rows_s, 0.25

    def gram(self) -> DualGram:
        gram = (self.B @ self.B.T).double()
        return DualGram(gram, self.B.shape[0], 1.0, 0.0, {})


@matrank.dual_form.register
def _(oracle: GramOracle) -> DualForm:
    return DualForm(
        size=oracle.B.shape[0] if oracle.size is None else oracle.size,
        what="test Gram: rows of B",
        precision=torch.float64,
        compute=oracle.gram,
        time_rows=None if oracle.rows_s is None else oracle.time_rows,
    )


def _gram(m: int = 60, n: int = 600, rank: int = 40) -> torch.Tensor:
    rng = np.random.default_rng(3)
    return torch.from_numpy(rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)))


def test_cheap_rows_take_the_dual_before_any_product_is_timed():
    oracle = GramOracle(_gram(), rows_s=1e-5)
    assert 1e-5 < eigvalsh_seconds(600)  # the premise: the dual wins on eigvalsh alone
    result = matrank.estimate_rank(oracle, seed=0)
    assert result.method == "exact" and result.rank == 40
    reason = result.diagnostics["auto"]
    assert "60 rows < dimension 600" in reason and "eigvalsh alone" in reason
    assert result.diagnostics.dual["zero_eigenvalues"] == 600 - 60
    # the timing's gradients are the user's cost; no product was timed
    assert result.cost["gradients"] == pytest.approx(1.0 + 0.25)
    assert result.cost["matvecs"] == 0
    # a second call reuses the timing: the same route, nothing spent on it
    again = matrank.estimate_rank(oracle, seed=0)
    assert again.cost["gradients"] == pytest.approx(1.0) and oracle.timings == 1


def test_rows_dearer_than_eigvalsh_are_weighed_against_timed_products():
    oracle = GramOracle(_gram(), rows_s=4e-3)
    result = matrank.estimate_rank(oracle, seed=0)
    reason = result.diagnostics["auto"]
    assert result.diagnostics.get("dual") is not None  # the dual route ran
    assert "less than the dense path's" in reason and "600 products" in reason
    assert result.rank == 40 and result.cost["matvecs"] == 2 * 32


def test_rows_dearer_than_the_dense_path_keep_the_primal():
    oracle = GramOracle(_gram(), rows_s=10.0)
    result = matrank.estimate_rank(oracle, seed=0)
    reason = result.diagnostics["auto"]
    assert "dearer than the dense path" in reason
    # exact, but on H itself: auto's choice is not overridden by exact's size rule
    assert result.method == "exact" and result.diagnostics.get("dual") is None
    assert result.rank == 40
    assert matrank.auto_method(oracle)[0] == "exact"


def test_a_dual_without_row_timing_falls_back_to_the_size_rule():
    method, reason = matrank.auto_method(GramOracle(_gram(), rows_s=None))
    assert method == "exact" and "AUTO_DUAL_MAX_DIM" in reason and "not timed" in reason


def test_a_dual_too_large_for_memory_is_not_weighed():
    # a dual of DENSE_MAX + 1 rows below the dimension (no products are taken)
    big = type("Big", (GramOracle,), {"dim": property(lambda self: DENSE_MAX + 2)})
    oracle = big(_gram(m=4, n=50), rows_s=1e-9, size=DENSE_MAX + 1)
    method, reason = matrank.auto_method(oracle)
    assert method == "lanczos" and "fit memory" in reason and oracle.timings == 0
