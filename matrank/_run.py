"""The run every estimate shares: oracle, meter, generator, progress, checkpoints, result.

An estimator's ``estimate`` opens a :class:`Run` and keeps only its own loop body. The
run coerces the object and refuses missing capabilities once, seeds a local generator,
meters the oracle, shows progress, writes and restores checkpoints, and assembles the
:class:`~matrank.RankResult`.

Checkpoints. A run with ``checkpoint=PATH`` keeps a *journal*: named states that the
estimator records at its checks (:meth:`Run.record`), each with the generator state and
the meter's counts at that moment. The journal is written to ``PATH`` atomically
(temporary file, then rename) at most every ``checkpoint_every`` seconds and whenever the
estimator marks a check as one to keep. A rerun with the same path replays the
estimator's control flow, and each :meth:`Run.restore` hands back the recorded state and
resets the generator and the counts to what they were there: the work between is not
redone, and every later random draw, decision and count is the one the uninterrupted run
made (bit-identical on the CPU). A checkpoint written for another oracle, method, option
set or seed is refused, naming what differs. Files are read with
``torch.load(weights_only=True)``: loading runs no code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import threadpoolctl
import torch
from tqdm.auto import tqdm

from . import _clock
from ._oracle import Capability, CostMeter, Oracle, as_oracle, collective, require
from ._result import CountingCurve, RankResult, Status
from ._scaling import Scaled, scale_factor, unscale
from ._validation import (
    MatrankTypeError,
    MatrankValueError,
    check_int,
    check_real,
    message,
)

__all__ = ["Run", "doubling_checks", "sized_threads"]

_FORMAT = 1
# The signature's fixed probe: a seed no estimator draws from.
_SIGNATURE_SEED = 2**31 - 1


# Up to this dimension an estimate runs on one thread: its products are too small for
# a thread pool to pay, and OpenMP and BLAS workers that spin between tiny operations
# cost 30-70x on a loaded machine (benchmarks/oversubscription.py).
SINGLE_THREAD_MAX_DIM = 512


def sized_threads(estimate: Callable[..., RankResult]) -> Callable[..., RankResult]:
    """Run an estimator's ``estimate`` on one thread when the problem is small.

    The object is coerced first (``as_oracle`` returns an oracle unchanged), and the
    thread counts of torch and of the BLAS and OpenMP pools are restored afterwards.
    """

    @functools.wraps(estimate)
    def wrapper(self: Any, obj: Any, **kwargs: Any) -> RankResult:
        oracle = as_oracle(obj)
        if oracle.dim > SINGLE_THREAD_MAX_DIM or torch.get_num_threads() == 1:
            return estimate(self, oracle, **kwargs)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpoolctl.threadpool_limits(1):
                return estimate(self, oracle, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def doubling_checks(first: int, total: int) -> Iterator[int]:
    """``first, 2·first, 4·first, …`` below ``total``, then ``total``: when to look."""
    check = first
    while check < total:
        yield check
        check *= 2
    yield total


@dataclasses.dataclass
class Run:
    """One estimate in progress (see the module notes)."""

    method: str
    oracle: Oracle
    meter: CostMeter
    generator: torch.Generator
    bar: Any
    start: float
    seconds_before: float = 0.0
    store: _Store | None = None
    factor: float = 1.0

    @classmethod
    def begin(
        cls,
        estimator: Any,
        obj: Any,
        needs: Capability,
        *,
        seed: int | None,
        progress: bool = False,
        total: float | None = None,
        unit: str = "matvec",
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: float = 60.0,
        keep_checkpoint: bool = False,
    ) -> Run:
        """Coerce ``obj``, refuse what it cannot compute, seed, meter, open the store."""
        start = _clock.now()
        method = estimator.method
        oracle = as_oracle(obj)
        for capability in (Capability.HVP, Capability.GRAD, Capability.LOSS):
            if capability in needs:
                require(oracle, capability, method)
        check_int("seed", seed, low=0, high=2**63 - 1, allow_none=True)
        if not isinstance(progress, bool):
            raise MatrankTypeError(message("progress", "True or False", repr(progress)))
        check_real("checkpoint_every", checkpoint_every, low=0.0)
        if not isinstance(keep_checkpoint, bool):
            raise MatrankValueError(
                message("keep_checkpoint", "True or False", repr(keep_checkpoint))
            )
        seed = None if seed is None else int(seed)
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        products = Capability.HVP | Capability.GRAD
        factor = scale_factor(oracle) if needs & products else 1.0
        meter = CostMeter(oracle if factor == 1.0 else Scaled(oracle, factor))
        group = collective(oracle)
        bar = tqdm(
            total=total,
            desc=method,
            unit=unit,
            # a data-parallel oracle's ranks run the same estimate: rank 0 shows it
            disable=not progress or (group is not None and group.rank != 0),
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        run = cls(method, oracle, meter, generator, bar, start, factor=factor)
        if checkpoint is not None:
            if group is not None:
                raise MatrankValueError(
                    message(
                        "checkpoint",
                        "None with a distributed oracle (the ranks would write when "
                        "their own clocks say, and resume from different steps)",
                        repr(checkpoint),
                    )
                )
            if not isinstance(checkpoint, (str, os.PathLike)):
                raise MatrankTypeError(
                    message("checkpoint", "a path or None", type(checkpoint).__name__)
                )
            fingerprint = _fingerprint(estimator, oracle, seed)
            run.store = _Store(
                pathlib.Path(checkpoint), fingerprint, checkpoint_every, keep_checkpoint
            )
        return run

    # -- checkpoints ---------------------------------------------------------------------

    def restore(self, key: str) -> Any:
        """The state recorded under ``key`` by an earlier run, or ``None``.

        A restored state resets the generator and the meter to that moment.
        """
        if self.store is None or key not in self.store.journal:
            return None
        entry = self.store.journal[key]
        self.generator.set_state(entry["generator"])
        self.meter.matvecs, self.meter.grads, self.meter.loss_evals = entry["counts"]
        # the timed decisions (the Lanczos dense switch) read these: as they were then
        self.meter.hvp_seconds, self.meter.timed_matvecs = entry["timing"]
        self.seconds_before = entry["seconds"] - (_clock.now() - self.start)
        self.bar.update(entry["progress"] - self.bar.n)
        return _unpack(entry["state"])

    def due(self) -> bool:
        """Whether a checkpoint should be written now (one is open and
        ``checkpoint_every`` seconds have passed since the last write)."""
        return self.store is not None and self.store.due()

    def record(self, key: str, state: Any) -> None:
        """Journal ``state`` under ``key`` and write the checkpoint (if one is open).

        ``state`` must describe everything the estimator needs to go on from here; its
        tensors are copied. Call it at a check when :meth:`due` says so.
        """
        store = self.store
        if store is None:
            return
        store.journal[key] = {
            "state": _pack(state),
            "generator": self.generator.get_state(),
            "counts": [self.meter.matvecs, self.meter.grads, self.meter.loss_evals],
            "timing": [self.meter.hvp_seconds, self.meter.timed_matvecs],
            "seconds": self.seconds(),
            "progress": float(self.bar.n),
        }
        store.write()

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, or its recorded value: a phase whose result is its state."""
        value = self.restore(key)
        if value is None:
            value = compute()
            if self.due():
                self.record(key, value)
        return value

    # -- the result ----------------------------------------------------------------------

    def seconds(self) -> float:
        return self.seconds_before + _clock.now() - self.start

    def result(
        self,
        rank: float,
        *,
        stderr: float | None,
        threshold: float | None,
        diagnostics: dict[str, Any],
        counts: CountingCurve | None = None,
        status: Status = Status.CONVERGED,
    ) -> RankResult:
        """The :class:`RankResult`; a finished run removes its checkpoint (see
        ``keep_checkpoint``), an interrupted one leaves it for a rerun to resume."""
        self.close()
        if self.store is not None and status is not Status.INTERRUPTED:
            self.store.finish()
        if self.factor != 1.0:
            threshold, diagnostics, counts = unscale(
                self.factor, threshold, diagnostics, counts
            )
        return RankResult(
            rank=float(rank),
            stderr=None if stderr is None else float(stderr),
            threshold=None if threshold is None else float(threshold),
            method=self.method,
            cost=self.meter.cost(self.seconds()),
            diagnostics=diagnostics,
            counts=counts,
            status=status,
        )

    def close(self) -> None:
        self.bar.close()


