"""Write a rosbag2 from a registered infrared/visible dataset laid out as two folders.

Works for the usual fusion datasets: RoadScene and TNO (``ir/``, ``vi/``), MSRS (``ir/``,
``vi/``), LLVIP (``infrared/<split>``, ``visible/<split>`` and VOC ``Annotations/*.xml`` with
``person`` boxes). Pairs are matched by file name without extension
(:func:`mmdrfuse_ros.datasets.find_pairs`). Both images of a pair get the same stamp. The pairs
are registered (same geometry): the calibration holds the identity homography and ground-truth
boxes (when given) apply to both modalities; or a ``homography`` maps thermal to visible pixels,
and the thermal ground truth is mapped through it. The bag folder also gets the fusion node's
parameters for it (:mod:`mmdrfuse_ros.bag.params`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmdrfuse_ros import datasets
from mmdrfuse_ros.bag import io
from mmdrfuse_ros.bag import params as bag_params
from mmdrfuse_ros.datasets import DatasetError, Pair
from mmdrfuse_ros.fusion.geometry import apply_homography

#: first stamp of dataset bags: fixed, so the same folders give the same bag.
DEFAULT_START_NS = 1_735_689_600 * 1_000_000_000
THERMAL_FRAME_ID = "thermal_optical_frame"
RGB_FRAME_ID = "rgb_optical_frame"


class FolderError(DatasetError):
    """Folders that cannot make a bag; ``partial`` when a bag holding the pairs before the
    problem was written (and closed, so it is readable)."""

    def __init__(self, message: str, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass
class FolderSummary:
    path: str
    pairs: int
    boxes: int
    skipped_ir: list[str] = field(default_factory=list)
    skipped_vis: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    params: str | None = None  # the params file written for the bag

    def describe(self) -> str:
        text = f"wrote {self.path}: {self.pairs} pairs"
        if self.boxes:
            text += f", {self.boxes} ground-truth pedestrian boxes"
        if self.skipped_ir or self.skipped_vis:
            text += (
                f" (skipped {len(self.skipped_ir)} infrared and {len(self.skipped_vis)} visible "
                "images without a partner of the same name)"
            )
        if self.params:
            text += f"\nfusion_node parameters for it: {self.params}"
        return text


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
    homography: np.ndarray | None = None,
) -> FolderSummary:
    """Write the pairs as a bag played at ``rate_hz``; FolderError names what is wrong.

    Annotations are checked against the images before anything is written; a problem found
    while writing (an unreadable or truncated image, a pair of different sizes without a
    ``homography``) stops the writing with the pairs before it kept in a closed, readable bag,
    and is then raised. ``homography`` (thermal -> visible pixels) is for pairs that are not
    registered: it goes into the calibration, and thermal ground truth is mapped through it.
    The fusion node's parameters for the bag go to ``<out>/mmdrfuse_params.yaml``.
    """
    if not rate_hz > 0:
        raise FolderError(f"--rate must be > 0 Hz, got {rate_hz}")
    if limit is not None and limit < 1:
        raise FolderError(f"--limit must be at least 1 pair, got {limit}")
    listing = datasets.find_pairs(ir_dir, vis_dir, annotations)
    pairs = listing.pairs if limit is None else listing.pairs[:limit]
    parsed = {p.name: datasets.parse_voc(p.annotation) for p in pairs if p.annotation is not None}
    period = round(1e9 / rate_hz)
    summary = FolderSummary(str(out), 0, 0, listing.only_ir, listing.only_vis)
    problem: DatasetError | None = None
    thermal_encoding = None
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
                images = _read_pair(pair, registered=homography is None)
                stamp = start_ns + index * period
                if index == 0:
                    thermal_encoding = _encodings(images)[0]
                    writer.write(io.CALIBRATION_TOPIC, stamp,
                                 io.json_msg(_calibration(pair, homography)))
                summary.boxes += _write_pair(writer, pair, images, stamp, parsed.get(pair.name),
                                             homography)
                summary.pairs += 1
                if progress:
                    progress(1)
        except DatasetError as exc:
            problem = exc
    summary.counts = dict(writer.counts)
    if thermal_encoding is not None:
        node_params = bag_params.fusion_params_for(
            None if homography is None else np.asarray(homography).tolist(), thermal_encoding,
            independent_frames=True)
        written = bag_params.write_params(out, node_params, "mmdrfuse bag from-folders")
        summary.params = str(written) if written else None
    if problem is not None:
        raise FolderError(
            f"{problem}\n(stopped: the bag at {out} holds the {summary.pairs} pair(s) before "
            "this one)", partial=True,
        ) from problem
    return summary


def _read_pair(pair: Pair, registered: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(thermal mono8/mono16, visible bgr8/mono8) of a pair; FolderError if unreadable, or if
    ``registered`` pairs differ in size."""
    ir_img, vis_img = datasets.read_thermal_image(pair.ir), datasets.read_visible_image(pair.vis)
    if registered and ir_img.shape[:2] != vis_img.shape[:2]:
        raise FolderError(
            f"pair {pair.name!r}: infrared {ir_img.shape[1]}x{ir_img.shape[0]} and "
            f"visible {vis_img.shape[1]}x{vis_img.shape[0]} differ in size; "
            "from-folders expects registered pairs of the same geometry (or pass --homography)"
        )
    return ir_img, vis_img


