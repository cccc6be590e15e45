#!/usr/bin/env bash
# Empirical privacy audit table (issue 7, items 1 and 2): PEARL and DP-MERF at ε 0.2 / 1 / 10, the
# embedding-only release PEARL makes on publicly balanced data, one DP-SGD discriminator step at
# the σ of an ε = 10 (and ε = 1) run, and planted bugs that the audit must flag. Writes
# results/audit/audit.{md,json}. One-shot part: 3–4 minutes; DP-SGD part: ~20 minutes (each
# trial is one real Opacus step, ~600/s) at one thread.
#
#   experiments/audit/run.sh                 # everything; 4e6 releases per neighbouring dataset
#   TRIALS=1000000 experiments/audit/run.sh  # quicker, weaker one-shot bounds
#   PART=dpsgd experiments/audit/run.sh      # DP-SGD rows only; keeps the one-shot rows of
#                                            # results/audit/audit.json
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
TRIALS="${TRIALS:-4000000}"
PART="${PART:-all}"                          # all | oneshot | dpsgd
DPSGD_TRIALS="${DPSGD_TRIALS:-100000}"       # steps per dataset at ε = 10
DPSGD_EPS1_TRIALS="${DPSGD_EPS1_TRIALS:-20000}"  # steps per dataset at ε = 1
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
  "${AUDIT[@]}" "$@" --trials "${RUN_TRIALS:-$TRIALS}" --json "$TMP/$name.json" || rc=$?
  if [[ "$rc" != "$expect" ]]; then
    echo "run.sh: $name exited with $rc, expected $expect" >&2
    exit 1
  fi
  ORDER+=("$TMP/$name.json")
}

KEEP=()
if [[ "$PART" != dpsgd ]]; then
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
else
  KEEP=(--keep "$OUT/audit.json")  # the one-shot rows of the last full run
fi
if [[ "$PART" != oneshot ]]; then
  # One full-batch (q = 1) DP discriminator step at the σ a run at ε = 10 (resp. 1) calibrates
  # (default conf/method/dpsgd.yaml, n = 60,000: Fashion-MNIST); claim = Opacus' one-step ε.
  RUN_TRIALS="$DPSGD_TRIALS" run 0 dpsgd-eps10 method=dpsgd privacy=eps10
  RUN_TRIALS="$DPSGD_TRIALS" run 1 dpsgd-eps10-no-clip method=dpsgd privacy=eps10 \
    --plant-bug no-clip
  RUN_TRIALS="$DPSGD_EPS1_TRIALS" run 0 dpsgd-eps1 method=dpsgd privacy=eps1
  for bug in half-noise half-sensitivity; do
    RUN_TRIALS="$DPSGD_EPS1_TRIALS" run 1 "dpsgd-eps1-$bug" method=dpsgd privacy=eps1 \
      --plant-bug "$bug"
  done
fi

python experiments/audit/table.py --out "$OUT" "${KEEP[@]}" "${ORDER[@]}"
