"""Pictures and tables that show a calibration: people judge a registration by eye.

* ``before_after.png``: per pair (up to 3), a checkerboard of the thermal view over the RGB
  image, before (thermal resized onto the RGB frame, what the node does without a homography,
  or the ``--init`` start) and after (warped by the estimate); misregistration shows as broken
  edges at the squares' borders.
* ``edges.png``: thermal edges (red) over RGB edges (green) after the warp; where they
  coincide they turn yellow.
* ``pairs.csv``: one line per pair: correlation, corner distance from the answer, whether it
  agreed, and why not.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

from .calibration import Calibration
from .calibration_search import to_grey

#: checkerboard squares along the RGB width
SQUARES = 8
#: width (px) of each picture column
PANEL_WIDTH = 640


def _u8(grey01: np.ndarray) -> np.ndarray:
    return np.clip(grey01 * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _stretched(grey01: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(grey01, (1, 99))
    return np.clip((grey01 - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _warped(thermal: np.ndarray, h: np.ndarray | None, rgb_wh: tuple[int, int]) -> np.ndarray:
    grey = _stretched(to_grey(thermal))
    if h is None:
        return cv2.resize(grey, rgb_wh, interpolation=cv2.INTER_LINEAR)
    return cv2.warpPerspective(grey, h, rgb_wh, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def checkerboard(thermal: np.ndarray, rgb: np.ndarray, h: np.ndarray | None) -> np.ndarray:
    """BGR picture: squares alternate between the warped thermal view and the RGB image."""
    v_grey = _stretched(to_grey(rgb))
    rh, rw = v_grey.shape
    t_view = _warped(thermal, h, (rw, rh))
    side = max(8, rw // SQUARES)
    ys, xs = np.mgrid[0:rh, 0:rw]
    board = ((ys // side + xs // side) % 2).astype(bool)
    out = np.where(board, t_view, v_grey)
    picture = cv2.cvtColor(_u8(out), cv2.COLOR_GRAY2BGR)
    picture[..., 2] = np.where(board, np.maximum(picture[..., 2], 60), picture[..., 2])
    return picture


def _edges(grey01: np.ndarray) -> np.ndarray:
    blurred = cv2.GaussianBlur(_u8(grey01), (0, 0), 1.5)
    return cv2.Canny(blurred, 30, 90) > 0


def edge_overlay(thermal: np.ndarray, rgb: np.ndarray, h: np.ndarray) -> np.ndarray:
    """BGR picture: thermal edges in red, RGB edges in green, both where they meet."""
    v_grey = _stretched(to_grey(rgb))
    rh, rw = v_grey.shape
    t_edges = _edges(_warped(thermal, h, (rw, rh)))
    v_edges = _edges(v_grey)
    picture = (0.35 * cv2.cvtColor(_u8(v_grey), cv2.COLOR_GRAY2BGR)).astype(np.uint8)
    picture[v_edges] = (0, 255, 0)
    picture[t_edges] = (0, 0, 255)
    picture[t_edges & v_edges] = (0, 255, 255)
    return picture


def _panel(image: np.ndarray, title: str) -> np.ndarray:
    scale = PANEL_WIDTH / image.shape[1]
    panel = cv2.resize(image, (PANEL_WIDTH, max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    cv2.putText(panel, title, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(panel, title, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)
    return panel


def pairs_table(calibration: Calibration) -> str:
    """CSV text: name, correlation, deviation_px, inlier, problem."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["pair", "correlation", "deviation_px", "inlier", "problem"])
    for pair in calibration.pairs:
        row = pair.to_dict()
        writer.writerow([row["name"], row["correlation"], row["deviation_px"], row["inlier"],
                         row["problem"]])
    return buffer.getvalue()


def write_report(folder: str | Path, calibration: Calibration, thermals: list[np.ndarray],
                 rgbs: list[np.ndarray], before: np.ndarray | None = None) -> list[Path]:
    """Write the pictures and ``pairs.csv`` into ``folder``; returns the files written.

    ``before``: the homography of the "before" column (None: plain resize)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in calibration.pairs]
    shown = [i for i, p in enumerate(calibration.pairs) if p.inlier][:3] or [0]
    rows_ba, rows_edges = [], []
    for i in shown:
        rows_ba.append(np.hstack([
            _panel(checkerboard(thermals[i], rgbs[i], before), f"{names[i]}: before"),
            _panel(checkerboard(thermals[i], rgbs[i], calibration.homography),
                   f"{names[i]}: after"),
        ]))  # fmt: skip
        rows_edges.append(_panel(edge_overlay(thermals[i], rgbs[i], calibration.homography),
                                 f"{names[i]}: thermal edges (red) on RGB edges (green)"))
    written = []
    for name, rows in (("before_after.png", rows_ba), ("edges.png", rows_edges)):
        path = folder / name
        if not cv2.imwrite(str(path), np.vstack(rows)):
            raise OSError(f"cannot write {path}")
        written.append(path)
    table = folder / "pairs.csv"
    table.write_text(pairs_table(calibration))
    written.append(table)
    return written
