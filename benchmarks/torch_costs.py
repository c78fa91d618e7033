"""What TorchLoss's products cost, in units of one full-batch gradient.

Run: .venv/bin/python benchmarks/torch_costs.py [--device cpu|cuda] [--repeats 5]
     [--widths 16 64 256] [--models mlp cnn digits]
For an MLP and a small CNN of growing width, and the float64 denoiser of the digits
experiment (``digits8``): the median seconds of one plain autograd
gradient (``loss.backward`` on the model, the unit), and in that unit the adapter's
gradient at θ0, one HVP with the kept gradient graph (``cache_hvp``, the default for
one chunk of data) and recomputed (forward-over-reverse), a block of 32 HVP columns
(cached), and the gradients of 32 parameter vectors at once (32 Langevin chains),
vmapped and looped (``vectorize=False``). The last column is the floor for the chains:
one plain gradient over the data repeated 32 times (one weight set, the same
arithmetic as 32 chains in one pass). The adapter's targets are HVP ≤ 3× and 32 batched
gradients ≤ 8× one gradient. All in one process, so the ratios are comparable; the repeats are interleaved, each round calling every column once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from matrank.adapters import TorchLoss


def timed(functions: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds of each function, the repeats interleaved (one round calls each
    once), so that the machine's drift during the row hits every column alike."""
    for function in functions.values():
        function()  # warm-up (vmap tracing, allocator)
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            function()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def mlp(width: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.Tanh(), torch.nn.Linear(width, 10)
    )
    return model, torch.randn(512, 64), torch.randn(512, 10)


def cnn(width: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, 1, 3, padding=1),
    )
    return model, torch.randn(256, 1, 8, 8), torch.randn(256, 1, 8, 8)


def digits(channels: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The denoiser of ``digits_denoiser.py`` in float64 on 200 images (untrained: the
    costs do not depend on the weights)."""
    from digits_denoiser import DnCNN  # beside this script

    images = torch.rand(200, 1, 8, 8, dtype=torch.float64)
    return DnCNN(channels).double(), images, torch.rand_like(images)


def squared(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((output - target) ** 2).mean()


MODELS = {"mlp": mlp, "cnn": cnn, "digits": digits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument(
        "--models", nargs="+", default=["mlp", "cnn", "digits"], choices=MODELS
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    header = (
        f"{'model':>10s} {'n':>8s} {'grad s':>9s} {'oracle grad':>11s} {'hvp':>6s} "
        f"{'hvp fwd':>7s} {'32 hvp':>7s} {'32 grads':>8s} {'32 looped':>10s} "
        f"{'32× data':>9s}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        widths = [8] if name == "digits" else args.widths  # the digits model: 8 channels
        for width in widths:
            print(measure(f"{name}{width}", *MODELS[name](width), args), flush=True)


def measure(label: str, model, X, Y, args) -> str:
    """One table row: the costs of one model, in units of one plain gradient."""
    model, X, Y = model.to(args.device), X.to(args.device), Y.to(args.device)
    oracle = TorchLoss(
        model, squared, (X, Y), gradient_tol=None, chunk_size=4096, vectorize=True
    )
    recomputed = TorchLoss(
        model, squared, (X, Y), gradient_tol=None, chunk_size=4096, cache_hvp=False
    )
    looped = TorchLoss(
        model, squared, (X, Y), gradient_tol=None, chunk_size=4096, vectorize=False
    )
    theta = oracle.theta0[None]
    chains = oracle.theta0 + 1e-3 * torch.randn(
        32, oracle.dim, device=args.device, dtype=oracle.dtype
    )
    column = torch.randn(oracle.dim, 1, device=args.device, dtype=oracle.dtype)
    block = torch.randn(oracle.dim, 32, device=args.device, dtype=oracle.dtype)
    parameters = list(model.parameters())

    def plain() -> None:
        torch.autograd.grad(squared(model(X), Y), parameters)

    X32, Y32 = X.repeat(32, *[1] * (X.ndim - 1)), Y.repeat(32, *[1] * (Y.ndim - 1))

    def repeated() -> None:
        torch.autograd.grad(squared(model(X32), Y32), parameters)

    t = timed(
        {
            "gradient": plain,
            "own": lambda: oracle.grad(theta),
            "hvp": lambda: oracle.hvp(column),
            "forward": lambda: recomputed.hvp(column),
            "hvp32": lambda: oracle.hvp(block),
            "batched": lambda: oracle.grad(chains),
            "loop": lambda: looped.grad(chains),
            "floor": repeated,
        },
        args.repeats,
        args.device,
    )
    unit = t["gradient"]
    return (
        f"{label:>10s} {oracle.dim:8d} {unit:9.4f} "
        f"{t['own'] / unit:11.2f} {t['hvp'] / unit:6.2f} {t['forward'] / unit:7.2f} "
        f"{t['hvp32'] / unit:7.2f} {t['batched'] / unit:8.2f} {t['loop'] / unit:10.2f} "
        f"{t['floor'] / unit:9.2f}"
    )


if __name__ == "__main__":
    main()
