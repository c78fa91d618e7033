"""The oracle protocol and the coercion of user objects into oracles.

An oracle describes one stationary point ``theta0`` of a loss ``f`` whose Hessian there is
the operator whose rank we estimate. Estimators ask only for what they need (``hvp`` for
Krylov and polynomial methods, ``grad`` for Langevin, ``loss`` for evolution strategies)
and read :attr:`Oracle.capabilities` to refuse clearly when it is missing.

Block operations are the primitive -- ``hvp`` takes ``(n, b)``, ``grad`` and ``loss`` take
``(b, n)`` -- because one matrix-matrix product or one batched forward-backward is where
the speed is.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
import numbers
from collections.abc import Iterator
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import torch

from ._meter import CostMeter
from ._validation import (
    MatrankTypeError,
    MatrankValueError,
    NotSymmetricError,
    OperatorContractError,
    message,
)

__all__ = [
    "Capability",
    "CostMeter",
    "Oracle",
    "as_oracle",
    "content_digest",
    "exact_rank",
    "input_eps",
    "input_precision",
    "magnitude",
    "materialize",
    "symmetry_defect",
    "unwrap",
]


class Capability(enum.Flag):
    """What an oracle can compute: the loss, its gradient, Hessian-vector products."""

    NONE = 0
    LOSS = enum.auto()
    GRAD = enum.auto()
    HVP = enum.auto()

    @property
    def label(self) -> str:
        """Lower-case name, as the oracle's method is called (``"hvp"``)."""
        return (self.name or "").lower()


