"""Shared machinery of the marginal-based methods (MST, AIM): discretisation, Gaussian
measurements and selections in the run's ledger, Private-PGM estimation, sampling.

Both methods follow the select-measure-generate paradigm (McKenna, Miklau, Sheldon, "Winning
the NIST contest: a scalable and general approach to differentially private synthetic data",
JPC 2021): the table is discretised over a **public** domain, a few low-dimensional marginals
(count vectors) are chosen and measured with the Gaussian mechanism, and a graphical model is
fitted to the noisy marginals with Private-PGM (PyPI ``mbi`` ≥ 2, McKenna, Sheldon, Miklau,
ICML 2019), then sampled. Only :mod:`dpsynth.methods.mst` and :mod:`dpsynth.methods.aim` decide
*which* marginals; everything else is here.

Discretisation (public): every feature column of ``spec.columns`` is one attribute: a
categorical column's categories; a numeric column's ``bins`` equal-width bins over its public
bounds (an integer column with fewer than ``bins`` values: one level per value); the label is one
more attribute. Decoding maps a numeric level to its bin midpoint (its integer value), a
category to its one-hot block, so a sampled record is an encoded row of the dataset's encoder.

Privacy: one yardstick (README). A run's budget is one Gaussian multiplier m_total
(:class:`~dpsynth.privacy.release.Budget`); a Gaussian of multiplier m is ρ = 1/(2m²)-zCDP, so
the methods' zCDP splits are shares of 1/m_total² and every step is a Gaussian release through
:func:`~dpsynth.privacy.release.gaussian_release`, entered in the ledger and composed by
dp-accounting (PLD by default) into the reported (ε, δ) — no zCDP→DP conversion.

* A marginal (count vector) has L2 sensitivity 1 under ``add_remove`` and √2 under
  ``replace_one`` (one count −1, another +1); L1 sensitivity 1 and 2.
* **Selection** (MST's tree, AIM's next marginal) is *not* the papers' exponential mechanism:
  it is a **Gaussian noisy max**. The whole vector of quality scores q_c = w_c·‖M_c(D) − M̂_c‖₁
  (minus public constants; M̂ is the current model, post-processing of earlier releases) is
  released with Gaussian noise and the choice is its argmax (post-processing). One record moves
  each ‖M_c(D) − M̂_c‖₁ by at most the L1 sensitivity Δ₁ of a marginal, so the score vector has
  L2 sensitivity Δ₁·‖w‖₂: a plain Gaussian mechanism, exactly composable with the measurements
  in the PLD accountant. (The exponential mechanism would be ε₀²/8-zCDP, but the ledger holds
  only Gaussian and subsampled-Gaussian events, and a zCDP bound does not dominate a PLD: it
  could not be composed soundly with the PLD ledger. The price: the score noise grows with
  √(number of candidates), where the exponential mechanism's does not.)
* The noisy scores are released and listed in the ledger like the measurements; only the
  measurements are kept in the release (the model is fitted to them alone).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError, PrivacyError
from dpsynth.methods.base import Method, RunContext
from dpsynth.methods.oneshot import run_release
from dpsynth.privacy.release import (
    Budget,
    PrivacySpec,
    Release,
    Statistic,
    fingerprint,
    gaussian_release,
)

#: Bumped whenever what a marginal release contains, or how it is computed, changes.
MARGINAL_RELEASE_VERSION = 1
LABEL = "__label__"
MB = 8 / 2**20  # a float64 cell, in megabytes (Private-PGM's model-size unit)


# ----------------------------------------------------------------------------- mbi


def require_mbi(method: str = "aim/mst") -> Any:
    """Import Private-PGM (``mbi``), with JAX in float64 and without its persistent
    compilation cache (mbi's own advice; JAX serves nothing else in dpsynth)."""
    try:
        import jax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(_missing(method)) from e
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)  # "no TPU" notices
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import mbi
            import mbi.estimation
            import mbi.junction_tree
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(_missing(method)) from e
    return mbi


