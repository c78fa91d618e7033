"""The shared run, once for every estimator: seeds, Ctrl-C, checkpoints, kill and resume,
and frozen options that ``dataclasses.replace`` treats like a fresh construction."""

import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import matrank
from matrank.adapters import DenseOracle
from matrank.cli import main
from matrank.testing import rotated_spectrum

# One problem per resumable method, each running for about a second, with options that
# make it pass through every checkpointed phase of its path.
PROBLEMS = {
    "lanczos": (lambda: rotated_spectrum(1500, 300, cond=1e3, seed=0), {"block_size": 4}),
    # with the pilot: the dense path, and the range start
    "lanczos-dense": (
        lambda: rotated_spectrum(2500, 2100, cond=1e3, seed=0),
        {"pilot_from": 512},
    ),
    "lanczos-range": (
        lambda: rotated_spectrum(2500, 200, cond=1e3, seed=0),
        {"pilot_from": 512},
    ),
    "polynomial": (
        lambda: rotated_spectrum(2100, 60, cond=10, seed=0),
        {"max_matvecs": 3000, "deflate": 0},
    ),
    "polynomial-deflated": (
        lambda: rotated_spectrum(2100, 60, cond=10, seed=0),
        {"max_matvecs": 3000},
    ),
    "langevin": (lambda: rotated_spectrum(300, 40, cond=4, seed=0), {}),
    "evolution": (lambda: rotated_spectrum(60, 20, cond=4, seed=0), {}),
}
RESUMABLE = [
    "lanczos",
    "lanczos-dense",
    "lanczos-range",
    "polynomial",
    "langevin",
    "evolution",
]


# cases whose calls are mostly the pilot's (few wide blocks follow it)
PILOTED = ("lanczos-dense", "lanczos-range")


def method_of(case):
    return case.split("-")[0]


class Stop(Exception):
    """Stands for a crash: raised by the oracle, so nothing after it runs."""


class Flaky:
    """A quadratic oracle that raises ``error`` on call ``calls + 1`` of any product,
    and counts the products it answered."""

    def __init__(self, matrix, calls=None, error=Stop):
        self.inner = DenseOracle(torch.as_tensor(matrix))
        self.dim, self.dtype, self.device = (
            self.inner.dim,
            self.inner.dtype,
            self.inner.device,
        )
        self.theta0, self.capabilities = self.inner.theta0, self.inner.capabilities
        self.calls, self.error, self.answered = calls, error, 0

    def _tick(self):
        if self.calls is not None and self.answered >= self.calls:
            raise self.error
        self.answered += 1

    def hvp(self, V):
        self._tick()
        return self.inner.hvp(V)

    def grad(self, theta):
        self._tick()
        return self.inner.grad(theta)

    def loss(self, theta):
        self._tick()
        return self.inner.loss(theta)


def same(first, second):
    """Equal results up to the seconds they took (JSON of everything else)."""
    a, b = first.to_dict(), second.to_dict()
    for result in (a, b):
        result["cost"].pop("seconds")
        result["diagnostics"].pop("orthogonalization_seconds", None)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("case", list(PROBLEMS))
def test_a_crash_resumes_from_the_checkpoint_to_the_uninterrupted_result(case, tmp_path):
    build, options = PROBLEMS[case]
    matrix, method = build(), method_of(case)
    full = Flaky(matrix)
    reference = matrank.estimate_rank(full, method=method, seed=3, **options)
    path = tmp_path / "run.ckpt"
    # the pilot's paths spend most of their calls (not their products) in the pilot,
    # which is journalled whole: crash after it, two calls before the end, then
    # (resumed past the pilot) on the third call
    crashes = [int(fraction * full.answered) for fraction in (0.3, 0.7)]
    if case in PILOTED:
        crashes = [full.answered - 2, 3]
    if case == "lanczos-range":  # the pilot, then two blocks of the sketch
        crashes = [full.answered - 1, 1]
    for calls in crashes:
        crashing = Flaky(matrix, calls=calls)
        with pytest.raises(Stop):
            matrank.estimate_rank(
                crashing,
                method=method,
                seed=3,
                checkpoint=path,
                checkpoint_every=0,
                **options,
            )
        assert path.exists()
    resumed = Flaky(matrix)
    result = matrank.estimate_rank(
        resumed, method=method, seed=3, checkpoint=path, checkpoint_every=0, **options
    )
    assert same(result, reference)
    # the work before the last checkpoint was not redone
    assert resumed.answered < full.answered - 0.3 * full.answered
    assert not path.exists()  # a finished run removes its checkpoint


