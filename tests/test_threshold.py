"""The widest-plateau threshold rule, on spectra whose answer is known."""

import math

import numpy as np
import pytest
import torch

import matrank
from matrank.numerics.threshold import (
    counting_curve,
    flat_stretch_threshold,
    plateau_threshold,
    resolve_threshold,
)


def test_exact_zeros_give_the_plateau_down_to_the_floor():
    choice = plateau_threshold(np.array([2.0, 1.0, 0.5, 0.0, 0.0]), floor=1e-14)
    assert choice.upper == 0.5 and choice.lower == 1e-14
    assert choice.threshold == pytest.approx(math.sqrt(0.5e-14))
    assert choice.decades == pytest.approx(math.log10(0.5 / 1e-14))
    assert choice.runner_up_decades == pytest.approx(math.log10(2.0))


def test_full_rank_is_visible():
    choice = plateau_threshold(np.array([1.0, 0.9, 0.8]), floor=1e-15)
    assert choice.upper == 0.8


def test_two_comparable_plateaus_are_ambiguous_and_the_wider_wins():
    # a band 4 decades under the signal and 5 decades above the floor
    spectrum = np.array([1.0, 0.5, 1e-4, 5e-5, 1e-5])
    choice = plateau_threshold(spectrum, floor=1e-10)
    assert choice.upper == 1e-5 and choice.lower == 1e-10
    assert choice.ambiguous
    assert choice.runner_up_decades == pytest.approx(math.log10(0.5 / 1e-4))
    assert choice.runner_up_count == 2.0
    assert 1e-4 < choice.runner_up_threshold < 0.5
    # a cluster 1 decade under the signal is part of it: one plateau, not ambiguous
    choice = plateau_threshold(np.array([1.0, 0.1, 0.05]), floor=1e-14)
    assert choice.upper == 0.05 and not choice.ambiguous
    # a competitor under a decade, or under half the chosen width, does not compete
    assert not plateau_threshold(np.array([1.0, 0.2, 1e-9]), floor=1e-13).ambiguous
    assert not plateau_threshold(np.array([1.0, 1e-3, 1e-10]), floor=1e-13).ambiguous


def test_preference_below_one_takes_the_higher_of_comparable_plateaus():
    spectrum = np.array([1.0, 0.5, 1e-4, 5e-5, 1e-5])
    choice = plateau_threshold(spectrum, floor=1e-10, preference=0.5)
    assert choice.upper == 0.5 and choice.ambiguous and choice.runner_up_count == 5.0


@pytest.mark.parametrize(
    ("spectrum", "status"),
    [
        ([1.0, 0.5, 1e-7, 5e-8, 0.0], "AMBIGUOUS_PLATEAU"),
        ([1.0, 0.5, 1e-6, 0.0], "AMBIGUOUS_PLATEAU"),
        ([1.0, 0.5, 1e-2, 0.0], "CONVERGED"),
    ],
)
def test_competing_plateaus_are_never_converged(spectrum, status):
    matrix = np.diag(spectrum)
    for method in ("exact", "lanczos"):
        result = matrank.estimate_rank(matrix, method=method, seed=0)
        assert result.status.name == status
        truth = int((np.abs(spectrum) > result.threshold).sum())
        assert result.rank == truth  # the count at the reported τ is right regardless


def test_zero_spectrum():
    choice = plateau_threshold(np.zeros(4), floor=0.0)
    assert choice.threshold == 0.0 and choice.decades == math.inf


def test_counting_curve_counts_magnitudes():
    curve = counting_curve(
        np.array([-3.0, 2.0, 1e-3, 0.0]), low=1e-6, high=10.0, n_points=50
    )
    assert curve.counts[0] == 3 and curve.counts[-1] == 0
    # read at the grid point below: exact away from the eigenvalues
    assert curve.at(1e-4) == 3 and curve.at(1.0) == 2 and curve.at(5.0) == 0
    assert np.all(np.diff(curve.counts) <= 0)


