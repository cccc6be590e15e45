"""Where a run executes (placeholder until the cluster work lands; replaced by its owner)."""

from __future__ import annotations

import os
import socket
from typing import Any


def executor_info() -> dict[str, Any]:
    """kind (local | slurm) plus host and pid, from the environment only."""
    kind = "slurm" if os.environ.get("SLURM_JOB_ID") else "local"
    return {"kind": kind, "host": socket.gethostname(), "pid": os.getpid()}
