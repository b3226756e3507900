"""rosbag2 reading and writing with ``rosbags`` (pure Python), and rosbags messages <-> numpy.

Why rosbags and not rosbag2_py: rosbag2_py is not installable from PyPI, and rosbags reads and
writes the same files (mcap or sqlite3, metadata.yaml) that ``ros2 bag`` uses on a real distro.
Messages stay in their CDR bytes until someone needs the fields: replay publishes those bytes as
they are, so a bag is played without deserialising its images.

Image pixel semantics (encodings, ``step`` padding, byte order) live in :mod:`mmdrfuse_ros.msgs`;
its functions accept rosbags messages too, because they carry the same fields.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore

from mmdrfuse_ros import topics
from mmdrfuse_ros.bag import salvage
from mmdrfuse_ros.msgs.compressed import compressed_to_array
from mmdrfuse_ros.msgs.images import encoding_info, image_to_array

#: message definitions used to write bags and to read the types we know. sensor_msgs, std_msgs and
#: rosgraph_msgs are identical (same RIHS01 hashes) from Humble to Kilted.
TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)

#: rosbag2 metadata version written: 8 is what Jazzy writes; Jazzy and Kilted read it.
BAG_VERSION = 8

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"

# Topics inside bags we write: absolute names of the nodes' default inputs, plus two that only
# bags carry (ground truth, calibration), as std_msgs/String JSON documented in docs/REPLAY.md.
THERMAL_TOPIC = "/" + topics.THERMAL_IMAGE
RGB_TOPIC = "/" + topics.RGB_IMAGE
RGB_INFO_TOPIC = "/" + topics.RGB_CAMERA_INFO
#: ground-truth pedestrian boxes in RGB pixels, one message per RGB frame, stamped like it.
GROUND_TRUTH_TOPIC = "/ground_truth/pedestrians"
#: the same pedestrians in thermal pixels, one message per thermal frame (thermal-only AP).
GROUND_TRUTH_THERMAL_TOPIC = "/ground_truth/thermal/pedestrians"
#: {"homography_thermal_to_rgb": 3x3, ...}: written once, at the start of the bag.
CALIBRATION_TOPIC = "/mmdrfuse/calibration"

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(RuntimeError):
    """A bag that cannot be written or read, or lacks what is needed; the text says what to fix."""


# ----------------------------------------------------------------------------- messages
def time_msg(stamp_ns: int) -> Any:
    """builtin_interfaces/Time from integer nanoseconds."""
    cls = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def header_msg(stamp_ns: int, frame_id: str) -> Any:
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=time_msg(stamp_ns), frame_id=frame_id)


def image_msg(image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """A rosbags sensor_msgs/Image holding ``image`` (rows packed, little-endian)."""
    dtype, channels = encoding_info(encoding)
    got = 1 if image.ndim == 2 else image.shape[2]
    if image.ndim not in (2, 3) or got != channels or image.dtype != dtype:
        raise ValueError(
            f"encoding {encoding!r} needs {channels} channel(s) of {dtype}, "
            f"got shape {image.shape} of {image.dtype}"
        )
    data = np.ascontiguousarray(image, dtype=dtype.newbyteorder("<"))
    return TYPESTORE.types[IMAGE](
        header=header_msg(stamp_ns, frame_id),
        height=int(image.shape[0]),
        width=int(image.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=int(image.shape[1] * channels * dtype.itemsize),
        data=data.reshape(-1).view(np.uint8),
    )


def message_to_array(msg: Any, msgtype: str) -> tuple[np.ndarray, str]:
    """(array, encoding) of a rosbags Image or CompressedImage; ValueError when malformed."""
    if msgtype == IMAGE:
        return image_to_array(msg), msg.encoding
    if msgtype == COMPRESSED_IMAGE:
        return compressed_to_array(msg)
    raise ValueError(f"{msgtype} is not an image message type")


def camera_info_msg(
    width: int, height: int, k: Sequence[float], stamp_ns: int, frame_id: str
) -> Any:
    """A rosbags CameraInfo of an undistorted pinhole camera, intrinsics ``k`` 3x3 row-major."""
    kk = np.asarray(k, dtype=np.float64).reshape(9)
    p = np.zeros(12)
    p[[0, 1, 2, 4, 5, 6, 10]] = kk[[0, 1, 2, 3, 4, 5, 8]]
    return TYPESTORE.types[CAMERA_INFO](
        header=header_msg(stamp_ns, frame_id),
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=kk,
        r=np.eye(3).reshape(9),
        p=p,
        binning_x=0,
        binning_y=0,
        roi=TYPESTORE.types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def json_msg(payload: Any) -> Any:
    """A rosbags std_msgs/String carrying ``payload`` as JSON."""
    return TYPESTORE.types[STRING](data=json.dumps(payload, separators=(",", ":")))


def header_stamp_from_cdr(raw: bytes | memoryview) -> int:
    """Header stamp (ns) of a serialised message whose first field is a std_msgs/Header.

    CDR puts a 4-byte encapsulation header first, then ``stamp.sec`` (int32) and
    ``stamp.nanosec`` (uint32), so the stamp is read without deserialising a whole image.
    """
    little = raw[1] == 1  # encapsulation kind: 0x0001 CDR_LE, 0x0000 CDR_BE
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def with_header_stamp(raw: bytes, stamp_ns: int) -> bytes:
    """A copy of a serialised header-first message with its stamp replaced (loop replays)."""
    little = raw[1] == 1
    out = bytearray(raw)
    struct.pack_into(
        "<iI" if little else ">iI", out, 4, stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000
    )
    return bytes(out)


# ----------------------------------------------------------------------------- writing
class BagWriter:
    """Write messages to a new rosbag2 (mcap by default, zstd-compressed chunks).

    Use as a context manager: on leaving, even after an error, the bag is closed with its
    metadata, so what was written before a problem stays readable.
    """

    def __init__(self, path: str | Path, storage: str = "mcap", compress: bool = True) -> None:
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}: choose one of {sorted(STORAGES)}")
        if self.path.exists():
            raise BagError(f"{self.path} exists already; remove it or choose another --out")
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        if compress and storage == "mcap":
            # compressed mcap chunks: readable by every rosbag2 mcap plugin, no extra metadata
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        try:
            self._writer.open()
        except Exception as exc:  # rosbags raises WriterError/OSError: one clear message
            raise BagError(f"cannot create bag {self.path}: {exc}") from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._writer.close()
        except Exception as exc:  # a full disk: say so, unless an earlier error says more
            if exc_info[0] is None:
                raise BagError(f"cannot finish bag {self.path}: {type(exc).__name__}: "
                               f"{exc}") from exc

    def add_topic(self, topic: str, msgtype: str) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=TYPESTORE
            )
            self.counts[topic] = 0

    def write(self, topic: str, log_ns: int, msg: Any) -> None:
        """Serialise ``msg`` and write it with receive time ``log_ns``."""
        connection = self._connections.get(topic)
        if connection is None:
            self.add_topic(topic, msg.__msgtype__)
            connection = self._connections[topic]
        data = TYPESTORE.serialize_cdr(msg, msg.__msgtype__)
        try:
            self._writer.write(connection, int(log_ns), data)
        except Exception as exc:  # OSError (a full disk) or rosbags' WriterError
            written = sum(self.counts.values())
            raise BagError(f"cannot write to bag {self.path} ({type(exc).__name__}: {exc}); "
                           f"it keeps the {written} messages written before") from exc
        self.counts[topic] += 1


# ----------------------------------------------------------------------------- reading
def _listed_files(folder: Path) -> list[str]:
    """The storage files metadata.yaml lists, or [] when it is absent or unreadable."""
    import yaml

    try:
        info = yaml.safe_load((folder / "metadata.yaml").read_text())
        return list(info["rosbag2_bagfile_information"]["relative_file_paths"])
    except Exception:  # absent, not YAML, another layout: fall back to the folder's files
        return []


@dataclass(frozen=True)
class TopicInfo:
    msgtype: str
    count: int


class BagReader:
    """Read a rosbag2 directory (or a single .mcap / .db3 file), turning rosbags' exceptions
    into :class:`BagError` with the bag and the problem named.

    A bag cut short (a killed recorder: no mcap summary, an sqlite3 file shorter than its
    header says, often no metadata.yaml) is read up to the break by :mod:`.salvage`:
    :attr:`truncated` then says where and why it stops (None for a whole bag), the counts are
    those of the readable messages, and :meth:`messages` raises BagError after the last one,
    as for a bag corrupt part way.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: why the bag stops before its end (a truncated or damaged file), or None
        self.truncated: str | None = None
        self._salvage: salvage.Salvage | None = None
        self._reader: Any = None
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        if not (self.path.is_dir() or self.path.is_file()):  # a FIFO would block for ever
            raise BagError(f"{self.path} is not a bag folder or a regular .mcap/.db3 file")
        target = self.path
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            files = salvage.storage_files(self.path)
            if not files:
                names = sorted(p.name for p in self.path.iterdir())[:5]
                raise BagError(
                    f"{self.path} is not a rosbag2 directory: it has no metadata.yaml "
                    f"(contents: {names or 'empty'}); pass the bag directory or its .mcap/.db3 "
                    "file"
                )
            target = files[0] if len(files) == 1 else None
        try:
            if target is None:
                raise BagError("several storage files and no metadata.yaml to order them")
            self._reader = Reader(target)
            self._reader.open()
        except Exception as exc:
            self._reader = None
            self._open_salvage(exc)

    def _open_salvage(self, error: Exception) -> None:
        """Read what the storage files hold up to their break; BagError when nothing is."""
        reason = f"cannot open bag {self.path}: {type(error).__name__}: {error}"
        if self.path.is_dir():
            files = salvage.storage_files(self.path, _listed_files(self.path))
        else:
            files = [self.path] if self.path.suffix in (".mcap", ".db3") else []
        if not files:
            raise BagError(reason) from error
        found = salvage.Salvage(files)
        if not found.message_count:
            raise BagError(f"{reason}; no message is readable"
                           + (f" ({found.problem})" if found.problem else "")) from error
        self._salvage = found
        if found.problem:
            self.truncated = (f"{found.problem}; the {found.message_count} messages before "
                              "the break are read")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def topics(self) -> dict[str, TopicInfo]:
        if self._salvage is not None:
            return {t: TopicInfo(kind, n) for t, (kind, n) in self._salvage.topics.items()}
        out: dict[str, TopicInfo] = {}
        for conn in self._reader.connections:
            prev = out.get(conn.topic)
            count = conn.msgcount + (prev.count if prev else 0)
            out[conn.topic] = TopicInfo(conn.msgtype, count)
        return out

    @property
    def start_ns(self) -> int:
        return self._salvage.start_ns if self._salvage else int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return self._salvage.end_ns if self._salvage else int(self._reader.end_time)

    @property
    def message_count(self) -> int:
        return self._salvage.message_count if self._salvage else int(self._reader.message_count)

    def messages(
        self, topic_names: Iterable[str] | None = None
    ) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log time ns, CDR bytes) in log-time order (a truncated bag: in file
        order, each chunk in log-time order); BagError on corrupt data and after the last
        readable message of a truncated bag."""
        wanted = None if topic_names is None else set(topic_names)
        if self._salvage is not None:
            try:
                yield from self._salvage.messages(wanted)
            except salvage.Break as exc:
                raise BagError(f"bag {self.path} is corrupt or truncated: {exc}") from None
            return
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        iterator = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_ns, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(
                    f"bag {self.path} is corrupt or truncated: {type(exc).__name__}: {exc}"
                ) from exc
            yield conn.topic, conn.msgtype, int(log_ns), raw

    @staticmethod
    def deserialize(raw: bytes, msgtype: str) -> Any:
        """A rosbags message from CDR bytes; BagError when they do not decode as ``msgtype``."""
        if msgtype not in TYPESTORE.types:
            raise BagError(f"no message definition for {msgtype}")
        try:
            return TYPESTORE.deserialize_cdr(raw, msgtype)
        except Exception as exc:
            raise BagError(f"a {msgtype} message does not decode: {exc}") from exc

    def read_json(self, topic: str) -> list[tuple[int, Any]]:
        """All std_msgs/String JSON payloads on ``topic`` as (log time ns, object)."""
        info = self.topics.get(topic)
        if info is None:
            return []
        if info.msgtype != STRING:
            raise BagError(f"topic {topic} has type {info.msgtype}, expected {STRING} (JSON)")
        out = []
        for _, msgtype, log_ns, raw in self.messages([topic]):
            text = self.deserialize(raw, msgtype).data
            try:
                out.append((log_ns, json.loads(text)))
            except json.JSONDecodeError as exc:
                raise BagError(f"topic {topic}: a message is not valid JSON ({exc})") from exc
        return out


def homography_from_calibration(calibration: dict[str, Any] | None) -> np.ndarray | None:
    """The 3x3 thermal -> RGB homography of a calibration document; BagError when malformed."""
    from mmdrfuse_ros.fusion.geometry import validate_homography  # fusion/ imports torch

    if not calibration or calibration.get("homography_thermal_to_rgb") is None:
        return None
    try:
        h = validate_homography(calibration["homography_thermal_to_rgb"])
    except (TypeError, ValueError) as exc:
        raise BagError(f"{CALIBRATION_TOPIC}: homography_thermal_to_rgb: {exc}") from exc
    if h is None:
        raise BagError(f"{CALIBRATION_TOPIC}: homography_thermal_to_rgb is empty, expected 3x3")
    return h


def ground_truth_doc(
    stamp_ns: int,
    frame_id: str,
    size: tuple[int, int],
    boxes: list[list[float]],
    ids: list[int] | None = None,
) -> dict:
    """The JSON document of one frame's ground truth (schema in docs/REPLAY.md)."""
    return {
        "stamp_ns": int(stamp_ns),
        "frame_id": frame_id,
        "width": int(size[0]),
        "height": int(size[1]),
        "boxes": boxes,
        "labels": ["person"] * len(boxes),
        "ids": list(ids) if ids is not None else list(range(len(boxes))),
    }


