#!/usr/bin/env python3
"""FOSSA inference speed and peak memory (ViT-S by default, deterministic fixture weights).

Times ``predict`` on a 5-slice stack at the ZEDD test resolution 1216x1824, which the network
sees at 518x784, and the bare network forward at 518x784: on the CPU with a fixed number of
threads, and on CUDA when a GPU is present. Peak memory: process peak RSS on the CPU
(resource.getrusage; tracemalloc misses torch's allocations), torch.cuda.max_memory_allocated
on CUDA. On CUDA in full fp32, as ``predict`` runs (ieee_fp32).

Usage: python bench/fossa_speed.py [--encoder vits] [--threads 2] [--repeats 3] [--slices 5] [--no-cuda]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from zedd_capture.fossa import build_fossa, network_size
from zedd_capture.fossa.fixture_weights import fixture_state_for_model
from zedd_capture.fossa.model import ieee_fp32

HEIGHT, WIDTH = 1216, 1824


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bench(model: torch.nn.Module, device: torch.device, slices: int, repeats: int) -> dict[str, float]:
    model = model.to(device)
    g = torch.Generator().manual_seed(0)
    stack = torch.randn(1, slices, 3, HEIGHT, WIDTH, generator=g).to(device)
    fd = torch.linspace(0.8, 8.0, slices)[None].to(device)
    K = torch.tensor([[[1900.0, 0, WIDTH / 2], [0, 1900.0, HEIGHT / 2], [0, 0, 1]]], device=device)
    nh, nw = network_size(HEIGHT, WIDTH)
    net_in = torch.randn(1, slices, 3, nh, nw, generator=g).to(device)
    fd_c = fd * WIDTH / 1900.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = peak_rss_mib()
    with torch.inference_mode():
        with ieee_fp32():
            t_fwd = timed(lambda: model(net_in, fd_c), device, repeats)
        t_pred = timed(lambda: model.predict(stack, fd, K), device, repeats)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    return {"forward_s": t_fwd, "predict_s": t_pred, "peak_mib": peak, "before_mib": rss0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="vits", choices=["vits", "vitb"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slices", type=int, default=5)
    ap.add_argument("--no-cuda", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_fossa(args.encoder)
    model.load_state_dict(fixture_state_for_model(model, 1234), strict=True)
    model.eval()
    nh, nw = network_size(HEIGHT, WIDTH)
    rows = [("cpu", f"{args.threads} threads", bench(model, torch.device("cpu"), args.slices, args.repeats))]
    if torch.cuda.is_available() and not args.no_cuda:
        cuda = bench(model, torch.device("cuda"), args.slices, args.repeats)
        rows.append(("cuda", torch.cuda.get_device_name(0).replace("NVIDIA ", ""), cuda))
    print(f"FOSSA-{args.encoder}, {args.slices} slices, input {HEIGHT}x{WIDTH} -> network {nh}x{nw}, "
          f"median of {args.repeats} after 1 warm-up, torch {torch.__version__}")
    print(f"{'device':<6} {'setting':<28} {'forward s':>10} {'predict s':>10} {'peak MiB':>10}")
    for dev, setting, r in rows:
        print(f"{dev:<6} {setting:<28} {r['forward_s']:>10.3f} {r['predict_s']:>10.3f} {r['peak_mib']:>10.0f}")
    print("peak MiB: CPU = process peak RSS (model weights included, "
          f"{rows[0][2]['before_mib']:.0f} MiB before the first forward); CUDA = torch.cuda.max_memory_allocated")


if __name__ == "__main__":
    main()
