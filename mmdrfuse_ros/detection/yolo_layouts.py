"""YOLO output layouts: telling them apart from the shapes, and decoding each one.

A YOLO export's output is a table of boxes, but three families lay it out differently:

* ``yolox``: ``[1, N, 5 + C]`` RAW grid predictions, one row per cell of the stride 8, 16 and 32
  grids (row-major, in that order), so ``N = sum over strides of (H/s)(W/s)``. Per row
  ``(dx, dy, log w, log h)`` relative to the cell, objectness, C class scores (already sigmoid).
  Decoded here: ``cx = (dx + grid_x) * s``, ``w = exp(log w) * s``, score = objectness x class.
* ``v5``: ``[1, 3N, 5 + C]`` decoded rows ``cx, cy, w, h, objectness, classes`` in input pixels,
  three anchors per cell (YOLOv5, YOLOv7). Also the layout of a YOLOX export made with
  ``--decode_in_inference`` (its rows are already pixels), which has ``N`` rows: set it by hand.
* ``v8``: ``[1, 4 + C, N]`` decoded columns ``cx, cy, w, h, classes``, no objectness
  (YOLOv8, YOLO11).

``auto`` places an output by its shape against the network input size and refuses one it
cannot place (or could place two ways) with a ValueError naming the shape: a wrong guess would
not fail, it would silently produce nonsense boxes.
"""

from __future__ import annotations

import numpy as np

from .base import PERSON_CLASS_ID

LAYOUTS = ("auto", "v5", "v8", "yolox")
#: stride sets of the detection heads we know: P3-P5 (all three families) and P3-P6 (v5 P6).
STRIDE_SETS: tuple[tuple[int, ...], ...] = ((8, 16, 32), (8, 16, 32, 64))
YOLOX_STRIDES = (8, 16, 32)
V5_ANCHORS_PER_CELL = 3
#: exp() of a log-size above this would overflow float32; such rows are garbage anyway.
_MAX_LOG_SIZE = 20.0


