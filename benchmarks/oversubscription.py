"""Small estimates on a loaded machine: torch's default threads against one thread.

Two copies of the same small estimate run at once on the 2-core box (the load a second
job or a test worker makes), each with torch's default thread count; once with matrank's
rule that runs problems of n ≤ 512 on one thread (``matrank._run.SINGLE_THREAD_MAX_DIM``)
switched off, once with it on. Prints the seconds of each copy and the ratio.

    python benchmarks/oversubscription.py [--n 30] [--method langevin]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import sys, time
import matrank, matrank._run as run
from matrank.testing import rotated_spectrum
if sys.argv[1] == "off":
    run.SINGLE_THREAD_MAX_DIM = 0
matrix = rotated_spectrum(int(sys.argv[2]), 5, cond=2.0, seed=0)
start = time.perf_counter()
matrank.estimate_rank(matrix, method=sys.argv[3], seed=0)
print(time.perf_counter() - start)
"""


def pair(rule: str, n: int, method: str) -> list[float]:
    """Seconds of two concurrent copies."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, rule, str(n), method],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    return [float(process.communicate()[0]) for process in processes]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--method", default="langevin")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"two concurrent {args.method} estimates, n = {args.n}, torch's default threads")
    print(f"{'rule':>10s} {'seconds (each copy)':>28s}")
    results = {}
    for _ in range(args.repeats):
        for rule in ("off", "on"):
            seconds = pair(rule, args.n, args.method)
            results.setdefault(rule, []).extend(seconds)
            label = "one thread" if rule == "on" else "default"
            print(f"{label:>10s} {', '.join(f'{s:.2f}' for s in seconds):>28s}")
    off, on = results["off"], results["on"]
    print(
        f"median ratio default / one thread: {sorted(off)[len(off) // 2] / sorted(on)[len(on) // 2]:.1f}"
    )


if __name__ == "__main__":
    main()
