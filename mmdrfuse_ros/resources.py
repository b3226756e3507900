"""Find the package's data files (config, launch, weights) in every kind of install.

colcon/ament installs them under ``<prefix>/share/mmdrfuse_ros``; ``pip install .`` puts the same
``data_files`` under ``sys.prefix/share/mmdrfuse_ros``; ``pip install -e .`` leaves them in the
source tree. The default weights also ship inside the Python package itself, so they are found
even where no share directory exists.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PACKAGE = "mmdrfuse_ros"
DEFAULT_WEIGHTS_NAME = "student_default.pt"
#: the students shipped inside the package, by the name ``weights`` may give instead of a path:
#: ``default`` (best on the picture, docs/TRAINING_RESULTS.md) and ``detection`` (best for the
#: detector, for detector-first users: ``weights:=detection``).
SHIPPED_WEIGHTS = {"default": DEFAULT_WEIGHTS_NAME, "detection": "student_detection.pt"}


def share_dir() -> Path | None:
    """The directory holding ``config/`` and ``launch/``, or None if none can be found."""
    try:  # a sourced ROS 2 workspace: the authoritative answer
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not installed, or package not in the ament index
        pass
    here = Path(__file__).resolve().parent
    candidates = [
        here.parent,  # source tree / editable install
        Path(sys.prefix) / "share" / PACKAGE,  # pip install into a venv
        # <prefix>/lib/pythonX.Y/site-packages/mmdrfuse_ros -> <prefix>/share/mmdrfuse_ros
        # (pip --prefix, and colcon's install/<pkg>/ layout before the workspace is sourced)
        here.parents[3] / "share" / PACKAGE if len(here.parents) > 3 else here,
    ]
    for candidate in candidates:
        if (candidate / "config").is_dir():
            return candidate
    return None


def config_path(name: str) -> Path:
    """Path of ``config/<name>``; FileNotFoundError names where it looked."""
    root = share_dir()
    if root is None or not (root / "config" / name).is_file():
        raise FileNotFoundError(f"config/{name} not found (share directory: {root})")
    return root / "config" / name


def default_weights_path() -> Path:
    """The shipped student checkpoint, inside the Python package."""
    return shipped_weights_path("default")


def shipped_weights_path(name: str) -> Path:
    """A shipped student by its name in :data:`SHIPPED_WEIGHTS` (KeyError for another name)."""
    return Path(str(resources.files(f"{PACKAGE}.fusion").joinpath("weights",
                                                                   SHIPPED_WEIGHTS[name])))
