"""executor_info: where a run ran, from the variables each executor sets (monkeypatched here; the
real SLURM and Ray runs are in test_cluster_slurm.py / test_cluster_ray.py), and the Hydra
callback that ray.yaml installs."""

from __future__ import annotations

import json
import os
import socket
import sys
import types

import pytest
from omegaconf import OmegaConf

from dpsynth import executor
from dpsynth.executor import RayEnvironment, executor_info, is_loopback_address, pin_sweep_dir

SLURM_ARRAY_TASK = {
    "SLURM_JOB_ID": "57",
    "SLURM_ARRAY_JOB_ID": "54",
    "SLURM_ARRAY_TASK_ID": "3",
    "SLURMD_NODENAME": "gpu-07",
    "SLURM_JOB_NODELIST": "gpu-07",
    "SLURM_JOB_PARTITION": "gpu",
    "SLURM_CLUSTER_NAME": "lab",
    "SLURM_CPUS_PER_TASK": "8",
    "SLURM_GPUS_ON_NODE": "1",
    "SLURM_RESTART_COUNT": "2",
}


@pytest.fixture(autouse=True)
def _no_ray_module(monkeypatch):
    """Each test decides whether ``ray`` is importable-as-imported."""
    monkeypatch.delitem(sys.modules, "ray", raising=False)


def test_local_process() -> None:
    info = executor_info({})
    assert info["kind"] == "local"
    assert info["hostname"] == socket.gethostname() == info["node"]
    assert info["pid"] == os.getpid()
    assert info["cpus"] >= 1 and info["gpus"] is None
    assert "slurm" not in info and "ray" not in info
    json.dumps(info)  # goes into metrics.json as is


def test_reads_os_environ_by_default(monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith(("SLURM", "RAY_"))]:
        monkeypatch.delenv(key)
    assert executor_info()["kind"] == "local"
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    assert executor_info()["kind"] == "slurm"
    assert executor_info()["slurm"]["id"] == "9"


def test_slurm_array_task() -> None:
    info = executor_info(SLURM_ARRAY_TASK)
    assert info["kind"] == "slurm"
    assert info["node"] == "gpu-07" and info["hostname"] == socket.gethostname()
    assert info["cpus"] == 8 and info["gpus"] == 1
    slurm = info["slurm"]
    assert slurm["id"] == "54_3"  # what squeue / sacct / scancel call it
    assert slurm["job_id"] == "57" and slurm["array_job_id"] == "54"
    assert slurm["array_task_id"] == 3
    assert slurm["partition"] == "gpu" and slurm["cluster"] == "lab"
    assert slurm["nodelist"] == "gpu-07"
    assert slurm["restart_count"] == 2
    json.dumps(info)


def test_slurm_plain_job_without_optional_variables() -> None:
    info = executor_info({"SLURM_JOB_ID": "12"})
    assert info["kind"] == "slurm"
    assert info["node"] == socket.gethostname()  # no SLURMD_NODENAME: the hostname
    assert info["gpus"] is None and info["cpus"] >= 1
    assert info["slurm"] == {
        "id": "12",
        "job_id": "12",
        "array_job_id": None,
        "array_task_id": None,
        "partition": None,
        "cluster": None,
        "nodelist": None,
        "restart_count": 0,
    }


def test_malformed_numbers_are_none_not_errors() -> None:
    info = executor_info(
        {"SLURM_JOB_ID": "12", "SLURM_CPUS_PER_TASK": "x", "SLURM_GPUS_ON_NODE": ""}
    )
    assert info["gpus"] is None and isinstance(info["cpus"], int)


def test_joblib_worker(monkeypatch) -> None:
    monkeypatch.setattr(executor, "_in_joblib_worker", lambda: True)
    assert executor_info({})["kind"] == "joblib"
    # a joblib worker inside a SLURM allocation keeps its job
    info = executor_info({"SLURM_JOB_ID": "5"})
    assert info["kind"] == "joblib" and info["slurm"]["id"] == "5"


def test_real_joblib_worker() -> None:
    from joblib import Parallel, delayed

    (info,) = Parallel(n_jobs=2)(delayed(executor_info)({}) for _ in range(1))
    assert info["kind"] == "joblib" and info["pid"] != os.getpid()


def _fake_ray(node_ip: str = "10.0.0.3", resources: dict | None = None) -> types.ModuleType:
    ctx = types.SimpleNamespace(
        get_node_id=lambda: "node-abc",
        get_job_id=lambda: "02000000",
        get_worker_id=lambda: "worker-1",
        get_assigned_resources=lambda: {"CPU": 2.0} if resources is None else resources,
        gcs_address="10.0.0.1:6379",
    )
    ray = types.ModuleType("ray")
    ray.is_initialized = lambda: True
    ray.get_runtime_context = lambda: ctx
    ray.util = types.SimpleNamespace(get_node_ip_address=lambda: node_ip)
    return ray


