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
from dpsynth.privacy.accounting import calibrate_noise_multiplier, epsilon_spent


@dataclass(frozen=True)
class Statistic:
    """An exact statistic of the private data, before noise. Never leaves the mechanism.

    Attributes:
        name: key under which the noisy version is released.
        value: the exact value (any shape).
        sensitivity: L2 sensitivity under replace-one neighbouring datasets.
    """

    name: str
    value: np.ndarray
    sensitivity: float


@dataclass
class Spend:
    """One Gaussian mechanism in the ledger."""

    mechanism: str
    statistic: str
    noise_multiplier: float
    sensitivity: float
    noise_std: float


@dataclass
class Ledger:
    """What a run spent, as computed by the library accountant.

    ``spends`` lists every Gaussian mechanism applied to the private data; ``cache_hit`` says
    that this run reused a stored release (and therefore spent nothing new).
    """

    epsilon: float
    delta: float
    accountant: str
    epsilon_spent: float
    spends: list[Spend] = field(default_factory=list)
    cache_hit: bool = False
    created_at: float = field(default_factory=time.time)

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


def gaussian_release(
    stats: list[Statistic],
    *,
    epsilon: float,
    delta: float,
    accountant: str = "rdp",
    public: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
) -> Release:
    """Release ``stats`` with Gaussian noise calibrated for exactly ``len(stats)`` releases.

    Privacy: (ε, δ)-DP under replace-one adjacency, by composition (computed by dp-accounting)
    of ``len(stats)`` Gaussian mechanisms; statistic j receives i.i.d. N(0, (σ Δ_j)²) noise on
    every entry, with σ the calibrated noise multiplier and Δ_j its declared L2 sensitivity.

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
    sigma = calibrate_noise_multiplier(
        epsilon=epsilon, delta=delta, releases=len(stats), accountant=accountant
    )
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    noisy: dict[str, np.ndarray] = {}
    spends: list[Spend] = []
    for s in stats:
        std = sigma * s.sensitivity
        value = np.asarray(s.value, dtype=np.float64)
        noisy[s.name] = (value + rng.normal(0.0, std, size=value.shape)).astype(np.float32)
        spends.append(Spend("gaussian", s.name, sigma, float(s.sensitivity), float(std)))
    spent = epsilon_spent(sigma, releases=len(stats), delta=delta, accountant=accountant)
    ledger = Ledger(epsilon, delta, accountant, spent, spends)
    return Release(noisy, dict(public or {}), ledger)


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