@dataclasses.dataclass
class _Store:
    path: pathlib.Path
    fingerprint: dict[str, Any]
    every: float
    keep: bool
    journal: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_write: float = dataclasses.field(default_factory=_clock.now)

    def __post_init__(self) -> None:
        if not self.path.exists():
            return
        try:
            with warnings.catch_warnings():  # torch's notes on the pickle protocol
                warnings.simplefilter("ignore")
                saved = torch.load(self.path, weights_only=True, map_location="cpu")
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise MatrankValueError(
                message(
                    "checkpoint",
                    "a matrank checkpoint (or a path that does not exist yet)",
                    f"{str(self.path)!r}, which cannot be read: {type(error).__name__}"
                    + (f": {first}" if first else ""),
                )
            ) from None
        if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
            raise MatrankValueError(
                message("checkpoint", "a matrank checkpoint", f"{str(self.path)!r}")
            )
        differences = _differences(saved["fingerprint"], self.fingerprint)
        if differences:
            raise MatrankValueError(
                message(
                    "checkpoint",
                    "a checkpoint of this same run (oracle, method, options and seed); "
                    "delete it or pass another path to start afresh",
                    f"{str(self.path)!r}, written for a run whose "
                    + "; ".join(differences),
                )
            )
        self.journal = saved["journal"]

    def due(self) -> bool:
        return _clock.now() - self.last_write >= self.every

    def write(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        payload = {"format": _FORMAT, "fingerprint": self.fingerprint}
        payload["journal"] = self.journal
        torch.save(payload, temporary)
        os.replace(temporary, self.path)
        self.last_write = _clock.now()

    def finish(self) -> None:
        if not self.keep:
            self.path.unlink(missing_ok=True)
        elif self.journal:
            self.write()


def _fingerprint(estimator: Any, oracle: Oracle, seed: int | None) -> dict[str, Any]:
    """What a checkpoint must agree on: method, options, seed, n, dtype, the thread
    counts, and a signature of the operator itself (see :func:`_signature`)."""
    options = {
        field.name: _describe(getattr(estimator, field.name))
        for field in dataclasses.fields(estimator)
    }
    return {
        "method": estimator.method,
        "options": options,
        "seed": seed,
        "n": oracle.dim,
        "dtype": str(oracle.dtype),
        "threads": _threads(),
        "signature": _signature(oracle),
    }


def _threads() -> str:
    """torch's and the BLAS libraries' thread counts: a sum split over other threads
    rounds otherwise, so a resume on other counts could not be bit-identical."""
    blas = sorted(
        {
            pool["num_threads"]
            for pool in threadpoolctl.threadpool_info()
            if pool["user_api"] == "blas"
        }
    )
    return f"torch {torch.get_num_threads()}, BLAS {'/'.join(map(str, blas)) or '-'}"


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        array = np.ascontiguousarray(
            value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        )
        digest = hashlib.sha256(array.tobytes()).hexdigest()[:16]
        return f"array{array.shape} {array.dtype} sha256:{digest}"
    return repr(value)


def _signature(oracle: Oracle) -> list[float]:
    """One fixed probe's product, read through four fixed directions and its norm.

    The product (an HVP, else a gradient or loss values near ``theta0``) is computed
    outside the meter, so a checkpointed run costs what an unchecked one does; it is
    compared to a relative ``1e-6``, so rounding on another thread count still matches
    while another operator does not.
    """
    generator = torch.Generator().manual_seed(_SIGNATURE_SEED)
    n = oracle.dim
    probe = torch.randn(n, 5, generator=generator, dtype=torch.float64)
    probe = probe.to(dtype=oracle.dtype, device=oracle.device)
    with torch.no_grad():
        if Capability.HVP in oracle.capabilities:
            product = oracle.hvp(probe[:, :1])[:, 0]
        else:
            scale = 1e-3 * max(1.0, float(oracle.theta0.abs().max()))
            points = oracle.theta0 + scale * probe.T
            if Capability.GRAD in oracle.capabilities:
                product = oracle.grad(points[:1])[0]
            else:
                return [float(v) for v in oracle.loss(points).double().cpu()]
    product = product.double().cpu()
    directions = probe[:, 1:].double().cpu()
    return [*(directions.T @ product).tolist(), float(product.norm())]


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    found = []
    for key in ("method", "seed", "n", "dtype"):
        if saved.get(key) != current[key]:
            found.append(f"{key} was {saved.get(key)!r} (here {current[key]!r})")
    if saved.get("threads") != current["threads"]:
        found.append(
            f"thread counts were {saved.get('threads')} (here {current['threads']}; set "
            "them alike with OMP_NUM_THREADS or torch.set_num_threads, since sums split "
            "over other threads round otherwise)"
        )
    old_options, new_options = saved.get("options", {}), current["options"]
    for name in sorted(set(old_options) | set(new_options)):
        if old_options.get(name) != new_options.get(name):
            found.append(
                f"option {name} was {old_options.get(name)} (here {new_options.get(name)})"
            )
    if not found:
        old, new = np.asarray(saved["signature"]), np.asarray(current["signature"])
        scale = max(float(np.abs(new).max(initial=0.0)), np.finfo(np.float64).tiny)
        if old.shape != new.shape or not np.all(np.abs(old - new) <= 1e-6 * scale):
            found.append("operator gave another product for the same fixed probe")
    return found


# torch.load(weights_only=True) reads tensors and plain containers only: arrays travel as
# tensors with a tag, tuples as tagged lists.
def _pack(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _pack(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(item) for item in value]}
    if isinstance(value, list):
        return [_pack(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")  # a bug of ours


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__tuple__" in value:
            return tuple(_unpack(item) for item in value["__tuple__"])
        return {key: _unpack(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unpack(item) for item in value]
    return value
