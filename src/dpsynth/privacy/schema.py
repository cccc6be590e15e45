"""DP mechanisms that infer a table's schema: column kinds, numeric bounds, category sets.

A tabular encoder needs, per column, a kind (numeric or categorical), public bounds (numeric)
or a category set (categorical), and the label set. Read off the private file they leak: a
bound is a record's value, a category held by one record reveals that record. When they are
not declared as public knowledge, these mechanisms estimate them under the run's (ε, δ), as
Gaussian releases that take a fixed ``share`` of the run's budget (:class:`~dpsynth.privacy.
release.Budget`) and compose with the run's other releases in its ledger.

Mechanisms (each a :func:`~dpsynth.privacy.release.gaussian_release`; one record lies in
exactly one cell of each histogram, so each histogram's L2 sensitivity is √2 under
``replace_one`` (the record leaves one cell and enters another) and 1 under ``add_remove``;
k histograms released together have joint normalised sensitivity √k, the default of
``gaussian_release``):

* **kinds** (:func:`release_kinds`) — per column, the 3-cell histogram (integer-valued,
  other numeric, non-numeric cells). Post-processing: numeric iff the noisy numeric cells
  outnumber the rest; integer iff the noisy fractional count is within noise of 0.
* **numeric bounds** (:func:`release_values`, :func:`quantile_bounds`) — per column, the
  histogram over a public, data-independent grid (:class:`SignedLogGrid` by default: 8 bins
  per decade for |x| in [1e-3, 1e9], both signs, values beyond clamped into the end bins, so
  every parsable value lies in exactly one bin; unparsable cells in none). Post-processing:
  bins below z noise std are zeroed, z chosen so that a pure-noise grid keeps a bin with
  probability ≤ 1e-4 (4.9 on the default grid), and the bounds are the edges of the bins
  holding the low / high quantiles (default 1% / 99%) of the remaining mass.
* **category and label sets** (:func:`release_values`) — Gaussian partition selection
  (Korolova et al. WWW 2009; Wilson et al., "Differentially private SQL with bounded user
  contribution", PoPETs 2020; Desfontaines et al., "Differentially private partition
  selection", PoPETs 2022): noisy counts of the *observed* values, and a value is released
  iff its noisy count reaches τ = 1 + σ·Φ⁻¹(1 − δ_key). The candidate set is data-dependent:
  a value held by a single record exists in D and not in its neighbour D'; it is released
  with probability P(1 + N(0, σ²) ≥ τ) = δ_key. Each record holds one value per column, so a
  neighbour makes at most one such value per column appear on one side; on the values both
  sides share, the counts move like the full histogram's (√2 / 1), which the Gaussian
  accounting covers. The mechanism is therefore the Gaussian release's (ε, δ_G) plus
  δ_sel = (number of selected columns) × δ_key, by a union bound over the bad events, for the
  whole adaptive composition of the run.

δ split: a run whose schema may need partition selection reserves
``δ_sel = delta_fraction × δ`` up front (a public decision: it depends on which parts of the
schema were declared, not on the data) and spreads it evenly over the columns that may be
selected; *all* Gaussian releases of the run must then be accounted at δ − δ_sel (the
schema's own budget is calibrated there). :func:`plan_delta` computes the split.

Nothing here prints or returns an exact count; callers get noisy, thresholded summaries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtri

from dpsynth.errors import ConfigError
from dpsynth.privacy.release import Budget, Statistic, gaussian_release

#: Name of the catch-all category appended to every DP-inferred category set: values that
#: were not released (rare ones) and values unseen in the private split map to it.
OTHER = "__other__"
#: Noisy histogram bins below a threshold are treated as empty when reading quantiles off the
#: noisy CDF. The threshold is z noise standard deviations with P(N(0, 1) > z) =
#: FALSE_BINS_PER_HISTOGRAM / bins (a union bound over the grid), and never below
#: MIN_BIN_THRESHOLD_SIGMAS: one kept pure-noise bin far out on the grid can hold more than the
#: 1% of mass the low quantile reads, and would set a bound at, e.g., −23,714 for a column in
#: [1.5, 2.1]. A fixed 4σ let that happen in ~0.6% of releases on the default 194-bin grid.
FALSE_BINS_PER_HISTOGRAM = 1e-4
MIN_BIN_THRESHOLD_SIGMAS = 4.0
_INT_RE = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class SignedLogGrid:
    """Public histogram grid: 0, ±``min_abs`` · 10^(j / ``per_decade``) up to ±``max_abs``.

    Data-independent, so bin membership is the only thing the data decide. Values beyond
    ±``max_abs`` fall in the end bins, values in (−min_abs, min_abs) in the two bins at 0.
    """

    min_abs: float = 1e-3
    max_abs: float = 1e9
    per_decade: int = 8

    def edges(self) -> np.ndarray:
        steps = int(round(math.log10(self.max_abs / self.min_abs) * self.per_decade))
        pos = self.min_abs * 10.0 ** (np.arange(steps + 1) / self.per_decade)
        return np.concatenate([-pos[::-1], [0.0], pos])


@dataclass(frozen=True)
class LinearGrid:
    """Public histogram grid: ``bins`` equal bins over [``low``, ``high``] (values beyond are
    clamped into the end bins)."""

    low: float
    high: float
    bins: int = 100

    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)


Grid = SignedLogGrid | LinearGrid


def parse_grid(value: object, key: str) -> Grid:
    """A grid from config: ``{min_abs, max_abs, per_decade}`` (signed log) or
    ``{low, high, bins}`` (linear)."""
    if isinstance(value, SignedLogGrid | LinearGrid):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{key}={value!r} is invalid: use {{min_abs: 1.0e-3, max_abs: 1.0e9, per_decade: 8}}"
            " (signed log bins) or {low: 0, high: 100, bins: 100} (linear bins)."
        )
    keys = set(value)

    def num(k: str, positive: bool = False) -> float:
        v = value[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{key}.{k}={v!r} is invalid: it must be a finite number.")
        if positive and v <= 0:
            raise ConfigError(f"{key}.{k}={v!r} is invalid: it must be > 0.")
        return float(v)

    def count(k: str, default: int) -> int:
        v = value.get(k, default)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100_000:
            raise ConfigError(f"{key}.{k}={v!r} is invalid: it must be an integer in 1..100000.")
        return int(v)

    if keys <= {"min_abs", "max_abs", "per_decade"}:
        grid = SignedLogGrid(
            num("min_abs", True) if "min_abs" in keys else 1e-3,
            num("max_abs", True) if "max_abs" in keys else 1e9,
            count("per_decade", 8),
        )
        if grid.max_abs <= grid.min_abs or len(grid.edges()) > 200_001:
            raise ConfigError(
                f"{key}={dict(value)!r} is invalid: it needs 0 < min_abs < max_abs and at most "
                "100000 bins per sign."
            )
        return grid
    if keys <= {"low", "high", "bins"} and {"low", "high"} <= keys:
        grid2 = LinearGrid(num("low"), num("high"), count("bins", 100))
        if grid2.high <= grid2.low:
            raise ConfigError(f"{key}={dict(value)!r} is invalid: it needs low < high.")
        return grid2
    raise ConfigError(
        f"{key}={dict(value)!r} is invalid: use {{min_abs, max_abs, per_decade}} (signed log "
        "bins) or {low, high, bins} (linear bins)."
    )


@dataclass(frozen=True)
class DPSchemaOptions:
    """Public settings of the DP schema mechanisms (``dataset.dp_schema``).

    Attributes:
        quantiles: the (low, high) quantiles read off a numeric column's noisy histogram as
            its bounds (values outside are clipped).
        delta_fraction: share of the run's δ reserved for partition selection, when some
            category or label set is inferred.
        kinds_fraction: share of ``schema_share`` spent on column kinds / integer flags, when
            some are inferred (the rest goes to the bounds and category sets).
        grid: default public grid of the numeric histograms.
    """

    quantiles: tuple[float, float] = (0.01, 0.99)
    delta_fraction: float = 0.1
    kinds_fraction: float = 0.2
    grid: Grid = field(default_factory=SignedLogGrid)

    @staticmethod
    def parse(value: object, key: str = "dataset.dp_schema") -> DPSchemaOptions:
        if value is None:
            return DPSchemaOptions()
        if isinstance(value, DPSchemaOptions):
            return value
        allowed = {"quantiles", "delta_fraction", "kinds_fraction", "grid"}
        if not isinstance(value, Mapping) or not set(value) <= allowed:
            raise ConfigError(
                f"{key}={value!r} is invalid: it must be a mapping with keys among "
                f"{', '.join(sorted(allowed))}."
            )
        q = value.get("quantiles", (0.01, 0.99))
        if (
            isinstance(q, str)
            or not isinstance(q, Sequence)
            or len(q) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in q)
            or not 0.0 <= q[0] < q[1] <= 1.0
        ):
            raise ConfigError(
                f"{key}.quantiles={q!r} is invalid: it must be [low, high] with "
                "0 ≤ low < high ≤ 1, e.g. [0.01, 0.99]."
            )
        fractions = {}
        for k, default in (("delta_fraction", 0.1), ("kinds_fraction", 0.2)):
            v = value.get(k, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < v < 1.0:
                raise ConfigError(f"{key}.{k}={v!r} is invalid: it must lie strictly in (0, 1).")
            fractions[k] = float(v)
        grid = parse_grid(value["grid"], f"{key}.grid") if "grid" in value else SignedLogGrid()
        return DPSchemaOptions((float(q[0]), float(q[1])), grid=grid, **fractions)


def count_sensitivity(neighbours: str) -> float:
    """L2 sensitivity of a histogram in which each record lies in at most one cell."""
    return math.sqrt(2.0) if neighbours == "replace_one" else 1.0


def selection_threshold(sigma: float, delta_key: float) -> float:
    """τ such that a value held by one record (count 1) is released with probability
    P(1 + N(0, σ²) ≥ τ) = ``delta_key``."""
    if not 0.0 < delta_key < 1.0:
        raise ConfigError(f"partition selection: δ per key must lie in (0, 1), got {delta_key}.")
    return 1.0 + sigma * float(-ndtri(delta_key))


@dataclass(frozen=True)
class DeltaPlan:
    """How a run's δ is split between partition selection and its Gaussian releases."""

    selection: float  # δ_sel: reserved for the thresholds (0 when nothing is selected)
    per_key: float  # δ_key = δ_sel / number of columns that may be selected
    gaussian: float  # δ − δ_sel: at which every Gaussian release of the run is accounted


