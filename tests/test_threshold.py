"""The widest-plateau threshold rule, on spectra whose answer is known."""

import math

import numpy as np
import pytest

import matrank
from matrank.numerics.threshold import counting_curve, plateau_threshold, resolve_threshold


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
