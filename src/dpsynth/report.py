"""``dpsynth-report``: leaderboard, privacy-utility curves and one offline HTML page per study.

Usage::

    dpsynth-report multirun/2024-05-01/12-00-00 [more dirs...] \\
        [--compare experiments/fmnist_table/published.csv] [--protocol lenet60k-test-fid10k] \\
        [--protocols experiments/protocols.csv] [--allow-mixed-versions] \\
        [--out results/fmnist_table] [--title NAME]

Every ``metrics.json`` below the given folders is one run (schema in :mod:`dpsynth.records`).
Results are data: the tables and plots here are computed from those files and from the
``published.csv`` files, never typed by hand, so a report can always be regenerated.

What a row claims, and when (issue 12):

* **Statistics.** Ours: mean ± std and a 95% confidence interval (Student t over the seeds).
  A verdict "better"/"worse" is given only when the 95% interval of the difference ours −
  published excludes 0: Welch's interval where the published row has a ``std`` and ``n``,
  otherwise our interval against the published mean; "tie" when it covers 0; no verdict for
  fewer than 3 seeds ("n<3").
* **Code versions.** Runs carry ``method_version`` (``Method.version``); runs of different
  versions are never pooled in one cell: the report refuses, listing the cells, unless
  ``--allow-mixed-versions``, which shows them as separate rows.
* **Protocols.** Published rows name their evaluation protocol (``protocol`` column, ids
  defined in ``experiments/protocols.csv``); ``--protocol`` names ours. Only like protocols
  are compared; other rows say "different protocol" (or "protocol unknown").
* **Not DP.** Metrics computed from the private training split (``eval/real_*``,
  ``eval/dcr_*``, ``eval/mia_auc``, and what a run's ``not_dp_metrics`` lists) are marked
  "not DP": they are outside every ε on the page. ``eval/dcr_*`` are diagnostics with no
  direction (a DCR ratio far from 1 either way is not "better"): no verdict.
* **Preset provenance.** Rows whose method preset was chosen on the test set
  (``method.preset_selection`` in the run's ``config.json``) are labelled.
* **Total cost.** Per dataset: how many releases of the same private data the kept runs
  published, and their composed ε by dp-accounting (δ summed over the releases).

The pure part (:func:`collect_runs`, :func:`aggregate`, :func:`compare`, :func:`load_published`)
returns DataFrames and does no writing; :func:`write_report` turns them into files, each written
atomically (a reader never sees a half-written report).

Output layout (``--out``, default ``<first dir>/report``)::

    leaderboard.md       our mean ± std, 95% CI (n seeds) beside the published numbers, Δ with
                         its 95% CI, verdict, protocol
    leaderboard.csv      the same, machine-readable
    runs.csv             one row per run found (kept, failed and superseded duplicates)
    curves/<metric>.png  metric vs ε (log axis), one line per method, published points hollow
    curves/<metric>.svg
    index.html           self-contained page: header, leaderboard, curves, failed runs
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dpsynth.privacy.release import atomic_write_bytes

PUBLISHED_COLUMNS = ("dataset", "method", "epsilon", "metric", "value", "source")
#: Optional published.csv columns: the evaluation protocol id (experiments/protocols.csv), the
#: published std over ``n`` runs (both needed for Welch's interval), and the row's δ.
PUBLISHED_OPTIONAL = ("protocol", "std", "n", "delta")
RUN_KEY = ["dataset", "method", "method_version", "epsilon", "seed"]
GROUP_KEY = ["dataset", "method", "epsilon", "metric", "method_version"]
CELL_KEY = ["dataset", "method", "epsilon"]
MIN_SEEDS = 3  # fewer seeds: no verdict
CONFIDENCE = 0.95
UNRECORDED = "unrecorded"
EPSILON_SPENT = "privacy/epsilon_spent"
TOTAL_TIME = "timings/total"
RUN_COLUMNS = [
    "run_dir",
    "mtime",
    "status",
    "error",
    "dataset",
    "method",
    "epsilon",
    "delta",
    "seed",
    "epsilon_spent",
    "epsilon_exact",
    "neighbours",
    "accountant",
    "schema_source",
    "method_version",
    "preset_selection",
    "git_sha",
    "config_hash",
    "flags",
    "superseded_by",
    "note",
    "wall_seconds",
    "cpu_seconds",
    "executor",
    "cache_hit",
    "release_fingerprint",
    "delta_reserved",
    "releases",
]
# Fallback direction for metrics only the published tables have (our runs carry their own).
_LOWER_IS_BETTER = re.compile(r"fid|loss|time|timings/|epsilon|error|mse|distance", re.I)
#: Metrics computed from the private training split: not covered by the run's ε.
_READS_PRIVATE_TRAIN = re.compile(r"^(eval/)?(real_|dcr_|mia_auc)")
#: Diagnostics with no direction: a distance-to-closest-record statistic far from the holdout's
#: in either direction is no better (closer: memorisation; farther: poor fidelity).
_DIAGNOSTIC = re.compile(r"^(eval/)?dcr_")


class ReportError(SystemExit):
    """A problem the user can fix (wrong folder, malformed CSV): exit status 1 with a
    message naming the file or folder, instead of a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(f"dpsynth-report: error: {message}")


# --------------------------------------------------------------------------------------------
# Pure part: runs → DataFrames
# --------------------------------------------------------------------------------------------


def find_metrics_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``metrics.json`` below ``paths`` (recursively), each once.

    Raises:
        ReportError: a folder does not exist or holds no ``metrics.json``; a typo in one of
            several folders would otherwise silently shrink the study.
    """
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"{p}: no such file or folder")
        files = [p] if p.is_file() else sorted(p.rglob("metrics.json"))
        candidates = [f for f in files if _is_tuning_candidate(f)]
        if candidates and len(candidates) == len(files):
            raise ReportError(
                f"{p}: holds only dpsynth-tune candidates (scored on private validation records, "
                "never reported); point dpsynth-report at the tuning's final/ folder"
            )
        files = [f for f in files if f not in candidates]
        if not files:
            raise ReportError(
                f"no metrics.json found under {p} (searched recursively); point dpsynth-report "
                "at a run or multirun folder, e.g. multirun/<date>/<time>"
            )
        found.update(dict.fromkeys(f.resolve() for f in files))
    return list(found)


def _is_tuning_candidate(path: Path) -> bool:
    """A dpsynth-tune candidate: its metrics are read off private validation records (they
    decide the selection, privately) and never enter a leaderboard."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return False  # reported as an unreadable run
    return isinstance(rec, dict) and (rec.get("tune") or {}).get("role") == "candidate"


