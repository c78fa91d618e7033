"""The front door: ``estimate_rank(obj, method="auto", seed=None, **options)``."""

from __future__ import annotations

import dataclasses
import os
import weakref
from typing import Any

import torch

from . import _clock
from ._costs import dual_seconds, eigvalsh_seconds, gram_seconds
from ._diagnostics import diagnostics_for
from ._dual import DualFormError, dual_form
from ._meter import Cost
from ._oracle import Capability, Oracle, agree, as_oracle, collective, materialize
from ._primal import AUTO_DENSE_SECONDS, calibrated, operator_route, recall, remember
from ._result import RankResult
from ._run import run_identity
from ._validation import (
    MatrankTypeError,
    MatrankValueError,
    RelativeThreshold,
    check_choice,
    check_run_options,
    message,
)
from .estimators import (
    EvolutionRank,
    ExactRank,
    LanczosRank,
    LangevinRank,
    PolynomialRank,
)
from .estimators.completion import Offer, offering
from .estimators.lanczos.dense import DENSE_MAX
from .numerics.krylov import spectral_bounds

__all__ = [
    "AUTO_DENSE_SECONDS",
    "AUTO_DUAL_MAX_DIM",
    "AUTO_EXACT_MAX_DIM",
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

#: Up to this dimension ``"auto"`` considers the dense eigendecomposition: at n = 4096 it
#: takes a few seconds on two cores and is exact.
AUTO_EXACT_MAX_DIM = 4096

#: A curvature that is a Gram matrix ``BᵀB`` (:func:`matrank.dual_form`) with ``m < n``
#: rows is counted by ``"auto"`` on its ``m × m`` dual when that is predicted to cost
#: less than the dense path (rows timed by the adapter, ``BBᵀ`` and ``eigvalsh`` from
#: :mod:`matrank._costs`). An adapter whose dual cannot time its rows falls back to a
#: size rule: the dual when ``m`` is at most this (one ``eigvalsh`` of at most a minute
#: on two cores).
AUTO_DUAL_MAX_DIM = 8192


def auto_method(oracle: Oracle) -> tuple[str, str]:
    """The method ``"auto"`` picks for an oracle, and why (a sentence for diagnostics).

    For an operator (products with ``H``, the matrix not held) of dimension up to
    ``AUTO_EXACT_MAX_DIM`` the choice times one block of products (see
    :func:`estimate_rank`, Notes).
    """
    method, _, reason, _, _ = _auto(oracle)
    return method, reason


def _auto(
    oracle: Oracle, key: Any = None, threshold: Any = None, seed: int | None = None
) -> tuple[str, dict[str, float], str, bool | None, Offer | None]:
    """:func:`auto_method`, what its timings spent (``matvecs``, ``gradients``; ``key``:
    the object whose calibration is recorded, the oracle itself by default),
    whether a dual form was taken (``None``: none weighed), so that ``"exact"`` runs
    the route that was chosen, not its own size rule, and what the route chosen may
    use of its products and pilot (:func:`matrank._primal.operator_route`)."""
    key = oracle if key is None else key
    spent: dict[str, float] = {"matvecs": 0, "gradients": 0.0}
    no_dual, weighed = "", None
    try:
        form = dual_form(oracle)
    except DualFormError as refusal:  # a coupled loss: no dual to weigh, and why
        form, no_dual = None, f" and a dual that does not hold here ({refusal})"
    if form is not None and form.size < oracle.dim:
        takes, why = _weigh_dual(oracle, form, key, spent)
        if takes:
            return "exact", spent, why, True, None
        no_dual, weighed = why, False
    method, timed, reason, offer = _primal(
        oracle, key, no_dual or _no_dual(form, oracle.dim), threshold, seed
    )
    spent["matvecs"] += timed
    return method, spent, reason, weighed, offer


def _weigh_dual(
    oracle: Oracle, form: Any, key: Any, spent: dict[str, float]
) -> tuple[bool, str]:
    """Whether ``"auto"`` counts a Gram curvature on its dual, and the sentence saying
    why (a clause for the primal's reason when not): the dual's predicted seconds (its
    rows timed by the adapter, ``BBᵀ`` and an ``m × m`` ``eigvalsh``) against the dense
    path's -- an ``n × n`` ``eigvalsh`` alone when that already costs more, else with
    its ``n`` products timed. A Krylov count of a gapless curvature ends on that dense
    path, so a dual that costs less than it is the cheaper exact answer."""
    n, m = oracle.dim, form.size
    kind = form.what.split(":")[0]
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    what = f"{article} {kind} curvature BᵀB whose B has {m} rows < dimension {n}"
    if m > DENSE_MAX:
        return False, f" and a dual of {m} rows, more than the {DENSE_MAX} that fit memory"
    if form.time_rows is None:  # an adapter that cannot time its rows: the size rule
        if m <= AUTO_DUAL_MAX_DIM:
            return True, (
                f"{what}, m <= AUTO_DUAL_MAX_DIM = {AUTO_DUAL_MAX_DIM} (its rows not "
                f"timed): the exact count on the {m} × {m} dual BBᵀ"
            )
        return False, _no_dual(form, n)
    rows = _timed_rows(form, key, spent)
    dual = float(agree(oracle, dual_seconds(m, n, rows)))
    parts = (
        f"predicted {dual:.2g} s (rows {rows:.2g} s, BBᵀ {gram_seconds(m, n):.2g} s, "
        f"eigvalsh {eigvalsh_seconds(m):.2g} s)"
    )
    dual_route = f"{what}: the exact count on the {m} × {m} dual BBᵀ, {parts}"
    floor = float(agree(oracle, eigvalsh_seconds(n)))
    if dual <= floor:
        return (
            True,
            f"{dual_route}, less than the dense path's eigvalsh alone ({floor:.2g} s)",
        )
    if Capability.HVP not in oracle.capabilities:
        return True, f"{dual_route}; no products, so no other exact route"
    calibration, timed = calibrated(oracle, key)
    spent["matvecs"] += timed
    dense = float(agree(oracle, n * calibration["product_seconds"] + floor))
    if dual <= dense:
        return True, (
            f"{dual_route}, less than the dense path's {dense:.2g} s ({n} products of "
            f"{calibration['product_seconds']:.3g} s and eigvalsh)"
        )
    return (
        False,
        f" and a dual of {m} rows {parts}, dearer than the dense path's {dense:.2g} s",
    )


# The adapters' timings of a dual's rows, kept per object like the products' calibration.
_ROW_TIMINGS: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _timed_rows(form: Any, key: Any, spent: dict[str, float]) -> float:
    """Predicted seconds of a dual's rows, timed once per object (``key``)."""
    known = recall(_ROW_TIMINGS, key)
    if known is not None:
        return known
    seconds, gradients = form.time_rows()
    spent["gradients"] += gradients
    remember(_ROW_TIMINGS, key, seconds)
    return seconds


def _primal(
    oracle: Oracle, key: Any, no_dual: str, threshold: Any, seed: int | None
) -> tuple[str, int, str, Offer | None]:
    """The route when the dual is not taken, the products timing it spent, why, and
    what the route may use of them (:func:`matrank._primal.operator_route`)."""
    if Capability.HVP in oracle.capabilities:
        n = oracle.dim
        if n > AUTO_EXACT_MAX_DIM:
            return (
                "lanczos",
                0,
                (
                    f"dimension {n} > {AUTO_EXACT_MAX_DIM} with products available"
                    f"{no_dual}: the Lanczos count, whose pilot and timed cost "
                    "model choose the dense path (n products and eigvalsh), a range "
                    "sketch or a Krylov basis, and switch to the dense path when it "
                    "costs less than the basis still could"
                ),
                None,
            )
        if materialize.dispatch(type(oracle)) is not materialize.dispatch(object):
            return (
                "exact",
                0,
                (
                    f"dimension {n} <= {AUTO_EXACT_MAX_DIM}, an explicit matrix: a dense "
                    "eigendecomposition is exact and fast"
                ),
                None,
            )
        return operator_route(oracle, key, no_dual, threshold, seed)
    if Capability.GRAD in oracle.capabilities:
        return (
            "langevin",
            0,
            (
                "gradients only: Langevin dynamics with the virial readout and a step size "
                "from the largest curvature; it counts the eigenvalues above the reported "
                "threshold"
            ),
            None,
        )
    if Capability.LOSS in oracle.capabilities and "evolution" in ESTIMATORS:
        return (
            "evolution",
            0,
            "loss values only: evolution-strategies covariance route",
            None,
        )
    return (
        "exact",
        0,
        "no estimator for this oracle's capabilities; trying the dense path",
        None,
    )


def _no_dual(form: Any, n: int) -> str:
    """Why a Gram-matrix curvature is not counted on its dual (empty: no dual)."""
    if form is None:
        return ""
    if form.size >= n:
        return f" and a dual of {form.size} rows, no fewer than n"
    return f" and a dual of {form.size} rows, above AUTO_DUAL_MAX_DIM = {AUTO_DUAL_MAX_DIM}"


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
        bit-identical result on the CPU. ``None`` is seed 0: every run is reproducible
        by default, and independent draws need distinct seeds. Global seeds are never
        read or set.
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
        Hyperparameters of the chosen estimator class (for example ``threshold=``;
        ``threshold=matrank.relative(f)`` counts above ``f·‖H‖₂`` with every method,
        given Hessian-vector products).

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
    The ``"auto"`` policy: a curvature ``BᵀB`` with a dual form (:func:`matrank.dual_form`;
    the Gauss–Newton and empirical-Fisher oracles) whose ``B`` has ``m < n`` rows ->
    ``"exact"`` on the ``m × m`` dual when that is predicted to cost less than the dense
    path: the adapter times one block of rows of at most an eighth of the samples
    (twice, the first a warm-up; counted in ``cost["gradients"]``), and ``BBᵀ`` and
    both ``eigvalsh`` come from :mod:`matrank._costs`; the dense path's ``n`` products
    are timed only when its ``eigvalsh`` alone costs less than the dual. A Krylov count
    of a gapless curvature ends on that dense path, so the cheaper of the two exact
    routes wins; a low-rank curvature with a gap may still count cheaper by Krylov
    (``method="lanczos"``). A dual of more than ``DENSE_MAX`` rows does not fit memory;
    an adapter that cannot time its rows is taken at ``m <= AUTO_DUAL_MAX_DIM``.
    Products with H available and ``n <= 4096`` -> ``"exact"`` for an explicit matrix.
    For an operator the dense path (``n`` products and an ``eigvalsh``) and the Krylov
    count are priced in seconds on one model (:mod:`matrank._primal`): a calibration
    times the second of two blocks of 32 products (the first is a warm-up), and
    ``eigvalsh`` is timed at the power of two at or below ``n`` (256 to 2048,
    :mod:`matrank._costs`) and scaled by ``n³``; a dense path of at most
    ``AUTO_DENSE_SECONDS`` is taken at once, else the Lanczos count's pilot (four
    probes of quadrature, 64 products at first) estimates the rank ``r`` and the Krylov
    count is priced at about ``2r + 128`` products with their orthogonalization; the
    cheaper wins (a count the pilot cannot resolve at ``τ``, or of half of ``n``, goes
    dense). At a given ``τ`` the polynomial filter is priced too, at its budget's
    15,000 products, where its capped degree reaches ``τ`` (about ``1.4e-6·λmax``);
    taken where cheapest, its count carries a standard error. Their products are
    counted in ``cost``, and the calibration is recorded for the object passed, so
    that later calls on the same operator reuse it and take the same route (a new
    process calibrates afresh: a machine under other load may then route an operator
    near the boundary differently -- pass ``method=`` to pin it). The exact routes
    count right at the threshold they report, the filter within its standard error.
    Otherwise ``"lanczos"``; gradients only -> ``"langevin"``; loss values only ->
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
    check_run_options(seed, progress)
    oracle = as_oracle(obj)
    group = collective(oracle)
    if group is not None:  # before auto's timing block, the first collective
        described = {name: repr(value) for name, value in sorted(options.items())}
        group.same(run_identity(method, described, seed, oracle))
    reason, probe_spent, probe_seconds = None, {"matvecs": 0, "gradients": 0.0}, 0.0
    offer: Offer | None = None
    if method == "auto":
        start = _clock.now()
        method, probe_spent, reason, dual, offer = _auto(
            oracle, obj, options.get("threshold"), seed
        )
        probe_seconds = _clock.now() - start
        if method == "exact" and dual is not None:
            # a dual taken runs as dual=None (m < n already holds), so that one whose
            # rows turn out to be rounding is counted from H instead, saying why
            options.setdefault("dual", None if dual else False)
    cls = ESTIMATORS[method]
    names = [field.name for field in dataclasses.fields(cls)]
    if "threshold" in options and "threshold" not in names:
        raise MatrankTypeError(
            message(
                "threshold",
                f"left out with method={method!r}: {getattr(cls, 'threshold_unsupported', '')}",
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
    relative = options.get("threshold")
    norm_matvecs, norm = 0, None
    if isinstance(relative, RelativeThreshold):
        norm, norm_matvecs = _spectral_norm(oracle, seed)
        options["threshold"] = relative.fraction * norm
    with offering(offer):
        result = cls(**options).estimate(
            oracle,
            seed=seed,
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            keep_checkpoint=keep_checkpoint,
        )
    notes: dict[str, Any] = {}
    if reason is not None:
        switched = result.diagnostics.get("dense_reason")
        refused = (result.diagnostics.get("dual") or {}).get("refused")
        if refused is not None and dual:
            switched = f"the dual refused it ({refused}), so from {oracle.dim} products"
        notes["auto"] = reason if switched is None else f"{reason}; then dense: {switched}"
    if norm is not None:
        assert isinstance(relative, RelativeThreshold)
        notes["relative_threshold"] = {
            "fraction": relative.fraction,
            "norm": norm,
            "matvecs": norm_matvecs,
        }
    if not notes:
        return result
    # what estimate_rank itself spent (auto's calibration, the norm) is the user's cost
    cost = Cost(result.cost)
    cost["matvecs"] += probe_spent["matvecs"] + norm_matvecs
    if probe_spent["gradients"]:  # a dual's rows timed (kept an int otherwise)
        cost["gradients"] += probe_spent["gradients"]
    cost["seconds"] += probe_seconds
    return dataclasses.replace(
        result,
        diagnostics=diagnostics_for(result.method, {**result.diagnostics, **notes}),
        cost=cost,
    )


def _spectral_norm(oracle: Oracle, seed: int | None) -> tuple[float, int]:
    """``‖H‖₂`` for a relative threshold: the larger end of :func:`spectral_bounds`
    from up to 64 Lanczos steps (exact for ``n ≤ 64``; the extreme Ritz values converge
    first), and the products it took."""
    if not oracle.capabilities & Capability.HVP:
        raise MatrankValueError(
            message(
                "threshold",
                "an absolute threshold for an oracle without Hessian-vector products "
                "(a relative one needs them to find ‖H‖₂)",
                "relative(...)",
            )
        )
    low, high, matvecs = spectral_bounds(
        oracle.hvp,
        oracle.dim,
        steps=64,
        generator=torch.Generator(device=oracle.device).manual_seed(seed or 0),
        dtype=oracle.dtype,
        device=oracle.device,
    )
    norm = max(-low, high)
    if not norm > 0:
        raise MatrankValueError(
            message("threshold", "relative to a non-zero ‖H‖₂", "a zero operator")
        )
    return norm, matvecs
