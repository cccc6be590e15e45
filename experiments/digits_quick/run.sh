#!/usr/bin/env bash
# The offline quick study: every method on scikit-learn's bundled 8×8 digits at ε 0.2 / 1 / 10
# (DP-SGD: 1 / 10), 3 seeds, classifier protocol, plus PEARL's critic ablation. No download;
# about an hour on 2 cores.
# Sweep axes from the environment (defaults: the full study), so a smaller run needs no
# second override of the same key, e.g. on a 2-core CPU:
#   EVAL=classifiers EPSILONS=1,10 SEEDS=0 bash experiments/digits_quick/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
METHODS="${METHODS:-pearl,pearl_tuned,dpmerf}"
EPSILONS="${EPSILONS:-0.2,1,10}"
DPSGD_EPSILONS="${DPSGD_EPSILONS:-1,10}"
SEEDS="${SEEDS:-0,1,2}"
EVAL="${EVAL:-classifiers}"
COMMON=(study=digits_quick dataset=digits seed="$SEEDS" eval="$EVAL")
dpsynth -m "${COMMON[@]}" method="$METHODS" privacy.epsilon="$EPSILONS" "$@"
dpsynth -m "${COMMON[@]}" method=dpsgd privacy.epsilon="$DPSGD_EPSILONS" "$@"
# PEARL's critic ablated (issue 13, 3 seeds): critic off, on PEARL's own release
# (method.release_of=pearl: a paired ablation, the rows differ by training alone), and the
# authors' unconstrained critic (no KL constraint, no gate, no floor; its own release); rows
# pearl_critic_off and pearl_critic_authors.
dpsynth -m "${COMMON[@]}" method=pearl +method.name=pearl_critic_off method.critic=false \
  method.release_of=pearl privacy.epsilon="$EPSILONS" "$@"
dpsynth -m "${COMMON[@]}" method=pearl +method.name=pearl_critic_authors method.critic_kl=0 \
  method.critic_gate=null method.critic_min_ess=0 privacy.epsilon="$EPSILONS" "$@"
dpsynth-report outputs/multirun/digits_quick --compare experiments/digits_quick/published.csv \
  --protocol digits-10k-test360 --out results/digits_quick  # experiments/protocols.csv