def collect_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """All runs below ``paths`` in long form: one row per (run, metric).

    A run without metrics (failed, or completed with none) still gets one row, ``metric`` NaN,
    so it is never lost. Completed runs also carry ``privacy/epsilon_spent`` and
    ``timings/total`` as metrics (both lower-is-better), so they are averaged like the rest.
    Repeated (dataset, method, method version, ε, seed) runs are marked, not dropped:
    ``superseded_by`` names the run kept (the newest completed one, by file mtime; the newest
    if none completed).

    Returns:
        Columns :data:`RUN_COLUMNS` + ``metric``, ``value``, ``higher_is_better``, ``not_dp``
        (the metric reads the private training split).

    Raises:
        ReportError: see :func:`find_metrics_files`.
    """
    files = find_metrics_files(paths)
    runs, rows = [], []
    for f in files:
        run, metrics, hib, declared = _read_run(f)
        runs.append(run)
        for k, v in metrics.items():
            not_dp = bool(_READS_PRIVATE_TRAIN.match(k)) or k in declared
            row = {"run_dir": run["run_dir"], "metric": k, "value": v, "hib": hib.get(k)}
            rows.append({**row, "nd": not_dp})
    seeds = [r["seed"] for r in runs]
    run_frame = pd.DataFrame(runs, columns=RUN_COLUMNS)
    if all(isinstance(x, int) or x is None for x in seeds):
        run_frame["seed"] = pd.array(seeds, dtype="Int64")  # 0, 1, 2 beside a missing one
    run_frame = _mark_duplicates(run_frame)
    metric_frame = pd.DataFrame(rows, columns=["run_dir", "metric", "value", "hib", "nd"])
    out = run_frame.merge(metric_frame, on="run_dir", how="left")
    out["higher_is_better"] = [
        _direction(m) if h is None or _isnan(h) else bool(h)
        for m, h in zip(out["metric"], out.pop("hib"), strict=True)
    ]
    out["not_dp"] = out.pop("nd").fillna(False).astype(bool)
    return out.sort_values(["dataset", "method", "epsilon", "seed", "run_dir"]).reset_index(
        drop=True
    )


def _read_run(
    path: Path,
) -> tuple[dict[str, Any], dict[str, float], dict[str, bool], set[str]]:
    """One metrics.json → (run info, numeric metrics, directions, metrics the run declares
    computed from the private training split). An unreadable file becomes a failed run with
    the reason, so it shows up in the report instead of vanishing."""
    try:
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict):
            raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    except (OSError, ValueError) as e:
        rec = {"status": "failed", "error": f"unreadable metrics.json: {e}"}
    privacy = rec.get("privacy") or {}
    run = {
        "run_dir": str(path.parent),
        "mtime": path.stat().st_mtime,
        "status": str(rec.get("status") or "unknown"),
        "error": str(rec.get("error") or ""),
        "dataset": rec.get("dataset"),
        "method": rec.get("method"),
        "epsilon": _float(privacy.get("epsilon")),
        "delta": _float(privacy.get("delta")),
        "seed": rec.get("seed"),
        "epsilon_spent": _float(privacy.get("epsilon_spent")),
        "epsilon_exact": _float(privacy.get("epsilon_exact")),
        # Records from before the yardstick carry no relation: say so rather than guess.
        "neighbours": str(privacy.get("neighbours") or "unrecorded"),
        "accountant": str(privacy.get("accountant") or "unrecorded"),
        "schema_source": str(rec.get("schema_source") or "declared"),
        "method_version": str(rec.get("method_version") or UNRECORDED),
        "preset_selection": _preset_selection(path, rec),
        "git_sha": str(rec.get("git_sha") or ""),
        "config_hash": str(rec.get("config_hash") or ""),
        "flags": "; ".join(map(str, rec.get("flags") or [])),
        "superseded_by": None,
        "note": "",
        "wall_seconds": _float((rec.get("timings") or {}).get("total")),
        "cpu_seconds": _float(rec.get("cpu_seconds")),
        "executor": executor_label(rec.get("executor")),
        "cache_hit": bool(privacy.get("cache_hit")),
        "release_fingerprint": str((rec.get("release") or {}).get("fingerprint") or ""),
        "delta_reserved": _float(privacy.get("delta_reserved") or 0.0),
        # the ledger, as JSON text: a column of runs.csv, and what the total cost composes
        "releases": json.dumps(privacy.get("releases") or [], sort_keys=True),
    }
    metrics = {k: float(v) for k, v in (rec.get("metrics") or {}).items() if _is_number(v)}
    hib = {k: bool(v) for k, v in (rec.get("higher_is_better") or {}).items()}
    declared = {str(k) for k in rec.get("not_dp_metrics") or []}
    if run["status"] == "completed":
        extra = {EPSILON_SPENT: run["epsilon_spent"], TOTAL_TIME: (rec.get("timings") or {})}
        extra[TOTAL_TIME] = _float(extra[TOTAL_TIME].get("total"))
        for k, v in extra.items():
            if k not in metrics and not _isnan(v):
                metrics[k], hib[k] = v, False
    return run, metrics, hib, declared


def _preset_selection(path: Path, rec: dict[str, Any]) -> str:
    """How the run's method preset was chosen (authors, test_set, validation, proxy:<dataset>):
    the record's own label, which says how the selection holds on the run's dataset
    (:func:`dpsynth.config.selection_for`), else ``method.preset_selection`` in the resolved
    ``config.json`` beside it (runs made before records carried it); "unrecorded" for runs
    made before presets said so."""
    value = rec.get("preset_selection")
    if value:
        return str(value)
    try:
        config = json.loads((path.parent / "config.json").read_text())
        value = (config.get("method") or {}).get("preset_selection") or value
    except (OSError, ValueError, AttributeError):
        pass
    return str(value or UNRECORDED)


