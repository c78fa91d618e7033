"""The run owns the loop: every estimator is a few named phases, Ctrl-C in any of them
ends the run with ``INTERRUPTED`` (never a traceback), and with a checkpoint open the
first Ctrl-C is deferred to the next check, whose state is written before the run stops."""

import ast
import pathlib
import re
import signal

import numpy as np
import pytest
import torch
from test_run import Flaky, same

import matrank
from matrank import _run
from matrank.adapters import DenseOracle
from matrank.testing import rotated_spectrum

ESTIMATORS = pathlib.Path(matrank.__file__).parent / "estimators"


def test_estimators_are_phases_of_at_most_80_lines_and_the_run_owns_ctrl_c():
    long = []
    for path in sorted(ESTIMATORS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long
    text = "\n".join(path.read_text() for path in ESTIMATORS.rglob("*.py"))
    assert len(re.findall(r"run\.close\(\)|except KeyboardInterrupt", text)) <= 5
    assert "options: Any" not in text


def _hidden(n, value):
    """50 eigenvalues in [1, 2] and one at ``value``, in a random basis."""
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, 51)))
    return (q * np.r_[np.linspace(1.0, 2.0, 50), value]) @ q.T


# (method, matrix, options, the phases whose oracle calls a Ctrl-C can land in)
CASES = {
    "lanczos-pilot": (
        "lanczos",
        lambda: rotated_spectrum(600, 40, cond=1e3, seed=0),
        {"pilot_from": 1, "block_size": 8},
        {"pilot", "sketch"},
    ),
    # a noise band 1e6 under the signal: the sketch cannot certify, Krylov goes on
    "lanczos-sketch-fallback": (
        "lanczos",
        lambda: rotated_spectrum(600, 40, cond=1e3, noise_gap=1e6, seed=0),
        {"pilot_from": 1, "block_size": 8},
        {"pilot", "sketch", "grow"},
    ),
    # one eigenvalue under the resolution: the Gaussian tests of "sharpen" find it
    "lanczos-sharpen": (
        "lanczos",
        lambda: _hidden(1200, 5e-12),
        {"pilot_from": 1, "block_size": 8, "threshold": "floor"},
        {"pilot", "sketch", "grow", "sharpen"},
    ),
    "lanczos-dense": (
        "lanczos",
        lambda: rotated_spectrum(300, 240, cond=1e3, seed=0),
        {"pilot_from": 1},
        {"pilot", "dense"},
    ),
    "lanczos-slq": (
        "lanczos",
        lambda: rotated_spectrum(600, 120, cond=1e3, seed=0),
        {"max_basis": 48, "block_size": 8, "max_matvecs": 1500, "dense_max": 0},
        {"grow", "slq"},
    ),
    "polynomial-filter": (
        "polynomial",
        lambda: rotated_spectrum(400, 30, cond=10, seed=0),
        {"degree": 60, "max_matvecs": 3000, "deflate": 0},
        {"bounds", "pilot", "probes"},
    ),
    "polynomial-deflated": (
        "polynomial",
        lambda: rotated_spectrum(400, 30, cond=10, seed=0),
        {"degree": 60, "max_matvecs": 3000},
        {"bounds", "pilot", "deflate"},
    ),
    "polynomial-whole": (
        "polynomial",
        lambda: rotated_spectrum(300, 30, cond=10, seed=0),
        {},
        {"bounds", "whole space"},
    ),
    "evolution": (
        "evolution",
        lambda: rotated_spectrum(10, 4, cond=2, seed=0),
        {},
        {"scale", "sample"},
    ),
    "langevin": (
        "langevin",
        lambda: rotated_spectrum(30, 6, cond=2, seed=0),
        {},
        {"start", "chains", "check"},
    ),
}


def _phase_calls(monkeypatch, method, matrix, options):
    """Run once; the oracle calls (counted from the first, the contract check made
    before the run included) at which each phase that calls the oracle begins and
    ends."""
    oracle = Flaky(matrix)
    marks = []
    enter = _run.Run.enter

    def spy(run, phase):
        marks.append((phase, oracle.answered))
        enter(run, phase)

    monkeypatch.setattr(_run.Run, "enter", spy)
    result = matrank.estimate_rank(oracle, method=method, seed=0, **options)
    monkeypatch.setattr(_run.Run, "enter", enter)
    ranges = {}
    ends = [calls for _, calls in marks[1:]] + [oracle.answered]
    for (phase, first), last in zip(marks, ends, strict=True):
        if last > first:  # a phase that calls the oracle
            ranges.setdefault(phase, (first, last))
    return result, ranges


