"""dpsynth-report on fake run folders: the numbers in the leaderboard, the files it writes, the
HTML being self-contained, and clear errors for an empty folder or a malformed published CSV."""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dpsynth.records import write_json
from dpsynth.report import (
    PUBLISHED_COLUMNS,
    aggregate,
    collect_runs,
    compare,
    load_published,
    main,
)

REPO = Path(__file__).resolve().parents[1]
HIB = {"eval/acc_cnn": True, "eval/acc_logreg": True, "eval/fid": False}


def write_run(
    root: Path,
    name: str,
    *,
    method: str,
    epsilon: float,
    seed: int,
    metrics: dict[str, float] | None = None,
    dataset: str = "fashion_mnist",
    error: str | None = None,
    mtime: float | None = None,
    flags: list[str] | None = None,
    neighbours: str = "replace_one",
) -> Path:
    """One fake run folder with a metrics.json in the pipeline's schema."""
    record: dict[str, Any] = {
        "schema_version": 1,
        "status": "failed" if error else "completed",
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "config_hash": f"h{method}{epsilon}{seed}",
        "privacy": {
            "epsilon": epsilon,
            "delta": 1e-5,
            "accountant": "pld",
            "neighbours": neighbours,
            "epsilon_spent": None if error else min(epsilon, 0.99 * epsilon),
            "epsilon_exact": None if error else min(epsilon, 0.99 * epsilon),
            "releases": [],
            "cache_hit": False,
        },
        "metrics": {} if error else dict(metrics or {}),
        "higher_is_better": {} if error else {k: HIB[k] for k in metrics or {}},
        "flags": flags or [],
        "timings": {"load": 1.0, "total": 10.0 + seed},
        "cpu_seconds": 18.0 + seed,
        "git_sha": "0123456789abcdef0123",
        "versions": {},
        "executor": {"kind": "slurm", "node": "gpu7"} if seed == 2 else {"kind": "local"},
    }
    if error:
        record["error"] = error
    path = root / name / "metrics.json"
    write_json(path, record)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path.parent


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A multirun: pearl ε ∈ {1, 10} × 3 seeds, dpmerf ε = 1 × 2 seeds + 1 failed seed, a stale
    duplicate of pearl ε = 1 seed 0, a non-private run, and a published CSV. Built once per
    module: rendering the plots is the slow part."""
    tmp_path = tmp_path_factory.mktemp("study")
    multirun = tmp_path / "multirun" / "2024-05-01"
    t = 1_700_000_000.0
    pearl = {1.0: [(70, 100), (72, 110), (74, 120)], 10.0: [(60, 90), (62, 95), (64, 100)]}
    i = 0
    for eps, values in pearl.items():
        for seed, (acc, fid) in enumerate(values):
            m = {"eval/acc_cnn": acc, "eval/fid": fid, "eval/acc_logreg": acc - 1}
            write_run(multirun, str(i), method="pearl", epsilon=eps, seed=seed, metrics=m, mtime=t)
            i += 1
    # an older run of the same (dataset, method, ε, seed): must be superseded, not averaged
    write_run(
        multirun,
        "old",
        method="pearl",
        epsilon=1.0,
        seed=0,
        metrics={"eval/acc_cnn": 10.0, "eval/fid": 500.0},
        mtime=t - 3600,
    )
    # a newer failed retry of a completed run: the completed one still wins
    write_run(multirun, "retry", method="pearl", epsilon=10.0, seed=2, error="Killed", mtime=t + 1)
    for seed, acc in enumerate([71.0, 73.0]):
        write_run(
            multirun,
            f"m{seed}",
            method="dpmerf",
            epsilon=1.0,
            seed=seed,
            metrics={"eval/acc_cnn": acc, "eval/fid": 99.0},
            mtime=t,
        )
    write_run(
        multirun,
        "m2",
        method="dpmerf",
        epsilon=1.0,
        seed=2,
        error="RuntimeError: out of <memory> & swap",
        mtime=t,
    )
    write_run(
        multirun,
        "np",
        method="nonprivate_gan",
        epsilon=math.inf,
        seed=0,
        metrics={"eval/acc_cnn": 80.0, "eval/fid": 50.0},
        mtime=t,
        flags=["mode collapse: 3 distinct samples"],
    )
    published = tmp_path / "published.csv"
    published.write_text(
        "dataset,method,epsilon,metric,value,source\n"
        'fashion_mnist,pearl,1,eval/acc_cnn,68.3,"DPDM paper Table 1 (re-run of PEARL)"\n'
        'fashion_mnist,pearl,1,eval/fid,109,"DPDM paper Table 1 (re-run of PEARL)"\n'
        "fashion_mnist,pearl,0.2,eval/acc_cnn,68.0,DPDM\n"
        "fashion_mnist,dpmerf,1,eval/acc_cnn,72.4,SoK-PPDS\n"
        "fashion_mnist,dpdm,1,eval/acc_cnn,76.4,DPImageBench\n"
        "fashion_mnist,dpdm,10,eval/acc_cnn,85.6,DPImageBench\n"
        "fashion_mnist,real_data,inf,eval/acc_cnn,90.0,ceiling\n"
        "mnist,pearl,1,eval/acc_cnn,78.2,other dataset\n"
    )
    return {"multirun": multirun, "published": published, "out": tmp_path / "report"}


@pytest.fixture(scope="module")
def report(study: dict[str, Path]) -> dict[str, Any]:
    rc = main(
        [str(study["multirun"]), "--compare", str(study["published"]), "--out", str(study["out"])]
    )
    assert rc == 0
    out = study["out"]
    board = pd.read_csv(out / "leaderboard.csv")
    return {"out": out, "board": board, "html": (out / "index.html").read_text()}


def row(board: pd.DataFrame, method: str, eps: float, metric: str) -> pd.Series:
    sel = board[(board.method == method) & (board.epsilon == eps) & (board.metric == metric)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_mean_std_over_seeds(report: dict[str, Any]) -> None:
    r = row(report["board"], "pearl", 1.0, "eval/acc_cnn")
    assert r["mean"] == pytest.approx(72.0)  # the stale duplicate (10.0) is not averaged in
    assert r["std"] == pytest.approx(statistics.stdev([70, 72, 74]))
    assert r["n"] == 3 and r["seeds"] == "0,1,2"
    r = row(report["board"], "pearl", 10.0, "eval/fid")
    assert r["mean"] == pytest.approx(95.0) and r["n"] == 3  # failed retry didn't replace seed 2
    assert row(report["board"], "pearl", 1.0, "timings/total")["mean"] == pytest.approx(11.0)
    assert row(report["board"], "pearl", 1.0, "privacy/epsilon_spent")["mean"] == pytest.approx(
        0.99
    )


def test_failed_run_listed_not_averaged(report: dict[str, Any]) -> None:
    r = row(report["board"], "dpmerf", 1.0, "eval/acc_cnn")
    assert r["n"] == 2 and r["mean"] == pytest.approx(72.0)
    md = (report["out"] / "leaderboard.md").read_text()
    failed = md.split("## Failed runs")[1]
    assert "dpmerf / ε=1 / seed 2" in failed and "RuntimeError: out of <memory>" in failed
    assert "pearl / ε=10 / seed 2" not in failed.split("## Duplicates")[0]  # superseded retry
    assert "Duplicates" in md and "kept" in md
    assert "RuntimeError: out of &lt;memory&gt; &amp; swap" in report["html"]  # escaped
    runs = pd.read_csv(report["out"] / "runs.csv")
    assert len(runs) == 12 and runs["superseded_by"].notna().sum() == 2


def test_differences_vs_published(report: dict[str, Any]) -> None:
    board = report["board"]
    acc = row(board, "pearl", 1.0, "eval/acc_cnn")
    assert acc["published"] == 68.3 and acc["diff"] == pytest.approx(72.0 - 68.3)
    assert acc["better"] and acc["kind"] == "ours vs published"
    assert acc["source"] == "DPDM paper Table 1 (re-run of PEARL)"
    fid = row(board, "pearl", 1.0, "eval/fid")  # lower is better: 110 vs 109 is worse
    assert fid["diff"] == pytest.approx(1.0) and not fid["better"] and fid["within_std"]
    merf = row(board, "dpmerf", 1.0, "eval/acc_cnn")
    assert merf["diff"] == pytest.approx(72.0 - 72.4) and not merf["better"]
    dpdm = board[board.method == "dpdm"]
    assert set(dpdm["kind"]) == {"published only"} and set(dpdm["epsilon"]) == {1.0, 10.0}
    assert row(board, "pearl", 0.2, "eval/acc_cnn")["kind"] == "published only"
    assert row(board, "real_data", math.inf, "eval/acc_cnn")["published"] == 90.0
    assert row(board, "nonprivate_gan", math.inf, "eval/acc_cnn")["kind"] == "ours"
    assert "mnist" not in set(board["dataset"])  # no runs of it: its published rows are noise
    assert list(board.columns[:4]) == ["dataset", "method", "epsilon", "metric"]


def test_markdown_table(report: dict[str, Any]) -> None:
    md = (report["out"] / "leaderboard.md").read_text()
    g = "replace_one, pld, δ=1e-05 | 0.990"
    assert (
        f"| eval/acc_cnn ↑ | 1 | {g} | pearl | 72.00 ± 2.00 (n=3) | 68.3 | +3.70 | better |" in md
    )
    assert (
        f"| eval/fid ↓ | 1 | {g} | pearl | 110.0 ± 10.0 (n=3) | 109 | +1.0 | worse (within 1 std) |"
        in md
    )
    assert "Guarantees: replace_one neighbours / pld accountant" in md
    assert re.search(r"\| dpdm \| published only \| 76\.4 \|", md)


def test_files_and_self_contained_html(report: dict[str, Any]) -> None:
    out, page = report["out"], report["html"]
    for metric in ("eval_acc_cnn", "eval_fid", "eval_acc_logreg", "timings_total"):
        assert (out / "curves" / f"{metric}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / "curves" / f"{metric}.svg").read_bytes()[:2000]
    assert "<table>" in page and "<img" in page and "Failed runs" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"<(script|link|iframe)\b", page, re.I)
    assert "fashion_mnist" in page and "0123456789ab" in page  # header: git sha
    assert "12 found, 9 completed, 1 failed, 2 superseded" in page
    # every run found was paid for: wall 10 + seed s each, CPU 18 + seed s
    assert re.search(r"Compute: 0\.0\d h wall over 12 run\(s\); 0\.0\d h CPU over the 12 ", page)
    # the compute bill per executor (issue 14): local runs and the SLURM node's apart
    assert re.search(r"by executor: local: 0\.0\d h wall, 0\.0\d h CPU \(\d+ runs\); ", page)
    assert re.search(r"slurm \(gpu7\): 0\.0\d h wall, 0\.0\d h CPU \(\d+ runs\)", page)
    assert "Flags: 1 run(s) flagged (mode collapse: 3 distinct samples)" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5 and all(base64.b64decode(b)[:4] == b"\x89PNG" for b in images)


def test_default_out_and_rerun_is_identical(study: dict[str, Path], report: dict[str, Any]) -> None:
    """Default ``--out`` is ``<first dir>/report``; the same inputs give byte-identical files,
    and the report folder inside the multirun is not mistaken for a run."""
    main([str(study["multirun"]), "--compare", str(study["published"]), "--title", "report"])
    out = study["multirun"] / "report"
    files = sorted(p.relative_to(report["out"]) for p in report["out"].rglob("*") if p.is_file())
    assert len(files) == 14
    for rel in files:
        assert (out / rel).read_bytes() == (report["out"] / rel).read_bytes(), rel
    assert len(collect_runs([study["multirun"]]).drop_duplicates("run_dir")) == 12


def test_pure_functions(study: dict[str, Path]) -> None:
    runs = collect_runs([study["multirun"]])
    agg = aggregate(runs)
    assert not agg[["dataset", "method", "epsilon", "metric"]].duplicated().any()
    board = compare(agg, load_published([]))
    assert set(board["kind"]) == {"ours"} and board["published"].isna().all()


def test_empty_folder_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"no metrics\.json found under .*empty"):
        main([str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="missing_dir: no such file or folder"):
        main([str(tmp_path / "missing_dir")])


def test_bad_published_csv(study: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad_published.csv"
    bad.write_text("dataset,method,eps,metric,value\nfashion_mnist,pearl,1,eval/acc_cnn,1\n")
    with pytest.raises(SystemExit) as info:
        main([str(study["multirun"]), "--compare", str(bad)])
    msg = str(info.value)
    assert (
        "bad_published.csv" in msg and "'eps'" in msg and "'epsilon'" in msg and "'source'" in msg
    )
    bad.write_text("dataset,method,epsilon,metric,value,source\nmnist,pearl,one,eval/fid,1,x\n")
    with pytest.raises(SystemExit, match=r"bad_published\.csv, line 2: column 'epsilon'"):
        load_published([bad])


@pytest.mark.parametrize("path", sorted(REPO.glob("experiments/*/published.csv")), ids=str)
def test_repo_published_files_parse(path: Path) -> None:
    frame = load_published([path])
    assert list(frame.columns) == list(PUBLISHED_COLUMNS)
    assert (frame["source"] != "").all()
    assert not frame[["dataset", "method", "epsilon", "metric", "source"]].duplicated().any()


def test_repo_published_numbers() -> None:
    frame = load_published([REPO / "experiments/fmnist_table/published.csv"])
    sel = frame[(frame.method == "pearl") & (frame.epsilon == 1) & (frame.metric == "eval/acc_cnn")]
    assert list(sel["value"]) == [68.3]
    assert set(frame["method"]) >= {"pearl", "dpmerf", "dpsgd", "dpgan_tuned", "dpdm"}


# --------------------------------------------------------------------------------------------
# Rendering in a real browser (slow; needs Debian's chromium)
# --------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def _run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_html_renders_in_headless_chromium(report: dict[str, Any], tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    url = (report["out"] / "index.html").resolve().as_uri()
    dom = _run_chromium(exe, tmp_path / "profile1", "--dump-dom", url)
    if dom.returncode != 0 and not dom.stdout.strip():
        pytest.skip(f"chromium could not start here: {dom.stderr.strip()[-500:]}")
    assert "<table>" in dom.stdout and "pearl" in dom.stdout and "Failed runs" in dom.stdout
    assert dom.stdout.count('src="data:image/png;base64,') == 5
    shot = tmp_path / "shot.png"
    res = _run_chromium(
        exe,
        tmp_path / "profile2",
        "--window-size=1400,5000",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        url,
    )
    for proc in (dom, res):
        console = [ln for ln in proc.stderr.splitlines() if re.search("Uncaught|CONSOLE", ln)]
        assert not console, console
    import numpy as np
    from PIL import Image

    with Image.open(shot) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=int)
    # the curves draw in matplotlib's tab10 blue and orange; nothing else on the page does, so
    # a page whose embedded PNGs failed to decode has none of these pixels
    for colour in [(31, 119, 180), (255, 127, 14)]:
        near = int((np.abs(rgb - np.array(colour)).sum(axis=-1) < 40).sum())
        assert near > 100, f"no {colour} pixels in the screenshot: the plots did not render"


def test_guarantee_is_shown_per_row_and_never_silently_pooled(tmp_path) -> None:
    """Every row says its relation, accountant and δ; a non-private schema is "not DP"; a cell
    pooling two relations says MIXED instead of passing for one ε."""
    from dpsynth.report import aggregate, collect_runs

    for seed, nb in ((0, "replace_one"), (1, "add_remove")):
        write_run(
            tmp_path,
            f"m{seed}",
            method="pearl",
            epsilon=1.0,
            seed=seed,
            metrics={"eval/acc_cnn": 70.0},
            neighbours=nb,
        )
    write_run(
        tmp_path,
        "n0",
        method="dpmerf",
        epsilon=1.0,
        seed=0,
        metrics={"eval/acc_cnn": 70.0},
        flags=["not_dp"],
    )
    agg = aggregate(collect_runs([tmp_path]))
    by_method = dict(zip(agg["method"], agg["guarantee"], strict=True))
    assert by_method["pearl"] == ("add_remove, pld, δ=1e-05 | MIXED | replace_one, pld, δ=1e-05")
    assert by_method["dpmerf"].startswith("not DP")
