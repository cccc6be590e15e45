"""Command-line entry point: ``dpsynth [group=option ...] [key=value ...]`` (one Hydra app).

Errors the user can fix print one line, ``dpsynth: error: <message>``, and exit with status 2;
set ``HYDRA_FULL_ERROR=1`` for tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dpsynth.config import CONF_DIR
from dpsynth.errors import DpsynthError

EXIT_USER_ERROR = 2


def _remove_if_empty(path: Path) -> None:
    """Hydra creates the run folder before the app starts; leave nothing behind on a bad
    config."""
    with contextlib.suppress(OSError):
        path.rmdir()


def app(cfg: DictConfig) -> float | None:
    from dpsynth.pipeline import run  # heavy imports after Hydra has parsed the command line

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        record = run(cfg, run_dir)
    except DpsynthError as e:
        _remove_if_empty(run_dir)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"dpsynth: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
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
