"""``mmdrfuse replay``: play a bag through the fusion and detector nodes and measure them.

What runs (one process unless ``external``):

* a **player** thread publishes the bag's thermal and RGB images (and camera_info) with the
  recorded timing scaled by ``rate``, as the CDR bytes stored in the bag (nothing is
  deserialised on the way), and publishes ``/clock`` with the bag time before each message, so
  nodes run under ``use_sim_time``. A reader thread decompresses ahead of it;
* the **fusion** and **detector** nodes, in the same MultiThreadedExecutor, with
  ``use_sim_time`` and the bag's homography (``external``: nodes started elsewhere are measured);
* a **transport floor**: a node that only re-publishes each RGB image, with the fusion node's
  input and output QoS, so the cost of moving the images alone is measured in the same run;
* a **recorder** that notes when each fused image, detection message and floor image arrives
  (wall clock), keeps a few fused frames for quality metrics and pictures, and the nodes'
  ``/diagnostics``.

Latency is "stamp -> reception": from the moment the player published the input frame that
carries a header stamp to the moment the recorder received the output with that stamp (fused
images and detections keep the RGB header). It needs no clock shared with the bag's recorder and
holds for bags whose stamps are far from their log times.

After the nodes stop, the fusion metrics are computed on a subsample of the fused frames, and the
detector is run offline on the thermal and visible frames of the frames it saw online, so that
the fused-image AP is reported beside the single-modality APs on the same frames.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import platform
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdrfuse_ros import topics
from mmdrfuse_ros.bag import io
from mmdrfuse_ros.bag.report import SHOWN_METRICS, SampleFrame, latency_summary, write_report

#: roles a bag topic can play, with the topic they have in bags we write.
ROLE_DEFAULTS = {
    "thermal": io.THERMAL_TOPIC,
    "rgb": io.RGB_TOPIC,
    "camera_info": io.RGB_INFO_TOPIC,
    "ground_truth": io.GROUND_TRUTH_TOPIC,
    "ground_truth_thermal": io.GROUND_TRUTH_THERMAL_TOPIC,
    "calibration": io.CALIBRATION_TOPIC,
}
#: where the transport floor re-publishes the RGB images.
FLOOR_TOPIC = "replay/transport_floor"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
_PREFETCH = 24  # messages decompressed ahead of the player


class ReplayError(RuntimeError):
    """The replay cannot go on; the text says what to fix."""


class ParameterError(ReplayError):
    """A node parameter given to the replay was refused (exit status 2: unusable input)."""


@dataclass
class ReplayOptions:
    bag: Path
    report: Path
    rate: float = 1.0
    loop: int = 1
    external: bool = False
    topics: dict[str, str] = field(default_factory=dict)  # role -> bag topic
    fusion_params: dict[str, Any] = field(default_factory=dict)
    detector_params: dict[str, Any] = field(default_factory=dict)
    detector: bool = True
    floor: bool = True
    metrics_frames: int = 12
    ap_frames: int = 40
    samples: int = 4
    start_timeout_s: float = 30.0
    quiet_s: float = 2.0
    drain_timeout_s: float = 30.0
    fastdds_profile: str | None = None  # None: the package's, unless the user exported one
    #: "single": one SingleThreadedExecutor for all nodes (both nodes compute in worker threads,
    #: and fewer Python threads fighting for the GIL measured about 1.7x the fused rate of a
    #: 4-thread MultiThreadedExecutor on 2 cores); "multi": MultiThreadedExecutor(4).
    executor: str = "single"
    progress: bool = True

    def __post_init__(self) -> None:
        self.bag = Path(self.bag)
        self.report = Path(self.report)
        if not self.rate > 0:
            raise ReplayError(f"--rate must be > 0, got {self.rate}")
        if self.loop < 1:
            raise ReplayError(f"--loop must be >= 1, got {self.loop}")
        if self.executor not in ("single", "multi"):
            raise ReplayError(f"--executor must be single or multi, got {self.executor!r}")
        unknown = sorted(set(self.topics) - set(ROLE_DEFAULTS))
        if unknown:
            raise ReplayError(
                f"unknown topic role(s) {unknown} in --topics: use {sorted(ROLE_DEFAULTS)}"
            )


# ----------------------------------------------------------------------------- the bag plan
@dataclass
class BagPlan:
    """What the pre-pass over the bag found: topics, stamps, calibration, ground truth."""

    path: str
    storage: str
    start_ns: int
    end_ns: int
    topics: dict[str, tuple[str, int]]
    thermal_topic: str
    thermal_type: str
    rgb_topic: str
    rgb_type: str
    info_topic: str | None
    homography: np.ndarray | None
    thermal_stamps: list[int]
    rgb_stamps: list[int]
    gt_rgb: dict[int, np.ndarray]
    gt_thermal: dict[int, np.ndarray]
    readable_messages: int
    problem: str | None = None  # corruption found after readable_messages messages

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def info(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "storage": self.storage,
            "duration_s": self.duration_s,
            "start_ns": self.start_ns,
            "topics": {t: {"type": m, "count": n} for t, (m, n) in self.topics.items()},
            "thermal_topic": self.thermal_topic,
            "rgb_topic": self.rgb_topic,
            "camera_info_topic": self.info_topic,
            "homography_thermal_to_rgb": (
                None if self.homography is None else self.homography.round(9).tolist()
            ),
            "ground_truth_frames": {"rgb": len(self.gt_rgb), "thermal": len(self.gt_thermal)},
        }


def homography_argument(h: np.ndarray) -> str:
    """The homography as a ROS parameter value (all doubles), e.g. for
    ``ros2 launch ... homography:='[...]'`` or ``--ros-args -p homography:=[...]``."""
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(h, float).reshape(-1)) + "]"


def _storage_of(path: Path) -> str:
    if path.is_dir():
        return "mcap" if any(path.glob("*.mcap")) else "sqlite3"
    return "mcap" if path.suffix == ".mcap" else "sqlite3"


def _topic_table(topics_: dict[str, io.TopicInfo]) -> str:
    return ", ".join(f"{t} [{i.msgtype}, {i.count}]" for t, i in sorted(topics_.items())) or "none"


def plan_bag(options: ReplayOptions) -> BagPlan:
    """Open and check the bag: topics present with image types, a readable first frame of each,
    calibration and ground truth parsed, all image stamps listed. BagError/ReplayError say what
    is wrong; corruption after some messages is kept in ``problem`` (those before still play)."""
    from mmdrfuse_ros.nodes.fusion_node import THERMAL_ENCODINGS

    roles = {**ROLE_DEFAULTS, **options.topics}
    with io.BagReader(options.bag) as reader:
        available = reader.topics
        if not available:
            raise ReplayError(f"bag {options.bag} has no topics")
        images = (io.IMAGE, io.COMPRESSED_IMAGE)
        for role in ("thermal", "rgb"):
            topic = roles[role]
            if topic not in available:
                raise ReplayError(
                    f"the bag has no {role} topic {topic!r} (topics: {_topic_table(available)}); "
                    f"name it with --topics {role}=/your/topic"
                )
            if available[topic].msgtype not in images:
                raise ReplayError(
                    f"{role} topic {topic} has type {available[topic].msgtype}, expected "
                    f"{io.IMAGE} or {io.COMPRESSED_IMAGE}"
                )
            if available[topic].count == 0:
                raise ReplayError(f"{role} topic {topic} has no messages")
        info_topic = roles["camera_info"]
        if info_topic not in available or available[info_topic].msgtype != io.CAMERA_INFO:
            info_topic = None
        # one pass in log order: JSON documents (calibration, ground truth) and image stamps;
        # corruption part way keeps everything before it (those messages still play)
        json_roles = {roles[r]: r for r in ("calibration", "ground_truth", "ground_truth_thermal")
                      if roles[r] in available}  # fmt: skip
        for topic in json_roles:
            if available[topic].msgtype != io.STRING:
                raise ReplayError(
                    f"{topic} has type {available[topic].msgtype}, expected {io.STRING} (JSON)"
                )
        docs: dict[str, list[dict]] = {r: [] for r in json_roles.values()}
        stamps: dict[str, list[int]] = {roles["thermal"]: [], roles["rgb"]: []}
        checked: set[str] = set()
        readable = 0
        problem = None
        try:
            for topic, msgtype, _, raw in reader.messages([*stamps, *json_roles]):
                if topic in json_roles:
                    docs[json_roles[topic]].append(_json_doc(topic, raw))
                    continue
                if topic not in checked:  # the first frame of each: decodable and supported
                    checked.add(topic)
                    _check_first_frame(topic, msgtype, raw, topic == roles["thermal"],
                                       THERMAL_ENCODINGS)  # fmt: skip
                stamps[topic].append(io.header_stamp_from_cdr(raw))
                readable += 1
        except io.BagError as exc:
            problem = str(exc)
        calibration = docs.get("calibration", [None])[-1] if docs.get("calibration") else None
        homography = io.homography_from_calibration(calibration)
        gt: dict[str, dict[int, np.ndarray]] = {}
        for role in ("ground_truth", "ground_truth_thermal"):
            gt[role] = {}
            for doc in docs.get(role, []):
                if "stamp_ns" not in doc:
                    raise ReplayError(f"{roles[role]}: a ground-truth document has no stamp_ns")
                gt[role][int(doc["stamp_ns"])] = io.boxes_from_ground_truth(doc)
        plan = BagPlan(
            path=str(options.bag),
            storage=_storage_of(options.bag),
            start_ns=reader.start_ns,
            end_ns=reader.end_ns,
            topics={t: (i.msgtype, i.count) for t, i in available.items()},
            thermal_topic=roles["thermal"],
            thermal_type=available[roles["thermal"]].msgtype,
            rgb_topic=roles["rgb"],
            rgb_type=available[roles["rgb"]].msgtype,
            info_topic=info_topic,
            homography=homography,
            thermal_stamps=sorted(stamps[roles["thermal"]]),
            rgb_stamps=sorted(stamps[roles["rgb"]]),
            gt_rgb=gt["ground_truth"],
            gt_thermal=gt["ground_truth_thermal"],
            readable_messages=readable,
            problem=problem,
        )
    if not plan.rgb_stamps or not plan.thermal_stamps:
        raise ReplayError(f"bag {options.bag} is unreadable from the start: {problem}")
    return plan


def _json_doc(topic: str, raw: bytes) -> dict:
    import json

    text = io.BagReader.deserialize(raw, io.STRING).data
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{topic}: a message is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ReplayError(f"{topic}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_first_frame(
    topic: str, msgtype: str, raw: bytes, thermal: bool, thermal_encodings: tuple[str, ...]
) -> None:
    msg = io.BagReader.deserialize(raw, msgtype)
    try:
        image, encoding = io.message_to_array(msg, msgtype)
    except ValueError as exc:
        raise ReplayError(f"{topic}: the first image cannot be read: {exc}") from exc
    if thermal and msgtype == io.IMAGE and encoding not in thermal_encodings:
        raise ReplayError(
            f"{topic}: thermal encoding {encoding!r} is not supported by the fusion node "
            f"(expected one of {list(thermal_encodings)}); is --topics thermal= the right topic?"
        )
    if thermal and image.ndim != 2:
        raise ReplayError(f"{topic}: thermal images must have one channel, got {image.shape}")


# ----------------------------------------------------------------------------- measurements
@dataclass
class Measurements:
    """Everything recorded while playing, as plain data (filled from several threads)."""

    t0: float = 0.0  # monotonic time of the first publication
    published: dict[str, dict[int, float]] = field(
        default_factory=lambda: {"thermal": {}, "rgb": {}}
    )  # role -> stamp -> monotonic publish time
    published_info: int = 0
    received: dict[str, list[tuple[int, float]]] = field(
        default_factory=lambda: {"fused": [], "detections": [], "floor": []}
    )  # stream -> (stamp, monotonic receive time)
    detections: dict[int, list[list[float]]] = field(default_factory=dict)  # stamp -> boxes
    kept_fused: dict[int, np.ndarray] = field(default_factory=dict)
    player_lag_s: list[float] = field(default_factory=list)  # publish time - scheduled time
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)  # status name -> values
    diagnostics_first: dict[str, dict[str, str]] = field(default_factory=dict)  # before play
    diagnostics_time: dict[str, float] = field(default_factory=dict)  # last receive, monotonic
    playing: bool = False
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_received(self, stream: str, stamp: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.received[stream].append((stamp, now))

    def counts(self) -> tuple[int, ...]:
        with self.lock:
            return tuple(len(v) for v in self.received.values())


class _KeepPolicy:
    """Which fused frames the recorder keeps (for metrics and pictures): the first to arrive
    after each of ``n`` evenly spaced instants of the bag's first loop, so the kept frames
    spread over the bag whatever the fusion node drops."""

    def __init__(self, plan: BagPlan, n: int) -> None:
        first, last = plan.rgb_stamps[0], plan.rgb_stamps[-1]
        self.step = max((last - first) // max(n, 1), 1)
        self.next = first
        self.last = last
        self.enabled = n > 0

    def wants(self, stamp: int) -> bool:
        if not self.enabled or stamp < self.next or stamp > self.last:
            return False
        self.next = stamp + self.step
        return True


# ----------------------------------------------------------------------------- ROS side
def _profile_env(options: ReplayOptions) -> dict[str, str]:
    """Environment for Fast DDS: the package's large-data profile unless the user has one.

    Transport only (shared-memory segment size, socket buffers); discovery is left as the user
    set it (see config/fastdds_large_data.xml).
    """
    if any(os.environ.get(v) for v in PROFILE_VARIABLES):
        return {}
    profile = options.fastdds_profile
    if profile is None:
        try:
            from mmdrfuse_ros.resources import config_path

            profile = str(config_path("fastdds_large_data.xml"))
        except FileNotFoundError:
            return {}
    if not profile:
        return {}
    # Fast DDS 3 (Jazzy and later, and the PyPI wheels) reads FASTDDS_..., and warns about the
    # old name; Fast DDS 2 (Humble, Iron) reads only FASTRTPS_...
    old = os.environ.get("ROS_DISTRO", "") in ("humble", "iron")
    return {PROFILE_VARIABLES[1] if old else PROFILE_VARIABLES[0]: profile}


def _ros_type(msgtype: str) -> type:
    """The rclpy message class of a ROS type name such as 'sensor_msgs/msg/Image'."""
    import importlib

    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def _parse_param(name: str, value: Any) -> Any:
    from rclpy.parameter import Parameter

    if isinstance(value, (list, tuple)):
        value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return Parameter(name, value=value)


def _make_node(cls: type, context: Any, params: dict[str, Any], option: str) -> Any:
    """A node with parameter overrides; a refused value becomes a ParameterError naming it."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    try:
        return cls(context=context,
                   parameter_overrides=[_parse_param(k, v) for k, v in params.items()])  # fmt: skip
    except (InvalidParameterValueException, InvalidParameterTypeException, ValueError,
            TypeError) as exc:  # fmt: skip
        raise ParameterError(f"{cls.__name__} refused a parameter ({option}): {exc}") from exc


