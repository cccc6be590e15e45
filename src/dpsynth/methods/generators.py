"""Label-conditional generators used by the one-shot methods and the GAN baselines.

``ConvGenerator`` generalises the DP-MERF / PEARL image generator (Harder et al., 2021;
Liew et al., 2022): code ⊕ one-hot → Linear(hidden) + BN + ReLU → Linear(c·H/4·W/4) + BN →
reshape → ×2 bilinear → conv5×5 + ReLU → ×2 bilinear → conv5×5 → sigmoid (each upsampling
fused into the convolution after it: ``UpsampleConv2d``). With the reference
sizes (code 5, hidden 200, 16 base channels, 28×28×1) it has ~166k parameters.

``TabularGenerator`` is the PEARL tabular MLP (hidden 4·D, 2·D, BN + ReLU) whose output applies
tanh to each numeric column and a softmax to each categorical one-hot block.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dpsynth.data.base import DataSpec


def upsample_taps(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(k, 2n, n): slice a maps a length-n signal to its ×2 bilinear upsampling
    (``align_corners=False``, PyTorch's edge clamping included) read at p + a − k//2, with the
    convolution's zero padding outside [0, 2n). Built by upsampling the unit signals, so it is
    PyTorch's interpolation by construction."""
    eye = torch.eye(n, dtype=dtype, device=device).unsqueeze(1)  # (n, 1, n) unit signals
    up = F.interpolate(eye, scale_factor=2, mode="linear", align_corners=False)[:, 0].T  # (2n, n)
    padded = F.pad(up, (0, 0, k // 2, k // 2))  # (2n + k − 1, n): zero rows outside the image
    return torch.stack([padded[a : a + 2 * n] for a in range(k)])  # (k, 2n, n)


def upsample_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, taps: tuple[Tensor, Tensor]
) -> Tensor:
    """conv2d(upsample_bilinear_×2(x), weight, bias, padding=k//2), stride 1, as two GEMMs.

    Both maps are linear, so with the per-tap upsampling matrices A_a (rows) and B_b (columns)
    of ``upsample_taps``, y_o = Σ_a A_a Σ_c x_c K_{o,c,a} where K_{o,c,a} = Σ_b w_{o,c,a,b} B_bᵀ
    is built from the weights alone. The input is read in (N, H, C, W) order, so the (c, j)
    contraction is one GEMM; the output is written in that order too (returned as an
    (N, O, 2H, 2W) view), so a second such layer reads it without a copy. On CPU at the
    generator's sizes (16 → 8 → 1 channels, 7 → 14 → 28 pixels, batch 100) the conv stack's
    forward + backward ran ~2× faster than oneDNN's convolutions (channels-last, 1 thread).
    x (N, C, H, W), weight (O, C, k, k), taps (k, 2H, H) and (k, 2W, W) → (N, O, 2H, 2W).
    """
    n, c, h, w = x.shape
    o, k = weight.shape[0], weight.shape[-1]
    taps_h, taps_w = taps
    rows_in = x.permute(0, 2, 1, 3).reshape(n * h, c * w)  # ((N, i), (c, j))
    kern = torch.einsum("ocab,bqj->cjaoq", weight, taps_w).reshape(c * w, k * o * 2 * w)
    r = (rows_in @ kern).view(n, h * k, o * 2 * w)  # (N, (i, a), (o, q))
    rows = taps_h.permute(1, 2, 0).reshape(2 * h, h * k).expand(n, 2 * h, h * k)  # (p, (i, a))
    if bias is None:
        y = torch.bmm(rows, r)  # (N, p, (o, q))
    else:  # the bias inside the product: no strided pass over the (permuted) output
        y = torch.baddbmm(bias.repeat_interleave(2 * w).expand(n, 2 * h, o * 2 * w), rows, r)
    return y.view(n, 2 * h, o, 2 * w).permute(0, 2, 1, 3)  # (N, O, 2H, 2W) view


class UpsampleConv2d(nn.Conv2d):
    """×2 bilinear upsampling then a stride-1 "same" convolution; ``nn.Conv2d``'s parameters and
    state dict. On CPU it runs ``upsample_conv2d`` (the same function, in GEMMs); elsewhere the
    stock interpolate + convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"UpsampleConv2d needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self._taps: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}  # per input size

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            return super().forward(up)
        key = (x.shape[-2], x.shape[-1], x.dtype)
        if key not in self._taps:
            k = self.kernel_size[0]
            self._taps[key] = (
                upsample_taps(x.shape[-2], k, x.dtype, x.device),
                upsample_taps(x.shape[-1], k, x.dtype, x.device),
            )
        return upsample_conv2d(x, self.weight, self.bias, self._taps[key])


class ConvGenerator(nn.Module):
    """Image generator: (code, label) → image in [0, 1] of shape (C, H, W)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        num_classes: int,
        code_dim: int = 5,
        hidden: int = 200,
        base_channels: int = 16,
        mid_channels: int = 8,
    ) -> None:
        super().__init__()
        c, h, w = shape
        if h % 4 or w % 4:
            raise ValueError(f"ConvGenerator needs H, W divisible by 4, got {shape}")
        self.shape, self.code_dim, self.num_classes = tuple(shape), code_dim, num_classes
        self.base = (base_channels, h // 4, w // 4)
        self.fc = nn.Sequential(
            nn.Linear(code_dim + num_classes, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, base_channels * (h // 4) * (w // 4)),
            nn.BatchNorm1d(base_channels * (h // 4) * (w // 4)),
        )
        # Each upsampling is fused into the convolution after it; the Identity slots keep the
        # state-dict keys (conv.1, conv.4) of the plain Upsample → Conv2d stack.
        self.conv = nn.Sequential(
            nn.Identity(),
            UpsampleConv2d(base_channels, mid_channels, 5),
            nn.ReLU(),
            nn.Identity(),
            UpsampleConv2d(mid_channels, c, 5),
            nn.Sigmoid(),
        )

    def forward(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(labels, self.num_classes).to(code.dtype)  # (B, C)
        h = self.fc(torch.cat([code, onehot], dim=1))  # (B, c0·h0·w0)
        h = h.view(-1, *self.base)  # (B, c0, h0, w0)
        return self.conv(h)  # (B, C, H, W)


class TabularGenerator(nn.Module):
    """Tabular generator: (code, label) → encoded row, valid per column block."""

    def __init__(
        self, spec: DataSpec, num_classes: int, code_dim: int = 16, width: int = 0
    ) -> None:
        super().__init__()
        d = spec.dim
        h1, h2 = (4 * d, 2 * d) if width <= 0 else (width, width)
        self.code_dim, self.num_classes = code_dim, num_classes
        self.net = nn.Sequential(
            nn.Linear(code_dim + num_classes, h1),
            nn.BatchNorm1d(h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.BatchNorm1d(h2),
            nn.ReLU(),
            nn.Linear(h2, d),
        )
        self.blocks: list[tuple[int, int, str]] = []  # (start, end, kind) in encoded order
        start = 0
        for col in spec.columns:
            self.blocks.append((start, start + col.width, col.kind))
            start += col.width

    def forward(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(labels, self.num_classes).to(code.dtype)
        raw = self.net(torch.cat([code, onehot], dim=1))  # (B, D)
        parts = [
            torch.softmax(raw[:, a:b], dim=1) if kind == "categorical" else torch.tanh(raw[:, a:b])
            for a, b, kind in self.blocks
        ]
        return torch.cat(parts, dim=1)  # (B, D)


class MixtureGenerator(nn.Module):
    """An equal mixture of m generators of the same output shape: row r of a batch comes from
    member r mod m, so every member draws ⌊B/m⌋ or ⌈B/m⌉ rows of each label block (sampling
    sorts labels). Training each member on the same release is post-processing, so the mixture
    costs m× the training time and no privacy; it averages out what one training run's
    trajectory adds (its seed-to-seed spread), not the release's noise, which all share."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a mixture needs at least one generator")
        self.members = nn.ModuleList(members)

    def forward(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = len(self.members)
        if m == 1:
            return self.members[0](code, labels)
        rows = torch.arange(code.shape[0], device=code.device) % m  # (B,)
        parts = [
            (idx, member(code[idx], labels[idx]))
            for j, member in enumerate(self.members)
            if (idx := (rows == j).nonzero().squeeze(1)).numel()
        ]
        out = parts[0][1].new_empty((code.shape[0], *parts[0][1].shape[1:]))  # (B, ...)
        for idx, x in parts:
            out[idx] = x
        return out
