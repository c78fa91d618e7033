"""Oracles for explicit matrices: numpy arrays, torch tensors, scipy sparse, LinearOperator.

Each explicit symmetric matrix ``S`` becomes the quadratic ``f(θ) = ½ θᵀSθ`` at
``θ0 = 0``: ``grad(θ) = Sθ`` and ``hvp(V) = SV``. Inputs are validated once, here, with
messages that name the rule and what was received; numpy arrays are wrapped without a copy
when their dtype is float32 or float64.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from matrank._oracle import (
    Capability,
    as_oracle,
    check_symmetric_operator,
    content_digest,
    materialize,
    sha256_of,
)
from matrank._validation import (
    MatrankTypeError,
    MatrankValueError,
    NotSymmetricError,
    OperatorContractError,
    message,
)

__all__ = ["DenseOracle", "LinearOperatorOracle", "SparseOracle"]

_ALL = Capability.LOSS | Capability.GRAD | Capability.HVP


class _QuadraticMixin:
    """``f(θ) = ½ θᵀSθ`` for any ``S`` with a block product ``_matmat``."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    @property
    def capabilities(self) -> Capability:
        return _ALL

    @property
    def theta0(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self.dtype, device=self.device)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """``S @ V`` for a block ``V`` of shape ``(n, b)``."""
        return self._matmat(V)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """``S θ`` for a batch ``θ`` of shape ``(b, n)``."""
        return self._matmat(theta.T).T

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """``½ θᵀSθ`` for a batch ``θ`` of shape ``(b, n)``."""
        return 0.5 * (self.grad(theta) * theta).sum(dim=1)


def _precision(dtype: Any) -> torch.dtype:
    """The floating precision of entries given in ``dtype`` (numpy or torch): half
    precisions keep theirs, integers and booleans are exact in float64."""
    if isinstance(dtype, np.dtype):
        if dtype == np.float16:
            return torch.float16
        return torch.float32 if dtype == np.float32 else torch.float64
    return dtype if dtype.is_floating_point else torch.float64


def _target_dtype(dtype: torch.dtype) -> torch.dtype:
    # float32 and float64 are kept as the user chose them; everything else real (ints,
    # bools, half precision) is computed in float64, the default for matrices.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float64


def _check_square(shape: tuple[int, ...], name: str) -> int:
    if len(shape) != 2:
        raise MatrankValueError(
            message(name, "a 2-D matrix", f"{len(shape)}-D shape {shape}")
        )
    if shape[0] != shape[1]:
        raise MatrankValueError(message(name, "a square matrix", f"shape {shape}"))
    if shape[0] == 0:
        raise MatrankValueError(message(name, "a non-empty matrix", f"shape {shape}"))
    return int(shape[0])


def _check_symmetric(name: str, defect: float, dtype: torch.dtype, scale: float) -> None:
    """Refuse an asymmetry ``max |A − Aᵀ|`` above sqrt(eps) of the largest entry:
    rounding in a product such as XᵀX gives asymmetries near eps·sqrt(m)·scale, a
    non-symmetric matrix gives O(scale)."""
    tolerance = math.sqrt(torch.finfo(dtype).eps) * scale
    if defect > tolerance:
        raise NotSymmetricError(
            message(
                name,
                f"symmetric (max |A − Aᵀ| ≤ {tolerance:.3g})",
                f"max |A − Aᵀ| = {defect:.3g}",
            )
        )


class DenseOracle(_QuadraticMixin):
    """The quadratic of an explicit dense symmetric matrix held as a torch tensor.

    Parameters
    ----------
    matrix : torch.Tensor
        Symmetric ``(n, n)`` real tensor, on any device; not copied.

    Notes
    -----
    Construct through :func:`matrank.as_oracle`, which validates the input; the
    constructor trusts it.

    Examples
    --------
    >>> import torch
    >>> oracle = DenseOracle(torch.eye(2, dtype=torch.float64))
    >>> oracle.hvp(torch.ones(2, 1, dtype=torch.float64)).ravel().tolist()
    [1.0, 1.0]
    """

    def __init__(
        self,
        matrix: torch.Tensor,
        *,
        precision: torch.dtype | None = None,
        magnitude: float | None = None,
    ) -> None:
        self.matrix = matrix
        self.dim = int(matrix.shape[0])
        self.dtype = matrix.dtype
        self.device = matrix.device
        # the entries' own precision (float16 computed in float64 keeps float16's eps)
        # and the largest |entry|: what noise floors and the run's scaling read
        self.precision = precision or matrix.dtype
        self.magnitude = magnitude

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            # (VᵀS)ᵀ = SV for the symmetric S: on CPU BLAS a narrow block times S in
            # this orientation runs 1.3–2.7× faster than S @ V at n = 6000
            # (benchmarks/lanczos_speed.py).
            return (V.T @ self.matrix).T
        return self.matrix @ V

    def __repr__(self) -> str:
        return f"DenseOracle(n={self.dim}, dtype={self.dtype}, device={self.device})"