class _RosSession:
    """The nodes, the executor and the player of one replay (all in one rclpy context)."""

    def __init__(self, options: ReplayOptions, plan: BagPlan, meas: Measurements) -> None:
        import rclpy
        from rclpy.context import Context

        self.options, self.plan, self.meas = options, plan, meas
        self.context = Context()
        rclpy.init(context=self.context)
        self.nodes: list[Any] = []
        self.fusion: Any = None
        self.detector: Any = None
        self.executors: list[Any] = []
        self._spin_threads: list[threading.Thread] = []
        self.fusion_params_used: dict[str, Any] = {}
        self.detector_params_used: dict[str, Any] = {}

    # -- building ------------------------------------------------------------------------
    def build(self, keep: _KeepPolicy) -> None:
        from rclpy.node import Node
        from sensor_msgs.msg import CompressedImage, Image

        from mmdrfuse_ros.nodes.qos import (
            INPUT_DEPTH,
            INPUT_RELIABILITY,
            OUTPUT_DEPTH,
            OUTPUT_RELIABILITY,
            make_qos,
        )

        opts, plan = self.options, self.plan
        thermal_compressed = plan.thermal_type == io.COMPRESSED_IMAGE
        rgb_compressed = plan.rgb_type == io.COMPRESSED_IMAGE
        fusion_params: dict[str, Any] = {"use_sim_time": True}
        if plan.homography is not None:
            fusion_params["homography"] = plan.homography.reshape(-1).tolist()
        if thermal_compressed:
            fusion_params["thermal_transport"] = "compressed"
        if rgb_compressed:
            fusion_params["rgb_transport"] = "compressed"
        fusion_params.update(opts.fusion_params)
        self.fusion_params_used = fusion_params

        if not opts.external:
            from mmdrfuse_ros.nodes.fusion_node import FusionNode

            self.fusion = _make_node(FusionNode, self.context, fusion_params, "--fusion-param")
            self.nodes.append(self.fusion)
            if self.fusion.lifecycle_state != "active":
                raise ReplayError(
                    "the fusion node did not activate (see its log above); check --fusion-param"
                )
            if opts.detector:
                from mmdrfuse_ros.nodes.detector_node import DetectorNode

                det_params = {"use_sim_time": True, **opts.detector_params}
                self.detector_params_used = det_params
                self.detector = _make_node(
                    DetectorNode, self.context, det_params, "--detector-param"
                )
                self.nodes.append(self.detector)

        suffix_r = "/compressed" if rgb_compressed else ""
        in_qos = make_qos(
            fusion_params.get("input_reliability", INPUT_RELIABILITY),
            int(fusion_params.get("input_depth", INPUT_DEPTH)),
        )
        out_qos = make_qos(
            fusion_params.get("output_reliability", OUTPUT_RELIABILITY),
            int(fusion_params.get("output_depth", OUTPUT_DEPTH)),
        )
        if opts.floor:
            floor = Node("mmdrfuse_transport_floor", context=self.context)
            msg_type = CompressedImage if rgb_compressed else Image
            floor_pub = floor.create_publisher(msg_type, FLOOR_TOPIC, out_qos)
            # deserialise and publish again: what any rclpy image node pays at the minimum
            floor.create_subscription(
                msg_type, topics.RGB_IMAGE + suffix_r, floor_pub.publish, in_qos
            )
            self.nodes.append(floor)

        rec = Node("mmdrfuse_replay_recorder", context=self.context)
        self.nodes.append(rec)
        rec_qos = make_qos("reliable", 50)
        meas = self.meas

        def on_fused(raw: bytes) -> None:
            stamp = io.header_stamp_from_cdr(raw)
            meas.add_received("fused", stamp)
            if keep.wants(stamp):
                self._keep_fused(stamp, raw)

        rec.create_subscription(Image, topics.FUSED_IMAGE, on_fused, rec_qos, raw=True)
        if opts.floor:
            rec.create_subscription(
                Image if not rgb_compressed else CompressedImage,
                FLOOR_TOPIC,
                lambda raw: meas.add_received("floor", io.header_stamp_from_cdr(raw)),
                rec_qos,
                raw=True,
            )
        if opts.detector:
            msg_type, convert = _detection_message_support()

            def on_detections(msg: Any) -> None:
                try:
                    stamp, _frame, dets = convert(msg)
                except Exception as exc:  # a malformed message is noted, never fatal
                    meas.errors.append(f"unreadable detections message: {exc}")
                    return
                meas.add_received("detections", stamp)
                with meas.lock:
                    meas.detections[stamp] = dets

            rec.create_subscription(msg_type, topics.DETECTIONS, on_detections, rec_qos)
        from diagnostic_msgs.msg import DiagnosticArray

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                with meas.lock:
                    if not meas.playing:  # the baseline: the last status before playback
                        meas.diagnostics_first[status.name] = values
                    meas.diagnostics[status.name] = values
                    meas.diagnostics_time[status.name] = time.monotonic()

        rec.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diagnostics, 10)
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

        if opts.executor == "multi":
            executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        else:
            executor = SingleThreadedExecutor(context=self.context)
        for node in self.nodes:
            executor.add_node(node)
        self.executors = [executor]
        for ex in self.executors:
            t = threading.Thread(target=self._spin, args=(ex,), name="replay_spin", daemon=True)
            t.start()
            self._spin_threads.append(t)
        self.recorder = rec

    @staticmethod
    def _spin(executor: Any) -> None:
        with contextlib.suppress(Exception):  # shutdown races end the spin, nothing else
            executor.spin()

    def _keep_fused(self, stamp: int, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        from mmdrfuse_ros.nodes.image_conversion import image_to_array

        try:
            msg = deserialize_message(raw, Image)
            image = np.array(image_to_array(msg))  # a copy that outlives the message
        except Exception as exc:
            self.meas.errors.append(f"a fused image could not be read: {exc}")
            return
        with self.meas.lock:
            self.meas.kept_fused[stamp] = image

    # -- waiting for the graph -------------------------------------------------------------
    def subscribers_needed(self) -> dict[str, int]:
        """Readers each player topic must have before playback (the fusion node, the floor)."""
        return {"thermal": 1, "rgb": 1 + (1 if self.options.floor else 0)}

    def wait_for_graph(self, player: _PlayerProcess) -> None:
        """Until the player's publishers have their readers and the recorder its writers."""
        opts = self.options
        deadline = time.monotonic() + opts.start_timeout_s
        diag_deadline = time.monotonic() + 3.0  # diagnostics come once a second
        while True:
            missing = player.poll_ready()
            fused_name = self.recorder.resolve_topic_name(topics.FUSED_IMAGE)
            if self.recorder.count_publishers(fused_name) < 1:
                missing.append(f"a publisher of {fused_name}")
            if opts.detector:
                det_name = self.recorder.resolve_topic_name(topics.DETECTIONS)
                if self.recorder.count_publishers(det_name) < 1:
                    missing.append(f"a publisher of {det_name}")
            if opts.external and not any("fusion" in n for n in self.meas.diagnostics_first):
                # the node's counters before playback: the baseline of its counts
                missing.append("/diagnostics from the fusion node")
            if not missing:
                return
            if missing == ["/diagnostics from the fusion node"] and time.monotonic() > min(
                deadline, diag_deadline
            ):
                return  # counts then come only from what the recorder sees
            if time.monotonic() > deadline:
                hint = (
                    "start the fusion and detector nodes first, with use_sim_time:=true "
                    "(e.g. ros2 launch mmdrfuse_ros fusion.launch.py use_sim_time:=true), "
                    "on the same ROS_DOMAIN_ID"
                    if opts.external
                    else "the in-process nodes did not connect (DDS discovery)"
                )
                raise ReplayError(
                    f"after {opts.start_timeout_s:.0f} s still no {', '.join(missing)}: {hint}"
                )
            time.sleep(0.05)

    # -- shutting down -------------------------------------------------------------------
    def close(self) -> None:
        import rclpy

        for ex in self.executors:
            with contextlib.suppress(Exception):
                ex.shutdown(timeout_sec=5.0)
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=self.context)
        for t in self._spin_threads:
            t.join(timeout=5.0)


