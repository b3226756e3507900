"""Write a rosbag2 from a registered infrared/visible dataset laid out as two folders.

Works for the usual fusion datasets: RoadScene and TNO (``ir/``, ``vi/``), MSRS (``ir/``,
``vi/``), LLVIP (``infrared/<split>``, ``visible/<split>`` and VOC ``Annotations/*.xml`` with
``person`` boxes). Pairs are matched by file name without extension
(:func:`mmdrfuse_ros.datasets.find_pairs`). The pairs are registered (same geometry), so both
images of a pair get the same stamp, the calibration holds the identity homography, and
ground-truth boxes (when given) apply to both modalities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmdrfuse_ros import datasets
from mmdrfuse_ros.bag import io
from mmdrfuse_ros.datasets import DatasetError, Pair

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
    listing = datasets.find_pairs(ir_dir, vis_dir, annotations)
    pairs = listing.pairs if limit is None else listing.pairs[: max(int(limit), 0)]
    parsed = {p.name: datasets.parse_voc(p.annotation) for p in pairs if p.annotation is not None}
    period = round(1e9 / rate_hz)
    summary = FolderSummary(str(out), 0, 0, listing.only_ir, listing.only_vis)
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
                images = _read_pair(pair)
                stamp = start_ns + index * period
                if index == 0:
                    writer.write(io.CALIBRATION_TOPIC, stamp, io.json_msg(_calibration(pair)))
                summary.boxes += _write_pair(writer, pair, images, stamp, parsed.get(pair.name))
                summary.pairs += 1
                if progress:
                    progress(1)
        except DatasetError as exc:
            raise FolderError(
                f"{exc}\n(stopped: the bag at {out} holds the {summary.pairs} pair(s) before "
                "this one)", partial=True,
            ) from exc
    summary.counts = dict(writer.counts)
    return summary


def _read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(thermal mono8/mono16, visible bgr8/mono8) of a registered pair; FolderError if not."""
    ir_img, vis_img = datasets.read_thermal_image(pair.ir), datasets.read_visible_image(pair.vis)
    if ir_img.shape[:2] != vis_img.shape[:2]:
        raise FolderError(
            f"pair {pair.name!r}: infrared {ir_img.shape[1]}x{ir_img.shape[0]} and "
            f"visible {vis_img.shape[1]}x{vis_img.shape[0]} differ in size; "
            "from-folders expects registered pairs of the same geometry"
        )
    return ir_img, vis_img


def _write_pair(
    writer: io.BagWriter,
    pair: Pair,
    images: tuple[np.ndarray, np.ndarray],
    stamp: int,
    annotation: tuple[list[list[float]], tuple[int, int] | None] | None,
) -> int:
    """Write one pair (and its ground truth) at ``stamp``; returns the number of boxes."""
    ir_img, vis_img = images
    ir_enc = "mono16" if ir_img.dtype == np.uint16 else "mono8"
    vis_enc = "bgr8" if vis_img.ndim == 3 else "mono8"
    writer.write(io.THERMAL_TOPIC, stamp, io.image_msg(ir_img, ir_enc, stamp, THERMAL_FRAME_ID))
    writer.write(io.RGB_TOPIC, stamp, io.image_msg(vis_img, vis_enc, stamp, RGB_FRAME_ID))
    if annotation is None:
        return 0
    boxes, size = annotation
    wh = (vis_img.shape[1], vis_img.shape[0])
    _check_annotation(pair, boxes, size, *wh)
    for topic, frame_id in (
        (io.GROUND_TRUTH_TOPIC, RGB_FRAME_ID),
        (io.GROUND_TRUTH_THERMAL_TOPIC, THERMAL_FRAME_ID),
    ):
        doc = io.ground_truth_doc(stamp, frame_id, wh, boxes)
        doc["source"] = pair.name
        writer.write(topic, stamp, io.json_msg(doc))
    return len(boxes)


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
