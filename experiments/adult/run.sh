#!/usr/bin/env bash
# UCI Adult: PEARL, DP-MERF, DP-SGD, MST and AIM at ε 1 and 10 (δ = 1e-5), 3 seeds; the DP-MERF
# scikit-learn classifier suite trained on synthetic rows, tested on the real adult.test, with
# ROC-AUC / PR-AUC from scores, plus 1-/2-way marginal TVD and the real-data ceiling.
# Sweep axes from the environment (defaults: the full study), so a smaller run needs no
# second override of the same key, e.g. on a 2-core CPU:
#   EVAL=classifiers EPSILONS=1,10 SEEDS=0 bash experiments/adult/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
METHODS="${METHODS:-pearl,dpmerf,dpsgd,mst,aim}"
EPSILONS="${EPSILONS:-1,10}"
SEEDS="${SEEDS:-0,1,2}"
EVAL="${EVAL:-default}"
dpsynth -m study=adult dataset=adult data_dir="${DPSYNTH_DATA:-../shared/data/adult}" method="$METHODS" privacy.epsilon="$EPSILONS" \
  seed="$SEEDS" eval="$EVAL" "$@"
# PEARL's critic ablated (issue 13): the same preset with critic: false, on PEARL's own release
# (method.release_of=pearl: a paired ablation, the rows differ by training alone).
if [[ ",$METHODS," == *",pearl,"* ]]; then
  dpsynth -m study=adult dataset=adult data_dir="${DPSYNTH_DATA:-../shared/data/adult}" method=pearl \
    +method.name=pearl_critic_off method.critic=false method.release_of=pearl \
    privacy.epsilon="$EPSILONS" seed="$SEEDS" eval="$EVAL" "$@"
fi
dpsynth-report outputs/multirun/adult --compare experiments/adult/published.csv \
  --protocol sklearn11-adulttest-scoreauc --out results/adult  # experiments/protocols.csv
