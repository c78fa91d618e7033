"""Checkpoint files: their format, the checks a file passes before a run resumes from
it, the fingerprint of a run, and the lock a live run holds.

A checkpoint is evidence, not a trusted input. The file is a header line, the SHA-256 of
its body, and the body (``torch.save`` of the fingerprint and the journal, read back with
``weights_only=True``: loading runs no code). Before a run resumes, the digest, the
fingerprint (method, options, seed, ``n``, dtype, thread counts, the operator's digest
or a sketch of its products) and every journal entry are checked; anything else is one
``MatrankValueError`` line naming the file. See the README's table of what this does
and does not protect against.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import pathlib
import tempfile
import warnings
from typing import Any

import numpy as np
import threadpoolctl
import torch

from . import _clock
from ._oracle import Capability, Oracle, content_digest, sha256_of
from ._validation import MatrankValueError, message

__all__ = [
    "Store",
    "check_path",
    "fingerprint",
    "pack",
    "refusal",
    "run_identity",
    "settings",
    "unpack",
]

try:
    import fcntl
except ImportError:  # not POSIX: checkpoints go unlocked
    fcntl = None  # type: ignore[assignment]


# The signature's fixed probe: a seed no estimator draws from.
_SIGNATURE_SEED = 2**31 - 1

# A checkpoint file: a header line, the SHA-256 of the body in hex, a newline, and the
# body (torch.save of the fingerprint and the journal). torch's zip reader checks no
# CRC: the digest catches a damaged byte anywhere before anything is unpickled.
_MAGIC = b"matrank checkpoint 2\n"
_ENTRY_KEYS = frozenset({"state", "generator", "counts", "timing", "seconds", "progress"})


def refusal(path: pathlib.Path, what: str) -> MatrankValueError:
    return MatrankValueError(
        message(
            "checkpoint",
            "a checkpoint of this same run (oracle, method, options and seed); delete it "
            "or pass another path to start afresh",
            f"{str(path)!r}, {what}",
        )
    )


@dataclasses.dataclass
class Store:
    path: pathlib.Path
    fingerprint: dict[str, Any]
    every: float
    keep: bool
    journal: dict[str, Any] = dataclasses.field(default_factory=dict)
    last_write: float = dataclasses.field(default_factory=_clock.now)
    lock: _Lock | None = None

    def __post_init__(self) -> None:
        self.lock = _Lock.take(self.path)
        try:
            if self.path.exists():
                self.journal = _read(self.path, self.fingerprint)
        except BaseException:
            self.release()
            raise

    def due(self) -> bool:
        return _clock.now() - self.last_write >= self.every

    def write(self) -> None:
        buffer = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint, "journal": self.journal}, buffer)
        body = buffer.getvalue()
        digest = hashlib.sha256(body).hexdigest().encode()
        # a temporary of its own: two writers never rename each other's file
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(_MAGIC + digest + b"\n" + body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            pathlib.Path(temporary).unlink(missing_ok=True)
            raise
        self.last_write = _clock.now()

    def finish(self) -> None:
        if not self.keep:
            self.path.unlink(missing_ok=True)
        elif self.journal:
            self.write()
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def check_path(path: pathlib.Path) -> None:
    """Refuse a path no checkpoint can be written to, before any work (the lock file,
    taken next, shows the folder is writable)."""
    if path.is_dir():
        raise refusal(path, "which is a folder")
    if not path.parent.is_dir():
        raise refusal(path, f"whose folder {str(path.parent)!r} does not exist")


@dataclasses.dataclass
class _Lock:
    """``PATH.lock``, held with ``flock`` by the live run that writes ``PATH`` and
    holding its process id: a second run is refused by name, and a run that died (a
    kill, a crash) holds nothing, since the kernel drops its lock."""

    path: pathlib.Path
    file: Any

    @classmethod
    def take(cls, checkpoint: pathlib.Path) -> _Lock | None:
        path = checkpoint.with_name(checkpoint.name + ".lock")
        for _ in range(8):  # the holder may remove the file between our open and lock
            try:
                file = open(path, "a+")
            except OSError as error:
                raise refusal(
                    checkpoint, f"whose folder cannot be written ({error.strerror})"
                ) from None
            if fcntl is None:  # no flock on this platform: no lock, as before
                return cls(path, file)
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                file.seek(0)
                holder = file.read().strip()
                file.close()
                if holder == str(os.getpid()):
                    # an earlier run of this process that raised: its checkpoint is
                    # this run's to resume
                    return None
                raise refusal(
                    checkpoint,
                    f"which another live run (process {holder or 'unknown'}) is writing; "
                    "wait for it to finish",
                ) from None
            try:
                current = os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                file.seek(0)
                file.truncate()
                file.write(str(os.getpid()))
                file.flush()
                return cls(path, file)
            file.close()
        raise refusal(checkpoint, "whose lock file keeps being replaced")

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        self.file.close()  # drops the flock


def _read(path: pathlib.Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The journal of the checkpoint at ``path``, every part of it checked first."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise refusal(path, f"which cannot be read ({error.strerror})") from None
    head = len(_MAGIC)
    if not data.startswith(_MAGIC):
        raise refusal(path, "which is not a matrank checkpoint")
    digest, body = data[head : head + 64], data[head + 65 :]
    if data[head + 64 : head + 65] != b"\n" or (
        hashlib.sha256(body).hexdigest().encode() != digest
    ):
        raise refusal(path, "which is damaged: its contents do not match their SHA-256")
    try:
        with warnings.catch_warnings():  # torch's notes on the pickle protocol
            warnings.simplefilter("ignore")
            saved = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as error:
        raise refusal(path, f"which cannot be read ({type(error).__name__})") from None
    if not (
        isinstance(saved, dict)
        and isinstance(saved.get("fingerprint"), dict)
        and isinstance(saved.get("journal"), dict)
    ):
        raise refusal(path, "which holds no fingerprint and journal")
    differences = _differences(saved["fingerprint"], fingerprint)
    if differences:
        raise refusal(path, "written for a run whose " + "; ".join(differences))
    problem = _journal_problem(saved["journal"])
    if problem:
        raise refusal(path, problem)
    return saved["journal"]


def _journal_problem(journal: dict[Any, Any]) -> str | None:
    """What is wrong with a journal's entries, or ``None``: each must have a valid
    generator state, finite non-negative counts, and a state with finite numbers."""
    size = torch.Generator().get_state().numel()
    for key, entry in journal.items():
        where = f"whose entry {key!r}"
        if not isinstance(key, str) or not isinstance(entry, dict):
            return f"{where} is not a journal entry"
        if set(entry) != _ENTRY_KEYS:
            return f"{where} has the fields {sorted(map(str, entry))}"
        state = entry["generator"]
        if not (
            isinstance(state, torch.Tensor)
            and state.dtype == torch.uint8
            and state.shape == (size,)
        ):
            return f"{where} holds no generator state"
        try:
            torch.Generator().set_state(state)
        except RuntimeError:
            return f"{where} holds an invalid generator state"
        numbers = [*_listed(entry["counts"], 3), *_listed(entry["timing"], 2)]
        numbers += [entry["seconds"], entry["progress"]]
        if not all(_count_like(value) for value in numbers):
            return f"{where} has counts that are not finite numbers >= 0"
        bad = _non_finite(entry["state"])
        if bad:
            return f"{where} holds {bad}"
    return None


def _listed(value: Any, length: int) -> list[Any]:
    return value if isinstance(value, list) and len(value) == length else [None]


def _count_like(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _non_finite(value: Any) -> str | None:
    """``"non-finite numbers"`` or ``"a <type>"`` for what a state may not hold."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return "non-finite numbers"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "non-finite numbers"
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list):
        items = value
    else:
        return f"a {type(value).__name__}"
    for item in items:
        bad = _non_finite(item)
        if bad:
            return bad
    return None


