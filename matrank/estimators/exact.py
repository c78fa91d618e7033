"""Exact numerical rank by dense symmetric eigendecomposition: the ground truth."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import numpy as np
import torch

from .._dual import DualForm, DualFormError, dual_form
from .._oracle import Capability, as_oracle, input_eps, materialize
from .._result import RankResult, Status
from .._run import Run, sized_threads
from .._validation import MatrankValueError, check_int, check_threshold, message
from ..numerics.threshold import counting_curve, noise_floor, resolve_threshold
from .completion import completed_kept, offered

__all__ = ["ExactRank"]


def _eigvalsh(symmetric: torch.Tensor) -> np.ndarray:
    """Eigenvalues in descending order, float64.

    On the CPU numpy's LAPACK ``syevd`` measured 2.3× faster than ``torch.linalg.eigvalsh``
    at n = 2000 on the 2-core machine; on CUDA torch's solver keeps the data in place.
    """
    if symmetric.device.type == "cpu":
        values = np.linalg.eigvalsh(symmetric.numpy())
    else:
        values = torch.linalg.eigvalsh(symmetric).cpu().numpy()
    return values[::-1].copy()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExactRank:
    """Count eigenvalues above a threshold from a dense ``eigvalsh`` in float64.

    Parameters
    ----------
    threshold : float, "floor" or None, default=None
        Eigenvalue threshold ``τ``; eigenvalues with ``|λ| > τ`` are counted. ``None``
        chooses ``τ`` at the centre (in decades) of the widest gap of the spectrum above
        the noise floor, and falls back to the floor -- numpy's ``λmax·n·eps`` rule -- when
        no gap spans a decade. ``"floor"`` always counts everything above the floor.
    max_dim : int, default=16384
        Largest matrix eigendecomposed (``n``, or ``m`` for the dual): it needs ``8n²``
        bytes and ``O(n³)`` time (about 2 GB and a few minutes at the default).
    dual : bool or None, default=None
        For a curvature that is a Gram matrix ``H = BᵀB`` with ``B`` of ``m`` rows
        (:func:`matrank.dual_form`: the Gauss–Newton and empirical-Fisher oracles),
        eigendecompose ``BBᵀ``, ``m × m``, instead of ``H``: the same nonzero
        eigenvalues, and the other ``n − m`` are zero. ``None`` uses it when
        ``m < n``; ``True`` always (an error when the oracle has no dual form);
        ``False`` never.

    Notes
    -----
    The Hessian is materialized: free for explicit matrices, ``n`` matvecs otherwise
    (fewer when ``"auto"`` hands over the products that chose this path:
    ``diagnostics["kept_products"]``).
    Operators are symmetrized as ``(A + Aᵀ)/2`` before the eigendecomposition. The
    noise floor is ``max(λmax·n·eps, ‖A − Aᵀ‖_F)`` with ``eps`` of the input's dtype.

    Negative eigenvalues (an indefinite matrix, a saddle point) are legal: they are
    counted by magnitude, like ``numpy.linalg.matrix_rank(A, hermitian=True)``, and
    ``diagnostics["n_negative"]`` says how many of the counted ones are negative.

    References
    ----------
    numpy.linalg.matrix_rank (the ``S.max()·max(M, N)·eps`` default tolerance);
    research notes, algorithms §1.3 (the widest-plateau rule).

    Examples
    --------
    >>> import numpy as np, matrank
    >>> A = np.diag([3.0, 2.0, 1e-18, 0.0])
    >>> result = matrank.ExactRank().estimate(A)
    >>> result.rank, result.stderr
    (2.0, None)
    """

    threshold: float | str | None = None
    max_dim: int = 16384
    dual: bool | None = None

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        check_int("max_dim", self.max_dim, low=1)
        if self.dual is not None and not isinstance(self.dual, bool):
            raise MatrankValueError(message("dual", "True, False or None", repr(self.dual)))

    method: ClassVar[str] = "exact"

    @sized_threads
    def estimate(
        self,
        obj: Any,
        *,
        seed: int | None = None,
        progress: bool = False,
        **checkpointing: Any,
    ) -> RankResult:
        """Estimate the rank of ``obj``.

        ``seed``, ``progress`` and the checkpoint options are accepted and unused: one
        dense eigendecomposition, exact, with nothing to report or save on the way, and
        nothing to return before it ends (Ctrl-C raises ``KeyboardInterrupt``).

        Raises
        ------
        MatrankValueError
            When ``obj`` is larger than ``max_dim`` or cannot compute products with H.
        """
        oracle = as_oracle(obj)
        n = oracle.dim
        form, refused = _resolve_form(oracle, self.dual)
        if self.dual and form is None:
            raise MatrankValueError(
                message(
                    "obj",
                    "a curvature with a dual form (matrank.dual_form) for dual=True",
                    type(oracle).__name__,
                )
            )
        if form is not None and not (self.dual or form.size < n):
            form = None
        size = n if form is None else form.size
        if size > self.max_dim:
            got = f"dimension {n}"
            if form is not None:
                got = f"a dual of {form.size} rows of B (dimension {n})"
            raise MatrankValueError(
                message(
                    "obj",
                    f"of dimension at most max_dim={self.max_dim} for method='exact' (dense "
                    "eigendecomposition: 8n² bytes, O(n³) time); use method='lanczos' or "
                    "raise `max_dim`",
                    got,
                )
            )
        run = Run.begin(
            self, oracle, Capability.HVP, seed=seed, progress=progress, **checkpointing
        )
        run.store = None  # nothing worth saving (see above)
        diagnostics: dict[str, Any] = {"dual": refused} if refused else {}
        if form is not None:
            try:
                return _dual_count(run, form, run.threshold(self.threshold))
            except DualFormError as refusal:
                if self.dual or n > self.max_dim:
                    raise
                # the rows' work stays in the cost: it was spent
                diagnostics["dual"] = {"refused": str(refusal), "size": form.size}
        return _primal_count(run, oracle, run.threshold(self.threshold), diagnostics)


def _resolve_form(
    oracle: Any, dual: bool | None
) -> tuple[DualForm | None, dict[str, Any] | None]:
    """The oracle's dual form, or ``None``; with ``dual=None`` a dual that refuses this
    curvature (:class:`DualFormError`) is ``None`` too, with why (``dual=True`` raises)."""
    if dual is False:
        return None, None
    try:
        return dual_form(oracle), None
    except DualFormError as refusal:
        if dual:
            raise
        return None, {"refused": str(refusal)}


def _primal_count(
    run: Run,
    oracle: Any,
    threshold: float | str | None,
    diagnostics: dict[str, Any],
) -> RankResult:
    """The exact count from ``H`` itself: free for an explicit matrix, else ``n``
    products; symmetrized, eigendecomposed, counted above numpy's rule raised to the
    measured asymmetry."""
    n = oracle.dim
    meter = run.meter
    free = materialize.dispatch(type(oracle)) is not materialize.dispatch(object)
    offer = None if free else offered(n, meter.dtype)
    kept = None if offer is None else offer.kept
    if kept is not None:  # auto's products, completed to R^n (the metered ones scaled)
        symmetric, asymmetry, record = completed_kept(run, kept, 0, run.factor)
        diagnostics["kept_products"] = record
    else:
        dense = materialize(oracle) if free else materialize(meter)
        dense = dense.to(torch.float64)
        if free and run.factor != 1.0:  # (the metered products are scaled already)
            dense = dense * run.factor
        asymmetry = float(torch.linalg.matrix_norm(dense - dense.T)) if not free else 0.0
        symmetric = 0.5 * (dense + dense.T)
        del dense
    eigenvalues = _eigvalsh(symmetric)
    del symmetric
    magnitudes = np.abs(eigenvalues)
    largest = float(magnitudes.max())
    numpy_rule = noise_floor(largest, n, input_eps(oracle))
    floor = max(numpy_rule, asymmetry)
    diagnostics["numpy_rule"] = numpy_rule
    return count_spectrum(run, eigenvalues, floor, threshold, diagnostics)


def _dual_count(run: Run, form: DualForm, threshold: float | str | None) -> RankResult:
    """The exact count from the dual ``BBᵀ``: its eigenvalues are ``H``'s nonzero ones.

    The noise floor is numpy's rule on the ``m × m`` matrix eigendecomposed, with the
    precision ``B`` was computed in, raised to the norm bound of what ``B`` leaves out
    (clamped rounding); a part left out above 1 % of ``λmax`` is refused. The rows' work is counted in ``cost["gradients"]`` as
    full-batch-gradient equivalents (``N`` per-sample rows are one gradient).
    """
    computed = form.compute()
    start = time.perf_counter()
    eigenvalues = _eigvalsh(computed.gram) * run.factor
    if eigenvalues.size == 0:  # no row at all: H = 0 (one of its zeros stands for all)
        eigenvalues = np.zeros(1)
    eigh_seconds = time.perf_counter() - start
    m = computed.gram.shape[0]
    run.meter.gradients += computed.gradient_equivalents
    largest = float(np.abs(eigenvalues).max()) if m else 0.0
    numpy_rule = noise_floor(largest, max(m, 1), float(torch.finfo(form.precision).eps))
    left_out = computed.left_out * run.factor
    if left_out > 1e-2 * largest:
        raise DualFormError(
            message(
                "obj",
                "a curvature that is BᵀB up to rounding for the dual route (for a "
                "Gauss–Newton matrix: a loss convex in the model's outputs); use "
                "method='lanczos' or ExactRank(dual=False), which count an indefinite "
                "matrix by magnitude",
                f"a part outside BᵀB of norm up to {left_out / max(largest, 1e-300):.3g} "
                "× the largest eigenvalue (negative curvature in the outputs, or the "
                "outputs' Hessian under its own rounding: low precision at saturated "
                "outputs, where float64 resolves it)",
            )
        )
    diagnostics: dict[str, Any] = {
        "numpy_rule": numpy_rule,
        "dual": {
            "what": form.what,
            "size": form.size,
            "rows": m,
            "zero_eigenvalues": max(0, run.oracle.dim - m),
            "rows_computed": computed.rows_computed,
            "left_out": left_out,
            "seconds": computed.seconds,
            "eigh_seconds": eigh_seconds,
            **computed.details,
        },
    }
    floor = max(numpy_rule, left_out)
    return count_spectrum(run, eigenvalues, floor, threshold, diagnostics)


def count_spectrum(
    run: Run,
    eigenvalues: np.ndarray,
    floor: float,
    threshold: float | str | None,
    diagnostics: dict[str, Any],
) -> RankResult:
    """The exact count of a known spectrum: the threshold rule above ``floor``, the
    status it implies, the counting curve, and the result (shared by the dense path
    of the Lanczos count)."""
    magnitudes = np.abs(eigenvalues)
    status = Status.CONVERGED
    cut, choice = resolve_threshold(magnitudes, floor, threshold)
    if choice is not None:
        diagnostics["plateau"] = dataclasses.asdict(choice)
        status = Status.of_choice(choice)
    counted = magnitudes > cut
    diagnostics.update(
        noise_floor=floor,
        eigenvalues=eigenvalues,
        n_negative=int((counted & (eigenvalues < 0)).sum()),
    )
    return known_count(run, magnitudes, cut, floor, diagnostics, status)


def known_count(
    run: Run,
    magnitudes: np.ndarray,
    cut: float,
    floor: float,
    diagnostics: dict[str, Any],
    status: Status,
    *,
    resolution: float = 0.0,
) -> RankResult:
    """The result of counting known eigenvalue magnitudes above ``cut``: the count, no
    stderr, and the counting curve from a decade under ``floor`` to past the largest
    (``resolution``: how far each magnitude may lie from the eigenvalue it stands for;
    shared by the range sketch of the Lanczos count)."""
    largest = float(magnitudes.max()) if magnitudes.size else 0.0
    counts = counting_curve(
        magnitudes, low=max(floor, largest * 1e-16) / 10, high=largest * 1.5
    )
    return run.result(
        float((magnitudes > cut).sum()),
        stderr=None,
        threshold=cut,
        diagnostics=diagnostics,
        counts=dataclasses.replace(counts, resolution=resolution),
        status=status,
    )
