"""One-shot Gaussian releases, their privacy ledger, and the on-disk release cache.

A one-shot method (PEARL, DP-MERF) computes exact statistics of the private data, hands them
here with their L2 sensitivities, and gets back a :class:`Release`: the noisy statistics plus
public parameters and a :class:`Ledger`. Nothing downstream ever sees the exact statistics.

The cache makes re-training free: a release is stored under a key made of everything that
determines it (dataset, its files' fingerprint, method's embedding parameters, ε, δ,
accountant, seed). A cache hit spends nothing; the ledger keeps the single original spend.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from dpsynth.errors import DataError, PrivacyError
from dpsynth.privacy.accounting import (
    Event,
    Gaussian,
    SubsampledGaussian,
    calibrate_gaussian,
    epsilon_spent,
    exact_epsilon,
    remaining_multiplier,
    share_multiplier,
)


@dataclass(frozen=True)
class PrivacySpec:
    """The guarantee a run was asked to meet: (ε, δ) under ``neighbours``, by ``accountant``."""

    epsilon: float
    delta: float
    accountant: str = "pld"
    neighbours: str = "replace_one"
    #: δ already used by mechanisms outside the Gaussian accounting (partition selection of a
    #: DP schema, ``dpsynth.privacy.schema``); the Gaussian releases are accounted at the rest.
    delta_reserved: float = 0.0

    @property
    def accounting_delta(self) -> float:
        """The δ at which the run's Gaussian releases and DP-SGD steps are accounted."""
        return self.delta - self.delta_reserved


@dataclass(frozen=True)
class Statistic:
    """An exact statistic of the private data, before noise. Never leaves the mechanism.

    Attributes:
        name: key under which the noisy version is released.
        value: the exact value (any shape).
        sensitivity: its L2 sensitivity under the run's neighbour relation.
    """

    name: str
    value: np.ndarray
    sensitivity: float


@dataclass
class Spend:
    """One mechanism applied to the private data, as the ledger (and metrics.json) lists it.

    ``mechanism`` is ``gaussian`` (``count`` Gaussian releases, noise std = noise_multiplier ×
    ``sensitivity``) or ``poisson_gaussian`` (``steps`` DP-SGD steps at ``sample_rate``, clip
    norm ``sensitivity``). A joint release of several statistics is one Gaussian on their
    concatenation, each divided by its own sensitivity: ``sensitivity`` is then that joint,
    normalised sensitivity and ``parts`` the noise std each statistic received.
    """

    mechanism: str
    statistic: str
    noise_multiplier: float
    sensitivity: float
    noise_std: float
    count: int = 1
    steps: int = 0
    sample_rate: float = 1.0
    expected_batch_size: int = 0
    share: float | None = None
    parts: dict[str, float] = field(default_factory=dict)

    def event(self) -> Event:
        """The accounting event of this spend."""
        if self.mechanism == "poisson_gaussian":
            return SubsampledGaussian(self.noise_multiplier, self.sample_rate, self.steps)
        return Gaussian(self.noise_multiplier, self.count)


