"""matrank: the rank of symmetric PSD matrices and operators, above all NN Hessians.

One front door, :func:`estimate_rank`, dispatches to interchangeable estimators
(:class:`ExactRank`, ...) that all speak to an :class:`Oracle`; :func:`as_oracle` turns
matrices, operators and models into oracles.
"""

from importlib.metadata import PackageNotFoundError, version

# Registers the explicit-matrix adapters with as_oracle (adapters import only the
# protocol, so this is the one place the core reaches into them).
from . import adapters
from ._api import ESTIMATORS, auto_method, estimate_rank
from ._diagnostics import (
    Diagnostics,
    EvolutionDiagnostics,
    ExactDiagnostics,
    LanczosDiagnostics,
    LangevinDiagnostics,
    PolynomialDiagnostics,
)
from ._dual import DualForm, DualFormError, DualGram, dual_form
from ._many import EstimateFailure, estimate_many, item_seed
from ._oracle import Capability, Oracle, as_oracle, exact_rank, materialize
from ._result import SCHEMA, CountingCurve, CountInterval, RankResult, Status
from ._validation import (
    MatrankError,
    MatrankTypeError,
    MatrankValueError,
    MatrankWarning,
    NotSymmetricError,
    OperatorContractError,
    relative,
)
from .effective import EffectiveRanks, effective_ranks
from .estimators import (
    EvolutionRank,
    ExactRank,
    LanczosRank,
    LangevinRank,
    PolynomialRank,
)

try:
    __version__ = version("matrank")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ESTIMATORS",
    "SCHEMA",
    "Capability",
    "CountInterval",
    "CountingCurve",
    "Diagnostics",
    "DualForm",
    "DualFormError",
    "DualGram",
    "EffectiveRanks",
    "EstimateFailure",
    "EvolutionDiagnostics",
    "EvolutionRank",
    "ExactDiagnostics",
    "ExactRank",
    "LanczosDiagnostics",
    "LanczosRank",
    "LangevinDiagnostics",
    "LangevinRank",
    "MatrankError",
    "MatrankTypeError",
    "MatrankValueError",
    "MatrankWarning",
    "NotSymmetricError",
    "OperatorContractError",
    "Oracle",
    "PolynomialDiagnostics",
    "PolynomialRank",
    "RankResult",
    "Status",
    "__version__",
    "adapters",
    "as_oracle",
    "auto_method",
    "dual_form",
    "effective_ranks",
    "estimate_many",
    "estimate_rank",
    "exact_rank",
    "item_seed",
    "materialize",
    "relative",
]