def _encodings(images: tuple[np.ndarray, np.ndarray]) -> tuple[str, str]:
    ir_img, vis_img = images
    return ("mono16" if ir_img.dtype == np.uint16 else "mono8",
            "bgr8" if vis_img.ndim == 3 else "mono8")


def _thermal_boxes(boxes: list[list[float]], homography: np.ndarray | None,
                   size: tuple[int, int]) -> list[list[float]]:
    """Visible-pixel boxes in thermal pixels: the bounding box of the corners mapped through
    the inverse homography, clipped to the thermal image (``size`` = width, height)."""
    if homography is None or not boxes:
        return boxes
    inverse = np.linalg.inv(np.asarray(homography, dtype=np.float64))
    out = []
    for x1, y1, x2, y2 in boxes:
        corners = apply_homography(inverse, np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]))
        lo = np.clip(corners.min(axis=0), 0, size)
        hi = np.clip(corners.max(axis=0), 0, size)
        out.append([round(float(v), 2) for v in (*lo, *hi)])
    return out


def _write_pair(
    writer: io.BagWriter,
    pair: Pair,
    images: tuple[np.ndarray, np.ndarray],
    stamp: int,
    annotation: tuple[list[list[float]], tuple[int, int] | None] | None,
    homography: np.ndarray | None = None,
) -> int:
    """Write one pair (and its ground truth) at ``stamp``; returns the number of boxes."""
    ir_img, vis_img = images
    ir_enc, vis_enc = _encodings(images)
    writer.write(io.THERMAL_TOPIC, stamp, io.image_msg(ir_img, ir_enc, stamp, THERMAL_FRAME_ID))
    writer.write(io.RGB_TOPIC, stamp, io.image_msg(vis_img, vis_enc, stamp, RGB_FRAME_ID))
    if annotation is None:
        return 0
    boxes, size = annotation
    wh = (vis_img.shape[1], vis_img.shape[0])
    thermal_wh = (ir_img.shape[1], ir_img.shape[0])
    _check_annotation(pair, boxes, size, *wh)
    for topic, frame_id, frame_boxes, frame_wh in (
        (io.GROUND_TRUTH_TOPIC, RGB_FRAME_ID, boxes, wh),
        (io.GROUND_TRUTH_THERMAL_TOPIC, THERMAL_FRAME_ID,
         _thermal_boxes(boxes, homography, thermal_wh), thermal_wh),
    ):
        doc = io.ground_truth_doc(stamp, frame_id, frame_wh, frame_boxes)
        doc["source"] = pair.name
        writer.write(topic, stamp, io.json_msg(doc))
    return len(boxes)


def _calibration(first: Pair, homography: np.ndarray | None = None) -> dict:
    registered = homography is None
    matrix = np.eye(3) if registered else np.asarray(homography, dtype=np.float64)
    return {
        "homography_thermal_to_rgb": matrix.tolist(),
        "thermal": {"frame_id": THERMAL_FRAME_ID, "topic": io.THERMAL_TOPIC,
                    "folder": str(first.ir.parent)},
        "rgb": {"frame_id": RGB_FRAME_ID, "topic": io.RGB_TOPIC, "folder": str(first.vis.parent)},
        "source": "mmdrfuse bag from-folders (registered pairs: identity homography)"
        if registered else "mmdrfuse bag from-folders --homography",
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
