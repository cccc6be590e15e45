"""DP-SGD conditional GANs (``method=dpsgd``) and their non-private twin (``nonprivate_gan``).

A label-conditional DCGAN (images) or MLP GAN (tables) in the DP-CGAN style (Torkzadeh,
Mohammadi, Salehi, "Differentially Private Conditional GAN", 2019): only the **discriminator**
reads private records, and only through DP-SGD (Abadi et al., "Deep Learning with Differential
Privacy", CCS 2016) as implemented by Opacus (Yousefpour et al., "Opacus: User-Friendly
Differential Privacy Library in PyTorch", 2021): Poisson sampling with rate q = batch_size / n
(Opacus' ``UniformWithReplacementSampler``), per-sample gradients (``GradSampleModule``),
per-sample clipping to ``max_grad_norm`` and Gaussian noise of std σ·C (``DPOptimizer``). Each
step is recorded as (σ, q) in a step history; every ε is computed from that history by
``dpsynth.privacy.accounting`` (dp-accounting), never by Opacus. The generator never sees a
record; its update is post-processing of the discriminator.

How one discriminator step is built (``GANModule.d_step``), and why it is sound:

    g_real = (Σ_{i ∈ Poisson batch} clip_C(∇ℓ(D(x_i, y_i), 1)) + N(0, σ²C²I)) / B     [Opacus]
    g_fake = ∇ (1/B) Σ_{j=1..B} ℓ(D(G(z_j, ỹ_j), ỹ_j), 0)                              [plain]
    θ_D ← Adam(θ_D, g_real + g_fake)

* ``g_real`` is the Poisson-subsampled Gaussian mechanism on the real records, computed by
  Opacus' ``GradSampleModule`` + ``DPOptimizer.pre_step`` (clip, noise, divide by the *expected*
  batch size B, one step recorded). It is the only term that reads private data, and the only
  one charged.
* ``g_fake`` is computed **separately**, with the per-sample hooks disabled and after the noise
  was added, so it is neither clipped, nor noised, nor charged. This is the fix for the trap of
  Opacus' own DCGAN example (opacus issue 418), which sends the fake batch through the DP
  optimizer as a second step: it noises the fake gradients too and charges the accountant twice
  per discriminator update. ``g_fake`` is a deterministic function of θ_D and θ_G — both
  post-processing of the previous noisy releases g_real(1..t-1) — and of fresh codes z and labels
  ỹ drawn from public or already-released distributions, with a *fixed* batch size B (never the
  private Poisson batch size, never the real batch's labels). Adding it to the noisy g_real is
  therefore post-processing of step t's release given the past ones, and by adaptive composition
  the whole run costs exactly what the accountant charges for the real-data steps.
  (The alternative, pairing each real record with a fake sample inside the per-sample clip,
  would also be sound but clips and noises a term that needs neither, wasting signal-to-noise
  and paying per-sample-gradient cost on the fake batch.)
* Generator steps use D with the hooks disabled and gradients taken w.r.t. θ_G only.
* What is logged during training is post-processing only (the generator loss, the DP steps
  taken); the real-data discriminator loss is never computed outside the DP path nor logged,
  since it is an un-noised function of the private batch.
* Noise and Poisson sampling draw from generators seeded by the OS entropy pool, never from the
  run seed: a seeded noise or sampling stream would let anyone who knows the seed subtract the
  noise or know which records were sampled (which voids the amplification by subsampling).

Privacy accounting: one yardstick with the one-shot methods. ``privacy.epsilon``/``delta`` set
the target, ``privacy.neighbours`` the relation (``replace_one``, the default: D and D' differ
in one record's value, n public; or ``add_remove``) and ``privacy.accountant`` the accountant
(``pld``, the default and exact up to a pessimistic discretisation; or ``rdp``). Each recorded
history entry (σ, q, steps) is the event ``SubsampledGaussian(σ, q, steps)`` of
:mod:`dpsynth.privacy.accounting`: under ``add_remove`` dp-accounting's
``PoissonSampledDpEvent`` of a Gaussian, under ``replace_one`` the same event in a PLD
accountant built with ``NeighboringRelation.REPLACE_ONE`` (a replaced record's clipped gradient
may leave a step's sum and another's enter it, moving the sum by up to 2C, but only in a step
that samples that record: PLD composes the exact privacy-loss distribution of that pair). ``rdp``
with ``replace_one`` is refused with a ConfigError, not approximated: dp-accounting's RDP
accountant has no replace-one bound for Poisson sampling, and no ad hoc conversion stands in for
one. Use ``pld`` (or ``rdp`` with ``add_remove``, the papers' setting).

With ``noise_multiplier: null`` σ is calibrated (:func:`~dpsynth.privacy.accounting.
calibrate_sgd`) for the configured number of DP steps T (``steps``, else ``epochs``·n/batch_size)
and rate q, after the one-off releases below, so the budget is spent (to 0.5% of ε) at step T.
With a fixed ``noise_multiplier`` the run stops after the last step the budget allows
(:func:`~dpsynth.privacy.accounting.affordable_steps`, at most T). Each generator step follows
``d_steps`` DP discriminator steps. The Ledger (``Ledger.account``) reports ``epsilon_spent`` by
the run's accountant and ``epsilon_exact`` by PLD, with the neighbour relation; a run whose
``epsilon_spent`` exceeds ε is refused.

One-off releases before training (the calibration's prefix, first in the ledger): any
``spends`` the dataset made at load time (DP schema inference), and, for unbalanced datasets
(``class_counts: auto`` and ``spec.balanced`` false, e.g. Adult), the class counts, released
once with the Gaussian mechanism: L2 sensitivity Δ = 1 under add/remove (one count ±1) and √2
under replace-one (one count −1, another +1), noise std ``count_noise_multiplier``·Δ. Fake
labels and sampled labels follow the released proportions.

Resume. The step history, σ, q, the step budget, the relation, the accountant, the one-off
releases and the released label proportions are written to
``run_dir/checkpoints/privacy_state.json`` after every DP step and stored in every Lightning
checkpoint. A resumed run continues that history, never a fresh one: steps executed after the
last model checkpoint of a killed run stay charged (their log lines were outputs), so the resumed
run takes only the steps the budget still allows. A resume under a different relation,
accountant or calibration is refused. (``resume=false`` makes the pipeline delete
``checkpoints/``: that starts a new run which spends its budget again, like deleting a cached
one-shot release.)

Released model: the generator, or an exponential moving average of its weights (``g_ema``,
default 0.999) — post-processing either way, and the average smooths the step-to-step jitter
that noisy discriminator gradients put into the generator.
"""

