"""One privacy yardstick: the neighbour relation, exact accounting, the joint release, DP
public constants, one release per run, no data-dependent aborts (issue 11)."""

from __future__ import annotations

import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import yaml
from dp_accounting import pld, rdp

from dpsynth.data.base import Column, Dataset, DataSpec
from dpsynth.errors import ConfigError, PrivacyError
from dpsynth.methods.base import PrivacySpec, RunContext
from dpsynth.methods.embedding import class_embedding, draw_frequencies
from dpsynth.methods.oneshot import RUN_RELEASE, release_statistics
from dpsynth.methods.pearl import PEARL
from dpsynth.privacy.accounting import (
    Gaussian,
    SubsampledGaussian,
    calibrate_gaussian,
    calibrate_sgd,
    epsilon_spent,
    exact_epsilon,
)
from dpsynth.privacy.estimates import (
    auto_mean_sq_distance,
    dp_mean_sq_distance,
    uniform_mean_sq_distance,
)
from dpsynth.privacy.release import Budget, ReleaseCache

CONF = Path(__file__).resolve().parents[1] / "conf"


# ------------------------------------------------------------------ accounting


@pytest.mark.parametrize("epsilon", [0.2, 1.0, 10.0])
def test_pld_calibration_is_exact_against_dp_accounting(epsilon: float) -> None:
    m = calibrate_gaussian(epsilon=epsilon, delta=1e-5, accountant="pld")
    acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(dp_accounting.GaussianDpEvent(m))
    assert acc.get_epsilon(1e-5) == pytest.approx(epsilon, rel=1e-3)
    assert epsilon_spent([Gaussian(m)], delta=1e-5) <= epsilon
    # RDP needs more noise for the same ε: what the papers' accountant leaves on the table.
    assert calibrate_gaussian(epsilon=epsilon, delta=1e-5, accountant="rdp") > m * 1.05


def test_rdp_calibration_at_one_is_loose_by_nine_percent() -> None:
    m = calibrate_gaussian(epsilon=1.0, delta=1e-5, accountant="rdp")
    assert exact_epsilon([Gaussian(m)], delta=1e-5, neighbours="replace_one") == pytest.approx(
        0.915, abs=0.002
    )


@pytest.mark.parametrize("neighbours", ["replace_one", "add_remove"])
def test_subsampled_gaussian_uses_dp_accountings_relation(neighbours: str) -> None:
    relation = dp_accounting.NeighboringRelation
    q, steps, sigma = 256 / 60000, 3000, 1.1364
    acc = pld.PLDAccountant(
        relation.REPLACE_ONE if neighbours == "replace_one" else relation.ADD_OR_REMOVE_ONE
    )
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    ours = epsilon_spent([SubsampledGaussian(sigma, q, steps)], delta=1e-5, neighbours=neighbours)
    assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    # the committed "ε = 1" DP-SGD run: ≈ 1.69 under replace-one, ≈ 0.99 under add/remove
    assert ours == pytest.approx(1.69 if neighbours == "replace_one" else 0.99, abs=0.01)


def test_gaussian_events_mean_the_same_in_both_accountants_and_relations() -> None:
    # A Gaussian with its sensitivity derived under the relation: N(0, m²) vs N(1, m²).
    m = 2.0
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(m))
    mixed = [Gaussian(m), SubsampledGaussian(1.0, 0.01, 10)]
    replace = epsilon_spent(mixed, delta=1e-5, neighbours="replace_one")
    assert epsilon_spent([Gaussian(m)], delta=1e-5, accountant="rdp") == acc.get_epsilon(1e-5)
    assert replace > epsilon_spent([Gaussian(m)], delta=1e-5, neighbours="replace_one")
    with pytest.raises(ConfigError, match="privacy.accountant=pld"):
        epsilon_spent(mixed, delta=1e-5, neighbours="replace_one", accountant="rdp")


