"""What an adversarial pass found (issue 22): hostile inputs get a right answer, a
non-converged status naming the cause, or a MatrankError naming it -- never a confident
wrong number and never a crash from deep inside torch or numpy."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import matrank
from matrank.numerics.threshold import noise_floor, resolve_threshold
from matrank.testing import rotated_spectrum

A = rotated_spectrum(30, 5, cond=2.0, seed=0)  # 5 eigenvalues in [0.5, 1], 25 zeros
COUNTING = ["exact", "lanczos", "polynomial", "auto"]

# decades of scale each input dtype holds with room for a spectrum of one decade
SCALES = {"float16": 2, "bfloat16": 30, "float32": 30, "float64": 300}
EPS = {
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}


def as_input(matrix64, dtype):
    if dtype == "bfloat16":
        return torch.tensor(matrix64).to(torch.bfloat16)
    return matrix64.astype(dtype)


def dense_count(matrix, dtype):
    """The count in float64 on the float64 version of the input, with its dtype's eps."""
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.double().numpy()
    matrix = np.asarray(matrix, dtype=np.float64)
    peak = np.abs(matrix).max()
    if peak == 0:
        return 0
    # a power of two brings the entries near 1 exactly: no overflow in the rule's math
    values = np.abs(np.linalg.eigvalsh(matrix * 2.0 ** -math.floor(math.log2(peak))))
    floor = noise_floor(values.max(), len(values), EPS[dtype])
    scaled = values
    threshold, _ = resolve_threshold(scaled, floor, None)
    return int((scaled > threshold).sum())


@pytest.mark.parametrize("method", COUNTING)
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1.0, 1e150, 1e300])
def test_a_positive_multiple_has_the_same_rank_at_every_scale(method, scale):
    result = matrank.estimate_rank(A * scale, method=method, seed=0)
    assert result.rank == 5 and result.status is matrank.Status.CONVERGED
    assert 0.5 * scale > result.threshold > 0
    identity = matrank.estimate_rank(np.eye(30) * scale, method=method, seed=0)
    assert identity.rank == 30 and math.isfinite(identity.threshold)


@pytest.mark.parametrize("method", [*COUNTING, "langevin"])
@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_a_given_threshold_is_read_in_the_input_units_at_every_scale(method, scale):
    # the run scales the products by a power of two: a user's τ must follow them (it
    # did not: rank 100 of a rank-10 matrix at threshold 0.0, CONVERGED)
    matrix = rotated_spectrum(100, 10, cond=10, seed=0)
    plain = matrank.estimate_rank(matrix, method=method, seed=0, threshold=0.05)
    scaled = matrank.estimate_rank(
        scale * matrix, method=method, seed=0, threshold=scale * 0.05
    )
    assert scaled.rank == pytest.approx(plain.rank, rel=1e-9)
    assert scaled.threshold == pytest.approx(scale * plain.threshold, rel=1e-9)
    if method != "langevin":
        assert scaled.rank == 10 and scaled.status is matrank.Status.CONVERGED


@given(
    dtype=st.sampled_from(list(SCALES)),
    exponent=st.floats(-1.0, 1.0),
    n=st.integers(4, 20),
    rank=st.integers(0, 20),
    seed=st.integers(0, 2**16),
)
def test_counts_agree_with_the_dense_count_across_scales_and_dtypes(
    dtype, exponent, n, rank, seed
):
    rank = min(rank, n)
    scale = 10.0 ** (exponent * SCALES[dtype])
    matrix = as_input(rotated_spectrum(n, rank, cond=2.0, seed=seed) * scale, dtype)
    expected = dense_count(matrix, dtype)
    for method in ("exact", "lanczos", "polynomial"):
        result = matrank.estimate_rank(matrix, method=method, seed=0)
        # without a plateau both count at the floor, so they agree there too
        assert result.rank == expected, (method, result.rank, expected, result.status)


@pytest.mark.parametrize("method", COUNTING)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_half_precision_is_counted_with_its_own_eps(method, dtype):
    result = matrank.estimate_rank(as_input(A, dtype), method=method, seed=0)
    assert result.rank == 5
    eps = EPS[dtype]
    assert result.diagnostics.noise_floor >= 30 * eps * 0.5  # λmax ≥ 0.5


