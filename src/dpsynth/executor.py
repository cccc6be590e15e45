"""Where a run ran: the executor that started its process (a local process, a joblib worker, a
SLURM job, a Ray worker), the node, the process and the compute it was given, read from the
environment each executor sets. ``executor_info()`` starts, imports and changes nothing; a run
records it in its ``metrics.json`` (``executor``), so a study's numbers say where they were
computed and its compute bill can be split per executor.

``RayEnvironment`` is the one piece with an effect: a Hydra callback that
``conf/hydra/launcher/ray.yaml`` installs to set Ray's client environment in the launching
process before the launcher calls ``ray.init`` (a launcher YAML cannot set environment
variables itself, and Ray reads these only from the environment).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

KINDS = ("local", "joblib", "slurm", "ray")
LOOPBACK_HOSTS = ("local", "localhost", "127.0.0.1", "::1", "[::1]")


def executor_info(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Describe the executor of the calling process.

    Returns a JSON-ready dict:

    - ``kind``: ``ray`` (a Ray worker), ``joblib`` (a joblib / loky worker), ``slurm`` (a SLURM
      job), else ``local``; the first that applies, in that order (a Ray or joblib worker inside
      a SLURM allocation is ``ray`` / ``joblib`` and still carries the ``slurm`` block);
    - ``hostname``, ``pid``; ``node``: the SLURM node name, the Ray node's IP, else the hostname;
    - ``cpus``: CPUs given to the run (SLURM ``--cpus-per-task``, the Ray task's CPUs, else the
      process's CPU affinity); ``gpus``: GPUs given to it where the executor says, else None;
    - ``slurm`` (inside a SLURM job): ``id`` (what squeue / sacct / scancel show:
      ``<array job>_<task>`` for an array task, else the job id), ``job_id``, ``array_job_id``,
      ``array_task_id``, ``partition``, ``cluster``, ``nodelist``, ``restart_count`` (how often
      SLURM requeued the job: preemption, ``scontrol requeue``);
    - ``ray`` (inside a Ray worker): ``node_id``, ``node_ip``, ``address`` (the cluster's GCS
      address), ``job_id``, ``worker_id``.

    ``environ`` defaults to ``os.environ``; Ray's runtime context is read only if the process
    has already imported ``ray``.
    """
    env = os.environ if environ is None else environ
    hostname = socket.gethostname()
    info: dict[str, Any] = {
        "kind": "local",
        "hostname": hostname,
        "node": hostname,
        "pid": os.getpid(),
        "cpus": _affinity_cpus(),
        "gpus": None,
    }
    slurm = _slurm_info(env)
    if slurm is not None:
        info.update(kind="slurm", node=slurm.pop("node") or hostname)
        info["cpus"] = slurm.pop("cpus") or info["cpus"]
        info["gpus"] = slurm.pop("gpus")
        info["slurm"] = slurm
    if _in_joblib_worker():
        info["kind"] = "joblib"
    ray = _ray_info(env)
    if ray is not None:
        info["kind"] = "ray"
        info["node"] = ray["node_ip"] or info["node"]
        resources = ray.pop("resources")
        info["cpus"] = _count(resources.get("CPU")) or info["cpus"]
        info["gpus"] = _count(resources.get("GPU")) if "GPU" in resources else info["gpus"]
        info["ray"] = ray
    return info


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _count(value: Any) -> int | float | None:
    """A resource amount as Ray reports it (a float; fractional CPUs exist)."""
    if value is None:
        return None
    value = float(value)
    return int(value) if value.is_integer() else value


def _affinity_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _slurm_info(env: Mapping[str, str]) -> dict[str, Any] | None:
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return None
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), _int(env.get("SLURM_ARRAY_TASK_ID"))
    return {
        "id": f"{array_job}_{array_task}" if array_job and array_task is not None else job_id,
        "job_id": job_id,
        "array_job_id": array_job or None,
        "array_task_id": array_task,
        "partition": env.get("SLURM_JOB_PARTITION") or None,
        "cluster": env.get("SLURM_CLUSTER_NAME") or None,
        "nodelist": env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or None,
        "restart_count": _int(env.get("SLURM_RESTART_COUNT")) or 0,
        # popped into the top level by executor_info:
        "node": env.get("SLURMD_NODENAME") or None,
        "cpus": _int(env.get("SLURM_CPUS_PER_TASK")),
        "gpus": _int(env.get("SLURM_GPUS_ON_NODE")),
    }


