"""Config schema and validation: every bad value is refused before any work or output.

Hydra composes ``conf/config.yaml`` over this structured schema, so wrong *types*
(``privacy.epsilon=abc``) and unknown group choices (``method=foo``) fail at composition with
Hydra's message naming the key, the value and the options. :func:`validate` then checks ranges
and combinations and raises :class:`~dpsynth.errors.ConfigError` with one message that names
the key, the value received, what is allowed and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dpsynth.errors import ConfigError
from dpsynth.privacy.accounting import check_accountant, check_neighbours

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
DATASET_OPTION_KEYS = (
    "sigma0_sq",
    "n_synthetic",
    "delta",
    "provenance",
)  # harness keys in dataset YAMLs, not loader args


def default_cache_root() -> str:
    """``$DPSYNTH_DATA`` parent, else ``$XDG_CACHE_HOME/dpsynth``, else ``~/.cache/dpsynth``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "dpsynth")


def default_data_dir() -> str:
    return os.environ.get("DPSYNTH_DATA") or str(Path(default_cache_root()) / "data")


RESULT_NEUTRAL_KEYS = (
    "hydra",
    "logger",
    "progress",
    "resume",
    "study",
    "cache_dir",
    "data_dir",
    "trainer",
)


#: Lightning's shorthand precision names, as it resolves them.
PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


#: Bumped when what a reduced ``trainer.precision`` runs in changes, so a resumed bf16 sweep
#: re-runs jobs made under the old scope while float32 ids (and Method.version) stay as they
#: are. 1: training only; 2: sampling too (``Synthesizer.precision``).
LOW_PRECISION_VERSION = 2


def canonical_precision(value: object) -> str:
    """A Lightning precision under its canonical name (``32`` → ``32-true``, ...)."""
    return PRECISION_ALIASES.get(str(value), str(value))


def trainer_precision(resolved: dict[str, Any]) -> str:
    """The run's ``trainer.precision`` under its canonical Lightning name (default 32-true)."""
    return canonical_precision((resolved.get("trainer") or {}).get("precision", "32-true"))


#: Method keys that label a preset without changing what it computes (read by the report).
METHOD_LABEL_KEYS = ("preset_selection",)
#: Method keys added after runs were recorded, with the value that reproduces those runs: a
#: method config holding that value is hashed without the key, so adding a key to a YAML does
#: not rename every earlier run (a resumed sweep would re-run them all); any other value is
#: hashed as usual.
METHOD_LATE_KEYS: dict[str, Any] = {"unbiased_loss": False}


def selection_for(label: str, dataset: str) -> str | None:
    """A preset's selection label as it holds for a run on ``dataset``; None when that
    selection read this dataset's own training data (the run must be refused).

    ``proxy:a|b`` records the same choice made independently on each public proxy a and b (each
    a separate dpsynth-tune selection in proxy mode that found the same winner). On dataset a
    the choice read a's private data through the first selection but stands on b's alone: the
    run's label is ``proxy:b``. Any other label (authors, validation, test_set, ...) is kept.
    """
    label = str(label or "")
    if not label.startswith("proxy:"):
        return label
    proxies = [p for p in label[len("proxy:") :].split("|") if p]
    others = [p for p in proxies if p != dataset]
    return "proxy:" + "|".join(others) if others else None


def method_version(method: Any) -> str | None:
    """The code version (``Method.version``) of the class a method config's ``_target_`` names;
    None when there is no ``_target_`` or it does not import (the run then stops with its own
    error when the method is built, naming the key)."""
    target = method.get("_target_") if isinstance(method, dict) else None
    if not target:
        return None
    from hydra.utils import get_class

    try:
        return str(get_class(str(target)).version)
    except Exception:  # reported where the method is built, not here
        return None