def boxes_from_ground_truth(doc: dict[str, Any]) -> np.ndarray:
    """Nx4 float array [x1, y1, x2, y2] of a ground-truth document; BagError when malformed
    (not numbers, not finite, not four per box, or x2 < x1 / y2 < y1)."""
    raw = doc.get("boxes", []) if isinstance(doc, dict) else None
    if raw is None:
        raw = []
    try:
        boxes = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise BagError(f"ground-truth boxes must be numbers [[x1, y1, x2, y2], ...], got "
                       f"{str(raw)[:80]}") from None
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BagError(f"ground-truth boxes must be a list of [x1, y1, x2, y2], got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise BagError("ground-truth boxes must be finite numbers: they hold NaN, inf or null")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise BagError(f"ground-truth boxes must have x2 >= x1 and y2 >= y1, got "
                       f"{boxes[(boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])][0]}")
    return boxes


def ground_truth_stamp(doc: dict[str, Any]) -> int:
    """The integer ``stamp_ns`` of a ground-truth document; BagError when missing or not an
    integer number of nanoseconds (a string, a fraction, a bool)."""
    if not isinstance(doc, dict) or "stamp_ns" not in doc:
        raise BagError("a ground-truth document has no stamp_ns")
    stamp = doc["stamp_ns"]
    if isinstance(stamp, float) and stamp.is_integer():
        stamp = int(stamp)
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise BagError(f"ground-truth stamp_ns must be an integer (nanoseconds), got {stamp!r}")
    return stamp


def parse_ground_truth(doc: dict[str, Any]) -> tuple[int, np.ndarray]:
    """(stamp ns, Nx4 boxes) of one ground-truth document, both checked; BagError otherwise."""
    return ground_truth_stamp(doc), boxes_from_ground_truth(doc)