def _dense_from_tensor(
    tensor: torch.Tensor, name: str, precision: torch.dtype | None = None
) -> DenseOracle:
    if tensor.device.type == "meta":
        raise MatrankValueError(
            message(name, "a tensor with data", "a tensor on the meta device")
        )
    if tensor.is_complex():
        raise MatrankTypeError(message(name, "a real matrix", f"dtype {tensor.dtype}"))
    if tensor.is_sparse or tensor.layout != torch.strided:
        raise MatrankTypeError(
            message(name, "a strided (dense) torch tensor", f"layout {tensor.layout}")
        )
    _check_square(tuple(tensor.shape), name)
    precision = _precision(precision or tensor.dtype)
    tensor = tensor.to(_target_dtype(tensor.dtype))
    # One pass, no temporary, for both the scale and finiteness: aminmax propagates NaN
    # and Inf (10× faster than abs().max() at n = 6000).
    low, high = torch.aminmax(tensor)
    scale = max(-float(low), float(high))
    if not math.isfinite(scale):
        bad = int((~torch.isfinite(tensor)).sum())
        raise MatrankValueError(
            message(name, "finite (no NaN or Inf)", f"{bad} non-finite entries")
        )
    defect = _max_asymmetry(tensor)
    _check_symmetric(name, defect, precision, scale)
    return DenseOracle(tensor, precision=precision, magnitude=scale)


def _max_asymmetry(tensor: torch.Tensor, tile: int = 512) -> float:
    # Square tiles of the upper triangle against their mirror: half the reads of A − Aᵀ,
    # cache-friendly transposes, and a temporary of tile² entries instead of n².
    n = tensor.shape[0]
    worst = 0.0
    for i in range(0, n, tile):
        for j in range(i, n, tile):
            upper = tensor[i : i + tile, j : j + tile]
            lower = tensor[j : j + tile, i : i + tile]
            worst = max(worst, float((upper - lower.T).abs().max()))
    return worst


@as_oracle.register
def _(obj: np.ndarray) -> DenseOracle:
    name = "obj"
    if obj.dtype == object or not (
        np.issubdtype(obj.dtype, np.number) or obj.dtype == bool
    ):
        raise MatrankTypeError(
            message(name, "an array of real numbers", f"an array of dtype {obj.dtype}")
        )
    if np.iscomplexobj(obj):
        raise MatrankTypeError(message(name, "a real matrix", f"dtype {obj.dtype}"))
    if isinstance(obj, np.ma.MaskedArray):
        raise MatrankTypeError(
            message(
                name,
                "a plain array (a rank with entries missing is not defined; fill them, "
                "e.g. obj.filled(0), or drop the rows and columns)",
                "a numpy masked array",
            )
        )
    _check_square(obj.shape, name)
    precision = _precision(obj.dtype)
    if obj.dtype not in (np.float32, np.float64) or any(s < 0 for s in obj.strides):
        obj = np.ascontiguousarray(obj, dtype=np.float64)
    with warnings.catch_warnings():
        # from_numpy warns on read-only arrays; we never write through the tensor.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(obj)
    return _dense_from_tensor(tensor, name, precision)


@as_oracle.register
def _(obj: torch.Tensor) -> DenseOracle:
    return _dense_from_tensor(obj.detach(), "obj")


@as_oracle.register
def _(obj: DenseOracle) -> DenseOracle:
    return obj


@materialize.register
def _(oracle: DenseOracle) -> torch.Tensor:
    return oracle.matrix


@content_digest.register
def _(oracle: DenseOracle) -> str:
    return sha256_of(oracle.matrix)


class SparseOracle(_QuadraticMixin):
    """The quadratic of a scipy sparse symmetric matrix, computed as a torch CSR tensor.

    Examples
    --------
    >>> import scipy.sparse, matrank
    >>> oracle = matrank.as_oracle(scipy.sparse.eye(4, format="csr"))
    >>> oracle
    SparseOracle(n=4, nnz=4, dtype=torch.float64)
    """

    def __init__(self, matrix: scipy.sparse.csr_array | scipy.sparse.csr_matrix) -> None:
        csr = scipy.sparse.csr_array(matrix)
        csr.sort_indices()
        self.dim = int(csr.shape[0])
        self.nnz = int(csr.nnz)
        with warnings.catch_warnings():
            # torch flags its CSR support as beta; products with dense blocks are all we use.
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = torch.sparse_csr_tensor(
                torch.from_numpy(csr.indptr.astype(np.int64)),
                torch.from_numpy(csr.indices.astype(np.int64)),
                torch.from_numpy(csr.data),
                size=csr.shape,
                check_invariants=False,  # scipy's canonical CSR satisfies them
            )
        self.dtype = self.matrix.dtype
        self.device = self.matrix.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.matrix @ V

    def __repr__(self) -> str:
        return f"SparseOracle(n={self.dim}, nnz={self.nnz}, dtype={self.dtype})"