def _detection_message_support() -> tuple[type, Callable[[Any], tuple[int, str, list]]]:
    """(message class the detector publishes, msg -> (stamp_ns, frame_id, [[x1,y1,x2,y2,s]]))."""
    from mmdrfuse_ros.detection import messages

    msg_type = messages.detection_message_type()

    def convert(msg: Any) -> tuple[int, str, list]:
        stamp, frame_id, dets = messages.msg_to_detections(msg)
        return stamp, frame_id, [_det_row(d) for d in dets]

    return msg_type, convert


def _det_row(det: Any) -> list[float]:
    """[x1, y1, x2, y2, score] of a Detection (or of a 5-sequence)."""
    if hasattr(det, "x1"):
        return [float(det.x1), float(det.y1), float(det.x2), float(det.y2), float(det.score)]
    return [float(v) for v in list(det)[:5]]


# ----------------------------------------------------------------------------- the player
@dataclass(frozen=True)
class _PlayerJob:
    """What the player process needs (picklable: it starts with the spawn method)."""

    bag: str
    rate: float
    loop: int
    roles: dict[str, str]  # bag topic -> role (thermal, rgb, camera_info)
    types: dict[str, str]  # role -> ROS message type
    start_ns: int
    loop_period_ns: int
    needed: dict[str, int]  # role -> readers to wait for


