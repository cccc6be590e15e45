"""``dpsynth-tune``: choose hyper-parameters without the test set, and pay for what that reads.

The selection protocol of the leaderboards (never the test split; a selection that reads
private data is paid for in the ledger):

1. **Candidates.** Every point of a grid (Hydra sweep syntax, e.g.
   ``method.batch_size=100,300``) is one ``dpsynth`` run with ``tune.role=candidate``: its
   training split is partitioned by a public seed into a training part (the release reads
   only that) and a validation part (``tune.validation_fraction``), and its evaluation reads
   the validation part *in place of the test split*. The test split is never loaded into a
   candidate's evaluation.
2. **Selection**, in one of two modes:

   * ``private`` (default): the candidates run on the private dataset itself. Their releases
     and a Gaussian noisy max over their validation scores (counts of correct predictions,
     :func:`dpsynth.privacy.selection.noisy_argmax`) are paid from the *target* budget:
     ``--tune-share`` of it (in units of 1/m², see :mod:`dpsynth.privacy.selection`), split
     into one share per distinct release and ``--selection-share`` for the noisy max. Only
     one-shot methods (whose releases are Gaussian) can be tuned this way; candidates that
     differ only in post-processing settings share one release (from the release cache).
   * ``proxy``: the candidates run on a *public* proxy dataset (``--proxy dataset=mnist`` to
     tune a Fashion-MNIST preset) and the exact argmax is taken: no private data is read, no
     budget is spent. Any method and metric.
3. **Final runs** (``tune.role=final``, ``tune.selection=<selection.json>``) train the winner
   on the whole training split and are evaluated once on the test split. In private mode their
   budget starts with every tuning spend already in it, so their release gets what is left and
   their ledger (dp-accounting, PLD) is the whole pipeline: tuning + final release ≤ target.

Outputs under ``--out``: ``candidates/`` (private in private mode: their metrics are read off
private validation records and ``dpsynth-report`` never lists them), ``selection.json`` (public:
winner, plan, spends; no candidate scores in private mode), ``preset.yaml`` (the winner as a
method preset that extends the base one, with its provenance) and ``final/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.data.base import Dataset
from dpsynth.errors import ConfigError, DpsynthError
from dpsynth.privacy.release import Ledger, PrivacySpec, Spend

ROLES = ("none", "candidate", "final")
MODES = ("private", "proxy")
SELECTION_VERSION = 1


# --------------------------------------------------------------------------- the run's side


def carve_validation(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, int]:
    """Candidate data: the training split without a validation part, which becomes the split
    the evaluation reads (instead of the test split). The partition is a permutation of record
    *positions* drawn from the public ``seed``: it does not look at any record.

    Returns the candidate dataset and the number of validation records.
    """
    if not 0 < fraction < 1:
        raise ConfigError(
            f"tune.validation_fraction: got {fraction}; the held-out share of the training split "
            "must lie in (0, 1), e.g. 0.1."
        )
    n = data.n_train
    n_val = int(round(fraction * n))
    if n_val < 1 or n - n_val < 1:
        raise ConfigError(
            f"tune.validation_fraction: {fraction} of {n} training records leaves "
            f"{n_val} for validation and {n - n_val} for the release; choose a fraction that "
            "keeps both non-empty."
        )
    order = np.random.default_rng(seed).permutation(n)  # (n,) public: positions only
    val, keep = np.sort(order[:n_val]), np.sort(order[n_val:])
    carved = dataclasses.replace(
        data,
        train_x=data.train_x[keep],
        train_y=data.train_y[keep],
        test_x=data.train_x[val],
        test_y=data.train_y[val],
        spends=list(data.spends),
        flags=list(data.flags) + ["tuning_candidate"],
    )
    return carved, n_val


def read_selection(path: str | Path) -> dict[str, Any]:
    """A ``selection.json`` written by :func:`main`, checked for the keys runs rely on."""
    p = Path(path)
    try:
        sel = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"tune.selection: {p} does not exist; give the selection.json that dpsynth-tune "
            "wrote (under its --out folder)."
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"tune.selection: {p} is not a readable selection.json ({e}).") from None
    missing = [
        k for k in ("mode", "privacy", "winner", "spends", "dataset", "method") if k not in sel
    ]
    if missing or sel.get("schema_version") != SELECTION_VERSION:
        raise ConfigError(
            f"tune.selection: {p} lacks {missing or 'schema_version ' + str(SELECTION_VERSION)}; "
            "re-run dpsynth-tune to write it."
        )
    return sel


def prepare_run(
    data: Dataset,
    tune: dict[str, Any],
    privacy: PrivacySpec,
    method: Any,
    resolved: dict[str, Any],
) -> tuple[Dataset, dict[str, Any] | None]:
    """The data a run of ``tune.role`` sees, and what its ``metrics.json`` records about it.

    * ``none``: unchanged.
    * ``candidate``: :func:`carve_validation`.
    * ``final``: the whole training split; a private-mode selection's spends are put first in
      the run's budget (as load-time releases are), so the release gets the rest and the
      ledger composes them. Refused when the run is not the selection's winner or not under
      its target privacy.
    """
    role = str(tune.get("role", "none"))
    if role not in ROLES:
        raise ConfigError(f"tune.role: got {role!r}; allowed: {', '.join(ROLES)}.")
    if role == "none":
        return data, None
    if role == "candidate":
        fraction, seed = float(tune["validation_fraction"]), int(tune["split_seed"])
        carved, n_val = carve_validation(data, fraction, seed)
        info = {"role": role, "validation_fraction": fraction, "split_seed": seed}
        return carved, {**info, "n_validation": n_val}
    if not tune.get("selection"):
        raise ConfigError(
            "tune.selection: a tune.role=final run needs the selection.json its settings came "
            "from (tune.selection=<path>); dpsynth-tune passes it."
        )
    sel = read_selection(tune["selection"])
    if sel["dataset"] != data.spec.name and sel["mode"] == "private":
        raise ConfigError(
            f"tune.selection: {tune['selection']} tuned on dataset {sel['dataset']!r}, this run "
            f"is on {data.spec.name!r}; a private selection pays for one dataset only."
        )
    if sel["method"] != method.name:
        raise ConfigError(
            f"tune.selection: {tune['selection']} chose settings of method {sel['method']!r}, "
            f"this run is method={method.name}."
        )
    for key, value in sel["winner"]["overrides"].items():
        got = _select(resolved, key)
        if got != value:
            raise ConfigError(
                f"{key}: got {got!r}, but the selection {tune['selection']} chose {value!r}; a "
                "final run uses the winner's settings (dpsynth-tune passes them)."
            )
    info = {
        "role": role,
        "mode": sel["mode"],
        "selection": str(Path(tune["selection"]).resolve()),
        "candidates": len(sel.get("candidates", [])),
        "metric": sel.get("metric"),
        "winner": sel["winner"]["overrides"],
    }
    if sel["mode"] == "proxy":
        return data, {**info, "proxy": sel.get("proxy")}
    target = sel["privacy"]
    mine = {
        "epsilon": privacy.epsilon,
        "delta": privacy.delta,
        "accountant": privacy.accountant,
        "neighbours": privacy.neighbours,
    }
    if any(
        (not math.isclose(float(target[k]), float(v), rel_tol=1e-12))
        if isinstance(v, float)
        else target[k] != v
        for k, v in mine.items()
    ):
        raise ConfigError(
            f"privacy: got {mine}, but {tune['selection']} planned its tuning spends inside "
            f"{target}; a final run of a private selection runs at that target (set "
            "privacy.epsilon / delta / accountant / neighbours to it) or tune again."
        )
    if not method.one_shot:
        raise ConfigError(
            f"method={method.name}: a private selection's cost enters the budget of Gaussian "
            "(one-shot) releases only; tune this method on public proxy data (dpsynth-tune "
            "--proxy dataset=...)."
        )
    spends = [Spend(**s) for s in sel["spends"]]
    data = dataclasses.replace(data, spends=spends + list(data.spends))
    return data, {**info, "epsilon_tuning": sel.get("epsilon_tuning"), "spends": len(spends)}


def _select(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# --------------------------------------------------------------------------- the tool


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``key=v1,v2`` items → {key: [v1, v2]} with YAML-typed values (as Hydra parses them)."""
    import yaml

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values:
            raise ConfigError(
                f"--grid: got {item!r}; write key=value1,value2 (e.g. method.batch_size=100,300)."
            )
        if key in grid:
            raise ConfigError(f"--grid: {key} is given twice; list all its values in one item.")
        if (
            key.split(".")[0] in ("privacy", "seed", "tune", "dataset")
            and key != "dataset.n_synthetic"
        ):
            raise ConfigError(
                f"--grid: {key} cannot be tuned: the privacy target, seed, dataset and the tuning "
                "protocol are fixed by the study, not selected."
            )
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    if not grid:
        raise ConfigError("--grid: give at least one key=value1,value2 to choose between.")
    return grid


