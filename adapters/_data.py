"""The data a :class:`~matrank.adapters.TorchLoss` reads: tensors, or a DataLoader
whose order is fixed, visited in chunks of at most ``chunk_size`` samples."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from matrank._validation import MatrankTypeError, MatrankValueError, message

__all__ = ["batch_len", "cast", "check_data"]


def cast(value: Any, dtype: torch.dtype, device: torch.device | None = None) -> Any:
    """Floating tensors to ``dtype`` (integer labels stay), all to ``device``."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.is_floating_point():
        value = value.to(dtype)
    return value if device is None else value.to(device)


def batch_len(batch: tuple[Any, Any]) -> int:
    return int(batch[0].shape[0])


def check_data(data: Any, chunk_size: int) -> Callable[[], Iterable[tuple[Any, Any]]]:
    """A re-iterable source of ``(inputs, targets)`` chunks, validated once."""
    if isinstance(data, torch.utils.data.DataLoader):
        # Only a sequential sampler visits every sample once in a fixed order: random,
        # weighted and subset samplers give another loss at every call (a Hessian that
        # moves under the estimator), and drop_last leaves samples out.
        sampler = data.sampler
        distributed = getattr(torch.utils.data, "distributed", None)
        fixed = isinstance(sampler, torch.utils.data.SequentialSampler) or (
            distributed is not None
            and isinstance(sampler, distributed.DistributedSampler)
            and not sampler.shuffle
        )
        if data.batch_sampler is not None and not isinstance(
            data.batch_sampler, torch.utils.data.BatchSampler
        ):
            fixed = False  # a custom batch sampler: its order is its own
        if not fixed:
            raise MatrankValueError(
                message(
                    "data",
                    "a DataLoader with a fixed order (shuffle=False and the default "
                    "sequential sampler)",
                    f"a DataLoader with a {type(sampler).__name__}",
                )
            )
        if data.drop_last:
            raise MatrankValueError(
                message(
                    "data",
                    "a DataLoader that visits every sample (drop_last=False)",
                    "drop_last=True",
                )
            )

        def loader() -> Iterable[tuple[Any, Any]]:
            for batch in data:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise MatrankValueError(
                        message(
                            "data", "batches of (inputs, targets)", type(batch).__name__
                        )
                    )
                yield batch[0], batch[1]

        return loader
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise MatrankTypeError(
            message(
                "data",
                "an (inputs, targets) pair of tensors or a DataLoader",
                repr(type(data)),
            )
        )
    inputs, targets = data
    for name, tensor in (("inputs", inputs), ("targets", targets)):
        if not isinstance(tensor, torch.Tensor):
            raise MatrankTypeError(
                message(f"data {name}", "a torch.Tensor", type(tensor).__name__)
            )
        if tensor.device.type == "meta":
            raise MatrankValueError(
                message(f"data {name}", "a tensor with data", "a meta tensor")
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MatrankValueError(
                message(f"data {name}", "finite (no NaN or Inf)", "non-finite entries")
            )
    if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0]:
        raise MatrankValueError(
            message(
                "data",
                "inputs and targets with the same number of samples (first dimension)",
                f"shapes {tuple(inputs.shape)} and {tuple(targets.shape)}",
            )
        )
    if inputs.shape[0] == 0:
        raise MatrankValueError(message("data", "at least one sample", "none"))

    def chunks() -> Iterable[tuple[Any, Any]]:
        for start in range(0, inputs.shape[0], chunk_size):
            yield inputs[start : start + chunk_size], targets[start : start + chunk_size]

    return chunks