def _player_main(job: _PlayerJob, conn: Any) -> None:
    """The player process: publish the bag on schedule, report what went out when.

    Why a process of its own: in the replay process the nodes' worker threads and executor
    keep the GIL busy, and a player thread there fell seconds behind the bag's timing on two
    loaded cores. Its own process keeps the timing (as ``ros2 bag play`` does); publish times
    are CLOCK_MONOTONIC, which both processes share.
    """
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    names = {"thermal": topics.THERMAL_IMAGE, "rgb": topics.RGB_IMAGE,
             "camera_info": topics.RGB_CAMERA_INFO}  # fmt: skip
    rclpy.init()
    node = Node("mmdrfuse_replay_player")
    # reliable, like `ros2 bag play`: matches best-effort and reliable readers alike
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {}
    for role, msgtype in job.types.items():
        suffix = "/compressed" if msgtype == io.COMPRESSED_IMAGE else ""
        pubs[role] = node.create_publisher(_ros_type(msgtype), names[role] + suffix, qos)
    clock_pub = node.create_publisher(Clock, topics.CLOCK, qos)
    try:
        while True:  # report matching until the parent says go (or stop)
            missing = [f"{n - pubs[r].get_subscription_count()} more reader(s) on "
                       f"{pubs[r].topic_name}" for r, n in job.needed.items()
                       if pubs[r].get_subscription_count() < n]  # fmt: skip
            conn.send(("missing", missing))
            if conn.poll(0.05):
                if conn.recv() != "go":
                    return
                break
        _play(job, conn, pubs, clock_pub)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent went away or stopped us
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _play(job: _PlayerJob, conn: Any, pubs: dict[str, Any], clock_pub: Any) -> None:
    from rosgraph_msgs.msg import Clock

    buffer: queue.Queue = queue.Queue(maxsize=_PREFETCH)
    stop = threading.Event()
    error: list[str] = []

    def read() -> None:  # decompress ahead of the schedule
        try:
            for loop in range(job.loop):
                with io.BagReader(job.bag) as reader:
                    for topic, _, log_ns, raw in reader.messages(list(job.roles)):
                        if stop.is_set():
                            return
                        buffer.put((loop, job.roles[topic], log_ns, raw))
        except Exception as exc:  # BagError on corruption: what came before is played
            error.append(str(exc))
        finally:
            buffer.put(None)

    reader = threading.Thread(target=read, name="replay_reader", daemon=True)
    reader.start()
    clock = Clock()
    batch: list[tuple[str, int, float, float]] = []
    t0: float | None = None
    last_send = time.monotonic()
    try:
        while True:
            if conn.poll():
                conn.recv()  # "stop"
                break
            item = buffer.get()
            if item is None:
                break
            loop, role, log_ns, raw = item
            offset = loop * job.loop_period_ns
            if offset:  # later loops: shift stamps so that time never runs backwards
                raw = io.with_header_stamp(raw, io.header_stamp_from_cdr(raw) + offset)
            bag_t = log_ns + offset
            if t0 is None:
                t0 = time.monotonic()
            target = t0 + (bag_t - job.start_ns) / 1e9 / job.rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            clock.clock.sec, clock.clock.nanosec = divmod(bag_t, 1_000_000_000)
            clock_pub.publish(clock)
            pubs[role].publish(raw)
            now = time.monotonic()
            batch.append((role, io.header_stamp_from_cdr(raw), now, now - target))
            if now - last_send > 0.1:
                conn.send(("published", batch))
                batch, last_send = [], now
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:  # unblock the reader if it waits on a full queue
                buffer.get_nowait()
        reader.join(timeout=10.0)
        conn.send(("published", batch))
        conn.send(("done", error[0] if error else None))


