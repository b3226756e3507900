"""Homography files: a 3x3 thermal -> visible matrix as people and tools save it.

Accepted: ``.npy``; ``.json`` / ``.yaml`` holding the 9 numbers (nested or flat) or an object
that names them (``homography``, ``homography_thermal_to_rgb`` as in a bag's calibration
document, or a ROS params file's ``fusion_node: ros__parameters: homography``); any other
suffix is whitespace-separated text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError

#: keys a document may store the matrix under, first found wins.
HOMOGRAPHY_KEYS = ("homography", "homography_thermal_to_rgb", "H")


def _from_document(doc: Any, path: Path) -> Any:
    """The matrix inside a JSON/YAML document: the document itself, or under a known key."""
    if not isinstance(doc, Mapping):
        return doc
    for section in (doc, *(body.get("ros__parameters", {}) for body in doc.values()
                           if isinstance(body, Mapping))):  # fmt: skip
        for key in HOMOGRAPHY_KEYS:
            if isinstance(section, Mapping) and key in section:
                return section[key]
    raise DatasetError(
        f"homography {path}: a {type(doc).__name__} without any of the keys "
        f"{list(HOMOGRAPHY_KEYS)}; expected 9 numbers (3x3), e.g. [[1, 0, 0], [0, 1, 0], "
        "[0, 0, 1]], or an object holding them under one of those keys")


def _load(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"homography {path}: no such file" if not path.exists()
                           else f"homography {path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".json":
        return _from_document(json.loads(path.read_text()), path)
    if suffix in (".yaml", ".yml"):
        import yaml

        return _from_document(yaml.safe_load(path.read_text()), path)
    return np.loadtxt(path, dtype=np.float64)


def read_homography(path: str | Path) -> np.ndarray:
    """A finite, invertible 3x3 float64 matrix from a file; DatasetError (a ValueError) saying
    what is wrong with it otherwise."""
    from mmdrfuse_ros.fusion.geometry import validate_homography

    path = Path(path)
    try:
        values = _load(path)
    except DatasetError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"homography {path}: cannot be read ({exc})") from None
    except Exception as exc:  # yaml's parser errors
        raise DatasetError(f"homography {path}: cannot be read ({type(exc).__name__}: "
                           f"{exc})") from None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"homography {path}: expected 9 numbers (3x3), got "
                           f"{str(values)[:80]}") from None
    if array.size != 9:
        raise DatasetError(f"homography {path}: needs 9 values (3x3), found {array.size}")
    try:
        matrix = validate_homography(array)
    except ValueError as exc:
        raise DatasetError(f"homography {path}: {exc}") from None
    assert matrix is not None
    return matrix
