"""A checkpoint is evidence, not a trusted input: damaged, malformed, foreign, unwritable
and shared checkpoints are refused in one line, before any work where they can be."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

import matrank
from matrank import _checkpoint
from matrank.testing import rotated_spectrum

M = rotated_spectrum(300, 40, cond=10.0, seed=0)

# one quick run per resumable method, each keeping a checkpoint with several entries
RUNS = {
    "lanczos": (M, {"block_size": 4}),
    "polynomial": (rotated_spectrum(600, 40, cond=10.0, seed=0), {"max_matvecs": 900}),
    "langevin": (M, {"max_gradients": 2000}),
    "evolution": (rotated_spectrum(30, 8, cond=4.0, seed=0), {}),
}


def kept(tmp_path, method, name="run.ckpt"):
    """The result of a finished run of ``method`` and the checkpoint it kept."""
    matrix, options = RUNS[method]
    path = tmp_path / name
    result = matrank.estimate_rank(
        matrix,
        method=method,
        seed=0,
        checkpoint=path,
        checkpoint_every=0,
        keep_checkpoint=True,
        **options,
    )
    return result, path


def resume(method, path):
    matrix, options = RUNS[method]
    return matrank.estimate_rank(
        matrix, method=method, seed=0, checkpoint=path, keep_checkpoint=True, **options
    )


def rewrite(path, edit):
    """Apply ``edit`` to the saved payload and write it back in the checkpoint format,
    with a valid digest: what a deliberate edit (not damage) looks like."""
    data = path.read_bytes()
    head = len(_checkpoint._MAGIC)
    payload = torch.load(io.BytesIO(data[head + 65 :]), weights_only=True)
    payload = edit(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    path.write_bytes(
        _checkpoint._MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    )


def one_line_refusal(call, match):
    with pytest.raises(matrank.MatrankValueError, match=match) as error:
        call()
    text = str(error.value)
    assert "\n" not in text and text.startswith("`checkpoint` must be")
    return text


def flipped_offsets(size, count):
    return sorted({int(offset) for offset in np.linspace(0, size - 1, count)})


def scan(tmp_path, method, count):
    """Flip one byte at ``count`` evenly spaced offsets of a kept checkpoint: each
    resume must refuse in one line or give the uninterrupted result."""
    reference, path = kept(tmp_path, method)
    original = path.read_bytes()
    outcomes = {"refused": 0, "same": 0}
    for offset in flipped_offsets(len(original), count):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            result = resume(method, path)
        except matrank.MatrankValueError as error:
            assert "\n" not in str(error) and "`checkpoint` must be" in str(error)
            outcomes["refused"] += 1
            continue
        assert result.rank == reference.rank and result.status == reference.status
        assert result.threshold == reference.threshold
        outcomes["same"] += 1
    return outcomes


def test_a_damaged_byte_anywhere_is_refused(tmp_path):
    outcomes = scan(tmp_path, "lanczos", 16)
    assert outcomes == {"refused": 16, "same": 0}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(RUNS))
def test_byte_flip_scan_of_every_resumable_method(tmp_path, method):
    outcomes = scan(tmp_path, method, 64)
    print(method, outcomes)  # the closing note's table: -s shows it
    assert outcomes["refused"] + outcomes["same"] >= 60


def test_the_digest_covers_the_header_too(tmp_path):
    _, path = kept(tmp_path, "lanczos")
    data = path.read_bytes()
    head = len(_checkpoint._MAGIC)
    for damaged in (
        data[:-1],  # truncated
        data[: head + 64] + b" " + data[head + 65 :],  # the separator
        b"X" + data[1:],  # the header line
    ):
        path.write_bytes(damaged)
        one_line_refusal(lambda: resume("lanczos", path), "damaged|not a matrank")


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda payload: {"format": 1}, "holds no fingerprint and journal"),
        (lambda payload: {**payload, "fingerprint": "x"}, "holds no fingerprint"),
        (lambda payload: [payload], "holds no fingerprint"),
        (
            lambda payload: {
                **payload,
                "fingerprint": {**payload["fingerprint"], "seed": 5},
            },
            "seed was 5",
        ),
        (
            lambda payload: {
                **payload,
                "fingerprint": {**payload["fingerprint"], "signature": "x"},
            },
            "other products",
        ),
        (lambda payload: {**payload, "journal": {"krylov": 1}}, "is not a journal entry"),
        (lambda payload: {**payload, "journal": {"krylov": {}}}, "has the fields"),
    ],
)
def test_a_malformed_checkpoint_is_refused_in_one_line(tmp_path, edit, named):
    _, path = kept(tmp_path, "lanczos")
    rewrite(path, edit)
    one_line_refusal(lambda: resume("lanczos", path), named)


def _entries(edit_entry):
    def edit(payload):
        journal = {
            key: edit_entry(dict(entry)) for key, entry in payload["journal"].items()
        }
        return {**payload, "journal": journal}

    return edit


@pytest.mark.parametrize(
    ("edit_entry", "named"),
    [
        (lambda e: {**e, "generator": e["generator"][:10]}, "no generator state"),
        (
            lambda e: {**e, "generator": torch.zeros_like(e["generator"])},
            "invalid generator state",
        ),
        (lambda e: {**e, "counts": [1, 2]}, "not finite numbers"),
        (lambda e: {**e, "counts": [-5, 0, 0]}, "not finite numbers"),
        (lambda e: {**e, "seconds": float("nan")}, "not finite numbers"),
        (lambda e: {**e, "timing": ["a", 0]}, "not finite numbers"),
    ],
)
def test_a_journal_entry_that_cannot_be_resumed_is_refused(tmp_path, edit_entry, named):
    _, path = kept(tmp_path, "lanczos")
    rewrite(path, _entries(edit_entry))
    one_line_refusal(lambda: resume("lanczos", path), named)


def _poison(value):
    """Every floating tensor of a state set to NaN."""
    if isinstance(value, torch.Tensor):
        return torch.full_like(value, float("nan")) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: _poison(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_poison(item) for item in value]
    return value


@pytest.mark.parametrize("method", list(RUNS))
def test_a_state_with_nan_is_refused_never_resumed(tmp_path, method):
    _, path = kept(tmp_path, method)
    rewrite(path, _entries(lambda e: {**e, "state": _poison(e["state"])}))
    one_line_refusal(lambda: resume(method, path), "non-finite numbers")


def test_a_langevin_state_of_the_wrong_shape_is_refused(tmp_path):
    edited = []

    def truncate(entry):
        state = entry["state"]
        if isinstance(state, dict) and "delta" in state:  # the chains' state
            edited.append(state["delta"].shape)
            entry = {**entry, "state": {**state, "delta": state["delta"][:1, :1]}}
        return entry

    _, path = kept(tmp_path, "langevin")
    rewrite(path, _entries(truncate))
    assert edited
    one_line_refusal(lambda: resume("langevin", path), "does not fit this run")


def _reshaped(key, shrink):
    def edit(entry):
        state = entry["state"]
        return {**entry, "state": shrink(state)} if key(state) else entry

    return edit


@pytest.mark.parametrize(
    ("method", "key", "shrink"),
    [
        (
            "lanczos",
            lambda state: isinstance(state, dict) and "krylov" in state,
            lambda state: {
                **state,
                "krylov": {**state["krylov"], "basis": state["krylov"]["basis"][:, :7]},
            },
        ),
        (
            "lanczos",
            lambda state: isinstance(state, dict) and "krylov" in state,
            lambda state: {
                **state,
                "krylov": {**state["krylov"], "T": state["krylov"]["T"][:1]},
            },
        ),
        (
            "evolution",
            lambda state: (
                isinstance(state, dict)
                and isinstance(state.get("__tuple__", [None])[0], torch.Tensor)
            ),
            lambda state: {
                "__tuple__": [state["__tuple__"][0][:3, :3], *state["__tuple__"][1:]]
            },
        ),
    ],
)
def test_a_state_of_another_shape_is_refused(tmp_path, method, key, shrink):
    _, path = kept(tmp_path, method)
    rewrite(path, _entries(_reshaped(key, shrink)))
    one_line_refusal(lambda: resume(method, path), "does not fit this run")


def test_another_matrix_is_refused_by_its_digest(tmp_path):
    _, path = kept(tmp_path, "lanczos")
    v = np.random.default_rng(1).standard_normal(300)
    v /= np.linalg.norm(v)
    nearby = M + 1e-7 * np.outer(v, v)
    with pytest.raises(matrank.MatrankValueError, match="other entries"):
        matrank.estimate_rank(
            nearby, method="lanczos", seed=0, block_size=4, checkpoint=path
        )


def test_another_operator_is_refused_by_its_probes(tmp_path):
    # operators known only by their products: a change of 1e-7 is far above rounding
    path = tmp_path / "op.ckpt"
    operator = scipy.sparse.linalg.aslinearoperator(M)
    options = {"method": "lanczos", "seed": 0, "block_size": 4, "checkpoint": path}
    matrank.estimate_rank(operator, keep_checkpoint=True, checkpoint_every=0, **options)
    v = np.random.default_rng(1).standard_normal(300)
    v /= np.linalg.norm(v)
    other = scipy.sparse.linalg.aslinearoperator(M + 1e-7 * np.outer(v, v))
    with pytest.raises(matrank.MatrankValueError, match="other products"):
        matrank.estimate_rank(other, **options)
    # the same operator resumes (and a finished kept run returns at once)
    again = matrank.estimate_rank(operator, **options)
    assert again.rank == 40


def test_a_bad_path_is_refused_before_any_work(tmp_path):
    calls = []

    class Counting:
        def __init__(self):
            self.inner = matrank.as_oracle(M)
            self.dim, self.dtype, self.device = 300, self.inner.dtype, self.inner.device
            self.theta0, self.capabilities = self.inner.theta0, matrank.Capability.HVP

        def hvp(self, V):
            calls.append(V.shape[1])
            return self.inner.hvp(V)

    for path, named in (
        (tmp_path / "missing" / "run.ckpt", "does not exist"),
        (tmp_path, "is a folder"),
    ):
        calls.clear()
        one_line_refusal(
            lambda path=path: matrank.estimate_rank(
                Counting(), method="lanczos", checkpoint=path
            ),
            named,
        )
        assert sum(calls) < 32  # the oracle contract check only: no Krylov block began
    # a stale temporary (even a folder) in the way is not used
    (tmp_path / "run.ckpt.tmp").mkdir()
    result, _ = kept(tmp_path, "lanczos")
    assert result.rank == 40


def test_a_checkpoint_another_live_run_holds_is_refused_naming_it(tmp_path):
    path = tmp_path / "shared.ckpt"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, sys; from matrank import _checkpoint; "
            f"lock = _checkpoint._Lock.take(pathlib.Path({str(path)!r})); "
            "print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"  # the lock is taken: go on
        text = one_line_refusal(
            lambda: matrank.estimate_rank(M, method="lanczos", checkpoint=path),
            "another live run",
        )
        assert f"process {holder.pid}" in text
    finally:
        holder.stdin.close()
        holder.wait()
    # once that process is gone (killed or finished) the checkpoint is free
    result = matrank.estimate_rank(M, method="lanczos", checkpoint=path, seed=0)
    assert result.rank == 40 and not path.exists()
    assert not path.with_name("shared.ckpt.lock").exists()


def test_a_run_leaves_no_temporary_or_lock_behind(tmp_path):
    kept(tmp_path, "lanczos")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]
    assert os.access(tmp_path / "run.ckpt", os.R_OK)


def _sketch_run(path):
    # a noise band under the signal: the sketch records its test blocks, then Krylov
    matrix = rotated_spectrum(600, 40, cond=1e3, noise_gap=1e6, seed=0)
    return matrank.estimate_rank(
        matrix,
        method="lanczos",
        seed=0,
        pilot_from=1,
        block_size=8,
        checkpoint=path,
        checkpoint_every=0,
        keep_checkpoint=True,
    )


def _before_krylov(payload):
    """The journal as it stood before the Krylov basis had a state."""
    journal = {k: v for k, v in payload["journal"].items() if k in ("pilot", "sketch")}
    assert set(journal) == {"pilot", "sketch"}
    return {**payload, "journal": journal}


def test_the_range_sketch_resumes_by_replay_and_refuses_what_does_not_fit(tmp_path):
    from test_run import same

    path = tmp_path / "run.ckpt"
    reference = _sketch_run(path)
    assert reference.diagnostics.pilot["path"] == "range start"
    rewrite(path, _before_krylov)
    assert same(_sketch_run(path), reference)

    def shrunk(key, field):
        def edit(payload):
            payload = _before_krylov(payload)
            state = dict(payload["journal"][key]["state"])
            if key == "pilot":
                pairs = state["pairs"]["__tuple__"]
                state["pairs"] = {"__tuple__": [pairs[0], pairs[1][:, :-1]]}
            else:
                state[field] = state[field][:-1]
            payload["journal"][key] = {**payload["journal"][key], "state": state}
            return payload

        return edit

    for key, field in (("sketch", "image"), ("sketch", "norms"), ("pilot", "pairs")):
        path.unlink()
        _sketch_run(path)
        rewrite(path, shrunk(key, field))
        one_line_refusal(lambda: _sketch_run(path), "does not fit this run")
