"""Time the fusion metrics on one 640x480 triple, single-threaded; print a Markdown table.

    python benchmarks/bench_metrics.py [--repeat 5] [--reference PATH/TO/utils/Evaluator.py]

The issue's budget: the complete set in under 1 s on one core. Thread pools are pinned to one
thread before numpy/OpenCV load. ``--reference`` times the field's reference evaluator
(MMIF-CDDFuse ``utils/Evaluator.py``, from your own checkout; it needs scikit-image and
scikit-learn, which this package does not) on the same images and prints the speed-up; its SSIM is
called with ``data_range=2`` as scikit-image 0.19 implied.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout, installed or not
from mmdrfuse_ros.metrics import fusion as M  # noqa: E402

cv2.setNumThreads(1)

# the reference's method for each of our metrics (those it has)
REFERENCE_METHODS = {
    "EN": ("EN", 1), "SD": ("SD", 1), "SF": ("SF", 1), "AG": ("AG", 1), "MI": ("MI", 3),
    "SCD": ("SCD", 3), "VIF": ("VIFF", 3), "Qabf": ("Qabf", 3), "SSIM": ("SSIM", 3),
    "CC": ("CC", 3), "PSNR": ("PSNR", 3), "MSE": ("MSE", 3),
}  # fmt: skip


def make_triple(height: int = 480, width: int = 640, seed: int = 0):
    """A natural-looking 8-bit triple: smoothed noise + structures, fused as the pixel mean."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    ir = cv2.GaussianBlur(rng.random((height, width)) * 255, (0, 0), 6) * 3 - 200
    ir += 90 * np.exp(-((y - 200) ** 2 + (x - 300) ** 2) / 5000)
    vis = 40 + 150 * x / width + 30 * np.sin((x + y) / 9) + 25 * rng.random((height, width))
    vis[100:200, 400:520] = 240
    ir, vis = (np.clip(np.rint(v), 0, 255) for v in (ir, vis))
    return ir, vis, np.round((ir + vis) / 2)


def best_ms(fn, repeat: int) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) in ms. CPU time is the fairer "one core" figure on a
    shared machine: other processes stretch wall time but not this process's CPU time."""
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1000 * min(wall), 1000 * statistics.median(wall), 1000 * min(cpu)


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("reference_evaluator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from skimage.metrics import structural_similarity

    module.ssim = functools.partial(structural_similarity, data_range=2)
    return module.Evaluator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--reference", help="path to MMIF-CDDFuse utils/Evaluator.py (optional)")
    args = ap.parse_args()
    ir, vis, fused = make_triple()
    evaluator = load_reference(args.reference) if args.reference else None
    ref32 = [v.astype(np.float32) for v in (ir, vis, fused)]  # what the reference is fed

    rows = []
    for name in M.ALL_METRICS:
        best, med, cpu = best_ms(lambda n=name: M.compute_metrics(ir, vis, fused, [n]), args.repeat)
        ref = None
        if evaluator is not None and name in REFERENCE_METHODS:
            method, arity = REFERENCE_METHODS[name]
            call = getattr(evaluator, method)
            args_ref = (ref32[2],) if arity == 1 else (ref32[2], ref32[0], ref32[1])
            ref = best_ms(functools.partial(call, *args_ref), 1)[0]
        rows.append((name, best, med, cpu, ref))
    total_best, total_med, total_cpu = best_ms(
        lambda: M.compute_metrics(ir, vis, fused), args.repeat
    )

    print(f"640x480 triple, one thread, best/median of {args.repeat} runs (ms)\n")
    head = "| metric | ours best | ours median | ours CPU |"
    if evaluator is not None:
        head += " reference | speed-up |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, best, med, cpu, ref in rows:
        line = f"| {name} | {best:.1f} | {med:.1f} | {cpu:.1f} |"
        if evaluator is not None:
            line += f" {ref:.1f} | {ref / best:.1f}x |" if ref is not None else " - | - |"
        print(line)
    line = (
        f"| **all {len(M.ALL_METRICS)}** | **{total_best:.1f}** | **{total_med:.1f}** |"
        f" **{total_cpu:.1f}** |"
    )
    if evaluator is not None:
        ref_total = sum(r for *_, r in rows if r is not None)
        ours_same = sum(row[1] for row in rows if row[-1] is not None)
        line += f" {ref_total:.1f} (its 12) | {ref_total / ours_same:.1f}x (same 12) |"
    print(line)
    verdict = "within" if total_cpu < 1000 else "OVER"
    print(
        f"\nfull set: {total_cpu:.0f} ms CPU (best), {total_med:.0f} ms wall (median)"
        f" -> {verdict} the 1 s budget on one core"
    )


if __name__ == "__main__":
    main()
