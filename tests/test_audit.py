"""Empirical privacy audit of the one-shot releases: sound (never above the claim), powerful
(certifies most of ε = 1), and able to catch planted privacy bugs in the real release code."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from dpsynth.methods import dpsgd, oneshot
from dpsynth.methods.dpsgd import calibrate_noise_multiplier, opacus_epsilon
from dpsynth.privacy import release as release_module
from dpsynth.privacy.accounting import epsilon_spent
from dpsynth.privacy.audit import (
    _Captured,
    _Mechanism,
    audit_from_config,
    clopper_pearson_upper,
    epsilon_from_rates,
    gaussian_exact_epsilon,
    main,
    threshold_test,
)
from dpsynth.privacy.audit_dpsgd import audit_dpsgd_from_config
from dpsynth.privacy.release import Statistic, gaussian_release

FAST = 200_000  # releases per dataset for the soundness grid
POWER = 2_000_000  # enough to certify ≥ 0.5 at ε = 1 (the bound grows with log(trials))
BUG = 1_000_000


# ----------------------------------------------------------------------------- statistics


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 10_000), frac=st.floats(0, 1), level=st.sampled_from([0.9, 0.975]))
def test_clopper_pearson_upper_covers(n: int, frac: float, level: float) -> None:
    k = int(frac * n)
    upper = float(clopper_pearson_upper(k, n, level)[0])
    assert k / n <= upper <= 1.0
    if k < n:  # exact: P(Bin(n, p⁺) ≤ k) = 1 − level
        assert binom.cdf(k, n, upper) == pytest.approx(1 - level, rel=1e-6, abs=1e-12)


def test_epsilon_from_rates_is_the_dp_inequality() -> None:
    up, lo = epsilon_from_rates(np.array([0.01, 0.5]), np.array([0.9, 0.5]), 1e-5)
    assert up[0] == pytest.approx(math.log((1 - 1e-5 - 0.9) / 0.01))
    assert lo[0] == pytest.approx(math.log((1 - 1e-5 - 0.01) / 0.9))
    assert up[1] < 0 and lo[1] < 0  # a coin-flip test proves nothing


def test_threshold_test_is_sound_on_identical_distributions() -> None:
    # Null case: no test can tell D from D′, so a positive bound is a false alarm (≤ 5%).
    rng = np.random.default_rng(0)
    alarms = sum(
        threshold_test(*rng.normal(size=(4, 5000)), delta=1e-5, confidence=0.95).epsilon_lower_bound
        > 0
        for _ in range(100)
    )
    assert alarms <= 5


def test_threshold_test_stays_below_the_exact_gaussian_epsilon() -> None:
    rng = np.random.default_rng(1)
    mu, n = 1.0, 100_000
    s = [rng.normal(0, 1, n), rng.normal(mu, 1, n), rng.normal(0, 1, n), rng.normal(mu, 1, n)]
    out = threshold_test(*s, delta=1e-5, confidence=0.95)
    assert 0.5 * gaussian_exact_epsilon(mu, 1e-5) < out.epsilon_lower_bound
    assert out.epsilon_lower_bound < gaussian_exact_epsilon(mu, 1e-5)


@pytest.mark.parametrize("sigma", [0.8, 4.0, 20.0])
def test_exact_gaussian_epsilon_agrees_with_dp_accounting(sigma: float) -> None:
    # The audit's ceiling (Balle & Wang) vs the library's PLD accountant for one release.
    pld = epsilon_spent(sigma, releases=1, delta=1e-5, accountant="pld")
    assert gaussian_exact_epsilon(1 / sigma, 1e-5) == pytest.approx(pld, rel=0.02, abs=2e-3)


# ----------------------------------------------------------------------------- mechanism


def test_batched_draw_is_the_real_release() -> None:
    # One row of a batched draw is bit-for-bit one call of gaussian_release with that stream.
    stats = [Statistic("e", np.arange(6.0).reshape(3, 2), 0.5), Statistic("p", np.ones(2), 0.3)]
    kwargs = {"epsilon": 1.0, "delta": 1e-5, "accountant": "rdp", "public": {}}
    real = gaussian_release(stats, **kwargs, rng=np.random.default_rng(7))
    mech = _Mechanism(_Captured(gaussian_release, stats, kwargs, real.ledger))
    batch, ledger = mech.draw(1, np.random.default_rng(7))
    for name in ("e", "p"):
        np.testing.assert_array_equal(batch[name][0], real[name])
    assert ledger.to_dict()["spends"] == real.ledger.to_dict()["spends"]


def test_worst_case_canary_moves_the_statistics_by_their_sensitivity() -> None:
    res = audit_from_config(["method=dpmerf", "privacy.epsilon=1"], trials=2000)
    sigma = res.mechanism["statistics"][0]["noise_multiplier"]
    # antipodal: ‖ΔE‖ = 2/n exactly (one noise-σ); label flip: √2/n on E and √2/n on p
    assert res.candidates["antipodal"] == pytest.approx(1 / sigma, rel=1e-4)
    assert res.candidates["label-flip"] == pytest.approx(math.sqrt(1.5) / sigma, rel=1e-4)
    assert res.canary == "label-flip"
    assert res.separation_mu <= res.accountant_mu
    assert [s["name"] for s in res.mechanism["statistics"]] == ["embedding", "proportions"]


# ----------------------------------------------------------------------------- the audit


@pytest.mark.parametrize("method", ["pearl", "dpmerf"])
@pytest.mark.parametrize("epsilon", [0.2, 1.0, 10.0])
def test_lower_bound_never_exceeds_the_claim(method: str, epsilon: float) -> None:
    res = audit_from_config([f"method={method}", f"privacy.epsilon={epsilon}"], trials=FAST)
    assert res.ledger_epsilon_spent <= epsilon
    assert 0 <= res.epsilon_lower_bound <= res.exact_epsilon_of_canary <= epsilon
    assert not res.violation


def test_audit_has_power_at_epsilon_one() -> None:
    res = audit_from_config(["method=pearl", "privacy=eps1"], trials=POWER)
    assert 0.5 <= res.epsilon_lower_bound <= 1.0
    assert res.trials == POWER and res.confidence == 0.95


def test_catches_halved_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    real = release_module.calibrate_noise_multiplier
    monkeypatch.setattr(release_module, "calibrate_noise_multiplier", lambda **kw: real(**kw) / 2.0)
    res = audit_from_config(["method=pearl", "privacy.epsilon=1"], trials=BUG)
    assert res.epsilon_lower_bound > 1.0  # above the ε the run was promised
    assert res.violation


def test_catches_understated_sensitivity(monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedding declares 1/n instead of 2/n: the ledger then reports ε = 1, wrongly.
    def buggy(name: str, value: np.ndarray, sensitivity: float) -> Statistic:
        return Statistic(name, value, sensitivity / 2 if name == "embedding" else sensitivity)

    monkeypatch.setattr(oneshot, "Statistic", buggy)
    res = audit_from_config(["method=pearl", "privacy.epsilon=1"], balanced=True, trials=BUG)
    assert res.mechanism["statistics"][0]["sensitivity_declared"] == pytest.approx(1 / 8)
    assert res.ledger_epsilon_spent <= 1.0
    assert res.epsilon_lower_bound > res.ledger_epsilon_spent
    assert res.violation


def test_planting_is_undone_after_the_audit() -> None:
    before = (
        release_module.calibrate_noise_multiplier,
        oneshot.Statistic,
        oneshot.gaussian_release,
    )
    res = audit_from_config(["method=dpmerf"], trials=2000, planted="half-sensitivity")
    assert res.mechanism["statistics"][0]["sensitivity_declared"] == pytest.approx(1 / 8)
    after = (release_module.calibrate_noise_multiplier, oneshot.Statistic, oneshot.gaussian_release)
    assert before == after


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_the_result(tmp_path, capsys) -> None:
    out = tmp_path / "a.json"
    main(["method=pearl", "privacy=eps10", "--balanced", "--trials", "5000", "--json", str(out)])
    assert "audited ε lower bound" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert rec["method"] == "pearl" and rec["epsilon"] == 10 and rec["delta"] == 1e-5
    assert rec["mechanism"]["releases"] == 1  # PEARL on balanced data: the embedding only
    assert rec["epsilon_lower_bound"] <= rec["ledger_epsilon_spent"]


def test_cli_exits_1_on_a_violation(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["method=dpmerf", "privacy=eps1", "--trials", "300000", "--plant-bug", "half-noise"])
    assert e.value.code == 1
    assert "VIOLATION" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--records", "0"], "--records: got 0; allowed"),
        (["--features", "0"], "--features: got 0; allowed"),
        (["--trials", "10"], "--trials: got 10; allowed"),
        (["--confidence", "1.5"], "--confidence: got 1.5; allowed"),
        (["method=nope"], "Allowed methods: dpmerf, pearl"),
        (["method.num_features=9"], "allowed: --features N"),
        (["method=nonprivate_gan"], "needs a private DP-SGD method (method=dpsgd)"),
        (["method=dpsgd", "--train-size", "0"], "--train-size: got 0; allowed"),
        (["method=dpsgd", "--plant-bug", "nope"], None),
        (["method=pearl", "--plant-bug", "no-clip"], "allowed for one-shot methods"),
        (["privacy.epsilon=-1"], "privacy.epsilon: got -1.0; allowed"),
        (["privacy.accountant=foo"], "privacy.accountant: got 'foo'; allowed: rdp, pld"),
    ],
)
def test_cli_user_errors(argv: list[str], match: str | None, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    if match is None:  # rejected by argparse's choices
        assert "invalid choice: 'nope'" in err
    else:
        assert err.startswith("dpsynth-audit: error: ") and match in err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pearl", "dpmerf"])
def test_ten_million_trials(method: str) -> None:
    res = audit_from_config([f"method={method}", "privacy=eps1"], trials=10_000_000)
    assert 0.6 <= res.epsilon_lower_bound <= res.exact_epsilon_of_canary <= 1.0


# ----------------------------------------------------------------------------- DP-SGD step

# One full-batch DP discriminator step at σ = 1 (a fixed method.noise_multiplier) and δ = 0.01:
# a configuration where a few thousand real steps (≈ 700/s) already certify most of the claim
# and catch 2× bugs; the ε = 10 audit (σ ≈ 0.505, claim ≈ 9.88) needs 10⁵ steps (slow test,
# results/audit). Narrow discriminator (tabular_d_width=8) for speed; same Opacus path.
SGD = ["method=dpsgd", "method.noise_multiplier=1.0", "privacy.delta=0.01"]
SGD_FAST = [*SGD, "method.tabular_d_width=8"]
SGD_TRIALS = 4000


def test_dpsgd_step_is_sound_and_has_power() -> None:
    res = audit_dpsgd_from_config(SGD_FAST, trials=SGD_TRIALS)
    assert res.noise_multiplier == 1.0 and res.audited_sample_rate == 1.0
    # Opacus' one-step ε at q = 1 is (PRV) the exact ε of the Gaussian step: the claim is tight
    assert res.claimed_epsilon == pytest.approx(res.exact_epsilon_of_canary, rel=0.02)
    assert res.ledger_epsilon == pytest.approx(res.claimed_epsilon)  # charged what it used
    assert res.canary_grad_norm > 10 * res.max_grad_norm  # the real clipping had to cut it
    assert res.empirical_mu == pytest.approx(1.0, abs=0.1)  # shift C in noise stds σC
    # sound, and powerful: ≥ 40 % of the claim from 4000 steps (≈ 60–80 % expected)
    assert 0.4 * res.claimed_epsilon <= res.epsilon_lower_bound <= res.claimed_epsilon
    assert not res.violation
    assert res.trials == SGD_TRIALS and res.trials_per_second > 0


@pytest.mark.parametrize("bug", ["half-noise", "half-sensitivity", "no-clip"])
def test_dpsgd_planted_bugs_are_caught(bug: str) -> None:
    before = dpsgd.DPOptimizer
    res = audit_dpsgd_from_config(SGD_FAST, trials=SGD_TRIALS, planted=bug)
    assert dpsgd.DPOptimizer is before  # planting undone
    assert res.epsilon_lower_bound > res.claimed_epsilon
    assert res.violation
    if bug == "half-noise":  # Opacus' hook honestly charged σ/2: the ledger shows the leak
        assert res.mechanism["noise_multiplier_used"] == 0.5
        assert res.ledger_epsilon > res.claimed_epsilon
    else:  # the ledger still says σ = 1: only the audit sees it
        assert res.ledger_epsilon == pytest.approx(res.claimed_epsilon)
        assert res.empirical_mu > 1.5


def test_dpsgd_sigma_is_the_methods_calibration() -> None:
    res = audit_dpsgd_from_config(["method=dpsgd", "privacy=eps10"], trials=1000)
    q = 256 / 60_000
    assert res.run_sample_rate == pytest.approx(q) and res.run_steps == 3000
    assert res.noise_multiplier == calibrate_noise_multiplier("prv", 10.0, 1e-5, q, 3000)
    assert res.run_epsilon_spent <= 10.0
    assert res.claimed_epsilon == opacus_epsilon("prv", ((res.noise_multiplier, 1.0, 1),), 1e-5)
    assert res.epsilon_lower_bound <= res.claimed_epsilon


def test_dpsgd_cli_exits_1_on_a_violation(tmp_path, capsys) -> None:
    out = tmp_path / "d.json"
    with pytest.raises(SystemExit) as e:
        main([*SGD_FAST, "--trials", "1000", "--bug", "no-clip", "--json", str(out)])
    assert e.value.code == 1
    text = capsys.readouterr().out
    assert "VIOLATION" in text and "claimed one-step ε (Opacus)" in text and "q = 1" in text
    rec = json.loads(out.read_text())
    assert rec["planted_bug"] == "no-clip" and rec["epsilon_lower_bound"] > rec["claimed_epsilon"]


@pytest.mark.slow
def test_dpsgd_epsilon_ten_hundred_thousand_steps() -> None:
    res = audit_dpsgd_from_config(["method=dpsgd", "privacy=eps10"], trials=100_000)
    assert 0.5 * res.claimed_epsilon <= res.epsilon_lower_bound <= res.claimed_epsilon
    bug = audit_dpsgd_from_config(["method=dpsgd", "privacy=eps10"], trials=100_000,
                                  planted="no-clip")  # fmt: skip
    assert bug.epsilon_lower_bound > bug.claimed_epsilon
