"""Calibration against the published reference values, release sensitivity, ledger, cache."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from dpsynth.errors import ConfigError, PrivacyError
from dpsynth.methods.embedding import class_embedding, class_proportions, draw_frequencies
from dpsynth.privacy.accounting import Gaussian, calibrate_noise_multiplier, epsilon_spent
from dpsynth.privacy.release import ReleaseCache, Statistic, gaussian_release


@pytest.mark.parametrize(
    ("epsilon", "two", "one"),
    [(0.2, 25.3, 17.9), (1.0, 5.72, 4.05), (10.0, 0.75, 0.53)],
)
def test_calibration_matches_reference_values(epsilon: float, two: float, one: float) -> None:
    # The values PEARL / DP-MERF report for δ = 1e-5 under RDP, each within ±1%.
    sigma2 = calibrate_noise_multiplier(epsilon=epsilon, delta=1e-5, releases=2, accountant="rdp")
    sigma1 = calibrate_noise_multiplier(epsilon=epsilon, delta=1e-5, releases=1, accountant="rdp")
    assert sigma2 == pytest.approx(two, rel=0.01)
    assert sigma1 == pytest.approx(one, rel=0.01)
    # the calibrated σ spends at most the target, and barely less
    spent = epsilon_spent([Gaussian(sigma2, 2)], delta=1e-5, accountant="rdp")
    assert epsilon * 0.99 < spent <= epsilon


def test_authors_single_release_at_two_release_sigma_underspends() -> None:
    # The authors' image script: σ for two releases, one release made → ε well below 1.
    assert epsilon_spent([Gaussian(5.72)], delta=1e-5, accountant="rdp") < 0.9


def test_pld_is_tighter_than_rdp() -> None:
    rdp = calibrate_noise_multiplier(epsilon=1.0, delta=1e-5, releases=2, accountant="rdp")
    pld = calibrate_noise_multiplier(epsilon=1.0, delta=1e-5, releases=2, accountant="pld")
    assert pld < rdp
    assert epsilon_spent([Gaussian(pld, 2)], delta=1e-5, accountant="pld") <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0, "delta": 1e-5, "releases": 1}, "epsilon"),
        ({"epsilon": -1.0, "delta": 1e-5, "releases": 1}, "epsilon"),
        ({"epsilon": math.inf, "delta": 1e-5, "releases": 1}, "epsilon"),
        ({"epsilon": 1.0, "delta": 0.0, "releases": 1}, "delta"),
        ({"epsilon": 1.0, "delta": 1.0, "releases": 1}, "delta"),
    ],
)
def test_calibration_rejects_bad_budgets(kwargs: dict, match: str) -> None:
    with pytest.raises(PrivacyError, match=match):
        calibrate_noise_multiplier(**kwargs)


def test_unknown_accountant() -> None:
    with pytest.raises(ConfigError, match="rdp"):
        calibrate_noise_multiplier(epsilon=1.0, delta=1e-5, releases=1, accountant="moments")


def _data(n: int = 50, d: int = 12, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), rng.integers(0, c, n)


def test_embedding_sensitivity_is_two_over_n() -> None:
    # Replacing any one record (feature and label) moves E by at most 2/n in Frobenius norm.
    x, y = _data()
    n = len(x)
    freqs = draw_frequencies(64, x.shape[1], 1.0, seed=3)
    base = class_embedding(x, y, freqs, 3)
    rng = np.random.default_rng(1)
    worst = 0.0
    for _ in range(40):
        x2, y2 = x.copy(), y.copy()
        j = rng.integers(n)
        x2[j] = rng.random(x.shape[1]) * 5
        y2[j] = rng.integers(3)
        worst = max(worst, float(np.linalg.norm(class_embedding(x2, y2, freqs, 3) - base)))
    assert worst <= 2.0 / n + 1e-6
    assert worst > 1.0 / n  # and the bound is nearly attained by a label swap


def test_proportions_sensitivity() -> None:
    x, y = _data()
    y2 = y.copy()
    y2[0] = (y[0] + 1) % 3
    diff = class_proportions(y2, 3) - class_proportions(y, 3)
    assert np.linalg.norm(diff) == pytest.approx(math.sqrt(2) / len(y))


def test_embedding_rows_are_unit_norm_features() -> None:
    x, y = _data(n=1)
    freqs = draw_frequencies(32, x.shape[1], 2.0, seed=0)
    e = class_embedding(x, y, freqs, 3)
    assert np.linalg.norm(e) == pytest.approx(1.0, rel=1e-5)


def test_frequencies_are_public_and_seeded() -> None:
    a = draw_frequencies(10, 5, 4.0, seed=7)
    b = draw_frequencies(10, 5, 4.0, seed=7)
    assert torch.equal(a, b)
    big = draw_frequencies(20000, 3, 4.0, seed=1)
    assert big.var().item() == pytest.approx(1 / 4.0, rel=0.05)


def test_release_noise_has_calibrated_scale_and_ledger() -> None:
    value = np.zeros((200, 50))
    rel = gaussian_release(
        [Statistic("e", value, 0.01), Statistic("p", np.zeros(10), 0.005)],
        epsilon=1.0,
        delta=1e-5,
        rng=np.random.default_rng(0),
    )
    # Two statistics without a joint sensitivity cost what two separate releases would.
    sigma = calibrate_noise_multiplier(epsilon=1.0, delta=1e-5, releases=2)
    assert rel["e"].std() == pytest.approx(sigma * 0.01, rel=0.02)
    assert len(rel.ledger.spends) == 1 and rel.ledger.spends[0].parts["p"] == sigma * 0.005
    assert rel.ledger.epsilon_spent <= 1.0
    assert rel.ledger.to_dict()["releases"] == 1
    assert not np.allclose(rel["e"], value)


def test_release_refuses_nonfinite_statistics() -> None:
    with pytest.raises(PrivacyError, match="NaN"):
        gaussian_release([Statistic("e", np.array([np.nan]), 1.0)], epsilon=1, delta=1e-5)


def test_cache_hit_spends_nothing(tmp_path) -> None:
    cache = ReleaseCache(tmp_path)
    builds = []

    def build():
        builds.append(1)
        return gaussian_release([Statistic("e", np.ones(4), 0.1)], epsilon=1.0, delta=1e-5)

    first = cache.get_or_create({"k": 1}, build)
    second = cache.get_or_create({"k": 1}, build)
    assert len(builds) == 1
    assert not first.ledger.cache_hit and second.ledger.cache_hit
    assert len(second.ledger.spends) == 1
    np.testing.assert_array_equal(first["e"], second["e"])
    cache.get_or_create({"k": 2}, build)
    assert len(builds) == 2


def test_concurrent_cache_builds_spend_once(tmp_path) -> None:
    cache = ReleaseCache(tmp_path)
    builds = []
    results = []

    def build():
        builds.append(1)
        return gaussian_release([Statistic("e", np.ones(4), 0.1)], epsilon=1.0, delta=1e-5)

    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_create({"k": 9}, build)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert all(np.array_equal(r["e"], results[0]["e"]) for r in results)


def test_corrupt_cache_entry_is_reported(tmp_path) -> None:
    from dpsynth.errors import DataError
    from dpsynth.privacy.release import cache_key

    cache = ReleaseCache(tmp_path)
    cache.path(cache_key({"k": 1})).write_bytes(b"not an npz")
    with pytest.raises(DataError, match="spends the privacy budget again"):
        cache.get_or_create({"k": 1}, lambda: None)