def test_resolve_threshold_floor_and_user_values():
    spectrum = np.array([1.0, 0.5, 1e-10, 0.0])
    assert resolve_threshold(spectrum, 1e-13, "floor") == (1e-13, None)
    assert resolve_threshold(spectrum, 1e-13, 0.25) == (0.25, None)
    threshold, choice = resolve_threshold(spectrum, 1e-13, None)
    assert 1e-10 < threshold < 0.5 and choice is not None


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("flor", matrank.MatrankTypeError, r"\[0, inf\), 'floor' or None; got 'flor'"),
        (-1.0, matrank.MatrankValueError, r"`threshold` must be .*; got -1.0"),
        ([1.0], matrank.MatrankTypeError, r"`threshold` must be .*; got \[1.0\]"),
    ],
)
def test_bad_threshold_options_are_refused(value, error, match):
    for method in ("exact", "lanczos"):
        with pytest.raises(error, match=match):
            matrank.estimate_rank(np.eye(3), method=method, threshold=value)


def curve_samples(spectrum, grid, probes=4):
    """Noise-free per-probe samples of the counting curve of ``spectrum`` on ``grid``."""
    counts = (np.abs(spectrum)[:, None] > grid[None]).sum(axis=0).astype(float)
    return np.tile(counts, (probes, 1))


def test_estimated_curve_takes_a_gap_above_a_narrow_band():
    # signal in [1, 2], a band at 1e-3..2e-3, flat again down to the curve's end
    rng = np.random.default_rng(0)
    spectrum = np.concatenate([rng.uniform(1, 2, 10), rng.uniform(1e-3, 2e-3, 30)])
    grid = np.geomspace(1e-5, 3.0, 300)
    choice = flat_stretch_threshold(grid, curve_samples(spectrum, grid))
    assert choice.upper >= 0.99 and choice.lower <= 2.1e-3 and choice.decades > 2


def test_estimated_curve_refuses_a_gap_over_a_continuum_that_runs_off_its_end():
    # one outlier a decade above eigenvalues spread log-uniformly over 4 decades,
    # continuing below the curve's lowest threshold (a network Hessian, seen to a reach)
    rng = np.random.default_rng(1)
    spectrum = np.concatenate([[170.0], 10 ** rng.uniform(-6, 1.2, 600)])
    grid = np.geomspace(7e-3, 180.0, 300)
    choice = flat_stretch_threshold(grid, curve_samples(spectrum, grid))
    assert choice.decades == 0.0
    assert choice.runner_up_decades > 0.9  # the outlier's gap, seen and set aside
    # the same outlier over a continuum that ends inside the curve, flat beneath it:
    # the plateau rule stands: the flat bottom and the outlier's gap compete
    ending = np.concatenate([[170.0], 10 ** rng.uniform(-1, 1.2, 600)])
    kept = flat_stretch_threshold(grid, curve_samples(ending, grid))
    assert kept.upper < 0.1 and kept.decades > 1.0
    assert kept.ambiguous and kept.runner_up_count == pytest.approx(1.0, abs=0.5)
    assert 10 < kept.runner_up_threshold < 170


@pytest.mark.parametrize("method", ["exact", "lanczos", "polynomial"])
def test_a_relative_threshold_is_a_fraction_of_the_spectral_norm(method):
    spectrum = np.concatenate([[8.0], np.linspace(1.0, 2.0, 9), [1e-3] * 5, np.zeros(45)])
    result = matrank.estimate_rank(
        np.diag(spectrum), method=method, seed=0, threshold=matrank.relative(1e-2)
    )
    assert result.threshold == pytest.approx(0.08, rel=1e-6)
    assert round(result.rank) == 10
    assert result.diagnostics.relative_threshold["fraction"] == 1e-2
    spent = result.diagnostics.relative_threshold["matvecs"]
    assert 0 < spent <= 64 and result.cost["matvecs"] >= spent


