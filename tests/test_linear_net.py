"""The deep-linear-net Hessian adapter against autograd and its closed-form spectrum."""

import numpy as np
import pytest
import torch

import matrank
from matrank._oracle import CostMeter, as_oracle, gradient_precision
from matrank.adapters import LinearNetHessian
from matrank.testing import check_oracle


@pytest.mark.parametrize(
    ("d_in", "d_out", "depth", "target"),
    [
        (4, 4, 3, "paper"),
        (3, 5, 4, "well-conditioned"),
        (5, 2, 2, "well-conditioned"),
        (3, 3, 1, "paper"),
    ],
)
def test_hvp_grad_and_loss_match_autograd(d_in, d_out, depth, target):
    problem = LinearNetHessian.random_minimum(d_in, d_out, depth, seed=1, target=target)
    check_oracle(problem)
    hessian = torch.func.hessian(lambda t: problem.loss(t[None])[0])(problem.theta0)
    dense = matrank.materialize(problem)
    assert float((hessian - dense).abs().max()) <= 1e-12 * float(hessian.abs().max())
    theta = problem.theta0 + 0.05 * torch.randn(
        2, problem.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    expected = torch.stack(
        [torch.func.grad(lambda t: problem.loss(t[None])[0])(row) for row in theta]
    )
    torch.testing.assert_close(problem.grad(theta), expected, rtol=1e-12, atol=1e-12)
    assert float(problem.loss(problem.theta0[None])[0]) == pytest.approx(0.0, abs=1e-20)
    assert (
        matrank.estimate_rank(dense.numpy(), method="exact").rank
        == d_in * d_out
        == matrank.exact_rank(problem)
    )


@pytest.mark.parametrize("d", [4, 6])
def test_closed_form_spectrum(d):
    problem = LinearNetHessian.random_minimum(d, d, 5, seed=2)
    eigenvalues = np.linalg.eigvalsh(matrank.materialize(problem).numpy())[::-1]
    closed = problem.spectrum()
    np.testing.assert_allclose(eigenvalues[: d * d], closed, rtol=1e-9)
    assert np.abs(eigenvalues[d * d :]).max() < 1e-10 * closed[0]


@pytest.mark.parametrize("d", [8, 16])
def test_lanczos_counts_the_paper_problem_exactly(d):
    problem = LinearNetHessian.random_minimum(d, d, 5, seed=0)
    result = matrank.estimate_rank(problem, method="lanczos", seed=0)
    assert result.rank == d * d and result.diagnostics.certified


def test_input_covariance_enters_the_hessian():
    base = LinearNetHessian.random_minimum(3, 3, 2, seed=3, target="well-conditioned")
    covariance = torch.diag(torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64))
    problem = LinearNetHessian(base.weights, base.target, covariance)
    hessian = torch.func.hessian(lambda t: problem.loss(t[None])[0])(problem.theta0)
    torch.testing.assert_close(
        matrank.materialize(problem), hessian, rtol=1e-12, atol=1e-12
    )
    theta = problem.theta0 + 0.1 * torch.randn(
        3, problem.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    expected = torch.stack(
        [torch.func.grad(lambda t: problem.loss(t[None])[0])(row) for row in theta]
    )
    torch.testing.assert_close(problem.grad(theta), expected, rtol=1e-12, atol=1e-12)


def test_bad_construction_messages():
    base = LinearNetHessian.random_minimum(3, 3, 2, seed=4)
    with pytest.raises(
        matrank.MatrankValueError, match=r"`weights` must be a global minimum"
    ):
        LinearNetHessian([2 * base.weights[0], base.weights[1]], base.target)
    with pytest.raises(
        matrank.MatrankValueError, match=r"`weights\[1\]` must be a matrix with 3 columns"
    ):
        LinearNetHessian([base.weights[0], torch.ones(3, 4)], base.target)
    with pytest.raises(
        matrank.MatrankValueError, match=r"`input_covariance` must be positive definite"
    ):
        LinearNetHessian(base.weights, base.target, -torch.eye(3))
    with pytest.raises(
        matrank.MatrankValueError, match=r"`d_out` must be equal to d_in for target='paper'"
    ):
        LinearNetHessian.random_minimum(3, 4, 2)
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`target` must be one of 'paper', 'well-conditioned'",
    ):
        LinearNetHessian.random_minimum(3, 3, 2, target="random")
    with pytest.raises(
        matrank.MatrankValueError,
        match=r"`gradient_dtype` must be torch.float64 or torch.float32",
    ):
        LinearNetHessian(base.weights, base.target, gradient_dtype=torch.float16)


def test_single_precision_gradients_leave_the_langevin_estimate_unchanged():
    # float32 products: the gradient near the minimum is off by ~1e-4 relative, far
    # below the chains' noise, so the same seed gives the same estimate to a small
    # fraction of its stderr (measured at d = 32: 0.01 stderr)
    double = LinearNetHessian.random_minimum(8, 8, 5, seed=1001)
    single = LinearNetHessian.random_minimum(
        8, 8, 5, seed=1001, gradient_dtype=torch.float32
    )
    check_oracle(single)  # its finite-difference step sized for float32
    assert gradient_precision(CostMeter(as_oracle(single))) == torch.float32
    assert gradient_precision(CostMeter(as_oracle(double))) == torch.float64
    theta = double.theta0 + 1e-3 * torch.randn(
        4, double.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    exact, rounded = double.grad(theta), single.grad(theta)
    assert rounded.dtype == torch.float64
    error = torch.linalg.vector_norm(rounded - exact, dim=1)
    assert float((error / torch.linalg.vector_norm(exact, dim=1)).max()) < 1e-4
    a = matrank.LangevinRank(max_gradients=4000).estimate(double, seed=3)
    b = matrank.LangevinRank(max_gradients=4000).estimate(single, seed=3)
    assert abs(a.rank - b.rank) < 0.1 * a.stderr
    assert b.threshold == pytest.approx(a.threshold, rel=0.05)


def test_linear_network_ranks_refuses_empty_widths():
    from matrank.theory import linear_network_ranks

    with pytest.raises(matrank.MatrankValueError, match="widths"):
        linear_network_ranks(4, [0, 3], 2)
    # q(r + K − q) for the outer part; cross-entropy uses K − 1 outputs
    assert linear_network_ranks(5, [4], 3, data_rank=2).outer == 2 * (2 + 3 - 2)
