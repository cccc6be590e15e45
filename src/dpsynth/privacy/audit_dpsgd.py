"""Empirical privacy audit of ONE DP-SGD discriminator step (``dpsynth-audit method=dpsgd``).

What is audited: the production step of ``method=dpsgd`` — the :class:`GANModule` the config
builds (``DPSGDGAN.make_module``: Opacus ``GradSampleModule`` + ``DPOptimizer`` with the
config's ``max_grad_norm``, ``secure_mode``, accountant hook, ...), its Poisson sampler and its
``real_gradients`` (per-sample gradients, clip to C, sum, add N(0, σ²C²), divide by the expected
batch size B, charge one accountant step) — run once per trial, with its OS-seeded noise. The
noise multiplier σ is the one the method's own ``calibrate`` gives for the run being vouched
for: ``privacy.epsilon``/``privacy.delta`` with the config's steps T and rate q = batch_size/n
on a training split of ``--train-size`` records (default 60,000, Fashion-MNIST's). Nothing is
trained: the audit speaks about the σ a real run at that ε uses.

Threat model and neighbouring datasets (Opacus' accountants bound add/remove-one adjacency):
D = n − 1 fixed records, D′ = D ∪ {canary}. The audited step is **full batch** (the tiny
dataset's B = its size, so q = 1 through the real Poisson sampler): every record is in the
batch and the claim to compare with is Opacus' accountant ε (the method's accountant) for
exactly one step at (σ, q = 1) and δ. One step at q = 1 is the Gaussian mechanism with L2
sensitivity C, so Opacus' one-step ε is (PRV) almost exactly the true ε of that step; an
audit at the run's tiny q would certify only the tiny per-step ε of the subsampled Gaussian.

The canary (white box, Nasr et al. 2021 "Adversary Instantiation"; Jagielski et al. 2020) is a
crafted *record*, not an inserted gradient, so that the real forward/backward, the real
per-sample gradient hooks and the real clipping all act on it: a far-out point (features
±``scale`` on one axis, a label) chosen among candidates for the largest per-sample gradient
norm (≫ C, so the real clipping must cut it to exactly C; a step that fails to clip leaks more).
With q = 1 the other records' clipped gradients are a constant under both hypotheses (same
weights, same records), so they cancel in the test whatever directions they use; the
observation is the privatised gradient the DPOptimizer hands back (before Adam, which is
post-processing), multiplied by the public B (undoing the public 1/B), projected on the unit
direction u of the canary's unclipped gradient (computed by plain autograd, outside Opacus):

    s = ⟨B·g_real, u⟩ ~ N(⟨S_D, u⟩, σ²C²) under D,   N(⟨S_D, u⟩ + ‖clip_C(g_c)‖, σ²C²) under D′,

a mean shift of μ = 1/σ noise stds. For two Gaussians with equal variance this projection is
the likelihood-ratio statistic, so thresholding it is the optimal test. The threshold is picked
on a separate selection split and the ε lower bound certified on the rest with the one-sided
Clopper–Pearson bounds of :mod:`dpsynth.privacy.audit` (``threshold_test``).

Planted bugs (a self-test: each must give a bound above the claim), planted by replacing the
``DPOptimizer`` class that ``dpsgd`` looks up when it builds the optimiser:
``half-noise`` (the optimiser gets σ/2; Opacus' hook then honestly charges σ/2, so the ledger
shows more than the claim), ``half-sensitivity`` (clipping at 2C while the noise is still σ·C:
the ledger is wrong) and ``no-clip`` (per-sample clipping skipped; the canary's gradient goes
in whole). Detecting a bug needs an ε_lb above the claim, and a finite audit can only certify
ε ≲ log(trials/3.7): at ε = 10 (claim ≈ 9.9 for one full-batch step) ``no-clip`` is caught
with 10⁵ trials, the 2× bugs need ≳ 10⁶; at σ = 1 they are caught with a few thousand.

Speed: one trial is one real step (≈ 600–800 per second on one CPU core; reported as
``trials_per_second``). Trials are not batched: batching would bypass the code being audited.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpsynth.errors import ConfigError
from dpsynth.privacy.audit import (
    DPSGD_BUGS,
    _check_int,
    check_split,
    gaussian_exact_epsilon,
    threshold_test,
)

DEFAULT_TRIALS = 100_000
FASHION_MNIST_TRAIN = 60_000


@contextlib.contextmanager
def planted_dpsgd_bug(name: str) -> Iterator[None]:
    """Replace ``dpsgd.DPOptimizer`` by a broken subclass while the audit builds its modules."""
    from opacus.optimizers import DPOptimizer

    from dpsynth.methods import dpsgd

    if name == "none":
        yield
        return
    if name == "half-noise":

        class Broken(DPOptimizer):
            def __init__(self, *args: Any, noise_multiplier: float, **kwargs: Any) -> None:
                super().__init__(*args, noise_multiplier=noise_multiplier / 2.0, **kwargs)

    elif name in ("half-sensitivity", "no-clip"):
        factor = 2.0 if name == "half-sensitivity" else math.inf

        class Broken(DPOptimizer):  # type: ignore[no-redef]
            def clip_and_accumulate(self) -> None:
                declared = self.max_grad_norm  # the noise (add_noise) still uses this
                self.max_grad_norm = declared * factor
                try:
                    super().clip_and_accumulate()
                finally:
                    self.max_grad_norm = declared

    else:
        raise ConfigError(
            f"--plant-bug: got {name!r}; allowed for method=dpsgd: {', '.join(DPSGD_BUGS)}. "
            "Use none for a real audit."
        )
    real = dpsgd.DPOptimizer
    dpsgd.DPOptimizer = Broken
    try:
        yield
    finally:
        dpsgd.DPOptimizer = real


@dataclass
class DPSGDAuditResult:
    """One audit of one DP-SGD discriminator step (all of it JSON-serialisable)."""

    method: str
    epsilon: float  # the run's target ε (privacy.epsilon)
    delta: float
    accountant: str  # the method's Opacus accountant
    noise_multiplier: float  # σ calibrated for the run
    max_grad_norm: float
    train_size: int
    run_sample_rate: float
    run_steps: int
    run_epsilon_spent: float  # Opacus ε of the whole run at σ
    audited_sample_rate: float
    claimed_epsilon: float  # Opacus ε of ONE step at (σ, audited q)
    ledger_epsilon: float  # Opacus ε of one step as the audited optimiser charged it
    epsilon_lower_bound: float
    confidence: float
    trials: int
    selection_trials: int
    planted_bug: str
    violation: bool
    separation_mu: float  # 1/σ: the shift a correct step gives the canary, in noise stds
    empirical_mu: float  # measured shift of the scores, in their std
    exact_epsilon_of_canary: float  # exact ε of the Gaussian step at separation_mu
    canary_grad_norm: float
    records: int
    mechanism: dict[str, Any]
    test: dict[str, Any]
    seed: int
    seconds: float
    trials_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        verdict = (
            "VIOLATION: the audited lower bound exceeds the claimed one-step ε"
            if self.violation
            else "consistent: lower bound ≤ claimed one-step ε"
        )
        return (
            f"dpsynth-audit: {self.method}: one DP discriminator step of a run at ε "
            f"{self.epsilon:g}, δ {self.delta:g} (opacus-{self.accountant}; n = "
            f"{self.train_size:,}, q = {self.run_sample_rate:.4g}, T = {self.run_steps}: run ε "
            f"spent {self.run_epsilon_spent:.4g})"
            + (f"; PLANTED BUG {self.planted_bug}" if self.planted_bug != "none" else "")
            + f"\n  audited: σ = {self.noise_multiplier:.4g}, C = {self.max_grad_norm:g}, "
            f"q = {self.audited_sample_rate:g} (full batch of {self.records} records), 1 step; "
            f"claimed one-step ε (Opacus) {self.claimed_epsilon:.4f}; the audited optimiser "
            f"charged {self.ledger_epsilon:.4f}"
            f"\n  canary: crafted record, gradient norm {self.canary_grad_norm:.3g} (clipped to "
            f"C: shift μ = {self.separation_mu:.4g} noise stds; measured {self.empirical_mu:.4g})"
            f"; exact ε of this canary {self.exact_epsilon_of_canary:.4g}"
            f"\n  audited ε lower bound: {self.epsilon_lower_bound:.4f} at "
            f"{self.confidence:.0%} confidence ({self.trials:,} steps per dataset, "
            f"{self.selection_trials:,} to choose the threshold, {self.trials_per_second:.0f} "
            f"steps/s; {self.test['form']} test: FPR {self.test['fpr']:.3g} "
            f"(≤ {self.test['fpr_upper']:.3g}), TPR {1 - self.test['fnr']:.3g} "
            f"(≥ {1 - self.test['fnr_upper']:.3g}))"
            f"\n  {verdict}"
        )


def _canary(disc: Any, dim: int, classes: int, scale: float) -> tuple[Any, Any, Any, float]:
    """The crafted record (x, y) with the largest per-sample gradient of the real-data loss,
    and the unit direction u of that gradient (plain autograd, outside Opacus)."""
    import torch

    from dpsynth.methods.dpsgd import _bce

    params = [p for p in disc.parameters() if p.requires_grad]
    best = None
    for label in range(classes):
        for axis in range(dim):
            for sign in (1.0, -1.0):
                x = torch.zeros(1, dim)
                x[0, axis] = sign * scale
                y = torch.tensor([label])
                grads = torch.autograd.grad(_bce(disc(x, y), 1.0), params)
                norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
                if best is None or norm > best[3]:
                    best = (x, y, grads, norm)
    x, y, grads, norm = best
    u = [(g.double() / norm).reshape(-1) for g in grads]
    return x, y, torch.cat(u), norm


def _step_scores(
    method: Any,
    gen: Any,
    disc: Any,
    x: Any,
    y: Any,
    sigma: float,
    u: Any,
    trials: int,
    code_dim: int,
    classes: int,
) -> tuple[np.ndarray, Any, float]:
    """``trials`` real DP steps on (x, y); each privatised gradient ·B projected on u."""
    import torch
    from opacus.accountants import create_accountant

    module = method.make_module(
        copy.deepcopy(gen),
        copy.deepcopy(disc),
        x,
        y,
        np.full(classes, 1.0 / classes),
        code_dim=code_dim,
        noise_multiplier=sigma,
        accountant=create_accountant(mechanism=method.accountant),
        budget_steps=trials,
        batch_size=len(x),  # full batch: q = 1 through the real Poisson sampler
    )
    module.configure_optimizers()
    scale = float(module.batch_size)  # the public 1/B the DPOptimizer applied
    out = np.empty(trials, dtype=np.float64)
    for t in range(trials):
        idx = torch.as_tensor(next(iter(module.sampler)), dtype=torch.long)
        grads = module.real_gradients(module._x[idx], module._y[idx])
        flat = torch.cat([g.reshape(-1) for g in grads]).double()
        out[t] = scale * float(flat @ u)
    opt = module._d_opt
    return out, module, float(opt.noise_multiplier)


def audit_dpsgd(
    method: Any,
    privacy: Any,
    *,
    train_size: int = FASHION_MNIST_TRAIN,
    seed: int = 0,
    records: int = 8,
    classes: int = 2,
    dim: int = 2,
    canary_scale: float = 100.0,
    trials: int = DEFAULT_TRIALS,
    selection_fraction: float = 0.1,
    confidence: float = 0.95,
    planted: str = "none",
) -> DPSGDAuditResult:
    """Audit one full-batch DP discriminator step of ``method`` (a private :class:`DPSGDGAN`)
    at the σ it calibrates for ``privacy`` on ``train_size`` records (see the module doc)."""
    import torch

    from dpsynth.data.base import DataSpec
    from dpsynth.methods.dpsgd import DPSGDGAN, MECHANISM

    if not isinstance(method, DPSGDGAN) or not method.private:
        raise ConfigError(
            f"method: got {getattr(method, 'name', type(method).__name__)}; the DP-SGD audit "
            "needs a private DP-SGD method (method=dpsgd); nonprivate_gan makes no claim."
        )
    train_size = _check_int("--train-size", train_size, 1, "Use e.g. --train-size 60000.")
    records = _check_int("--records", records, 2, "Use e.g. --records 8.")
    classes = _check_int("--classes", classes, 1, "Use --classes 2.")
    dim = _check_int("--features", dim, 1, "Use e.g. --features 2.")
    trials = _check_int("--trials", trials, 1000, "Use ≥ 1e5 at ε = 10.")
    selection_fraction, confidence, n_select = check_split(trials, selection_fraction, confidence)
    if planted not in DPSGD_BUGS:
        raise ConfigError(
            f"--plant-bug: got {planted!r}; allowed for method=dpsgd: {', '.join(DPSGD_BUGS)}. "
            "Use none for a real audit."
        )
    t0 = time.perf_counter()
    q_run, steps = method.sample_rate(train_size), method.total_steps(train_size)
    sigma, steps = method.calibrate(privacy, q_run, steps, [])
    run_eps = method.epsilon([(sigma, q_run, steps)], privacy.delta)
    claimed = method.epsilon([(sigma, 1.0, 1)], privacy.delta)

    torch.manual_seed(int(seed))
    names = tuple(f"class{c}" for c in range(classes))
    spec = DataSpec("audit", "tabular", (dim,), classes, names, balanced=True)
    gen, disc, code_dim = method.make_networks(spec)
    cx, cy, u, canary_norm = _canary(disc, dim, classes, float(canary_scale))
    rng = np.random.default_rng(int(seed))
    base_x = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(records - 1, dim)).astype(np.float32))
    base_y = torch.from_numpy((np.arange(records - 1) % classes).astype(np.int64))
    with planted_dpsgd_bug(planted):
        sd, module, used_sigma = _step_scores(
            method, gen, disc, base_x, base_y, sigma, u, trials, code_dim, classes
        )
        t_steps = time.perf_counter()
        sdp, module_p, _ = _step_scores(
            method,
            gen,
            disc,
            torch.cat([base_x, cx]),
            torch.cat([base_y, cy]),
            sigma,
            u,
            trials,
            code_dim,
            classes,
        )
        rate = trials / max(time.perf_counter() - t_steps, 1e-9)
    hist = [tuple(h) for h in module_p.accountant.history]
    if len(hist) != 1 or hist[0][1] != 1.0 or hist[0][2] != trials:
        raise ConfigError(  # pragma: no cover - the real hook charges one step per call
            f"the audited optimiser charged {hist}, not {trials} steps at q = 1; report a bug."
        )
    ledger = method.epsilon([(hist[0][0], 1.0, 1)], privacy.delta)
    outcome = threshold_test(
        sd[:n_select], sdp[:n_select], sd[n_select:], sdp[n_select:],
        delta=privacy.delta, confidence=confidence,
    )  # fmt: skip
    pooled = math.sqrt((np.var(sd) + np.var(sdp)) / 2.0) or 1e-300
    mu = 1.0 / sigma
    mechanism = {
        "step": "dpsynth.methods.dpsgd.GANModule.real_gradients (Opacus GradSampleModule + "
        "DPOptimizer.pre_step), module from DPSGDGAN.make_module",
        "mechanism": MECHANISM,
        "discriminator": type(disc).__name__,
        "parameters": int(u.numel()),
        "dim": dim,
        "classes": classes,
        "records_d_prime": records,
        "expected_batch_size": int(module_p.batch_size),
        "noise_multiplier_used": used_sigma,
        "noise_std_of_sum": used_sigma * method.max_grad_norm,
        "canary_scale": float(canary_scale),
        "observation": "B·(privatised gradient) projected on the canary's unit gradient",
    }
    return DPSGDAuditResult(
        method=str(method.name),
        epsilon=float(privacy.epsilon),
        delta=float(privacy.delta),
        accountant=str(method.accountant),
        noise_multiplier=float(sigma),
        max_grad_norm=float(method.max_grad_norm),
        train_size=train_size,
        run_sample_rate=float(q_run),
        run_steps=int(steps),
        run_epsilon_spent=float(run_eps),
        audited_sample_rate=1.0,
        claimed_epsilon=float(claimed),
        ledger_epsilon=float(ledger),
        epsilon_lower_bound=outcome.epsilon_lower_bound,
        confidence=confidence,
        trials=trials,
        selection_trials=n_select,
        planted_bug=planted,
        violation=outcome.epsilon_lower_bound > min(claimed, ledger),
        separation_mu=mu,
        empirical_mu=float((np.mean(sdp) - np.mean(sd)) / pooled),
        exact_epsilon_of_canary=gaussian_exact_epsilon(mu, privacy.delta),
        canary_grad_norm=canary_norm,
        records=records,
        mechanism=mechanism,
        test=dataclasses.asdict(outcome),
        seed=int(seed),
        seconds=time.perf_counter() - t0,
        trials_per_second=float(rate),
    )


def compose_dpsgd(overrides: Sequence[str]) -> tuple[Any, Any, int]:
    """Compose ``conf/`` with Hydra overrides; returns (method, PrivacySpec, seed)."""
    from hydra.utils import instantiate

    from dpsynth.privacy.audit import compose_config, privacy_from_config

    cfg = compose_config(overrides)
    method = instantiate(cfg.method)
    return method, privacy_from_config(cfg), int(cfg.seed)


def audit_dpsgd_from_config(overrides: Sequence[str] = (), **kwargs: Any) -> DPSGDAuditResult:
    """Compose the real configs (``method=dpsgd privacy.epsilon=10 ...``) and audit one step."""
    method, privacy, seed = compose_dpsgd(overrides)
    kwargs.setdefault("seed", seed)
    return audit_dpsgd(method, privacy, **kwargs)
