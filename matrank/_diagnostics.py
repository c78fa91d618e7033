"""What each method reports beside its estimate: one frozen dataclass per method.

``result.diagnostics`` is the method's class below, filled with what the run measured.
Read it by attribute (``result.diagnostics.step_size``; ``None`` where the run did not
report that field) or as the read-only mapping it also is (``result.diagnostics["step_size"]``,
``"step_size" in result.diagnostics``, ``dict(result.diagnostics)``), whose keys are the
fields the run reported: the ``"diagnostics"`` object of ``result.to_dict()``
(:data:`matrank.SCHEMA`). Eigenvalue-valued fields are in the units of the input, also
after the run rescaled it (``scaled_by``).

A run that reports a field its class does not declare is a defect of this module, and
:meth:`Diagnostics.of` refuses it: every field is documented here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "Diagnostics",
    "EvolutionDiagnostics",
    "ExactDiagnostics",
    "LanczosDiagnostics",
    "LangevinDiagnostics",
    "PolynomialDiagnostics",
    "diagnostics_for",
]

Array = np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Diagnostics(Mapping[str, Any]):
    """What every run may report, whatever its method.

    Attributes
    ----------
    auto : str
        Why ``method="auto"`` chose this method (absent when the user chose it).
    relative_threshold : dict
        For ``threshold=matrank.relative(f)``: ``fraction`` f, the ``norm`` ``‖H‖₂`` it
        multiplied and the ``matvecs`` that norm took.
    remedy : str
        What to change before reading a rank off this result (a low-precision oracle on
        a spectrum with no plateau: rebuild it in float64).
    interrupted_in : str
        The phase a Ctrl-C stopped (``Status.INTERRUPTED``).
    negative_estimate : float
        A raw estimate under zero by more than its noise, replaced by NaN (a sampler
        around a saddle).
    scaled_by : float
        The factor the run multiplied ``H`` by to keep its arithmetic in range; every
        eigenvalue-valued field is reported back in ``H``'s units.
    """

    auto: str | None = None
    relative_threshold: dict[str, float] | None = None
    remedy: str | None = None
    interrupted_in: str | None = None
    negative_estimate: float | None = None
    scaled_by: float | None = None
    _given: frozenset[str] = dataclasses.field(default=frozenset(), repr=False)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names a run of this class's method may report, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "_given")

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Diagnostics:
        """The diagnostics holding ``values``; a name the class does not declare is
        refused (``TypeError``), naming it."""
        if type(values) is cls:
            return values
        unknown = sorted(set(values) - set(cls.fields()), key=str)
        if unknown:
            raise TypeError(
                f"{cls.__name__} declares no field {', '.join(map(repr, unknown))} "
                "(every diagnostic is declared, and documented, in matrank/_diagnostics.py)"
            )
        return cls(**dict(values), _given=frozenset(values))

    def __getitem__(self, key: str) -> Any:
        if key not in self._given:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.fields() if name in self._given)

    def __len__(self) -> int:
        return len(self._given)

    def __repr__(self) -> str:
        shown = ", ".join(sorted(self._given))
        return f"{type(self).__name__}({shown})"


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class _Plateau:
    """Fields of the methods that read a threshold off a counting curve's plateau.

    Attributes
    ----------
    plateau : dict
        The widest flat stretch of ``N(τ)`` chosen (``dataclasses.asdict`` of
        :class:`matrank.numerics.threshold.ThresholdChoice`: ``count``, ``threshold``,
        ``lower``/``upper`` ends, ``decades`` of width, ``ambiguous`` and the runner-up's
        ``runner_up_count``/``_threshold``/``_decades``).
    noise_floor : float
        The eigenvalue magnitude below which the input's rounding can produce the
        eigenvalue: no threshold under it is used.
    """

    plateau: dict[str, Any] | None = None
    noise_floor: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ExactDiagnostics(_Plateau, Diagnostics):
    """``method="exact"``: one dense eigendecomposition.

    Attributes
    ----------
    eigenvalues : ndarray
        Every eigenvalue (signed), largest first.
    n_negative : int
        How many of the counted eigenvalues are negative (``result.n_negative``).
    numpy_rule : float
        ``numpy.linalg.matrix_rank``'s tolerance ``max|λ|·n·eps`` for the same input
        (``noise_floor`` is at least this).
    dual : dict
        For a curvature counted through its ``m × m`` dual (``GGN = JᵀQJ``): its
        ``rows`` m and what forming it cost. Where ``dual=None`` found the dual not to
        hold (:class:`matrank.DualFormError`) and counted ``H`` from its products
        instead: ``refused``, the reason (and ``size``, the rows, when the dual was
        formed before it was refused).
    kept_products : dict
        Where ``"auto"`` chose this dense path after its calibration and pilot, and
        keeping their products costs less than re-reading them: the ``columns`` of
        their span kept ``of`` the products taken (``n − columns`` products read
        here), and the ``defect`` measured where the kept and fresh products meet
        (:mod:`matrank.estimators.completion`), which raises the noise floor.
    """

    eigenvalues: Array | None = None
    n_negative: int | None = None
    numpy_rule: float | None = None
    dual: dict[str, Any] | None = None
    kept_products: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class LanczosDiagnostics(_Plateau, Diagnostics):
    """``method="lanczos"``: a certified Krylov count, its dense switch, or SLQ.

    Attributes
    ----------
    path : str
        How the count ended: ``"krylov"``, ``"sketch"`` (the range start certified it),
        ``"dense"`` (at once), ``"dense (switched)"``, ``"slq"``, ``"pilot"``
        (interrupted after the pilot) or ``"krylov (budget too small for SLQ)"``.
    pilot : dict
        The pilot's SLQ estimate and the path it chose (``n ≥ pilot_from``).
    sketch : dict
        The range sketch that certified the count: its ``columns`` (products besides
        the pilot's, plus ``pilot_columns``), ``test_blocks``, the test's
        ``range_bound`` on ``‖(I − QQᵀ)H‖`` and ``eta``, the bound on ``‖H − QT̂Qᵀ‖``
        within which every eigenvalue lies of a sketch's one.
    sharpened : dict
        The Gaussian tests that lowered a certified Krylov count's floor from the
        resolution to ``eta`` (:mod:`matrank.estimators.lanczos.sharpen`): ``tests``
        run, the last ``range_bound`` on ``‖(I − QQᵀ)H‖``, ``eta`` and the
        ``resolution`` it replaced.
    basis_size, random_columns, block_steps : int
        The Krylov basis's columns, how many of them came from random starts, and the
        block steps taken.
    certified : bool
        Whether the count was verified exact (or the basis is all of ``Rⁿ``).
    eigenvalues, ritz_values : ndarray
        The dense path's eigenvalues; the basis's Ritz values (signed).
    n_negative : int
        How many of the counted eigenvalues are negative.
    symmetry_defect : float
        ``‖VᵀHV − (VᵀHV)ᵀ‖`` relative: the operator's measured asymmetry (raises the
        noise floor).
    orthogonalization_seconds : float
        Seconds spent keeping the basis orthonormal.
    switched_early_at, switched_to_dense_at : int
        The basis size at which the timed rule sent the count to the dense path.
    dense_restart : str
        Where the dense path read ``H`` from when it restarted (``"identity"``).
    kept_products : dict
        Where the count took the dense path with products taken before its basis (its
        pilot's; ``auto``'s calibration and pilot) not read again: ``columns`` kept
        ``of`` the products (from an empty basis, their span; from a Krylov basis, the
        directions they add to it), and the ``defect`` measured where they meet the
        fresh ones (as :class:`ExactDiagnostics`'s).
    dense_reason : str
        Why the count went to the dense path: the pilot's count, the rank's share of
        the basis, the timed cost model (with its seconds) or a spent basis; ``auto``
        appends it to its own reason.
    deflated : int
        The converged Ritz vectors SLQ deflated.
    slq_probes, slq_steps : int
        SLQ's probes and Lanczos steps per probe.
    slq_samples : ndarray
        Each probe's count (the stderr is their spread).
    slq_threshold : float
        The threshold SLQ counted at.
    slq_unresolved : float
        In an indefinite spectrum, the eigenvalues per probe whose nodes lie between
        the noise floor and the quadrature's reach around zero, where τ lies too; at
        least one (and the stderr) ends the count ``BELOW_RESOLUTION``.
    slq_moved : float
        How much the count moved from the rule of half the steps to the whole rule
        (per probe, averaged); a move of three of its stderr, at least one eigenvalue
        and 2 % of the count, ends it ``BELOW_RESOLUTION``: τ is still unresolved.
    """

    path: str | None = None
    pilot: dict[str, Any] | None = None
    sketch: dict[str, Any] | None = None
    sharpened: dict[str, Any] | None = None
    basis_size: int | None = None
    random_columns: int | None = None
    block_steps: int | None = None
    certified: bool | None = None
    eigenvalues: Array | None = None
    ritz_values: Array | None = None
    n_negative: int | None = None
    symmetry_defect: float | None = None
    orthogonalization_seconds: float | None = None
    switched_early_at: int | None = None
    switched_to_dense_at: int | None = None
    dense_restart: str | None = None
    kept_products: dict[str, Any] | None = None
    dense_reason: str | None = None
    deflated: int | None = None
    slq_probes: int | None = None
    slq_steps: int | None = None
    slq_samples: Array | None = None
    slq_threshold: float | None = None
    slq_unresolved: float | None = None
    slq_moved: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class PolynomialDiagnostics(_Plateau, Diagnostics):
    """``method="polynomial"``: a Chebyshev step filter and stochastic trace estimation.

    Attributes
    ----------
    variant : str
        ``"default"`` or ``"ubaru-saad"``.
    path : str
        ``"probes"`` (stochastic), ``"whole space"`` (n products: exact moments), or the
        deflation-only count.
    lambda_min, lambda_max : float
        The spectrum's bounds the filter was mapped onto.
    degree, pilot_degree : int
        The filter's degree; the pilot's.
    n_probes, pilot_probes : int
        Probes of the estimate; of the pilot.
    kernel : str
        The damping kernel (``"jackson"``).
    filter_coefficients : ndarray
        The damped Chebyshev coefficients of the step.
    filter_at_zero, uncorrected_filter_at_zero : float
        ``p(0)``: what each null eigenvalue adds to the count, after and before the
        correction the estimate subtracts.
    reach : float
        The smallest eigenvalue the filter resolves: the count is ``N(τ)`` there.
    samples : ndarray
        Each probe's count (the stderr is their spread).
    edge_stderr : float
        The part of the stderr from eigenvalues inside the filter's edge.
    density_grid, density : ndarray
        The spectral density (Jackson-damped KPM) and its grid.
    deflated : int
        Top eigenvalues deflated before filtering; ``deflated_values`` are they.
    deflated_values : ndarray
    complement_top : float
        The largest eigenvalue of the complement after deflation.
    basis_size : int
        The deflation basis's columns.
    whole_space : str
        Why a given threshold was counted from the whole space's ``n`` products: no
        degree up to the cap reaches it (``None`` otherwise).
    """

    variant: str | None = None
    path: str | None = None
    lambda_min: float | None = None
    lambda_max: float | None = None
    degree: int | None = None
    pilot_degree: int | None = None
    n_probes: int | None = None
    pilot_probes: int | None = None
    kernel: str | None = None
    filter_coefficients: Array | None = None
    filter_at_zero: float | None = None
    uncorrected_filter_at_zero: float | None = None
    reach: float | None = None
    samples: Array | None = None
    edge_stderr: float | None = None
    density_grid: Array | None = None
    density: Array | None = None
    deflated: int | None = None
    deflated_values: Array | None = None
    complement_top: float | None = None
    basis_size: int | None = None
    whole_space: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class LangevinDiagnostics(Diagnostics):
    """``method="langevin"``: preconditioned Langevin chains around ``θ0``.

    Attributes
    ----------
    variant, readout : str
        ``"default"`` or ``"paper"``; ``"virial"`` or ``"loss"``.
    step_size, sigma2, localization : float
        ``η``, ``σ²`` and ``γ`` the chains ran with.
    sigma2_rule : str
        Which rule set ``σ²`` (``"random walk"``, ``"residual gradient"``, ``"given"``).
    mu_max : float
        ``μmax(G^{1/2}HG^{1/2})`` the automatic step was set from (None when given).
    gradient_norm_at_theta0 : float
        ``‖G^{1/2}∇L(θ0)‖`` (the tilt the chains subtract).
    loss0 : float
        ``L(θ0)``.
    steps_done, burn_in, n_average : int
        Steps per chain; those dropped as burn-in; those averaged.
    readings : ndarray
        The readout per step, averaged over chains, in rank units.
    per_chain : ndarray
        Each chain's time average.
    loss_excess : ndarray
        The loss readout's excess per step (``σ²/4`` per counted eigenvalue).
    sampling_stderr, threshold_stderr, edge_stderr : float
        The stderr's parts: the chains' spread, the matched threshold's, the filter
        edge's.
    threshold_fit : dict
        The counting curve's local ``shape`` and ``slope`` near ``τ``.
    drift : tuple
        The averaging window's last third minus its first, and its stderr.
    rounds : list
        ``rtol``'s checks: steps, rank and stderr at each.
    step_reductions : list
        Each divergence: the step size and the step it diverged at.
    quadratic_defect : ndarray
        Per chain, the larger part of ``quadratic_defect_parts``.
    quadratic_defect_parts : dict
        ``even`` and ``odd``: how far the gradient at ``θ0 ± δ`` is from a quadratic's.
    negative_curvature : dict
        The evidence of negative curvature where the readout fell below zero.
    """

    variant: str | None = None
    readout: str | None = None
    step_size: float | None = None
    sigma2: float | None = None
    localization: float | None = None
    sigma2_rule: str | None = None
    mu_max: float | None = None
    gradient_norm_at_theta0: float | None = None
    loss0: float | None = None
    steps_done: int | None = None
    burn_in: int | None = None
    n_average: int | None = None
    readings: Array | None = None
    per_chain: Array | None = None
    loss_excess: Array | None = None
    sampling_stderr: float | None = None
    threshold_stderr: float | None = None
    edge_stderr: float | None = None
    threshold_fit: dict[str, float] | None = None
    drift: tuple[float, float] | None = None
    rounds: list[dict[str, Any]] | None = None
    step_reductions: list[dict[str, Any]] | None = None
    quadratic_defect: Array | None = None
    quadratic_defect_parts: dict[str, Array] | None = None
    negative_curvature: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class EvolutionDiagnostics(Diagnostics):
    """``method="evolution"``: the covariance of selected Gaussian samples.

    Attributes
    ----------
    selection : str
        ``"truncation"`` or ``"comma"``.
    scale : float
        The sampling radius (None where the loss is flat at every scale tried).
    quadratic_ratio : float
        How the loss excess grew from half the scale to the scale (4 for a quadratic).
    populations, kept : int
        Populations sampled; samples kept.
    covariance : ndarray
        The kept samples' covariance; ``covariance_eigenvalues`` its spectrum.
    covariance_eigenvalues : ndarray
    null_edge, tracy_widom_scale : float
        The null band's edge (the covariance of directions the loss does not see) and
        the Tracy–Widom scale of its fluctuations.
    cut : float
        Where the count cut the covariance spectrum.
    margin : float
        The cut's distance to the nearest eigenvalue in Tracy–Widom scales (under 2: the
        count is not resolved).
    widened_directions : int
        Directions whose covariance was widened past the null band (the count).
    soft_count, soft_stderr : float
        A soft count of the same directions and its stderr.
    tilt : float
        The linear term removed from the loss (``∇L(θ0)`` along the samples).
    history : list
        The counts at each check of the sampling.
    loss0 : float
        ``L(θ0)``.
    flat : bool
        The loss did not change at any scale tried: rank 0.
    """

    selection: str | None = None
    scale: float | None = None
    quadratic_ratio: float | None = None
    populations: int | None = None
    kept: int | None = None
    covariance: Array | None = None
    covariance_eigenvalues: Array | None = None
    null_edge: float | None = None
    tracy_widom_scale: float | None = None
    cut: float | None = None
    margin: float | None = None
    widened_directions: int | None = None
    soft_count: float | None = None
    soft_stderr: float | None = None
    tilt: float | None = None
    history: list[Any] | None = None
    loss0: float | None = None
    flat: bool | None = None


_CLASSES: dict[str, type[Diagnostics]] = {
    "exact": ExactDiagnostics,
    "lanczos": LanczosDiagnostics,
    "polynomial": PolynomialDiagnostics,
    "langevin": LangevinDiagnostics,
    "evolution": EvolutionDiagnostics,
}


def diagnostics_for(method: str, values: Mapping[str, Any]) -> Diagnostics:
    """``values`` as the diagnostics of ``method`` (the base class for a method that is
    not built in: only the common fields)."""
    return _CLASSES.get(method, Diagnostics).of(values)