def test_sgd_calibration_meets_the_target_under_each_relation() -> None:
    kw = {"epsilon": 1.0, "delta": 1e-5, "sample_rate": 0.01, "steps": 200}
    replace = calibrate_sgd(neighbours="replace_one", **kw)
    add = calibrate_sgd(neighbours="add_remove", **kw)
    assert replace > add  # replace-one is the stronger guarantee: more noise
    for sigma, rel in ((replace, "replace_one"), (add, "add_remove")):
        ev = [SubsampledGaussian(sigma, 0.01, 200)]
        assert 0.99 <= epsilon_spent(ev, delta=1e-5, neighbours=rel) <= 1.0


def test_unknown_neighbour_relation_names_the_key() -> None:
    with pytest.raises(ConfigError, match="privacy.neighbours"):
        epsilon_spent([Gaussian(1.0)], delta=1e-5, neighbours="swap")


# ------------------------------------------------------------------ joint sensitivity


def _normalised_diff(x, y, x2, y2, freqs, privacy: PrivacySpec, with_counts: bool) -> float:
    a, joint = release_statistics(x, y, freqs, 3, with_counts, privacy)
    b, _ = release_statistics(x2, y2, freqs, 3, with_counts, privacy)
    sq = sum(
        float(np.sum((sa.value - sb.value) ** 2)) / sa.sensitivity**2
        for sa, sb in zip(a, b, strict=True)
    )
    return math.sqrt(sq)


def test_joint_release_sensitivity_holds_under_adversarial_swaps() -> None:
    rng = np.random.default_rng(0)
    n, d = 40, 6
    x, y = rng.random((n, d)).astype(np.float32), rng.integers(0, 3, n)
    freqs = draw_frequencies(16, d, 0.5, seed=0)
    privacy = PrivacySpec(1.0, 1e-5)
    worst_same = worst_other = 0.0
    for j in range(n):
        for y_new in range(3):
            for trial in range(3):
                x2, y2 = x.copy(), y.copy()
                # adversarial candidates: a far point, the record's antipode, random
                x2[j] = (x[j] + np.pi * 0.5 * (1 + trial)) if trial else rng.random(d) * 50
                y2[j] = y_new
                r = _normalised_diff(x, y, x2, y2, freqs, privacy, True)
                if y_new == y[j]:
                    worst_same = max(worst_same, r)
                else:
                    worst_other = max(worst_other, r)
    assert worst_same <= 1.0 + 1e-6 and worst_other <= math.sqrt(1.5) + 1e-6
    assert worst_other > 1.2  # the √1.5 case (another class) is attained, near enough


def test_add_remove_release_is_sums_and_counts() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 5)).astype(np.float32), rng.integers(0, 3, 30)
    freqs = draw_frequencies(8, 5, 0.5, seed=0)
    privacy = PrivacySpec(1.0, 1e-5, neighbours="add_remove")
    stats, joint = release_statistics(x, y, freqs, 3, False, privacy)
    assert [s.name for s in stats] == ["embedding_sum", "counts"] and joint == math.sqrt(2)
    for j in range(30):  # removing any record moves the normalised vector by ≤ √2
        keep = np.arange(30) != j
        r = _normalised_diff(x, y, x[keep], y[keep], freqs, privacy, False)
        assert r <= math.sqrt(2) + 1e-6


# ------------------------------------------------------------------ one-shot runs


def _images(n: int = 60, empty_class: bool = False) -> Dataset:
    rng = np.random.default_rng(0)
    y = np.arange(n) % (2 if empty_class else 3)
    x = rng.random((n, 1, 4, 4)).astype(np.float32) * 0.3 + y[:, None, None, None] * 0.3
    spec = DataSpec("toy", "image", (1, 4, 4), 3, ("a", "b", "c"), balanced=True)
    return Dataset(spec, x, y.astype(np.int64), x[:12].copy(), y[:12].astype(np.int64))


def _ctx(run_dir: Path, cache: Path | None, sigma0: object = 2.0) -> RunContext:
    return RunContext(
        seed=0,
        run_dir=run_dir,
        cache=ReleaseCache(cache) if cache is not None else None,
        dataset_options={"sigma0_sq": sigma0},
        progress=False,
        trainer={"accelerator": "cpu"},
    )