def run_identity(
    method: str, options: dict[str, str], seed: int | None, oracle: Oracle
) -> dict[str, Any]:
    """What every rank of a data-parallel estimate must share (compared by
    ``Collective.same`` before any product): a rank that differs is refused by name."""
    return {
        "method": method,
        "options": options,
        "seed": seed,
        "n": oracle.dim,
        "dtype": str(oracle.dtype),
        "theta0": sha256_of(oracle.theta0)[:16],
    }


def settings(estimator: Any) -> dict[str, str]:
    return {
        field.name: _describe(getattr(estimator, field.name))
        for field in dataclasses.fields(estimator)
    }


def fingerprint(estimator: Any, oracle: Oracle, seed: int | None) -> dict[str, Any]:
    """What a checkpoint must agree on: method, options, seed, n, dtype, the thread
    counts, and a signature of the operator itself (see :func:`_signature`)."""
    return {
        "method": estimator.method,
        "options": settings(estimator),
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
        return f"array{tuple(value.shape)} {value.dtype} sha256:{sha256_of(value)[:16]}"
    return repr(value)


_PROBES = 4
_SKETCH_ROWS = 16


def _signature(oracle: Oracle) -> dict[str, Any]:
    """What identifies the operator: the digest of an explicit matrix's entries
    (:func:`~matrank._oracle.content_digest`), and for every oracle a sketch of four
    fixed probes' products (see :func:`_operator_differs`).

    The products (HVPs, else gradients or loss values near ``theta0``) are computed
    outside the meter, so a checkpointed run costs what an unchecked one does.
    """
    generator = torch.Generator().manual_seed(_SIGNATURE_SEED)
    n = oracle.dim
    probes = torch.randn(n, _PROBES, generator=generator, dtype=torch.float64)
    # a Gaussian sketch of 16 rows keeps the norm of a difference within a factor ~2
    sketch = torch.randn(_SKETCH_ROWS, n, generator=generator, dtype=torch.float64)
    sketch /= math.sqrt(_SKETCH_ROWS)
    probes = probes.to(dtype=oracle.dtype, device=oracle.device)
    with torch.no_grad():
        if Capability.HVP in oracle.capabilities:
            products = oracle.hvp(probes).T
        else:
            scale = 1e-3 * max(1.0, float(oracle.theta0.abs().max()))
            points = oracle.theta0 + scale * probes.T
            if Capability.GRAD in oracle.capabilities:
                products = oracle.grad(points)
            else:
                products = oracle.loss(points)[:, None]
                sketch = torch.ones(1, 1, dtype=torch.float64)
    products = products.double().cpu()
    return {
        "digest": content_digest(oracle),
        "sketch": (products @ sketch.T).tolist(),
        "norms": products.norm(dim=1).tolist(),
    }


def _operator_differs(saved: Any, current: dict[str, Any], n: int, dtype: str) -> bool:
    """Whether the saved signature is another operator's.

    Two explicit matrices compare by digest: one entry changed is found. Otherwise the
    probes' products are compared through their sketch: a difference above
    ``64·eps·sqrt(n)`` times a product's norm (rounding on another machine with the
    same thread counts stays well under it) is another operator. A change that moves
    no probe's product by that much -- one orthogonal to the four probes, or below the
    dtype's resolution -- is not seen.
    """
    if not isinstance(saved, dict):
        return True
    if saved.get("digest") is not None and current["digest"] is not None:
        return bool(saved["digest"] != current["digest"])
    try:
        old = np.asarray(saved.get("sketch"), dtype=np.float64)
    except (TypeError, ValueError):
        return True
    new = np.asarray(current["sketch"])
    if old.shape != new.shape:
        return True
    eps = float(torch.finfo(getattr(torch, dtype.removeprefix("torch."))).eps)
    allowed = 64 * eps * math.sqrt(n) * np.asarray(current["norms"])
    return bool(np.any(np.linalg.norm(old - new, axis=1) > allowed))


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
    old_options = saved.get("options")
    old_options = old_options if isinstance(old_options, dict) else {}
    new_options = current["options"]
    for name in sorted(set(old_options) | set(new_options), key=str):
        if old_options.get(name) != new_options.get(name):
            found.append(
                f"option {name} was {old_options.get(name)} (here {new_options.get(name)})"
            )
    signature = saved.get("signature")
    if not found and _operator_differs(
        signature, current["signature"], current["n"], current["dtype"]
    ):
        if (
            isinstance(signature, dict)
            and signature.get("digest") is not None
            and current["signature"]["digest"] is not None
        ):
            found.append("matrix had other entries (another SHA-256 of its bytes)")
        else:
            found.append("operator gave other products for the same fixed probes")
    return found


# torch.load(weights_only=True) reads tensors and plain containers only: arrays travel as
# tensors with a tag, tuples as tagged lists.
def pack(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: pack(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [pack(item) for item in value]}
    if isinstance(value, list):
        return [pack(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")  # a bug of ours


def unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__tuple__" in value:
            return tuple(unpack(item) for item in value["__tuple__"])
        return {key: unpack(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unpack(item) for item in value]
    return value
