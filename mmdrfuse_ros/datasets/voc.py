"""Pascal VOC annotation files (LLVIP's ``Annotations/*.xml``): pedestrian boxes and image size."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .errors import DatasetError

#: VOC class names counted as pedestrians (LLVIP uses "person").
PERSON_CLASSES = frozenset({"person", "people", "pedestrian"})


def parse_voc(path: str | Path) -> tuple[list[list[float]], tuple[int, int] | None]:
    """(person boxes [x1, y1, x2, y2], image size (w, h) or None) of a VOC annotation file.

    Objects of other classes are skipped; DatasetError for unreadable XML or a malformed box.
    """
    if not Path(path).is_file():  # a FIFO would make the parser wait for ever
        raise DatasetError(f"annotation {path} is not a regular file")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"annotation {path} is not readable VOC XML: {exc}") from exc
    size = None
    w, h = root.findtext("size/width"), root.findtext("size/height")
    try:
        if w and h and int(float(w)) > 0 and int(float(h)) > 0:
            size = (int(float(w)), int(float(h)))
    except (ValueError, OverflowError) as exc:
        raise DatasetError(f"annotation {path}: image size {w!r} x {h!r} is not a number") from exc
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if name not in PERSON_CLASSES:
            continue
        try:
            coords = [float(obj.findtext(f"bndbox/{k}") or "nan") for k in
                      ("xmin", "ymin", "xmax", "ymax")]  # fmt: skip
        except ValueError as exc:
            raise DatasetError(f"annotation {path}: a box has a non-numeric coordinate") from exc
        if not all(np.isfinite(coords)) or coords[2] <= coords[0] or coords[3] <= coords[1]:
            raise DatasetError(f"annotation {path}: malformed box {coords}")
        boxes.append(coords)
    return boxes, size