def grid_cells(input_hw: tuple[int, int], strides: tuple[int, ...] = YOLOX_STRIDES) -> int:
    """Cells of all grids for an input ``(H, W)``: 3549 for 416x416, 8400 for 640x640."""
    h, w = input_hw
    return sum((h // s) * (w // s) for s in strides)


def _cell_counts(input_hw: tuple[int, int], strides: tuple[int, ...]) -> set[int]:
    h, w = input_hw
    floor = sum((h // s) * (w // s) for s in strides)
    ceil = sum((-(-h // s)) * (-(-w // s)) for s in strides)
    return {floor, ceil}


def _table_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D table of a ``[1, a, b]`` (or ``[a, b]``) output; ValueError for anything else."""
    if len(shape) == 3 and shape[0] != 1:
        raise ValueError(f"YOLO output {list(shape)} has a batch of {shape[0]}; expected 1")
    if len(shape) not in (2, 3) or any(d <= 0 for d in shape):
        raise ValueError(
            f"cannot decode a YOLO output of shape {list(shape)}: expected [1, rows, columns] "
            "(layouts " + ", ".join(LAYOUTS[1:]) + ")"
        )
    return int(shape[-2]), int(shape[-1])


def describe_layouts(input_hw: tuple[int, int]) -> str:
    """The shapes each layout would have for this input, for error messages."""
    n = grid_cells(input_hw)
    return (f"for a {input_hw[0]}x{input_hw[1]} input the known layouts are yolox [1, {n}, 5+C], "
            f"v5 [1, {V5_ANCHORS_PER_CELL * n}, 5+C] and v8 [1, 4+C, {n}]")


def place_layout(shape: tuple[int, ...], input_hw: tuple[int, int] | None) -> str:
    """The one layout an output of ``shape`` can be for a network input of ``input_hw``.

    ValueError naming the shape and the known layouts when none fits, or when two do.
    """
    rows, cols = _table_shape(tuple(shape))
    if input_hw is None:
        raise ValueError(f"layout 'auto' needs the network input size to place output "
                         f"{list(shape)}; pass it, or set the layout (v5, v8 or yolox)")
    found: list[str] = []
    for strides in STRIDE_SETS:  # the attributes (box + classes) are always the short axis
        cells = _cell_counts(input_hw, strides)
        if strides == YOLOX_STRIDES and rows in cells and 6 <= cols < rows:
            found.append("yolox")
        if rows in {V5_ANCHORS_PER_CELL * c for c in cells} and 6 <= cols < rows:
            found.append("v5")
        if cols in cells and 5 <= rows < cols:
            found.append("v8")
    found = sorted(set(found))
    if len(found) == 1:
        return found[0]
    what = "fits none of the" if not found else f"fits more than one ({', '.join(found)}) of the"
    raise ValueError(f"YOLO output of shape {list(shape)} {what} layouts it could be: "
                     f"{describe_layouts(input_hw)}; set the layout explicitly if you know it")


def yolox_grid(input_hw: tuple[int, int], rows: int) -> np.ndarray:
    """``[rows, 3]`` of (grid_x, grid_y, stride) matching a YOLOX output with ``rows`` rows."""
    h, w = input_hw
    for rounding in (lambda a, s: a // s, lambda a, s: -(-a // s)):
        parts = []
        for s in YOLOX_STRIDES:
            gh, gw = rounding(h, s), rounding(w, s)
            ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
            parts.append(np.column_stack((xs.ravel(), ys.ravel(), np.full(gh * gw, s))))
        grid = np.concatenate(parts).astype(np.float32)
        if len(grid) == rows:
            return grid
    raise ValueError(f"a YOLOX output needs {grid_cells(input_hw)} rows for a {h}x{w} input "
                     f"(strides {YOLOX_STRIDES}), got {rows}")


def _rows(output: np.ndarray, layout: str, input_hw: tuple[int, int] | None
          ) -> tuple[np.ndarray, np.ndarray]:
    """(cx cy w h in input pixels [N, 4], class scores [N, C]) of a 2-D output table."""
    out = output
    if layout == "v8":
        out = out.T
        if out.shape[1] < 5:
            raise ValueError(f"v8 output needs 4 + classes rows, got {out.shape[1]}")
        return out[:, :4], out[:, 4:]
    if out.shape[1] < 6:
        raise ValueError(f"{layout} output needs 5 + classes columns, got {out.shape[1]}")
    if layout == "v5":
        return out[:, :4], out[:, 5:] * out[:, 4:5]
    if input_hw is None:
        raise ValueError("the yolox layout needs the network input size to build its grids")
    grid = yolox_grid(input_hw, len(out))
    stride = grid[:, 2:3]
    centre = (out[:, 0:2] + grid[:, 0:2]) * stride
    with np.errstate(over="ignore", invalid="ignore"):
        size = np.exp(np.minimum(out[:, 2:4], _MAX_LOG_SIZE)) * stride
    return np.hstack((centre, size)), out[:, 5:] * out[:, 4:5]


def decode(
    output: np.ndarray,
    layout: str = "auto",
    score_threshold: float = 0.25,
    classes: tuple[int, ...] | None = (PERSON_CLASS_ID,),
    input_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes Nx4 x1y1x2y2, scores N, class ids N) in network-input pixels, before NMS.

    ``input_hw`` is the network input ``(H, W)``: needed by ``auto`` (to place the output) and
    ``yolox`` (to build the grids). Rows with a non-finite box or score are dropped.
    """
    out = np.asarray(output, dtype=np.float32)
    rows, cols = _table_shape(out.shape)
    out = out.reshape(rows, cols)
    if layout == "auto":
        layout = place_layout(output.shape, input_hw)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    cxcywh, class_scores = _rows(out, layout, input_hw)
    class_scores = np.nan_to_num(class_scores, nan=-np.inf, posinf=-np.inf, neginf=-np.inf)
    class_ids = np.argmax(class_scores, axis=1)
    scores = class_scores[np.arange(len(class_scores)), class_ids]
    keep = (scores >= score_threshold) & np.isfinite(cxcywh).all(axis=1)
    if classes is not None:
        keep &= np.isin(class_ids, classes)
    cx, cy, w, h = cxcywh[keep].T
    boxes = np.column_stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    finite = np.isfinite(boxes).all(axis=1)
    return boxes[finite], scores[keep][finite], class_ids[keep][finite]