def _sparse_oracle(obj: Any) -> SparseOracle:
    name = "obj"
    if np.iscomplexobj(obj) or obj.dtype == object:  # any format (dok has no .data)
        raise MatrankTypeError(message(name, "a real sparse matrix", f"dtype {obj.dtype}"))
    _check_square(obj.shape, name)
    precision = _precision(np.dtype(obj.dtype))
    dtype = np.float32 if obj.dtype == np.float32 else np.float64
    csr = scipy.sparse.csr_array(obj, dtype=dtype)
    csr.sum_duplicates()
    if not np.isfinite(csr.data).all():
        bad = int((~np.isfinite(csr.data)).sum())
        raise MatrankValueError(
            message(name, "finite (no NaN or Inf)", f"{bad} non-finite entries")
        )
    scale = float(abs(csr).max()) if csr.nnz else 0.0
    difference = csr - csr.T
    defect = float(abs(difference).max()) if difference.nnz else 0.0
    _check_symmetric(name, defect, precision, scale)
    oracle = SparseOracle(csr)
    oracle.precision, oracle.magnitude = precision, scale
    return oracle


as_oracle.register(scipy.sparse.spmatrix, _sparse_oracle)
if hasattr(scipy.sparse, "sparray"):
    as_oracle.register(scipy.sparse.sparray, _sparse_oracle)


@as_oracle.register
def _(obj: SparseOracle) -> SparseOracle:
    return obj


@materialize.register
def _(oracle: SparseOracle) -> torch.Tensor:
    return oracle.matrix.to_dense()


@content_digest.register
def _(oracle: SparseOracle) -> str:
    csr = oracle.matrix
    return sha256_of(csr.crow_indices(), csr.col_indices(), csr.values())


class LinearOperatorOracle(_QuadraticMixin):
    """The quadratic of a symmetric ``scipy.sparse.linalg.LinearOperator``.

    Blocks cross the boundary as numpy arrays (CPU only): ``hvp(V)`` calls
    ``operator.matmat`` once per block, and checks the shape of what comes back, because
    a user's operator is the likeliest place for a shape mistake.

    Examples
    --------
    >>> import numpy as np, scipy.sparse.linalg, matrank
    >>> op = scipy.sparse.linalg.aslinearoperator(np.diag([2.0, 1.0, 0.0]))
    >>> matrank.as_oracle(op)
    LinearOperatorOracle(n=3, dtype=torch.float64)
    """

    def __init__(self, operator: scipy.sparse.linalg.LinearOperator) -> None:
        self.operator = operator
        self.dim = int(operator.shape[0])
        self.dtype = torch.float32 if operator.dtype == np.float32 else torch.float64
        self.device = torch.device("cpu")

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        numpy_dtype = np.float32 if self.dtype == torch.float32 else np.float64
        block = V.detach().cpu().numpy()
        result = np.asarray(self.operator.matmat(block))
        expected = (self.dim, V.shape[1])
        if result.shape != expected:
            raise OperatorContractError(
                message(
                    "operator.matmat(V)",
                    f"an array of shape {expected}",
                    f"shape {result.shape}",
                )
            )
        if np.iscomplexobj(result):
            raise OperatorContractError(
                message("operator.matmat(V)", "a real array", f"dtype {result.dtype}")
            )
        if not np.isfinite(result).all():
            raise OperatorContractError(
                message(
                    "operator.matmat(V)", "finite (no NaN or Inf)", "non-finite entries"
                )
            )
        return torch.from_numpy(np.ascontiguousarray(result, dtype=numpy_dtype))

    def __repr__(self) -> str:
        return f"LinearOperatorOracle(n={self.dim}, dtype={self.dtype})"


@as_oracle.register
def _(obj: scipy.sparse.linalg.LinearOperator) -> LinearOperatorOracle:
    name = "obj"
    dtype = np.dtype(obj.dtype) if obj.dtype is not None else np.dtype(np.float64)
    if dtype.kind == "c":
        raise MatrankTypeError(message(name, "a real LinearOperator", f"dtype {dtype}"))
    if dtype.kind not in "fiub":
        raise MatrankTypeError(
            message(name, "a LinearOperator of real numbers", f"dtype {dtype}")
        )
    _check_square(tuple(obj.shape), name)
    oracle = LinearOperatorOracle(obj)
    oracle.precision = _precision(dtype)
    oracle.magnitude = check_symmetric_operator(oracle, name)
    return oracle


@as_oracle.register
def _(obj: LinearOperatorOracle) -> LinearOperatorOracle:
    return obj
