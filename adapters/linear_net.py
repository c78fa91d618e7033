"""The Hessian of a deep linear network at a global minimum, without forming it.

A network ``x ↦ W_L ⋯ W_1 x`` with population squared loss
``L(W) = E‖(W_L⋯W_1 − T)x‖² = tr((A − T) Σx (A − T)ᵀ)``, ``A = W_L⋯W_1``, for inputs
of covariance ``Σx`` and a target map ``T``. At a global minimum (``A = T``) the residual
vanishes, the Hessian equals its Gauss–Newton part ``H = 2JᵀJ`` with
``J(V) = Σ_k A_k V_k B_k`` (``A_k = W_L⋯W_{k+1}``, ``B_k = W_{k−1}⋯W_1 Σx^{1/2}``), and its
rank is ``d_in·d_out`` when ``T`` has full rank and every hidden width is at least
``min(d_in, d_out)`` (Mulayoff & Michaeli 2020; research notes, algorithms §8.6).

This is the test problem of Bar et al. (AAAI 2024, Table 1). It differs from their script
in one numerical detail: the loss is computed as the residual form above, whose value at
the minimum is exactly 0, instead of ``tr(AΣxAᵀ) − 2tr(AΣyxᵀ)``, whose value there is
about −10³ — the Langevin signal (σ²/4 per eigenvalue, 5·10⁻⁶) then no longer sits in the
last digits of a large number.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from matrank._oracle import Capability, as_oracle, exact_rank
from matrank._validation import MatrankValueError, check_choice, check_int, message

__all__ = ["LinearNetHessian"]


def _haar(d: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


class LinearNetHessian:
    """Oracle of a deep linear network's loss around a global minimum.

    Parameters
    ----------
    weights : sequence of torch.Tensor
        ``W_1, …, W_L`` of shapes ``(h_1, d_in), (h_2, h_1), …, (d_out, h_{L−1})``; their
        product must equal ``target`` (a global minimum).
    target : torch.Tensor
        The target map ``T``, shape ``(d_out, d_in)``.
    input_covariance : torch.Tensor or None
        ``Σx`` (symmetric positive definite, ``(d_in, d_in)``); ``None`` is the identity.
    gradient_dtype : torch.float64 or torch.float32, default=torch.float64
        Precision of the matrix products in :meth:`grad` (its input and output stay
        float64). ``torch.float32`` makes a default Langevin estimate at d = 256 take
        84.5 s instead of 121–140 s on a 2-core CPU, with the same answers
        (``benchmarks/paper_table1.py --gradient-dtype float32``); the gradient near the
        minimum is then off by ≈ 2e-4 relative, noise far below the chains' (the tests
        hold a same-seed estimate at d = 8 within 0.1 stderr of the float64 one). The
        loss and the HVP stay float64.

    Notes
    -----
    Parameters are the layers' entries, flattened row-major and concatenated:
    ``n = Σ_l h_l·h_{l−1}``. ``loss`` and ``grad`` are exact at any point and batched
    over rows (``∂L/∂W_k = 2 A_kᵀ (A − T) Σx B̃_kᵀ`` with ``B̃_k = W_{k−1}⋯W_1``); ``hvp``
    applies ``H = 2JᵀJ`` at the minimum with ``O(L)`` products of layer-sized matrices per
    column, batched over columns. The oracle is float64 on the device of ``target``.

    References
    ----------
    Bar, Mulayoff, Michaeli & Talmon, AAAI 2024, §5 (the linear-network experiment);
    Mulayoff & Michaeli, ICML 2020 (rank of the Hessian at global minima).

    Examples
    --------
    >>> import matrank
    >>> from matrank.adapters import LinearNetHessian
    >>> problem = LinearNetHessian.random_minimum(d_in=4, d_out=4, depth=3, seed=0)
    >>> problem.dim, matrank.exact_rank(problem)
    (48, 16)
    >>> int(matrank.estimate_rank(problem, method="exact").rank)
    16
    """

    def __init__(
        self,
        weights: Any,
        target: torch.Tensor,
        input_covariance: torch.Tensor | None = None,
        *,
        gradient_dtype: torch.dtype = torch.float64,
    ) -> None:
        if gradient_dtype not in (torch.float64, torch.float32):
            raise MatrankValueError(
                message(
                    "gradient_dtype", "torch.float64 or torch.float32", repr(gradient_dtype)
                )
            )
        weights = [torch.as_tensor(w, dtype=torch.float64) for w in weights]
        target = torch.as_tensor(target, dtype=torch.float64)
        if len(weights) < 1:
            raise MatrankValueError(message("weights", "at least one layer", "none"))
        device = target.device
        weights = [w.to(device) for w in weights]
        if target.ndim != 2:
            raise MatrankValueError(
                message("target", "a 2-D matrix", f"shape {tuple(target.shape)}")
            )
        d_out, d_in = target.shape
        previous = d_in
        for index, w in enumerate(weights):
            if w.ndim != 2 or w.shape[1] != previous:
                raise MatrankValueError(
                    message(
                        f"weights[{index}]",
                        f"a matrix with {previous} columns (the previous layer's output)",
                        f"shape {tuple(w.shape)}",
                    )
                )
            previous = w.shape[0]
        if previous != d_out:
            raise MatrankValueError(
                message(
                    "weights[-1]",
                    f"a matrix with {d_out} rows (target's)",
                    f"{previous} rows",
                )
            )
        if input_covariance is None:
            input_covariance = torch.eye(d_in, dtype=torch.float64, device=device)
        input_covariance = torch.as_tensor(input_covariance, dtype=torch.float64).to(device)
        if tuple(input_covariance.shape) != (d_in, d_in):
            raise MatrankValueError(
                message(
                    "input_covariance",
                    f"of shape ({d_in}, {d_in})",
                    f"shape {tuple(input_covariance.shape)}",
                )
            )
        smallest = float(
            torch.linalg.eigvalsh(0.5 * (input_covariance + input_covariance.T)).min()
        )
        if smallest <= 0:
            raise MatrankValueError(
                message(
                    "input_covariance",
                    "positive definite",
                    f"smallest eigenvalue {smallest:.3g}",
                )
            )
        product = _chain(weights)
        residual = float(torch.linalg.matrix_norm(product - target))
        scale = float(torch.linalg.matrix_norm(target)) or 1.0
        if residual > 1e-8 * scale:
            raise MatrankValueError(
                message(
                    "weights",
                    "a global minimum (W_L⋯W_1 = target to 1e-8 relative)",
                    f"a relative residual of {residual / scale:.3g}",
                )
            )
        self.weights = weights
        self.target = target
        self.input_covariance = input_covariance
        self._identity_covariance = bool(
            torch.equal(
                input_covariance, torch.eye(d_in, dtype=torch.float64, device=device)
            )
        )
        self.gradient_dtype = gradient_dtype
        self._gradient_target = target.to(gradient_dtype)
        self._gradient_covariance = input_covariance.to(gradient_dtype)
        self.shapes = [tuple(w.shape) for w in weights]
        self.sizes = [w.numel() for w in weights]
        self.dim = int(sum(self.sizes))
        self.dtype = torch.float64
        self.device = device
        self._theta0 = torch.cat([w.reshape(-1) for w in weights])
        # A_k = W_L⋯W_{k+1} and B̃_k = W_{k−1}⋯W_1 at the minimum, for the HVP.
        self._left = [
            _chain(weights[k + 1 :], w.shape[0], device) for k, w in enumerate(weights)
        ]
        self._right = [
            _chain(weights[:k], w.shape[1], device) for k, w in enumerate(weights)
        ]

    @classmethod
    def random_minimum(
        cls,
        d_in: int = 16,
        d_out: int = 16,
        depth: int = 5,
        *,
        seed: int = 0,
        target: str = "paper",
        device: Any = None,
        gradient_dtype: torch.dtype = torch.float64,
    ) -> LinearNetHessian:
        """A random global minimum, balanced across layers.

        Parameters
        ----------
        d_in, d_out : int
            Input and output dimensions; hidden widths are ``min(d_in, d_out)``.
        depth : int
            Number of layers ``L``.
        seed : int
            Seed of the local generator.
        target : {"paper", "well-conditioned"}
            ``"paper"``: Bar et al.'s protocol, ``Σx = I`` and ``T = ZZᵀ/√d`` with ``Z`` a
            ``d × d`` standard Gaussian matrix (needs ``d_in = d_out``); its singular values
            span several decades, so the Hessian spectrum spans eight or more.
            ``"well-conditioned"``: ``T = U diag(s) Vᵀ`` with Haar ``U, V`` and ``s``
            log-uniform in ``[0.5, 2]``.
        device : torch device or None
            Where the oracle computes.
        gradient_dtype : torch.float64 or torch.float32
            Precision of the gradient's products (see the class).

        Notes
        -----
        With ``T = U diag(s) Vᵀ`` and ``ρ = s^{1/L}``: ``W_1 = P_1 diag(ρ) Vᵀ``,
        ``W_l = P_l diag(ρ) P_{l−1}ᵀ``, ``W_L = U diag(ρ) P_{L−1}ᵀ`` with Haar ``P_l``. For a
        symmetric positive definite ``T`` this is the paper's ``W_1 = PR, W_l = PRPᵀ,
        W_L = RPᵀ`` with ``R = T^{1/L}`` (one ``P`` for all layers there; the law of the
        Hessian spectrum does not depend on the ``P_l``).
        """
        d_in = check_int("d_in", d_in, low=1)
        d_out = check_int("d_out", d_out, low=1)
        depth = check_int("depth", depth, low=1)
        check_choice("target", target, ("paper", "well-conditioned"))
        generator = torch.Generator().manual_seed(check_int("seed", seed, low=0))
        width = min(d_in, d_out)
        if target == "paper":
            if d_in != d_out:
                raise MatrankValueError(
                    message(
                        "d_out",
                        "equal to d_in for target='paper' (T = ZZᵀ/√d)",
                        f"{d_out} ≠ {d_in}",
                    )
                )
            z = torch.randn(d_in, d_in, generator=generator, dtype=torch.float64)
            t = z @ z.T / math.sqrt(d_in)
            values, vectors = torch.linalg.eigh(0.5 * (t + t.T))
            left = right = vectors
            singular = values.clamp_min(0)
        else:
            left = _haar(d_out, generator)[:, :width]
            right = _haar(d_in, generator)[:, :width]
            singular = torch.exp(
                torch.empty(width, dtype=torch.float64).uniform_(
                    math.log(0.5), math.log(2.0), generator=generator
                )
            )
        rho = singular ** (1.0 / depth)
        rotations = [_haar(width, generator) for _ in range(depth - 1)]
        weights = []
        for layer in range(depth):
            into = left if layer == depth - 1 else rotations[layer]
            out_of = right if layer == 0 else rotations[layer - 1]
            weights.append((into * rho) @ out_of.T)
        target_map = (left * singular) @ right.T
        if device is not None:
            weights = [w.to(device) for w in weights]
            target_map = target_map.to(device)
        problem = cls(weights, target_map, gradient_dtype=gradient_dtype)
        problem.singular_values = singular.to(target_map.device)
        return problem

    @property
    def theta0(self) -> torch.Tensor:
        return self._theta0

    @property
    def capabilities(self) -> Capability:
        return Capability.LOSS | Capability.GRAD | Capability.HVP

    def _layers(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """``(b, n)`` parameters -> per-layer ``(b, h_l, h_{l−1})``."""
        pieces = torch.split(theta, self.sizes, dim=1)
        return [
            p.reshape(theta.shape[0], *shape)
            for p, shape in zip(pieces, self.shapes, strict=True)
        ]

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """``tr((A − T) Σx (A − T)ᵀ)`` for each row of ``theta``, shape ``(b,)``."""
        layers = self._layers(theta)
        residual = _batched_chain(layers) - self.target
        return ((residual @ self.input_covariance) * residual).sum(dim=(1, 2))

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """Gradient at each row of ``theta``, shape ``(b, n)``: exact in float64, to
        ``≈ 1e-4`` relative near the minimum with ``gradient_dtype=torch.float32``.

        Backpropagation: ``∂L/∂W_k = B_k P_{k−1}ᵀ`` with prefixes ``P_k = W_k⋯W_1`` and
        ``B_L = 2(P_L − T)Σx``, ``B_{k−1} = W_kᵀB_k`` -- ``3(L − 1)`` batched products,
        none with an identity.
        """
        layers = self._layers(theta.to(self.gradient_dtype))
        prefixes = [layers[0]]  # prefixes[k] = W_{k+1}⋯W_1
        for w in layers[1:]:
            prefixes.append(w @ prefixes[-1])
        back = 2 * (prefixes[-1] - self._gradient_target)
        if not self._identity_covariance:
            back = back @ self._gradient_covariance
        pieces = [back @ prefixes[-2].transpose(1, 2)] if len(layers) > 1 else [back]
        for k in range(len(layers) - 1, 0, -1):
            back = layers[k].transpose(1, 2) @ back
            pieces.append(back @ prefixes[k - 2].transpose(1, 2) if k > 1 else back)
        b = theta.shape[0]
        flat = torch.cat([piece.reshape(b, -1) for piece in reversed(pieces)], dim=1)
        return flat.to(self.dtype)

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` at the minimum for a block ``V`` of shape ``(n, b)``."""
        blocks = self._layers(V.T)
        product = sum(
            left @ block @ right
            for left, block, right in zip(self._left, blocks, self._right, strict=True)
        )
        outer = 2 * product @ self.input_covariance
        pieces = [
            (left.T @ outer @ right.T).reshape(V.shape[1], -1)
            for left, right in zip(self._left, self._right, strict=True)
        ]
        return torch.cat(pieces, dim=1).T

    def spectrum(self) -> np.ndarray:
        """The Hessian's non-zero eigenvalues in closed form (``Σx = I``, balanced minimum).

        ``μ_ij = 2 Σ_{k=1}^{L} ρ_i^{2(L−k)} ρ_j^{2(k−1)}`` over the singular values
        ``ρ = s^{1/L}`` of every layer (research notes, paper_peer §2); the other
        ``n − d_in·d_out`` eigenvalues are exactly 0. Only for minima built by
        :meth:`random_minimum` with ``d_in = d_out``.
        """
        singular = getattr(self, "singular_values", None)
        if singular is None or self.shapes[0][1] != self.shapes[-1][0]:
            raise NotImplementedError(
                "the closed form needs a square random_minimum problem"
            )
        depth = len(self.weights)
        rho = (singular ** (1.0 / depth)).cpu().numpy()
        k = np.arange(1, depth + 1)
        terms = rho[:, None, None] ** (2 * (depth - k)) * rho[None, :, None] ** (
            2 * (k - 1)
        )
        return np.sort(2 * terms.sum(axis=2).ravel())[::-1]

    def __repr__(self) -> str:
        widths = [self.shapes[0][1]] + [s[0] for s in self.shapes]
        return f"LinearNetHessian(widths={widths}, n={self.dim})"


def _chain(weights: list[torch.Tensor], size: int = 0, device: Any = None) -> torch.Tensor:
    """``W_last ⋯ W_first`` (identity of ``size`` for an empty list)."""
    if not weights:
        return torch.eye(size, dtype=torch.float64, device=device)
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    return product


def _batched_chain(layers: list[torch.Tensor]) -> torch.Tensor:
    product = layers[0]
    for w in layers[1:]:
        product = w @ product
    return product


@as_oracle.register
def _(obj: LinearNetHessian) -> LinearNetHessian:
    return obj


@exact_rank.register
def _(oracle: LinearNetHessian) -> int:
    # Global minimum, full-rank target, Σx ≻ 0, hidden widths ≥ min(d_in, d_out).
    d_out, d_in = oracle.target.shape
    if int(torch.linalg.matrix_rank(oracle.target)) < min(d_in, d_out):
        raise NotImplementedError("the rank is d_in·d_out only for a full-rank target")
    if (
        min(s[0] for s in oracle.shapes[:-1]) < min(d_in, d_out)
        if len(oracle.shapes) > 1
        else False
    ):
        raise NotImplementedError(
            "the rank is d_in·d_out only when hidden widths ≥ min(d_in, d_out)"
        )
    return d_in * d_out
