"""MST and AIM (``method=mst``, ``method=aim``): discretisation, their ledgers against
dp-accounting, exact recovery without noise, the model-size guard, refusal of images, the
3-way TVD and end-to-end runs on the tiny generated Adult and CSV files.

Offline, CPU, tiny data. Private-PGM (``mbi``) is in the ``test`` extra; where it is missing the
tests that fit a model skip with that reason.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import dp_accounting
import numpy as np
import pandas as pd
import pytest
from omegaconf import open_dict

from dpsynth.data.base import Column, DataSpec
from dpsynth.errors import ConfigError
from dpsynth.evaluation.tabular import kway_tvd, marginal_tvd
from dpsynth.methods.aim import AIM, _candidates
from dpsynth.methods.base import RunContext
from dpsynth.methods.marginals import (
    LABEL,
    Discretiser,
    apply_mappings,
    compressed_sizes,
    estimate,
    marginal,
    mbi_available,
    project_many,
)
from dpsynth.methods.mst import MST
from dpsynth.pipeline import build_method, load_data, run
from dpsynth.privacy.accounting import Gaussian, epsilon_spent
from dpsynth.privacy.release import PrivacySpec
from tests.conftest import compose_config, tiny_dataset_overrides

needs_mbi = pytest.mark.skipif(
    not mbi_available(), reason='Private-PGM (mbi) is not installed: pip install -e ".[marginals]"'
)


def _data(tmp_path, dataset: str, *overrides: str):
    cfg = compose_config(
        [f"dataset={dataset}", *tiny_dataset_overrides(dataset, tmp_path), *overrides], tmp_path
    )
    return cfg, load_data(cfg)


def _privacy(cfg, data, **changes) -> PrivacySpec:
    spec = PrivacySpec(
        float(cfg.privacy.epsilon),
        float(cfg.privacy.delta),
        str(cfg.privacy.accountant),
        str(cfg.privacy.neighbours),
        delta_reserved=data.delta_reserved,
    )
    return dataclasses.replace(spec, **changes)


def _ctx(tmp_path, name: str = "run") -> RunContext:
    return RunContext(seed=0, run_dir=tmp_path / name, progress=False)


# ----------------------------------------------------------------------------- no mbi needed


@pytest.mark.parametrize("method", [MST, AIM])
def test_image_datasets_are_refused_in_check(method) -> None:
    spec = DataSpec("digits", "image", (1, 8, 8), 10, tuple(map(str, range(10))))
    with pytest.raises(ConfigError, match="does not support dataset=digits"):
        method().check(spec, {}, 100)


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="method.bins"):
        MST(bins=1)
    with pytest.raises(ConfigError, match="method.workload_degrees"):
        AIM(workload_degrees=[])
    with pytest.raises(ConfigError, match="method.measure_share"):
        AIM(measure_share=1.0)


def test_kway_tvd_is_zero_on_identical_and_one_on_disjoint_tables() -> None:
    cols = (
        Column("a", "categorical", ("x", "y")),
        Column("b", "numeric", low=0, high=1),
        Column("c", "categorical", ("u", "v", "w")),
    )
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            np.eye(2)[rng.integers(0, 2, 50)],
            rng.uniform(-1, 1, (50, 1)),
            np.eye(3)[rng.integers(0, 3, 50)],
        ],
        axis=1,
    )
    assert kway_tvd(x, x.copy(), cols, 3) == 0.0
    a, b = x.copy(), x.copy()
    a[:, :2], b[:, :2] = [1, 0], [0, 1]  # column a never agrees
    assert kway_tvd(a, b, cols, 3) == 1.0
    one, two = marginal_tvd(x, x[::-1][:30], cols)  # k = 1, 2 agree with marginal_tvd
    assert kway_tvd(x, x[::-1][:30], cols, 1) == pytest.approx(one)
    assert kway_tvd(x, x[::-1][:30], cols, 2) == pytest.approx(two)
    assert kway_tvd(x[:, :3], x[:, :3], cols[:2], 3) == 0.0  # fewer columns than k


def test_aim_candidates_are_the_weighted_downward_closure() -> None:
    w = _candidates([("a", "b"), ("b", "c")])
    assert set(w) == {("a",), ("b",), ("c",), ("a", "b"), ("b", "c")}
    assert w[("b",)] == 2 and w[("a",)] == 1 and w[("a", "b")] == 3  # Σ_r |c ∩ r|


# ----------------------------------------------------------------------------- discretisation


@pytest.mark.parametrize("dataset", ["adult", "csv"])
def test_discretisation_round_trips(tmp_path, dataset: str) -> None:
    _, data = _data(tmp_path, dataset)
    disc = Discretiser.for_data(data, bins=8)
    codes = disc.codes(data.train_x, data.train_y)
    assert codes.shape == (data.n_train, len(data.spec.columns) + 1)
    assert disc.names[-1] == LABEL and (codes[:, -1] == data.train_y).all()
    assert (codes >= 0).all() and (codes < np.array(disc.sizes)).all()
    x, y = disc.decode(codes)
    assert x.shape == data.train_x.shape and x.dtype == np.float32 and y.dtype == np.int64
    assert (disc.codes(x, y) == codes).all()  # decode → discretise is the identity on codes
    # categories and labels come back exactly; numbers within their public bounds
    table, real = data.encoder.decode(x, y), data.encoder.decode(data.train_x, data.train_y)
    for a in disc.attributes[:-1]:
        if a.kind == "categorical":
            assert (table[a.name] == real[a.name]).all()
        else:
            col = next(c for c in data.spec.columns if c.name == a.name)
            assert table[a.name].between(col.low, col.high).all()
            if a.integer:  # one level per value: the value itself
                assert (table[a.name] == real[a.name]).all()
    assert (table[data.spec.target] == real[data.spec.target]).all()


def test_integer_columns_with_few_values_get_one_level_per_value(tmp_path) -> None:
    _, data = _data(tmp_path, "adult")
    disc = Discretiser.for_data(data, bins=32)
    by_name = {a.name: a for a in disc.attributes}
    assert by_name["education-num"].integer and by_name["education-num"].size == 16
    assert not by_name["age"].integer and by_name["age"].size == 32  # 74 values > 32 bins


# ----------------------------------------------------------------------------- ledgers


def _check_ledger(release, privacy: PrivacySpec, data) -> list:
    ledger = release.ledger
    spends = ledger.spends
    assert spends[: len(data.spends)] == list(data.spends)  # load-time releases first
    events = [Gaussian(s.noise_multiplier, s.count) for s in spends]
    assert all(s.mechanism == "gaussian" for s in spends)
    delta = privacy.accounting_delta
    ours = epsilon_spent(
        events, delta=delta, neighbours=privacy.neighbours, accountant=privacy.accountant
    )
    assert ledger.epsilon_spent == pytest.approx(ours, rel=1e-9)
    assert ledger.epsilon_spent <= privacy.epsilon * (1 + 1e-6)
    assert ledger.epsilon_spent == pytest.approx(privacy.epsilon, rel=1e-3)  # all spent
    # independently of dpsynth: dp-accounting's own PLD composition of the same Gaussians
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    for s in spends:
        acc.compose(dp_accounting.GaussianDpEvent(s.noise_multiplier), s.count)
    assert acc.get_epsilon(delta) == pytest.approx(ledger.epsilon_exact, rel=2e-3)
    return spends[len(data.spends) :]


@needs_mbi
@pytest.mark.parametrize(
    ("dataset", "neighbours", "accountant"),
    [("adult", "replace_one", "pld"), ("csv", "add_remove", "rdp")],
)
def test_mst_ledger_is_the_composition_of_its_measurements(
    tmp_path, dataset: str, neighbours: str, accountant: str
) -> None:
    cfg, data = _data(
        tmp_path, dataset, f"privacy.neighbours={neighbours}", f"privacy.accountant={accountant}"
    )
    privacy = _privacy(cfg, data)
    release = MST(steps=4).release(data, privacy, _ctx(tmp_path))
    own = _check_ledger(release, privacy, data)
    d = len(data.spec.columns) + 1
    l1, l2 = (2.0, math.sqrt(2)) if neighbours == "replace_one" else (1.0, 1.0)
    kinds = [s.statistic.split(":")[0] for s in own]
    assert kinds == ["1way"] * d + ["mst-select"] + ["2way"] * (d - 1)
    pairs = d * (d - 1) // 2
    assert own[d].sensitivity == pytest.approx(l1 * math.sqrt(pairs))  # the score vector
    assert all(s.sensitivity == pytest.approx(l2) for s in own if s.statistic[0].isdigit())
    # every measurement is in the release, with its public clique and noise std
    pub = release.public["measurements"]
    assert len(pub) == len(release.statistics) == 2 * d - 1
    stds = [s.noise_std for s in own if s.statistic[0].isdigit()]
    assert [p["stddev"] for p in pub] == pytest.approx(stds)
    assert ("n" in release.public) == (neighbours == "replace_one")
    # budget split in thirds of what the schema left (1/m² units)
    units = [1 / s.noise_multiplier**2 for s in own]
    assert sum(units[:d]) == pytest.approx(units[d]) == pytest.approx(sum(units[d + 1 :]))


@needs_mbi
@pytest.mark.parametrize(
    ("dataset", "neighbours"), [("csv", "replace_one"), ("adult", "add_remove")]
)
def test_aim_ledger_is_the_composition_of_its_rounds(
    tmp_path, dataset: str, neighbours: str
) -> None:
    cfg, data = _data(tmp_path, dataset, f"privacy.neighbours={neighbours}")
    privacy = _privacy(cfg, data)
    method = AIM(steps=4, round_steps=50, max_model_size=1.0)
    release = method.release(data, privacy, _ctx(tmp_path))
    own = _check_ledger(release, privacy, data)
    d = len(data.spec.columns) + 1
    rounds = release.public["rounds"]
    names = [s.statistic for s in own]
    assert all(n.startswith("1way:") for n in names[:d])
    assert names[d:][::2] == [f"aim-select:{r + 1}" for r in range(rounds)]
    assert len(names) == d + 2 * rounds and len(release.public["measurements"]) == d + rounds
    l1, l2 = (2.0, math.sqrt(2)) if neighbours == "replace_one" else (1.0, 1.0)
    for s in own[d:][::2]:  # selection: score vector, L2 sensitivity Δ₁·‖w‖₂ ≥ Δ₁
        assert s.sensitivity >= l1
    assert all(s.sensitivity == pytest.approx(l2) for s in own[d:][1::2])
    # the schedule: measurement and selection at α : 1 − α in every round
    for sel, meas in zip(own[d:][::2], own[d:][1::2], strict=True):
        ratio = sel.noise_multiplier**2 / meas.noise_multiplier**2
        assert ratio == pytest.approx(0.9 / 0.1, rel=1e-6)


# ----------------------------------------------------------------------------- estimation


@needs_mbi
@pytest.mark.parametrize("compress", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_mst_without_noise_recovers_the_marginals_it_measured(tmp_path, compress: bool) -> None:
    # ε = 10⁵: noise std ~0.02 counts, i.e. noise off for all practical purposes
    cfg, data = _data(tmp_path, "adult", "privacy.epsilon=1e5")
    method = MST(steps=3000, compress=compress)
    release = method.release(data, _privacy(cfg, data), _ctx(tmp_path))
    synth = method.train(release, data.spec, _ctx(tmp_path))
    disc = synth.discretiser
    codes = disc.codes(data.train_x, data.train_y)
    mappings = release.public["mappings"]
    assert any(m is not None for m in mappings.values()) == compress  # empty levels merged
    ccodes = apply_mappings(codes, disc.names, mappings)
    csizes = compressed_sizes(disc.names, disc.sizes, mappings)
    index = {a: j for j, a in enumerate(disc.names)}
    tree = [tuple(e) for e in release.public["tree"]]
    assert len(tree) == len(disc.names) - 1
    for clique in tree:
        exact = marginal(ccodes, [index[a] for a in clique], csizes)
        fitted = np.asarray(synth.model.project(clique).datavector())
        assert np.abs(fitted - exact).max() < 0.5, clique  # exact counts, to rounding
    x, y = synth.sample(data.n_train, seed=0)
    assert x.shape == data.train_x.shape and y.shape == data.train_y.shape
    again = synth.sample(data.n_train, seed=0)
    assert (again[0] == x).all() and (again[1] == y).all()  # seeded
    # the sample follows the model (Private-PGM's rounding sampler): 1-way TVD small
    s = disc.codes(x, y)
    for j in range(len(disc.names)):
        tvd = 0.5 * np.abs(marginal(s, [j], disc.sizes) - marginal(codes, [j], disc.sizes)).sum()
        assert tvd / data.n_train <= 0.2, disc.names[j]


@needs_mbi
def test_numpy_projection_matches_private_pgm(tmp_path) -> None:
    rng = np.random.default_rng(1)
    names, sizes = ("a", "b", "c", "d", "e"), (2, 3, 4, 2, 3)
    from dpsynth.methods.marginals import Measurement

    ms = [Measurement((a,), rng.uniform(5, 50, s), 1.0) for a, s in zip(names, sizes, strict=True)]
    for cl in [("a", "b"), ("b", "c"), ("c", "d", "e"), ("a", "e")]:
        ms.append(
            Measurement(
                cl, rng.uniform(1, 20, int(np.prod([sizes[names.index(x)] for x in cl]))), 2.0
            )
        )
    model = estimate(names, sizes, ms, total=500.0, steps=200)
    queries = list(itertools.combinations(names, 2)) + [("a", "c", "d"), ("e", "b", "a")]
    ours = project_many(model, queries)
    for q in queries:
        theirs = np.asarray(model.project(q).datavector())
        assert ours[q] == pytest.approx(theirs, rel=1e-6, abs=1e-6), q


# ----------------------------------------------------------------------------- guard, e2e


@needs_mbi
@pytest.mark.parametrize("method", ["mst", "aim"])
def test_a_column_too_large_for_the_model_budget_is_refused_before_any_work(
    tmp_path, method: str
) -> None:
    cfg, _ = _data(tmp_path, "adult", f"method={method}", "method.bins=4096")
    with open_dict(cfg):
        cfg.method.max_model_size = 0.1
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        run(cfg, run_dir)
    message = str(info.value)
    assert "column '" in message and "method.bins" in message and "method.max_model_size" in message
    assert not run_dir.exists()


@needs_mbi
@pytest.mark.parametrize(("method", "dataset"), [("mst", "csv"), ("aim", "adult")])
def test_end_to_end(tiny_config, tmp_path, method: str, dataset: str) -> None:
    cfg = tiny_config(dataset, method)
    if method == "aim":
        with open_dict(cfg):
            cfg.method.round_steps = 50
            cfg.method.max_model_size = 1.0
    run_dir = tmp_path / "run"
    record = run(cfg, run_dir)
    assert record["status"] == "completed" and build_method(cfg).name == method
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    priv = on_disk["privacy"]
    assert 0.99 <= priv["epsilon_spent"] <= 1.0 and priv["epsilon_exact"] <= 1.0 + 1e-6
    events = [Gaussian(r["noise_multiplier"], r["count"]) for r in priv["releases"]]
    assert priv["epsilon_spent"] == pytest.approx(
        epsilon_spent(events, delta=cfg.privacy.delta - priv["delta_reserved"]), rel=1e-9
    )
    assert any(r["statistic"].startswith(f"{method}-select") for r in priv["releases"])
    metrics = on_disk["metrics"]
    assert {"eval/tvd_1way", "eval/tvd_2way", "eval/tvd_3way"} <= set(metrics)
    assert 0 <= metrics["eval/tvd_3way"] <= 1
    assert on_disk["diagnostics"]["marginals/measurements"] >= len(load_data(cfg).spec.columns) + 1
    table = pd.read_csv(run_dir / "synthetic.csv")
    assert len(table) == 60 and (run_dir / "release.npz").exists()


def test_compiled_programs_are_dropped_near_the_memory_map_limit() -> None:
    """A sweep of AIM runs in one process hit vm.max_map_count (XLA aborted): the bound clears
    JAX's caches past its threshold and leaves them alone below it."""
    pytest.importorskip("jax")
    import jax
    import jax.numpy as jnp

    from dpsynth.methods.marginals import bound_jit_memory

    jax.jit(lambda v: v * 2)(jnp.ones(3))
    assert bound_jit_memory(fraction=0.99) is False
    assert bound_jit_memory(fraction=0.0) is True
