"""The Langevin paper's nonlinear experiment: a small denoising CNN on scikit-learn's digits.

Run: .venv/bin/python benchmarks/digits_denoiser.py [--samples 200] [--polynomial] [--plot out.png]
A DnCNN-style residual CNN (conv 3×3 1→c, ReLU, conv c→c, ReLU, conv c→1; the output is
the input minus the predicted noise; 737 parameters at c = 8) is trained with Adam to
denoise the first ``--samples`` of the 1797 8×8 digits (pixels in [0, 1]) under fresh
Gaussian noise (σ = 0.2) each epoch, then finished by full-batch L-BFGS in float64 on one fixed noisy copy, so
that the loss is one fixed function at a minimum. Its dense Hessian (torch.func.hessian,
float64) gives the ground truth; each estimator's answer is reported with the spectral
energy it captures — the normalized cumulative eigenvalue sum at the estimated rank, the
measure of the paper's Figure 3 — and its cost. The architecture and hyperparameters
are ours (the paper's code for this experiment is not public).

Cost: float64 convolutions on a 2-core CPU take ≈ 0.26 s per full-batch gradient over
all 1797 images, hence the default subset of 200 and a short Langevin run; the
Ubaru–Saad filter (15,030 matvecs) runs only with ``--polynomial``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

import matrank
from matrank.adapters import TorchLoss


class DnCNN(torch.nn.Module):
    """Residual denoiser: ``x − f(x)`` with ``f`` three 3×3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(1, channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(channels, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.layers(x)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((output - target) ** 2).mean()


def train(
    channels: int, epochs: int, noise: float, seed: int, samples: int, iterations: int
):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images = load_digits().images[:samples] / 16.0
    clean = torch.tensor(images, dtype=torch.float64)[:, None]
    model = DnCNN(channels).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):  # fresh noise each epoch, full batch
        noisy = clean + noise * torch.randn(
            clean.shape, generator=generator, dtype=torch.float64
        )
        optimizer.zero_grad()
        mse(model(noisy), clean).backward()
        optimizer.step()
    noisy = clean + noise * torch.randn(
        clean.shape, generator=generator, dtype=torch.float64
    )
    lbfgs = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=iterations,
        tolerance_grad=1e-12,
        tolerance_change=0.0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        value = mse(model(noisy), clean)
        value.backward()
        return value

    lbfgs.step(closure)
    return model, noisy, clean


def energy(eigenvalues: np.ndarray, rank: float) -> float:
    """Share of ``Σ|λ|`` in the ``round(rank)`` largest ``|λ|``."""
    magnitudes = np.sort(np.abs(eigenvalues))[::-1]
    k = int(np.clip(round(rank), 0, magnitudes.size))
    return float(magnitudes[:k].sum() / magnitudes.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--lbfgs-iterations", type=int, default=1000)
    parser.add_argument("--langevin-steps", type=int, default=3000)
    parser.add_argument("--polynomial", action="store_true")
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save the cumulative spectrum here")
    args = parser.parse_args()
    start = time.perf_counter()
    model, noisy, clean = train(
        args.channels,
        args.epochs,
        args.noise,
        args.seed,
        args.samples,
        args.lbfgs_iterations,
    )
    oracle = TorchLoss(model, mse, (noisy, clean), gradient_tol=None)
    gradient_norm = float(torch.linalg.vector_norm(oracle.grad(oracle.theta0[None])))
    print(
        f"n = {oracle.dim} parameters, loss {float(oracle.loss(oracle.theta0[None])[0]):.5g}, "
        f"‖∇L‖ = {gradient_norm:.2g}, trained in {time.perf_counter() - start:.0f} s"
    )
    hessian = oracle.dense_hessian()
    eigenvalues = np.linalg.eigvalsh(0.5 * (hessian + hessian.T).numpy())
    largest = np.abs(eigenvalues).max()
    print(
        f"dense spectrum: λmax {largest:.3g}, λmin {eigenvalues.min():.3g}, "
        f"{int((eigenvalues < -1e-8 * largest).sum())} below −1e-8·λmax"
    )
    rows = []
    exact = matrank.estimate_rank(hessian, method="exact")
    rows.append(("dense gap rule (exact)", exact))
    rows.append(("lanczos", matrank.estimate_rank(oracle, method="lanczos", seed=0)))
    if args.polynomial:
        rows.append(
            (
                "polynomial (ubaru-saad)",
                matrank.estimate_rank(oracle, method="polynomial", seed=0),
            )
        )
    # paper mode needs η < 2/λmax; the paper's σ² scaled to this loss
    step = 0.5 / largest
    rows.append(
        (
            f"langevin (paper, η = 0.5/λmax = {step:.2g})",
            matrank.estimate_rank(
                oracle,
                method="langevin",
                seed=0,
                step_size=step,
                sigma2=2e-5,
                n_steps=args.langevin_steps,
                n_average=2 * args.langevin_steps // 3,
                n_chains=4,
            ),
        )
    )
    print(
        f"{'method':44s} {'rank':>8s} {'±':>6s} {'vs dense':>8s} {'energy %':>8s} {'cost':>14s} {'s':>6s}"
    )
    for name, result in rows:
        cost = result.cost
        spent = f"{cost['grads']} grads" if cost["grads"] else f"{cost['matvecs']} matvecs"
        stderr = f"{result.stderr:.1f}" if result.stderr is not None else "-"
        print(
            f"{name:44s} {result.rank:8.1f} {stderr:>6s} "
            f"{100 * (result.rank / exact.rank - 1):+7.1f}% {100 * energy(eigenvalues, result.rank):8.2f} "
            f"{spent:>14s} {cost['seconds']:6.1f}"
        )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        magnitudes = np.sort(np.abs(eigenvalues))[::-1]
        cumulative = np.cumsum(magnitudes) / magnitudes.sum()
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot(
            np.arange(1, magnitudes.size + 1), cumulative, color="black", label="dense"
        )
        for (name, result), color in zip(rows, ["C0", "C1", "C2", "C3"], strict=False):
            axis.axvline(
                result.rank, color=color, linestyle="--", label=f"{name}: {result.rank:.0f}"
            )
        axis.set_xlabel("number of eigenvalues (by magnitude)")
        axis.set_ylabel("cumulative share of Σ|λ|")
        axis.set_title(f"DnCNN on digits, n = {oracle.dim}")
        axis.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
