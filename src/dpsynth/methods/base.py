"""The interface every synthesis method implements, and what the pipeline hands it.

Two kinds of method exist. *One-shot* methods (PEARL, DP-MERF) touch the private data once,
in :meth:`Method.release`, and train from the :class:`~dpsynth.privacy.release.Release`
alone in :meth:`Method.train` — the pipeline never passes them the data there. *Private
training* methods (DP-SGD GANs) spend privacy during training, in
:meth:`Method.train_private`, through their own library accountant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from dpsynth.config import canonical_precision
from dpsynth.data.base import Dataset, DataSpec, Kind
from dpsynth.errors import ConfigError
from dpsynth.privacy.release import Ledger, PrivacySpec, Release, ReleaseCache

_FLUSH_PROCESS_WIDE = False


def flush_denormals_process_wide() -> bool:
    """Flush subnormal floats to zero (FTZ/DAZ) in this thread and every thread it starts from
    now on; the CLI calls it first thing, before torch starts its OpenMP workers (they inherit
    the setting when they are created, and only then). Returns whether the CPU supports it.

    Why: late in generator training some activations, gradients and Adam moments underflow
    into the subnormal range, where x86 arithmetic is tens of times slower (a PEARL step on
    Fashion-MNIST: 23-34 ms instead of 16 ms). Why it is sound everywhere, mechanisms included:
    it only replaces numbers below 1.2e-38 (float32) / 2.2e-308 (float64) by zero. No released
    statistic, noise draw or calibrated σ comes near that range (tests check σ and a release
    are bit-identical with it on), and zeroing a tiny component can only shrink a record's
    contribution, never raise its sensitivity.
    """
    global _FLUSH_PROCESS_WIDE
    _FLUSH_PROCESS_WIDE = bool(torch.set_flush_denormal(True))
    return _FLUSH_PROCESS_WIDE


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """FTZ/DAZ for the calling thread while post-processing runs (library use; under the CLI
    the whole process already flushes, see :func:`flush_denormals_process_wide`, and this is
    a no-op). Only the calling thread: OpenMP workers started earlier keep their mode, so
    the CLI's process-wide switch is what makes a step fully fast."""
    if _FLUSH_PROCESS_WIDE:
        yield
        return
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


