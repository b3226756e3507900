"""Training data: aligned IR/visible pairs -> 8-bit luma patches, a held-out split, flips.

A data folder holds two sub-folders of same-named images in one of the dataset layouts
(:data:`mmdrfuse_ros.datasets.DATASET_LAYOUTS`); names pair by relative path without
extension, so ``ir/a.png`` pairs with ``vi/a.jpg`` and LLVIP's ``infrared/train/x.jpg`` with
``visible/train/x.jpg`` (``subdir='train'`` restricts to one split). Images are read by
:func:`mmdrfuse_ros.datasets.read_luma`. Everything is checked before training starts, and
every problem is reported with what to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mmdrfuse_ros.datasets import (
    DATASET_LAYOUTS,
    DatasetError,
    Pair,
    find_layout,
    find_pairs,
    read_luma,
)
from mmdrfuse_ros.sampling import select_evenly
from mmdrfuse_ros.training import TrainingInputError, recorded_path
from mmdrfuse_ros.training.config import TrainConfig

log = logging.getLogger("mmdrfuse_ros.training")

#: the split is drawn with its own seed so every run (and every ablation) sees the same one.
SPLIT_SEED = 20240826


class DataError(TrainingInputError):
    """A data folder that cannot be trained on; the message says what to fix."""


def find_training_pairs(root: str | Path, subdir: str | None = None) -> list[Pair]:
    """The same-named IR/visible pairs under ``root``; DataError on any mismatch.

    Sub-folders are searched too, a name twice in one folder (``a.jpg`` + ``a.png``) is refused,
    and every image needs a partner.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    layout = find_layout(root)
    if layout is None:
        names = ", ".join(f"{a}/+{b}/" for a, b in DATASET_LAYOUTS)
        raise DataError(f"data folder {root} must contain one of {names}")
    ir_dir, vi_dir = layout
    if subdir:
        ir_dir, vi_dir = ir_dir / subdir, vi_dir / subdir
        if not (ir_dir.is_dir() and vi_dir.is_dir()):
            raise DataError(f"{ir_dir} or {vi_dir} does not exist (subdir={subdir!r})")
    try:
        listing = find_pairs(ir_dir, vi_dir, recursive=True, strict=True)
    except DatasetError as exc:
        raise DataError(str(exc)) from None
    only_ir, only_vi = listing.only_ir, listing.only_vis
    if only_ir or only_vi:
        raise DataError(
            f"{root}: unpaired images: {len(only_ir)} only in {ir_dir.name}/ (e.g. {only_ir[:3]}), "
            f"{len(only_vi)} only in {vi_dir.name}/ (e.g. {only_vi[:3]}); every image needs a "
            "same-named partner"
        )
    return listing.pairs


def load_pairs(pairs: Sequence[Pair], min_size: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read every pair as luma, checking both images have the same size and are big enough."""
    out = []
    for pair in pairs:
        try:
            ir, vi = read_luma(pair.ir), read_luma(pair.vis)
        except DatasetError as exc:
            raise DataError(str(exc)) from None
        if ir.shape != vi.shape:
            raise DataError(
                f"pair {pair.name!r}: infrared is {ir.shape[1]}x{ir.shape[0]} but visible is "
                f"{vi.shape[1]}x{vi.shape[0]}; pairs must be registered to the same size"
            )
        if min(ir.shape) < min_size:
            raise DataError(
                f"pair {pair.name!r} is {ir.shape[1]}x{ir.shape[0]}, smaller than the patch size "
                f"{min_size}; lower --patch-size or remove it"
            )
        out.append((ir, vi))
    return out


def split_names(names: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic held-out split by pair (never by patch), independent of the training seed."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    names = sorted(names)
    n_val = round(len(names) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(names) > 1:
        n_val = 1
    if len(names) - n_val < 1:
        raise DataError(
            f"{len(names)} pairs leave nothing to train on with val_fraction={val_fraction}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val


def is_scene_numbered(names: Sequence[str]) -> bool:
    """LLVIP-style frame names: six digits whose first two name the scene."""
    return bool(names) and all(len(n) == 6 and n.isdigit() for n in names)


def split_folder(names: Sequence[str], val_fraction: float, val_scenes: str | None
                 ) -> tuple[list[str], list[str]]:
    """One folder's split. Scene-numbered frames are split by scene (neighbouring frames are
    near-duplicates, so a random split would leak); anything else by :func:`split_names`."""
    scenes = {s.strip() for s in (val_scenes or "").split(",") if s.strip()}
    if not (is_scene_numbered(names) and scenes):
        return split_names(names, val_fraction)
    val = sorted(n for n in names if n[:2] in scenes)
    train = sorted(n for n in names if n[:2] not in scenes)
    if not train:
        raise DataError(f"val_scenes={val_scenes!r} leaves nothing to train on")
    return train, val


def folder_label(root: str | Path) -> str:
    """How the pairs of an extra data folder are named: ``parent/folder`` (llvip/unlabelled)."""
    resolved = Path(root).resolve()
    return f"{resolved.parent.name}/{resolved.name}"


def patch_grid(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the patches (published: no partial patches at the border)."""
    return [(y, x) for y in range(0, height - size + 1, stride)
            for x in range(0, width - size + 1, stride)]


