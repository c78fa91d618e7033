"""Data-parallel TorchLoss on torch.distributed: a 2-process gloo run (torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matrank import MatrankValueError
from matrank.adapters import TorchLoss

WORKER = Path(__file__).parent / "distributed" / "gloo_worker.py"


@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not built in")
    out = tmp_path_factory.mktemp("gloo")
    logs = out / "logs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # its own rendezvous store on a port the system picks
        "--nproc_per_node=2",
        f"--log-dir={logs}",
        "--redirects=3",  # each rank's stdout and stderr in a file of its own
        str(WORKER),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    # the timeout only guards against a hang: a run takes seconds
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        ranks = "".join(
            f"\n--- {path.relative_to(logs)} ---\n{path.read_text()[-3000:]}"
            for path in sorted(logs.rglob("*.log")) + sorted(out.glob("*.error"))
        )
        wrote = sorted(path.name for path in out.glob("rank*.json"))
        pytest.fail(
            f"torchrun exited {done.returncode} (results written: {wrote}): "
            f"{done.stderr[-2000:]}{ranks}"
        )
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_products_equal_the_single_process_ones_with_uneven_shards(gloo_run):
    for record in gloo_run:
        assert record["size"] == 2 and record["samples"] == 97
        for name, error in record["errors"].items():
            assert error <= 1e-12, (record["rank"], name, error)


def test_ranks_equal_the_single_process_ones_and_agree_across_ranks(gloo_run):
    first, second = gloo_run
    assert first["estimates"] == second["estimates"]  # identical on both ranks
    for method in ("exact", "lanczos", "auto"):
        parallel = first["estimates"][f"{method} parallel"]
        single = first["estimates"][f"{method} single"]
        assert parallel["rank"] == single["rank"], method
        assert parallel["status"] == single["status"] == "CONVERGED"
        assert parallel["threshold"] == pytest.approx(single["threshold"], rel=1e-9)
    # the stochastic methods: the same random numbers, products equal to rounding
    for method in ("langevin", "polynomial", "evolution"):
        parallel = first["estimates"][f"{method} parallel"]
        single = first["estimates"][f"{method} single"]
        assert parallel["cost"] == single["cost"], method
        assert parallel["rank"] == pytest.approx(single["rank"], rel=1e-6), method
        assert parallel["status"] == single["status"], method


def test_a_check_failing_on_one_rank_raises_on_every_rank(gloo_run):
    first, second = gloo_run
    assert first["failure"] == second["failure"]
    kind, text = first["failure"]
    assert kind == "MatrankValueError"
    assert text.startswith("on rank 1 of 2:") and "finite" in text


def test_ranks_that_disagree_are_refused_on_every_rank_naming_it(gloo_run):
    first, second = gloo_run
    assert first["disagreements"] == second["disagreements"]  # the same refusal
    for name, named in (
        ("seed", "rank 1 has seed 1 where rank 0 has 0"),
        ("method", "rank 1 has method 'lanczos' where rank 0 has 'exact'"),
        ("theta0", "rank 1 has theta0"),
        ("n", "rank 1 has n 45 where rank 0 has 36"),
        ("dtype", "rank 1 has dtype 'torch.float32' where rank 0 has 'torch.float64'"),
    ):
        kind, text = first["disagreements"][name]
        assert kind == "MatrankValueError" and text.startswith("`distributed` must be")
        assert named in text, (name, text)


def test_distributed_needs_a_process_group():
    model = torch.nn.Linear(3, 1)
    data = (torch.randn(5, 3), torch.randn(5, 1))
    with pytest.raises(MatrankValueError, match="init_process_group"):
        TorchLoss(model, torch.nn.functional.mse_loss, data, distributed=True)


def test_a_distributed_sampler_that_repeats_samples_is_refused():
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    model = torch.nn.Linear(3, 1)
    dataset = TensorDataset(torch.randn(7, 3), torch.randn(7, 1))
    loss = torch.nn.functional.mse_loss
    uneven = DistributedSampler(dataset, num_replicas=2, rank=0, shuffle=False)
    with pytest.raises(MatrankValueError, match="repeated"):
        TorchLoss(model, loss, DataLoader(dataset, sampler=uneven, batch_size=2))
    even = DistributedSampler(
        TensorDataset(torch.randn(8, 3), torch.randn(8, 1)),
        num_replicas=2,
        rank=1,
        shuffle=False,
    )
    loader = DataLoader(even.dataset, sampler=even, batch_size=3)
    oracle = TorchLoss(model, loss, loader, gradient_tol=None)
    assert oracle._n_samples == 4
