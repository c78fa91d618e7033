"""ExactRank against the catalogue of known ranks, and its threshold rule."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

import matrank
from matrank.testing import catalogue, rotated_spectrum

CASES = catalogue(max_n=3000)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_exact_rank_on_the_catalogue(case):
    result = matrank.estimate_rank(case.matrix(), method="exact")
    assert result.rank == case.rank
    assert result.stderr is None
    assert result.method == "exact"
    assert result.status is matrank.Status.CONVERGED
    # the plateau is reported and spans at least the catalogue's stated gap
    plateau = result.diagnostics.plateau
    assert plateau["decades"] >= min(2.0, np.log10(case.gap))
    assert result.counts.at(result.threshold) == case.rank


def test_counting_curve_is_the_spectrum():
    matrix = rotated_spectrum(80, 12, cond=1e3, seed=3)
    result = matrank.ExactRank().estimate(matrix)
    eigenvalues = np.linalg.eigvalsh(matrix)
    curve = result.counts
    assert np.all(np.diff(curve.thresholds) > 0)
    assert np.all(np.diff(curve.counts) <= 0)
    expected = [(np.abs(eigenvalues) > t).sum() for t in curve.thresholds]
    np.testing.assert_array_equal(curve.counts, expected)
    np.testing.assert_allclose(
        result.diagnostics.eigenvalues, eigenvalues[::-1], atol=1e-13
    )


def test_threshold_overrides_the_rule():
    matrix = rotated_spectrum(60, 20, cond=1e4, seed=4)  # eigenvalues 1 … 1e-4
    levels = np.geomspace(1.0, 1e-4, 20)
    for threshold in (0.5, 1e-2, 1e-3, 2e-4, 1e-12):
        result = matrank.estimate_rank(matrix, method="exact", threshold=threshold)
        assert result.threshold == threshold
        assert result.rank == (levels > threshold).sum()


def test_negative_eigenvalues_are_counted_by_magnitude():
    matrix = rotated_spectrum(100, 30, cond=1e2, negative=12, seed=5)
    result = matrank.estimate_rank(matrix, method="exact")
    assert result.rank == 30
    assert result.diagnostics.n_negative == 12
    assert result.rank == np.linalg.matrix_rank(matrix, hermitian=True)


def test_no_plateau_is_reported():
    # eigenvalues spread evenly over 13 decades, down into the rounding floor (4.4e-14):
    # no gap anywhere, no well-defined rank
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((200, 200)))[0]
    matrix = (q * np.geomspace(1.0, 1e-13, 200)) @ q.T
    result = matrank.estimate_rank(matrix, method="exact")
    assert result.status is matrank.Status.NO_PLATEAU
    assert result.converged
    assert "pass `threshold=`" in result.status.value
    assert result.threshold == result.diagnostics.noise_floor
    assert result.diagnostics.plateau["decades"] < 1.0


def test_float32_input_uses_its_own_rounding_floor():
    matrix = rotated_spectrum(300, 25, cond=1e2, seed=16).astype(np.float32)
    result = matrank.estimate_rank(matrix, method="exact")
    assert result.rank == 25
    assert result.diagnostics.numpy_rule == pytest.approx(
        300 * np.finfo(np.float32).eps, rel=0.01
    )


def test_operator_is_materialized_with_counted_matvecs():
    matrix = rotated_spectrum(300, 60, seed=17)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    result = matrank.estimate_rank(operator, method="exact")
    assert result.rank == 60
    assert result.cost["matvecs"] == 300
    free = matrank.estimate_rank(matrix, method="exact")
    assert free.cost["matvecs"] == 0


def test_same_seed_same_result_and_estimator_is_stateless():
    matrix = rotated_spectrum(120, 17, seed=6)
    estimator = matrank.ExactRank()
    first, second = estimator.estimate(matrix, seed=3), estimator.estimate(matrix, seed=3)
    assert first.rank == second.rank and first.threshold == second.threshold
    np.testing.assert_array_equal(
        first.diagnostics.eigenvalues, second.diagnostics.eigenvalues
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimator.threshold = 1.0


def test_torch_input_stays_on_its_device_and_dtype():
    tensor = torch.from_numpy(rotated_spectrum(50, 9, seed=7))
    oracle = matrank.as_oracle(tensor)
    assert oracle.device == tensor.device and oracle.dtype == torch.float64
    assert matrank.estimate_rank(tensor).rank == 9


def test_auto_routes_small_dense_to_exact_and_says_why():
    result = matrank.estimate_rank(rotated_spectrum(64, 5, seed=8))
    assert result.method == "exact"
    assert "dense eigendecomposition" in result.diagnostics.auto
    oracle = matrank.as_oracle(np.eye(3))
    assert matrank.auto_method(oracle)[0] == "exact"


def test_result_prints_and_serializes():
    result = matrank.estimate_rank(np.diag([2.0, 1.0, 0.0]))
    assert str(result).startswith("rank 2 (method=exact, threshold=")
    assert int(result) == 2
    payload = result.to_dict()
    assert payload["rank"] == 2.0 and payload["status"] == "converged"
    assert payload["diagnostics"]["eigenvalues"] == [2.0, 1.0, 0.0]
    import json

    json.dumps(payload)


def test_floor_threshold_counts_an_isolated_tiny_eigenvalue_the_plateau_rule_drops(
    isolated_smallest,
):
    # The widest plateau (1e-10 … 1e-3) lies above the lone eigenvalue; "floor" counts
    # everything above λmax·n·eps ≈ 7e-14, as numpy does.
    matrix = isolated_smallest
    assert matrank.estimate_rank(matrix, method="exact").rank == 40
    floor = matrank.estimate_rank(matrix, method="exact", threshold="floor")
    assert floor.rank == 41 == np.linalg.matrix_rank(matrix, hermitian=True)
    assert floor.threshold == floor.diagnostics.noise_floor
    assert "plateau" not in floor.diagnostics
