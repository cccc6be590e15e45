"""Command-line entry point: ``dpsynth [group=option ...] [key=value ...]`` (one Hydra app).

Errors the user can fix print one line, ``dpsynth: error: <message>``, and exit with status 2;
set ``HYDRA_FULL_ERROR=1`` for tracebacks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dpsynth.config import CONF_DIR
from dpsynth.errors import DpsynthError

EXIT_USER_ERROR = 2


def _remove_if_empty(path: Path) -> None:
    """Hydra creates the run folder (and its parents) before the app starts; on a bad config
    remove those that are empty, up to the working directory, so nothing is left behind."""
    stop = Path.cwd().resolve()
    path = path.resolve()
    while path != stop and stop in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def set_threads(hydra_cfg: DictConfig) -> None:
    """Give each parallel job its share of the cores, so a joblib sweep doesn't oversubscribe
    (torch's default of one thread per core in every job makes each step many times slower)."""
    import torch

    n_jobs = int(OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=1) or 1)
    cores = os.cpu_count() or 1
    parallel = cores if n_jobs < 0 else min(n_jobs, cores)
    threads = max(1, cores // max(1, parallel))
    if parallel > 1:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def app(cfg: DictConfig) -> float | None:
    from dpsynth.methods.base import flush_denormals_process_wide
    from dpsynth.pipeline import run  # heavy imports after Hydra has parsed the command line

    flush_denormals_process_wide()  # before torch's first parallel op: workers inherit it
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    set_threads(hydra_cfg)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        record = run(cfg, run_dir)
    except DpsynthError as e:
        _remove_if_empty(run_dir)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"dpsynth: error: {e}", file=sys.stderr)
        if multirun:  # recorded in the job's metrics.json when it got that far; go on
            return None
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:
        if not multirun:
            raise
        print(f"dpsynth: job {run_dir} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    if record.get("skipped"):
        print(f"dpsynth: {run_dir} already completed with this config; skipped (resume=true)")
        return None
    summary = ", ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items())
    print(
        f"dpsynth: {record['method']} on {record['dataset']}: ε spent "
        f"{record['privacy']['epsilon_spent']} (target {record['privacy']['epsilon']}, "
        f"δ {record['privacy']['delta']}); {summary}; outputs in {run_dir}"
    )
    return None


def main() -> None:
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(app)()


if __name__ == "__main__":
    main()