class PatchSet:
    """All training patches in RAM as uint8 ``[N, P, P]`` for IR and visible."""

    def __init__(self, images: Sequence[tuple[np.ndarray, np.ndarray]], size: int, stride: int,
                 max_patches: int | None = None, per_pair: int | None = None) -> None:
        if size < 16 or size % 2:
            raise DataError(f"patch size must be an even number >= 16, got {size}")
        if stride < 1:
            raise DataError(f"patch stride must be >= 1, got {stride}")
        ir_list, vi_list = [], []
        for ir, vi in images:
            for y, x in spread(patch_grid(*ir.shape, size, stride), per_pair):
                ir_list.append(ir[y:y + size, x:x + size])
                vi_list.append(vi[y:y + size, x:x + size])
        if not ir_list:
            raise DataError(f"no {size}x{size} patches fit in the training images")
        if max_patches:
            ir_list, vi_list = ir_list[:max_patches], vi_list[:max_patches]
        self.ir = np.ascontiguousarray(np.stack(ir_list))
        self.vi = np.ascontiguousarray(np.stack(vi_list))
        self.size = size

    def __len__(self) -> int:
        return len(self.ir)

    def batch(self, idx: np.ndarray, hflip: np.ndarray, vflip: np.ndarray,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """IR and visible ``[b, 1, P, P]`` float32 in [0, 1], with per-sample flips applied."""
        ir = apply_flips(self.ir[idx], hflip, vflip)
        vi = apply_flips(self.vi[idx], hflip, vflip)

        def to_tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a.astype(np.float32) / 255.0)[:, None].to(device)

        return to_tensor(ir), to_tensor(vi)


def spread(corners: list[tuple[int, int]], limit: int | None) -> list[tuple[int, int]]:
    """At most ``limit`` corners, evenly spaced over the grid (a large frame then covers its
    whole area without outweighing the small ones)."""
    return select_evenly(corners, limit) if limit else corners


def apply_flips(images: np.ndarray, hflip: np.ndarray, vflip: np.ndarray) -> np.ndarray:
    """Flip ``[b, H, W]`` images per sample (an involution: applying it twice undoes it)."""
    out = np.array(images, copy=True)
    out[hflip] = out[hflip][:, :, ::-1]
    out[vflip] = out[vflip][:, ::-1, :]
    return out


