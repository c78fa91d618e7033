"""TorchGGN and TorchFisher against closed forms and theory, and their dual route."""

import pytest
import torch

import matrank
from matrank.adapters import TorchFisher, TorchGGN, TorchLoss
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
    routes = {
        "exact": matrank.ExactRank(dual=False),
        "lanczos": matrank.LanczosRank(),
        "polynomial": matrank.PolynomialRank(),
    }
    if curvature == "ggn":
        routes["dual"] = matrank.ExactRank(dual=True)
    for route, estimator in routes.items():
        result = estimator.estimate(oracle, seed=0)
        assert result.status is matrank.Status.CONVERGED, route
        # polynomial's count is stochastic: within three of its standard errors
        assert abs(result.rank - expected) <= 3 * (result.stderr or 0.0), route
    if curvature == "ggn":
        assert result.diagnostics.dual["rows"] == n_samples * outputs
        # the form states the rows kept, not C a sample: what auto weighs
        form = matrank.dual_form(oracle)
        assert form.size == n_samples * outputs
        assert form.what.endswith(f"{form.size} kept of {n_samples * d_out}")


def test_ggn_is_psd_where_the_hessian_is_not():
    model, X, Y = linear_network_loss(6, [5], 4, n_samples=30, seed=2)
    hessian = matrank.estimate_rank(
        TorchLoss(model, F.mse_loss, (X, Y), gradient_tol=None), method="exact"
    )
    ggn = matrank.estimate_rank(TorchGGN(model, F.mse_loss, (X, Y)), method="exact")
    assert hessian.diagnostics.n_negative > 0
    assert ggn.diagnostics.n_negative == 0
    assert ggn.diagnostics.eigenvalues.min() > -1e-12 * ggn.diagnostics.eigenvalues.max()


def test_ggn_offers_products_only():
    X, Y = _data(10, 3)
    model = torch.nn.Linear(3, 1, bias=False, dtype=torch.float64)
    ggn = TorchGGN(model, F.mse_loss, (X, Y))
    assert ggn.capabilities == matrank.Capability.HVP
    with pytest.raises(matrank.MatrankError, match="langevin"):
        matrank.estimate_rank(ggn, method="langevin")
    assert repr(ggn).startswith("TorchGGN(Linear, n=3")


def _per_sample_gradients(model, loss_fn, X, Y):
    rows = []
    for i in range(X.shape[0]):
        one = TorchLoss(model, loss_fn, (X[i : i + 1], Y[i : i + 1]), gradient_tol=None)
        rows.append(one.grad(one.theta0[None])[0])
    return torch.stack(rows)


