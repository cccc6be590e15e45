"""Empirical privacy audit of the one-shot releases (PEARL, DP-MERF) at production shapes.

What runs is the production path: the method built from its real YAML (the preset's k: 1,500
frequencies for PEARL, 5,000 for DP-MERF), its own ``release(data, privacy, ctx)`` on a small
dataset written in the real file format (IDX, generated in a temporary folder, read by the
dataset's own loader: 28×28 images, so d = 784), a real :class:`ReleaseCache` in that folder,
and ``gaussian_release`` with its OS-entropy noise (no seeded generator anywhere).

1. **Neighbours.** D and D′ differ in one worst-case canary record (the strongest adversary
   the threat model allows), under the run's relation:

   - ``replace_one``: ``label-flip`` (the canary's label 0 → 1: the embedding moves by √2/n,
     the class proportions by √2/n; with the proportions released jointly, that is the full
     joint sensitivity J = √1.5 the mechanism declares) or ``antipodal`` (same label, the pair
     of images x, x′ ∈ [0, 1]^d maximising ‖z(x) − z(x′)‖ by gradient descent on the public
     frequencies: the embedding-only release's worst case, tried only when the label flip
     falls short of J. k > d, so z(x′) = −z(x) is not reachable: at PEARL's shape this canary
     moves the embedding by ≈ 0.82–0.87 × 2/n; the declared 2/n is conservative).
   - ``add_remove``: ``add`` (D′ = D ∪ {canary}: the sum embedding and the counts move by one
     unit each, J = √2, for any record).

   The canary with the largest separation μ (the distance of the two output means in noise
   standard deviations, computed from the exact statistics the real code produced) is used.
2. **Real releases.** ``method.release`` runs on D and on every D′; the ``gaussian_release``
   global of every ``dpsynth`` module is wrapped (not replaced: the real function runs) to read
   the exact statistics, declared sensitivities and budget of each call. The call from the
   method's own module is audited; earlier ones (the DP σ0² estimate) are *prefix* releases,
   whose outputs are replayed from a probe dataset so that D and D′ get the same σ0² and
   frequencies: the audit is conditional on them, and holds the audited release to its own
   ledger entry. D's release is then asked for again from a fresh run folder: it must come from
   the cache and spend nothing (no new call, same statistics, same ledger) — checked and
   reported.
3. **Many releases.** Each exact statistic is tiled along a leading trial axis and the *same*
   ``gaussian_release`` is called with the same arguments (a copy of the run's budget as it
   stood before the release), without ``rng``: every row is one production release with OS
   entropy noise. Only the projection of each row on the likelihood-ratio direction is kept.
4. **Bounds**, all three holding at once with the stated confidence (Bonferroni, 1/3 each):

   - *known-shift Gaussian DP* (the verdict's workhorse): the scores are N(∓μ_decl/2, s²) with
     μ_decl from the exact statistics and the ledger's noise std; the variance is estimated
     around the known means and bounded by χ², so μ⁻ = μ_decl / s⁺ and ε⁻ = ε_GDP(μ⁻, δ);
   - *empirical Gaussian DP*: means and variance estimated (noncentral-t bound);
   - *Clopper–Pearson threshold test*: non-parametric, needs no Gaussian assumption.

   ε_lb = max of the three. A violation is ε_lb above min(claimed ε, ledger ε spent).

Power (measured in experiments/audit/README.md): at ε = 1 the PLD calibration is exact, so
with the tight label-flip canary the known-shift bound certifies 0.967 against the release's
claim 0.972 from 10⁴ releases per dataset, and noise 20 % short (std × 0.8: μ 1.25× the
claim's, ε 1.28) is flagged (1.23).

Command line: ``dpsynth-audit method=pearl privacy.epsilon=1`` (see :mod:`dpsynth.audit.cli`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gzip
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.audit.common import (
    AuditRecord,
    check_int,
    check_split,
    gaussian_exact_epsilon,
    mu_lower_empirical,
    mu_lower_known_shift,
    threshold_test,
)
from dpsynth.errors import ConfigError, PrivacyError

PLANTED_BUGS = ("none", "half-noise", "noise-0.8", "half-sensitivity")
#: Draw-level bugs: the noise actually drawn is this fraction of the std the ledger records.
NOISE_BUGS = {"half-noise": 0.5, "noise-0.8": 0.8}
#: Declaration bugs: every statistic declares this fraction of its L2 sensitivity.
SENSITIVITY_BUGS = {"half-sensitivity": 0.5}
#: Datasets whose real format the audit writes (MNIST-style IDX files).
IDX_DATASETS = ("fashion_mnist", "mnist")
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DEFAULT_TRIALS = 10_000
DEFAULT_RECORDS = 2000
#: Floats per gaussian_release call (memory ≈ 3 × 8 bytes × this).
BATCH_FLOATS = 4_000_000


# ----------------------------------------------------------------------------- data files


def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.tobytes()


def write_idx_dataset(
    folder: Path, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> Path:
    """Write the four MNIST-style IDX gz files (uint8 images (n, H, W), uint8 labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX_FILES, (train_x, train_y, test_x, test_y), strict=True):
        (folder / name).write_bytes(gzip.compress(_idx_bytes(arr), mtime=0))
    return folder