from __future__ import annotations

import copy
import json
import math
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from opacus.accountants import IAccountant
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch import nn

from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError, PrivacyError, TrainingError
from dpsynth.methods.base import Method, PrivacySpec, RunContext, Synthesizer, ema_update_
from dpsynth.methods.generators import TabularGenerator
from dpsynth.methods.oneshot import fit
from dpsynth.privacy.accounting import (
    Event,
    SubsampledGaussian,
    affordable_steps,
    calibrate_sgd,
    check_accountant,
    check_neighbours,
    epsilon_spent,
)
from dpsynth.privacy.release import Ledger, Spend

CLASS_COUNTS = ("auto", "release", "uniform")
MECHANISM = "poisson_gaussian"  # Spend.mechanism of the DP-SGD steps
STATE_FILE = "privacy_state.json"
History = list[tuple[float, float, int]]  # step history: (σ, q, steps) entries


# ============================================================================ accounting


class StepHistory(IAccountant):
    """Opacus' accountant interface used only as a recorder of the DP steps taken.

    ``DPOptimizer`` reports every step through the accountant hook; this keeps the (σ, q, steps)
    history (consecutive equal steps merged, like Opacus' own accountants), which is saved for
    resume and turned into events by :func:`history_events`. It computes no ε: every ε comes
    from :mod:`dpsynth.privacy.accounting`.
    """

    def __init__(self) -> None:
        self.history: History = []

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        if self.history:
            sigma, q, k = self.history[-1]
            if sigma == noise_multiplier and q == sample_rate:
                self.history[-1] = (sigma, q, k + 1)
                return
        self.history.append((noise_multiplier, sample_rate, 1))

    def get_epsilon(self, delta: float, *args: Any, **kwargs: Any) -> float:
        raise PrivacyError(
            "StepHistory computes no ε; use dpsynth.privacy.accounting.epsilon_spent("
            "history_events(history), ...)."
        )

    def __len__(self) -> int:
        return history_steps(self.history)

    @classmethod
    def mechanism(cls) -> str:
        return "step_history"


def history_events(history: History) -> list[SubsampledGaussian]:
    """The accounting events of a step history: each (σ, q, steps) entry is
    ``SubsampledGaussian(σ, q, steps)``."""
    return [SubsampledGaussian(float(s), float(q), int(k)) for s, q, k in history]


def count_sensitivity(neighbours: str) -> float:
    """L2 sensitivity of the vector of class counts: 1 under add/remove (one count ±1), √2
    under replace-one (a record changing class moves one count −1 and another +1)."""
    return math.sqrt(2.0) if check_neighbours(neighbours) == "replace_one" else 1.0


# ============================================================================ networks