@torch.no_grad()
def ema_update_(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """θ_ema ← d·θ_ema + (1 − d)·θ in place, with d warmed up as min(decay, (1 + t)/(10 + t))
    so short runs are not stuck near the initial weights; buffers (BatchNorm statistics) are
    copied. The generator's Polyak–Ruppert average in its exponential form (Yazıcı et al., "The
    unusual effectiveness of averaging in GAN training", ICLR 2019): post-processing of the
    trajectory, it averages out the step-to-step jitter of stochastic updates."""
    d = min(float(decay), (1 + step) / (10 + step))
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(p, 1.0 - d)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


@dataclass
class RunContext:
    """Everything about a run that is not private data and not the method's own config.

    Attributes:
        seed: run seed (generator init, codes, public frequencies unless configured).
        run_dir: the run's output folder (checkpoints go in ``run_dir/checkpoints``).
        cache: release cache; ``None`` disables caching.
        dataset_id: public description of the dataset config, part of release cache keys.
        dataset_options: dataset-level public hyper-parameters (e.g. ``sigma0_sq``).
        trainer: Lightning trainer options (accelerator, devices, progress bar, ...).
        logger: a Lightning logger or ``None``.
        progress: show progress bars (None = only when interactive).
    """

    seed: int
    run_dir: Path
    cache: ReleaseCache | None = None
    dataset_id: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: Any = None
    progress: bool | None = None
    resumed_from_step: int | None = None  # set when training continued from a checkpoint
    release_fingerprint: str | None = None  # the one-shot release this run trained on
    release_public: dict[str, Any] = field(default_factory=dict)  # its public parameters


@dataclass
class Synthesizer:
    """A trained generator plus the public label distribution to sample from.

    Attributes:
        generator: maps (code (B, code_dim), labels (B,)) → records (B, *shape).
        code_dim: latent code size.
        label_probs: (C,) label distribution for tabular sampling (released or uniform).
        spec: public dataset metadata.
    """

    generator: nn.Module
    code_dim: int
    label_probs: np.ndarray
    spec: DataSpec
    #: The run's ``trainer.precision``: a generator trained under ``bf16-mixed`` is sampled
    #: under the same bf16 autocast (its matrix products in bfloat16, its output float32),
    #: i.e. evaluated as it was trained, in ~0.6× the float32 time on CPUs with bf16 dot
    #: products. Post-processing of the trained generator either way.
    precision: str = "32-true"

    @torch.inference_mode()
    def sample(self, n: int, *, seed: int, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Draw n records: uniform labels for images (the published protocol), released
        proportions for tables. Returns (x (n, *shape) float32, y (n,) int64)."""
        rng = np.random.default_rng(seed)
        c = self.spec.num_classes
        if self.spec.kind == "image":
            y = np.arange(n) % c  # exactly balanced: 6,000 per class for 60k
        else:
            y = rng.choice(c, size=n, p=self.label_probs)
        y = np.sort(y).astype(np.int64)
        gen = torch.Generator().manual_seed(seed)
        self.generator.eval()
        device = next(self.generator.parameters()).device
        x = np.empty((n, *self.spec.shape), dtype=np.float32)  # filled in place: one copy
        # No autograd graph: 3-4× faster and far less memory.
        autocast = torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16-mixed"
        )
        with torch.inference_mode(), flush_denormals(), autocast:
            for start in range(0, n, batch_size):
                yb = torch.as_tensor(y[start : start + batch_size], device=device)
                code = torch.randn(len(yb), self.code_dim, generator=gen).to(device)
                out = self.generator(code, yb).float().cpu()  # (b, *shape)
                x[start : start + len(yb)] = out.reshape(len(yb), *self.spec.shape).numpy()
        return x, y


class Method:
    """Base class. Subclasses set the class variables and implement one training path.

    ``version`` is the code version of the method (e.g. ``"pearl-2"``). Bump rule: it changes
    whenever the method's results would change for the same config: a change to its mechanism,
    its release, its training, its sampling or any shared code it runs (a change to
    :mod:`dpsynth.methods.oneshot` bumps every one-shot method). Refactors that compute the
    same arithmetic keep it, including ones that only reorder floating-point operations (a
    summation order, a fused kernel): those change a run's bits no more than another thread
    count or CPU does, which no version could pin. It enters the run's config id (a resumed
    sweep re-runs jobs made by another version), the release cache key and ``metrics.json``
    (``method_version``), and ``dpsynth-report`` never pools runs of different versions.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "unversioned"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"image", "tabular"})
    one_shot: ClassVar[bool] = True
    private: ClassVar[bool] = True
    #: Method keys its release (the private-data access) depends on; None: possibly all of
    #: them. ``dpsynth-tune`` counts candidates that differ only in other keys as one release.
    release_keys: ClassVar[frozenset[str] | None] = None
    #: Lightning ``trainer.precision`` values this method's training is correct under (see
    #: ``check_precision``). Float32 only unless a subclass has checked its arithmetic under
    #: another one; DP-SGD never widens it (its clipping must see exact per-sample norms).
    precisions: ClassVar[frozenset[str]] = frozenset({"32-true"})
    #: Post-training facts about the trained model (e.g. the critic's concentration), recorded
    #: in metrics.json under ``diagnostics``; computed from the model only, never from data.
    diagnostics: dict[str, float] = {}  # noqa: RUF012 - replaced per instance, never mutated

    def check(
        self,
        spec: DataSpec,
        dataset_options: dict[str, Any] | None = None,
        n_train: int | None = None,
    ) -> None:
        """Refuse an unsupported method × dataset combination before any work starts.

        Args:
            spec: public metadata of the loaded dataset.
            dataset_options: the dataset YAML's public constants (e.g. ``sigma0_sq``).
            n_train: number of training records (public under replace-one adjacency).
        """
        if spec.kind not in self.kinds:
            raise ConfigError(
                f"method={self.name} does not support dataset={spec.name} (kind {spec.kind!r}); "
                f"it supports {sorted(self.kinds)} data. Choose another method or dataset."
            )

    def check_precision(self, precision: Any) -> None:
        """Refuse a ``trainer.precision`` the method's training is not correct under, before
        any work starts: no run may silently train in another precision than it records."""
        if canonical_precision(precision) not in self.precisions:
            raise ConfigError(
                f"trainer.precision: got {precision!r}; method={self.name} trains only in "
                f"{sorted(self.precisions)}. Set trainer.precision to one of those (e.g. "
                "trainer=default); bf16-mixed is for the embedding methods (pearl, dpmerf and "
                "their presets), whose loss is checked under it."
            )

    def release(self, data: Dataset, privacy: PrivacySpec, ctx: RunContext) -> Release:
        """One-shot methods: the only step that reads private data."""
        raise NotImplementedError(f"{self.name} is not a one-shot method")

    def train(self, release: Release, spec: DataSpec, ctx: RunContext) -> Synthesizer:
        """One-shot methods: post-processing of the release only."""
        raise NotImplementedError(f"{self.name} is not a one-shot method")

    def train_private(
        self, data: Dataset, privacy: PrivacySpec, ctx: RunContext
    ) -> tuple[Synthesizer, Ledger]:
        """Private-training methods: train under their own accountant."""
        raise NotImplementedError(f"{self.name} does not train on private data directly")
