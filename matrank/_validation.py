"""Errors, warnings and the one message template for bad input.

Every error matrank raises on bad input derives from :class:`MatrankError`; the concrete
classes also derive from the builtin that fits (``ValueError`` for a wrong value,
``TypeError`` for a wrong type), so ``except ValueError`` in user code keeps working.
Messages follow one template (scikit-learn's): name the parameter or object, the rule,
and what was received -- "`max_matvecs` must be an int in [1, inf); got 0."
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MatrankError",
    "MatrankTypeError",
    "MatrankValueError",
    "MatrankWarning",
    "NotSymmetricError",
    "OperatorContractError",
    "RelativeThreshold",
    "check_choice",
    "check_int",
    "check_real",
    "message",
    "relative",
]


class MatrankError(Exception):
    """Base of every error matrank raises on bad input."""


class MatrankValueError(MatrankError, ValueError):
    """An argument has the right type but a value matrank cannot use."""


class MatrankTypeError(MatrankError, TypeError):
    """An argument has a type matrank does not accept."""


class NotSymmetricError(MatrankValueError):
    """The matrix or operator is not symmetric within the tolerance of its dtype."""


class OperatorContractError(MatrankValueError):
    """A user-supplied operator or oracle broke the protocol (shape, dtype, determinism)."""


class MatrankWarning(UserWarning):
    """Something is probably wrong with the estimate; the message says what to change."""


def message(name: str, rule: str, got: Any) -> str:
    """Render the one message template: "`name` must be rule; got got."."""
    return f"`{name}` must be {rule}; got {got}."


def _interval(low: float | None, high: float | None, closed: str) -> str:
    left = "[" if closed in ("both", "left") else "("
    right = "]" if closed in ("both", "right") else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    if low is None:
        left = "("
    if high is None:
        right = ")"
    return f"{left}{lo}, {hi}{right}"


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Return ``value`` as an ``int`` or raise with the message template."""
    if value is None and allow_none:
        return None
    rule = f"an int in {_interval(low, high, 'both')}"
    if allow_none:
        rule += " or None"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MatrankTypeError(message(name, rule, repr(value)))
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise MatrankValueError(message(name, rule, repr(value)))
    return value


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    closed: str = "both",
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` as a finite ``float`` in the interval or raise."""
    if value is None and allow_none:
        return None
    rule = f"a real number in {_interval(low, high, closed)}"
    if allow_none:
        rule += " or None"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MatrankTypeError(message(name, rule, repr(value)))
    value = float(value)
    low_ok = low is None or (value >= low if closed in ("both", "left") else value > low)
    high_ok = high is None or (
        value <= high if closed in ("both", "right") else value < high
    )
    if not math.isfinite(value) or not low_ok or not high_ok:
        raise MatrankValueError(message(name, rule, repr(value)))
    return value


@dataclasses.dataclass(frozen=True)
class RelativeThreshold:
    """A threshold given as a fraction of the spectral norm: ``τ = fraction·‖H‖₂``.

    Made by :func:`relative`; :func:`matrank.estimate_rank` turns it into an absolute
    ``τ`` before the estimator runs, from the largest Ritz value of a short Lanczos run
    (its products are counted in ``cost`` and the norm is kept in
    ``diagnostics["relative_threshold"]``).
    """

    fraction: float

    def __repr__(self) -> str:
        return f"relative({self.fraction!r})"


def relative(fraction: float) -> RelativeThreshold:
    """``threshold=matrank.relative(1e-6)``: count the eigenvalues above ``1e-6·‖H‖₂``.

    The landscape study's ``relative_threshold``, for every method whose oracle has
    Hessian-vector products (``‖H‖₂`` is found with them). ``fraction`` is in ``(0, 1)``.

    >>> import numpy as np, matrank
    >>> result = matrank.estimate_rank(np.diag([4.0, 1.0, 1e-3, 0.0]),
    ...                                threshold=matrank.relative(1e-2))
    >>> int(result), round(result.threshold, 12)
    (2, 0.04)
    """
    check_real("fraction", fraction, low=0.0, high=1.0, closed="neither")
    return RelativeThreshold(float(fraction))


def check_threshold(
    value: Any, method: str = "exact", refused: Mapping[str, str] | None = None
) -> float | str | None:
    """Return a ``threshold=`` option: ``None``, ``"floor"`` or a real ``τ ≥ 0``.

    The one rule of every method that takes a threshold. ``refused`` names what the
    method cannot take and why: ``"floor"`` (the noise floor) or ``"zero"`` (``τ = 0``);
    the refusal states the method's own rule and the reason.
    """
    refused = refused or {}
    low = _interval(0.0, None, "right" if "zero" in refused else "both")
    rule = f"a real number in {low}" + (", 'floor'" if "floor" not in refused else "")
    rule += " or None"
    if value is None:
        return value
    if isinstance(value, str) and value == "floor":
        if "floor" in refused:
            raise MatrankValueError(
                message(
                    "threshold",
                    f"{rule} with method={method!r} ({refused['floor']})",
                    repr(value),
                )
            )
        return value
    if isinstance(value, (bool, str)) or not isinstance(value, numbers.Real):
        raise MatrankTypeError(message("threshold", rule, repr(value)))
    if not math.isfinite(value) or value < 0:
        raise MatrankValueError(message("threshold", rule, repr(float(value))))
    if value == 0 and "zero" in refused:
        raise MatrankValueError(
            message(
                "threshold", f"{rule} with method={method!r} ({refused['zero']})", "0.0"
            )
        )
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices`` or raise, listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        error = MatrankValueError if isinstance(value, str) else MatrankTypeError
        raise error(message(name, f"one of {listed}", repr(value)))
    return value


def check_run_options(seed: Any, progress: Any) -> None:
    """The options every run takes: ``seed`` (``None`` or an int in ``[0, 2⁶³)``) and
    ``progress`` (a bool). One rule for :func:`matrank.estimate_rank` (which checks
    before its ``auto`` probe spends anything) and each estimator's ``estimate``."""
    check_int("seed", seed, low=0, allow_none=True)
    if seed is not None and seed >= 2**63:  # torch.Generator.manual_seed's range
        raise MatrankValueError(message("seed", "an int in [0, 2**63) or None", seed))
    if not isinstance(progress, bool):
        raise MatrankTypeError(message("progress", "True or False", repr(progress)))


def check_jobs(n_jobs: Any) -> None:
    """joblib's ``n_jobs``: ``-k`` is all cores but ``k − 1``, so ``k`` up to the cores;
    at most 1024 workers (joblib's own limit refuses far more with a raw ``ValueError``)."""
    check_int("n_jobs", n_jobs, low=-(os.cpu_count() or 1), high=1024, allow_none=True)
    if n_jobs == 0:
        raise MatrankValueError(message("n_jobs", "a nonzero int or None", 0))
