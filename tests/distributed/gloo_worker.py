"""One rank of the 2-process gloo check (tests/test_distributed.py runs it by torchrun).

Each rank holds an uneven shard (37 and 60 of 97 samples, chunks of 16: an uneven last
chunk on both) and compares the data-parallel TorchLoss with the single-process one on
all the data: loss, gradient and HVP, then the ranks of exact and lanczos. It writes what
it saw to OUT/rank<r>.json, or the traceback of what it raised to OUT/rank<r>.error.

It runs on the suite's deterministic clock: each rank times its single-process
estimates alone (only a distributed oracle's ranks agree on rank 0's timing), so on a
loaded machine the two ranks' ``auto`` could otherwise take different paths. Every way
out destroys the process group, after a barrier when both ranks succeeded; a failing
rank leaves its traceback in a file, which the test shows. The process then ends by
``os._exit``: torch's C++ teardown at interpreter exit, after the group is destroyed and
every result written, once aborted rank 0 in CI ("terminate called without an active
exception", no Python frame left; pytorch/pytorch#190489 reports the same abort), and
nothing after that point is under test.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

import matrank
from matrank.adapters import TorchLoss
from matrank.testing import stepping_clock

F = torch.nn.functional


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def main(out: Path) -> int:
    faulthandler.enable()  # an abort prints every thread's Python stack
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        with stepping_clock():
            record = compare(rank, dist.get_world_size())
        (out / f"rank{rank}.json").write_text(json.dumps(record))
        dist.barrier()  # both ranks are done with the group before either tears it down
        return 0
    except BaseException:
        # no barrier here: it could pair with a collective the peer is still in
        (out / f"rank{rank}.error").write_text(traceback.format_exc())
        traceback.print_exc()
        return 1
    finally:
        dist.destroy_process_group()


def compare(rank: int, size: int) -> dict:
    """What this rank saw: the products' errors, the estimates, the shared failure."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3)
    ).double()
    X = torch.randn(97, 6, generator=generator, dtype=torch.float64)
    Y = torch.randint(0, 3, (97,), generator=generator)
    bounds = [0, 37, 97]
    shard = (X[bounds[rank] : bounds[rank + 1]], Y[bounds[rank] : bounds[rank + 1]])
    options = {"chunk_size": 16, "gradient_tol": None}
    parallel = TorchLoss(model, F.cross_entropy, shard, distributed=True, **options)
    single = TorchLoss(model, F.cross_entropy, (X, Y), **options)
    n = single.dim
    theta = single.theta0 + 0.05 * torch.randn(
        3, n, generator=generator, dtype=torch.float64
    )
    V = torch.randn(n, 5, generator=generator, dtype=torch.float64)
    record = {
        "rank": rank,
        "size": size,
        "samples": parallel._n_samples,
        "errors": {
            "loss": relative(parallel.loss(theta), single.loss(theta)),
            "grad": relative(parallel.grad(theta), single.grad(theta)),
            "hvp": relative(parallel.hvp(V), single.hvp(V)),
            "hvp one column": relative(parallel.hvp(V[:, :1]), single.hvp(V[:, :1])),
        },
        "estimates": {},
    }
    for method in ("exact", "lanczos", "auto"):
        for name, oracle in (("parallel", parallel), ("single", single)):
            result = matrank.estimate_rank(oracle, method=method, seed=0)
            record["estimates"][f"{method} {name}"] = {
                "rank": result.rank,
                "threshold": result.threshold,
                "status": result.status.name,
                "method": result.method,
                "matvecs": result.cost["matvecs"],
            }
    # the stochastic methods at a minimum: a bias-free linear net fitted exactly (MSE)
    linear = torch.nn.Sequential(
        torch.nn.Linear(6, 4, bias=False), torch.nn.Linear(4, 3, bias=False)
    ).double()
    with torch.no_grad():
        fitted = linear(X)
    pieces = (X[bounds[rank] : bounds[rank + 1]], fitted[bounds[rank] : bounds[rank + 1]])
    parallel = TorchLoss(linear, F.mse_loss, pieces, distributed=True, **options)
    single = TorchLoss(linear, F.mse_loss, (X, fitted), **options)
    budgets = {"langevin": {"max_gradients": 2000}, "polynomial": {}, "evolution": {}}
    for method, budget in budgets.items():
        for name, oracle in (("parallel", parallel), ("single", single)):
            result = matrank.estimate_rank(oracle, method=method, seed=0, **budget)
            record["estimates"][f"{method} {name}"] = {
                "rank": result.rank,
                "stderr": result.stderr,
                "threshold": result.threshold,
                "status": result.status.name,
                "method": result.method,
                "cost": {k: v for k, v in result.cost.items() if k != "seconds"},
            }
    # ranks that disagree are refused on every rank before any product, naming what
    # differs: another seed, method, point (θ0), parameter count or dtype
    record["disagreements"] = {}
    wider = torch.nn.Sequential(
        torch.nn.Linear(6, 4 + rank, bias=False), torch.nn.Linear(4 + rank, 3, bias=False)
    ).double()
    moved = torch.nn.Sequential(
        torch.nn.Linear(6, 4, bias=False), torch.nn.Linear(4, 3, bias=False)
    ).double()
    moved.load_state_dict(linear.state_dict())
    with torch.no_grad():
        moved[0].weight[0, 0] += 1e-3 * rank
    cases = {
        "seed": (parallel, {"method": "exact", "seed": rank}),
        "method": (parallel, {"method": ("exact", "lanczos")[rank], "seed": 0}),
        "theta0": (moved, {"method": "exact", "seed": 0}),
        "n": (wider, {"method": "auto", "seed": 0}),
        "dtype": (
            linear,
            {"method": "exact", "seed": 0, "dtype": (None, torch.float32)[rank]},
        ),
    }
    for name, (subject, arguments) in cases.items():
        if isinstance(subject, torch.nn.Module):
            dtype = arguments.pop("dtype", None)
            subject = TorchLoss(
                subject, F.mse_loss, pieces, distributed=True, dtype=dtype, **options
            )
        else:
            arguments.pop("dtype", None)
        try:
            matrank.estimate_rank(subject, **arguments)
            record["disagreements"][name] = None
        except matrank.MatrankError as error:
            record["disagreements"][name] = [type(error).__name__, str(error)]
    # a shard that fails its checks on rank 1 only: both ranks raise, with its message
    bad = (shard[0].clone(), shard[1])
    if rank == 1:
        bad[0][0, 0] = float("nan")
    try:
        TorchLoss(model, F.cross_entropy, bad, distributed=True, **options)
        record["failure"] = None
    except matrank.MatrankError as error:
        record["failure"] = [type(error).__name__, str(error)]
    return record


if __name__ == "__main__":
    code = main(Path(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
