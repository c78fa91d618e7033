"""Every estimator crossed with the shared case catalogue, each held to its own contract.

Which method does not apply to which case is data on the case (``Case.not_for``), turned
into a skip with its reason here. Exact counts must equal the construction's rank; a
stochastic estimate must be within four of its stated standard errors of the dense count
at the threshold it reports (``N(τ)`` from ``eigvalsh``), or equal to it when it reports
no error.
"""

import numpy as np
import pytest
import scipy.sparse

import matrank
from matrank.testing import catalogue

CASES = catalogue(max_n=1000)
METHODS = ["exact", "lanczos", "polynomial", "langevin", "evolution"]
_SPECTRA: dict[str, np.ndarray] = {}


def spectrum(case):
    """Dense eigenvalues of the case, once per session."""
    if case.name not in _SPECTRA:
        matrix = case.matrix()
        if isinstance(matrix, scipy.sparse.sparray | scipy.sparse.spmatrix):
            matrix = matrix.toarray()
        elif not isinstance(matrix, np.ndarray):  # a LinearOperator
            matrix = matrix @ np.eye(case.n)
        _SPECTRA[case.name] = np.linalg.eigvalsh(np.asarray(matrix, dtype=np.float64))
    return _SPECTRA[case.name]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_estimator_on_every_case(case, method):
    reason = case.not_for(method)
    if reason is not None:
        pytest.skip(f"{method} on {case.name}: {reason}")
    result = matrank.estimate_rank(case.matrix(), method=method, seed=0)
    assert result.converged, result.status.value
    if method in ("exact", "lanczos", "evolution"):
        assert result.rank == case.rank
        return
    truth = int((np.abs(spectrum(case)) > result.threshold).sum())
    if not result.stderr:
        assert result.rank == truth
    else:
        assert abs(result.rank - truth) <= 4 * result.stderr, (result.rank, truth)
