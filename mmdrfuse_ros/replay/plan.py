"""What to replay and what the bag holds: the options, their checks, and the pre-scan of the bag.

The pre-scan (:func:`plan_bag`) opens the bag once before any node starts, so that a wrong topic,
type or encoding is reported in words (exit status 2) instead of as a silent replay of nothing.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdrfuse_ros.bag import io

#: exit codes: 0 done, 1 ran but failed part way (partial report written), 2 unusable input.
EXIT_OK, EXIT_PARTIAL, EXIT_INPUT = 0, 1, 2

#: roles a bag topic can play, with the topic they have in bags we write.
ROLE_DEFAULTS = {
    "thermal": io.THERMAL_TOPIC,
    "rgb": io.RGB_TOPIC,
    "camera_info": io.RGB_INFO_TOPIC,
    "ground_truth": io.GROUND_TRUTH_TOPIC,
    "ground_truth_thermal": io.GROUND_TRUTH_THERMAL_TOPIC,
    "calibration": io.CALIBRATION_TOPIC,
}
_JSON_ROLES = ("calibration", "ground_truth", "ground_truth_thermal")
_GROUND_TRUTH_ROLES = ("ground_truth", "ground_truth_thermal")
#: header stamps are int32 seconds: the last loop of a replay must end before this.
MAX_STAMP_NS = (2**31 - 1) * 1_000_000_000
#: parameters every rclpy node has besides its own table.
_ROS_PARAMS = ("use_sim_time",)
_ROS_PARAM_PREFIXES = ("qos_overrides.",)


class ReplayError(RuntimeError):
    """The replay cannot go on; the text says what to fix. The report holds what was measured."""

    exit_code = EXIT_PARTIAL


class OptionError(ReplayError):
    """An option of the replay is out of range or unknown (unusable input)."""

    exit_code = EXIT_INPUT


class BagUnusable(ReplayError):
    """The bag cannot be replayed at all (missing topic, wrong type or encoding, bad JSON)."""

    exit_code = EXIT_INPUT


class ParameterError(ReplayError):
    """A node parameter given to the replay was refused (unusable input)."""

    exit_code = EXIT_INPUT


@dataclass
class ReplayOptions:
    """Everything ``mmdrfuse replay`` can be told; checked on creation (ReplayError)."""

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
            raise OptionError(f"--rate must be > 0, got {self.rate}")
        if self.loop < 1:
            raise OptionError(f"--loop must be >= 1, got {self.loop}")
        if self.executor not in ("single", "multi"):
            raise OptionError(f"--executor must be single or multi, got {self.executor!r}")
        unknown = sorted(set(self.topics) - set(ROLE_DEFAULTS))
        if unknown:
            raise OptionError(
                f"unknown topic role(s) {unknown} in --topics: use {sorted(ROLE_DEFAULTS)}"
            )
        from mmdrfuse_ros.settings.detector import DETECTOR_PARAMS
        from mmdrfuse_ros.settings.fusion import FUSION_PARAMS

        check_param_names(self.fusion_params, [p.name for p in FUSION_PARAMS], "--fusion-param",
                          "fusion node")  # fmt: skip
        check_param_names(self.detector_params, [p.name for p in DETECTOR_PARAMS],
                          "--detector-param", "detector node")  # fmt: skip

    def roles(self) -> dict[str, str]:
        """role -> bag topic, the defaults overridden by ``--topics``."""
        return {**ROLE_DEFAULTS, **self.topics}


def check_param_names(values: Mapping[str, Any], known: list[str], option: str,
                      node: str) -> None:  # fmt: skip
    """OptionError for a parameter name the node does not have (a misspelling would otherwise
    be ignored silently by the node and the replay measure the defaults)."""
    allowed = set(known) | set(_ROS_PARAMS)
    unknown = [k for k in values if k not in allowed and not k.startswith(_ROS_PARAM_PREFIXES)]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(allowed), n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise OptionError(
        f"{option}: the {node} has no parameter {', '.join(hints)}; its parameters are: "
        + ", ".join(sorted(allowed))
    )


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
    #: input topic -> what is wrong with its header stamps (repeats, restarts); empty: nothing
    stamp_issues: dict[str, str] = field(default_factory=dict)
    truncated: str | None = None  # the reader's word on a bag cut short (BagReader.truncated)
    #: the fusion_node parameters of the bag's params file (mmdrfuse_params.yaml), if any
    params_file: dict[str, Any] = field(default_factory=dict)
    params_problem: str | None = None  # why that file was not used

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def info_count(self) -> int:
        """camera_info messages in the bag (0 without an info topic)."""
        return self.topics[self.info_topic][1] if self.info_topic else 0

    def info(self) -> dict[str, Any]:
        """The report's ``bag`` section."""
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
            **({"stamp_issues": self.stamp_issues} if self.stamp_issues else {}),
            **({"truncated": self.truncated} if self.truncated else {}),
        }

    def check_loop(self, loop: int) -> None:
        """OptionError when ``loop`` repetitions would push stamps past the int32 seconds of a
        ROS header (later loops shift the stamps forward)."""
        from mmdrfuse_ros.replay.player import loop_period_ns

        last = max(self.end_ns, self.thermal_stamps[-1], self.rgb_stamps[-1])
        end = last + (loop - 1) * loop_period_ns(self)
        if end > MAX_STAMP_NS:
            raise OptionError(
                f"--loop {loop}: the last loop would stamp frames {end / 1e9:.0f} s after 1970, "
                f"beyond the {MAX_STAMP_NS // 1_000_000_000} s a ROS header stamp holds; "
                f"use at most --loop {max(1 + (MAX_STAMP_NS - last) // loop_period_ns(self), 1)}"
            )


