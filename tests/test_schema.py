"""DP schema inference for tables (dpsynth.privacy.schema through the CSV and Adult loaders).

Offline, on small generated files. What is checked: the schema releases spend exactly their
share and compose in the run's ledger; the release cache makes a re-run free and identical;
partition selection (almost) never releases a value held by one record; declared schemas
spend nothing; the non-private path needs its opt-in and flags the run; no value of the data
makes loading fail; every constant of the Adult config has a stated source.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import norm

import dpsynth.privacy.schema as schema_mod
from dpsynth.data.adult import ADULT_SCHEMA, load_adult
from dpsynth.data.csv import load_csv
from dpsynth.data.tabular import ColumnDecl, SchemaWarning
from dpsynth.errors import ConfigError
from dpsynth.privacy.accounting import (
    Gaussian,
    calibrate_gaussian,
    epsilon_spent,
    remaining_multiplier,
    share_multiplier,
)
from dpsynth.privacy.release import Budget, PrivacySpec
from dpsynth.privacy.schema import (
    OTHER,
    SignedLogGrid,
    plan_delta,
    quantile_bounds,
    release_values,
    selection_threshold,
)
from tests.datagen import write_adult

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
EPS1 = PrivacySpec(1.0, 1e-5)


def write_table(path: Path, n: int = 2000, seed: int = 0, rare: bool = False) -> str:
    """age (int 18..79), height (float), color (3 values), label (no/yes); ``rare``: one
    record's color is ``"unicorn"``."""
    rng = np.random.default_rng(seed)
    rows = ["age,height,color,label"]
    for i in range(n):
        color = "unicorn" if rare and i == 7 else rng.choice(["red", "green", "blue"])
        label = ("no", "yes")[i % 2]
        rows.append(f"{rng.integers(18, 80)},{rng.uniform(1.5, 2.1):.3f},{color},{label}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _events(spends):
    return [s.event() for s in spends]


# ----------------------------------------------------------------------------- spending


@pytest.mark.parametrize("neighbours", ["replace_one", "add_remove"])
def test_dp_schema_spends_exactly_its_share(tmp_path, neighbours):
    path = write_table(tmp_path / "t.csv")
    privacy = PrivacySpec(1.0, 1e-5, "pld", neighbours)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemaWarning)  # DP inference is no leak: no warning
        ds = load_csv(path, "label", privacy=privacy, schema_share=0.1)
    assert ds.schema_source == "dp" and ds.flags == []
    kinds, values = ds.spends  # kinds (20% of the share), then bounds + sets (80%)
    assert kinds.share == pytest.approx(0.02) and values.share == pytest.approx(0.08)
    assert kinds.statistic == "kinds:age+kinds:height+kinds:color"
    assert values.statistic == "bins:age+bins:height+counts:color+counts:label"
    # δ split: 10% of δ for partition selection, the Gaussian releases accounted at the rest
    split = ds.encoder.schema_release["delta"]
    assert split["selection"] == pytest.approx(1e-6) == ds.encoder.schema_delta
    assert split["gaussian"] == pytest.approx(9e-6)
    assert split["per_key"] == pytest.approx(1e-6 / 4)  # age, height, color may be sets; label
    total = calibrate_gaussian(epsilon=1.0, delta=split["gaussian"])
    assert kinds.noise_multiplier == pytest.approx(share_multiplier(total, 0.02))
    # The two releases compose, by the accountant, to one Gaussian of the whole share ...
    kw = {"delta": split["gaussian"], "neighbours": neighbours}
    spent = epsilon_spent(_events(ds.spends), **kw)
    assert spent == pytest.approx(epsilon_spent([Gaussian(share_multiplier(total, 0.1))], **kw))
    assert 0 < spent < 1.0
    # ... and with the rest of the run's budget to exactly ε.
    rest = Gaussian(remaining_multiplier(total, _events(ds.spends)))
    assert epsilon_spent([*_events(ds.spends), rest], **kw) == pytest.approx(1.0, abs=2e-3)
    # Sensitivities under the relation: a histogram moves by √2 (replace-one) or 1 (add/remove).
    unit = math.sqrt(2.0) if neighbours == "replace_one" else 1.0
    joint = values.sensitivity  # 4 histograms, each normalised: √4
    assert joint == pytest.approx(2.0)
    assert values.parts["counts:color"] == pytest.approx(values.noise_multiplier * joint * unit)


