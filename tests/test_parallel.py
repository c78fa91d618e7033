"""Independent work on joblib: chain groups, probe blocks and estimate_many, on loky and
on a local Dask cluster (two worker processes), against the serial results."""

from __future__ import annotations

import os
import signal

import joblib
import numpy as np
import pytest
import torch

import matrank
from matrank.testing import rotated_spectrum

A = rotated_spectrum(60, 12, cond=10.0, seed=0)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    environ = dict(os.environ)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    # LocalCluster leaves OMP_NUM_THREADS=1 (and MKL_, OPENBLAS_, PYTHONHASHSEED) in
    # this process's environment for its workers: every subprocess a later test starts
    # would inherit it
    os.environ.clear()
    os.environ.update(environ)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()
    os.environ.clear()
    os.environ.update(environ)


def _on_dask(function):
    with joblib.parallel_config(backend="dask"):
        return function()


def _same(one, two):
    assert one.rank == two.rank
    assert one.stderr == two.stderr
    assert one.threshold == two.threshold
    assert {k: v for k, v in one.cost.items() if k != "seconds"} == {
        k: v for k, v in two.cost.items() if k != "seconds"
    }


def _torch_oracle():
    from matrank.adapters import TorchLoss

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 4, bias=False), torch.nn.Linear(4, 2, bias=False)
    ).double()
    X = torch.randn(40, 5, dtype=torch.float64)
    with torch.no_grad():
        Y = model(X)
    return TorchLoss(model, torch.nn.functional.mse_loss, (X, Y))


@pytest.mark.parametrize("rtol", [None, 0.05])
def test_langevin_chains_give_one_estimate_for_any_n_jobs(dask_client, rtol):
    def run(n_jobs):
        estimator = matrank.LangevinRank(n_jobs=n_jobs, max_gradients=3000, rtol=rtol)
        return estimator.estimate(A, seed=5)

    serial = run(1)
    _same(serial, run(2))
    _same(serial, _on_dask(lambda: run(2)))
    assert abs(serial.rank - 12) < 4 * serial.stderr + 0.5
    # one process steps the same groups on the same streams, the gradient of all 8
    # chains in one BLAS product, which rounds apart from the groups' products of 2
    alone = run(None)
    assert alone.cost == {**serial.cost, "seconds": alone.cost["seconds"]}
    assert alone.rank == pytest.approx(serial.rank, rel=1e-12)
    assert alone.stderr == pytest.approx(serial.stderr, rel=1e-9)


def test_langevin_chains_of_a_torch_model_on_workers(dask_client):
    oracle = _torch_oracle()

    def run(n_jobs):
        estimator = matrank.LangevinRank(n_jobs=n_jobs, max_gradients=2000)
        return estimator.estimate(oracle, seed=1)

    serial = run(None)
    # a TorchLoss's batched gradient is the same chain by chain whatever the batch:
    # every n_jobs, one process included, gives the same bits
    _same(serial, run(1))
    _same(serial, run(2))
    _same(serial, _on_dask(lambda: run(2)))
    exact = matrank.estimate_rank(oracle, method="exact")
    assert abs(serial.rank - exact.rank) < 4 * serial.stderr + 1


def test_langevin_chain_groups_checkpoint_and_resume(tmp_path, monkeypatch):
    from matrank.estimators.langevin.chain import Chains

    oracle = _torch_oracle()
    options = {"max_gradients": 2000}
    reference = matrank.LangevinRank(n_jobs=2, **options).estimate(oracle, seed=1)
    after, restore = Chains.after, Chains.restore
    segments = []

    def interrupted(chains, k):  # Ctrl-C while the fifth segment runs on the workers
        segments.append(k)
        if len(segments) == 5:
            signal.raise_signal(signal.SIGINT)
        return after(chains, k)

    monkeypatch.setattr(Chains, "after", interrupted)
    path = tmp_path / "run.ckpt"
    stopped = matrank.LangevinRank(n_jobs=2, **options).estimate(
        oracle, seed=1, checkpoint=path, checkpoint_every=1e9
    )
    assert stopped.status is matrank.Status.INTERRUPTED and path.exists()
    assert stopped.cost["gradients"] < reference.cost["gradients"]
    resumed_from = []

    def restored(chains):
        resumed_from.append(restore(chains))
        return resumed_from[-1]

    monkeypatch.setattr(Chains, "after", after)
    monkeypatch.setattr(Chains, "restore", restored)
    result = matrank.LangevinRank(n_jobs=2, **options).estimate(
        oracle, seed=1, checkpoint=path
    )
    _same(result, reference)
    assert resumed_from[0] == segments[4] > 0  # from the Ctrl-C's segment, not the start
    assert not path.exists()


def test_polynomial_probes_give_one_estimate_for_any_n_jobs(dask_client):
    B = rotated_spectrum(400, 60, cond=1e3, seed=0)

    def run(n_jobs):
        options = {"max_matvecs": 3000, "deflate": 0, "n_jobs": n_jobs}
        return matrank.PolynomialRank(**options).estimate(B, seed=3)

    serial = run(1)
    assert serial.diagnostics.path == "probes" and serial.diagnostics.n_probes > 8
    _same(serial, run(2))
    _same(serial, _on_dask(lambda: run(2)))
    alone = run(None)  # the same probes in larger blocks: equal to rounding
    assert serial.rank == pytest.approx(alone.rank, rel=1e-12)
    assert serial.stderr == pytest.approx(alone.stderr, rel=1e-9)


