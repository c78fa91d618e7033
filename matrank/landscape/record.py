"""Reading back what ``matrank landscape --json`` wrote: a record is evidence, not trust.

A record is ``{"experiment", "options", "models": [Model.to_dict(), ...]}``. Reading it
rebuilds :class:`~matrank.landscape.LandscapeStudy` and
:class:`~matrank.landscape.experiment.Model` after checking what a later table or figure
would otherwise trust: every field present, numbers where numbers belong (not strings or
booleans), every array of the shape the others imply (``N`` samples, ``S`` sizes, ``R``
radii, ``Q`` quantiles), the measurements finite (only the theorem's bound may be NaN,
written ``null``), ``k = 1 … N − 1`` and the sizes inside it. A record that fails is
refused in one line naming the file, the model and the field.

:func:`merge` joins the records of split runs (e.g. the small widths in one run, width
64 in another) into one list of models, refusing two runs whose options make their rows
incomparable or that hold the same model twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import MatrankValueError
from .study import LandscapeStudy

__all__ = ["merge", "model_from_dict", "read", "study_from_dict"]

#: Per-size arrays, shape ``(S,)``.
_PER_SIZE = (
    "hessian_difference",
    "hessian_difference_spread",
    "lambda_max",
    "lambda_max_spread",
    "trace",
    "trace_spread",
    "trace_stderr",
    "rank",
    "rank_spread",
    "rank_stderr",
)
#: Options that change what a row means: runs merged together must agree on them.
_COMPARABLE = (
    "orderings",
    "hessian_orderings",
    "sizes",
    "seed",
    "relative_threshold",
    "target_loss",
    "max_epochs",
    "samples",
)


class _Refused(MatrankValueError):
    pass


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _array(record: dict, name: str, shape: tuple[int, ...], kind: str = "f") -> np.ndarray:
    """``record[name]`` as an array of ``shape``: ``"f"`` finite numbers, ``"n"`` numbers
    or ``null`` (NaN), ``"i"`` integers, ``"b"`` booleans."""
    raw = np.array(record[name], dtype=object)
    if raw.shape != shape:
        raise _Refused(f"{name!r} has shape {raw.shape}; the other fields imply {shape}")
    flat = raw.ravel()
    if kind == "b":
        if not all(isinstance(x, bool) for x in flat):
            raise _Refused(f"{name!r} must hold true/false only")
        return raw.astype(bool)
    allowed = (lambda x: x is None or _number(x)) if kind == "n" else _number
    if not all(allowed(x) for x in flat):
        raise _Refused(f"{name!r} must hold numbers only")
    values = np.array([np.nan if x is None else x for x in flat], dtype=np.float64)
    if kind != "n" and not np.isfinite(values).all():
        raise _Refused(f"{name!r} must be finite")
    if kind == "i":
        if not (values == np.round(values)).all():
            raise _Refused(f"{name!r} must hold integers")
        return values.astype(np.int64).reshape(shape)
    return values.reshape(shape)


def _scalar(record: dict, name: str, *, low: float, integer: bool = False) -> Any:
    value = record[name]
    if not _number(value) or not math.isfinite(value) or value < low:
        raise _Refused(f"{name!r} must be a finite number ≥ {low:g}; got {value!r}")
    if integer:
        if value != int(value):
            raise _Refused(f"{name!r} must be an integer; got {value!r}")
        return int(value)
    return float(value)


def study_from_dict(record: Any) -> LandscapeStudy:
    """The :class:`LandscapeStudy` that :meth:`LandscapeStudy.to_dict` wrote, checked
    (:class:`~matrank.MatrankValueError` in one line otherwise)."""
    if not isinstance(record, dict):
        raise _Refused(f"a study must be an object; got {type(record).__name__}")
    names = [field.name for field in dataclasses.fields(LandscapeStudy)]
    missing = [name for name in names if name not in record]
    if missing:
        raise _Refused(f"the study lacks {', '.join(map(repr, missing))}")
    try:
        n = len(record["losses"])
        s = len(record["sizes"])
        r = len(record["radii"])
        levels = _array(record, "quantile_levels", (len(record["quantile_levels"]),))
    except TypeError:
        raise _Refused(
            "'losses', 'sizes', 'radii' and 'quantile_levels' must be lists"
        ) from None
    if n < 2 or s < 1:
        raise _Refused(f"a study needs ≥ 2 samples and ≥ 1 size; got {n} and {s}")
    arrays: dict[str, Any] = {
        "losses": _array(record, "losses", (n,)),
        "k": _array(record, "k", (n - 1,), "i"),
        "delta_mean": _array(record, "delta_mean", (n - 1,)),
        "delta_quantiles": _array(record, "delta_quantiles", (levels.size, n - 1)),
        "sizes": _array(record, "sizes", (s,), "i"),
        "radii": _array(record, "radii", (r,)),
        "measured": _array(record, "measured", (s, r)),
        "bound": _array(record, "bound", (s, r)),
        "theorem_bound": _array(record, "theorem_bound", (s, r), "n"),
        "violations": _array(record, "violations", (s, r), "b"),
    }
    arrays.update({name: _array(record, name, (s,)) for name in _PER_SIZE})
    if not np.array_equal(arrays["k"], np.arange(1, n)):
        raise _Refused(f"'k' must be 1 … {n - 1}")
    sizes = arrays["sizes"]
    if sizes.min() < 1 or sizes.max() > n - 1 or (np.diff(sizes) <= 0).any():
        raise _Refused(f"'sizes' must increase inside 1 … {n - 1}")
    constant = record["constant"]
    if constant is not None and not (_number(constant) and math.isfinite(constant)):
        raise _Refused(f"'constant' must be a finite number or null; got {constant!r}")
    seconds = record["seconds"]
    if not isinstance(seconds, dict) or not all(map(_number, seconds.values())):
        raise _Refused("'seconds' must map parts to numbers")
    return LandscapeStudy(
        **arrays,
        quantile_levels=tuple(float(x) for x in levels),
        hessian_orderings=_scalar(record, "hessian_orderings", low=1, integer=True),
        threshold=_scalar(record, "threshold", low=0.0),
        dim=_scalar(record, "dim", low=1, integer=True),
        orderings=_scalar(record, "orderings", low=1, integer=True),
        constant=float("nan") if constant is None else float(constant),
        seconds={str(key): float(value) for key, value in seconds.items()},
    )


def model_from_dict(record: Any) -> Any:
    """The :class:`~matrank.landscape.experiment.Model` that its ``to_dict`` wrote,
    checked like :func:`study_from_dict`."""
    from .experiment import Model, Training

    if not isinstance(record, dict):
        raise _Refused(f"a model must be an object; got {type(record).__name__}")
    missing = [
        k for k in ("width", "depth", "sweeps", "training", "study") if k not in record
    ]
    if missing:
        raise _Refused(f"the model lacks {', '.join(map(repr, missing))}")
    width = _scalar(record, "width", low=1, integer=True)
    depth = _scalar(record, "depth", low=0, integer=True)
    sweeps = record["sweeps"]
    if not isinstance(sweeps, list) or not sweeps or not set(sweeps) <= {"width", "depth"}:
        raise _Refused(f"'sweeps' must list 'width' and/or 'depth'; got {sweeps!r}")
    training = record["training"]
    fields = [field.name for field in dataclasses.fields(Training)]
    if not isinstance(training, dict) or sorted(training) != sorted(fields):
        raise _Refused(f"'training' must have exactly {', '.join(fields)}")
    if not isinstance(training["reached"], bool):
        raise _Refused("'training.reached' must be true or false")
    epochs = _scalar(training, "epochs", low=1, integer=True)
    numbers = {
        k: _scalar(training, k, low=0.0) for k in ("loss", "accuracy", "target_loss")
    }
    seconds = _scalar(training, "seconds", low=0.0)
    try:
        study = study_from_dict(record["study"])
    except _Refused as error:
        raise _Refused(f"width {width}, depth {depth}: {error}") from None
    return Model(
        width,
        depth,
        tuple(sweeps),
        Training(epochs=epochs, reached=training["reached"], seconds=seconds, **numbers),
        study,
    )


def read(path: str | Path) -> tuple[dict[str, Any], list[Any]]:
    """One record file: its options and its models, checked."""
    try:
        record = json.loads(Path(path).read_text())
    except OSError as error:
        raise MatrankValueError(f"cannot read {str(path)!r}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MatrankValueError(
            f"{str(path)!r} is not a landscape record (not JSON: {error})"
        ) from None
    try:
        if not isinstance(record, dict) or not isinstance(record.get("models"), list):
            raise _Refused("it has no list of 'models'")
        options = record.get("options", {})
        if not isinstance(options, dict):
            raise _Refused("'options' must be an object")
        return options, [model_from_dict(model) for model in record["models"]]
    except _Refused as error:
        raise MatrankValueError(
            f"{str(path)!r} is not a usable landscape record: {error}"
        ) from None


def merge(paths: list[str] | list[Path]) -> tuple[dict[str, Any], list[Any]]:
    """The options the records share (those of ``_COMPARABLE`` that any of them
    states) and their models in sweep order (widths, then depths): refused where two
    records disagree on such an option or hold the same model."""
    seen: dict[tuple[int, int], str] = {}
    shared: dict[str, Any] = {}
    stated_by: dict[str, str] = {}
    models: list[Any] = []
    for path in paths:
        options, found = read(path)
        comparable = {key: options[key] for key in _COMPARABLE if key in options}
        for model in found[:1]:
            comparable.setdefault("orderings", model.study.orderings)
            comparable.setdefault("hessian_orderings", model.study.hessian_orderings)
        for key, value in comparable.items():
            if key in shared and shared[key] != value:
                raise MatrankValueError(
                    f"{str(path)!r} and {stated_by[key]!r} cannot be merged: {key} is "
                    f"{value!r} in one and {shared[key]!r} in the other"
                )
            shared.setdefault(key, value)
            stated_by.setdefault(key, str(path))
        for model in found:
            identity = (model.width, model.depth)
            if identity in seen:
                raise MatrankValueError(
                    f"{model.label} is in both {seen[identity]!r} and {str(path)!r}; "
                    "merge runs of different models"
                )
            seen[identity] = str(path)
            models.append(model)
    order = sorted(
        models, key=lambda m: (0, m.width) if "width" in m.sweeps else (1, m.depth)
    )
    return shared, order
