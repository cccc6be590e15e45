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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dpsynth.data.base import DataSpec
from dpsynth.errors import ConfigError
from dpsynth.methods.oneshot import EmbeddingMethod


def critic_weights(freqs: torch.Tensor, precision: torch.Tensor, sigma0_sq: float) -> torch.Tensor:
    """α (k,) = softmax_i(Σ_d t_{i,d}² (σ0² − s_d)/2) for freqs (k, d) and precision s (d,)."""
    return critic_weights_sq(freqs**2, precision, sigma0_sq)


def critic_weights_sq(
    freqs_sq: torch.Tensor, precision: torch.Tensor, sigma0_sq: float
) -> torch.Tensor:
    """``critic_weights`` from the squared frequencies t² (k, d), which training computes once
    (squaring the k × d matrix every step cost ~1 ms of a ~20 ms step)."""
    logits = 0.5 * (freqs_sq @ (sigma0_sq - precision))  # (k,)
    return torch.softmax(logits, dim=0)


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


class PEARL(EmbeddingMethod):
    """PEARL (``method=pearl``): the embedding release plus the re-weighting critic."""

    name = "pearl"
    version = "pearl-1"  # bump rule: Method's docstring

    def __init__(
        self,
        *,
        critic: bool = True,
        critic_lr: float = 0.01,
        critic_every: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(critic_every) < 1:
            raise ConfigError(f"method.critic_every: got {critic_every}; must be >= 1.")
        self.critic, self.critic_lr, self.critic_every = critic, critic_lr, critic_every

    def make_critic(self, spec: DataSpec, sigma0_sq: float) -> nn.Module | None:
        return FrequencyCritic(spec.dim, sigma0_sq) if self.critic else None

    def critic_options(self) -> dict[str, Any]:
        return {"critic_lr": self.critic_lr, "critic_every": self.critic_every}