def plan_delta(delta: float, selected_columns: int, fraction: float) -> DeltaPlan:
    """The δ split for ``selected_columns`` columns (public) that may need partition selection."""
    if selected_columns <= 0:
        return DeltaPlan(0.0, 0.0, delta)
    sel = fraction * delta
    return DeltaPlan(sel, sel / selected_columns, delta - sel)


# ----------------------------------------------------------------------------- exact statistics
# (private: only the release functions below call these, and only their noisy outputs leave)


def parse_numbers(cells: Sequence[object]) -> np.ndarray:
    """Cells → float64; unparsable or empty cells are NaN (±inf are kept)."""
    return np.asarray(pd.to_numeric(pd.Series(list(cells), dtype=object), errors="coerce"), float)


def kind_histogram(cells: Sequence[object]) -> np.ndarray:
    """[integer-valued, other numeric, non-numeric] counts of a column's cells."""
    values = parse_numbers(cells)
    numeric = ~np.isnan(values)
    integer = np.array([bool(_INT_RE.match(str(c).strip())) for c in cells], dtype=bool)
    integer &= numeric
    return np.array([integer.sum(), (numeric & ~integer).sum(), (~numeric).sum()], dtype=np.float64)


def bin_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` (NaN skipped) in the bins of ``edges``; values beyond the grid
    are clamped into the end bins, so each number lies in exactly one bin."""
    v = values[~np.isnan(values)]
    idx = np.searchsorted(edges, np.clip(v, edges[0], edges[-1]), side="right") - 1
    idx = np.clip(idx, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)


def value_counts(cells: Sequence[object]) -> tuple[list[str], np.ndarray]:
    """Distinct cell values (as stripped strings, sorted) and their counts."""
    series = pd.Series([str(c).strip() for c in cells], dtype=object)
    vc = series.value_counts(sort=False)
    keys = sorted(str(k) for k in vc.index)
    return keys, np.array([float(vc[k]) for k in keys], dtype=np.float64)


# ----------------------------------------------------------------------------- mechanisms


@dataclass(frozen=True)
class KindEstimate:
    """Post-processed kind of one column and the noisy histogram it came from."""

    numeric: bool
    integer: bool
    noisy: tuple[float, float, float]


def release_kinds(
    cells: Mapping[str, Sequence[object]],
    *,
    budget: Budget,
    share: float,
    rng: np.random.Generator | None = None,
) -> dict[str, KindEstimate]:
    """DP kind (numeric or not) and integer flag of each column of ``cells``.

    Privacy: one Gaussian release of the per-column kind histograms (each cell of a column in
    exactly one of 3 bins: sensitivity √2 under replace-one, 1 under add/remove), taking
    ``share`` of ``budget``; the decisions are post-processing.
    """
    delta = count_sensitivity(budget.privacy.neighbours)
    names = list(cells)
    stats = [Statistic(f"kinds:{c}", kind_histogram(cells[c]), delta) for c in names]
    rel = gaussian_release(stats, budget=budget, share=share, rng=rng)
    parts = budget.spends[-1].parts or {stats[0].name: budget.spends[-1].noise_std}
    out = {}
    for c, s in zip(names, stats, strict=True):
        n_int, n_frac, n_non = (float(v) for v in rel[s.name])
        sigma = parts[s.name]
        numeric = n_int + n_frac >= n_non
        integer = n_frac <= 0.01 * max(n_int + n_frac, 0.0) + 3.0 * sigma
        out[c] = KindEstimate(numeric, integer, (n_int, n_frac, n_non))
    return out


@dataclass
class ValuesRelease:
    """Noisy, thresholded summaries of a table's columns (all post-processing may read)."""

    histograms: dict[str, np.ndarray]  # numeric column → noisy counts over its grid
    bin_sigma: dict[str, float]  # numeric column → noise std of its counts
    released: dict[str, dict[str, float]]  # categorical column → {released value: noisy count}


def release_values(
    numeric: Mapping[str, tuple[np.ndarray, np.ndarray]],
    categorical: Mapping[str, Sequence[object]],
    *,
    budget: Budget,
    share: float,
    delta_key: float,
    rng: np.random.Generator | None = None,
) -> ValuesRelease:
    """DP histograms of numeric columns and partition-selected value sets of categorical ones.

    Args:
        numeric: column → (its parsed values, NaN for unparsable cells; public grid edges).
        categorical: column → its cells (label column included).
        budget: the run's budget, calibrated at δ − δ_sel (see :func:`plan_delta`).
        share: the share of ``budget`` this release takes.
        delta_key: δ_key of each categorical column's threshold.

    Privacy: one Gaussian release of all histograms (each √2 / 1, joint √k); a categorical
    value is kept iff its noisy count ≥ :func:`selection_threshold` (δ_key each; the noisy
    counts of the other candidates are dropped here and never stored or shown).
    """
    delta = count_sensitivity(budget.privacy.neighbours)
    stats: list[Statistic] = []
    keys: dict[str, list[str]] = {}
    for c, (values, edges) in numeric.items():
        stats.append(Statistic(f"bins:{c}", bin_histogram(values, edges), delta))
    for c, cells in categorical.items():
        keys[c], counts = value_counts(cells)
        if not keys[c]:  # no cells: nothing to select (an empty vector cannot be released)
            keys[c], counts = [OTHER], np.zeros(1)
        stats.append(Statistic(f"counts:{c}", counts, delta))
    if not stats:
        return ValuesRelease({}, {}, {})
    rel = gaussian_release(stats, budget=budget, share=share, rng=rng)
    spend = budget.spends[-1]
    parts = spend.parts or {stats[0].name: spend.noise_std}
    hist = {c: rel[f"bins:{c}"].astype(np.float64) for c in numeric}
    sigma = {c: parts[f"bins:{c}"] for c in numeric}
    released: dict[str, dict[str, float]] = {}
    for c in categorical:
        noisy = rel[f"counts:{c}"].astype(np.float64)
        tau = selection_threshold(parts[f"counts:{c}"], delta_key)
        released[c] = {
            k: float(v) for k, v in zip(keys[c], noisy, strict=True) if v >= tau and k != OTHER
        }
    rel.statistics.clear()  # the unthresholded counts die here
    return ValuesRelease(hist, sigma, released)


def bin_threshold_sigmas(num_bins: int) -> float:
    """z such that a histogram of ``num_bins`` pure-noise bins keeps any bin above z noise std
    with probability ≤ :data:`FALSE_BINS_PER_HISTOGRAM` (union bound), at least
    :data:`MIN_BIN_THRESHOLD_SIGMAS`. Public: a function of the grid alone."""
    z = float(-ndtri(FALSE_BINS_PER_HISTOGRAM / max(int(num_bins), 1)))
    return max(MIN_BIN_THRESHOLD_SIGMAS, z)


def quantile_bounds(
    noisy: np.ndarray, edges: np.ndarray, sigma: float, quantiles: tuple[float, float]
) -> tuple[float, float]:
    """Bounds (post-processing): the grid edges around the ``quantiles`` of the noisy mass.

    Bins below ``bin_threshold_sigmas(len(noisy))`` noise std count as empty; if none is left,
    the bounds are the edges of the bin with the largest noisy count.
    """
    kept = np.where(noisy >= bin_threshold_sigmas(len(noisy)) * sigma, noisy, 0.0)
    total = float(kept.sum())
    if total <= 0.0:
        b = int(np.argmax(noisy))
        return float(edges[b]), float(edges[b + 1])
    cdf = np.cumsum(kept) / total
    last = len(kept) - 1
    lo = min(int(np.searchsorted(cdf, quantiles[0], side="left")), last)
    hi = min(int(np.searchsorted(cdf, quantiles[1] - 1e-12, side="left")), last)
    if quantiles[0] <= 0.0:  # the lowest non-empty bin
        lo = int(np.argmax(kept > 0))
    if quantiles[1] >= 1.0:  # the highest non-empty bin
        hi = last - int(np.argmax(kept[::-1] > 0))
    return float(edges[lo]), float(edges[max(hi, lo) + 1])
