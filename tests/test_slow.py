"""Benchmark-sized checks, deselected by default: ``pytest -m slow`` (several minutes)."""

import importlib.util
import pathlib

import numpy as np
import pytest

import matrank
from matrank.adapters import LinearNetHessian

pytestmark = pytest.mark.slow

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    module = benchmark("digits_denoiser")
    info = module.experiment(verbose=False, polynomial=True)
    rows = {name: (result, spectrum) for name, result, spectrum in info["rows"]}
    return module, info, rows


@pytest.mark.parametrize("name", ["lanczos", "polynomial"])
def test_digits_denoiser_products_match_the_dense_gap_rule(digits, name):
    module, info, rows = digits
    gap_rank = rows["dense gap rule (exact)"][0].rank
    result, _ = rows[name]
    assert abs(result.rank - gap_rank) <= 0.05 * gap_rank
    assert module.energy(info["eigenvalues"], result.rank) >= 0.985


@pytest.mark.xfail(
    reason="with the automatic σ² the virial readout sees the ReLU kinks: -643 ± 218 on "
    "this CNN at stop 12 (117.8 ± 3.3 for N(τ) = 134 at σ² = 2e-5; issue 5 open)",
    strict=False,
)
@pytest.mark.parametrize("name", ["langevin", "langevin (Adam G)"])
def test_digits_denoiser_langevin_counts_above_its_threshold(digits, name):
    module, info, rows = digits
    result, spectrum = rows[name]
    # a soft count of the eigenvalues above its threshold: held to the dense count
    # there, and to the paper's energy criterion
    counted = module.dense_count(result, spectrum)
    assert abs(result.rank - counted) <= 4 * result.stderr, (result.rank, counted)
    assert module.energy(info["eigenvalues"], result.rank) >= 0.985


@pytest.mark.parametrize("d", [32, 64])
def test_langevin_default_on_the_paper_linear_nets(d):
    for trial in range(3):
        problem = LinearNetHessian.random_minimum(d, d, 5, seed=1000 + trial)
        spectrum = problem.spectrum()
        result = matrank.LangevinRank().estimate(problem, seed=trial)
        counted = int((spectrum > result.threshold).sum())
        assert abs(result.rank - counted) <= 4 * result.stderr
        well = LinearNetHessian.random_minimum(
            d, d, 5, seed=2000 + trial, target="well-conditioned"
        )
        estimate = matrank.LangevinRank().estimate(well, seed=trial)
        assert abs(estimate.rank / d**2 - 1) <= 0.01
        assert np.isfinite(estimate.stderr)
