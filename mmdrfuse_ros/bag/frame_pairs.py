"""Synchronised thermal/RGB frame pairs taken from a bag or two folders, spread over the
recording: what ``mmdrfuse calibrate`` (and anything else that wants a few representative
pairs) reads.

A bag is read twice: first only the header stamps (no image is decoded), to pair each thermal
frame with the nearest RGB frame and choose candidates evenly over the recording; then only
the chosen messages are decoded. Near-duplicate candidates (a static scene) are skipped so that
the pairs differ. A bag cut short gives the pairs before the break, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..datasets import DatasetError, find_pairs, read_thermal_image, read_visible_image
from ..fusion.calibration_search import to_grey
from ..msgs.images import MalformedImageError, UnsupportedEncodingError
from ..sampling import select_evenly
from . import io

#: candidates decoded per wanted pair, from which near-duplicates are dropped
CANDIDATES_PER_PAIR = 2
#: least mean absolute change (of a [0, 1] 64 px wide thumbnail) between two kept pairs
MIN_CHANGE = 0.004


@dataclass
class FramePairs:
    """The pairs read, their names, and what was left out or noticed on the way."""

    thermals: list[np.ndarray] = field(default_factory=list)
    rgbs: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """The frame as the calibration sees it (:func:`to_grey`, any depth), 64 px wide."""
    grey = to_grey(image)
    return cv2.resize(grey, (64, max(1, round(64 * grey.shape[0] / grey.shape[1]))),
                      interpolation=cv2.INTER_AREA)


def drop_near_duplicates(pairs: FramePairs, count: int) -> FramePairs:
    """At most ``count`` pairs, spread over the input, each differing from the previous kept
    one (thermal thumbnails) by at least :data:`MIN_CHANGE`."""
    kept: list[int] = []
    last: np.ndarray | None = None
    for i, thermal in enumerate(pairs.thermals):
        thumb = _thumbnail(thermal)
        if last is None or float(np.abs(thumb - last).mean()) >= MIN_CHANGE:
            kept.append(i)
            last = thumb
    out = FramePairs(notes=list(pairs.notes))
    dropped = len(pairs.thermals) - len(kept)
    if dropped and len(kept) < count:
        out.notes.append(f"{dropped} near-duplicate pair(s) skipped (the scene barely changes "
                         "between them)")
    for i in select_evenly(kept, count):
        out.thermals.append(pairs.thermals[i])
        out.rgbs.append(pairs.rgbs[i])
        out.names.append(pairs.names[i])
    return out


# ----------------------------------------------------------------------------- bags
def _image_topic(bag: io.BagReader, topic: str, role: str) -> None:
    topics = bag.topics
    images = sorted(t for t, info in topics.items() if info.msgtype in (io.IMAGE,
                                                                        io.COMPRESSED_IMAGE))
    if topic not in topics:
        raise io.BagError(f"bag {bag.path} has no {role} topic {topic}; its image topics: "
                          f"{images or 'none'} (choose with --{role}-topic)")
    if topics[topic].msgtype not in (io.IMAGE, io.COMPRESSED_IMAGE):
        raise io.BagError(f"{role} topic {topic} carries {topics[topic].msgtype}, not "
                          f"sensor_msgs Image or CompressedImage")


def _stamps(bag: io.BagReader, topics: tuple[str, str], notes: list[str]
            ) -> dict[str, list[int]]:
    """Header stamps per topic, in bag order; a break in the bag ends the list with a note."""
    stamps: dict[str, list[int]] = {t: [] for t in topics}
    try:
        for topic, _, _, raw in bag.messages(topics):
            stamps[topic].append(io.header_stamp_from_cdr(raw))
    except io.BagError as exc:
        notes.append(f"the bag stops early ({exc}); pairs are taken from before the break")
    return stamps


def _match(thermal: list[int], rgb: list[int], slop_ns: int) -> list[tuple[int, int]]:
    """(thermal stamp, nearest RGB stamp) for every thermal frame with an RGB frame in slop."""
    if not rgb:
        return []
    ordered = np.array(sorted(rgb), np.int64)
    out = []
    for stamp in sorted(thermal):
        k = int(np.searchsorted(ordered, stamp))
        near = [ordered[j] for j in (k - 1, k) if 0 <= j < len(ordered)]
        best = min(near, key=lambda s: abs(int(s) - stamp))
        if abs(int(best) - stamp) <= slop_ns:
            out.append((stamp, int(best)))
    return out


def _decode(bag: io.BagReader, wanted: dict[str, set[int]], notes: list[str]
            ) -> dict[tuple[str, int], np.ndarray]:
    """The images of the wanted (topic, stamp)s; undecodable ones are left out with a note."""
    images: dict[tuple[str, int], np.ndarray] = {}
    try:
        for topic, msgtype, _, raw in bag.messages(wanted):
            stamp = io.header_stamp_from_cdr(raw)
            if stamp not in wanted[topic] or (topic, stamp) in images:
                continue
            try:
                images[(topic, stamp)] = io.message_to_array(bag.deserialize(raw, msgtype),
                                                             msgtype)[0]
            except (io.BagError, ValueError, MalformedImageError,
                    UnsupportedEncodingError) as exc:
                notes.append(f"{topic} frame at {stamp / 1e9:.3f} s left out: {exc}")
    except io.BagError as exc:
        notes.append(f"the bag stops early while decoding ({exc})")
    return images


def pairs_from_bag(path: str | Path, thermal_topic: str = io.THERMAL_TOPIC,
                   rgb_topic: str = io.RGB_TOPIC, count: int = 10,
                   slop_s: float = 0.02) -> FramePairs:
    """Up to ``count`` synchronised pairs (header stamps within ``slop_s``) spread over the bag.

    BagError when the bag or a topic is missing or no pair can be formed."""
    notes: list[str] = []
    with io.BagReader(path) as bag:
        _image_topic(bag, thermal_topic, "thermal")
        _image_topic(bag, rgb_topic, "rgb")
        if bag.truncated:
            notes.append(f"bag truncated: {bag.truncated}")
        stamps = _stamps(bag, (thermal_topic, rgb_topic), notes)
        start_ns = min(min(s, default=0) for s in stamps.values())
        matched = _match(stamps[thermal_topic], stamps[rgb_topic], round(slop_s * 1e9))
        if not matched:
            raise io.BagError(
                f"no thermal frame of {thermal_topic} ({len(stamps[thermal_topic])} frames) has "
                f"an RGB frame of {rgb_topic} ({len(stamps[rgb_topic])}) within {slop_s} s: "
                "are the two cameras' stamps on one clock? (raise --slop)")
        chosen = select_evenly(matched, count * CANDIDATES_PER_PAIR)
        wanted = {thermal_topic: {t for t, _ in chosen}, rgb_topic: {r for _, r in chosen}}
        images = _decode(bag, wanted, notes)
    found = FramePairs(notes=notes)
    for t_stamp, r_stamp in chosen:
        thermal, rgb = images.get((thermal_topic, t_stamp)), images.get((rgb_topic, r_stamp))
        if thermal is not None and rgb is not None:
            found.thermals.append(thermal)
            found.rgbs.append(rgb)
            found.names.append(f"t={(t_stamp - start_ns) / 1e9:.3f}s")
    if not found.names:
        raise io.BagError(f"none of the chosen pairs of {path} could be decoded: "
                          + "; ".join(notes[-3:]))
    return drop_near_duplicates(found, count)


# ----------------------------------------------------------------------------- folders
def pairs_from_folders(ir: str | Path, vis: str | Path, count: int = 10) -> FramePairs:
    """Up to ``count`` same-named pairs spread over two folders (or two single files);
    unreadable files are left out with a note. DatasetError when nothing can be read."""
    ir, vis = Path(ir), Path(vis)
    if ir.is_file() and vis.is_file():
        listing_pairs = [(ir.stem, ir, vis)]
    else:
        listing = find_pairs(ir, vis)
        listing_pairs = [(p.name, p.ir, p.vis) for p in listing.pairs]
    found = FramePairs()
    for name, ir_path, vis_path in select_evenly(listing_pairs, count * CANDIDATES_PER_PAIR):
        try:
            thermal, rgb = read_thermal_image(ir_path), read_visible_image(vis_path)
        except (DatasetError, ValueError, OSError) as exc:
            found.notes.append(f"{name} left out: {exc}")
            continue
        sizes = (thermal.shape[:2], rgb.shape[:2])
        if found.names and sizes != (found.thermals[0].shape[:2], found.rgbs[0].shape[:2]):
            found.notes.append(f"{name} left out: its sizes differ from {found.names[0]}'s "
                               "(one rig, one size per camera)")
            continue
        found.thermals.append(thermal)
        found.rgbs.append(rgb)
        found.names.append(name)
    if not found.names:
        raise DatasetError(f"no pair of {ir} and {vis} could be read: "
                           + "; ".join(found.notes[:3]))
    return drop_near_duplicates(found, count)
