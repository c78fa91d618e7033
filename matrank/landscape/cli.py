"""``matrank landscape``: the built-in dataset-size study (bias-free ReLU MLPs on digits)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .._validation import MatrankError


def add_parser(commands: Any) -> None:
    from .experiment import DEPTHS, WIDTHS

    parser = commands.add_parser(
        "landscape",
        help="how the loss and its Hessian change as samples are added "
        "(bias-free ReLU MLPs on digits)",
        description="Train bias-free ReLU MLPs on scikit-learn's digits (widths at depth "
        "5, depths at width 16; depth counts hidden layers) with Adam to --target-loss, "
        "and measure at the trained weights how |L_{k+1} - L_k| and the Hessian terms of "
        "Kiselev & Grabovoy's bound change with the number of samples k.",
    )
    parser.add_argument(
        "--widths", type=int, nargs="*", default=list(WIDTHS), help="default 4 8 16 32 64"
    )
    parser.add_argument(
        "--depths", type=int, nargs="*", default=list(DEPTHS), help="default 1 … 6"
    )
    parser.add_argument("--orderings", type=int, default=100, help="default 100")
    parser.add_argument(
        "--hessian-orderings",
        type=int,
        default=10,
        help="the Hessian terms' mean and spread over the first this many orderings "
        "(default 10; each costs a rank count per size)",
    )
    parser.add_argument(
        "--sizes", type=int, default=8, help="log-spaced k of the Hessian terms (default 8)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--relative-threshold",
        type=float,
        default=1e-2,
        help="rank(H_k) counts |λ| above this fraction of λmax(H_N) (default 0.01)",
    )
    parser.add_argument(
        "--target-loss",
        type=float,
        default=0.05,
        help="train until the mean cross-entropy is at most this (default 0.05); 0 trains "
        "exactly --max-epochs",
    )
    parser.add_argument("--max-epochs", type=int, default=300, help="default 300")
    parser.add_argument(
        "--samples", type=int, default=None, help="use the first this many digits"
    )
    parser.add_argument("--json", default="landscape.json", help="default landscape.json")
    parser.add_argument(
        "--figure",
        default="landscape.png",
        help="the width sweep goes to NAME-widths.png and the depth sweep to "
        "NAME-depths.png (default landscape.png; needs matplotlib)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def figure_paths(figure: str) -> dict[str, Path]:
    path = Path(figure)
    suffix = path.suffix or ".png"
    return {
        sweep: path.with_name(f"{path.stem}-{sweep}s{suffix}")
        for sweep in ("width", "depth")
    }


def _output_problem(flag: str, path: Path, *, figure: bool = False) -> str | None:
    """Why ``path`` cannot be written (as ``flag``'s output), or ``None``."""
    if path.is_dir():
        return f"`{flag}` must be a file; got the folder {str(path)!r}"
    folder = path.parent
    if not folder.is_dir():
        return f"`{flag}` must be in a folder that exists; got {str(path)!r}"
    if not os.access(folder, os.W_OK):
        return f"`{flag}` must be in a folder that can be written; got {str(path)!r}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"`{flag}` must be a file that can be written; got {str(path)!r}"
    if figure:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return None  # refused next, with how to install it
        formats = Figure().canvas.get_supported_filetypes()
        if path.suffix.lower().lstrip(".") not in formats:
            return f"`{flag}` must end in one of .{', .'.join(sorted(formats))}; got {str(path)!r}"
    return None


def run(args: argparse.Namespace) -> int:
    from . import experiment

    paths = figure_paths(args.figure) if args.figure else {}
    # every output is checked before the work (minutes): a bad path fails now
    problems = [_output_problem("--json", Path(args.json))]
    problems += [_output_problem("--figure", path, figure=True) for path in paths.values()]
    problem = next((p for p in problems if p), None)
    if problem:
        print(f"matrank: error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.figure:
            from ..plot import _pyplot

            _pyplot()  # fail before the work when matplotlib is missing
        models = experiment.run(
            args.widths,
            args.depths,
            orderings=args.orderings,
            hessian_orderings=args.hessian_orderings,
            n_sizes=args.sizes,
            seed=args.seed,
            relative_threshold=args.relative_threshold,
            target_loss=args.target_loss,
            max_epochs=args.max_epochs,
            samples=args.samples,
            progress=not args.no_progress,
        )
    except MatrankError as error:
        print(f"matrank: error: {error}", file=sys.stderr)
        return 2
    record = {
        "experiment": "bias-free ReLU MLPs on scikit-learn's digits",
        "options": {
            key: getattr(args, key)
            for key in (
                "widths",
                "depths",
                "orderings",
                "hessian_orderings",
                "sizes",
                "seed",
                "relative_threshold",
                "target_loss",
                "max_epochs",
                "samples",
            )
        },
        "models": [model.to_dict() for model in models],
    }
    try:
        Path(args.json).write_text(json.dumps(record, allow_nan=False))
    except OSError as error:  # the folder changed during the work
        print(
            f"matrank: error: cannot write {args.json!r}: {error.strerror}", file=sys.stderr
        )
        return 2
    print(table(models))
    print(f"wrote {args.json}", file=sys.stderr)
    if args.figure:
        from ..plot import plot_landscape

        for sweep, path in paths.items():
            members = sorted(
                (m for m in models if sweep in m.sweeps), key=lambda m: getattr(m, sweep)
            )
            chosen = {m.label: m.study for m in members}
            if chosen:
                plot_landscape(
                    chosen,
                    path=str(path),
                    title=f"bias-free ReLU MLPs on digits: the {sweep} sweep",
                )
                print(f"wrote {path}", file=sys.stderr)
    return 0


def table(models: list[Any]) -> str:
    """One row per model: training, the slope of log Δ_k, the Hessian terms at the
    largest k, and the quadratic term against the bound with the measured Hessian."""
    from .experiment import slope

    lines = [
        f"{'model':20s} {'n':>6s} {'epochs':>6s} {'loss':>7s}  {'slope':>6s} "
        f"{'Δ(100)':>8s} {'‖ΔH‖':>8s} {'λmax':>8s} {'rank/n':>7s} {'quad/bound':>10s} "
        f"{'fails':>5s}"
    ]
    for model in models:
        study = model.study
        at_100 = study.delta_mean[min(99, study.k.size - 1)]
        ratio = (study.measured / study.bound).max()
        mark = " " if model.training.reached else "*"
        lines.append(
            f"{model.label:20s} {study.dim:6d} {model.training.epochs:6d} "
            f"{model.training.loss:7.4f}{mark} {slope(study):6.2f} {at_100:8.2e} "
            f"{study.hessian_difference[-1]:8.2e} {study.lambda_max[-1]:8.3g} "
            f"{study.rank[-1] / study.dim:7.4f} {ratio:10.3g} "
            f"{int(study.violations.sum()):5d}"
        )
    k = int(models[0].study.sizes[-1]) if models else 0
    lines.append(
        f"slope: of log Δ_k against log k for k ≥ 10; ‖ΔH‖ = ‖H_{{k+1}} − H_k‖₂, λmax and "
        f"rank at k = {k}; quad/bound: the largest measured quadratic term over the bound "
        "with the measured Hessian difference; fails: the (k, radius) pairs above it"
    )
    if not all(model.training.reached for model in models):
        lines.append("* did not reach the target loss within --max-epochs")
    return "\n".join(lines)
