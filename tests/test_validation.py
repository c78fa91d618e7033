"""Every bad input raises a MatrankError with a message naming the rule and the value."""

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

import matrank
from matrank import (
    Capability,
    MatrankError,
    MatrankTypeError,
    MatrankValueError,
    NotSymmetricError,
    OperatorContractError,
)
from matrank._validation import check_choice, check_int, check_real

NON_SYMMETRIC = np.array([[1.0, 2.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    ("obj", "error", "match"),
    [
        (
            np.ones(3),
            MatrankValueError,
            r"`obj` must be a 2-D matrix; got 1-D shape \(3,\)",
        ),
        (np.ones((2, 2, 2)), MatrankValueError, r"must be a 2-D matrix; got 3-D"),
        (
            np.ones((2, 3)),
            MatrankValueError,
            r"must be a square matrix; got shape \(2, 3\)",
        ),
        (
            np.ones((0, 0)),
            MatrankValueError,
            r"must be a non-empty matrix; got shape \(0, 0\)",
        ),
        (
            np.array([[1.0, np.nan], [np.nan, 1.0]]),
            MatrankValueError,
            r"finite.*got 2 non-finite",
        ),
        (
            np.array([[np.inf, 0.0], [0.0, 1.0]]),
            MatrankValueError,
            r"finite.*got 1 non-finite",
        ),
        (np.eye(2) * 1j, MatrankTypeError, r"must be a real matrix; got dtype complex128"),
        (
            np.eye(2).astype(object),
            MatrankTypeError,
            r"array of real numbers; got .*dtype object",
        ),
        (
            np.array([["a", "b"], ["c", "d"]]),
            MatrankTypeError,
            r"array of real numbers; got .*<U1",
        ),
        (NON_SYMMETRIC, NotSymmetricError, r"must be symmetric .*got max \|A − Aᵀ\| = 2"),
        ([[1.0, 0.0], [0.0, 1.0]], MatrankTypeError, r"`obj` must be one of: .*; got list"),
        ("matrix.npy", MatrankTypeError, r"`obj` must be one of: .*; got str"),
    ],
)
def test_bad_numpy_and_other_inputs(obj, error, match):
    with pytest.raises(error, match=match):
        matrank.as_oracle(obj)
    with pytest.raises(MatrankError):  # and the front door says the same
        matrank.estimate_rank(obj)


@pytest.mark.parametrize(
    ("obj", "error", "match"),
    [
        (torch.ones(2, 3), MatrankValueError, r"square matrix; got shape \(2, 3\)"),
        (
            torch.eye(2, dtype=torch.complex64),
            MatrankTypeError,
            r"real matrix; got dtype torch.complex64",
        ),
        (
            torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]),
            MatrankValueError,
            r"finite",
        ),
        (torch.eye(3).to_sparse(), MatrankTypeError, r"strided \(dense\) torch tensor"),
        (torch.tensor(NON_SYMMETRIC), NotSymmetricError, r"symmetric"),
    ],
)
def test_bad_torch_inputs(obj, error, match):
    with pytest.raises(error, match=match):
        matrank.as_oracle(obj)


@pytest.mark.parametrize(
    ("obj", "error", "match"),
    [
        (
            scipy.sparse.random(3, 4, density=0.5, random_state=0),
            MatrankValueError,
            r"square",
        ),
        (scipy.sparse.csr_array(np.eye(2) * 1j), MatrankTypeError, r"real sparse matrix"),
        (
            scipy.sparse.csr_array(np.array([[np.nan, 0.0], [0.0, 1.0]])),
            MatrankValueError,
            r"finite",
        ),
        (
            scipy.sparse.csr_matrix(NON_SYMMETRIC),
            NotSymmetricError,
            r"got max \|A − Aᵀ\| = 2",
        ),
        (scipy.sparse.csr_array((0, 0)), MatrankValueError, r"non-empty"),
    ],
)
def test_bad_sparse_inputs(obj, error, match):
    with pytest.raises(error, match=match):
        matrank.as_oracle(obj)


