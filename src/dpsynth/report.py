"""``dpsynth-report``: leaderboard, privacy-utility curves and one offline HTML page per study.

Usage::

    dpsynth-report multirun/2024-05-01/12-00-00 [more dirs...] \\
        [--compare experiments/fmnist_table/published.csv] [--out results/fmnist_table]

Every ``metrics.json`` below the given folders is one run (schema in :mod:`dpsynth.records`).
Results are data: the tables and plots here are computed from those files and from the
``published.csv`` files, never typed by hand, so a report can always be regenerated.

The pure part (:func:`collect_runs`, :func:`aggregate`, :func:`compare`, :func:`load_published`)
returns DataFrames and does no writing; :func:`write_report` turns them into files, each written
atomically (a reader never sees a half-written report).

Output layout (``--out``, default ``<first dir>/report``)::

    leaderboard.md       our mean ± std (n seeds) beside the published numbers, Δ and verdict
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
RUN_KEY = ["dataset", "method", "epsilon", "seed"]
GROUP_KEY = ["dataset", "method", "epsilon", "metric"]
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
    "git_sha",
    "config_hash",
    "flags",
    "superseded_by",
    "note",
    "wall_seconds",
    "cpu_seconds",
    "executor",
]
# Fallback direction for metrics only the published tables have (our runs carry their own).
_LOWER_IS_BETTER = re.compile(r"fid|loss|time|timings/|epsilon|error|mse|distance", re.I)


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
        if not files:
            raise ReportError(
                f"no metrics.json found under {p} (searched recursively); point dpsynth-report "
                "at a run or multirun folder, e.g. multirun/<date>/<time>"
            )
        found.update(dict.fromkeys(f.resolve() for f in files))
    return list(found)


def collect_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """All runs below ``paths`` in long form: one row per (run, metric).

    A run without metrics (failed, or completed with none) still gets one row, ``metric`` NaN,
    so it is never lost. Completed runs also carry ``privacy/epsilon_spent`` and
    ``timings/total`` as metrics (both lower-is-better), so they are averaged like the rest.
    Repeated (dataset, method, ε, seed) runs are marked, not dropped: ``superseded_by`` names
    the run kept (the newest completed one, by file mtime; the newest if none completed).

    Returns:
        Columns :data:`RUN_COLUMNS` + ``metric``, ``value``, ``higher_is_better``.

    Raises:
        ReportError: see :func:`find_metrics_files`.
    """
    files = find_metrics_files(paths)
    runs, rows = [], []
    for f in files:
        run, metrics, hib = _read_run(f)
        runs.append(run)
        for k, v in metrics.items():
            rows.append({"run_dir": run["run_dir"], "metric": k, "value": v, "hib": hib.get(k)})
    seeds = [r["seed"] for r in runs]
    run_frame = pd.DataFrame(runs, columns=RUN_COLUMNS)
    if all(isinstance(x, int) or x is None for x in seeds):
        run_frame["seed"] = pd.array(seeds, dtype="Int64")  # 0, 1, 2 beside a missing one
    run_frame = _mark_duplicates(run_frame)
    metric_frame = pd.DataFrame(rows, columns=["run_dir", "metric", "value", "hib"])
    out = run_frame.merge(metric_frame, on="run_dir", how="left")
    out["higher_is_better"] = [
        _direction(m) if h is None or _isnan(h) else bool(h)
        for m, h in zip(out["metric"], out.pop("hib"), strict=True)
    ]
    return out.sort_values(["dataset", "method", "epsilon", "seed", "run_dir"]).reset_index(
        drop=True
    )


def _read_run(path: Path) -> tuple[dict[str, Any], dict[str, float], dict[str, bool]]:
    """One metrics.json → (run info, numeric metrics, directions). An unreadable file becomes
    a failed run with the reason, so it shows up in the report instead of vanishing."""
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
        "git_sha": str(rec.get("git_sha") or ""),
        "config_hash": str(rec.get("config_hash") or ""),
        "flags": "; ".join(map(str, rec.get("flags") or [])),
        "superseded_by": None,
        "note": "",
        "wall_seconds": _float((rec.get("timings") or {}).get("total")),
        "cpu_seconds": _float(rec.get("cpu_seconds")),
        "executor": executor_label(rec.get("executor")),
    }
    metrics = {k: float(v) for k, v in (rec.get("metrics") or {}).items() if _is_number(v)}
    hib = {k: bool(v) for k, v in (rec.get("higher_is_better") or {}).items()}
    if run["status"] == "completed":
        extra = {EPSILON_SPENT: run["epsilon_spent"], TOTAL_TIME: (rec.get("timings") or {})}
        extra[TOTAL_TIME] = _float(extra[TOTAL_TIME].get("total"))
        for k, v in extra.items():
            if k not in metrics and not _isnan(v):
                metrics[k], hib[k] = v, False
    return run, metrics, hib


def _mark_duplicates(runs: pd.DataFrame) -> pd.DataFrame:
    """Fill ``superseded_by``/``note`` for runs repeating a (dataset, method, ε, seed).

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
        why = "same (dataset, method, ε, seed) as the kept run"
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


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, method, ε, metric), from kept completed runs only.

    Failed and superseded runs are never averaged in; ``std`` is the sample standard deviation
    (ddof = 1; NaN for one seed), the usual "± std over seeds" of the published tables.

    Returns:
        Columns dataset, method, epsilon, metric, mean, std, n, seeds, higher_is_better.
    """
    ok = runs[
        runs["status"].eq("completed") & runs["superseded_by"].isna() & runs["metric"].notna()
    ]
    ok = ok[ok["value"].notna()]
    cols = [*GROUP_KEY, "mean", "std", "n", "seeds", "higher_is_better", "guarantee", "exact"]
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
            # a cell pooling runs of different guarantees says so (never silently one ε)
            guarantee=("_guarantee", lambda s: " | MIXED | ".join(sorted(set(s)))),
            exact=("epsilon_exact", "max"),
        )
        .reset_index()
    )
    return agg[cols]


def guarantee(run: Any) -> str:
    """What a run's ε means: neighbour relation, accountant, δ; "not DP" when its numbers are
    not backed by a DP guarantee (a non-private schema, or a non-private method)."""
    not_dp = "not_dp" in str(run.flags).split("; ") or run.schema_source == "nonprivate"
    if not math.isfinite(run.epsilon):
        return "not DP (non-private)"
    text = f"{run.neighbours}, {run.accountant}, δ={run.delta:g}"
    return f"not DP ({text}, non-private schema)" if not_dp else text


def load_published(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Published numbers from ``published.csv`` files (columns :data:`PUBLISHED_COLUMNS`).

    Raises:
        ReportError: a file is missing, empty, lacks a column (naming the file, the columns
            found and those expected), or has a non-numeric ε/value (naming the line).
    """
    frames = [pd.DataFrame(columns=list(PUBLISHED_COLUMNS))]
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
                f"{list(PUBLISHED_COLUMNS)} (missing {missing})"
            )
        frame = frame[list(PUBLISHED_COLUMNS)].copy()
        for col in ("epsilon", "value"):
            num = pd.to_numeric(frame[col].str.strip(), errors="coerce")
            if num.isna().any():
                i = int(np.flatnonzero(num.isna().to_numpy())[0])
                raise ReportError(
                    f"{path}, line {i + 2}: column {col!r} must be a number, got "
                    f"{frame[col].iloc[i]!r} (write ε = ∞ as inf)"
                )
            frame[col] = num.astype(float)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    for col in ("dataset", "method", "metric", "source"):
        out[col] = out[col].astype(str).str.strip()
    return out.astype({"epsilon": float, "value": float})


