"""dpsynth-report on fake run folders: the numbers in the leaderboard, the files it writes, the
HTML being self-contained, and clear errors for an empty folder or a malformed published CSV;
and what a reviewer needs (issue 12): verdicts only from 95% intervals over ≥ 3 seeds (Welch's
against a published std), method versions never pooled, protocols compared only like with like,
metrics read from the private training split marked "not DP", presets chosen on the test set
labelled, and the total ε of every release a study published, composed by dp-accounting."""

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
    PUBLISHED_OPTIONAL,
    aggregate,
    collect_runs,
    compare,
    load_protocols,
    load_published,
    main,
)

REPO = Path(__file__).resolve().parents[1]
HIB = {"eval/acc_cnn": True, "eval/acc_logreg": True, "eval/fid": False, "eval/mia_auc": False}
PROTOCOL = "lenet60k-test-fid10k"


def gaussian_spend(noise_multiplier: float, count: int = 1) -> dict[str, Any]:
    """One ledger entry as metrics.json lists it (``vars(Spend)``)."""
    return {
        "mechanism": "gaussian",
        "statistic": "embedding",
        "noise_multiplier": noise_multiplier,
        "sensitivity": 1.0,
        "noise_std": noise_multiplier,
        "count": count,
        "steps": 0,
        "sample_rate": 1.0,
        "expected_batch_size": 0,
        "share": None,
        "parts": {},
    }


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
    version: str | None = None,
    preset_selection: str | None = None,
    releases: list[dict[str, Any]] | None = None,
    cache_hit: bool = False,
    fingerprint: str | None = None,
    not_dp_metrics: list[str] | None = None,
) -> Path:
    """One fake run folder with a metrics.json in the pipeline's schema (and a config.json
    with ``method.preset_selection`` when one is given)."""
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
            "releases": list(releases or []),
            "cache_hit": cache_hit,
        },
        "release": {"fingerprint": fingerprint},
        "method_version": version or f"{method}-1",
        "metrics": {} if error else dict(metrics or {}),
        "higher_is_better": {} if error else {k: HIB.get(k, True) for k in metrics or {}},
        "flags": flags or [],
        "timings": {"load": 1.0, "total": 10.0 + seed},
        "cpu_seconds": 18.0 + seed,
        "git_sha": "0123456789abcdef0123",
        "versions": {},
        "executor": {"kind": "slurm", "node": "gpu7"} if seed == 2 else {"kind": "local"},
    }
    if error:
        record["error"] = error
    if not_dp_metrics is not None:
        record["not_dp_metrics"] = not_dp_metrics
    path = root / name / "metrics.json"
    if preset_selection is not None:
        config = {"method": {"_target_": "x", "preset_selection": preset_selection}}
        write_json(root / name / "config.json", config)
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
    DPDM = '"DPDM paper Table 1 (re-run of PEARL)"'
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
        "dataset,method,epsilon,metric,value,protocol,source\n"
        f"fashion_mnist,pearl,1,eval/acc_cnn,68.3,{PROTOCOL},{DPDM}\n"
        f"fashion_mnist,pearl,1,eval/fid,109,{PROTOCOL},{DPDM}\n"
        f"fashion_mnist,pearl,0.2,eval/acc_cnn,68.0,{PROTOCOL},DPDM\n"
        f"fashion_mnist,pearl,10,eval/acc_cnn,50.0,{PROTOCOL},DPDM\n"
        "fashion_mnist,pearl,10,eval/fid,90,dpib-3cnn55k-sel5k-fidtrain,DPImageBench\n"
        f"fashion_mnist,dpmerf,1,eval/acc_cnn,72.4,{PROTOCOL},SoK-PPDS\n"
        "fashion_mnist,dpdm,1,eval/acc_cnn,76.4,dpib-3cnn55k-sel5k-fidtrain,DPImageBench\n"
        "fashion_mnist,dpdm,10,eval/acc_cnn,85.6,dpib-3cnn55k-sel5k-fidtrain,DPImageBench\n"
        f"fashion_mnist,real_data,inf,eval/acc_cnn,90.0,{PROTOCOL},ceiling\n"
        f"mnist,pearl,1,eval/acc_cnn,78.2,{PROTOCOL},other dataset\n"
    )
    return {"multirun": multirun, "published": published, "out": tmp_path / "report"}