def bound_jit_memory(fraction: float = 0.4) -> bool:
    """Drop JAX's compiled programs once this process holds ``fraction`` of the kernel's
    memory-map limit. Every new Private-PGM model structure (each AIM round, every run of a
    sweep in one process) compiles new programs whose code sections stay mapped; a sweep of
    MST and AIM runs reached Linux's vm.max_map_count (65,530) and XLA aborted the process
    ("LLVM ERROR: Unable to allocate section memory"). Returns whether it cleared."""
    try:
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        with open("/proc/self/maps", "rb") as f:
            used = sum(1 for _ in f)
    except (OSError, ValueError):  # not Linux: nothing to measure, nothing to bound
        return False
    if used < fraction * limit:
        return False
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    return True


def mbi_available() -> bool:
    try:
        require_mbi()
    except ConfigError:
        return False
    return True


def _missing(method: str) -> str:
    return (
        f"method={method} needs Private-PGM (PyPI: mbi >= 2, with jax): "
        'pip install -e ".[marginals]".'
    )


# ----------------------------------------------------------------------------- sensitivities


def marginal_sensitivity(neighbours: str) -> tuple[float, float]:
    """(L1, L2) sensitivity of one marginal's count vector under the neighbour relation."""
    if neighbours == "replace_one":
        return 2.0, math.sqrt(2.0)
    if neighbours == "add_remove":
        return 1.0, 1.0
    raise ConfigError(f"privacy.neighbours: got {neighbours!r}; allowed: replace_one, add_remove.")


# ----------------------------------------------------------------------------- discretisation


@dataclass(frozen=True)
class Attribute:
    """One attribute of the discrete domain: a feature column or the label.

    ``centers`` (numeric only) are the encoded values ([-1, 1]) each level decodes to.
    """

    name: str
    kind: str  # numeric | categorical | label
    size: int
    start: int = 0  # offset of the column in an encoded row (features only)
    centers: tuple[float, ...] = ()
    integer: bool = False  # numeric: one level per integer value (else equal-width bins)


def numeric_levels(low: float, high: float, integer: bool, bins: int) -> int:
    """Levels of a numeric column: ``bins`` equal-width bins, or one per value of an integer
    column with fewer values (public: bounds, integer flag and ``bins`` are public)."""
    if integer and high > low and int(round(high - low)) + 1 <= bins:
        return int(round(high - low)) + 1
    return int(bins)


class Discretiser:
    """Encoded rows ↔ integer codes over the public domain (features in ``spec.columns``
    order, then the label).

    ``levels[j]`` is the number of levels of numeric column j (None for a categorical one) and
    ``integer[j]`` whether they are its integer values (else equal-width bins).
    """

    def __init__(
        self, spec: DataSpec, levels: Sequence[int | None], integer: Sequence[bool] | None = None
    ) -> None:
        if spec.kind != "tabular":
            raise ConfigError(f"dataset={spec.name}: marginal methods need a table.")
        integer = list(integer) if integer is not None else [False] * len(spec.columns)
        attrs: list[Attribute] = []
        start = 0
        for col, lev, whole in zip(spec.columns, levels, integer, strict=True):
            if col.kind == "categorical":
                attrs.append(Attribute(col.name, "categorical", col.width, start))
            else:
                k = int(lev or 0)
                if k < 1:
                    raise ConfigError(f"numeric column {col.name!r}: got {lev} levels.")
                whole = bool(whole) and k > 1
                if whole:  # level i is the value low + i, encoded 2i/(k-1) - 1
                    centers = tuple(2.0 * i / (k - 1) - 1.0 for i in range(k))
                else:  # bin midpoints
                    centers = tuple(-1.0 + (2 * i + 1) / k for i in range(k))
                attrs.append(Attribute(col.name, "numeric", k, start, centers, whole))
            start += col.width
        names = [a.name for a in attrs]
        label = LABEL if LABEL not in names else LABEL + "_"
        attrs.append(Attribute(label, "label", spec.num_classes))
        self.attributes: tuple[Attribute, ...] = tuple(attrs)
        self.width = start
        self.spec = spec

    @classmethod
    def for_data(cls, data: Dataset, bins: int) -> Discretiser:
        """The levels from the public schema (the encoder's integer flags when it has them)."""
        schema = getattr(data.encoder, "schema", {}) or {}
        levels: list[int | None] = []
        integer: list[bool] = []
        for col in data.spec.columns:
            if col.kind == "categorical":
                levels.append(None)
                integer.append(False)
                continue
            whole = bool(getattr(schema.get(col.name), "integer", False))
            k = numeric_levels(col.low, col.high, whole, bins)
            levels.append(k)
            integer.append(whole and k < bins + 1 and abs((col.high - col.low) - (k - 1)) < 1e-9)
        return cls(data.spec, levels, integer)

    @property
    def levels(self) -> list[int | None]:
        return [a.size if a.kind == "numeric" else None for a in self.attributes[:-1]]

    @property
    def integer(self) -> list[bool]:
        return [a.integer for a in self.attributes[:-1]]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.attributes)

    def codes(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n, D) encoded rows + (n,) labels → (n, attributes) int64 codes."""
        x = np.asarray(x, dtype=np.float64)
        out = np.empty((len(x), len(self.attributes)), dtype=np.int64)
        for j, a in enumerate(self.attributes[:-1]):
            if a.kind == "categorical":
                out[:, j] = x[:, a.start : a.start + a.size].argmax(axis=1)
                continue
            unit = (np.nan_to_num(x[:, a.start]) + 1.0) / 2.0  # [-1, 1] -> [0, 1]
            if a.integer:  # the nearest value
                out[:, j] = np.clip(np.rint(unit * (a.size - 1)), 0, a.size - 1)
            else:
                out[:, j] = np.clip(np.floor(unit * a.size), 0, a.size - 1)
        out[:, -1] = np.asarray(y, dtype=np.int64)
        return out

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, attributes) codes → encoded rows (n, D) float32 and labels (n,) int64."""
        codes = np.asarray(codes, dtype=np.int64)
        x = np.zeros((len(codes), self.width), dtype=np.float32)
        rows = np.arange(len(codes))
        for j, a in enumerate(self.attributes[:-1]):
            c = np.clip(codes[:, j], 0, a.size - 1)
            if a.kind == "categorical":
                x[rows, a.start + c] = 1.0
            else:
                x[:, a.start] = np.asarray(a.centers, dtype=np.float32)[c]
        return x, codes[:, -1].copy()


