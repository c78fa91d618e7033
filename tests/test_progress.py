"""Progress bars and Ctrl-C: the best estimate so far, flagged as interrupted."""

import re

import numpy as np
import pytest
import torch

import matrank
from matrank.adapters import DenseOracle
from matrank.cli import main
from matrank.estimators.langevin import expected_loss_curve
from matrank.testing import rotated_spectrum


class InterruptAfter:
    """A quadratic oracle whose ``name`` raises KeyboardInterrupt on call ``calls + 1``."""

    def __init__(self, matrix, name, calls):
        self.inner = DenseOracle(torch.as_tensor(matrix))
        self.dim, self.dtype, self.device = (
            self.inner.dim,
            self.inner.dtype,
            self.inner.device,
        )
        self.theta0, self.capabilities = self.inner.theta0, self.inner.capabilities
        self.name, self.calls = name, calls

    def _count(self, name):
        if name == self.name:
            self.calls -= 1
            if self.calls < 0:
                raise KeyboardInterrupt

    def hvp(self, V):
        self._count("hvp")
        return self.inner.hvp(V)

    def grad(self, theta):
        self._count("grad")
        return self.inner.grad(theta)

    def loss(self, theta):
        self._count("loss")
        return self.inner.loss(theta)


def test_ctrl_c_in_lanczos_returns_the_last_assessed_count():
    matrix = rotated_spectrum(600, 120, cond=1e3, seed=0)
    result = matrank.estimate_rank(
        InterruptAfter(matrix, "hvp", 3), method="lanczos", seed=0, block_size=8
    )
    assert result.status is matrank.Status.INTERRUPTED and not result.converged
    assert 0 < result.rank < 120  # three blocks of 8 cannot have found all 120
    # the count is the last assessment's: Ritz values above the reported threshold
    ritz = np.abs(result.diagnostics.ritz_values)
    assert result.rank == (ritz > result.threshold).sum()
    assert "interrupted by the user" in str(result.status.value)


def test_ctrl_c_before_anything_was_measured_returns_no_number():
    # it used to propagate the KeyboardInterrupt as a traceback (the one call before
    # it is the oracle's symmetry check, made before the run starts)
    matrix = rotated_spectrum(100, 10, seed=1)
    result = matrank.estimate_rank(
        InterruptAfter(matrix, "hvp", 1), method="lanczos", seed=0
    )
    assert result.status is matrank.Status.INTERRUPTED and np.isnan(result.rank)
    assert result.diagnostics.interrupted_in == "grow"
    assert result.cost["matvecs"] == 0


def test_ctrl_c_in_langevin_returns_the_run_so_far():
    matrix = rotated_spectrum(30, 6, cond=2.0, seed=2)
    estimator = matrank.LangevinRank(
        variant="paper", step_size=0.1, sigma2=1.0, n_steps=2000, n_average=1000
    )
    result = estimator.estimate(InterruptAfter(matrix, "grad", 600), seed=0)
    assert result.status is matrank.Status.INTERRUPTED
    assert result.diagnostics.steps_done == 600
    assert result.cost["gradients"] == 600
    # steps 0…599 ran; the estimate averages their second half, 300…599
    curve = expected_loss_curve(
        np.linalg.eigvalsh(matrix), step_size=0.1, sigma2=1.0, n_steps=600
    )
    assert abs(result.rank - 4 * curve[300:].mean()) <= 4 * result.stderr


def test_progress_bar_shows_the_running_count(capsys):
    matrix = rotated_spectrum(300, 30, seed=3)
    result = matrank.estimate_rank(matrix, method="lanczos", seed=0, progress=True)
    err = capsys.readouterr().err
    assert "lanczos" in err and "rank=" in err and result.rank == 30
    matrank.estimate_rank(matrix, method="lanczos", seed=0)
    assert capsys.readouterr().err == ""
    with pytest.raises(matrank.MatrankTypeError, match="`progress` must be True or False"):
        matrank.estimate_rank(matrix, method="lanczos", progress="yes")


def test_a_bar_sized_to_the_budget_ends_done_with_no_eta(capsys):
    # the budget is an upper bound: a run that converges at 9 % of it used to stop the
    # bar there, with an ETA for spending the rest
    matrix = rotated_spectrum(300, 30, seed=3)
    matrank.estimate_rank(matrix, method="lanczos", seed=0, progress=True)
    frames = capsys.readouterr().err.split("\r")
    last = [frame for frame in frames if frame.strip()][-1]
    assert "lanczos: done|" in last and "% of the budget)" in last
    assert re.search(r"\| \d+ matvec \(\d+% of the budget\)", last)
    assert not any("<" in frame for frame in frames)  # no time-to-budget estimate


@pytest.mark.parametrize(
    ("method", "shown"), [("polynomial", "matvec"), ("evolution", "rank=")]
)
def test_polynomial_and_evolution_bars(method, shown, capsys):
    matrix = rotated_spectrum(40, 5, cond=2.0, seed=4)
    result = matrank.estimate_rank(matrix, method=method, seed=0, progress=True)
    err = capsys.readouterr().err
    assert method in err and shown in err and round(result.rank) == 5
    matrank.estimate_rank(matrix, method=method, seed=0)
    assert capsys.readouterr().err == ""


def test_cli_shows_progress_unless_asked_not_to(tmp_path, capsys):
    path = tmp_path / "m.npy"
    np.save(path, rotated_spectrum(200, 20, seed=4))
    assert main(["estimate", str(path), "--method", "lanczos", "--seed", "0"]) == 0
    assert "lanczos" in capsys.readouterr().err
    assert main(["estimate", str(path), "--method", "lanczos", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_langevin_progress_shows_estimate_and_stderr(capsys):
    matrix = rotated_spectrum(30, 6, cond=2.0, seed=5)
    matrank.estimate_rank(
        matrix,
        method="langevin",
        seed=0,
        progress=True,
        step_size=0.1,
        sigma2=1.0,
        n_steps=400,
        n_average=300,
        n_chains=4,
    )
    err = capsys.readouterr().err
    assert "langevin" in err and "rank=" in err and "stderr=" in err
