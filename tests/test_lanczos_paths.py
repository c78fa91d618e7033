"""The Lanczos count's pilot and the paths it chooses: dense, range start, Krylov.

The pilot only chooses where the work goes; every path must give the dense count.
"""

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import matrank
from matrank.estimators.lanczos.pilot import DENSE_FRACTION
from matrank.numerics.quadrature import lanczos_quadrature
from matrank.testing import rotated_spectrum

# the pilot from n = 512 (4096 by default), so that its paths are quick to test
SMALL = {"pilot_from": 512}


def _sparse_low_rank(n, rank, seed=0):
    factor = scipy.sparse.random(n, rank, density=0.05, random_state=seed, format="csr")
    transposed = factor.T.tocsr()

    def product(block):
        return factor @ (transposed @ block)

    return scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=product, rmatvec=product, matmat=product, dtype=np.float64
    )


def test_radau_rule_is_exact_to_degree_2k_and_puts_exact_zeros_on_zero():
    n, steps = 400, 6
    matrix = torch.from_numpy(rotated_spectrum(n, 60, cond=1e3, seed=3))
    probes = torch.randn(
        n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    nodes, weights = lanczos_quadrature(lambda V: matrix @ V, probes, steps, fixed_node=0.0)
    assert nodes.shape == (3, steps + 1)
    # a Radau rule of k free nodes is exact for degree 2k
    for degree in range(1, 2 * steps + 1):
        exact = (probes * (torch.linalg.matrix_power(matrix, degree) @ probes)).sum(0)
        rule = (weights * nodes**degree).sum(1)
        np.testing.assert_allclose(rule, exact, rtol=1e-10)
    np.testing.assert_allclose(weights.sum(1), (probes**2).sum(0), rtol=1e-12)
    at_zero = nodes.abs().argmin(dim=1)
    assert float(nodes.abs().min(dim=1).values.max()) < 1e-12
    # the mass of the 340 zeros sits on the zero node (its share of ‖v‖²: about 340/400)
    share = weights.gather(1, at_zero[:, None]).squeeze(1) / weights.sum(1)
    assert bool(((share > 0.7) & (share < 0.95)).all())
    # without the fixed node the zeros are smeared onto a positive node
    gauss_nodes, _ = lanczos_quadrature(lambda V: matrix @ V, probes, steps)
    assert float(gauss_nodes.abs().min()) > 1e-8


def test_rank_above_half_of_n_goes_dense_at_once():
    n = 1200
    matrix = rotated_spectrum(n, int(0.8 * n), cond=1e3, seed=0)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    result = matrank.estimate_rank(operator, method="lanczos", seed=0, **SMALL)
    truth = matrank.estimate_rank(matrix, method="exact")
    assert result.diagnostics.path == "dense"
    assert result.diagnostics.pilot["path"] == "dense"
    assert result.diagnostics.pilot["count"] >= DENSE_FRACTION * n
    assert "at least half of n = 1200" in result.diagnostics.dense_reason
    assert result.rank == truth.rank == int(0.8 * n)
    # the same plateau; its ends are eigenvalues of H in another basis (the pilot's
    # span completed), equal to rounding
    assert result.threshold == pytest.approx(truth.threshold, rel=1e-12)
    assert result.status is matrank.Status.CONVERGED and result.diagnostics.certified
    pilot = result.diagnostics.pilot["matvecs"]
    # the pilot, then the rest of R^n: the pilot's span is kept (dear products on the
    # suite's clock against a QR and two products of n = 1200)
    kept = result.diagnostics.kept_products["columns"]
    assert 0 < kept <= pilot and result.cost["matvecs"] == pilot + n - kept
    # an explicit matrix is read, not multiplied
    explicit = matrank.estimate_rank(matrix, method="lanczos", seed=0, **SMALL)
    assert explicit.diagnostics.path == "dense"
    assert explicit.rank == truth.rank and explicit.cost["matvecs"] == pilot
    # past dense_max, no dense path: the pilot leaves the count to the Krylov basis
    kept = matrank.estimate_rank(
        operator, method="lanczos", seed=0, dense_max=n - 1, **SMALL
    )
    assert kept.diagnostics.pilot["path"] == "krylov"
    assert kept.rank == truth.rank and kept.diagnostics.path == "krylov"


def test_low_rank_is_certified_by_one_sketch_in_r_plus_two_blocks():
    n, rank, block = 40_000, 150, 32
    operator = _sparse_low_rank(n, rank)
    result = matrank.estimate_rank(operator, method="lanczos", seed=0)
    pilot, sketch = result.diagnostics.pilot, result.diagnostics.sketch
    assert pilot["path"] == "range start"
    assert abs(pilot["count"] - rank) <= 4 * pilot["stderr"] + 5
    assert result.rank == rank and result.diagnostics.certified
    assert result.status is matrank.Status.CONVERGED
    assert result.diagnostics.path == "sketch"
    # the pilot's products are in the sketch: the whole run costs r + 2·block at most
    assert sketch["pilot_columns"] == pilot["matvecs"]
    assert result.cost["matvecs"] == sketch["columns"] <= rank + 2 * block
    assert sketch["eta"] < result.threshold
    assert result.diagnostics.orthogonalization_seconds > 0


def test_a_sketch_that_cannot_certify_hands_its_basis_to_krylov():
    # a noise band a million times under the signal: the test's bound lies above τ
    matrix = rotated_spectrum(600, 40, cond=1e3, noise_gap=1e6, seed=0)
    result = matrank.estimate_rank(
        matrix, method="lanczos", seed=0, pilot_from=1, block_size=8
    )
    assert result.diagnostics.pilot["path"] == "range start"
    assert result.diagnostics.path == "krylov" and result.diagnostics.sketch is None
    assert result.rank == 40 and result.status is matrank.Status.CONVERGED


def test_a_wrong_pilot_costs_time_not_the_answer(monkeypatch):
    # a start block far too narrow leaves the rest to the Krylov continuation
    from matrank.estimators.lanczos import pilot as _lanczos_pilot

    original = _lanczos_pilot.run_pilot

    def narrow(*args, **kwargs):
        pilot = original(*args, **kwargs)
        return _lanczos_pilot.Pilot(
            10.0, 1.0, pilot.threshold, pilot.matvecs, "range start", 12
        )

    monkeypatch.setattr("matrank.estimators.lanczos.grow.run_pilot", narrow)
    operator = _sparse_low_rank(2000, 90, seed=1)
    result = matrank.estimate_rank(operator, method="lanczos", seed=0, **SMALL)
    assert result.rank == 90 and result.diagnostics.certified

    def dense_guess(*args, **kwargs):
        pilot = original(*args, **kwargs)
        return _lanczos_pilot.Pilot(1600.0, 1.0, pilot.threshold, pilot.matvecs, "dense", 0)

    monkeypatch.setattr("matrank.estimators.lanczos.grow.run_pilot", dense_guess)
    result = matrank.estimate_rank(operator, method="lanczos", seed=0, **SMALL)
    assert result.rank == 90 and result.diagnostics.path == "dense"


@given(
    rank=st.integers(0, 1200),
    cond=st.floats(1.0, 1e6),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=8, deadline=None)
def test_every_path_agrees_with_the_dense_count(rank, cond, seed):
    n = 1200  # with the pilot from 512: dense above 600, a range start below 150
    matrix = rotated_spectrum(n, rank, cond=cond, seed=seed)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    result = matrank.estimate_rank(operator, method="lanczos", seed=seed, **SMALL)
    truth = matrank.estimate_rank(matrix, method="exact")
    assert result.rank == truth.rank == rank
    assert result.status is matrank.Status.CONVERGED


def test_the_dense_path_never_overruns_a_fixed_budget():
    n = 1200
    operator = scipy.sparse.linalg.aslinearoperator(rotated_spectrum(n, 1000, seed=5))
    result = matrank.estimate_rank(
        operator, method="lanczos", seed=0, max_matvecs=900, **SMALL
    )
    assert result.diagnostics.pilot["path"] == "dense"  # chosen, but not affordable
    assert result.diagnostics.path != "dense"
    assert result.cost["matvecs"] <= 900
    # SLQ answers: its Gauss–Radau node at zero keeps the 200 zeros out of the count
    # (a Gauss rule smeared them onto a positive node: 1200 ± 7e-13, before)
    assert result.diagnostics.path == "slq"
    assert abs(result.rank - 1000) <= 4 * result.stderr