def marginal(codes: np.ndarray, idx: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """Count vector of the attributes ``idx`` (row-major over their sizes), float64."""
    shape = [int(sizes[i]) for i in idx]
    flat = np.ravel_multi_index([codes[:, i] for i in idx], shape)
    return np.bincount(flat, minlength=int(np.prod(shape))).astype(np.float64)


def cells(sizes: dict[str, int], clique: Sequence[str]) -> int:
    return int(np.prod([sizes[a] for a in clique], dtype=np.int64))


# ----------------------------------------------------------------------------- measurements


@dataclass
class Measurement:
    """A noisy marginal: the release keeps ``values``; clique and std are public.

    ``mapping`` (MST's domain compression) holds, per attribute of the clique, the public
    map original level → model level when the marginal was measured on the original domain
    and is to be compressed before estimation.
    """

    clique: tuple[str, ...]
    values: np.ndarray
    stddev: float
    compress: bool = False


class Ledgered:
    """A run's budget in *units* of 1/m² (a Gaussian of multiplier m is ρ = 1/(2m²)-zCDP), and
    the two kinds of Gaussian releases the marginal methods make."""

    def __init__(self, data: Dataset, privacy: PrivacySpec) -> None:
        self.budget = Budget(privacy)
        self.budget.spends.extend(getattr(data, "spends", []))  # load-time releases first
        self.total_units = 1.0 / self.budget.total**2
        self.l1, self.l2 = marginal_sensitivity(privacy.neighbours)
        self.start = self.used  # what the load-time releases used

    @property
    def used(self) -> float:
        return sum(s.count / s.noise_multiplier**2 for s in self.budget.spends)

    @property
    def left(self) -> float:
        return self.total_units - self.used

    def share(self, units: float | None) -> float | None:
        """The Budget share that spends ``units`` (None: all that is left)."""
        if units is None:
            return None
        if units <= 0:
            raise PrivacyError(f"a release needs a positive share of the budget, got {units}.")
        return min(1.0, units / self.total_units)

    def measure(
        self, name: str, value: np.ndarray, units: float | None, clique: tuple[str, ...]
    ) -> Measurement:
        """Gaussian release of a marginal (L2 sensitivity ``self.l2``) at 1/m² = ``units``
        (None: the rest of the budget)."""
        rel = gaussian_release(
            [Statistic(name, value, self.l2)], budget=self.budget, share=self.share(units)
        )
        spend = self.budget.spends[-1]
        return Measurement(clique, rel[name].astype(np.float64), spend.noise_std)

    def noisy_max(self, name: str, scores: np.ndarray, weights: np.ndarray, units: float) -> int:
        """Gaussian noisy max: the score vector (L2 sensitivity Δ₁·‖w‖₂) released with
        Gaussian noise at 1/m² = ``units``; returns the index of its largest entry."""
        sens = self.l1 * float(np.linalg.norm(weights))
        rel = gaussian_release(
            [Statistic(name, scores, sens)], budget=self.budget, share=self.share(units)
        )
        return int(np.argmax(rel[name]))

    def noisy(self, name: str, scores: np.ndarray, weights: np.ndarray, units: float) -> np.ndarray:
        """The noisy score vector itself (MST ranks edges by all of it)."""
        sens = self.l1 * float(np.linalg.norm(weights))
        rel = gaussian_release(
            [Statistic(name, scores, sens)], budget=self.budget, share=self.share(units)
        )
        return rel[name].astype(np.float64)


def measurement_records(ms: Sequence[Measurement]) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Release statistics (the noisy vectors) and their public descriptions."""
    stats, public = {}, []
    for i, m in enumerate(ms):
        key = f"m{i:04d}"
        stats[key] = np.asarray(m.values, dtype=np.float32)
        public.append(
            {
                "key": key,
                "clique": list(m.clique),
                "stddev": float(m.stddev),
                "compress": m.compress,
            }
        )
    return stats, public


def measurements_from(release: Release) -> list[Measurement]:
    return [
        Measurement(
            tuple(p["clique"]),
            np.asarray(release[p["key"]], dtype=np.float64),
            float(p["stddev"]),
            bool(p.get("compress", False)),
        )
        for p in release.public["measurements"]
    ]


# ----------------------------------------------------------------------------- compression


def compress_mapping(y: np.ndarray, stddev: float, threshold: float = 3.0) -> np.ndarray | None:
    """MST's domain compression (public: a function of a noisy 1-way marginal): levels whose
    noisy count is below ``threshold``·σ are merged into one level (the last). None: nothing
    merged."""
    keep = np.asarray(y) >= threshold * stddev
    if keep.all():
        return None
    mapping = np.empty(len(y), dtype=np.int64)
    mapping[keep] = np.arange(int(keep.sum()))
    mapping[~keep] = int(keep.sum())
    return mapping


def compressed_sizes(
    names: Sequence[str], sizes: Sequence[int], mappings: dict[str, list[int] | None]
) -> tuple[int, ...]:
    out = []
    for a, s in zip(names, sizes, strict=True):
        m = mappings.get(a)
        out.append(int(max(m)) + 1 if m is not None else int(s))
    return tuple(out)


def apply_mappings(
    codes: np.ndarray, names: Sequence[str], mappings: dict[str, list[int] | None]
) -> np.ndarray:
    out = codes.copy()
    for j, a in enumerate(names):
        m = mappings.get(a)
        if m is not None:
            out[:, j] = np.asarray(m, dtype=np.int64)[codes[:, j]]
    return out


def compress_measurement(m: Measurement, mappings: dict[str, list[int] | None]) -> Any:
    """A 1-way measurement on the original domain, re-expressed on the compressed one as a
    weighted query (Private-PGM's ``LinearMeasurement.compress``: merged cells summed and
    scaled by 1/√g, so every entry keeps std σ). Returns an ``mbi.LinearMeasurement``."""
    mbi = require_mbi()
    (a,) = m.clique
    lm = mbi.LinearMeasurement(m.values, m.clique, m.stddev)
    mapping = mappings.get(a)
    if mapping is None:
        return lm
    dom = mbi.Domain([a], [len(m.values)])
    return lm.compress({a: np.asarray(mapping, dtype=np.int64)}, dom)


# ----------------------------------------------------------------------------- estimation


def linear_measurements(
    ms: Sequence[Measurement], mappings: dict[str, list[int] | None] | None = None
) -> list[Any]:
    mbi = require_mbi()
    out = []
    for m in ms:
        if m.compress:
            out.append(compress_measurement(m, mappings or {}))
        else:
            out.append(mbi.LinearMeasurement(m.values, m.clique, m.stddev))
    return out


def estimate(
    names: Sequence[str],
    sizes: Sequence[int],
    ms: Sequence[Measurement],
    *,
    total: float | None,
    steps: int,
    mappings: dict[str, list[int] | None] | None = None,
    warm_start: Any = None,
) -> Any:
    """Private-PGM: the graphical model that best fits the noisy marginals (mirror descent on
    the L2 loss, Armijo steps). Post-processing: reads noisy measurements and public facts."""
    mbi = require_mbi()
    bound_jit_memory()
    domain = mbi.Domain(list(names), [int(s) for s in sizes])
    lms = linear_measurements(ms, mappings)
    if total is None:  # add_remove: n is private, its estimate comes from the measurements
        total = mbi.estimation.minimum_variance_unbiased_total(lms)
    return mbi.estimation.MirrorDescent().estimate(
        domain, lms, known_total=float(total), iters=int(steps), warm_start=warm_start
    )


def model_size_mb(sizes: dict[str, int], cliques: Sequence[Sequence[str]]) -> float:
    """Private-PGM's model size (MB of its junction tree's maximal cliques)."""
    mbi = require_mbi()
    names = list(sizes)
    dom = mbi.Domain(names, [sizes[a] for a in names])
    return float(mbi.junction_tree.hypothetical_model_size(dom, [tuple(c) for c in cliques]))


def project_many(
    model: Any, queries: Sequence[tuple[str, ...]]
) -> dict[tuple[str, ...], np.ndarray]:
    """The model's marginals on ``queries`` (flat count vectors, row-major), by variable
    elimination in NumPy over the model's potentials (Private-PGM answers out-of-model
    queries with one JIT compilation per query shape and model structure, far too slow for
    AIM's hundreds of candidates per round). Post-processing of the model only."""
    total = float(model.total)
    sizes = dict(zip(model.domain.attributes, model.domain.shape, strict=True))
    factors: list[tuple[tuple[str, ...], np.ndarray]] = []
    for f in model.potentials.tables.values():
        v = np.asarray(f.values, dtype=np.float64)
        factors.append((tuple(f.domain.attributes), np.exp(v - v.max())))
    marginals = {
        tuple(f.domain.attributes): np.asarray(f.values, dtype=np.float64)
        for f in model.marginals.tables.values()
    }
    out: dict[tuple[str, ...], np.ndarray] = {}
    for q in queries:
        host = next((c for c in marginals if set(q) <= set(c)), None)
        if host is not None:
            arr = marginals[host]
            drop = tuple(i for i, a in enumerate(host) if a not in q)
            arr = arr.sum(axis=drop) if drop else arr
            kept = [a for a in host if a in q]
            arr = np.transpose(arr, [kept.index(a) for a in q])
        else:
            arr = _eliminate(factors, q, sizes)
        s = arr.sum()
        out[q] = (arr / s * total if s > 0 else np.full(arr.shape, total / arr.size)).ravel()
    return out