def test_bad_linear_operators():
    aslinop = scipy.sparse.linalg.aslinearoperator
    with pytest.raises(MatrankValueError, match=r"square matrix; got shape \(2, 3\)"):
        matrank.as_oracle(aslinop(np.ones((2, 3))))
    with pytest.raises(
        MatrankTypeError, match=r"real LinearOperator; got dtype complex128"
    ):
        matrank.as_oracle(aslinop(np.eye(2) * 1j))
    with pytest.raises(
        NotSymmetricError, match=r"`obj` must be symmetric \(\|xᵀAy − yᵀAx\|"
    ):
        matrank.as_oracle(aslinop(np.triu(np.ones((5, 5)))))
    squeezed = scipy.sparse.linalg.LinearOperator(
        (4, 4), matvec=lambda v: np.ones(4), matmat=lambda V: np.ones(4), dtype=np.float64
    )
    with pytest.raises(
        OperatorContractError,
        match=r"`operator.matmat\(V\)` must be an array of shape \(4, 6\); got shape \(4,\)",
    ):
        matrank.as_oracle(squeezed)
    broken = scipy.sparse.linalg.LinearOperator(
        (3, 3), matvec=lambda v: v * np.nan, dtype=np.float64
    )
    with pytest.raises(OperatorContractError, match=r"finite"):
        matrank.as_oracle(broken)


class UserOracle:
    """A user's oracle for the protocol tests: the quadratic of a matrix, with a bug knob."""

    def __init__(self, matrix, bug=None):
        self.matrix = torch.as_tensor(matrix, dtype=torch.float64)
        self.bug = bug
        self.dim = self.matrix.shape[0]
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        self.theta0 = torch.zeros(self.dim, dtype=torch.float64)
        self.capabilities = Capability.LOSS | Capability.GRAD | Capability.HVP

    def hvp(self, V):
        out = self.matrix @ V
        return out.T if self.bug == "transposed" else out

    def grad(self, theta):
        out = theta @ self.matrix
        return out[0] if self.bug == "squeezed" else out

    def loss(self, theta):
        out = 0.5 * ((theta @ self.matrix) * theta).sum(1)
        return out[:, None] if self.bug == "column" else out


