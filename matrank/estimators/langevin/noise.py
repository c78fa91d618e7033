"""The chains' noise: one seeded stream per group of chains, whichever process runs it.

The chains of a Langevin estimate fall into at most ``CHAIN_GROUPS`` groups (a partition
that depends only on the number of chains). Each group draws its normals from its own
generator, seeded by the run's generator, the attempt and the group's index, so a group
sees the same normals whether the estimator steps every chain in one process
(``n_jobs=None``) or hands the group to a joblib worker (``n_jobs=k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["CHAIN_GROUPS", "Noise", "group_seeds", "group_sizes"]

#: Groups of chains (fewer when there are fewer chains): the most workers a Langevin
#: estimate can use.
CHAIN_GROUPS = 4

# From this many normals a step, a group's noise comes in four parts from four
# generators seeded by the group's, drawn on up to four threads: torch's CPU normal_
# runs on one thread (benchmarks/README.md, Langevin d = 256).
_PARALLEL_NOISE = 2**20
_NOISE_PARTS = 4


def group_sizes(n_chains: int) -> list[int]:
    """The chains per group: ``n_chains`` split as evenly as possible in
    ``min(CHAIN_GROUPS, n_chains)`` groups, the larger ones first."""
    return [
        len(part)
        for part in np.array_split(np.arange(n_chains), min(CHAIN_GROUPS, n_chains))
    ]


def group_seeds(generator: torch.Generator, attempt: int, groups: int) -> list[int]:
    """One seed per group: a draw of the run's generator spawned by ``(attempt, group)``
    (:class:`numpy.random.SeedSequence`), so that restarts and groups never share a
    stream."""
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    seeds = []
    for index in range(groups):
        sequence = np.random.SeedSequence(base, spawn_key=(attempt, index))
        seeds.append(int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    return seeds


class Noise:
    """Standard normals for every chain and parameter, a fresh ``(chains, n)`` each step,
    the rows of group ``g`` from the stream seeded by ``seeds[g]``.

    Drawn in float32 on the CPU (5× faster than float64 there) and promoted by the
    update: the moments the readout depends on are unchanged. A group of at least
    ``_PARALLEL_NOISE`` normals a step draws them in ``_NOISE_PARTS`` parts from
    generators seeded by its own, on up to as many threads as torch uses (the parts, and
    so the stream, do not depend on the thread count). The gain depends on idle cores:
    10.3 → 5.3 ms on two idle cores, ≈ 9.4 ms between the gradient's products, whose
    OpenMP workers spin for a while after each parallel region
    (``OMP_WAIT_POLICY=PASSIVE``: 5.6 ms).
    """

    def __init__(self, sizes: Sequence[int], n: int, seeds: Sequence[int]) -> None:
        self.sizes = list(sizes)
        self.buffer = torch.empty(sum(self.sizes), n, dtype=torch.float32)
        self.groups: list[list[tuple[torch.Tensor, torch.Generator]]] = []
        for rows, seed in zip(torch.split(self.buffer, self.sizes), seeds, strict=True):
            generator = torch.Generator().manual_seed(int(seed))
            if rows.numel() < _PARALLEL_NOISE:
                self.groups.append([(rows, generator)])
                continue
            parts = torch.randint(0, 2**62, (_NOISE_PARTS,), generator=generator)
            self.groups.append(
                [
                    (part, torch.Generator().manual_seed(int(seed)))
                    for part, seed in zip(
                        torch.tensor_split(rows.view(-1), _NOISE_PARTS), parts, strict=True
                    )
                ]
            )
        self.parts = [part for group in self.groups for part in group]
        self.pool: ThreadPoolExecutor | None = None
        if len(self.parts) > len(self.groups):  # a group large enough to split
            workers = min(_NOISE_PARTS, max(1, torch.get_num_threads()))
            self.pool = ThreadPoolExecutor(workers, thread_name_prefix="matrank-noise")

    def draw(self) -> torch.Tensor:
        if self.pool is None:
            for part, generator in self.parts:
                part.normal_(generator=generator)
        else:
            for _ in self.pool.map(lambda p: p[0].normal_(generator=p[1]), self.parts):
                pass
        return self.buffer

    def state(self) -> list[list[torch.Tensor]]:
        """Each group's generator states (what a checkpoint or a worker carries)."""
        return [[generator.get_state() for _, generator in group] for group in self.groups]

    def load(self, states: Sequence[Sequence[torch.Tensor]]) -> None:
        for group, saved in zip(self.groups, states, strict=True):
            for (_, generator), state in zip(group, saved, strict=True):
                generator.set_state(state)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
