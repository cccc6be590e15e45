"""The run, top to bottom as the data flow: load private data → release (privacy spent here,
and only here, for one-shot methods) → train the generator from the release → sample →
evaluate → write results.

Each stage is one function; :func:`run` only calls them in order and times them.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import resource
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from dpsynth.config import DATASET_OPTION_KEYS, config_id, selection_for, validate
from dpsynth.data.base import Dataset
from dpsynth.errors import ConfigError, DpsynthError, PrivacyError
from dpsynth.executor import executor_info
from dpsynth.loggers import emit_run
from dpsynth.methods.base import Method, PrivacySpec, RunContext, Synthesizer
from dpsynth.methods.oneshot import RUN_RELEASE
from dpsynth.privacy.release import Ledger, ReleaseCache
from dpsynth.records import (
    git_sha,
    read_metrics,
    versions,
    write_json,
    write_sample_grid,
    write_samples_npz,
    write_table_csv,
)
from dpsynth.tune import prepare_run

log = logging.getLogger("dpsynth")


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets the project's own errors through unwrapped, so the
    user sees one message naming the key instead of Hydra's instantiation wrapper."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except (InstantiationException, InterpolationResolutionError) as e:  # a rule's own error too
        # OmegaConf re-raises a resolver's error as the context, not the cause, of its own.
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, DpsynthError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def build_method(cfg: DictConfig) -> Method:
    method = build(cfg.method)
    if not isinstance(method, Method):
        raise ConfigError(
            f"method._target_: {cfg.method._target_} is not a dpsynth Method subclass."
        )
    return method


def load_data(cfg: DictConfig) -> Dataset:
    """Private data enters the process here and goes only to the mechanism."""
    loader_cfg = {k: v for k, v in cfg.dataset.items() if k not in DATASET_OPTION_KEYS}
    return build(OmegaConf.create(loader_cfg))


def make_context(cfg: DictConfig, run_dir: Path) -> RunContext:
    dataset_id = {
        k: v
        for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items()
        if k not in DATASET_OPTION_KEYS and k not in ("root", "download", "cache_dir")
    }
    logger = None
    if cfg.logger and "_target_" in cfg.logger:
        logger = build(cfg.logger, save_dir=str(run_dir))
    return RunContext(
        seed=int(cfg.seed),
        run_dir=run_dir,
        cache=ReleaseCache(Path(cfg.cache_dir) / "releases"),
        dataset_id=dataset_id,
        dataset_options={k: cfg.dataset.get(k) for k in DATASET_OPTION_KEYS},
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=logger,
        progress=cfg.progress,
    )


def train_generator(
    method: Method,
    data: Dataset,
    privacy: PrivacySpec,
    ctx: RunContext,
    timings: dict[str, float],
    memory: dict[str, float] | None = None,
    *,
    keep_train: bool = True,
) -> tuple[Synthesizer, Ledger]:
    """Spend the budget and train. For one-shot methods the trainer never receives ``data``,
    and with ``keep_train=False`` the private records are dropped once released (nothing
    after the release may read them, and their memory is free for training and sampling).
    ``timings`` and ``memory`` receive seconds and peak RSS (MiB) per stage."""
    memory = {} if memory is None else memory
    t0 = time.perf_counter()
    if method.one_shot:
        release = method.release(data, privacy, ctx)
        ctx.release_fingerprint = release.public.get("release_fingerprint")
        ctx.release_public = {  # public facts of the release (e.g. the DP σ0² estimate)
            k: release.public[k] for k in RECORDED_PUBLIC if k in release.public
        }
        if not keep_train:
            data.train_x = np.empty((0, *data.train_x.shape[1:]), data.train_x.dtype)
        timings["release"] = time.perf_counter() - t0
        memory["release"] = peak_rss_mb()
        spec = data.spec
        t0 = time.perf_counter()
        synth = method.train(release, spec, ctx)  # post-processing: release + public spec only
        timings["train"] = time.perf_counter() - t0
        memory["train"] = peak_rss_mb()
        return synth, release.ledger
    synth, ledger = method.train_private(data, privacy, ctx)
    timings["train"] = time.perf_counter() - t0
    memory["train"] = peak_rss_mb()
    return synth, ledger


RECORDED_PUBLIC = (
    "cache_key",
    "sigma0_sq",
    "sigma0_source",
    "sigma0_dp_estimate",
    "sigma0_dp_sd",
    "sigma0_prior",
    "num_features",
    "release_counts",
    "release_seconds",
)


def check_ledger(ledger: Ledger, privacy: PrivacySpec, method: Method) -> None:
    """Refuse to report numbers the accountant does not back."""
    if not method.private:
        return
    if not math.isfinite(ledger.epsilon_spent) or ledger.epsilon_spent > privacy.epsilon * (
        1 + 1e-6
    ):
        raise PrivacyError(
            f"the accountant reports ε spent = {ledger.epsilon_spent} > target "
            f"{privacy.epsilon}; no results are reported for this run."
        )


def collapse_flags(x: np.ndarray) -> list[str]:
    """Flag a mode-collapsed generator: every sample (almost) identical."""
    flat = x.reshape(len(x), -1)
    return ["mode_collapse"] if float(flat.std(axis=0).max()) < 1e-4 else []


def critic_flags(diagnostics: dict[str, float]) -> list[str]:
    """Flag a critic whose α put (almost) all weight on a handful of frequencies: the generator
    then fits those and ignores the rest (what balanced label batches did to PEARL at ε ≥ 1)."""
    eff = diagnostics.get("critic/effective_frequencies")
    k = diagnostics.get("critic/num_frequencies")
    return ["critic_collapse"] if eff is not None and k and eff < 0.01 * k else []


def write_synthetic(
    run_dir: Path, data: Dataset, x: np.ndarray, y: np.ndarray
) -> pd.DataFrame | None:
    """Images: ``samples.npz`` + a per-class ``samples.png``; tables: ``synthetic.csv`` decoded
    to the original columns (returned for the loggers)."""
    if data.spec.kind == "image":
        write_samples_npz(run_dir / "samples.npz", x, y)
        write_sample_grid(run_dir / "samples.png", x, y, data.spec.num_classes)
        return None
    table = data.encoder.decode(x, y)
    write_table_csv(run_dir / "synthetic.csv", table)
    return table


def completed_record(run_dir: Path, cid: str) -> dict[str, Any] | None:
    """The run folder's metrics.json if it is a completed run of the same config."""
    record = read_metrics(run_dir)
    if record and record.get("status") == "completed" and record.get("config_hash") == cid:
        record["skipped"] = True
        return record
    return None


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Execute one run into ``run_dir``; returns the metrics.json content."""
    # Everything alive now (modules, configs: ~10⁶ objects) is kept out of the cyclic
    # collector's scans for the run: each full collection of them cost ~0.2 s, about one a
    # run, inside a timed stage. Garbage made during the run is collected as usual.
    gc.freeze()
    try:
        return _run(cfg, run_dir)
    finally:
        gc.unfreeze()


def _run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    method = build_method(cfg)  # constructor validates the method's own options
    validate(cfg, private=method.private)
    privacy = PrivacySpec(
        float(cfg.privacy.epsilon),
        float(cfg.privacy.delta),
        str(cfg.privacy.accountant),
        str(cfg.privacy.neighbours),
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    done = completed_record(run_dir, config_id(resolved)) if cfg.resume else None
    if done is not None:
        log.info("skipping %s: already completed with the same config (resume=true)", run_dir)
        return done
    record: dict[str, Any] = {
        "schema_version": 1,
        "status": "running",
        "method": method.name,
        "method_version": method.version,
        "dataset": None,
        "seed": int(cfg.seed),
        "config_hash": config_id(resolved),
        "privacy": {
            "epsilon": privacy.epsilon,
            "delta": privacy.delta,
            "accountant": privacy.accountant,
            "neighbours": privacy.neighbours,
            "epsilon_spent": None,
            "epsilon_exact": None,
            "releases": [],
        },
        "metrics": {},
        "higher_is_better": {},
        "flags": [],
        "timings": {},
        "peak_rss_mb_by_stage": {},
        "executor": executor_info(),
        "git_sha": git_sha(),
        "versions": versions(),
    }
    timings, memory = record["timings"], record["peak_rss_mb_by_stage"]
    reset_peak_rss()  # a sweep runs many jobs in one process: measure this job's peak only
    start = time.perf_counter()
    cpu_start = time.process_time()  # CPU seconds of all this process's threads
    t0 = time.perf_counter()
    data = load_data(cfg)
    timings["load"] = time.perf_counter() - t0
    memory["load"] = peak_rss_mb()
    record["dataset"] = data.spec.name
    # dpsynth-tune: a candidate sees training minus validation (and is scored on validation);
    # a final run's budget starts with the selection's spends.
    data, record["tune"] = prepare_run(data, resolved.get("tune") or {}, privacy, method, resolved)
    record["schema_source"] = getattr(data, "schema_source", "declared")
    # δ the DP schema's partition selection used: the Gaussian accounting gets the rest.
    privacy = dataclasses.replace(privacy, delta_reserved=data.delta_reserved)
    record["privacy"]["delta_reserved"] = privacy.delta_reserved
    method.check(data.spec, {k: cfg.dataset.get(k) for k in DATASET_OPTION_KEYS}, data.n_train)
    method.check_precision(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    # How the preset was chosen, as it holds on this dataset: the report labels the row by it.
    selection = preflight(cfg, data, privacy, method, run_dir)
    if selection:
        record["preset_selection"] = selection
    evaluator = build(cfg.eval)

    # One process per run folder: a concurrent sweep that reaches the same job skips it.
    lock = run_lock(run_dir)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise DpsynthError(
            f"{run_dir} is being written by another process (lock {lock.lock_file}); this job "
            "is skipped here. Re-run the command when it has finished to collect its result."
        ) from None
    try:
        return _execute(
            cfg, run_dir, method, privacy, data, evaluator, record, resolved, (start, cpu_start)
        )
    finally:
        lock.release()


def run_lock(run_dir: Path) -> FileLock:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(run_dir.parent / f".{run_dir.name}.lock"))


def _execute(
    cfg: DictConfig,
    run_dir: Path,
    method: Method,
    privacy: PrivacySpec,
    data: Dataset,
    evaluator: Any,
    record: dict[str, Any],
    resolved: dict[str, Any],
    clocks: tuple[float, float],
) -> dict[str, Any]:
    """Train, sample, evaluate and write; every failure is recorded in metrics.json."""
    timings, memory = record["timings"], record["peak_rss_mb_by_stage"]
    start, cpu_start = clocks  # perf_counter and process_time at the start of the run
    # From here on outputs exist: any failure is recorded as such, never left half-written.
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:  # a new run: it draws (or takes from the cache) its release anew
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "ensemble", ignore_errors=True)  # further members' checkpoints
        (run_dir / RUN_RELEASE).unlink(missing_ok=True)
    write_json(run_dir / "config.json", resolved)
    try:
        ctx = make_context(cfg, run_dir)
        n = int(cfg.dataset.get("n_synthetic") or data.n_train)
        keep = bool(getattr(evaluator, "reads_train", True))
        synth, ledger = train_generator(
            method, data, privacy, ctx, timings, memory, keep_train=keep
        )
        check_ledger(ledger, privacy, method)
        record["resumed_from_step"] = ctx.resumed_from_step
        record["release"] = {"fingerprint": ctx.release_fingerprint, **ctx.release_public}
        record["privacy"].update(
            accountant=ledger.accountant,
            neighbours=ledger.neighbours,
            epsilon_spent=ledger.epsilon_spent,
            epsilon_exact=ledger.epsilon_exact,
            releases=[vars(s) for s in ledger.spends],
            cache_hit=ledger.cache_hit,
        )
        t0 = time.perf_counter()
        x, y = synth.sample(n, seed=int(cfg.seed) + 1)
        timings["sample"] = time.perf_counter() - t0
        memory["sample"] = peak_rss_mb()
        record["diagnostics"] = dict(method.diagnostics)
        record["flags"] = (
            list(getattr(data, "flags", []))
            + collapse_flags(x)
            + critic_flags(record["diagnostics"])
        )
        t0 = time.perf_counter()
        metrics = evaluator(data, x, y, cache_dir=str(Path(cfg.cache_dir) / "eval"))
        timings["evaluate"] = time.perf_counter() - t0
        memory["evaluate"] = peak_rss_mb()
        timings.update({f"evaluate/{k}": v for k, v in getattr(evaluator, "timings", {}).items()})
        record["metrics"] = {k: float(v) for k, v in metrics.items()}
        record["higher_is_better"] = {k: bool(evaluator.higher_is_better(k)) for k in metrics}
        reads_private = getattr(evaluator, "reads_private", lambda key: False)
        record["not_dp_metrics"] = sorted(k for k in metrics if reads_private(k))
        table = write_synthetic(run_dir, data, x, y)
        record["status"] = "completed"
        if ctx.logger is not None:
            timings["total"] = time.perf_counter() - start
            emit_run(ctx.logger, record, resolved, run_dir, table)
    except BaseException as e:
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, DpsynthError):
            record["traceback"] = traceback.format_exc()
        record["metrics"], record["higher_is_better"] = {}, {}
        raise
    finally:
        timings["total"] = time.perf_counter() - start
        # CPU seconds of every thread of this process during the run (a study's compute bill:
        # wall time alone hides how many cores a job kept busy).
        record["cpu_seconds"] = time.process_time() - cpu_start
        record["peak_rss_mb"] = peak_rss_mb()
        write_record(run_dir, record)
    return record


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux ≥ 4.0); False where
    that is not possible, and peaks then include earlier jobs of the same process."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident memory since the last ``reset_peak_rss``, in MiB. The record
    keeps it after each stage (``peak_rss_mb_by_stage``), so the peak of release + training +
    sampling is separable from evaluation's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write metrics.json last; if even that fails (disk full), remove the run's products so
    no folder looks like a result without its record."""
    try:
        write_json(run_dir / "metrics.json", record)
    except OSError as e:
        for name in PRODUCTS:
            (run_dir / name).unlink(missing_ok=True)
        raise DpsynthError(
            f"could not write {run_dir / 'metrics.json'} ({e.strerror or e}); the run's outputs "
            "were removed. Free disk space or choose another folder (hydra.run.dir=...)."
        ) from e


