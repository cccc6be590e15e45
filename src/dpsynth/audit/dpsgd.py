"""Empirical privacy audits of DP-SGD (``dpsynth-audit method=dpsgd``): one full-batch step,
and a whole Poisson-sampled training run with many canaries (one-run audit).

Both build the discriminator's training module the way ``method=dpsgd`` does
(``DPSGDGAN.make_module``: Opacus ``GradSampleModule`` + ``DPOptimizer`` with the config's
clip norm C, ``secure_mode``, expected batch size, OS-seeded noise and Poisson sampler) and run
its real steps (``GANModule.real_gradients`` / ``GANModule.d_step``). σ is the run's: the
config's ``method.noise_multiplier`` if fixed, else what
:func:`dpsynth.privacy.accounting.calibrate_sgd` calibrates for ``privacy`` on ``--train-size``
records (q = batch_size / n, T = the config's steps). Claims are computed by
:func:`dpsynth.privacy.accounting.epsilon_spent` for exactly what was audited.

**One step** (:func:`audit_dpsgd`). D = n − 1 fixed records, D′ = D ∪ {canary}, add/remove
adjacency, q = 1 (the tiny dataset is the batch): one step is the Gaussian mechanism with
sensitivity C, so the claim (dp-accounting's one-step ε at (σ, q = 1)) is tight. The canary is
a crafted far-out *record* (the real forward, per-sample hooks and clipping act on it); the
observation is the privatised gradient (×B, before Adam) projected on the canary's unit
gradient direction u — the likelihood-ratio statistic, shifted by μ = 1/σ when clipping works.
The threshold test and Clopper–Pearson bound of :mod:`dpsynth.audit.common` certify ε from
≥ 10⁴ real steps per dataset (each trial is one real step: no batching).

**One run** (:func:`audit_dpsgd_one_run`; Steinke, Nasr, Jagielski, "Privacy auditing with
one (1) training run", NeurIPS 2023). m canary slots are added to n − m fixed records; each
slot's bit S_i ∈ {±1} is drawn uniformly and independently. ONE run of T real steps at Poisson
rate q (through the module's own sampler) trains the image discriminator
(``CondDCGANDiscriminator``). White-box *Dirac gradient canaries*: when slot i is sampled its
per-sample gradient is replaced (in ``p.grad_sample``, before clipping) by A·e_{c_i}, a single
coordinate c_i of the discriminator's parameters (distinct per canary, A = 10 C by default) if
S_i = +1; if S_i = −1 by nothing (add/remove: a zero-gradient record is an absent one, q fixed)
or by −A·e_{c_i} (replace-one: the record is replaced by its mirror image). Everything after
that is the production step: clipping (to exactly C), Gaussian noise σC, 1/B, Adam.

Why sound: the DP-SGD guarantee holds for *any* per-example gradient (the clip bounds what one
record can contribute), so a record whose gradient is A·e_c is within the threat model, and the
mechanism is (ε, δ)-DP in each S_i with the run's ε (the accountant's ε for T steps at (σ, q)
under the relation). Releasing every privatised gradient is covered too (adaptive
composition). Why powerful: distinct coordinates make the canaries' signals orthogonal (no
canary interferes with another); the fixed records' clipped gradients spread over tens of
thousands of coordinates. The score of canary i is the log-likelihood ratio of its coordinate's
T observations z_t = B·g_t[c_i] / (σC) for the subsampled Gaussian,

    add/remove:  Σ_t log(1 − q + q e^{μ z_t − μ²/2})
    replace-one: Σ_t [log(1 − q + q e^{μ z_t − μ²/2}) − log(1 − q + q e^{−μ z_t − μ²/2})],

μ = 1/σ (the optimal test for one canary under the claimed mechanism). The auditor guesses the
k highest scores "+1" and the k lowest "−1" for a few fixed k (Bonferroni over them), counts
v correct out of r = 2k, and the ε lower bound is the largest ε whose Theorem 5.2 p-value
(:func:`dpsynth.audit.common.one_run_p_value`, δ handled as in the paper) is below
1 − confidence.

Planted bugs (a self-test: each must give a bound above the claim), planted by replacing the
``DPOptimizer`` class that ``dpsynth.methods.dpsgd`` looks up when it builds the optimiser:
``half-noise`` (σ/2 given to the optimiser), ``half-sensitivity`` (clipping at 2C while the
noise stays σ·C), ``no-clip`` (per-sample clipping skipped), ``no-noise`` (σ = 0).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpsynth.audit.common import (
    AuditRecord,
    check_int,
    check_split,
    check_unit,
    compose_config,
    gaussian_exact_epsilon,
    instantiate_method,
    mu_lower_empirical,
    one_run_epsilon,
    privacy_from_config,
    threshold_test,
)
from dpsynth.errors import ConfigError

DPSGD_BUGS = ("none", "half-noise", "half-sensitivity", "no-clip", "no-noise")
DEFAULT_TRIALS = 100_000
DEFAULT_CANARIES = 1000
FASHION_MNIST_TRAIN = 60_000


# ----------------------------------------------------------------------------- shared


@contextlib.contextmanager
def planted_dpsgd_bug(name: str) -> Iterator[None]:
    """Replace ``dpsgd.DPOptimizer`` by a broken subclass while the audit builds its modules."""
    from opacus.optimizers import DPOptimizer

    from dpsynth.methods import dpsgd

    if name == "none":
        yield
        return
    if name in ("half-noise", "no-noise"):
        factor = 0.5 if name == "half-noise" else 0.0

        class Broken(DPOptimizer):
            def __init__(self, *args: Any, noise_multiplier: float, **kwargs: Any) -> None:
                super().__init__(*args, noise_multiplier=noise_multiplier * factor, **kwargs)

    elif name in ("half-sensitivity", "no-clip"):
        clip = 2.0 if name == "half-sensitivity" else math.inf

        class Broken(DPOptimizer):  # type: ignore[no-redef]
            def clip_and_accumulate(self) -> None:
                declared = self.max_grad_norm  # the noise (add_noise) still uses this
                self.max_grad_norm = declared * clip
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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread (restored afterwards): the audited steps are many tiny
    operations, where thread synchronisation costs more than it saves (3× slower on 2 busy
    cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_plan(method: Any, privacy: Any, train_size: int) -> tuple[float, float, int]:
    """(σ, q, T) of the run being vouched for: q = batch_size / n and T from the config, σ (and,
    with a fixed ``noise_multiplier``, the affordable T) from the method's own ``calibrate``
    (dp-accounting under ``privacy``); :func:`calibrate_sgd` if the method has none."""
    from dpsynth.privacy.accounting import calibrate_sgd

    q, steps = method.sample_rate(train_size), int(method.total_steps(train_size))
    calibrate = getattr(method, "calibrate", None)
    if calibrate is not None:
        sigma, steps = calibrate(privacy, q, steps)
        return float(sigma), float(q), int(steps)
    if method.noise_multiplier is not None:  # pragma: no cover - DPSGDGAN has calibrate
        return float(method.noise_multiplier), float(q), steps
    sigma = calibrate_sgd(  # pragma: no cover
        epsilon=privacy.epsilon,
        delta=privacy.delta,
        sample_rate=q,
        steps=steps,
        neighbours=privacy.neighbours,
        accountant=privacy.accountant,
    )
    return float(sigma), float(q), steps


def sgd_epsilon(
    sigma: float, q: float, steps: int, delta: float, neighbours: str, accountant: str
) -> float:
    """dp-accounting's ε of ``steps`` DP-SGD steps at (σ, q) under ``neighbours``."""
    from dpsynth.privacy.accounting import SubsampledGaussian, epsilon_spent

    if sigma <= 0:
        return math.inf
    return float(
        epsilon_spent(
            [SubsampledGaussian(float(sigma), float(q), int(steps))],
            delta=delta,
            neighbours=neighbours,
            accountant=accountant,
        )
    )


