"""The widest-plateau threshold rule, on spectra whose answer is known."""

import math

import numpy as np
import pytest

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


def test_the_higher_of_two_comparable_plateaus_wins():
    # a band 4 decades under the signal and 5 decades above the floor
    spectrum = np.array([1.0, 0.5, 1e-4, 5e-5, 1e-5])
    choice = plateau_threshold(spectrum, floor=1e-10)
    assert choice.upper == 0.5 and choice.lower == 1e-4
    assert choice.runner_up_decades == pytest.approx(5.0)
    # a cluster 1 decade under the signal is part of it: the floor plateau wins
    choice = plateau_threshold(np.array([1.0, 0.1, 0.05]), floor=1e-14)
    assert choice.upper == 0.05


def test_preference_one_is_the_plain_widest_gap():
    spectrum = np.array([1.0, 0.5, 1e-4, 5e-5, 1e-5])
    assert plateau_threshold(spectrum, floor=1e-10, preference=1.0).upper == 1e-5


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
    # the plateau rule stands (the higher of two comparable plateaus)
    ending = np.concatenate([[170.0], 10 ** rng.uniform(-1, 1.2, 600)])
    kept = flat_stretch_threshold(grid, curve_samples(ending, grid))
    assert kept.lower > 10 and kept.upper == pytest.approx(170, rel=0.02)
    assert kept.decades > 0.9
