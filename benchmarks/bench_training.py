"""Steps per second of the training stages, before and after the frozen-network cache, in one run.

    python benchmarks/bench_training.py [--data ../shared/data/roadscene] [--patches 200]
        [--teacher-width 0.5] [--perceptual fallback|yolox] [--batch-size 25] [--steps 8]
        [--threads 2]

On the same patches and the same randomly initialised teacher, it times the teacher stage, the
student stage as it was (teacher forward and perceptual source features every step: cache off)
and the student stage with the cache (training/cache.py), and the one-time cost of filling the
cache per patch. The refresh bank is filled before timing, so every timed step also runs the
memory terms. Without ``--data`` it uses synthetic pairs of the same patch size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmdrfuse_ros.training.config import TrainConfig, merge  # noqa: E402
from mmdrfuse_ros.training.data import prepare_data, write_synthetic_dataset  # noqa: E402
from mmdrfuse_ros.training.distributed import DistInfo  # noqa: E402
from mmdrfuse_ros.training.perceptual import build_feature_net  # noqa: E402
from mmdrfuse_ros.training.stage import StageTrainer  # noqa: E402
from mmdrfuse_ros.training.teacher import TeacherNet  # noqa: E402


def _trainer(stage: str, cfg: TrainConfig, data, out: Path, features, teacher) -> StageTrainer:
    trainer = StageTrainer(stage, cfg, data, out, features, torch.device("cpu"), DistInfo(),
                           teacher=teacher if stage == "student" else None)
    trainer.dir.mkdir(parents=True, exist_ok=True)
    trainer._open_bank(resume=False)
    return trainer


def steps_per_second(trainer: StageTrainer, batch: int, steps: int) -> float:
    """Fill the bank with one pass over the timed batches, then time ``steps`` steps."""
    no = np.zeros(batch, dtype=bool)
    batches = [np.arange(i * batch, (i + 1) * batch) for i in range(steps)]
    for idx in batches:
        trainer._step(idx, no, no)
    started = time.perf_counter()
    for idx in batches:
        trainer._step(idx, no, no)
    return steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="a training folder (default: synthetic pairs)")
    p.add_argument("--patches", type=int, default=200)
    p.add_argument("--teacher-width", type=float, default=0.5)
    p.add_argument("--perceptual", default="fallback", choices=("fallback", "yolox", "none"))
    p.add_argument("--yolox-model", help="for --perceptual yolox (default: discovered)")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as scratch:
        rate, fill = measure(a, Path(scratch))  # banks and caches: hundreds of MB, removed after
    base = rate["student stage, before (no cache)"]
    print("\n| stage | steps/s | s/step | vs student before |\n|---|---:|---:|---:|")
    for name, r in rate.items():
        print(f"| {name} | {r:.2f} | {1 / r:.3f} | {r / base:.1f}x |")
    print(f"\ncache fill, once per run: {fill * 1e3:.1f} ms per patch "
          f"(= {fill * a.batch_size / (1 / base):.2f} uncached student steps per batch of patches)")
    return 0


def measure(a: argparse.Namespace, tmp: Path) -> tuple[dict[str, float], float]:
    """Steps per second of each stage, and the cache fill's seconds per patch."""
    data_dir = a.data or write_synthetic_dataset(tmp / "synth", n=12, height=384, width=512)
    cfg = TrainConfig()
    merge(cfg, {"data": {"max_patches": a.patches, "val_fraction": 0.1},
                "teacher": {"width": a.teacher_width, "batch_size": a.batch_size},
                "student": {"batch_size": a.batch_size},
                "cache": {"dtype": "float16"}})
    data = prepare_data(data_dir, cfg)
    features = build_feature_net(a.perceptual, yolox_model=a.yolox_model)
    torch.manual_seed(0)
    teacher = TeacherNet(a.teacher_width).eval()
    steps = min(a.steps, len(data.patches) // a.batch_size)
    print(f"{len(data.patches)} patches of {data.patches.size}x{data.patches.size}, batch "
          f"{a.batch_size}, {steps} timed steps, perceptual {features.kind}, teacher width "
          f"{a.teacher_width:g}, {a.threads} thread(s)")

    rate = {}
    t = _trainer("teacher", cfg, data, tmp / "t", features, None)
    rate["teacher stage"] = steps_per_second(t, a.batch_size, steps)
    cfg.cache.enabled = False
    before = _trainer("student", cfg, data, tmp / "s0", features, teacher)
    rate["student stage, before (no cache)"] = steps_per_second(before, a.batch_size, steps)
    cfg.cache.enabled = True
    after = _trainer("student", cfg, data, tmp / "s1", features, teacher)
    started = time.perf_counter()
    after._open_caches()
    fill = (time.perf_counter() - started) / len(data.patches)
    rate["student stage, after (cache)"] = steps_per_second(after, a.batch_size, steps)
    return rate, fill


if __name__ == "__main__":
    raise SystemExit(main())
