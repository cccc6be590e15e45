"""Faithfulness of the one-shot methods (PEARL, DP-MERF) to their papers and to the privacy
boundary: the generator trainer reads the release only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from scipy.stats import multivariate_normal

from dpsynth.data.base import Dataset, DataSpec
from dpsynth.errors import ConfigError
from dpsynth.methods.base import PrivacySpec, RunContext, Synthesizer, flush_denormals
from dpsynth.methods.dpmerf import DPMERF
from dpsynth.methods.embedding import (
    batch_embedding,
    cf_discrepancy,
    class_embedding,
    class_proportions,
    draw_frequencies,
)
from dpsynth.methods.generators import ConvGenerator
from dpsynth.methods.oneshot import EmbeddingMatcher, discrepancy_ratio, generated_class_means
from dpsynth.methods.pearl import PEARL, FrequencyCritic, critic_weights


def _tiny_images(n: int = 60, seed: int = 0, balanced: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.random((n, 1, 4, 4)).astype(np.float32) * 0.3 + y[:, None, None, None] * 0.3
    spec = DataSpec("toy", "image", (1, 4, 4), 3, ("a", "b", "c"), balanced=balanced)
    return Dataset(spec, x, y.astype(np.int64), x[:12].copy(), y[:12].astype(np.int64))


def _ctx(tmp_path, seed: int = 0) -> RunContext:
    return RunContext(
        seed=seed,
        run_dir=tmp_path,
        dataset_options={"sigma0_sq": 2.0},
        progress=False,
        trainer={"accelerator": "cpu"},
    )


def test_alpha_is_the_normalised_gaussian_density_ratio() -> None:
    # α_i ∝ N(t_i; 0, diag(1/s)) / N(t_i; 0, I/σ0²), normalised over the k frequencies.
    k, d, sigma0_sq = 50, 4, 3.0
    freqs = draw_frequencies(k, d, sigma0_sq, seed=0).double()
    s = torch.tensor([1.0, 2.5, 3.0, 6.0], dtype=torch.float64)
    alpha = critic_weights(freqs, s, sigma0_sq).numpy()
    target = multivariate_normal(np.zeros(d), np.diag(1 / s.numpy())).pdf(freqs.numpy())
    proposal = multivariate_normal(np.zeros(d), np.eye(d) / sigma0_sq).pdf(freqs.numpy())
    ratio = target / proposal
    np.testing.assert_allclose(alpha, ratio / ratio.sum(), atol=1e-6, rtol=0)


def test_critic_at_init_is_uniform() -> None:
    freqs = draw_frequencies(30, 6, 5.0, seed=1)
    alpha = FrequencyCritic(6, 5.0)(freqs**2)
    torch.testing.assert_close(alpha, torch.full((30,), 1 / 30))


def _matcher(
    critic: torch.nn.Module | None,
    gen: torch.nn.Module | None = None,
    k: int = 20,
    **options: Any,
) -> EmbeddingMatcher:
    """A matcher over a random 3-class target; ``gen`` None: unused (cf_loss called directly)."""
    torch.manual_seed(0)
    return EmbeddingMatcher(
        gen if gen is not None else torch.nn.Sequential(),
        draw_frequencies(k, 16, 2.0, seed=0),
        torch.randn(2 * k, 3) * 0.1,
        torch.full((3,), 1 / 3),
        code_dim=2,
        batch_size=6,
        lr=0.01,
        max_steps=options.pop("max_steps", 1),
        scheduler="constant",
        loss_scale=1.0,
        critic=critic,
        **options,
    )


def test_no_critic_gives_the_unweighted_cf_distance() -> None:
    m = _matcher(None)
    x, y = torch.rand(6, 16), torch.arange(6) % 3
    emb = batch_embedding(x, y, m.freqs, m.class_weights)
    unweighted = ((m.target - emb) ** 2).sum()  # DP-MERF's ‖Ẽ − E_G‖²_F
    torch.testing.assert_close(m.cf_loss(x, y, m.weights()), unweighted)


def test_critic_at_init_equals_no_critic_and_moves_weights() -> None:
    with_critic = _matcher(FrequencyCritic(16, 2.0))
    without = _matcher(None)
    x, y = torch.rand(6, 16), torch.arange(6) % 3
    torch.testing.assert_close(
        with_critic.cf_loss(x, y, with_critic.weights()), without.cf_loss(x, y, without.weights())
    )
    # one ascent step of the critic increases the weighted loss
    opt = torch.optim.Adam(with_critic.critic.parameters(), lr=0.05)
    before = with_critic.cf_loss(x, y, with_critic.weights()).item()
    for _ in range(5):
        opt.zero_grad()
        (-with_critic.cf_loss(x, y, with_critic.weights())).backward()
        opt.step()
    assert with_critic.cf_loss(x, y, with_critic.weights()).item() > before


def test_class_counts_policy_is_public() -> None:
    balanced = _tiny_images().spec
    imbalanced = _tiny_images(balanced=False).spec
    assert not PEARL(class_counts="auto").release_counts(balanced)
    assert PEARL(class_counts="auto").release_counts(imbalanced)
    assert PEARL(class_counts="release").release_counts(balanced)
    assert not PEARL(class_counts="uniform").release_counts(imbalanced)
    with pytest.raises(ConfigError, match="class_counts"):
        PEARL(class_counts="sometimes")


def test_the_data_matches_its_own_embedding_only_under_its_class_proportions() -> None:
    """Why proportions are released unless public (MNIST's are not): the released column c is
    p_c·CF_c, so with the uniform prior the generator's zero-loss point is not the data. The
    real records, embedded as a generated batch, reproduce the exact statistic with the true
    p_c and miss it by |1/(C·p_c) − 1| per class column under 1/C."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), [50, 30, 20])  # (100,) p = 0.5 / 0.3 / 0.2
    x = (rng.random((100, 6)) + y[:, None]).astype(np.float32)  # (100, 6)
    freqs = draw_frequencies(64, 6, 1.0, seed=0)  # (64, 6)
    exact = torch.as_tensor(class_embedding(x, y, freqs, 3)).float()  # (128, 3)
    p = class_proportions(y, 3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    true_w = batch_embedding(xt, yt, freqs, torch.as_tensor(p, dtype=torch.float32))
    uniform = batch_embedding(xt, yt, freqs, torch.full((3,), 1 / 3))
    torch.testing.assert_close(true_w, exact, rtol=1e-4, atol=1e-6)
    rel = (uniform - exact).norm(dim=0) / exact.norm(dim=0)  # (3,)
    np.testing.assert_allclose(rel.numpy(), np.abs(1 / (3 * p) - 1), rtol=1e-4)


@pytest.mark.parametrize(
    ("policy", "accountant", "multiplier", "joint"),
    [
        ("uniform", "rdp", 4.05, 1.0),  # the embedding alone: the papers' σ at ε = 1
        ("uniform", "pld", 3.73, 1.0),  # exact accounting: ~8% less noise
        ("release", "rdp", 4.05, math.sqrt(1.5)),  # joint with proportions: √1.5, not √2
        ("release", "pld", 3.73, math.sqrt(1.5)),
    ],
)
def test_release_calibrates_one_joint_gaussian(
    tmp_path, policy: str, accountant: str, multiplier: float, joint: float
) -> None:
    data = _tiny_images()
    n = data.n_train
    rel = PEARL(num_features=8, class_counts=policy).release(
        data, PrivacySpec(1.0, 1e-5, accountant), _ctx(tmp_path)
    )
    (spend,) = rel.ledger.spends
    assert spend.noise_multiplier == pytest.approx(multiplier, rel=0.01)
    std_embedding = multiplier * joint * 2 / n
    if policy == "release":
        assert spend.sensitivity == pytest.approx(joint)
        assert spend.parts["embedding"] == pytest.approx(std_embedding, rel=0.01)
        assert spend.parts["proportions"] == pytest.approx(multiplier * joint * 2**0.5 / n, 0.01)
        # two separate releases (the old calibration) put 5.72·2/n on the embedding at RDP
        if accountant == "rdp":
            assert spend.parts["embedding"] < 0.87 * 5.72 * 2 / n
    else:
        assert spend.sensitivity == pytest.approx(2 / n)
        assert spend.noise_std == pytest.approx(std_embedding, rel=0.01)
    assert rel.ledger.epsilon_spent <= 1.0
    assert rel.ledger.epsilon_exact <= 1.0 + 1e-6
    assert rel.ledger.neighbours == "replace_one" and rel.ledger.accountant == accountant


@pytest.mark.parametrize("method_cls", [PEARL, DPMERF])
def test_training_reads_only_the_release(tmp_path, method_cls) -> None:
    # Replace the private data by garbage after the release: training must not change.
    data = _tiny_images()
    method = method_cls(num_features=16, steps=12, batch_size=12, checkpoint_every=0)
    rel = method.release(data, PrivacySpec(1.0, 1e-5), _ctx(tmp_path))
    first = method.train(rel, data.spec, _ctx(tmp_path / "a"))
    data.train_x[:] = np.nan
    data.train_y[:] = -1
    second = method.train(rel, data.spec, _ctx(tmp_path / "b"))
    for p, q in zip(first.generator.parameters(), second.generator.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    x, y = second.sample(30, seed=0)
    assert x.shape == (30, 1, 4, 4) and np.isfinite(x).all()
    assert np.bincount(y).tolist() == [10, 10, 10]


def test_cached_release_reused_with_one_spend(tmp_path) -> None:
    from dpsynth.privacy.release import ReleaseCache

    data = _tiny_images()
    cache = ReleaseCache(tmp_path / "cache")
    method = PEARL(num_features=8)
    runs = []
    for name, eps in (("a", 1.0), ("b", 1.0), ("c", 2.0)):
        ctx = _ctx(tmp_path / name)
        ctx.cache = cache
        runs.append(method.release(data, PrivacySpec(eps, 1e-5), ctx))
    a, b, c = runs
    assert not a.ledger.cache_hit and b.ledger.cache_hit
    assert len(b.ledger.spends) == 1
    np.testing.assert_array_equal(a["embedding"], b["embedding"])
    assert not c.ledger.cache_hit  # another budget → another release


def test_generator_computes_the_plain_upsample_conv_stack() -> None:
    # The CPU path fuses each upsampling into its convolution; the function must be the stock
    # Upsample → Conv2d stack's, with the same parameters (state-dict keys unchanged).
    torch.manual_seed(0)
    gen = ConvGenerator((3, 8, 12), 4, code_dim=5, hidden=16, base_channels=4, mid_channels=3)
    gen.eval()
    code, labels = torch.randn(6, 5), torch.arange(6) % 4
    fused = gen(code, labels)  # (6, 3, 8, 12)
    h = gen.fc(torch.cat([code, torch.nn.functional.one_hot(labels, 4).float()], 1))
    up = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    plain = torch.nn.Sequential(
        up, torch.nn.Conv2d(4, 3, 5, padding=2), torch.nn.ReLU(),
        up, torch.nn.Conv2d(3, 3, 5, padding=2), torch.nn.Sigmoid(),
    )  # fmt: skip
    plain.load_state_dict(gen.conv.state_dict())
    torch.testing.assert_close(fused, plain(h.view(-1, *gen.base)), rtol=1e-5, atol=1e-6)
    assert {k for k in gen.state_dict() if k.startswith("conv.")} == {
        "conv.1.weight",
        "conv.1.bias",
        "conv.4.weight",
        "conv.4.bias",
    }


def test_sampling_builds_no_autograd_graph() -> None:
    gen = ConvGenerator((1, 4, 4), 3, code_dim=2, hidden=8, base_channels=2, mid_channels=2)
    grad_modes: list[bool] = []
    gen.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    spec = DataSpec("toy", "image", (1, 4, 4), 3, ("a", "b", "c"))
    x, y = Synthesizer(gen, 2, np.full(3, 1 / 3), spec).sample(7, seed=0, batch_size=3)
    assert x.shape == (7, 1, 4, 4) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [3, 2, 2]
    assert grad_modes == [False, False, False]  # three batches, none recording a graph


def test_critic_batch_is_drawn_from_the_eval_mode_generator(tmp_path) -> None:
    # As the authors' script: generator steps in train mode, the critic's fresh batch from the
    # eval-mode generator (BatchNorm on running statistics), which it must not update.
    from dpsynth.methods.oneshot import fit

    torch.manual_seed(0)
    gen = ConvGenerator((1, 4, 4), 3, code_dim=2, hidden=8, base_channels=2, mid_channels=2)
    modes: list[tuple[bool, bool]] = []  # (training, grad enabled) per generator call
    bn = gen.fc[1]
    stats: list[torch.Tensor] = []

    def hook(module, *_):  # noqa: ANN001, ANN202
        modes.append((module.training, torch.is_grad_enabled()))
        stats.append(bn.running_mean.clone())

    gen.register_forward_hook(hook)
    matcher = _matcher(FrequencyCritic(16, 2.0), gen, k=10, max_steps=4, critic_every=2)
    fit(matcher, 4, _ctx(tmp_path), checkpoint_every=0)  # 4 generator steps, 2 critic steps
    train, critic = (True, True), (False, False)
    assert modes == [train, train, critic, train, train, critic]
    torch.testing.assert_close(stats[2], stats[1])  # the critic's batch left BN stats alone


@pytest.mark.parametrize(("size", "kernel"), [((4, 4), 5), ((3, 5), 3), ((7, 2), 5)])
def test_fused_upsample_conv_matches_upsample_then_conv2d_and_its_gradients(
    size: tuple[int, int], kernel: int
) -> None:
    from dpsynth.methods.generators import UpsampleConv2d

    torch.manual_seed(0)
    fused = UpsampleConv2d(3, 2, kernel).double()
    plain = torch.nn.Conv2d(3, 2, kernel, padding=kernel // 2).double()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 3, *size, dtype=torch.float64, requires_grad=True)
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    out_f, out_p = fused(x), plain(up)  # (4, 2, 2h, 2w)
    torch.testing.assert_close(out_f, out_p)
    g = torch.randn_like(out_p)
    grads_f = torch.autograd.grad(out_f, [x, *fused.parameters()], g)
    grads_p = torch.autograd.grad(out_p, [x, *plain.parameters()], g)
    for a, b in zip(grads_f, grads_p, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda inp: fused(inp), (x,))


def test_the_training_loss_reaches_the_logger_on_its_logging_steps(tmp_path) -> None:
    # The loss is logged only on the steps a logger writes (self.log is slow on CPU); the
    # logger must still receive it on exactly those steps.
    from pytorch_lightning.loggers import CSVLogger

    from dpsynth.methods.oneshot import fit

    gen = ConvGenerator((1, 4, 4), 3, code_dim=2, hidden=8, base_channels=2, mid_channels=2)
    matcher = _matcher(None, gen, k=10, max_steps=6)
    ctx = _ctx(tmp_path)
    ctx.logger = CSVLogger(tmp_path, name="log")
    ctx.trainer = {**ctx.trainer, "log_every_n_steps": 2}
    fit(matcher, 6, ctx, checkpoint_every=0)
    frame = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    logged = frame.dropna(subset=["train/loss"])
    assert logged["step"].tolist() == [1, 3, 5]  # steps 2, 4, 6 (Lightning counts from 0)
    assert np.isfinite(logged["train/loss"]).all()


def test_fused_upsample_conv_trains_after_sampling_in_inference_mode() -> None:
    from dpsynth.methods.generators import UpsampleConv2d

    layer = UpsampleConv2d(2, 1, 3)
    x = torch.randn(3, 2, 4, 4)
    with torch.inference_mode():
        sampled = layer(x)  # builds (and caches) the upsampling matrices
    out = layer(x)
    out.sum().backward()  # the cached matrices are not inference tensors
    torch.testing.assert_close(out.detach(), sampled)
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_fused_upsample_conv_refuses_an_even_kernel() -> None:
    from dpsynth.methods.generators import UpsampleConv2d

    with pytest.raises(ValueError, match="odd kernel size, got 4"):
        UpsampleConv2d(3, 2, 4)


def test_cf_features_and_their_hand_written_gradient_match_the_formula() -> None:
    from dpsynth.methods.embedding import cf_features

    torch.manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    freqs = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    proj = x @ freqs.T
    formula = torch.cat([torch.cos(proj), torch.sin(proj)], 1) / math.sqrt(7)  # (5, 14)
    z = cf_features(x, freqs)
    torch.testing.assert_close(z, formula)
    assert torch.allclose(z.norm(dim=1), torch.ones(5, dtype=torch.float64))  # unit norm
    g = torch.randn_like(z)
    ours, reference = (
        torch.autograd.grad(z, [x, freqs], g),
        torch.autograd.grad(formula, [x, freqs], g),
    )
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(cf_features, (x, freqs))


def test_balanced_batch_embedding_is_the_weighted_class_mean_and_its_gradient() -> None:
    # Class c's column is w_c × mean_{j: y_j = c} z(x_j); a class absent from the batch gives a
    # zero column (its count is clamped to 1), and the gradient is the direct formula's.
    freqs = draw_frequencies(7, 5, 2.0, seed=0).double()
    x = torch.rand(8, 5, dtype=torch.float64, requires_grad=True)
    y, w = torch.tensor([0, 2, 2, 0, 0, 2, 2, 2]), torch.tensor([0.5, 0.2, 0.3]).double()
    z = torch.cat([torch.cos(x @ freqs.T), torch.sin(x @ freqs.T)], 1) / math.sqrt(7)  # (8, 14)
    zero = torch.zeros(14, dtype=torch.float64)
    cols = [w[c] * z[y == c].mean(0) if (y == c).any() else zero for c in range(3)]
    direct = torch.stack(cols, 1)  # (14, 3)
    ours = batch_embedding(x, y, freqs, w)
    torch.testing.assert_close(ours, direct)
    assert torch.all(ours[:, 1] == 0)
    g = torch.randn(14, 3, dtype=torch.float64)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(direct, x, g)[0]
    )


@pytest.mark.parametrize("weights", [torch.tensor([0.5, 0.2, 0.3]).double(), None])
def test_cf_discrepancy_is_the_composed_loss_with_its_gradient(weights) -> None:
    # The fused node gives the per-frequency distance of batch_embedding's composition, and the
    # same gradients in x and in the frequencies (class 1 absent: a zero column); gradcheck
    # validates its hand-written backward against finite differences.
    torch.manual_seed(1)
    freqs = (draw_frequencies(7, 5, 2.0, seed=0).double()).requires_grad_(True)
    x = torch.rand(8, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 2, 0, 0, 2, 2, 2])
    target = torch.randn(14, 3, dtype=torch.float64) * 0.1  # (2k, C)
    diff = target - batch_embedding(x, y, freqs, weights, 3)
    composed = (diff[:7] ** 2 + diff[7:] ** 2).sum(dim=1)  # (k,)
    ours = cf_discrepancy(x, y, freqs, target, weights)
    torch.testing.assert_close(ours, composed)
    g = torch.rand(7, dtype=torch.float64)
    for a, b in zip(
        torch.autograd.grad(ours, [x, freqs], g),
        torch.autograd.grad(composed, [x, freqs], g),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(
        lambda xx, ff: cf_discrepancy(xx, y, ff, target, weights), (x, freqs)
    )
    with pytest.raises(NotImplementedError, match="no gradient for row_scale or target"):
        cf_discrepancy(x, y, freqs, target.clone().requires_grad_(True), weights).sum().backward()


@pytest.mark.parametrize("weights", [torch.tensor([0.2, 0.3, 0.5]).double(), None])
def test_unbiased_cf_discrepancy_is_the_u_statistic(weights) -> None:
    # Against a direct U-statistic over the batch's pairs of distinct rows: per frequency and
    # class, |E_c|² − 2 Re⟨Ẽ_c, E_c⟩ + s_c² Σ_{j≠l} z_j·z_l with s_c the row scale (w_c / n_c, or
    # 1/B for the plain batch mean); a class with one row (class 1 here) keeps the plug-in
    # term. Its hand-written backward passes gradcheck.
    torch.manual_seed(2)
    k = 7
    freqs = draw_frequencies(k, 5, 2.0, seed=0).double()
    x = torch.rand(9, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 2, 0, 1, 2, 2, 0, 2])
    target = torch.randn(2 * k, 3, dtype=torch.float64) * 0.1  # (2k, C)
    z = torch.cat([torch.cos(x @ freqs.T), torch.sin(x @ freqs.T)], 1) / math.sqrt(k)  # (9, 2k)
    direct = torch.zeros(k, dtype=torch.float64)
    for c in range(3):
        rows = z[y == c]  # (n_c, 2k)
        n = rows.shape[0]
        s = weights[c] / n if weights is not None else 1.0 / 9
        # Σ_{j≠l} z_j z_l: the squared sum less its j = l terms
        pairs = rows.sum(0) ** 2 - (rows**2).sum(0) if n >= 2 else rows.sum(0) ** 2
        scale = s**2 * (n / (n - 1) if n >= 2 else 1.0)  # U: n²/(n(n − 1)) of the pair sum
        self_term = scale * pairs  # (2k,)
        per = target[:, c] ** 2 - 2 * s * target[:, c] * rows.sum(0) + self_term  # (2k,)
        direct = direct + per[:k] + per[k:]
    ours = cf_discrepancy(x, y, freqs, target, weights, unbiased=True)
    torch.testing.assert_close(ours, direct)
    # the plug-in value exceeds it by the batch means' variance term (here, for 2+ rows)
    plug_in = cf_discrepancy(x, y, freqs, target, weights)
    assert torch.all(plug_in > ours)
    g = torch.rand(k, dtype=torch.float64)
    torch.testing.assert_close(
        torch.autograd.grad(ours, x, g, retain_graph=True)[0],
        torch.autograd.grad(direct, x, g)[0],
    )
    assert torch.autograd.gradcheck(
        lambda xx: cf_discrepancy(xx, y, freqs, target, weights, unbiased=True), (x,)
    )


def test_unbiased_cf_discrepancy_has_the_population_mean() -> None:
    # Batches drawn from a fixed pool per class: the U-statistic's mean over draws is the pool's
    # own distance |E − w·φ|² per frequency (to Monte-Carlo error), the plug-in one's is that
    # plus the batch means' variance, which rewards classes whose samples are all alike.
    gen = torch.Generator().manual_seed(3)
    k, d, n = 20, 4, 4
    freqs = draw_frequencies(k, d, 1.0, seed=1).double()
    pool = torch.randn(3, 30, d, generator=gen, dtype=torch.float64)  # (C, 30, d)
    pool += torch.arange(3, dtype=torch.float64)[:, None, None]
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    phi = torch.stack(
        [
            batch_embedding(pool[c], torch.zeros(30, dtype=torch.long), freqs, None, 1)[:, 0]
            for c in range(3)
        ],
        1,
    )  # (2k, C)
    target = phi * w + 0.01 * torch.randn(2 * k, 3, generator=gen, dtype=torch.float64)
    diff = target - phi * w
    exact = (diff[:k] ** 2 + diff[k:] ** 2).sum(1)  # (k,)
    y = torch.arange(3 * n) % 3
    draws = 4000
    idx = torch.randint(0, 30, (draws, 3 * n), generator=gen)
    u = torch.zeros(k, dtype=torch.float64)
    v = torch.zeros(k, dtype=torch.float64)
    for t in range(draws):
        xb = pool[y, idx[t]]  # (3n, d)
        u += cf_discrepancy(xb, y, freqs, target, w, unbiased=True) / draws
        v += cf_discrepancy(xb, y, freqs, target, w) / draws
    assert abs(float(u.sum() / exact.sum()) - 1) < 0.03
    assert float(v.sum() / exact.sum()) > 3  # the plug-in's bias (~7× here), far outside it


def test_random_label_sampling_uses_the_plain_batch_mean() -> None:
    freqs = draw_frequencies(7, 5, 2.0, seed=0)
    x, y = torch.rand(9, 5), torch.tensor([0, 0, 1, 2, 2, 2, 0, 1, 2])
    z = torch.cat([torch.cos(x @ freqs.T), torch.sin(x @ freqs.T)], 1) / math.sqrt(7)  # (9, 14)
    direct = sum(torch.outer(z[j], torch.nn.functional.one_hot(y[j], 3).float()) for j in range(9))
    torch.testing.assert_close(batch_embedding(x, y, freqs, None, 3), direct / 9)

    class Blank(torch.nn.Module):
        def forward(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(labels), 16)

    m = _matcher(None)
    m.label_sampling, m.batch_size, m.generator = "random", 3000, Blank()
    _, labels = m.generate()
    assert np.allclose(np.bincount(labels.numpy(), minlength=3) / 3000, 1 / 3, atol=0.04)


def test_flush_denormals_is_scoped_to_post_processing() -> None:
    """Subnormals are flushed to zero inside the context (where the generator trains and
    samples) and computed exactly again after it, so nothing else in the process changes."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32
    assert (tiny * 1.0).item() != 0.0
    with flush_denormals():
        flushed = (tiny * 1.0).item()
    assert (tiny * 1.0).item() != 0.0
    if torch.set_flush_denormal(False):  # True where the CPU has flush-to-zero (x86 SSE3)
        assert flushed == 0.0


_FLUSHED_CHILD = """
import json, sys
import numpy as np, torch
from dpsynth.methods.base import flush_denormals_process_wide
flushed = flush_denormals_process_wide()  # first thing, as the CLI does
from dpsynth.methods.embedding import class_embedding, draw_frequencies
from dpsynth.privacy.accounting import calibrate_noise_multiplier, calibrate_sgd
tiny = torch.full((1 << 20,), 1e-39)  # subnormal float32; a parallel op runs on every worker
rng = np.random.default_rng(0)
x, y = rng.random((300, 16)).astype(np.float32), rng.integers(0, 3, 300)
print(json.dumps({
    "supported": flushed,
    "sum": float((tiny * 1.0).sum()),
    "sigma": calibrate_noise_multiplier(epsilon=1.0, delta=1e-5, releases=2),
    "sgd": calibrate_sgd(epsilon=1.0, delta=1e-5, sample_rate=0.01, steps=200),
    "embedding": class_embedding(x, y, draw_frequencies(32, 16, 2.0, 0), 3).tolist(),
}))
"""


def test_process_wide_flush_reaches_workers_and_leaves_privacy_numbers_identical() -> None:
    """The CLI's process-wide FTZ/DAZ reaches the OpenMP workers (a parallel sum of subnormals
    is 0), and the calibrated σ (one-shot and DP-SGD) and an exact release statistic are
    bit-identical to this unflushed process's: the switch only ever touches subnormals."""
    import json
    import subprocess
    import sys

    from dpsynth.methods.embedding import class_embedding
    from dpsynth.privacy.accounting import calibrate_noise_multiplier, calibrate_sgd

    out = subprocess.run(
        [sys.executable, "-c", _FLUSHED_CHILD], capture_output=True, text=True, check=True
    )
    child = json.loads(out.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 16)).astype(np.float32), rng.integers(0, 3, 300)
    assert child["sigma"] == calibrate_noise_multiplier(epsilon=1.0, delta=1e-5, releases=2)
    assert child["sgd"] == calibrate_sgd(epsilon=1.0, delta=1e-5, sample_rate=0.01, steps=200)
    here = class_embedding(x, y, draw_frequencies(32, 16, 2.0, 0), 3)
    assert np.array_equal(np.asarray(child["embedding"]), here)
    assert float((torch.full((1 << 20,), 1e-39) * 1.0).sum()) > 0  # this process: unflushed
    if child["supported"]:
        assert child["sum"] == 0.0