def compare(agg: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Our aggregates beside the published numbers, one row per (group, published source).

    Published rows for datasets we have no runs of are dropped (they would bury the table);
    published rows of methods or ε we don't run stay, with ``kind`` "published only".
    ``diff`` is ours − published; ``better`` says whether that difference goes the right way
    for the metric (False for a tie), and ``within_std`` whether it is no larger than our std
    over seeds, i.e. whether the verdict could flip with other seeds.

    Returns:
        Columns dataset, method, epsilon, metric, higher_is_better, mean, std, n, seeds,
        published, source, diff, better, within_std, kind.
    """
    pub = published.rename(columns={"value": "published"})
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
    out["n"] = out["n"].astype("Int64")  # an integer even where published-only rows have none
    out["diff"] = out["mean"] - out["published"]
    both = out["mean"].notna() & out["published"].notna()
    sign = np.where(out["higher_is_better"], 1.0, -1.0)
    out["better"] = pd.Series(np.where(both, sign * out["diff"] > 0, None), index=out.index)
    within = out["diff"].abs() <= out["std"]
    out["within_std"] = pd.Series(np.where(both & out["std"].notna(), within, None), out.index)
    out["kind"] = np.select(
        [both, out["mean"].notna()], ["ours vs published", "ours"], "published only"
    )
    cols = [
        *GROUP_KEY,
        "higher_is_better",
        "mean",
        "std",
        "n",
        "seeds",
        "published",
        "source",
        "diff",
        "better",
        "within_std",
        "kind",
        "guarantee",
        "exact",
    ]
    out = out[cols].sort_values(
        ["dataset", "metric", "epsilon", "method", "source"], na_position="first"
    )
    return out.reset_index(drop=True)


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
) -> dict[str, Path]:
    """Write every output file under ``out``; returns name → path of the main files."""
    out = Path(out)
    table = run_table(runs)
    header = _header_lines(title, table, runs)
    _write_text(out / "leaderboard.csv", board.to_csv(index=False))
    _write_text(out / "runs.csv", table.to_csv(index=False))
    _write_text(out / "leaderboard.md", render_markdown(title, header, board, table))
    figures = plot_curves(agg, published[published["dataset"].isin(set(agg["dataset"]))])
    for name, (png, svg) in figures.items():
        atomic_write_bytes(out / "curves" / f"{name}.png", png)
        atomic_write_bytes(out / "curves" / f"{name}.svg", svg)
    pngs = {name: png for name, (png, _) in figures.items()}
    _write_text(out / "index.html", render_html(title, header, board, table, pngs))
    return {k: out / k for k in ("index.html", "leaderboard.md", "leaderboard.csv", "runs.csv")}


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _header_lines(title: str, table: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    kept = table[table["superseded_by"].isna()]
    failed = int((kept["status"] != "completed").sum())
    shas = table.loc[table["git_sha"] != "", "git_sha"].value_counts()
    sha_text = ", ".join(f"{s[:12]} ({n} runs)" for s, n in shas.items()) or "unknown"
    lines = [
        f"Study: {title}",
        f"Runs: {len(table)} found, {len(kept) - failed} completed, {failed} failed, "
        f"{len(table) - len(kept)} superseded duplicate(s)",
        *(f"Privacy: {s}" for s in epsilon_summary(runs)),
        "Guarantees: "
        + (
            ", ".join(
                f"{nb} neighbours / {acc} accountant ({n} runs)"
                for (nb, acc), n in kept.groupby(["neighbours", "accountant"]).size().items()
            )
            or "none"
        ),
        f"Git sha: {sha_text}",
        compute_line(table),
    ]
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


def _display_rows(board: pd.DataFrame) -> list[dict[str, str]]:
    """Leaderboard rows as display strings, shared by the Markdown and HTML renderers."""
    rows = []
    for r in board.itertuples(index=False):
        ours = ""
        if not _isnan(r.mean):
            d = _decimals(r.mean)  # std and Δ with the mean's decimals, to compare by eye
            ours = _fmt(r.mean, d) + ("" if _isnan(r.std) else f" ± {_fmt(r.std, d)}")
            ours += f" (n={int(r.n)})"
        verdict = ""
        if r.better is not None and not _isnan(r.better):
            verdict = "better" if r.better else "equal" if r.diff == 0 else "worse"
            if r.within_std is True:
                verdict += " (within 1 std)"
        rows.append(
            {
                "dataset": str(r.dataset),
                "metric": f"{r.metric} {'↑' if r.higher_is_better else '↓'}",
                "ε": _fmt_eps(r.epsilon),
                "method": str(r.method),
                "ours": ours or ("published only" if r.kind == "published only" else ""),
                "published": "" if _isnan(r.published) else f"{r.published:g}",
                "Δ (ours − pub.)": "" if _isnan(r.diff) else f"{r.diff:+.{_decimals(r.mean)}f}",
                "verdict": verdict,
                "guarantee (relation, accountant, δ)": ""
                if _isnan(r.guarantee)
                else str(r.guarantee),
                "ε exact": "" if _isnan(r.exact) else f"{r.exact:.3f}",
                "source": "" if _isnan(r.source) else str(r.source),
                "kind": str(r.kind),
            }
        )
    return rows


_TABLE_COLS = [
    "metric",
    "ε",
    "guarantee (relation, accountant, δ)",
    "ε exact",
    "method",
    "ours",
    "published",
    "Δ (ours − pub.)",
    "verdict",
    "source",
]


def render_markdown(title: str, header: list[str], board: pd.DataFrame, table: pd.DataFrame) -> str:
    """``leaderboard.md``: header, one table per dataset, failed runs and duplicates."""
    parts = [f"# Leaderboard: {title}", "", *(f"- {line}" for line in header), ""]
    parts += [
        "Ours: mean ± std over seeds (n seeds). ↑ higher is better, ↓ lower is better. "
        "Δ = ours − published.",
        "",
    ]
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
    body.append(
        "<p>Ours: mean ± std over seeds (n seeds). ↑ higher is better, ↓ lower is better. "
        "Δ = ours − published. Grey rows: published only.</p>"
    )
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
        cls = ' class="published-only"' if r["kind"] == "published only" else ""
        cells = []
        for c in _TABLE_COLS:
            vcls = f' class="{r[c].split()[0]}"' if c == "verdict" and r[c] else ""
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
        fig.suptitle(f"{metric} ({'higher' if hib else 'lower'} is better)")
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
        help="published numbers (columns: " + ",".join(PUBLISHED_COLUMNS) + "); repeatable",
    )
    p.add_argument("--out", type=Path, help="output folder (default: <first dir>/report)")
    p.add_argument("--title", help="study name (default: the --out folder's or first dir's name)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dpsynth-report``; returns 0, or exits with status 1 and a one-line error."""
    args = _parser().parse_args(argv)
    runs = collect_runs(args.dirs)
    published = load_published(args.compare)
    agg = aggregate(runs)
    board = compare(agg, published)
    out = args.out or args.dirs[0] / "report"
    title = args.title or (args.out.resolve().name if args.out else args.dirs[0].resolve().name)
    files = write_report(out, title, runs, board, agg, published)
    table = run_table(runs)
    for r in _duplicates(table):
        print(
            f"dpsynth-report: duplicate {_run_label(r)}: {r.run_dir} superseded by "
            f"{r.superseded_by}",
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