@pytest.mark.parametrize("case", RESUMABLE)
def test_ctrl_c_returns_the_best_estimate_so_far(case):
    build, options = PROBLEMS[case]
    matrix, method = build(), method_of(case)
    full = Flaky(matrix)
    reference = matrank.estimate_rank(full, method=method, seed=0, **options)
    calls = int(0.8 * full.answered)
    if case in PILOTED:  # past the pilot (during it there is no number yet)
        calls = full.answered - 1
    interrupted = Flaky(matrix, calls=calls, error=KeyboardInterrupt)
    result = matrank.estimate_rank(interrupted, method=method, seed=0, **options)
    assert result.status is matrank.Status.INTERRUPTED and not result.converged
    assert "interrupted by the user" in result.status.value
    assert sum(result.cost[k] for k in ("matvecs", "gradients", "evals")) < sum(
        reference.cost[k] for k in ("matvecs", "gradients", "evals")
    )
    # a best-so-far estimate: within the range of counts the method could report
    assert 0 < result.rank <= matrix.shape[0]


def test_an_interrupted_run_keeps_its_checkpoint_and_a_rerun_finishes_it(tmp_path):
    build, _options = PROBLEMS["langevin"]
    matrix = build()
    reference = matrank.estimate_rank(matrix, method="langevin", seed=0)
    path = tmp_path / "run.ckpt"
    interrupted = matrank.estimate_rank(
        Flaky(matrix, calls=1200, error=KeyboardInterrupt),
        method="langevin",
        seed=0,
        checkpoint=path,
        checkpoint_every=0,
    )
    assert interrupted.status is matrank.Status.INTERRUPTED and path.exists()
    assert same(
        matrank.estimate_rank(
            matrix, method="langevin", seed=0, checkpoint=path, checkpoint_every=0
        ),
        reference,
    )


@pytest.mark.parametrize("case", RESUMABLE)
def test_seed_gives_bit_identical_results(case):
    build, options = PROBLEMS[case]
    method = method_of(case)
    matrix = build()
    first = matrank.estimate_rank(matrix, method=method, seed=np.int64(5), **options)
    second = matrank.estimate_rank(matrix, method=method, seed=5, **options)
    assert same(first, second)


def test_keep_checkpoint_keeps_a_finished_run(tmp_path):
    matrix = rotated_spectrum(200, 20, seed=0)
    path = tmp_path / "kept.ckpt"
    first = matrank.estimate_rank(
        matrix,
        method="langevin",
        seed=1,
        checkpoint=path,
        checkpoint_every=0,
        keep_checkpoint=True,
    )
    assert path.exists()
    counting = Flaky(matrix)
    again = matrank.estimate_rank(
        counting, method="langevin", seed=1, checkpoint=path, keep_checkpoint=True
    )
    assert same(first, again)
    assert counting.answered < 100  # the chains were not run again


