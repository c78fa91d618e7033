"""Kiselev & Grabovoy's two sweeps on scikit-learn's digits, with the Hessian terms measured.

Run: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/landscape_digits.py
     [--widths 4 8 16 32 64] [--depths 1 2 3 4 5 6] [--orderings 100]
     [--hessian-orderings 10] [--seed 0] [--target-loss 0.05] [--max-epochs 300]
     (``--target-loss 0 --max-epochs 10``: the paper's protocol, fixed epochs)

Bias-free ReLU MLPs (``matrank.landscape_experiment``: widths at depth 5, depths at width
16, depth = hidden layers), trained with Adam to ``--target-loss``, then
``dataset_size_study`` at the trained weights with the Hessian terms measured at
k = 10, 100, 1000 and N − 1, each the mean over the first ``--hessian-orderings``
orderings. One row per model, printed as the model finishes:

- ``slope``: the least-squares slope of log Δ_k against log k over k ≥ 10 (the paper
  predicts −1), Δ_k the mean over the orderings of |L_{k+1}(θ*) − L_k(θ*)|;
- ``Δ(100)``, ``Δ(1000)``; the measured ``‖H_{k+1} − H_k‖₂`` at the same k;
- ``bound/meas``: the theorem's constant ``2·C_H/(k+1)`` (``M_W``, ``M_x`` read off the
  model and the data) over the measured ``‖H_{k+1} − H_k‖₂`` at k = 1000 — how loose the
  paper's bound is;
- ``quad/bound``: the largest ratio, over k and the radii 1e-3, 1e-2, 1e-1 (relative to
  ‖θ*‖), of the measured quadratic term ``|L_{k+1} − L_k|(θ* + δ)`` to the right-hand side
  with the measured Hessian difference; above 1 the second-order expansion fails there,
  and the radius where it first does is printed;
- ``rank/n``: rank(H_{N−1}) / n at 1 % of λmax(H_N).

Then the paper's two trends: Spearman's ρ between the width (or the depth) and the mean
Δ_k over k ≥ 10 (with Δ(100) and Δ(1000) beside it), over all the models and over those
that reached the target loss; a trend holds (or is refuted) where ρ has the predicted
(or the opposite) sign at an exact permutation p < 0.05, and is unresolved otherwise
(with four models p cannot go below 1/12).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from scipy.stats import spearmanr

from matrank import landscape_experiment as experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", type=int, nargs="*", default=list(experiment.WIDTHS))
    parser.add_argument("--depths", type=int, nargs="*", default=list(experiment.DEPTHS))
    parser.add_argument("--orderings", type=int, default=100)
    parser.add_argument("--hessian-orderings", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-loss", type=float, default=0.05)
    parser.add_argument("--max-epochs", type=int, default=300)
    args = parser.parse_args()

    X, _ = experiment.digits()
    N = len(X)
    sizes = [10, 100, 1000, N - 1]
    protocol = (
        f"Adam to cross-entropy ≤ {args.target_loss} (at most {args.max_epochs} epochs)"
        if args.target_loss > 0
        else f"Adam for {args.max_epochs} epochs"
    )
    print(
        f"bias-free ReLU MLPs on the {N} digits; {protocol}; {args.orderings} orderings, "
        f"the Hessian terms over {args.hessian_orderings}"
    )
    print(
        f"{'model':20s} {'n':>6s} {'epochs':>6s} {'loss':>7s} {'slope':>6s} "
        f"{'Δ(100)':>9s} {'Δ(1000)':>9s} {'‖ΔH‖(100)':>10s} {'‖ΔH‖(1000)':>10s} "
        f"{'bound/meas':>10s} {'quad/bound':>10s} {'fails at':>8s} {'rank/n':>7s}",
        flush=True,
    )
    start = time.perf_counter()
    models = experiment.run(
        args.widths,
        args.depths,
        orderings=args.orderings,
        hessian_orderings=args.hessian_orderings,
        sizes=sizes,
        seed=args.seed,
        target_loss=args.target_loss,
        max_epochs=args.max_epochs,
        progress=False,
        on_model=_print_row,
    )
    if not all(model.training.reached for model in models):
        print("* did not reach the target loss")
    for sweep in ("width", "depth"):
        for subset, members in (
            ("all", [m for m in models if sweep in m.sweeps]),
            (
                "at the target loss",
                [m for m in models if sweep in m.sweeps and m.training.reached],
            ),
        ):
            members = sorted(members, key=lambda m: getattr(m, sweep))
            if len(members) < 3:
                continue
            values = [getattr(m, sweep) for m in members]
            mean_delta = [m.study.delta_mean[9:].mean() for m in members]
            rho, p = _spearman_exact(values, mean_delta)
            rest = "; ".join(
                f"{name} ρ = {spearmanr(values, series).statistic:+.2f}"
                for name, series in (
                    ("Δ(100)", [m.study.delta_mean[99] for m in members]),
                    ("Δ(1000)", [m.study.delta_mean[999] for m in members]),
                )
            )
            sign = -1 if sweep == "width" else 1
            if p < 0.05:
                verdict = "holds" if sign * rho > 0 else "is refuted"
            else:
                verdict = "is not resolved (no significant trend)"
            word = "wider → smaller" if sweep == "width" else "deeper → larger"
            print(
                f"{sweep} sweep, {subset} ({'/'.join(map(str, values))}): mean Δ_k over "
                f"k ≥ 10: Spearman ρ = {rho:+.2f} (p = {p:.3f}); {rest}\n"
                f"  the paper's trend ({word} Δ_k) {verdict} on the digits"
            )
    print(f"total {time.perf_counter() - start:.0f} s")


def _print_row(model: experiment.Model) -> None:
    """One model's row, printed as soon as the model is studied."""
    study = model.study
    at = {k: study.delta_mean[k - 1] for k in (100, 1000)}
    norm = dict(zip(study.sizes.tolist(), study.hessian_difference, strict=True))
    theorem_over_measured = 2 * study.constant / 1001 / norm[1000]
    ratio = study.measured / study.bound
    failing = np.nonzero((ratio > 1).any(axis=0))[0]
    fails_at = f"{study.radii[failing[0]]:g}" if failing.size else "-"
    reached = "" if model.training.reached else "*"
    print(
        f"{model.label:20s} {study.dim:6d} {model.training.epochs:6d} "
        f"{model.training.loss:6.4f}{reached:1s} {experiment.slope(study):6.2f} "
        f"{at[100]:9.2e} {at[1000]:9.2e} {norm[100]:10.2e} {norm[1000]:10.2e} "
        f"{theorem_over_measured:10.2e} {ratio.max():10.3f} {fails_at:>8s} "
        f"{study.rank[-1] / study.dim:7.4f}",
        flush=True,
    )


def _spearman_exact(x, y) -> tuple[float, float]:
    """Spearman's ρ and its exact two-sided p-value over all orderings of ``y`` (few
    models: the t approximation calls a perfect ρ of four points p = 0; it is 1/12)."""
    rho = float(spearmanr(x, y).statistic)
    ranks = np.argsort(np.argsort(y))
    extreme = [
        abs(spearmanr(x, [ranks[i] for i in order]).statistic) >= abs(rho) - 1e-12
        for order in itertools.permutations(range(len(y)))
    ]
    return rho, float(np.mean(extreme))


if __name__ == "__main__":
    main()