class _PlayerProcess:
    """The parent's side of the player process: start, wait until ready, collect."""

    def __init__(self, options: ReplayOptions, plan: BagPlan, needed: dict[str, int]) -> None:
        import multiprocessing

        roles = {plan.thermal_topic: "thermal", plan.rgb_topic: "rgb"}
        types = {"thermal": plan.thermal_type, "rgb": plan.rgb_type}
        if plan.info_topic:
            roles[plan.info_topic] = "camera_info"
            types["camera_info"] = io.CAMERA_INFO
        self.job = _PlayerJob(
            bag=str(options.bag), rate=options.rate, loop=options.loop, roles=roles,
            types=types, start_ns=plan.start_ns,
            loop_period_ns=(plan.end_ns - plan.start_ns) + 100_000_000, needed=needed,
        )  # fmt: skip
        ctx = multiprocessing.get_context("spawn")  # no fork of a process running DDS threads
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_player_main, args=(self.job, child),
                                   name="mmdrfuse_replay_player", daemon=True)  # fmt: skip
        self.process.start()
        child.close()
        self._missing: list[str] = ["the player process to start"]
        self.error: str | None = None

    def poll_ready(self) -> list[str]:
        """What the player still waits for (empty: ready)."""
        while self.conn.poll():
            kind, payload = self.conn.recv()
            if kind == "missing":
                self._missing = list(payload)
        if not self.process.is_alive():
            raise ReplayError(f"the player process exited (code {self.process.exitcode})")
        return list(self._missing)

    def play(self, meas: Measurements, progress: Any) -> None:
        """Start playback and record what the player reports until it is done."""
        self.conn.send("go")
        meas.t0 = time.monotonic()
        first = True
        try:
            while True:
                if not self.conn.poll(0.5):
                    if not self.process.is_alive():
                        raise ReplayError("the player process died during playback")
                    continue
                kind, payload = self.conn.recv()
                if kind == "missing":
                    continue
                if kind == "done":
                    self.error = payload
                    return
                for role, stamp, t_pub, lag in payload:
                    if first:
                        meas.t0, first = t_pub, False
                    meas.player_lag_s.append(lag)
                    if role == "camera_info":
                        meas.published_info += 1
                    else:
                        meas.published[role][stamp] = t_pub
                progress.update(len(payload))
        except KeyboardInterrupt:
            self.stop()
            raise

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send("stop")

    def close(self) -> None:
        self.stop()
        self.process.join(timeout=10.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)


# ----------------------------------------------------------------------------- analysis
def _select_evenly(items: list[Any], n: int) -> list[Any]:
    if n <= 0 or not items:
        return []
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx))]


def _nearest(sorted_values: list[int], value: int) -> int | None:
    if not sorted_values:
        return None
    i = bisect.bisect_left(sorted_values, value)
    candidates = sorted_values[max(i - 1, 0) : i + 1]
    return min(candidates, key=lambda v: abs(v - value))


def _latencies(
    published: dict[int, float], received: list[tuple[int, float]]
) -> tuple[list[float], int]:
    """(latencies in seconds, outputs whose stamp was never published) for one stream."""
    out, unknown = [], 0
    for stamp, t in received:
        t_pub = published.get(stamp)
        if t_pub is None:
            unknown += 1
        else:
            out.append(t - t_pub)
    return out, unknown


def _rate(times: list[float]) -> float | None:
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else None


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _node_counts(
    session_stats: dict[str, Any] | None, meas: Measurements
) -> tuple[dict[str, Any] | None, str]:
    """The fusion node's counters: from the node itself (in-process) or its /diagnostics
    (external, as the difference between the last and the first status seen)."""
    if session_stats is not None:
        return session_stats, "fusion node attributes (in-process)"
    name = next((n for n in meas.diagnostics if "fusion" in n), None)
    if name is None:
        return None, "no /diagnostics from a fusion node were received"
    last, first = meas.diagnostics[name], meas.diagnostics_first.get(name, {})
    out: dict[str, Any] = {}
    for key, value in last.items():
        v = _int(value)
        if v is None or not (key.startswith(("received_", "dropped_")) or key in
                             ("pairs", "fused", "unmatched_evicted", "queued")):  # fmt: skip
            continue
        base = 0 if key == "queued" else (_int(first.get(key)) or 0)
        out[key] = v - base
    return out, f"/diagnostics of {name!r} (last minus first status seen)"


def _counts_and_checks(
    meas: Measurements, node: dict[str, Any] | None, floor: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]:
    pub_t, pub_r = len(meas.published["thermal"]), len(meas.published["rgb"])
    counts: dict[str, Any] = {
        "published_thermal": pub_t,
        "published_rgb": pub_r,
        "published_total": pub_t + pub_r,
    }
    checks: list[dict[str, Any]] = []
    drops: dict[str, int] = {}
    recorded_fused = len(meas.received["fused"])
    if node:
        rec_t, rec_r = node.get("received_thermal", 0), node.get("received_rgb", 0)
        pairs, fused = node.get("pairs", 0), node.get("fused", 0)
        evicted, queued = node.get("unmatched_evicted"), node.get("queued", 0)
        frames_in = rec_t + rec_r
        unmatched = frames_in - 2 * pairs
        dropped = {k[len("dropped_") :]: v for k, v in node.items() if k.startswith("dropped_")}
        counts.update(
            received_thermal=rec_t,
            received_rgb=rec_r,
            frames_in=frames_in,
            synchronised=pairs,
            frames_in_pairs=2 * pairs,
            unmatched=unmatched,
            fused=fused,
            dropped_after_sync=sum(dropped.values()),
        )
        drops["lost_in_transport_thermal"] = pub_t - rec_t
        drops["lost_in_transport_rgb"] = pub_r - rec_r
        drops["unmatched_by_sync"] = unmatched
        for cause, n in dropped.items():
            drops[cause] = n
        if evicted is not None:
            counts["unmatched_evicted"] = evicted
            counts["unmatched_still_queued"] = queued
            checks.append({
                "name": "in = synchronised + unmatched",
                "ok": frames_in == 2 * pairs + evicted + queued,
                "detail": f"{frames_in} frames in = 2 x {pairs} pairs + {evicted} evicted "
                          f"unmatched + {queued} still queued",
            })  # fmt: skip
        else:  # message_filters counts no evictions: unmatched is what is left
            checks.append({
                "name": "in = synchronised + unmatched",
                "ok": unmatched >= 0,
                "detail": f"{frames_in} frames in = 2 x {pairs} pairs + {unmatched} unmatched "
                          "(derived: message_filters does not count evictions)",
            })  # fmt: skip
        checks.append({
            "name": "fused + dropped = synchronised",
            "ok": fused + sum(dropped.values()) == pairs,
            "detail": f"{fused} fused + {sum(dropped.values())} dropped ("
                      + ", ".join(f"{k} {v}" for k, v in dropped.items() if v)
                      + f") vs {pairs} pairs",
        })  # fmt: skip
        checks.append({
            "name": "fused images published = recorded",
            "ok": recorded_fused == fused,
            "detail": f"node published {fused}, recorder received {recorded_fused}",
        })  # fmt: skip
        if recorded_fused != fused:
            drops["fused_lost_after_publish"] = fused - recorded_fused
    counts["recorded_fused"] = recorded_fused
    counts["recorded_detections"] = len(meas.received["detections"])
    if floor:
        counts["floor_received"] = len(meas.received["floor"])
        drops["floor_lost"] = pub_r - len(meas.received["floor"])
    return counts, checks, drops


