"""Shared machinery of the one-shot embedding methods (DP-MERF, PEARL).

Release (the mechanism, the only code here that reads private data):
    E = (1/n) Σ_j z(x_j) ⊗ onehot(y_j)   with sensitivity 2/n,
    p = (n_c / n)_c                       with sensitivity √2/n (only when class counts are
                                          released), Gaussian noise calibrated by
                                          ``privacy.release.gaussian_release`` for exactly the
                                          statistics released.
Training (post-processing, reads the :class:`Release` only): a Lightning loop that minimises

    L = λ Σ_i w_i ℓ_i,   ℓ_i = Σ_c (Ẽ_re[i,c] − E_G,re[i,c])² + (Ẽ_im[i,c] − E_G,im[i,c])²,

with w ≡ 1 for DP-MERF (so L = λ‖Ẽ − E_G‖²_F) and w = k·α(critic) for PEARL.

References: Harder, Adamczewski, Park, "DP-MERF", AISTATS 2021; Liew, Takahashi, Ueno,
"PEARL", ICLR 2022.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from dpsynth.config import canonical_precision
from dpsynth.data._common import is_finite_number
from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError, PrivacyError, TrainingError
from dpsynth.methods.base import (
    Method,
    RunContext,
    Synthesizer,
    ema_update_,
    flush_denormals,
)
from dpsynth.methods.embedding import (
    cf_discrepancy,
    cf_features,
    class_embedding,
    draw_frequencies,
)
from dpsynth.methods.generators import ConvGenerator, MixtureGenerator, TabularGenerator
from dpsynth.privacy.estimates import auto_mean_sq_distance, dp_mean_sq_distance
from dpsynth.privacy.release import (
    Budget,
    PrivacySpec,
    Release,
    ReleaseCache,
    Statistic,
    cache_key,
    fingerprint,
    gaussian_release,
)

ClassCounts = Literal["auto", "release", "uniform"]


class _Steps(IterableDataset):
    """An endless stream of step indices: the generator's input is sampled inside the step."""

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1


def released_class_weights(release: Release, num_classes: int) -> np.ndarray:
    """Class proportions the generator should match: the released ones (post-processed onto the
    simplex) if counts were released, else the public uniform assumption."""
    if "proportions" not in release.statistics:
        return np.full(num_classes, 1.0 / num_classes)
    p = np.clip(release["proportions"].astype(np.float64), 0.0, None)
    if p.sum() <= 0:
        return np.full(num_classes, 1.0 / num_classes)
    return p / p.sum()


def embedding_noise_std(release: Release) -> float:
    """σ_e: the noise std on each entry of the embedding the generator matches (public: the
    release's ledger records every spend's noise std; under add/remove the noisy sum is divided
    by the noisy count, so σ_e is the sum's std over that count)."""
    for spend in release.ledger.spends:
        parts = spend.parts or {spend.statistic: spend.noise_std}
        if "embedding" in parts:
            return float(parts["embedding"])
        if "embedding_sum" in parts:
            n_hat = max(float(np.clip(release["counts"], 0.0, None).sum()), 1.0)
            return float(parts["embedding_sum"]) / n_hat
    raise ValueError("this release has no embedding spend in its ledger")


