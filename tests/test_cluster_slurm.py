"""SLURM for real: a one-node cluster from Debian's packages (experiments/cluster/slurm_local.sh:
munge, MariaDB + slurmdbd, slurmctld, slurmd) runs ``dpsynth -m hydra/launcher=slurm`` sweeps
on the bundled digits.

- every run's metrics.json names its SLURM job (array id, task) and node;
- a job cancelled mid-training (``scancel``) stops the sweep command; re-running the sweep
  skips the finished jobs and continues that one from its checkpoint, with its one release
  (``cache_hit``, the release cache and the run's ledger unchanged);
- a job that SLURM requeues (what preemption does: ``scontrol requeue``) runs again by itself
  and continues where it stopped;
- a run that fails (here: a bad evaluation setting, after its release and training) is
  ``failed`` in its metrics.json while the other completes (sacct says COMPLETED for both: a
  job's exit is not a run's status);
- the cluster is stopped by the PIDs it recorded.

Slow (about 6 minutes on 2 busy cores); needs root and apt-get (or the packages installed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dpsynth.config import CONF_DIR

REPO = CONF_DIR.parent
SCRIPT = REPO / "experiments" / "cluster" / "slurm_local.sh"
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "sacct", "slurmdbd", "mariadbd")
STEPS = 1000  # long enough that a job is still training when the test acts on it
CKPT_EVERY = 50


# --------------------------------------------------------------------------- fast: the config


def test_slurm_launcher_config() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.additional_parameters.requeue is True  # preempted jobs come back
    assert launcher.max_num_timeout > 0  # and so do jobs at their time limit
    assert any("OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in line for line in launcher.setup)
    conf = (REPO / "experiments" / "cluster" / "slurm.conf").read_text()
    for needle in ("DefMemPerCPU=", "accounting_storage/slurmdbd", "SelectType=select/cons_tres"):
        assert needle in conf


# --------------------------------------------------------------------------- slow: a real cluster


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "a local SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return "needs root: the SLURM daemons run as root and the packages come from apt-get"
    if not all(shutil.which(c) for c in COMMANDS) and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    return None


@dataclass
class Cluster:
    env: dict[str, str]
    state: Path
    node: str

    def run(self, *cmd: str, check: bool = True) -> str:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr}")
        return out.stdout

    def queue(self) -> list[str]:
        """Job ids in the queue, one per array task (``<array>_<task>``)."""
        return self.run("squeue", "-h", "-r", "-o", "%i").split()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.lower()
    except OSError:
        pass
    return ""


@pytest.fixture(scope="module")
def slurm() -> Cluster:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # short path: the munge and MariaDB sockets live in it (≤ 107 bytes)
    state = Path(tempfile.mkdtemp(prefix="dpslurm", dir="/tmp"))
    up = subprocess.run(
        ["bash", str(SCRIPT), "up", str(state)], capture_output=True, text=True, timeout=900
    )
    pids = {p.stem: int(p.read_text()) for p in (state / "run").glob("*.pid")}
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down", str(state)], capture_output=True, timeout=120)
        if "apt-get install failed" in up.stderr:
            pytest.skip(f"could not install SLURM with apt-get: {up.stderr.strip()[-300:]}")
        pytest.fail(f"slurm_local.sh up failed:\n{up.stderr[-3000:]}")
    assert set(pids) == {"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd"}, pids
    env = {
        **os.environ,
        "SLURM_CONF": str(state / "slurm.conf"),
        "WANDB_MODE": "disabled",
        "PYTHONWARNINGS": "ignore",
    }
    cluster = Cluster(env=env, state=state, node="")
    cluster.node = cluster.run("sinfo", "-h", "-o", "%n").strip()
    try:
        yield cluster
    finally:
        down = subprocess.run(
            ["bash", str(SCRIPT), "down", str(state)], capture_output=True, text=True, timeout=120
        )
        alive = {name: pid for name, pid in pids.items() if _alive(pid)}
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stderr
        assert not alive, f"daemons still running after down: {alive}"


def _wait(cond: Callable[[], object], timeout: float, what: str, proc=None, log=None) -> object:
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _launch(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "dpsynth", *args], cwd=cwd, env=env, stdout=f, stderr=f
        )


def _job_line(log: Path, index: int) -> dict[str, str] | None:
    """The overrides of sweep job ``#index`` as the launcher logs them."""
    for line in log.read_text(errors="replace").splitlines():
        m = re.search(rf"#{index} : (.*)$", line)
        if m:
            return dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
    return None


def _run_dir(sweep: Path, method: str, seed: str) -> Path | None:
    found = [p for p in sweep.glob(f"*/{method}/*_seed{seed}_*") if p.is_dir()]
    return found[0] if len(found) == 1 else None


def _ckpt_step(ckpt: Path) -> int:
    import torch

    for _ in range(50):  # the job may be writing it
        try:
            return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
        except Exception:  # noqa: BLE001 - a partial write: read again
            time.sleep(0.1)
    raise AssertionError(f"cannot read {ckpt}")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ledger_spends(release_npz: Path) -> list[dict]:
    import numpy as np

    with np.load(release_npz, allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
    return meta["ledger"]["spends"]


def _records(sweep: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in sweep.rglob("metrics.json")}


def _submitit_logs(sweep: Path) -> str:
    return "\n".join(
        f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}"
        for p in sorted(sweep.glob(".submitit/*/*_log.*"))
    )


