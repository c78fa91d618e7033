"""EvolutionRank and LossFunction: the null-space identity, selection theory, counts."""

import math

import numpy as np
import pytest
import torch

import matrank
from matrank.adapters import LossFunction, TorchLoss
from matrank.estimators.evolution import null_band
from matrank.testing import catalogue, haar_orthogonal, rotated_spectrum


def quadratic(eigenvalues, seed=0):
    """``f(θ) = ½ θᵀHθ`` as a black-box numpy function, and its eigenbasis."""
    n = len(eigenvalues)
    q = haar_orthogonal(n, np.random.default_rng(seed))
    hessian = (q * np.asarray(eigenvalues)) @ q.T
    return (lambda X: 0.5 * np.einsum("bi,ij,bj->b", X, hessian, X)), q


def test_null_directions_keep_unit_variance_and_curved_ones_follow_the_tilt():
    # research notes §7: μ = {4, 2, 1, .5, 0, 0, 0, 0}; truncation keeps the best 5 %
    mu = np.array([4.0, 2.0, 1.0, 0.5, 0, 0, 0, 0])
    f, q = quadratic(mu, seed=1)
    estimator = matrank.EvolutionRank(keep=0.05, max_evals=400_000)
    result = estimator.estimate(LossFunction(f, np.zeros(8)), seed=0)
    assert result.rank == 4 and result.status is matrank.Status.CONVERGED
    covariance = q.T @ result.diagnostics.covariance @ q  # in H's eigenbasis
    kept = result.diagnostics.kept
    variances = np.diag(covariance)
    # (a) exactly 1 on the null space, whatever the selection: stderr sqrt(2/N)
    assert np.all(np.abs(variances[4:] - 1) < 4 * math.sqrt(2 / kept))
    # (b) diagonal in H's eigenbasis (sign symmetry): off-diagonals at sampling noise
    off = covariance - np.diag(variances)
    assert np.abs(off).max() < 5 / math.sqrt(kept)
    # (c) curved variances follow exponential tilting 1/(1 + βs²μ) with the β read off
    # the kept losses (the notes' simulation: within 4 %)
    beta, s = result.diagnostics.tilt, result.diagnostics.scale
    tilt = 1 / (1 + beta * s**2 * mu[:4])
    np.testing.assert_allclose(variances[:4], tilt, rtol=0.1)


def test_null_band_matches_white_wishart_smallest_eigenvalues():
    rng = np.random.default_rng(0)
    n, kept = 20, 400
    edge, scale = null_band(n, kept)
    smallest = [
        np.linalg.eigvalsh(np.cov(rng.standard_normal((kept, n)), rowvar=False, bias=True))[
            0
        ]
        for _ in range(200)
    ]
    # the cut at edge − 4 scales is passed by (almost) no pure-noise eigenvalue
    assert np.mean(np.array(smallest) < edge - 4 * scale) < 0.01
    # and the edge is where they sit: their median within a couple of scales
    assert abs(np.median(smallest) - edge) < 3 * scale


@pytest.mark.parametrize(
    ("n", "rank", "cond"),
    [(10, 0, 1.0), (12, 3, 10.0), (16, 16, 2.0), (24, 6, 10.0), (32, 12, 4.0)],
)
def test_counts_gapped_quadratics_exactly(n, rank, cond):
    matrix = rotated_spectrum(n, rank, cond=cond, seed=n + rank)
    result = matrank.estimate_rank(matrix, method="evolution", seed=0)
    assert result.rank == rank
    assert result.status is matrank.Status.CONVERGED
    assert result.cost["evals"] > 0 and result.cost["gradients"] == 0
    assert result.diagnostics.margin >= 2


@pytest.mark.parametrize("case", catalogue(max_n=64), ids=lambda case: case.name)
def test_counts_the_small_catalogue_cases(case):
    result = matrank.EvolutionRank().estimate(case.matrix(), seed=0)
    assert result.rank == case.rank and result.status is matrank.Status.CONVERGED


def test_comma_selection_keeps_the_best_of_each_population():
    matrix = rotated_spectrum(6, 2, cond=2.0, seed=0)
    result = matrank.EvolutionRank(selection="comma", population=50).estimate(
        matrix, seed=0
    )
    assert result.rank == 2
    # one kept sample per population of 50
    assert result.diagnostics.kept == result.diagnostics.populations