def _mark_duplicates(runs: pd.DataFrame) -> pd.DataFrame:
    """Fill ``superseded_by``/``note`` for runs repeating a (dataset, method, method version,
    ε, seed): runs of another code version are not duplicates (see :func:`mixed_versions`).

    Only fully keyed runs are compared: unreadable ones (no key) are never duplicates.
    """
    runs = runs.copy()
    keyed = runs.dropna(subset=RUN_KEY)
    for _, grp in keyed.groupby(RUN_KEY, sort=False):
        if len(grp) < 2:
            continue
        # newest completed first; else newest; run_dir breaks mtime ties deterministically
        order = grp.assign(_ok=grp["status"].eq("completed")).sort_values(
            ["_ok", "mtime", "run_dir"], ascending=[False, False, True]
        )
        kept = order.iloc[0]
        hashes = set(grp["config_hash"]) - {""}
        why = "same (dataset, method, version, ε, seed) as the kept run"
        if len(hashes) > 1:
            why += "; config_hash differs, so the runs may differ in other settings"
        for idx in order.index[1:]:
            runs.loc[idx, "superseded_by"] = kept["run_dir"]
            runs.loc[idx, "note"] = why
        runs.loc[kept.name, "note"] = f"kept over {len(grp) - 1} duplicate(s)"
    return runs


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run (the long frame from :func:`collect_runs` collapsed)."""
    return runs.drop_duplicates("run_dir")[RUN_COLUMNS].reset_index(drop=True)


def _kept(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of kept completed runs with a metric value: what the leaderboard averages."""
    ok = runs[
        runs["status"].eq("completed") & runs["superseded_by"].isna() & runs["metric"].notna()
    ]
    return ok[ok["value"].notna()]


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std and a 95% interval over seeds per (dataset, method, ε, metric, method
    version), from kept completed runs only.

    Failed and superseded runs are never averaged in; ``std`` is the sample standard deviation
    (ddof = 1; NaN for one seed), the usual "± std over seeds" of the published tables;
    ``ci_low``/``ci_high`` the Student-t 95% confidence interval of the mean (NaN for one
    seed). Runs of different method versions land in different rows: :func:`mixed_versions`
    says where that splits a cell.

    Returns:
        Columns dataset, method, epsilon, metric, method_version, mean, std, n, seeds, ci_low,
        ci_high, higher_is_better, diagnostic, not_dp, preset_selection, guarantee, exact.
    """
    ok = _kept(runs)
    cols = [
        *GROUP_KEY,
        "mean",
        "std",
        "n",
        "seeds",
        "ci_low",
        "ci_high",
        "higher_is_better",
        "diagnostic",
        "not_dp",
        "preset_selection",
        "guarantee",
        "exact",
    ]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    ok = ok.assign(_guarantee=[guarantee(r) for r in ok.itertuples()])
    agg = (
        ok.groupby(GROUP_KEY, dropna=False, sort=True)
        .agg(
            mean=("value", "mean"),
            std=("value", "std"),
            n=("value", "count"),
            seeds=("seed", lambda s: ",".join(sorted(map(str, s), key=_natural))),
            higher_is_better=("higher_is_better", "first"),
            not_dp=("not_dp", "any"),
            preset_selection=("preset_selection", lambda s: ", ".join(sorted(set(s)))),
            # a cell pooling runs of different guarantees says so (never silently one ε)
            guarantee=("_guarantee", lambda s: " | MIXED | ".join(sorted(set(s)))),
            exact=("epsilon_exact", "max"),
        )
        .reset_index()
    )
    half = agg["std"] / np.sqrt(agg["n"]) * _t_quantile(agg["n"] - 1)
    agg["ci_low"], agg["ci_high"] = agg["mean"] - half, agg["mean"] + half
    agg["diagnostic"] = [bool(_DIAGNOSTIC.match(str(m))) for m in agg["metric"]]
    return agg[cols]


def mixed_versions(runs: pd.DataFrame) -> pd.DataFrame:
    """Cells (dataset, method, ε) whose kept completed runs come from more than one method
    version (``Method.version``), with the versions and their run counts.

    Returns:
        Columns dataset, method, epsilon, versions (e.g. "pearl-1 (3 runs), unrecorded (2
        runs)"); empty when no cell mixes versions.
    """
    table = run_table(runs)
    ok = table[table["status"].eq("completed") & table["superseded_by"].isna()]
    rows = []
    for key, grp in ok.groupby(CELL_KEY, dropna=False, sort=True):
        counts = grp["method_version"].value_counts().sort_index()
        if len(counts) > 1:
            text = ", ".join(f"{v} ({n} runs)" for v, n in counts.items())
            rows.append({**dict(zip(CELL_KEY, key, strict=True)), "versions": text})
    return pd.DataFrame(rows, columns=[*CELL_KEY, "versions"])


def mixed_versions_error(mixed: pd.DataFrame) -> ReportError:
    """The refusal to pool runs of different method versions, naming every cell."""
    cells = "; ".join(
        f"{r.dataset} / {r.method} / ε={_fmt_eps(r.epsilon)}: {r.versions}"
        for r in mixed.itertuples()
    )
    return ReportError(
        f"runs of different method versions in {len(mixed)} cell(s), which are never pooled: "
        f"{cells}. Re-run the older runs with the current code (a changed version changes the "
        "run's config id, so the sweep re-runs them), report them separately, or pass "
        "--allow-mixed-versions to show each version as its own row."
    )


def guarantee(run: Any) -> str:
    """What a run's ε means: neighbour relation, accountant, δ; "not DP" when its numbers are
    not backed by a DP guarantee (a non-private schema, or a non-private method)."""
    not_dp = "not_dp" in str(run.flags).split("; ") or run.schema_source == "nonprivate"
    if not math.isfinite(run.epsilon):
        return "not DP (non-private)"
    text = f"{run.neighbours}, {run.accountant}, δ={run.delta:g}"
    return f"not DP ({text}, non-private schema)" if not_dp else text


def load_published(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Published numbers from ``published.csv`` files: the columns :data:`PUBLISHED_COLUMNS`,
    plus the optional :data:`PUBLISHED_OPTIONAL` (``protocol``: an id of
    ``experiments/protocols.csv``, "" when absent; ``std`` and ``n``: the published std over
    ``n`` runs, NaN when absent; ``delta``).

    Raises:
        ReportError: a file is missing, empty, lacks a column (naming the file, the columns
            found and those expected), has a non-numeric ε/value/std/n (naming the line), or
            a ``std`` without its ``n``.
    """
    out_cols = [*PUBLISHED_COLUMNS, *PUBLISHED_OPTIONAL]
    frames = [pd.DataFrame(columns=out_cols)]
    for path in map(Path, paths):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise ReportError(f"{path}: published CSV not found") from None
        except pd.errors.EmptyDataError:
            raise ReportError(
                f"{path}: empty file; expected a header {','.join(PUBLISHED_COLUMNS)}"
            ) from None
        frame.columns = [c.strip() for c in frame.columns]
        missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
        if missing:
            raise ReportError(
                f"{path}: wrong columns; found {list(frame.columns)}, expected "
                f"{list(PUBLISHED_COLUMNS)} (missing {missing}; optional: "
                f"{list(PUBLISHED_OPTIONAL)})"
            )
        for col in PUBLISHED_OPTIONAL:
            if col not in frame.columns:
                frame[col] = ""
        frame = frame[out_cols].copy()
        for col in ("epsilon", "value", "std", "n", "delta"):
            text = frame[col].str.strip()
            num = pd.to_numeric(text, errors="coerce")
            required = col in ("epsilon", "value")
            bad = num.isna() & (text.ne("") | required)
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise ReportError(
                    f"{path}, line {i + 2}: column {col!r} must be a number, got "
                    f"{frame[col].iloc[i]!r}"
                    + (" (write ε = ∞ as inf)" if col == "epsilon" else "")
                    + ("" if required else " or be empty")
                )
            frame[col] = num.astype(float)
        lonely = frame["std"].notna() & ~(frame["n"] >= 2)
        if lonely.any():
            i = int(np.flatnonzero(lonely.to_numpy())[0])
            raise ReportError(
                f"{path}, line {i + 2}: a published std needs the number of runs it is over "
                f"(column 'n' >= 2), got n = {frame['n'].iloc[i]!r}"
            )
        frames.append(frame)
    out = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    for col in ("dataset", "method", "metric", "source", "protocol"):
        out[col] = out[col].astype(str).str.strip()
    return out.astype({c: float for c in ("epsilon", "value", "std", "n", "delta")})


PROTOCOL_COLUMNS = (
    "protocol",
    "classifiers",
    "n_synthetic_train",
    "selection",
    "fid_reference",
    "fid_samples",
    "description",
)


