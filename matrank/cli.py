"""The ``matrank`` command line: ``estimate``, ``demo`` and ``methods``.

A thin layer over :func:`matrank.estimate_rank`: no numerics here. Exit codes: 0 for an
estimate that converged, 1 for one that did not, 2 for usage errors and bad input (a
one-line message, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._api import ESTIMATORS, estimate_rank
from ._validation import MatrankError, relative
from .effective import effective_ranks
from .numerics.threshold import INTERVAL_DELTA

__all__ = ["main"]

METHOD_NOTES = {
    "exact": "dense eigvalsh in float64; ground truth up to n ≈ 16k; cost n matvecs "
    "(free for explicit matrices) and O(n³) time",
    "lanczos": "block Krylov count, exact and certified while the rank fits the basis "
    "(r to 2r matvecs); SLQ ± stderr beyond; needs only Hessian-vector products",
    "polynomial": "Chebyshev step filter with p(0) = 0, degree from the density of "
    "states' plateau, deflation of a small rank; ≤ 15,000 matvecs; a soft count ± stderr "
    "(variant='ubaru-saad': the faithful port, degree 50 × 300 probes)",
    "langevin": "preconditioned Langevin dynamics, gradients only: 8 chains, virial "
    "readout, η from the largest curvature, ≤ 15,000 gradients; a soft count ± stderr "
    "matched to the threshold it reports (variant='paper': Bar et al.'s eq. 20)",
    "evolution": "covariance of the best Gaussian samples around the minimum, loss values "
    "only; an exact count for small n (≤ 2048), ≈ 4n/(keep·(1 − c)²) evaluations",
}


def load_matrix(path: str) -> Any:
    """Load a matrix from ``.npy``, ``.npz``, ``.mtx`` or ``.pt`` without running pickles."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        import scipy.sparse

        try:
            return scipy.sparse.load_npz(path)
        except (ValueError, KeyError):
            with np.load(path, allow_pickle=False) as archive:
                if len(archive.files) != 1:
                    raise MatrankError(
                        f"`{path}` must hold exactly one array or a scipy sparse matrix; "
                        f"got arrays {archive.files}."
                    ) from None
                return archive[archive.files[0]]
    if suffix == ".mtx":
        import scipy.io

        _check_matrix_market(path)
        return scipy.io.mmread(path)
    if suffix in (".pt", ".pth"):
        import pickle
        import re
        import warnings

        import torch

        try:
            with warnings.catch_warnings():  # torch's notes on the pickle protocol
                warnings.simplefilter("ignore")
                return torch.load(path, weights_only=True, map_location="cpu")
        except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as error:
            # torch's own text suggests weights_only=False: unsafe advice for a file
            # from elsewhere, so only the object it refused is quoted
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            what = f"a Python object ({found.group(1)})" if found else "no tensors"
            raise MatrankError(
                f"`{path}` must hold tensors only (it is read without running any code); "
                f"got a file holding {what}."
            ) from None
    raise MatrankError(f"`FILE` must end in .npy, .npz, .mtx or .pt; got {path!r}.")


# estimate_rank's own arguments: the command line sets them with flags
_OWN_ARGUMENTS = {
    "obj": "FILE",
    "method": "--method",
    "seed": "--seed",
    "progress": "--no-progress",
    "checkpoint": "--checkpoint",
    "checkpoint_every": "--checkpoint-every",
    "keep_checkpoint": "--keep-checkpoint",
}


def _unexpected(error: BaseException) -> int:
    """An error no check named (a bad option's type deep in torch, a bug of ours): one
    line and exit 2, as for every other error; the Python API shows the traceback."""
    print(
        f"matrank: error: {type(error).__name__}: {_one_line(error)} (call "
        "matrank.estimate_rank from Python for the traceback)",
        file=sys.stderr,
    )
    return 2