# ----------------------------------------------------------------------------- interception


@dataclass
class _Captured:
    """One ``gaussian_release`` call made during ``method.release``: where it was called from,
    the function, its inputs, the budget's spends before it, and its output."""

    module: str
    release_fn: Callable[..., Any]
    stats: list[Any]
    kwargs: dict[str, Any]
    prior_spends: list[Any] | None
    release: Any

    def spend(self) -> Any:
        return self.release.ledger.spends[-1]

    def noise_std(self) -> dict[str, float]:
        s = self.spend()
        return dict(s.parts) if s.parts else {s.statistic: float(s.noise_std)}

    def draw(self, trials: int) -> Any:
        """``trials`` production releases in one call of the real ``gaussian_release``: each
        exact statistic tiled along a new leading axis (i.i.d. noise per entry, so each row is
        one release), the run's budget as it stood before the release, OS-entropy noise."""
        tiled = [
            dataclasses.replace(
                s,
                value=np.broadcast_to(
                    np.asarray(s.value, dtype=np.float64), (trials, *np.shape(s.value))
                ),
            )
            for s in self.stats
        ]
        kwargs = {k: v for k, v in self.kwargs.items() if k != "rng"}
        if kwargs.get("budget") is not None:
            budget = copy.copy(kwargs["budget"])
            budget.spends = list(self.prior_spends or [])
            kwargs["budget"] = budget
        return self.release_fn(tiled, **kwargs)


class _Interceptor:
    """Wraps the ``gaussian_release`` global of every loaded ``dpsynth`` module that imported
    it (the real function still runs): each call made while a method releases is recorded.

    The call made from the method's own release module is the *audited* release; calls made
    elsewhere before it (e.g. the DP estimate of σ0² in ``dpsynth.privacy.estimates``) are
    *prefix* releases. With ``replay`` set, each prefix release still runs (and is charged to
    the budget as usual) but hands the method the noisy statistics recorded in ``replay``: the
    audited release of D and of D′ is then observed *conditionally on the same prefix output*
    (same σ0², same public frequencies). That is sound: for every value of the prefix output,
    the audited release alone must meet its own ledger entry.
    """

    def __init__(self, method: Any, sensitivity_factor: float) -> None:
        from dpsynth.privacy import release as release_module

        self.main = type(method).release.__module__
        self.factor = sensitivity_factor
        self.calls: list[_Captured] = []
        self.replay: list[dict[str, np.ndarray]] | None = None
        self._prefix = 0
        self._active = False
        real = release_module.gaussian_release
        self._patched = [
            mod
            for name, mod in sorted(sys.modules.items())
            if name.startswith("dpsynth.")
            and not name.startswith(("dpsynth.audit", "dpsynth.privacy.release"))
            and getattr(mod, "gaussian_release", None) is real
        ]
        if not any(m.__name__ == self.main for m in self._patched):
            raise ConfigError(
                f"method={getattr(method, 'name', type(method).__name__)}: its release code "
                f"({self.main}) does not call gaussian_release; allowed: one-shot Gaussian "
                "release methods (dpmerf, pearl)."
            )
        self._real = real

    def _recorder(self, module: str) -> Callable[..., Any]:
        real = self._real

        def recorder(stats: list[Any], **kwargs: Any) -> Any:
            if not self._active:  # e.g. a DP release made while a dataset loads
                return real(stats, **kwargs)
            if module == self.main and self.factor != 1.0:
                stats = [
                    dataclasses.replace(s, sensitivity=s.sensitivity * self.factor) for s in stats
                ]
            budget = kwargs.get("budget")
            prior = list(budget.spends) if budget is not None else None
            rel = real(stats, **kwargs)
            if module != self.main:
                if self.replay is not None:
                    if self._prefix >= len(self.replay):
                        raise ConfigError(  # pragma: no cover - the same code on each dataset
                            "the release made more prefix releases than the probe did."
                        )
                    rel.statistics = {k: v.copy() for k, v in self.replay[self._prefix].items()}
                self._prefix += 1
            self.calls.append(_Captured(module, real, list(stats), dict(kwargs), prior, rel))
            return rel

        return recorder

    def release(self, method: Any, data: Any, privacy: Any, ctx: Any) -> tuple[Any, list[Any]]:
        """``method.release(data, privacy, ctx)``, and the calls it made."""
        before, self._prefix, self._active = len(self.calls), 0, True
        try:
            rel = method.release(data, privacy, ctx)
        finally:
            self._active = False
        return rel, self.calls[before:]

    def __enter__(self) -> _Interceptor:
        for mod in self._patched:
            mod.gaussian_release = self._recorder(mod.__name__)
        return self

    def __exit__(self, *exc: Any) -> None:
        for mod in self._patched:
            mod.gaussian_release = self._real


