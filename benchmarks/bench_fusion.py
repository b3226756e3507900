#!/usr/bin/env python3
"""Fusion speed per backend, with ratios against PyTorch eager measured in the same run.

Prints a Markdown table: for each frame size and backend, the median milliseconds of the network
alone, of the pre-processing (uint16 thermal percentile normalisation + visible luma split) and
of the post-processing (colour restore to BGR uint8), after warm-up, and the network's speed-up
over PyTorch eager (the same 113-parameter network, ``torch.inference_mode``, CPU, all cores).

    python benchmarks/bench_fusion.py [--sizes 640x512 1280x1024] [--repeats 50] [--json out.json]
    python benchmarks/bench_fusion.py --cadence [--sizes 320x256 640x512 1280x720]

``--cadence`` measures instead the numba kernel's parallel and serial builds back to back and at
camera cadence (``time.sleep(1/30)`` between calls, as a node sees frames): the parallel
build's sleeping worker threads must be woken for every frame, which is what the engine's
``parallel_min_pixels`` setting weighs.

PyTorch eager is measured first: numba's worker threads, once started, compete with PyTorch's
OpenMP threads on a 2-core machine and would make eager look slower than it is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from mmdrfuse_ros.fusion import FusionEngine, cuda_available
from mmdrfuse_ros.fusion.backends import CpuFastBackend, TorchBackend
from mmdrfuse_ros.fusion.model import load_checkpoint
from mmdrfuse_ros.resources import default_weights_path


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 5, sync: bool = False) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def frames(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    thermal = rng.integers(20000, 40000, size=(h, w), dtype=np.uint16)
    visible = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    return thermal, visible


def cadence_ms(run: Callable[[], object], repeats: int, period: float) -> tuple[float, float]:
    """Median and 90th percentile ms of ``run`` with ``period`` seconds of sleep before each."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        if period:
            time.sleep(period)
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.9 * (len(times) - 1))] * 1e3


def cadence_table(sizes: list[tuple[int, int]], repeats: int) -> list[dict]:
    """The numba kernel, parallel and serial, back to back and at 30 Hz, per frame size."""
    import numba

    from mmdrfuse_ros.fusion.backends import fused_kernel

    checkpoint = load_checkpoint(default_weights_path())
    scalars = CpuFastBackend(checkpoint)._scalars
    kernels = {"parallel": fused_kernel(parallel=True), "serial": fused_kernel(parallel=False)}
    rows = []
    for w, h in sizes:
        padded = np.random.default_rng(0).random((h + 2, w + 2), dtype=np.float32)
        out = np.empty((h, w), np.float32)
        row: dict = {"size": f"{w}x{h}"}
        for name, kernel in kernels.items():
            for label, period in (("b2b", 0.0), ("30hz", 1 / 30)):
                row[f"{name}_{label}"] = cadence_ms(
                    lambda k=kernel, p=padded, o=out: k(p, p, o, *scalars), repeats, period)
        rows.append(row)
    print(f"\nnumba kernel, {numba.config.NUMBA_NUM_THREADS} threads "
          f"({numba.threading_layer()}), {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.2f}: median / p90 ms\n")
    print("| frame | parallel back to back | parallel at 30 Hz | serial back to back | "
          "serial at 30 Hz |\n|---|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r[k][0]:.2f} / {r[k][1]:.2f}"
                 for k in ("parallel_b2b", "parallel_30hz", "serial_b2b", "serial_30hz")]
        print(f"| {r['size']} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=None,
                        help="WxH frame sizes (default 640x512 1280x1024; --cadence: "
                        "320x256 640x512 1280x720 1280x1024)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--cadence", action="store_true",
                        help="parallel against serial kernel, back to back and at 30 Hz")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    default = ["320x256", "640x512", "1280x720", "1280x1024"] if args.cadence else [
        "640x512", "1280x1024"]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes or default]  # (w, h)
    if args.cadence:
        rows = cadence_table(sizes, args.repeats)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=2)
        return
    checkpoint = load_checkpoint(default_weights_path())

    eager = TorchBackend(checkpoint, "cpu")
    inputs = {}
    eager_ms = {}
    for w, h in sizes:
        thermal, visible = frames(h, w)
        engine = FusionEngine(backend="torch", device="cpu")
        prepared = engine.prepare(thermal, visible)
        inputs[(w, h)] = (thermal, visible, prepared)
        eager_ms[(w, h)] = median_ms(
            lambda p=prepared: eager.run(p.thermal, p.visible.luma), args.repeats
        )

    rows = []
    for w, h in sizes:
        thermal, visible, prepared = inputs[(w, h)]
        ir01, y01 = prepared.thermal, prepared.visible.luma
        engine = FusionEngine(backend="cpu-fast")
        pre = median_ms(lambda t=thermal, v=visible, e=engine: e.prepare(t, v), args.repeats)
        post = median_ms(
            lambda p=prepared, e=engine: e.finish(p.visible.luma.copy(), p), args.repeats
        )
        candidates: list[tuple[str, Callable[[], object], bool]] = [
            ("PyTorch eager (CPU)", None, False),
            ("cpu-fast (numba kernel)", CpuFastBackend(checkpoint, kernel="numba").run, False),
            ("cpu-fast (OpenCV filter2D)", CpuFastBackend(checkpoint, kernel="opencv").run, False),
        ]
        if cuda_available():
            for fp16 in (False, True):
                gpu = TorchBackend(checkpoint, "cuda", fp16=fp16)
                candidates.append((f"torch CUDA {'fp16' if fp16 else 'fp32'}", gpu.run, True))
        for name, run, sync in candidates:
            net = eager_ms[(w, h)] if run is None else median_ms(
                lambda r=run, a=ir01, b=y01: r(a, b), args.repeats, sync=sync
            )
            rows.append({
                "size": f"{w}x{h}", "backend": name, "network_ms": net,
                "pre_ms": pre, "post_ms": post, "speedup_vs_eager": eager_ms[(w, h)] / net,
            })

    print(f"\nMMDRFuse student, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"median of {args.repeats} after warm-up\n")
    print("| frame | backend | network ms | vs PyTorch eager | pre-process ms | post-process ms |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['backend']} | {r['network_ms']:.2f} | "
              f"{r['speedup_vs_eager']:.1f}x | {r['pre_ms']:.2f} | {r['post_ms']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