def config_id(resolved: dict[str, Any]) -> str:
    """Short hash of everything in a resolved config that can change a run's results.

    That includes the code version of the method (``Method.version``, from the class the
    method's ``_target_`` names): a run made by other method code gets another id, so a
    resumed sweep re-runs it instead of skipping it. Paths, loggers, progress bars, trainer
    options other than a non-float32 ``trainer.precision``, and preset labels
    (``method.preset_selection``) are left out, so the same experiment gets the same id
    (and run folder) wherever its data live.
    """
    kept = {k: v for k, v in resolved.items() if k not in RESULT_NEUTRAL_KEYS}
    if trainer_precision(resolved) != "32-true":  # the one trainer key that changes results
        kept["trainer_precision"] = trainer_precision(resolved)  # (float32 ids unchanged)
        kept["low_precision_version"] = LOW_PRECISION_VERSION
    if (kept.get("tune") or {}).get("role", "none") == "none":  # ids of ordinary runs unchanged
        kept.pop("tune", None)
    if isinstance(kept.get("dataset"), dict):  # where a loader caches is no result either
        kept["dataset"] = {k: v for k, v in kept["dataset"].items() if k != "cache_dir"}
    if isinstance(kept.get("method"), dict):
        version = method_version(kept["method"])
        kept["method"] = {
            k: v
            for k, v in kept["method"].items()
            if k not in METHOD_LABEL_KEYS
            and not (k in METHOD_LATE_KEYS and v is METHOD_LATE_KEYS[k])
        }
        if version is not None:
            kept["method_version"] = version
    blob = json.dumps(kept, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _config_id_resolver(*, _root_: DictConfig) -> str:
    # Copy every key but ``hydra`` (whose run dir calls this resolver) *with* its parent, so
    # interpolations between kept and dropped keys (dataset.root → data_dir) still resolve.
    body = OmegaConf.masked_copy(_root_, [k for k in _root_ if k != "hydra"])
    return config_id(OmegaConf.to_container(body, resolve=True))


def _wandb_offline() -> bool:
    """Offline unless an API key is configured (env or ~/.netrc), so runs never block."""
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def by_epsilon(epsilon: Any, table: Any, *, _node_: Any = None) -> Any:
    """A setting that follows the budget by a public rule written in a method YAML:
    ``${dpsynth_by_epsilon:${privacy.epsilon},{0: 1500, 10: 5000}}`` is 1500 below ε 10 and
    5000 from ε 10 up (the value at the largest threshold ≤ ε). Deterministic in ε alone, so
    every run of a sweep records the value it used (config.json is saved resolved) and the
    run id follows it."""
    where = _node_._get_full_key(None) if _node_ is not None else "?"
    key = f"{where} (dpsynth_by_epsilon)"
    if not isinstance(table, dict) or not table:
        raise ConfigError(
            f"{key}: got table {table!r}; write a mapping from ε thresholds to values, "
            "e.g. ${dpsynth_by_epsilon:${privacy.epsilon},{0: 1500, 10: 5000}}."
        )
    try:
        eps = float(epsilon)
        thresholds = sorted((float(t), v) for t, v in table.items())
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{key}: got ε {epsilon!r} and thresholds {list(table)}; both must be numbers "
            "(e.g. {0: 1500, 10: 5000})."
        ) from e
    if math.isnan(eps) or eps < thresholds[0][0]:
        raise ConfigError(
            f"{key}: privacy.epsilon {epsilon!r} is below the rule's smallest threshold "
            f"{thresholds[0][0]} ({table}); start the rule at 0 so every ε has a value."
        )
    return [v for t, v in thresholds if t <= eps][-1]


if not OmegaConf.has_resolver("dpsynth_data_dir"):
    OmegaConf.register_new_resolver("dpsynth_data_dir", default_data_dir)
    OmegaConf.register_new_resolver("dpsynth_cache_root", default_cache_root)
    OmegaConf.register_new_resolver("dpsynth_config_id", _config_id_resolver)
    OmegaConf.register_new_resolver("dpsynth_wandb_offline", _wandb_offline)
    OmegaConf.register_new_resolver("dpsynth_by_epsilon", by_epsilon)


@dataclass
class PrivacyConfig:
    epsilon: float = MISSING
    delta: float = MISSING  # per dataset: conf/dataset/<name>.yaml's `delta` (see δ policy)
    accountant: str = "pld"
    neighbours: str = "replace_one"


@dataclass
class TuneConfig:
    """A run's part in ``dpsynth-tune``'s selection protocol (``role: none`` for every other
    run; see :mod:`dpsynth.tune`)."""

    role: str = "none"  # none | candidate | final
    validation_fraction: float = 0.1  # candidate: share of the training split held out
    split_seed: int = 0  # public seed of the train / validation partition
    selection: Any = None  # final: the selection.json the winner came from


@dataclass
class Config:
    """Top-level schema; group contents (dataset, method, eval, ...) are free-form dicts whose
    ``_target_`` names the code that reads them."""

    dataset: Any = MISSING
    method: Any = MISSING
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    eval: Any = MISSING
    logger: Any = None
    trainer: Any = field(default_factory=dict)
    seed: int = 0
    data_dir: str = MISSING
    cache_dir: str = MISSING
    resume: bool = True
    study: str = "adhoc"
    progress: Any = None
    tune: TuneConfig = field(default_factory=TuneConfig)


ConfigStore.instance().store(name="config_schema", node=Config)


def group_options(group: str) -> list[str]:
    """Names of the YAMLs in ``conf/<group>/``: the valid choices for that group."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def validate(cfg: DictConfig, *, private: bool) -> None:
    """Range and combination checks that types alone cannot express.

    Args:
        cfg: the composed config.
        private: whether the chosen method claims differential privacy (ε must be finite).
    """
    eps, delta = cfg.privacy.epsilon, cfg.privacy.delta
    if private:
        if not (eps > 0 and math.isfinite(eps)):
            raise ConfigError(
                f"privacy.epsilon: got {eps}; a DP method needs a finite ε > 0 "
                "(e.g. privacy=eps1 or privacy.epsilon=1). For a non-private reference row use "
                "method=nonprivate_gan."
            )
        if not 0 < delta < 1:
            raise ConfigError(
                f"privacy.delta: got {delta}; allowed: 0 < δ < 1 (the papers use 1e-5)."
            )
    check_accountant(cfg.privacy.accountant)
    check_neighbours(cfg.privacy.neighbours)
    if cfg.seed < 0:
        raise ConfigError(f"seed: got {cfg.seed}; must be a non-negative integer.")
    n_syn = cfg.dataset.get("n_synthetic")
    if n_syn is not None and int(n_syn) < 1:
        raise ConfigError(f"dataset.n_synthetic: got {n_syn}; must be a positive integer.")
    for group in ("dataset", "method", "eval"):
        if "_target_" not in cfg[group]:
            raise ConfigError(
                f"{group}: the config has no _target_; choose one of {group_options(group)} "
                f"(e.g. {group}={group_options(group)[0]})."
            )