def homography_argument(h: np.ndarray) -> str:
    """The homography as a ROS parameter value (all doubles), e.g. for
    ``ros2 launch ... homography:='[...]'`` or ``--ros-args -p homography:=[...]``."""
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(h, float).reshape(-1)) + "]"


def _thermal_encodings() -> tuple[str, ...]:
    """The thermal encodings the fusion node accepts."""
    from mmdrfuse_ros.settings.fusion import THERMAL_ENCODINGS

    return tuple(THERMAL_ENCODINGS)


def _storage_of(path: Path) -> str:
    if path.is_dir():
        return "mcap" if any(path.glob("*.mcap")) else "sqlite3"
    return "mcap" if path.suffix == ".mcap" else "sqlite3"


def _topic_table(topics_: dict[str, io.TopicInfo]) -> str:
    return ", ".join(f"{t} [{i.msgtype}, {i.count}]" for t, i in sorted(topics_.items())) or "none"


def _check_image_topics(available: dict[str, io.TopicInfo], roles: dict[str, str]) -> None:
    """Both image roles present, with an image type and messages."""
    images = (io.IMAGE, io.COMPRESSED_IMAGE)
    for role in ("thermal", "rgb"):
        topic = roles[role]
        if topic not in available:
            raise BagUnusable(
                f"the bag has no {role} topic {topic!r} (topics: {_topic_table(available)}); "
                f"name it with --topics {role}=/your/topic"
            )
        if available[topic].msgtype not in images:
            raise BagUnusable(
                f"{role} topic {topic} has type {available[topic].msgtype}, expected "
                f"{io.IMAGE} or {io.COMPRESSED_IMAGE}"
            )
        if available[topic].count == 0:
            raise BagUnusable(f"{role} topic {topic} has no messages")


def _json_topics(available: dict[str, io.TopicInfo], roles: dict[str, str]) -> dict[str, str]:
    """bag topic -> role of the JSON documents present (calibration, ground truth)."""
    json_roles = {roles[r]: r for r in _JSON_ROLES if roles[r] in available}
    for topic in json_roles:
        if available[topic].msgtype != io.STRING:
            raise BagUnusable(
                f"{topic} has type {available[topic].msgtype}, expected {io.STRING} (JSON)"
            )
    return json_roles


@dataclass
class _Scan:
    """One pass over the bag in log order: JSON documents by role and image stamps by topic."""

    docs: dict[str, list[dict]]
    stamps: dict[str, list[int]]
    readable: int = 0
    problem: str | None = None  # corruption part way: everything before it still plays


def _scan(reader: io.BagReader, roles: dict[str, str], json_roles: dict[str, str]) -> _Scan:
    scan = _Scan(docs={r: [] for r in json_roles.values()},
                 stamps={roles["thermal"]: [], roles["rgb"]: []})  # fmt: skip
    encodings = _thermal_encodings()
    checked: set[str] = set()
    try:
        for topic, msgtype, _, raw in reader.messages([*scan.stamps, *json_roles]):
            if topic in json_roles:
                scan.docs[json_roles[topic]].append(_json_doc(topic, raw))
                continue
            if topic not in checked:  # the first frame of each: decodable and supported
                checked.add(topic)
                _check_first_frame(topic, msgtype, raw, topic == roles["thermal"], encodings)
            scan.stamps[topic].append(io.header_stamp_from_cdr(raw))
            scan.readable += 1
    except io.BagError as exc:
        scan.problem = str(exc)
    return scan


