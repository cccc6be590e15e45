"""Characteristic-function / random-Fourier-feature embeddings shared by PEARL and DP-MERF.

Both methods (Liew et al., ICLR 2022; Harder et al., AISTATS 2021) embed a record x ∈ R^d as

    z(x) = [cos(T x); sin(T x)] / √k,      T ∈ R^{k×d},  rows t_i ~ N(0, I / σ0²),

so ‖z(x)‖₂ = 1: the real and imaginary parts of the empirical characteristic function at k
public frequencies (equivalently, sphere random Fourier features of a Gaussian kernel). The
class-conditional mean embedding E = (1/n) Σ_j z(x_j) ⊗ onehot(y_j) ∈ R^{2k×C} moves by at most
2/n in Frobenius norm when one record is replaced — the sensitivity of the release.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def draw_frequencies(k: int, dim: int, sigma0_sq: float, seed: int) -> torch.Tensor:
    """Public frequencies T (k, dim) with rows ~ N(0, I/σ0²), reproducible from ``seed``.

    The seed is public and independent of the data, so T costs no privacy.
    """
    if not (np.isfinite(sigma0_sq) and sigma0_sq > 0):
        raise ValueError(f"sigma0_sq must be a finite number > 0, got {sigma0_sq}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(k, dim, generator=g) / float(np.sqrt(sigma0_sq))  # (k, d)


class _CFFeatures(torch.autograd.Function):
    """z(x) with a hand-written backward: it reuses the forward's cos and sin (autograd would
    evaluate both again from the saved projection) and writes no concatenation. d z_cos / d proj
    = −z_sin and d z_sin / d proj = z_cos, so g_proj = z_cos·g_sin − z_sin·g_cos.

    Mixed precision: the two products (T x forward, g_proj T backward) run in the precision the
    projection came out in — ``freqs``' dtype, or bfloat16 under a bf16 autocast (Lightning's
    ``trainer.precision=bf16-mixed``) — while cos, sin, z and g_proj are always at least float32
    (a bf16 angle near 4 is off by up to 0.016 rad; its cos and sin need not add to that)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        z, ctx.mm_dtype = _cos_sin(x, freqs)  # (N, 2k)
        z.mul_(1.0 / float(np.sqrt(freqs.shape[0])))
        ctx.save_for_backward(z, x, freqs)
        return z

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        z, x, freqs = ctx.saved_tensors
        return _cos_sin_backward(z, grad, x, freqs, ctx.mm_dtype, ctx.needs_input_grad[:2])