@dataclass
class Ledger:
    """What a run spent, as computed by the library accountant.

    ``epsilon_spent`` is by the run's ``accountant`` (what the run was calibrated with);
    ``epsilon_exact`` by the PLD accountant (the yardstick shown beside it on every row).
    ``cache_hit`` says that this run reused a stored release (and spent nothing new).
    """

    epsilon: float
    delta: float
    accountant: str
    epsilon_spent: float
    spends: list[Spend] = field(default_factory=list)
    cache_hit: bool = False
    created_at: float = field(default_factory=time.time)
    neighbours: str = "replace_one"
    epsilon_exact: float | None = None
    delta_reserved: float = 0.0

    @classmethod
    def account(cls, privacy: PrivacySpec, spends: list[Spend]) -> Ledger:
        """The ledger of ``spends``, its ε computed by the run's accountant and by PLD, at the
        δ left after ``privacy.delta_reserved`` (so the whole run is (ε, δ)-DP)."""
        events = [s.event() for s in spends]
        delta = privacy.accounting_delta
        spent = epsilon_spent(
            events, delta=delta, neighbours=privacy.neighbours, accountant=privacy.accountant
        )
        exact = exact_epsilon(events, delta=delta, neighbours=privacy.neighbours)
        return cls(
            privacy.epsilon,
            privacy.delta,
            privacy.accountant,
            spent,
            list(spends),
            neighbours=privacy.neighbours,
            epsilon_exact=exact,
            delta_reserved=privacy.delta_reserved,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["releases"] = len(self.spends)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ledger:
        d = {k: v for k, v in d.items() if k != "releases"}
        d["spends"] = [Spend(**s) for s in d.get("spends", [])]
        return cls(**d)


@dataclass
class Release:
    """Noisy statistics plus public parameters: all that post-processing may read."""

    statistics: dict[str, np.ndarray]
    public: dict[str, Any]
    ledger: Ledger

    def __getitem__(self, name: str) -> np.ndarray:
        return self.statistics[name]

    def fingerprint(self) -> str:
        """Content hash of the noisy statistics: names one release (run folders record it, so a
        resume can tell whether cache and checkpoint hold the same one)."""
        h = hashlib.sha256()
        for name in sorted(self.statistics):
            h.update(name.encode())
            h.update(fingerprint(np.asarray(self.statistics[name])).encode())
        return h.hexdigest()[:32]


class Budget:
    """A one-shot run's budget as one Gaussian multiplier, shared by its releases.

    Gaussian releases compose to a Gaussian (Σ_j 1/m_j² = 1/m²), so (ε, δ) under the
    accountant is met exactly by one multiplier m (:func:`calibrate_gaussian`); a release
    takes a fixed ``share`` of 1/m² or, by default, all that is left. ``spends`` is the ledger
    in the making; every release of the run goes through :func:`gaussian_release` with it.
    """

    def __init__(self, privacy: PrivacySpec) -> None:
        self.privacy = privacy
        self.spends: list[Spend] = []
        self.total = calibrate_gaussian(
            epsilon=privacy.epsilon, delta=privacy.accounting_delta, accountant=privacy.accountant
        )

    def multiplier(self, share: float | None = None) -> float:
        if share is not None:
            return share_multiplier(self.total, share)
        return remaining_multiplier(self.total, [s.event() for s in self.spends])

    def ledger(self) -> Ledger:
        ledger = Ledger.account(self.privacy, self.spends)
        if ledger.epsilon_spent > self.privacy.epsilon * (1 + 1e-6):
            raise PrivacyError(
                f"the accountant reports ε = {ledger.epsilon_spent} > target "
                f"{self.privacy.epsilon} for this run's releases; refusing to release."
            )
        return ledger


def gaussian_release(
    stats: list[Statistic],
    *,
    epsilon: float | None = None,
    delta: float | None = None,
    accountant: str = "pld",
    neighbours: str = "replace_one",
    budget: Budget | None = None,
    joint_sensitivity: float | None = None,
    share: float | None = None,
    public: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
) -> Release:
    """Release ``stats`` with one Gaussian mechanism and enter it in the run's ledger.

    Privacy: the statistics, each divided by its declared L2 sensitivity Δ_j (derived under the
    run's neighbour relation), are concatenated into one vector of L2 sensitivity
    ``joint_sensitivity`` J (default √len(stats): what composing them separately would cost;
    a mechanism that knows its true joint worst case passes it, e.g. √1.5 for a mean embedding
    with class proportions under replace-one). That vector gets i.i.d. N(0, (m J)²) noise,
    i.e. statistic j gets N(0, (m J Δ_j)²) on every entry, with m the multiplier of this
    release's share of ``budget`` (a fresh budget of (ε, δ) when none is given). The ledger
    composes it, by dp-accounting, with the run's other releases.

    Noise comes from the OS entropy pool unless ``rng`` is given (tests and audits only): a
    seeded noise stream would let anyone who knows the seed subtract the noise.
    """
    if not stats:
        raise PrivacyError("gaussian_release: no statistics to release.")
    for s in stats:
        if not (np.isfinite(s.sensitivity) and s.sensitivity > 0):
            raise PrivacyError(
                f"statistic {s.name!r}: sensitivity must be > 0, got {s.sensitivity}"
            )
        if not np.all(np.isfinite(s.value)):
            raise PrivacyError(f"statistic {s.name!r} contains NaN/inf; refusing to release.")
    joint = math.sqrt(len(stats)) if joint_sensitivity is None else float(joint_sensitivity)
    if not 1.0 - 1e-12 <= joint <= math.sqrt(len(stats)) + 1e-12:
        raise PrivacyError(
            f"joint_sensitivity: got {joint}; for {len(stats)} statistics each at most its own "
            f"sensitivity it lies in [1, √{len(stats)}]."
        )
    if budget is None:
        if epsilon is None or delta is None:
            raise PrivacyError("gaussian_release: give a budget, or epsilon and delta.")
        budget = Budget(PrivacySpec(epsilon, delta, accountant, neighbours))
    m = budget.multiplier(share)
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    noisy: dict[str, np.ndarray] = {}
    parts: dict[str, float] = {}
    for s in stats:
        std = m * joint * s.sensitivity
        value = np.asarray(s.value, dtype=np.float64)
        noisy[s.name] = (value + rng.normal(0.0, std, size=value.shape)).astype(np.float32)
        parts[s.name] = float(std)
    name = "+".join(s.name for s in stats)
    if len(stats) == 1:
        spend = Spend("gaussian", name, m, float(stats[0].sensitivity), parts[name], share=share)
    else:
        spend = Spend("gaussian", name, m, joint, m * joint, share=share, parts=parts)
    budget.spends.append(spend)
    return Release(noisy, dict(public or {}), budget.ledger())


# ----------------------------------------------------------------------------- cache


def cache_key(parts: dict[str, Any]) -> str:
    """Stable hash of everything that determines a release."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def fingerprint(*arrays: np.ndarray) -> str:
    """Content hash of the private arrays, so a changed file never reuses a stale release."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + rename.

    Readers see either the old file or the complete new one, never a partial write, and a
    failure (disk full, kill) leaves no half-written file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ReleaseCache:
    """Releases on disk, one ``<key>.npz`` each, built at most once under a file lock."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> Release | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                stats = {k: z[k] for k in meta["statistics"]}
        except Exception as e:  # noqa: BLE001 - any decode failure means a corrupt entry
            raise DataError(
                f"release cache entry {p} is unreadable ({type(e).__name__}: {e}). "
                "Delete that file; note that rebuilding it spends the privacy budget again."
            ) from e
        ledger = Ledger.from_dict(meta["ledger"])
        ledger.cache_hit = True
        return Release(stats, meta["public"], ledger)

    def store(self, key: str, release: Release, parts: dict[str, Any]) -> None:
        meta = {
            "statistics": list(release.statistics),
            "public": release.public,
            "ledger": release.ledger.to_dict(),
            "key_parts": parts,
        }
        buf = io.BytesIO()
        arrays = dict(release.statistics)
        arrays["__meta__"] = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
        np.savez(buf, **arrays)
        atomic_write_bytes(self.path(key), buf.getvalue())

    def get_or_create(self, parts: dict[str, Any], build: Any) -> Release:
        """Return the cached release for ``parts``, or build (spend) and store it once.

        Two processes asking for the same key at once serialise on a lock: the second one
        finds the first one's release instead of spending the budget a second time.
        """
        key = cache_key(parts)
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path(key)) + ".lock"):
            hit = self.load(key)
            if hit is not None:
                return hit
            release = build()
            release.public["cache_key"] = key
            self.store(key, release, parts)
            return release