def test_resume_after_a_cache_miss_continues_with_the_runs_own_release(tmp_path) -> None:
    """Yesterday's mix: a run checkpoints, its cache entry is lost (another cache_dir), the
    resume draws release 2 and trains release 1's generator against it. Now it cannot."""
    data, privacy = _images(), PrivacySpec(1.0, 1e-5)
    method = PEARL(num_features=8, steps=6, batch_size=6, checkpoint_every=2)
    run = tmp_path / "run"
    first = method.release(data, privacy, _ctx(run, tmp_path / "cache_a"))
    method.train(first, data.spec, _ctx(run, tmp_path / "cache_a"))
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / RUN_RELEASE).exists()
    # the resume, with another cache: no second release, no spend, the same noisy numbers
    again = method.release(data, privacy, _ctx(run, tmp_path / "cache_b"))
    np.testing.assert_array_equal(again["embedding"], first["embedding"])
    assert again.ledger.cache_hit and again.public["release_fingerprint"] == first.fingerprint()
    assert not list((tmp_path / "cache_b").glob("*.npz"))  # nothing new was drawn
    # a checkpoint whose release the run cannot identify is refused before any spend
    (run / RUN_RELEASE).unlink()
    with pytest.raises(PrivacyError, match="resume=false"):
        method.release(data, privacy, _ctx(run, tmp_path / "cache_c"))
    assert not (tmp_path / "cache_c").exists() or not list((tmp_path / "cache_c").glob("*.npz"))


def test_run_folder_release_of_another_config_is_refused(tmp_path) -> None:
    data = _images()
    method = PEARL(num_features=8)
    method.release(data, PrivacySpec(1.0, 1e-5), _ctx(tmp_path, None))
    with pytest.raises(PrivacyError, match="another configuration"):
        method.release(data, PrivacySpec(2.0, 1e-5), _ctx(tmp_path, None))


def test_empty_class_is_released_not_refused(tmp_path) -> None:
    data = _images(empty_class=True)  # class "c" has no record
    method = PEARL(num_features=8, steps=4, batch_size=6, checkpoint_every=0)
    rel = method.release(data, PrivacySpec(1.0, 1e-5), _ctx(tmp_path, None))
    assert rel["embedding"].shape == (16, 3) and np.all(rel["embedding"][:, 2] != 0)  # noise
    synth = method.train(rel, data.spec, _ctx(tmp_path / "t", None))
    x, y = synth.sample(9, seed=0)
    assert np.isfinite(x).all() and set(y.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("neighbours", ["replace_one", "add_remove"])
def test_dp_sigma0_is_paid_and_the_ledger_meets_the_target(tmp_path, neighbours: str) -> None:
    data = _images(n=3000)
    privacy = PrivacySpec(1.0, 1e-5, neighbours=neighbours)
    method = PEARL(num_features=8, sigma0_share=0.05)
    rel = method.release(data, privacy, _ctx(tmp_path, None, sigma0="dp"))
    x = data.train_x.reshape(len(data.train_x), -1).astype(np.float64)
    true = 2 * ((x**2).sum(1).mean() - (x.mean(0) ** 2).sum())
    first = rel.ledger.spends[0]
    assert len(rel.ledger.spends) == 2 and first.share == 0.05
    # The estimate is unbiased with a std that follows from the public noise stds (OS-entropy
    # noise, so the bound, not a seed, keeps this test stable): est − true ≈ 2(z_a − 2m·z − ‖z‖²
    # + d·s²) with z_a ~ N(0, s_a²), z ~ N(0, s² I_d).
    parts, d, m_sq = first.parts, x.shape[1], float((x.mean(0) ** 2).sum())
    if neighbours == "replace_one":
        s_a, s = parts["mean_sq_norm"], parts["mean"]
    else:  # sums over a noisy count: relative errors of the same order, scaled by 1/n
        s_a, s = parts["sum_sq_norm"] / len(x), parts["sum"] / len(x)
    sd = 2 * np.sqrt(s_a**2 + 4 * m_sq * s**2 + 2 * d * s**4)
    assert abs(rel.public["sigma0_sq"] - true) <= 5 * sd + 0.05 * true  # 5σ: ~6e-7 flake rate
    assert sd < true  # and the test data is big enough for the estimate to mean something
    # the σ0² release and the main release compose to exactly the budget (exact PLD)
    assert rel.ledger.epsilon_spent == pytest.approx(1.0, rel=1e-4)
    assert rel.ledger.epsilon_spent <= 1.0
    assert "embedding" in rel.statistics


def test_dp_mean_sq_distance_estimates_the_median_heuristic_scale() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((20000, 64)) < 0.3).astype(np.float32)  # concentrated distances
    spec = DataSpec("toy", "image", (1, 8, 8), 2, ("a", "b"))
    budget = Budget(PrivacySpec(1.0, 1e-5))
    est = dp_mean_sq_distance(x, spec, budget=budget, share=0.05)
    i, j = rng.integers(0, 20000, 4000), rng.integers(0, 20000, 4000)
    median_sq = float(np.median(np.sqrt(((x[i] - x[j]) ** 2).sum(1)))) ** 2
    assert est == pytest.approx(median_sq, rel=0.1)
    assert budget.spends[0].share == 0.05 and budget.spends[0].statistic == "mean_sq_norm+mean"


