"""Numerical faults and concurrency: a NaN loss fails the run loudly, a collapsed generator is
flagged, and concurrent writers never build a release twice or mix files."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch

from dpsynth.errors import TrainingError
from dpsynth.methods.base import Synthesizer
from dpsynth.methods.oneshot import EmbeddingMatcher
from dpsynth.pipeline import run
from dpsynth.privacy.release import ReleaseCache, Statistic, gaussian_release


def test_nan_loss_fails_with_status(tiny_config, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(EmbeddingMatcher, "cf_loss", lambda self, x, y, w: torch.tensor(np.nan))
    with pytest.raises(TrainingError, match="nan"):
        run(tiny_config("digits", "pearl"), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "nan" in record["error"]
    assert not record["metrics"]


def test_mode_collapse_is_flagged(tiny_config, tmp_path, monkeypatch) -> None:
    real_sample = Synthesizer.sample

    def collapsed(self, n, *, seed, batch_size=2000):
        x, y = real_sample(self, n, seed=seed, batch_size=batch_size)
        return np.repeat(x[:1], n, axis=0), y

    monkeypatch.setattr(Synthesizer, "sample", collapsed)
    record = run(tiny_config("digits", "pearl"), tmp_path / "run")
    assert "mode_collapse" in record["flags"]


def _build_in_process(root: str, out: str) -> None:
    def build():
        marker = Path(out) / "builds"
        with open(marker, "a") as f:  # one line per actual spend
            f.write("x\n")
        return gaussian_release([Statistic("e", np.ones(8), 0.1)], epsilon=1.0, delta=1e-5)

    release = ReleaseCache(root).get_or_create({"key": "shared"}, build)
    np.save(Path(out) / f"r{mp.current_process().pid}.npy", release["e"])


def test_concurrent_processes_build_one_release(tmp_path) -> None:
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_build_in_process, args=(str(tmp_path / "c"), str(tmp_path)))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert (tmp_path / "builds").read_text().count("x") == 1
    arrays = [np.load(f) for f in tmp_path.glob("r*.npy")]
    assert len(arrays) == 3 and all(np.array_equal(a, arrays[0]) for a in arrays)
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_a_job_running_elsewhere_is_not_run_twice(tiny_config, tmp_path) -> None:
    from dpsynth.errors import DpsynthError
    from dpsynth.pipeline import run_lock

    run_dir = tmp_path / "run"
    held = run_lock(run_dir)
    held.acquire()
    try:
        with pytest.raises(DpsynthError, match="another process"):
            run(tiny_config("digits", "pearl"), run_dir)
        assert not (run_dir / "metrics.json").exists()
    finally:
        held.release()
    assert run(tiny_config("digits", "pearl"), run_dir)["status"] == "completed"