def test_dp_schema_is_sensible_on_enough_records(tmp_path):
    path = write_table(tmp_path / "t.csv", n=3000)
    ds = load_csv(path, "label", privacy=EPS1)
    cols = {c.name: c for c in ds.spec.columns}
    assert [(c.name, c.kind) for c in ds.spec.columns] == [
        ("age", "numeric"),
        ("height", "numeric"),
        ("color", "categorical"),
    ]
    assert ds.encoder.schema["age"].integer and not ds.encoder.schema["height"].integer
    assert 10 <= cols["age"].low <= 19 and 70 <= cols["age"].high <= 134  # grid: ×1.33 steps
    assert 1.0 < cols["height"].low <= 1.6 and 2.0 <= cols["height"].high < 3.0
    assert cols["color"].categories == ("blue", "green", "red", OTHER)
    assert ds.spec.class_names == ("no", "yes")


def test_cache_makes_a_rerun_free_and_identical(tmp_path, monkeypatch):
    path = write_table(tmp_path / "t.csv")
    calls = []
    real = schema_mod.gaussian_release

    def counting(*args, **kwargs):
        calls.append(kwargs.get("share"))
        return real(*args, **kwargs)

    monkeypatch.setattr(schema_mod, "gaussian_release", counting)
    kw = {"privacy": EPS1, "cache_dir": str(tmp_path / "cache")}
    first = load_csv(path, "label", **kw)
    assert len(calls) == 2 and not first.encoder.schema_release["cache_hit"]
    again = load_csv(path, "label", **kw)
    assert len(calls) == 2, "a re-run must not spend again"
    assert again.encoder.schema_release["cache_hit"]
    assert again.spec == first.spec and again.encoder.schema == first.encoder.schema
    np.testing.assert_array_equal(again.train_x, first.train_x)
    assert [vars(s) for s in again.spends] == [vars(s) for s in first.spends]  # same ledger
    assert list((tmp_path / "cache" / "releases").glob("*.npz"))
    # Anything that determines the release is in the key: another share, seed or file spends.
    load_csv(path, "label", schema_share=0.2, **kw)
    load_csv(path, "label", seed=1, **kw)
    write_table(tmp_path / "t.csv", seed=1)
    load_csv(path, "label", **kw)
    assert len(calls) == 8


