#!/usr/bin/env bash
# UCI Adult: PEARL, DP-MERF and DP-SGD at ε 1 and 10 (δ = 1e-5), 3 seeds; the DP-MERF
# scikit-learn classifier suite trained on synthetic rows, tested on the real adult.test, with
# ROC-AUC / PR-AUC from scores, plus 1-/2-way marginal TVD and the real-data ceiling.
set -euo pipefail
cd "$(dirname "$0")/../.."
dpsynth -m study=adult dataset=adult data_dir="${DPSYNTH_DATA:-../shared/data/adult}" \
  method=pearl,dpmerf,dpsgd privacy.epsilon=1,10 seed=0,1,2 eval=default "$@"
dpsynth-report outputs/multirun/adult --compare experiments/adult/published.csv --out results/adult