def saddle(negative, size=-1e-3, n=30, positive=5, seed=1):
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    values = np.r_[
        np.linspace(1, 0.5, positive),
        size * np.ones(negative),
        np.zeros(n - positive - negative),
    ]
    return (basis * values) @ basis.T


@pytest.mark.parametrize("seed", range(3))
def test_langevin_at_a_saddle_says_so(seed):
    # 5 eigenvalues in [0.5, 1] and 10 at -1e-3: the chains drift away along those
    result = matrank.estimate_rank(saddle(10), method="langevin", seed=seed)
    assert result.status is matrank.Status.NEGATIVE_CURVATURE and not result.converged
    assert "saddle point" in result.status.value
    assert result.diagnostics.negative_curvature is not None


def test_langevin_at_a_minimum_does_not_cry_saddle():
    for seed in range(5):
        result = matrank.estimate_rank(A, method="langevin", seed=seed)
        assert result.status is matrank.Status.CONVERGED
        assert result.diagnostics.negative_curvature is None


@pytest.mark.parametrize(
    "matrix",
    [-A, saddle(2, size=-0.6)],
    ids=["negative-definite", "strong-saddle"],
)
def test_langevin_refuses_a_maximum_or_strong_saddle_naming_theta0(matrix):
    # a strong saddle first looks like a step too large: halved six times, then named
    with (
        pytest.raises(matrank.MatrankValueError, match="`theta0` must be a minimum"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", matrank.MatrankWarning)
        matrank.estimate_rank(matrix, method="langevin", seed=0)


def test_evolution_at_a_saddle_says_so():
    matrix = rotated_spectrum(30, 5, cond=2.0, negative=2, seed=0)
    result = matrank.estimate_rank(matrix, method="evolution", seed=0)
    assert result.status is matrank.Status.NEGATIVE_CURVATURE
    assert result.diagnostics.widened_directions >= 1


@pytest.mark.parametrize(("n", "rank", "basis"), [(30, 5, 16), (30, 5, 4), (600, 60, 20)])
def test_lanczos_with_a_basis_too_small_estimates_honestly(n, rank, basis):
    matrix = rotated_spectrum(n, rank, seed=0)
    for seed in range(4):
        # dense_max=0: the dense path (exact, which a spent basis now takes) kept out
        result = matrank.estimate_rank(
            matrix, method="lanczos", max_basis=basis, dense_max=0, seed=seed
        )
        assert result.threshold > 0 and result.diagnostics.path == "slq"
        assert result.stderr > 0.1
        assert abs(result.rank - rank) < 4 * result.stderr


def test_langevin_refuses_a_budget_below_its_burn_in_and_fit():
    with pytest.raises(matrank.MatrankValueError, match="`max_gradients` must be enough"):
        matrank.estimate_rank(A, method="langevin", max_gradients=60)
    with pytest.raises(matrank.MatrankValueError, match="`n_steps` must be at least 64"):
        matrank.estimate_rank(A, method="langevin", n_steps=20)


def test_masked_arrays_are_refused():
    masked = np.ma.masked_array(A, mask=np.eye(30, dtype=bool))
    with pytest.raises(matrank.MatrankTypeError, match="masked array"):
        matrank.estimate_rank(masked)


@pytest.mark.parametrize("method", ["lanczos", "polynomial", "langevin", "evolution"])
def test_numpy_integer_seeds_work_and_huge_ones_are_refused_by_name(method):
    small = rotated_spectrum(12, 3, cond=2.0, seed=0)
    first = matrank.estimate_rank(small, method=method, seed=np.int64(3))
    second = matrank.estimate_rank(small, method=method, seed=3)
    assert first.rank == second.rank
    with pytest.raises(matrank.MatrankValueError, match="`seed` must be an int"):
        matrank.estimate_rank(small, method=method, seed=2**70)


def test_cli_names_a_huge_seed(tmp_path, capsys):
    from matrank.cli import main

    path = tmp_path / "good.npy"
    np.save(path, A)
    assert main(["estimate", str(path), "--seed", str(2**70), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "`seed` must be an int" in error and "cannot read" not in error


def test_meta_tensors_are_refused():
    with pytest.raises(matrank.MatrankValueError, match="meta device"):
        matrank.estimate_rank(torch.empty(30, 30, device="meta"))


def small_model(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # the layers' initial weights, whatever ran before
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)
        )
    model = model.to(dtype)
    inputs = torch.randn(40, 4, generator=generator, dtype=torch.float64).to(dtype)
    targets = torch.randn(40, 2, generator=generator, dtype=torch.float64).to(dtype)
    return model, inputs, targets


def loss_of(model, inputs, targets, **options):
    from matrank.adapters import TorchLoss

    return TorchLoss(
        model, torch.nn.functional.mse_loss, (inputs, targets), gradient_tol=None, **options
    )


@pytest.mark.parametrize(
    ("sampler", "named"),
    [
        ("weighted", "WeightedRandomSampler"),
        ("subset", "SubsetRandomSampler"),
        ("drop_last", "drop_last=True"),
    ],
)
def test_random_order_or_dropping_loaders_are_refused(sampler, named):
    from torch.utils.data import (
        DataLoader,
        SubsetRandomSampler,
        TensorDataset,
        WeightedRandomSampler,
    )

    model, inputs, targets = small_model()
    dataset = TensorDataset(inputs, targets)
    options = {
        "weighted": {"sampler": WeightedRandomSampler(torch.ones(40), 40)},
        "subset": {"sampler": SubsetRandomSampler(range(40))},
        "drop_last": {"drop_last": True},
    }[sampler]
    loader = DataLoader(dataset, batch_size=16, **options)
    with pytest.raises(matrank.MatrankValueError, match="`data` must be a DataLoader") as e:
        from matrank.adapters import TorchLoss

        TorchLoss(model, torch.nn.functional.mse_loss, loader)
    assert named in str(e.value)


def test_a_fixed_order_loader_is_accepted():
    from torch.utils.data import DataLoader, TensorDataset

    model, inputs, targets = small_model()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=16)
    oracle = loss_of(model, inputs, targets)
    from matrank.adapters import TorchLoss

    batched = TorchLoss(model, torch.nn.functional.mse_loss, loader, gradient_tol=None)
    point = oracle.theta0[None]
    assert torch.allclose(batched.loss(point), oracle.loss(point), rtol=1e-12)


class NaNOracle:
    """A quadratic whose products turn NaN from call ``after`` on."""

    def __init__(self, after, where="hvp", theta0_nan=False):
        self.dim, self.dtype, self.device = 30, torch.float64, torch.device("cpu")
        self.matrix = torch.as_tensor(A)
        self.theta0 = torch.zeros(30, dtype=torch.float64)
        if theta0_nan:
            self.theta0[3] = math.nan
        self.capabilities = matrank.Capability.HVP | matrank.Capability.GRAD
        self.after, self.where, self.calls = after, where, 0

    def _maybe(self, value):
        self.calls += 1
        return value * math.nan if self.calls > self.after else value

    def hvp(self, V):
        value = self.matrix @ V
        return self._maybe(value) if self.where == "hvp" else value

    def grad(self, theta):
        value = theta @ self.matrix
        return self._maybe(value) if self.where == "grad" else value


@pytest.mark.parametrize(
    ("method", "where"), [("lanczos", "hvp"), ("polynomial", "hvp"), ("langevin", "grad")]
)
def test_non_finite_oracle_answers_are_named_at_the_boundary(method, where):
    with pytest.raises(matrank.OperatorContractError, match=r"`oracle\.(hvp|grad)") as e:
        matrank.estimate_rank(NaNOracle(1, where), method=method, seed=0)
    assert "non-finite entries at call" in str(e.value)
    with pytest.raises(
        matrank.OperatorContractError, match=r"`oracle\.theta0` must be finite"
    ):
        matrank.estimate_rank(NaNOracle(10**9, theta0_nan=True), method=method)


def test_an_oracle_dim_may_be_any_integer_type():
    oracle = NaNOracle(10**9)
    oracle.dim = np.int64(30)
    assert matrank.estimate_rank(oracle, method="lanczos", seed=0).rank == 5


def test_torch_loss_refuses_what_it_cannot_differentiate_clearly():
    model, inputs, targets = small_model()
    with pytest.raises(matrank.MatrankTypeError, match="`loss_fn` must be a function"):
        from matrank.adapters import TorchLoss

        TorchLoss(model, lambda output, target: 1.0, (inputs, targets))
    with pytest.raises(matrank.MatrankValueError, match="`params` must be some"):
        loss_of(model, inputs, targets, params=[])
    for dtype in (torch.float16, torch.bfloat16):
        half, half_inputs, half_targets = small_model(dtype)
        with pytest.raises(matrank.MatrankValueError, match="`dtype` must be float32"):
            loss_of(half, half_inputs, half_targets)
    with torch.device("meta"):
        meta = torch.nn.Linear(4, 2)
    with pytest.raises(matrank.MatrankValueError, match="meta"):
        loss_of(meta, inputs, targets[:, :2])


def test_nan_in_weights_or_data_is_named_as_such():
    model, inputs, targets = small_model()
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan
    with pytest.raises(matrank.MatrankValueError, match="`model` must be finite param"):
        loss_of(model, inputs, targets)
    model, inputs, targets = small_model()
    inputs[3, 1] = math.nan
    with pytest.raises(matrank.MatrankValueError, match="`data inputs` must be finite"):
        loss_of(model, inputs, targets)


def test_a_nan_black_box_loss_is_named():
    from matrank.adapters import LossFunction

    def loss(batch):
        values = (batch**2).sum(axis=1)
        values[batch[:, 0] > 0] = np.nan  # half of every population
        return values

    with pytest.raises(matrank.MatrankValueError, match="`fn` must be finite"):
        matrank.estimate_rank(LossFunction(loss, np.zeros(6)), method="evolution", seed=0)


def test_cli_refuses_a_matrix_market_header_that_lies_before_reading_it(tmp_path, capsys):
    from matrank.cli import main

    header = "%%MatrixMarket matrix coordinate real general\n"
    lying = tmp_path / "lying.mtx"
    lying.write_text(header + "1000000000 1000000000 1000000000\n1 1 1.0\n")
    huge = tmp_path / "huge.mtx"
    huge.write_text(header + "1000000000 1000000000 2\n1 1 1.0\n2 2 1.0\n")
    assert main(["estimate", str(lying), "--no-progress"]) == 2
    assert "must hold the entries its header declares" in capsys.readouterr().err
    assert main(["estimate", str(huge), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "must fit in memory" in error and "GiB" in error


def test_cli_refuses_a_pickle_in_one_line_without_unsafe_advice(tmp_path, capsys):
    import pickle

    from matrank.cli import main

    path = tmp_path / "evil.pt"
    torch.save({"x": slice(1, 2)}, path, pickle_module=pickle)
    assert main(["estimate", str(path), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "weights_only=False" not in error
    assert "must hold tensors only" in error


def test_cli_reports_running_out_of_memory_as_such(tmp_path, capsys, monkeypatch):
    from matrank import cli

    path = tmp_path / "a.npy"
    np.save(path, A)

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli, "estimate_rank", exhausted)
    assert cli.main(["estimate", str(path), "--method", "exact", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "out of memory in method='exact' on a 30 × 30 matrix" in error
    assert "cannot read" not in error


def test_small_problems_run_on_one_thread_and_restore_the_count():
    seen = []

    class Watching(NaNOracle):
        def hvp(self, V):
            seen.append(torch.get_num_threads())
            return self.matrix @ V

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        matrank.estimate_rank(Watching(10**9), method="lanczos", seed=0)
        assert set(seen[1:]) == {1}  # (the first product is the coercion's check)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["langevin", "evolution"])
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
def test_sampling_methods_see_the_same_rank_at_every_scale(method, scale):
    reference = matrank.estimate_rank(A, method=method, seed=0)
    result = matrank.estimate_rank(A * scale, method=method, seed=0)
    assert result.status is matrank.Status.CONVERGED
    assert result.rank == pytest.approx(reference.rank, rel=1e-9)
    assert result.threshold / scale == pytest.approx(reference.threshold, rel=1e-9)


def test_langevin_on_a_model_far_from_a_minimum_says_so():
    model, inputs, targets = small_model()  # untrained: a saddle of the loss
    oracle = loss_of(model, inputs, targets)
    dense = matrank.estimate_rank(oracle, method="exact")
    assert dense.diagnostics.n_negative > 0  # the ground truth: negative curvature
    # either outcome names the cause: a falling count, or chains that ran away at every
    # step size (then halved with a warning each time, and theta0 is named)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", matrank.MatrankWarning)
        try:
            result = matrank.estimate_rank(oracle, method="langevin", seed=0)
        except matrank.MatrankValueError as error:
            assert "`theta0` must be a minimum" in str(error)
        else:
            assert result.status is matrank.Status.NEGATIVE_CURVATURE


SPARSE_FORMATS = ["csr", "csc", "coo", "dok", "lil", "bsr", "dia"]


def _count_at(matrix, threshold):
    """The dense count of |λ| above ``threshold``: the input's own eigenvalues, each
    scaled by a power of two first (exact, even for subnormal entries)."""
    dense = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)
    peak = np.abs(dense).max()
    if peak == 0:
        return 0
    shift = -math.floor(math.log2(peak))
    half = 2.0 ** (shift // 2)  # two steps: 2^shift alone overflows past 2^1023
    rest = 2.0 ** (shift - shift // 2)
    values = np.abs(np.linalg.eigvalsh(dense * half * rest))
    return int((values > threshold * half * rest).sum())


@given(
    layout=st.sampled_from(["dense", *SPARSE_FORMATS]),
    exponent=st.integers(-320, 300),
    rank=st.integers(0, 12),
    seed=st.integers(0, 2**16),
)
def test_no_negative_rank_and_converged_only_at_the_dense_count(
    layout, exponent, rank, seed
):
    import scipy.sparse

    matrix = rotated_spectrum(12, rank, cond=3.0, seed=seed) * 10.0**exponent
    if layout != "dense":
        matrix = scipy.sparse.csr_array(matrix).asformat(layout)
    for method in COUNTING:
        result = matrank.estimate_rank(matrix, method=method, seed=0)
        assert result.rank >= 0 and math.isfinite(result.threshold), method
        if result.status is matrank.Status.CONVERGED:
            expected = _count_at(matrix, result.threshold)
            if result.stderr:
                assert abs(result.rank - expected) <= 3 * result.stderr, method
            else:
                assert result.rank == expected, (method, exponent)


@given(
    layout=st.sampled_from(["dense", *SPARSE_FORMATS]),
    exponent=st.integers(-320, 300),
    rank=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=12)
def test_the_sampling_methods_are_never_negative_and_within_their_stderr(
    layout, exponent, rank, seed
):
    import scipy.sparse

    matrix = rotated_spectrum(12, rank, cond=3.0, seed=seed) * 10.0**exponent
    if layout != "dense":
        matrix = scipy.sparse.csr_array(matrix).asformat(layout)
    for method in ("langevin", "evolution"):
        try:
            result = matrank.estimate_rank(matrix, method=method, seed=0)
        except matrank.MatrankValueError as error:
            # subnormal entries keep a few bits: rounding makes the matrix indefinite
            # at 1e-2 of its size, and Langevin says theta0 is then no minimum
            assert exponent < -307 and "`theta0` must be a minimum" in str(error)
            continue
        assert result.rank >= 0 or math.isnan(result.rank), method
        if result.status is matrank.Status.CONVERGED:
            expected = _count_at(matrix, result.threshold)
            spread = 3 * result.stderr if result.stderr else 0
            assert abs(result.rank - expected) <= spread, (method, exponent)


def test_a_dataloader_of_mappings_is_read_from_its_first_tensor():
    from torch.utils.data import DataLoader, Dataset

    from matrank.adapters import TorchLoss

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, dtype=torch.float64, generator=generator)
    y = torch.randn(20, 1, dtype=torch.float64, generator=generator)

    class Pairs(Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return {"a": x[i], "b": (x[i], x[i])}, y[i]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 1).double()

        def forward(self, batch):
            return self.linear(batch["a"])

    loss = torch.nn.functional.mse_loss
    model = Model()
    mapped = TorchLoss(model, loss, DataLoader(Pairs(), batch_size=8), gradient_tol=None)
    plain = TorchLoss(model.linear, loss, (x, y), gradient_tol=None)
    assert "samples=20" in repr(mapped)
    V = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(mapped.hvp(V), plain.hvp(V), atol=1e-14)
    assert matrank.estimate_rank(mapped, method="exact").rank == 4

    class Uneven(Pairs):
        def __getitem__(self, i):
            return {"a": x[i]}, y[i]

    def collate(items):  # a batch whose tensors disagree on the sample count
        return {"a": torch.stack([i[0]["a"] for i in items]), "b": x[:1]}, torch.stack(
            [i[1] for i in items]
        )

    with pytest.raises(matrank.MatrankValueError, match="one first dimension"):
        TorchLoss(model, loss, DataLoader(Uneven(), batch_size=8, collate_fn=collate))


def _off_minimum_oracle():
    """An 8-4-1 tanh net's loss against targets moved by 5: far from any minimum."""
    from matrank.adapters import TorchLoss

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    with torch.no_grad():
        targets = net(inputs) + 5
    return TorchLoss(
        net, torch.nn.functional.mse_loss, (inputs, targets), gradient_tol=None
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_a_rank_is_never_negative(seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", matrank.MatrankWarning)
        result = matrank.estimate_rank(_off_minimum_oracle(), method="langevin", seed=seed)
    # the readout fell far under zero (-47 and -57): no rank, and the cause named
    assert math.isnan(result.rank) and result.stderr is None
    assert result.status is matrank.Status.NEGATIVE_CURVATURE and not result.converged
    assert result.diagnostics.negative_estimate < -10


def test_a_soft_count_a_little_under_zero_is_an_empty_count():
    from matrank._result import Status
    from matrank._run import _negative

    assert _negative(-0.3, 0.2, Status.CONVERGED, {})[:3] == (0.0, 0.2, Status.CONVERGED)
    rank, stderr, status, diagnostics = _negative(-173.6, 96.9, Status.CONVERGED, {})
    assert stderr is None
    assert math.isnan(rank) and status is Status.NEGATIVE_CURVATURE
    assert diagnostics == {"negative_estimate": -173.6}
    # a status that already says what went wrong keeps its cause
    assert _negative(-3.0, None, Status.BUDGET_EXHAUSTED, {})[2] is Status.BUDGET_EXHAUSTED


def test_the_faithful_ubaru_saad_port_refuses_an_indefinite_matrix():
    M = rotated_spectrum(300, 40, cond=10.0, seed=0)
    null = np.linalg.eigh(M)[1][:, :5]  # five directions of the null space
    saddle = M - 0.5 * null @ null.T  # 40 positive and 5 negative eigenvalues
    for matrix in (saddle, -M):
        with pytest.raises(matrank.MatrankValueError, match="positive semi-definite"):
            matrank.estimate_rank(matrix, method="polynomial", variant="ubaru-saad")
    # the default variant counts |λ|, negative ones included
    assert matrank.estimate_rank(saddle, method="polynomial", seed=0).rank == 45
    assert matrank.estimate_rank(M, method="polynomial", variant="ubaru-saad").rank > 0


def test_a_built_in_adapter_with_non_finite_products_is_refused_by_every_method():
    from matrank.adapters import TorchFisher

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(11, 3, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (11,), generator=generator)

    class Net(torch.nn.Module):  # sqrt at 0: forward-mode derivatives are NaN
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2).double()

        def forward(self, x):
            return torch.sqrt(torch.relu(self.linear(x)))

    torch.manual_seed(0)
    oracle = TorchFisher(Net(), torch.nn.functional.cross_entropy, (inputs, labels))
    for options in (
        {"method": "lanczos"},
        {"method": "exact", "dual": False},
        {"method": "polynomial"},
        {"method": "auto"},
    ):
        with pytest.raises(matrank.OperatorContractError, match=r"`oracle\.hvp` must be"):
            matrank.estimate_rank(oracle, seed=0, **options)