def candidates(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the grid, in a fixed order."""
    keys = list(grid)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*grid.values())]


def compose(overrides: list[str]) -> Any:
    """The resolved run config of ``overrides`` (as ``dpsynth`` would compose it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from dpsynth.config import CONF_DIR

    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            return hydra_compose("config", overrides)
    except Exception as e:  # Hydra's own errors name the override; keep its words
        raise ConfigError(f"overrides {' '.join(overrides)}: {type(e).__name__}: {e}") from None


def _release_keys(method_cfg: Any) -> frozenset[str] | None:
    from hydra.utils import get_class

    return getattr(get_class(str(method_cfg["_target_"])), "release_keys", None)


def count_releases(points: list[dict[str, Any]], release_keys: frozenset[str] | None) -> int:
    """Distinct candidate releases: points that agree on every key the release reads share it
    (``Method.release_keys``; None: every key may change the release)."""
    if release_keys is None:
        return len(points)

    def reads(key: str) -> bool:
        return not key.startswith("method.") or key.split(".", 1)[1] in release_keys

    return len({tuple((k, repr(v)) for k, v in p.items() if reads(k)) for p in points})


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value) if isinstance(value, str | bool) or value is None else value}"


def run_sweep(args: list[str], log_to: Path) -> None:
    """``dpsynth -m`` in a subprocess (its launcher decides where the jobs run)."""
    cmd = [sys.executable, "-m", "dpsynth.cli", "-m", *args]
    with log_to.open("a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise DpsynthError(
            f"dpsynth-tune: the sweep failed (exit {done.returncode}); its output is in {log_to}."
        )