@runtime_checkable
class Oracle(Protocol):
    """Protocol of a loss ``f`` around a stationary point ``theta0`` with Hessian ``H``.

    A class type-checks as an oracle without inheriting from anything. Methods that the
    oracle cannot compute may raise ``NotImplementedError``; ``capabilities`` says which
    ones work.

    Attributes
    ----------
    dim : int
        Number of parameters ``n``.
    dtype : torch.dtype
        Floating dtype of every tensor the oracle takes and returns.
    device : torch.device
        Device of those tensors; estimators never move data between devices.
    theta0 : torch.Tensor
        The stationary point, shape ``(n,)`` (zeros for a plain matrix).
    capabilities : Capability
        Which of ``loss``, ``grad``, ``hvp`` are available.

    Optional attributes, read through matrank's wrappers (:func:`unwrap`), each with
    its default when absent:

    - ``gradient_dtype`` (default ``dtype``): the precision ``grad`` computes in, if
      coarser (``LinearNetHessian(gradient_dtype=torch.float32)``); finite differences
      of gradients size their step by it (:func:`gradient_precision`);
    - ``collective`` (default ``None``): for an oracle whose products are sums over the
      ranks of a process group (``TorchLoss(distributed=True)``), the object with
      ``sum``, ``agree``, ``same`` and ``together`` that the run uses so that every rank
      takes the same decisions (:func:`collective`, :func:`agree`);
    - ``precision`` and ``magnitude``: the rounding unit of the input and the size of
      its entries, where an adapter knows them (the noise floor and the scaling).

    Notes
    -----
    For an explicit symmetric matrix ``S`` the oracle is the quadratic
    ``f(θ) = ½ θᵀSθ``: ``grad(θ) = Sθ`` and ``hvp(V) = SV``.
    """

    @property
    def dim(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def theta0(self) -> torch.Tensor: ...

    @property
    def capabilities(self) -> Capability: ...

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """Loss at a batch of points, ``(b, n) -> (b,)``."""
        ...

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """Gradient at a batch of points, ``(b, n) -> (b, n)``."""
        ...

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """Hessian at ``theta0`` times a block, ``(n, b) -> (n, b)``."""
        ...


def unwrap(oracle: Any) -> Iterator[Any]:
    """``oracle`` and every oracle it wraps, outermost first: matrank's wrappers
    (checked, metered, scaled) name the one they wrap ``inner``."""
    seen: set[int] = set()
    while oracle is not None and id(oracle) not in seen:
        seen.add(id(oracle))
        yield oracle
        oracle = getattr(oracle, "inner", None)


def _attribute(oracle: Any, name: str) -> Any:
    """``oracle.name``, looked up through matrank's wrappers; ``None`` if none has it."""
    for layer in unwrap(oracle):
        if hasattr(layer, name):
            return getattr(layer, name)
    return None


def gradient_precision(oracle: Any) -> torch.dtype:
    """The dtype ``oracle.grad`` computes in: its ``gradient_dtype`` if it has one (looked
    up through matrank's wrappers), else its ``dtype``."""
    found = _attribute(oracle, "gradient_dtype")
    return cast(torch.dtype, oracle.dtype if found is None else found)


def input_precision(oracle: Any) -> torch.dtype:
    """The precision the operator's entries were given in: an oracle's ``precision``
    attribute (a float16 matrix computed in float64 keeps float16's), else its
    ``dtype``. Noise floors use this one's ``eps``."""
    found = _attribute(oracle, "precision")
    return cast(torch.dtype, oracle.dtype if found is None else found)


def input_eps(oracle: Any) -> float:
    """The relative precision of the operator's entries: its precision's ``eps``, or
    coarser where the entries are subnormal. Below the smallest normal number a float
    keeps a fixed spacing (``2^-1074`` in float64), so entries of size ``m`` carry a
    relative precision of only ``spacing / m`` (a few bits at ``1e-320``)."""
    info = torch.finfo(input_precision(oracle))
    eps = float(info.eps)
    size = magnitude(oracle)
    spacing = float(info.smallest_normal) * eps
    if size is not None and 0 < size < float(info.smallest_normal):
        eps = max(eps, spacing / size)
    return eps


def magnitude(oracle: Any) -> float | None:
    """An oracle's ``magnitude`` attribute (the size of its largest entries or
    products, read at construction), or ``None``: what a run scales by."""
    found = _attribute(oracle, "magnitude")
    return None if found is None else float(found)


@functools.singledispatch
def as_oracle(obj: Any) -> Oracle:
    """Coerce a matrix, operator or oracle into an :class:`Oracle`.

    Accepted: ``numpy.ndarray``, scipy sparse matrices and arrays,
    ``scipy.sparse.linalg.LinearOperator``, ``torch.Tensor``, the adapters in
    ``matrank.adapters`` and any object satisfying the :class:`Oracle` protocol. Third
    parties register their own types with ``@matrank.as_oracle.register``.

    Parameters
    ----------
    obj : object
        The matrix or operator whose rank is wanted.

    Returns
    -------
    Oracle

    Raises
    ------
    MatrankTypeError
        For any other type; the message lists what is accepted.
    MatrankValueError
        For a matrix that is not square, not 2-D, empty, non-finite, complex or not
        symmetric (see ``matrank.adapters.dense``).

    Examples
    --------
    >>> import numpy as np, matrank
    >>> oracle = matrank.as_oracle(np.eye(3))
    >>> oracle.dim, oracle.dtype
    (3, torch.float64)
    """
    # Duck-typed rather than isinstance(obj, Oracle): an oracle needs only the methods its
    # capabilities claim, and _CheckedOracle verifies those.
    if all(
        hasattr(obj, name) for name in ("dim", "dtype", "device", "theta0", "capabilities")
    ):
        return _CheckedOracle(obj)
    accepted = (
        "numpy.ndarray, scipy.sparse matrix or array, scipy.sparse.linalg.LinearOperator, "
        "torch.Tensor, a matrank.adapters object, or an object implementing matrank.Oracle"
    )
    raise MatrankTypeError(message("obj", f"one of: {accepted}", type(obj).__name__))


@functools.singledispatch
def materialize(oracle: Any) -> torch.Tensor:
    """The dense Hessian ``H`` of an oracle as an ``(n, n)`` tensor.

    The default applies ``hvp`` to blocks of the identity (``n`` matvecs); adapters that
    hold the matrix register a free version.
    """
    n = oracle.dim
    block = 256
    columns = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        eye = torch.zeros(n, stop - start, dtype=oracle.dtype, device=oracle.device)
        eye[torch.arange(start, stop), torch.arange(stop - start)] = 1
        columns.append(oracle.hvp(eye))
    return torch.cat(columns, dim=1)


@functools.singledispatch
def content_digest(oracle: Any) -> str | None:
    """A digest of the operator's entries (SHA-256 of the bytes an explicit matrix
    holds), or ``None`` where the operator is known only by its products.

    A checkpoint records it: resuming with a matrix that differs in one entry is then
    refused. Adapters that hold their matrix register an implementation.
    """
    return None


def sha256_of(*arrays: Any) -> str:
    """SHA-256 over arrays' dtypes, shapes and bytes (numpy arrays or torch tensors)."""
    digest = hashlib.sha256()
    for array in arrays:
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)  # contiguous: its buffer, not a copy
    return digest.hexdigest()