class CondDCGANGenerator(nn.Module):
    """DCGAN generator conditioned on a one-hot label: (code, label) → image in [0, 1].

    Any (C, H, W): the net upsamples ×4 from ⌈H/4⌉×⌈W/4⌉ and centre-crops to H×W, so 8×8,
    28×28 and 32×32 all use the same two transposed convolutions. BatchNorm is fine here: the
    generator never sees private data, so it needs no per-sample gradients.
    """

    def __init__(
        self, shape: tuple[int, ...], num_classes: int, code_dim: int = 64, width: int = 32
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.shape, self.code_dim, self.num_classes = tuple(shape), code_dim, num_classes
        self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
        self.fc = nn.Sequential(
            nn.Linear(code_dim + num_classes, 4 * width * self.h0 * self.w0),
            nn.BatchNorm1d(4 * width * self.h0 * self.w0),
            nn.ReLU(),
        )
        self.width = width
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, c, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(labels, self.num_classes).to(code.dtype)  # (B, K)
        h = self.fc(torch.cat([code, onehot], dim=1))  # (B, 4w·h0·w0)
        x = self.conv(h.view(-1, 4 * self.width, self.h0, self.w0))  # (B, C, 4h0, 4w0)
        _, hh, ww = self.shape
        top, left = (x.shape[2] - hh) // 2, (x.shape[3] - ww) // 2
        return x[:, :, top : top + hh, left : left + ww]  # (B, C, H, W)


class _Projection(nn.Module):
    """Projection-discriminator head (Miyato & Koyama, 2018): ψ(h) + ⟨embed(y), h⟩.

    Only ``nn.Linear`` and ``nn.Embedding`` hold parameters, both with Opacus per-sample
    gradient rules.
    """

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.out = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.out(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)  # (B,)


class CondDCGANDiscriminator(nn.Module):
    """DCGAN discriminator with GroupNorm (never BatchNorm: it mixes records within a batch,
    so per-sample gradients would not exist) and a projection label head. Any (C, H, W)."""

    def __init__(
        self, shape: tuple[int, ...], num_classes: int, width: int = 32, groups: int = 8
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1),  # (B, w, ⌈H/2⌉, ⌈W/2⌉)
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # (B, 2w, ⌈H/4⌉, ⌈W/4⌉)
            nn.GroupNorm(math.gcd(groups, 2 * width), 2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        with torch.no_grad():
            dim = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.head = _Projection(dim, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), labels)  # (B,) logits


class MLPDiscriminator(nn.Module):
    """Tabular discriminator: two LeakyReLU layers and a projection label head."""

    def __init__(self, dim: int, num_classes: int, width: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(dim, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2)
        )
        self.head = _Projection(width, num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), labels)  # (B,) logits


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of logits (B,) against a constant target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def os_seeded_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from the OS entropy pool (never from the run seed)."""
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


def history_steps(history: History) -> int:
    return int(sum(k for _, _, k in history))


def _atomic_write_text(path: Path, text: str) -> None:
    """Temp file + rename: a kill leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ============================================================================ training


