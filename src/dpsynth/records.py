"""Run records: ``metrics.json``, synthetic data and sample grids, all written atomically.

``metrics.json`` schema (stable; the report and resume code read it):

- ``status``: ``completed`` | ``failed``; ``error`` (message when failed)
- ``method``, ``dataset``, ``seed``, ``config_hash``
- ``privacy``: ``epsilon``, ``delta``, ``delta_reserved`` (δ used by DP schema selection),
  ``neighbours``, ``accountant``, ``epsilon_spent`` (by that accountant), ``epsilon_exact``
  (PLD), ``releases`` (every mechanism applied to the private data), ``cache_hit``
- ``schema_source`` (``declared`` | ``dp`` | ``nonprivate``); ``release``: the one-shot
  release's fingerprint and public facts (e.g. the DP σ0² estimate); ``executor``: where the
  run ran (local | joblib | slurm | ray, node, job ids; :mod:`dpsynth.executor`);
  ``method_version`` (changes whenever the method's results would); ``not_dp_metrics``: the
  metric keys computed from the private training split (no DP guarantee behind them);
  ``preset_selection``: how the method preset was chosen, as it holds on this dataset
  (``proxy:a|b`` on dataset a reads ``proxy:b``; :func:`dpsynth.config.selection_for`)
- ``metrics``: namespaced keys (``eval/acc_logreg``, ``eval/roc_auc``, ...);
  ``higher_is_better``: the same keys → bool; ``flags``: warnings such as mode collapse or a
  collapsed PEARL critic; ``diagnostics``: facts about the trained model (critic concentration)
- ``timings``: wall seconds per stage; ``cpu_seconds``: CPU seconds of all the process's
  threads over the run; ``peak_rss_mb`` (whole run) and ``peak_rss_mb_by_stage``
  (the peak so far after load, release, train, sample, evaluate); ``git_sha``; ``versions``
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.privacy.release import atomic_write_bytes

SCHEMA_VERSION = 1
_PACKAGES = (
    "dpsynth",
    "torch",
    "pytorch-lightning",
    "dp-accounting",
    "opacus",
    "numpy",
    "scikit-learn",
    "hydra-core",
    "torchmetrics",
)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n").encode()
    )


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``metrics.json``, or None if absent or unreadable (e.g. killed mid-write by
    a non-atomic tool)."""
    p = Path(run_dir) / "metrics.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The commit the code runs from, with ``-dirty`` appended when tracked files under ``cwd``
    (default: the installed package's source folder) differ from it: a record made from
    uncommitted code must not claim a commit's behaviour. None outside a git checkout."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=where
        )
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return None
        diff = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "."],
            capture_output=True,
            timeout=10,
            cwd=where,
        )
        return sha + "-dirty" if diff.returncode == 1 else sha
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_samples_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y)
    atomic_write_bytes(path, buf.getvalue())


def write_table_csv(path: Path, frame: Any) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


def write_sample_grid(
    path: Path, x: np.ndarray, y: np.ndarray, num_classes: int, per_class: int = 10
) -> None:
    """A PNG with one row per class, ``per_class`` samples each. x: (N, C, H, W) in [0, 1]."""
    import torch
    from torchvision.utils import save_image

    rows = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)[:per_class]
        block = np.zeros((per_class, *x.shape[1:]), dtype=np.float32)
        block[: len(idx)] = x[idx]
        rows.append(block)
    grid = torch.as_tensor(np.concatenate(rows))  # (C·per_class, C, H, W)
    buf = io.BytesIO()
    save_image(grid, buf, nrow=per_class, padding=1, pad_value=1.0, format="png")
    atomic_write_bytes(path, buf.getvalue())
