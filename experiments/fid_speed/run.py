"""Inception feature-extraction speed: images/s per variant, and how faithful each one is.

Runs every variant of :func:`dpsynth.evaluation.fid.load_inception` (plus batch-size and thread
settings of the chosen one) on the same images, interleaving the timed rounds so that load from
other processes hits every variant alike, and compares each variant's features with the plain
TorchScript model's. Writes ``results/fid_speed/fid_speed.json`` and ``.md``.

    python experiments/fid_speed/run.py              # ~10 min on an idle 2-core CPU, ~20 busy
    python experiments/fid_speed/run.py --n 64 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from dpsynth.evaluation.fid import (
    extract_features,
    fid_from_features,
    load_inception,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Variant:
    """One configuration to time: extractor variant, batch size, CPU threading."""

    name: str
    variant: str
    batch: int
    threads: int = 2  # CPU threads in all
    workers: bool = True  # one forward pass per thread (ours) vs OpenMP inside each operator
    grad_mode: str = "inference_mode"  # or "no_grad" (how a plain script would call it)
    note: str = ""
    rates: list[float] = field(default_factory=list)
    build_s: float = 0.0


def variants(batch: int) -> list[Variant]:
    omp = {"workers": False}
    return [
        Variant("plain", "plain", batch, grad_mode="no_grad", note="as shipped, no_grad", **omp),
        Variant("inference_mode", "plain", batch, note="as shipped, inference_mode", **omp),
        Variant("channels_last", "channels_last", batch, note="as shipped, NHWC input", **omp),
        Variant("eager", "eager", batch, note="rebuilt, BatchNorm folded, NCHW", **omp),
        Variant("fast_omp", "fast", batch, note="rebuilt, BatchNorm folded, NHWC", **omp),
        Variant("plain_workers", "plain", batch, note="as shipped, 2 worker threads"),
        Variant("fast", "fast", batch, note="fast_omp + 2 worker threads (default)"),
        Variant("fast_ofi", "fast_ofi", batch, note="fast + optimize_for_inference"),
        Variant("fast_b16", "fast", 16, note="fast, batch 16"),
        Variant("fast_b64", "fast", 64, note="fast, batch 64"),
        Variant("plain_1thread", "plain", batch, threads=1, note="as shipped, 1 thread", **omp),
        Variant("fast_1thread", "fast", batch, threads=1, note="fast, 1 thread", **omp),
        Variant("bf16", "bf16", batch, note="fast + bf16 autocast (AVX512-BF16)"),
    ]


def digits(n: int) -> np.ndarray:
    """(n, 1, 8, 8) real handwritten digits in [0, 1], shipped with scikit-learn (no files)."""
    x = load_digits().images.astype(np.float32)[:, None] / 16.0
    return np.resize(x, (n, *x.shape[1:]))


def run_once(v: Variant, model: torch.nn.Module, x: np.ndarray) -> tuple[float, torch.Tensor]:
    threads = torch.get_num_threads()
    torch.set_num_threads(v.threads)
    try:
        grad = torch.no_grad() if v.grad_mode == "no_grad" else torch.inference_mode()
        with grad:
            start = time.perf_counter()
            workers = v.threads if v.workers else 1
            feats = extract_features(x, model, batch_size=v.batch, workers=workers)
            elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return len(x) / elapsed, feats


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    isa = "AVX-512 + AVX512-BF16" if "avx512_bf16" in flags else "AVX2"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({cpu}, {isa}), {gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="timed images per variant and round")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated variant names (default all)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "fid_speed")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    todo = [v for v in variants(args.batch) if not args.only or v.name in args.only.split(",")]
    sizes = {v.name: -(-args.n // v.batch) * v.batch for v in todo}  # whole batches only
    x = digits(max(sizes.values()))
    models: dict[str, torch.nn.Module] = {}
    for v in todo:  # build + warm up (TorchScript specialises on the first calls of a shape)
        start = time.perf_counter()
        models[v.name] = load_inception(device, variant=v.variant)
        for _ in range(2):
            run_once(v, models[v.name], x[: v.batch])
        v.build_s = time.perf_counter() - start
        print(f"built {v.name} in {v.build_s:.1f} s", flush=True)

    feats: dict[str, torch.Tensor] = {}
    loads = []
    for r in range(args.rounds):  # interleaved: every variant sees the same background load
        for v in todo:
            rate, f = run_once(v, models[v.name], x[: sizes[v.name]])
            v.rates.append(rate)
            feats[v.name] = f[: args.n]
            loads.append(os.getloadavg()[0])
            print(f"round {r} {v.name}: {rate:.2f} img/s (load {loads[-1]:.1f})", flush=True)

    base = feats.get("plain")
    base_rate = statistics.median(todo[0].rates)
    half = args.n // 2
    fids: dict[str, float] = {}  # one FID per extractor variant (eigh of 2048x2048 is slow)
    rows = []
    for v in todo:
        f = feats[v.name]
        row = {
            "name": v.name,
            "note": v.note,
            "variant": v.variant,
            "batch": v.batch,
            "threads": v.threads,
            "threading": "worker threads" if v.workers and v.threads > 1 else "OpenMP",
            "images_per_s": statistics.median(v.rates),
            "rounds": v.rates,
            "speedup_vs_plain": statistics.median(v.rates) / base_rate,
            "build_and_warmup_s": v.build_s,
        }
        if base is not None:
            err = (f - base).abs()
            row["max_abs_err"] = float(err.max())
            row["mean_rel_err"] = float(err.mean() / base.abs().mean())
            for name, g in (("plain", base), (v.variant, f)):
                if name not in fids:
                    fids[name] = fid_from_features(g[:half], g[half:])
            row["fid_halves"] = fids[v.variant]
            row["fid_rel_change"] = abs(fids[v.variant] - fids["plain"]) / fids["plain"]
        rows.append(row)

    result = {
        "machine": machine(),
        "torch": torch.__version__,
        "device": device,
        "default_threads": torch.get_num_threads(),
        "images": f"{args.n} sklearn digits (8x8) per variant and round, resized to 299x299",
        "rounds": args.rounds,
        "load_average_during_rounds": {"min": min(loads), "max": max(loads)},
        "variants": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fid_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "fid_speed.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [
        "# Inception-v3 feature extraction speed",
        "",
        f"Machine: {result['machine']}; torch {result['torch']}; device {result['device']}.",
        f"Images: {result['images']}; median of {result['rounds']} interleaved round(s); "
        f"1-min load average during the rounds {result['load_average_during_rounds']['min']:.1f}"
        f"–{result['load_average_during_rounds']['max']:.1f} (other processes shared the cores).",
        "Errors compare each variant's features with the plain model's on the same images; "
        "'FID change' is the relative change of FID(first half, second half).",
        "Produced by `python experiments/fid_speed/run.py`.",
        "",
        "| variant | what | batch | threads | images/s | × plain | max abs err | mean rel err "
        "| FID change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for r in result["variants"]:
        lines.append(
            f"| {r['name']} | {r['note']} | {r['batch']} | {r['threads']} ({r['threading']}) "
            f"| {r['images_per_s']:.2f} | {r['speedup_vs_plain']:.2f} "
            f"| {r.get('max_abs_err', nan):.1e} | {r.get('mean_rel_err', nan):.1e} "
            f"| {r.get('fid_rel_change', nan):.1e} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
