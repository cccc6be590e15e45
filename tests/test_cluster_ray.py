"""Ray for real: a local Ray head (started here on 127.0.0.1 and stopped by its PID) runs
``dpsynth -m hydra/launcher=ray`` sweeps on the bundled digits.

- every run's metrics.json names its Ray node and cluster address;
- a job whose worker dies mid-training with no retries left stops the sweep command; re-running
  the sweep skips the finished jobs and continues that one from its checkpoint, with its one
  release (``cache_hit``, the release cache and the run's ledger unchanged);
- with retries (ray.yaml's ``max_retries``), a killed worker's job runs again by itself and
  continues where it stopped;
- a run that fails (a bad evaluation setting, after release and training) is ``failed`` in its
  metrics.json while the other completes;
- run folders land under the sweep command's directory, not the head's;
- the default ``address=local`` starts and stops a private loopback Ray and writes no token.

Slow (about 4 minutes on 2 busy cores); skipped where ray / hydra-ray-launcher are not
installed (pip install -e ".[ray]").
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dpsynth.config import CONF_DIR
from tests.test_cluster_slurm import (
    _ckpt_step,
    _job_line,
    _launch,
    _ledger_spends,
    _records,
    _run_dir,
    _sha,
    _wait,
)

STEPS = 1000
CKPT_EVERY = 50


# --------------------------------------------------------------------------- fast: the config


def test_ray_launcher_config() -> None:
    """Composes without ray installed; the settings that make joining a cluster work."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=ray"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    init = launcher.ray.init
    assert init.object_store_memory is None  # never the launcher's 75 MB
    assert init.include_dashboard is False
    assert init.address == os.environ.get("RAY_ADDRESS", "local")  # never null / auto
    assert launcher.ray.remote.num_cpus == 1 and launcher.ray.remote.max_retries > 0
    callback = cfg.hydra.callbacks.ray_environment
    assert callback._target_ == "dpsynth.executor.RayEnvironment"
    assert callback.auth_mode == "disabled" and callback.loopback is True
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        joined = compose(
            "config",
            overrides=["hydra/launcher=ray", "hydra.launcher.ray.init.address=10.0.0.1:6379"],
            return_hydra_config=True,
        )
    assert OmegaConf.select(joined, "hydra.launcher.ray.init.address") == "10.0.0.1:6379"


# --------------------------------------------------------------------------- slow: a real head


def _skip_reason() -> str | None:
    for module, what in (
        ("ray", "ray"),
        ("hydra_plugins.hydra_ray_launcher", "hydra-ray-launcher"),
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f'{what} is not installed (pip install -e ".[ray]")'
    if not sys.platform.startswith("linux"):
        return "the loopback-only Ray head is set up for Linux"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str
    env: dict[str, str]
    pid: int
    temp_dir: Path


def _processes_with(needle: str) -> list[int]:
    """PIDs whose command line mentions ``needle`` (the head's private temp dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _pids_holding(path: Path) -> list[int]:
    """PIDs with ``path`` open (the run's lock file is held by the process running it)."""
    target, pids = str(path), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == target:
                    pids.append(int(proc.name))
                    break
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def ray_head() -> Iterator[Head]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    temp_dir = Path(tempfile.mkdtemp(prefix="dpray", dir="/tmp"))  # socket paths ≤ 107 bytes
    port = _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every component on 127.0.0.1
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_MODE": "disabled",
        "PYTHONWARNINGS": "ignore",
    }
    log = temp_dir / "head.log"
    with open(log, "w") as f:
        head = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ray.scripts.scripts",
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--num-cpus=2",
                "--include-dashboard=false",
                f"--ray-client-server-port={_free_port()}",
                f"--dashboard-agent-listen-port={_free_port()}",
                f"--temp-dir={temp_dir}",
                "--disable-usage-stats",
            ],
            cwd=temp_dir,  # not the sweep's directory: run folders must not follow it
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(
            lambda: "Ray runtime started" in log.read_text(errors="replace"),
            120,
            "the Ray head",
            head,
            log,
        )
        driver_env = {k: v for k, v in env.items() if not k.startswith("RAY_")}  # set by ray.yaml
        yield Head(f"127.0.0.1:{port}", driver_env, head.pid, temp_dir)
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        time.sleep(1)
        left = _processes_with(str(temp_dir))
        for pid in left:  # only this head's processes (its private temp dir), by PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left after stopping the head: {left}"