def test_ray_worker(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", _fake_ray(resources={"CPU": 2.0, "GPU": 1.0}))
    info = executor_info({"RAY_RAYLET_PID": "4242"})
    assert info["kind"] == "ray"
    assert info["node"] == "10.0.0.3" and info["cpus"] == 2 and info["gpus"] == 1
    assert info["ray"] == {
        "node_id": "node-abc",
        "node_ip": "10.0.0.3",
        "address": "10.0.0.1:6379",
        "job_id": "02000000",
        "worker_id": "worker-1",
    }
    json.dumps(info)


def test_ray_fractional_cpus(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", _fake_ray(resources={"CPU": 0.5}))
    assert executor_info({"RAY_RAYLET_PID": "1"})["cpus"] == 0.5


def test_ray_worker_inside_slurm_keeps_both(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", _fake_ray())
    info = executor_info({**SLURM_ARRAY_TASK, "RAY_RAYLET_PID": "1"})
    assert info["kind"] == "ray" and info["node"] == "10.0.0.3"
    assert info["slurm"]["id"] == "54_3" and info["ray"]["node_id"] == "node-abc"


def test_ray_variable_without_ray_imported_never_imports_it() -> None:
    info = executor_info({"RAY_RAYLET_PID": "1"})
    assert info["kind"] == "ray" and info["ray"]["node_id"] is None
    assert "ray" not in sys.modules


def test_a_ray_driver_is_not_a_worker(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", _fake_ray())
    assert executor_info({})["kind"] == "local"  # Ray sets RAY_RAYLET_PID only in workers


def test_broken_ray_context_keeps_what_was_read(monkeypatch) -> None:
    ray = _fake_ray()

    def boom():
        raise RuntimeError("no context")

    ray.get_runtime_context = boom
    monkeypatch.setitem(sys.modules, "ray", ray)
    info = executor_info({"RAY_RAYLET_PID": "1"})
    assert info["kind"] == "ray" and info["ray"]["node_id"] is None


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("local", True),
        ("127.0.0.1:6379", True),
        ("localhost:6379", True),
        ("[::1]:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("10.0.0.1:6379", False),
        ("head.cluster:6379", False),
        (None, False),
        ("auto", False),
    ],
)
def test_is_loopback_address(address, loopback) -> None:
    assert is_loopback_address(address) is loopback


def _launcher_cfg(address: str | None, sweep_dir: str = "outputs/multirun/x"):
    return OmegaConf.create(
        {
            "hydra": {
                "launcher": {"ray": {"init": {"address": address}}},
                "sweep": {"dir": sweep_dir},
                "overrides": {"hydra": ["hydra/launcher=ray"]},
            }
        }
    )


def test_ray_environment_sets_auth_mode_and_loopback(monkeypatch) -> None:
    monkeypatch.setattr(os, "environ", {"PATH": "/bin"})
    RayEnvironment().on_multirun_start(_launcher_cfg("local"))
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"


def test_ray_environment_on_a_cluster_address(monkeypatch) -> None:
    monkeypatch.setattr(os, "environ", {})
    RayEnvironment(auth_mode="token").on_multirun_start(_launcher_cfg("10.0.0.1:6379"))
    assert os.environ == {"RAY_AUTH_MODE": "token"}  # never loopback for a network head


def test_ray_environment_user_variables_win(monkeypatch) -> None:
    monkeypatch.setattr(os, "environ", {"RAY_AUTH_MODE": "token"})
    env = RayEnvironment().environment(_launcher_cfg("local"))
    assert env == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    assert RayEnvironment(auth_mode=None, loopback=False).environment(_launcher_cfg("local")) == {}


def test_relative_sweep_dir_is_pinned_to_the_launch_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _launcher_cfg("local", "outputs/multirun/it's")
    override = pin_sweep_dir(cfg)
    assert cfg.hydra.sweep.dir == str(tmp_path / "outputs/multirun/it's")
    assert cfg.hydra.overrides.hydra[-1] == override
    assert override == f"hydra.sweep.dir='{tmp_path}/outputs/multirun/it\\'s'"
    # the override parses back to the same path (Hydra's grammar)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides([override])
    assert parsed.value() == str(tmp_path / "outputs/multirun/it's")
    assert pin_sweep_dir(cfg) is None  # already absolute: nothing added
    assert pin_sweep_dir(_launcher_cfg("local", "/abs/dir")) is None
