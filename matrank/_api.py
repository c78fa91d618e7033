"""The front door: ``estimate_rank(obj, method="auto", seed=None, **options)``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ._oracle import Capability, Oracle, as_oracle
from ._result import RankResult
from ._validation import (
    MatrankTypeError,
    check_choice,
    check_int,
    message,
)
from .estimators import (
    EvolutionRank,
    ExactRank,
    LanczosRank,
    LangevinRank,
    PolynomialRank,
)

__all__ = [
    "AUTO_EXACT_MAX_DIM",
    "AUTO_OPTIONS",
    "ESTIMATORS",
    "auto_method",
    "estimate_rank",
]

#: Method name -> estimator class. ``"auto"`` is resolved by :func:`auto_method`.
ESTIMATORS: dict[str, type] = {
    "exact": ExactRank,
    "lanczos": LanczosRank,
    "polynomial": PolynomialRank,
    "langevin": LangevinRank,
    "evolution": EvolutionRank,
}

#: Hyperparameters ``"auto"`` gives a method it picks beyond the estimator's own defaults
#: (a user's options override them). Empty: every estimator's default is now the one
#: ``auto`` wants -- ``LangevinRank()`` runs the virial readout with η from gradients.
AUTO_OPTIONS: dict[str, dict[str, Any]] = {}

#: Up to this dimension ``"auto"`` runs the dense eigendecomposition: at n = 4096 it takes
#: a few seconds on two cores and is exact, so nothing iterative can beat it there.
AUTO_EXACT_MAX_DIM = 4096


def auto_method(oracle: Oracle) -> tuple[str, str]:
    """The method ``"auto"`` picks for an oracle, and why (a sentence for diagnostics)."""
    if Capability.HVP in oracle.capabilities:
        if oracle.dim <= AUTO_EXACT_MAX_DIM:
            return "exact", (
                f"dimension {oracle.dim} <= {AUTO_EXACT_MAX_DIM} with products available: "
                "a dense eigendecomposition is exact and fast"
            )
        return "lanczos", (
            f"dimension {oracle.dim} > {AUTO_EXACT_MAX_DIM} with products available: "
            "block Krylov counting"
        )
    if Capability.GRAD in oracle.capabilities:
        return "langevin", (
            "gradients only: Langevin dynamics with the virial readout and a step size "
            "from the largest curvature; it counts the eigenvalues above the reported "
            "threshold"
        )
    if Capability.LOSS in oracle.capabilities and "evolution" in ESTIMATORS:
        return "evolution", "loss values only: evolution-strategies covariance route"
    return "exact", "no estimator for this oracle's capabilities; trying the dense path"


def estimate_rank(
    obj: Any,
    method: str = "auto",
    seed: int | None = None,
    *,
    progress: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: float = 60.0,
    keep_checkpoint: bool = False,
    **options: Any,
) -> RankResult:
    """Estimate the numerical rank of a symmetric matrix, operator or Hessian.

    Parameters
    ----------
    obj : array_like, sparse matrix, LinearOperator, torch.Tensor or Oracle
        Anything :func:`matrank.as_oracle` accepts.
    method : str, default="auto"
        One of ``"auto"``, ``"exact"`` and the other installed estimators (see
        ``matrank.ESTIMATORS``). ``"auto"`` picks by size and capabilities (see Notes) and
        records its reason in ``result.diagnostics["auto"]``.
    seed : int or None, default=None
        Seed of the estimator's own random generator; the same integer gives a
        bit-identical result on the CPU. Global seeds are never read or set.
    progress : bool, default=False
        Show a tqdm progress bar with the running estimate (``lanczos``, ``langevin``).
        Ctrl-C then returns the best estimate so far, its ``status`` ``INTERRUPTED``.
    checkpoint : str, path or None, default=None
        Save the run's state to this file as it goes (atomically: a temporary file,
        then a rename), and resume from it when it exists: a rerun with the same path
        and arguments after a crash or a kill returns the uninterrupted result,
        bit-identical on the CPU for the same seed. A file written by another run
        (oracle, method, options or seed) is refused, naming what differs. The file is
        removed when the estimate finishes, kept when it is interrupted.
    checkpoint_every : float, default=60.0
        Seconds at least between two writes; the state is written at the estimator's
        checks (Krylov assessments, Langevin and evolution doublings, probe blocks).
    keep_checkpoint : bool, default=False
        Keep the checkpoint after a finished run (rerunning then returns at once).
    **options
        Hyperparameters of the chosen estimator class (for example ``threshold=``).

    Returns
    -------
    RankResult

    Raises
    ------
    MatrankValueError
        For an unknown method or bad input (see :func:`matrank.as_oracle`).
    MatrankTypeError
        For an option the chosen estimator does not have.

    Notes
    -----
    The ``"auto"`` policy: products with H available and ``n <= 4096`` -> ``"exact"``;
    larger -> ``"lanczos"``; gradients only -> ``"langevin"`` (its default: virial
    readout, automatic step size); loss values only ->
    ``"evolution"``.

    Examples
    --------
    >>> import numpy as np, matrank
    >>> B = np.random.default_rng(0).standard_normal((50, 7))
    >>> result = matrank.estimate_rank(B @ B.T)
    >>> int(result), result.method, result.diagnostics["auto"][:12]
    (7, 'exact', 'dimension 50')
    """
    check_choice("method", method, ("auto", *ESTIMATORS))
    check_int("seed", seed, low=0, allow_none=True)
    oracle = as_oracle(obj)
    reason = None
    if method == "auto":
        method, reason = auto_method(oracle)
        options = {**AUTO_OPTIONS.get(method, {}), **options}
    cls = ESTIMATORS[method]
    names = [field.name for field in dataclasses.fields(cls)]
    if "threshold" in options and "threshold" not in names:
        raise MatrankTypeError(
            message(
                "threshold",
                f"left out with method={method!r}: {cls.threshold_unsupported}",
                repr(options["threshold"]),
            )
        )
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise MatrankTypeError(
            message(
                "options",
                f"hyperparameters of {cls.__name__} ({', '.join(names)})",
                ", ".join(unknown),
            )
        )
    if not isinstance(progress, bool):
        raise MatrankTypeError(message("progress", "True or False", repr(progress)))
    result = cls(**options).estimate(
        oracle,
        seed=seed,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        keep_checkpoint=keep_checkpoint,
    )
    if reason is not None:
        diagnostics = {**result.diagnostics, "auto": reason}
        result = dataclasses.replace(result, diagnostics=diagnostics)
    return result