def read_candidates(folder: Path, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each grid point's completed candidate record (metrics.json + config.json)."""
    found: dict[int, dict[str, Any]] = {}
    for f in sorted(folder.rglob("metrics.json")):
        rec = json.loads(f.read_text())
        if (rec.get("tune") or {}).get("role") != "candidate":
            continue
        cfg = json.loads((f.parent / "config.json").read_text())
        for i, p in enumerate(points):
            if all(_select(cfg, k) == v for k, v in p.items()):
                found[i] = {**rec, "run_dir": str(f.parent), "config": cfg}
    bad = [
        f"{points[i]}: {found[i].get('status', 'missing') if i in found else 'missing'}"
        for i in range(len(points))
        if i not in found or found[i].get("status") != "completed"
    ]
    if bad:
        raise DpsynthError(
            "dpsynth-tune: candidates without a completed run: "
            + "; ".join(bad)
            + f" (see {folder})."
        )
    return [found[i] for i in range(len(points))]


def select(
    records: list[dict[str, Any]],
    *,
    metric: str,
    mode: str,
    multiplier: float | None,
) -> tuple[int, list[Spend], list[float] | None]:
    """The winner's index, the selection's spends, and (proxy mode only) the scores."""
    from dpsynth.privacy.selection import noisy_argmax

    for r in records:
        if metric not in r["metrics"]:
            raise ConfigError(
                f"--metric: {metric} is not among the candidates' metrics "
                f"({', '.join(sorted(r['metrics']))}); choose one the eval config computes."
            )
    if mode == "proxy":
        higher = bool(records[0]["higher_is_better"].get(metric, True))
        scores = [float(r["metrics"][metric]) for r in records]
        return int(np.argmax(scores) if higher else np.argmin(scores)), [], scores
    if not metric.startswith("eval/acc"):
        raise ConfigError(
            f"--metric: {metric} in private mode; the noisy max needs a score whose per-record "
            "sensitivity is known: an accuracy (eval/acc...), counted as correct predictions "
            "on the validation records. Use --proxy for other metrics."
        )
    counts = [
        float(r["metrics"][metric]) / 100.0 * int(r["tune"]["n_validation"]) for r in records
    ]  # accuracy (%) × n_val: the number of correct predictions
    if multiplier is None:
        raise ConfigError("private selection needs the plan's noise multiplier (plan_tuning).")
    winner, spend = noisy_argmax(counts, multiplier, statistic=f"selection:{metric}")
    return winner, [spend], None


def distinct_release_spends(records: list[dict[str, Any]]) -> list[Spend]:
    """Every spend of every distinct candidate release (a shared release counted once)."""
    seen: set[str] = set()
    spends: list[Spend] = []
    for r in records:
        fp = (r.get("release") or {}).get("fingerprint") or r["run_dir"]
        if fp in seen:
            continue
        seen.add(fp)
        spends += [Spend(**s) for s in r["privacy"]["releases"]]
    return spends


def write_preset(path: Path, base: str, winner: dict[str, Any], note: str, label: str) -> None:
    """The winner's method keys as a preset that extends the base one (Hydra defaults list)."""
    wrapped = textwrap.wrap(f"provenance: {note}", 94)
    lines = [f"# {line}" if i == 0 else f"#   {line}" for i, line in enumerate(wrapped)]
    lines += ["defaults:", f"  - {base}", "  - _self_"]
    for key, value in winner.items():
        if key.startswith("method."):
            lines.append(f"{key.split('.', 1)[1]}: {json.dumps(value)}")
    lines.append(f"preset_selection: {label}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="dpsynth-tune",
        description="Choose hyper-parameters on a validation split (private mode: paid from the "
        "target budget) or on public proxy data, never on the test split; then run the winner. "
        "Base overrides follow '--', e.g. -- dataset=digits method=pearl privacy.epsilon=1.",
    )
    p.add_argument("--grid", action="append", default=[], help="key=v1,v2 (repeatable)")
    p.add_argument(
        "--metric", default="eval/acc_logreg", help="candidates' score (default: %(default)s)"
    )
    p.add_argument("--out", required=True, help="folder for candidates/, selection.json, final/")
    p.add_argument(
        "--proxy",
        nargs="+",
        default=None,
        metavar="OVERRIDE",
        help="proxy mode: overrides that point the candidates at public data (dataset=mnist ...)",
    )
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--tune-seed", type=int, default=0, help="the candidates' run seed")
    p.add_argument(
        "--tune-share", type=float, default=0.2, help="private mode: budget share of tuning"
    )
    p.add_argument(
        "--selection-share", type=float, default=0.1, help="private mode: noisy max's share of it"
    )
    p.add_argument("--final-seeds", default="0,1,2", help="seeds of the final runs ('' for none)")
    p.add_argument("base", nargs="*", help="base overrides (after --)")
    a = p.parse_args(argv)
    try:
        return _tune(a)
    except DpsynthError as e:
        print(f"dpsynth-tune: error: {e}", file=sys.stderr)
        return 2


def _choice(overrides: list[str] | None, group: str, default: str) -> str:
    """The option a list of overrides picks for a config group (conf/config.yaml's default
    otherwise)."""
    return next((o.split("=", 1)[1] for o in overrides or [] if o.startswith(f"{group}=")), default)


def _tune(a: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from dpsynth.privacy.selection import plan_tuning
    from dpsynth.records import git_sha

    out = Path(a.out)
    mode = "proxy" if a.proxy else "private"
    grid = parse_grid(a.grid)
    points = candidates(grid)
    base = [o for o in a.base if o != "--"]
    target_cfg = compose(base)
    compose(base + list(a.proxy or []))  # a bad proxy override fails here, before any run
    method_cfg = OmegaConf.to_container(target_cfg.method, resolve=True)
    from hydra.utils import get_class

    method_cls = get_class(str(method_cfg["_target_"]))
    privacy = PrivacySpec(
        float(target_cfg.privacy.epsilon),
        float(target_cfg.privacy.delta),
        str(target_cfg.privacy.accountant),
        str(target_cfg.privacy.neighbours),
    )
    plan = None
    cand_privacy: list[str] = []
    if mode == "private":
        if not getattr(method_cls, "one_shot", False):
            raise ConfigError(
                f"method={method_cfg.get('name', method_cls.__name__)}: private tuning pays inside "
                "Gaussian (one-shot) budgets only; tune it on public data with --proxy dataset=..."
            )
        releases = count_releases(points, _release_keys(method_cfg))
        plan = plan_tuning(
            privacy, releases=releases, tune_share=a.tune_share, selection_share=a.selection_share
        )
        cand_privacy = [f"privacy.epsilon={plan.release_epsilon!r}"]
    out.mkdir(parents=True, exist_ok=True)
    log = out / "tune.log"
    axes = [
        f"{k}={','.join(_override(k, v).split('=', 1)[1] for v in vals)}"
        for k, vals in grid.items()
    ]
    replaced = {o.split("=", 1)[0] for o in list(a.proxy or []) + cand_privacy}
    keep = [o for o in base if o.split("=", 1)[0] not in replaced]  # the proxy's own, not both
    run_sweep(
        keep
        + list(a.proxy or [])
        + axes
        + cand_privacy
        + [
            f"seed={a.tune_seed}",
            "tune.role=candidate",
            f"tune.validation_fraction={a.validation_fraction}",
            f"tune.split_seed={a.split_seed}",
            f"hydra.sweep.dir={out / 'candidates'}",
        ],
        log,
    )
    records = read_candidates(out / "candidates", points)
    if mode == "private" and any(r["privacy"].get("delta_reserved") for r in records):
        raise ConfigError(
            "dataset: the candidates inferred a DP schema (δ reserved per run); private tuning "
            "needs a declared schema (dataset.schema) so every candidate reads the same one."
        )
    winner, sel_spends, scores = select(
        records, metric=a.metric, mode=mode, multiplier=plan.selection_multiplier if plan else None
    )
    spends = distinct_release_spends(records) + sel_spends if mode == "private" else []
    tuning = Ledger.account(privacy, spends) if spends else None
    if tuning is not None and tuning.epsilon_spent >= privacy.epsilon:
        raise DpsynthError(
            f"dpsynth-tune: the candidates' releases and the selection spent ε = "
            f"{tuning.epsilon_spent:.4g} ≥ the target {privacy.epsilon}: nothing is left for the "
            "final runs (more distinct releases than planned? a release cache miss draws anew)."
        )
    dataset_name = _choice(base, "dataset", "digits")
    label = "validation" if mode == "private" else f"proxy:{_choice(a.proxy, 'dataset', '?')}"

    selection = {
        "schema_version": SELECTION_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "mode": mode,
        "dataset": records[0].get("dataset") if mode == "private" else dataset_name,
        "proxy": list(a.proxy) if a.proxy else None,
        "candidate_dataset": records[0].get("dataset"),
        "method": records[0]["method"],
        "method_version": records[0].get("method_version"),
        "base_overrides": base,
        "privacy": dataclasses.asdict(privacy) | {"delta_reserved": 0.0},
        "metric": a.metric,
        "grid": grid,
        "validation_fraction": a.validation_fraction,
        "split_seed": a.split_seed,
        "tune_seed": a.tune_seed,
        "candidates": [
            {"overrides": pt, "release_fingerprint": (r.get("release") or {}).get("fingerprint")}
            for pt, r in zip(points, records, strict=True)
        ],
        "scores": scores,  # proxy mode only: public data; private scores never leave candidates/
        "winner": {"index": winner, "overrides": points[winner]},
        "plan": dataclasses.asdict(plan) if plan else None,
        "spends": [vars(s) for s in spends],
        "epsilon_tuning": tuning.epsilon_spent if tuning else 0.0,
    }
    sel_path = out / "selection.json"
    tmp = sel_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(selection, indent=2, default=str))
    os.replace(tmp, sel_path)
    choice = _choice(base, "method", "pearl")
    if mode == "private":
        note = (
            f"chosen by dpsynth-tune on {selection['created'][:10]}, private mode: {len(points)} "
            f"candidates trained on {1 - a.validation_fraction:.0%} of {selection['dataset']}'s "
            f"training split, scored by {a.metric} on the other {a.validation_fraction:.0%}, "
            f"Gaussian noisy max; tuning cost ε = {selection['epsilon_tuning']:.3g} at "
            f"δ = {privacy.delta:g} composed into the final runs' ledgers (target ε = "
            f"{privacy.epsilon:g}). Selection record: {sel_path}"
        )
    else:
        note = (
            f"chosen by dpsynth-tune on {selection['created'][:10]}, proxy mode: {len(points)} "
            f"candidates on public {selection['candidate_dataset']} ({' '.join(a.proxy)}), scored "
            f"by {a.metric} on a {a.validation_fraction:.0%} validation part of its training "
            f"split; no private data read, no budget spent. Selection record: {sel_path}"
        )
    write_preset(out / "preset.yaml", choice, points[winner], note, label)
    print(f"winner: {points[winner]}  ({mode}; selection: {sel_path})")
    seeds = [s for s in str(a.final_seeds).split(",") if s.strip()]
    if seeds:
        run_sweep(
            base
            + [_override(k, v) for k, v in points[winner].items()]
            + [
                f"seed={','.join(seeds)}",
                "tune.role=final",
                f"tune.selection={sel_path.resolve()}",
                f"method.preset_selection={label}",
                f"hydra.sweep.dir={out / 'final'}",
            ],
            log,
        )
        print(f"final runs: {out / 'final'} (dpsynth-report {out / 'final'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
