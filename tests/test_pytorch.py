"""TorchLoss: the PyTorch model adapter against torch.func.hessian and plain autograd."""

import numpy as np
import pytest
import torch

import matrank
from matrank.adapters import LinearNetHessian, TorchLoss, adam_preconditioner
from matrank.estimators.langevin import expected_loss_curve
from matrank.testing import check_oracle

F64 = torch.float64


def mlp(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)
    ).double()
    X = torch.randn(40, 4, dtype=F64)
    Y = torch.randn(40, 2, dtype=F64)
    return model, X, Y


def cnn(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(3, 1, 3, padding=1),
    ).double()
    X = torch.randn(12, 1, 6, 6, dtype=F64)
    Y = torch.randn(12, 1, 6, 6, dtype=F64)
    return model, X, Y


def squared(output, target):
    return ((output - target) ** 2).mean()


@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize(
    "loss_fn", [squared, torch.nn.functional.mse_loss], ids=["sq", "mse"]
)
@pytest.mark.parametrize(
    "cache", [False, True, "batched"], ids=["recomputed", "cached", "cached-batched"]
)
def test_hvp_equals_the_dense_hessian(make, loss_fn, cache):
    model, X, Y = make()
    oracle = TorchLoss(
        model, loss_fn, (X, Y), gradient_tol=None, chunk_size=5, cache_hvp=bool(cache)
    )
    if cache == "batched":  # the path a GPU takes: one backward for the whole block
        oracle._batch_columns = True
    H = oracle.dense_hessian()
    assert H.shape == (oracle.dim, oracle.dim)
    V = torch.randn(oracle.dim, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    product = oracle.hvp(V)
    assert float((product - H @ V).abs().max() / (H @ V).abs().max()) <= 1e-10
    single = oracle.hvp(V[:, :1])  # one column skips vmap
    assert single.shape == (oracle.dim, 1)
    torch.testing.assert_close(single, product[:, :1], rtol=1e-12, atol=1e-14)
    check_oracle(oracle)


def test_mse_loss_falls_back_to_reverse_over_reverse():
    # torch 2.13 has no forward-mode formula for mse_loss's backward
    model, X, Y = mlp()
    oracle = TorchLoss(
        model, torch.nn.functional.mse_loss, (X, Y), gradient_tol=None, cache_hvp=False
    )
    block = oracle.hvp(torch.eye(oracle.dim, 2, dtype=F64))
    assert oracle.hvp_mode == "reverse-over-reverse"
    torch.testing.assert_close(
        oracle.hvp(torch.eye(oracle.dim, 1, dtype=F64)), block[:, :1], rtol=1e-12, atol=0
    )
    plain = TorchLoss(model, squared, (X, Y), gradient_tol=None, cache_hvp=False)
    plain.hvp(torch.eye(plain.dim, 2, dtype=F64))
    assert plain.hvp_mode == "forward-over-reverse"


def test_the_hvp_graph_is_kept_for_one_chunk_by_default():
    model, X, Y = mlp()
    one = TorchLoss(model, squared, (X, Y), gradient_tol=None)
    several = TorchLoss(model, squared, (X, Y), gradient_tol=None, chunk_size=7)
    assert one.hvp_mode == "cached reverse-over-reverse"
    assert several.hvp_mode == "forward-over-reverse"
    V = torch.randn(one.dim, 3, dtype=F64)
    first = one.hvp(V)
    graphs = one._graphs
    assert graphs is not None and len(graphs) == 1
    # the second call reuses the graph and answers the same, also under no_grad
    with torch.no_grad():
        again = one.hvp(V)
    assert one._graphs is graphs
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    torch.testing.assert_close(several.hvp(V), first, rtol=1e-12, atol=1e-14)
    with pytest.raises(
        matrank.MatrankTypeError, match="`cache_hvp` must be True, False or None"
    ):
        TorchLoss(model, squared, (X, Y), cache_hvp="yes")


@pytest.mark.parametrize("cache", [False, True])
def test_a_loss_linear_in_the_selected_parameters_has_a_zero_hessian(cache):
    # the mean output of a linear layer is linear in its weights and bias: the
    # gradient is a constant, whose graph has nothing left to differentiate
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    X = torch.randn(10, 3, dtype=F64)
    oracle = TorchLoss(
        model,
        lambda output, target: (output - target).mean(),
        (X, torch.zeros(10, 1, dtype=F64)),
        gradient_tol=None,
        cache_hvp=cache,
    )
    V = torch.randn(oracle.dim, 2, dtype=F64)
    torch.testing.assert_close(oracle.hvp(V), torch.zeros_like(V), rtol=0, atol=0)


def test_loss_and_grad_match_plain_autograd_in_named_parameters_order():
    model, X, Y = mlp()
    oracle = TorchLoss(model, squared, (X, Y), gradient_tol=None, chunk_size=7)
    model.zero_grad()
    value = squared(model(X), Y)
    value.backward()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    theta0 = oracle.theta0[None]
    assert torch.allclose(oracle.loss(theta0), value.detach()[None], rtol=1e-13)
    assert torch.allclose(oracle.grad(theta0)[0], expected, rtol=1e-12, atol=1e-15)


def test_batched_rows_equal_single_rows_and_the_model_is_untouched():
    model, X, Y = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    oracle = TorchLoss(model, squared, (X, Y), gradient_tol=None)
    theta = oracle.theta0 + 0.1 * torch.randn(5, oracle.dim, dtype=F64)
    losses, grads = oracle.loss(theta), oracle.grad(theta)
    for row in range(5):
        assert torch.allclose(losses[row], oracle.loss(theta[row : row + 1])[0], rtol=1e-13)
        assert torch.allclose(grads[row], oracle.grad(theta[row : row + 1])[0], rtol=1e-12)
    for parameter, old in zip(model.parameters(), before, strict=True):
        assert torch.equal(parameter, old)


def test_chunks_and_a_fixed_order_dataloader_give_the_full_batch_answer():
    model, X, Y = mlp()
    whole = TorchLoss(model, squared, (X, Y), gradient_tol=None, chunk_size=1000)
    chunked = TorchLoss(model, squared, (X, Y), gradient_tol=None, chunk_size=7)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=9)
    loaded = TorchLoss(model, squared, loader, gradient_tol=None)
    V = torch.randn(whole.dim, 3, dtype=F64)
    theta = whole.theta0[None] + 0.1
    for other in (chunked, loaded):
        assert torch.allclose(other.hvp(V), whole.hvp(V), rtol=1e-12, atol=1e-14)
        assert torch.allclose(other.grad(theta), whole.grad(theta), rtol=1e-12, atol=1e-14)
        assert torch.allclose(other.loss(theta), whole.loss(theta), rtol=1e-13)


