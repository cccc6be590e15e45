#!/usr/bin/env bash
# The noise-free ceiling of the PEARL / DP-MERF presets (issue 13): the same pipeline at
# ε = 10,000, where the Gaussian noise on the release is negligible (noise multiplier 0.0075),
# so what remains is what the embedding, the generator and its training can reach at all.
# ε = 10,000 is a vacuous guarantee: these rows are diagnostics, never leaderboard entries.
# The presets get 3 seeds, each variant seed 0: 22 runs, 1 thread a run, ~2 h on 2 CPU cores.
# FID=1 adds the 10k FID of the Fashion-MNIST preset (~33 min on 2 cores, 5.4 GB).
set -euo pipefail
cd "$(dirname "$0")/../.."
COMMON=(study=ceiling privacy.epsilon=10000 eval=classifiers 'eval.classifiers=[logreg,cnn]'
  eval.privacy_metrics.enabled=false "$@")
OFF=(method=pearl +method.name=pearl_critic_off method.critic=false)
BIG=(method.code_dim=32 method.hidden=400 method.base_channels=32 method.mid_channels=16)

ceiling_rows() {  # $@: the dataset's overrides
  dpsynth -m "${COMMON[@]}" "$@" seed=0 method=dpmerf
  dpsynth -m "${COMMON[@]}" "$@" seed=0,1,2 "${OFF[@]}"
  # more generator capacity: a 32-d code, 400 hidden units, 32 / 16 channels (1.8× the time)
  dpsynth -m "${COMMON[@]}" "$@" seed=0 "${OFF[@]}" method.name=pearl_critic_off_big "${BIG[@]}"
}
ceiling_rows dataset=fashion_mnist
ceiling_rows dataset=mnist data_dir="${DPSYNTH_DATA:-../shared/data/mnist}"
# three generators on one release (critic on, as the preset runs): MNIST's ε 10 ≥ 90 target
# (these three were made at the heuristic kernel width, before pearl_ensemble's sigma0_scale;
# re-running them now draws σ0² × ¼, and MNIST's study runs ⅛)
dpsynth -m "${COMMON[@]}" dataset=mnist data_dir="${DPSYNTH_DATA:-../shared/data/mnist}" \
  seed=0,1,2 method=pearl_ensemble
# Fashion-MNIST's ε 10 ≥ 80 target, at the preset's narrower kernel (σ0² × ¼) and its ε ≥ 10 rules
# (the committed records were made under the 6,000-step rule; a re-run now trains batch 300)
dpsynth -m "${COMMON[@]}" dataset=fashion_mnist seed=0,1,2 method=pearl_ensemble

# Fashion-MNIST only (pearl_tuned was selected on MNIST, so dpsynth refuses it there): the
# tuned preset, a larger latent code alone, more frequencies, more steps
FM=("${COMMON[@]}" dataset=fashion_mnist)
dpsynth -m "${FM[@]}" seed=0,1,2 method=pearl_tuned
dpsynth -m "${FM[@]}" seed=0 "${OFF[@]}" method.name=pearl_critic_off_code32 method.code_dim=32
dpsynth -m "${FM[@]}" seed=0 "${OFF[@]}" method.name=pearl_critic_off_k5000 \
  method.num_features=5000
dpsynth -m "${FM[@]}" seed=0 method=pearl_tuned method.name=pearl_tuned_10k method.steps=10000
if [[ "${FID:-0}" == 1 ]]; then
  dpsynth study=ceiling_fid dataset=fashion_mnist privacy.epsilon=10000 seed=0 "${OFF[@]}" \
    eval=paper 'eval.classifiers=[logreg]' eval.privacy_metrics.enabled=false "$@"
fi
dpsynth-report outputs/multirun/ceiling --out results/ceiling --protocol lenet60k-test-fid10k
