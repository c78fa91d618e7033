"""One process against several for a data-parallel TorchLoss (torch.distributed).

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/distributed_scaling.py
     [--processes 2] [--samples 4096] [--width 256] [--backend gloo|nccl] [--repeat 3]

The model is a bias-free linear network 64-W-W-1 (n = 64W + W² + W) at an exact fit
(MSE against its own outputs) on the digits' inputs, repeated with noise to
``--samples``: its Hessian has rank 64 (the inputs' rank, Singh et al.), so a whole
Lanczos count is a few hundred products and the work is the products over the data. The
script starts itself under ``torch.distributed.run`` with 1 and with ``--processes``
processes (each process one thread on the CPU: a core each), then once more with one
process of ``--processes`` threads (the same cores without torch.distributed). Each
run times, as the median of ``--repeat``: one HVP block of 16 columns, one gradient of
16 points, and (once) one ``LanczosRank`` estimate, and the share of those seconds spent in
the oracle's ``all_reduce`` calls. On GPUs: ``--backend nccl`` on one node with N GPUs
(``--processes N``, one GPU per rank); on several nodes start the worker part yourself
with ``torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d
--rdzv_endpoint=HOST:PORT benchmarks/distributed_scaling.py --worker OUT ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _model_and_shard(args, rank, size, device):
    from sklearn.datasets import load_digits

    X = torch.tensor(load_digits().data / 16.0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    copies = -(-args.samples // len(X))
    X = X.repeat(copies, 1)[: args.samples]
    X = X + 0.01 * torch.randn(X.shape, generator=generator, dtype=torch.float64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, args.width, bias=False),
        torch.nn.Linear(args.width, args.width, bias=False),
        torch.nn.Linear(args.width, 1, bias=False),
    ).double()
    with torch.no_grad():
        Y = model(X)
    bounds = [round(i * len(X) / size) for i in range(size + 1)]
    part = slice(bounds[rank], bounds[rank + 1])
    return model.to(device), (X[part].to(device), Y[part].to(device))


def worker(args) -> None:
    import torch.distributed as dist

    import matrank
    from matrank.adapters import TorchLoss
    from matrank.adapters._distributed import Collective

    distributed = "RANK" in os.environ
    if distributed:
        dist.init_process_group(args.backend)
        rank, size = dist.get_rank(), dist.get_world_size()
    else:
        rank, size = 0, 1
    device = torch.device("cpu")
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    torch.set_num_threads(args.threads)
    reduce_seconds = [0.0]
    original = Collective.sum

    def timed(self, tensor):
        start = time.perf_counter()
        out = original(self, tensor)
        reduce_seconds[0] += time.perf_counter() - start
        return out

    Collective.sum = timed
    model, shard = _model_and_shard(args, rank, size, device)
    oracle = TorchLoss(
        model, torch.nn.functional.mse_loss, shard, distributed=distributed, chunk_size=4096
    )
    n = oracle.dim
    generator = torch.Generator().manual_seed(1)
    V = torch.randn(n, 16, generator=generator, dtype=torch.float64).to(device)
    points = oracle.theta0 + 1e-3 * torch.randn(
        16, n, generator=generator, dtype=torch.float64
    ).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def clock(call, repeat=args.repeat):
        times, shares = [], []
        for _ in range(repeat):
            reduce_seconds[0] = 0.0
            sync()
            start = time.perf_counter()
            out = call()
            sync()
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            shares.append(reduce_seconds[0] / elapsed)
        return statistics.median(times), statistics.median(shares), out

    oracle.hvp(V[:, :2])  # warm up (and build the cached graph)
    record = {"n": n, "processes": size, "threads": args.threads, "samples": args.samples}
    record["hvp"] = clock(lambda: oracle.hvp(V))[:2]
    record["grad"] = clock(lambda: oracle.grad(points))[:2]
    seconds, share, result = clock(
        lambda: matrank.estimate_rank(oracle, method="lanczos", seed=0), repeat=1
    )
    record["lanczos"] = (seconds, share)
    record["rank"] = result.rank
    record["status"] = result.status.name
    record["matvecs"] = result.cost["matvecs"]
    if rank == 0:
        Path(args.worker).write_text(json.dumps(record))
    if distributed:
        dist.destroy_process_group()


def launch(args, processes: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "record.json"
        tail = [
            __file__,
            "--worker",
            str(out),
            "--threads",
            str(threads),
            "--samples",
            str(args.samples),
            "--width",
            str(args.width),
            "--backend",
            args.backend,
            "--repeat",
            str(args.repeat),
        ]
        if processes == 1 and threads > 1:
            command = [sys.executable, *tail]
        else:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
                *tail,
            ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, env=env, check=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    p = args.processes
    runs = {
        "1 process × 1 thread (distributed)": launch(args, 1, 1),
        f"{p} processes × 1 thread (distributed)": launch(args, p, 1),
        f"1 process × {p} threads (plain)": launch(args, 1, p),
    }
    first = next(iter(runs.values()))
    print(
        f"data-parallel TorchLoss: linear net 64-{args.width}-{args.width}-1, "
        f"n = {first['n']}, {args.samples} samples, backend {args.backend}"
    )
    print(
        f"{'run':38s} {'hvp×16 s':>9s} {'grad×16 s':>9s} {'lanczos s':>9s} "
        f"{'speed-up':>8s} {'allreduce':>9s} {'rank':>5s} {'matvecs':>7s}"
    )
    for name, record in runs.items():
        print(
            f"{name:38s} {record['hvp'][0]:9.3f} {record['grad'][0]:9.3f} "
            f"{record['lanczos'][0]:9.2f} {first['lanczos'][0] / record['lanczos'][0]:8.2f} "
            f"{100 * record['lanczos'][1]:8.1f}% {record['rank']:5.0f} {record['matvecs']:7d}"
        )
    print(
        "speed-up: the whole Lanczos estimate against one process of one thread; "
        "allreduce: its share of the estimate's seconds in the oracle's all_reduce"
    )


if __name__ == "__main__":
    main()
