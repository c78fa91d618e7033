"""How the count moves with τ (``result.count_interval``): exact where eigenvalues were
counted, lower bounds from Ritz values, estimates within their stated stderr; shown by
``print``, the JSON and the CLI."""

import json

import numpy as np
import pytest
import scipy.sparse.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

import matrank
from matrank.cli import main
from matrank.testing import haar_orthogonal, rotated_spectrum


def _gapless(n, top, bottom, seed=0, linear=False):
    """``Q diag(λ) Qᵀ`` with ``λ`` spread from ``top`` to ``bottom`` without a gap."""
    rng = np.random.default_rng(seed)
    values = np.linspace(top, bottom, n) if linear else np.geomspace(top, bottom, n)
    q = haar_orthogonal(n, rng)
    matrix = (q * values) @ q.T
    return 0.5 * (matrix + matrix.T), values


def _truth(values, interval):
    return [int((np.abs(values) > end).sum()) for end in interval.thresholds]


@given(
    decades=st.floats(1, 17),
    log_threshold=st.floats(-10, -0.5),
    delta=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=15, deadline=None)
def test_exact_counts_both_ends_exactly(decades, log_threshold, delta, seed):
    matrix, values = _gapless(200, 1.0, 10.0**-decades, seed)
    result = matrank.estimate_rank(matrix, method="exact", threshold=10.0**log_threshold)
    interval = result.count_interval_at(delta)
    assert interval.kinds == ("exact", "exact") and interval.stderr is None
    assert interval.thresholds == pytest.approx(
        (result.threshold * (1 - delta), result.threshold * (1 + delta))
    )
    assert list(interval.counts) == _truth(values, interval)
    assert interval.width == interval.counts[0] - interval.counts[1] >= 0


def test_krylov_ends_are_lower_bounds_and_a_sketch_reads_a_gap_exactly():
    matrix, values = _gapless(1500, 1.0, 1e-18)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    # the Krylov path's ends (dense_max=0: a count past 2r + 200 uncertain would
    # switch to the dense path, whose ends are exact)
    result = matrank.estimate_rank(
        operator, method="lanczos", seed=0, threshold=1e-3, dense_max=0
    )
    assert result.diagnostics.path == "krylov"
    interval = result.count_interval
    assert interval.kinds == ("at least", "at least")
    truth = _truth(values, interval)
    assert interval.counts[0] <= truth[0] and interval.counts[1] <= truth[1]
    assert interval.counts[1] >= result.rank - interval.width  # not vacuous
    assert str(interval).startswith("at least")
    # a gap at τ: the range sketch's Ritz values, within η, count both ends exactly
    gapped = rotated_spectrum(600, 40, cond=1e3, seed=0)
    result = matrank.estimate_rank(
        gapped, method="lanczos", seed=0, pilot_from=1, block_size=8
    )
    assert result.diagnostics.path == "sketch"
    assert result.count_interval.counts == (40, 40)
    assert result.count_interval.kinds == ("exact", "exact")


@pytest.mark.parametrize(
    ("linear", "threshold"), [(True, 0.1), (True, 0.01), (False, 0.01)]
)
def test_the_polynomial_ends_lie_within_their_stderr(linear, threshold):
    # probes only (no deflation): the ends are the probes' Jackson-step curve, whose
    # stderr carries the spread, the edge term and the smoothing bias
    matrix, values = _gapless(1500, 1.0, 0.0 if linear else 1e-6, linear=linear)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    for seed in range(2):
        result = matrank.estimate_rank(
            operator, method="polynomial", seed=seed, threshold=threshold, deflate=0
        )
        interval = result.count_interval
        assert interval.kinds == ("estimate", "estimate")
        for count, truth, stderr in zip(
            interval.counts, _truth(values, interval), interval.stderr, strict=True
        ):
            assert 0 < stderr < 0.05 * truth
            assert abs(count - truth) <= 3 * stderr


def test_no_plateau_prints_the_interval_and_the_json_always_has_it():
    matrix, values = _gapless(300, 1.0, 1e-18)
    result = matrank.estimate_rank(matrix, method="exact")
    assert result.status is matrank.Status.NO_PLATEAU
    interval = result.count_interval
    assert f"count interval: {interval}" in str(result)
    assert "τ·0.5" in str(interval) and "τ·1.5" in str(interval)
    data = result.to_dict(delta=0.2)
    assert data["schema"] == matrank.SCHEMA == 3
    assert data["count_interval"]["delta"] == 0.2
    assert data["count_interval"]["counts"] == _truth(values, result.count_interval_at(0.2))
    json.dumps(data)
    converged = matrank.estimate_rank(rotated_spectrum(100, 10, seed=0), method="exact")
    assert converged.count_interval.counts == (10, 10)
    assert "count interval" not in str(converged)
    with pytest.raises(matrank.MatrankValueError, match="`delta` must be"):
        result.count_interval_at(1.0)


def test_samplers_have_no_interval():
    result = matrank.estimate_rank(
        rotated_spectrum(30, 6, cond=2, seed=0), method="langevin", seed=0
    )
    assert result.count_interval is None
    assert result.to_dict()["count_interval"] is None


def test_an_extreme_scale_reads_the_same_interval_scaled():
    matrix, _ = _gapless(150, 1.0, 1e-9, linear=False)
    plain = matrank.estimate_rank(matrix, method="exact", threshold=1e-4)
    tiny = matrank.estimate_rank(1e-200 * matrix, method="exact", threshold=1e-204)
    assert tiny.count_interval.counts == plain.count_interval.counts
    assert tiny.count_interval.thresholds == pytest.approx(
        tuple(1e-200 * end for end in plain.count_interval.thresholds)
    )


def test_the_cli_shows_the_interval_at_its_delta(tmp_path, capsys):
    matrix, _ = _gapless(120, 1.0, 1e-6)
    path = tmp_path / "m.npy"
    np.save(path, matrix)
    args = ["estimate", str(path), "--method", "exact", "--no-progress"]
    assert main([*args, "--threshold", "1e-3", "--interval-delta", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "count interval:" in out and "τ·0.75" in out and "τ·1.25" in out
    assert main([*args, "--json", "--interval-delta", "0.3"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["count_interval"]["delta"] == 0.3
    assert main([*args, "--interval-delta", "1.5"]) == 2
    assert "expected a number in (0, 1)" in capsys.readouterr().err
