"""PEARL: data synthesis via private embeddings and adversarial reconstruction learning.

Liew, Takahashi, Ueno, "PEARL: Data Synthesis via Private Embeddings and Adversarial
Reconstruction Learning", ICLR 2022 (arXiv 2106.04590).

The private data are sanitised once: the class-conditional empirical characteristic function
at k public frequencies t_i ~ N(0, I/σ0²) (the same embedding as DP-MERF, see
:mod:`dpsynth.methods.oneshot`). Generator training is post-processing of that release, with an
adversarial critic that re-weights the frequencies: a precision vector s ∈ R^d (init σ0²)
defines

    α_i = softmax_i( Σ_d t_{i,d}² (σ0² − s_d) / 2 ),

the self-normalised importance weights of N(0, diag(1/s)) against the sampling distribution
N(0, I/σ0²). The critic ascends the weighted CF distance Σ_i α_i ℓ_i every ``critic_every``
generator steps on a fresh generated batch; the generator descends it. At s = σ0² the weights
are uniform and the loss is DP-MERF's.

A critic that knows the noise (dpsynth; issue 13). The release's noise is public (its std σ_e per
entry is in the ledger), and with it two failure modes of the authors' critic are avoidable:

* **Noise-calibrated KL constraint.** The critic ascends Σ α_i ℓ_i − τ·KL(α ‖ uniform), the
  entropy-regularised (Gibbs) form of the worst-case re-weighting (cf. distributionally robust
  optimisation with a KL ball, Hu & Hong 2013), whose unconstrained optimum is α_i ∝ exp(ℓ_i/τ).
  Per frequency, the release noise adds σ_e²·χ²_{2C} to ℓ_i (2C entries: cos and sin × C
  classes), a fluctuation of sd 2σ_e²√C, and the largest of k such fluctuations is about
  √(2 ln k) sd. With τ = κ · 2σ_e²√C · √(2 ln k) (``critic_kl`` = κ), noise alone moves α by
  at most e^{1/κ} between frequencies, while a mismatch well above the noise still dominates.
* **Signal gate.** Post-processing of the release shows how much of it is signal: its energy
  ‖Ẽ‖² exceeds the noise's expected 2kC·σ_e² by the signal's energy S. When the signal per
  frequency, S/k, is below the noise scale τ₁ = 2σ_e²√C·√(2 ln k) the constrained critic could
  not move α by more than a factor e^{S/(kτ₁)} anyway, and what it would chase is noise: the
  critic is switched on only when S/(kτ₁) ≥ ``critic_gate``. Otherwise the weights stay exactly
  uniform and training is the critic-off loss on PEARL's release (the ablation PEARL must
  never lose to). On a release that is pure noise S/(kτ₁) ≈ 0 ± 1/√(2k ln k).
* **Effective-frequency floor (trust region).** At high ε the release's noise is tiny, so τ is
  tiny and the gate is open: the critic is then the authors' unconstrained one, and on
  Fashion-MNIST at ε = 10 it collapsed α onto 6 of 1,500 frequencies (logistic regression
  59.3% against 73.4 ± 0.4% with the critic off; ``results/pearl_fmnist/critic_ablation``).
  After every critic step the move is shrunk towards uniform, s ← σ0² + c(s − σ0²) with the
  largest c ∈ [0, 1] (bisection) at which α keeps Kish's effective number of frequencies
  1/Σα² ≥ ``critic_min_ess``·k (Kish 1965, *Survey Sampling*; the usual degeneracy measure of
  importance weights). Scaling s − σ0² scales α's logits, so the projection stays inside the
  critic's own family. With the default ½ the weights w = kα keep mean 1 and E[w²] ≤ 2: the
  critic may emphasise frequencies (a single one up to √(k/2)-fold, e.g. 27× at k = 1,500)
  but never discards most of the embedding. ½ is set a priori from that arithmetic.

A low-SNR step rule (``low_snr_steps``, off by default). On a noisy release the generator
fits the release's noise as well as its signal, and the longer it trains the more of the noise
it fits: stopping early is the classical regulariser for fitting noisy targets (early stopping,
Yao, Rosasco & Caponnetto, *Constructive Approximation* 2007). The gate ratio above says, from
the release alone, how noisy it is, so the number of steps may follow it: ``low_snr_steps``
below a gate ratio of ``low_snr_ratio``, ``steps`` otherwise. ``pearl_ensemble`` sets it
(chosen in proxy mode, ``conf/method/pearl_ensemble.yaml``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dpsynth.data._common import check_positive_int, is_finite_number
from dpsynth.data.base import DataSpec
from dpsynth.errors import ConfigError
from dpsynth.methods.oneshot import EmbeddingMethod, embedding_noise_std
from dpsynth.privacy.release import Release


def critic_weights(freqs: torch.Tensor, precision: torch.Tensor, sigma0_sq: float) -> torch.Tensor:
    """α (k,) = softmax_i(Σ_d t_{i,d}² (σ0² − s_d)/2) for freqs (k, d) and precision s (d,)."""
    return critic_weights_sq(freqs**2, precision, sigma0_sq)


def critic_weights_sq(
    freqs_sq: torch.Tensor, precision: torch.Tensor, sigma0_sq: float
) -> torch.Tensor:
    """``critic_weights`` from the squared frequencies t² (k, d), which training computes once
    (squaring the k × d matrix every step cost ~1 ms of a ~20 ms step). Always float32 or
    wider, autocast or not: logits in the hundreds would lose whole units in bfloat16."""
    with torch.autocast(freqs_sq.device.type, enabled=False):
        logits = 0.5 * (freqs_sq @ (sigma0_sq - precision))  # (k,)
        return torch.softmax(logits, dim=0)


def critic_temperature(noise_std: float, num_classes: int, k: int, kl: float) -> float:
    """τ = κ · 2σ_e²√C · √(2 ln k): the KL weight at which release noise alone moves α by at
    most a factor e^{1/κ} (module docstring). A deterministic function of public numbers."""
    return float(kl) * 2.0 * noise_std**2 * math.sqrt(num_classes) * math.sqrt(2.0 * math.log(k))


def signal_to_noise(target: np.ndarray, noise_std: float) -> float:
    """How many noise sds the released embedding's energy exceeds what pure noise would give:
    (‖Ẽ‖² − N σ_e²) / (σ_e² √(2N)) over its N = 2kC entries. Post-processing of the release;
    ~N(0, 1) on a release with no signal."""
    n = target.size
    if noise_std <= 0:
        return math.inf
    return signal_energy(target, noise_std) / (noise_std**2 * math.sqrt(2.0 * n))


def signal_energy(target: np.ndarray, noise_std: float) -> float:
    """S = ‖Ẽ‖² − N σ_e²: the release's energy less the noise's expectation (unbiased for the
    exact embedding's energy ‖E‖²)."""
    energy = float(np.sum(np.asarray(target, dtype=np.float64) ** 2))
    return energy - target.size * noise_std**2


def gate_ratio(target: np.ndarray, noise_std: float) -> float:
    """S/(k τ₁): the release's signal per frequency over the noise scale of the critic's
    constraint at κ = 1 (module docstring). Public: a function of the release alone."""
    k, c = target.shape[0] // 2, target.shape[1]
    tau1 = critic_temperature(noise_std, c, k, kl=1.0)
    if tau1 <= 0:
        return math.inf
    return signal_energy(target, noise_std) / (k * tau1)


class FrequencyCritic(nn.Module):
    """The PEARL critic: one precision per input dimension, kept positive by clamping."""

    def __init__(self, dim: int, sigma0_sq: float) -> None:
        super().__init__()
        self.sigma0_sq = float(sigma0_sq)
        self.precision = nn.Parameter(torch.full((dim,), float(sigma0_sq)))

    def forward(self, freqs_sq: torch.Tensor) -> torch.Tensor:
        """α (k,) from the squared frequencies t² (k, d)."""
        s = self.precision.clamp_min(1e-3 * self.sigma0_sq)  # (d,)
        return critic_weights_sq(freqs_sq, s, self.sigma0_sq)  # (k,)

    @torch.no_grad()
    def project_(self, freqs_sq: torch.Tensor, min_ess: float, iters: int = 12) -> float:
        """Shrink the move s − σ0² (in place) by the largest c ∈ [0, 1] at which α's effective
        number of frequencies 1/Σα² is ≥ ``min_ess``·k; returns c (1: no projection needed).
        c = 0 gives uniform α (effective number k), so a feasible c always exists."""
        if min_ess <= 0:
            return 1.0
        k = freqs_sq.shape[0]
        floor = float(min_ess) * k
        s = self.precision.clamp_min(1e-3 * self.sigma0_sq)  # (d,)
        move = s - self.sigma0_sq  # (d,)
        # α at σ0² + c·move is softmax(c·L), L = −t²·move/2 (critic_weights_sq; the clamp
        # cannot bind between σ0² and s): one k × d product serves the whole bisection, each
        # step then a softmax of k numbers (1.7 → 0.33 ms a critic step on Fashion-MNIST,
        # where the floor binds throughout).
        with torch.autocast(freqs_sq.device.type, enabled=False):
            logits = (-0.5 * (freqs_sq @ move)).double()  # (k,) at c = 1

        def ess(c: float) -> float:
            return float(1.0 / (torch.softmax(c * logits, dim=0) ** 2).sum())

        if ess(1.0) >= floor:
            return 1.0
        lo, hi = 0.0, 1.0  # ess(lo) ≥ floor > ess(hi)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if ess(mid) >= floor else (lo, mid)
        self.precision.copy_(self.sigma0_sq + lo * move)
        return lo


class PEARL(EmbeddingMethod):
    """PEARL (``method=pearl``): the embedding release plus the re-weighting critic."""

    name = "pearl"
    version = "pearl-3"  # bump rule: Method's docstring

    def __init__(
        self,
        *,
        critic: bool = True,
        critic_lr: float = 0.01,
        critic_every: int = 5,
        critic_kl: float = 1.0,
        critic_gate: float | None = 1.0,
        critic_min_ess: float = 0.5,
        low_snr_steps: int | None = None,
        low_snr_ratio: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # null: always train `steps`; else the steps on a release below low_snr_ratio
        self.low_snr_steps = check_positive_int(
            "method.low_snr_steps", low_snr_steps, allow_none=True
        )
        if not (is_finite_number(low_snr_ratio) and float(low_snr_ratio) >= 0):
            raise ConfigError(
                f"method.low_snr_ratio: got {low_snr_ratio}; a number >= 0, the gate ratio "
                "(the release's signal per frequency over the critic's noise scale) below "
                "which method.low_snr_steps applies (default 10)."
            )
        self.low_snr_ratio = float(low_snr_ratio)
        if int(critic_every) < 1:
            raise ConfigError(f"method.critic_every: got {critic_every}; must be >= 1.")
        if not (math.isfinite(float(critic_kl)) and float(critic_kl) >= 0):
            raise ConfigError(
                f"method.critic_kl: got {critic_kl}; a number >= 0 (0: the authors' "
                "unconstrained critic, 1: the default noise-calibrated KL constraint)."
            )
        if critic_gate is not None and not math.isfinite(float(critic_gate)):
            raise ConfigError(
                f"method.critic_gate: got {critic_gate}; a threshold on the release's signal "
                "per frequency over the critic's noise scale (default 1), or null (no gate: "
                "the critic always moves)."
            )
        if not (0.0 <= float(critic_min_ess) <= 1.0):
            raise ConfigError(
                f"method.critic_min_ess: got {critic_min_ess}; a fraction of the k frequencies "
                "in [0, 1] that α's effective number 1/Σα² must keep (default 0.5; 0: no floor, "
                "the authors' critic)."
            )
        self.critic_min_ess = float(critic_min_ess)
        self.critic, self.critic_lr, self.critic_every = critic, critic_lr, critic_every
        self.critic_kl = float(critic_kl)
        self.critic_gate = None if critic_gate is None else float(critic_gate)

    def critic_rule(self, release: Release) -> dict[str, float]:
        """The critic's settings from the release alone (post-processing): σ_e, the release's
        signal-to-noise, whether the gate lets the critic move, and τ."""
        target = np.asarray(release["embedding"])  # (2k, C)
        sigma_e = embedding_noise_std(release)
        snr = signal_to_noise(target, sigma_e)
        ratio = gate_ratio(target, sigma_e)
        k, c = target.shape[0] // 2, target.shape[1]
        open_ = self.critic and (self.critic_gate is None or ratio >= self.critic_gate)
        tau = critic_temperature(sigma_e, c, k, self.critic_kl)
        return {
            "critic/noise_std": sigma_e,
            "critic/release_snr": snr,
            "critic/gate_ratio": ratio,
            "critic/gate_open": float(open_),
            "critic/tau": tau,
            "train/steps": float(self.steps_for_ratio(ratio)),
        }

    def steps_for_ratio(self, ratio: float) -> int:
        """The low-SNR rule: ``low_snr_steps`` when the release's gate ratio is below
        ``low_snr_ratio`` (a noisy release: later steps fit more of its noise), else ``steps``.
        Deterministic in the release's public gate ratio."""
        if self.low_snr_steps is not None and ratio < self.low_snr_ratio:
            return self.low_snr_steps
        return int(self.steps)

    def training_steps(self, release: Release) -> int:
        return int(self.critic_rule(release)["train/steps"])

    def make_critic(self, spec: DataSpec, release: Release) -> nn.Module | None:
        rule = self.critic_rule(release)
        self.release_diagnostics = rule
        if not rule["critic/gate_open"]:
            k = int(release.public["num_features"])
            self.release_diagnostics = {
                **rule,
                "critic/effective_frequencies": float(k),  # α stays uniform
                "critic/max_alpha": 1.0 / k,
                "critic/num_frequencies": float(k),
            }
            return None
        return FrequencyCritic(spec.dim, release.public["sigma0_sq"])

    def critic_options(self, release: Release) -> dict[str, Any]:
        return {
            "critic_lr": self.critic_lr,
            "critic_every": self.critic_every,
            "critic_tau": self.critic_rule(release)["critic/tau"],
            "critic_min_ess": self.critic_min_ess,
        }