def test_parameter_subset_is_the_hessian_block():
    model, X, Y = mlp()
    full = TorchLoss(model, squared, (X, Y), gradient_tol=None)
    part = TorchLoss(model, squared, (X, Y), params=["2.weight"], gradient_tol=None)
    assert part.dim == 12 and part.names == ["2.weight"]
    offset = 4 * 6 + 6
    block = full.dense_hessian()[offset : offset + 12, offset : offset + 12]
    assert torch.allclose(part.dense_hessian(), block, rtol=1e-12, atol=1e-15)


def test_float32_model_stays_float32_and_float64_on_request():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    X, Y = torch.randn(10, 3), torch.randn(10, 2)
    assert TorchLoss(model, squared, (X, Y), gradient_tol=None).dtype == torch.float32
    oracle = TorchLoss(model, squared, (X, Y), gradient_tol=None, dtype=F64)
    assert oracle.dtype == F64 and oracle.hvp(torch.eye(oracle.dim, dtype=F64)).dtype == F64
    assert next(model.parameters()).dtype == torch.float32


def underdetermined_minimum(samples=12, features=30, seed=0):
    """Least squares with fewer samples than weights, at an exact fit: rank = samples."""
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(features, 1, bias=False).double()
    X = torch.randn(samples, features, dtype=F64, generator=generator)
    return model, X, model(X).detach()


@pytest.mark.parametrize("method", ["exact", "lanczos"])
def test_rank_at_a_minimum_matches_dense_eigendecomposition(method):
    model, X, Y = underdetermined_minimum()
    oracle = TorchLoss(model, squared, (X, Y))  # stationary: no warning
    dense = oracle.dense_hessian().numpy()
    truth = np.linalg.matrix_rank(dense, hermitian=True)
    assert truth == 12
    result = matrank.estimate_rank(oracle, method=method, seed=0)
    assert result.rank == truth
    assert result.cost["matvecs"] > 0


