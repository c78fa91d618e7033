"""Matrices of known rank, built so that the truth is known by construction.

Every factory takes an integer ``seed`` and builds with numpy's local generator; spectra
are rotated by a Haar-random orthogonal matrix (never plain diagonals, on which
Rademacher probes are exact and hide estimator variance).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse

__all__ = [
    "Case",
    "catalogue",
    "direct_sum",
    "haar_orthogonal",
    "kronecker",
    "laplacian",
    "mixed_spectrum_operator",
    "outer_products",
    "projector",
    "rotated_spectrum",
    "spectrum_levels",
]


# Past these dimensions a method's run on a catalogue case is a benchmark, not a test.
_EVOLUTION_MAX_N = 64
_LANGEVIN_MAX_N = 1000


@dataclasses.dataclass(frozen=True)
class Case:
    """A test matrix with its true numerical rank.

    Attributes
    ----------
    name : str
        Readable id, used in test ids and benchmark tables.
    make : callable
        Builds the matrix (numpy array, scipy sparse matrix or LinearOperator) when called;
        lazy so that listing the catalogue costs nothing.
    rank : int
        Number of eigenvalues above the gap, by construction.
    n : int
        Dimension.
    gap : float
        Ratio between the smallest counted and the largest uncounted eigenvalue magnitude
        (``inf`` when the uncounted ones are exactly zero).
    tags : frozenset of str
        For selecting cases: ``"multiplicity"``, ``"noise-band"``, ``"indefinite"``,
        ``"sparse"``, ``"float32"``, ``"large"``, ...

    Which method does not apply to the case, and why, is :meth:`not_for`: data that
    tests turn into ``pytest.skip`` with the reason.
    """

    name: str
    make: Callable[[], Any]
    rank: int
    n: int
    gap: float = math.inf
    tags: frozenset[str] = frozenset()

    def not_for(self, method: str) -> str | None:
        """Why ``method`` does not apply to this case (``None`` when it does)."""
        if method in ("langevin", "evolution") and "indefinite" in self.tags:
            return (
                "a saddle: the method needs a minimum (negative curvature drives it away)"
            )
        if method == "evolution" and self.n > _EVOLUTION_MAX_N:
            return (
                f"n = {self.n} > {_EVOLUTION_MAX_N}: a count needs about "
                "4n/(keep·(1 − c)²) loss evaluations a doubling, minutes here"
            )
        if method == "langevin" and "zero" in self.tags:
            return "no curvature: the automatic step has nothing to scale to (it refuses)"
        if method == "langevin" and self.n > _LANGEVIN_MAX_N:
            return f"n = {self.n} > {_LANGEVIN_MAX_N}: 15,000 products of this size"
        if method in ("exact", "polynomial", "langevin") and "huge" in self.tags:
            return "n = 200,000: a dense or probe-heavy path of minutes"
        return None

    def matrix(self) -> Any:
        """Build the matrix."""
        return self.make()


def haar_orthogonal(
    n: int, rng: np.random.Generator, columns: int | None = None
) -> np.ndarray:
    """``n × columns`` matrix with orthonormal columns, Haar-distributed (QR with sign fix)."""
    columns = n if columns is None else columns
    q, r = np.linalg.qr(rng.standard_normal((n, columns)))
    return q * np.sign(np.diag(r))


def spectrum_levels(rank: int, *, cond: float = 1e3, multiplicity: int = 1) -> np.ndarray:
    """``rank`` signal eigenvalues from 1 down to ``1/cond``, log-spaced, each level repeated."""
    levels = max(1, math.ceil(rank / multiplicity))
    values = np.geomspace(1.0, 1.0 / cond, levels) if levels > 1 else np.ones(1)
    return np.repeat(values, multiplicity)[:rank]


def rotated_spectrum(
    n: int,
    rank: int,
    *,
    cond: float = 1e3,
    multiplicity: int = 1,
    noise_gap: float | None = None,
    negative: int = 0,
    dtype: Any = np.float64,
    seed: int = 0,
) -> np.ndarray:
    """``Q diag(s) Qᵀ`` with exactly ``rank`` eigenvalues of magnitude in ``[1/cond, 1]``.

    Parameters
    ----------
    n, rank : int
        Dimension and number of signal eigenvalues.
    cond : float
        Ratio of the largest to the smallest signal eigenvalue.
    multiplicity : int
        Each distinct signal level is repeated this many times (Krylov stress).
    noise_gap : float or None
        If given, the other ``n − rank`` eigenvalues form a noise band instead of being
        zero: log-spaced from ``λ_min / noise_gap`` down to ``1e-15`` (into the rounding
        floor), the shape of the dense small-eigenvalue bulk of an approximate minimum.
    negative : int
        How many of the signal eigenvalues are made negative (an indefinite matrix).
    dtype : numpy dtype
        Dtype of the returned array.
    seed : int
        Seed of the local generator.
    """
    rng = np.random.default_rng(seed)
    spectrum = np.zeros(n)
    signal = (
        spectrum_levels(rank, cond=cond, multiplicity=multiplicity) if rank else np.zeros(0)
    )
    spectrum[:rank] = signal
    if negative:
        flip = rng.choice(rank, size=negative, replace=False)
        spectrum[flip] *= -1
    if noise_gap is not None and rank < n:
        smallest = np.abs(signal).min() if rank else 1.0
        spectrum[rank:] = np.geomspace(smallest / noise_gap, 1e-15, n - rank)
    q = haar_orthogonal(n, rng)
    matrix = (q * spectrum) @ q.T
    # Symmetric to the last bit, as a user's covariance from syrk would be.
    matrix = 0.5 * (matrix + matrix.T)
    return matrix.astype(dtype)


def outer_products(n: int, rank: int, *, seed: int = 0) -> np.ndarray:
    """``BBᵀ`` with ``B`` an ``n × rank`` Gaussian matrix: rank ``rank`` almost surely."""
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, rank)) / math.sqrt(n)
    return b @ b.T


def projector(n: int, rank: int, *, seed: int = 0) -> np.ndarray:
    """Orthogonal projector ``QQᵀ`` onto a random ``rank``-dimensional subspace.

    One eigenvalue of multiplicity ``rank``: single-vector Lanczos sees it once.
    """
    q = haar_orthogonal(n, np.random.default_rng(seed), columns=rank)
    return q @ q.T


def kronecker(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A ⊗ B``; for symmetric PSD factors ``rank(A ⊗ B) = rank(A)·rank(B)``."""
    return np.kron(a, b)