def test_fisher_of_linear_and_logistic_regression_has_its_closed_form():
    """``(1/N) Σ g_i g_iᵀ`` with ``g_i = 2 r_i x_i`` (squared error) and
    ``g_i = (p_i − y_i) x_i`` (logistic)."""
    X, Y = _data(30, 7)
    model = torch.nn.Linear(7, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        residual = (model(X) - Y)[:, 0]
    fisher = TorchFisher(model, F.mse_loss, (X, Y), chunk_size=8)
    expected = X.T @ ((4 * residual**2)[:, None] * X) / 30
    torch.testing.assert_close(_dense(fisher), expected, rtol=1e-12, atol=0)

    labels = (torch.rand(30, 1, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    fisher = TorchFisher(model, F.binary_cross_entropy_with_logits, (X, labels))
    with torch.no_grad():
        p = torch.sigmoid(model(X))[:, 0]
    expected = X.T @ (((p - labels[:, 0]) ** 2)[:, None] * X) / 30
    torch.testing.assert_close(_dense(fisher), expected, rtol=1e-12, atol=0)


def _mlp(d_in=5, hidden=7, outputs=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, outputs)
    ).double()


def test_fisher_products_are_the_per_sample_gradients_gram_on_an_mlp():
    model = _mlp()
    X, _ = _data(23, 5, seed=3)
    labels = torch.randint(0, 3, (23,), generator=torch.Generator().manual_seed(4))
    fisher = TorchFisher(model, F.cross_entropy, (X, labels), chunk_size=10)
    G = _per_sample_gradients(model, F.cross_entropy, X, labels)
    torch.testing.assert_close(_dense(fisher), G.T @ G / 23, rtol=1e-12, atol=1e-15)
    result = matrank.estimate_rank(fisher, method="auto")
    assert result.method == "exact" and "dual" in result.diagnostics.auto
    assert result.rank == torch.linalg.matrix_rank(G).item() == 23


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
@pytest.mark.parametrize("loss", ["mse", "cross-entropy"])
def test_dual_spectrum_is_the_nonzero_spectrum_of_the_dense_curvature(kind, loss):
    """The dual's eigenvalues are the curvature's nonzero eigenvalues, from one pass and
    from panels that recompute rows (a memory budget of a few rows)."""
    model = _mlp(hidden=9)
    X, Y = _data(17, 5, outputs=3, seed=5)
    if loss == "mse":
        data, loss_fn = (X, Y), F.mse_loss
    else:
        labels = torch.randint(0, 3, (17,), generator=torch.Generator().manual_seed(6))
        data, loss_fn = (X, labels), F.cross_entropy
    cls = TorchGGN if kind == "ggn" else TorchFisher
    oracle = cls(model, loss_fn, data, chunk_size=6)
    dense = _dense(oracle)
    values = torch.linalg.eigvalsh(0.5 * (dense + dense.T)).flip(0)
    one_pass = matrank.ExactRank(dual=True).estimate(oracle)
    dual = one_pass.diagnostics.dual
    m = dual["rows"]
    expected_rows = {"ggn": 17 * (3 if loss == "mse" else 2), "fisher": 17}[kind]
    assert m == expected_rows and dual["passes"] == 1
    top = float(values[0])
    torch.testing.assert_close(
        torch.as_tensor(one_pass.diagnostics.eigenvalues),
        values[:m],
        rtol=0,
        atol=1e-12 * top,
    )
    assert float(values[m:].abs().max()) <= 1e-12 * top  # the n − m zeros
    small = cls(model, loss_fn, data, chunk_size=6, dual_memory=oracle.dim * 8 * 9)
    panels = matrank.ExactRank(dual=True).estimate(small)
    assert panels.diagnostics.dual["passes"] > 2
    assert panels.diagnostics.dual["rows_computed"] > dual["rows_computed"]
    np_equal = panels.diagnostics.eigenvalues - one_pass.diagnostics.eigenvalues
    assert abs(np_equal).max() <= 1e-13 * top
    assert panels.rank == one_pass.rank == int((values.abs() > one_pass.threshold).sum())


def test_auto_takes_the_dual_only_when_it_is_smaller():
    model, X, Y = linear_network_loss(25, [40, 40], 10, n_samples=20)  # n = 3000
    ggn = TorchGGN(model, F.mse_loss, (X, Y))
    result = matrank.estimate_rank(ggn, seed=0)
    assert "200 rows < dimension 3000" in result.diagnostics.auto
    assert result.rank == linear_network_ranks(25, [40, 40], 10, data_rank=20).outer
    # 200 rows / 20 samples, and the timing's 2 × 2 samples' rows
    assert result.cost["gradients"] == 10 + 2
    # on the suite's clock the rows cost more than a 3000 × 3000 eigvalsh: 2 × 32
    # products timed for the dense path, which the dual still undercuts
    assert (
        result.cost["matvecs"] == 64
        and "less than the dense path's" in result.diagnostics.auto
    )
    method, reason = matrank.auto_method(ggn)  # the timings are kept for the object
    assert method == "exact" and reason == result.diagnostics.auto
    assert matrank.estimate_rank(ggn, seed=0).cost["gradients"] == 10
    assert result.diagnostics.dual["zero_eigenvalues"] == 3000 - 200
    # 50 samples × 10 outputs > n = 275: the primal rules, and exact stays primal
    model, X, Y = linear_network_loss(25, [5, 10], 10, n_samples=50)
    ggn = TorchGGN(model, F.mse_loss, (X, Y))
    method, reason = matrank.auto_method(ggn)
    assert method == "exact" and "a dual of 500 rows, no fewer than n" in reason
    assert "dual" not in matrank.ExactRank().estimate(ggn).diagnostics


def test_the_dual_takes_cross_entropy_at_saturated_outputs():
    # Λ = diag(p) − ppᵀ is O(1 − p) here while its products round at O(1): the
    # per-sample check must measure that rounding, not refuse a mean loss (it did)
    X, _ = _data(60, 5)
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3, dtype=torch.float64)
    with torch.no_grad():
        model.weight.mul_(1000)
        p = torch.softmax(model(X), dim=1).max(dim=1).values
    assert float((1 - p).max()) < 1e-6  # every sample within 1e-6 of one-hot
    labels = model(X).argmax(dim=1).detach()
    oracle = TorchGGN(model, F.cross_entropy, (X, labels))
    dual = matrank.ExactRank(dual=True).estimate(oracle)
    assert "refused" not in dual.diagnostics.dual
    eigenvalues = torch.linalg.eigvalsh(_dense(oracle))
    assert dual.rank == int((eigenvalues.abs() > dual.threshold).sum()) > 0


def test_the_dual_refuses_what_it_cannot_count():
    model = _mlp()
    X, Y = _data(12, 5, outputs=3)

    def coupled(output, target):  # a penalty on the batch's spread couples the samples
        return F.mse_loss(output, target) + output.var(dim=0).sum()

    oracle = TorchGGN(model, coupled, (X, Y))
    with pytest.raises(matrank.MatrankValueError, match="per-sample"):
        matrank.ExactRank(dual=True).estimate(oracle)
    primal = matrank.ExactRank(dual=False).estimate(oracle)
    assert primal.rank > 0
    # dual=None (and auto) count H from its products instead, and say why
    fallback = matrank.ExactRank().estimate(oracle)
    assert "per-sample" in fallback.diagnostics.dual["refused"]
    assert fallback.rank == primal.rank and fallback.threshold == primal.threshold
    assert fallback.cost["matvecs"] == oracle.dim
    auto = matrank.estimate_rank(oracle, method="auto", seed=0)
    assert auto.method == "exact" and "dual that does not hold" in auto.diagnostics.auto
    assert auto.rank == primal.rank

    def concave(output, target):  # Λ ⪯ 0: G is not BᵀB
        return -F.mse_loss(output, target)

    oracle = TorchGGN(model, concave, (X, Y))
    with pytest.raises(matrank.MatrankValueError, match="convex"):
        matrank.ExactRank(dual=True).estimate(oracle)
    result = matrank.estimate_rank(oracle, method="lanczos", seed=0)
    assert result.rank == 12 * 3 and result.diagnostics.n_negative == 36

    with pytest.raises(
        matrank.MatrankValueError, match=r"mean (of per-sample|over the batch)"
    ):
        TorchFisher(model, torch.nn.MSELoss(reduction="sum"), (X, Y))
    with pytest.raises(matrank.MatrankValueError, match="dual form"):
        matrank.ExactRank(dual=True).estimate(torch.eye(3))
    with pytest.raises(matrank.MatrankValueError, match="dual"):
        matrank.ExactRank(dual="yes")
    with pytest.raises(matrank.MatrankValueError, match="max_dim"):
        matrank.ExactRank(dual=True, max_dim=10).estimate(
            TorchGGN(model, F.mse_loss, (X, Y))
        )
