"""Diagnostics are typed: one frozen dataclass per method, every field documented, the
mapping and JSON forms holding exactly what the run reported."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest

import matrank
from matrank import _diagnostics
from matrank.testing import rotated_spectrum

A = rotated_spectrum(40, 8, cond=10.0, seed=0)
CLASSES = {
    "exact": matrank.ExactDiagnostics,
    "lanczos": matrank.LanczosDiagnostics,
    "polynomial": matrank.PolynomialDiagnostics,
    "langevin": matrank.LangevinDiagnostics,
    "evolution": matrank.EvolutionDiagnostics,
}
OPTIONS = {"evolution": {"max_evals": 20_000}, "langevin": {"max_gradients": 3000}}


@pytest.fixture(scope="module")
def results():
    return {
        method: matrank.estimate_rank(
            rotated_spectrum(12, 4, cond=4.0, seed=0) if method == "evolution" else A,
            method=method,
            seed=0,
            **OPTIONS.get(method, {}),
        )
        for method in CLASSES
    }


@pytest.mark.parametrize("method", list(CLASSES))
def test_each_method_reports_its_class_by_attribute_and_as_a_mapping(results, method):
    result = results[method]
    diagnostics = result.diagnostics
    assert type(diagnostics) is CLASSES[method]
    reported = set(diagnostics)
    assert reported and reported <= set(diagnostics.fields())
    for name in diagnostics.fields():  # an attribute for every field, None if absent
        value = getattr(diagnostics, name)
        if name in reported:
            assert diagnostics[name] is value
        else:
            assert value is None and name not in diagnostics
            with pytest.raises(KeyError):
                diagnostics[name]
    # the JSON form holds exactly the reported fields
    encoded = json.loads(json.dumps(result.to_dict()))
    assert set(encoded["diagnostics"]) == reported
    with pytest.raises(dataclasses.FrozenInstanceError):
        diagnostics.noise_floor = 0.0


def test_a_field_no_class_declares_is_refused_naming_it(results):
    result = results["lanczos"]
    with pytest.raises(TypeError, match=r"'basis_sise'.*_diagnostics\.py"):
        dataclasses.replace(result, diagnostics={**result.diagnostics, "basis_sise": 3})
    # the common fields are every method's
    noted = dataclasses.replace(result, diagnostics={**result.diagnostics, "auto": "why"})
    assert noted.diagnostics.auto == "why" and noted.diagnostics.path == "krylov"
    # a Langevin field is not a Lanczos one
    with pytest.raises(TypeError, match="step_size"):
        dataclasses.replace(result, diagnostics={"step_size": 0.1})


@pytest.mark.parametrize("cls", [matrank.Diagnostics, *CLASSES.values()])
def test_every_field_is_documented_in_its_class_or_a_base(cls):
    documented = " ".join(inspect.getdoc(base) or "" for base in cls.__mro__)
    missing = [name for name in cls.fields() if name not in documented]
    assert not missing, f"{cls.__name__} does not document {missing}"


def test_the_exported_classes_are_the_modules():
    for name in _diagnostics.__all__:
        if name[0].isupper():
            assert getattr(matrank, name) is getattr(_diagnostics, name)
    assert isinstance(matrank.estimate_rank(np.eye(3)).diagnostics, matrank.Diagnostics)