def _eliminate(
    factors: list[tuple[tuple[str, ...], np.ndarray]], query: tuple[str, ...], sizes: dict[str, int]
) -> np.ndarray:
    """Unnormalised marginal on ``query`` of the product of ``factors`` (greedy min-size
    elimination; factors not connected to the query only scale it and are dropped)."""
    reach = set(query)
    fs = list(factors)
    grew = True
    while grew:
        grew = False
        for attrs, _ in fs:
            if reach & set(attrs) and not set(attrs) <= reach:
                reach |= set(attrs)
                grew = True
    fs = [f for f in fs if reach & set(f[0])]
    for a in query:  # an attribute in no factor is uniform (not once its 1-way is measured)
        if not any(a in attrs for attrs, _ in fs):
            fs.append(((a,), np.ones(sizes[a])))
    elim = [a for a in reach if a not in query]
    while elim:
        z = min(elim, key=lambda v, fs=fs: _union_cells(fs, v, sizes))
        elim.remove(z)
        inv = [f for f in fs if z in f[0]]
        fs = [f for f in fs if z not in f[0]]
        keep = tuple(dict.fromkeys(a for attrs, _ in inv for a in attrs if a != z))
        new = _einsum(inv, keep)
        top = new.max()
        fs.append((keep, new / top if top > 0 else new))
    return _einsum(fs, query)