def _plot_problem(path: str) -> str | None:
    """Why a figure cannot be saved at ``path`` (checked before the estimate), or None."""
    target = pathlib.Path(path)
    if target.is_dir():
        return f"a file, not the folder {path!r}"
    if not target.parent.is_dir():
        return f"in a folder that exists; got {path!r}"
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "left out: matplotlib is not installed (pip install 'matrank[plot]')"
    formats = Figure().canvas.get_supported_filetypes()
    if target.suffix.lower().lstrip(".") not in formats:
        return f"a file name ending in one of .{', .'.join(sorted(formats))}; got {path!r}"
    return None


def _one_line(error: BaseException) -> str:
    """The first line of an error's text (library messages can run to many)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_matrix_market(path: str) -> None:
    """Refuse a header that declares more entries than the file can hold, or a matrix
    larger than the memory available, before reading any entry."""
    import os

    import scipy.io

    rows, columns, entries, layout, _, _ = scipy.io.mminfo(path)
    size = os.path.getsize(path)
    declared = rows * columns if layout == "array" else entries
    if declared > size // 2:  # each entry takes at least two bytes ("0\n")
        raise MatrankError(
            f"`{path}` must hold the entries its header declares; got a header "
            f"declaring {declared:,} entries ({rows:,} × {columns:,}, {layout}) in a "
            f"file of {size:,} bytes."
        )
    # the entries, and for any estimate a few dozen vectors of length n (a sparse
    # matrix's row pointers, probe blocks)
    needed = (8 if layout == "array" else 24) * declared + 8 * 32 * rows
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > available:
        raise MatrankError(
            f"`{path}` must fit in memory; got a {rows:,} × {columns:,} matrix with "
            f"{declared:,} entries, needing {needed / 2**30:.1f} GiB against "
            f"{available / 2**30:.1f} GiB available."
        )


def _threshold(text: str) -> float | str:
    if text == "floor":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or 'floor'; got {text!r}"
        ) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1); got {text!r}")
    return value


def _option(text: str) -> tuple[str, Any]:
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE; got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matrank", description="Estimate the numerical rank of symmetric PSD matrices."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    estimate = commands.add_parser(
        "estimate", help="estimate the rank of a matrix in a file"
    )
    estimate.add_argument("file", help=".npy, .npz (dense or scipy sparse), .mtx or .pt")
    estimate.add_argument(
        "--method",
        default="auto",
        choices=["auto", *ESTIMATORS],
        help="the estimator (default: auto, which picks by size and what the input "
        "offers and says why; `matrank methods` lists them)",
    )
    thresholds = estimate.add_mutually_exclusive_group()
    thresholds.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="eigenvalue threshold τ, or 'floor' to count everything above the noise "
        "floor (default: the widest-plateau rule)",
    )
    thresholds.add_argument(
        "--relative-threshold",
        type=_fraction,
        default=None,
        metavar="FRACTION",
        help="τ = FRACTION·‖H‖₂, the norm from a short Lanczos run (e.g. 1e-6)",
    )
    estimate.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the estimator's random generator (default: 0); the same seed "
        "gives the same answer",
    )
    estimate.add_argument("--json", action="store_true", help="print the result as JSON")
    estimate.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (shown on stderr by default; Ctrl-C returns the estimate so far)",
    )
    estimate.add_argument(
        "--option",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        type=_option,
        help="a hyperparameter of the method, e.g. --option block_size=8 (repeatable; "
        "VALUE is read as JSON, else taken as a string)",
    )
    estimate.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="save the run's state here as it goes and resume from it when it exists "
        "(removed when the estimate finishes)",
    )
    estimate.add_argument(
        "--checkpoint-every",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="seconds at least between two checkpoint writes (default 60)",
    )
    estimate.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep the checkpoint after the estimate finishes",
    )
    estimate.add_argument(
        "--effective-ranks",
        action="store_true",
        help="also the stable rank, participation ratio and entropy effective rank, and "
        "the count at the result's threshold split by sign (matrank.effective_ranks)",
    )
    estimate.add_argument(
        "--interval-delta",
        type=_fraction,
        metavar="DELTA",
        help="show the count at τ·(1 ∓ DELTA) (default: 0.5, shown when the spectrum "
        "has no plateau; always in the JSON)",
    )
    estimate.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="save the counting curve / density / loss trace here (needs matplotlib)",
    )
    demo = commands.add_parser("demo", help="every estimator on a built-in problem")
    demo.add_argument("--n", type=int, default=2000, help="dimension (default 2000)")
    demo.add_argument("--rank", type=int, default=150, help="true rank (default 150)")
    demo.add_argument("--seed", type=int, default=0)
    commands.add_parser("methods", help="the available methods and when to use them")
    _landscape_parser(commands)
    return parser


def _landscape_parser(commands: Any) -> None:
    from .landscape.cli import add_parser

    add_parser(commands)


def _landscape(args: argparse.Namespace) -> int:
    from .landscape.cli import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.command == "methods":
        for name in ESTIMATORS:
            print(f"{name:12s} {METHOD_NOTES.get(name, '')}")
        return 0
    if args.command == "demo":
        from ._demo import demo

        return demo(args.n, args.rank, args.seed)
    if args.command == "landscape":
        return _landscape(args)
    try:
        matrix = load_matrix(args.file)
    except (MatrankError, OSError) as error:
        print(f"matrank: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"matrank: error: {args.file!r} does not fit in memory", file=sys.stderr)
        return 2
    except Exception as error:  # a file that cannot be parsed at all
        print(
            f"matrank: error: cannot read {args.file!r}: {_one_line(error)}",
            file=sys.stderr,
        )
        return 2
    options = dict(args.option)
    flags = sorted(set(options) & set(_OWN_ARGUMENTS))
    if flags:
        print(
            f"matrank: error: `--option {flags[0]}` names an argument of the command "
            f"itself, not a hyperparameter: use {_OWN_ARGUMENTS[flags[0]]}",
            file=sys.stderr,
        )
        return 2
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.relative_threshold is not None:
        options["threshold"] = relative(args.relative_threshold)
    if args.plot:
        problem = _plot_problem(args.plot)
        if problem:
            print(f"matrank: error: `--plot` must be {problem}", file=sys.stderr)
            return 2
    try:
        result = estimate_rank(
            matrix,
            method=args.method,
            seed=args.seed,
            progress=not args.no_progress,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            keep_checkpoint=args.keep_checkpoint,
            **options,
        )
    except (MatrankError, OSError) as error:
        print(f"matrank: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error):
            return _unexpected(error)
        n = getattr(matrix, "shape", ("?",))[0]
        print(
            f"matrank: error: out of memory in method={args.method!r} on a {n} × {n} "
            "matrix; method='lanczos' needs only a basis of the rank's size (pass "
            "--option max_basis=K to bound it), method='exact' needs 8n² bytes",
            file=sys.stderr,
        )
        return 2
    except Exception as error:
        return _unexpected(error)
    delta = args.interval_delta or INTERVAL_DELTA
    output = result.to_dict(delta=delta)
    if args.effective_ranks:
        try:
            effective = effective_ranks(matrix, seed=args.seed, result=result)
        except MatrankError as error:
            print(f"matrank: error: {_one_line(error)}", file=sys.stderr)
            return 2
        output["effective_ranks"] = effective.to_dict()
    text = result.describe(delta, interval=args.interval_delta is not None)
    print(json.dumps(output) if args.json else text)
    if args.effective_ranks and not args.json:
        print(effective)
    if args.plot:
        try:
            from .plot import save_figure

            panels = save_figure(result, args.plot)
        except (MatrankError, OSError, ValueError) as error:
            print(f"matrank: error: {_one_line(error)}", file=sys.stderr)
            return 2
        print(f"saved {', '.join(panels)} to {args.plot}", file=sys.stderr)
    return 0 if result.converged else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
