#!/usr/bin/env bash
# Reproduces the Fashion-MNIST rows of the DPDM / SoK-PPDS tables: PEARL (authors' preset and
# ours) and DP-MERF at ε 0.2 / 1 / 10, DP-SGD at 1 / 10, δ = 1e-5, 3 seeds, the published protocol
# (eval=paper: 60k synthetic images, logistic regression / MLP / CNN, 10k-sample FID).
# Extra arguments go to dpsynth (any other key).
# Resumable: re-running finishes only the missing jobs and never re-spends a release.
# Sweep axes from the environment (defaults: the full study), so a smaller run needs no
# second override of the same key, e.g. on a 2-core CPU:
#   EVAL=classifiers EPSILONS=1,10 SEEDS=0 bash experiments/fmnist_table/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
METHODS="${METHODS:-pearl,pearl_tuned,pearl_ensemble,dpmerf}"  # the one-shot methods ('' for none)
DPSGD_EPSILONS="${DPSGD_EPSILONS:-1,10}"           # '' for no DP-SGD runs
EPSILONS="${EPSILONS:-0.2,1,10}"
SEEDS="${SEEDS:-0,1,2}"
EVAL="${EVAL:-paper}"
# Our evaluation protocol (an id of experiments/protocols.csv), named in the report's header;
# only published rows of the same protocol get a verdict.
case "$EVAL" in
  default) PROTOCOL=lenet60k-test-fid2k ;;
  *) PROTOCOL=lenet60k-test-fid10k ;;  # paper; classifiers/fast: the same classifiers, no FID
esac
COMMON=(study=fmnist_table dataset=fashion_mnist seed="$SEEDS" eval="$EVAL")
if [[ -n "$METHODS" ]]; then
  dpsynth -m "${COMMON[@]}" method="$METHODS" privacy.epsilon="$EPSILONS" "$@"
fi
if [[ -n "$DPSGD_EPSILONS" ]]; then
  dpsynth -m "${COMMON[@]}" method=dpsgd privacy.epsilon="$DPSGD_EPSILONS" "$@"
fi
dpsynth-report outputs/multirun/fmnist_table --compare experiments/fmnist_table/published.csv \
  --protocol "$PROTOCOL" --out results/fmnist_table