def test_gradient_only_estimators_run_batched_chains():
    # The loss is exactly quadratic, so eq. 20's expectation is known from the dense
    # Hessian (tests/test_langevin.py): the estimate must sit within 4 stated stderr.
    model, X, Y = underdetermined_minimum()
    oracle = TorchLoss(model, squared, (X, Y))
    estimator = matrank.LangevinRank(
        variant="paper",
        step_size=0.05,
        sigma2=1e-4,
        n_steps=1500,
        n_average=1000,
        n_chains=8,
    )
    result = estimator.estimate(oracle, seed=0)
    # the steps, then the quadratic check: ∇f(θ0), ∇f(θ0 ± δ) and ∇f(θ0 ± δ/2) of
    # each chain
    assert result.cost["gradients"] == 8 * 1500 + 1 + 4 * 8
    eigenvalues = np.linalg.eigvalsh(oracle.dense_hessian().numpy())
    curve = expected_loss_curve(
        eigenvalues, step_size=0.05, sigma2=1e-4, n_steps=estimator.n_steps
    )
    expected = 4 / 1e-4 * curve[-estimator.n_average :].mean()
    assert abs(result.rank - expected) <= 4 * result.stderr


def test_a_point_that_is_not_stationary_warns_with_the_gradient_norm():
    model, X, Y = mlp()
    with pytest.warns(matrank.MatrankWarning, match=r"‖∇L\(θ0\)‖ = .* > gradient_tol"):
        TorchLoss(model, squared, (X, Y))


@pytest.mark.parametrize(
    ("layer", "name"),
    [(torch.nn.Dropout(0.1), "Dropout"), (torch.nn.BatchNorm1d(6), "BatchNorm1d")],
)
def test_train_mode_with_stochastic_layers_is_refused(layer, name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), layer, torch.nn.Linear(6, 1))
    X, Y = torch.randn(8, 4), torch.randn(8, 1)
    with pytest.raises(
        matrank.MatrankValueError, match=f"call model.eval.*train mode with {name}"
    ):
        TorchLoss(model, squared, (X, Y), gradient_tol=None)
    TorchLoss(model.eval(), squared, (X, Y), gradient_tol=None)  # eval mode is fine


def test_a_nondeterministic_loss_is_refused():
    model, X, Y = mlp()

    def noisy(output, target):
        return squared(output, target) + 1e-3 * torch.rand(())

    with pytest.raises(matrank.MatrankValueError, match="`loss_fn` must be deterministic"):
        TorchLoss(model, noisy, (X, Y), gradient_tol=None)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"params": ["nope"]},
            matrank.MatrankValueError,
            r"`params` must be names .*'nope'",
        ),
        ({"chunk_size": 0}, matrank.MatrankValueError, "`chunk_size` must be an int"),
        (
            {"data": (torch.zeros(3, 4), torch.zeros(2, 2))},
            matrank.MatrankValueError,
            "same number of samples",
        ),
        (
            {"data": torch.zeros(3, 4)},
            matrank.MatrankTypeError,
            r"`data` must be an \(inputs, targets\)",
        ),
        ({"model": "net"}, matrank.MatrankTypeError, "`model` must be a torch.nn.Module"),
        (
            {"loss_fn": torch.nn.MSELoss(reduction="none")},
            matrank.MatrankValueError,
            "`loss_fn` must be a scalar",
        ),
    ],
)
def test_bad_input_is_refused_with_a_message(kwargs, error, match):
    model, X, Y = mlp()
    arguments = {"model": model, "loss_fn": squared, "data": (X, Y), "gradient_tol": None}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        TorchLoss(**arguments)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("vector targets", r"outputs \(30, 1\) against targets \(30,\), which broadcast"),
        ("sum", r"`loss_fn` must be the mean over the batch .*2× larger .*'sum'"),
        ("wide inputs", r"`data inputs` must be inputs the model accepts; got model"),
    ],
)
def test_first_try_mistakes_are_refused_in_one_line(case, match):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    X = torch.randn(30, 3, dtype=torch.float64)
    y = torch.randn(30, dtype=torch.float64)
    loss, data = torch.nn.functional.mse_loss, (X, y[:, None])
    if case == "vector targets":
        data = (X, y)
    elif case == "sum":
        loss = torch.nn.MSELoss(reduction="sum")
    else:
        data = (torch.randn(30, 5, dtype=torch.float64), y[:, None])
    with pytest.raises(matrank.MatrankValueError, match=match) as caught:
        TorchLoss(model, loss, data, gradient_tol=None)
    assert "\n" not in str(caught.value)
    # the right shapes and the mean pass; class targets against (N, C) logits too
    TorchLoss(model, torch.nn.functional.mse_loss, (X, y[:, None]), gradient_tol=None)
    logits = torch.nn.Linear(3, 3).double()
    labels = torch.randint(0, 3, (30,))
    TorchLoss(logits, torch.nn.functional.cross_entropy, (X, labels), gradient_tol=None)


