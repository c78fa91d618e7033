"""The collectives of a data-parallel :class:`~matrank.adapters.TorchLoss`.

Every rank holds a shard of the data and computes local *sums* (each chunk's mean loss
weighted by its size over the global sample count); one plain
``torch.distributed.all_reduce`` per oracle call adds them, so every rank receives the
same full-batch loss, gradient or HVP block. No DDP wrapper and no differentiable
collective is involved: the reduction happens after autograd is done, which is why
double backward (the HVP) is synchronised as well as the gradient.

Estimators run the same code on every rank from the same seed (SPMD). Their only
rank-dependent inputs are wall-clock timings (``auto``'s dense-or-Krylov rule, the
Lanczos dense switch); those go through :meth:`Collective.agree`, which hands every rank
rank 0's value, so every rank takes the same branch.
"""

from __future__ import annotations

from typing import Any

import torch

from matrank._validation import MatrankError, MatrankValueError, message

__all__ = ["Collective"]


class Collective:
    """A process group of ``torch.distributed``, checked and wrapped for the oracle."""

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise MatrankValueError(
                message(
                    "distributed",
                    "an initialized torch.distributed process group (start the script "
                    "with torchrun and call torch.distributed.init_process_group first)",
                    "none",
                )
            )
        self.dist = dist
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))

    def device(self, fallback: torch.device) -> torch.device:
        """Where a collective's tensors must live: NCCL reduces CUDA tensors only."""
        return fallback if self.backend == "nccl" else torch.device("cpu")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``tensor`` (one ``all_reduce``), on every rank."""
        home = tensor.device
        buffer = tensor.detach().contiguous().to(self.device(home)).clone()
        self.dist.all_reduce(buffer, op=self.dist.ReduceOp.SUM, group=self.group)
        return buffer.to(home)

    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        box = [value]
        self.dist.broadcast_object_list(box, src=self._global(0), group=self.group)
        return box[0]

    def together(self, error: MatrankError | None) -> None:
        """Raise on every rank when any rank failed: the first failing rank's error,
        with its rank in the message, so that no rank waits forever in a collective."""
        errors: list[Any] = [None] * self.size
        mine = None if error is None else (type(error), str(error))
        self.dist.all_gather_object(errors, mine, group=self.group)
        for rank, failed in enumerate(errors):
            if failed is not None:
                kind, text = failed
                raise kind(f"on rank {rank} of {self.size}: {text}")

    def same(self, record: dict[str, Any]) -> None:
        """Refuse, on every rank, a run whose ``record`` (method, options, seed, ``n``,
        dtype, a digest of ``θ0``) differs between ranks: SPMD estimates must run the
        same code on the same point, or their collectives pair up wrongly (other sizes
        abort gloo; equal sizes give a confident wrong answer). One ``all_gather``."""
        records: list[Any] = [None] * self.size
        self.dist.all_gather_object(records, record, group=self.group)
        first = records[0]
        differences = [
            f"rank {rank} has {key} {theirs.get(key)!r} where rank 0 has {first.get(key)!r}"
            for rank, theirs in enumerate(records[1:], start=1)
            for key in sorted(set(first) | set(theirs))
            if theirs.get(key) != first.get(key)
        ]
        if differences:
            raise MatrankValueError(
                message(
                    "distributed",
                    "the same estimate on every rank (method, options, seed, parameter "
                    "count, dtype and θ0)",
                    "; ".join(differences[:4])
                    + (
                        f"; and {len(differences) - 4} more" if len(differences) > 4 else ""
                    ),
                )
            )

    def _global(self, rank: int) -> int:
        if self.group is None:
            return rank
        return int(self.dist.get_global_rank(self.group, rank))

    def __repr__(self) -> str:
        return f"Collective(rank={self.rank}, size={self.size}, backend={self.backend!r})"
