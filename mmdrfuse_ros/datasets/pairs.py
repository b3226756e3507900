"""Infrared/visible pairs on disk: the public dataset layouts and matching images by name.

RoadScene, TNO and MSRS keep two folders ``ir/`` + ``vi/``, LLVIP ``infrared/`` + ``visible/``
(with a split folder such as ``train/`` inside, and VOC ``Annotations/*.xml``). A pair is two
images with the same name without extension (``ir/a.png`` pairs with ``vi/a.jpg``); with
``recursive``, the name is the relative path without extension (``day/a``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")
#: (thermal folder, visible folder) names of the public datasets.
DATASET_LAYOUTS = (("ir", "vi"), ("infrared", "visible"), ("IR", "VIS"))
ANNOTATION_EXTENSION = ".xml"


@dataclass(frozen=True)
class Pair:
    """One registered pair: its name, the two image files and, when given, its VOC annotation."""

    name: str
    ir: Path
    vis: Path
    annotation: Path | None = None


@dataclass
class PairListing:
    """What :func:`find_pairs` found: the pairs by name, and the names found on one side only."""

    pairs: list[Pair] = field(default_factory=list)
    only_ir: list[str] = field(default_factory=list)
    only_vis: list[str] = field(default_factory=list)


def find_layout(root: Path) -> tuple[Path, Path] | None:
    """The (thermal, visible) sub-folders of a dataset root, or None if it has no known layout."""
    for ir_name, vis_name in DATASET_LAYOUTS:
        if (root / ir_name).is_dir() and (root / vis_name).is_dir():
            return root / ir_name, root / vis_name
    return None


def list_images(folder: Path, *, recursive: bool = False, strict: bool = True
                ) -> dict[str, Path]:
    """Image files of a folder by name without extension (``a.jpg`` pairs with ``a.png``);
    with ``recursive``, by relative path without extension (``day/a``).

    Two files with one name (``a.jpg`` and ``a.png``, often a stale copy) are ambiguous:
    DatasetError names every such pair of files, since any choice could score, fuse or train
    on the wrong image. ``strict=False`` keeps the first in sorted order instead.
    """
    files: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not (path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS):
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in files:
            clashes.setdefault(key, [files[key].name]).append(path.name)
        files.setdefault(key, path)
    if clashes and strict:
        shown = "; ".join(f"{key!r}: {', '.join(names)}" for key, names in
                          list(clashes.items())[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise DatasetError(
            f"{folder}: {len(clashes)} image name(s) used by more than one file ({shown}{more}); "
            "pairs are matched by name without extension: keep one file per name")
    return files


def _images(folder: Path, role: str, recursive: bool, strict: bool) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{role} folder not found: {folder}")
    found = list_images(folder, recursive=recursive, strict=strict)
    if not found:
        raise DatasetError(
            f"{role} folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return found


def find_pairs(
    ir_dir: str | Path,
    vis_dir: str | Path,
    annotations_dir: str | Path | None = None,
    *,
    recursive: bool = False,
    strict: bool = True,
) -> PairListing:
    """The same-named pairs of two folders, sorted by name, and the names without a partner.

    DatasetError for a missing folder or one without images, no name in common, two images
    with one name (unless ``strict=False``: the first is kept), or annotations that do not
    match the pairs (an image without its .xml, or no .xml named like any image). Names on one
    side only are the caller's to judge.
    """
    ir_dir, vis_dir = Path(ir_dir), Path(vis_dir)
    ir = _images(ir_dir, "infrared", recursive, strict)
    vis = _images(vis_dir, "visible", recursive, strict)
    common = sorted(set(ir) & set(vis))
    if not common:
        raise DatasetError(
            f"no image names in common between {ir_dir} (e.g. {next(iter(ir))!r}) and "
            f"{vis_dir} (e.g. {next(iter(vis))!r}): pairs are matched by file name"
        )
    ann = {} if annotations_dir is None else _annotations(Path(annotations_dir), common,
                                                           recursive)
    return PairListing(
        pairs=[Pair(name, ir[name], vis[name], ann.get(name)) for name in common],
        only_ir=sorted(set(ir) - set(vis)),
        only_vis=sorted(set(vis) - set(ir)),
    )


def _annotations(folder: Path, names: list[str], recursive: bool) -> dict[str, Path]:
    """The .xml of every pair name, checked: all present (files for other names are fine)."""
    if not folder.is_dir():
        raise DatasetError(f"annotations folder not found: {folder}")
    pattern = "*" + ANNOTATION_EXTENSION
    files = sorted(folder.rglob(pattern) if recursive else folder.glob(pattern))
    ann = {p.relative_to(folder).with_suffix("").as_posix(): p for p in files}
    if not ann:
        raise DatasetError(f"annotations folder {folder} has no VOC .xml files")
    missing = [name for name in names if name not in ann]
    if len(missing) == len(names):
        raise DatasetError(
            f"annotations do not match the images: none of the {len(ann)} .xml files in "
            f"{folder} is named like an image (e.g. {next(iter(ann))}.xml vs image "
            f"{names[0]!r})"
        )
    if missing:
        raise DatasetError(
            f"annotations do not match the images: {len(missing)} of {len(names)} pairs "
            f"have no .xml in {folder} (e.g. {', '.join(missing[:5])}); pass folders "
            "holding only annotated images"
        )
    return ann