@pytest.mark.parametrize("case", list(CASES))
def test_ctrl_c_in_every_phase_returns_interrupted(case, monkeypatch):
    method, build, options, phases = CASES[case]
    matrix = build()
    full, ranges = _phase_calls(monkeypatch, method, matrix, options)
    assert set(ranges) == phases  # the case passes through every phase it names
    for phase, (first, last) in ranges.items():
        calls = (first + last) // 2  # Ctrl-C inside the phase's own products
        result = matrank.estimate_rank(
            Flaky(matrix, calls=calls, error=KeyboardInterrupt),
            method=method,
            seed=0,
            **options,
        )
        assert result.status is matrank.Status.INTERRUPTED, phase
        assert result.diagnostics.interrupted_in == phase
        assert not result.converged
        # a number only where the run had one: never one above what it could count
        assert np.isnan(result.rank) or 0 <= result.rank <= matrix.shape[0]
        spent = sum(result.cost[k] for k in ("matvecs", "gradients", "evals"))
        assert spent < sum(full.cost[k] for k in ("matvecs", "gradients", "evals"))


class SignalAt(Flaky):
    """Sends this process SIGINT (as Ctrl-C does) from inside call ``at``."""

    def __init__(self, matrix, at):
        super().__init__(matrix)
        self.at = at

    def _tick(self):
        super()._tick()
        if self.answered == self.at:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize(
    ("method", "build", "options"),
    [
        (
            "lanczos",
            lambda: rotated_spectrum(1500, 300, cond=1e3, seed=0),
            {"block_size": 4},
        ),
        ("langevin", lambda: rotated_spectrum(300, 40, cond=4, seed=0), {}),
    ],
)
def test_ctrl_c_with_a_checkpoint_writes_the_latest_state_then_stops(
    method, build, options, tmp_path
):
    matrix = build()
    full = Flaky(matrix)
    reference = matrank.estimate_rank(full, method=method, seed=0, **options)
    path = tmp_path / "run.ckpt"
    handler = signal.getsignal(signal.SIGINT)
    # checkpoint_every far beyond the run: only the Ctrl-C makes a check write
    stopped = matrank.estimate_rank(
        SignalAt(matrix, at=full.answered // 2),
        method=method,
        seed=0,
        checkpoint=path,
        checkpoint_every=1e9,
        **options,
    )
    assert stopped.status is matrank.Status.INTERRUPTED and path.exists()
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    resumed = Flaky(matrix)
    result = matrank.estimate_rank(
        resumed, method=method, seed=0, checkpoint=path, **options
    )
    assert same(result, reference)
    # resumed from the check after the Ctrl-C, not from the start: with no write due
    # before it, only the Ctrl-C's can have saved anything
    assert resumed.answered < full.answered
    if method == "langevin":  # every step is a check: from the step after the Ctrl-C
        # (redone: the contract check and the start's few products, not journalled)
        assert resumed.answered <= full.answered // 2 + 0.05 * full.answered
    assert not path.exists()


def test_without_a_checkpoint_ctrl_c_stops_at_once_and_the_handler_is_untouched():
    matrix = rotated_spectrum(1500, 300, cond=1e3, seed=0)
    handler = signal.getsignal(signal.SIGINT)
    result = matrank.estimate_rank(
        SignalAt(matrix, at=5), method="lanczos", seed=0, block_size=4
    )
    assert result.status is matrank.Status.INTERRUPTED
    assert result.diagnostics.interrupted_in == "grow"
    assert result.diagnostics.basis_size < 300
    assert signal.getsignal(signal.SIGINT) is handler


def test_an_error_inside_the_run_closes_it_and_keeps_the_checkpoint(tmp_path):
    class Broken(DenseOracle):
        calls = 0

        def hvp(self, V):
            Broken.calls += 1
            if Broken.calls > 6:
                raise RuntimeError("the cluster went away")
            return super().hvp(V)

    path = tmp_path / "run.ckpt"
    matrix = torch.as_tensor(rotated_spectrum(1500, 300, cond=1e3, seed=0))
    with pytest.raises(RuntimeError, match="went away"):
        matrank.estimate_rank(
            Broken(matrix),
            method="lanczos",
            seed=0,
            block_size=4,
            checkpoint=path,
            checkpoint_every=0,
        )
    assert path.exists() and not path.with_name(path.name + ".lock").exists()


def test_ctrl_c_in_a_sweep_stops_the_sweep():
    # an estimate returns INTERRUPTED; estimate_many must not go on to the next item
    matrix = rotated_spectrum(300, 30, seed=0)
    items = [Flaky(matrix), Flaky(matrix, calls=3, error=KeyboardInterrupt), Flaky(matrix)]
    with pytest.raises(KeyboardInterrupt):
        matrank.estimate_many(items, method="lanczos", seed=0, n_jobs=1)
    assert items[0].answered > 0 and items[2].answered == 0
