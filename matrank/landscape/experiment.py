"""The built-in experiment of ``matrank landscape``: bias-free ReLU MLPs on digits.

Kiselev & Grabovoy (2024) compare how ``|L_{k+1} − L_k|`` falls with ``k`` across the
widths and depths of fully connected networks. This module repeats their two sweeps on
scikit-learn's 1,797 digits (no download) -- widths 4 … 64 at depth 5, depths 1 … 6 at
width 16, where the depth counts hidden layers (the theorem's ``L`` is ``depth + 1``
weight matrices) -- and measures the Hessian terms with
:func:`matrank.landscape.dataset_size_study`.

Every model is trained the same way: Adam (learning rate 3e-3, batches of 64 in a
seeded order) until the full-batch mean cross-entropy is at most ``target_loss``
(default 0.05) or ``max_epochs`` (default 300) have run; :class:`Training` records where
it stopped, and a model that did not reach the target is marked so (width 4 at depth 5
does not: its width-4 layers cannot separate ten classes to that loss). ``target_loss=0``
trains exactly ``max_epochs`` instead, the paper's protocol (its 10 epochs over MNIST's
60,000 images are about 9,400 steps; over the digits they would be 290).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._validation import MatrankValueError, check_int, check_real, message
from .study import LandscapeStudy, dataset_size_study

__all__ = [
    "DEPTHS",
    "WIDTHS",
    "Model",
    "Training",
    "digits",
    "relu_mlp",
    "run",
    "train",
]

#: The width sweep (at depth ``WIDTH_SWEEP_DEPTH``) and the depth sweep (at width
#: ``DEPTH_SWEEP_WIDTH``).
WIDTHS = (4, 8, 16, 32, 64)
DEPTHS = (1, 2, 3, 4, 5, 6)
WIDTH_SWEEP_DEPTH = 5
DEPTH_SWEEP_WIDTH = 16


@dataclasses.dataclass(frozen=True)
class Training:
    """Where training stopped: ``epochs`` run, the full-batch mean cross-entropy
    ``loss`` and ``accuracy`` on the training digits, the ``target_loss``, whether it was
    ``reached``, and the ``seconds`` it took."""

    epochs: int
    loss: float
    accuracy: float
    target_loss: float
    reached: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class Model:
    """One model of the sweeps: its ``width``, ``depth`` (hidden layers), the sweeps it
    belongs to (``"width"``, ``"depth"`` or both), its training and its study."""

    width: int
    depth: int
    sweeps: tuple[str, ...]
    training: Training
    study: LandscapeStudy

    @property
    def label(self) -> str:
        return f"width {self.width}, depth {self.depth}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "width": self.width,
            "depth": self.depth,
            "sweeps": list(self.sweeps),
            "training": dataclasses.asdict(self.training),
            "study": self.study.to_dict(),
        }

    @classmethod
    def from_dict(cls, record: Any) -> Model:
        """The model :meth:`to_dict` wrote, checked like
        :meth:`LandscapeStudy.from_dict`."""
        from .record import model_from_dict

        return model_from_dict(record)


def digits(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits: pixels scaled to [0, 1] (``(1797, 64)``) and
    class labels (``(1797,)``)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=dtype), torch.tensor(y, dtype=torch.int64)


def relu_mlp(
    width: int, depth: int, *, inputs: int = 64, classes: int = 10, seed: int = 0
) -> torch.nn.Sequential:
    """A bias-free ReLU network with ``depth`` hidden layers of ``width`` units
    (``depth + 1`` weight matrices), PyTorch's default initialization from ``seed``."""
    check_int("width", width, low=1)
    check_int("depth", depth, low=0)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[torch.nn.Module] = []
        size = inputs
        for _ in range(depth):
            layers += [torch.nn.Linear(size, width, bias=False), torch.nn.ReLU()]
            size = width
        layers.append(torch.nn.Linear(size, classes, bias=False))
        return torch.nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(generator_state)