def test_frozen_parameters_are_left_out_or_refused_by_name():
    model, X, Y = mlp()
    model[0].weight.requires_grad_(False)
    oracle = TorchLoss(model, squared, (X, Y), gradient_tol=None)
    assert "0.weight" not in oracle.names and oracle.dim == 44 - 24
    with pytest.raises(matrank.MatrankValueError, match="require grad; got frozen"):
        TorchLoss(model, squared, (X, Y), params=["0.weight"], gradient_tol=None)


def test_a_shuffling_dataloader_is_refused():
    model, X, Y = mlp()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, Y), batch_size=8, shuffle=True
    )
    with pytest.raises(matrank.MatrankValueError, match="fixed order"):
        TorchLoss(model, squared, loader, gradient_tol=None)


class DataDependentBranch(torch.nn.Module):
    """A forward pass vmap cannot trace (a Python branch on a tensor's value)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2).double()

    def forward(self, x):
        y = self.layer(x)
        return 2 * y if float(y.sum()) > 1e9 else y


def test_models_vmap_cannot_trace_fall_back_to_a_loop_with_a_warning():
    torch.manual_seed(0)
    model = DataDependentBranch()
    _, X, Y = mlp()
    oracle = TorchLoss(model, squared, (X, Y), gradient_tol=None)
    reference = TorchLoss(model.layer, squared, (X, Y), gradient_tol=None)
    theta = oracle.theta0 + torch.randn(3, oracle.dim, dtype=F64)
    with pytest.warns(matrank.MatrankWarning, match="vmap cannot batch this model"):
        gradients = oracle.grad(theta)
    assert torch.allclose(gradients, reference.grad(theta), rtol=1e-12)
    # the HVP's reverse-over-reverse fallback runs the forward pass outside vmap
    V = torch.randn(oracle.dim, 3, dtype=F64)
    assert torch.allclose(oracle.hvp(V), reference.hvp(V), rtol=1e-12, atol=1e-15)


def test_adam_preconditioner_is_the_bias_corrected_second_moment_in_theta_order():
    model, X, Y = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-6)
    for _ in range(5):
        optimizer.zero_grad()
        squared(model(X), Y).backward()
        optimizer.step()
    oracle = TorchLoss(
        model, squared, (X, Y), params=["2.weight", "0.bias"], gradient_tol=None
    )
    G = adam_preconditioner(optimizer, oracle)
    expected = []
    for name in ("0.bias", "2.weight"):  # θ follows named_parameters() order
        v = optimizer.state[dict(model.named_parameters())[name]]["exp_avg_sq"]
        expected.append((1 / ((v / (1 - 0.99**5)).sqrt() + 1e-6)).reshape(-1))
    assert torch.allclose(G, torch.cat(expected), rtol=1e-12)
    assert G.shape == (oracle.dim,) and bool((G > 0).all())
    result = matrank.LangevinRank(
        preconditioner=G,
        readout="virial",
        step_size=1e-4,
        sigma2=1e-6,
        n_steps=64,
        n_average=32,
    ).estimate(oracle, seed=0)
    assert np.isfinite(result.rank)


def test_adam_preconditioner_needs_state_for_every_parameter():
    model, X, Y = mlp()
    optimizer = torch.optim.Adam(model[0].parameters())
    oracle = TorchLoss(model, squared, (X, Y), gradient_tol=None)
    with pytest.raises(
        matrank.MatrankValueError, match=r"Adam state .* none for '0\.weight'"
    ):
        adam_preconditioner(optimizer, oracle)


def test_looped_batches_equal_vmapped_ones():
    model, X, Y = cnn()
    vmapped = TorchLoss(model, squared, (X, Y), gradient_tol=None, vectorize=True)
    looped = TorchLoss(model, squared, (X, Y), gradient_tol=None, vectorize=False)
    # by default an MLP vmaps (a CNN on a CPU loops: the device test checks that)
    dense, inputs, targets = mlp()
    assert TorchLoss(dense, squared, (inputs, targets), gradient_tol=None)._vectorized
    theta = vmapped.theta0 + 0.01 * torch.randn(3, vmapped.dim, dtype=F64)
    V = torch.randn(vmapped.dim, 3, dtype=F64)
    assert torch.allclose(looped.grad(theta), vmapped.grad(theta), rtol=1e-12, atol=1e-15)
    assert torch.allclose(looped.loss(theta), vmapped.loss(theta), rtol=1e-13)
    assert torch.allclose(looped.hvp(V), vmapped.hvp(V), rtol=1e-12, atol=1e-15)
    with pytest.raises(
        matrank.MatrankTypeError, match="`vectorize` must be True, False or None"
    ):
        TorchLoss(model, squared, (X, Y), vectorize="yes")


def test_default_langevin_counts_the_dense_hessian_above_its_threshold():
    # A tanh network at an exact fit: a non-quadratic loss whose Hessian (the
    # Gauss–Newton JᵀJ, rank 20) spans decades. The default Langevin's soft count is
    # held to the dense count above the τ it reports, within its stated stderr.
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    X = torch.randn(20, 8, dtype=F64)
    oracle = TorchLoss(model, torch.nn.functional.mse_loss, (X, model(X).detach()))
    eigenvalues = np.linalg.eigvalsh(oracle.dense_hessian().numpy())
    result = matrank.LangevinRank(max_gradients=4000).estimate(oracle, seed=1)
    counted = int((np.abs(eigenvalues) > result.threshold).sum())
    assert 0 < counted < 20  # the threshold cuts into the spectrum
    assert abs(result.rank - counted) <= 4 * result.stderr
    assert result.cost["gradients"] <= 4000


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_everything_stays_on_the_models_device(device):
    # The CPU case runs everywhere and checks the test; on a GPU machine the same
    # assertions cover the CUDA paths (vmapped chains, the batched cached HVP).
    model, X, _ = cnn()
    model, X = model.to(device), X.to(device)
    Y = model(X).detach()  # an exact fit: a minimum, where Langevin's chains settle
    oracle = TorchLoss(model, squared, (X, Y))
    assert oracle.device.type == device and oracle.theta0.device.type == device
    assert oracle._vectorized == (device != "cpu")
    assert oracle._batch_columns == (device != "cpu")
    theta = oracle.theta0 + 0.01 * torch.randn(
        3, oracle.dim, dtype=F64, generator=torch.Generator().manual_seed(0)
    ).to(device)
    V = torch.randn(oracle.dim, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    V = V.to(device)
    H = oracle.dense_hessian()
    for value in (oracle.loss(theta), oracle.grad(theta), oracle.hvp(V), H):
        assert value.device.type == device and value.dtype == F64
    product = oracle.hvp(V)
    assert float((product - H @ V).abs().max() / (H @ V).abs().max()) <= 1e-10
    single = torch.stack([oracle.grad(row[None])[0] for row in theta])
    torch.testing.assert_close(oracle.grad(theta), single, rtol=1e-12, atol=1e-15)
    eigenvalues = torch.linalg.eigvalsh(H).cpu().numpy()
    result = matrank.estimate_rank(oracle, method="lanczos", seed=0)
    assert result.rank == matrank.estimate_rank(H.cpu().numpy(), method="exact").rank
    assert result.rank == int((np.abs(eigenvalues) > result.threshold).sum())
    chains = matrank.LangevinRank(max_gradients=800).estimate(oracle, seed=0)
    assert np.isfinite(chains.rank) and chains.cost["gradients"] <= 800


@pytest.mark.parametrize("device", DEVICES)
def test_the_linear_net_runs_on_its_device(device):
    problem = LinearNetHessian.random_minimum(4, 4, 3, seed=2, device=device)
    assert problem.theta0.device.type == device
    check_oracle(problem)
    result = matrank.LangevinRank(max_gradients=2000).estimate(problem, seed=0)
    on_cpu = matrank.LangevinRank(max_gradients=2000).estimate(
        LinearNetHessian.random_minimum(4, 4, 3, seed=2), seed=0
    )
    # the same seeded noise is drawn on the CPU and moved: only rounding differs
    assert result.rank == pytest.approx(on_cpu.rank, abs=0.01 * on_cpu.stderr)
    assert matrank.estimate_rank(problem, method="lanczos", seed=0).rank == 16