class GANModule(pl.LightningModule):
    """Manual-optimisation GAN: ``d_steps`` (DP) discriminator steps, then one generator step.

    The private tensors ``train_x``/``train_y`` are plain attributes (never buffers, so never
    written into checkpoints) and are read only by :meth:`real_gradients`.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        train_x: torch.Tensor,  # (N, *shape) private
        train_y: torch.Tensor,  # (N,) private
        label_probs: np.ndarray,  # (K,) public or released
        *,
        code_dim: int,
        batch_size: int,
        lr_d: float,
        lr_g: float,
        betas: tuple[float, float],
        private: bool,
        d_steps: int = 1,
        noise_multiplier: float = 0.0,
        max_grad_norm: float = 1.0,
        accountant: IAccountant | None = None,  # step recorder (default: a StepHistory)
        budget_steps: int = 0,
        secure_mode: bool = False,
        g_ema: float = 0.0,
        state: dict[str, Any] | None = None,
        state_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.private = private
        if private:
            ModuleValidator.validate(discriminator, strict=True)
            discriminator = GradSampleModule(discriminator, loss_reduction="mean")
        self.generator, self.discriminator = generator, discriminator
        # Exponential moving average of G's weights (what is sampled from when g_ema > 0):
        # post-processing of G, smooths the step-to-step jitter that noisy D gradients cause.
        self.g_ema = g_ema
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if g_ema else None
        self._x, self._y = train_x, train_y
        self.label_probs = torch.as_tensor(label_probs, dtype=torch.float64)
        self.code_dim, self.batch_size, self.d_steps = code_dim, batch_size, d_steps
        self.lr_d, self.lr_g, self.betas = lr_d, lr_g, betas
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.sample_rate = batch_size / len(train_x)
        if private and accountant is None:
            accountant = StepHistory()
        # Records the DP steps only (Opacus' hook calls its ``step``); ε comes from the history.
        self.accountant, self.budget_steps = accountant, budget_steps
        self.secure_mode = secure_mode
        # public privacy state: relation, accountant, σ, q, budget, one-off releases, label_probs
        self.state = state or {}
        self.state_path = state_path
        self.sampler = UniformWithReplacementSampler(
            num_samples=len(train_x),
            sample_rate=self.sample_rate,
            generator=os_seeded_generator(),
            steps=1,
        )
        self._d_opt: torch.optim.Optimizer | None = None
        self._g_opt: torch.optim.Optimizer | None = None

    # ------------------------------------------------------------------ privacy state

    @property
    def dp_steps(self) -> int:
        """DP-SGD steps charged so far (the recorded history)."""
        if self.accountant is None:
            return 0
        return history_steps(self.accountant.history)

    def privacy_state(self) -> dict[str, Any]:
        return {**self.state, "recorder": self.accountant.state_dict()}

    def persist_privacy_state(self) -> None:
        if self.state_path is not None and self.accountant is not None:
            _atomic_write_text(self.state_path, json.dumps(self.privacy_state()))

    def on_train_end(self) -> None:
        """Checkpoint the final state too, so a run that fails after training (sampling,
        evaluation) resumes with the trained generator instead of an earlier one."""
        if self.state_path is not None:
            self.trainer.save_checkpoint(self.state_path.parent / "last.ckpt", weights_only=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.accountant is not None:
            checkpoint["dpsgd_privacy"] = self.privacy_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Continue the checkpoint's step history unless the per-step state file is further on
        (steps run after that checkpoint stay charged)."""
        saved = checkpoint.get("dpsgd_privacy")
        if self.accountant is None:
            return
        if saved is None:
            raise PrivacyError(
                "the checkpoint to resume holds no privacy state; resuming would restart "
                "the privacy accounting. Start afresh with resume=false (a new run that spends the "
                "budget again) or in a new run folder."
            )
        _check_same_privacy(saved, self.state)
        hist = _saved_history(saved)
        if history_steps(hist) > history_steps(self.accountant.history):
            self.accountant.load_state_dict({**saved["recorder"], "history": hist})

    # ------------------------------------------------------------------ optimisers

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        d_opt: torch.optim.Optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.lr_d, betas=self.betas
        )
        if self.private:
            d_opt = DPOptimizer(
                d_opt,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.max_grad_norm,
                expected_batch_size=self.batch_size,
                loss_reduction="mean",
                generator=os_seeded_generator(self.device),  # noise on the params' device
                secure_mode=self.secure_mode,
            )
            charge = self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate)

            def on_dp_step(opt: DPOptimizer) -> None:
                charge(opt)  # Opacus' hook: records one Poisson-Gaussian step (σ, q)
                self.persist_privacy_state()

            d_opt.attach_step_hook(on_dp_step)
        g_opt = torch.optim.Adam(self.generator.parameters(), lr=self.lr_g, betas=self.betas)
        self._d_opt, self._g_opt = d_opt, g_opt
        return [d_opt, g_opt]

    # ------------------------------------------------------------------ the two gradient terms

    @staticmethod
    @contextmanager
    def quiet_hooks() -> Iterator[None]:
        """Opacus' full backward hooks warn whenever D's input (data) needs no gradient."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            yield

    @contextmanager
    def hooks_off(self) -> Iterator[None]:
        """Run D without Opacus' per-sample hooks: no activations kept, no grad_sample."""
        if not self.private:
            yield
            return
        self.discriminator.disable_hooks()
        try:
            yield
        finally:
            self.discriminator.enable_hooks()

    def d_params(self) -> list[nn.Parameter]:
        return [p for p in self.discriminator.parameters() if p.requires_grad]

    def real_gradients(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """The only private computation: (noisy, clipped) gradient of D's loss on real data.

        Private: Opacus clips each record's gradient to C, sums, adds N(0, σ²C²), divides by
        the expected batch size and records one step (σ, q). Non-private: the plain
        gradient of the mean loss.
        """
        params = self.d_params()
        if not self.private:
            if len(x) == 0:
                return [torch.zeros_like(p) for p in params]
            loss = _bce(self.discriminator(x, y), 1.0)
            return list(torch.autograd.grad(loss, params))
        opt = self._d_opt
        opt.zero_grad(set_to_none=True)  # clears grad, grad_sample and summed_grad
        if len(x) == 0:  # an empty Poisson batch still gets noise and is still charged
            for p in params:
                p.grad_sample = p.new_zeros((0, *p.shape))
        else:
            with self.quiet_hooks():
                _bce(self.discriminator(x, y), 1.0).backward()  # p.grad_sample: (B, *p.shape)
        if not opt.pre_step():  # clip, noise, scale, record the step
            raise TrainingError("Opacus skipped a DP step; gradient accumulation is not used.")
        grads = [p.grad.detach().clone() for p in params]
        opt.zero_grad(set_to_none=True)
        return grads

    def fake_gradients(self, x_fake: torch.Tensor, y_fake: torch.Tensor) -> list[torch.Tensor]:
        """Gradient of D's loss on generated samples: no private input, so neither clipped,
        noised nor charged (see the module docstring)."""
        with self.hooks_off(), self.quiet_hooks():
            loss = _bce(self.discriminator(x_fake, y_fake), 0.0)
            return list(torch.autograd.grad(loss, self.d_params()))

    def d_step(
        self, x: torch.Tensor, y: torch.Tensor, x_fake: torch.Tensor, y_fake: torch.Tensor
    ) -> None:
        """θ_D ← Adam(θ_D, g_real + g_fake); the sum is formed after the noise was added."""
        g_real = self.real_gradients(x, y)
        g_fake = self.fake_gradients(x_fake, y_fake)
        for p, a, b in zip(self.d_params(), g_real, g_fake, strict=True):
            p.grad = a + b
        base = self._d_opt.original_optimizer if self.private else self._d_opt
        base.step()
        base.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ generator side

    def sample_labels(self, n: int) -> torch.Tensor:
        """Fake labels from the public/released proportions (never the real batch's labels)."""
        return torch.multinomial(self.label_probs, n, replacement=True).to(self.device)

    def generate(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.sample_labels(n)  # (n,)
        code = torch.randn(n, self.code_dim, device=self.device)  # (n, code_dim)
        return self.generator(code, y), y  # (n, *shape), (n,)

    def generator_gradients(
        self, x_fake: torch.Tensor, y_fake: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Non-saturating loss −log D(G(z, ỹ), ỹ) on the step's fake batch (still attached to
        G's graph), scored by the just-updated D, and its gradient w.r.t. θ_G only.

        Post-processing of D. The backward runs with the per-sample hooks off too (a backward
        outside would meet hooks that never saw this forward).
        """
        params = list(self.generator.parameters())
        with self.hooks_off():
            loss = _bce(self.discriminator(x_fake, y_fake), 1.0)
            grads = list(torch.autograd.grad(loss, params))
        return loss.detach(), grads

    def update_ema(self) -> None:
        """The EMA copy follows G (:func:`~dpsynth.methods.base.ema_update_`)."""
        if self.generator_ema is not None:
            ema_update_(self.generator_ema, self.generator, self.g_ema, self.global_step)

    def sampling_generator(self) -> nn.Module:
        """The generator to release: the EMA copy when enabled."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    # ------------------------------------------------------------------ Lightning

    def on_fit_start(self) -> None:
        self._x, self._y = self._x.to(self.device), self._y.to(self.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        """``d_steps`` discriminator updates (each a fresh Poisson batch), one generator update."""
        k = self.d_steps
        if self.private:
            k = min(k, self.budget_steps - self.dp_steps)
        if k <= 0:
            self.trainer.should_stop = True  # the budget is spent
            return None
        _, g_opt = self.optimizers()
        for i in range(k):
            idx = torch.as_tensor(next(iter(self.sampler)), dtype=torch.long, device=self.device)
            with torch.set_grad_enabled(i == k - 1):  # the last fake batch also trains G
                x_fake, y_fake = self.generate(self.batch_size)  # (B, *shape): fixed B
            self.d_step(self._x[idx], self._y[idx], x_fake.detach(), y_fake)
        loss, grads = self.generator_gradients(x_fake, y_fake)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"generator loss became {loss.item()} at step {self.global_step}; lower "
                "method.lr_g / method.lr_d (a non-finite value stops the run)."
            )
        for p, g in zip(self.generator.parameters(), grads, strict=True):
            p.grad = g
        g_opt.step()  # through Lightning: one global step per training step
        g_opt.zero_grad(set_to_none=True)
        self.update_ema()
        self.log_dict(
            {"train/g_loss": loss, "privacy/dp_steps": float(self.dp_steps)},
            on_step=True,
            on_epoch=False,
            prog_bar=False,
        )
        return loss


#: What a resume must find unchanged in the saved privacy state (key → what a user changes).
RESUME_KEYS = {
    "neighbours": "privacy.neighbours",
    "accountant": "privacy.accountant",
    "mechanism": "the mechanism",
    "noise_multiplier": "noise_multiplier",
    "sample_rate": "sample_rate (method.batch_size / n)",
    "max_grad_norm": "method.max_grad_norm",
    "budget_steps": "budget_steps (the DP steps the budget allows)",
    "prefix": "the one-off releases before training (class counts, schema)",
}


def _check_same_privacy(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A resumed run must continue the same mechanism under the same relation and accountant,
    not a differently calibrated or differently accounted one."""
    for key, what in RESUME_KEYS.items():
        if key not in current or saved.get(key) == current[key]:
            continue
        if key not in saved:
            got = (
                "no record of it (written by an older dpsynth that accounted DP-SGD with "
                "Opacus under add/remove)"
            )
        elif key == "prefix":
            got = f"{_prefix_summary(saved[key])}, this run plans {_prefix_summary(current[key])}"
        else:
            got = f"{saved[key]!r} but this run gives {current[key]!r}"
        raise ConfigError(
            f"resume: {what} differs from the run folder's privacy state: it has {got}. Resume "
            "with the original config (privacy.*, method.*), or start a fresh run (resume=false, "
            "or a new run folder, which spends the budget again); continuing the saved history "
            "under a different relation, accountant or calibration would mis-count."
        )


def _prefix_summary(prefix: list[dict[str, Any]]) -> str:
    parts = (
        f"{p['statistic']} (m={p['noise_multiplier']:.4g}, Δ={p['sensitivity']:.4g})"
        for p in prefix
    )
    return f"[{', '.join(parts)}]"


def _saved_history(saved: dict[str, Any]) -> History:
    """The step history of a saved privacy state, as (σ, q, steps) tuples."""
    return [tuple(h) for h in saved.get("recorder", {}).get("history", [])]


# ============================================================================ the method


class DPSGDGAN(Method):
    """Conditional GAN, DP-SGD on the discriminator (``method=dpsgd``) or no DP at all
    (``method=nonprivate_gan``, ``private: false``); see the module docstring."""

    one_shot = False
    kinds = frozenset({"image", "tabular"})
    version = "dpsgd-1"  # bump rule: Method's docstring

    def __init__(
        self,
        *,
        name: str = "dpsgd",
        private: bool = True,
        steps: int | None = 3000,
        epochs: float = 13.0,
        batch_size: int = 256,
        d_steps: int = 1,
        noise_multiplier: float | None = None,
        max_grad_norm: float = 1.0,
        lr_d: float = 2e-4,
        lr_g: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        code_dim: int = 64,
        g_width: int = 16,
        d_width: int = 16,
        d_groups: int = 8,
        tabular_code_dim: int = 16,
        tabular_width: int = 0,
        tabular_d_width: int = 128,
        class_counts: Literal["auto", "release", "uniform"] = "auto",
        count_noise_multiplier: float = 50.0,
        g_ema: float = 0.999,
        secure_mode: bool = False,
        checkpoint_every: int = 500,
        preset_selection: str = "authors",  # provenance label for dpsynth-report; unused here
    ) -> None:
        self.name, self.private = str(name), bool(private)  # instance values over ClassVars
        if not self.name:
            raise ConfigError("method.name: got an empty name; use the YAML file's stem.")
        if class_counts not in CLASS_COUNTS:
            raise ConfigError(
                f"method.class_counts: got {class_counts!r}; allowed: {', '.join(CLASS_COUNTS)}."
            )
        ints = {
            "batch_size": batch_size,
            "d_steps": d_steps,
            "code_dim": code_dim,
            "g_width": g_width,
            "d_width": d_width,
            "d_groups": d_groups,
            "tabular_code_dim": tabular_code_dim,
            "tabular_d_width": tabular_d_width,
        }
        for key, value in ints.items():
            if int(value) < 1:
                raise ConfigError(f"method.{key}: got {value}; must be a positive integer.")
        if steps is not None and int(steps) < 1:
            raise ConfigError(
                f"method.steps: got {steps}; must be a positive integer, or null to use epochs."
            )
        if steps is None and not (epochs > 0 and math.isfinite(epochs)):
            raise ConfigError(f"method.epochs: got {epochs}; must be > 0 (or set method.steps).")
        positive = {
            "lr_d": lr_d,
            "lr_g": lr_g,
            "max_grad_norm": max_grad_norm,
            "count_noise_multiplier": count_noise_multiplier,
        }
        for key, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"method.{key}: got {value}; must be a finite number > 0.")
        for key, value in (("beta1", beta1), ("beta2", beta2), ("g_ema", g_ema)):
            if not 0 <= value < 1:
                raise ConfigError(f"method.{key}: got {value}; allowed: 0 ≤ {key} < 1.")
        if noise_multiplier is not None and not (
            noise_multiplier > 0 and math.isfinite(noise_multiplier)
        ):
            raise ConfigError(
                f"method.noise_multiplier: got {noise_multiplier}; a private run needs a finite "
                "σ > 0 (σ = 0 has unbounded ε). Use null to calibrate σ from privacy.epsilon, "
                "or method=nonprivate_gan for a run without DP."
            )
        if int(checkpoint_every) < 0:
            raise ConfigError(
                f"method.checkpoint_every: got {checkpoint_every}; must be ≥ 0 (0 disables)."
            )
        self.epochs = float(epochs)
        self.steps = None if steps is None else int(steps)
        self.batch_size, self.noise_multiplier = int(batch_size), noise_multiplier
        self.d_steps = int(d_steps)
        self.max_grad_norm, self.lr_d, self.lr_g = float(max_grad_norm), float(lr_d), float(lr_g)
        self.betas = (float(beta1), float(beta2))
        self.code_dim, self.g_width, self.d_width = int(code_dim), int(g_width), int(d_width)
        self.d_groups, self.tabular_code_dim = int(d_groups), int(tabular_code_dim)
        self.tabular_width, self.tabular_d_width = int(tabular_width), int(tabular_d_width)
        self.class_counts, self.count_noise_multiplier = class_counts, float(count_noise_multiplier)
        self.secure_mode, self.checkpoint_every = bool(secure_mode), int(checkpoint_every)
        self.g_ema = float(g_ema)

    # ------------------------------------------------------------------ plan

    def total_steps(self, n: int) -> int:
        """T: ``steps`` if set, else ⌈epochs · n / batch_size⌉ (expected passes over the data)."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * n / self.batch_size))

    def check(
        self,
        spec: DataSpec,
        dataset_options: dict[str, Any] | None = None,
        n_train: int | None = None,
    ) -> None:
        super().check(spec, dataset_options, n_train)
        if n_train is not None:
            self.sample_rate(n_train)  # a batch larger than the data fails before any output

    def sample_rate(self, n: int) -> float:
        """Poisson rate q = batch_size / n; refuses a batch larger than the dataset."""
        if self.batch_size > n:
            raise ConfigError(
                f"method.batch_size: got {self.batch_size} but the training split has only "
                f"{n} records; the expected Poisson batch must be ≤ n. Set method.batch_size "
                f"≤ {n}."
            )
        return self.batch_size / n

    def release_counts(self, spec: DataSpec) -> bool:
        """Whether class counts are released: from public metadata only (as the one-shots)."""
        if self.class_counts == "auto":
            return not spec.balanced
        return self.class_counts == "release"

    def prefix_spends(self, data: Dataset, privacy: PrivacySpec) -> list[Spend]:
        """The one-off releases before training, in ledger order: the dataset's own (DP schema
        inference at load time, if any), then the class counts (if released; public metadata
        decides, as for the one-shots). Planned here, made by :meth:`_resume_or_release`."""
        spends = list(getattr(data, "spends", None) or [])
        if self.private and self.release_counts(data.spec):
            delta = count_sensitivity(privacy.neighbours)
            m = self.count_noise_multiplier
            spends.append(Spend("gaussian", "class_counts", m, delta, m * delta))
        return spends

    def calibrate(
        self, privacy: PrivacySpec, q: float, steps: int, prefix: Sequence[Event] = ()
    ) -> tuple[float, int]:
        """(σ, T): the smallest σ (to tolerance, on the safe side) whose ``steps`` steps at rate
        q, after the ``prefix`` events, spend ≤ ε under ``privacy.neighbours`` by
        ``privacy.accountant``; or, with a fixed ``noise_multiplier``, the largest T ≤ ``steps``
        the budget allows. All by :mod:`dpsynth.privacy.accounting`."""
        eps, delta = privacy.epsilon, privacy.accounting_delta  # δ left after load-time
        if not (eps > 0 and math.isfinite(eps)) or not 0 < delta < 1:
            raise ConfigError(
                f"privacy.epsilon/privacy.delta: got ({eps}, {delta}); method={self.name} needs a "
                "finite ε > 0 and 0 < δ < 1 (or use method=nonprivate_gan)."
            )
        rel = {
            "neighbours": check_neighbours(privacy.neighbours),
            "accountant": check_accountant(privacy.accountant),
        }
        prefix = tuple(prefix)
        if prefix and epsilon_spent(prefix, delta=delta, **rel) >= eps:
            raise ConfigError(
                f"the {len(prefix)} release(s) before training (class counts at "
                f"method.count_noise_multiplier={self.count_noise_multiplier}; any the dataset "
                f"made at load time) alone spend ≥ ε = {eps}. Raise "
                "method.count_noise_multiplier or set method.class_counts=uniform."
            )
        if self.noise_multiplier is not None:
            sigma = float(self.noise_multiplier)
            t = affordable_steps(
                epsilon=eps, delta=delta, noise_multiplier=sigma, sample_rate=q, steps=steps,
                prefix=prefix, **rel,
            )  # fmt: skip
            if t < 1:
                raise ConfigError(
                    f"method.noise_multiplier: got {sigma}; even one step at q={q:.4g} spends "
                    f"more than ε = {eps} ({privacy.neighbours}, {privacy.accountant}). Raise "
                    "it, or set it to null to calibrate."
                )
            return sigma, t
        sigma = calibrate_sgd(
            epsilon=eps, delta=delta, sample_rate=q, steps=steps, prefix=prefix, **rel
        )
        return sigma, steps

    # ------------------------------------------------------------------ networks

    def make_networks(self, spec: DataSpec) -> tuple[nn.Module, nn.Module, int]:
        """(generator, discriminator, code_dim) for the dataset's kind and shape."""
        k = spec.num_classes
        if spec.kind == "image":
            if len(spec.shape) != 3:
                raise ConfigError(
                    f"dataset={spec.name}: image shape {spec.shape} is not (C, H, W); "
                    f"method={self.name} needs (C, H, W) images."
                )
            gen = CondDCGANGenerator(spec.shape, k, self.code_dim, self.g_width)
            disc = CondDCGANDiscriminator(spec.shape, k, self.d_width, self.d_groups)
            return gen, disc, self.code_dim
        gen = TabularGenerator(spec, k, self.tabular_code_dim, self.tabular_width)
        return gen, MLPDiscriminator(spec.dim, k, self.tabular_d_width), self.tabular_code_dim

    # ------------------------------------------------------------------ the run

    def train_private(
        self, data: Dataset, privacy: PrivacySpec, ctx: RunContext
    ) -> tuple[Synthesizer, Ledger]:
        """Train under DP-SGD (or without DP) and return the generator and what was spent."""
        spec, n = data.spec, data.n_train
        q, steps = self.sample_rate(n), self.total_steps(n)
        ckpt_dir = ctx.run_dir / "checkpoints"
        state_path = ckpt_dir / STATE_FILE if self.checkpoint_every > 0 else None
        recorder, state, sigma = None, None, 0.0
        if self.private:
            prefix = self.prefix_spends(data, privacy)
            sigma, steps = self.calibrate(privacy, q, steps, [s.event() for s in prefix])
            state = {
                "neighbours": privacy.neighbours,
                "accountant": privacy.accountant,
                "mechanism": MECHANISM,
                "noise_multiplier": sigma,
                "sample_rate": q,
                "max_grad_norm": self.max_grad_norm,
                "budget_steps": steps,
                "prefix": [asdict(s) for s in prefix],
            }
            recorder = StepHistory()
            label_probs = self._resume_or_release(data, recorder, state, state_path)
        else:
            label_probs = _proportions(data.train_y, spec.num_classes, spec.balanced)
        pl.seed_everything(ctx.seed, workers=True, verbose=False)  # init and codes only
        generator, discriminator, code_dim = self.make_networks(spec)
        module = self.make_module(
            generator,
            discriminator,
            torch.from_numpy(np.ascontiguousarray(data.train_x, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(data.train_y, dtype=np.int64)),
            label_probs,
            code_dim=code_dim,
            noise_multiplier=sigma,
            accountant=recorder,
            budget_steps=steps,
            state=state,
            state_path=state_path,
        )
        # Always fit: on a resume Lightning restores the weights even when nothing is left to do.
        fit(module, math.ceil(steps / self.d_steps), ctx, self.checkpoint_every)  # G steps
        synth = Synthesizer(module.sampling_generator().cpu(), code_dim, label_probs, spec)
        return synth, self._ledger(privacy, module)

    def make_module(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        label_probs: np.ndarray,
        *,
        code_dim: int,
        noise_multiplier: float,
        accountant: IAccountant | None,
        budget_steps: int,
        state: dict[str, Any] | None = None,
        state_path: Path | None = None,
        batch_size: int | None = None,
    ) -> GANModule:
        """The :class:`GANModule` this config trains (Opacus wrapping, optimiser settings).

        ``accountant`` is the step recorder (a :class:`StepHistory`; ``None`` makes one for a
        private module); its ``history`` is what :func:`history_events` turns into events.

        ``train_private`` builds its module here, and so does the empirical DP-SGD audit
        (``dpsynth.audit.dpsgd``), which passes ``batch_size`` = its tiny dataset's
        size to audit a full-batch (q = 1) step; everything else is this config's.
        """
        return GANModule(
            generator,
            discriminator,
            train_x,
            train_y,
            label_probs,
            code_dim=code_dim,
            batch_size=self.batch_size if batch_size is None else int(batch_size),
            d_steps=self.d_steps,
            lr_d=self.lr_d,
            lr_g=self.lr_g,
            betas=self.betas,
            private=self.private,
            noise_multiplier=noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            accountant=accountant,
            budget_steps=budget_steps,
            secure_mode=self.secure_mode,
            g_ema=self.g_ema,
            state=state,
            state_path=state_path,
        )

    def _resume_or_release(
        self,
        data: Dataset,
        recorder: IAccountant,
        state: dict[str, Any],
        state_path: Path | None,
    ) -> np.ndarray:
        """Continue the run folder's step history, or release the class counts (if planned in
        ``state["prefix"]``) into a fresh run. Returns the label proportions the generator is
        trained on."""
        spec = data.spec
        saved = _load_state(state_path)
        if saved is not None:  # an earlier attempt of this run: continue its history
            _check_same_privacy(saved, state)
            recorder.load_state_dict({**saved["recorder"], "history": _saved_history(saved)})
            probs = np.asarray(saved["label_probs"], dtype=np.float64)
        else:
            probs = np.full(spec.num_classes, 1.0 / spec.num_classes)
            counts_spend = [p for p in state["prefix"] if p["statistic"] == "class_counts"]
            if counts_spend:
                std = float(counts_spend[0]["noise_std"])  # m·Δ, Δ under the run's relation
                counts = np.bincount(data.train_y, minlength=spec.num_classes).astype(np.float64)
                rng = np.random.default_rng(secrets.randbits(128))
                noisy = np.clip(counts + rng.normal(0.0, std, counts.shape), 0.0, None)
                if noisy.sum() > 0:
                    probs = noisy / noisy.sum()
        state["label_probs"] = [float(p) for p in probs]
        if state_path is not None:
            _atomic_write_text(state_path, json.dumps({**state, "recorder": recorder.state_dict()}))
        return probs

    def _ledger(self, privacy: PrivacySpec, module: GANModule) -> Ledger:
        """The one-off releases, then one ``poisson_gaussian`` spend per history entry (σ, q,
        steps), accounted by ``Ledger.account`` (the run's accountant and PLD)."""
        if not self.private:
            return Ledger(
                privacy.epsilon, privacy.delta, "none", math.inf, [], neighbours=privacy.neighbours
            )
        spends = [Spend(**p) for p in module.state.get("prefix", [])]
        history = list(module.accountant.history)
        for ev in history_events(history):
            spends.append(
                Spend(
                    MECHANISM,
                    "discriminator_gradients",
                    ev.noise_multiplier,
                    self.max_grad_norm,
                    ev.noise_multiplier * self.max_grad_norm,
                    steps=ev.steps,
                    sample_rate=ev.sample_rate,
                    expected_batch_size=module.batch_size,
                )
            )
        if not history:  # no step taken: still name the mechanism, with 0 steps
            sigma = float(module.noise_multiplier)
            spends.append(
                Spend(
                    MECHANISM, "discriminator_gradients", sigma, self.max_grad_norm,
                    sigma * self.max_grad_norm, steps=0, sample_rate=module.sample_rate,
                    expected_batch_size=module.batch_size,
                )
            )  # fmt: skip
        ledger = Ledger.account(privacy, spends)
        if ledger.epsilon_spent > privacy.epsilon * (1 + 1e-9):
            raise PrivacyError(
                f"the {privacy.accountant} accountant reports ε spent = {ledger.epsilon_spent} > "
                f"target {privacy.epsilon} ({privacy.neighbours}) after {module.dp_steps} steps; "
                "refusing to report. This is a bug."
            )
        return ledger


def _proportions(y: np.ndarray, k: int, balanced: bool) -> np.ndarray:
    """Label proportions for the non-private GAN: exact (no DP), uniform if public balance."""
    if balanced:
        return np.full(k, 1.0 / k)
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return counts / counts.sum()


def _load_state(path: Path | None) -> dict[str, Any] | None:
    """The privacy state of an earlier attempt in this run folder: the per-step state file,
    or (if that is missing) the one in ``last.ckpt``, whichever has charged more steps."""
    if path is None:
        return None
    found: list[dict[str, Any]] = []
    try:
        if path.exists():
            found.append(json.loads(path.read_text()))
        last = path.parent / "last.ckpt"
        if last.exists():
            ckpt = torch.load(last, map_location="cpu", weights_only=False)
            if "dpsgd_privacy" in ckpt:
                found.append(ckpt["dpsgd_privacy"])
    except Exception as e:  # noqa: BLE001 - any decode failure means an unusable state
        raise PrivacyError(
            f"{path.parent} holds an unreadable privacy state ({type(e).__name__}: {e}) of an "
            "earlier attempt of this run. Start afresh with resume=false (a new run that spends "
            "the budget again) or in a new run folder."
        ) from e
    if not found:
        return None
    return max(found, key=lambda st: history_steps(_saved_history(st)))
