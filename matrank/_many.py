"""Many independent estimates through joblib: a sweep over checkpoints, dataset sizes, ...

Each item runs :func:`matrank.estimate_rank` in a joblib task with a seed derived from
the sweep's seed and the item's index (never from the worker that runs it), so the
results do not depend on ``n_jobs`` or the backend. ``n_jobs`` goes to
``joblib.Parallel``; the backend is the caller's: loky processes by default, and inside
``with joblib.parallel_config(backend="dask")`` (a ``distributed.Client`` open) or
``backend="ray"`` (after ``ray.util.joblib.register_ray()``) the same call runs there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._result import RankResult
from ._validation import (
    MatrankTypeError,
    MatrankValueError,
    check_int,
    check_jobs,
    message,
)

__all__ = ["EstimateFailure", "estimate_many", "item_seed"]


@dataclasses.dataclass(frozen=True)
class EstimateFailure:
    """The place of an item of :func:`estimate_many` whose estimate raised: its
    ``index``, the ``seed`` it ran with, the exception's type name and message, and the
    exception itself (``error``, for re-raising)."""

    index: int
    seed: int
    kind: str
    message: str
    error: BaseException

    def __bool__(self) -> bool:  # a failure reads as false in ``if result:``
        return False

    def __str__(self) -> str:
        return f"item {self.index} failed: {self.kind}: {self.message}"


def item_seed(seed: int | None, index: int) -> int:
    """The seed of item ``index`` of a sweep seeded ``seed`` (``None`` as ``0``): the
    first word of ``numpy.random.SeedSequence(seed, spawn_key=(index,))``, in 63 bits."""
    sequence = np.random.SeedSequence(0 if seed is None else seed, spawn_key=(index,))
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _one(obj: Any, method: str, seed: int, options: dict[str, Any]) -> Any:
    from ._api import estimate_rank

    try:
        result = estimate_rank(obj, method=method, seed=seed, **options)
    except Exception as error:  # reported in the item's place; the sweep goes on
        return error
    if result.status.name == "INTERRUPTED":  # Ctrl-C stops the sweep, not one item
        raise KeyboardInterrupt
    return result


def _unsendable(items: Sequence[Any], n_jobs: int | None) -> dict[int, BaseException]:
    """The items a process backend cannot pickle, with the error pickling raised (a
    distributed ``TorchLoss`` refuses with matrank's own message); none where the work
    stays in this process (one job, or threads)."""
    import joblib
    from joblib.externals.loky.backend.reduction import dumps  # loky's pickler

    backend, default_jobs = joblib.parallel.get_active_backend()
    jobs = default_jobs if n_jobs is None else n_jobs
    if jobs == 1 or isinstance(
        backend, (joblib.parallel.ThreadingBackend, joblib.parallel.SequentialBackend)
    ):
        return {}
    failed: dict[int, BaseException] = {}
    for index, obj in enumerate(items):
        try:
            dumps(obj)
        except Exception as error:
            failed[index] = error
    return failed


def estimate_many(
    objs: Iterable[Any],
    method: str = "auto",
    seed: int | None = None,
    *,
    n_jobs: int | None = None,
    progress: bool = False,
    **options: Any,
) -> list[RankResult | EstimateFailure]:
    """Estimate the rank of every object, independently, through joblib.

    Parameters
    ----------
    objs : iterable
        Anything :func:`matrank.estimate_rank` takes (matrices, operators, oracles such
        as ``TorchLoss`` of each checkpoint). Each is sent to a worker: for process
        backends it must pickle (a distributed ``TorchLoss`` does not).
    method, options
        As for :func:`matrank.estimate_rank`, the same for every item.
    seed : int or None
        The sweep's seed; item ``i`` runs with :func:`item_seed` ``(seed, i)``.
    n_jobs : int or None
        ``joblib.Parallel``'s: ``None`` is joblib's default (one, unless a
        ``joblib.parallel_config`` says otherwise), ``-1`` every core.
    progress : bool, default=False
        A tqdm bar of finished items on stderr.

    Returns
    -------
    list
        In input order: a :class:`~matrank.RankResult` per item, or an
        :class:`EstimateFailure` where the estimate raised (the others are kept).
        Ctrl-C stops the sweep: ``KeyboardInterrupt``, not an interrupted item
        followed by the next one.
    """
    import joblib
    from tqdm.auto import tqdm

    if isinstance(objs, (str, bytes)) or not isinstance(objs, Iterable):
        raise MatrankTypeError(message("objs", "an iterable of objects", repr(objs)))
    ndim = getattr(objs, "ndim", None)
    if ndim is not None and ndim <= 2:  # one matrix iterates over its rows
        raise MatrankTypeError(
            message(
                "objs",
                "an iterable of objects (a list of matrices; a stack of shape (k, n, n))",
                f"one {ndim}-D {type(objs).__name__}: pass [matrix]",
            )
        )
    items: Sequence[Any] = list(objs)
    check_int("seed", seed, low=0, allow_none=True)
    check_jobs(n_jobs)
    if not isinstance(progress, bool):
        raise MatrankTypeError(message("progress", "True or False", repr(progress)))
    if "progress" in options or "checkpoint" in options:
        raise MatrankValueError(
            message("options", "no per-item progress or checkpoint", sorted(options))
        )
    seeds = [item_seed(seed, index) for index in range(len(items))]
    # an item a process backend cannot send fails in its place, not the whole sweep
    unsendable = _unsendable(items, n_jobs)
    sent = [index for index in range(len(items)) if index not in unsendable]
    tasks = (joblib.delayed(_one)(items[i], method, seeds[i], options) for i in sent)
    outputs: list[Any] = []
    with tqdm(total=len(items), desc="estimates", disable=not progress) as bar:
        try:  # results as they come, for the bar
            runner = joblib.Parallel(
                n_jobs=n_jobs, return_as="generator" if progress else "list"
            )
            for output in runner(tasks):
                outputs.append(output)
                bar.update(1)
        except ValueError as error:  # a backend without generators (Ray's)
            if "return_as" not in str(error) or outputs:
                raise
            tasks = (
                joblib.delayed(_one)(items[i], method, seeds[i], options) for i in sent
            )
            outputs = joblib.Parallel(n_jobs=n_jobs)(tasks)
            bar.update(len(outputs))
    returned = dict(zip(sent, outputs, strict=True))
    outputs = [returned.get(index, unsendable.get(index)) for index in range(len(items))]
    return [
        EstimateFailure(index, s, type(output).__name__, str(output), output)
        if isinstance(output, BaseException)
        else output
        for index, (output, s) in enumerate(zip(outputs, seeds, strict=True))
    ]