def written_checkpoint(tmp_path, matrix, method="lanczos", **options):
    path = tmp_path / "other.ckpt"
    with pytest.raises(Stop):
        matrank.estimate_rank(
            Flaky(matrix, calls=8),
            method=method,
            seed=0,
            checkpoint=path,
            checkpoint_every=0,
            **options,
        )
    return path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 1}, "seed was 0 (here 1)"),
        ({"method": "polynomial"}, "method was 'lanczos' (here 'polynomial')"),
        ({"block_size": 8}, "option block_size was 4 (here 8)"),
        ({"matrix": "other"}, "other products for the same fixed probes"),
        ({"matrix": "smaller"}, "n was 600 (here 599)"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(
    change, named, tmp_path
):
    matrix = rotated_spectrum(600, 120, cond=1e3, seed=0)
    path = written_checkpoint(tmp_path, matrix, block_size=4)
    arguments = {"method": "lanczos", "seed": 0, "block_size": 4}
    arguments.update({k: v for k, v in change.items() if k != "matrix"})
    if change.get("matrix") == "other":
        matrix = rotated_spectrum(600, 120, cond=1e3, seed=1)
    elif change.get("matrix") == "smaller":
        matrix = matrix[:599, :599]
    if arguments["method"] != "lanczos":
        arguments.pop("block_size")
    with pytest.raises(matrank.MatrankValueError, match="`checkpoint` must be") as error:
        matrank.estimate_rank(matrix, checkpoint=path, **arguments)
    assert named in str(error.value)


def test_a_checkpoint_from_other_thread_counts_is_refused_naming_them(tmp_path):
    import threadpoolctl

    # n > 512 runs on the caller's threads (smaller problems always run on one)
    matrix = rotated_spectrum(1500, 300, cond=1e3, seed=0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threadpoolctl.threadpool_limits(2, user_api="blas"):
            path = written_checkpoint(tmp_path, matrix, block_size=4)
            # on the same counts it resumes (and the crash tests show: bit-identically)
            resumed = matrank.estimate_rank(
                matrix,
                method="lanczos",
                seed=0,
                block_size=4,
                checkpoint=path,
                keep_checkpoint=True,
            )
            assert resumed.rank == 300
        torch.set_num_threads(1)
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            with pytest.raises(matrank.MatrankValueError, match="thread counts") as error:
                matrank.estimate_rank(
                    matrix, method="lanczos", seed=0, block_size=4, checkpoint=path
                )
    finally:
        torch.set_num_threads(before)
    assert "were torch 2, BLAS 2 (here torch 1, BLAS 1;" in str(error.value)
    assert "OMP_NUM_THREADS" in str(error.value)


def test_a_file_that_is_not_a_checkpoint_is_refused_without_running_it(tmp_path):
    import pickle

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(os.system))  # would run code if unpickled freely
    with pytest.raises(matrank.MatrankValueError, match="not a matrank checkpoint") as e:
        matrank.estimate_rank(np.eye(5), method="lanczos", checkpoint=path)
    assert "\n" not in str(e.value)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(matrank.MatrankValueError, match="not a matrank checkpoint"):
        matrank.estimate_rank(np.eye(5), method="lanczos", checkpoint=path)


def test_checkpoint_options_are_validated():
    with pytest.raises(matrank.MatrankValueError, match="`checkpoint_every` must be"):
        matrank.estimate_rank(np.eye(4), checkpoint="x.ckpt", checkpoint_every=-1.0)
    with pytest.raises(matrank.MatrankValueError, match="`keep_checkpoint` must be"):
        matrank.estimate_rank(np.eye(4), checkpoint="x.ckpt", keep_checkpoint="yes")


REPLACEMENTS = [
    (matrank.ExactRank(max_dim=100), {"threshold": 1e-3}),
    (matrank.LanczosRank(block_size=4), {"max_matvecs": 500}),
    (matrank.PolynomialRank(degree=40), {"variant": "ubaru-saad"}),
    (matrank.LangevinRank(), {"n_chains": 2}),
    (matrank.LangevinRank(), {"variant": "paper"}),
    (matrank.LangevinRank(variant="paper", n_steps=300), {"variant": "default"}),
    (matrank.EvolutionRank(population=100), {"keep": 0.2}),
]


@pytest.mark.parametrize(("estimator", "change"), REPLACEMENTS, ids=repr)
def test_replace_behaves_like_a_fresh_construction(estimator, change):
    cls = type(estimator)
    fields = {f.name: getattr(estimator, f.name) for f in dataclasses.fields(cls)}
    assert cls(**fields) == estimator  # construction writes nothing back
    replaced = dataclasses.replace(estimator, **change)
    fresh = cls(**{**fields, **change})
    assert replaced == fresh
    if cls is matrank.LangevinRank:
        assert replaced.plan() == fresh.plan()


def test_langevin_defaults_follow_the_fields_they_derive_from():
    replaced = dataclasses.replace(matrank.LangevinRank(), n_chains=2)
    # was 1865, the 8 chains' value; 41 gradients for ∇f(θ0) and the step size, four
    # per chain for the quadratic check
    assert replaced.plan().n_steps == (15000 - 41 - 4 * 2) // 2
    paper = dataclasses.replace(matrank.LangevinRank(), variant="paper").plan()
    assert (paper.step_size, paper.n_chains, paper.readout) == (1e-4, 1, "loss")


CHILD = pathlib.Path(__file__).parent / "cli_child.py"


def killed_after_write(halt_after, arguments):
    """Run the CLI in a child that stops after its ``halt_after``-th checkpoint write,
    wait for its word on a pipe, and SIGKILL it there (see tests/cli_child.py)."""
    read, write = os.pipe()
    threads = str(torch.get_num_threads())
    process = subprocess.Popen(
        [sys.executable, str(CHILD), threads, str(halt_after), str(write), *arguments],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        word = pipe.read(1)  # b"" if the child ended without halting
    if word:
        process.send_signal(signal.SIGKILL)
    _, errors = process.communicate()
    assert word == b"w", f"the child ended before write {halt_after}: {errors[-2000:]!r}"
    assert process.returncode == -signal.SIGKILL


def counting_writes(monkeypatch):
    """Count the checkpoint writes of the in-process runs that follow."""
    from matrank import _checkpoint

    writes = []
    original = _checkpoint.Store.write

    def counted(store):
        original(store)
        writes.append(store.path)

    monkeypatch.setattr(_checkpoint.Store, "write", counted)
    return writes


@pytest.mark.parametrize("case", RESUMABLE)
def test_cli_killed_with_sigkill_resumes_to_the_uninterrupted_json(
    case, tmp_path, capsys, monkeypatch
):
    build, options = PROBLEMS[case]
    matrix_path = tmp_path / "big.npy"
    np.save(matrix_path, build())
    flags = [f"--option={name}={value}" for name, value in options.items()]
    common = [
        "estimate",
        str(matrix_path),
        "--method",
        method_of(case),
        "--seed",
        "2",
        "--json",
        "--no-progress",
        *flags,
    ]
    assert main(common) == 0
    reference = json.loads(capsys.readouterr().out)
    checkpoint = tmp_path / "c.ckpt"
    resumable = [*common, "--checkpoint", str(checkpoint), "--checkpoint-every", "0"]
    # the uninterrupted checkpointed run: the same JSON, and how many writes it makes
    writes = counting_writes(monkeypatch)
    assert main(resumable) == 0
    assert json.loads(capsys.readouterr().out)["rank"] == reference["rank"]
    total = len(writes)
    assert total >= 1 and not checkpoint.exists()
    # an explicit matrix on the piloted dense path writes once: after its pilot
    killed_after_write(max(1, total // 2), resumable)
    assert checkpoint.exists()
    assert main(resumable) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert len(writes) - total < max(total, 1)  # the rerun went on from the kill's write
    assert resumed["cost"].pop("seconds") > 0
    reference["cost"].pop("seconds")
    for result in (resumed, reference):  # a timing
        result["diagnostics"].pop("orthogonalization_seconds", None)
    assert resumed == reference
    assert not checkpoint.exists()


def test_threshold_means_count_above_it_or_says_why_not():
    with pytest.raises(matrank.MatrankTypeError, match="`threshold` must be left out") as e:
        matrank.estimate_rank(np.eye(4), method="evolution", threshold=0.5)
    assert "method='exact'" in str(e.value)
    with pytest.raises(matrank.MatrankValueError, match="`threshold` must be reachable"):
        matrank.estimate_rank(
            rotated_spectrum(50, 5, seed=0), method="langevin", threshold=1e-9
        )
    with pytest.raises(matrank.MatrankValueError, match="`threshold` must be None with"):
        matrank.LangevinRank(variant="paper", threshold=0.1)


@pytest.mark.parametrize("aim", [0.1, 0.01, 0.003])
def test_langevin_aims_its_run_at_a_given_threshold(aim):
    rng = np.random.default_rng(0)
    values = np.geomspace(1, 1e-4, 200)
    basis, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    matrix = (basis[:, :200] * values) @ basis[:, :200].T
    for seed in range(3):
        result = matrank.estimate_rank(matrix, method="langevin", threshold=aim, seed=seed)
        # matched near the requested τ, and a count of N(τ) at the τ it reports
        assert aim / 2 < result.threshold < aim * 2
        truth = (values > result.threshold).sum()
        assert abs(result.rank - truth) < 3 * result.stderr


def kronecker_operator(clock, left_rank=7, right_rank=11, size=60, seed=0):
    """A rank ``left_rank·right_rank`` Kronecker product as a matvec-only operator whose
    products cost, not its size: 1 ms each on the suite's clock (3.6 s for all n)."""
    import scipy.sparse.linalg

    left = rotated_spectrum(size, left_rank, seed=seed)
    right = rotated_spectrum(size, right_rank, seed=seed + 1)

    def matvec(vector):
        clock.advance(1e-3)
        return (right @ vector.reshape(size, size) @ left.T).ravel()

    return scipy.sparse.linalg.LinearOperator(
        (size * size, size * size), matvec=matvec, rmatvec=matvec, dtype=np.float64
    )


def test_auto_counts_an_expensive_operator_by_krylov_and_says_why(clock):
    result = matrank.estimate_rank(kronecker_operator(clock), seed=0)
    assert result.method == "lanczos" and result.rank == 77
    reason = result.diagnostics.auto
    assert "the first a warm-up" in reason and "the pilot counted 78" in reason
    assert "a Krylov count of about" in reason and "less: block Krylov" in reason
    # the dense path's n products were not spent; the calibration's 64 and the pilot's
    # were, and are counted
    assert 64 + 64 + 173 <= result.cost["matvecs"] < 3600 / 4


def _costly(clock, matrix, seconds=1e-3):
    import scipy.sparse.linalg

    def matvec(vector):
        clock.advance(seconds)
        return matrix @ vector

    return scipy.sparse.linalg.LinearOperator(
        matrix.shape, matvec=matvec, rmatvec=matvec, dtype=np.float64
    )


def test_auto_prices_the_krylov_count_against_the_dense_path_on_one_model(clock):
    """Both routes in the suite clock's seconds: 1 ms a product, so the n products
    (0.6 s) dominate the dense path. A rank of 250 of 600 needs a Krylov basis of
    about 2r + 128 ≥ n products: exact. A count the pilot sees still growing with its
    steps from an eighth of n (a gapless spectrum) goes dense too; rank 20 of 600 is
    counted by Krylov for about 170 products beside the pilot's."""
    projector = matrank.testing.projector(600, 250, seed=0)
    result = matrank.estimate_rank(_costly(clock, projector), seed=0)
    assert result.method == "exact" and result.rank == 250
    reason = result.diagnostics.auto
    assert "the pilot counted 270" in reason and "600 products" in reason
    assert reason.endswith("no less: exact")
    gapless = np.diag(np.geomspace(1.0, 1e-9, 600))
    result = matrank.estimate_rank(_costly(clock, gapless), seed=0)
    assert result.method == "exact" and "still growing" in result.diagnostics.auto
    low = rotated_spectrum(600, 20, seed=0)
    result = matrank.estimate_rank(_costly(clock, low), seed=0)
    assert result.method == "lanczos" and result.rank == 20
    assert "less: block Krylov counting" in result.diagnostics.auto
    assert result.cost["matvecs"] < 600  # calibration, pilot and basis together
    # n = 150 at 10 ms a product: 1.5 s dense, but the pilot and a Krylov count's
    # blocks alone would be n products
    small = rotated_spectrum(150, 5, seed=0)
    result = matrank.estimate_rank(_costly(clock, small, 1e-2), seed=0)
    assert result.method == "exact" and result.rank == 5
    assert "would be n already" in result.diagnostics.auto
    # a second call on the same operator reuses both: the same route, nothing spent
    operator = _costly(clock, low)
    first = matrank.estimate_rank(operator, seed=0)
    again = matrank.estimate_rank(operator, seed=0)
    assert again.method == first.method == "lanczos" and again.rank == 20
    assert "(kept for this operator)" in again.diagnostics.auto
    assert again.cost["matvecs"] == first.cost["matvecs"] - 64 - 64


def test_auto_prices_the_polynomial_filter_where_it_answers_the_question(
    clock, monkeypatch
):
    """The filter answers only at a given τ its capped degree reaches (about 1.4e-6 of
    λmax for a PSD spectrum): there it is priced at its budget's products. Made the
    cheapest (an eigvalsh priced at a microsecond per n³, a second at n = 100, so
    that the dense path and a Krylov count's Ritz problems cost more than 15,000
    products of 1 ms), ``auto`` takes it, and its count carries a standard error; at a
    τ under its reach it is named and passed over, whatever its price."""
    import matrank._primal as primal

    monkeypatch.setattr(primal, "eigvalsh_seconds", lambda n: 1e-6 * float(n) ** 3)
    values = np.zeros(600)
    values[:100] = np.geomspace(1.0, 0.5, 100)
    values[100:300] = np.geomspace(1e-3, 1e-5, 200)
    matrix = (lambda q: (q * values) @ q.T)(
        matrank.testing.haar_orthogonal(600, np.random.default_rng(0))
    )
    result = matrank.estimate_rank(_costly(clock, matrix), threshold=0.1, seed=0)
    reason = result.diagnostics.auto
    assert result.method == "polynomial", reason
    assert "a polynomial filter at τ at most 15000 products, 15 s" in reason
    assert "a Krylov count of about" in reason and "cheapest: the polynomial" in reason
    assert result.stderr is not None
    assert abs(result.rank - 100) <= max(3 * result.stderr, 0.5)
    result = matrank.estimate_rank(_costly(clock, matrix), threshold=1e-9, seed=0)
    reason = result.diagnostics.auto
    assert result.method == "exact" and result.rank == 300, reason
    found = re.search(r"a polynomial filter resolving τ only from ([0-9.e+-]+)", reason)
    assert found and 1e-6 < float(found.group(1)) < 2e-6  # (1 − cos(3π/4000))/2 ≈ 1.4e-6
    # no τ given: the filter would pick its own, a different question: not priced
    result = matrank.estimate_rank(_costly(clock, matrix), seed=0)
    assert "polynomial" not in result.diagnostics.auto


def test_auto_reuses_an_operators_calibration_and_keeps_its_route(clock):
    import scipy.sparse.linalg

    matrix = rotated_spectrum(300, 20, seed=0)
    cost = [1e-6]  # seconds a product, as the suite's clock sees it

    def matvec(vector):
        clock.advance(cost[0])
        return matrix @ vector

    operator = scipy.sparse.linalg.LinearOperator(
        matrix.shape, matvec=matvec, rmatvec=matvec, dtype=np.float64
    )
    first = matrank.estimate_rank(operator, seed=0)
    assert first.method == "exact" and first.cost["matvecs"] == 300 + 64
    cost[0] = 1.0  # the machine got busy: a fresh calibration would say lanczos
    again = matrank.estimate_rank(operator, seed=0)
    assert again.method == "exact" and again.rank == first.rank == 20
    assert "the calibration kept for this operator" in again.diagnostics.auto
    assert again.cost["matvecs"] == 300  # nothing spent timing
    fresh = scipy.sparse.linalg.LinearOperator(
        matrix.shape, matvec=matvec, rmatvec=matvec, dtype=np.float64
    )
    assert matrank.estimate_rank(fresh, seed=0).method == "lanczos"


def test_auto_takes_the_dense_path_of_a_cheap_operator_and_counts_the_timing():
    import scipy.sparse.linalg

    # its products cost nothing on the suite's clock: the choice is the same on any machine
    matrix = rotated_spectrum(200, 20, seed=0)
    operator = scipy.sparse.linalg.aslinearoperator(matrix)
    result = matrank.estimate_rank(operator, seed=0)
    assert result.method == "exact" and result.rank == 20
    assert "the first a warm-up" in result.diagnostics.auto
    assert result.cost["matvecs"] == 200 + 64  # the dense path and two timing blocks
    explicit = matrank.estimate_rank(matrix, seed=0)
    assert explicit.method == "exact" and explicit.cost["matvecs"] == 0
