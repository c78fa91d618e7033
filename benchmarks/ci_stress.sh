#!/usr/bin/env bash
# The default test suite under the conditions a fresh clone meets: several runs in a row,
# torch and BLAS on one thread and on two, and two busy-loop processes on both cores.
# Prints one summary line per run and exits non-zero if any run failed.
#
#   bash benchmarks/ci_stress.sh            # 5 idle + OMP 1 + OMP 2 + 5 busy = 12 runs
#   RUNS=2 BUSY_RUNS=2 bash benchmarks/ci_stress.sh
#   RUNS=0 OMP=0 BUSY_RUNS=5 bash benchmarks/ci_stress.sh   # the loaded runs alone
set -uo pipefail
cd "$(dirname "$0")/.."
make --quiet .venv/.matrank-installed >/dev/null || exit 2
runs=${RUNS:-5}
busy_runs=${BUSY_RUNS:-5}
logs=$(mktemp -d)
failed=0

suite() {  # NAME [ENV=VALUE ...]: one default run, its closing line and wall time
  local name=$1
  shift
  local start=$SECONDS
  env "$@" .venv/bin/python -m pytest -q -p no:cacheprovider >"$logs/$name.log" 2>&1
  local code=$?
  [ "$code" -eq 0 ] || failed=$((failed + 1))
  printf '%-10s exit %d  %4d s  %s\n' "$name" "$code" $((SECONDS - start)) \
    "$(tail -n 1 "$logs/$name.log")"
}

for i in $(seq 1 "$runs"); do suite "idle-$i"; done
if [ "${OMP:-1}" != 0 ]; then
  suite omp-1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  suite omp-2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
fi
busy=()
for _ in 1 2; do
  (while :; do :; done) &
  busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null' EXIT
for i in $(seq 1 "$busy_runs"); do suite "busy-$i"; done
kill "${busy[@]}" 2>/dev/null
echo "logs in $logs; $failed failed"
[ "$failed" -eq 0 ]
