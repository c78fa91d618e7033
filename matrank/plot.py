"""Figures of a :class:`~matrank.RankResult`: counting curve, density of states, loss trace.

Needs matplotlib (``pip install 'matrank[plot]'``). Every function draws on the ``ax``
it is given (a new figure otherwise) and returns it; :func:`save_figure` writes the
panels that fit a result to a file, which is what ``matrank estimate --plot`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._result import RankResult
from ._validation import MatrankError, MatrankValueError, message

__all__ = [
    "plot_counts",
    "plot_density",
    "plot_landscape",
    "plot_loss_trace",
    "save_figure",
]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise MatrankError(
            "plotting needs matplotlib: pip install 'matrank[plot]'"
        ) from None
    return plt


def _axes(ax: Any) -> Any:
    return _pyplot().subplots(figsize=(6, 4))[1] if ax is None else ax


def plot_counts(result: RankResult, ax: Any = None) -> Any:
    """``N(τ)`` against ``τ`` (log scale), with the threshold and its plateau marked."""
    if result.counts is None:
        raise MatrankValueError(
            message(
                "result",
                "a result with a counting curve (methods exact, lanczos, polynomial)",
                f"method {result.method!r} without one",
            )
        )
    ax = _axes(ax)
    curve = result.counts
    ax.step(curve.thresholds, curve.counts, where="post", color="black", label="N(τ)")
    if curve.stderr is not None:
        ax.fill_between(
            curve.thresholds,
            curve.counts - 2 * curve.stderr,
            curve.counts + 2 * curve.stderr,
            step="post",
            alpha=0.2,
            color="black",
            label="±2 stderr",
        )
    signed = result.diagnostics.get("eigenvalues")
    if signed is None:
        signed = result.diagnostics.get("ritz_values")
    if signed is not None and np.any(np.asarray(signed) < 0):
        values = np.asarray(signed)
        for sign, label, color in ((1, "N⁺(τ) = #{λ > τ}", "C2"), (-1, "N⁻(τ)", "C1")):
            side = np.sort(sign * values[sign * values > 0])
            counted = side.size - np.searchsorted(side, curve.thresholds, side="right")
            ax.step(curve.thresholds, counted, where="post", color=color, label=label)
    plateau = result.diagnostics.get("plateau")
    if plateau and plateau["decades"] >= 1.0:  # no band where there is no plateau
        ax.axvspan(
            max(plateau["lower"], curve.thresholds[0]),
            plateau["upper"],
            alpha=0.15,
            color="C0",
            label=f"plateau ({plateau['decades']:.1f} decades)",
        )
    ax.axvline(
        result.threshold, color="C0", linestyle="--", label=f"τ = {result.threshold:.3g}"
    )
    floor = result.diagnostics.get("noise_floor")
    if floor:
        ax.axvline(floor, color="C3", linestyle=":", label=f"noise floor {floor:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("threshold τ (eigenvalue magnitude)")
    ax.set_ylabel("N(τ) = #{|λ| > τ}")
    ax.set_title(f"{result.method}: rank {result.rank:g} ({result.status.name.lower()})")
    ax.legend(fontsize=8)
    return ax


def plot_density(result: RankResult, ax: Any = None) -> Any:
    """The density of states a polynomial estimate computed, with its threshold."""
    if "density" not in result.diagnostics:
        raise MatrankValueError(
            message(
                "result",
                "a result with a density of states (method polynomial)",
                f"method {result.method!r}",
            )
        )
    ax = _axes(ax)
    grid = np.asarray(result.diagnostics["density_grid"])
    density = np.asarray(result.diagnostics["density"])
    ax.plot(grid, density, color="black", label="KPM density")
    ax.axvline(
        result.threshold,
        color="C0",
        linestyle="--",
        label=f"threshold {result.threshold:.3g}",
    )
    ax.set_yscale("symlog", linthresh=max(float(np.abs(density).max()) * 1e-4, 1e-300))
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density of states")
    ax.set_title(f"{result.method}: rank {result.rank:.1f} ± {result.stderr or 0:.1f}")
    ax.legend(fontsize=8)
    return ax


def plot_loss_trace(
    result: RankResult, eigenvalues: np.ndarray | None = None, ax: Any = None
) -> Any:
    """A Langevin run's readout per step in rank units (``4/σ²·(L_k − L0)`` or the virial).

    With ``eigenvalues`` (of ``G^{1/2}HG^{1/2}``, e.g. ``H``'s with the identity
    preconditioner) the exact expectation of the discrete chain and Theorem 1's
    continuous-time curve are drawn beside it.
    """
    if "readings" not in result.diagnostics:
        raise MatrankValueError(
            message(
                "result",
                "a result with a loss trace (method langevin)",
                f"method {result.method!r}",
            )
        )
    from .theory import expected_loss_curve, expected_virial_curve

    ax = _axes(ax)
    diagnostics = result.diagnostics
    sigma2, eta = diagnostics["sigma2"], diagnostics["step_size"]
    trace = np.asarray(diagnostics["readings"])
    steps = np.arange(trace.size)
    virial = diagnostics.get("readout") == "virial"
    label = "virial/σ²" if virial else "4/σ²·(mean loss − L0)"
    ax.plot(steps, trace, color="0.6", linewidth=0.6, label=label)
    if eigenvalues is not None:
        if virial:
            expected = expected_virial_curve(eigenvalues, step_size=eta, n_steps=trace.size)
        else:
            expected = (
                4
                / sigma2
                * expected_loss_curve(
                    np.asarray(eigenvalues),
                    step_size=eta,
                    sigma2=sigma2,
                    n_steps=trace.size,
                )
            )
        ax.plot(steps, expected, color="C3", label="exact expectation")
        # Theorem 1 (eq. 5), continuous time t = kη: Σ (1 − exp(−2μt)) in rank units
        mu = np.asarray(eigenvalues, dtype=np.float64)
        mu = mu[mu > 0]
        theorem = (1 - np.exp(-2 * mu[None] * steps[:, None] * eta)).sum(axis=1)
        ax.plot(steps, theorem, color="C2", linestyle=":", label="Theorem 1 (continuous)")
    ax.axvspan(
        trace.size - diagnostics["n_average"],
        trace.size,
        alpha=0.1,
        color="C0",
        label="averaged steps",
    )
    ax.axhline(result.rank, color="C0", linestyle="--", label=f"estimate {result.rank:.1f}")
    ax.set_xlabel("Langevin step k")
    ax.set_ylabel("readout in rank units")
    ax.set_title(f"langevin: rank {result.rank:.1f} ± {result.stderr or 0:.1f}")
    ax.legend(fontsize=8)
    return ax


def save_figure(result: RankResult, path: str) -> list[str]:
    """Write the panels that fit ``result`` to ``path``; returns their names."""
    panels: list[tuple[str, Any]] = []
    if result.counts is not None:
        panels.append(("counting curve", plot_counts))
    if "density" in result.diagnostics:
        panels.append(("density of states", plot_density))
    if "readings" in result.diagnostics:
        panels.append(("loss trace", plot_loss_trace))
    if not panels:
        raise MatrankValueError(
            message(
                "result", "something to plot", f"method {result.method!r} reports no curve"
            )
        )
    _pyplot()  # the friendly error when matplotlib is missing
    from matplotlib.figure import Figure

    # A bare Figure needs no GUI backend, so this works on a headless machine.
    figure = Figure(figsize=(6 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for (_, draw), ax in zip(panels, axes[0], strict=True):
        draw(result, ax=ax)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return [name for name, _ in panels]


def plot_landscape(
    studies: Mapping[str, Any], path: str | None = None, *, title: str | None = None
) -> Any:
    """The figure of :func:`matrank.landscape.dataset_size_study`, one curve per model.

    Six panels on log axes against ``k``: the mean ``Δ_k = |L_{k+1} − L_k|`` over the
    orderings with its 25–75 % band and a ``1/k`` guide; ``‖H_{k+1} − H_k‖₂``;
    ``λmax(H_k)``; ``tr(H_k)/n``; ``rank(H_k)/n``; and the measured quadratic term over
    the paper's bound at the largest radius (above 1 the expansion fails). ``studies`` maps a
    label to a study; the figure (with ``title`` above it) is saved to ``path`` when
    given, and returned.
    """
    if not studies:
        raise MatrankValueError(message("studies", "at least one study", "none"))
    plt = _pyplot()
    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = axes.ravel()
    for label, study in studies.items():
        line = panels[0].plot(study.k, study.delta_mean, label=label)[0]
        low, high = study.delta_quantiles[1], study.delta_quantiles[3]
        panels[0].fill_between(study.k, low, high, color=line.get_color(), alpha=0.15)
        color = line.get_color()
        sizes = study.sizes
        panels[1].plot(sizes, study.hessian_difference, "o-", color=color, label=label)
        panels[2].plot(sizes, study.lambda_max, "o-", color=color, label=label)
        panels[3].plot(sizes, study.trace / study.dim, "o-", color=color, label=label)
        panels[4].plot(sizes, study.rank / study.dim, "o-", color=color, label=label)
        ratio = study.measured[:, -1] / study.bound[:, -1]
        panels[5].plot(sizes, ratio, "o-", color=color, label=label)
    first = next(iter(studies.values()))
    anchor = first.delta_mean[0] if first.delta_mean[0] > 0 else 1.0
    panels[0].plot(first.k, anchor / first.k, "k--", linewidth=1, label="1/k")
    panels[5].axhline(1.0, color="black", linestyle=":", linewidth=1, label="the bound")
    titles = [
        ("|L_{k+1} − L_k| at θ* (mean, 25–75 %)", "Δ_k"),
        ("‖H_{k+1} − H_k‖₂", "spectral norm"),
        ("λmax(H_k)", "largest eigenvalue"),
        ("tr(H_k) / n", "mean eigenvalue"),
        (
            f"rank(H_k) / n at τ = {first.threshold:.2g}"
            if len({study.threshold for study in studies.values()}) == 1
            else "rank(H_k) / n at each model's τ",
            "fraction of n",
        ),
        (
            f"quadratic term / bound at ‖δ‖ = {first.radii[-1]:g}·‖θ*‖",
            "ratio (above 1: the expansion fails)",
        ),
    ]
    for ax, (heading, ylabel) in zip(panels, titles, strict=True):
        ax.set_xscale("log")
        positive = all((study.rank > 0).all() for study in studies.values())
        ax.set_yscale("log" if ax is not panels[4] or positive else "linear")
        ax.set_xlabel("samples k")
        ax.set_ylabel(ylabel)
        ax.set_title(heading)
    # one legend for the figure: the models share colours across panels, and the two
    # guides (1/k, the bound) are named once beside them
    handles, labels = panels[0].get_legend_handles_labels()
    guide = panels[5].get_legend_handles_labels()
    handles, labels = handles + guide[0][-1:], labels + guide[1][-1:]
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6))
    if title is not None:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