def test_user_oracle_is_checked_at_the_boundary():
    oracle = matrank.as_oracle(UserOracle(np.eye(3)))
    assert oracle.dim == 3
    with pytest.raises(
        OperatorContractError,
        match=r"`oracle.hvp\(V\)` must be a tensor of shape \(3, 6\); got shape \(6, 3\)",
    ):
        matrank.as_oracle(UserOracle(np.eye(3), bug="transposed"))
    bad_grad = matrank.as_oracle(UserOracle(np.eye(3), bug="squeezed"))
    with pytest.raises(
        OperatorContractError,
        match=r"`oracle.grad\(theta\)` must be a tensor of shape \(2, 3\); got shape \(3,\)",
    ):
        bad_grad.grad(torch.zeros(2, 3, dtype=torch.float64))
    bad_loss = matrank.as_oracle(UserOracle(np.eye(3), bug="column"))
    with pytest.raises(
        OperatorContractError,
        match=r"`oracle.loss\(theta\)` must be a tensor of shape \(2,\)",
    ):
        bad_loss.loss(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(NotSymmetricError, match=r"`oracle.hvp` must be symmetric"):
        matrank.as_oracle(UserOracle(NON_SYMMETRIC))


def test_user_oracle_with_bad_attributes():
    oracle = UserOracle(np.eye(2))
    oracle.dim = 0
    with pytest.raises(
        OperatorContractError, match=r"`oracle.dim` must be an int >= 1; got 0"
    ):
        matrank.as_oracle(oracle)
    oracle = UserOracle(np.eye(2))
    oracle.dtype = torch.int64
    with pytest.raises(
        OperatorContractError, match=r"`oracle.dtype` must be a real floating"
    ):
        matrank.as_oracle(oracle)
    oracle = UserOracle(np.eye(2))
    oracle.theta0 = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(
        OperatorContractError, match=r"`oracle.theta0` must be a tensor of shape \(2,\)"
    ):
        matrank.as_oracle(oracle)
    oracle = UserOracle(np.eye(2))
    oracle.hvp = None
    with pytest.raises(
        OperatorContractError,
        match=r"`oracle.hvp` must be a method, as capabilities claim hvp; got none",
    ):
        matrank.as_oracle(oracle)
    oracle = UserOracle(np.eye(2))
    oracle.capabilities = "hvp"
    with pytest.raises(
        OperatorContractError, match=r"`oracle.capabilities` must be a matrank.Capability"
    ):
        matrank.as_oracle(oracle)


def test_estimator_refuses_an_oracle_without_products():
    oracle = UserOracle(np.eye(3))
    oracle.capabilities = Capability.LOSS | Capability.GRAD
    with pytest.raises(
        MatrankValueError,
        match=r"an oracle with hvp for method='exact'; got one with only: loss, grad",
    ):
        matrank.estimate_rank(oracle, method="exact")


def test_front_door_arguments():
    with pytest.raises(
        MatrankValueError, match=r"`method` must be one of 'auto', 'exact'.*; got 'svd'"
    ):
        matrank.estimate_rank(np.eye(2), method="svd")
    with pytest.raises(MatrankTypeError, match=r"`method` must be one of .*; got None"):
        matrank.estimate_rank(np.eye(2), method=None)
    with pytest.raises(
        MatrankTypeError,
        match=r"`options` must be hyperparameters of ExactRank \(threshold, max_dim, dual\); got n_probes",
    ):
        matrank.estimate_rank(np.eye(2), method="exact", n_probes=3)
    with pytest.raises(
        MatrankValueError, match=r"`seed` must be an int in \[0, inf\) or None; got -1"
    ):
        matrank.estimate_rank(np.eye(2), seed=-1)
    with pytest.raises(MatrankTypeError, match=r"`seed` must be an int .*; got 1.5"):
        matrank.estimate_rank(np.eye(2), seed=1.5)


def test_exact_rank_hyperparameters():
    with pytest.raises(
        MatrankValueError,
        match=r"`threshold` must be a real number in \[0, inf\), 'floor' or None; got -1.0",
    ):
        matrank.ExactRank(threshold=-1.0)
    with pytest.raises(MatrankValueError, match=r"`threshold` must be .*; got nan"):
        matrank.ExactRank(threshold=float("nan"))
    with pytest.raises(MatrankTypeError, match=r"`threshold` must be .*; got '1e-3'"):
        matrank.ExactRank(threshold="1e-3")
    with pytest.raises(
        MatrankValueError, match=r"`max_dim` must be an int in \[1, inf\); got 0"
    ):
        matrank.ExactRank(max_dim=0)
    with pytest.raises(
        MatrankValueError,
        match=r"of dimension at most max_dim=5 .*use method='lanczos'.*; got dimension 6",
    ):
        matrank.ExactRank(max_dim=5).estimate(np.eye(6))


def test_validators_render_the_template():
    assert check_int("k", 3, low=1) == 3
    with pytest.raises(
        MatrankTypeError, match=r"^`k` must be an int in \[1, inf\); got True\.$"
    ):
        check_int("k", True, low=1)
    with pytest.raises(
        MatrankValueError, match=r"^`x` must be a real number in \(0, 1\]; got 0.0\.$"
    ):
        check_real("x", 0.0, low=0.0, high=1.0, closed="right")
    with pytest.raises(
        MatrankValueError, match=r"^`x` must be a real number in \(-inf, 1\); got 2.0\.$"
    ):
        check_real("x", 2.0, high=1.0, closed="neither")
    with pytest.raises(
        MatrankValueError, match=r"^`kind` must be one of 'a', 'b'; got 'c'\.$"
    ):
        check_choice("kind", "c", ["a", "b"])


def test_errors_keep_builtin_bases():
    assert issubclass(MatrankValueError, ValueError)
    assert issubclass(MatrankTypeError, TypeError)
    assert issubclass(NotSymmetricError, MatrankError)
    assert issubclass(OperatorContractError, ValueError)


@pytest.mark.parametrize(
    ("method", "value", "reason"),
    [
        ("polynomial", 0.0, r"\(0, inf\), 'floor' or None with method='polynomial' \("),
        ("langevin", "floor", r"\(0, inf\) or None with method='langevin' \(its thr"),
        ("langevin", 0.0, r"\(0, inf\) or None with method='langevin' \(a filter mat"),
    ],
)
def test_one_threshold_rule_names_each_methods_exceptions(method, value, reason):
    # one check_threshold for every method: what a method cannot take is refused by the
    # same rule, with its own interval and the reason
    with pytest.raises(
        MatrankValueError, match=r"`threshold` must be a real number in " + reason
    ):
        matrank.estimate_rank(np.eye(4), method=method, threshold=value)
    for accepting in ("exact", "lanczos"):
        matrank.estimate_rank(np.eye(4), method=accepting, threshold=value)


def test_cost_keys_are_the_budget_names_and_the_old_ones_warn():
    result = matrank.estimate_rank(np.eye(6), method="langevin", seed=0, max_gradients=2000)
    cost = result.cost
    assert set(cost) == {"matvecs", "gradients", "evals", "seconds"}
    assert (
        0 < cost["gradients"] <= 2000
    )  # the budget max_gradients bounds cost["gradients"]
    with pytest.warns(FutureWarning, match=r"cost\['grads'\] is now cost\['gradients'\]"):
        assert cost["grads"] == cost["gradients"]
    with pytest.warns(FutureWarning, match="evals"):
        assert cost.get("loss_evals") == cost["evals"] == 0
    assert cost.get("nonsense") is None
    with pytest.raises(KeyError):
        cost["nonsense"]
    data = result.to_dict()
    assert data["schema"] == matrank.SCHEMA >= 2 and "grads" not in data["cost"]
