"""Image pairs on disk: dataset folder layouts, matching by name, and reading frames as cameras do.

One place for what every tool (fuse, metrics, training, bag from-folders) needs to know about
RoadScene/TNO (``ir``/``vi``), MSRS (``ir``/``vi``) and LLVIP (``infrared``/``visible``) folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")
#: (thermal folder, visible folder) names of the public datasets.
DATASET_LAYOUTS = (("ir", "vi"), ("infrared", "visible"), ("IR", "VIS"))


@dataclass
class PairListing:
    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)  # (name, thermal, visible)
    only_thermal: list[str] = field(default_factory=list)
    only_visible: list[str] = field(default_factory=list)


def find_layout(root: Path) -> tuple[Path, Path] | None:
    """The (thermal, visible) sub-folders of a dataset root, or None if it has no known layout."""
    for ir_name, vis_name in DATASET_LAYOUTS:
        if (root / ir_name).is_dir() and (root / vis_name).is_dir():
            return root / ir_name, root / vis_name
    return None


def list_images(folder: Path, *, recursive: bool = False, strict: bool = False
                ) -> dict[str, Path]:
    """Image files of a folder by name without extension (``a.jpg`` pairs with ``a.png``);
    with ``recursive``, by relative path without extension (``day/a``).

    Two files with one name (``a.jpg`` and ``a.png``) are ambiguous: the first in sorted order
    is kept, or, with ``strict``, ValueError names both.
    """
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not (path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS):
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in files and strict:
            raise ValueError(f"{folder}: two images named {key!r} ({files[key].name}, {path.name})")
        files.setdefault(key, path)
    return files


def match_pairs(thermal_dir: Path, visible_dir: Path) -> PairListing:
    """Pairs with the same name in both folders, plus the names found on one side only."""
    thermal, visible = list_images(thermal_dir), list_images(visible_dir)
    listing = PairListing()
    for stem in sorted(set(thermal) | set(visible)):
        if stem in thermal and stem in visible:
            listing.pairs.append((stem, thermal[stem], visible[stem]))
        elif stem in thermal:
            listing.only_thermal.append(stem)
        else:
            listing.only_visible.append(stem)
    return listing


def read_image(path: Path) -> np.ndarray:
    """Read keeping the bit depth (16-bit thermal stays uint16); raise ValueError if unreadable."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ValueError(f"{path}: not a readable image")
    return image


def read_thermal(path: Path) -> np.ndarray:
    """A thermal frame as one channel (colour-saved thermal files are converted to grey)."""
    image = read_image(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)
    return image


def read_visible(path: Path) -> np.ndarray:
    """A visible frame as OpenCV reads it: grey or BGR (alpha dropped)."""
    image = read_image(path)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    return image