class _ScaledGenerator:
    """A numpy Generator whose ``normal`` draws ``factor`` × the requested std (planted bug)."""

    def __init__(self, rng: np.random.Generator, factor: float) -> None:
        self._rng, self._factor = rng, factor

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return self._rng.normal(loc, np.multiply(scale, self._factor), size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rng, name)


class _NumpyWithScaledNoise:
    """Stands in for ``numpy`` in the release module: identical, except that the generators
    ``np.random.default_rng`` makes there draw too little noise."""

    def __init__(self, factor: float) -> None:
        parent = self

        class _Random:
            def default_rng(self, *args: Any, **kwargs: Any) -> Any:
                return _ScaledGenerator(np.random.default_rng(*args, **kwargs), parent.factor)

            def __getattr__(self, name: str) -> Any:
                return getattr(np.random, name)

        self.factor = factor
        self.random = _Random()

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@contextlib.contextmanager
def planted_bug(name: str) -> Iterator[float]:
    """Plant a known privacy bug for the duration of an audit (a self-test of the auditor).

    Only module attributes are replaced, and restored afterwards; no code is edited.

    ``half-noise`` / ``noise-0.8``: the noise ``gaussian_release`` draws has 0.5 / 0.8 × the
    std it records (the numpy the release module sees makes short generators): the ledger
    reports the promised ε, wrongly. ``half-sensitivity``: every statistic declares half its L2
    sensitivity (planted where the method hands its statistics to ``gaussian_release``): the
    ledger is wrong too. Yields the sensitivity factor the interception must apply.
    """
    from dpsynth.privacy import release as release_module

    if name not in PLANTED_BUGS:
        raise ConfigError(
            f"--plant-bug: got {name!r}; allowed for one-shot methods: "
            f"{', '.join(PLANTED_BUGS)}. Use none for a real audit."
        )
    if name not in NOISE_BUGS:
        yield SENSITIVITY_BUGS.get(name, 1.0)
        return
    real_np = release_module.np
    release_module.np = _NumpyWithScaledNoise(NOISE_BUGS[name])
    try:
        yield 1.0
    finally:
        release_module.np = real_np


# ----------------------------------------------------------------------------- canaries


def antipodal_pair(freqs: np.ndarray, shape: tuple[int, int], seed: int) -> tuple[Any, Any, float]:
    """Two uint8 images x, x′ (H, W) with ‖z(x) − z(x′)‖ as large as the frequencies allow.

    ‖z(x) − z(x′)‖² = 2 − (2/k) Σ_i cos(t_i·(x − x′)): minimise the mean cosine over
    δ = x − x′ ∈ [−1, 1]^d (δ = tanh(v); Adam on v from a few seeded starts, numpy), then
    x = max(δ, 0), x′ = max(−δ, 0) rounded to bytes. Uses only the public frequencies.
    Returns (x, x′, ‖z(x) − z(x′)‖ / 2 after rounding; 1 would be exactly antipodal).
    """
    k, d = freqs.shape
    rng = np.random.default_rng([int(seed), 0xA17])
    best_delta, best = np.zeros(d), math.inf
    for _ in range(4):
        v = rng.normal(0.0, 2.0, d)
        m1, m2 = np.zeros(d), np.zeros(d)
        for t in range(1, 301):
            delta = np.tanh(v)
            phase = freqs @ delta
            grad = -(np.sin(phase) @ freqs) / k * (1.0 - delta**2)
            m1 = 0.9 * m1 + 0.1 * grad
            m2 = 0.999 * m2 + 0.001 * grad**2
            v -= 0.1 * (m1 / (1 - 0.9**t)) / (np.sqrt(m2 / (1 - 0.999**t)) + 1e-12)
        value = float(np.cos(freqs @ np.tanh(v)).mean())
        if value < best:
            best, best_delta = value, np.tanh(v)
    x = np.rint(255.0 * np.clip(best_delta, 0.0, 1.0)).astype(np.uint8)
    xp = np.rint(255.0 * np.clip(-best_delta, 0.0, 1.0)).astype(np.uint8)
    diff = (x.astype(np.float64) - xp.astype(np.float64)) / 255.0
    mean_cos = float(np.cos(freqs @ diff).mean())
    return x.reshape(shape), xp.reshape(shape), math.sqrt(max(2.0 - 2.0 * mean_cos, 0.0)) / 2.0


