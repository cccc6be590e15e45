"""PEARL's noise-aware critic (issue 13): uniform on pure noise, moving on a clean release, and
its settings a deterministic function of public numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpsynth.data.base import DataSpec
from dpsynth.errors import ConfigError
from dpsynth.methods.embedding import batch_embedding, draw_frequencies
from dpsynth.methods.oneshot import EmbeddingMatcher
from dpsynth.methods.pearl import (
    PEARL,
    FrequencyCritic,
    critic_temperature,
    critic_weights_sq,
    embedding_noise_std,
    gate_ratio,
    signal_to_noise,
)
from dpsynth.privacy.release import Release, Statistic, gaussian_release
from tests.test_oneshot import _ctx  # the same run context as the other one-shot tests

SPEC = DataSpec("toy", "image", (1, 4, 4), 3, ("a", "b", "c"), balanced=True)


def _release(value: np.ndarray, n: int, epsilon: float = 1.0, seed: int = 0) -> Release:
    """A release of ``value`` (2k, C) as the embedding of n records (Δ = 2/n), with the public
    parameters training reads. A zero ``value`` gives a release that is pure noise."""
    k = value.shape[0] // 2
    public = {"num_features": k, "dim": 16, "sigma0_sq": 2.0, "freq_seed": 0, "n": n}
    return gaussian_release(
        [Statistic("embedding", value, 2.0 / n)],
        epsilon=epsilon,
        delta=1e-5,
        public=public,
        rng=np.random.default_rng(seed),
    )


def _pearl(**kw) -> PEARL:
    base = dict(num_features=40, steps=12, batch_size=9, checkpoint_every=0, critic_every=2)
    return PEARL(**{**base, **kw})


def test_noise_std_and_snr_come_from_the_release() -> None:
    rel = _release(np.zeros((80, 3)), n=500)
    sigma_e = embedding_noise_std(rel)
    assert sigma_e == pytest.approx(rel.ledger.spends[-1].noise_std)
    # pure noise: the energy statistic is ~N(0, 1) (here one draw; 6 sds is a hard bound)
    assert abs(signal_to_noise(np.asarray(rel["embedding"]), sigma_e)) < 6
    # a strong signal is detected
    loud = _release(np.full((80, 3), 0.05), n=500)
    assert signal_to_noise(np.asarray(loud["embedding"]), embedding_noise_std(loud)) > 50


def test_gate_ratio_is_signal_per_frequency_over_the_noise_scale() -> None:
    k, c, n = 40, 3, 500
    noise = _release(np.zeros((2 * k, c)), n=n)
    sigma_e = embedding_noise_std(noise)
    # pure noise: S/(kτ₁) ≈ 0 with sd 1/√(2k ln k) (~0.05 here); 6 sds is a hard bound
    sd = 1 / math.sqrt(2 * k * math.log(k))
    assert abs(gate_ratio(np.asarray(noise["embedding"]), sigma_e)) < 6 * sd
    # a signal detectable in total (SNR ≫ 3) but small per frequency next to τ₁: gate shut
    tau1 = critic_temperature(sigma_e, c, k, kl=1.0)
    weak = np.full((2 * k, c), math.sqrt(0.3 * tau1 / (2 * c)))  # S/k = 0.3 τ₁
    rel = _release(weak, n=n)
    assert signal_to_noise(np.asarray(rel["embedding"]), sigma_e) > 3
    assert gate_ratio(np.asarray(rel["embedding"]), sigma_e) < 1
    assert _pearl().critic_rule(rel)["critic/gate_open"] == 0.0
    strong = _release(np.full((2 * k, c), math.sqrt(5 * tau1 / (2 * c))), n=n)  # S/k = 5 τ₁
    assert gate_ratio(np.asarray(strong["embedding"]), sigma_e) > 1
    assert _pearl().critic_rule(strong)["critic/gate_open"] == 1.0
    assert _pearl(critic_gate=None).critic_rule(rel)["critic/gate_open"] == 1.0
    assert _pearl(critic=False).critic_rule(strong)["critic/gate_open"] == 0.0


def test_pure_noise_release_keeps_weights_uniform_and_the_loss_is_dpmerfs(tmp_path) -> None:
    rel = _release(np.zeros((80, 3)), n=500)  # the embedding is pure noise
    pearl = _pearl()
    rule = pearl.critic_rule(rel)
    assert rule["critic/gate_open"] == 0.0  # no signal per frequency: the critic never moves
    assert pearl.make_critic(SPEC, rel) is None
    syn = pearl.train(rel, SPEC, _ctx(tmp_path / "pearl"))
    ablation = _pearl(critic=False).train(rel, SPEC, _ctx(tmp_path / "merf"))
    # same seed, uniform weights: PEARL's generator is exactly the critic-off one
    for a, b in zip(
        syn.generator.state_dict().values(), ablation.generator.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)
    assert pearl.diagnostics["critic/gate_open"] == 0.0


def _critic_run(
    target: torch.Tensor, freqs: torch.Tensor, tau: float, steps: int, min_ess: float = 0.0
) -> torch.Tensor:
    """Critic ascent only, against a fixed generated batch (x, y), each step followed by the
    effective-frequency projection when ``min_ess`` > 0 (as training does): the final α (k,)."""
    torch.manual_seed(0)
    m = EmbeddingMatcher(
        torch.nn.Sequential(),
        freqs,
        target,
        torch.full((3,), 1 / 3),
        code_dim=2,
        batch_size=6,
        lr=0.01,
        max_steps=1,
        scheduler="constant",
        loss_scale=1.0,
        critic=FrequencyCritic(freqs.shape[1], 2.0),
        critic_tau=tau,
    )
    opt = torch.optim.Adam(m.critic.parameters(), lr=0.05)
    x, y = _BATCH
    for _ in range(steps):
        opt.zero_grad()
        (-m.critic_objective(x, y)).backward()
        opt.step()
        if min_ess > 0:
            m.critic.project_(m.freqs_sq, min_ess)
    with torch.no_grad():
        return m.critic(m.freqs_sq)


_BATCH = (torch.rand(30, 16, generator=torch.Generator().manual_seed(1)), torch.arange(30) % 3)


def test_kl_constraint_keeps_noise_near_uniform_where_the_old_critic_collapses() -> None:
    k, n = 200, 400
    freqs = draw_frequencies(k, 16, 2.0, seed=0)
    x, y = _BATCH
    fitted = batch_embedding(x, y, freqs, None, 3).detach()  # (2k, 3): the generator is exact
    rel = _release(np.zeros((2 * k, 3)), n=n, epsilon=0.5)  # the release's noise on top
    target = fitted + torch.as_tensor(rel["embedding"])
    sigma_e = embedding_noise_std(rel)
    tau = critic_temperature(sigma_e, 3, k, kl=1.0)
    old = _critic_run(target, freqs, 0.0, 400)
    new = _critic_run(target, freqs, tau, 400)
    eff_old, eff_new = 1 / float((old**2).sum()), 1 / float((new**2).sum())
    assert eff_old < 0.2 * k  # the authors' critic climbs onto the noise
    assert eff_new > 0.9 * k  # the constrained one stays near uniform


def test_critic_finds_a_known_two_frequency_discrepancy_on_a_clean_release() -> None:
    k = 200
    freqs = draw_frequencies(k, 16, 2.0, seed=0)
    x, y = _BATCH
    fitted = batch_embedding(x, y, freqs, None, 3).detach()
    # the two frequencies with the largest t² in input dimension 0 disagree (a clean release:
    # the generator matches everywhere else)
    two = torch.topk(freqs[:, 0] ** 2, 2).indices
    target = fitted.clone()
    target[two] += 0.2
    rel = _release(np.zeros((2 * k, 3)), n=10**7, epsilon=10.0)  # negligible noise
    tau = critic_temperature(embedding_noise_std(rel), 3, k, kl=1.0)
    alpha = _critic_run(target, freqs, tau, 300)
    assert float(alpha[two].sum()) > 0.5  # from 2/k = 1% to most of the weight
    # With the default floor (1/Σα² ≥ k/2) the critic still finds them: one of the two is the
    # largest weight, both are above uniform, together they hold > 5× their uniform share
    # (measured 7.7×), and the floor holds.
    floored = _critic_run(target, freqs, tau, 300, min_ess=0.5)
    assert int(torch.argmax(floored)) in two.tolist()
    assert float(floored[two].min()) > 2.0 / k
    assert float(floored[two].sum()) > 5 * 2.0 / k
    assert 1 / float((floored.double() ** 2).sum()) >= 0.5 * k * (1 - 1e-6)


def test_floor_projection_restores_the_effective_number_and_keeps_the_family() -> None:
    k = 300
    freqs = draw_frequencies(k, 16, 2.0, seed=3)
    critic = FrequencyCritic(16, 2.0)
    with torch.no_grad():
        critic.precision.copy_(torch.linspace(0.01, 4.0, 16))  # a far move: α concentrated
    freqs_sq = freqs**2
    alpha0 = critic(freqs_sq).detach()
    assert 1 / float((alpha0.double() ** 2).sum()) < 0.5 * k
    move0 = critic.precision.detach() - 2.0
    c = critic.project_(freqs_sq, 0.5)
    alpha = critic(freqs_sq).detach()
    ess = 1 / float((alpha.double() ** 2).sum())
    assert 0.5 * k * (1 - 1e-6) <= ess < 0.55 * k  # at the floor, not needlessly further
    assert 0.0 < c < 1.0
    torch.testing.assert_close(critic.precision.detach() - 2.0, c * move0)  # same direction

    def ess_at(c: float) -> float:  # the critic's own α, computed in full at σ0² + c·move
        alpha = critic_weights_sq(freqs_sq, 2.0 + c * move0, 2.0)
        return 1 / float((alpha.double() ** 2).sum())

    # c is the bisection's answer: feasible, and one 2⁻¹² step further is not
    assert ess_at(c) >= 0.5 * k * (1 - 1e-6) and ess_at(c + 2**-12) < 0.5 * k
    # the ranking of frequencies is kept (logits only scaled)
    assert torch.equal(torch.argsort(alpha), torch.argsort(alpha0))
    # already feasible: untouched
    before = critic.precision.detach().clone()
    assert critic.project_(freqs_sq, 0.5) == 1.0
    assert torch.equal(critic.precision.detach(), before)


def test_floor_stops_a_collapse_on_a_clean_release() -> None:
    """High ε: τ ≈ 0, the gate open. Without the floor the critic collapses onto a few
    frequencies (the Fashion-MNIST ε = 10 failure); with it α keeps ≥ k/2 effective ones."""
    k = 200
    freqs = draw_frequencies(k, 16, 2.0, seed=0)
    x, y = _BATCH
    fitted = batch_embedding(x, y, freqs, None, 3).detach()
    target = fitted + 0.05 * torch.randn(fitted.shape, generator=torch.Generator().manual_seed(2))
    free = _critic_run(target, freqs, 0.0, 400)
    floored = _critic_run(target, freqs, 0.0, 400, min_ess=0.5)
    assert 1 / float((free.double() ** 2).sum()) < 0.1 * k
    assert 1 / float((floored.double() ** 2).sum()) >= 0.5 * k * (1 - 1e-6)


def test_the_rule_maps_epsilon_and_n_to_settings_deterministically() -> None:
    def tau(epsilon: float, n: int) -> float:
        rel = _release(np.zeros((80, 3)), n=n, epsilon=epsilon)
        return critic_temperature(embedding_noise_std(rel), 3, 40, kl=1.0)

    assert tau(1.0, 1000) == tau(1.0, 1000)  # same public inputs, same setting
    assert tau(0.2, 1000) > tau(1.0, 1000) > tau(10.0, 1000)  # less noise, a freer critic
    assert tau(1.0, 1000) > tau(1.0, 10000)
    # τ = κ · 2σ_e²√C · √(2 ln k), σ_e = m·2/n: quadrupling n divides it by 16
    assert tau(1.0, 1000) / tau(1.0, 4000) == pytest.approx(16.0)
    assert critic_temperature(0.1, 3, 40, kl=0.0) == 0.0
    assert critic_temperature(0.1, 3, 40, kl=2.0) == pytest.approx(
        2 * 2 * 0.01 * math.sqrt(3) * math.sqrt(2 * math.log(40))
    )


def test_low_snr_rule_shortens_training_on_a_noisy_release_only(tmp_path) -> None:
    """``low_snr_steps`` applies below ``low_snr_ratio`` of the release's public gate ratio and
    nowhere else, and it is what training runs: the shortened run is exactly a run configured
    with that many steps."""
    k, c, n = 40, 3, 500
    sigma_e = embedding_noise_std(_release(np.zeros((2 * k, c)), n=n))
    tau1 = critic_temperature(sigma_e, c, k, kl=1.0)

    def at_ratio(r: float) -> Release:  # S/k = r·τ₁
        return _release(np.full((2 * k, c), math.sqrt(r * tau1 / (2 * c))), n=n)

    noisy, clean = at_ratio(3.0), at_ratio(50.0)
    assert gate_ratio(np.asarray(noisy["embedding"]), sigma_e) < 10
    assert gate_ratio(np.asarray(clean["embedding"]), sigma_e) > 10
    rule = _pearl(steps=12, low_snr_steps=4, low_snr_ratio=10.0)
    assert rule.training_steps(noisy) == 4 and rule.training_steps(clean) == 12
    assert rule.training_steps(noisy) == rule.training_steps(noisy)  # deterministic
    assert rule.critic_rule(noisy)["train/steps"] == 4.0
    assert _pearl(steps=12).training_steps(noisy) == 12  # off by default (null)
    assert _pearl(steps=12, low_snr_steps=4, low_snr_ratio=0.0).training_steps(noisy) == 12
    short = rule.train(noisy, SPEC, _ctx(tmp_path / "rule"))
    assert rule.diagnostics["train/steps"] == 4.0
    plain = _pearl(steps=4).train(noisy, SPEC, _ctx(tmp_path / "plain"))
    for a, b in zip(
        short.generator.state_dict().values(), plain.generator.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("low_snr_steps", 0),
        ("low_snr_steps", 1.5),
        ("low_snr_steps", True),
        ("low_snr_ratio", -1.0),
        ("low_snr_steps", "many"),
        ("low_snr_ratio", "ten"),
        ("low_snr_ratio", float("nan")),
    ],
)
def test_bad_low_snr_settings_are_refused(key: str, value) -> None:
    with pytest.raises(ConfigError, match=f"method.{key}"):
        _pearl(**{key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("critic_kl", -1.0),
        ("critic_kl", float("nan")),
        ("critic_gate", "inf"),
        ("critic_min_ess", 1.5),
        ("critic_min_ess", -0.1),
        ("critic_min_ess", float("nan")),
    ],
)
def test_bad_critic_settings_are_refused(key: str, value) -> None:
    with pytest.raises(ConfigError, match=f"method.{key}"):
        _pearl(**{key: float(value)})


def test_gate_opens_on_a_release_with_signal(tmp_path) -> None:
    k = 40
    freqs = draw_frequencies(k, 16, 2.0, seed=0)
    x, y = _BATCH
    value = batch_embedding(x, y, freqs, None, 3).detach().double().numpy()
    rel = _release(value, n=10**5)
    pearl = _pearl()
    assert pearl.critic_rule(rel)["critic/gate_open"] == 1.0
    assert isinstance(pearl.make_critic(SPEC, rel), FrequencyCritic)
    syn = pearl.train(rel, SPEC, _ctx(tmp_path))
    assert syn is not None and pearl.diagnostics["critic/tau"] > 0
    assert 1 <= pearl.diagnostics["critic/effective_frequencies"] <= k + 1e-6


def test_noise_std_under_add_remove_is_the_sums_over_the_noisy_count() -> None:
    from dpsynth.methods.oneshot import finish_add_remove

    k, c, n = 40, 3, 2000
    counts = np.array([700.0, 650.0, 650.0])
    rel = gaussian_release(
        [Statistic("embedding_sum", np.zeros((2 * k, c)), 1.0), Statistic("counts", counts, 1.0)],
        epsilon=1.0,
        delta=1e-5,
        neighbours="add_remove",
        joint_sensitivity=math.sqrt(2.0),
        rng=np.random.default_rng(0),
    )
    finish_add_remove(rel, with_counts=True)
    n_hat = float(np.clip(rel["counts"], 0, None).sum())
    assert abs(n_hat - n) < 50  # the noisy count (std ~5 at ε = 1)
    sum_std = rel.ledger.spends[-1].parts["embedding_sum"]
    assert embedding_noise_std(rel) == pytest.approx(sum_std / n_hat)