PRODUCTS = ("samples.npz", "samples.png", "synthetic.csv", "config.json")


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".dpsynth-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def preflight(
    cfg: DictConfig, data: Dataset, privacy: PrivacySpec, method: Method, run_dir: Path
) -> str | None:
    """Checks that need the loaded data's public size, before any output is written. Returns
    the preset's selection label as it holds on this dataset (:func:`selection_for`)."""
    n = data.n_train
    # δ policy (README "δ"): the dataset YAML's public default, explicit overrides allowed, and
    # never δ ≥ 1/n. Checked only where n is public (replace-one); under add/remove n is private
    # and a refusal would itself tell neighbouring datasets apart.
    if method.private and privacy.neighbours == "replace_one" and privacy.delta >= 1.0 / n:
        raise ConfigError(
            f"privacy.delta: got {privacy.delta} ≥ 1/n = 1/{n} = {1.0 / n:.3g}; such a δ permits "
            f"publishing a whole record. Use δ < 1/n (the papers use 1e-5)."
        )
    # A preset selected by dpsynth-tune in proxy mode read its proxy's training split for free;
    # on that same dataset the selection is an unpaid look at the private data, outside ε.
    # (A dpsynth-tune candidate, tune.role=candidate, is exempt: it is part of a selection.)
    selection = str(OmegaConf.select(cfg, "method.preset_selection", default="") or "")
    holds = selection_for(selection, data.spec.name)
    role = str(OmegaConf.select(cfg, "tune.role", default="none") or "none")
    if method.private and role != "candidate" and holds is None:
        raise ConfigError(
            f"method={method.name}: its preset was chosen on {data.spec.name}'s training data "
            f"(method.preset_selection: {selection}), so on dataset={data.spec.name} that "
            "selection read the private data outside the run's ε. Use a preset chosen elsewhere "
            "(e.g. method=pearl), or re-select on this dataset with dpsynth-tune (validation "
            "mode pays for the selection) or on another public proxy."
        )
    cache = Path(cfg.cache_dir)
    if not _writable(cache):
        raise ConfigError(
            f"cache_dir: {cache} is not a writable folder (releases are cached there so a "
            "re-run never spends the budget twice). Set cache_dir=<a writable folder>."
        )
    if not _writable(run_dir.parent):
        raise ConfigError(
            f"output folder {run_dir.parent} is not writable; set hydra.run.dir=<a writable "
            "folder>."
        )
    return holds