def direct_sum(*blocks: np.ndarray) -> np.ndarray:
    """Block-diagonal ``A ⊕ B ⊕ …``: ranks add."""
    return scipy.linalg.block_diag(*blocks)


def laplacian(
    components: int, size: int, *, kind: str = "cycle", seed: int = 0
) -> scipy.sparse.csr_array:
    """Graph Laplacian of ``components`` disjoint graphs of ``size`` nodes, shuffled.

    Rank ``components·(size − 1)`` (one zero eigenvalue per connected component). Cycles
    have a smallest non-zero eigenvalue ``2 − 2cos(2π/size)`` -- a tight gap for large
    ``size``; paths have ``2 − 2cos(π/size)``; cliques have ``size``.
    """
    rng = np.random.default_rng(seed)
    if kind == "cycle":
        i = np.arange(size)
        edges = np.stack([i, (i + 1) % size], axis=1)
    elif kind == "path":
        i = np.arange(size - 1)
        edges = np.stack([i, i + 1], axis=1)
    elif kind == "clique":
        edges = np.array(np.triu_indices(size, k=1)).T
    else:
        raise ValueError(f"`kind` must be 'cycle', 'path' or 'clique'; got {kind!r}.")
    offsets = np.arange(components)[:, None, None] * size
    all_edges = (edges[None] + offsets).reshape(-1, 2)
    permutation = rng.permutation(components * size)
    rows, cols = permutation[all_edges[:, 0]], permutation[all_edges[:, 1]]
    n = components * size
    ones = np.ones(len(rows))
    adjacency = scipy.sparse.coo_array((ones, (rows, cols)), shape=(n, n))
    adjacency = (adjacency + adjacency.T).tocsr()
    degree = scipy.sparse.diags_array(np.asarray(adjacency.sum(axis=1)).ravel())
    return scipy.sparse.csr_array(degree - adjacency)


def mixed_spectrum_operator(spectrum: np.ndarray, *, seed: int = 0) -> Any:
    """A ``LinearOperator`` ``R diag(spectrum) Rᵀ`` with a fast random orthogonal ``R``.

    ``R`` is two rounds of (random signs, orthonormal DCT, random permutation): ``O(n log n)``
    per column, no ``n × n`` storage, and dense enough in effect that no probe
    distribution is exact on it. For operators of size 10⁵ and beyond with a known rank.
    """
    import scipy.fft
    import scipy.sparse.linalg

    rng = np.random.default_rng(seed)
    spectrum = np.asarray(spectrum, dtype=np.float64)
    n = spectrum.size
    rounds = [(rng.choice([-1.0, 1.0], n), rng.permutation(n)) for _ in range(2)]

    def rotate(x: np.ndarray) -> np.ndarray:
        for signs, permutation in rounds:
            x = scipy.fft.dct(signs[:, None] * x, norm="ortho", axis=0)[permutation]
        return x

    def rotate_back(x: np.ndarray) -> np.ndarray:
        for signs, permutation in reversed(rounds):
            unpermuted = np.empty_like(x)
            unpermuted[permutation] = x
            x = signs[:, None] * scipy.fft.idct(unpermuted, norm="ortho", axis=0)
        return x

    def matmat(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(n, -1)
        return rotate(spectrum[:, None] * rotate_back(x))

    return scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=lambda v: matmat(v).ravel(), matmat=matmat, dtype=np.float64
    )


