"""Empirical privacy audits (dpsynth.audit): sound (never above the claim for the real code),
powerful (a 20 % noise shortfall is flagged at ε = 1, at production shapes), and able to catch
planted privacy bugs in the real release code and in DP-SGD."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

import dpsynth
from dpsynth.audit import oneshot as oneshot_audit
from dpsynth.audit.cli import main
from dpsynth.audit.common import (
    clopper_pearson_upper,
    epsilon_from_rates,
    gaussian_exact_epsilon,
    mu_lower_empirical,
    mu_lower_known_shift,
    one_run_epsilon,
    one_run_p_value,
    threshold_test,
)
from dpsynth.audit.dpsgd import (
    audit_dpsgd_from_config,
    audit_one_run_from_config,
)
from dpsynth.audit.oneshot import _Captured, audit_from_config
from dpsynth.methods import dpsgd, oneshot
from dpsynth.privacy import release as release_module
from dpsynth.privacy.accounting import (
    Gaussian,
    SubsampledGaussian,
    calibrate_sgd,
    epsilon_spent,
)
from dpsynth.privacy.release import Budget, PrivacySpec, Statistic, gaussian_release

SRC = Path(dpsynth.__file__).resolve().parent

# ----------------------------------------------------------------------------- layering


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_privacy_sits_below_methods_and_audit() -> None:
    # dpsynth.privacy is the bottom layer: no module in it may import the methods (an upward
    # dependency) or the audit (which drives the methods).
    offenders = {
        str(p.relative_to(SRC)): sorted(
            n for n in _imports(p) if n.startswith(("dpsynth.methods", "dpsynth.audit"))
        )
        for p in (SRC / "privacy").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert not (SRC / "privacy" / "audit.py").exists()
    assert not (SRC / "privacy" / "audit_dpsgd.py").exists()


def test_methods_do_not_import_the_audit() -> None:
    for p in (SRC / "methods").glob("*.py"):
        assert not [n for n in _imports(p) if n.startswith("dpsynth.audit")], p


def test_console_script_points_at_the_audit_package() -> None:
    text = (SRC.parents[1] / "pyproject.toml").read_text()
    assert 'dpsynth-audit = "dpsynth.audit.cli:main"' in text


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
    pld = epsilon_spent([Gaussian(sigma)], delta=1e-5, neighbours="add_remove", accountant="pld")
    assert gaussian_exact_epsilon(1 / sigma, 1e-5) == pytest.approx(pld, rel=0.02, abs=2e-3)


@pytest.mark.parametrize("bound", ["known", "empirical"])
def test_mu_lower_bounds_cover_the_true_mu(bound: str) -> None:
    # Coverage: over 400 repetitions, μ⁻ exceeds the true μ in ≈ 1 − level of them (10 %).
    rng = np.random.default_rng(2)
    mu, n, level = 0.3, 2000, 0.9
    misses = 0
    for _ in range(400):
        a, b = rng.normal(-mu / 2, 1, n), rng.normal(mu / 2, 1, n)
        if bound == "known":
            out = mu_lower_known_shift(a, b, mu, delta=1e-5, level=level)
        else:
            out = mu_lower_empirical(a, b, delta=1e-5, level=level)
        misses += out.mu_lower > mu
        assert out.epsilon_lower_bound == pytest.approx(gaussian_exact_epsilon(out.mu_lower, 1e-5))
    assert 20 <= misses <= 62  # Binomial(400, 0.1): mean 40, sd 6


def test_known_shift_bound_sees_a_short_noise() -> None:
    # Noise 0.8× what the ledger says: the scores' std is 0.8, so μ is 1.25× the declared one.
    rng = np.random.default_rng(3)
    mu, n = 0.26, 2000
    a, b = rng.normal(-mu / 2, 0.8, n), rng.normal(mu / 2, 0.8, n)
    out = mu_lower_known_shift(a, b, mu, delta=1e-5, level=0.9999)
    assert out.mu_lower > mu * 1.1 and out.std == pytest.approx(0.8, rel=0.05)


def test_one_run_bound_is_the_papers() -> None:
    # δ = 0: the p-value is the binomial tail of ε-randomised response (Steinke et al. Thm 3.1)
    q = 1 / (1 + math.exp(-1.0))
    assert one_run_p_value(1000, 100, 80, 1.0, 0.0) == pytest.approx(binom.sf(79, 100, q))
    # δ > 0 adds the paper's 2mδ·max_i P[v − i ≤ Bin < v]/i term
    assert one_run_p_value(1000, 100, 80, 1.0, 1e-5) > one_run_p_value(1000, 100, 80, 1.0, 0.0)
    # r correct guesses of r, no δ: ε = logit(α^{1/r}), 3.49 for r = 100 at α = 0.05
    expected = math.log(0.05 ** (1 / 100) / (1 - 0.05 ** (1 / 100)))
    assert one_run_epsilon(1000, 100, 100, 0.0, 0.05) == pytest.approx(expected, abs=1e-6)
    assert one_run_epsilon(1000, 100, 50, 1e-5, 0.05) == 0.0  # a coin flip proves nothing


def test_one_run_bound_is_sound_for_randomised_response() -> None:
    # ε-randomised response is exactly ε-DP in each bit; the bound may exceed ε in ≤ 5 % of runs.
    rng = np.random.default_rng(4)
    eps, m = 1.0, 500
    correct = rng.binomial(200, 1 / (1 + math.exp(-eps)), size=100)  # 200 guesses per run
    alarms = sum(one_run_epsilon(m, 200, int(v), 0.0, 0.05) > eps for v in correct)
    assert alarms <= 10


# ----------------------------------------------------------------------------- one-shot

# The audited configuration with a tight canary: PEARL's preset (k = 1500) on 28×28 IDX images
# (d = 784), the proportions released jointly with the embedding (J = √1.5): the label-flip
# canary moves the release by exactly the declared joint sensitivity.
JOINT = ["method=pearl", "privacy.epsilon=1", "method.class_counts=release"]
TRIALS = 2000  # releases per neighbouring dataset
CONF = 0.999  # the tests' joint confidence: a correct release is flagged w.p. ≤ 0.1 %
RECORDS = 400  # n of the generated datasets (the default, 2000, makes the DP σ0² realistic)


@pytest.fixture(scope="module")
def correct_joint() -> oneshot_audit.AuditResult:
    return audit_from_config(JOINT, trials=TRIALS, confidence=CONF, records=RECORDS)


def test_correct_release_at_production_shape_is_not_flagged(correct_joint) -> None:
    res = correct_joint
    mech = res.mechanism
    assert mech["num_features"] == 1500 and mech["dim"] == 784  # the preset's k, 28×28
    assert [s["name"] for s in mech["statistics"]] == ["embedding", "proportions"]
    assert mech["statistics"][0]["shape"] == [3000, 10]
    assert mech["joint_sensitivity"] == pytest.approx(math.sqrt(1.5))
    assert res.canary == "label-flip"
    assert res.canary_tightness == pytest.approx(1.0, rel=1e-4)  # the claim is reachable
    assert res.exact_epsilon_of_canary == pytest.approx(res.release_epsilon, rel=1e-3)
    assert res.noise_ratio["embedding"] == pytest.approx(1.0, abs=0.03)  # the real release
    assert 0 <= res.epsilon_lower_bound <= res.claim <= 1.0
    assert not res.violation
    # power: the known-shift Gaussian-DP bound certifies most of the claim from 2000 releases
    assert res.known_shift["epsilon_lower_bound"] >= 0.85 * res.claim
    assert res.trials == TRIALS and res.confidence == CONF


def test_a_cache_hit_spends_nothing(correct_joint) -> None:
    cache = correct_joint.cache
    assert cache == {
        "hit": True,
        "gaussian_release_calls": 0,
        "same_statistics": True,
        "spends_unchanged": True,
        "ok": True,
    }


def test_twenty_percent_noise_shortfall_is_flagged_at_epsilon_one() -> None:
    # noise std × 0.8 (the ledger still says ε = 1): μ is 1.25× the claim's, ε ≈ 1.28.
    res = audit_from_config(
        JOINT, trials=TRIALS, confidence=CONF, records=RECORDS, planted="noise-0.8"
    )
    assert res.noise_ratio["embedding"] == pytest.approx(0.8, abs=0.03)  # planted for real
    assert res.ledger_epsilon_spent <= 1.0  # the ledger does not see it
    assert res.known_shift["std"] == pytest.approx(0.8, rel=0.05)
    assert res.epsilon_lower_bound > res.claim
    assert res.violation


def test_catches_halved_noise() -> None:
    res = audit_from_config(
        JOINT, trials=TRIALS, confidence=CONF, records=RECORDS, planted="half-noise"
    )
    assert res.epsilon_lower_bound > 1.0  # above the ε the run was promised
    assert res.violation


def test_catches_understated_sensitivity() -> None:
    # Every statistic declares half its sensitivity: the ledger still reports ε = 1, wrongly.
    res = audit_from_config(
        JOINT, trials=TRIALS, confidence=CONF, records=RECORDS, planted="half-sensitivity"
    )
    assert res.mechanism["statistics"][0]["sensitivity_declared"] == pytest.approx(1 / RECORDS)
    assert res.ledger_epsilon_spent <= 1.0
    assert res.epsilon_lower_bound > res.ledger_epsilon_spent
    assert res.violation


def test_a_cache_that_spends_again_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    # A cache that never hits re-draws (and re-spends) the release: the audit must say so.
    monkeypatch.setattr(release_module.ReleaseCache, "load", lambda self, key: None)
    res = audit_from_config(JOINT, trials=1000, records=RECORDS)
    assert not res.cache["ok"] and not res.cache["hit"]
    assert res.cache["gaussian_release_calls"] >= 1 and not res.cache["same_statistics"]
    assert res.violation


def test_embedding_only_release_uses_the_antipodal_canary() -> None:
    # PEARL on publicly balanced images releases the embedding alone (J = 1); k = 1500 > d = 784,
    # so no image pair is exactly antipodal: the search reaches ≈ 0.85 of the declared 2/n.
    res = audit_from_config(["method=pearl", "privacy.epsilon=1"], trials=1000, confidence=CONF)
    assert [s["name"] for s in res.mechanism["statistics"]] == ["embedding"]
    assert res.canary == "antipodal"
    assert 0.75 <= res.canary_tightness < 1.0
    assert res.candidates["label-flip"] * res.mechanism["noise_multiplier"] == pytest.approx(
        math.sqrt(0.5), rel=1e-4
    )
    assert not res.violation and res.cache["ok"]


def test_add_remove_release_is_audited_with_an_added_canary() -> None:
    res = audit_from_config(
        [*JOINT, "privacy.neighbours=add_remove"], trials=1000, confidence=CONF, records=RECORDS
    )
    assert [s["name"] for s in res.mechanism["statistics"]] == ["embedding_sum", "counts"]
    assert res.canary == "add" and res.canary_tightness == pytest.approx(1.0, rel=1e-4)
    assert not res.violation


def test_dpmerf_preset_is_audited_at_k_5000() -> None:
    res = audit_from_config(
        ["method=dpmerf", "privacy.epsilon=1"], trials=1000, confidence=CONF, records=RECORDS
    )
    assert res.mechanism["num_features"] == 5000
    assert res.mechanism["statistics"][0]["shape"] == [10000, 10]
    assert res.canary == "label-flip" and res.canary_tightness == pytest.approx(1.0, rel=1e-4)
    assert not res.violation and res.cache["ok"]


@pytest.mark.parametrize("epsilon", [0.2, 10.0])
def test_lower_bound_never_exceeds_the_claim(epsilon: float) -> None:
    res = audit_from_config(
        ["method=pearl", f"privacy.epsilon={epsilon}", "method.class_counts=release"],
        trials=1000,
        confidence=CONF,
        records=RECORDS,
    )
    assert res.ledger_epsilon_spent <= epsilon
    assert 0 <= res.epsilon_lower_bound <= res.exact_epsilon_of_canary * 1.001
    assert res.epsilon_lower_bound <= res.claim
    assert not res.violation


def test_batched_draw_is_the_real_release() -> None:
    # The tiled draw goes through gaussian_release with the run's budget as it stood before the
    # release (not a second spend on it) and OS-entropy noise of the recorded std.
    stats = [Statistic("e", np.arange(6.0).reshape(3, 2), 0.5), Statistic("p", np.ones(2), 0.3)]
    budget = Budget(PrivacySpec(1.0, 1e-5))
    real = gaussian_release(stats, budget=budget, joint_sensitivity=math.sqrt(1.5))
    cap = _Captured(
        "test", gaussian_release, stats, {"budget": budget, "joint_sensitivity": math.sqrt(1.5)},
        [], real,
    )  # fmt: skip
    rel = cap.draw(20_000)
    assert len(budget.spends) == 1  # the run's budget is untouched
    assert vars(rel.ledger.spends[-1]) == vars(real.ledger.spends[-1])
    for s in stats:
        noise = rel[s.name].astype(np.float64) - s.value
        assert noise.shape == (20_000, *s.value.shape)
        assert np.std(noise) == pytest.approx(cap.noise_std()[s.name], rel=0.02)
    assert not np.array_equal(rel["e"][0], rel["e"][1])  # independent rows


def test_planting_is_undone_after_the_audit() -> None:
    import dpsynth.privacy.estimates as estimates

    before = (release_module.np, oneshot.gaussian_release, estimates.gaussian_release)
    res = audit_from_config(JOINT, trials=1000, records=RECORDS, planted="half-sensitivity")
    assert res.mechanism["statistics"][0]["sensitivity_declared"] == pytest.approx(1 / RECORDS)
    after = (release_module.np, oneshot.gaussian_release, estimates.gaussian_release)
    assert before == after
    assert release_module.np is np and oneshot.gaussian_release is gaussian_release


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_the_result(tmp_path, capsys) -> None:
    out = tmp_path / "a.json"
    main(["method=pearl", "privacy=eps10", "--trials", "1000", "--records", "200",
          "--confidence", str(CONF), "--json", str(out)])  # fmt: skip
    assert "audited ε lower bound" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert rec["method"] == "pearl" and rec["epsilon"] == 10 and rec["delta"] == 1e-5
    assert rec["audit"] == "oneshot" and rec["dataset"] == "fashion_mnist"
    assert rec["epsilon_lower_bound"] <= rec["claim"] and not rec["violation"]


def test_cli_exits_1_on_a_violation(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*JOINT, "--trials", "1000", "--records", "200", "--plant-bug", "half-noise"])
    assert e.value.code == 1
    assert "VIOLATION" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--records", "5"], "--records: got 5; allowed"),
        (["--features", "0"], "--features: got 0; allowed"),
        (["--trials", "10"], "--trials: got 10; allowed"),
        (["--confidence", "1.5"], "--confidence: got 1.5; allowed"),
        (["method=nope"], "Allowed methods: dpmerf, pearl, pearl_ensemble, pearl_tuned, dpsgd"),
        (["dataset=digits"], "allowed for the one-shot audit: fashion_mnist, mnist"),
        (["method=nonprivate_gan"], "needs a private DP-SGD method (method=dpsgd)"),
        (["method=dpsgd", "--train-size", "0"], "--train-size: got 0; allowed"),
        (["method=dpsgd", "--plant-bug", "nope"], None),
        (["method=pearl", "--plant-bug", "no-clip"], "allowed for one-shot methods"),
        (["method=pearl", "--one-run"], "--one-run: allowed for method=dpsgd only"),
        (["privacy.epsilon=-1"], "privacy.epsilon: got -1.0; allowed"),
        (["privacy.accountant=foo"], "privacy.accountant: got 'foo'; allowed: pld, rdp"),
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
def test_production_trials(method: str) -> None:
    res = audit_from_config([f"method={method}", "privacy=eps1"], trials=20_000)
    assert 0.5 * res.claim <= res.epsilon_lower_bound <= res.claim
    assert not res.violation


# ----------------------------------------------------------------------------- DP-SGD step

# One full-batch DP discriminator step at σ = 1 (a fixed method.noise_multiplier) and δ = 0.01:
# a configuration where a few thousand real steps already certify most of the claim and catch
# 2× bugs. Narrow discriminator (tabular_d_width=8) for speed; same Opacus path.
SGD = ["method=dpsgd", "method.noise_multiplier=1.0", "privacy.delta=0.01"]
SGD_FAST = [*SGD, "method.tabular_d_width=8"]
SGD_TRIALS = 2500


def test_dpsgd_step_is_sound_and_has_power() -> None:
    res = audit_dpsgd_from_config(SGD_FAST, trials=SGD_TRIALS)
    assert res.noise_multiplier == 1.0 and res.audited_sample_rate == 1.0
    # dp-accounting's one-step ε at q = 1 is the exact ε of the Gaussian step: the claim is tight
    assert res.claimed_epsilon == pytest.approx(res.exact_epsilon_of_canary, rel=0.02)
    assert res.ledger_epsilon == pytest.approx(res.claimed_epsilon)  # charged what it used
    assert res.canary_grad_norm > 10 * res.max_grad_norm  # the real clipping had to cut it
    assert res.empirical_mu == pytest.approx(1.0, abs=0.1)  # shift C in noise stds σC
    # sound, and powerful: ≥ 40 % of the claim from 2500 steps (≈ 60–75 % expected)
    assert 0.4 * res.claimed_epsilon <= res.epsilon_lower_bound <= res.claimed_epsilon
    assert not res.violation
    assert res.trials == SGD_TRIALS and res.trials_per_second > 0


# half-sensitivity scales the noise against the clip exactly as half-noise does: slow only
@pytest.mark.parametrize(
    "bug", ["half-noise", pytest.param("half-sensitivity", marks=pytest.mark.slow), "no-clip"]
)
def test_dpsgd_planted_bugs_are_caught(bug: str) -> None:
    before = dpsgd.DPOptimizer
    res = audit_dpsgd_from_config(SGD_FAST, trials=SGD_TRIALS, planted=bug)
    assert dpsgd.DPOptimizer is before  # planting undone
    assert res.epsilon_lower_bound > res.claimed_epsilon
    assert res.violation
    if bug == "half-noise":  # the optimiser honestly runs at σ/2: its ledger shows the leak
        assert res.mechanism["noise_multiplier_used"] == 0.5
        assert res.ledger_epsilon > res.claimed_epsilon
    else:  # the optimiser still says σ = 1: only the audit sees it
        assert res.ledger_epsilon == pytest.approx(res.claimed_epsilon)
        assert res.empirical_mu > 1.5


def test_dpsgd_sigma_is_the_runs_calibration() -> None:
    res = audit_dpsgd_from_config(["method=dpsgd", "privacy=eps10"], trials=1000)
    q = 256 / 60_000
    assert res.run_sample_rate == pytest.approx(q) and res.run_steps == 3000
    sigma = calibrate_sgd(epsilon=10.0, delta=1e-5, sample_rate=q, steps=3000)
    assert res.noise_multiplier == pytest.approx(sigma)
    assert res.run_epsilon_spent <= 10.0
    one = epsilon_spent(
        [SubsampledGaussian(sigma, 1.0, 1)], delta=1e-5, neighbours="add_remove", accountant="pld"
    )
    assert res.claimed_epsilon == pytest.approx(one)
    assert res.epsilon_lower_bound <= res.claimed_epsilon


def test_dpsgd_cli_exits_1_on_a_violation(tmp_path, capsys) -> None:
    out = tmp_path / "d.json"
    with pytest.raises(SystemExit) as e:
        main([*SGD_FAST, "--trials", "1000", "--bug", "no-clip", "--json", str(out)])
    assert e.value.code == 1
    text = capsys.readouterr().out
    assert "VIOLATION" in text and "claimed one-step ε" in text and "q = 1" in text
    rec = json.loads(out.read_text())
    assert rec["planted_bug"] == "no-clip" and rec["epsilon_lower_bound"] > rec["claimed_epsilon"]


@pytest.mark.slow
def test_dpsgd_epsilon_ten_hundred_thousand_steps() -> None:
    res = audit_dpsgd_from_config(["method=dpsgd", "privacy=eps10"], trials=100_000)
    assert 0.4 * res.claimed_epsilon <= res.epsilon_lower_bound <= res.claimed_epsilon
    bug = audit_dpsgd_from_config(["method=dpsgd", "privacy=eps10"], trials=100_000,
                                  planted="no-clip")  # fmt: skip
    assert bug.epsilon_lower_bound > bug.claimed_epsilon


# ----------------------------------------------------------------------------- DP-SGD one run

# One run of 30 real Poisson-sampled steps (q = 0.1) of the image discriminator on 8×8 images,
# σ = 2: the run's claim is ε ≈ 2.23 (replace-one, δ = 1e-5; the target ε = 3 affords all 30
# steps); 400 Dirac gradient canaries.
RUN = [
    "method=dpsgd",
    "privacy.epsilon=3",
    "method.noise_multiplier=2.0",
    "method.batch_size=60",
    "method.steps=30",
    "method.d_width=8",
]
RUN_KW = {"train_size": 600, "canaries": 400, "image_size": 8, "confidence": 0.99}


def test_one_run_audit_of_a_correct_run_stays_below_the_claim() -> None:
    res = audit_one_run_from_config(RUN, **RUN_KW)
    assert res.audited_sample_rate == pytest.approx(0.1) and res.audited_steps == 30
    assert res.claimed_epsilon == pytest.approx(
        epsilon_spent([SubsampledGaussian(2.0, 0.1, 30)], delta=1e-5, neighbours="replace_one")
    )
    assert res.image_shape == [1, 8, 8] and res.quiet_coordinates == 400
    assert res.mean_score_in > res.mean_score_out  # the canaries are seen, weakly
    assert 0 <= res.epsilon_lower_bound <= res.claimed_epsilon
    assert not res.violation


@pytest.mark.parametrize("bug", ["no-noise", "no-clip"])
def test_one_run_audit_catches_planted_bugs(bug: str) -> None:
    before = dpsgd.DPOptimizer
    res = audit_one_run_from_config(RUN, planted=bug, **RUN_KW)
    assert dpsgd.DPOptimizer is before  # planting and canary injection undone
    assert res.epsilon_lower_bound > res.claimed_epsilon
    assert res.violation


def test_one_run_cli_exits_1_on_a_violation(tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    argv = [*RUN, "--one-run", "--train-size", "600", "--canaries", "400", "--image-size", "8"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--confidence", "0.99", "--bug", "no-noise", "--json", str(out)])
    assert e.value.code == 1
    assert "one-run audit" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert rec["audit"] == "dpsgd-one-run" and rec["epsilon_lower_bound"] > rec["claimed_epsilon"]


def test_one_run_audit_add_remove() -> None:
    res = audit_one_run_from_config([*RUN, "privacy.neighbours=add_remove"], **RUN_KW)
    assert res.neighbours == "add_remove"
    assert 0 <= res.epsilon_lower_bound <= res.claimed_epsilon and not res.violation