def make_module(
    method: Any,
    gen: Any,
    disc: Any,
    x: Any,
    y: Any,
    classes: int,
    *,
    code_dim: int,
    sigma: float,
    steps: int,
    batch_size: int,
) -> tuple[Any, Any]:
    """The config's training module on (x, y) at expected batch ``batch_size`` (q = B / len(x))
    and its DP optimiser, through ``method.make_module`` (``accountant=None``: the module makes
    its own step recorder; the audit computes every ε with dp-accounting itself)."""
    kwargs: dict[str, Any] = {
        "code_dim": code_dim,
        "noise_multiplier": sigma,
        "budget_steps": steps,
        "batch_size": batch_size,
    }
    if "accountant" in inspect.signature(method.make_module).parameters:
        kwargs["accountant"] = None
    module = method.make_module(
        copy.deepcopy(gen), copy.deepcopy(disc), x, y, np.full(classes, 1.0 / classes), **kwargs
    )
    opts = module.configure_optimizers()
    d_opt = opts[0] if isinstance(opts, list | tuple) else opts
    return module, d_opt


# ----------------------------------------------------------------------------- one step


@dataclass
class DPSGDAuditResult(AuditRecord):
    """One audit of one DP-SGD discriminator step (all of it JSON-serialisable)."""

    audit: str
    method: str
    epsilon: float  # the run's target ε (privacy.epsilon)
    delta: float
    accountant: str
    neighbours: str
    noise_multiplier: float  # σ of the run
    max_grad_norm: float
    train_size: int
    run_sample_rate: float
    run_steps: int
    run_epsilon_spent: float  # dp-accounting ε of the whole run at σ
    audited_sample_rate: float
    claimed_epsilon: float  # dp-accounting ε of ONE step at (σ, q = 1), add/remove
    ledger_epsilon: float  # the same for the σ the audited optimiser used
    epsilon_lower_bound: float
    confidence: float
    trials: int
    selection_trials: int
    planted_bug: str
    violation: bool
    separation_mu: float  # 1/σ: the shift a correct step gives the canary, in noise stds
    empirical_mu: float  # measured shift of the scores, in their std
    empirical_mu_lower: float  # its one-sided lower bound (noncentral t), for information
    exact_epsilon_of_canary: float  # exact ε of the Gaussian step at separation_mu
    canary_grad_norm: float
    records: int
    mechanism: dict[str, Any]
    test: dict[str, Any]
    seed: int
    seconds: float
    trials_per_second: float

    def summary(self) -> str:
        verdict = self.verdict("claimed one-step ε")
        return (
            f"dpsynth-audit: {self.method}: one DP discriminator step of a run at ε "
            f"{self.epsilon:g}, δ {self.delta:g} ({self.accountant}, {self.neighbours}; n = "
            f"{self.train_size:,}, q = {self.run_sample_rate:.4g}, T = {self.run_steps}: run ε "
            f"spent {self.run_epsilon_spent:.4g})"
            + (f"; PLANTED BUG {self.planted_bug}" if self.planted_bug != "none" else "")
            + f"\n  audited: σ = {self.noise_multiplier:.4g}, C = {self.max_grad_norm:g}, "
            f"q = {self.audited_sample_rate:g} (full batch of {self.records} records), 1 step, "
            f"add/remove; claimed one-step ε (dp-accounting PLD) {self.claimed_epsilon:.4f}; the "
            f"audited optimiser's σ gives {self.ledger_epsilon:.4f}"
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


def _bce_real(logits: Any) -> Any:
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, logits.new_ones(logits.shape))