def epoch_plan(n: int, batch_size: int, epoch: int, seed: int, flips: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled order and flip flags for one epoch, a pure function of (seed, epoch).

    Being derived rather than carried, the plan is the same after a resume; incomplete final
    batches are dropped (as published).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)[: (n // batch_size) * batch_size]
    if flips:
        hflip, vflip = rng.random(len(order)) < 0.5, rng.random(len(order)) < 0.5
    else:
        hflip = vflip = np.zeros(len(order), dtype=bool)
    return order, hflip, vflip


@dataclass
class PreparedData:
    """Everything a stage trains and validates on, checked, plus what the metadata records."""

    patches: PatchSet
    val_images: list[tuple[np.ndarray, np.ndarray]]
    train_names: list[str]
    val_names: list[str]
    info: dict[str, Any]
    train_pairs: list[Pair] = field(default_factory=list)  # the files (the task stage reads colour)


def prepare_data(data_dir: str | Path | Sequence[str | Path], cfg: TrainConfig) -> PreparedData:
    """Find, read, check and cut the data; every problem raises DataError before training.

    ``data_dir`` may list several folders: each is split on its own (:func:`split_folder`), the
    pairs of every folder after the first are named ``parent/folder/name``.
    """
    d = cfg.data
    dirs = [data_dir] if isinstance(data_dir, str | Path) else list(data_dir)
    if not dirs:
        raise DataError("no data folder given")
    train_pairs: list[Pair] = []
    val_pairs: list[Pair] = []
    sources = []
    for i, root in enumerate(dirs):
        pairs = find_training_pairs(root, d.subdir)
        prefix = f"{folder_label(root)}/" if i else ""
        pairs = [Pair(prefix + p.name, p.ir, p.vis, p.annotation) for p in pairs]
        names = [p.name[len(prefix):] for p in pairs]
        train_n, val_n = split_folder(names, d.val_fraction, d.val_scenes)
        by_name = {p.name: p for p in pairs}
        train_pairs += [by_name[prefix + n] for n in train_n]
        val_pairs += [by_name[prefix + n] for n in val_n]
        sources.append({"path": recorded_path(root), "pairs": len(pairs),
                        "train_pairs": len(train_n), "val_pairs": len(val_n)})
    train_images = load_pairs(train_pairs, min_size=d.patch_size)
    val_images = load_pairs(val_pairs, min_size=8)
    val_names = [p.name for p in val_pairs]
    if cfg.run.val_max_images:
        val_images = val_images[: cfg.run.val_max_images]
        val_names = val_names[: cfg.run.val_max_images]
    patches = PatchSet(train_images, d.patch_size, d.stride, d.max_patches,
                       d.max_patches_per_pair)
    info = {
        "name": d.name or " + ".join(Path(r).resolve().name for r in dirs),
        "path": sources[0]["path"],
        "pairs": sum(s["pairs"] for s in sources),
        "train_pairs": len(train_pairs),
        "val_pairs": len(val_names),
        "val_names": val_names,
        "patches": len(patches),
        "patch_size": d.patch_size,
        "stride": d.stride,
        "max_patches_per_pair": d.max_patches_per_pair,
        "flips": d.flips,
        "subdir": d.subdir,
    }
    if len(sources) > 1:
        info["sources"] = sources
        info["val_scenes"] = d.val_scenes
    return PreparedData(patches, val_images, [p.name for p in train_pairs], val_names, info,
                        train_pairs)


# ----------------------------------------------------------------------------------------------
# synthetic pairs for smoke tests


def synthetic_pair(height: int, width: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A fake aligned pair: IR = warm blobs on a cool background, visible = textured scene.

    The two share geometry (the blobs are visible as dim shapes) but differ in what is salient,
    which is all a fusion loss needs to have something to learn.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ir = 0.15 + 0.1 * yy / max(height - 1, 1)
    vi = 0.3 + 0.4 * (1.0 - yy / max(height - 1, 1))
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(3, height / 4 + 3), rng.uniform(3, width / 4 + 3)
        blob = np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
        ir += rng.uniform(0.4, 0.8) * blob
        vi -= 0.15 * blob
    freq = rng.uniform(0.1, 0.5)
    vi += 0.12 * np.sin(freq * xx + rng.uniform(0, 6)) * np.cos(freq * 0.7 * yy)
    vi += rng.normal(0, 0.03, vi.shape)
    ir += rng.normal(0, 0.01, ir.shape)
    to8 = lambda a: np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8)  # noqa: E731
    return to8(ir), to8(vi)


def write_synthetic_dataset(root: str | Path, n: int = 6, height: int = 64, width: int = 80,
                            seed: int = 0, colour: bool = False) -> Path:
    """Write ``n`` synthetic pairs as ``root/ir/NNN.png`` and ``root/vi/NNN.png``."""
    root = Path(root)
    (root / "ir").mkdir(parents=True, exist_ok=True)
    (root / "vi").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        ir, vi = synthetic_pair(height, width, rng)
        if colour:
            vi = cv2.merge([vi, np.clip(vi.astype(int) + 10, 0, 255).astype(np.uint8), vi])
        cv2.imwrite(str(root / "ir" / f"{i:03d}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"{i:03d}.png"), vi)
    return root