@functools.singledispatch
def exact_rank(oracle: Any) -> int:
    """Rank known from the structure of an oracle, without any matvec.

    Adapters whose rank follows from theory register an implementation (for example the
    deep-linear-net Hessian at a global minimum has rank ``d_in·d_out``). The default
    raises ``NotImplementedError``.
    """
    raise NotImplementedError(
        f"matrank.exact_rank is not implemented for {type(oracle).__name__}"
    )


def symmetry_defect(
    hvp: Any, dim: int, dtype: torch.dtype, device: torch.device, *, n_pairs: int = 3
) -> tuple[float, float, float]:
    """Randomized symmetry test of an operator: ``max |xᵀAy − yᵀAx|`` and its scale.

    Returns the largest defect over ``n_pairs`` random pairs and the scale it should be
    compared with, ``max ‖Ax‖‖y‖``, both divided by the largest entry of the products
    (so that neither overflows at any scale the dtype holds), and that entry: the
    operator's magnitude. Costs ``2·n_pairs`` matvecs in one block. Uses a fixed local
    generator so the check is reproducible and never touches global seeds.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    block = torch.randn(dim, 2 * n_pairs, generator=generator, dtype=torch.float64)
    block = block.to(dtype=dtype, device=device)
    image = hvp(block)
    peak = float(image.abs().max()) if image.numel() else 0.0
    if not peak > 0 or not math.isfinite(peak):
        return 0.0, 0.0, peak
    image = image / peak
    x, y = block[:, :n_pairs], block[:, n_pairs:]
    ax, ay = image[:, :n_pairs], image[:, n_pairs:]
    defect = ((y * ax).sum(0) - (x * ay).sum(0)).abs().max()
    scale = torch.maximum(
        ax.norm(dim=0) * y.norm(dim=0), ay.norm(dim=0) * x.norm(dim=0)
    ).max()
    return float(defect), float(scale), peak


def check_symmetric_operator(oracle: Oracle, name: str) -> float:
    """Raise :class:`NotSymmetricError` if the randomized test fails; return the
    operator's magnitude (the largest entry of its products with the test block).

    The tolerance is ``sqrt(eps)`` of the dtype relative to ``‖Ax‖‖y‖``: rounding in a
    symmetric operator gives defects near ``eps·sqrt(n)``, a non-symmetric one gives
    defects of the order of the scale itself.
    """
    defect, scale, peak = symmetry_defect(
        oracle.hvp, oracle.dim, oracle.dtype, oracle.device
    )
    if not math.isfinite(peak):
        raise OperatorContractError(
            message(name, "finite products (no NaN or Inf)", "non-finite entries")
        )
    tolerance = math.sqrt(torch.finfo(oracle.dtype).eps) * scale
    if defect > tolerance:
        raise NotSymmetricError(
            message(
                name,
                f"symmetric (|xᵀAy − yᵀAx| ≤ {tolerance * peak:.3g} for random x, y)",
                f"a defect of {defect * peak:.3g}",
            )
        )
    return peak


def check_block_result(result: Any, shape: tuple[int, ...], dtype: torch.dtype, name: str):
    """Check what a user's operator returned; raise :class:`OperatorContractError`."""
    if not isinstance(result, torch.Tensor):
        raise OperatorContractError(
            message(name, "a torch.Tensor", f"a {type(result).__name__}")
        )
    if tuple(result.shape) != shape:
        raise OperatorContractError(
            message(name, f"a tensor of shape {shape}", f"shape {tuple(result.shape)}")
        )
    if result.dtype != dtype:
        raise OperatorContractError(
            message(name, f"a tensor of dtype {dtype}", f"dtype {result.dtype}")
        )
    return result


