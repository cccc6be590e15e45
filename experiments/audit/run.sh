#!/usr/bin/env bash
# Empirical privacy audit table (issue 7, item 1): PEARL and DP-MERF at ε 0.2 / 1 / 10, the
# embedding-only release PEARL makes on publicly balanced data, and planted bugs that the audit
# must flag. Writes results/audit/audit.{md,json}. About 3–4 minutes at one thread.
#
#   experiments/audit/run.sh                 # 4e6 releases per neighbouring dataset
#   TRIALS=1000000 experiments/audit/run.sh  # quicker, weaker bounds
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
TRIALS="${TRIALS:-4000000}"
OUT=results/audit
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# The dpsynth-audit console command (python -m works before the entry point is installed).
AUDIT=(python -m dpsynth.privacy.audit)
ORDER=()

# run EXPECTED_EXIT NAME AUDIT_ARGS...: an honest row must exit 0, a planted bug must exit 1.
run() {
  local expect="$1" name="$2"
  shift 2
  local rc=0
  "${AUDIT[@]}" "$@" --trials "$TRIALS" --json "$TMP/$name.json" || rc=$?
  if [[ "$rc" != "$expect" ]]; then
    echo "run.sh: $name exited with $rc, expected $expect" >&2
    exit 1
  fi
  ORDER+=("$TMP/$name.json")
}

for method in pearl dpmerf; do
  for eps in 0.2 1 10; do
    run 0 "$method-eps$eps" "method=$method" "privacy=eps$eps"
  done
done
for eps in 0.2 1 10; do
  run 0 "pearl-balanced-eps$eps" method=pearl "privacy=eps$eps" --balanced
done
for method in pearl dpmerf; do
  for bug in half-noise half-sensitivity; do
    run 1 "$method-eps1-$bug" "method=$method" privacy=eps1 --plant-bug "$bug"
  done
done
run 1 pearl-balanced-eps1-half-sensitivity method=pearl privacy=eps1 --balanced \
  --plant-bug half-sensitivity

python experiments/audit/table.py --out "$OUT" "${ORDER[@]}"
