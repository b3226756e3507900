"""What the frozen networks say about each training patch, computed once and memory-mapped.

During a stage the patches never change and two networks never learn: the perceptual network
(both stages) and the teacher (the student stage). So per patch, the perceptual target
max(phi(IR), phi(VIS)) and the two channel-sum maps digestible distillation compares (teacher
buffer feature and output) are the same at every step of every epoch. Computing them once and
reading them back leaves each step only the work that depends on the model being trained; the
teacher's forward pass was most of a student step (``benchmarks/bench_training.py``).

Each cache is one ``.npy`` file ``[N, D]`` (the tensors of a patch, flattened) next to a small
JSON that records its key: a hash of the patches, the network's weights and the storage type.
A run that finds a complete cache with the same key (a resume, a second student from the same
teacher) reads it; anything else rebuilds it. The JSON is written last, so an interrupted fill
is never taken for a complete one.

A flipped patch's teacher output is not the flipped output, so the cache is used only when the
data are not flipped (the published setting); with ``data.flips`` the stage computes as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

if TYPE_CHECKING:  # data imports config, which names this module's dtypes
    from mmdrfuse_ros.training.data import PatchSet

log = logging.getLogger("mmdrfuse_ros.training")

CACHE_DTYPES = ("float32", "float16")
#: patches per forward pass while filling (bounded memory, whatever the batch size).
FILL_BATCH = 32

#: a patch batch (IR, visible, each [b, 1, P, P] in [0, 1]) -> the tensors to keep per patch.
Compute = Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]


def network_key(net: nn.Module, label: str) -> str:
    """A hash of a frozen network's parameters and buffers (and a label for its kind)."""
    h = hashlib.sha1(label.encode())
    for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def patches_key(patches: PatchSet) -> str:
    h = hashlib.sha1(str((len(patches), patches.size)).encode())
    h.update(patches.ir.tobytes())
    h.update(patches.vi.tobytes())
    return h.hexdigest()


class PatchCache:
    """Per-patch tensors of fixed shapes, stored flattened in one memory-mapped array."""

    def __init__(self, path: Path, shapes: list[tuple[int, ...]], mode: str,
                 n: int | None = None, dtype: str = "float16") -> None:
        self.path = path
        self.shapes = shapes
        self.sizes = [math.prod(s) for s in shapes]
        shape = (n, sum(self.sizes)) if mode == "w+" else None
        self.array = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)

    def __len__(self) -> int:
        return len(self.array)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def write(self, start: int, tensors: list[torch.Tensor]) -> None:
        flat = torch.cat([t.detach().float().flatten(1).cpu() for t in tensors], dim=1)
        self.array[start:start + len(flat)] = flat.numpy().astype(self.array.dtype)

    def read(self, idx: np.ndarray, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The tensors of the patches ``idx`` as float32 ``[b, *shape]`` each."""
        rows = torch.from_numpy(np.asarray(self.array[np.sort(idx)], dtype=np.float32))
        rows = rows[torch.from_numpy(np.argsort(np.argsort(idx)))]  # back to the order of idx
        parts = torch.split(rows.to(device), self.sizes, dim=1)
        return [p.reshape(len(idx), *s) for p, s in zip(parts, self.shapes, strict=True)]


def open_or_fill(directory: Path, name: str, key: str, patches: PatchSet, compute: Compute,
                 dtype: str, device: torch.device, main: bool = True,
                 barrier: Callable[[], None] = lambda: None) -> PatchCache:
    """The cache ``name`` for ``key``: read when a complete one with that key exists, else
    computed for every patch (by rank 0; the other ranks wait, then read it)."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"cache dtype {dtype!r}: choose one of {CACHE_DTYPES}")
    directory.mkdir(parents=True, exist_ok=True)
    path, meta_path = directory / f"{name}.npy", directory / f"{name}.json"
    wanted = {"key": key, "dtype": dtype, "patches": len(patches)}
    if main and _recorded(meta_path) != wanted:
        meta_path.unlink(missing_ok=True)
        shapes = _fill(path, name, patches, compute, dtype, device)
        meta_path.write_text(json.dumps({**wanted, "shapes": shapes}))
    barrier()
    meta = json.loads(meta_path.read_text())
    cache = PatchCache(path, [tuple(s) for s in meta["shapes"]], "r")
    log.info("cache %s: %d patches, %.2f GB (%s)", name, len(cache), cache.nbytes / 1e9, path)
    return cache


def _recorded(meta_path: Path) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return {k: meta.get(k) for k in ("key", "dtype", "patches")}


def _fill(path: Path, name: str, patches: PatchSet, compute: Compute, dtype: str,
          device: torch.device) -> list[list[int]]:
    """Compute every patch's tensors into a new cache file; their per-patch shapes."""
    n = len(patches)
    no_flip = np.zeros(FILL_BATCH, dtype=bool)
    cache: PatchCache | None = None
    with torch.no_grad():
        for start in tqdm(range(0, n, FILL_BATCH), desc=f"cache {name}", unit="batch",
                          mininterval=1.0, dynamic_ncols=True):
            idx = np.arange(start, min(start + FILL_BATCH, n))
            ir, vi = patches.batch(idx, no_flip[:len(idx)], no_flip[:len(idx)], device)
            tensors = compute(ir, vi)
            if cache is None:
                shapes = [tuple(t.shape[1:]) for t in tensors]
                cache = PatchCache(path, shapes, "w+", n, dtype)
            cache.write(start, tensors)
    assert cache is not None
    cache.array.flush()
    return [list(s) for s in cache.shapes]
