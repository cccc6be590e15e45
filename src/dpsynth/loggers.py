"""Emit a finished run to the configured logger (wandb, TensorBoard, CSV): emit only.

The loggers are Lightning's; they already receive training losses during ``fit``. Here they
also get the resolved config, the privacy ledger, the final metrics, the sample grid and a
table of synthetic rows, through whatever each logger supports (duck-typed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def emit_run(
    logger: Any,
    record: dict[str, Any],
    config: dict[str, Any],
    run_dir: Path,
    table: pd.DataFrame | None = None,
) -> None:
    """Send config, ledger, metrics, sample grid and synthetic rows to ``logger``."""
    privacy = record["privacy"]
    logger.log_hyperparams({"config": config, "privacy": privacy})
    scalars = {
        **record["metrics"],
        "privacy/epsilon_spent": privacy["epsilon_spent"],
        "privacy/epsilon": privacy["epsilon"],
        "privacy/delta": privacy["delta"],
    }
    scalars.update({f"time/{k}": v for k, v in record["timings"].items()})
    logger.log_metrics({k: float(v) for k, v in scalars.items() if v is not None})
    grid = run_dir / "samples.png"
    if grid.exists() and hasattr(logger, "log_image"):  # wandb
        logger.log_image(key="samples", images=[str(grid)])
    elif grid.exists() and hasattr(getattr(logger, "experiment", None), "add_image"):
        import numpy as np
        from PIL import Image

        img = np.asarray(Image.open(grid).convert("RGB"))  # (H, W, 3)
        logger.experiment.add_image("samples", img, dataformats="HWC")
    if table is not None and hasattr(logger, "log_table"):
        logger.log_table(key="synthetic_rows", dataframe=table.head(200))
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "summary"):
        experiment.summary["privacy"] = privacy
    logger.save()
    logger.finalize("success" if record["status"] == "completed" else "failed")
