"""Temporal stability of an output mapping: a static scene while a hot object crosses it.

The background of a real validation pair stays still; a warm disc (thermal value 1.0, nothing
in the visible image) slides in from the left edge, across, and out. Flicker is the mean
absolute frame-to-frame change of the mean fused intensity outside the object (in both frames,
with a margin), on the 0..255 scale: 0 means the background does not move at all. A per-frame
stretch (``minmax``) pumps as the object changes the frame's extremes; smoothed percentile bounds
should not.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from mmdrfuse_ros.fusion.output import OutputMapper

#: ``net(ir01, vi01) -> fused01``: the network's fused luma, before any output mapping.
NetFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def hot_object_frames(ir: np.ndarray, frames: int = 24, radius_frac: float = 0.08
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(thermal01 with a hot disc, disc mask) per frame: the disc enters at the left edge,
    crosses the middle row and leaves at the right; the first and last frames have no disc."""
    h, w = ir.shape
    r = max(2.0, radius_frac * min(h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    base = ir.astype(np.float32) / 255.0 if ir.dtype == np.uint8 else ir.astype(np.float32)
    out = []
    for i in range(frames):
        cx = -2 * r + (w + 4 * r) * i / max(frames - 1, 1)
        mask = (yy - h / 2) ** 2 + (xx - cx) ** 2 <= r * r
        frame = base.copy()
        frame[mask] = 1.0
        out.append((frame, mask))
    return out


def flicker(net: NetFn, ir: np.ndarray, vi: np.ndarray, mapper: OutputMapper,
            frames: int = 24, margin: int = 4) -> float:
    """Mean |delta mean intensity| outside the object between consecutive frames (0..255)."""
    vi01 = vi.astype(np.float32) / 255.0 if vi.dtype == np.uint8 else vi.astype(np.float32)
    mapper.reset()
    previous: tuple[np.ndarray, np.ndarray] | None = None
    changes = []
    for thermal, mask in hot_object_frames(ir, frames):
        fused = mapper(net(thermal, vi01))
        grown = _dilate(mask, margin)
        if previous is not None:
            keep = ~(grown | previous[1])
            if keep.any():
                changes.append(abs(float(fused[keep].mean()) - float(previous[0][keep].mean())))
        previous = (fused, grown)
    return 255.0 * float(np.mean(changes)) if changes else 0.0


def _dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    size = 2 * margin + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