def _kill_job(run_dir: Path, timeout: float = 60) -> int:
    """SIGKILL the Ray worker running ``run_dir`` (it holds the run's lock file)."""
    lock = run_dir.parent / f".{run_dir.name}.lock"
    (pid,) = _wait(lambda: _pids_holding(lock), timeout, f"the worker holding {lock}")
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.slow
def test_sweep_on_ray(ray_head: Head, tmp_path: Path) -> None:
    t_start = time.time()
    sweep_dir = tmp_path / "sweep"
    cache = tmp_path / "cache"
    common = [
        "-m",
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={ray_head.address}",
        "hydra.sweep.dir=sweep",
        f"cache_dir={cache}",
        "dataset=digits",
        "eval=fast",
        "progress=false",
        "method.num_features=200",
        f"method.checkpoint_every={CKPT_EVERY}",
        "dataset.n_synthetic=500",
    ]
    sweep = [*common, "method=dpmerf,pearl", "seed=0,1", f"method.steps={STEPS}"]

    # 1. no retries: the last job's worker dies after a checkpoint; the sweep command fails
    log1 = tmp_path / "sweep1.log"
    proc = _launch(
        [*sweep, "hydra.launcher.ray.remote.max_retries=0"], tmp_path, ray_head.env, log1
    )
    last = _wait(lambda: _job_line(log1, 3), 120, "the launcher's job list", proc, log1)
    run_dir = _wait(
        lambda: _run_dir(sweep_dir, last["method"], last["seed"]), 600, "job #3's run", proc, log1
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    _wait(ckpt.exists, 600, "job #3's first checkpoint", proc, log1)
    step_killed = _ckpt_step(ckpt)
    _kill_job(run_dir)
    rc = proc.wait(timeout=900)
    out = log1.read_text(errors="replace")
    assert rc != 0 and "died" in out.lower(), out[-3000:]
    records = _records(sweep_dir)
    done = {d: r for d, r in records.items() if r["status"] == "completed"}
    assert len(done) == 3 and run_dir not in done, out[-3000:]
    assert not (tmp_path / "sweep").is_symlink() and not list(ray_head.temp_dir.glob("sweep"))
    head_node = {r["executor"]["ray"]["node_id"] for r in done.values()}
    assert len(head_node) == 1 and None not in head_node
    for r in done.values():
        ex = r["executor"]
        assert ex["kind"] == "ray" and ex["node"] == "127.0.0.1" and ex["cpus"] == 1, ex
        assert ex["ray"]["address"] == ray_head.address

    # 2. the same sweep with retries: only the killed job runs, from its checkpoint; its worker
    #    is killed once more and Ray runs it again, from where it stopped
    before = {p: _sha(p) for p in cache.rglob("*.npz")}
    own_release = run_dir / "release.npz"
    before[own_release] = _sha(own_release)
    finished = {d: (d / "metrics.json").read_bytes() for d in done}
    mtime = ckpt.stat().st_mtime_ns
    log2 = tmp_path / "sweep2.log"
    proc = _launch(sweep, tmp_path, ray_head.env, log2)
    _wait(
        lambda: ckpt.stat().st_mtime_ns != mtime, 600, "a checkpoint of the resumed job", proc, log2
    )
    step_retried = _ckpt_step(ckpt)
    assert step_retried > step_killed, "the re-run did not continue from the checkpoint"
    _kill_job(run_dir)
    rc = proc.wait(timeout=900)
    assert rc == 0, log2.read_text(errors="replace")[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed", record.get("error")
    assert step_retried <= record["resumed_from_step"] < STEPS
    assert record["executor"]["kind"] == "ray"
    assert record["executor"]["ray"]["node_id"] in head_node
    privacy = record["privacy"]
    assert privacy["cache_hit"] is True
    assert privacy["epsilon_spent"] <= privacy["epsilon"] * (1 + 1e-9)
    assert privacy["releases"] == _ledger_spends(own_release)
    assert {p: _sha(p) for p in before} == before
    assert set(cache.rglob("*.npz")) | {own_release} == set(before)
    for d, raw in finished.items():
        assert (d / "metrics.json").read_bytes() == raw

    # 3. a failing run is `failed`; the other job completes and the sweep command succeeds
    log3 = tmp_path / "sweep3.log"
    failing = [*common, "method=dpmerf", "seed=2", "method.steps=100"]
    proc = _launch(
        [*failing, "+eval.classifier_params.logreg.max_iter=100,-1"], tmp_path, ray_head.env, log3
    )
    assert proc.wait(timeout=900) == 0, log3.read_text(errors="replace")[-3000:]
    runs = [r for r in _records(sweep_dir).values() if r["seed"] == 2]
    assert sorted(r["status"] for r in runs) == ["completed", "failed"], runs
    (failed,) = [r for r in runs if r["status"] == "failed"]
    assert "max_iter" in failed["error"] and failed["executor"]["kind"] == "ray"
    print(f"Ray sweep test: {time.time() - t_start:.0f} s")


@pytest.mark.slow
def test_default_local_ray(tmp_path: Path) -> None:
    """`hydra/launcher=ray` as is: a private Ray on loopback for the sweep, gone after it."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    temp_dir = Path(tempfile.mkdtemp(prefix="dpray", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    args = [
        "-m",
        "hydra/launcher=ray",
        f"+hydra.launcher.ray.init._temp_dir={temp_dir}",
        "hydra.sweep.dir=sweep",
        f"cache_dir={tmp_path / 'cache'}",
        "method=dpmerf",
        "method.steps=50",
        "method.num_features=200",
        "dataset.n_synthetic=500",
        "progress=false",
    ]
    log = tmp_path / "local.log"
    proc = _launch(args, tmp_path, env, log)
    try:
        assert proc.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]
        (record,) = _records(tmp_path / "sweep").values()
        assert record["status"] == "completed"
        ex = record["executor"]
        assert ex["kind"] == "ray" and ex["node"] == "127.0.0.1", ex
        assert token.exists() == had_token  # RAY_AUTH_MODE was set: no token written
        time.sleep(2)
        assert not _processes_with(str(temp_dir)), "the sweep's private Ray outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)