def _linear_operator(matrix_factory: Callable[[], Any]) -> Callable[[], Any]:
    def make() -> Any:
        import scipy.sparse.linalg

        return scipy.sparse.linalg.aslinearoperator(matrix_factory())

    return make


def catalogue(*, max_n: int = 3000) -> list[Case]:
    """The shared catalogue of known-rank cases, up to dimension ``max_n``.

    Tests cross it with every estimator; benchmarks print tables over it. Every case
    has a gap of at least 100 between the counted and the uncounted eigenvalues.

    Examples
    --------
    >>> cases = catalogue(max_n=100)
    >>> all(case.n <= 100 for case in cases)
    True
    """
    cases = [
        Case("zero-n40", lambda: np.zeros((40, 40)), 0, 40, tags=frozenset({"zero"})),
        Case("identity-n30", lambda: np.eye(30), 30, 30, tags=frozenset({"full-rank"})),
        Case(
            "rotated-n200-r20-cond1e3",
            lambda: rotated_spectrum(200, 20, cond=1e3, seed=1),
            20,
            200,
        ),
        Case(
            "full-rank-n150-cond1e4",
            lambda: rotated_spectrum(150, 150, cond=1e4, seed=2),
            150,
            150,
            tags=frozenset({"full-rank"}),
        ),
        Case(
            "rotated-n500-r100-cond1e6",
            lambda: rotated_spectrum(500, 100, cond=1e6, seed=3),
            100,
            500,
        ),
        Case(
            "rotated-n1000-r50-cond1e8",
            lambda: rotated_spectrum(1000, 50, cond=1e8, seed=4),
            50,
            1000,
            tags=frozenset({"ill-conditioned"}),
        ),
        Case(
            "multiplicity-n1000-r500-mult250",
            lambda: rotated_spectrum(1000, 500, cond=10.0, multiplicity=250, seed=5),
            500,
            1000,
            tags=frozenset({"multiplicity"}),
        ),
        Case(
            "projector-n600-r250",
            lambda: projector(600, 250, seed=6),
            250,
            600,
            tags=frozenset({"multiplicity"}),
        ),
        Case(
            "noise-band-n500-r40-gap1e4",
            lambda: rotated_spectrum(500, 40, cond=1e2, noise_gap=1e4, seed=7),
            40,
            500,
            gap=1e4,
            tags=frozenset({"noise-band"}),
        ),
        Case(
            "noise-band-n800-r120-gap1e3-cond1e4",
            lambda: rotated_spectrum(800, 120, cond=1e4, noise_gap=1e3, seed=8),
            120,
            800,
            gap=1e3,
            tags=frozenset({"noise-band", "ill-conditioned"}),
        ),
        Case("outer-n400-r30", lambda: outer_products(400, 30, seed=9), 30, 400),
        Case(
            "kronecker-n20r5-x-n30r7",
            lambda: kronecker(
                rotated_spectrum(20, 5, cond=10.0, seed=10),
                rotated_spectrum(30, 7, cond=10.0, seed=11),
            ),
            35,
            600,
            tags=frozenset({"kronecker"}),
        ),
        Case(
            "laplacian-10-cycles-of-50",
            lambda: laplacian(10, 50, kind="cycle", seed=12),
            490,
            500,
            tags=frozenset({"sparse", "laplacian"}),
        ),
        Case(
            "laplacian-40-paths-of-25",
            lambda: laplacian(40, 25, kind="path", seed=13),
            960,
            1000,
            tags=frozenset({"sparse", "laplacian"}),
        ),
        Case(
            "laplacian-30-cliques-of-8",
            lambda: laplacian(30, 8, kind="clique", seed=14),
            210,
            240,
            tags=frozenset({"sparse", "laplacian", "multiplicity"}),
        ),
        Case(
            "indefinite-n200-r30-neg10",
            lambda: rotated_spectrum(200, 30, cond=1e2, negative=10, seed=15),
            30,
            200,
            tags=frozenset({"indefinite"}),
        ),
        Case(
            "float32-n300-r25",
            lambda: rotated_spectrum(300, 25, cond=1e2, dtype=np.float32, seed=16),
            25,
            300,
            tags=frozenset({"float32"}),
        ),
        Case(
            "linear-operator-n300-r60",
            _linear_operator(lambda: rotated_spectrum(300, 60, cond=1e3, seed=17)),
            60,
            300,
            tags=frozenset({"operator"}),
        ),
        Case(
            "operator-n200000-r120-cond1e3",
            lambda: mixed_spectrum_operator(
                np.concatenate([spectrum_levels(120, cond=1e3), np.zeros(199_880)]), seed=19
            ),
            120,
            200_000,
            tags=frozenset({"operator", "huge"}),
        ),
        Case(
            "rotated-n3000-r300-cond1e4",
            lambda: rotated_spectrum(3000, 300, cond=1e4, seed=18),
            300,
            3000,
            tags=frozenset({"large"}),
        ),
    ]
    return [case for case in cases if case.n <= max_n]