@torch.no_grad()
def generated_class_means(
    generator: nn.Module,
    code_dim: int,
    freqs: torch.Tensor,  # (k, d)
    num_classes: int,
    n_per_class: int,
    seed: int,
    chunk: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """The generator's class-conditional mean CF features, from ``n_per_class`` draws of each
    label (the generator in eval mode, as it is sampled), and an unbiased estimate of each
    class mean's sampling variance: with ‖z‖ = 1, tr Cov(z)/n = (1 − ‖μ‖²)/n, estimated by
    (1 − ‖μ̂‖²)/(n − 1). Reads the generator only. Returns ((2k, C), (C,))."""
    was_training = generator.training
    generator.eval()
    device = freqs.device
    gen = torch.Generator().manual_seed(int(seed))
    sums = torch.zeros(num_classes, 2 * freqs.shape[0], dtype=torch.float64)  # (C, 2k)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)  # (C·n,)
    try:
        for start in range(0, len(labels), chunk):
            y = labels[start : start + chunk]
            code = torch.randn(len(y), code_dim, generator=gen).to(device)  # (b, code)
            x = generator(code, y.to(device)).reshape(len(y), -1).float()  # (b, d)
            z = cf_features(x, freqs.float()).double().cpu()  # (b, 2k)
            sums.index_add_(0, y, z)
    finally:
        generator.train(was_training)
    means = sums / n_per_class  # (C, 2k)
    variance = (1.0 - (means**2).sum(dim=1)).clamp_min(0.0) / max(n_per_class - 1, 1)  # (C,)
    return means.T.numpy(), variance.numpy()


def discrepancy_ratio(
    target: np.ndarray,  # (2k, C) released embedding
    means: np.ndarray,  # (2k, C) generated class means (or a mixture's average of them)
    variance: np.ndarray,  # (C,) sampling variance of those means
    class_weights: np.ndarray,  # (C,) proportions the release is scaled by
    noise_std: float,
) -> float:
    """‖Ẽ − E_G‖² over the release's expected noise energy N σ_e² (N = 2kC entries), with the
    generated means' sampling variance subtracted: the discrepancy principle's yardstick
    (Morozov 1966). ≈ 1 when the generator matches everything but the release's noise, < 1
    when it has fitted part of that noise, > 1 when it has not reached the noise floor.
    Post-processing: the release and the generator only."""
    w = np.asarray(class_weights, dtype=np.float64)
    fitted = np.asarray(means, dtype=np.float64) * w[None, :]  # (2k, C)
    residual = float(((np.asarray(target, dtype=np.float64) - fitted) ** 2).sum())
    residual -= float((w**2 * np.asarray(variance, dtype=np.float64)).sum())
    floor = target.size * float(noise_std) ** 2
    return residual / floor if floor > 0 else math.inf


class EmbeddingMatcher(pl.LightningModule):
    """Trains a generator to match a released class-conditional CF embedding.

    Only tensors derived from the release (target embedding, class weights) and public
    parameters (frequencies, sizes) are held: the private data are not reachable from here.
    """

    def __init__(
        self,
        generator: nn.Module,
        freqs: torch.Tensor,  # (k, d)
        target: torch.Tensor,  # (2k, C) released embedding
        class_weights: torch.Tensor,  # (C,)
        *,
        code_dim: int,
        batch_size: int,
        lr: float,
        max_steps: int,
        scheduler: str,
        loss_scale: float,
        critic: nn.Module | None = None,
        critic_lr: float = 0.01,
        critic_every: int = 5,
        critic_tau: float = 0.0,
        critic_min_ess: float = 0.0,
        label_sampling: str = "balanced",
        g_ema: float = 0.0,
        unbiased_loss: bool = False,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.unbiased_loss = bool(unbiased_loss)  # the batch term as a U-statistic (cf_loss)
        self.generator, self.critic = generator, critic
        # The exponential moving average of G's weights, sampled from when g_ema > 0:
        # post-processing of the trajectory (it never feeds back into training, so the
        # generator trained is the same with or without it).
        self.g_ema = float(g_ema)
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if g_ema else None
        self.register_buffer("freqs", freqs)
        # Public, derived from freqs; not saved (rebuilt on load).
        self.register_buffer("freqs_sq", freqs**2, persistent=False)
        self.register_buffer("target", target)
        self.register_buffer("class_weights", class_weights)
        self.code_dim, self.batch_size, self.lr = code_dim, batch_size, lr
        self.max_steps, self.scheduler_name, self.loss_scale = max_steps, scheduler, loss_scale
        self.critic_lr, self.critic_every = critic_lr, critic_every
        self.critic_tau = float(critic_tau)  # τ of the KL(α ‖ uniform) constraint; 0: none
        self.critic_min_ess = float(critic_min_ess)  # floor on 1/Σα² as a fraction of k; 0: none
        self.num_classes = class_weights.shape[0]
        self.label_sampling = label_sampling
        self._weights: torch.Tensor | None = None  # w for generator steps, until the critic moves
        self._critic_rng: torch.Generator | None = None
        self._freqs_cast: tuple[Any, torch.Tensor] | None = None  # see projection_freqs

    def weights(self) -> torch.Tensor:
        """w_i (k,), mean 1: uniform without a critic, k·α_i with one."""
        k = self.freqs.shape[0]
        if self.critic is None:
            return torch.ones(k, device=self.freqs.device)
        return k * self.critic(self.freqs_sq)

    def generate(self, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A generated batch. ``balanced``: equal label counts, the class proportions applied
        as weights in the embedding. ``random`` (the authors' scripts): labels drawn from the
        class proportions, the embedding a plain batch mean of z(x) ⊗ onehot(y). ``rng``: the
        random stream to draw codes and labels from (default: torch's global one)."""
        b = self.batch_size
        if self.label_sampling == "random":
            labels = torch.multinomial(self.class_weights, b, replacement=True, generator=rng)
        else:
            labels = torch.arange(b, device=self.device) % self.num_classes  # (B,)
        code = torch.randn(b, self.code_dim, device=self.device, generator=rng)  # (B, code)
        return self.generator(code, labels).reshape(b, -1), labels  # (B, d), (B,)

    def cf_loss(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """λ Σ_i w_i Σ_c |Ẽ_{i,c} − E_G,{i,c}|² over real and imaginary parts (with
        ``unbiased_loss``, the batch's own term |E_G|² as a U-statistic: ``cf_discrepancy``)."""
        weights = None if self.label_sampling == "random" else self.class_weights
        per_freq = cf_discrepancy(
            x, y, self.projection_freqs(), self.target, weights, unbiased=self.unbiased_loss
        )  # (k,)
        return self.loss_scale * (w * per_freq).sum()

    def projection_freqs(self) -> torch.Tensor:
        """The frequencies the batch projection multiplies by: ``freqs``, or under a
        low-precision autocast (``trainer.precision=bf16-mixed``) one cached copy in its dtype,
        so the (k, d) matrix is not cast again in every forward and backward (~1.3 ms of a
        ~9 ms Fashion-MNIST step). The loss itself stays float32 (``cf_features``)."""
        device = self.freqs.device.type
        if not torch.is_autocast_enabled(device):
            return self.freqs
        dtype = torch.get_autocast_dtype(device)
        key = (dtype, self.freqs.device, self.freqs.data_ptr(), self.freqs._version)
        if self._freqs_cast is None or self._freqs_cast[0] != key:
            self._freqs_cast = (key, self.freqs.to(dtype))
        return self._freqs_cast[1]

    def critic_rng(self) -> torch.Generator:
        """The critic batches' random stream, seeded from the run's seed (reproducible)."""
        if self._critic_rng is None or self._critic_rng.device != self.device:
            self._critic_rng = torch.Generator(device=self.device)
            self._critic_rng.manual_seed(torch.initial_seed() + 1_000_003)
        return self._critic_rng

    def critic_objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the critic ascends: λ k (Σ α_i ℓ_i − τ KL(α ‖ uniform)), in the generator
        loss's units (w = kα). At τ = 0 the authors' critic."""
        w = self.weights()  # (k,) = k α
        objective = self.cf_loss(x, y, w)
        if self.critic_tau > 0:
            k = w.shape[0]
            kl = (w / k * torch.log(w.clamp_min(1e-30))).sum()  # Σ α log(k α)
            objective = objective - self.loss_scale * k * self.critic_tau * kl
        return objective

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        step = self.global_step + 1  # 1-based, as Lightning counts it when it writes logs
        opts = self.optimizers()
        gen_opt = opts[0] if isinstance(opts, list) else opts
        x, y = self.generate()
        if self._weights is None:  # α changes only when the critic steps
            self._weights = self.weights().detach()
        loss = self.cf_loss(x, y, self._weights)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"generator loss became {loss.item()} at step {self.global_step}; "
                "lower method.lr or check the release (a non-finite value stops the run)."
            )
        gen_opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        gen_opt.step()
        if self.generator_ema is not None:
            ema_update_(self.generator_ema, self.generator, self.g_ema, self.global_step)
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        if self.critic is not None and (batch_idx + 1) % self.critic_every == 0:
            # The critic ascends the weighted distance on a fresh generated batch, drawn as the
            # authors do: the generator in eval mode (BatchNorm on its running statistics, i.e.
            # the generator that will be sampled), without touching those statistics.
            # Its batch comes from its own random stream, so the generator's stream is the
            # critic-off run's: a critic that keeps α uniform trains exactly that generator
            # (the ablation PEARL is compared with), not a reshuffled one.
            self.generator.eval()
            with torch.no_grad():
                xc, yc = self.generate(self.critic_rng())
            self.generator.train()
            critic_loss = -self.critic_objective(xc, yc)
            # The critic's optimizer is stepped directly, not through Lightning's wrapper:
            # Lightning counts every wrapped optimizer step as a global step, which would end
            # training after steps·k/(k+1) generator steps (2,500 of 3,000 at critic_every 5).
            critic_opt = opts[1].optimizer
            critic_opt.zero_grad(set_to_none=True)
            self.manual_backward(critic_loss)
            critic_opt.step()
            if self.critic_min_ess > 0:  # the trust region (PEARL's docstring)
                self.critic.project_(self.freqs_sq, self.critic_min_ess)
            self._weights = None
        every = self.trainer.log_every_n_steps
        if every and step % every == 0:  # ~2 ms a call on CPU: only on steps a logger writes
            self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def sampling_generator(self) -> nn.Module:
        """The generator to release: the EMA copy when enabled."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def configure_optimizers(self) -> Any:
        # Fused Adam (one kernel for all tensors) halves the optimizer's share of a CPU step.
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        gen_opt = torch.optim.Adam(self.generator.parameters(), lr=self.lr, **fused)
        opts: list[torch.optim.Optimizer] = [gen_opt]
        if self.critic is not None:
            opts.append(torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr, **fused))
        if self.scheduler_name == "constant":
            return opts
        if self.scheduler_name == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(gen_opt, T_max=self.max_steps)
        else:  # "step": DP-MERF's ×0.9 per tenth of training
            sched = torch.optim.lr_scheduler.StepLR(
                gen_opt, step_size=max(1, self.max_steps // 10), gamma=0.9
            )
        return opts, [{"scheduler": sched, "interval": "step"}]


#: Bumped whenever what a release contains, or how it is computed, changes: part of the cache
#: key, so a behaviour-changing commit never reuses an old release.
RELEASE_VERSION = 2
RUN_RELEASE = "release.npz"


def release_statistics(
    x: np.ndarray,
    y: np.ndarray,
    freqs: torch.Tensor,
    num_classes: int,
    with_counts: bool,
    privacy: PrivacySpec,
) -> tuple[list[Statistic], float | None]:
    """The exact statistics of a one-shot release and their joint normalised sensitivity J.

    replace-one (n public): E = (1/n) Σ z(x_j) ⊗ e_{y_j} (Δ = 2/n) and p = n_c/n (Δ = √2/n).
    Replacing (x, y) by (x′, y′): if y = y′, E moves ≤ 2/n and p not at all (normalised: 1);
    if y ≠ y′, E moves √2/n (two unit columns) and p √2/n (normalised: ½ + 1). So
    J = √1.5, not the √2 of two separate releases (13% less noise).
    add/remove (n private): S = Σ z(x_j) ⊗ e_{y_j} (Δ = 1) and the class counts (Δ = 1),
    always released together (the count is the denominator): both move, J = √2.
    """
    n = x.shape[0]
    emb = class_embedding(x, y, freqs, num_classes)  # (2k, C)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)  # (C,)
    if privacy.neighbours == "replace_one":
        stats = [Statistic("embedding", emb, 2.0 / n)]
        if not with_counts:
            return stats, None
        stats.append(Statistic("proportions", counts / n, math.sqrt(2.0) / n))
        return stats, math.sqrt(1.5)
    sums = [Statistic("embedding_sum", emb * n, 1.0), Statistic("counts", counts, 1.0)]
    return sums, math.sqrt(2.0)


def finish_add_remove(rel: Release, with_counts: bool) -> None:
    """Post-processing of an add/remove release: the mean embedding the generator matches is
    the noisy sum over the noisy total count (n itself was never public)."""
    counts = np.clip(rel["counts"].astype(np.float64), 0.0, None)
    n_hat = max(float(counts.sum()), 1.0)
    rel.statistics["embedding"] = (rel["embedding_sum"] / n_hat).astype(np.float32)
    if with_counts:
        rel.statistics["proportions"] = (counts / n_hat).astype(np.float32)


def _save_run_release(path: Path, release: Release, parts: dict[str, Any]) -> None:
    ReleaseCache(path.parent).store(path.stem, release, parts)


def run_release(ctx: RunContext, parts: dict[str, Any], build: Any) -> Release:
    """The run's one release: the run folder's own if an earlier attempt made one, else the
    cache's (or a fresh one, stored in both).

    A resume after a cache miss (another ``cache_dir``, a deleted or corrupt entry) used to
    draw a second release and train the checkpoint's generator (fitted to release 1) against
    release 2. Now the run folder keeps its release and its ledger, so a resume continues with
    exactly what it started from and spends nothing; a checkpoint without that record (a run
    folder from before this rule) is refused before anything is spent.
    """
    own = ctx.run_dir / RUN_RELEASE
    key = cache_key(parts)
    rel = ReleaseCache(own.parent).load(own.stem) if own.exists() else None
    if rel is not None:
        if rel.public.get("cache_key") != key:
            raise PrivacyError(
                f"{own} holds the release of another configuration (cache key "
                f"{rel.public.get('cache_key')} ≠ {key}). A run folder belongs to one config; "
                "use a new folder, or resume=false to start this one afresh (spends again)."
            )
        rel.public["release_fingerprint"] = rel.fingerprint()
        return rel
    if (ctx.run_dir / "checkpoints" / "last.ckpt").exists():
        raise PrivacyError(
            f"{ctx.run_dir} has a checkpoint but no {RUN_RELEASE}: its generator was fitted "
            "to a release this run cannot identify, and resuming it against another release "
            "would mix two. Start afresh with resume=false (spends the budget again) or use a "
            "new run folder."
        )
    if ctx.cache is None:
        rel = build()
        rel.public["cache_key"] = key
    else:
        rel = ctx.cache.get_or_create(parts, build)
    _save_run_release(own, rel, parts)
    rel.public["release_fingerprint"] = rel.fingerprint()
    return rel


class EmbeddingMethod(Method):
    """A one-shot CF-embedding method; DP-MERF and PEARL differ only in the critic."""

    one_shot = True
    schedulers = ("constant", "step", "cosine")
    #: bf16-mixed (Lightning's bfloat16 autocast): the generator's and the embedding's matrix
    #: products in bfloat16, the CF features, the loss, the critic's weights and the optimiser
    #: in float32 (``cf_features``, ``critic_weights_sq``). Training is post-processing of the
    #: release, so precision cannot touch the privacy guarantee; the release itself is always
    #: computed in float32/float64 outside the trainer.
    precisions = frozenset({"32-true", "bf16-mixed"})
    #: Draws per label for the fit diagnostic (:func:`fit_diagnostics`): their sampling
    #: variance is subtracted, and what remains moves the ratio by ~0.2% at MNIST's ε 0.2 and
    #: ~2% at ε 1 (about 0.5 s a generator on one core there, ~1% of a preset run).
    discrepancy_samples_per_class = 500
    #: What ``release`` reads besides the data (``parts`` of its cache key); the rest of the
    #: config is post-processing of the release.
    release_keys = frozenset(
        {
            "num_features",
            "sigma0_sq",
            "sigma0_scale",
            "freq_seed",
            "class_counts",
            "sigma0_share",
            "release_of",
        }
    )

    def __init__(
        self,
        *,
        num_features: int = 1500,
        sigma0_sq: float | None = None,
        freq_seed: int | None = None,
        class_counts: ClassCounts = "auto",
        steps: int = 3000,
        batch_size: int = 100,
        lr: float = 0.01,
        scheduler: str = "constant",
        loss_scale: float = 1.0,
        code_dim: int = 5,
        hidden: int = 200,
        base_channels: int = 16,
        mid_channels: int = 8,
        tabular_code_dim: int = 16,
        tabular_width: int = 0,
        checkpoint_every: int = 500,
        label_sampling: str = "balanced",
        g_ema: float = 0.0,
        ensemble: int = 1,
        unbiased_loss: bool = False,
        sigma0_share: float = 0.05,
        sigma0_scale: float = 1.0,
        name: str | None = None,
        release_of: str | None = None,
        preset_selection: str = "authors",  # provenance label for dpsynth-report; unused here
    ) -> None:
        if label_sampling not in ("balanced", "random"):
            raise ConfigError(
                f"method.label_sampling: got {label_sampling!r}; allowed: balanced, random."
            )
        self.label_sampling = label_sampling
        if not 0 <= float(g_ema) < 1:
            raise ConfigError(
                f"method.g_ema: got {g_ema}; allowed: 0 ≤ g_ema < 1 (the decay of the "
                "generator's weight average that is sampled from; 0: the last iterate)."
            )
        self.g_ema = float(g_ema)
        if isinstance(ensemble, bool) or int(ensemble) != ensemble or int(ensemble) < 1:
            raise ConfigError(
                f"method.ensemble: got {ensemble!r}; the number of generators trained on the "
                "release and sampled as an equal mixture, an integer ≥ 1 (1: one generator)."
            )
        self.ensemble = int(ensemble)
        if not isinstance(unbiased_loss, bool):
            raise ConfigError(
                f"method.unbiased_loss: got {unbiased_loss!r}; allowed: true (the generated "
                "batch's embedding term as a U-statistic) or false (the plug-in estimate, as "
                "the authors of PEARL and DP-MERF)."
            )
        self.unbiased_loss = unbiased_loss
        # What the critic rule read from the release (post-processing), for metrics.json.
        self.release_diagnostics: dict[str, float] = {}
        if name is not None:  # a preset YAML over the same class names itself (one name each)
            self.name = name
        if release_of is not None and not (
            isinstance(release_of, str) and release_of.strip() and "/" not in release_of
        ):
            raise ConfigError(
                f"method.release_of: got {release_of!r}; null (this method's own release) or "
                "the name of the preset whose release to share, e.g. pearl."
            )
        # Whose release this run uses: its own (null), or that of the named preset at the same
        # release settings, seed and budget. Sharing is post-processing of one release (the
        # report counts it once), and it pairs an ablation with the run it ablates: the two
        # rows then differ by training alone, not by two independent noise draws.
        self.release_of = release_of
        if class_counts not in ("auto", "release", "uniform"):
            raise ConfigError(
                f"method.class_counts: got {class_counts!r}; allowed: auto, release, uniform."
            )
        if scheduler not in self.schedulers:
            raise ConfigError(
                f"method.scheduler: got {scheduler!r}; allowed: {', '.join(self.schedulers)}."
            )
        for key, value in (
            ("num_features", num_features),
            ("steps", steps),
            ("batch_size", batch_size),
        ):
            if int(value) < 1:
                raise ConfigError(f"method.{key}: got {value}; must be a positive integer.")
        if not lr > 0:
            raise ConfigError(f"method.lr: got {lr}; must be > 0.")
        if not 0 < float(sigma0_share) < 1:
            raise ConfigError(
                f"method.sigma0_share: got {sigma0_share}; the share of the budget spent on the "
                "DP σ0² estimate must lie in (0, 1) (default 0.05)."
            )
        self.sigma0_share = float(sigma0_share)
        if not (is_finite_number(sigma0_scale) and float(sigma0_scale) > 0):
            raise ConfigError(
                f"method.sigma0_scale: got {sigma0_scale!r}; a finite number > 0 that multiplies "
                "σ0² (the DP estimate of E‖x − x′‖², or the public constant) before the "
                "frequencies are drawn (default 1: the median-heuristic width itself)."
            )
        # The kernel width relative to the median heuristic σ0² = E‖x − x′‖² (Gretton et al.,
        # JMLR 2012; not an optimum: Garreau, Jitkrittum & Kanagawa, arXiv:1707.07269): < 1
        # draws higher frequencies (results/pearl_fmnist/selection_sigma0/).
        self.sigma0_scale = float(sigma0_scale)
        self.num_features, self.sigma0_sq, self.freq_seed = num_features, sigma0_sq, freq_seed
        self.class_counts = class_counts
        self.steps, self.batch_size, self.lr, self.scheduler = steps, batch_size, lr, scheduler
        self.loss_scale, self.code_dim = loss_scale, code_dim
        self.hidden, self.base_channels, self.mid_channels = hidden, base_channels, mid_channels
        self.tabular_code_dim, self.tabular_width = tabular_code_dim, tabular_width
        self.checkpoint_every = checkpoint_every

    # ------------------------------------------------------------------ public parameters

    def check(
        self,
        spec: DataSpec,
        dataset_options: dict[str, Any] | None = None,
        n_train: int | None = None,
    ) -> None:
        super().check(spec, dataset_options, n_train)
        self._sigma0_sq(dataset_options or {})
        if spec.kind == "image" and (spec.shape[1] % 4 or spec.shape[2] % 4):
            raise ConfigError(
                f"method={self.name} does not support dataset={spec.name} at image shape "
                f"{spec.shape}: its generator upsamples ×4, so height and width must be "
                "divisible by 4 (e.g. dataset.image_size=32)."
            )

    def _sigma0_sq(self, dataset_options: dict[str, Any]) -> float | str:
        """The frequency scale: ``dp`` (a DP estimate paid from the run's budget, see
        :mod:`dpsynth.privacy.estimates`), ``auto`` (that estimate, or the public uniform-domain
        prior where the estimate's noise is too large to use) or a positive constant with a
        public source."""
        value = self.sigma0_sq if self.sigma0_sq is not None else dataset_options.get("sigma0_sq")
        if value in ("dp", "auto"):
            return str(value)
        try:
            ok = value is not None and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"method.sigma0_sq / dataset.sigma0_sq: got {value!r}; allowed: dp (a DP "
                "estimate paid from the budget), auto (that estimate, or the public "
                "uniform-domain prior when the estimate is too noisy) or a positive constant "
                "whose public source is cited in conf/dataset/<name>.yaml's provenance, never "
                "computed from the private data."
            )
        return float(value)

    def release_counts(self, spec: DataSpec) -> bool:
        """Whether class proportions are released: decided from public metadata only."""
        if self.class_counts == "auto":
            return not spec.balanced
        return self.class_counts == "release"

    def public_params(self, spec: DataSpec, ctx: RunContext) -> dict[str, Any]:
        return {
            "method": self.release_of or self.name,  # whose release (part of the cache key)
            "num_features": int(self.num_features),
            "sigma0_sq": self._sigma0_sq(ctx.dataset_options),
            "freq_seed": int(self.freq_seed if self.freq_seed is not None else ctx.seed),
            "release_counts": self.release_counts(spec),
            "dim": spec.dim,
            "num_classes": spec.num_classes,
            # Only when it is not 1, so releases made before the key existed keep their keys.
            **({"sigma0_scale": self.sigma0_scale} if self.sigma0_scale != 1.0 else {}),
        }

    # ------------------------------------------------------------------ mechanism

    def release(self, data: Dataset, privacy: PrivacySpec, ctx: RunContext) -> Release:
        """Privacy: (ε, δ)-DP under ``privacy.neighbours`` by ONE Gaussian mechanism on the
        embedding and (when released) the class proportions, with their true joint sensitivity
        (:func:`release_statistics`), composed in the run's budget after any earlier releases
        of this run (DP schema inference at load time, the DP σ0² estimate).

        One run, one release: the release is also kept in the run folder
        (``release.npz``); a later attempt of the same run (a resume) uses that one, never a
        new draw, even when the cache has lost it (see :func:`run_release`).
        """
        spec = data.spec
        public = self.public_params(spec, ctx)

        def build() -> Release:
            t0 = time.perf_counter()
            n = data.n_train
            budget = Budget(privacy)
            budget.spends.extend(getattr(data, "spends", []))  # load-time releases of this run
            x = data.train_x.reshape(n, -1)
            sigma0_sq = public["sigma0_sq"]
            sigma0_record: dict[str, Any] = {}
            if sigma0_sq == "dp":
                sigma0_sq = dp_mean_sq_distance(x, spec, budget=budget, share=self.sigma0_share)
            elif sigma0_sq == "auto":
                sigma0_sq, sigma0_record = auto_mean_sq_distance(
                    x, spec, budget=budget, share=self.sigma0_share
                )
            # A public multiple of the estimate (post-processing of it): no further privacy cost.
            sigma0_sq = float(sigma0_sq) * self.sigma0_scale
            freqs = draw_frequencies(
                public["num_features"], spec.dim, sigma0_sq, public["freq_seed"]
            )
            stats, joint = release_statistics(
                x, data.train_y, freqs, spec.num_classes, public["release_counts"], privacy
            )
            rel = gaussian_release(
                stats,
                budget=budget,
                joint_sensitivity=joint,
                public={**public, "sigma0_sq": float(sigma0_sq), **sigma0_record},
            )
            if privacy.neighbours == "replace_one":
                rel.public["n"] = n  # public under replace-one
            else:
                finish_add_remove(rel, public["release_counts"])
            rel.public["release_seconds"] = time.perf_counter() - t0
            return rel

        parts = {
            **public,
            "release_version": RELEASE_VERSION,
            "method_version": self.version,
            "dataset": ctx.dataset_id,
            "data": fingerprint(data.train_x, data.train_y),
            "load_spends": [vars(s) for s in getattr(data, "spends", [])],
            "privacy": vars(privacy),
            "sigma0_share": self.sigma0_share if public["sigma0_sq"] in ("dp", "auto") else None,
            "seed": ctx.seed,
        }
        return run_release(ctx, parts, build)

    # ------------------------------------------------------------------ post-processing

    def make_generator(self, spec: DataSpec) -> tuple[nn.Module, int]:
        if spec.kind == "image":
            gen = ConvGenerator(
                spec.shape,
                spec.num_classes,
                self.code_dim,
                self.hidden,
                self.base_channels,
                self.mid_channels,
            )
            return gen, self.code_dim
        return TabularGenerator(
            spec, spec.num_classes, self.tabular_code_dim, self.tabular_width
        ), self.tabular_code_dim

    def make_critic(self, spec: DataSpec, release: Release) -> nn.Module | None:
        """PEARL overrides this; DP-MERF has no critic."""
        return None

    def train(self, release: Release, spec: DataSpec, ctx: RunContext) -> Synthesizer:
        """Post-processing: reads ``release`` and public ``spec`` only. With ``ensemble`` = m,
        m generators are trained on the one release, member j from seed ``member_seed(j)``
        (member 0 is the single-generator run itself) and its checkpoints in
        ``member_dir(j)``, and sampled as an equal mixture (:class:`MixtureGenerator`)."""
        weights = released_class_weights(release, spec.num_classes)
        target = np.asarray(release["embedding"], dtype=np.float64)  # (2k, C)
        noise_std = embedding_noise_std(release)
        members, diagnostics, fits = [], [], []
        for j in range(self.ensemble):
            member_ctx = (
                ctx
                if j == 0
                else dataclasses.replace(ctx, run_dir=member_dir(ctx, j), resumed_from_step=None)
            )
            generator, code_dim, module = self.train_member(
                release, spec, member_ctx, member_seed(ctx.seed, j), weights
            )
            if ctx.resumed_from_step is None:  # the first member that continued a checkpoint
                ctx.resumed_from_step = member_ctx.resumed_from_step
            members.append(generator)
            diagnostics.append(self.critic_diagnostics(module))
            fits.append(
                generated_class_means(
                    generator,
                    code_dim,
                    module.freqs.cpu(),
                    spec.num_classes,
                    self.discrepancy_samples_per_class,
                    seed=member_seed(ctx.seed, j) + 2,
                )
            )
        self.diagnostics = {
            **ensemble_diagnostics(diagnostics),
            **self.release_diagnostics,
            **fit_diagnostics(fits, target, weights, noise_std),
        }
        if self.ensemble > 1:
            self.diagnostics["ensemble/members"] = float(self.ensemble)
        gen = members[0] if len(members) == 1 else MixtureGenerator(members)
        precision = canonical_precision(ctx.trainer.get("precision", "32-true"))
        return Synthesizer(gen, code_dim, weights, spec, precision=precision)

    def train_member(
        self,
        release: Release,
        spec: DataSpec,
        ctx: RunContext,
        seed: int,
        weights: np.ndarray,
    ) -> tuple[nn.Module, int, EmbeddingMatcher]:
        """One generator fitted to the release from ``seed``; returns what is sampled (its
        weight average when ``g_ema`` > 0), its code size and the trained module."""
        pub = release.public
        pl.seed_everything(seed, workers=True, verbose=False)
        freqs = draw_frequencies(
            pub["num_features"], pub["dim"], pub["sigma0_sq"], pub["freq_seed"]
        )
        generator, code_dim = self.make_generator(spec)
        steps = self.training_steps(release)
        module = EmbeddingMatcher(
            generator,
            freqs,
            torch.as_tensor(release["embedding"], dtype=torch.float32),
            torch.as_tensor(weights, dtype=torch.float32),
            code_dim=code_dim,
            batch_size=self.batch_size,
            lr=self.lr,
            max_steps=steps,
            scheduler=self.scheduler,
            loss_scale=self.loss_scale,
            critic=self.make_critic(spec, release),
            label_sampling=self.label_sampling,
            g_ema=self.g_ema,
            unbiased_loss=self.unbiased_loss,
            **self.critic_options(release),
        )
        with flush_denormals():  # post-processing: subnormals only cost time here
            fit(module, steps, ctx, self.checkpoint_every)
        return module.sampling_generator().cpu(), code_dim, module

    @staticmethod
    def critic_diagnostics(module: EmbeddingMatcher) -> dict[str, float]:
        """How concentrated the critic's final α is: its effective number of frequencies
        1/Σα² (k when uniform, 1 when all weight sits on one frequency) and its largest α."""
        if module.critic is None:
            return {}
        with torch.no_grad():
            alpha = module.critic(module.freqs_sq).double()  # (k,)
        return {
            "critic/effective_frequencies": float(1.0 / (alpha**2).sum()),
            "critic/max_alpha": float(alpha.max()),
            "critic/num_frequencies": float(alpha.numel()),
        }

    def critic_options(self, release: Release) -> dict[str, Any]:
        return {}

    def training_steps(self, release: Release) -> int:
        """How many generator steps to train on ``release`` (``steps``; PEARL's low-SNR rule
        may shorten it, from the release alone)."""
        return int(self.steps)


def member_seed(seed: int, j: int) -> int:
    """The training seed of ensemble member j: the run seed for member 0 (so ``ensemble: 1``
    is exactly the single-generator run), a fixed public offset per further member."""
    return int(seed) + 1_000_000 * int(j)


def member_dir(ctx: RunContext, j: int) -> Path:
    """Where ensemble member j ≥ 1 keeps its checkpoints (member 0 uses the run folder's)."""
    return ctx.run_dir / "ensemble" / f"member{j}"


def fit_diagnostics(
    fits: list[tuple[np.ndarray, np.ndarray]],
    target: np.ndarray,
    class_weights: np.ndarray,
    noise_std: float,
) -> dict[str, float]:
    """How far each generator ended from its release, in units of the release's noise energy
    (:func:`discrepancy_ratio`): the members' mean and, for an ensemble, the sampled mixture's
    (its class means are the members' average, their sampling variance the members' over m²).
    Below 1 the generators have fitted part of the release's noise (the reason for PEARL's
    low-SNR step rule); well above 1 they have not reached the noise floor."""
    ratios = [discrepancy_ratio(target, m, v, class_weights, noise_std) for m, v in fits]
    out = {"fit/discrepancy_ratio": float(np.mean(ratios))}
    if len(fits) > 1:
        mixture = np.mean([m for m, _ in fits], axis=0)  # (2k, C)
        variance = np.sum([v for _, v in fits], axis=0) / len(fits) ** 2  # (C,)
        out["fit/discrepancy_ratio_mixture"] = discrepancy_ratio(
            target, mixture, variance, class_weights, noise_std
        )
    return out


def ensemble_diagnostics(per_member: list[dict[str, float]]) -> dict[str, float]:
    """The critic's concentration over the members: the least effective number of
    frequencies and the largest α any member ended with (what the collapse flag must see)."""
    per_member = [d for d in per_member if d]
    if not per_member:
        return {}
    out = dict(per_member[0])
    if len(per_member) > 1:
        out["critic/effective_frequencies"] = min(
            d["critic/effective_frequencies"] for d in per_member
        )
        out["critic/max_alpha"] = max(d["critic/max_alpha"] for d in per_member)
    return out


def fit(module: pl.LightningModule, steps: int, ctx: RunContext, checkpoint_every: int) -> None:
    """Run Lightning for ``steps`` steps, checkpointing so a killed run resumes where it was."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    # Lightning's start-up banners (GPU available, tips) are noise in a benchmark log.
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ckpt_dir = ctx.run_dir / "checkpoints"
    callbacks = []
    if checkpoint_every > 0:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=checkpoint_every
            )
        )
    opts = {"accelerator": "auto", "devices": 1, "log_every_n_steps": 50, **ctx.trainer}
    progress = opts.pop("enable_progress_bar", None)
    if progress is None:
        progress = ctx.progress if ctx.progress is not None else sys.stderr.isatty()
    trainer = pl.Trainer(
        max_steps=steps,
        logger=ctx.logger if ctx.logger is not None else False,
        callbacks=callbacks,
        enable_checkpointing=bool(callbacks),
        enable_progress_bar=bool(progress),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(ctx.run_dir),
        **opts,
    )
    last = ckpt_dir / "last.ckpt"
    if last.exists():
        ctx.resumed_from_step = int(
            torch.load(last, map_location="cpu", weights_only=False).get("global_step", 0)
        )
    with warnings.catch_warnings():
        # Lightning warns that manual-optimisation checkpoints hold post-step weights: that is
        # what resuming needs.
        warnings.filterwarnings("ignore", message=".*pre-optimization state.*")
        warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
        trainer.fit(
            module,
            train_dataloaders=DataLoader(_Steps(), batch_size=None),
            ckpt_path=str(last) if last.exists() else None,
        )
