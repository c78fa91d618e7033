"""The Langevin paper's nonlinear experiment: a small denoising CNN on scikit-learn's digits.

Run: .venv/bin/python benchmarks/digits_denoiser.py [--samples 200] [--polynomial] [--plot out.png]
A DnCNN-style residual CNN (conv 3×3 1→c, ReLU, conv c→c, ReLU, conv c→1; the output is
the input minus the predicted noise; 737 parameters at c = 8) is trained with Adam to
denoise the first ``--samples`` of the 1797 8×8 digits (pixels in [0, 1]) under fresh
Gaussian noise (σ = 0.2) each epoch, then finished by full-batch L-BFGS in float64 on one fixed noisy copy, so
that the loss is one fixed function at a minimum. Its dense Hessian (torch.func.hessian,
float64) gives the ground truth; each estimator's answer is reported with the spectral
energy it captures — the normalized cumulative eigenvalue sum at the estimated rank, the
measure of the paper's Figure 3 — and its cost. Every estimator runs with its defaults: Lanczos and the polynomial filter on
Hessian-vector products, Langevin on gradients, plainly and with the Adam preconditioner
of the training run (as in the paper); a soft count is also held to the dense count
N(τ) above the threshold it reports (of ``G^{1/2}HG^{1/2}`` when preconditioned). The
architecture and hyperparameters are ours (the paper's code for this experiment is not
public). ``tests/test_slow.py`` runs the same experiment (``pytest -m slow``).

Cost: float64 convolutions on a 2-core CPU take ≈ 0.26 s per full-batch gradient over
all 1797 images, hence the default subset of 200.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

import matrank
from matrank.adapters import TorchLoss, adam_preconditioner


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
    return model, noisy, clean, optimizer


def energy(eigenvalues: np.ndarray, rank: float) -> float:
    """Share of ``Σ|λ|`` in the ``round(rank)`` largest ``|λ|``."""
    magnitudes = np.sort(np.abs(eigenvalues))[::-1]
    k = int(np.clip(round(rank), 0, magnitudes.size))
    return float(magnitudes[:k].sum() / magnitudes.sum())


def experiment(
    channels: int = 8,
    epochs: int = 300,
    samples: int = 200,
    lbfgs_iterations: int = 1000,
    noise: float = 0.2,
    seed: int = 0,
    verbose: bool = True,
    polynomial: bool = False,
) -> dict:
    """Train, take the dense spectrum, run every estimator; rows of results."""
    start = time.perf_counter()
    model, noisy, clean, adam = train(
        channels, epochs, noise, seed, samples, lbfgs_iterations
    )
    # on a CPU the default loops over chains (convolutions), on a GPU it vmaps
    oracle = TorchLoss(model, mse, (noisy, clean), gradient_tol=None)
    gradient_norm = float(torch.linalg.vector_norm(oracle.grad(oracle.theta0[None])))
    hessian = oracle.dense_hessian()
    hessian = 0.5 * (hessian + hessian.T)
    eigenvalues = np.linalg.eigvalsh(hessian.numpy())
    preconditioner = adam_preconditioner(adam, oracle)
    root = preconditioner.sqrt()
    whitened = np.linalg.eigvalsh((root[:, None] * hessian * root[None]).numpy())
    info = {
        "n": oracle.dim,
        "loss": float(oracle.loss(oracle.theta0[None])[0]),
        "gradient_norm": gradient_norm,
        "train_seconds": time.perf_counter() - start,
        "eigenvalues": eigenvalues,
        "whitened": whitened,
    }
    if verbose:
        largest = np.abs(eigenvalues).max()
        print(
            f"n = {oracle.dim} parameters, loss {info['loss']:.5g}, ‖∇L‖ = "
            f"{gradient_norm:.2g}, trained in {info['train_seconds']:.0f} s; dense "
            f"spectrum: λmax {largest:.3g}, λmin {eigenvalues.min():.3g}, "
            f"{int((eigenvalues < -1e-8 * largest).sum())} below −1e-8·λmax",
            flush=True,
        )
    rows = [
        ("dense gap rule (exact)", matrank.estimate_rank(hessian, method="exact"), None)
    ]
    runs = [
        ("lanczos", "lanczos", {}, None),
        ("langevin", "langevin", {}, eigenvalues),
        ("langevin (Adam G)", "langevin", {"preconditioner": preconditioner}, whitened),
    ]
    if polynomial:  # 15,000 products: slow for a CNN on the CPU
        runs.insert(1, ("polynomial", "polynomial", {}, eigenvalues))
    for name, method, options, spectrum in runs:
        result = matrank.estimate_rank(oracle, method=method, seed=seed, **options)
        rows.append((name, result, spectrum))
        if verbose:
            print(row(name, result, spectrum, rows[0][1].rank, eigenvalues), flush=True)
    info["rows"] = rows
    return info


def dense_count(result, spectrum) -> int | None:
    """How many eigenvalues of ``spectrum`` exceed the threshold ``result`` reports."""
    if spectrum is None:
        return None
    return int((np.abs(spectrum) > result.threshold).sum())


def row(name, result, spectrum, gap_rank, eigenvalues) -> str:
    cost = result.cost
    spent = (
        f"{cost['gradients']} grads" if cost["gradients"] else f"{cost['matvecs']} matvecs"
    )
    stderr = f"{result.stderr:.1f}" if result.stderr is not None else "-"
    counted = dense_count(result, spectrum)
    if counted is None:
        vs_count = "-"
    elif result.stderr:
        vs_count = f"{counted} ({(result.rank - counted) / result.stderr:+.1f}σ)"
    else:
        vs_count = f"{counted}"
    return (
        f"{name:22s} {result.rank:7.1f} {stderr:>5s} {result.threshold:9.3g} "
        f"{vs_count:>14s} {100 * (result.rank / gap_rank - 1):+7.1f}% "
        f"{100 * energy(eigenvalues, result.rank):8.2f} {spent:>14s} {cost['seconds']:6.1f}"
    )


HEADER = (
    f"{'method':22s} {'rank':>7s} {'±':>5s} {'τ':>9s} {'dense N(τ)':>14s} "
    f"{'vs gap':>8s} {'energy %':>8s} {'cost':>14s} {'s':>6s}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--lbfgs-iterations", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--polynomial", action="store_true", help="also the polynomial")
    parser.add_argument("--plot", default=None, help="save the cumulative spectrum here")
    args = parser.parse_args()
    print(HEADER)
    info = experiment(
        args.channels,
        args.epochs,
        args.samples,
        args.lbfgs_iterations,
        args.noise,
        args.seed,
        polynomial=args.polynomial,
    )
    rows = info["rows"]
    print(row(rows[0][0], rows[0][1], None, rows[0][1].rank, info["eigenvalues"]))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        magnitudes = np.sort(np.abs(info["eigenvalues"]))[::-1]
        cumulative = np.cumsum(magnitudes) / magnitudes.sum()
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot(
            np.arange(1, magnitudes.size + 1), cumulative, color="black", label="dense"
        )
        for (name, result, _), color in zip(
            rows, ["C0", "C1", "C2", "C3", "C4"], strict=False
        ):
            axis.axvline(
                result.rank, color=color, linestyle="--", label=f"{name}: {result.rank:.0f}"
            )
        axis.set_xlabel("number of eigenvalues (by magnitude)")
        axis.set_ylabel("cumulative share of Σ|λ|")
        axis.set_title(f"DnCNN on digits, n = {info['n']}")
        axis.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