def _union_cells(
    fs: Sequence[tuple[tuple[str, ...], np.ndarray]], z: str, sizes: dict[str, int]
) -> int:
    """Cells of the factor that eliminating ``z`` creates (before summing ``z`` out)."""
    union = set().union(*(set(a) for a, _ in fs if z in a))
    return int(np.prod([sizes[u] for u in union], dtype=np.int64))


def _einsum(fs: Sequence[tuple[tuple[str, ...], np.ndarray]], out: tuple[str, ...]) -> np.ndarray:
    """Product of the factors, summed onto the attributes ``out`` (each in some factor)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    letters: dict[str, str] = {}
    for attrs, _ in fs:
        for a in attrs:
            letters.setdefault(a, alphabet[len(letters)])
    spec = ",".join("".join(letters[a] for a in attrs) for attrs, _ in fs)
    target = "".join(letters[a] for a in out)
    return np.einsum(f"{spec}->{target}", *[v for _, v in fs])


# ----------------------------------------------------------------------------- sampling


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Private-PGM samples with NumPy's global generator: seed it, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass
class MarginalSynthesizer:
    """A fitted graphical model that samples encoded rows (the pipeline's Synthesizer
    interface: ``sample(n, seed=)`` → x (n, D) float32, y (n,) int64)."""

    model: Any
    discretiser: Discretiser
    mappings: dict[str, list[int] | None] = field(default_factory=dict)
    method: str = "round"  # Private-PGM: randomized rounding of the model's counts

    def sample(self, n: int, *, seed: int, batch_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
        del batch_size
        names = self.discretiser.names
        with _numpy_seed(seed):
            table = self.model.synthetic_data(rows=int(n), method=self.method)
        cols = table.to_dict()
        codes = np.stack([np.asarray(cols[a], dtype=np.int64) for a in names], axis=1)
        codes = self.decompress(codes, np.random.default_rng([seed, 1]))
        return self.discretiser.decode(codes)

    def decompress(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Merged levels back to original ones, uniformly among the merged (MST's rule)."""
        out = codes.copy()
        for j, a in enumerate(self.discretiser.names):
            m = self.mappings.get(a)
            if m is None:
                continue
            m = np.asarray(m, dtype=np.int64)
            groups = [np.flatnonzero(m == k) for k in range(int(m.max()) + 1)]
            col = codes[:, j]
            new = np.empty_like(col)
            for k, members in enumerate(groups):
                rows = np.flatnonzero(col == k)
                new[rows] = (
                    members[rng.integers(0, len(members), size=len(rows))] if len(members) else 0
                )
            out[:, j] = new
        return out


