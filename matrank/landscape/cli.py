"""``matrank landscape``: the built-in dataset-size study (bias-free ReLU MLPs on digits)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .._validation import MatrankError

#: The options of a new run and their defaults (``--replot`` refuses them).
_RUN_OPTIONS: dict[str, Any] = {
    "widths": None,  # experiment.WIDTHS
    "depths": None,  # experiment.DEPTHS
    "orderings": 100,
    "hessian_orderings": 10,
    "sizes": 8,
    "seed": 0,
    "relative_threshold": 1e-2,
    "target_loss": 0.05,
    "max_epochs": 300,
    "samples": None,
}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "landscape",
        help="how the loss and its Hessian change as samples are added "
        "(bias-free ReLU MLPs on digits)",
        description="Train bias-free ReLU MLPs on scikit-learn's digits (widths at depth "
        "5, depths at width 16; depth counts hidden layers) with Adam to --target-loss, "
        "and measure at the trained weights how |L_{k+1} - L_k| and the Hessian terms of "
        "Kiselev & Grabovoy's bound change with the number of samples k. --replot redraws "
        "the table and figures from earlier runs' --json records instead.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--widths", type=int, nargs="*", help="default 4 8 16 32 64")
    parser.add_argument("--depths", type=int, nargs="*", help="default 1 … 6")
    parser.add_argument("--orderings", type=int, help="default 100")
    parser.add_argument(
        "--hessian-orderings",
        type=int,
        help="the Hessian terms' mean and spread over the first this many orderings "
        "(default 10; each costs a rank count per size)",
    )
    parser.add_argument(
        "--sizes", type=int, help="log-spaced k of the Hessian terms (default 8)"
    )
    parser.add_argument("--seed", type=int, help="default 0")
    parser.add_argument(
        "--relative-threshold",
        type=float,
        help="rank(H_k) counts |λ| above this fraction of λmax(H_N) (default 0.01)",
    )
    parser.add_argument(
        "--target-loss",
        type=float,
        help="train until the mean cross-entropy is at most this (default 0.05); 0 trains "
        "exactly --max-epochs",
    )
    parser.add_argument("--max-epochs", type=int, help="default 300")
    parser.add_argument("--samples", type=int, help="use the first this many digits")
    parser.add_argument(
        "--replot",
        nargs="+",
        metavar="JSON",
        default=None,
        help="train nothing: merge these records of earlier runs (of different models, "
        "with the same options) into one table and the figures, and into --json when "
        "given",
    )
    parser.add_argument(
        "--json",
        default=None,
        help="the record of the run (default landscape.json; with --replot, none unless "
        "given)",
    )
    parser.add_argument(
        "--figure",
        default="landscape.png",
        help="the width sweep goes to NAME-widths.png and the depth sweep to "
        "NAME-depths.png (default landscape.png; needs matplotlib)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", default=False, help="no progress bar"
    )


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
    given = [key for key in _RUN_OPTIONS if hasattr(args, key)]
    if args.replot and given:
        flag = "--" + given[0].replace("_", "-")
        print(
            f"matrank: error: `--replot` redraws recorded runs; `{flag}` is an option "
            "of a new run",
            file=sys.stderr,
        )
        return 2
    json_path = args.json or (None if args.replot else "landscape.json")
    paths = figure_paths(args.figure) if args.figure else {}
    # every output is checked before the work (minutes): a bad path fails now
    problems = [_output_problem("--json", Path(json_path))] if json_path else []
    problems += [_output_problem("--figure", path, figure=True) for path in paths.values()]
    if args.replot and json_path:
        inputs = [Path(p) for p in args.replot if Path(p).exists()]
        if any(Path(json_path).exists() and Path(json_path).samefile(p) for p in inputs):
            problems.append(
                f"`--json` must not be one of the --replot records; got {json_path!r}"
            )
    problem = next((p for p in problems if p), None)
    if problem:
        print(f"matrank: error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.figure:
            from ..plot import _pyplot

            _pyplot()  # fail before the work when matplotlib is missing
        options, models = _replot(args.replot) if args.replot else _study(args)
    except MatrankError as error:
        print(f"matrank: error: {error}", file=sys.stderr)
        return 2
    if json_path:
        record = {
            "experiment": "bias-free ReLU MLPs on scikit-learn's digits",
            "options": options,
            "models": [model.to_dict() for model in models],
        }
        try:
            Path(json_path).write_text(json.dumps(record, allow_nan=False))
        except OSError as error:  # the folder changed during the work
            print(
                f"matrank: error: cannot write {json_path!r}: {error.strerror}",
                file=sys.stderr,
            )
            return 2
    print(table(models))
    if json_path:
        print(f"wrote {json_path}", file=sys.stderr)
    if args.figure:
        _figures(models, paths)
    return 0


def _study(args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    """Train and study the sweeps' models; the options as run and the models."""
    from . import experiment

    options = {key: getattr(args, key, default) for key, default in _RUN_OPTIONS.items()}
    options["widths"] = list(
        experiment.WIDTHS if options["widths"] is None else options["widths"]
    )
    options["depths"] = list(
        experiment.DEPTHS if options["depths"] is None else options["depths"]
    )
    models = experiment.run(
        options["widths"],
        options["depths"],
        orderings=options["orderings"],
        hessian_orderings=options["hessian_orderings"],
        n_sizes=options["sizes"],
        seed=options["seed"],
        relative_threshold=options["relative_threshold"],
        target_loss=options["target_loss"],
        max_epochs=options["max_epochs"],
        samples=options["samples"],
        progress=not args.no_progress,
    )
    return options, models


def _replot(paths: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """The merged records' common options (with the widths and depths they hold) and
    their models."""
    from .record import merge

    options, models = merge(paths)
    options["widths"] = [m.width for m in models if "width" in m.sweeps]
    options["depths"] = [m.depth for m in models if "depth" in m.sweeps]
    return options, models


def _figures(models: list[Any], paths: dict[str, Path]) -> None:
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
