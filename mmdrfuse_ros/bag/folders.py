"""Write a rosbag2 from a registered infrared/visible dataset laid out as two folders.

Works for the usual fusion datasets: RoadScene and TNO (``ir/``, ``vi/``), MSRS (``ir/``,
``vi/``), LLVIP (``infrared/<split>``, ``visible/<split>`` and VOC ``Annotations/*.xml`` with
``person`` boxes). Pairs are matched by file name without extension. The pairs are registered
(same geometry), so both images of a pair get the same stamp, the calibration holds the identity
homography, and ground-truth boxes (when given) apply to both modalities.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mmdrfuse_ros.bag import io
from mmdrfuse_ros.fusion.pairs import IMAGE_EXTENSIONS, list_images

#: VOC class names counted as pedestrians (LLVIP uses "person").
PERSON_CLASSES = frozenset({"person", "people", "pedestrian"})
#: first stamp of dataset bags: fixed, so the same folders give the same bag.
DEFAULT_START_NS = 1_735_689_600 * 1_000_000_000
THERMAL_FRAME_ID = "thermal_optical_frame"
RGB_FRAME_ID = "rgb_optical_frame"


class FolderError(ValueError):
    """Folders that cannot make a bag (empty, unpaired, unreadable, mismatched annotations)."""


@dataclass(frozen=True)
class Pair:
    stem: str
    ir: Path
    vis: Path
    annotation: Path | None = None


@dataclass
class FolderSummary:
    path: str
    pairs: int
    boxes: int
    skipped_ir: list[str] = field(default_factory=list)
    skipped_vis: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        text = f"wrote {self.path}: {self.pairs} pairs"
        if self.boxes:
            text += f", {self.boxes} ground-truth pedestrian boxes"
        if self.skipped_ir or self.skipped_vis:
            text += (
                f" (skipped {len(self.skipped_ir)} infrared and {len(self.skipped_vis)} visible "
                "images without a partner of the same name)"
            )
        return text


def _images(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FolderError(f"{role} folder not found: {folder}")
    found = list_images(folder)
    if not found:
        raise FolderError(
            f"{role} folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return found


def find_pairs(
    ir_dir: str | Path, vis_dir: str | Path, annotations: str | Path | None = None
) -> tuple[list[Pair], list[str], list[str]]:
    """(pairs sorted by name, infrared-only stems, visible-only stems).

    FolderError for a missing or empty folder, no common names, or annotations that do not match
    the images (an image without its .xml, or no .xml matching any image).
    """
    ir = _images(Path(ir_dir), "infrared")
    vis = _images(Path(vis_dir), "visible")
    common = sorted(set(ir) & set(vis))
    if not common:
        raise FolderError(
            f"no image names in common between {ir_dir} (e.g. {next(iter(ir))!r}) and "
            f"{vis_dir} (e.g. {next(iter(vis))!r}): pairs are matched by file name"
        )
    ann: dict[str, Path] = {}
    if annotations is not None:
        ann_dir = Path(annotations)
        if not ann_dir.is_dir():
            raise FolderError(f"annotations folder not found: {ann_dir}")
        ann = {p.stem: p for p in ann_dir.glob("*.xml")}
        if not ann:
            raise FolderError(f"annotations folder {ann_dir} has no VOC .xml files")
        missing = [stem for stem in common if stem not in ann]
        if len(missing) == len(common):
            raise FolderError(
                f"annotations do not match the images: none of the {len(ann)} .xml files in "
                f"{ann_dir} is named like an image (e.g. {next(iter(ann))}.xml vs image "
                f"{common[0]!r})"
            )
        if missing:
            raise FolderError(
                f"annotations do not match the images: {len(missing)} of {len(common)} pairs "
                f"have no .xml in {ann_dir} (e.g. {', '.join(missing[:5])}); pass folders "
                "holding only annotated images"
            )
    pairs = [Pair(stem, ir[stem], vis[stem], ann.get(stem)) for stem in common]
    return pairs, sorted(set(ir) - set(vis)), sorted(set(vis) - set(ir))


def parse_voc(path: Path) -> tuple[list[list[float]], tuple[int, int] | None]:
    """(person boxes [x1, y1, x2, y2], image size (w, h) or None) of a VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise FolderError(f"annotation {path} is not readable VOC XML: {exc}") from exc
    size = None
    w, h = root.findtext("size/width"), root.findtext("size/height")
    if w and h and int(float(w)) > 0 and int(float(h)) > 0:
        size = (int(float(w)), int(float(h)))
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if name not in PERSON_CLASSES:
            continue
        try:
            coords = [float(obj.findtext(f"bndbox/{k}") or "nan") for k in
                      ("xmin", "ymin", "xmax", "ymax")]  # fmt: skip
        except ValueError as exc:
            raise FolderError(f"annotation {path}: a box has a non-numeric coordinate") from exc
        if not all(np.isfinite(coords)) or coords[2] <= coords[0] or coords[3] <= coords[1]:
            raise FolderError(f"annotation {path}: malformed box {coords}")
        boxes.append(coords)
    return boxes, size