def _read_frames(
    options: ReplayOptions, plan: BagPlan, rgb_stamps: set[int], thermal_stamps: set[int]
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Decode the RGB and thermal frames with these stamps from the bag."""
    rgb: dict[int, np.ndarray] = {}
    thermal: dict[int, np.ndarray] = {}
    if not rgb_stamps and not thermal_stamps:
        return rgb, thermal
    with io.BagReader(options.bag) as reader:
        try:
            for topic, msgtype, _, raw in reader.messages([plan.rgb_topic, plan.thermal_topic]):
                stamp = io.header_stamp_from_cdr(raw)
                is_rgb = topic == plan.rgb_topic
                if stamp not in (rgb_stamps if is_rgb else thermal_stamps):
                    continue
                image, _ = io.message_to_array(reader.deserialize(raw, msgtype), msgtype)
                (rgb if is_rgb else thermal)[stamp] = np.array(image)
        except (io.BagError, ValueError):
            pass  # frames after a corrupt part are simply not available
    return rgb, thermal


def _engine_settings(fusion_params: dict[str, Any]) -> dict[str, Any]:
    """FusionEngine kwargs for preparing the sources as the node did (its parameter table's
    defaults, overridden by the replay's parameters); one frame at a time, on the CPU."""
    from rclpy.parameter import Parameter

    from mmdrfuse_ros.nodes.fusion_node import PARAMS, engine_kwargs

    values = {p.name: None if isinstance(p.default, Parameter.Type) else p.default for p in PARAMS}
    values.update({k: v for k, v in fusion_params.items() if k in values})
    kwargs = engine_kwargs(values)
    # the preparation does not depend on the backend; no smoothing across a subsample
    kwargs.update(backend="cpu-fast", device=None, fp16=False, thermal_smoothing=0.0)
    return kwargs


def _valid_region(plan: BagPlan, thermal_shape: tuple[int, int], size: tuple[int, int]):
    """Slices of the RGB image inside the registered thermal field of view (for metrics)."""
    h, w = size
    if plan.homography is None:
        return slice(0, h), slice(0, w)
    from mmdrfuse_ros.bag.synth import apply_homography

    th, tw = thermal_shape
    corners = apply_homography(plan.homography, np.array([[0, 0], [tw, 0], [tw, th], [0, th]]))
    x0 = math.ceil(max(corners[0, 0], corners[3, 0], 0))
    x1 = math.floor(min(corners[1, 0], corners[2, 0], w))
    y0 = math.ceil(max(corners[0, 1], corners[1, 1], 0))
    y1 = math.floor(min(corners[2, 1], corners[3, 1], h))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return slice(0, h), slice(0, w)
    return slice(y0 + 1, y1 - 1), slice(x0 + 1, x1 - 1)


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    image = image.astype(np.float64)
    return image * 255.0 if image.max(initial=0) <= 1.0 else image


def _fusion_metrics(
    fused: dict[int, np.ndarray],
    rgb: dict[int, np.ndarray],
    thermal: dict[int, np.ndarray],
    pairing: dict[int, int],
    plan: BagPlan,
    fusion_params: dict[str, Any],
    total_fused: int,
    progress: Callable[[], None],
) -> dict[str, Any]:
    """Metrics on the kept fused frames, against the engine-prepared sources."""
    from mmdrfuse_ros.fusion import FusionEngine
    from mmdrfuse_ros.metrics import compute_metrics

    engine = FusionEngine(**_engine_settings(fusion_params))
    per_frame = []
    try:
        for stamp in sorted(fused):
            t_stamp = pairing.get(stamp)
            if stamp not in rgb or t_stamp not in thermal:
                continue
            prepared = engine.prepare(thermal[t_stamp], rgb[stamp])
            rows, cols = _valid_region(plan, thermal[t_stamp].shape[:2], rgb[stamp].shape[:2])
            ir = prepared.thermal[rows, cols].astype(np.float64) * 255.0
            vis = prepared.visible.luma[rows, cols].astype(np.float64) * 255.0
            values = compute_metrics(ir, vis, _grey(fused[stamp])[rows, cols],
                                     names=list(SHOWN_METRICS))  # fmt: skip
            per_frame.append({"stamp_ns": stamp, **{k: float(v) for k, v in values.items()}})
            progress()
    finally:
        engine.close()
    if not per_frame:
        return {"frames": 0, "note": "no fused frame could be evaluated"}
    mean = {m: float(np.mean([f[m] for f in per_frame])) for m in SHOWN_METRICS
            if m in per_frame[0]}  # fmt: skip
    note = (
        f"Computed on {len(per_frame)} of {total_fused} fused frames, evenly spaced (a "
        "subsample: the metrics take about a second per frame on one core). Sources as the "
        "network saw them: thermal normalised and registered into the RGB geometry, visible "
        "luma; fused as grey; inside the thermal field of view"
        + (" (the registered thermal rectangle)." if plan.homography is not None else ".")
        + " SSIM and VIF are sums over the two sources, as the reference evaluator computes."
    )
    return {"frames": len(per_frame), "of": total_fused, "mean": mean, "per_frame": per_frame,
            "note": note}  # fmt: skip


def _thermal_for_detection(image: np.ndarray) -> np.ndarray:
    """8-bit thermal the way the fusion engine normalises it (1/99 percentiles), for HOG."""
    from mmdrfuse_ros.fusion import ThermalNormalizer

    norm = ThermalNormalizer("percentile", None, (1.0, 99.0), 0.0)
    return (np.clip(norm(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _detection_ap(
    meas: Measurements,
    plan: BagPlan,
    options: ReplayOptions,
    rgb: dict[int, np.ndarray],
    thermal: dict[int, np.ndarray],
    pairing: dict[int, int],
    chosen: list[int],
    detector_params: dict[str, Any],
    progress: Callable[[], None],
) -> dict[str, Any]:
    """AP of the online fused detections and of the same detector run offline on the thermal
    and visible frames of the same stamps (the report's "detection" section)."""
    from mmdrfuse_ros.metrics import average_precision

    if not plan.gt_rgb:
        return {"note": "the bag has no ground truth: AP not computed"}
    if not chosen:
        return {"note": "no detections were received for frames with ground truth"}
    detect = _offline_detector(detector_params)
    gt_f = {s: plan.gt_rgb[s] for s in chosen}
    det_f = {s: meas.detections.get(s, []) for s in chosen}
    det_v, gt_t, det_t = {}, {}, {}
    for s in chosen:
        if s in rgb:
            det_v[s] = detect(rgb[s])
        t_stamp = pairing.get(s)
        if t_stamp in thermal and t_stamp in plan.gt_thermal:
            gt_t[t_stamp] = plan.gt_thermal[t_stamp]
            det_t[t_stamp] = detect(_thermal_for_detection(thermal[t_stamp]))
        progress()
    results: dict[str, Any] = {}
    for name, dets, gts in (
        ("fused", det_f, gt_f),
        ("visible", det_v, {s: gt_f[s] for s in det_v}),
        ("thermal", det_t, gt_t),
    ):
        if not gts:
            results[name] = {"error": "no frames with ground truth"}
            continue
        try:
            r = average_precision(dets, gts)
        except ValueError as exc:
            results[name] = {"error": str(exc)}
            continue
        results[name] = {k: r[k] for k in ("AP50", "AP", "num_images", "num_gt",
                                          "num_detections")}  # fmt: skip
    note = (
        f"{len(chosen)} frames: those the detector node processed online that have ground truth"
        + (f" (an even subsample of {options.ap_frames})" if len(chosen) >= options.ap_frames
           else "")
        + ". fused: the detector node's output on the fused image; visible and thermal: the same "
        "detector and settings run offline on the RGB frame and on the thermal frame paired with "
        "it (nearest stamp; percentile-normalised to 8 bits, its own geometry and ground truth)."
    )  # fmt: skip
    return {"frames": len(chosen), "results": results, "note": note}


def _offline_detector(params: dict[str, Any]) -> Callable[[np.ndarray], list[list[float]]]:
    """image -> [[x1, y1, x2, y2, score]] with the detector node's backend and settings."""
    from rclpy.parameter import Parameter

    from mmdrfuse_ros.detection import create_detector
    from mmdrfuse_ros.nodes.detector_node import PARAMS, detector_kwargs

    values = {p.name: None if isinstance(p.default, Parameter.Type) else p.default for p in PARAMS}
    values.update({k: v for k, v in params.items() if k in values})
    backend, kwargs = detector_kwargs(values)  # the node's own mapping: the same detector
    detector = create_detector(backend, **kwargs)

    def detect(image: np.ndarray) -> list[list[float]]:
        return [_det_row(d) for d in detector.detect(image)]

    return detect


# ----------------------------------------------------------------------------- main entry
def run_replay(options: ReplayOptions) -> tuple[dict[str, Any], int]:
    """Play, measure, analyse and write the report. Returns (report, exit code).

    Exit code 0 when everything ran and the counts add up, 1 when the replay stopped on an error
    or a check failed (the report then holds what was measured before), 2 when the bag could not
    be used at all.
    """
    from tqdm import tqdm

    started = time.time()
    report: dict[str, Any] = {
        "tool": "mmdrfuse replay",
        "status": "ok",
        "errors": [],
        "created_unix": started,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    }
    meas = Measurements()
    exit_code = 0
    try:
        plan = plan_bag(options)
    except (io.BagError, ReplayError) as exc:
        report.update(status="error", errors=[str(exc)])
        report["bag"] = {"path": str(options.bag)}
        write_report(options.report, report)
        return report, 2
    report["bag"] = plan.info()
    if options.external and plan.homography is not None:
        report["external_hint"] = (
            "the external fusion node needs the bag's homography: "
            f"-p homography:={homography_argument(plan.homography).replace(' ', '')}"
        )
    if plan.problem:
        report["errors"].append(
            f"{plan.problem} (after {plan.readable_messages} readable images: those are played)"
        )
    profile_env = _profile_env(options)
    saved_env = {key: os.environ.get(key) for key in profile_env}
    os.environ.update(profile_env)  # read when this process creates its DDS participant
    report["settings"]["fastdds_profile_used"] = next(iter(profile_env.values()), None)
    keep = _KeepPolicy(plan, max(2 * options.metrics_frames, options.samples))
    session: _RosSession | None = None
    player: _PlayerProcess | None = None
    input_error = False
    node_stats: dict[str, Any] | None = None
    total = (plan.readable_messages + (plan.topics.get(plan.info_topic, ("", 0))[1]
                                       if plan.info_topic else 0)) * options.loop  # fmt: skip
    bar: Any = None
    try:
        session = _RosSession(options, plan, meas)
        session.build(keep)
        report["settings"]["fusion_params"] = session.fusion_params_used
        report["settings"]["detector_params"] = session.detector_params_used
        if session.fusion is not None:
            report["settings"]["backend_used"] = session.fusion.stats().get("backend")
        if session.detector is not None:
            report["settings"]["detector_backend"] = _describe_detector(session.detector)
        player = _PlayerProcess(options, plan, session.subscribers_needed())
        session.wait_for_graph(player)
        meas.playing = True
        bar = tqdm(total=total, unit="msg", desc="replay", disable=not options.progress,
                   dynamic_ncols=True)  # fmt: skip
        try:
            player.play(meas, bar)
        except KeyboardInterrupt:
            report["errors"].append("interrupted (Ctrl-C) during playback")
        if player.error:
            report["errors"].append(player.error)
        _drain(meas, options, session)
        if session.fusion is not None:
            node_stats = session.fusion.stats()
    except ParameterError as exc:
        report["errors"].append(str(exc))
        input_error = True
    except (ReplayError, io.BagError) as exc:
        report["errors"].append(str(exc))
    except KeyboardInterrupt:
        report["errors"].append("interrupted (Ctrl-C)")
    except Exception as exc:  # anything unexpected: keep what was measured, say what broke
        report["errors"].append(f"{type(exc).__name__}: {exc}")
        report["traceback"] = traceback.format_exc()
    finally:
        if bar is not None:
            bar.close()
        if player is not None:
            player.close()
        if session is not None:
            session.close()
        for key, value in saved_env.items():  # leave the caller's environment as it was
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    report["wall_s"] = {"playback_and_drain": time.time() - started}
    try:
        _analyse(report, meas, plan, options, node_stats, session)
    except Exception as exc:
        report["errors"].append(f"analysis failed: {type(exc).__name__}: {exc}")
        report["traceback"] = traceback.format_exc()
    if meas.errors:
        report["recorder_errors"] = meas.errors[:20]
    if report["errors"]:
        report["status"] = "error"
        exit_code = 2 if input_error else 1
    elif any(not c["ok"] for c in report.get("checks", [])):
        exit_code = 1
    report["wall_s"]["total"] = time.time() - started
    report["files"] = write_report(options.report, report, report.pop("_samples", []))
    return report, exit_code


def _describe_detector(node: Any) -> str:
    with contextlib.suppress(Exception):
        return str(node.get_parameter("backend").value)
    return "?"


def _drain(meas: Measurements, options: ReplayOptions, session: _RosSession) -> None:
    """Wait for the last outputs: until nothing new arrived for ``quiet_s`` (or the timeout),
    and at least one fresh /diagnostics period later."""
    deadline = time.monotonic() + options.drain_timeout_s
    last = meas.counts()
    quiet_since = time.monotonic()
    quiet = max(options.quiet_s, 1.5)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_counts = meas.counts()
        if now_counts != last:
            last, quiet_since = now_counts, time.monotonic()
        elif (
            time.monotonic() - quiet_since >= quiet
            and _nodes_idle(session)
            and _diagnostics_fresh(meas, options, quiet_since)
        ):
            return
    meas.errors.append(f"outputs still arriving after the {options.drain_timeout_s:.0f} s drain")


def _diagnostics_fresh(meas: Measurements, options: ReplayOptions, since: float) -> bool:
    """External nodes: a fusion /diagnostics status received after the last output."""
    if not options.external:
        return True
    with meas.lock:
        times = [t for n, t in meas.diagnostics_time.items() if "fusion" in n]
    return not times or max(times) > since + 0.05


def _nodes_idle(session: _RosSession) -> bool:
    """In-process: the fusion worker has nothing in hand (pairs = fused + dropped)."""
    if session.fusion is None:
        return True
    stats = session.fusion.stats()
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
    return stats.get("pairs", 0) == stats.get("fused", 0) + dropped


def _analyse(
    report: dict[str, Any],
    meas: Measurements,
    plan: BagPlan,
    options: ReplayOptions,
    node_stats: dict[str, Any] | None,
    session: _RosSession | None,
) -> None:
    """Turn the measurements into the report's sections (counts, latency, metrics, AP)."""
    from tqdm import tqdm

    node, source = _node_counts(node_stats, meas)
    counts, checks, drops = _counts_and_checks(meas, node, options.floor)
    report["counts"], report["checks"], report["drops"] = counts, checks, drops
    report["counts_source"] = source
    if node_stats:
        report["fusion_node_stats"] = node_stats

    latency_s: dict[str, list[float]] = {}
    unknown: dict[str, int] = {}
    for stream in ("fused", "detections", "floor"):
        latency_s[stream], unknown[stream] = _latencies(
            meas.published["rgb"], meas.received[stream]
        )
    report["latency_ms"] = {k: latency_summary(v) for k, v in latency_s.items() if v}
    report["latency_note"] = (
        "From the publication of the RGB frame that carries a header stamp by the player to the "
        "reception of the output with that stamp by the recorder (wall clock, same process). "
        "The transport floor is a node that only deserialises and re-publishes each RGB image."
    )
    if any(unknown.values()):
        report["outputs_with_unknown_stamp"] = unknown
    t0 = meas.t0
    events = {
        "thermal_published": sorted(t - t0 for t in meas.published["thermal"].values()),
        "rgb_published": sorted(t - t0 for t in meas.published["rgb"].values()),
        **{f"{k}_received": sorted(t - t0 for _, t in v) for k, v in meas.received.items()},
    }
    report["throughput_hz"] = {k: r for k, v in events.items() if (r := _rate(v)) is not None}
    if meas.player_lag_s:
        played = max(events["rgb_published"] + events["thermal_published"], default=0.0)
        report["playback"] = {
            "lag_ms": latency_summary(meas.player_lag_s),
            "wall_s": played,
            "bag_s": plan.duration_s * options.loop,
            "note": "lag: how late the player published each message against the bag's "
            "timing scaled by --rate (a loaded machine delays it)",
        }
    report["series"] = {
        "latency_ms": {k: [round(x * 1e3, 3) for x in v] for k, v in latency_s.items()},
        "events_s": {k: [round(x, 4) for x in v] for k, v in events.items()},
    }
    per_frame = {}
    for stream in ("fused", "detections", "floor"):
        for stamp, t in meas.received[stream]:
            t_pub = meas.published["rgb"].get(stamp)
            if t_pub is not None:
                per_frame.setdefault(stamp, {})[f"{stream}_latency_ms"] = round(
                    (t - t_pub) * 1e3, 3
                )
    report["frames"] = [{"stamp_ns": s, **v} for s, v in sorted(per_frame.items())]

    # --- frames for metrics, AP and pictures (first loop's stamps only)
    fusion_params = session.fusion_params_used if session else dict(options.fusion_params)
    detector_params = session.detector_params_used if session else dict(options.detector_params)
    metric_stamps = _select_evenly(sorted(meas.kept_fused), options.metrics_frames)
    with_gt = sorted(s for s in meas.detections if s in plan.gt_rgb)
    ap_stamps = _select_evenly(with_gt, options.ap_frames)
    # pictures: kept frames that the detector also processed, where there are such
    with_dets = [s for s in sorted(meas.kept_fused) if s in meas.detections]
    sample_stamps = _select_evenly(with_dets or metric_stamps, options.samples)
    want_rgb = set(metric_stamps) | set(ap_stamps) | set(sample_stamps)
    pairing = {s: _nearest(plan.thermal_stamps, s) for s in want_rgb}
    rgb, thermal = _read_frames(options, plan, want_rgb, {t for t in pairing.values() if t})
    steps = len(metric_stamps) + len(ap_stamps)
    with tqdm(total=steps, desc="evaluate", unit="frame", disable=not options.progress) as bar:
        if metric_stamps:
            report["fusion_metrics"] = _fusion_metrics(
                {s: meas.kept_fused[s] for s in metric_stamps}, rgb, thermal, pairing, plan,
                fusion_params, counts.get("recorded_fused", 0), lambda: bar.update(1),
            )  # fmt: skip
        else:
            report["fusion_metrics"] = {"frames": 0, "note": "no fused frame was received"}
        if options.detector:
            try:
                report["detection"] = _detection_ap(
                    meas, plan, options, rgb, thermal, pairing, ap_stamps, detector_params,
                    lambda: bar.update(1),
                )  # fmt: skip
            except ImportError as exc:
                report["detection"] = {"note": f"detector unavailable: {exc}"}
        else:
            report["detection"] = {"note": "detection disabled (--no-detector)"}
    samples = []
    for s in sample_stamps:
        t_stamp = pairing.get(s)
        th = thermal.get(t_stamp) if t_stamp is not None else None
        samples.append(SampleFrame(
            stamp_ns=s,
            thermal=_thermal_for_detection(th) if th is not None else None,
            visible=rgb.get(s),
            fused=meas.kept_fused.get(s),
            detections=meas.detections.get(s, []),
            ground_truth=plan.gt_rgb.get(s, np.zeros((0, 4))).tolist(),
            caption=f"t = {(s - plan.start_ns) / 1e9:.3f} s in the bag",
        ))  # fmt: skip
    report["_samples"] = samples
