"""Ranks of three curvatures of networks on scikit-learn's digits, and the dual route's cost.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/curvature_ranks.py [--samples 300]
     [--large-samples 200] [--skip-table] [--skip-large]

Table 1, per model at initialization and after training (Adam, full batch, float64,
cross-entropy on the first ``--samples`` digits, pixels scaled to [0, 1]): the rank of
the loss Hessian (dense, ``ExactRank(dual=False)``), of the generalised Gauss–Newton
matrix and of the empirical Fisher (``method="auto"``: the dual ``BBᵀ`` where it is
smaller than ``n``, which the route column says), each with its status (``no plateau``:
the spectrum has no gap of a decade and the count is the one above the noise floor). For
the bias-free linear networks the Singh–Bachmann–Hofmann prediction at a generic point is
printed beside them (data rank ``r`` of the inputs, ``K − 1 = 9`` outputs for
cross-entropy): outer (= GGN) and Hessian. The Fisher has rank at most ``N``.

Table 2: the GGN of a ≥ 10⁵-parameter MLP on ``--large-samples`` digits (``--large-steps``
Adam steps: a trained but not interpolating point), counted on its dual (``auto``, the
default memory budget of 1 GiB for rows) and by ``LanczosRank`` on the GGN operator,
then the dual's count at Lanczos's threshold (the two must agree): ranks, statuses,
thresholds, products, seconds and the time ratio. ``tests/test_slow.py`` runs it.
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits

import matrank
from matrank.adapters import TorchFisher, TorchGGN, TorchLoss
from matrank.theory import linear_network_ranks

F = torch.nn.functional


def digits(samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    X = torch.tensor(data.data[:samples] / 16.0, dtype=torch.float64)
    y = torch.tensor(data.target[:samples], dtype=torch.long)
    return X, y


class Flat(torch.nn.Module):
    """A model of 8×8 images fed flat vectors: reshape, then the layers."""

    def __init__(self, *layers: torch.nn.Module) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(-1, 1, 8, 8))


def models() -> dict[str, tuple[torch.nn.Module, list[int] | None]]:
    """Name -> (model, hidden widths of a bias-free linear network, or None)."""
    nn = torch.nn
    return {
        "linear 64-10 (no bias)": (nn.Linear(64, 10, bias=False), []),
        "linear 64-32-10 (no bias)": (
            nn.Sequential(nn.Linear(64, 32, bias=False), nn.Linear(32, 10, bias=False)),
            [32],
        ),
        "linear 64-6-10 (no bias)": (
            nn.Sequential(nn.Linear(64, 6, bias=False), nn.Linear(6, 10, bias=False)),
            [6],
        ),
        "MLP 64-32-10 tanh": (
            nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)),
            None,
        ),
        "MLP 64-32-32-10 relu": (
            nn.Sequential(
                nn.Linear(64, 32),
                nn.ReLU(),
                nn.Linear(32, 32),
                nn.ReLU(),
                nn.Linear(32, 10),
            ),
            None,
        ),
        "CNN c4-c8-pool-fc": (
            Flat(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(4, 8, 3, padding=1),
                nn.ReLU(),
                nn.AvgPool2d(2),
                nn.Flatten(),
                nn.Linear(128, 10),
            ),
            None,
        ),
    }


def train(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(F.cross_entropy(model(X), y))


def _cell(result: matrank.RankResult) -> str:
    mark = "" if result.status is matrank.Status.CONVERGED else "*"
    return f"{result.rank:.0f}{mark}"


def table(samples: int, steps: int) -> None:
    X, y = digits(samples)
    r = int(torch.linalg.matrix_rank(X))
    print(
        f"Table 1: ranks on the first {samples} digits (data rank r = {r}), cross-entropy, "
        f"float64; trained = {steps} Adam steps (lr 1e-2); * = no plateau (count above "
        "the noise floor)"
    )
    header = (
        f"{'model':27s} {'point':7s} {'n':>5s} {'loss':>7s} {'Hessian':>8s} {'GGN':>6s} "
        f"{'route':>13s} {'Fisher':>7s} {'route':>13s} {'theory GGN/Hess':>16s} {'s':>6s}"
    )
    print(header)
    print("-" * len(header))
    for name, (model, hidden) in models().items():
        torch.manual_seed(0)
        model = model.double()
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for point in ("init", "trained"):
            if point == "trained":
                loss = train(model, X, y, steps)
            else:
                with torch.no_grad():
                    loss = float(F.cross_entropy(model(X), y))
            start = time.perf_counter()
            data = (X, y)
            hessian = matrank.ExactRank(dual=False).estimate(
                TorchLoss(model, F.cross_entropy, data, gradient_tol=None)
            )
            ggn = matrank.estimate_rank(TorchGGN(model, F.cross_entropy, data), seed=0)
            fisher = matrank.estimate_rank(
                TorchFisher(model, F.cross_entropy, data), seed=0
            )
            seconds = time.perf_counter() - start
            theory = "-"
            if hidden is not None:
                ranks = linear_network_ranks(64, hidden, 9, data_rank=r)
                theory = f"{ranks.outer}/{ranks.hessian}"
            n = sum(p.numel() for p in model.parameters())

            def route(result: matrank.RankResult) -> str:
                dual = result.diagnostics.get("dual")
                return "primal dense" if dual is None else f"dual {dual['rows']}²"

            print(
                f"{name:27s} {point:7s} {n:5d} {loss:7.3f} {_cell(hessian):>8s} "
                f"{_cell(ggn):>6s} {route(ggn):>13s} {_cell(fisher):>7s} "
                f"{route(fisher):>13s} {theory:>16s} {seconds:6.1f}"
            )


def compare(samples: int, steps: int, width: int) -> dict:
    """The GGN of a wide MLP on digits: the dual count (``auto``), the Lanczos count on
    the operator, and the dual's count at Lanczos's threshold (the cross-check)."""
    X, y = digits(samples)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Linear(64, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    ).double()
    loss = train(model, X, y, steps)
    ggn = TorchGGN(model, F.cross_entropy, (X, y))
    rows = []
    for label, run in (
        ("dual exact (auto)", lambda: matrank.estimate_rank(ggn, seed=0)),
        (
            "lanczos on the GGN operator",
            lambda: matrank.LanczosRank().estimate(ggn, seed=0),
        ),
    ):
        start = time.perf_counter()
        result = run()
        rows.append((label, result, time.perf_counter() - start))
    tau = rows[1][1].threshold
    start = time.perf_counter()
    same = matrank.ExactRank(dual=True, threshold=tau).estimate(ggn)
    rows.append(("dual exact at lanczos's threshold", same, time.perf_counter() - start))
    return {"n": ggn.dim, "loss": loss, "rows": rows}


def large(samples: int, steps: int, width: int) -> None:
    info = compare(samples, steps, width)
    print(
        f"\nTable 2: GGN of an MLP 64-{width}-{width}-10 (n = {info['n']}) on {samples} "
        f"digits, cross-entropy, {steps} Adam steps (loss {info['loss']:.3g}); at most "
        f"{samples} × 9 dual rows"
    )
    header = (
        f"{'route':34s} {'rank':>6s} {'status':>10s} {'threshold':>9s} {'matvecs':>8s} "
        f"{'rows':>6s} {'passes':>6s} {'seconds':>8s} {'ratio':>6s}"
    )
    print(header)
    print("-" * len(header))
    base = info["rows"][0][2]
    for label, result, seconds in info["rows"]:
        dual = result.diagnostics.get("dual", {})
        print(
            f"{label:34s} {result.rank:6.0f} {result.status.name:>10s} "
            f"{result.threshold:9.3g} {result.cost['matvecs']:8.0f} "
            f"{dual.get('rows', 0):6d} {dual.get('passes', 0):6d} {seconds:8.2f} "
            f"{seconds / base:6.2f}"
        )
    print(f"auto: {info['rows'][0][1].diagnostics['auto']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--large-samples", type=int, default=200)
    parser.add_argument("--width", type=int, default=300)
    parser.add_argument("--large-steps", type=int, default=20)
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    if not args.skip_table:
        table(args.samples, args.steps)
    if not args.skip_large:
        large(args.large_samples, args.large_steps, args.width)


if __name__ == "__main__":
    main()
