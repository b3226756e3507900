"""The frozen-network cache (training/cache.py): the cached student stage is the uncached one.

Tiny synthetic patches, a tiny teacher: same loss terms to 1e-5 and the same weights after 3
steps with a float32 cache; a float16 cache stays within its rounding; a changed teacher or
patch set rebuilds the cache instead of reading a stale one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmdrfuse_ros.training.cache import PatchCache, open_or_fill, patches_key
from mmdrfuse_ros.training.config import TrainConfig, merge
from mmdrfuse_ros.training.data import prepare_data, write_synthetic_dataset
from mmdrfuse_ros.training.distributed import DistInfo
from mmdrfuse_ros.training.perceptual import EdgePyramid
from mmdrfuse_ros.training.stage import StageTrainer
from mmdrfuse_ros.training.teacher import TeacherNet


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), n=6, height=48, width=64,
                                   seed=5)


def _config(cache: bool, dtype: str = "float32") -> TrainConfig:
    cfg = TrainConfig()
    merge(cfg, {
        "data": {"patch_size": 16, "stride": 16},
        "student": {"epochs": 1, "batch_size": 8, "lr": 1e-2},
        "cache": {"enabled": cache, "dtype": dtype},
        "run": {"export_onnx": False, "threads": 1},
    })
    return cfg


def _trainer(synth: Path, out: Path, cache: bool, dtype: str = "float32") -> StageTrainer:
    cfg = _config(cache, dtype)
    torch.manual_seed(0)
    teacher = TeacherNet(0.125)
    trainer = StageTrainer("student", cfg, prepare_data(synth, cfg), out, EdgePyramid(),
                           torch.device("cpu"), DistInfo(), teacher=teacher)
    trainer.dir.mkdir(parents=True, exist_ok=True)
    trainer._open_bank(resume=False)
    trainer._open_caches()
    return trainer


def _three_steps(trainer: StageTrainer) -> list[dict[str, float]]:
    rows = []
    no = np.zeros(8, dtype=bool)
    for start in (0, 8, 0):  # the third step revisits patches: the refresh bank judges them
        rows.append(trainer._step(np.arange(start, start + 8)[::-1].copy(), no, no))
    return rows


def test_cached_steps_equal_uncached_steps(synth, tmp_path) -> None:
    plain = _trainer(synth, tmp_path / "plain", cache=False)
    cached = _trainer(synth, tmp_path / "cached", cache=True)
    assert plain.teacher_cache is None and plain.perceptual_cache is None
    assert cached.teacher_cache is not None and cached.perceptual_cache is not None
    rows_plain, rows_cached = _three_steps(plain), _three_steps(cached)
    for a, b in zip(rows_plain, rows_cached, strict=True):
        assert a.keys() == b.keys()
        for key in ("total", "distill", "perceptual", "intensity", "gradient"):
            assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-5), key
    assert "memory_ssim" in rows_plain[2] or "memory_gmsd" in rows_plain[2]
    for name, value in plain.net.state_dict().items():
        torch.testing.assert_close(cached.net.state_dict()[name], value, atol=1e-5, rtol=1e-5)


def test_float16_cache_stays_within_its_rounding(synth, tmp_path) -> None:
    plain = _three_steps(_trainer(synth, tmp_path / "plain", cache=False))
    half = _three_steps(_trainer(synth, tmp_path / "half", cache=True, dtype="float16"))
    for a, b in zip(plain, half, strict=True):
        assert b["distill"] == pytest.approx(a["distill"], rel=1e-2, abs=1e-4)
        assert b["perceptual"] == pytest.approx(a["perceptual"], rel=1e-2, abs=1e-4)


def test_a_changed_network_or_patch_set_rebuilds_the_cache(synth, tmp_path) -> None:
    cfg = _config(cache=True)
    patches = prepare_data(synth, cfg).patches
    calls = []

    def compute(value: float):
        def run(ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
            calls.append(len(ir))
            return [torch.full_like(ir, value), vi * 2]
        return run

    def read(key: str, value: float) -> PatchCache:
        return open_or_fill(tmp_path, "t", key, patches, compute(value), "float32",
                            torch.device("cpu"))

    key = patches_key(patches)
    first = read(key + "a", 1.0)
    filled = sum(calls)
    assert filled == len(patches) and len(first) == len(patches)
    again = read(key + "a", 2.0)  # same key: read back, nothing computed
    assert sum(calls) == filled and float(again.read(np.array([3]))[0].max()) == 1.0
    changed = read(key + "b", 2.0)  # another network: recomputed
    assert sum(calls) == 2 * filled and float(changed.read(np.array([3]))[0].max()) == 2.0
    idx = np.array([5, 1, 4])
    _ir, vi = patches.batch(idx, np.zeros(3, bool), np.zeros(3, bool))
    torch.testing.assert_close(changed.read(idx)[1], vi * 2)  # rows come back in idx's order
