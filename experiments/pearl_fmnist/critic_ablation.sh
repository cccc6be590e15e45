#!/usr/bin/env bash
# PEARL's critic ablated on Fashion-MNIST (issue 13): the default (noise-calibrated KL
# constraint + signal gate + effective-frequency floor), the critic off, the authors'
# unconstrained critic, the default without the floor (pearl-2's critic), and each piece alone;
# each variant a preset name of its own, so its own release, except the critic-off row, which
# trains on PEARL's (method.release_of=pearl: a paired ablation); 3 seeds,
# logistic regression on 60k synthetic images (EVAL=classifiers for MLP/CNN too).
# Axes from the environment: EPSILONS (default 1,10), SEEDS (0,1,2), EVAL (fast).
set -euo pipefail
cd "$(dirname "$0")/../.."
EPSILONS="${EPSILONS:-1,10}"
SEEDS="${SEEDS:-0,1,2}"
EVAL="${EVAL:-fast}"
COMMON=(study=pearl_critic_ablation dataset=fashion_mnist method=pearl
  privacy.epsilon="$EPSILONS" seed="$SEEDS" eval="$EVAL" eval.privacy_metrics.enabled=false)
dpsynth -m "${COMMON[@]}" "$@"                                                # default
dpsynth -m "${COMMON[@]}" +method.name=pearl_critic_off method.critic=false \
  method.release_of=pearl "$@"  # on PEARL's own release: a paired ablation
dpsynth -m "${COMMON[@]}" +method.name=pearl_critic_authors method.critic_kl=0 \
  method.critic_gate=null method.critic_min_ess=0 "$@"
dpsynth -m "${COMMON[@]}" +method.name=pearl_critic_no_floor method.critic_min_ess=0 "$@"
dpsynth -m "${COMMON[@]}" +method.name=pearl_critic_kl_only method.critic_gate=null \
  method.critic_min_ess=0 "$@"
dpsynth -m "${COMMON[@]}" +method.name=pearl_critic_gate_only method.critic_kl=0 \
  method.critic_min_ess=0 "$@"
dpsynth -m "${COMMON[@]}" +method.name=pearl_critic_floor_only method.critic_kl=0 \
  method.critic_gate=null "$@"
dpsynth-report outputs/multirun/pearl_critic_ablation --out results/pearl_fmnist/critic_ablation \
  --protocols experiments/protocols.csv --protocol lenet60k-test-fid10k