def test_a_relative_threshold_is_refused_where_it_cannot_be_resolved():
    with pytest.raises(
        matrank.MatrankValueError, match=r"`fraction` must be a real number in \(0, 1\)"
    ):
        matrank.relative(1.5)
    with pytest.raises(matrank.MatrankValueError, match="relative to a non-zero"):
        matrank.estimate_rank(np.zeros((4, 4)), threshold=matrank.relative(0.1))
    losses_only = matrank.adapters.LossFunction(lambda X: (X**2).sum(axis=1), np.zeros(3))
    with pytest.raises(matrank.MatrankTypeError, match="left out with method='evol"):
        matrank.estimate_rank(losses_only, threshold=matrank.relative(0.1))
    with pytest.raises(matrank.MatrankValueError, match="needs them to find"):
        matrank._api._spectral_norm(matrank.as_oracle(losses_only), seed=0)


def test_signed_counts_in_str_json_and_a_compact_repr():
    result = matrank.estimate_rank(np.diag([3.0, 2.0, -1.0, 0.0]), method="exact")
    assert (result.n_positive, result.n_negative) == (2, 1)
    assert str(result).startswith("rank 3 = 2 positive + 1 negative (method=exact")
    assert result.to_dict()["n_negative"] == 1
    assert len(repr(result)) < 200 and repr(result).startswith("RankResult(rank=3")
    definite = matrank.estimate_rank(np.diag([3.0, 2.0, 0.0]), method="exact")
    assert definite.n_negative == 0 and "positive" not in str(definite)


def test_a_float32_curve_without_a_clear_plateau_names_float64_as_the_remedy():
    spectrum = np.geomspace(1e-5, 1.0, 60)  # a continuum down to float32's floor
    as32 = matrank.estimate_rank(torch.diag(torch.tensor(spectrum, dtype=torch.float32)))
    assert as32.status is matrank.Status.NO_PLATEAU
    assert "dtype=torch.float64" in as32.diagnostics.remedy
    assert "remedy: the oracle computes in float32" in str(as32)
    as64 = matrank.estimate_rank(np.diag(spectrum))
    assert "remedy" not in as64.diagnostics  # float64 has nothing to offer beyond it


class _Rotated32:
    """``U·diag(d)·Uᵀ`` applied in float32 in two factors: rounding makes the products
    slightly asymmetric, as a float32 curvature's are."""

    def __init__(self, spectrum: np.ndarray, seed: int = 0):
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.standard_normal((spectrum.size, spectrum.size)))
        self.basis = torch.tensor(basis, dtype=torch.float32)
        self.values = torch.tensor(spectrum, dtype=torch.float32)[:, None]
        self.dim, self.dtype, self.device = (
            spectrum.size,
            torch.float32,
            torch.device("cpu"),
        )
        self.theta0 = torch.zeros(self.dim, dtype=torch.float32)
        self.capabilities = matrank.Capability.HVP

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        return self.basis @ (self.values * (self.basis.T @ V))


def test_every_method_has_one_floor_for_the_same_float32_input():
    # A continuum through float32's floor: τ is the floor, so the floor sets the count.
    # Before the methods shared one rule, Lanczos stopped 20× higher (its verification
    # resolution on a basis that already spanned all of R^n) and polynomial ignored the
    # asymmetry of the products.
    spectrum = np.geomspace(1e-9, 1.0, 120)
    truth = np.linalg.eigvalsh(np.diag(spectrum))
    floors, counts = {}, {}
    for method in ("exact", "lanczos", "polynomial"):
        result = matrank.estimate_rank(_Rotated32(spectrum), method=method, seed=0)
        assert result.status is matrank.Status.NO_PLATEAU
        floors[method] = result.diagnostics.noise_floor
        counts[method] = result.rank
        assert result.rank == (np.abs(truth) > result.threshold).sum()
    assert max(floors.values()) <= 1.5 * min(floors.values()), floors
    assert max(counts.values()) - min(counts.values()) <= 2, counts