def test_threshold_is_consistent_with_the_counted_eigenvalues():
    eigenvalues = np.array([1.0, 0.5, 0.2, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    f, _ = quadratic(eigenvalues, seed=2)
    result = matrank.EvolutionRank(max_evals=50_000).estimate(
        LossFunction(f, np.zeros(10)), seed=0
    )
    # whatever it counts, the eigenvalues it reports as above τ are the ones it counted
    assert result.rank == int((eigenvalues > result.threshold).sum())


def test_unresolved_count_warns_with_the_evaluations_needed():
    matrix = rotated_spectrum(40, 30, cond=30.0, seed=3)
    with pytest.warns(matrank.MatrankWarning, match=r"loss evaluations would separate"):
        result = matrank.EvolutionRank(max_evals=5000).estimate(matrix, seed=0)
    assert result.status is matrank.Status.BUDGET_EXHAUSTED
    assert result.cost["evals"] <= 5000


def test_auto_picks_evolution_for_loss_only_oracles():
    f, _ = quadratic([3.0, 1.0, 0, 0, 0], seed=4)
    result = matrank.estimate_rank(LossFunction(f, np.zeros(5)), seed=0)
    assert result.method == "evolution" and result.rank == 2
    assert "loss values only" in result.diagnostics.auto


def test_scale_is_chosen_where_the_loss_is_quadratic():
    # quartic terms dominate far from the minimum: s must shrink until the second
    # difference scales as s², and the rank is then that of the quadratic part
    def f(X):
        return (X[:, :2] ** 2).sum(axis=1) + 1e4 * (X**4).sum(axis=1)

    result = matrank.EvolutionRank().estimate(LossFunction(f, np.ones(6) * 0), seed=0)
    assert result.rank == 2
    assert abs(result.diagnostics.quadratic_ratio / 4 - 1) <= 0.05


def test_tiny_mlp_through_torch_loss_agrees_with_its_hessian():
    # a linear model at an under-determined exact fit: rank = samples = 5 of 12
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(12, 1, bias=False).double()
    X = torch.randn(5, 12, dtype=torch.float64, generator=generator)
    oracle = TorchLoss(model, torch.nn.functional.mse_loss, (X, model(X).detach()))
    truth = np.linalg.matrix_rank(oracle.dense_hessian().numpy(), hermitian=True)
    result = matrank.estimate_rank(oracle, method="evolution", seed=0)
    assert truth == 5 and result.rank == truth


def test_nonlinear_mlp_count_matches_its_hessian_at_the_reported_threshold():
    # a tanh MLP (31 parameters) fitted exactly by its own outputs on 8 inputs: the
    # Hessian JᵀJ has rank 8 with eigenvalues over four decades; the count must be the
    # number of Hessian eigenvalues above the threshold the estimator reports
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)
    ).double()
    X = torch.randn(8, 3, dtype=torch.float64, generator=generator)
    oracle = TorchLoss(model, torch.nn.functional.mse_loss, (X, model(X).detach()))
    eigenvalues = np.linalg.eigvalsh(oracle.dense_hessian().numpy())
    result = matrank.estimate_rank(oracle, method="evolution", seed=0)
    assert abs(result.diagnostics.quadratic_ratio / 4 - 1) <= 0.05
    assert result.rank == int((eigenvalues > result.threshold).sum())
    assert 1 <= result.rank <= 8


def test_loss_function_adapter_and_messages():
    torch_f = LossFunction(lambda T: (T**2).sum(dim=1), torch.zeros(3))
    assert torch_f.loss(torch.ones(2, 3, dtype=torch.float32)).tolist() == [3.0, 3.0]
    rowwise = LossFunction(lambda x: float(x[0] ** 2), [0.0, 0.0], batched=False)
    assert rowwise.dtype == torch.float64
    assert rowwise.loss(torch.ones(4, 2, dtype=torch.float64)).shape == (4,)
    with pytest.raises(matrank.MatrankValueError, match=r"one loss per row \(2 rows\)"):
        LossFunction(lambda X: np.zeros(3), np.zeros(2)).loss(torch.zeros(2, 2))
    with pytest.raises(matrank.MatrankTypeError, match=r"`fn` must be a callable"):
        LossFunction(3, np.zeros(2))
    with pytest.raises(matrank.MatrankValueError, match=r"`theta0` must be finite"):
        LossFunction(lambda X: X.sum(1), np.array([np.nan, 0.0]))
    with pytest.raises(matrank.MatrankValueError, match=r"`theta0` must be a minimum"):
        matrank.EvolutionRank().estimate(
            LossFunction(lambda X: -(X**2).sum(1), np.zeros(3))
        )
    with pytest.raises(matrank.MatrankValueError, match=r"at most max_dim = 4"):
        matrank.EvolutionRank(max_dim=4).estimate(np.eye(5))
    with pytest.raises(matrank.MatrankValueError, match=r"`selection` must be one of"):
        matrank.EvolutionRank(selection="plus")
    flat = matrank.EvolutionRank().estimate(
        LossFunction(lambda X: X.sum(1) * 0, np.zeros(4))
    )
    assert flat.rank == 0
    with pytest.raises(
        matrank.MatrankValueError, match=r"an oracle with loss for method='evolution'"
    ):
        matrank.EvolutionRank().estimate(_HvpOnly())


class _HvpOnly:
    dim, dtype, device = 3, torch.float64, torch.device("cpu")
    theta0 = torch.zeros(3, dtype=torch.float64)
    capabilities = matrank.Capability.HVP

    def hvp(self, V):
        return V
