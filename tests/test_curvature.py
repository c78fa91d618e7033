"""TorchGGN: the generalised Gauss–Newton oracle against closed forms and theory."""

import pytest
import torch

import matrank
from matrank.adapters import TorchGGN, TorchLoss
from matrank.testing import linear_network_loss
from matrank.theory import linear_network_ranks

F = torch.nn.functional


def _dense(oracle):
    return oracle.hvp(torch.eye(oracle.dim, dtype=torch.float64))


def _data(n_samples, d, outputs=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n_samples, d, generator=generator, dtype=torch.float64)
    Y = torch.randn(n_samples, outputs, generator=generator, dtype=torch.float64)
    return X, Y


def test_linear_regression_ggn_is_two_xtx_over_n_and_equals_the_hessian():
    X, Y = _data(30, 7)
    model = torch.nn.Linear(7, 1, bias=False, dtype=torch.float64)
    ggn = TorchGGN(model, F.mse_loss, (X, Y), chunk_size=8)  # uneven chunks
    expected = 2 * X.T @ X / 30
    torch.testing.assert_close(_dense(ggn), expected, rtol=1e-12, atol=0)
    hessian = TorchLoss(model, F.mse_loss, (X, Y), gradient_tol=None)
    torch.testing.assert_close(_dense(ggn), _dense(hessian), rtol=1e-12, atol=1e-15)


def test_logistic_regression_ggn_is_xt_diag_p_one_minus_p_x_over_n():
    X, _ = _data(40, 6)
    labels = (torch.rand(40, 1, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    model = torch.nn.Linear(6, 1, bias=False, dtype=torch.float64)
    ggn = TorchGGN(model, F.binary_cross_entropy_with_logits, (X, labels))
    with torch.no_grad():
        p = torch.sigmoid(model(X))[:, 0]
    expected = X.T @ ((p * (1 - p))[:, None] * X) / 40
    torch.testing.assert_close(_dense(ggn), expected, rtol=1e-12, atol=0)


PROFILES = [
    (6, [3, 4], 5, 40, None),
    (25, [5, 10], 10, 50, None),  # the authors' notebook: Hessian rank 250 of 275
    (12, [8, 3, 8], 6, 100, 7),  # bottleneck, inputs of rank 7
    (9, [20], 4, 30, 5),
    (10, [10, 10], 10, 60, None),  # a full-rank Hessian at a generic point
]


@pytest.mark.parametrize(("d_in", "hidden", "d_out", "n_samples", "data_rank"), PROFILES)
@pytest.mark.parametrize("loss", ["mse", "cross-entropy"])
@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_ranks_are_singh_bachmann_hofmanns(
    d_in, hidden, d_out, n_samples, data_rank, loss, curvature
):
    """The Hessian at a generic point, and its outer-product part (the GGN), have the
    closed-form ranks; cross-entropy's softmax has rank K − 1 in the outputs."""
    model, X, Y = linear_network_loss(
        d_in, hidden, d_out, n_samples=n_samples, data_rank=data_rank, seed=1
    )
    if loss == "mse":
        data, loss_fn, outputs = (X, Y), F.mse_loss, d_out
    else:
        labels = torch.randint(0, d_out, (n_samples,), generator=torch.Generator())
        data, loss_fn, outputs = (X, labels), F.cross_entropy, d_out - 1
    if curvature == "ggn":
        oracle = TorchGGN(model, loss_fn, data)
    else:
        oracle = TorchLoss(model, loss_fn, data, gradient_tol=None)
    ranks = linear_network_ranks(d_in, hidden, outputs, data_rank=data_rank)
    expected = ranks.outer if curvature == "ggn" else ranks.hessian
    for method in ("exact", "lanczos"):
        result = matrank.estimate_rank(oracle, method=method, seed=0)
        assert result.rank == expected, method
        assert result.status is matrank.Status.CONVERGED


def test_ggn_is_psd_where_the_hessian_is_not():
    model, X, Y = linear_network_loss(6, [5], 4, n_samples=30, seed=2)
    hessian = matrank.estimate_rank(
        TorchLoss(model, F.mse_loss, (X, Y), gradient_tol=None), method="exact"
    )
    ggn = matrank.estimate_rank(TorchGGN(model, F.mse_loss, (X, Y)), method="exact")
    assert hessian.diagnostics["n_negative"] > 0
    assert ggn.diagnostics["n_negative"] == 0
    assert (
        ggn.diagnostics["eigenvalues"].min() > -1e-12 * ggn.diagnostics["eigenvalues"].max()
    )


def test_ggn_offers_products_only():
    X, Y = _data(10, 3)
    model = torch.nn.Linear(3, 1, bias=False, dtype=torch.float64)
    ggn = TorchGGN(model, F.mse_loss, (X, Y))
    assert ggn.capabilities == matrank.Capability.HVP
    with pytest.raises(matrank.MatrankError, match="langevin"):
        matrank.estimate_rank(ggn, method="langevin")
    assert repr(ggn).startswith("TorchGGN(Linear, n=3")
