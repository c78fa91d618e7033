"""A researcher's first try: small models trained on scikit-learn data, every curvature and
every method, in float32 and float64, against the dense count at each reported threshold.

For each model (wine MLP, breast-cancer ReLU MLP trained with AdamW, diabetes regression
net, digits CNN), curvature (Hessian, GGN, Fisher), dtype and method the table prints the
rank, N⁺/N⁻ where the method sees signs, the status, τ, the cost, and the dense truth: the
number of |λ| above the reported τ, from ``eigvalsh`` of the float64 matrix. A row is
``ok`` when it is not CONVERGED, or when its count is within 3 stderr (0.5 for exact
counts) of that truth; ``WRONG`` otherwise. ``auto`` runs three times and must give the
same route and answer each time (the ``auto×3`` column).

    OMP_NUM_THREADS=2 python benchmarks/first_try.py                     # everything
    python benchmarks/first_try.py --models wine diabetes --methods auto exact lanczos
    python benchmarks/first_try.py --device cuda                        # on a GPU
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np
import sklearn.datasets
import torch
from sklearn.preprocessing import StandardScaler

import matrank
from matrank.adapters import TorchFisher, TorchGGN, TorchLoss

METHODS = ("auto", "exact", "lanczos", "polynomial", "langevin")


def _mlp(widths: list[int], activation: type) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [torch.nn.Linear(a, b), activation()]
    return torch.nn.Sequential(*layers[:-1])


def _cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Unflatten(1, (1, 8, 8)),
        torch.nn.Conv2d(1, 6, 3),
        torch.nn.Tanh(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(54, 30),
        torch.nn.Tanh(),
        torch.nn.Linear(30, 10),
    )


def problem(name: str, device: str) -> tuple[torch.nn.Module, object, tuple]:
    """A trained float64 model, its loss and its data (seeded: the same every run)."""
    torch.manual_seed(0)
    if name == "wine":  # n = 139
        data = sklearn.datasets.load_wine()
        model, loss, steps, decay = _mlp([13, 8, 3], torch.nn.Tanh), "ce", 2000, 0.0
    elif name == "cancer":  # n = 794
        data = sklearn.datasets.load_breast_cancer()
        model, loss, steps, decay = _mlp([30, 24, 2], torch.nn.ReLU), "ce", 2000, 1e-2
    elif name == "diabetes":  # n = 769
        data = sklearn.datasets.load_diabetes()
        model, loss, steps, decay = _mlp([10, 64, 1], torch.nn.Tanh), "mse", 3000, 0.0
    else:  # digits CNN, n = 2,020
        data = sklearn.datasets.load_digits()
        model, loss, steps, decay = _cnn(), "ce", 1500, 0.0
    X = torch.tensor(StandardScaler().fit_transform(data.data), dtype=torch.float64)
    if loss == "ce":
        y = torch.tensor(data.target, dtype=torch.int64)
        loss_fn = torch.nn.functional.cross_entropy
    else:
        y = torch.tensor((data.target - data.target.mean()) / data.target.std())[:, None]
        loss_fn = torch.nn.functional.mse_loss
    model = model.double().to(device)
    X, y = X.to(device), y.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        optimizer.step()
    # finish with full-batch L-BFGS so that θ0 is close to stationary
    lbfgs = torch.optim.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-10)

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        value = loss_fn(model(X), y)
        value.backward()
        return value

    lbfgs.step(closure)
    return model.eval(), loss_fn, (X, y)


def oracle(curvature: str, model, loss_fn, data, dtype):
    kind = {"hessian": TorchLoss, "ggn": TorchGGN, "fisher": TorchFisher}[curvature]
    return kind(model, loss_fn, data, dtype=dtype, gradient_tol=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["wine", "cancer", "diabetes", "digits"]
    )
    parser.add_argument("--curvatures", nargs="+", default=["hessian", "ggn", "fisher"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.simplefilter("ignore", matrank.MatrankWarning)
    header = (
        f"{'model':8s} {'curv':7s} {'dtype':7s} {'method':10s} {'rank':>14s} "
        f"{'N+/N-':>9s} {'status':18s} {'tau':>9s} {'cost':>14s} {'s':>6s} "
        f"{'truth':>6s} verdict"
    )
    print(header)
    wrong = 0
    for name in args.models:
        model, loss_fn, data = problem(name, args.device)
        for curvature in args.curvatures:
            reference = oracle(curvature, model, loss_fn, data, torch.float64)
            eigenvalues = np.linalg.eigvalsh(matrank.materialize(reference))
            for dtype_name in args.dtypes:
                dtype = getattr(torch, dtype_name)
                for method in args.methods:
                    runs = 3 if method == "auto" else 1
                    answers = []
                    for _ in range(runs):
                        start = time.perf_counter()
                        try:
                            result = matrank.estimate_rank(
                                oracle(curvature, model, loss_fn, data, dtype),
                                method=method,
                                seed=0,
                            )
                        except matrank.MatrankError as error:
                            print(
                                f"{name:8s} {curvature:7s} {dtype_name:7s} {method:10s} "
                                f"refused: {str(error)[:90]}"
                            )
                            break
                        seconds = time.perf_counter() - start
                        answers.append((result.method, result.rank))
                    else:
                        truth = int((np.abs(eigenvalues) > result.threshold).sum())
                        tolerance = 0.5 if result.stderr is None else 3 * result.stderr
                        confident = result.status is matrank.Status.CONVERGED
                        ok = not confident or abs(result.rank - truth) <= max(
                            tolerance, 0.5
                        )
                        wrong += not ok
                        sign = (
                            f"{result.n_positive}/{result.n_negative}"
                            if result.n_negative is not None
                            else "-"
                        )
                        spread = "" if result.stderr is None else f"±{result.stderr:.2g}"
                        cost = result.cost["matvecs"] or result.cost["gradients"]
                        label = method
                        if method == "auto":
                            label = f"auto:{result.method[:4]}"
                            if len(set(answers)) > 1:
                                label += "!"  # not the same route and answer 3 of 3
                                wrong += 1
                        print(
                            f"{name:8s} {curvature:7s} {dtype_name:7s} {label:10s} "
                            f"{result.rank:8.1f}{spread:>6s} {sign:>9s} "
                            f"{result.status.name:18s} {result.threshold:9.2e} "
                            f"{cost:14.0f} {seconds:6.1f} {truth:6d} "
                            f"{'ok' if ok else 'WRONG'}",
                            flush=True,
                        )
    print(f"\n{wrong} confident wrong answers or unstable auto routes")


if __name__ == "__main__":
    main()