def _cos_sin(x: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """[cos(T x), sin(T x)] (N, 2k), unnormalised, at least float32, and the dtype the product
    T x ran in (``freqs``', e.g. bfloat16 under a bf16 autocast): no (N, 2k) concatenation."""
    k = freqs.shape[0]
    proj = x.to(freqs.dtype) @ freqs.T  # (N, k)
    mm_dtype = proj.dtype
    proj = proj.to(torch.promote_types(proj.dtype, torch.float32))
    z = torch.empty(x.shape[0], 2 * k, dtype=proj.dtype, device=proj.device)  # (N, 2k)
    torch.cos(proj, out=z[:, :k])
    torch.sin(proj, out=z[:, k:])
    return z, mm_dtype


def _cos_sin_backward(
    z: torch.Tensor,  # (N, 2k) [cos, sin] (any common scale)
    grad: torch.Tensor,  # (N, 2k) gradient with respect to z
    x: torch.Tensor,  # (N, d)
    freqs: torch.Tensor,  # (k, d)
    mm_dtype: torch.dtype,
    needs: tuple[bool, ...],  # (x, freqs) need a gradient
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients in x and freqs through z = [cos(T x), sin(T x)]: d cos / d proj = −sin and
    d sin / d proj = cos, so g_proj = cos·g_sin − sin·g_cos; its products run in ``mm_dtype``.
    Autograd casts each result to its input's dtype."""
    k = freqs.shape[0]
    g_proj = torch.addcmul(z[:, :k] * grad[:, k:], z[:, k:], grad[:, :k], value=-1.0)  # (N, k)
    g_proj = g_proj.to(mm_dtype)
    gx = g_proj @ freqs.to(mm_dtype) if needs[0] else None  # (N, d)
    gf = g_proj.T @ x.to(mm_dtype) if needs[1] else None  # (k, d)
    return gx, gf


def cf_features(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Unit-norm CF features z(x): (N, d) × (k, d) → (N, 2k), [cos(T x); sin(T x)] / √k.

    The projection T x runs in ``freqs``' dtype (x is cast to it): passing a bfloat16 copy of
    the frequencies halves the two products' time on CPUs with bf16 dot products, at the cost
    of rounding T and x to 8 significant bits (``EmbeddingMatcher`` does so only under
    ``trainer.precision=bf16-mixed``). The features are float32 (or float64) either way."""
    return _CFFeatures.apply(x, freqs)


def class_embedding(
    x: np.ndarray,
    y: np.ndarray,
    freqs: torch.Tensor,
    num_classes: int,
    chunk: int = 4096,
) -> np.ndarray:
    """Exact class-conditional mean embedding E (2k, C) of private data.

    Privacy: this is the *pre-noise* statistic; its L2 (Frobenius) sensitivity under
    replace-one is 2/n because every record contributes a unit-norm column block scaled by 1/n.
    Only a one-shot release (``privacy.release.gaussian_release``) may consume the result.

    Computed as onehot(y)ᵀ z(X) in row chunks: one GEMM for the projection, one skinny GEMM
    for the class sums, no (N, 2k, C) outer-product tensor.
    """
    n = x.shape[0]
    k = freqs.shape[0]
    out = torch.zeros(num_classes, 2 * k, dtype=torch.float64)
    labels = torch.as_tensor(y, dtype=torch.long)
    freqs_t = freqs.T.contiguous().float()  # (d, k)
    scale = 1.0 / float(np.sqrt(k))
    with torch.inference_mode():
        for start in range(0, n, chunk):
            xb = torch.as_tensor(x[start : start + chunk]).reshape(-1, freqs.shape[1]).float()
            onehot_t = torch.nn.functional.one_hot(labels[start : start + chunk], num_classes)
            onehot_t = onehot_t.T.float()  # (C, b)
            proj = xb @ freqs_t  # (b, k)
            # cos and sin written in place and reduced separately: no (b, 2k) concatenation.
            out[:, k:] += (onehot_t @ torch.sin(proj)).double()  # (C, k)
            out[:, :k] += (onehot_t @ proj.cos_()).double()  # (C, k)
    out *= scale
    return (out / n).T.numpy()  # (2k, C)


def class_proportions(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Exact class proportions n_c / n (C,).

    Privacy: pre-noise statistic; L2 sensitivity √2/n under replace-one (one count −1, one +1).
    """
    return np.bincount(y, minlength=num_classes).astype(np.float64) / len(y)


def batch_embedding(
    x: torch.Tensor,
    y: torch.Tensor,
    freqs: torch.Tensor,
    class_weights: torch.Tensor | None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Differentiable embedding of a generated batch, comparable to the released one.

    With ``class_weights``, column c is ``class_weights[c] × mean_{j: y_j = c} z(x_j)``, i.e.
    (n_c/n)·CF_c as in the released E with n_c/n replaced by the released (or public uniform)
    proportions. With ``None``, it is the plain batch mean (1/B) Σ_j z(x_j) ⊗ onehot(y_j), for
    labels drawn from those proportions (the authors' scripts).

    Args:
        x: generated records (B, d). y: their labels (B,). freqs: (k, d).
        class_weights: (C,) proportions the released embedding is scaled by, or None.
        num_classes: C when ``class_weights`` is None (default: max label + 1).
    Returns: (2k, C).
    """
    if class_weights is not None:
        num_classes = class_weights.shape[0]
    elif num_classes is None:
        num_classes = int(y.max()) + 1
    z = cf_features(x, freqs)  # (B, 2k)
    # Class sums by row index (backward: a row gather) rather than zᵀ·onehot(y), whose backward
    # is a skinny (B × C)·(C × 2k) product: ~5% of a Fashion-MNIST step (experiments/pearl_fmnist).
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device)
    sums = sums.index_add(0, y, z)  # (C, 2k)
    if class_weights is None:
        return (sums / x.shape[0]).T  # (2k, C)
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).to(z.dtype)  # (C,)
    return (sums * (class_weights / counts)[:, None]).T  # (2k, C)


class _CFDiscrepancy(torch.autograd.Function):
    """ℓ (k,) of :func:`cf_discrepancy` in one autograd node. Its backward is written out:
    dℓ_i/dE_{c,i} = −2 (Ẽ − E)_{c,i} g_i on the (C, 2k) class sums, gathered to the batch rows
    by label, then through cos and sin as in ``_CFFeatures``. The composed version
    (``batch_embedding``, a subtraction, squares and sums) ran ~20 autograd nodes on
    (C, 2k) tensors and a strided row gather in backward (its class sums are stored
    transposed); this is ~0.3 ms of a ~6.5 ms Fashion-MNIST step (experiments/pearl_fmnist)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,  # (B, d)
        freqs: torch.Tensor,  # (k, d)
        y: torch.Tensor,  # (B,) labels
        row_scale: torch.Tensor,  # (C,) weight of one row of class c in column c
        target: torch.Tensor,  # (C, 2k) released embedding, one row per class
        self_coef: torch.Tensor | None,  # (C,) U-statistic term per class, or None
    ) -> torch.Tensor:
        k = freqs.shape[0]
        zu, ctx.mm_dtype = _cos_sin(x, freqs)  # (B, 2k); the 1/√k is folded into the scale
        sums = torch.zeros(target.shape, dtype=zu.dtype, device=zu.device).index_add_(0, y, zu)
        scale = (row_scale.to(zu.dtype) / math.sqrt(k))[:, None]  # (C, 1)
        diff = target.to(zu.dtype) - sums * scale  # (C, 2k)
        sq = diff.square()
        ctx.sums_coef = None
        if self_coef is not None:
            # + s_c²|S_c|²/(n_c − 1), the U-statistic's extra self term (cf_discrepancy adds
            # its constant part); self_coef_c = s_c²/(n_c − 1), 0 if n_c < 2.
            ctx.sums_coef = sums * self_coef.to(zu.dtype)[:, None]  # (C, 2k), for the backward
            sq.addcmul_(sums, ctx.sums_coef)
        per_freq = sq[:, :k].sum(dim=0) + sq[:, k:].sum(dim=0)  # (k,)
        ctx.save_for_backward(zu, x, freqs, y, diff.mul_(scale))  # (Ẽ − E)·scale
        return per_freq

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        zu, x, freqs, y, diff_scaled = ctx.saved_tensors
        if any(ctx.needs_input_grad[3:]):
            raise NotImplementedError("cf_discrepancy: no gradient for row_scale or target")
        if ctx.sums_coef is not None:  # d/dS of s²|S|²/(n − 1) is 2·S·s²/(n − 1)
            diff_scaled = diff_scaled - ctx.sums_coef
        g_sums = diff_scaled * (-2.0 * grad).repeat(2)[None, :]  # (C, 2k): dℓ/d(unscaled sums)
        g_z = g_sums.index_select(0, y)  # (B, 2k): each row's class row
        gx, gf = _cos_sin_backward(zu, g_z, x, freqs, ctx.mm_dtype, ctx.needs_input_grad[:2])
        return gx, gf, None, None, None, None


def cf_discrepancy(
    x: torch.Tensor,
    y: torch.Tensor,
    freqs: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None,
    unbiased: bool = False,
) -> torch.Tensor:
    """ℓ_i = Σ_c |Ẽ_{i,c} − E_{i,c}|² (k,), real and imaginary parts, between a released
    embedding ``target`` (2k, C) and a generated batch's ``batch_embedding(x, y, freqs,
    class_weights)``: the per-frequency distance the PEARL / DP-MERF losses weight. The same
    numbers as that composition, differentiable in x (and freqs) through one hand-written
    backward. Under a bf16 autocast the two products run in ``freqs``' dtype (pass a bf16
    copy, as ``cf_features``); ℓ is float32 either way.

    ``unbiased``: the batch term |Ẽ_c|² as a U-statistic (Gretton et al., JMLR 2012, MMD²_u)
    instead of the plug-in V-statistic, so E[ℓ_i] is the generator's own distance to the
    release, |w_c φ_c − E_c|², not that plus the batch mean's variance w_c²(1/k − |φ_c|²)/n_c.
    That variance is smallest for a generator whose samples of a class are all alike, so the
    plug-in loss (the authors') rewards concentrated classes; with n_c = 10 rows a class it
    weighs the self term by 1 − 1/n_c = 0.9. As every |z(x)_i|² is exactly 1/k, the U-statistic
    is the plug-in ℓ plus s_c²(|S_c|² − n_c²)/(n_c − 1) a class, S_c the class's unscaled sum
    (cos, sin) and s_c its scale; classes with fewer than 2 rows keep the plug-in term."""
    num_classes = target.shape[1]
    counts = torch.bincount(y, minlength=num_classes)  # (C,)
    if class_weights is None:  # the plain batch mean: every row weighs 1/B
        row_scale = torch.full((num_classes,), 1.0 / x.shape[0], device=x.device)
    else:
        row_scale = class_weights / counts.clamp_min(1).to(class_weights.dtype)  # (C,)
    self_coef, constant = None, 0.0
    if unbiased:
        scale_sq = row_scale.double() ** 2 / freqs.shape[0]  # s_c² (C,)
        n = counts.double()
        self_coef = torch.where(n >= 2, scale_sq / (n - 1).clamp_min(1), 0.0)  # (C,)
        # the constant part of s_c²(|S_c|² − n_c²)/(n_c − 1), the same at every frequency
        constant = (self_coef * n.square()).sum()
    per_freq = _CFDiscrepancy.apply(x, freqs, y, row_scale, target.T.contiguous(), self_coef)
    return per_freq - constant.to(per_freq.dtype) if unbiased else per_freq