def test_dp_mean_sq_distance_scales_records_into_the_public_ball_first() -> None:
    # Two numeric columns: R² = 2. Half the records lie far outside the ball ([3, 0]); they
    # enter the statistic scaled onto it ([√2, 0]), the bound the sensitivity relies on. At a
    # huge ε the release noise is negligible, so the estimate is the scaled records' exact
    # E‖x − x′‖² and not the raw ones'.
    cols = (Column("u", "numeric"), Column("v", "numeric"))
    spec = DataSpec("t", "tabular", (2,), 2, ("a", "b"), columns=cols)
    x = np.tile(np.array([[3.0, 0.0], [0.5, 0.5]], dtype=np.float32), (5000, 1))  # (10000, 2)
    scaled = np.tile(np.array([[math.sqrt(2.0), 0.0], [0.5, 0.5]]), (5000, 1))

    def exact(a: np.ndarray) -> float:  # E‖x − x′‖² over independent pairs
        return float(2 * ((a**2).sum(1).mean() - (a.mean(0) ** 2).sum()))

    est = dp_mean_sq_distance(x, spec, budget=Budget(PrivacySpec(1e4, 1e-5)), share=0.5)
    assert est == pytest.approx(exact(scaled), rel=1e-3)
    assert abs(est - exact(x.astype(np.float64))) > 1.0


def test_uniform_prior_is_the_mean_sq_distance_of_uniform_records() -> None:
    rng = np.random.default_rng(1)
    image = DataSpec("toy", "image", (1, 8, 8), 2, ("a", "b"))
    x = rng.random((2, 200_000, 64))  # pixels uniform on [0, 1]
    assert uniform_mean_sq_distance(image) == pytest.approx(
        float(((x[0] - x[1]) ** 2).sum(1).mean()), rel=0.01
    )
    cols = (Column("u", "numeric"), Column("c", "categorical", ("p", "q", "r")))
    table = DataSpec("t", "tabular", (4,), 2, ("a", "b"), columns=cols)
    u = rng.uniform(-1, 1, (2, 200_000))
    onehot = np.eye(3)[rng.integers(0, 3, (2, 200_000))]
    empirical = ((u[0] - u[1]) ** 2).mean() + ((onehot[0] - onehot[1]) ** 2).sum(1).mean()
    assert uniform_mean_sq_distance(table) == pytest.approx(float(empirical), rel=0.01)