def _in_joblib_worker() -> bool:
    """A worker of joblib's default (loky) backend, which hydra/launcher=joblib uses."""
    return multiprocessing.current_process().name.startswith("LokyProcess")


def _ray_info(env: Mapping[str, str]) -> dict[str, Any] | None:
    """Ray sets RAY_RAYLET_PID in every worker it starts (never in a driver)."""
    if not env.get("RAY_RAYLET_PID"):
        return None
    info: dict[str, Any] = {
        "node_id": None,
        "node_ip": None,
        "address": None,
        "job_id": None,
        "worker_id": None,
        "resources": {},
    }
    ray = sys.modules.get("ray")  # a worker has imported ray already; never import it here
    if ray is None or not ray.is_initialized():
        return info
    try:
        ctx = ray.get_runtime_context()
        info.update(
            node_id=ctx.get_node_id(),
            job_id=ctx.get_job_id(),
            worker_id=ctx.get_worker_id(),
            address=getattr(ctx, "gcs_address", None),
            resources=dict(ctx.get_assigned_resources() or {}),
        )
        info["node_ip"] = ray.util.get_node_ip_address()
    except Exception:  # an older or newer Ray without one of these: keep what was read
        pass
    return info


class RayEnvironment:
    """Hydra callback (``hydra.callbacks``) that prepares the launching process for ``ray.init``.

    - ``auth_mode`` → ``RAY_AUTH_MODE``. Ray ≥ 2.5x turns token authentication on by itself for
      a new local cluster and writes ``~/.ray/auth_token``; a later client that finds that token
      switches to token mode and stalls against a head started without it. Setting the mode
      explicitly (the same on the head and here) avoids both.
    - ``loopback`` → ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` when the launcher's address is
      ``local`` or a loopback host: Ray then binds every component to 127.0.0.1 instead of the
      machine's network address (an unauthenticated local Ray must not listen on the network,
      and a driver must advertise the same IP as a head started on loopback).

    An environment variable the user already set always wins.

    It also makes a relative ``hydra.sweep.dir`` absolute (the launching directory's): a Ray
    worker runs in the directory its raylet was started from, so relative run folders would
    land there, on each node, instead of where the sweep command ran.
    """

    def __init__(self, auth_mode: str | None = "disabled", loopback: bool = True) -> None:
        self.auth_mode = auth_mode
        self.loopback = bool(loopback)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.update(self.environment(config))
        pin_sweep_dir(config)

    def environment(self, config: DictConfig) -> dict[str, str]:
        """The variables ``on_multirun_start`` sets (those not already in the environment)."""
        out: dict[str, str] = {}
        if self.auth_mode:
            out["RAY_AUTH_MODE"] = str(self.auth_mode)
        address = OmegaConf.select(config, "hydra.launcher.ray.init.address", default=None)
        if self.loopback and is_loopback_address(address):
            out["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        return {k: v for k, v in out.items() if k not in os.environ}

    # The other Hydra callback hooks: nothing to do.
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        pass

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        pass

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        pass

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        pass

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        pass


def pin_sweep_dir(config: DictConfig) -> str | None:
    """Make the sweep's ``hydra.sweep.dir`` absolute for every job of the sweep (the launcher
    re-composes each job's config from ``hydra.overrides.hydra``, so the absolute path is added
    there as an override). Returns the override added, if any."""
    sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
    if not sweep_dir or os.path.isabs(str(sweep_dir)):
        return None
    absolute = os.path.abspath(str(sweep_dir))
    quoted = absolute.replace("'", "\\'")
    override = f"hydra.sweep.dir='{quoted}'"
    with open_dict(config), read_write(config):
        config.hydra.sweep.dir = absolute
        config.hydra.overrides.hydra.append(override)
    return override


def is_loopback_address(address: str | None) -> bool:
    """True for ``local`` (a new single-machine Ray) and ``127.0.0.1:6379``-style addresses."""
    if address is None:
        return False
    address = str(address).strip()
    if "://" in address:
        address = address.split("://", 1)[1]
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if host.startswith("[") and "]" in host:
        host = host[: host.index("]") + 1]
    return host in LOOPBACK_HOSTS or host.startswith("127.")