def read_infrared(path: Path) -> tuple[np.ndarray, str]:
    """(image, encoding): 16-bit files stay mono16 (radiometric data), colour files become grey."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FolderError(f"cannot read image {path}")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype == np.uint16:
        return image, "mono16"
    if image.dtype != np.uint8:
        raise FolderError(f"{path}: {image.dtype} infrared images are not supported (8/16-bit)")
    return image, "mono8"


def read_visible(path: Path) -> tuple[np.ndarray, str]:
    """(image, encoding): bgr8 for colour, mono8 for grey (TNO); 16-bit reduced to 8 bits."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FolderError(f"cannot read image {path}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise FolderError(f"{path}: {image.dtype} visible images are not supported (8/16-bit)")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return image, ("bgr8" if image.ndim == 3 else "mono8")


def write_folder_bag(
    ir_dir: str | Path,
    vis_dir: str | Path,
    out: str | Path,
    rate_hz: float = 10.0,
    annotations: str | Path | None = None,
    storage: str = "mcap",
    start_ns: int = DEFAULT_START_NS,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> FolderSummary:
    """Write the pairs as a bag played at ``rate_hz``; FolderError names what is wrong.

    Annotations are checked against the images before anything is written; a problem found
    while writing (an unreadable image, a pair of different sizes) stops the writing with the
    pairs before it kept in a closed, readable bag, and is then raised.
    """
    if not rate_hz > 0:
        raise FolderError(f"--rate must be > 0 Hz, got {rate_hz}")
    pairs, only_ir, only_vis = find_pairs(ir_dir, vis_dir, annotations)
    if limit is not None:
        pairs = pairs[: max(int(limit), 0)]
    parsed = {p.stem: parse_voc(p.annotation) for p in pairs if p.annotation is not None}
    period = round(1e9 / rate_hz)
    summary = FolderSummary(str(out), 0, 0, only_ir, only_vis)
    calibration_written = False
    with io.BagWriter(out, storage=storage) as writer:
        for topic, msgtype in (
            (io.CALIBRATION_TOPIC, io.STRING),
            (io.THERMAL_TOPIC, io.IMAGE),
            (io.RGB_TOPIC, io.IMAGE),
        ):
            writer.add_topic(topic, msgtype)
        if parsed:
            writer.add_topic(io.GROUND_TRUTH_TOPIC, io.STRING)
            writer.add_topic(io.GROUND_TRUTH_THERMAL_TOPIC, io.STRING)
        try:
            for index, pair in enumerate(pairs):
                ir_img, ir_enc = read_infrared(pair.ir)
                vis_img, vis_enc = read_visible(pair.vis)
                if ir_img.shape[:2] != vis_img.shape[:2]:
                    raise FolderError(
                        f"pair {pair.stem!r}: infrared {ir_img.shape[1]}x{ir_img.shape[0]} and "
                        f"visible {vis_img.shape[1]}x{vis_img.shape[0]} differ in size; "
                        "from-folders expects registered pairs of the same geometry"
                    )
                stamp = start_ns + index * period
                if not calibration_written:
                    writer.write(io.CALIBRATION_TOPIC, stamp, io.json_msg(_calibration(pair)))
                    calibration_written = True
                writer.write(io.THERMAL_TOPIC, stamp,
                             io.image_msg(ir_img, ir_enc, stamp, THERMAL_FRAME_ID))  # fmt: skip
                writer.write(io.RGB_TOPIC, stamp,
                             io.image_msg(vis_img, vis_enc, stamp, RGB_FRAME_ID))  # fmt: skip
                if pair.stem in parsed:
                    boxes, size = parsed[pair.stem]
                    _check_annotation(pair, boxes, size, vis_img.shape[1], vis_img.shape[0])
                    wh = (vis_img.shape[1], vis_img.shape[0])
                    for topic, frame_id in (
                        (io.GROUND_TRUTH_TOPIC, RGB_FRAME_ID),
                        (io.GROUND_TRUTH_THERMAL_TOPIC, THERMAL_FRAME_ID),
                    ):
                        doc = io.ground_truth_doc(stamp, frame_id, wh, boxes)
                        doc["source"] = pair.stem
                        writer.write(topic, stamp, io.json_msg(doc))  # fmt: skip
                    summary.boxes += len(boxes)
                summary.pairs += 1
                if progress:
                    progress(1)
        except FolderError as exc:
            raise FolderError(
                f"{exc}\n(stopped: the bag at {out} holds the {summary.pairs} pair(s) before "
                "this one)"
            ) from exc
    summary.counts = dict(writer.counts)
    return summary


def _calibration(first: Pair) -> dict:
    return {
        "homography_thermal_to_rgb": np.eye(3).tolist(),
        "thermal": {"frame_id": THERMAL_FRAME_ID, "topic": io.THERMAL_TOPIC,
                    "folder": str(first.ir.parent)},
        "rgb": {"frame_id": RGB_FRAME_ID, "topic": io.RGB_TOPIC, "folder": str(first.vis.parent)},
        "source": "mmdrfuse bag from-folders (registered pairs: identity homography)",
    }  # fmt: skip


def _check_annotation(
    pair: Pair, boxes: list[list[float]], size: tuple[int, int] | None, width: int, height: int
) -> None:
    """Annotations that do not describe this image are an error, not silently wrong AP."""
    if size is not None and size != (width, height):
        raise FolderError(
            f"annotation {pair.annotation} is for a {size[0]}x{size[1]} image but "
            f"{pair.vis.name} is {width}x{height}: annotations do not match the images"
        )
    tol = 2.0
    for box in boxes:
        if box[0] < -tol or box[1] < -tol or box[2] > width + tol or box[3] > height + tol:
            raise FolderError(
                f"annotation {pair.annotation}: box {box} lies outside the {width}x{height} "
                f"image {pair.vis.name}: annotations do not match the images"
            )