# ----------------------------------------------------------------------------- result


@dataclass
class AuditResult(AuditRecord):
    """Everything a reader needs to judge one audit (all of it JSON-serialisable)."""

    audit: str
    method: str
    dataset: str
    epsilon: float
    ledger_epsilon_spent: float
    release_epsilon: float
    claim: float
    delta: float
    accountant: str
    neighbours: str
    epsilon_lower_bound: float
    bound_source: str
    confidence: float
    trials: int
    selection_trials: int
    planted_bug: str
    violation: bool
    canary: str
    candidates: dict[str, float]
    separation_mu: float
    accountant_mu: float
    canary_tightness: float
    exact_epsilon_of_canary: float
    known_shift: dict[str, Any]
    empirical: dict[str, Any]
    test: dict[str, Any]
    noise_ratio: dict[str, float]
    centring_z: float
    cache: dict[str, Any]
    mechanism: dict[str, Any]
    seed: int
    seconds: float
    releases_per_second: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = self.verdict()
        if not self.cache["ok"]:
            verdict += "; CACHE VIOLATION: a cache hit spent or changed the release"
        mech = self.mechanism
        stats = ", ".join(
            f"{s['name']} {tuple(s['shape'])} Δ₂={s['sensitivity_declared']:.4g} "
            f"std={s['noise_std']:.4g}"
            for s in mech["statistics"]
        )
        ks, em, t = self.known_shift, self.empirical, self.test
        return (
            f"dpsynth-audit: {self.method} on {self.dataset} {tuple(mech['image_shape'])}: "
            f"claimed ε {self.epsilon:g} (ledger spent {self.ledger_epsilon_spent:.4g}; the "
            f"audited release's own entry {self.release_epsilon:.4g}) at δ {self.delta:g}, "
            f"{self.accountant}, {self.neighbours}"
            + (f"; PLANTED BUG {self.planted_bug}" if self.planted_bug != "none" else "")
            + f"\n  mechanism: {stats} (k={mech['num_features']}, d={mech['dim']}, "
            f"n={mech['records']}, J={mech['joint_sensitivity']:.4g}, σ0²={mech['sigma0_sq']:.4g}"
            f" ({mech['sigma0_sq_config']}); conditioned on the prefix releases: "
            f"{', '.join(mech['prefix_releases']) or 'none'})"
            f"\n  canary: {self.canary}, μ = {self.separation_mu:.4g} noise stds = "
            f"{self.canary_tightness:.3f} × the accountant's 1/m; exact ε of this canary "
            f"{self.exact_epsilon_of_canary:.4g}; measured noise/ledger std of the production "
            f"release: {', '.join(f'{k} {v:.3f}' for k, v in self.noise_ratio.items())}"
            f"\n  cache: second release from a fresh run folder: hit={self.cache['hit']}, "
            f"gaussian_release calls={self.cache['gaussian_release_calls']}, same statistics="
            f"{self.cache['same_statistics']}, spends unchanged={self.cache['spends_unchanged']}"
            f"\n  {self.trials:,} releases per dataset ({self.releases_per_second:.0f}/s): "
            f"μ̂ = {ks['mu']:.4f} (score std {ks['std']:.4f} of the ledger's); lower bounds at "
            f"{self.confidence:.0%} jointly: known-shift GDP ε ≥ {ks['epsilon_lower_bound']:.4f} "
            f"(μ ≥ {ks['mu_lower']:.4f}), empirical GDP ε ≥ {em['epsilon_lower_bound']:.4f}, "
            f"Clopper–Pearson ε ≥ {t['epsilon_lower_bound']:.4f} ({t['form']}: FPR "
            f"{t['fpr']:.3g}, TPR {1 - t['fnr']:.3g})"
            f"\n  audited ε lower bound: {self.epsilon_lower_bound:.4f} ({self.bound_source}) "
            f"vs claim {self.claim:.4g}"
            f"\n  {verdict}"
        )


# ----------------------------------------------------------------------------- the audit


def ledger_privacy(ledger: Any, privacy: Any) -> Any:
    """The PrivacySpec the ledger was accounted under (its own accountant and relation)."""
    return dataclasses.replace(
        privacy,
        accountant=getattr(ledger, "accountant", privacy.accountant),
        neighbours=getattr(ledger, "neighbours", privacy.neighbours),
    )


def _statistics_info(cap: _Captured) -> list[dict[str, Any]]:
    std = cap.noise_std()
    return [
        {
            "name": s.name,
            "shape": list(np.shape(s.value)),
            "sensitivity_declared": float(s.sensitivity),
            "noise_std": float(std[s.name]),
        }
        for s in cap.stats
    ]


