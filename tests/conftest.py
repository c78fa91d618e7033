"""Shared test configuration: deterministic hypothesis profile, a deterministic clock,
Ctrl-C delivered."""

import os
import signal

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from matrank.testing import haar_orthogonal, stepping_clock

# CI profile (scipy's): reproducible, no example database, no deadline on a shared box.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
# For a nightly or local hunt: MATRANK_HYPOTHESIS_PROFILE=random pytest ...
settings.register_profile("random", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("MATRANK_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def isolated_smallest():
    """Rank 41 at n = 300: 40 eigenvalues over 3 decades and one lone 1e-10 under them."""
    n, rank = 300, 40
    spectrum = np.zeros(n)
    spectrum[:rank] = np.geomspace(1.0, 1e-3, rank)
    spectrum[rank] = 1e-10
    basis = haar_orthogonal(n, np.random.default_rng(5))
    return (basis * spectrum) @ basis.T


@pytest.fixture(scope="session", autouse=True)
def _deterministic_time():
    """Every test runs on a clock that advances a fixed step per read, so that no path a
    timing chooses (auto's dense rule, the Lanczos dense switch, checkpoint cadence)
    depends on how fast or busy the machine is (matrank.testing.stepping_clock)."""
    with stepping_clock() as clock:
        yield clock


@pytest.fixture
def clock(_deterministic_time):
    """The suite's clock: ``clock.advance(s)`` lets a test's operator cost ``s`` seconds."""
    return _deterministic_time


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_delivered():
    """SIGINT raises KeyboardInterrupt, as in a terminal, however pytest was started: a
    background job (``nohup``, ``&`` without job control) starts with SIGINT ignored,
    where the Ctrl-C tests' ``raise_signal`` would reach no handler and a test of the
    handler's restoration would compare with the wrong one."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
