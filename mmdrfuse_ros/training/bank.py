"""The dynamic-refresh history bank: the best output seen so far for every training patch.

Two banks (one judged by SSIM, higher is better; one by GMSD, lower is better) each hold one
image per patch plus its score. The published code keeps them as two float64 arrays in RAM
(16,000 x 128 x 128 x 8 B x 2 = 4.19 GB). Here each is a memory-mapped ``.npy`` file of float16
(2 B per pixel: 1.05 GB for both on disk, 4x less) or uint8 (1 B: 0.52 GB, 8x less), and the
process only keeps the pages it touches; scores are a small float64 array. Because the files
live on disk, ranks of a single-node ``torchrun`` job share them (each writes only its own
patches), and a checkpoint copies them so a resumed run sees the bank as it was.

A score of NaN marks an empty entry: the first time a patch is seen its output is stored as is
and no memory loss is applied (the published "epoch 0" rule, also right after a resume).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANK_DTYPES = ("float16", "uint8")
KINDS = ("ssim", "gmsd")
_HIGHER_IS_BETTER = {"ssim": True, "gmsd": False}


def bank_nbytes(n: int, height: int, width: int, dtype: str = "float16", banks: int = 2) -> int:
    """Bytes of image storage for ``banks`` banks (scores add 16 B per patch)."""
    return n * height * width * np.dtype(dtype).itemsize * banks


def memory_statement(n: int = 16000, size: int = 128) -> str:
    """The README line comparing our bank with the published float64 arrays."""
    ref = bank_nbytes(n, size, size, "float64")
    parts = [f"published float64 in RAM: {ref / 1e9:.2f} GB"]
    for dtype in BANK_DTYPES:
        b = bank_nbytes(n, size, size, dtype)
        parts.append(f"{dtype} memory-mapped: {b / 1e9:.2f} GB on disk ({ref / b:.0f}x less)")
    return f"history bank for {n} patches of {size}x{size}, two banks: " + "; ".join(parts)


@dataclass
class Decision:
    """What the bank says about a batch for one judge (boolean masks and gaps, per sample)."""

    fill: np.ndarray  # entry was empty: store, no penalty
    refresh: np.ndarray  # current output is better: store, no penalty
    penalise: np.ndarray  # current output is worse: penalise with weight 10 * gap
    gap: np.ndarray  # |score difference| where penalised, else 0


class HistoryBank:
    """Memory-mapped per-patch history images and scores for the SSIM and GMSD judges."""

    def __init__(self, directory: str | Path, n: int, height: int, width: int,
                 dtype: str = "float16", create: bool = True) -> None:
        if dtype not in BANK_DTYPES:
            raise ValueError(f"bank dtype {dtype!r}: choose one of {BANK_DTYPES}")
        if n <= 0 or height <= 0 or width <= 0:
            raise ValueError(f"bank needs a positive size, got n={n}, {height}x{width}")
        self.directory = Path(directory)
        self.dtype = dtype
        self.shape = (n, height, width)
        self.directory.mkdir(parents=True, exist_ok=True)
        mode = "w+" if create else "r+"
        self._images = {
            kind: np.lib.format.open_memmap(
                self.directory / f"{kind}_{dtype}.npy", mode=mode, dtype=dtype,
                shape=self.shape if create else None,
            )
            for kind in KINDS
        }
        self._scores = np.lib.format.open_memmap(
            self.directory / "scores.npy", mode=mode, dtype=np.float64,
            shape=(len(KINDS), n) if create else None,
        )
        if create:
            self._scores[:] = np.nan
            self.flush()
        elif self._images["ssim"].shape != self.shape:
            raise ValueError(
                f"bank in {self.directory} holds {self._images['ssim'].shape}, need {self.shape}"
            )

    @property
    def nbytes(self) -> int:
        return bank_nbytes(*self.shape, dtype=self.dtype)

    def scores(self, kind: str, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self._scores[KINDS.index(kind), idx], dtype=np.float64)

    def images(self, kind: str, idx: np.ndarray) -> np.ndarray:
        """History images as float32 ``[b, H, W]``."""
        raw = np.asarray(self._images[kind][idx])
        if self.dtype == "uint8":
            return raw.astype(np.float32) * np.float32(1.0 / 255.0)
        return raw.astype(np.float32)

    def decide(self, kind: str, idx: np.ndarray, current: np.ndarray) -> Decision:
        """Compare current scores with the stored ones (SSIM: higher wins, GMSD: lower wins)."""
        stored = self.scores(kind, idx)
        current = np.asarray(current, dtype=np.float64)
        fill = np.isnan(stored)
        diff = current - stored if _HIGHER_IS_BETTER[kind] else stored - current
        with np.errstate(invalid="ignore"):
            refresh = ~fill & (diff > 0)
            penalise = ~fill & (diff < 0)
        gap = np.where(penalise, -diff, 0.0)
        return Decision(fill, refresh, penalise, gap)

    def store(self, kind: str, idx: np.ndarray, images: np.ndarray, scores: np.ndarray) -> None:
        """Write images (float, ``[b, H, W]``) and their scores for the patches ``idx``."""
        if len(idx) == 0:
            return
        if self.dtype == "uint8":
            data = np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            data = np.clip(images, -1.0, 1.0).astype(np.float16)
        order = np.argsort(idx)  # sorted writes touch the file sequentially
        self._images[kind][idx[order]] = data[order]
        self._scores[KINDS.index(kind), idx[order]] = np.asarray(scores, np.float64)[order]

    def filled(self) -> int:
        return int(np.count_nonzero(~np.isnan(self._scores[0])))

    def flush(self) -> None:
        for arr in self._images.values():
            arr.flush()
        self._scores.flush()

    def snapshot(self, destination: str | Path) -> None:
        """Copy the bank files (for a checkpoint); the copy replaces any older one atomically."""
        self.flush()
        destination = Path(destination)
        tmp = destination.with_name(destination.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.directory, tmp)
        shutil.rmtree(destination, ignore_errors=True)
        tmp.rename(destination)

    @classmethod
    def restore(cls, snapshot: str | Path, directory: str | Path, n: int, height: int,
                width: int, dtype: str) -> HistoryBank:
        """Replace ``directory`` with a snapshot and open it."""
        directory = Path(directory)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(snapshot, directory)
        return cls(directory, n, height, width, dtype, create=False)