@pytest.fixture(scope="module")
def report(study: dict[str, Path]) -> dict[str, Any]:
    rc = main(
        [
            str(study["multirun"]),
            "--compare",
            str(study["published"]),
            "--protocol",
            PROTOCOL,
            "--protocols",
            str(REPO / "experiments" / "protocols.csv"),
            "--out",
            str(study["out"]),
        ]
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
    t2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom
    acc = row(board, "pearl", 1.0, "eval/acc_cnn")
    assert acc["published"] == 68.3 and acc["diff"] == pytest.approx(72.0 - 68.3)
    half = t2 * 2.0 / math.sqrt(3)  # our interval against the published mean (no published std)
    assert acc["ci_low"] == pytest.approx(72.0 - half) and acc["ci_high"] == pytest.approx(
        72 + half
    )
    assert acc["diff_ci_low"] == pytest.approx(3.7 - half)
    assert acc["diff_ci_high"] == pytest.approx(3.7 + half)
    # +3.7 points over 3 seeds of std 2: the interval covers 0, so no "better"
    assert acc["verdict"] == "tie" and acc["kind"] == "ours vs published"
    assert acc["source"] == "DPDM paper Table 1 (re-run of PEARL)" and acc["protocol"] == PROTOCOL
    fid = row(board, "pearl", 1.0, "eval/fid")  # 110 ± 10 vs 109: a tie, not "worse"
    assert fid["diff"] == pytest.approx(1.0) and fid["verdict"] == "tie"
    far = row(board, "pearl", 10.0, "eval/acc_cnn")  # 62 ± 2 vs 50: the interval excludes 0
    assert far["verdict"] == "better" and far["diff_ci_low"] > 0
    other = row(board, "pearl", 10.0, "eval/fid")  # DPImageBench's protocol: no verdict
    assert other["verdict"] == "different protocol" and other["diff"] == pytest.approx(5.0)
    merf = row(board, "dpmerf", 1.0, "eval/acc_cnn")  # 2 seeds (the third failed)
    assert merf["diff"] == pytest.approx(72.0 - 72.4) and merf["verdict"] == "n<3"
    dpdm = board[board.method == "dpdm"]
    assert set(dpdm["kind"]) == {"published only"} and set(dpdm["epsilon"]) == {1.0, 10.0}
    assert row(board, "pearl", 0.2, "eval/acc_cnn")["kind"] == "published only"
    assert row(board, "real_data", math.inf, "eval/acc_cnn")["published"] == 90.0
    assert row(board, "nonprivate_gan", math.inf, "eval/acc_cnn")["kind"] == "ours"
    assert set(board["method_version"].dropna()) == {"pearl-1", "dpmerf-1", "nonprivate_gan-1"}
    assert "mnist" not in set(board["dataset"])  # no runs of it: its published rows are noise
    assert list(board.columns[:5]) == ["dataset", "method", "epsilon", "metric", "method_version"]


def test_markdown_table(report: dict[str, Any]) -> None:
    md = (report["out"] / "leaderboard.md").read_text()
    g = "replace_one, pld, δ=1e-05 | 0.990"
    assert (
        f"| eval/acc_cnn ↑ | 1 | {g} | pearl | pearl-1 | 72.00 ± 2.00 (n=3) | [67.03, 76.97] "
        f"| 68.3 | +3.70 [-1.27, +8.67] | tie | {PROTOCOL} |" in md
    )
    assert (
        f"| eval/fid ↓ | 1 | {g} | pearl | pearl-1 | 110.0 ± 10.0 (n=3) | [85.2, 134.8] | 109 | "
        f"+1.0 [-23.8, +25.8] | tie | {PROTOCOL} |" in md
    )
    assert "| 62.00 ± 2.00 (n=3) | [57.03, 66.97] | 50 | +12.00 [+7.03, +16.97] | better |" in md
    assert "| different protocol | dpib-3cnn55k-sel5k-fidtrain | DPImageBench |" in md
    assert "| 72.00 ± 1.41 (n=2) | [59.29, 84.71] | 72.4 | -0.40 [-13.11, +12.31] | n<3 |" in md
    assert "Guarantees: replace_one neighbours / pld accountant" in md
    assert f"Protocol (ours): {PROTOCOL} — SoK-PPDS / DPDM Table 1" in md
    assert (
        "Method versions: dpmerf dpmerf-1 (2 runs), nonprivate_gan nonprivate_gan-1 (1 runs)" in md
    )
    assert re.search(r"\| dpdm \|\s+\| published only \|\s+\| 76\.4 \|", md)


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
    main(
        [
            str(study["multirun"]),
            *("--compare", str(study["published"]), "--title", "report"),
            *("--protocol", PROTOCOL, "--protocols", str(REPO / "experiments" / "protocols.csv")),
        ]
    )
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
    assert list(frame.columns) == [*PUBLISHED_COLUMNS, *PUBLISHED_OPTIONAL]
    assert (frame["source"] != "").all()
    assert not frame[["dataset", "method", "epsilon", "metric", "source"]].duplicated().any()
    # every published row names its protocol, defined in experiments/protocols.csv
    assert "protocol" in pd.read_csv(path, nrows=0).columns
    protocols = load_protocols(REPO / "experiments" / "protocols.csv")
    assert (frame["protocol"] != "").all() and set(frame["protocol"]) <= set(protocols)


@pytest.mark.parametrize(
    "study", ["adult", "celeba", "ceiling", "digits_quick", "fmnist_table", "mnist_table"]
)
def test_repo_studies_name_their_protocol(study: str) -> None:
    """Each study states our protocol in its README and passes it to dpsynth-report."""
    protocols = load_protocols(REPO / "experiments" / "protocols.csv")
    readme = (REPO / "experiments" / study / "README.md").read_text()
    named = re.findall(r"Our protocol: `([^`]+)`", readme)
    assert named and named[0] in protocols
    script = (REPO / "experiments" / study / "run.sh").read_text()
    assert "--protocol" in script and named[0] in script


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


# --------------------------------------------------------------------------------------------
# Issue 12: leaderboards a reviewer would accept
# --------------------------------------------------------------------------------------------


def _board(
    root: Path, published: str, *, protocol: str | None = PROTOCOL, **main_args: Any
) -> pd.DataFrame:
    """Aggregate the runs under ``root`` against a published CSV text (header included)."""
    csv = root / "published.csv"
    csv.write_text(published)
    return compare(aggregate(collect_runs([root / "runs"])), load_published([csv]), protocol)


def _seeds(root: Path, method: str, metrics: dict[str, list[float]], **kw: Any) -> None:
    """One run per seed, ``metrics[k][seed]`` its value of metric k."""
    n = len(next(iter(metrics.values())))
    for seed in range(n):
        values = {k: v[seed] for k, v in metrics.items()}
        write_run(root / "runs", f"{method}{seed}", method=method, epsilon=1.0, seed=seed,
                  metrics=values, **kw)  # fmt: skip


def test_verdict_rule(tmp_path: Path) -> None:
    """better / worse only when the 95% interval of the difference excludes 0, tie when it
    covers it, no verdict under 3 seeds; Welch's interval where the published std is known."""
    from scipy import stats

    _seeds(
        tmp_path,
        "pearl",
        {
            "eval/acc_cnn": [80.0, 81.0, 82.0],  # vs 70: far above → better
            "eval/fid": [100.0, 101.0, 102.0],  # vs 90, lower is better → worse
            "eval/acc_logreg": [70.0, 72.0, 74.0],  # vs 72.5: the interval covers 0 → tie
            "eval/acc_mlp": [80.0, 81.0, 82.0],  # vs 78 ± 3 (n = 3): Welch → tie
        },
    )
    _seeds(tmp_path, "dpmerf", {"eval/acc_cnn": [90.0, 91.0]})  # 2 seeds: no verdict
    board = _board(
        tmp_path,
        "dataset,method,epsilon,metric,value,std,n,protocol,source\n"
        f"fashion_mnist,pearl,1,eval/acc_cnn,70,,,{PROTOCOL},a\n"
        f"fashion_mnist,pearl,1,eval/fid,90,,,{PROTOCOL},b\n"
        f"fashion_mnist,pearl,1,eval/acc_logreg,72.5,,,{PROTOCOL},c\n"
        f"fashion_mnist,pearl,1,eval/acc_mlp,78,3,3,{PROTOCOL},d\n"
        f"fashion_mnist,dpmerf,1,eval/acc_cnn,50,,,{PROTOCOL},e\n",
    )
    verdicts = {(r.method, r.metric): r.verdict for r in board.itertuples()}
    assert verdicts[("pearl", "eval/acc_cnn")] == "better"
    assert verdicts[("pearl", "eval/fid")] == "worse"
    assert verdicts[("pearl", "eval/acc_logreg")] == "tie"
    assert verdicts[("pearl", "eval/acc_mlp")] == "tie"
    assert verdicts[("dpmerf", "eval/acc_cnn")] == "n<3"  # 40 points above, still no verdict
    # the intervals themselves: Student t over our seeds ...
    t2 = stats.t.ppf(0.975, 2)
    acc = row(board, "pearl", 1.0, "eval/acc_cnn")
    assert acc["diff_ci_low"] == pytest.approx(11 - t2 / math.sqrt(3))
    # ... and Welch's with Welch–Satterthwaite degrees of freedom against a published std
    v1, v2 = 1.0 / 3, 9.0 / 3
    dof = (v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 2)
    half = stats.t.ppf(0.975, dof) * math.sqrt(v1 + v2)
    mlp = row(board, "pearl", 1.0, "eval/acc_mlp")
    assert mlp["diff_ci_low"] == pytest.approx(3 - half)
    assert mlp["diff_ci_high"] == pytest.approx(3 + half)
    assert mlp["published_std"] == 3 and mlp["published_n"] == 3
    # without the published std the same numbers would read "better": the std matters
    plain = _board(
        tmp_path,
        f"dataset,method,epsilon,metric,value,protocol,source\n"
        f"fashion_mnist,pearl,1,eval/acc_mlp,78,{PROTOCOL},d\n",
    )
    assert row(plain, "pearl", 1.0, "eval/acc_mlp")["verdict"] == "better"


def test_published_std_needs_n(tmp_path: Path) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("dataset,method,epsilon,metric,value,std,source\nmnist,pearl,1,eval/fid,1,2,x\n")
    with pytest.raises(SystemExit, match=r"p\.csv, line 2: a published std needs"):
        load_published([bad])


def test_mixed_versions_refused_or_shown_apart(tmp_path: Path) -> None:
    """Runs of two method versions in one cell are never pooled: an error naming the cell and
    the versions, or, with --allow-mixed-versions, one row per version."""
    runs = tmp_path / "runs"
    for seed, version, acc in ((0, "pearl-1", 70.0), (1, "pearl-1", 72.0), (2, "pearl-2", 90.0)):
        write_run(runs, f"r{seed}", method="pearl", epsilon=1.0, seed=seed,
                  metrics={"eval/acc_cnn": acc}, version=version)  # fmt: skip
    # the same seed re-run by the new code is not a duplicate of the old one
    write_run(runs, "r0new", method="pearl", epsilon=1.0, seed=0,
              metrics={"eval/acc_cnn": 88.0}, version="pearl-2")  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main([str(runs), "--out", str(tmp_path / "out")])
    msg = str(info.value)
    assert "fashion_mnist / pearl / ε=1: pearl-1 (2 runs), pearl-2 (2 runs)" in msg
    assert "--allow-mixed-versions" in msg and not (tmp_path / "out").exists()
    main([str(runs), "--out", str(tmp_path / "out"), "--allow-mixed-versions"])
    board = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    acc = board[board.metric == "eval/acc_cnn"].set_index("method_version")
    assert acc.loc["pearl-1", "mean"] == pytest.approx(71.0) and acc.loc["pearl-1", "n"] == 2
    assert acc.loc["pearl-2", "mean"] == pytest.approx(89.0) and acc.loc["pearl-2", "n"] == 2
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "MIXED VERSIONS (shown as separate rows, never pooled)" in md
    assert "| pearl | pearl-1 | 71.00 ± 1.41 (n=2)" in md
    assert "| pearl | pearl-2 | 89.00 ± 1.41 (n=2)" in md
    assert not pd.read_csv(tmp_path / "out" / "runs.csv")["superseded_by"].notna().any()


def test_protocol_mismatch_gets_no_verdict(tmp_path: Path) -> None:
    _seeds(tmp_path, "pearl", {"eval/acc_cnn": [80.0, 81.0, 82.0], "eval/fid": [50.0, 51, 52]})
    text = (
        "dataset,method,epsilon,metric,value,protocol,source\n"
        f"fashion_mnist,pearl,1,eval/acc_cnn,70,{PROTOCOL},same\n"
        "fashion_mnist,pearl,1,eval/fid,90,dpib-3cnn55k-sel5k-fidtrain,other\n"
        "fashion_mnist,dpdm,1,eval/acc_cnn,76,dpib-3cnn55k-sel5k-fidtrain,published only\n"
    )
    board = _board(tmp_path, text)
    assert row(board, "pearl", 1.0, "eval/acc_cnn")["verdict"] == "better"
    assert row(board, "pearl", 1.0, "eval/fid")["verdict"] == "different protocol"
    assert row(board, "dpdm", 1.0, "eval/acc_cnn")["verdict"] == ""
    unknown = _board(tmp_path, text, protocol=None)  # ours not stated: no verdict at all
    assert set(unknown["verdict"]) == {"protocol unknown", ""}
    # through the CLI: the header states ours, the tables mark the others
    protocols = str(REPO / "experiments" / "protocols.csv")
    out = tmp_path / "out"
    main([str(tmp_path / "runs"), "--compare", str(tmp_path / "published.csv"),
          "--protocol", PROTOCOL, "--protocols", protocols, "--out", str(out)])  # fmt: skip
    md = (out / "leaderboard.md").read_text()
    assert f"- Protocol (ours): {PROTOCOL} — " in md
    assert "| different protocol | dpib-3cnn55k-sel5k-fidtrain | other |" in md
    assert '<td class="none">different protocol</td>' in (out / "index.html").read_text()
    # ids must be defined
    with pytest.raises(SystemExit, match=r"protocol id\(s\) \['nope'\] are not defined"):
        main([str(tmp_path / "runs"), "--compare", str(tmp_path / "published.csv"),
              "--protocol", "nope", "--protocols", protocols, "--out", str(out)])  # fmt: skip


def test_not_dp_metrics_are_marked(tmp_path: Path) -> None:
    """Metrics read from the private training split say "not DP" in markdown and HTML; the DCR
    statistics are diagnostics with no direction and no verdict."""
    values = {
        "eval/acc_cnn": [80.0, 81.0, 82.0],
        "eval/real_acc_cnn": [90.0, 90.5, 91.0],
        "eval/dcr_ratio": [1.5, 1.6, 1.7],
        "eval/mia_auc": [0.50, 0.51, 0.52],
        "eval/custom": [1.0, 2.0, 3.0],  # declared by the run as read from the training split
    }
    _seeds(tmp_path, "pearl", values, not_dp_metrics=["eval/custom"])
    board = _board(
        tmp_path,
        "dataset,method,epsilon,metric,value,protocol,source\n"
        f"fashion_mnist,pearl,1,eval/dcr_ratio,1.0,{PROTOCOL},x\n",
    )
    marked = set(board.loc[board["not_dp"], "metric"])
    assert marked == {"eval/real_acc_cnn", "eval/dcr_ratio", "eval/mia_auc", "eval/custom"}
    dcr = row(board, "pearl", 1.0, "eval/dcr_ratio")
    assert dcr["diagnostic"] and dcr["verdict"] == "diagnostic"  # 0.6 above 1: not "better"
    out = tmp_path / "out"
    main([str(tmp_path / "runs"), "--out", str(out)])
    md = (out / "leaderboard.md").read_text()
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert lines["eval/real_acc_cnn ↑ — not DP"]
    assert lines["eval/dcr_ratio · (diagnostic) — not DP"]
    assert lines["eval/mia_auc ↓ — not DP"] and lines["eval/custom ↑ — not DP"]
    assert "eval/acc_cnn ↑" in lines  # a test-split metric is not marked
    page = (out / "index.html").read_text()
    assert page.count('<tr class="not-dp">') == 4
    assert "<td>eval/real_acc_cnn ↑ — not DP</td>" in page


def test_preset_chosen_on_test_set_is_labelled(tmp_path: Path) -> None:
    _seeds(tmp_path, "pearl_tuned", {"eval/acc_cnn": [80.0, 81.0, 82.0]},
           preset_selection="test_set")  # fmt: skip
    _seeds(tmp_path, "pearl", {"eval/acc_cnn": [70.0, 71.0, 72.0]}, preset_selection="authors")
    runs = collect_runs([tmp_path / "runs"])
    assert set(zip(runs["method"], runs["preset_selection"], strict=True)) == {
        ("pearl_tuned", "test_set"),
        ("pearl", "authors"),
    }
    out = tmp_path / "out"
    main([str(tmp_path / "runs"), "--out", str(out)])
    md = (out / "leaderboard.md").read_text()
    assert "| pearl_tuned (preset chosen on the test set) | pearl_tuned-1 |" in md
    assert "| pearl | pearl-1 |" in md
    assert "Presets chosen on the test set (labelled in the tables): pearl_tuned." in md


def test_total_cost_composes_every_release(tmp_path: Path) -> None:
    """Two runs with known Gaussian releases (and a cache hit of the first one's) compose, at
    δ summed over the releases, to what dp-accounting says for the union of their events."""
    import dp_accounting

    from dpsynth.privacy.accounting import Gaussian, epsilon_spent
    from dpsynth.report import privacy_cost

    runs = tmp_path / "runs"
    common = {"method": "pearl", "epsilon": 1.0, "metrics": {"eval/acc_cnn": 70.0}}
    write_run(runs, "a", seed=0, releases=[gaussian_spend(4.0)], fingerprint="f0", **common)
    write_run(runs, "b", seed=1, releases=[gaussian_spend(3.0, count=2)], fingerprint="f1",
              **common)  # fmt: skip
    write_run(runs, "c", seed=2, releases=[gaussian_spend(4.0)], fingerprint="f0",
              cache_hit=True, **common)  # fmt: skip
    lines = privacy_cost(collect_runs([runs]))
    assert len(lines) == 1
    line = lines[0]
    assert "3 DP run(s) published 2 release(s) of the same private data" in line
    assert "(1 cache hit(s) reuse a release)" in line
    delta = 2e-5  # two releases at δ = 1e-5 each (basic composition of δ)
    expected = epsilon_spent([Gaussian(4.0, 1), Gaussian(3.0, 2)], delta=delta)
    assert f"composed ε = {expected:.4g} at δ = 2e-05" in line
    assert "beside per-run ε 1" in line
    # dp-accounting's own PLD accountant agrees (up to its discretisation)
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(dp_accounting.GaussianDpEvent(4.0))
    acc.compose(dp_accounting.GaussianDpEvent(3.0), 2)
    assert expected == pytest.approx(acc.get_epsilon(delta), rel=2e-3)
    assert expected > 1.0  # more than any one run's ε: what the per-run rows do not say
    # the header of the report carries it
    main([str(runs), "--out", str(tmp_path / "out")])
    assert line in (tmp_path / "out" / "leaderboard.md").read_text()
    # mixed neighbour relations are not composed
    write_run(runs, "d", seed=3, releases=[gaussian_spend(5.0)], fingerprint="f3",
              neighbours="add_remove", **common)  # fmt: skip
    (mixed,) = privacy_cost(collect_runs([runs]))
    assert "not composed: the runs use different neighbour relations" in mixed
    assert "composed ε =" not in mixed