@pytest.mark.slow
def test_sweep_on_slurm(slurm: Cluster, tmp_path: Path) -> None:
    t_start = time.time()
    sweep_dir = tmp_path / "sweep"
    cache = tmp_path / "cache"
    common = [
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=30",
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

    # 1. the sweep; cancel its last job once it has checkpointed
    log1 = tmp_path / "sweep1.log"
    proc = _launch(sweep, tmp_path, slurm.env, log1)
    last = _wait(lambda: _job_line(log1, 3), 120, "the launcher's job list", proc, log1)
    method, seed = last["method"], last["seed"]
    run_dir = _wait(
        lambda: _run_dir(sweep_dir, method, seed), 600, "job #3's run folder", proc, log1
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    _wait(ckpt.exists, 600, "job #3's first checkpoint", proc, log1)
    (task,) = [j for j in slurm.queue() if j.endswith("_3")]
    array1 = task.split("_")[0]
    step_cancelled = _ckpt_step(ckpt)
    slurm.run("scancel", task)
    rc = proc.wait(timeout=900)
    out = log1.read_text(errors="replace")
    assert rc != 0 and "CANCELLED" in out, out[-3000:]  # the sweep command reports it
    _wait(lambda: not slurm.queue(), 120, "an empty queue")
    records = _records(sweep_dir)
    done = {d: r for d, r in records.items() if r["status"] == "completed"}
    assert len(done) == 3 and run_dir not in done, _submitit_logs(sweep_dir)
    for r in done.values():
        ex = r["executor"]
        assert ex["kind"] == "slurm" and ex["node"] == slurm.node, ex
        assert ex["slurm"]["array_job_id"] == array1 and ex["slurm"]["id"].startswith(array1)
        assert ex["slurm"]["cluster"] == "dpsynth" and ex["cpus"] == 1
    assert len({r["executor"]["slurm"]["id"] for r in done.values()}) == 3
    if run_dir in records:  # SIGTERM reached the run: recorded as such, never as completed
        assert records[run_dir]["status"] == "failed"

    # 2. the same sweep again: only the cancelled job runs, from its checkpoint; SLURM requeues
    #    it once more mid-training (preemption) and it continues again
    before = {p: _sha(p) for p in cache.rglob("*.npz")}
    own_release = run_dir / "release.npz"
    before[own_release] = _sha(own_release)
    finished = {d: (d / "metrics.json").read_bytes() for d in done}
    mtime = ckpt.stat().st_mtime_ns
    log2 = tmp_path / "sweep2.log"
    proc = _launch(sweep, tmp_path, slurm.env, log2)
    _wait(
        lambda: ckpt.stat().st_mtime_ns != mtime, 600, "a checkpoint of the resumed job", proc, log2
    )
    step_requeued = _ckpt_step(ckpt)
    assert step_requeued > step_cancelled, "the re-run did not continue from the checkpoint"
    (task,) = [j for j in slurm.queue() if j.endswith("_3")]
    array2 = task.split("_")[0]
    slurm.run("scontrol", "requeue", task)
    rc = proc.wait(timeout=900)
    assert rc == 0, log2.read_text(errors="replace")[-3000:] + _submitit_logs(sweep_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed", record.get("error")
    assert step_requeued <= record["resumed_from_step"] < STEPS
    ex = record["executor"]
    assert ex["kind"] == "slurm" and ex["node"] == slurm.node
    assert ex["slurm"]["id"] == f"{array2}_3" and ex["slurm"]["restart_count"] == 1
    privacy = record["privacy"]
    assert privacy["cache_hit"] is True
    assert privacy["epsilon_spent"] <= privacy["epsilon"] * (1 + 1e-9)
    assert privacy["releases"] == _ledger_spends(own_release)  # the first attempt's ledger
    assert {p: _sha(p) for p in before} == before  # nothing released (spent) again
    assert set(cache.rglob("*.npz")) | {own_release} == set(before)
    for d, raw in finished.items():
        assert (d / "metrics.json").read_bytes() == raw  # skipped, not re-run

    # 3. a run failing late (evaluation): `failed` in metrics.json, the other completes, and
    #    sacct can't tell them apart
    log3 = tmp_path / "sweep3.log"
    failing = [*common, "method=dpmerf", "seed=2", "method.steps=100"]
    proc = _launch(
        [*failing, "+eval.classifier_params.logreg.max_iter=100,-1"], tmp_path, slurm.env, log3
    )
    assert proc.wait(timeout=900) == 0, log3.read_text(errors="replace")[-3000:]
    runs = [r for r in _records(sweep_dir).values() if r["seed"] == 2]
    assert sorted(r["status"] for r in runs) == ["completed", "failed"], runs
    (failed,) = [r for r in runs if r["status"] == "failed"]
    assert "max_iter" in failed["error"] and failed["metrics"] == {}
    assert failed["executor"]["kind"] == "slurm"
    assert failed["privacy"]["epsilon_spent"] is not None  # it failed after spending: recorded
    array3 = failed["executor"]["slurm"]["array_job_id"]
    _wait(lambda: not slurm.queue(), 120, "an empty queue")
    states = slurm.run("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array3).split()
    assert states and all(s.endswith("|COMPLETED") for s in states), states
    print(f"SLURM sweep test: {time.time() - t_start:.0f} s")