def test_generator_ema_is_sampled_and_leaves_training_unchanged(tmp_path) -> None:
    # The weight average is post-processing of the trajectory: the trained generator is the
    # same with or without it, and what is sampled is the average, built by the warmed-up
    # recursion θ_ema ← d θ_ema + (1 − d) θ, d = min(g_ema, (1 + t)/(10 + t)).
    data = _tiny_images()
    plain = PEARL(num_features=16, steps=6, batch_size=12, checkpoint_every=0)
    rel = plain.release(data, PrivacySpec(1.0, 1e-5), _ctx(tmp_path))
    off = plain.train(rel, data.spec, _ctx(tmp_path / "off"))
    avg = PEARL(num_features=16, steps=6, batch_size=12, checkpoint_every=0, g_ema=0.5)
    trajectory: list[list[torch.Tensor]] = []
    original = EmbeddingMatcher.training_step

    def recording_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        out = original(self, batch, batch_idx)
        trajectory.append([p.detach().clone() for p in self.generator.parameters()])
        return out

    EmbeddingMatcher.training_step = recording_step  # type: ignore[method-assign]
    try:
        on = avg.train(rel, data.spec, _ctx(tmp_path / "on"))
    finally:
        EmbeddingMatcher.training_step = original  # type: ignore[method-assign]
    assert len(trajectory) == 6
    for p, q in zip(trajectory[-1], off.generator.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # training itself is unchanged
    pl.seed_everything(0, verbose=False)  # as train() seeds before building the generator
    init = avg.make_generator(data.spec)[0]
    expected = [p.detach().clone() for p in init.parameters()]
    for t, params in enumerate(trajectory):
        d = min(0.5, (1 + t + 1) / (10 + t + 1))  # Lightning's global step after step t
        expected = [d * e + (1 - d) * p for e, p in zip(expected, params, strict=True)]
    for e, p in zip(expected, on.generator.parameters(), strict=True):
        torch.testing.assert_close(p, e)
    assert not any(p.requires_grad for p in on.generator.parameters())  # the EMA copy
    x, _ = on.sample(30, seed=0)
    assert np.isfinite(x).all()


def test_unbiased_loss_reaches_both_players_and_changes_the_generator(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # method.unbiased_loss is what every loss of the run computes, the generator's and the
    # critic's (both call cf_loss), and it trains another generator on the same release.
    import dpsynth.methods.oneshot as oneshot

    data = _tiny_images()
    opts = {"num_features": 16, "steps": 6, "batch_size": 12, "checkpoint_every": 0}
    opts |= {"critic_every": 2, "critic_gate": None}  # no gate: the critic steps on any release
    plain = PEARL(**opts)
    rel = plain.release(data, PrivacySpec(1.0, 1e-5), _ctx(tmp_path))
    off = plain.train(rel, data.spec, _ctx(tmp_path / "off"))
    seen: list[bool] = []
    original = oneshot.cf_discrepancy

    def recording(*args, unbiased: bool = False):  # type: ignore[no-untyped-def]
        seen.append(unbiased)
        return original(*args, unbiased=unbiased)

    monkeypatch.setattr(oneshot, "cf_discrepancy", recording)
    method = PEARL(**opts, unbiased_loss=True)
    on = method.train(rel, data.spec, _ctx(tmp_path / "on"))
    assert len(seen) == 6 + 3 and all(seen)  # 6 generator steps, 3 critic steps
    moved = [
        not torch.equal(p, q)
        for p, q in zip(on.generator.parameters(), off.generator.parameters(), strict=True)
    ]
    assert any(moved)
    with pytest.raises(ConfigError, match=r"method.unbiased_loss: got 1; allowed: true"):
        PEARL(unbiased_loss=1)  # type: ignore[arg-type]


def test_generator_ema_outside_its_range_is_refused() -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=r"method.g_ema: got .*0 ≤ g_ema < 1"):
            PEARL(g_ema=bad)


class _Constant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.value.expand(code.shape[0], 1, 2, 2) + 0 * labels[:, None, None, None]


def test_mixture_generator_draws_row_r_from_member_r_mod_m() -> None:
    from dpsynth.methods.generators import MixtureGenerator

    mix = MixtureGenerator([_Constant(0.0), _Constant(1.0), _Constant(2.0)])
    out = mix(torch.zeros(7, 3), torch.arange(7) % 2)  # (7, 1, 2, 2)
    assert out.shape == (7, 1, 2, 2)
    assert out[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert mix(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))[:, 0, 0, 0].tolist() == [0, 1]


def test_ensemble_trains_members_on_one_release_and_member_0_is_the_single_run(tmp_path) -> None:
    from dpsynth.methods.generators import MixtureGenerator

    data = _tiny_images()
    single = PEARL(num_features=16, steps=6, batch_size=12, checkpoint_every=3)
    rel = single.release(data, PrivacySpec(1.0, 1e-5), _ctx(tmp_path))
    one = single.train(rel, data.spec, _ctx(tmp_path / "one"))
    three = PEARL(num_features=16, steps=6, batch_size=12, checkpoint_every=3, ensemble=3)
    ctx = _ctx(tmp_path / "three")
    synth = three.train(rel, data.spec, ctx)
    assert isinstance(synth.generator, MixtureGenerator) and len(synth.generator.members) == 3
    members = synth.generator.members
    for p, q in zip(members[0].parameters(), one.generator.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # member 0: the single-generator run itself
    for a, b in ((0, 1), (1, 2)):  # different seeds: different generators
        assert any(
            not torch.equal(p, q)
            for p, q in zip(members[a].parameters(), members[b].parameters(), strict=True)
        )
    for j in (1, 2):  # each further member keeps its own checkpoints, for a resume
        assert (
            tmp_path / "three" / "ensemble" / f"member{j}" / "checkpoints" / "last.ckpt"
        ).exists()
    assert three.diagnostics["ensemble/members"] == 3.0
    # The mixture's class means average the members': it is at most their mean distance.
    mix, mean = (three.diagnostics[f"fit/discrepancy_ratio{s}"] for s in ("_mixture", ""))
    assert 0 < mix <= mean * 1.05 and "fit/discrepancy_ratio_mixture" not in single.diagnostics
    assert three.diagnostics["critic/effective_frequencies"] <= 16
    x, y = synth.sample(30, seed=0)
    assert x.shape == (30, 1, 4, 4) and np.isfinite(x).all()
    assert np.bincount(y).tolist() == [10, 10, 10]
    resumed = _ctx(tmp_path / "three")
    again = three.train(rel, data.spec, resumed)  # a resume: every member from its checkpoint
    assert resumed.resumed_from_step == 6
    for p, q in zip(again.generator.parameters(), synth.generator.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_ensemble_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match=r"method.ensemble: got .*integer ≥ 1"):
            PEARL(ensemble=bad)


class _GaussianClasses(torch.nn.Module):
    """Class c: x ~ N(μ_c, s² I), drawn from the code (code_dim = d): a generator whose
    class-conditional characteristic function is known in closed form."""

    def __init__(self, mu: torch.Tensor, s: float) -> None:
        super().__init__()
        self.register_buffer("mu", mu)  # (C, d)
        self.s = s

    def forward(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.mu[labels] + self.s * code  # (B, d)


def _gaussian_embedding(mu: torch.Tensor, s: float, freqs: torch.Tensor) -> np.ndarray:
    """Exact E z(x) per class for x ~ N(μ_c, s² I): [cos(Tμ); sin(Tμ)] e^{−s²‖t‖²/2} / √k."""
    k = freqs.shape[0]
    damp = torch.exp(-0.5 * s**2 * (freqs.double() ** 2).sum(1))  # (k,)
    proj = mu.double() @ freqs.double().T  # (C, k)
    z = torch.cat([torch.cos(proj) * damp, torch.sin(proj) * damp], dim=1) / math.sqrt(k)
    return z.T.numpy()  # (2k, C)


def test_discrepancy_ratio_is_one_for_the_true_distribution_and_above_for_a_wrong_one() -> None:
    """The fit diagnostic (Morozov's discrepancy principle): a generator that *is* the data
    distribution sits at the release's noise floor (ratio ≈ 1, sampling variance removed);
    one that misses it sits above. σ_e is small here, so the sampling term (≈ 40% of the
    floor at 500 draws per label) must be subtracted for the first to hold."""
    torch.manual_seed(0)
    c, d, k, s, noise_std = 3, 4, 300, 1.0, 0.001
    mu = torch.randn(c, d)  # (C, d)
    freqs = torch.randn(k, d)  # (k, d)
    weights = np.array([0.5, 0.3, 0.2])
    exact = _gaussian_embedding(mu, s, freqs) * weights[None, :]  # (2k, C)
    rng = np.random.default_rng(0)
    ratios = []
    for rep in range(4):  # four releases of the same statistic
        target = exact + rng.normal(0.0, noise_std, exact.shape)
        means, var = generated_class_means(_GaussianClasses(mu, s), d, freqs, c, 500, seed=rep)
        assert means.shape == (2 * k, c) and var.shape == (c,)
        ratios.append(discrepancy_ratio(target, means, var, weights, noise_std))
        raw = discrepancy_ratio(target, means, np.zeros(c), weights, noise_std)
        assert raw > ratios[-1] + 0.1  # the sampling variance is a real part of the residual
    assert abs(np.mean(ratios) - 1.0) < 0.08, ratios  # N = 1,800 entries: sd √(2/N) ≈ 0.03
    # A generator 1 sd off in every coordinate: far above the floor.
    wrong = _GaussianClasses(mu + 1.0, s)
    means, var = generated_class_means(wrong, d, freqs, c, 500, seed=9)
    assert discrepancy_ratio(target, means, var, weights, noise_std) > 5


def test_sigma0_scale_multiplies_the_frequency_scale_before_the_release(tmp_path) -> None:
    """``sigma0_scale`` is a public multiple of σ0² (here the context's constant 2.0): the
    release's frequencies are drawn at the scaled σ0², training draws the same ones from the
    release's public record, and only a scale ≠ 1 enters the cache key (older releases keep
    theirs)."""
    data = _tiny_images()
    plain = PEARL(num_features=16, steps=2, batch_size=12)
    half = PEARL(num_features=16, steps=2, batch_size=12, sigma0_scale=0.5)
    assert "sigma0_scale" not in plain.public_params(data.spec, _ctx(tmp_path))
    assert half.public_params(data.spec, _ctx(tmp_path))["sigma0_scale"] == 0.5
    budget = PrivacySpec(10_000.0, 1e-5)  # noise far below the embeddings' differences
    rel_plain = plain.release(data, budget, _ctx(tmp_path / "a"))
    rel_half = half.release(data, budget, _ctx(tmp_path / "b"))
    assert rel_plain.public["sigma0_sq"] == 2.0 and rel_half.public["sigma0_sq"] == 1.0
    # The same public frequency draw, at half the variance scale: T = randn / σ0.
    freqs_plain = draw_frequencies(16, data.spec.dim, 2.0, 0)
    freqs_half = draw_frequencies(16, data.spec.dim, 1.0, 0)
    torch.testing.assert_close(freqs_half, freqs_plain * math.sqrt(2.0))
    x = data.train_x.reshape(len(data.train_x), -1)
    exact_half = class_embedding(x, data.train_y, freqs_half, 3)  # (2k, C)
    exact_plain = class_embedding(x, data.train_y, freqs_plain, 3)
    assert np.abs(exact_half - exact_plain).max() > 0.05  # the two draws' embeddings differ
    np.testing.assert_allclose(rel_half["embedding"], exact_half, atol=0.01, rtol=0)
    np.testing.assert_allclose(rel_plain["embedding"], exact_plain, atol=0.01, rtol=0)
    synth = half.train(rel_half, data.spec, _ctx(tmp_path / "b"))
    assert np.isfinite(synth.sample(6, seed=0)[0]).all()


def test_sigma0_scale_must_be_a_positive_number() -> None:
    for bad in (0, -1.0, float("nan"), float("inf"), True, "half"):
        with pytest.raises(ConfigError, match=r"method.sigma0_scale: got .*finite number > 0"):
            PEARL(sigma0_scale=bad)