def train(
    model: torch.nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    target_loss: float = 0.05,
    max_epochs: int = 300,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> Training:
    """Adam on the mean cross-entropy, batches of ``batch_size`` in an order drawn from
    ``seed`` each epoch, until the full-batch loss is at most ``target_loss`` or
    ``max_epochs`` have run; ``target_loss=0`` runs exactly ``max_epochs`` (the paper's
    protocol). Leaves the model in eval mode."""
    check_int("max_epochs", max_epochs, low=1)
    check_int("batch_size", batch_size, low=1)
    if not target_loss >= 0:
        raise MatrankValueError(message("target_loss", "a loss ≥ 0", target_loss))
    cross_entropy = torch.nn.functional.cross_entropy
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    loss = float("inf")
    epochs = 0
    for epoch in range(1, max_epochs + 1):
        epochs = epoch
        order = torch.randperm(len(X), generator=generator)
        for first in range(0, len(X), batch_size):
            batch = order[first : first + batch_size]
            optimizer.zero_grad()
            cross_entropy(model(X[batch]), Y[batch]).backward()
            optimizer.step()
        with torch.no_grad():
            loss = float(cross_entropy(model(X), Y))
        if loss <= target_loss and target_loss > 0:
            break
    model.eval()
    with torch.no_grad():
        accuracy = float((model(X).argmax(dim=1) == Y).double().mean())
    return Training(
        epochs=epochs,
        loss=loss,
        accuracy=accuracy,
        target_loss=target_loss,
        reached=loss <= target_loss or target_loss == 0,
        seconds=time.perf_counter() - start,
    )


def sweep(widths: Sequence[int], depths: Sequence[int]) -> dict[tuple[int, int], list[str]]:
    """``(width, depth) → sweeps``: widths at depth 5, depths at width 16, each model
    once (width 16 at depth 5 is in both)."""
    models: dict[tuple[int, int], list[str]] = {}
    for width in widths:
        models.setdefault((int(width), WIDTH_SWEEP_DEPTH), []).append("width")
    for depth in depths:
        models.setdefault((DEPTH_SWEEP_WIDTH, int(depth)), []).append("depth")
    return models


def run(
    widths: Sequence[int] = WIDTHS,
    depths: Sequence[int] = DEPTHS,
    *,
    orderings: int = 100,
    hessian_orderings: int = 10,
    n_sizes: int = 8,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    relative_threshold: float = 1e-2,
    target_loss: float = 0.05,
    max_epochs: int = 300,
    samples: int | None = None,
    radii: Sequence[float] = (1e-3, 1e-2, 1e-1),
    progress: bool = True,
    on_model: Callable[[Model], None] | None = None,
) -> list[Model]:
    """Train each model of the two sweeps and study it at its trained weights.

    The Hessian terms are measured in float64 on ``n_sizes`` log-spaced ``k`` (or at
    ``sizes``), over the first ``hessian_orderings`` orderings;
    ``rank(H_k)`` counts the eigenvalues above ``relative_threshold·λmax(H_N)``, one
    threshold per model. ``samples`` keeps the first that many digits (all by default);
    ``radii`` are the quadratic term's (relative to ``‖θ*‖``).
    A tqdm bar on stderr counts models and sizes when ``progress``; ``on_model`` is
    called with each finished model.
    """
    from tqdm.auto import tqdm

    if not widths and not depths:
        raise MatrankValueError(message("widths, depths", "at least one model", "none"))
    # every option is checked before the first model trains (seconds to minutes)
    for name, values in (("widths", widths), ("depths", depths)):
        for value in values:
            check_int(name, value, low=1)
    check_int("orderings", orderings, low=1)
    check_int("hessian_orderings", hessian_orderings, low=1)
    check_int("n_sizes", n_sizes, low=1)
    check_int("seed", seed, low=0)
    check_int("max_epochs", max_epochs, low=1)
    check_real("target_loss", target_loss, low=0.0)
    if not isinstance(relative_threshold, (int, float)) or not 0 < relative_threshold < 1:
        raise MatrankValueError(
            message("relative_threshold", "a fraction in (0, 1)", relative_threshold)
        )
    radii_array = np.asarray(radii, dtype=np.float64)
    if radii_array.ndim != 1 or radii_array.size == 0 or not (radii_array > 0).all():
        raise MatrankValueError(message("radii", "positive numbers", radii))
    X, Y = digits()
    if samples is not None:
        check_int("samples", samples, low=3, high=len(X))
        X, Y = X[:samples], Y[:samples]
    if sizes is not None:
        grid = np.asarray(sizes)
        if grid.ndim != 1 or grid.size == 0 or not ((grid >= 1) & (grid < len(X))).all():
            raise MatrankValueError(
                message("sizes", f"integers in [1, {len(X) - 1}]", sizes)
            )
    models = sweep(widths, depths)
    per_model = n_sizes if sizes is None else len(sizes)
    steps = len(models) * (per_model + 1)
    results: list[Model] = []
    with tqdm(total=steps, desc="landscape", disable=not progress, unit="step") as bar:
        for (width, depth), sweeps in models.items():
            bar.set_postfix_str(f"width {width}, depth {depth}: training")
            model = relu_mlp(width, depth, seed=seed)
            training = train(
                model, X, Y, target_loss=target_loss, max_epochs=max_epochs, seed=seed
            )
            bar.update(1)
            done = [0]

            def tick(
                k: int, width: int = width, depth: int = depth, done: list[int] = done
            ) -> None:
                done[0] += 1
                bar.set_postfix_str(f"width {width}, depth {depth}: k = {k}")
                bar.update(1)

            study = dataset_size_study(
                model,
                torch.nn.functional.cross_entropy,
                (X, Y),
                n_sizes=n_sizes,
                sizes=sizes,
                orderings=orderings,
                hessian_orderings=hessian_orderings,
                seed=seed,
                relative_threshold=relative_threshold,
                radii=radii,
                dtype=torch.float64,
                on_size=tick,
            )
            bar.update(per_model - done[0])  # the grid may hold fewer than n_sizes
            result = Model(width, depth, tuple(sweeps), training, study)
            results.append(result)
            if on_model is not None:
                on_model(result)
    return results


def slope(study: LandscapeStudy, low: int = 10) -> float:
    """The least-squares slope of ``log Δ_k`` against ``log k`` for ``k ≥ low`` (the paper
    predicts −1)."""
    keep = (study.k >= low) & (study.delta_mean > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(study.k[keep]), np.log(study.delta_mean[keep]), 1)[0])