def _canary(disc: Any, dim: int, classes: int, scale: float) -> tuple[Any, Any, Any, float]:
    """The crafted record (x, y) with the largest per-sample gradient of the real-data loss,
    and the unit direction u of that gradient (plain autograd, outside Opacus)."""
    import torch

    params = [p for p in disc.parameters() if p.requires_grad]
    best = None
    for label in range(classes):
        for axis in range(dim):
            for sign in (1.0, -1.0):
                x = torch.zeros(1, dim)
                x[0, axis] = sign * scale
                y = torch.tensor([label])
                grads = torch.autograd.grad(_bce_real(disc(x, y)), params)
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

    module, opt = make_module(
        method, gen, disc, x, y, classes,
        code_dim=code_dim, sigma=sigma, steps=trials, batch_size=len(x),
    )  # fmt: skip
    scale = float(module.batch_size)  # the public 1/B the DPOptimizer applied
    out = np.empty(trials, dtype=np.float64)
    for t in range(trials):
        idx = torch.as_tensor(next(iter(module.sampler)), dtype=torch.long)
        grads = module.real_gradients(x[idx], y[idx])
        flat = torch.cat([g.reshape(-1) for g in grads]).double()
        out[t] = scale * float(flat @ u)
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
    """Audit one full-batch DP discriminator step of ``method`` (a private DP-SGD GAN) at the
    σ of a run at ``privacy`` on ``train_size`` records (see the module doc)."""
    import torch

    from dpsynth.data.base import DataSpec

    _check_private(method)
    train_size = check_int("--train-size", train_size, 1, "Use e.g. --train-size 60000.")
    records = check_int("--records", records, 2, "Use e.g. --records 8.")
    classes = check_int("--classes", classes, 1, "Use --classes 2.")
    dim = check_int("--features", dim, 1, "Use e.g. --features 2.")
    trials = check_int("--trials", trials, 1000, "Use ≥ 1e5 at ε = 10.")
    selection_fraction, confidence, n_select = check_split(trials, selection_fraction, confidence)
    _check_bug(planted)
    t0 = time.perf_counter()
    sigma, q_run, steps = run_plan(method, privacy, train_size)
    run_eps = sgd_epsilon(
        sigma, q_run, steps, privacy.delta, privacy.neighbours, privacy.accountant
    )
    claimed = sgd_epsilon(sigma, 1.0, 1, privacy.delta, "add_remove", "pld")

    torch.manual_seed(int(seed))
    names = tuple(f"class{c}" for c in range(classes))
    spec = DataSpec("audit", "tabular", (dim,), classes, names, balanced=True)
    gen, disc, code_dim = method.make_networks(spec)
    cx, cy, u, canary_norm = _canary(disc, dim, classes, float(canary_scale))
    rng = np.random.default_rng(int(seed))
    base_x = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(records - 1, dim)).astype(np.float32))
    base_y = torch.from_numpy((np.arange(records - 1) % classes).astype(np.int64))
    with planted_dpsgd_bug(planted), one_thread():
        sd, _, used_sigma = _step_scores(
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
    ledger = sgd_epsilon(used_sigma, 1.0, 1, privacy.delta, "add_remove", "pld")
    outcome = threshold_test(
        sd[:n_select], sdp[:n_select], sd[n_select:], sdp[n_select:],
        delta=privacy.delta, confidence=confidence,
    )  # fmt: skip
    emp = mu_lower_empirical(sd, sdp, delta=privacy.delta, level=confidence)
    mu = 1.0 / sigma
    mechanism = {
        "step": "dpsynth.methods.dpsgd.GANModule.real_gradients (Opacus GradSampleModule + "
        "DPOptimizer.pre_step), module from DPSGDGAN.make_module",
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
        audit="dpsgd-step",
        method=str(method.name),
        epsilon=float(privacy.epsilon),
        delta=float(privacy.delta),
        accountant=str(privacy.accountant),
        neighbours=str(privacy.neighbours),
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
        empirical_mu=float(emp.mu),
        empirical_mu_lower=float(emp.mu_lower),
        exact_epsilon_of_canary=gaussian_exact_epsilon(mu, privacy.delta),
        canary_grad_norm=canary_norm,
        records=records,
        mechanism=mechanism,
        test=dataclasses.asdict(outcome),
        seed=int(seed),
        seconds=time.perf_counter() - t0,
        trials_per_second=float(rate),
    )


def _check_private(method: Any) -> None:
    from dpsynth.methods.dpsgd import DPSGDGAN

    if not isinstance(method, DPSGDGAN) or not method.private:
        raise ConfigError(
            f"method: got {getattr(method, 'name', type(method).__name__)}; the DP-SGD audit "
            "needs a private DP-SGD method (method=dpsgd); nonprivate_gan makes no claim."
        )


def _check_bug(planted: str) -> None:
    if planted not in DPSGD_BUGS:
        raise ConfigError(
            f"--plant-bug: got {planted!r}; allowed for method=dpsgd: {', '.join(DPSGD_BUGS)}. "
            "Use none for a real audit."
        )


# ----------------------------------------------------------------------------- one run


class _DiracCanaries:
    """The canaries of one run: their slots, bits, coordinates, and the running scores.

    ``inject`` overwrites the per-sample gradients of the sampled canary slots (before the
    optimiser clips them); ``observe`` reads each canary's coordinate of the privatised
    gradient after the step and adds its log-likelihood ratio to the canary's score.
    """

    def __init__(
        self,
        *,
        n_base: int,
        bits: np.ndarray,
        coords: np.ndarray,
        sizes: list[int],
        magnitude: float,
        replace: bool,
        sigma_c: float,
        mu: float,
        q: float,
        batch: int,
    ) -> None:
        import torch

        self.n_base, self.magnitude, self.replace = n_base, magnitude, replace
        m = len(bits)
        self.bits = bits
        bounds = np.cumsum([0, *sizes])
        self.param = np.searchsorted(bounds, coords, side="right") - 1  # (m,)
        self.offset = coords - bounds[self.param]  # (m,)
        value = np.where(bits > 0, magnitude, -magnitude if replace else 0.0)
        self.value = torch.as_tensor(value, dtype=torch.float32)
        self.by_param = [np.flatnonzero(self.param == i) for i in range(len(sizes))]
        self.scores = np.zeros(m, dtype=np.float64)
        self.sigma_c, self.mu, self.q, self.batch = sigma_c, mu, q, batch
        self.rows: np.ndarray = np.empty(0, dtype=np.int64)
        self.ids: np.ndarray = np.empty(0, dtype=np.int64)
        self.sampled = np.zeros(m, dtype=np.int64)
        self.steps = 0

    def set_batch(self, idx: np.ndarray) -> None:
        rows = np.flatnonzero(idx >= self.n_base)
        self.rows, self.ids = rows, idx[rows] - self.n_base
        self.sampled[self.ids] += 1

    def inject(self, params: list[Any]) -> None:
        import torch

        if len(self.rows) == 0:
            return
        rows = torch.as_tensor(self.rows)
        for i, p in enumerate(params):
            gs = p.grad_sample
            if not isinstance(gs, torch.Tensor):
                raise ConfigError(  # pragma: no cover - Opacus keeps one tensor per step
                    "the audit expects one per-sample gradient tensor per parameter."
                )
            if not gs.is_contiguous():  # pragma: no cover - Opacus' einsum output is contiguous
                gs = gs.contiguous()
                p.grad_sample = gs
            gs[rows] = 0.0
            mine = np.flatnonzero(self.param[self.ids] == i)
            if len(mine):
                flat = gs.view(gs.shape[0], -1)
                r = torch.as_tensor(self.rows[mine])
                c = torch.as_tensor(self.offset[self.ids[mine]])
                flat[r, c] = self.value[self.ids[mine]].to(gs.dtype)

    def observe(self, params: list[Any]) -> None:
        z = np.empty(len(self.bits), dtype=np.float64)
        for i, p in enumerate(params):
            ids = self.by_param[i]
            if len(ids):
                g = p.grad.detach().reshape(-1)[self.offset[ids]].double().cpu().numpy()
                z[ids] = g * self.batch / self.sigma_c
        mu, q = self.mu, self.q
        log_stay = math.log1p(-q) if q < 1 else -math.inf
        llr = np.logaddexp(log_stay, math.log(q) + mu * z - mu * mu / 2.0)
        if self.replace:
            llr -= np.logaddexp(log_stay, math.log(q) - mu * z - mu * mu / 2.0)
        self.scores += llr
        self.steps += 1


@contextlib.contextmanager
def _canary_optimizer(canaries: _DiracCanaries) -> Iterator[type]:
    """Make ``dpsgd`` build a DPOptimizer (whatever class it currently uses, planted bugs
    included) that injects the canaries before clipping and observes them after the step."""
    from dpsynth.methods import dpsgd

    base = dpsgd.DPOptimizer

    class WithCanaries(base):  # type: ignore[misc, valid-type]
        def clip_and_accumulate(self) -> None:
            canaries.inject(self.params)
            super().clip_and_accumulate()

        def pre_step(self, closure: Any = None) -> Any:
            done = super().pre_step(closure)
            if done:
                canaries.observe(self.params)
            return done

    dpsgd.DPOptimizer = WithCanaries
    try:
        yield WithCanaries
    finally:
        dpsgd.DPOptimizer = base


@dataclass
class OneRunResult(AuditRecord):
    """A one-run audit of a DP-SGD training run (all of it JSON-serialisable)."""

    audit: str
    method: str
    epsilon: float
    delta: float
    accountant: str
    neighbours: str
    noise_multiplier: float
    max_grad_norm: float
    train_size: int
    run_sample_rate: float
    run_steps: int
    run_epsilon_spent: float
    audited_sample_rate: float
    audited_steps: int
    claimed_epsilon: float  # ε of the audited (σ, q, T) under the run's relation
    ledger_epsilon: float  # the same at the σ the optimiser actually used
    epsilon_lower_bound: float
    confidence: float
    planted_bug: str
    violation: bool
    canaries: int
    included: int
    records: int
    expected_batch_size: int
    canary_norm: float
    guesses: list[dict[str, Any]]
    best: dict[str, Any]
    mean_score_in: float
    mean_score_out: float
    never_sampled: int
    image_shape: list[int]
    parameters: int
    quiet_coordinates: int  # canaries on coordinates no fixed record's gradient reaches
    seed: int
    seconds: float
    steps_per_second: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = self.verdict()
        b = self.best
        return (
            f"dpsynth-audit: {self.method}: one-run audit (Steinke, Nasr, Jagielski 2023) of a "
            f"DP-SGD run at ε {self.epsilon:g}, δ {self.delta:g} ({self.accountant}, "
            f"{self.neighbours}; n = {self.train_size:,}, q = {self.run_sample_rate:.4g}, T = "
            f"{self.run_steps}: σ = {self.noise_multiplier:.4g}, run ε "
            f"{self.run_epsilon_spent:.4g})"
            + (f"; PLANTED BUG {self.planted_bug}" if self.planted_bug != "none" else "")
            + f"\n  audited run: {self.audited_steps} real steps of the "
            f"{'×'.join(map(str, self.image_shape))} image discriminator ({self.parameters:,} "
            f"parameters; {self.quiet_coordinates} canaries on coordinates no fixed record "
            f"reaches) at q = {self.audited_sample_rate:.4g} (B = "
            f"{self.expected_batch_size}, {self.records:,} records); claimed ε for that "
            f"{self.claimed_epsilon:.4f} (the optimiser's σ: {self.ledger_epsilon:.4f})"
            f"\n  {self.canaries} Dirac gradient canaries (|g| = {self.canary_norm:g} C, "
            f"{self.included} with bit +1; {self.never_sampled} never sampled); mean score "
            f"+1: {self.mean_score_in:.3g}, −1: {self.mean_score_out:.3g}"
            f"\n  best guess set: k = {b['k']} top and bottom ({b['correct']}/{b['guesses']} "
            f"correct) → ε ≥ {b['epsilon_lower_bound']:.4f} at {self.confidence:.0%} confidence "
            f"(Bonferroni over {len(self.guesses)} k); {self.steps_per_second:.0f} steps/s"
            f"\n  audited ε lower bound: {self.epsilon_lower_bound:.4f} vs claim "
            f"{min(self.claimed_epsilon, self.ledger_epsilon):.4f}"
            f"\n  {verdict}"
        )


def _batch_and_records(q: float, canaries: int) -> tuple[int, int]:
    """An integer expected batch B ≥ 2 and record count N ≥ 1.25 m with B / N ≈ q."""
    need = canaries + max(10, canaries // 4)
    b = max(2, math.ceil(q * need))
    return b, max(need, int(round(b / q)))


def _quiet_coordinates(
    disc: Any, base_x: Any, classes: int, needed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels for the fixed records, and the discriminator coordinates their gradients never
    touch: the projection head's rows of the labels kept for the canaries (a record only
    reaches the embedding row of its own label). Canaries placed there see no interference
    from the fixed records. As few labels as possible are kept back (≥ ``needed`` quiet
    coordinates if the head allows; the others still cycle through the fixed records)."""
    import torch

    params = [p for p in disc.parameters() if p.requires_grad]
    n = len(base_x)
    quiet = np.empty(0, dtype=np.int64)
    labels = np.arange(n) % classes
    for kept in range(1, classes):
        labels = np.arange(n) % (classes - kept)
        total = None
        for start in range(0, n, 256):
            xb = base_x[start : start + 256]
            yb = torch.as_tensor(labels[start : start + 256])
            loss = _bce_real(disc(xb, yb)) * len(xb)
            g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)]).abs()
            total = g if total is None else total + g
        quiet = np.flatnonzero(total.numpy() == 0)
        if len(quiet) >= needed:
            break
    return labels, quiet


def _canary_coordinates(
    rng: np.random.Generator, quiet: np.ndarray, total: int, m: int
) -> np.ndarray:
    """m distinct coordinates: quiet ones first (random among them), the rest at random."""
    if len(quiet) >= m:
        return np.sort(rng.choice(quiet, size=m, replace=False))
    rest = np.setdiff1d(np.arange(total), quiet)
    extra = rng.choice(rest, size=m - len(quiet), replace=False)
    return np.sort(np.concatenate([quiet, extra]))


def guess_grid(m: int) -> list[int]:
    """The k (top-k "+1" and bottom-k "−1" guesses) tried, fixed before looking at scores."""
    return sorted({k for k in (m // 200, m // 100, m // 50, m // 20, m // 10, m // 4, m // 2) if k})


def audit_dpsgd_one_run(
    method: Any,
    privacy: Any,
    *,
    train_size: int = FASHION_MNIST_TRAIN,
    canaries: int = DEFAULT_CANARIES,
    steps: int | None = None,
    image_size: int = 28,
    classes: int = 10,
    canary_norm: float = 10.0,
    seed: int = 0,
    confidence: float = 0.95,
    planted: str = "none",
) -> OneRunResult:
    """One training run of ``method``'s discriminator with ``canaries`` Dirac gradient
    canaries, audited as in Steinke, Nasr, Jagielski (2023); see the module doc.

    Args:
        method: a private DP-SGD GAN (``method=dpsgd``).
        privacy: the run's guarantee; σ, q, T are those of a run on ``train_size`` records.
        canaries: m (≤ the discriminator's parameter count).
        steps: T of the audited run (default: the run's T).
        image_size: H = W of the (1, H, W) images (28: Fashion-MNIST's shape).
        classes: labels of the discriminator's projection head.
        canary_norm: |A| / C of a canary's gradient before clipping (> 1: clipping must act).
        seed: the canary bits and coordinates, the fixed records, the initial weights (the
            noise and the Poisson sampling are OS-seeded, as in production).
        confidence: 1 − the p-value threshold of Theorem 5.2.
    """
    import torch

    from dpsynth.data.base import DataSpec

    _check_private(method)
    _check_bug(planted)
    train_size = check_int("--train-size", train_size, 2, "Use e.g. --train-size 60000.")
    canaries = check_int("--canaries", canaries, 20, "Use e.g. --canaries 1000.")
    image_size = check_int("--image-size", image_size, 4, "Use e.g. --image-size 28.")
    classes = check_int("--classes", classes, 1, "Use --classes 10.")
    confidence = check_unit("--confidence", confidence, "Use e.g. --confidence 0.95.")
    if not (canary_norm >= 1.0 and math.isfinite(canary_norm)):
        raise ConfigError(f"--canary-norm: got {canary_norm}; allowed: a finite value ≥ 1.")
    t0 = time.perf_counter()
    sigma, q_run, run_steps = run_plan(method, privacy, train_size)
    steps = run_steps if steps is None else check_int("--steps", steps, 1, "Use e.g. 3000.")
    run_eps = sgd_epsilon(
        sigma, q_run, run_steps, privacy.delta, privacy.neighbours, privacy.accountant
    )
    batch, n = _batch_and_records(q_run, canaries)
    n_base = n - canaries
    q = batch / n
    claimed = sgd_epsilon(sigma, q, steps, privacy.delta, privacy.neighbours, privacy.accountant)

    rng = np.random.default_rng([int(seed), 0x0E1])
    torch.manual_seed(int(seed))
    names = tuple(f"class{c}" for c in range(classes))
    spec = DataSpec("audit", "image", (1, image_size, image_size), classes, names, True)
    gen, disc, code_dim = method.make_networks(spec)
    sizes = [int(p.numel()) for p in disc.parameters() if p.requires_grad]
    total = int(sum(sizes))
    if canaries > total:
        raise ConfigError(
            f"--canaries: got {canaries}; the discriminator has {total} parameters, one "
            "coordinate per canary. Lower --canaries or raise --image-size."
        )
    base_x = rng.integers(0, 256, (n_base, 1, image_size, image_size)).astype(np.float32) / 255
    base_x = torch.from_numpy(base_x)
    labels, quiet = _quiet_coordinates(disc, base_x, classes, canaries)
    coords = _canary_coordinates(rng, quiet, total, canaries)
    bits = rng.choice(np.array([-1, 1]), size=canaries)
    x = torch.cat([base_x, torch.zeros(canaries, *base_x.shape[1:])])
    y = torch.from_numpy(np.concatenate([labels, np.arange(canaries) % classes]).astype(np.int64))
    c = float(method.max_grad_norm)
    spy = _DiracCanaries(
        n_base=n_base,
        bits=bits,
        coords=coords,
        sizes=sizes,
        magnitude=canary_norm * c,
        replace=privacy.neighbours == "replace_one",
        sigma_c=sigma * c,
        mu=1.0 / sigma,
        q=q,
        batch=batch,
    )
    with planted_dpsgd_bug(planted), _canary_optimizer(spy) as cls, one_thread():
        module, opt = make_module(
            method, gen, disc, x, y, classes,
            code_dim=code_dim, sigma=sigma, steps=steps, batch_size=batch,
        )  # fmt: skip
        if not isinstance(opt, cls):
            raise ConfigError(  # pragma: no cover - guards a change in how dpsgd builds it
                "method=dpsgd no longer builds its optimiser from dpsynth.methods.dpsgd."
                "DPOptimizer; the one-run audit cannot inject its canaries. Update the audit."
            )
        if [int(p.numel()) for p in opt.params] != sizes:
            raise ConfigError(  # pragma: no cover - the optimiser holds D's parameters
                "the DP optimiser's parameters are not the discriminator's, in order."
            )
        used_sigma = float(opt.noise_multiplier)
        t_steps = time.perf_counter()
        for _ in range(steps):
            idx = torch.as_tensor(next(iter(module.sampler)), dtype=torch.long)
            spy.set_batch(idx.numpy())
            with torch.no_grad():
                x_fake, y_fake = module.generate(batch)
            module.d_step(x[idx], y[idx], x_fake, y_fake)
        rate = steps / max(time.perf_counter() - t_steps, 1e-9)
    if spy.steps != steps:
        raise ConfigError(  # pragma: no cover - every d_step is one DP step
            f"the audited run took {spy.steps} DP steps, not {steps}."
        )
    ledger = sgd_epsilon(
        used_sigma, q, steps, privacy.delta, privacy.neighbours, privacy.accountant
    )
    order = np.argsort(-spy.scores[(perm := rng.permutation(canaries))], kind="stable")
    ranked = perm[order]  # highest score first; ties broken at random
    grid = guess_grid(canaries)
    alpha = (1.0 - confidence) / len(grid)
    guesses = []
    for k in grid:
        top, bottom = ranked[:k], ranked[-k:]
        v = int(np.sum(bits[top] == 1) + np.sum(bits[bottom] == -1))
        eps = one_run_epsilon(canaries, 2 * k, v, privacy.delta, alpha)
        guesses.append({"k": k, "guesses": 2 * k, "correct": v, "epsilon_lower_bound": eps})
    best = max(guesses, key=lambda g: g["epsilon_lower_bound"])
    claim = min(claimed, ledger)
    return OneRunResult(
        audit="dpsgd-one-run",
        method=str(method.name),
        epsilon=float(privacy.epsilon),
        delta=float(privacy.delta),
        accountant=str(privacy.accountant),
        neighbours=str(privacy.neighbours),
        noise_multiplier=float(sigma),
        max_grad_norm=c,
        train_size=train_size,
        run_sample_rate=float(q_run),
        run_steps=int(run_steps),
        run_epsilon_spent=float(run_eps),
        audited_sample_rate=float(q),
        audited_steps=int(steps),
        claimed_epsilon=float(claimed),
        ledger_epsilon=float(ledger),
        epsilon_lower_bound=float(best["epsilon_lower_bound"]),
        confidence=confidence,
        planted_bug=planted,
        violation=bool(best["epsilon_lower_bound"] > claim),
        canaries=canaries,
        included=int(np.sum(bits == 1)),
        records=n,
        expected_batch_size=batch,
        canary_norm=float(canary_norm),
        guesses=guesses,
        best=best,
        mean_score_in=float(np.mean(spy.scores[bits == 1])),
        mean_score_out=float(np.mean(spy.scores[bits == -1])),
        never_sampled=int(np.sum(spy.sampled == 0)),
        image_shape=list(spec.shape),
        parameters=total,
        quiet_coordinates=int(min(len(quiet), canaries)),
        seed=int(seed),
        seconds=time.perf_counter() - t0,
        steps_per_second=float(rate),
    )


# ----------------------------------------------------------------------------- config


def compose_dpsgd(overrides: Sequence[str]) -> tuple[Any, Any, int]:
    """Compose ``conf/`` with Hydra overrides; returns (method, PrivacySpec, seed)."""
    cfg = compose_config(overrides, default_dataset="fashion_mnist")
    method = instantiate_method(cfg, overrides)
    return method, privacy_from_config(cfg), int(cfg.seed)


def audit_dpsgd_from_config(overrides: Sequence[str] = (), **kwargs: Any) -> DPSGDAuditResult:
    """Compose the real configs (``method=dpsgd privacy.epsilon=10 ...``) and audit one step."""
    method, privacy, seed = compose_dpsgd(overrides)
    kwargs.setdefault("seed", seed)
    return audit_dpsgd(method, privacy, **kwargs)


def audit_one_run_from_config(overrides: Sequence[str] = (), **kwargs: Any) -> OneRunResult:
    """Compose the real configs and run the one-run audit (:func:`audit_dpsgd_one_run`)."""
    method, privacy, seed = compose_dpsgd(overrides)
    kwargs.setdefault("seed", seed)
    return audit_dpsgd_one_run(method, privacy, **kwargs)
