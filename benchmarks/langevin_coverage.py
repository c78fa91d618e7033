"""Does the default Langevin stderr cover N(τ) at the τ it reports, spectrum by spectrum?

Run: .venv/bin/python benchmarks/langevin_coverage.py [--trials 20] [--kinds ...]

Diagonal quadratics (scipy sparse, so a gradient is cheap) whose eigenvalues near the
threshold have a chosen local shape: 20 eigenvalues from 1 to 1e-2 set the step, then
- ``log-flat``: 1,500 eigenvalues log-uniform over [1e-7, 1e-2] (c = 0: the same number
  per e-fold everywhere),
- ``uniform``: 3,000 uniform over [0, 1e-2] (c = 1: per e-fold ∝ λ),
- ``thinning``: 3,000 at 1e-2·sqrt(U) (c = 2: per e-fold ∝ λ², steeper than the fit's
  shapes, which stop at c = 1),
- ``piling``: 1e-2·i^{-1.5}, i ≤ 1,500 (c = −2/3: crowding towards zero),
- ``gapped``: 200 in [10^{-2.5}, 1e-2], all equilibrated long before the run ends,
each with 500 zeros. Per trial (a fresh draw, estimator seed = trial): z = (estimate −
N(τ))/stderr; the table gives how many |z| ≤ 2, the RMS and largest |z|, and the mean
stderr with its parts (sampling, τ's, edge). With 8 chains an exact estimator would have
≈ 91 % of trials within 2 stderr (a t with 7 degrees of freedom).
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse

import matrank


def spectrum(kind: str, rng: np.random.Generator) -> np.ndarray:
    top = np.geomspace(1.0, 1e-2, 20)
    if kind == "log-flat":
        low = 10 ** rng.uniform(-7, -2, 1500)
    elif kind == "uniform":
        low = rng.uniform(0, 1e-2, 3000)
    elif kind == "thinning":
        low = 1e-2 * np.sqrt(rng.uniform(0, 1, 3000))
    elif kind == "piling":
        low = 1e-2 * np.arange(1, 1501) ** -1.5
    elif kind == "gapped":
        low = 10 ** rng.uniform(-2.5, -2, 200)
    else:
        raise ValueError(kind)
    return np.r_[top, low, np.zeros(500)]


def main() -> None:
    kinds = ["log-flat", "uniform", "thinning", "piling", "gapped"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kinds", nargs="+", default=kinds, choices=kinds)
    args = parser.parse_args()
    print(
        f"{'spectrum':>10s} {'n':>5s} {'≤2σ':>6s} {'rms z':>6s} {'max|z|':>6s} "
        f"{'stderr':>7s} {'sampling':>8s} {'τ':>6s} {'edge':>6s} {'N(τ)':>7s}"
    )
    for kind in args.kinds:
        z, parts, counted = [], [], []
        for trial in range(args.trials):
            mu = spectrum(kind, np.random.default_rng(100 + trial))
            result = matrank.LangevinRank().estimate(scipy.sparse.diags(mu), seed=trial)
            n_tau = int((mu > result.threshold).sum())
            info = result.diagnostics
            z.append((result.rank - n_tau) / result.stderr)
            parts.append(
                [
                    result.stderr,
                    info["sampling_stderr"],
                    info["threshold_stderr"],
                    info["edge_stderr"],
                ]
            )
            counted.append(n_tau)
        z = np.abs(np.asarray(z))
        mean = np.mean(parts, axis=0)
        print(
            f"{kind:>10s} {mu.size:5d} {int((z <= 2).sum()):3d}/{len(z):<2d} "
            f"{float(np.sqrt(np.mean(z**2))):6.2f} {z.max():6.2f} {mean[0]:7.2f} "
            f"{mean[1]:8.2f} {mean[2]:6.2f} {mean[3]:6.2f} {np.mean(counted):7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