def test_auto_sigma0_uses_the_prior_only_when_the_estimate_is_noise() -> None:
    rng = np.random.default_rng(0)
    spec = DataSpec("toy", "image", (1, 8, 8), 2, ("a", "b"))
    big = (rng.random((20000, 64)) < 0.3).astype(np.float32)  # E‖x − x′‖² = 26.9
    budget = Budget(PrivacySpec(1.0, 1e-5))
    value, record = auto_mean_sq_distance(big, spec, budget=budget, share=0.05)
    assert record["sigma0_source"] == "dp" and value == record["sigma0_dp_estimate"]
    assert value == pytest.approx(26.9, rel=0.1) and record["sigma0_dp_sd"] < 2.0
    # 300 records at ε 0.2: the estimate's noise sd (public) dwarfs the scale: the prior.
    small = big[:300]
    budget = Budget(PrivacySpec(0.2, 1e-5))
    value, record = auto_mean_sq_distance(small, spec, budget=budget, share=0.05)
    assert record["sigma0_source"] == "prior" and value == 64 / 6
    assert record["sigma0_dp_sd"] > 0.5 * min(record["sigma0_dp_estimate"], 64 / 6)
    # the DP estimate is paid either way: the ledger holds its spend
    assert budget.spends[0].share == 0.05 and budget.spends[0].statistic == "mean_sq_norm+mean"


def test_auto_sigma0_never_uses_a_zero_prior() -> None:
    """A public domain of one value per column (a DP schema that kept one category each) has
    prior E‖x − x′‖² = 0, no kernel width: auto takes the (floored, positive) estimate."""
    cols = (Column("c", "categorical", ("p",)), Column("e", "categorical", ("q",)))
    spec = DataSpec("t", "tabular", (2,), 2, ("a", "b"), columns=cols)
    assert uniform_mean_sq_distance(spec) == 0.0
    x = np.ones((40, 2), dtype=np.float32)
    budget = Budget(PrivacySpec(0.2, 1e-5))
    value, record = auto_mean_sq_distance(x, spec, budget=budget, share=0.05)
    assert record["sigma0_source"] == "dp" and value == record["sigma0_dp_estimate"] > 0
    assert np.isfinite(draw_frequencies(4, 2, value, 0).numpy()).all()
    with pytest.raises(ValueError, match="sigma0_sq"):
        draw_frequencies(4, 2, 0.0, 0)


def test_auto_sigma0_reaches_the_release_record(tmp_path) -> None:
    data = _images(n=300)
    rel = PEARL(num_features=8).release(
        data, PrivacySpec(0.2, 1e-5), _ctx(tmp_path, None, sigma0="auto")
    )
    assert rel.public["sigma0_source"] == "prior"
    assert rel.public["sigma0_sq"] == rel.public["sigma0_prior"] == data.spec.dim / 6
    assert len(rel.ledger.spends) == 2 and rel.ledger.epsilon_spent <= 0.2


def test_class_embedding_of_an_empty_class_is_zero() -> None:
    x, y = np.random.default_rng(0).random((5, 3)).astype(np.float32), np.zeros(5, np.int64)
    e = class_embedding(x, y, draw_frequencies(4, 3, 1.0, 0), 2)
    assert np.all(e[:, 1] == 0)


# ------------------------------------------------------------------ public constants


CONSTANT_KEYS = ("sigma0_sq", "delta", "n_synthetic")


@pytest.mark.parametrize("path", sorted((CONF / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_dataset_constant_states_its_source(path: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    provenance = cfg.get("provenance") or {}
    for key in CONSTANT_KEYS:
        assert key in cfg, f"{path.name}: no {key}"
        source = str(provenance.get(key, "")).strip()
        assert len(source) > 20, f"{path.name}: {key} has no stated source in provenance"
    if cfg["sigma0_sq"] not in ("dp", "auto"):  # a constant must cite a public document
        assert "heuristic" not in str(provenance["sigma0_sq"]) or "public" in str(
            provenance["sigma0_sq"]
        )


@pytest.mark.parametrize("path", sorted((CONF / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_default_delta_is_well_below_the_published_one_over_n(path: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    assert 0 < float(cfg["delta"]) <= 1e-5


def test_privacy_presets_take_the_datasets_delta() -> None:
    for path in (CONF / "privacy").glob("*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        assert cfg["delta"] == "${dataset.delta}", path.name
        assert cfg["neighbours"] == "replace_one" and cfg["accountant"] == "pld"