def _noise_ratio(cap: _Captured) -> dict[str, float]:
    """Measured std of (production release − exact statistic) over the ledger's std."""
    std = cap.noise_std()
    out = {}
    for s in cap.stats:
        noise = np.asarray(cap.release.statistics[s.name], np.float64) - np.asarray(s.value)
        out[s.name] = float(np.sqrt(np.mean(noise**2)) / std[s.name])
    return out


def audit_release(
    method: Any,
    privacy: Any,
    *,
    dataset_cfg: dict[str, Any],
    dataset_options: dict[str, Any] | None = None,
    dataset_name: str = "fashion_mnist",
    seed: int = 0,
    records: int = DEFAULT_RECORDS,
    image_size: int = 28,
    trials: int = DEFAULT_TRIALS,
    selection_fraction: float = 0.1,
    confidence: float = 0.95,
    batch_size: int | None = None,
    planted: str = "none",
    workdir: str | Path | None = None,
) -> AuditResult:
    """Audit ``method.release`` at ``privacy`` with the worst-case canary (see the module doc).

    Args:
        method: an instantiated one-shot embedding method, at its preset's k.
        privacy: the :class:`~dpsynth.privacy.release.PrivacySpec` being audited.
        dataset_cfg: the dataset's loader config (``_target_`` and loader arguments; ``root`` is
            replaced by the generated folder). An MNIST-style IDX dataset.
        dataset_options: the dataset YAML's public constants (``sigma0_sq``).
        dataset_name: for messages and the cache key.
        seed: run seed (public frequencies unless the method fixes them) and the generated
            records; never the noise (OS entropy).
        records: n, the training records of D (all ten classes: ≥ 10; thousands make the DP
            σ0² estimate, when the dataset asks for one, close to the data's own).
        image_size: H = W of the generated images (28: the real datasets' d = 784).
        trials: production releases drawn from *each* of D and D′.
        selection_fraction: share of the trials that only choose the threshold of the
            Clopper–Pearson test.
        confidence: joint confidence of the three bounds.
        batch_size: releases per ``gaussian_release`` call (default: ~4·10⁶ floats).
        planted: a bug to plant for a self-test (:func:`planted_bug`), ``none`` to audit.
        workdir: folder for the generated files, run folders and cache (default: a temporary
            folder, removed afterwards).
    """
    from omegaconf import OmegaConf

    from dpsynth.methods.base import RunContext
    from dpsynth.methods.embedding import draw_frequencies
    from dpsynth.methods.oneshot import EmbeddingMethod
    from dpsynth.privacy.release import Ledger, ReleaseCache

    if not isinstance(method, EmbeddingMethod):
        raise ConfigError(
            f"method: got {type(method).__name__}; allowed: the one-shot embedding methods "
            "(pearl, dpmerf, ...). Private-training methods (DP-SGD) have their own audit."
        )
    records = check_int("--records", records, 10, "Use e.g. --records 100 (ten classes).")
    image_size = check_int("--image-size", image_size, 4, "Use --image-size 28.")
    trials = check_int("--trials", trials, 1000, "Use ≥ 10000 for a meaningful bound.")
    _, confidence, n_select = check_split(trials, selection_fraction, confidence)
    if planted not in PLANTED_BUGS:
        raise ConfigError(
            f"--plant-bug: got {planted!r}; allowed for one-shot methods: "
            f"{', '.join(PLANTED_BUGS)}. Use none for a real audit."
        )
    options = dict(dataset_options or {})
    t0 = time.perf_counter()
    tmp_ctx = (
        contextlib.nullcontext(str(workdir))
        if workdir is not None
        else tempfile.TemporaryDirectory(prefix="dpsynth-audit-")
    )
    with tmp_ctx as tmp_name:
        tmp = Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        cache = ReleaseCache(tmp / "releases")
        dataset_id = {k: v for k, v in dataset_cfg.items() if k not in ("root", "download")}
        dataset_id["audit"] = "generated"
        rng = np.random.default_rng([int(seed), 0xA0D17])  # data only, never noise
        shape = (image_size, image_size)
        base_x = rng.integers(0, 256, (records, *shape), dtype=np.uint8)
        base_y = (np.arange(records) % 10).astype(np.uint8)  # record 0: the canary, label 0
        test_x = rng.integers(0, 256, (10, *shape), dtype=np.uint8)
        test_y = np.arange(10, dtype=np.uint8)
        runs = iter(range(1_000_000))

        def load(name: str, x: np.ndarray, y: np.ndarray) -> Any:
            from hydra.utils import instantiate

            folder = write_idx_dataset(tmp / "data" / name, x, y, test_x, test_y)
            cfg = OmegaConf.create({**dataset_cfg, "root": str(folder), "download": False})
            return instantiate(cfg, _convert_="all")

        def context() -> Any:
            return RunContext(
                seed=int(seed),
                run_dir=tmp / "runs" / f"run{next(runs)}",
                cache=cache,
                dataset_id=dataset_id,
                dataset_options=options,
            )

        probe_x = base_x.copy()
        probe_x[0] = 0  # differs from every D below: the probe's release is never a cache hit
        probe = load("probe", probe_x, base_y)
        spec = probe.spec
        if spec.num_classes != 10 or spec.kind != "image":
            raise ConfigError(  # pragma: no cover - both IDX datasets have ten image classes
                f"dataset={dataset_name}: the audit writes ten-class IDX images; got {spec}."
            )
        method.check(spec, options, probe.n_train)

        def with_record(x: np.ndarray | None, y: int) -> tuple[np.ndarray, np.ndarray]:
            if x is None:  # add/remove: D without the canary
                return base_x[1:], base_y[1:]
            bx, by = base_x.copy(), base_y.copy()
            bx[0], by[0] = x, y
            return bx, by

        with planted_bug(planted) as factor, _Interceptor(method, factor) as spy:
            probe_rel, made = spy.release(method, probe, privacy, context())
            prefix = [c for c in made if c.module != spy.main]
            # Every later release replays the probe's (real, noisy) prefix outputs, so D and D′
            # are released with the probe's σ0² and frequencies: the audit is conditional on
            # that prefix output (sound for any value). With n in the thousands the DP σ0²
            # estimate is close to the data's own (≈ 131 for uniform bytes; Fashion-MNIST: 127).
            spy.replay = [dict(c.release.statistics) for c in prefix]
            pub = probe_rel.public
            k, s0, fseed = int(pub["num_features"]), float(pub["sigma0_sq"]), int(pub["freq_seed"])
            freqs = draw_frequencies(k, spec.dim, s0, fseed).double().numpy()

            def release(name: str, xy: tuple[np.ndarray, np.ndarray]) -> tuple[Any, _Captured]:
                rel, made = spy.release(method, load(name, *xy), privacy, context())
                main = [c for c in made if c.module == spy.main]
                if len(main) != 1:
                    raise ConfigError(
                        f"method={method.name}: release made {len(main)} gaussian_release calls "
                        f"from {spy.main}; the audit supports exactly one (all statistics "
                        "released jointly)."
                    )
                if rel.public.get("sigma0_sq") != probe_rel.public.get("sigma0_sq"):
                    raise ConfigError(  # pragma: no cover - the replay fixes the prefix output
                        f"the release of {name} used σ0² = {rel.public.get('sigma0_sq')}, not "
                        f"the probe's {probe_rel.public.get('sigma0_sq')}: the prefix releases "
                        "could not be replayed; the audit would compare different mechanisms."
                    )
                return rel, main[0]

            def separation(d: _Captured, dp: _Captured) -> float:
                """μ_decl: the distance of the exact statistics in the ledger's noise stds."""
                std = d.noise_std()
                total = 0.0
                for a, b in zip(d.stats, dp.stats, strict=True):
                    diff = np.asarray(b.value, np.float64) - np.asarray(a.value, np.float64)
                    total += float(np.sum((diff / std[a.name]) ** 2))
                return math.sqrt(total)

            # name → (D's records, D's release and its captured call, D′'s captured call)
            pairs: dict[str, tuple[Any, Any, _Captured, _Captured]] = {}

            def candidate(name: str, d_xy: Any, dp_xy: Any) -> None:
                rel, cap = release(f"D-{name}", d_xy)
                pairs[name] = (d_xy, rel, cap, release(f"D′-{name}", dp_xy)[1])

            x_c = base_x[0]
            if privacy.neighbours == "add_remove":
                candidate("add", with_record(None, 0), with_record(x_c, 0))
            else:
                candidate("label-flip", with_record(x_c, 0), with_record(x_c, 1))
            candidates = {n: separation(p[2], p[3]) for n, p in pairs.items()}
            m_release = float(next(iter(pairs.values()))[2].spend().noise_multiplier)
            antipodal_fraction = None
            if privacy.neighbours == "replace_one" and max(candidates.values()) * m_release < 0.999:
                # Below the declared joint sensitivity (the embedding released alone): the
                # same-label pair of images whose features are as far apart as possible.
                x_a, x_b, antipodal_fraction = antipodal_pair(freqs, shape, int(seed))
                candidate("antipodal", with_record(x_a, 0), with_record(x_b, 0))
                candidates["antipodal"] = separation(pairs["antipodal"][2], pairs["antipodal"][3])
            canary = max(candidates, key=lambda c: candidates[c])
            d_data, rel_d, mech, other = pairs[canary]
            # D's release again, from a fresh run folder: a cache hit that must spend nothing.
            hit, again = spy.release(method, load("D-again", *d_data), privacy, context())
            cache_check = {
                "hit": bool(hit.ledger.cache_hit),
                "gaussian_release_calls": len(again),
                "same_statistics": sorted(hit.statistics) == sorted(rel_d.statistics)
                and all(
                    np.array_equal(hit.statistics[k], rel_d.statistics[k]) for k in rel_d.statistics
                ),
                "spends_unchanged": [vars(s) for s in hit.ledger.spends]
                == [vars(s) for s in rel_d.ledger.spends],
            }
            cache_check["ok"] = bool(
                cache_check["hit"]
                and cache_check["gaussian_release_calls"] == 0
                and cache_check["same_statistics"]
                and cache_check["spends_unchanged"]
            )
            std = mech.noise_std()
            exact = {s.name: np.asarray(s.value, np.float64) for s in mech.stats}

            def shift(cap: _Captured) -> dict[str, np.ndarray]:
                return {
                    s.name: (np.asarray(s.value, np.float64) - exact[s.name]) / std[s.name]
                    for s in cap.stats
                }

            mu_decl = candidates[canary]
            a = shift(other)
            u = {n: a[n] / (std[n] * mu_decl) for n in a}  # unit-variance score direction
            centre = sum(
                float(np.sum((exact[s.name] + np.asarray(s.value, np.float64)) / 2.0 * u[s.name]))
                for s in other.stats
            )
            size = sum(int(np.size(s.value)) for s in mech.stats)
            batch = batch_size or max(1, min(trials, BATCH_FLOATS // size))
            batch = check_int("--batch-size", batch, 1, "Use e.g. --batch-size 128.")
            t_draw = time.perf_counter()

            def scores(cap: _Captured) -> np.ndarray:
                out = np.empty(trials, dtype=np.float64)
                for start in range(0, trials, batch):
                    b = min(batch, trials - start)
                    rel = cap.draw(b)
                    if start == 0 and vars(rel.ledger.spends[-1]) != vars(cap.spend()):
                        raise PrivacyError(  # pragma: no cover - same function, same budget
                            "the batched releases were calibrated differently from the "
                            "method's release; the audit would not be of the real mechanism."
                        )
                    sc = np.zeros(b, dtype=np.float64)
                    for n, w in u.items():
                        y = np.asarray(rel.statistics[n]).reshape(b, -1).astype(np.float64)
                        sc += y @ w.reshape(-1)
                    out[start : start + b] = sc - centre
                return out

            scores_d = scores(mech)
            scores_dp = scores(other)
            draw_seconds = time.perf_counter() - t_draw
        noise_ratio = _noise_ratio(mech)
    level = 1.0 - (1.0 - confidence) / 3.0  # three bounds, Bonferroni
    known = mu_lower_known_shift(scores_d, scores_dp, mu_decl, delta=privacy.delta, level=level)
    emp = mu_lower_empirical(scores_d, scores_dp, delta=privacy.delta, level=level)
    cp = threshold_test(
        scores_d[:n_select],
        scores_dp[:n_select],
        scores_d[n_select:],
        scores_dp[n_select:],
        delta=privacy.delta,
        confidence=1.0 - (1.0 - confidence) / 3.0,
    )
    bounds = {
        "known-shift GDP": known.epsilon_lower_bound,
        "empirical GDP": emp.epsilon_lower_bound,
        "Clopper-Pearson": cp.epsilon_lower_bound,
    }
    source = max(bounds, key=lambda b: bounds[b])
    ledger = mech.release.ledger
    spend = mech.spend()
    # The audited release's own ledger entry (the run's total minus the prefix releases, which
    # the audit conditions on): what that release alone may leak.
    release_eps = float(Ledger.account(ledger_privacy(ledger, privacy), [spend]).epsilon_spent)
    claim = min(float(privacy.epsilon), float(ledger.epsilon_spent), release_eps)
    joint = float(spend.sensitivity) if spend.parts else 1.0
    centring = (emp.shift - mu_decl) / (known.std * math.sqrt(2.0 / trials))
    notes = []
    if other.noise_std() != mech.noise_std():
        notes.append(
            f"the ledger's noise stds differ between D ({mech.noise_std()}) and D′ "
            f"({other.noise_std()}): the noise depends on the data."
        )
    if abs(centring) > 5:
        notes.append(
            f"the mean shift of the releases ({emp.shift:.4g}) is {centring:.1f} standard "
            f"errors from the exact statistics' ({mu_decl:.4g}): the noise is not centred."
        )
    mechanism = {
        "release": f"{type(method).__module__}.{type(method).__qualname__}.release",
        "noise": "dpsynth.privacy.release.gaussian_release, OS-entropy noise (rng=None)",
        "num_features": int(probe_rel.public["num_features"]),
        "sigma0_sq": float(probe_rel.public["sigma0_sq"]),
        "sigma0_sq_config": str(
            options.get("sigma0_sq") if method.sigma0_sq is None else method.sigma0_sq
        ),
        "prefix_releases": [c.spend().statistic for c in prefix],
        "dim": int(spec.dim),
        "image_shape": list(spec.shape),
        "records": int(len(d_data[1])),
        "release_noise_multiplier": m_release,
        "classes": int(spec.num_classes),
        "class_counts": str(method.class_counts),
        "joint_sensitivity": joint,
        "noise_multiplier": float(spend.noise_multiplier),
        "statistics": _statistics_info(mech),
        "antipodal_fraction": antipodal_fraction,  # None: not needed (label flip is tight)
        "batch": batch,
    }
    return AuditResult(
        audit="oneshot",
        method=str(method.name),
        dataset=dataset_name,
        epsilon=float(privacy.epsilon),
        ledger_epsilon_spent=float(ledger.epsilon_spent),
        release_epsilon=release_eps,
        claim=claim,
        delta=float(privacy.delta),
        accountant=str(privacy.accountant),
        neighbours=str(privacy.neighbours),
        epsilon_lower_bound=bounds[source],
        bound_source=source,
        confidence=confidence,
        trials=trials,
        selection_trials=n_select,
        planted_bug=planted,
        violation=bounds[source] > claim or not cache_check["ok"],
        canary=canary,
        candidates=candidates,
        separation_mu=mu_decl,
        accountant_mu=1.0 / float(spend.noise_multiplier),
        canary_tightness=mu_decl * float(spend.noise_multiplier),
        exact_epsilon_of_canary=gaussian_exact_epsilon(mu_decl, privacy.delta),
        known_shift=dataclasses.asdict(known),
        empirical=dataclasses.asdict(emp),
        test=dataclasses.asdict(cp),
        noise_ratio=noise_ratio,
        centring_z=float(centring),
        cache=cache_check,
        mechanism=mechanism,
        seed=int(seed),
        seconds=time.perf_counter() - t0,
        releases_per_second=2.0 * trials / max(draw_seconds, 1e-9),
        notes=notes,
    )


def dataset_choice(overrides: list[str], default: str = "fashion_mnist") -> str:
    """The dataset group the overrides choose (the last ``dataset=``), else ``default``."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.split("=")[0] == "dataset"]
    return chosen[-1] if chosen else default


def audit_from_config(
    overrides: list[str] | tuple[str, ...] = (), *, features: int | None = None, **kwargs: Any
) -> AuditResult:
    """Compose the real configs (``method=pearl privacy.epsilon=1 ...``; default dataset
    ``fashion_mnist``) and audit the method's release at the preset's shapes.

    ``features`` overrides the preset's k (quick checks only); other keyword arguments go to
    :func:`audit_release`.
    """
    from omegaconf import OmegaConf, open_dict

    from dpsynth.audit.common import (
        compose_config,
        instantiate_method,
        method_class,
        privacy_from_config,
    )
    from dpsynth.config import DATASET_OPTION_KEYS
    from dpsynth.methods.oneshot import EmbeddingMethod

    overrides = list(overrides)
    name = dataset_choice(overrides)
    if name not in IDX_DATASETS:
        raise ConfigError(
            f"dataset: got {name!r}; allowed for the one-shot audit: {', '.join(IDX_DATASETS)} "
            "(it writes a small dataset in their IDX format). Use dataset=fashion_mnist."
        )
    cfg = compose_config(overrides, default_dataset="fashion_mnist")
    target = method_class(cfg, overrides)
    if not (isinstance(target, type) and issubclass(target, EmbeddingMethod)):
        raise ConfigError(
            f"method: got {getattr(target, '__name__', target)}; allowed: the one-shot embedding "
            "methods (pearl, dpmerf, ...); method=dpsgd has its own audit (same command)."
        )
    if features is not None:
        features = check_int("--features", features, 1, "Use e.g. --features 1500.")
        with open_dict(cfg):
            cfg.method.num_features = features
    method = instantiate_method(cfg, overrides)
    privacy = privacy_from_config(cfg)
    raw = OmegaConf.to_container(cfg.dataset, resolve=False)
    loader = {k: v for k, v in raw.items() if k not in DATASET_OPTION_KEYS and k != "root"}
    options = {k: cfg.dataset.get(k) for k in DATASET_OPTION_KEYS}
    kwargs.setdefault("seed", int(cfg.seed))
    return audit_release(
        method,
        privacy,
        dataset_cfg=loader,
        dataset_options=options,
        dataset_name=name,
        **kwargs,
    )