def stamp_issues(stamps: list[int]) -> str | None:
    """What is wrong with one topic's header stamps in log order: repeats, steps back."""
    seen: set[int] = set()
    repeated = backwards = 0
    for previous, stamp in zip([None, *stamps], stamps, strict=False):
        repeated += stamp in seen
        backwards += previous is not None and stamp < previous
        seen.add(stamp)
    parts = ([f"{repeated} frame(s) repeat an earlier stamp"] if repeated else []) + (
        [f"stamps step back {backwards} time(s) (restart mid-recording)"] if backwards else [])
    return "; ".join(parts) or None


def _stamp_issues(scan: _Scan, roles: dict[str, str]) -> dict[str, str]:
    issues = {t: stamp_issues(scan.stamps[t]) for t in (roles["thermal"], roles["rgb"])}
    return {t: d for t, d in issues.items() if d}


def _ground_truth(scan: _Scan, roles: dict[str, str]) -> dict[str, dict[int, np.ndarray]]:
    """role -> stamp -> boxes, for both ground-truth roles; BagUnusable naming the message."""
    gt: dict[str, dict[int, np.ndarray]] = {}
    for role in _GROUND_TRUTH_ROLES:
        gt[role] = {}
        for i, doc in enumerate(scan.docs.get(role, [])):
            try:
                stamp, boxes = io.parse_ground_truth(doc)
            except (io.BagError, TypeError, ValueError) as exc:
                raise BagUnusable(f"{roles[role]}: ground-truth message {i}: {exc}") from exc
            gt[role][stamp] = boxes
    return gt


def plan_bag(options: ReplayOptions) -> BagPlan:
    """Open and check the bag: topics present with image types, a readable first frame of each,
    calibration and ground truth parsed, all image stamps listed. BagError/BagUnusable say what
    is wrong; corruption after some messages is kept in ``problem`` (those before still play)."""
    roles = options.roles()
    with io.BagReader(options.bag) as reader:
        available = reader.topics
        if not available:
            raise BagUnusable(f"bag {options.bag} has no topics")
        _check_image_topics(available, roles)
        info_topic: str | None = roles["camera_info"]
        if info_topic not in available or available[info_topic].msgtype != io.CAMERA_INFO:
            info_topic = None
        scan = _scan(reader, roles, _json_topics(available, roles))
        calibrations = scan.docs.get("calibration")
        gt = _ground_truth(scan, roles)
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
            homography=io.homography_from_calibration(calibrations[-1] if calibrations else None),
            thermal_stamps=sorted(scan.stamps[roles["thermal"]]),
            rgb_stamps=sorted(scan.stamps[roles["rgb"]]),
            gt_rgb=gt["ground_truth"],
            gt_thermal=gt["ground_truth_thermal"],
            readable_messages=scan.readable,
            problem=scan.problem,
            stamp_issues=_stamp_issues(scan, roles),
            truncated=getattr(reader, "truncated", None),
        )
    if not plan.rgb_stamps or not plan.thermal_stamps:
        raise BagUnusable(f"bag {options.bag} is unreadable from the start: {scan.problem}")
    _read_params_file(plan, options.bag)
    return plan


def _read_params_file(plan: BagPlan, bag: Path) -> None:
    """The fusion settings that travel with the bag: what ``ros2 launch ... params_file:=``
    gives nodes started elsewhere, so the in-process nodes fuse the same way."""
    from mmdrfuse_ros.bag.params import read_params

    try:
        plan.params_file = read_params(bag) or {}
    except ValueError as exc:
        plan.params_problem = f"the bag's params file is not used: {exc}"


def _json_doc(topic: str, raw: bytes) -> dict:
    text = io.BagReader.deserialize(raw, io.STRING).data
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BagUnusable(f"{topic}: a message is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise BagUnusable(f"{topic}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_first_frame(
    topic: str, msgtype: str, raw: bytes, thermal: bool, thermal_encodings: tuple[str, ...]
) -> None:
    msg = io.BagReader.deserialize(raw, msgtype)
    try:
        image, encoding = io.message_to_array(msg, msgtype)
    except ValueError as exc:
        raise BagUnusable(f"{topic}: the first image cannot be read: {exc}") from exc
    if thermal and msgtype == io.IMAGE and encoding not in thermal_encodings:
        raise BagUnusable(
            f"{topic}: thermal encoding {encoding!r} is not supported by the fusion node "
            f"(expected one of {list(thermal_encodings)}); is --topics thermal= the right topic?"
        )
    if thermal and image.ndim != 2:
        raise BagUnusable(f"{topic}: thermal images must have one channel, got {image.shape}")
