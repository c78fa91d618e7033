"""The oracle protocol, the adapters for explicit matrices, and the contract check."""

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

import matrank
from matrank import Capability, OperatorContractError
from matrank._oracle import CostMeter
from matrank.adapters import DenseOracle, LinearOperatorOracle, SparseOracle
from matrank.testing import check_oracle, laplacian, rotated_spectrum

MATRIX = rotated_spectrum(40, 7, seed=0)


def adapters():
    return {
        "numpy": MATRIX,
        "numpy-fortran": np.asfortranarray(MATRIX),
        "numpy-int": np.diag(np.arange(5)),
        "torch": torch.from_numpy(MATRIX.copy()),
        "torch-float32": torch.from_numpy(MATRIX.astype(np.float32)),
        "sparse": scipy.sparse.csr_matrix(MATRIX),
        "sparse-array-coo": scipy.sparse.coo_array(laplacian(3, 5)),
        "linear-operator": scipy.sparse.linalg.aslinearoperator(MATRIX),
    }


@pytest.mark.parametrize("name", list(adapters()))
def test_every_adapter_keeps_the_contract(name):
    obj = adapters()[name]
    oracle = matrank.as_oracle(obj)
    assert isinstance(oracle, matrank.Oracle)
    assert oracle.capabilities == Capability.LOSS | Capability.GRAD | Capability.HVP
    defects = check_oracle(oracle)
    assert set(defects) == {
        "blocks",
        "determinism",
        "symmetry",
        "linearity",
        "finite_difference",
    }
    n = oracle.dim
    assert oracle.theta0.shape == (n,) and not oracle.theta0.any()
    dense = np.asarray(
        matrank.materialize(oracle).to_dense()
        if name.startswith("sparse")
        else matrank.materialize(oracle)
    )
    expected = (
        obj.toarray()
        if scipy.sparse.issparse(obj)
        else (obj @ np.eye(n) if name == "linear-operator" else np.asarray(obj))
    )
    np.testing.assert_allclose(
        dense, expected, rtol=1e-6 if oracle.dtype == torch.float32 else 1e-12
    )


def test_quadratic_loss_and_gradient():
    oracle = matrank.as_oracle(MATRIX)
    theta = torch.randn(
        3, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    np.testing.assert_allclose(
        oracle.grad(theta).numpy(), theta.numpy() @ MATRIX, rtol=1e-12
    )
    expected = 0.5 * np.einsum("bi,ij,bj->b", theta.numpy(), MATRIX, theta.numpy())
    np.testing.assert_allclose(oracle.loss(theta).numpy(), expected, rtol=1e-12)


def test_numpy_float64_is_wrapped_without_a_copy():
    oracle = matrank.as_oracle(MATRIX)
    assert isinstance(oracle, DenseOracle)
    assert oracle.matrix.data_ptr() == MATRIX.ctypes.data
    readonly = MATRIX.copy()
    readonly.flags.writeable = False
    assert matrank.as_oracle(readonly).matrix.data_ptr() == readonly.ctypes.data


def test_integer_and_half_inputs_compute_in_float64():
    assert matrank.as_oracle(np.eye(3, dtype=np.int32)).dtype == torch.float64
    assert matrank.as_oracle(torch.eye(3, dtype=torch.float16)).dtype == torch.float64
    assert matrank.as_oracle(np.eye(3, dtype=np.float32)).dtype == torch.float32


def test_as_oracle_is_idempotent_and_types_are_as_documented():
    for obj, cls in [
        (MATRIX, DenseOracle),
        (scipy.sparse.csr_array(MATRIX), SparseOracle),
        (scipy.sparse.linalg.aslinearoperator(MATRIX), LinearOperatorOracle),
    ]:
        oracle = matrank.as_oracle(obj)
        assert isinstance(oracle, cls)
        assert matrank.as_oracle(oracle) is oracle


def test_as_oracle_accepts_registered_types():
    class Diagonal:
        def __init__(self, values):
            self.values = values

    @matrank.as_oracle.register
    def _(obj: Diagonal):
        return matrank.as_oracle(np.diag(obj.values))

    assert matrank.estimate_rank(Diagonal([3.0, 0.0, 1.0])).rank == 2


def test_cost_meter_counts_vectors_not_calls():
    meter = CostMeter(matrank.as_oracle(MATRIX))
    meter.hvp(torch.zeros(40, 5, dtype=torch.float64))
    meter.grad(torch.zeros(3, 40, dtype=torch.float64))
    meter.loss(torch.zeros(2, 40, dtype=torch.float64))
    meter.loss(torch.zeros(2, 40, dtype=torch.float64))
    assert meter.cost(1.5) == {"matvecs": 5, "gradients": 3, "evals": 4, "seconds": 1.5}


def test_exact_rank_dispatch_defaults_to_not_implemented():
    with pytest.raises(NotImplementedError, match="not implemented for DenseOracle"):
        matrank.exact_rank(matrank.as_oracle(MATRIX))


def test_check_oracle_catches_a_broken_operator():
    class Drifting:
        """Symmetric, but each product differs a little: a stochastic Hessian."""

        def __init__(self):
            self.calls = 0
            self.dim, self.dtype, self.device = 6, torch.float64, torch.device("cpu")
            self.theta0 = torch.zeros(6, dtype=torch.float64)
            self.capabilities = Capability.HVP

        def hvp(self, V):
            self.calls += 1
            return V * (1.0 + 1e-6 * self.calls)

    with pytest.raises(
        OperatorContractError,
        match=r"Drifting breaks the oracle contract:\n- hvp of a block != hvp of its columns.*\n- hvp is not deterministic",
    ):
        check_oracle(Drifting())

    class Inconsistent:
        """hvp says identity, grad says twice the identity."""

        dim, dtype, device = 4, torch.float64, torch.device("cpu")
        theta0 = torch.zeros(4, dtype=torch.float64)
        capabilities = Capability.GRAD | Capability.HVP

        def hvp(self, V):
            return V

        def grad(self, theta):
            return 2 * theta

    with pytest.raises(OperatorContractError, match=r"grad differences != hvp"):
        check_oracle(Inconsistent())


def test_check_oracle_reports_wrong_shapes():
    class WrongLoss:
        dim, dtype, device = 3, torch.float64, torch.device("cpu")
        theta0 = torch.zeros(3, dtype=torch.float64)
        capabilities = Capability.LOSS

        def loss(self, theta):
            return theta.sum(1, keepdim=True)

    with pytest.raises(
        OperatorContractError,
        match=r"loss\(theta\)` must be a tensor of shape \(4,\); got shape \(4, 1\)",
    ):
        check_oracle(WrongLoss())
