"""The real command line, in subprocesses: the default job, error exits, kill -9 and resume,
sweeps that skip finished jobs, launcher and logger configs that compose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from dpsynth.config import CONF_DIR

ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def dpsynth(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dpsynth", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_default_job_writes_the_run_folder(tmp_path) -> None:
    out = dpsynth(
        "method.steps=30", f"cache_dir={tmp_path / 'cache'}", "hydra.run.dir=run", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["dataset"] == "digits"
    assert record["privacy"]["epsilon_spent"] <= 1.0
    assert "eval/acc_logreg" in record["metrics"]
    for name in ("config.json", "samples.npz", "samples.png", "logs/metrics.csv"):
        assert (tmp_path / "run" / name).exists(), name
    assert "ε spent" in out.stdout
    # the same command again: skipped, nothing re-spent
    again = dpsynth(
        "method.steps=30", f"cache_dir={tmp_path / 'cache'}", "hydra.run.dir=run", cwd=tmp_path
    )
    assert again.returncode == 0 and "skipped" in again.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["privacy.epsilon=0"], "privacy.epsilon"),
        (["privacy.delta=2"], "privacy.delta"),
        (["method.lr=-1"], "method.lr"),
    ],
)
def test_bad_values_exit_nonzero_with_one_message(tmp_path, args, needle) -> None:
    out = dpsynth(*args, "hydra.run.dir=run", f"cache_dir={tmp_path / 'c'}", cwd=tmp_path)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("dpsynth: error:")]
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "c").exists()


def test_unknown_choice_lists_options(tmp_path) -> None:
    out = dpsynth("method=nosuch", cwd=tmp_path)
    assert out.returncode != 0
    assert "pearl" in out.stderr and "dpmerf" in out.stderr
    assert not (tmp_path / "outputs").exists()


def test_kill_and_resume(tmp_path) -> None:
    args = [
        "method=pearl",
        "method.steps=800",
        "method.checkpoint_every=100",
        f"cache_dir={tmp_path / 'cache'}",
        "hydra.run.dir=run",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpsynth", *args],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    assert not (tmp_path / "run" / "metrics.json").exists()
    out = dpsynth(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["resumed_from_step"] >= 100
    assert record["privacy"]["cache_hit"] is True  # the release came from its cache
    # the single original spend (the DP σ0² estimate and the embedding), nothing re-spent
    assert [r["statistic"] for r in record["privacy"]["releases"]] == [
        "mean_sq_norm+mean",
        "embedding",
    ]


def test_sweep_skips_finished_jobs_and_survives_failures(tmp_path) -> None:
    common = [
        "-m",
        "study=t",
        "method.steps=5",
        f"cache_dir={tmp_path / 'cache'}",
        "hydra.sweep.dir=sweep",
        "eval=fast",
    ]
    out = dpsynth(*common, "method=pearl,dpmerf", "method.hidden=16", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    records = sorted((tmp_path / "sweep").rglob("metrics.json"))
    assert len(records) == 2
    again = dpsynth(*common, "method=pearl,dpmerf", "method.hidden=16", cwd=tmp_path)
    assert again.stdout.count("skipped") == 2
    # a failing job (sigma0_sq missing is caught before any work) does not stop the next one
    mixed = dpsynth(
        *common,
        "method=pearl",
        "method.hidden=16",
        "seed=1,2",
        "dataset.sigma0_sq=-1",
        cwd=tmp_path,
    )
    assert mixed.returncode == 0
    assert mixed.stderr.count("dpsynth: error:") == 2


def _compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_launchers_compose() -> None:
    slurm = _compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    assert "SlurmLauncher" in slurm.hydra.launcher._target_
    assert slurm.hydra.launcher.partition == "gpu" and slurm.hydra.launcher.gpus_per_node == 1
    joblib = _compose_with_hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert "JoblibLauncher" in joblib.hydra.launcher._target_


def test_thread_share_for_parallel_jobs(monkeypatch) -> None:
    import torch

    from dpsynth.cli import set_threads

    cfg = _compose_with_hydra(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    try:
        set_threads(cfg.hydra)
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_wandb_offline_run_files(tmp_path, monkeypatch) -> None:
    from dpsynth.pipeline import run
    from tests.conftest import shrink

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = _compose_with_hydra(["logger=wandb", f"cache_dir={tmp_path / 'cache'}"])
    HydraConfig.instance().set_config(cfg)
    cfg = shrink(cfg)
    assert cfg.logger.offline is True
    assert cfg.logger.tags == ["pearl", "digits", "eps1.0"]
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "completed"
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "no wandb run file written"
