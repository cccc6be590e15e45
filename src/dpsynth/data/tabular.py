"""Tabular data: reading delimited files, the public schema, and the encoder.

Shared by :mod:`dpsynth.data.adult` and :mod:`dpsynth.data.csv`. Encoding follows the usual
practice of DP tabular generators (e.g. DP-MERF, PEARL): numeric columns are min-max scaled
to [-1, 1] with bounds ``(low, high)``, categorical columns are one-hot encoded, and the label
column is kept apart as ``y``.

Privacy: the categories, bounds and label set are part of what a generator releases. Each
part of the schema is either declared as public knowledge (``dataset.schema``) or inferred
from the private training file, as ``schema_source`` says:

* ``declared`` — everything must be declared; nothing is read from the data, nothing spent.
* ``dp`` (default) — the undeclared parts are estimated by the DP mechanisms of
  :mod:`dpsynth.privacy.schema`, paid from the run's budget (``schema_share`` of it), cached
  under ``<cache_dir>/releases`` so a re-run spends nothing; the Gaussian releases are listed
  in ``Dataset.spends`` for the run's ledger.
* ``nonprivate`` — read off the private file (exact min/max, every value): only with
  ``allow_nonprivate_schema: true``, and the run is flagged ``not_dp``.

No value of the private data makes loading fail (a neighbouring dataset must not be told apart
by an abort): numbers outside the bounds are clipped, missing or unparsable numbers take the
column's ``fill`` (default: its lower bound), unknown categories map to the column's ``other``
category (default: the last one; DP-inferred sets end with the catch-all ``__other__``), and
unknown labels map to the target's ``other`` class (declared, else the last class; for a
DP-inferred label set the class with the largest noisy count). Counts of such cells are never
reported. Classes without training records are kept. What still fails is what depends on
public inputs only (a missing file, a bad config, a column named in the config but absent from
the header) or makes a file unreadable as a table (bad encoding, a line with the wrong number
of fields: not a record of the data domain).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from dpsynth.data.base import Column, Dataset, DataSpec
from dpsynth.errors import ConfigError, DataError, TrainingError
from dpsynth.privacy.accounting import check_accountant, check_neighbours
from dpsynth.privacy.release import Budget, PrivacySpec, Release, ReleaseCache
from dpsynth.privacy.schema import (
    OTHER,
    DPSchemaOptions,
    Grid,
    parse_grid,
    parse_numbers,
    plan_delta,
    quantile_bounds,
    release_kinds,
    release_values,
)

_INT_RE = re.compile(r"^[+-]?\d+$")
_SCHEMA_KEYS = {"kind", "categories", "low", "high", "integer", "other", "fill", "grid"}
_CATEGORICAL_KEYS = {"categories", "other"}
_NUMERIC_KEYS = {"low", "high", "integer", "fill", "grid"}
SCHEMA_SOURCES = ("declared", "dp", "nonprivate")
#: Bumped whenever what the schema release contains, or how it is computed, changes.
SCHEMA_RELEASE_VERSION = 1
SchemaSource = Literal["declared", "dp", "nonprivate"]


class SchemaWarning(UserWarning):
    """The table schema was read off the private data, outside the DP guarantee."""


@dataclass(frozen=True)
class ColumnSchema:
    """Complete public description of one raw column.

    Attributes:
        kind: ``numeric`` or ``categorical``.
        categories: the allowed values of a categorical column, as strings, in encoded order.
        low: public lower bound of a numeric column (smaller values are clipped).
        high: public upper bound of a numeric column (larger values are clipped).
        integer: the numeric column holds integers; decoded values are rounded.
        other: the category that unknown values map to (None: the last category).
        fill: the value a missing or unparsable number takes (None: ``low``).
    """

    kind: Literal["numeric", "categorical"]
    categories: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 1.0
    integer: bool = False
    other: str | None = None
    fill: float | None = None

    @staticmethod
    def numeric(
        low: float, high: float, integer: bool = False, fill: float | None = None
    ) -> ColumnSchema:
        return ColumnSchema(
            "numeric",
            low=float(low),
            high=float(high),
            integer=integer,
            fill=None if fill is None else float(fill),
        )

    @staticmethod
    def categorical(categories: Sequence[str], other: str | None = None) -> ColumnSchema:
        return ColumnSchema(
            "categorical",
            categories=tuple(str(c) for c in categories),
            other=None if other is None else str(other),
        )

    @property
    def other_index(self) -> int:
        """Index of the category unknown values map to."""
        if self.other is None:
            return len(self.categories) - 1
        return self.categories.index(self.other)

    @property
    def fill_value(self) -> float:
        """What a missing or unparsable number becomes (then clipped to the bounds)."""
        return self.low if self.fill is None else self.fill

    def as_dict(self) -> dict[str, Any]:
        """The form accepted by :func:`parse_schema` (e.g. for ``dataset.schema``)."""
        if self.kind == "categorical":
            out: dict[str, Any] = {"categories": list(self.categories)}
            if self.other is not None:
                out["other"] = self.other
            return out
        low = int(self.low) if self.integer else self.low
        high = int(self.high) if self.integer else self.high
        out = {"low": low, "high": high, "integer": self.integer}
        if self.fill is not None:
            out["fill"] = self.fill
        return out

    def to_json(self) -> dict[str, Any]:
        """Every field, for the release cache."""
        d = asdict(self)
        d["categories"] = list(self.categories)
        return d

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> ColumnSchema:
        return ColumnSchema(**{**d, "categories": tuple(d.get("categories", ()))})


@dataclass(frozen=True)
class ColumnDecl:
    """What the config declares about one column; ``None`` parts are to be inferred.

    A numeric column is complete with ``low`` and ``high`` (``integer`` then defaults to
    false), a categorical one with ``categories``.
    """

    kind: Literal["numeric", "categorical"] | None = None
    categories: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    integer: bool | None = None
    other: str | None = None
    fill: float | None = None
    grid: Grid | None = None

    @staticmethod
    def of(col: ColumnSchema | ColumnDecl) -> ColumnDecl:
        if isinstance(col, ColumnDecl):
            return col
        if col.kind == "categorical":
            return ColumnDecl("categorical", col.categories, other=col.other)
        return ColumnDecl("numeric", None, col.low, col.high, col.integer, fill=col.fill)

    def overridden(self, other: ColumnDecl) -> ColumnDecl:
        """This declaration with the parts ``other`` declares replaced (all of it if the
        kinds differ)."""
        if other.kind is not None and self.kind is not None and other.kind != self.kind:
            return other
        parts = {k: v for k, v in asdict(other).items() if v is not None}
        if other.grid is not None:
            parts["grid"] = other.grid
        return replace(self, **parts)

    def complete(self) -> ColumnSchema | None:
        """The declared column, or None if some part is left to inference."""
        if self.kind == "categorical" and self.categories is not None:
            return ColumnSchema.categorical(self.categories, self.other)
        if self.kind == "numeric" and self.low is not None and self.high is not None:
            return ColumnSchema.numeric(self.low, self.high, bool(self.integer), self.fill)
        return None

    def missing(self) -> list[str]:
        """The parts ``schema_source: declared`` would need."""
        if self.kind is None:
            return ["categories (or low and high)"]
        if self.kind == "categorical":
            return [] if self.categories is not None else ["categories"]
        return [k for k in ("low", "high") if getattr(self, k) is None]

    def key(self) -> dict[str, Any]:
        """JSON-able form, for cache keys."""
        d = asdict(self)
        d["grid"] = None if self.grid is None else {type(self.grid).__name__: asdict(self.grid)}
        return d


def parse_schema(
    schema: Mapping[str, Any] | None, key: str = "dataset.schema"
) -> dict[str, ColumnDecl]:
    """Turn a user schema (e.g. from YAML) into :class:`ColumnDecl` objects.

    Each entry is ``{categories: [...], other: <one of them>}`` for a categorical column or
    ``{low: ..., high: ..., integer: true|false, fill: ..., grid: {...}}`` for a numeric one
    (``kind`` optional); parts left out are inferred (``schema_source``).

    Raises:
        ConfigError: naming the key and the entry that is malformed.
    """
    if schema is None:
        return {}
    if isinstance(schema, ColumnSchema | ColumnDecl) or not isinstance(schema, Mapping):
        raise ConfigError(
            f"{key}={schema!r} is invalid: it must map column names to "
            "{categories: [...]} or {low: ..., high: ..., integer: true|false}."
        )
    out: dict[str, ColumnDecl] = {}
    for name, entry in schema.items():
        where = f"{key}.{name}"
        if isinstance(entry, ColumnSchema | ColumnDecl):
            out[str(name)] = _checked(ColumnDecl.of(entry), where)
            continue
        if not isinstance(entry, Mapping) or not set(entry) <= _SCHEMA_KEYS:
            raise ConfigError(
                f"{where}={entry!r} is invalid: it must be {{categories: [...]}} or "
                f"{{low: ..., high: ..., integer: true|false}} (allowed keys: "
                f"{', '.join(sorted(_SCHEMA_KEYS))})."
            )
        keys = set(entry)
        kind = entry.get("kind")
        if kind is None and keys & _CATEGORICAL_KEYS:
            kind = "categorical"
        elif kind is None and keys & _NUMERIC_KEYS:
            kind = "numeric"
        if kind not in (None, "numeric", "categorical"):
            raise ConfigError(
                f"{where}.kind={kind!r} is invalid: allowed kinds are numeric and categorical."
            )
        wrong = keys & (_NUMERIC_KEYS if kind == "categorical" else _CATEGORICAL_KEYS)
        if kind is not None and wrong:
            raise ConfigError(
                f"{where}={dict(entry)!r} is invalid: {', '.join(sorted(wrong))} do not apply "
                f"to a {kind} column."
            )
        if kind == "categorical":
            cats = entry.get("categories")
            if cats is not None and (
                isinstance(cats, str | bytes) or not isinstance(cats, Sequence)
            ):
                raise ConfigError(
                    f"{where}.categories={cats!r} is invalid: it must be a list of the "
                    "column's values, e.g. [red, green, blue]."
                )
            other = entry.get("other")
            decl = ColumnDecl(
                "categorical",
                None if cats is None else tuple(str(c) for c in cats),
                other=None if other is None else str(other),
            )
        else:
            nums: dict[str, float | None] = {}
            for k in ("low", "high", "fill"):
                v = entry.get(k)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise ConfigError(f"{where}.{k}={v!r} is invalid: it must be a number.")
                nums[k] = None if v is None else float(v)
            integer = entry.get("integer")
            if integer is not None and not isinstance(integer, bool):
                raise ConfigError(f"{where}.integer={integer!r} is invalid: use true or false.")
            grid = parse_grid(entry["grid"], f"{where}.grid") if "grid" in entry else None
            decl = ColumnDecl(
                kind, None, nums["low"], nums["high"], integer, None, nums["fill"], grid
            )
        out[str(name)] = _checked(decl, where)
    return out


def _checked(col: ColumnDecl, where: str) -> ColumnDecl:
    if col.kind == "categorical":
        cats = col.categories
        if cats is not None and (not cats or len(set(cats)) != len(cats)):
            raise ConfigError(
                f"{where}.categories={list(cats)!r} is invalid: it must list at least one value, "
                "each once."
            )
        if col.other is not None and (cats is None or col.other not in cats):
            raise ConfigError(
                f"{where}.other={col.other!r} is invalid: it must be one of the declared "
                "categories (an inferred category set has its own catch-all, "
                f"{OTHER!r})."
            )
        return col
    for k in ("low", "high", "fill"):
        v = getattr(col, k)
        if v is not None and not math.isfinite(v):
            raise ConfigError(f"{where}.{k}={v!r} is invalid: it must be finite.")
    if col.low is not None and col.high is not None and not col.low < col.high:
        raise ConfigError(
            f"{where} bounds low={col.low!r}, high={col.high!r} are invalid: they must be "
            "finite with low < high."
        )
    return col


@dataclass(frozen=True)
class SchemaSettings:
    """How the undeclared parts of a schema are obtained (see the module docstring).

    Attributes:
        source: ``declared``, ``dp`` or ``nonprivate``.
        allow_nonprivate: the explicit opt-in ``nonprivate`` needs.
        privacy: the run's guarantee (needed by ``dp``).
        share: the share of the run's budget (of 1/m², see
            :func:`~dpsynth.privacy.accounting.share_multiplier`) the schema releases take.
        options: the mechanisms' public settings.
        cache_dir: the run's cache root; the release goes to ``<cache_dir>/releases``
            (None: not cached, every load spends).
        seed: the run's seed (part of the cache key, like a method release's).
    """

    source: SchemaSource = "dp"
    allow_nonprivate: bool = False
    privacy: PrivacySpec | None = None
    share: float = 0.1
    options: DPSchemaOptions = field(default_factory=DPSchemaOptions)
    cache_dir: str | None = None
    seed: int = 0


def schema_settings(
    *,
    schema_source: str = "dp",
    allow_nonprivate_schema: bool = False,
    schema_share: float = 0.1,
    dp_schema: Mapping[str, Any] | DPSchemaOptions | None = None,
    privacy: PrivacySpec | None = None,
    privacy_epsilon: float | None = None,
    privacy_delta: float | None = None,
    privacy_accountant: str = "pld",
    privacy_neighbours: str = "replace_one",
    cache_dir: str | None = None,
    seed: int = 0,
) -> SchemaSettings:
    """Validate a loader's schema and privacy arguments (config keys ``dataset.<name>``).

    Raises:
        ConfigError: naming the key; ``schema_source: nonprivate`` without
            ``allow_nonprivate_schema: true``.
    """
    if schema_source not in SCHEMA_SOURCES:
        raise ConfigError(
            f"dataset.schema_source={schema_source!r} is invalid; allowed: "
            f"{', '.join(SCHEMA_SOURCES)} (declared: all public; dp: undeclared parts "
            "estimated under the run's (ε, δ); nonprivate: read off the private file)."
        )
    if not isinstance(allow_nonprivate_schema, bool):
        raise ConfigError(
            f"dataset.allow_nonprivate_schema={allow_nonprivate_schema!r} is invalid: use "
            "true or false."
        )
    if schema_source == "nonprivate" and not allow_nonprivate_schema:
        raise ConfigError(
            "dataset.schema_source=nonprivate reads the schema (bounds, categories, labels) off "
            "the private file, outside any DP guarantee; it needs the explicit opt-in "
            "dataset.allow_nonprivate_schema=true, and the run is then flagged not_dp. Use "
            "schema_source=dp (default) or declare the schema (dataset.schema) instead."
        )
    if (
        isinstance(schema_share, bool)
        or not isinstance(schema_share, int | float)
        or not 0.0 < schema_share <= 1.0
    ):
        raise ConfigError(
            f"dataset.schema_share={schema_share!r} is invalid: it must be a number in (0, 1], "
            "the share of the run's privacy budget the schema releases take (e.g. 0.1)."
        )
    options = DPSchemaOptions.parse(dp_schema)
    flat = privacy_epsilon is not None or privacy_delta is not None
    if privacy is not None and flat:
        raise ConfigError(
            "dataset: give the privacy settings either as privacy=PrivacySpec(...) or as "
            "privacy_epsilon / privacy_delta / ..., not both."
        )
    if flat:
        for k, v in (("privacy_epsilon", privacy_epsilon), ("privacy_delta", privacy_delta)):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(
                    f"dataset.{k}={v!r} is invalid: it must be a number (the run's privacy."
                    f"{k.removeprefix('privacy_')}, which conf/dataset/*.yaml interpolates)."
                )
        privacy = PrivacySpec(
            float(privacy_epsilon),  # type: ignore[arg-type]
            float(privacy_delta),  # type: ignore[arg-type]
            str(privacy_accountant),
            str(privacy_neighbours),
        )
    if privacy is not None:
        check_accountant(privacy.accountant)
        check_neighbours(privacy.neighbours)
        if not privacy.epsilon > 0 or not 0.0 < privacy.delta < 1.0:
            raise ConfigError(
                f"dataset: privacy (ε={privacy.epsilon}, δ={privacy.delta}) is invalid; the "
                "schema mechanisms need ε > 0 and 0 < δ < 1."
            )
    if cache_dir is not None and not isinstance(cache_dir, str | Path):
        raise ConfigError(f"dataset.cache_dir={cache_dir!r} is invalid: it must be a folder.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"dataset.seed={seed!r} is invalid: it must be an integer ≥ 0.")
    return SchemaSettings(
        schema_source,  # type: ignore[arg-type]
        allow_nonprivate_schema,
        privacy,
        float(schema_share),
        options,
        str(cache_dir) if cache_dir else None,
        int(seed),
    )


def file_fingerprint(path: str) -> str:
    """Content hash of a file, so a changed file never reuses a stale schema release."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class RawTable:
    """A table as read from a file: every cell a string, plus where each row came from.

    Attributes:
        frame: the cells, one column per field, as strings.
        lines: 1-based line number of each row in ``path``, for error messages.
        path: the file.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    path: str


def read_delimited(
    path: str,
    names: Sequence[str] | None = None,
    comment: str | None = None,
    what: str = "CSV",
) -> RawTable:
    """Read a comma-separated file into strings, keeping line numbers.

    Args:
        path: the file.
        names: column names if the file has no header; None reads them from the first line.
        comment: lines starting with this prefix are skipped (Adult's ``|1x3 ...``).
        what: how the file is called in messages (``CSV``, ``Adult``).

    Raises:
        DataError: unreadable file, bad encoding, wrong field count or no records, naming the
            file and line.
    """
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = list(names) if names is not None else None
    lineno = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's BOM
            reader = csv.reader(fh, skipinitialspace=True, strict=False)
            for fields in reader:
                lineno = reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                if comment is not None and fields[0].startswith(comment):
                    continue
                cells = [f.strip() for f in fields]
                if header is None:
                    header = cells
                    _check_header(header, path, lineno, what)
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"{what} file {path}, line {lineno}: {len(cells)} fields, expected "
                        f"{len(header)} ({', '.join(header)}). The file is truncated or "
                        "malformed; fix that line or re-download the file."
                    )
                rows.append(cells)
                lines.append(lineno)
    except FileNotFoundError as exc:
        raise DataError(f"{what} file {path} does not exist.") from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} file {path}, near line {lineno + 1}: not UTF-8 text ({exc.reason}). The file "
            "is corrupted or binary; re-save it as UTF-8 CSV or re-download it."
        ) from exc
    except csv.Error as exc:
        raise DataError(
            f"{what} file {path}, line {lineno + 1}: malformed CSV ({exc}). Fix that line or "
            "re-download the file."
        ) from exc
    except OSError as exc:
        raise DataError(
            f"{what} file {path} cannot be read ({exc}). Check its permissions."
        ) from exc
    if header is None or not rows:
        raise DataError(
            f"{what} file {path} has no records ({lineno} lines read). It is empty or "
            "truncated; re-create or re-download it."
        )
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    return RawTable(frame=frame, lines=np.asarray(lines, dtype=np.int64), path=path)


def _check_header(header: list[str], path: str, lineno: int, what: str) -> None:
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes or any(not h for h in header):
        raise DataError(
            f"{what} file {path}, line {lineno} (header): column names must be non-empty and "
            f"distinct; got {header!r}. Fix the header line."
        )


def _lookup(categories: Sequence[str]) -> dict[Any, int]:
    """Category -> index, also keyed by numeric value so 3, 3.0 and "3" all match "3"."""
    table: dict[Any, int] = {}
    for i, c in enumerate(categories):
        table[c] = i
    for i, c in enumerate(categories):
        try:
            v = float(c)
        except ValueError:
            continue
        if math.isfinite(v):
            table.setdefault(v, i)
    return table


def _decoded_dtype(categories: Sequence[str]) -> str:
    """The dtype pandas would give a column holding these values: int64, float64 or text."""
    if all(_INT_RE.match(c) for c in categories):
        return "int64"
    try:
        [float(c) for c in categories]
    except ValueError:
        return "str"
    return "float64"


def _cast(values: list[str], dtype: str) -> pd.Series:
    if dtype == "int64":
        return pd.Series([int(v) for v in values], dtype="int64")
    if dtype == "float64":
        return pd.Series([float(v) for v in values], dtype="float64")
    return pd.Series(values)  # pandas' default text dtype, as pd.read_csv gives


class TabularEncoder:
    """Encodes tables to float32 rows and decodes (synthetic) rows back to tables.

    Attributes:
        schema: the public schema of the feature columns, in original (= encoded) order.
        columns: the encoded layout, one :class:`Column` per feature.
        target: the label column name.
        class_names: label values; label ``k`` is ``class_names[k]``.
        label_other: the class unknown labels map to (None: the last class).
        column_order: all original column names, target included, in file order.
        schema_source: ``declared`` (every part declared), ``dp`` (some parts estimated by
            DP mechanisms) or ``nonprivate`` (some parts read off the private file).
        inferred_columns: the columns (target included) whose schema was not fully declared.
        schema_delta: the δ the schema's partition selection reserved (0 if none; the run's
            Gaussian releases must be accounted at δ − schema_delta).
        schema_release: public facts about the schema release (cache key, cache hit, δ split).
    """

    def __init__(
        self,
        schema: Mapping[str, ColumnSchema],
        target: str,
        class_names: Sequence[str],
        column_order: Sequence[str] | None = None,
        inferred_columns: Sequence[str] = (),
        schema_source: SchemaSource | None = None,
        label_other: str | None = None,
    ) -> None:
        self.schema: dict[str, ColumnSchema] = dict(schema)
        self.target = target
        self.class_names: tuple[str, ...] = tuple(str(c) for c in class_names)
        if not self.class_names:
            raise ConfigError(f"{target}: the label set is empty; it needs at least one class.")
        self.label_other = None if label_other is None else str(label_other)
        if self.label_other is not None and self.label_other not in self.class_names:
            raise ConfigError(
                f"dataset.schema.{target}.other={label_other!r} is not one of the classes "
                f"{list(self.class_names)!r}."
            )
        self.column_order: tuple[str, ...] = tuple(
            column_order if column_order is not None else [*self.schema, target]
        )
        self.inferred_columns: tuple[str, ...] = tuple(inferred_columns)
        if schema_source is None:
            schema_source = "nonprivate" if inferred_columns else "declared"
        self.schema_source: SchemaSource = schema_source
        self.schema_delta = 0.0
        self.schema_release: dict[str, Any] = {}
        self.columns: tuple[Column, ...] = tuple(
            Column(name, s.kind, s.categories, s.low, s.high) for name, s in self.schema.items()
        )
        self._lookups = {
            n: _lookup(s.categories) for n, s in self.schema.items() if s.kind == "categorical"
        }
        self._label_lookup = _lookup(self.class_names)
        self._label_other_index = (
            len(self.class_names) - 1
            if self.label_other is None
            else self.class_names.index(self.label_other)
        )
        self._dtypes = {
            n: _decoded_dtype(s.categories)
            for n, s in self.schema.items()
            if s.kind == "categorical"
        }
        self._label_dtype = _decoded_dtype(self.class_names)

    @property
    def dim(self) -> int:
        """Width of an encoded row."""
        return sum(c.width for c in self.columns)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.schema)

    def slices(self) -> list[slice]:
        """The slice of an encoded row occupied by each column, in :attr:`columns` order."""
        out, start = [], 0
        for c in self.columns:
            out.append(slice(start, start + c.width))
            start += c.width
        return out

    def schema_dict(self) -> dict[str, dict[str, Any]]:
        """The full schema, target included, in the form ``dataset.schema`` accepts."""
        out = {n: s.as_dict() for n, s in self.schema.items()}
        out[self.target] = ColumnSchema.categorical(self.class_names, self.label_other).as_dict()
        return out

    def encode(
        self, frame: pd.DataFrame, source: str = "DataFrame", lines: Sequence[int] | None = None
    ) -> np.ndarray:
        """Encode the feature columns of ``frame`` (other columns are ignored).

        Never fails on a value: numbers are clipped to their bounds, missing or unparsable
        numbers take the column's fill value, unknown categories its ``other`` category.

        Args:
            frame: a table with at least the feature columns; cells may be strings or numbers.
            source: the file (or object) the table came from, for messages.
            lines: unused (kept for callers that pass line numbers).

        Returns:
            float32 array ``(len(frame), dim)``.

        Raises:
            DataError: a feature column is missing (the table's header, not its values).
        """
        del lines
        missing = [n for n in self.schema if n not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: missing column(s) {', '.join(missing)}; the table has "
                f"{', '.join(map(str, frame.columns))}. It must have every column of the "
                "schema, with the same names."
            )
        out = np.zeros((len(frame), self.dim), dtype=np.float32)
        for (name, s), sl in zip(self.schema.items(), self.slices(), strict=True):
            values = frame[name]
            if s.kind == "numeric":
                v = parse_numbers(values.tolist())
                v = np.clip(np.where(np.isnan(v), s.fill_value, v), s.low, s.high)
                out[:, sl.start] = 2.0 * (v - s.low) / (s.high - s.low) - 1.0
            else:
                idx = _codes(values, self._lookups[name], s.other_index)
                out[np.arange(len(frame)), sl.start + idx] = 1.0
        return out

    def encode_labels(
        self, values: pd.Series, source: str = "DataFrame", lines: Sequence[int] | None = None
    ) -> np.ndarray:
        """Label values -> int64 class indices; unknown labels take the ``other`` class."""
        del source, lines
        return _codes(values, self._label_lookup, self._label_other_index).astype(np.int64)

    def decode(self, x: Any, y: Any = None) -> pd.DataFrame:
        """Decode encoded (e.g. synthetic) rows back to a table.

        Numeric values are clipped to their bounds and rounded for integer columns;
        categorical values are the argmax of their block, so rows need not be exactly one-hot.

        Args:
            x: array-like ``(N, dim)`` of encoded rows.
            y: optional labels ``(N,)`` in ``0..num_classes-1``; adds the target column.

        Returns:
            A DataFrame with the original column names in original order (the target only if
            ``y`` is given) and the dtypes ``pandas.read_csv`` gives such columns.

        Raises:
            ConfigError: wrong shapes or labels out of range.
            TrainingError: non-finite values (a diverged generator).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(
                f"TabularEncoder.decode: rows have shape {x.shape}, expected (N, {self.dim}) "
                "(the encoded width of this dataset)."
            )
        if not np.isfinite(x).all():
            r, c = np.argwhere(~np.isfinite(x))[0]
            raise TrainingError(
                f"TabularEncoder.decode: synthetic row {r} has a non-finite value ({x[r, c]}) "
                f"at encoded position {c}; the generator diverged. Lower the learning rate or "
                "check the run's losses."
            )
        data: dict[str, pd.Series] = {}
        for (name, s), sl in zip(self.schema.items(), self.slices(), strict=True):
            if s.kind == "numeric":
                v = s.low + (np.clip(x[:, sl.start], -1.0, 1.0) + 1.0) / 2.0 * (s.high - s.low)
                if s.integer:
                    lo, hi = math.ceil(s.low), math.floor(s.high)
                    data[name] = pd.Series(np.clip(np.rint(v), lo, hi).astype(np.int64))
                else:
                    data[name] = pd.Series(np.clip(v, s.low, s.high))
            else:
                idx = np.argmax(x[:, sl], axis=1)
                data[name] = _cast([s.categories[i] for i in idx], self._dtypes[name])
        if y is not None:
            labels = np.asarray(y)
            ok = labels.shape == (len(x),) and np.issubdtype(labels.dtype, np.integer)
            if ok and len(labels):
                ok = labels.min() >= 0 and labels.max() < len(self.class_names)
            if not ok:
                raise ConfigError(
                    f"TabularEncoder.decode: labels must be integers 0..{len(self.class_names) - 1}"
                    f" of shape ({len(x)},); got dtype {labels.dtype}, shape {labels.shape}."
                )
            data[self.target] = _cast([self.class_names[i] for i in labels], self._label_dtype)
        order = [c for c in self.column_order if c in data]
        return pd.DataFrame({c: data[c] for c in order})


def _numeric_share(values: pd.Series) -> float:
    """Share of the non-empty cells that parse as finite numbers (0 if all are empty)."""
    text = values.astype(str).str.strip()
    nonempty = text[text != ""]
    if nonempty.empty:
        return 0.0
    parsed = np.asarray(pd.to_numeric(nonempty, errors="coerce"), dtype=np.float64)
    return float(np.isfinite(parsed).mean())


def _sorted_values(values: Sequence[str]) -> list[str]:
    """Distinct values, numerically sorted if they are all numbers, else lexicographically."""
    distinct = sorted(set(values))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def _codes(values: pd.Series, lookup: dict[Any, int], other: int) -> np.ndarray:
    """Cells -> category indices; unknown cells (and missing ones) -> ``other``."""
    out = []
    for v in values.tolist():
        code = lookup.get(v.strip() if isinstance(v, str) else v, -1)
        if code < 0 and not isinstance(v, str):
            code = lookup.get(str(v), -1)
        out.append(other if code < 0 else code)
    return np.asarray(out, dtype=np.int64)


def _numeric_kinds(
    columns: Sequence[str],
    target: str,
    categorical: Sequence[str] | None,
    decls: Mapping[str, ColumnDecl],
) -> dict[str, ColumnDecl]:
    """Every column's declaration, with the kinds the config fixes (``categorical``) filled in."""
    out: dict[str, ColumnDecl] = {}
    for name in columns:
        d = decls.get(name, ColumnDecl())
        if name == target:
            if d.kind == "numeric":
                raise ConfigError(
                    f"dataset.schema.{target}: the target column must be declared with "
                    "categories (its class labels), e.g. {categories: [no, yes]}."
                )
            d = replace(d, kind="categorical")
        elif d.kind is None and categorical is not None:
            d = replace(d, kind="categorical" if name in categorical else "numeric")
        elif d.kind == "numeric" and categorical is not None and name in categorical:
            raise ConfigError(
                f"dataset.categorical lists {name!r}, but dataset.schema.{name} declares it "
                "numeric."
            )
        out[name] = d
    return out


def _infer_exact(
    raw: RawTable, decls: Mapping[str, ColumnDecl], todo: Sequence[str]
) -> dict[str, ColumnSchema]:
    """The undeclared parts of the ``todo`` columns, read off the private file (not DP)."""
    out: dict[str, ColumnSchema] = {}
    for name in todo:
        d = decls[name]
        values = raw.frame[name]
        kind = d.kind or ("numeric" if _numeric_share(values) >= 0.5 else "categorical")
        if kind == "numeric":
            v = parse_numbers(values.tolist())
            v = v[np.isfinite(v)]
            low = d.low if d.low is not None else (float(v.min()) if v.size else 0.0)
            high = d.high if d.high is not None else (float(v.max()) if v.size else low + 1.0)
            if high <= low:
                high = low + 1.0  # a constant column still needs a non-empty range
            integer = d.integer
            if integer is None:
                integer = bool(values.astype(str).str.match(_INT_RE).all())
            out[name] = ColumnSchema.numeric(low, high, integer, d.fill)
        else:
            cats = d.categories or tuple(_sorted_values(values.astype(str).tolist()))
            out[name] = ColumnSchema.categorical(cats, d.other)
    return out


def _infer_dp(
    name: str,
    raw: RawTable,
    decls: Mapping[str, ColumnDecl],
    todo: Sequence[str],
    target: str,
    settings: SchemaSettings,
    split: Mapping[str, Any],
) -> tuple[dict[str, ColumnSchema], Release]:
    """The undeclared parts of the ``todo`` columns, by the DP mechanisms, cached.

    Returns the inferred columns (the target's ``other`` is its class with the largest noisy
    count) and the release (its ledger holds the spends; ``public`` the δ split).
    """
    privacy = settings.privacy
    if privacy is None:
        raise ConfigError(
            f"dataset {name!r}: schema_source=dp must estimate the undeclared schema of "
            f"column(s) {', '.join(todo)} under the run's (ε, δ), but no privacy settings were "
            "given (conf/dataset/*.yaml passes privacy_epsilon, privacy_delta, "
            "privacy_accountant, privacy_neighbours; from Python pass privacy=PrivacySpec(...)). "
            "Or declare them in dataset.schema."
        )
    opts = settings.options
    # Columns that may need partition selection: a public fact (the config and the header).
    selectable = [c for c in todo if decls[c].kind != "numeric"]
    plan = plan_delta(privacy.delta, len(selectable), opts.delta_fraction)
    gaussian = PrivacySpec(privacy.epsilon, plan.gaussian, privacy.accountant, privacy.neighbours)
    features = [c for c in todo if c != target]

    def build() -> Release:
        budget = Budget(gaussian)
        frame = raw.frame
        kind_cols = [
            c
            for c in features
            if decls[c].kind is None or (decls[c].kind == "numeric" and decls[c].integer is None)
        ]
        share_values = settings.share
        kinds = {}
        if kind_cols:
            share_kinds = settings.share * opts.kinds_fraction
            share_values = settings.share - share_kinds
            cells = {c: frame[c].tolist() for c in kind_cols}
            kinds = release_kinds(cells, budget=budget, share=share_kinds)
        numeric: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        categorical: dict[str, list[Any]] = {}
        for c in features:
            kind = decls[c].kind or ("numeric" if kinds[c].numeric else "categorical")
            if kind == "numeric":
                grid = decls[c].grid or opts.grid
                numeric[c] = (parse_numbers(frame[c].tolist()), grid.edges())
            else:
                categorical[c] = frame[c].tolist()
        if target in todo:
            categorical[target] = frame[target].tolist()
        values = release_values(
            numeric, categorical, budget=budget, share=share_values, delta_key=plan.per_key
        )
        schema: dict[str, dict[str, Any]] = {}
        for c in features:
            d = decls[c]
            if c in numeric:
                lo, hi = quantile_bounds(
                    values.histograms[c], numeric[c][1], values.bin_sigma[c], opts.quantiles
                )
                integer = d.integer if d.integer is not None else kinds[c].integer
                low = d.low if d.low is not None else lo
                high = d.high if d.high is not None else hi
                if integer:
                    low, high = float(math.floor(low)), float(math.ceil(high))
                if high <= low:  # e.g. a declared low above the estimated high
                    high = low + (1.0 if integer else max(abs(low), 1.0) * 1e-3)
                schema[c] = ColumnSchema.numeric(low, high, integer, d.fill).to_json()
            else:
                cats = [*_sorted_values(list(values.released[c])), OTHER]
                schema[c] = ColumnSchema.categorical(cats, OTHER).to_json()
        if target in todo:
            released = values.released[target]
            classes = _sorted_values(list(released)) or [OTHER]
            other = max(classes, key=lambda k: released.get(k, 0.0))
            schema[target] = ColumnSchema.categorical(classes, other).to_json()
        public = {
            "schema": schema,
            "delta": {
                "total": privacy.delta,
                "selection": plan.selection,
                "per_key": plan.per_key,
                "gaussian": plan.gaussian,
            },
            "released_counts": values.released,
            "kinds": {c: list(k.noisy) for c, k in kinds.items()},
        }
        stats = {f"hist{i}": h.astype(np.float32) for i, h in enumerate(values.histograms.values())}
        public["histograms"] = {f"hist{i}": c for i, c in enumerate(values.histograms)}
        return Release(stats, public, budget.ledger())

    parts = {
        "what": "tabular_schema",
        "version": SCHEMA_RELEASE_VERSION,
        "dataset": name,
        "file": file_fingerprint(raw.path),
        "columns": list(raw.frame.columns),
        "target": target,
        "declared": {c: decls[c].key() for c in raw.frame.columns},
        "privacy": asdict(privacy),
        "share": settings.share,
        "options": {**asdict(settings.options), "grid": repr(settings.options.grid)},
        "seed": settings.seed,
        "split": dict(split),
    }
    if settings.cache_dir:
        cache = ReleaseCache(Path(settings.cache_dir) / "releases")
        try:
            release = cache.get_or_create(parts, build)
        except OSError as exc:
            raise ConfigError(
                f"cache_dir={settings.cache_dir}: the schema release cannot be cached in "
                f"{cache.root} ({exc}); the cache is what keeps a re-run from spending the "
                "budget again. Set cache_dir=<a writable folder>."
            ) from exc
    else:
        release = build()
    inferred = {c: ColumnSchema.from_json(d) for c, d in release.public["schema"].items()}
    return inferred, release


def load_table(
    name: str,
    train: RawTable,
    test: RawTable | None,
    target: str,
    schema: Mapping[str, ColumnSchema | ColumnDecl] | None = None,
    categorical: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    settings: SchemaSettings | None = None,
) -> Dataset:
    """Encode raw tables into a tabular :class:`Dataset`.

    Args:
        name: dataset config name (``adult``, ``csv``).
        train: the training file's table; with ``test=None`` it is split in two.
        test: the test file's table, or None.
        target: the label column.
        schema: public schema per column (target: its categories); parts not declared are
            inferred from ``train`` as ``settings.source`` says.
        categorical: columns to treat as categorical when their kind is not in ``schema``;
            when given, every other column is numeric (None: kinds are inferred).
        test_fraction: share held out when splitting ``train``.
        split_seed: seed of that (stratified when possible) split.
        settings: how undeclared parts are inferred (default: DP, no privacy settings).

    Returns:
        The dataset, with ``spends`` (the schema's Gaussian releases, for the run's ledger),
        ``schema_source`` and ``flags`` (``["not_dp"]`` when the schema was read off the data).

    Raises:
        ConfigError: unknown target, categorical or schema column names; undeclared parts
            under ``declared``; ``dp`` without privacy settings.
        DataError: a test file whose columns differ from the training file's.
    """
    settings = settings or SchemaSettings()
    decls = {str(k): ColumnDecl.of(v) for k, v in (schema or {}).items()}
    columns = [str(c) for c in train.frame.columns]
    if not isinstance(target, str) or target not in columns:
        raise ConfigError(
            f"dataset.target={target!r} is not a column of {train.path}; its columns are: "
            f"{', '.join(columns)}."
        )
    for key, names in (("dataset.categorical", categorical or []), ("dataset.schema", decls)):
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise ConfigError(
                f"{key} names unknown column(s) {', '.join(map(repr, unknown))} of {train.path};"
                f" its columns are: {', '.join(columns)}."
            )
    if test is not None and list(test.frame.columns) != columns:
        if set(test.frame.columns) != set(columns):
            raise DataError(
                f"test file {test.path} has columns {', '.join(map(str, test.frame.columns))} "
                f"but the training file {train.path} has {', '.join(columns)}. Both files "
                "need the same columns."
            )
        test = RawTable(test.frame[columns], test.lines, test.path)

    decls = _numeric_kinds(columns, target, categorical, decls)
    todo = [c for c in columns if decls[c].complete() is None]
    source: SchemaSource = "declared"
    flags: list[str] = []
    spends: list[Any] = []
    inferred: dict[str, ColumnSchema] = {}
    release_info: dict[str, Any] = {}
    schema_delta = 0.0
    split = {"test_file": test is not None, "test_fraction": test_fraction, "seed": split_seed}
    privacy = settings.privacy
    nonprivate = settings.source == "nonprivate" or (
        settings.source == "dp" and privacy is not None and math.isinf(privacy.epsilon)
    )
    if todo and settings.source == "declared":
        missing = "; ".join(f"{c}: {', '.join(decls[c].missing())}" for c in todo)
        raise ConfigError(
            f"dataset.schema_source=declared, but dataset.schema does not declare: {missing}. "
            "Declare them (public knowledge), or use schema_source=dp to estimate them under "
            "the run's privacy budget."
        )
    if todo and nonprivate:
        inferred = _infer_exact(train, decls, todo)
        source, flags = "nonprivate", ["not_dp"]
        why = (
            "privacy.epsilon is infinite"
            if settings.source == "dp"
            else "schema_source=nonprivate (allow_nonprivate_schema=true)"
        )
        warnings.warn(
            f"dataset {name!r}: the schema (categories / numeric bounds) of column(s) "
            f"{', '.join(todo)} was inferred from the private file {train.path} ({why}), so it "
            "is released outside the DP guarantee and the run is flagged not_dp. To keep the "
            "guarantee end to end, declare it as public knowledge in dataset.schema, e.g. "
            "{column: {categories: [a, b]}, other: {low: 0, high: 100, integer: true}} "
            "(encoder.schema_dict() prints the inferred one), or use schema_source=dp.",
            SchemaWarning,
            stacklevel=3,
        )
    elif todo:
        inferred, release = _infer_dp(name, train, decls, todo, target, settings, split)
        source = "dp"
        spends = list(release.ledger.spends)
        schema_delta = float(release.public["delta"]["selection"])
        release_info = {
            "cache_key": release.public.get("cache_key"),
            "cache_hit": release.ledger.cache_hit,
            "delta": dict(release.public["delta"]),
            "epsilon_spent": release.ledger.epsilon_spent,
        }
    full = {c: inferred[c] if c in inferred else decls[c].complete() for c in columns}
    label = full[target]
    assert label is not None
    label_other = label.other
    features = {c: s for c, s in full.items() if c != target and s is not None}
    encoder = TabularEncoder(features, target, label.categories, columns, todo, source, label_other)
    encoder.schema_delta = schema_delta
    encoder.schema_release = release_info
    x = encoder.encode(train.frame, train.path)
    y = encoder.encode_labels(train.frame[target], train.path)
    if test is not None:
        train_x, train_y = x, y
        test_x = encoder.encode(test.frame, test.path)
        test_y = encoder.encode_labels(test.frame[target], test.path)
    else:
        idx_train, idx_test = _split(len(y), y, test_fraction, split_seed, train.path)
        train_x, train_y, test_x, test_y = x[idx_train], y[idx_train], x[idx_test], y[idx_test]
    # No check for classes without training records: whether one is empty is a fact about
    # the private data, and failing on it would tell neighbouring datasets apart.
    spec = DataSpec(
        name=name,
        kind="tabular",
        shape=(encoder.dim,),
        num_classes=len(encoder.class_names),
        class_names=encoder.class_names,
        columns=encoder.columns,
        target=target,
        balanced=False,
    )
    return Dataset(
        spec=spec,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        encoder=encoder,
        spends=spends,
        schema_source=source,
        flags=flags,
    )


def _split(
    n: int, y: np.ndarray, test_fraction: float, seed: int, path: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split, stratified when every class can appear on both sides."""
    from sklearn.model_selection import train_test_split

    n_test = int(math.ceil(test_fraction * n))
    if n_test < 1 or n - n_test < 1:
        raise DataError(
            f"{path} has {n} record(s): too few to hold out test_fraction={test_fraction} as a "
            "test split and keep a training split. Use a larger file or pass a test file."
        )
    counts = np.bincount(y)
    present = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 2 and min(n_test, n - n_test) >= present
    idx = np.arange(n)
    try:
        idx_train, idx_test = train_test_split(
            idx, test_size=n_test, random_state=seed, stratify=y if can_stratify else None
        )
    except ValueError:
        idx_train, idx_test = train_test_split(idx, test_size=n_test, random_state=seed)
    return np.sort(idx_train), np.sort(idx_test)