def test_no_cache_dir_spends_every_time(tmp_path, monkeypatch):
    path = write_table(tmp_path / "t.csv", n=200)
    calls = []
    real = schema_mod.gaussian_release
    monkeypatch.setattr(
        schema_mod, "gaussian_release", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    load_csv(path, "label", privacy=EPS1, categorical=["color"])
    load_csv(path, "label", privacy=EPS1, categorical=["color"])
    assert len(calls) == 4


# ----------------------------------------------------------------------------- partition selection


def test_threshold_releases_a_single_record_value_with_probability_delta_key():
    for sigma, dk in ((1.0, 1e-6), (37.5, 2.5e-7), (5.0, 0.01)):
        tau = selection_threshold(sigma, dk)
        assert norm.sf(tau - 1.0, scale=sigma) == pytest.approx(dk, rel=1e-6)
    plan = plan_delta(1e-5, 4, 0.1)
    assert (plan.selection, plan.per_key, plan.gaussian) == pytest.approx((1e-6, 2.5e-7, 9e-6))
    assert plan_delta(1e-5, 0, 0.1).gaussian == 1e-5  # nothing selected: the whole δ


def test_value_held_by_one_record_is_never_released():
    cells = ["a"] * 600 + ["b"] * 600 + ["rare"]
    privacy = PrivacySpec(2.0, 1e-5)
    seen = set()
    for seed in range(200):
        budget = Budget(privacy)
        out = release_values(
            {},
            {"c": cells},
            budget=budget,
            share=1.0,
            delta_key=1e-6,
            rng=np.random.default_rng(seed),
        )
        seen |= set(out.released["c"])
        assert set(out.released["c"]) <= {"a", "b"}
    assert seen == {"a", "b"}  # the common ones do get through


def test_rare_category_is_not_in_the_loaded_schema(tmp_path):
    path = write_table(tmp_path / "t.csv", n=3000, rare=True)
    ds = load_csv(path, "label", privacy=EPS1, categorical=["color"])
    color = next(c for c in ds.spec.columns if c.name == "color")
    assert "unicorn" not in color.categories and color.categories[-1] == OTHER
    decoded = ds.encoder.decode(np.concatenate([ds.train_x, ds.test_x]))
    assert "unicorn" not in set(decoded["color"])


def test_dp_label_set_and_unknown_labels(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["x,y"] + [f"{i % 7},{'aab'[i % 3]}" for i in range(3000)] + ["3,zzz"]
    path.write_text("\n".join(rows) + "\n")
    ds = load_csv(str(path), "y", privacy=EPS1, categorical=[], test_path=str(path))
    assert ds.spec.class_names == ("a", "b")  # 'zzz' (one record) not released
    assert ds.encoder.label_other == "a"  # the class with the largest noisy count
    assert ds.train_y[-1] == 0  # 'zzz' mapped there: no error, n unchanged
    assert len(ds.train_y) == 3001


# ----------------------------------------------------------------------------- modes


def test_declared_schema_spends_nothing_and_needs_no_privacy(tmp_path):
    path = write_table(tmp_path / "t.csv", n=50)
    schema = {
        "age": {"low": 0, "high": 120, "integer": True},
        "height": {"low": 0, "high": 3},
        "color": {"categories": ["red", "green", "blue"]},
        "label": {"categories": ["no", "yes"]},
    }
    for source in ("declared", "dp"):
        ds = load_csv(path, "label", schema=schema, schema_source=source)
        assert (ds.spends, ds.schema_source, ds.flags) == ([], "declared", [])


def test_declared_mode_names_what_is_missing(tmp_path):
    path = write_table(tmp_path / "t.csv", n=50)
    with pytest.raises(ConfigError, match=r"does not declare: age: .*label: categories"):
        load_csv(path, "label", schema_source="declared", schema={"age": {"low": 0}})


def test_dp_without_privacy_settings_is_a_config_error(tmp_path):
    path = write_table(tmp_path / "t.csv", n=50)
    with pytest.raises(ConfigError, match="no privacy settings were given"):
        load_csv(path, "label")


def test_nonprivate_needs_its_opt_in_and_is_flagged(tmp_path):
    path = write_table(tmp_path / "t.csv", n=50)
    with pytest.raises(ConfigError, match="dataset.allow_nonprivate_schema"):
        load_csv(path, "label", schema_source="nonprivate")
    with pytest.warns(SchemaWarning, match="not_dp"):
        ds = load_csv(path, "label", schema_source="nonprivate", allow_nonprivate_schema=True)
    assert ds.schema_source == "nonprivate" and ds.flags == ["not_dp"] and ds.spends == []
    with pytest.warns(SchemaWarning, match="epsilon is infinite"):
        ds = load_csv(path, "label", privacy=PrivacySpec(math.inf, 1e-5))
    assert ds.flags == ["not_dp"]


@pytest.mark.parametrize("source", ["dp", "nonprivate", "declared"])
def test_values_outside_the_schema_never_raise(tmp_path, source):
    train = tmp_path / "train.csv"
    write_table(train, n=1500)
    with train.open("a") as fh:  # unseen category, NaN, empty cells, out of range, junk label
        fh.write("500,nan,purple,no\n,1e30,,maybe\n-3,abc,red,\n17,-inf,Red,yes\n")
    test = tmp_path / "test.csv"
    test.write_text("age,height,color,label\n1e9,,teal,unknown\nx,1.7,,no\n")
    kw = {
        "dp": {"privacy": EPS1},
        "nonprivate": {"schema_source": "nonprivate", "allow_nonprivate_schema": True},
        "declared": {
            "schema_source": "declared",
            "schema": {
                "age": {"low": 17, "high": 90, "integer": True, "fill": 40},
                "height": {"low": 1.0, "high": 2.5},
                "color": {"categories": ["red", "green", "blue", "?"], "other": "?"},
                "label": {"categories": ["no", "yes"], "other": "no"},
            },
        },
    }[source]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaWarning)
        ds = load_csv(str(train), "label", test_path=str(test), **kw)
    for x in (ds.train_x, ds.test_x):
        assert np.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
    assert len(ds.train_y) == 1504 and len(ds.test_y) == 2
    out = ds.encoder.decode(ds.test_x, ds.test_y)
    assert set(out["color"]) <= set(ds.encoder.schema["color"].categories)
    if source == "declared":
        assert out["age"].tolist() == [90, 40] and out["color"].tolist() == ["?", "?"]
        assert out["label"].tolist() == ["no", "no"]


# ----------------------------------------------------------------------------- bounds


def test_quantile_bounds_read_off_the_noisy_cdf():
    edges = SignedLogGrid(1e-3, 1e9, 8).edges()
    rng = np.random.default_rng(0)
    values = rng.uniform(20, 80, 20000)
    hist = schema_mod.bin_histogram(values, edges) + rng.normal(0, 10, len(edges) - 1)
    lo, hi = quantile_bounds(hist, edges, 10.0, (0.01, 0.99))
    assert 17 < lo <= 20.5 and 79.5 <= hi < 107  # the grid's bins around 20 and 80
    empty = quantile_bounds(np.zeros(len(edges) - 1), edges, 1.0, (0.01, 0.99))
    assert empty[0] < empty[1]  # pure noise still gives usable (if useless) bounds
    # Beyond the grid: clamped into the end bins, one bin per value.
    assert schema_mod.bin_histogram(np.array([1e12, -1e12, np.nan]), edges).sum() == 2


def test_a_pure_noise_grid_almost_never_keeps_a_bin():
    # One kept noise bin far out on the grid can hold more than the 1% the low quantile reads
    # (it once set a height column's lower bound at −23,714), so the threshold grows with the
    # number of bins: ≤ 1e-4 false bins per histogram.
    edges = SignedLogGrid().edges()
    m = len(edges) - 1
    z = schema_mod.bin_threshold_sigmas(m)
    assert z == pytest.approx(norm.isf(schema_mod.FALSE_BINS_PER_HISTOGRAM / m))
    assert 4.8 < z < 5.0 and schema_mod.bin_threshold_sigmas(1) == 4.0  # never below 4σ
    noise = np.random.default_rng(0).normal(0.0, 1.0, (20000, m))
    assert (noise >= z).any(axis=1).mean() < 1e-3  # 4σ alone: ~0.6% of histograms
    assert (noise >= 4.0).any(axis=1).mean() > 2e-3


def test_grid_and_options_are_validated(tmp_path):
    path = write_table(tmp_path / "t.csv", n=50)
    with pytest.raises(ConfigError, match="dataset.dp_schema.quantiles"):
        load_csv(path, "label", privacy=EPS1, dp_schema={"quantiles": [0.9, 0.1]})
    with pytest.raises(ConfigError, match="dataset.dp_schema.grid"):
        load_csv(path, "label", privacy=EPS1, dp_schema={"grid": {"low": 1}})
    with pytest.raises(ConfigError, match="dataset.schema_share"):
        load_csv(path, "label", privacy=EPS1, schema_share=0)
    ds = load_csv(
        path,
        "label",
        privacy=EPS1,
        categorical=["color"],
        schema={"age": {"grid": {"low": 0, "high": 100, "bins": 10}, "integer": True}},
    )
    age = ds.spec.columns[0]
    assert age.low in np.linspace(0, 100, 11) and age.high in np.linspace(0, 100, 11)


# ----------------------------------------------------------------------------- Adult


def test_adult_yaml_states_a_source_for_every_constant():
    cfg = yaml.safe_load((CONF / "adult.yaml").read_text())
    prov = cfg["provenance"]
    assert all(isinstance(v, str) and v.strip() for v in prov.values())
    for key in ("delta", "sigma0_sq", "n_synthetic", "schema_share"):
        assert key in cfg and key in prov, key
    for key in cfg["dp_schema"]:
        assert f"dp_schema.{key}" in prov
    for name, col in ADULT_SCHEMA.items():
        decl = ColumnDecl.of(col)
        if decl.kind == "categorical":
            assert f"schema.{name}.categories" in prov
            if decl.other is not None:
                assert (
                    f"schema.{name}.other" in prov
                    and repr(decl.other) in prov[f"schema.{name}.other"]
                )
            continue
        for part in ("low", "high"):
            text = prov[f"schema.{name}.{part}"]
            value = getattr(decl, part)
            if value is None:
                assert "DP quantile" in text
            else:
                assert text.startswith(f"{int(value)}:"), (name, part, text)
    assert "schema.integer" in prov
    # The training maximum of capital-loss is gone as a bound.
    assert ColumnDecl.of(ADULT_SCHEMA["capital-loss"]).high is None


def test_adult_and_csv_configs_pass_the_run_privacy(tmp_path):
    from dpsynth.pipeline import load_data
    from tests.conftest import compose_config, tiny_dataset_overrides

    for name in ("adult", "csv"):
        overrides = tiny_dataset_overrides(name, tmp_path)
        cfg = compose_config(
            [f"dataset={name}", *overrides, "privacy.neighbours=add_remove", "seed=3"], tmp_path
        )
        for key in ("privacy_epsilon", "privacy_delta", "privacy_accountant", "cache_dir"):
            assert key in cfg.dataset
        ds = load_data(cfg)
        assert ds.schema_source == "dp" and ds.spends
        assert all(s.share for s in ds.spends)
    assert len(list((tmp_path / "cache" / "releases").glob("*.npz"))) == 2


def test_adult_schema_override_and_nonprivate(tmp_path):
    root = write_adult(tmp_path, 30, 10)
    declared = {"fnlwgt": {"high": 2_000_000}, "capital-loss": {"low": 0, "high": 5000}}
    ds = load_adult(root, schema=declared, schema_source="declared")
    assert ds.spends == [] and {c.name: c.high for c in ds.spec.columns}["fnlwgt"] == 2e6
    with pytest.warns(SchemaWarning, match="fnlwgt, capital-loss"):
        ds = load_adult(root, schema_source="nonprivate", allow_nonprivate_schema=True)
    assert ds.flags == ["not_dp"]


def test_unwritable_cache_is_a_config_error_before_any_spend(tmp_path, monkeypatch):
    path = write_table(tmp_path / "t.csv", n=50)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    calls = []
    monkeypatch.setattr(schema_mod, "gaussian_release", lambda *a, **k: calls.append(1))
    with pytest.raises(ConfigError, match="cache_dir=.*a-file"):
        load_csv(path, "label", privacy=EPS1, cache_dir=str(blocker / "sub"))
    assert calls == []