def load_protocols(path: str | Path) -> dict[str, str]:
    """Protocol id → one-line description from ``protocols.csv`` (columns
    :data:`PROTOCOL_COLUMNS`).

    Raises:
        ReportError: the file is missing, lacks a column, or repeats an id.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        raise ReportError(f"{path}: protocols CSV not found or empty") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in PROTOCOL_COLUMNS if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {missing}; expected {PROTOCOL_COLUMNS}")
    ids = frame["protocol"].str.strip()
    if ids.duplicated().any() or ids.eq("").any():
        raise ReportError(f"{path}: protocol ids must be unique and non-empty")
    return {
        pid: f"{r.description} (classifiers: {r.classifiers}; synthetic training images: "
        f"{r.n_synthetic_train}; selection: {r.selection}; FID reference: {r.fid_reference}, "
        f"{r.fid_samples} samples)"
        for pid, r in zip(ids, frame.itertuples(index=False), strict=True)
    }


def check_protocols(
    protocols: dict[str, str], ours: str | None, published: pd.DataFrame, where: str
) -> None:
    """Every protocol id used (ours and the published rows') is defined in ``protocols``.

    Raises:
        ReportError: naming the unknown id(s) and the protocols file.
    """
    used = ({ours} if ours else set()) | (set(published["protocol"]) - {""})
    unknown = sorted(used - set(protocols))
    if unknown:
        raise ReportError(
            f"protocol id(s) {unknown} are not defined in {where}; defined: {sorted(protocols)}"
        )


def compare(
    agg: pd.DataFrame, published: pd.DataFrame, protocol: str | None = None
) -> pd.DataFrame:
    """Our aggregates beside the published numbers, one row per (group, published source).

    Published rows for datasets we have no runs of are dropped (they would bury the table);
    published rows of methods or ε we don't run stay, with ``kind`` "published only".
    ``diff`` is ours − published and ``diff_ci_low``/``diff_ci_high`` its 95% interval:
    Welch's (Welch–Satterthwaite degrees of freedom) where the published row has ``std`` and
    ``n``, else our Student-t interval shifted by the published mean. ``verdict``:

    * "better" / "worse": the interval excludes 0, in the metric's good / bad direction;
    * "tie": it covers 0;
    * "n<3": fewer than 3 seeds of ours, no verdict;
    * "different protocol" / "protocol unknown": the published row's protocol is not ours
      (``protocol``) or one of them is not stated, no verdict;
    * "diagnostic": a metric with no direction (``eval/dcr_*``), no verdict;
    * "" for rows with only ours or only the published number.

    Returns:
        Columns dataset, method, epsilon, metric, method_version, higher_is_better,
        diagnostic, not_dp, preset_selection, mean, std, n, seeds, ci_low, ci_high, published,
        published_std, published_n, source, protocol, diff, diff_ci_low, diff_ci_high, verdict,
        kind, guarantee, exact.
    """
    pub = published.rename(
        columns={"value": "published", "std": "published_std", "n": "published_n"}
    ).drop(columns=["delta"], errors="ignore")
    if len(agg):
        pub = pub[pub["dataset"].isin(set(agg["dataset"]))]
    ours = agg.assign(_eps=_eps_key(agg["epsilon"]))
    pub = pub.assign(_eps=_eps_key(pub["epsilon"]))
    keys = ["dataset", "method", "_eps", "metric"]
    out = ours.drop(columns="epsilon").merge(
        pub.drop(columns="epsilon"), on=keys, how="outer", sort=False
    )
    out = out.rename(columns={"_eps": "epsilon"})
    known = dict(zip(agg["metric"], agg["higher_is_better"], strict=True))
    hib = [
        bool(h) if isinstance(h, bool | np.bool_) else known.get(m, _direction(m))
        for m, h in zip(out["metric"], out["higher_is_better"], strict=True)
    ]
    out["higher_is_better"] = pd.Series(hib, index=out.index, dtype=bool)
    out["diagnostic"] = [bool(_DIAGNOSTIC.match(str(m))) for m in out["metric"]]
    out["not_dp"] = out["not_dp"].fillna(False).astype(bool)
    out["n"] = out["n"].astype("Int64")  # an integer even where published-only rows have none
    out["diff"] = out["mean"] - out["published"]
    low, high = _diff_interval(out)
    out["diff_ci_low"], out["diff_ci_high"] = out["diff"] - low, out["diff"] + high
    both = out["mean"].notna() & out["published"].notna()
    out["kind"] = np.select(
        [both, out["mean"].notna()], ["ours vs published", "ours"], "published only"
    )
    out["protocol"] = out["protocol"].fillna("")
    out["verdict"] = [_verdict(r, protocol) for r in out.itertuples(index=False)]
    cols = [
        *GROUP_KEY,
        "higher_is_better",
        "diagnostic",
        "not_dp",
        "preset_selection",
        "mean",
        "std",
        "n",
        "seeds",
        "ci_low",
        "ci_high",
        "published",
        "published_std",
        "published_n",
        "source",
        "protocol",
        "diff",
        "diff_ci_low",
        "diff_ci_high",
        "verdict",
        "kind",
        "guarantee",
        "exact",
    ]
    out = out[cols].sort_values(
        ["dataset", "metric", "epsilon", "method", "method_version", "source"],
        na_position="first",
    )
    return out.reset_index(drop=True)


def _diff_interval(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Half-widths (below, above) of the 95% interval of ours − published: Welch's where the
    published std and n are known, else Student t over our seeds (NaN for n < 2)."""
    n1 = rows["n"].astype(float)
    v1 = rows["std"].astype(float) ** 2 / n1
    n2 = rows["published_n"].astype(float)
    v2 = rows["published_std"].astype(float) ** 2 / n2
    welch = v2.notna() & (n2 >= 2)
    var = np.where(welch, v1 + v2, v1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Welch–Satterthwaite; a zero-variance side contributes nothing (0/0 → 0)
        t1, t2 = np.nan_to_num(v1**2 / (n1 - 1)), np.nan_to_num(v2**2 / (n2 - 1))
        terms = t1 + np.where(welch, t2, 0.0)
        dof_welch = np.where(terms > 0, var**2 / np.where(terms > 0, terms, 1.0), n1 - 1)
    dof = np.where(welch, dof_welch, n1 - 1)
    half = pd.Series(np.sqrt(var) * _t_quantile(pd.Series(dof, index=rows.index)), rows.index)
    half[n1 < 2] = math.nan
    return half, half


def _t_quantile(dof: pd.Series) -> np.ndarray:
    """The two-sided :data:`CONFIDENCE` Student-t quantile for each number of degrees of
    freedom (NaN where dof < 1)."""
    from scipy import stats

    d = pd.to_numeric(dof, errors="coerce").astype(float).to_numpy()
    out = np.full(d.shape, math.nan)
    ok = np.isfinite(d) & (d >= 1)
    out[ok] = stats.t.ppf(0.5 + CONFIDENCE / 2, d[ok])
    return out


def _verdict(r: Any, protocol: str | None) -> str:
    """The verdict of one leaderboard row (see :func:`compare`)."""
    if r.kind != "ours vs published":
        return ""
    if r.diagnostic:
        return "diagnostic"
    if not protocol or not r.protocol:
        return "protocol unknown"
    if r.protocol != protocol:
        return "different protocol"
    if _isnan(r.n) or int(r.n) < MIN_SEEDS:
        return f"n<{MIN_SEEDS}"
    low, high = r.diff_ci_low, r.diff_ci_high
    if _isnan(low) or low <= 0 <= high:
        return "tie"
    return "better" if (low > 0) == bool(r.higher_is_better) else "worse"


def epsilon_summary(runs: pd.DataFrame) -> list[str]:
    """One line per target ε: the range of ε spent over kept completed runs, flagging any run
    that spent more than its target (the pipeline refuses those, so this is a cross-check)."""
    table = run_table(runs)
    ok = table[table["status"].eq("completed") & table["superseded_by"].isna()]
    lines = []
    for eps, grp in ok.groupby("epsilon", dropna=False):
        spent = grp["epsilon_spent"].dropna()
        if not math.isfinite(eps):
            lines.append(f"ε = {_fmt_eps(eps)}: non-private, {len(grp)} run(s)")
            continue
        text = f"ε = {_fmt_eps(eps)}: {len(grp)} run(s)"
        if len(spent):
            text += f", spent {spent.min():.4g} – {spent.max():.4g}"
            over = int((spent > eps * (1 + 1e-9)).sum())
            if over:
                text += f" — WARNING: {over} run(s) spent more than the target"
        lines.append(text)
    return lines


def privacy_cost(runs: pd.DataFrame) -> list[str]:
    """What the published runs cost together, one line per dataset.

    Every seed and method of a study is another release of the same private data. The
    releases counted are those of the kept completed DP runs, each once: a run that drew its
    release is one more; a cache hit reuses one (runs sharing a release fingerprint count
    once; a cache hit without a recorded fingerprint is taken to reuse one already counted).
    Their ``privacy.releases`` events (each rebuilt by :class:`~dpsynth.privacy.release.Spend`)
    are composed by :func:`dpsynth.privacy.accounting.epsilon_spent` (PLD, dp-accounting) at
    δ = the sum of the releases' δ (basic composition of δ), less the δ the runs reserved
    outside the Gaussian accounting, under the runs' neighbour relation; mixed relations are
    not composed. Non-private runs and metrics read from the private training split ("not
    DP") are outside this account, and the line says so.
    """
    from dataclasses import fields

    from dpsynth.privacy.accounting import epsilon_spent
    from dpsynth.privacy.release import Spend

    names = {f.name for f in fields(Spend)}
    table = run_table(runs)
    ok = table[table["status"].eq("completed") & table["superseded_by"].isna()]
    lines = []
    for dataset, grp in ok.groupby("dataset", sort=True):
        private = grp[np.isfinite(grp["epsilon"].astype(float))]
        nonprivate = len(grp) - len(private)
        not_dp = int(sum("not_dp" in str(f).split("; ") for f in private["flags"]))
        not_dp += int((private["schema_source"] == "nonprivate").sum())
        releases: dict[str, Any] = {}
        unledgered = hits = 0
        for r in private.itertuples(index=False):
            spends = json.loads(r.releases or "[]")
            if not spends:
                unledgered += 1
                continue
            hits += bool(r.cache_hit)
            key = r.release_fingerprint or ("" if r.cache_hit else r.run_dir)
            if key:
                releases.setdefault(key, (r, spends))
        text = (
            f"Total privacy cost, {dataset}: {len(private)} DP run(s) published "
            f"{len(releases)} release(s) of the same private data"
        )
        if hits:
            text += f" ({hits} cache hit(s) reuse a release)"
        relations = sorted({r.neighbours for r, _ in releases.values()})
        if len(relations) > 1:
            text += (
                f"; not composed: the runs use different neighbour relations ({relations}), "
                "whose ε do not compose"
            )
        elif releases:
            delta = sum(float(r.delta) for r, _ in releases.values())
            reserved = sum(float(r.delta_reserved or 0.0) for r, _ in releases.values())
            events = [
                Spend(**{k: v for k, v in sp.items() if k in names}).event()
                for _, spends in releases.values()
                for sp in spends
            ]
            eps = epsilon_spent(
                events, delta=delta - reserved, neighbours=relations[0], accountant="pld"
            )
            targets = sorted(set(private["epsilon"].astype(float)))
            text += (
                f"; composed ε = {eps:.4g} at δ = {delta:.3g} (δ summed over the releases; "
                f"{relations[0]}; PLD by dp-accounting), beside per-run ε "
                + ", ".join(_fmt_eps(e) for e in targets)
            )
        if unledgered:
            text += f"; {unledgered} run(s) recorded no ledger and are not counted"
        if nonprivate or not_dp:
            text += (
                f"; {nonprivate + not_dp} non-private run(s) also read these data: what is "
                "published as a whole is not DP"
            )
        lines.append(text + ". Metrics marked not DP are outside this account.")
    return lines


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def write_report(
    out: Path,
    title: str,
    runs: pd.DataFrame,
    board: pd.DataFrame,
    agg: pd.DataFrame,
    published: pd.DataFrame,
    *,
    protocol: str | None = None,
    protocol_text: str | None = None,
) -> dict[str, Path]:
    """Write every output file under ``out``; returns name → path of the main files.

    ``protocol`` (and its description ``protocol_text``) is the study's own evaluation
    protocol, stated in the header; the verdicts in ``board`` were computed against it.
    """
    out = Path(out)
    table = run_table(runs)
    header = _header_lines(title, table, runs, protocol=protocol, protocol_text=protocol_text)
    _write_text(out / "leaderboard.csv", board.to_csv(index=False))
    _write_text(out / "runs.csv", table.to_csv(index=False))
    _write_text(out / "leaderboard.md", render_markdown(title, header, board, table))
    figures = plot_curves(
        _version_labels(agg), published[published["dataset"].isin(set(agg["dataset"]))]
    )
    for name, (png, svg) in figures.items():
        atomic_write_bytes(out / "curves" / f"{name}.png", png)
        atomic_write_bytes(out / "curves" / f"{name}.svg", svg)
    pngs = {name: png for name, (png, _) in figures.items()}
    _write_text(out / "index.html", render_html(title, header, board, table, pngs))
    return {k: out / k for k in ("index.html", "leaderboard.md", "leaderboard.csv", "runs.csv")}


def _version_labels(agg: pd.DataFrame) -> pd.DataFrame:
    """Where a method has rows of several versions (``--allow-mixed-versions``), its curves
    are drawn apart, labelled "method [version]"."""
    if agg.empty:
        return agg
    many = agg.groupby("method")["method_version"].nunique()
    label = [
        f"{m} [{v}]" if many.get(m, 1) > 1 else m
        for m, v in zip(agg["method"], agg["method_version"], strict=True)
    ]
    return agg.assign(method=label)


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _header_lines(
    title: str,
    table: pd.DataFrame,
    runs: pd.DataFrame,
    *,
    protocol: str | None = None,
    protocol_text: str | None = None,
) -> list[str]:
    kept = table[table["superseded_by"].isna()]
    done = kept[kept["status"] == "completed"]
    failed = int((kept["status"] != "completed").sum())
    shas = table.loc[table["git_sha"] != "", "git_sha"].value_counts()
    sha_text = (
        ", ".join(
            f"{s[:12]}{'-dirty (uncommitted changes)' if s.endswith('-dirty') else ''} ({n} runs)"
            for s, n in shas.items()
        )
        or "unknown"
    )
    if protocol:
        protocol_line = f"Protocol (ours): {protocol}" + (
            f" — {protocol_text}" if protocol_text else ""
        )
    else:
        protocol_line = (
            "Protocol (ours): not stated (dpsynth-report --protocol ID); no verdicts against "
            "published numbers"
        )
    versions = done.groupby(["method", "method_version"]).size()
    lines = [
        f"Study: {title}",
        f"Runs: {len(table)} found, {len(kept) - failed} completed, {failed} failed, "
        f"{len(table) - len(kept)} superseded duplicate(s)",
        protocol_line,
        *(f"Privacy: {s}" for s in epsilon_summary(runs)),
        *privacy_cost(runs),
        "Guarantees: "
        + (
            ", ".join(
                f"{nb} neighbours / {acc} accountant ({n} runs)"
                for (nb, acc), n in kept.groupby(["neighbours", "accountant"]).size().items()
            )
            or "none"
        ),
        "Method versions: "
        + (", ".join(f"{m} {v} ({n} runs)" for (m, v), n in versions.items()) or "none"),
        f"Git sha: {sha_text}",
        compute_line(table),
    ]
    mixed = mixed_versions(runs)
    if len(mixed):
        lines.append(
            "MIXED VERSIONS (shown as separate rows, never pooled): "
            + "; ".join(
                f"{r.dataset} / {r.method} / ε={_fmt_eps(r.epsilon)}: {r.versions}"
                for r in mixed.itertuples()
            )
        )
    tested = sorted(set(done.loc[done["preset_selection"] == "test_set", "method"]))
    if tested:
        lines.append(
            "Presets chosen on the test set (labelled in the tables): "
            + ", ".join(tested)
            + ". Their numbers are optimistic: the test set also scored them."
        )
    flagged = kept[kept["flags"] != ""]
    if len(flagged):  # e.g. mode collapse: the numbers are real but deserve a second look
        flags = sorted({f for text in flagged["flags"] for f in text.split("; ")})
        lines.append(f"Flags: {len(flagged)} run(s) flagged ({'; '.join(flags)}); see runs.csv")
    deltas = sorted(set(kept["delta"].dropna()))
    if deltas:
        lines.insert(2, "δ: " + ", ".join(f"{d:g}" for d in deltas))
    return lines


def executor_label(info: Any) -> str:
    """Where a run ran, as the report groups it: local, joblib, slurm (node) or ray (node)."""
    if not isinstance(info, dict):
        return "unrecorded"
    kind = str(info.get("kind") or "unrecorded")
    node = info.get("node") or info.get("hostname")
    return f"{kind} ({node})" if kind in ("slurm", "ray") and node else kind


def compute_line(table: pd.DataFrame) -> str:
    """What the study cost: wall and CPU hours summed over every run found (failed and
    superseded ones too: they were paid for). CPU time is process time of all threads, in the
    records that carry it (runs made before it was recorded count in wall time only)."""
    wall = table["wall_seconds"].dropna()
    cpu = table["cpu_seconds"].dropna()
    text = f"Compute: {wall.sum() / 3600:.2f} h wall over {len(wall)} run(s)"
    if len(cpu):
        text += f"; {cpu.sum() / 3600:.2f} h CPU over the {len(cpu)} run(s) that recorded it"
    by = table.groupby("executor", dropna=False)
    if by.ngroups > 1 or (by.ngroups == 1 and "unrecorded" not in table["executor"].values):
        parts = [
            f"{name}: {g['wall_seconds'].sum() / 3600:.2f} h wall, "
            f"{g['cpu_seconds'].sum() / 3600:.2f} h CPU ({len(g)} runs)"
            for name, g in by
        ]
        text += " — by executor: " + "; ".join(parts)
    return text


NOT_DP_MARK = "not DP"
TEST_SET_MARK = "preset chosen on the test set"


def _display_rows(board: pd.DataFrame) -> list[dict[str, str]]:
    """Leaderboard rows as display strings, shared by the Markdown and HTML renderers."""
    rows = []
    for r in board.itertuples(index=False):
        d = _decimals(r.mean if not _isnan(r.mean) else r.published)  # one precision per row
        ours = ci = ""
        if not _isnan(r.mean):
            ours = _fmt(r.mean, d) + ("" if _isnan(r.std) else f" ± {_fmt(r.std, d)}")
            ours += f" (n={int(r.n)})"
            if not _isnan(r.ci_low):
                ci = f"[{_fmt(r.ci_low, d)}, {_fmt(r.ci_high, d)}]"
        published = "" if _isnan(r.published) else f"{r.published:g}"
        if published and not _isnan(r.published_std):
            published += f" ± {r.published_std:g} (n={int(r.published_n)})"
        delta = ""
        if not _isnan(r.diff):
            delta = f"{r.diff:+.{d}f}"
            if not _isnan(r.diff_ci_low):
                delta += f" [{r.diff_ci_low:+.{d}f}, {r.diff_ci_high:+.{d}f}]"
        arrow = "·" if r.diagnostic else "↑" if r.higher_is_better else "↓"
        metric = f"{r.metric} {arrow}"
        if r.diagnostic:
            metric += " (diagnostic)"
        if r.not_dp:
            metric += f" — {NOT_DP_MARK}"
        method = str(r.method)
        if "test_set" in str(r.preset_selection):
            method += f" ({TEST_SET_MARK})"
        rows.append(
            {
                "dataset": str(r.dataset),
                "metric": metric,
                "ε": _fmt_eps(r.epsilon),
                "method": method,
                "version": "" if _isnan(r.method_version) else str(r.method_version),
                "ours": ours or ("published only" if r.kind == "published only" else ""),
                "ours 95% CI": ci,
                "published": published,
                "Δ (ours − pub.) [95% CI]": delta,
                "verdict": str(r.verdict),
                "protocol": str(r.protocol),
                "guarantee (relation, accountant, δ)": ""
                if _isnan(r.guarantee)
                else str(r.guarantee),
                "ε exact": "" if _isnan(r.exact) else f"{r.exact:.3f}",
                "source": "" if _isnan(r.source) else str(r.source),
                "kind": str(r.kind),
                "not_dp": "1" if r.not_dp else "",
            }
        )
    return rows


_TABLE_COLS = [
    "metric",
    "ε",
    "guarantee (relation, accountant, δ)",
    "ε exact",
    "method",
    "version",
    "ours",
    "ours 95% CI",
    "published",
    "Δ (ours − pub.) [95% CI]",
    "verdict",
    "protocol",
    "source",
]

_LEGEND = (
    "Ours: mean ± std over seeds (n seeds) and the 95% confidence interval of the mean "
    "(Student t). ↑ higher is better, ↓ lower is better, · a diagnostic with no direction. "
    "Δ = ours − published, with its 95% interval (Welch's where the published row gives a std "
    "and n; else ours against the published mean). Verdict: better / worse only when that "
    f"interval excludes 0, tie when it covers 0, n<{MIN_SEEDS} below {MIN_SEEDS} seeds, "
    "different protocol / protocol unknown when the published protocol is not ours (no "
    f"verdict). {NOT_DP_MARK}: the metric is computed from the private training split and is "
    "outside every ε on this page."
)


def render_markdown(title: str, header: list[str], board: pd.DataFrame, table: pd.DataFrame) -> str:
    """``leaderboard.md``: header, one table per dataset, failed runs and duplicates."""
    parts = [f"# Leaderboard: {title}", "", *(f"- {line}" for line in header), ""]
    parts += [_LEGEND, ""]
    rows = _display_rows(board)
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        parts += [f"## {dataset}", "", _md_table(_TABLE_COLS, rows, dataset), ""]
    failed, dups = _failed(table), _duplicates(table)
    parts += ["## Failed runs", ""]
    parts += [
        f"- {_run_label(r)}: {r.status}: {_md_escape(_error_text(r))} ({r.run_dir})" for r in failed
    ] or ["None."]
    if dups:
        parts += ["", "## Duplicates (superseded, not averaged)", ""]
        parts += [f"- {_run_label(r)} ({r.status}): {r.note}; kept {r.superseded_by}" for r in dups]
    return "\n".join(parts) + "\n"


def _md_table(cols: list[str], rows: list[dict[str, str]], dataset: str) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if r["dataset"] == dataset:
            lines.append("| " + " | ".join(_md_escape(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;white-space:nowrap}
td:last-child{white-space:normal} nav a{margin-right:1em}
th{background:#f0f0f0} tr.published-only td{color:#777;font-style:italic}
td.better{color:#0a7a0a;font-weight:bold} td.worse{color:#b00020;font-weight:bold}
td.none{color:#777} tr.not-dp td:first-child{color:#8a4b00;font-weight:bold}
figure{display:inline-block;margin:0.5em;vertical-align:top}
img{max-width:100%} pre{white-space:pre-wrap;margin:0}
"""


def render_html(
    title: str,
    header: list[str],
    board: pd.DataFrame,
    table: pd.DataFrame,
    pngs: dict[str, bytes],
) -> str:
    """``index.html``: everything inline (CSS, base64 PNGs), no scripts and no external
    references, so the file opens offline and can be mailed or archived on its own."""
    e = html.escape
    body = [f"<h1>Leaderboard: {e(title)}</h1>", "<ul>"]
    body += [f"<li>{e(line)}</li>" for line in header] + ["</ul>"]
    body.append(f"<p>{e(_LEGEND)} Grey rows: published only.</p>")
    rows = _display_rows(board)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    anchors = [(f"d-{i}", d) for i, d in enumerate(datasets)]
    anchors += [("curves", "Privacy-utility curves"), ("failed", "Failed runs")]
    body.append("<nav>" + "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in anchors) + "</nav>")
    for (anchor, dataset), _ in zip(anchors, datasets, strict=False):
        body += [f'<h2 id="{anchor}">{e(dataset)}</h2>', _html_table(rows, dataset)]
    body.append('<h2 id="curves">Privacy-utility curves</h2>')
    for name, png in pngs.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(
            f'<figure><img alt="{e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(name)} (SVG: curves/{e(name)}.svg)</figcaption></figure>"
        )
    body += [
        '<h2 id="failed">Failed runs</h2>',
        _runs_html(_failed(table), "error") or "<p>None.</p>",
    ]
    dups = _duplicates(table)
    if dups:
        body += ["<h2>Duplicates (superseded, not averaged)</h2>", _runs_html(dups, "note")]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)} — dpsynth report</title><style>{_CSS}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_table(rows: list[dict[str, str]], dataset: str) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(c)}</th>" for c in _TABLE_COLS) + "</tr>"]
    for r in rows:
        if r["dataset"] != dataset:
            continue
        classes = ["published-only"] * (r["kind"] == "published only") + ["not-dp"] * bool(
            r["not_dp"]
        )
        cls = f' class="{" ".join(classes)}"' if classes else ""
        cells = []
        for c in _TABLE_COLS:
            vcls = ""
            if c == "verdict" and r[c]:
                vcls = f' class="{r[c] if r[c] in ("better", "worse", "tie") else "none"}"'
            cells.append(f"<td{vcls}>{e(r[c])}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    return "\n".join([*out, "</table>"])


def _runs_html(runs: list[Any], detail: str) -> str:
    e = html.escape
    if not runs:
        return ""
    out = ["<table><tr><th>run</th><th>status</th><th>folder</th><th>detail</th></tr>"]
    for r in runs:
        text = _error_text(r) if detail == "error" else f"{r.note}; kept {r.superseded_by}"
        out.append(
            f"<tr><td>{e(_run_label(r))}</td><td>{e(r.status)}</td><td>{e(r.run_dir)}</td>"
            f"<td><pre>{e(text)}</pre></td></tr>"
        )
    return "\n".join([*out, "</table>"])


def _failed(table: pd.DataFrame) -> list[Any]:
    kept = table[table["superseded_by"].isna() & table["status"].ne("completed")]
    return list(kept.itertuples(index=False))


def _duplicates(table: pd.DataFrame) -> list[Any]:
    return list(table[table["superseded_by"].notna()].itertuples(index=False))


def _run_label(r: Any) -> str:
    dataset, method, seed = ("?" if _isnan(v) else str(v) for v in (r.dataset, r.method, r.seed))
    return f"{dataset} / {method} / ε={_fmt_eps(r.epsilon)} / seed {seed}"


def _error_text(r: Any) -> str:
    return r.error or "no error recorded: the run may have been killed, or still be running"


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


def plot_curves(agg: pd.DataFrame, published: pd.DataFrame) -> dict[str, tuple[bytes, bytes]]:
    """One figure per metric (a panel per dataset): metric vs ε on a log axis.

    Our methods: solid line, filled markers, error bars = std over seeds. Published points:
    hollow markers in the method's colour; methods only published: hollow markers joined by a
    dashed line. ε = ∞ (non-private) can't sit on a log axis, so it is a horizontal line.

    Returns:
        file stem (metric with ``/`` replaced) → (PNG bytes, SVG bytes).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = sorted(set(agg["method"]) | set(published["method"]))
    palette = matplotlib.colormaps["tab10"].colors + matplotlib.colormaps["Dark2"].colors
    colours = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    out = {}
    for metric in sorted(set(agg["metric"]) | set(published["metric"])):
        a, p = agg[agg["metric"] == metric], published[published["metric"] == metric]
        datasets = sorted(set(a["dataset"]) | set(p["dataset"]))
        fig = Figure(figsize=(4.6 * len(datasets) + 2.4, 3.6), layout="constrained")
        FigureCanvasAgg(fig)  # Agg, set per figure: no pyplot, no global backend switch
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            _plot_panel(ax, a[a["dataset"] == dataset], p[p["dataset"] == dataset], colours)
            ax.set_title(dataset)
            ax.set_ylabel(metric)
        hib = a["higher_is_better"].iloc[0] if len(a) else not _LOWER_IS_BETTER.search(metric)
        how = f"{'higher' if hib else 'lower'} is better"
        if _DIAGNOSTIC.match(metric):
            how = "diagnostic, no direction"
        if _READS_PRIVATE_TRAIN.match(metric):
            how += f"; {NOT_DP_MARK}: reads the private training split"
        fig.suptitle(f"{metric} ({how})")
        handles = {}
        for ax in axes:
            for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, h)
        labels = sorted(handles, key=lambda s: ("(published)" in s, "ε=∞" in s, s))  # ours first
        fig.legend([handles[k] for k in labels], labels, loc="outside right upper", fontsize=8)
        out[_safe_name(metric)] = _render(fig)
    return out


def _plot_panel(ax: Any, ours: pd.DataFrame, pub: pd.DataFrame, colours: dict) -> None:
    ax.set_xscale("log")
    ours_methods = set(ours["method"])
    for method in sorted(set(ours["method"]) | set(pub["method"])):
        c = colours[method]
        o = ours[ours["method"] == method].sort_values("epsilon")
        fin = o[np.isfinite(o["epsilon"].astype(float))]
        if len(fin):
            yerr = fin["std"].fillna(0.0).to_numpy(float)
            ax.errorbar(
                fin["epsilon"], fin["mean"], yerr=yerr, color=c, marker="o", capsize=3, label=method
            )
        for r in o[np.isinf(o["epsilon"].astype(float))].itertuples():
            ax.axhline(r.mean, color=c, ls=":", label=f"{method} (ε=∞)")
            if not _isnan(r.std):
                ax.axhspan(r.mean - r.std, r.mean + r.std, color=c, alpha=0.12, lw=0)
        only = method not in ours_methods
        label = f"{method} (published)"
        for _, grp in pub[pub["method"] == method].groupby("source", sort=True):
            grp = grp.sort_values("epsilon")
            gfin = grp[np.isfinite(grp["epsilon"])]
            ax.plot(
                gfin["epsilon"],
                gfin["value"],
                ls="--" if only else "none",
                marker="s",
                mfc="none",
                mec=c,
                color=c,
                ms=7,
                label=label,
            )
            for v in grp.loc[np.isinf(grp["epsilon"]), "value"]:
                ax.axhline(v, color=c, ls="-.", lw=0.9, label=f"{label} (ε=∞)")
    eps = sorted({float(x) for x in [*ours["epsilon"], *pub["epsilon"]] if math.isfinite(x)})
    if eps:
        ax.set_xlim(eps[0] / 2, eps[-1] * 2)
        ax.set_xticks(eps, [_fmt_eps(x) for x in eps])
        ax.minorticks_off()
    else:
        ax.set_xlim(0.1, 10)
    ax.set_xlabel("ε (log scale)")
    ax.grid(True, alpha=0.3)


def _render(fig: Any) -> tuple[bytes, bytes]:
    """PNG and SVG bytes, without timestamps so re-running gives identical files."""
    import matplotlib

    png, svg = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "dpsynth-report"}):
        fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
        fig.set_layout_engine("none")  # keep the layout just computed: half the SVG's cost
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _safe_name(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_") or "metric"


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _isnan(x: Any) -> bool:
    try:
        return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))
    except TypeError:
        return False


def _eps_key(eps: pd.Series) -> pd.Series:
    """ε as a join key: 0.2 from a CSV and 0.2 from a config are the same ε."""
    return eps.astype(float).round(9)


def _direction(metric: Any) -> bool:
    return not (isinstance(metric, str) and _LOWER_IS_BETTER.search(metric))


def _natural(s: str) -> tuple[int, str]:
    return (int(s), "") if s.lstrip("-").isdigit() else (sys.maxsize, s)


def _decimals(x: float) -> int:
    """Decimals for a value of this size: 2 for accuracies in %, 1 for FID, 3 for AUCs."""
    ax = abs(x) if math.isfinite(x) else 0.0
    return 1 if ax >= 100 else 2 if ax >= 1 else 3


def _fmt(x: float, decimals: int | None = None) -> str:
    if _isnan(x):
        return ""
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{_decimals(x) if decimals is None else decimals}f}"


def _fmt_eps(eps: Any) -> str:
    eps = _float(eps)
    return "?" if math.isnan(eps) else ("∞" if math.isinf(eps) else f"{eps:g}")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpsynth-report",
        description="Aggregate dpsynth runs (every metrics.json below the folders) into a "
        "leaderboard, privacy-utility curves and a self-contained index.html.",
    )
    p.add_argument("dirs", nargs="+", type=Path, help="run or multirun folders")
    p.add_argument(
        "--compare",
        action="append",
        type=Path,
        default=[],
        metavar="CSV",
        help="published numbers (columns: "
        + ",".join(PUBLISHED_COLUMNS)
        + "; optional: "
        + ",".join(PUBLISHED_OPTIONAL)
        + "); repeatable",
    )
    p.add_argument(
        "--protocol",
        metavar="ID",
        help="the study's evaluation protocol (an id of protocols.csv, e.g. "
        "lenet60k-test-fid10k); only published rows of the same protocol get a verdict",
    )
    p.add_argument(
        "--protocols",
        type=Path,
        metavar="CSV",
        help="protocol definitions (default: protocols.csv in the folder above the first "
        "--compare file's, i.e. experiments/protocols.csv, when it exists)",
    )
    p.add_argument(
        "--allow-mixed-versions",
        action="store_true",
        help="show runs of different method versions in one cell as separate rows instead of "
        "refusing (they are never pooled)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: <first dir>/report)")
    p.add_argument("--title", help="study name (default: the --out folder's or first dir's name)")
    return p


def _protocol_table(args: argparse.Namespace) -> tuple[dict[str, str], str] | None:
    """The protocol definitions named by ``--protocols``, or found beside ``--compare``."""
    if args.protocols is not None:
        return load_protocols(args.protocols), str(args.protocols)
    for csv in args.compare:
        guess = Path(csv).resolve().parent.parent / "protocols.csv"
        if guess.is_file():
            return load_protocols(guess), str(guess)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dpsynth-report``; returns 0, or exits with status 1 and a one-line error."""
    args = _parser().parse_args(argv)
    runs = collect_runs(args.dirs)
    mixed = mixed_versions(runs)
    if len(mixed) and not args.allow_mixed_versions:
        raise mixed_versions_error(mixed)
    published = load_published(args.compare)
    protocols = _protocol_table(args)
    if protocols is not None:
        check_protocols(protocols[0], args.protocol, published, protocols[1])
    agg = aggregate(runs)
    board = compare(agg, published, protocol=args.protocol)
    out = args.out or args.dirs[0] / "report"
    title = args.title or (args.out.resolve().name if args.out else args.dirs[0].resolve().name)
    text = protocols[0].get(args.protocol or "") if protocols else None
    files = write_report(
        out, title, runs, board, agg, published, protocol=args.protocol, protocol_text=text
    )
    table = run_table(runs)
    for r in _duplicates(table):
        print(
            f"dpsynth-report: duplicate {_run_label(r)}: {r.run_dir} superseded by "
            f"{r.superseded_by}",
            file=sys.stderr,
        )
    if len(mixed):
        print(
            f"dpsynth-report: {len(mixed)} cell(s) mix method versions; shown as separate rows",
            file=sys.stderr,
        )
    n_failed = len(_failed(table))
    print(
        f"dpsynth-report: {len(table)} run(s), {n_failed} failed, "
        f"{len(_duplicates(table))} duplicate(s) superseded → {files['index.html']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