def test_bad_n_jobs_are_refused():
    with pytest.raises(matrank.MatrankValueError, match="n_jobs"):
        matrank.LangevinRank(n_jobs=0)
    with pytest.raises(matrank.MatrankValueError, match="n_jobs"):
        matrank.PolynomialRank(variant="ubaru-saad", n_jobs=2)
    with pytest.raises(matrank.MatrankTypeError, match="n_jobs"):
        matrank.PolynomialRank(n_jobs=1.5)


def test_estimate_many_on_dask_equals_the_serial_sweep(dask_client):
    objs = [rotated_spectrum(40, r, cond=100.0, seed=r) for r in range(2, 11)]
    broken = np.arange(16.0).reshape(4, 4)  # not symmetric: this item fails alone
    objs.insert(3, broken)
    options = {"method": "polynomial", "seed": 7, "max_matvecs": 400}
    serial = matrank.estimate_many(objs, n_jobs=1, **options)
    on_dask = _on_dask(lambda: matrank.estimate_many(objs, n_jobs=2, **options))
    assert len(serial) == len(on_dask) == 10
    failure = on_dask[3]
    assert isinstance(failure, matrank.EstimateFailure) and not failure
    assert failure.index == 3 and failure.kind == "NotSymmetricError"
    assert isinstance(failure.error, matrank.NotSymmetricError)
    expected = [2, 3, 4, 5, 6, 7, 8, 9, 10]
    results = [r for r in on_dask if r]
    assert [round(r.rank) for r in results] == expected
    for one, two in zip([r for r in serial if r], results, strict=True):
        _same(one, two)
    # item i runs with item_seed(seed, i), whatever runs it
    again = matrank.estimate_rank(
        objs[5], method="polynomial", seed=matrank.item_seed(7, 5), max_matvecs=400
    )
    _same(again, on_dask[5])


def test_estimate_many_on_loky_and_its_refusals():
    objs = [rotated_spectrum(30, r, seed=r) for r in (3, 5)]
    results = matrank.estimate_many(objs, method="exact", n_jobs=2, progress=True)
    assert [int(r.rank) for r in results] == [3, 5]
    with pytest.raises(matrank.MatrankTypeError, match="objs"):
        matrank.estimate_many(A)
    with pytest.raises(matrank.MatrankValueError, match="n_jobs"):
        matrank.estimate_many([A], n_jobs=0)
    assert matrank.item_seed(None, 2) == matrank.item_seed(0, 2) != matrank.item_seed(0, 3)
    for jobs in (10**6, -(os.cpu_count() or 1) - 1):  # joblib's raw ValueError before
        with pytest.raises(matrank.MatrankValueError, match="n_jobs"):
            matrank.estimate_many([A], n_jobs=jobs)


def test_an_item_that_cannot_travel_fails_in_its_place(tmp_path):
    import threading

    import scipy.sparse.linalg
    import torch.distributed as dist

    from matrank.adapters import TorchLoss

    matrix = rotated_spectrum(30, 3, seed=0)
    locked = scipy.sparse.linalg.aslinearoperator(matrix)
    locked.lock = threading.Lock()  # pickles nowhere
    results = matrank.estimate_many([matrix, locked, matrix], method="exact", n_jobs=2)
    assert [bool(r) for r in results] == [True, False, True]
    assert results[1].index == 1 and "pickle" in results[1].message
    assert results[0].rank == results[2].rank == 3
    # in this process (one job) the same operator is fine
    assert matrank.estimate_many([locked], method="exact", n_jobs=1)[0].rank == 3
    # a distributed oracle says why it cannot go, in its own words
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = torch.nn.Linear(3, 1).double()
        data = (
            torch.randn(8, 3, dtype=torch.float64),
            torch.randn(8, 1, dtype=torch.float64),
        )
        oracle = TorchLoss(
            model, torch.nn.functional.mse_loss, data, distributed=True, gradient_tol=None
        )
        (failure,) = matrank.estimate_many([oracle], method="exact", n_jobs=2)
    finally:
        dist.destroy_process_group()
    assert not failure and failure.kind == "MatrankValueError"
    assert "distributed" in failure.message


def test_the_ray_backend_gives_the_serial_estimates():
    """Ray is an optional extra (``pip install "matrank[ray]"``): skipped without it."""
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        register_ray()

        def run(n_jobs):
            return matrank.LangevinRank(n_jobs=n_jobs, max_gradients=2000).estimate(
                A, seed=2
            )

        serial = run(1)
        with joblib.parallel_config(backend="ray"):
            _same(serial, run(2))
            objs = [rotated_spectrum(30, r, seed=r) for r in (3, 5, 7)]
            results = matrank.estimate_many(objs, method="polynomial", seed=1, n_jobs=2)
        again = matrank.estimate_many(objs, method="polynomial", seed=1, n_jobs=1)
        for one, two in zip(results, again, strict=True):
            _same(one, two)
    finally:
        ray.shutdown()
