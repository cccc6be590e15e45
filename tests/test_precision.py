"""Mixed precision (``trainer.precision=bf16-mixed``, ``trainer=bf16``): the embedding methods'
matrix products run in bfloat16 while their features, loss and critic weights stay float32;
every other method refuses it before any work starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpsynth.config import config_id
from dpsynth.data.base import DataSpec
from dpsynth.errors import ConfigError
from dpsynth.methods.base import Method, Synthesizer
from dpsynth.methods.embedding import cf_features, draw_frequencies
from dpsynth.methods.generators import ConvGenerator
from dpsynth.methods.oneshot import EmbeddingMethod
from dpsynth.methods.pearl import critic_weights
from dpsynth.pipeline import build_method, run
from tests.test_oneshot import _matcher

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def _features(k: int = 300, d: int = 64, n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    # Pixels in [0, 1] and the median-heuristic width d/6, so T x has sd ~1.4 as on images.
    return torch.rand(n, d), draw_frequencies(k, d, d / 6.0, seed=1)


def test_cf_features_under_bf16_autocast_stay_float32_and_close_to_exact() -> None:
    x, freqs = _features()
    k = freqs.shape[0]
    x32 = x.clone().requires_grad_(True)
    exact = cf_features(x32, freqs)  # (n, 2k)
    xb = x.clone().requires_grad_(True)
    with torch.autocast(**BF16):
        low = cf_features(xb, freqs)
    assert low.dtype == torch.float32  # features (and so the loss) are never bf16
    err = (low - exact).abs().max().item() * k**0.5  # in units of one cos / sin
    # The products really ran in bf16 (T x rounded to 8 significant bits: angles near 4 are off
    # by up to 2^-6), yet no feature moves by more than that angle error.
    assert 1e-4 < err < 0.05
    torch.testing.assert_close(low.norm(dim=1), torch.ones(len(x)), atol=1e-6, rtol=0)
    g = torch.randn_like(exact)
    (ge,) = torch.autograd.grad(exact, x32, g)
    (gl,) = torch.autograd.grad(low, xb, g)
    assert gl.dtype == torch.float32  # autograd casts back to the input's dtype
    cos = torch.nn.functional.cosine_similarity(ge.flatten(), gl.flatten(), dim=0)
    assert cos > 0.999 and (gl - ge).norm() / ge.norm() < 0.03


def test_critic_weights_ignore_autocast() -> None:
    # Logits in the hundreds would lose whole units in bf16: α must be exactly float32's.
    freqs = draw_frequencies(400, 30, 0.05, seed=0)
    s = torch.full((30,), 0.05) + 0.04 * torch.rand(30)
    exact = critic_weights(freqs, s, 0.05)
    with torch.autocast(**BF16):
        low = critic_weights(freqs, s, 0.05)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, exact, rtol=0, atol=0)


def test_the_matcher_casts_its_frequencies_once_per_autocast_dtype() -> None:
    gen = ConvGenerator((1, 4, 4), 3, code_dim=2, hidden=8, base_channels=2, mid_channels=2)
    module = _matcher(None, gen, k=50)
    freqs = module.freqs.clone()
    assert module.projection_freqs() is module.freqs  # float32 training: no copy
    with torch.autocast(**BF16):
        first = module.projection_freqs()
        assert first.dtype == torch.bfloat16 and module.projection_freqs() is first
        torch.testing.assert_close(first, freqs.to(torch.bfloat16), rtol=0, atol=0)
        x, y = module.generate()
        loss = module.cf_loss(x, y, module.weights())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    doubled = 2 * module.freqs
    with torch.no_grad():
        module.freqs.mul_(2.0)  # a changed buffer (e.g. loaded from a checkpoint) is re-cast
    with torch.autocast(**BF16):
        torch.testing.assert_close(module.projection_freqs(), doubled.to(torch.bfloat16))


def test_precision_is_allowed_only_where_the_method_checked_it() -> None:
    assert EmbeddingMethod.precisions == {"32-true", "bf16-mixed"}
    assert Method.precisions == {"32-true"}  # DP-SGD and the marginal methods inherit it
    m = Method()
    m.check_precision("32")  # Lightning's alias of 32-true
    with pytest.raises(ConfigError, match=r"trainer.precision: got 'bf16-mixed'.*32-true"):
        m.check_precision("bf16-mixed")


def test_a_pearl_run_trains_under_bf16_and_records_it(tiny_config, tmp_path) -> None:
    cfg = tiny_config("digits", "pearl", "trainer=bf16")
    assert cfg.trainer.precision == "bf16-mixed"
    record = run(cfg, tmp_path / "run")
    assert record["status"] == "completed"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["trainer"]["precision"] == "bf16-mixed"
    plain = tiny_config("digits", "pearl")
    assert record["config_hash"] != config_id(_resolved(plain))  # its own run id
    assert record["privacy"]["epsilon_spent"] <= 1.0 + 1e-9


def test_a_bf16_trained_generator_is_sampled_under_bf16() -> None:
    # Synthesizer.precision: the same labels, float32 records in [0, 1], within bf16 rounding
    # of the float32 samples and not equal to them (the products really ran in bfloat16).
    torch.manual_seed(0)
    spec = DataSpec("toy", "image", (1, 8, 8), 3, ("a", "b", "c"))
    gen = ConvGenerator((1, 8, 8), 3, code_dim=4, hidden=32, base_channels=4, mid_channels=4)
    probs = np.full(3, 1 / 3)
    x32, y32 = Synthesizer(gen, 4, probs, spec).sample(40, seed=3)
    x16, y16 = Synthesizer(gen, 4, probs, spec, precision="bf16-mixed").sample(40, seed=3)
    assert x16.dtype == np.float32 and np.array_equal(y16, y32)
    assert 0 < np.abs(x16 - x32).max() < 0.02
    assert x16.min() >= 0 and x16.max() <= 1


@pytest.mark.parametrize("method", ["dpsgd", "mst"])
def test_other_methods_refuse_bf16_before_any_work(tiny_config, tmp_path, method: str) -> None:
    cfg = tiny_config("adult", method, "trainer.precision=bf16-mixed")
    assert "bf16-mixed" not in build_method(cfg).precisions
    with pytest.raises(ConfigError, match=rf"trainer.precision.*method={method}"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not list(tmp_path.glob("run/**/release.npz"))


def _resolved(cfg):  # noqa: ANN001, ANN202
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)
