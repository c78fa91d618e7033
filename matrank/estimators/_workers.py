"""Independent work of one estimate on joblib workers (see :mod:`.langevin.parallel`
and :mod:`.polynomial.parallel`).

With ``n_jobs`` set, an estimator splits its independent work into a fixed partition
that does not depend on ``n_jobs`` -- ``CHAIN_GROUPS`` groups of chains, each with its
own generator seeded from the run's generator and the group's index (:mod:`.langevin.
noise`; one process steps the same groups on the same streams); probe blocks of at
most ``PROBE_BLOCK`` columns, drawn in the calling process in the serial order -- and
hands the parts to ``joblib.Parallel``. The backend is the caller's (loky by default; a
``joblib.parallel_config(backend="dask")`` or ``"ray"`` context sends the same parts
there). Each part runs the same arithmetic on the same inputs wherever it runs, so the
estimate is the same for every ``n_jobs`` and backend.
"""

from __future__ import annotations

from typing import Any

from .._oracle import CostMeter, collective
from .._validation import MatrankValueError, message

__all__ = ["payload"]


def payload(meter: CostMeter) -> Any:
    """The oracle to send: the metered one (scaled, checked) without the meter."""
    if collective(meter) is not None:
        raise MatrankValueError(
            message(
                "n_jobs",
                "None with a distributed oracle (its ranks already share the work; a "
                "process group does not move to a joblib worker)",
                "a number of jobs",
            )
        )
    return meter.oracle