# ----------------------------------------------------------------------------- the method


class MarginalMethod(Method):
    """One-shot select-measure-generate method: ``release`` = every noisy marginal (the
    mechanism, selection included), ``train`` = Private-PGM estimation from them + sampler
    (post-processing). Subclasses implement :meth:`mechanism` and :meth:`size_guard`."""

    kinds = frozenset({"tabular"})
    one_shot = True
    version: ClassVar[str] = ""

    def __init__(
        self,
        *,
        bins: int = 32,
        steps: int = 3000,
        max_model_size: float = 80.0,
        preset_selection: str = "authors",  # provenance label for dpsynth-report; unused here
    ) -> None:
        try:
            ok = int(bins) == bins and int(bins) >= 2
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"method.bins: got {bins!r}; the number of public bins per numeric column must "
                "be an integer ≥ 2 (e.g. 32)."
            )
        if int(steps) < 1:
            raise ConfigError(f"method.steps: got {steps}; must be a positive integer.")
        if not float(max_model_size) > 0:
            raise ConfigError(
                f"method.max_model_size: got {max_model_size}; the model-size budget (MB) must "
                "be > 0 (the AIM paper's default: 80)."
            )
        self.bins, self.steps, self.max_model_size = int(bins), int(steps), float(max_model_size)
        self.diagnostics = {}

    # ------------------------------------------------------------------ checks

    def check(
        self,
        spec: DataSpec,
        dataset_options: dict[str, Any] | None = None,
        n_train: int | None = None,
    ) -> None:
        super().check(spec, dataset_options, n_train)  # images: refused here
        require_mbi(self.name)
        if not spec.columns:
            raise ConfigError(f"dataset={spec.name}: a table without feature columns.")
        # Public upper bounds of the domain (integer columns may get fewer levels).
        sizes = {c.name: (c.width if c.kind == "categorical" else self.bins) for c in spec.columns}
        sizes[LABEL] = spec.num_classes
        kinds = {c.name: c.kind for c in spec.columns}
        self.size_guard(sizes, kinds)

    def size_guard(self, sizes: dict[str, int], kinds: dict[str, str]) -> None:
        raise NotImplementedError

    def _too_big(self, column: str, kind: str, size: int, what: str, mb: float) -> ConfigError:
        how = (
            f"it has {size} bins: lower method.bins (now {self.bins})"
            if kind == "numeric"
            else f"it has {size} categories: merge rare categories in dataset.schema"
        )
        return ConfigError(
            f"method={self.name}: column {column!r} is too large for the model-size budget: "
            f"{what} takes {mb:.1f} MB > method.max_model_size = {self.max_model_size:g} MB; "
            f"{how}, or raise method.max_model_size."
        )

    # ------------------------------------------------------------------ mechanism

    def public_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def mechanism(
        self, codes: np.ndarray, disc: Discretiser, ledger: Ledgered, n: int | None
    ) -> tuple[list[Measurement], dict[str, Any]]:
        """Select and measure; returns the measurements and public facts for ``train``."""
        raise NotImplementedError

    def release(self, data: Dataset, privacy: PrivacySpec, ctx: RunContext) -> Release:
        """Privacy: every selection and measurement is a Gaussian release in one budget (see
        the module docstring), composed with the load-time releases by dp-accounting."""
        require_mbi(self.name)
        disc = Discretiser.for_data(data, self.bins)
        public = {
            "method": self.name,
            "version": self.version,
            **self.public_params(),
            "levels": disc.levels,
            "integer": disc.integer,
        }

        def build() -> Release:
            t0 = time.perf_counter()
            ledger = Ledgered(data, privacy)
            n = data.n_train
            codes = disc.codes(data.train_x.reshape(n, -1), data.train_y)
            ms, extra = self.mechanism(
                codes, disc, ledger, n if privacy.neighbours == "replace_one" else None
            )
            stats, records = measurement_records(ms)
            pub = {**public, **extra, "measurements": records}
            if privacy.neighbours == "replace_one":
                pub["n"] = n  # public under replace-one
            pub["release_seconds"] = time.perf_counter() - t0
            return Release(stats, pub, ledger.budget.ledger())

        parts = {
            **public,
            "release_version": MARGINAL_RELEASE_VERSION,
            "dataset": ctx.dataset_id,
            "data": fingerprint(data.train_x, data.train_y),
            "load_spends": [vars(s) for s in getattr(data, "spends", [])],
            "privacy": vars(privacy),
            "seed": ctx.seed,
        }
        return run_release(ctx, parts, build)

    # ------------------------------------------------------------------ post-processing

    def train(self, release: Release, spec: DataSpec, ctx: RunContext) -> MarginalSynthesizer:
        """Post-processing: Private-PGM fitted to the released marginals, then a sampler."""
        pub = release.public
        disc = Discretiser(spec, pub["levels"], pub["integer"])
        mappings = {a: m for a, m in (pub.get("mappings") or {}).items()}
        sizes = compressed_sizes(disc.names, disc.sizes, mappings)
        ms = measurements_from(release)
        model = estimate(
            disc.names, sizes, ms, total=pub.get("n"), steps=self.steps, mappings=mappings
        )
        cliques = [tuple(c) for c in model.cliques]
        self.diagnostics = {
            "marginals/measurements": float(len(ms)),
            "marginals/model_size_mb": model_size_mb(
                dict(zip(disc.names, sizes, strict=True)), cliques
            ),
        }
        if "rounds" in pub:
            self.diagnostics["marginals/rounds"] = float(pub["rounds"])
        return MarginalSynthesizer(model, disc, mappings)


def all_cliques(names: Sequence[str], degrees: Sequence[int]) -> list[tuple[str, ...]]:
    """Every clique of the given sizes over ``names`` (in ``names`` order)."""
    out: list[tuple[str, ...]] = []
    for k in sorted(set(int(d) for d in degrees)):
        out.extend(itertools.combinations(names, k))
    return out
