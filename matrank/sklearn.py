"""scikit-learn estimators: the rank of a data matrix's covariance, and a rank-sized SVD.

Both follow scikit-learn's developer guide: ``__init__`` only stores its arguments,
``fit`` validates ``X`` (with :func:`sklearn.utils.validation.validate_data`) and sets
attributes ending in ``_``, randomness comes from ``random_state``. They pass
:func:`sklearn.utils.estimator_checks.check_estimator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.decomposition import PCA
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._api import estimate_rank
from ._validation import MatrankValueError, check_choice, message

__all__ = ["RankEstimator", "RankSVD"]

_KINDS = ("covariance", "gram", "precomputed")
# Above this many features the p × p matrix is not formed: a LinearOperator applies
# Xᵀ(Xv) instead (and `auto` then runs Lanczos).
_DENSE_FEATURES = 2048


def _operator(X: np.ndarray, kind: str) -> Any:
    """The symmetric PSD matrix (or operator) whose rank ``kind`` asks for."""
    if kind == "precomputed":
        if X.shape[0] != X.shape[1]:
            raise MatrankValueError(
                message("X", "a square matrix for kind='precomputed'", f"shape {X.shape}")
            )
        return X
    if kind == "covariance":
        X = X - X.mean(axis=0)
        scale = 1.0 / max(X.shape[0] - 1, 1)
    else:
        scale = 1.0
    if X.shape[1] <= _DENSE_FEATURES:
        return scale * (X.T @ X)
    return scipy.sparse.linalg.LinearOperator(
        (X.shape[1], X.shape[1]),
        matvec=lambda v: scale * (X.T @ (X @ v)),
        matmat=lambda V: scale * (X.T @ (X @ V)),
        rmatvec=lambda v: scale * (X.T @ (X @ v)),
        dtype=X.dtype,
    )


def _fit_rank(estimator: Any, X: Any) -> np.ndarray:
    """Validate ``X``, estimate the rank and set the fitted attributes; returns ``X``."""
    check_choice("kind", estimator.kind, _KINDS)
    X = validate_data(estimator, X, dtype=[np.float64, np.float32])
    seed = int(check_random_state(estimator.random_state).randint(2**31 - 1))
    options = dict(estimator.method_options or {})
    if estimator.threshold is not None:
        options["threshold"] = estimator.threshold
    result = estimate_rank(
        _operator(X, estimator.kind), method=estimator.method, seed=seed, **options
    )
    estimator.result_ = result
    estimator.rank_ = result.rank
    estimator.rank_stderr_ = result.stderr
    estimator.threshold_ = result.threshold
    return X


class RankEstimator(BaseEstimator):
    """Estimate the numerical rank of a dataset's covariance, Gram matrix, or of ``X``.

    Parameters
    ----------
    method : str, default="auto"
        Any :func:`matrank.estimate_rank` method.
    kind : {"covariance", "gram", "precomputed"}, default="covariance"
        ``"covariance"``: the sample covariance of the centred rows of ``X``;
        ``"gram"``: ``XᵀX``; ``"precomputed"``: ``X`` itself, a square symmetric matrix.
    threshold : float, "floor" or None, default=None
        Passed to the method (``None``: its automatic rule). ``"floor"`` works with
        ``exact``, ``lanczos`` and ``polynomial`` (up to ``n = 2048``); ``langevin``
        refuses it at ``fit`` with the reason (scikit-learn estimators validate there,
        not at construction, so ``GridSearchCV`` sees the same error).
    random_state : int, RandomState or None, default=None
        Seeds the stochastic methods.
    method_options : dict or None, default=None
        Further hyperparameters of the method (e.g. ``{"max_matvecs": 2000}``).

    Attributes
    ----------
    rank_ : float
        The estimate.
    rank_stderr_ : float or None
        Its standard error (``None`` for exact counts).
    threshold_ : float
        The eigenvalue threshold the method used.
    result_ : matrank.RankResult
        Everything the method reported (cost, diagnostics, counting curve).
    n_features_in_ : int
        Number of columns of ``X`` seen in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from matrank.sklearn import RankEstimator
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 30))
    >>> RankEstimator().fit(X).rank_
    5.0
    """

    def __init__(
        self,
        method: str = "auto",
        kind: str = "covariance",
        threshold: float | str | None = None,
        random_state: Any = None,
        method_options: dict | None = None,
    ) -> None:
        self.method = method
        self.kind = kind
        self.threshold = threshold
        self.random_state = random_state
        self.method_options = method_options

    def fit(self, X: Any, y: Any = None) -> RankEstimator:
        """Estimate the rank; ``y`` is ignored."""
        _fit_rank(self, X)
        return self


class RankSVD(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA with as many components as the covariance's estimated numerical rank.

    ``fit`` estimates the rank ``r`` of the sample covariance with ``method``, then fits
    :class:`sklearn.decomposition.PCA` with ``n_components = max(1, round(r))`` (a PCA
    needs at least one component), capped at ``min(n_samples, n_features)``. For use in a
    ``Pipeline`` and in ``GridSearchCV`` (``threshold`` and ``method`` are searchable).

    Parameters
    ----------
    method, threshold, random_state, method_options
        As in :class:`RankEstimator` (``kind`` is the covariance).

    Attributes
    ----------
    n_components_ : int
        Components kept.
    rank_, rank_stderr_, threshold_, result_
        As in :class:`RankEstimator`.
    pca_ : sklearn.decomposition.PCA
        The fitted PCA.
    n_features_in_ : int
        Number of columns of ``X`` seen in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from matrank.sklearn import RankSVD
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 30))
    >>> RankSVD(random_state=0).fit_transform(X).shape
    (200, 5)
    """

    kind = "covariance"

    def __init__(
        self,
        method: str = "auto",
        threshold: float | str | None = None,
        random_state: Any = None,
        method_options: dict | None = None,
    ) -> None:
        self.method = method
        self.threshold = threshold
        self.random_state = random_state
        self.method_options = method_options

    def fit(self, X: Any, y: Any = None) -> RankSVD:
        """Estimate the rank, then fit a PCA of that many components; ``y`` is ignored."""
        X = _fit_rank(self, X)
        self.n_components_ = int(min(max(1, round(self.rank_)), min(X.shape)))
        self.pca_ = PCA(
            n_components=self.n_components_,
            random_state=self.random_state,
        ).fit(X)
        self._n_features_out = self.n_components_
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Project ``X`` on the kept components."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.pca_.transform(X)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Map component scores back to the feature space."""
        check_is_fitted(self)
        return self.pca_.inverse_transform(X)
