"""dpsynth-tune: the validation carve, the tuning plan's composition, the private noisy max,
the final run's ledger (tuning spends included), proxy mode, and the refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event, pld

from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError
from dpsynth.methods.dpmerf import DPMERF
from dpsynth.methods.dpsgd import DPSGDGAN
from dpsynth.privacy.accounting import Gaussian, remaining_multiplier
from dpsynth.privacy.release import Ledger, PrivacySpec, Spend
from dpsynth.privacy.selection import noisy_argmax, plan_tuning
from dpsynth.report import collect_runs
from dpsynth.tune import (
    SELECTION_VERSION,
    carve_validation,
    count_releases,
    main,
    parse_grid,
    prepare_run,
)
from tests.conftest import TINY_METHOD
from tests.datagen import write_idx_dataset


def _data(n: int = 50) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 2, 2)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    spec = DataSpec("toy", "image", (1, 2, 2), 2, ("a", "b"))
    return Dataset(spec, x, y, x[:5] + 9.0, y[:5])  # test records unlike any training record


def test_carve_is_a_public_partition_of_the_training_split() -> None:
    data = _data()
    carved, n_val = carve_validation(data, 0.2, seed=3)
    assert n_val == 10 and carved.n_train == 40 and len(carved.test_x) == 10
    # disjoint, together the training split; the test split is not there at all
    both = np.concatenate([carved.train_x, carved.test_x]).reshape(50, -1)
    assert sorted(map(tuple, both)) == sorted(map(tuple, data.train_x.reshape(50, -1)))
    assert not np.any(carved.test_x > 1.0)
    again, _ = carve_validation(data, 0.2, seed=3)
    np.testing.assert_array_equal(again.test_x, carved.test_x)
    other, _ = carve_validation(data, 0.2, seed=4)
    assert not np.array_equal(other.test_x, carved.test_x)
    assert "tuning_candidate" in carved.flags and data.n_train == 50  # the original untouched
    for bad in (0.0, 1.0, 0.001):
        with pytest.raises(ConfigError, match="tune.validation_fraction"):
            carve_validation(data, bad, seed=0)


@pytest.mark.parametrize("neighbours", ["replace_one", "add_remove"])
def test_plan_and_final_release_compose_to_exactly_the_target(neighbours: str) -> None:
    privacy = PrivacySpec(1.0, 1e-5, neighbours=neighbours)
    plan = plan_tuning(privacy, releases=3, tune_share=0.3, selection_share=0.1)
    tuning = [Gaussian(plan.release_multiplier)] * 3 + [Gaussian(plan.selection_multiplier)]
    final = remaining_multiplier(plan.total, tuning)
    assert final == pytest.approx(plan.total / math.sqrt(0.7), rel=1e-9)
    # the whole pipeline, by dp-accounting's PLD built here directly (every event a Gaussian
    # with its sensitivity derived under the relation: dp-accounting's add/remove Gaussian)
    acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    for m in [plan.release_multiplier] * 3 + [plan.selection_multiplier, final]:
        acc.compose(dp_event.GaussianDpEvent(m))
    assert acc.get_epsilon(1e-5) == pytest.approx(1.0, abs=2e-3)
    # a candidate calibrated at release_epsilon gets (about) the planned multiplier
    ledger = Ledger.account(
        PrivacySpec(plan.release_epsilon, 1e-5, neighbours=neighbours),
        [Spend("gaussian", "x", plan.release_multiplier, 1.0, plan.release_multiplier)],
    )
    assert ledger.epsilon_spent == pytest.approx(plan.release_epsilon, rel=1e-6)
    with pytest.raises(ConfigError, match="--tune-share"):
        plan_tuning(privacy, releases=1, tune_share=1.0, selection_share=0.1)


def test_noisy_argmax_is_a_gaussian_on_the_count_vector() -> None:
    rng = np.random.default_rng(0)
    winner, spend = noisy_argmax([10, 500, 20], 2.0, statistic="s", rng=rng)
    assert winner == 1  # a margin of ~80 noise stds
    assert spend.sensitivity == pytest.approx(math.sqrt(3)) and spend.noise_std == pytest.approx(
        2.0 * math.sqrt(3)
    )
    # equal counts: every candidate wins about equally often (the noise, not the order, decides)
    wins = np.bincount(
        [noisy_argmax([5, 5, 5], 1.0, statistic="s", rng=rng)[0] for _ in range(3000)]
    )
    assert np.all(np.abs(wins / 3000 - 1 / 3) < 0.04)


def test_candidates_that_differ_in_post_processing_share_a_release() -> None:
    keys = DPMERF.release_keys
    lr = [{"method.lr": 0.01}, {"method.lr": 0.001}]
    assert count_releases(lr, keys) == 1
    k = [{"method.num_features": 100, "method.lr": v} for v in (0.1, 0.2)] + [
        {"method.num_features": 200, "method.lr": 0.1}
    ]
    assert count_releases(k, keys) == 2
    assert count_releases(lr, None) == 2  # a method that does not say: every point its own


def test_grid_parsing_and_what_cannot_be_tuned() -> None:
    assert parse_grid(["method.lr=0.01,0.001", "method.scheduler=cosine,step"]) == {
        "method.lr": [0.01, 0.001],
        "method.scheduler": ["cosine", "step"],
    }
    for bad, needle in [
        ("privacy.epsilon=1,2", "cannot be tuned"),
        ("seed=0,1", "cannot be tuned"),
        ("method.lr", "key=value1,value2"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            parse_grid([bad])


def _selection(tmp_path: Path, **changes) -> Path:
    sel = {
        "schema_version": SELECTION_VERSION,
        "mode": "private",
        "dataset": "toy",
        "method": "dpmerf",
        "privacy": {
            "epsilon": 1.0,
            "delta": 1e-5,
            "accountant": "pld",
            "neighbours": "replace_one",
        },
        "winner": {"overrides": {"method.lr": 0.01}},
        "spends": [vars(Spend("gaussian", "embedding", 9.0, 1.0, 9.0))],
        "epsilon_tuning": 0.3,
        **changes,
    }
    path = tmp_path / "selection.json"
    path.write_text(json.dumps(sel))
    return path


def test_final_run_budget_starts_with_the_tuning_spends(tmp_path) -> None:
    path = _selection(tmp_path)
    resolved = {"method": {"lr": 0.01}}
    privacy = PrivacySpec(1.0, 1e-5)
    data, info = prepare_run(
        _data(), {"role": "final", "selection": str(path)}, privacy, DPMERF(), resolved
    )
    assert [s.statistic for s in data.spends] == ["embedding"] and info["mode"] == "private"
    assert data.n_train == 50  # the final run trains on the whole training split
    # the run's own release then gets what is left (its Budget composes load-time spends first)
    with pytest.raises(ConfigError, match="the selection .* chose"):
        prepare_run(
            _data(),
            {"role": "final", "selection": str(path)},
            privacy,
            DPMERF(),
            {"method": {"lr": 0.1}},
        )
    with pytest.raises(ConfigError, match="planned its tuning spends inside"):
        prepare_run(
            _data(),
            {"role": "final", "selection": str(path)},
            PrivacySpec(2.0, 1e-5),
            DPMERF(),
            resolved,
        )
    with pytest.raises(ConfigError, match="one-shot"):
        prepare_run(
            _data(),
            {"role": "final", "selection": str(_selection(tmp_path, method="dpsgd"))},
            privacy,
            DPSGDGAN(),
            resolved,
        )
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_run(
            _data(),
            {"role": "final", "selection": str(tmp_path / "nope.json")},
            privacy,
            DPMERF(),
            resolved,
        )
    with pytest.raises(ConfigError, match="tune.role"):
        prepare_run(_data(), {"role": "winner"}, privacy, DPMERF(), resolved)


def test_private_mode_refuses_dpsgd_and_unbounded_metrics_before_any_run(tmp_path, capsys) -> None:
    out = tmp_path / "t"
    assert main(["--out", str(out), "--grid", "method.lr=0.1,0.2", "--", "method=dpsgd"]) == 2
    assert "--proxy" in capsys.readouterr().err and not out.exists()


def _tiny(tmp_path: Path) -> list[str]:
    root = write_idx_dataset(tmp_path / "mnist", n_train=80, n_test=30)
    method = [
        f"method.{k}={v}"
        for k, v in TINY_METHOD.items()
        if k in ("steps", "num_features", "batch_size", "checkpoint_every")
    ]
    return [
        "dataset=mnist",
        f"data_dir={root}",
        "method=dpmerf",
        "privacy.epsilon=2",
        "eval=fast",
        "logger=none",
        "dataset.n_synthetic=100",
        f"cache_dir={tmp_path / 'cache'}",
        *method,
    ]


def test_private_tuning_end_to_end_pays_every_candidate_release_and_the_selection(tmp_path) -> None:
    out = tmp_path / "tune"
    base = _tiny(tmp_path)
    grid = ["--grid", "method.lr=0.01,0.001", "--grid", "method.num_features=8,16"]
    assert (
        main(
            [
                "--out",
                str(out),
                *grid,
                "--validation-fraction",
                "0.25",
                "--final-seeds",
                "0",
                "--",
                *base,
            ]
        )
        == 0
    )
    sel = json.loads((out / "selection.json").read_text())
    assert sel["mode"] == "private" and sel["scores"] is None  # private scores stay in candidates/
    assert sel["plan"]["releases"] == 2  # lr is post-processing; num_features is not
    fps = {c["release_fingerprint"] for c in sel["candidates"]}
    assert len(fps) == 2
    cands = [json.loads(p.read_text()) for p in (out / "candidates").rglob("metrics.json")]
    assert len(cands) == 4 and all(c["tune"]["n_validation"] == 20 for c in cands)
    per_release = len(cands[0]["privacy"]["releases"])  # σ0² estimate + embedding
    statistics = [s["statistic"] for s in sel["spends"]]
    assert statistics.count("selection:eval/acc_logreg") == 1
    assert len(statistics) == 2 * per_release + 1  # each distinct release once, and the max
    finals = list((out / "final").rglob("metrics.json"))
    assert len(finals) == 1
    rec = json.loads(finals[0].read_text())
    assert rec["status"] == "completed" and rec["tune"]["role"] == "final"
    spent = rec["privacy"]["releases"]
    n = len(statistics)
    assert [s["statistic"] for s in spent[:n]] == statistics  # tuning first, then its own release
    assert len(spent) == n + per_release
    assert rec["privacy"]["epsilon_spent"] == pytest.approx(2.0, rel=1e-4)
    assert rec["privacy"]["epsilon_spent"] <= 2.0 * (1 + 1e-6)
    assert sel["epsilon_tuning"] < 2.0
    preset = (out / "preset.yaml").read_text()
    assert "  - dpmerf" in preset and "preset_selection: validation" in preset
    assert "private mode" in preset
    # candidates are scored on private validation records: never in a report
    runs = collect_runs([out])
    assert set(runs["run_dir"]) == {str(finals[0].parent)}


def test_proxy_tuning_spends_nothing_on_the_target(tmp_path) -> None:
    out = tmp_path / "tune"
    base = _tiny(tmp_path)
    proxy = write_idx_dataset(tmp_path / "fashion", n_train=80, n_test=30)
    args = ["--out", str(out), "--grid", "method.lr=0.01,0.001", "--final-seeds", "0"]
    args += ["--proxy", "dataset=fashion_mnist", f"data_dir={proxy}", "--", *base]
    assert main(args) == 0
    sel = json.loads((out / "selection.json").read_text())
    assert sel["mode"] == "proxy" and sel["spends"] == [] and len(sel["scores"]) == 2
    assert sel["candidate_dataset"] == "fashion_mnist" and sel["dataset"] == "mnist"
    assert sel["winner"]["index"] == int(np.argmax(sel["scores"]))
    rec = json.loads(next((out / "final").rglob("metrics.json")).read_text())
    assert rec["dataset"] == "mnist" and rec["tune"]["mode"] == "proxy"
    cand = json.loads(next((out / "candidates").rglob("metrics.json")).read_text())
    own = [s["statistic"] for s in rec["privacy"]["releases"]]
    assert own == [s["statistic"] for s in cand["privacy"]["releases"]]  # its own release only
    assert rec["privacy"]["epsilon_spent"] == pytest.approx(2.0, rel=1e-4)
    assert "preset_selection: proxy:fashion_mnist" in (out / "preset.yaml").read_text()
