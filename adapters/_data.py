"""The data a :class:`~matrank.adapters.TorchLoss` reads: tensors, or a DataLoader
whose order is fixed, visited in chunks of at most ``chunk_size`` samples."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_leaves, tree_map

from matrank._validation import MatrankTypeError, MatrankValueError, message

__all__ = ["batch_len", "cast", "check_data", "check_loss_contract", "select_parameters"]


def cast(value: Any, dtype: torch.dtype, device: torch.device | None = None) -> Any:
    """Floating tensors to ``dtype`` (integer labels stay), all to ``device``; inside
    tuples, lists and dicts too."""

    def one(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return leaf
        if leaf.is_floating_point():
            leaf = leaf.to(dtype)
        return leaf if device is None else leaf.to(device)

    return tree_map(one, value)


def batch_len(batch: tuple[Any, Any]) -> int:
    """The samples in a batch: the first dimension of its inputs' tensors (a tensor, or
    tuples, lists and dicts of them, which must agree)."""
    sizes = {
        int(leaf.shape[0])
        for leaf in tree_leaves(batch[0])
        if isinstance(leaf, torch.Tensor) and leaf.ndim > 0
    }
    if len(sizes) != 1:
        raise MatrankValueError(
            message(
                "data inputs",
                "a tensor, or a tuple, list or dict of tensors with one first dimension "
                "(the samples)",
                f"{type(batch[0]).__name__} with first dimensions {sorted(sizes) or 'none'}",
            )
        )
    return sizes.pop()


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
        size = getattr(sampler, "total_size", None)
        if fixed and size is not None and size != len(sampler.dataset):
            # DistributedSampler evens the shards: it repeats samples (drop_last=False)
            # or leaves the tail out (drop_last=True); either weighs some samples wrong
            raise MatrankValueError(
                message(
                    "data",
                    "a DistributedSampler whose shards cover the dataset exactly once "
                    f"(a dataset size divisible by num_replicas={sampler.num_replicas}, "
                    "or uneven shards of your own as tensors)",
                    f"{len(sampler.dataset)} samples made into {size} "
                    f"({'repeated' if size > len(sampler.dataset) else 'dropped'} to "
                    "even the shards)",
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


def select_parameters(
    model: torch.nn.Module, params: Sequence[str] | str | None, dtype: torch.dtype | None
) -> tuple[list[str], list[torch.nn.Parameter], torch.dtype]:
    """The names and tensors of the parameters ``θ`` (model order) and the compute dtype,
    validated: known, trainable, one dtype unless given, float32 or float64, not meta."""
    named = dict(model.named_parameters())
    if params is not None and not isinstance(params, str) and len(params) == 0:
        raise MatrankValueError(
            message("params", "some parameter names, or None for all", "[]")
        )
    if params is None:
        names = [name for name, p in named.items() if p.requires_grad]
        if not names:
            raise MatrankValueError(
                message("model", "some parameter that requires grad", "none")
            )
    else:
        if isinstance(params, str):
            params = [params]
        names = list(params)
        unknown = [name for name in names if name not in named]
        if unknown:
            raise MatrankValueError(
                message(
                    "params",
                    f"names from model.named_parameters() ({', '.join(named)})",
                    repr(unknown),
                )
            )
        frozen = [name for name in names if not named[name].requires_grad]
        if frozen:
            raise MatrankValueError(
                message("params", "parameters that require grad", f"frozen {frozen}")
            )
        names = [name for name in named if name in set(names)]  # model order
    selected = [named[name] for name in names]
    dtypes = {p.dtype for p in selected}
    if dtype is None:
        if len(dtypes) != 1:
            raise MatrankValueError(
                message(
                    "params",
                    "one dtype (or pass dtype=)",
                    str(sorted(map(str, dtypes))),
                )
            )
        dtype = dtypes.pop()
    if not dtype.is_floating_point:
        raise MatrankTypeError(message("dtype", "a floating dtype", str(dtype)))
    if dtype in (torch.float16, torch.bfloat16):
        raise MatrankValueError(
            message(
                "dtype",
                "float32 or float64 (half precision has 3 significant digits: a "
                "Hessian's small eigenvalues drown in its rounding; pass "
                "dtype=torch.float32 to compute in single precision)",
                str(dtype),
            )
        )
    meta = [name for name, p in zip(names, selected, strict=True) if p.is_meta]
    if meta:
        raise MatrankValueError(
            message("model", "parameters with data", f"meta tensors {meta[:3]}")
        )
    return names, selected, dtype


def check_loss_contract(
    forward: Callable[[Any], Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    inputs: Any,
    targets: Any,
) -> None:
    """Refuse, in one line each, the three mistakes that give a silently wrong oracle:
    inputs the model does not take, targets that broadcast against the outputs (MSE on
    ``(N, 1)`` outputs and ``(N,)`` targets compares every sample with every target), and
    a loss that is a sum rather than the batch mean (it doubles when the batch does)."""
    few = tree_map(lambda leaf: leaf[:64] if _batched(leaf) else leaf, (inputs, targets))
    try:
        with torch.no_grad():
            output = forward(few[0])
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise MatrankValueError(
            message(
                "data inputs",
                "inputs the model accepts",
                f"model(inputs) on the first chunk failed: {first}",
            )
        ) from None
    target = few[1]
    if (
        isinstance(output, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and target.is_floating_point()
        and output.shape != target.shape
    ):
        try:
            shape = torch.broadcast_shapes(output.shape, target.shape)
        except RuntimeError:
            shape = output.shape
        if math.prod(shape) > max(output.numel(), target.numel()):
            raise MatrankValueError(
                message(
                    "data targets",
                    "shaped like the model's outputs for an elementwise loss",
                    f"outputs {tuple(output.shape)} against targets "
                    f"{tuple(target.shape)}, which broadcast to {tuple(shape)} (reshape "
                    "the targets, e.g. y[:, None], or the outputs)",
                )
            )
    twice = tree_map(lambda leaf: torch.cat([leaf, leaf]) if _batched(leaf) else leaf, few)
    with torch.no_grad():
        once = loss_fn(output, target)
        doubled = loss_fn(forward(twice[0]), twice[1])
    if not isinstance(once, torch.Tensor) or once.ndim != 0:
        return  # the chunk loss refuses these with its own message
    ratio = float(doubled) / float(once) if float(once) != 0 else 1.0
    # a sum doubles exactly; a mean stays (a penalty coupling the batch's samples moves
    # it a little, and so does rounding at an exact fit: neither is refused)
    if abs(ratio - 2.0) <= 1e-2:
        raise MatrankValueError(
            message(
                "loss_fn",
                "the mean over the batch (reduction='mean')",
                f"a loss that is {ratio:.3g}× larger on the first chunk repeated twice "
                "(reduction='sum'?)",
            )
        )


def _batched(leaf: Any) -> bool:
    return isinstance(leaf, torch.Tensor) and leaf.ndim > 0