class _CheckedOracle:
    """A user's oracle with the shapes of every answer checked at the boundary.

    User code is where protocol mistakes happen (a transposed block, a squeezed batch),
    and an estimator fed a wrong shape fails far from the cause, so each call is checked
    here once and the internals trust the result.
    """

    inner: Oracle
    dim: int
    calls: int
    magnitude: float

    def __init__(self, inner: Oracle) -> None:
        dim = inner.dim
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise OperatorContractError(message("oracle.dim", "an int >= 1", repr(dim)))
        if not isinstance(inner.dtype, torch.dtype) or not inner.dtype.is_floating_point:
            raise OperatorContractError(
                message("oracle.dtype", "a real floating torch.dtype", repr(inner.dtype))
            )
        if not isinstance(inner.capabilities, Capability):
            raise OperatorContractError(
                message(
                    "oracle.capabilities", "a matrank.Capability", repr(inner.capabilities)
                )
            )
        for capability in (Capability.LOSS, Capability.GRAD, Capability.HVP):
            method = capability.label
            if capability in inner.capabilities and not callable(
                getattr(inner, method, None)
            ):
                raise OperatorContractError(
                    message(
                        f"oracle.{method}",
                        f"a method, as capabilities claim {method}",
                        "none",
                    )
                )
        theta0 = inner.theta0
        if isinstance(theta0, torch.Tensor) and theta0.is_meta:
            raise OperatorContractError(
                message("oracle.theta0", "a tensor with data", "a meta tensor")
            )
        check_block_result(theta0, (int(dim),), inner.dtype, "oracle.theta0")
        if not bool(torch.isfinite(theta0).all()):
            raise OperatorContractError(
                message("oracle.theta0", "finite (no NaN or Inf)", "non-finite entries")
            )
        self.inner = inner
        self.dim = int(dim)
        self.calls = 0
        if Capability.HVP in inner.capabilities:
            peak = check_symmetric_operator(self, "oracle.hvp")
            if magnitude(inner) is None:
                self.magnitude = peak

    dtype = property(lambda self: self.inner.dtype)
    device = property(lambda self: self.inner.device)
    theta0 = property(lambda self: self.inner.theta0)
    capabilities = property(lambda self: self.inner.capabilities)

    def _checked(self, result: Any, shape: tuple[int, ...], call: str) -> torch.Tensor:
        self.calls += 1
        name = f"oracle.{call}"
        check_block_result(result, shape, self.dtype, name)
        if not bool(torch.isfinite(result).all()):
            bad = int((~torch.isfinite(result)).sum())
            raise OperatorContractError(
                message(
                    name,
                    "finite (no NaN or Inf)",
                    f"{bad} non-finite entries at call {self.calls} to the oracle",
                )
            )
        return result

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return self._checked(self.inner.loss(theta), (theta.shape[0],), "loss(theta)")

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        return self._checked(self.inner.grad(theta), tuple(theta.shape), "grad(theta)")

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        return self._checked(self.inner.hvp(V), tuple(V.shape), "hvp(V)")


@as_oracle.register
def _(obj: _CheckedOracle) -> Oracle:
    return obj


@exact_rank.register
def _(oracle: _CheckedOracle) -> int:
    return exact_rank(oracle.inner)


def collective(oracle: Any) -> Any:
    """The ``collective`` of a data-parallel oracle (``TorchLoss(distributed=True)``),
    looked up through the wrappers; ``None`` for any other (the protocol's default)."""
    return _attribute(oracle, "collective")


def agree(oracle: Any, value: Any) -> Any:
    """``value`` as rank 0 of a data-parallel oracle has it (every rank takes the same
    branch of a decision read off a clock); ``value`` itself for any other oracle."""
    found = collective(oracle)
    return value if found is None else found.agree(value)


def require(oracle: Oracle, capability: Capability, method: str) -> None:
    """Refuse clearly when an estimator needs something the oracle cannot compute."""
    if capability not in oracle.capabilities:
        have = ", ".join(c.label for c in Capability if c and c in oracle.capabilities)
        raise MatrankValueError(
            message(
                "obj",
                f"an oracle with {capability.label} for method={method!r}",
                f"one with only: {have or 'nothing'}",
            )
        )
