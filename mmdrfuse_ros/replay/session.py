"""The ROS side of a replay, in this process: the nodes, the transport floor and the recorder.

* the **fusion** and **detector** nodes, on one executor, with ``use_sim_time`` and the bag's
  homography (``external``: nodes started elsewhere are measured instead);
* a **transport floor**: a node that only re-publishes each RGB image, with the fusion node's
  input and output QoS, so the cost of moving the images alone is measured in the same run;
* a **recorder** that notes when each fused image, detection message and floor image arrives,
  keeps a few fused frames for quality metrics and pictures, and reads ``/diagnostics``.

All of them share one rclpy context of their own, so the replay never touches the caller's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import numpy as np

from mmdrfuse_ros import topics
from mmdrfuse_ros.bag import io
from mmdrfuse_ros.replay.measurements import Measurements
from mmdrfuse_ros.replay.plan import BagPlan, ParameterError, ReplayError, ReplayOptions
from mmdrfuse_ros.replay.player import PlayerProcess

#: where the transport floor re-publishes the RGB images.
FLOOR_TOPIC = "replay/transport_floor"
_RECORDER_QOS = ("reliable", 50)
_DIAGNOSTICS_PERIOD_S = 3.0  # how long to wait for a first /diagnostics (they come each second)


def fusion_status_name() -> str:
    """Name of the fusion node's DiagnosticStatus: ``"<node name>: <task>"``."""
    from mmdrfuse_ros.nodes.fusion_node import NODE_NAME, FusionNode

    return f"{NODE_NAME}: {FusionNode.TASK}"


class KeepPolicy:
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


def fusion_parameters(options: ReplayOptions, plan: BagPlan) -> dict[str, Any]:
    """The fusion node's parameters for this bag: sim time, the bag's params file, its
    homography and transports, then the user's ``--fusion-param`` values."""
    params: dict[str, Any] = {"use_sim_time": True, **plan.params_file}
    if plan.homography is not None:
        params["homography"] = plan.homography.reshape(-1).tolist()
    if plan.thermal_type == io.COMPRESSED_IMAGE:
        params["thermal_transport"] = "compressed"
    if plan.rgb_type == io.COMPRESSED_IMAGE:
        params["rgb_transport"] = "compressed"
    params.update(options.fusion_params)
    return params


def detector_parameters(options: ReplayOptions) -> dict[str, Any]:
    """The detector settings of this replay: the in-process node's parameters (on sim time),
    or, with ``--external``, those of the offline thermal/visible reference detector, which
    should match the external node's."""
    if options.external:
        return dict(options.detector_params)
    return {"use_sim_time": True, **options.detector_params}


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


def _io_qos(params: dict[str, Any]) -> tuple[Any, Any]:
    """(input, output) QoS of the fusion node with these parameters."""
    from mmdrfuse_ros.nodes.qos import make_qos
    from mmdrfuse_ros.settings import qos

    return (
        make_qos(params.get("input_reliability", qos.INPUT_RELIABILITY),
                 int(params.get("input_depth", qos.INPUT_DEPTH))),
        make_qos(params.get("output_reliability", qos.OUTPUT_RELIABILITY),
                 int(params.get("output_depth", qos.OUTPUT_DEPTH))),
    )  # fmt: skip


def _image_type(compressed: bool) -> type:
    from sensor_msgs.msg import CompressedImage, Image

    return CompressedImage if compressed else Image


class Recorder:
    """The replay's own node: times every output, keeps some fused frames, reads /diagnostics."""

    def __init__(self, context: Any, meas: Measurements, keep: KeepPolicy,
                 floor_type: type | None, detections: bool) -> None:  # fmt: skip
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import Image

        from mmdrfuse_ros.nodes.qos import make_qos

        self.meas, self.keep = meas, keep
        self.node = Node("mmdrfuse_replay_recorder", context=context)
        qos = make_qos(*_RECORDER_QOS)
        self.node.create_subscription(Image, topics.FUSED_IMAGE, self._on_fused, qos, raw=True)
        if floor_type is not None:
            self.node.create_subscription(floor_type, FLOOR_TOPIC, self._on_floor, qos, raw=True)
        if detections:
            from mmdrfuse_ros.msgs.detections import detection_message_type

            self.node.create_subscription(detection_message_type(), topics.DETECTIONS,
                                          self._on_detections, qos)  # fmt: skip
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics,
                                      10)  # fmt: skip

    def _on_fused(self, raw: bytes) -> None:
        stamp = io.header_stamp_from_cdr(raw)
        self.meas.add_received("fused", stamp)
        if self.keep.wants(stamp):
            self._keep(stamp, raw)

    def _keep(self, stamp: int, raw: bytes) -> None:
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        from mmdrfuse_ros.msgs.images import image_to_array

        try:
            image = np.array(image_to_array(deserialize_message(raw, Image)))  # outlives the msg
        except Exception as exc:
            self.meas.note_error(f"a fused image could not be read: {exc}")
            return
        self.meas.keep_fused(stamp, image)

    def _on_floor(self, raw: bytes) -> None:
        self.meas.add_received("floor", io.header_stamp_from_cdr(raw))

    def _on_detections(self, msg: Any) -> None:
        from mmdrfuse_ros.msgs.detections import msg_to_detections

        try:
            stamp, _frame, dets = msg_to_detections(msg)
        except Exception as exc:  # a malformed message is noted, never fatal
            self.meas.note_error(f"unreadable detections message: {exc}")
            return
        self.meas.add_detections(stamp, [list(d.as_row()) for d in dets])

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            self.meas.add_status(status.name, {kv.key: kv.value for kv in status.values})

    def publishers_missing(self, detections: bool) -> list[str]:
        """The output topics that have no publisher yet."""
        names = [topics.FUSED_IMAGE, *([topics.DETECTIONS] if detections else [])]
        resolved = [self.node.resolve_topic_name(n) for n in names]
        return [f"a publisher of {n}" for n in resolved if self.node.count_publishers(n) < 1]


class RosSession:
    """The nodes, the executor and the recorder of one replay (all in one rclpy context)."""

    def __init__(self, options: ReplayOptions, plan: BagPlan, meas: Measurements) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.signals import SignalHandlerOptions

        self.options, self.plan, self.meas = options, plan, meas
        self.context = Context()
        # the replay's own handlers (replay.signals) turn SIGINT/SIGTERM into a partial report
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.nodes: list[Any] = []
        self.fusion: Any = None
        self.detector: Any = None
        self.recorder: Recorder | None = None
        self.executor: Any = None
        self._spin_thread: threading.Thread | None = None
        self.fusion_params_used: dict[str, Any] = fusion_parameters(options, plan)
        self.detector_params_used: dict[str, Any] = detector_parameters(options)
        self.status_name = fusion_status_name()

    # -- building ----------------------------------------------------------------------------
    def start(self, keep: KeepPolicy) -> None:
        """Create every node and spin them; ParameterError/ReplayError if a node refuses."""
        if not self.options.external:
            self._start_nodes()
        floor_type = self._start_floor() if self.options.floor else None
        self.recorder = Recorder(self.context, self.meas, keep, floor_type, self.options.detector)
        self.nodes.append(self.recorder.node)
        self._spin()

    def _start_nodes(self) -> None:
        from mmdrfuse_ros.nodes.fusion_node import FusionNode

        self.fusion = _make_node(FusionNode, self.context, self.fusion_params_used,
                                 "--fusion-param")  # fmt: skip
        self.nodes.append(self.fusion)
        if self.fusion.lifecycle_state != "active":
            raise ReplayError(
                "the fusion node did not activate (see its log above); check --fusion-param"
            )
        if self.options.detector:
            from mmdrfuse_ros.nodes.detector_node import DetectorNode

            self.detector = _make_node(DetectorNode, self.context, self.detector_params_used,
                                       "--detector-param")  # fmt: skip
            self.nodes.append(self.detector)

    def _start_floor(self) -> type:
        """The transport floor: deserialise and publish again, what any rclpy image node pays
        at the minimum. Returns the image type it publishes."""
        from rclpy.node import Node

        compressed = self.plan.rgb_type == io.COMPRESSED_IMAGE
        in_qos, out_qos = _io_qos(self.fusion_params_used)
        msg_type = _image_type(compressed)
        floor = Node("mmdrfuse_transport_floor", context=self.context)
        publisher = floor.create_publisher(msg_type, FLOOR_TOPIC, out_qos)
        topic = topics.RGB_IMAGE + ("/compressed" if compressed else "")
        floor.create_subscription(msg_type, topic, publisher.publish, in_qos)
        self.nodes.append(floor)
        return msg_type

    def _spin(self) -> None:
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

        if self.options.executor == "multi":
            self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        else:
            self.executor = SingleThreadedExecutor(context=self.context)
        for node in self.nodes:
            self.executor.add_node(node)
        self._spin_thread = threading.Thread(target=self._run_executor, name="replay_spin",
                                             daemon=True)  # fmt: skip
        self._spin_thread.start()

    def _run_executor(self) -> None:
        with contextlib.suppress(Exception):  # shutdown races end the spin, nothing else
            self.executor.spin()

    # -- what the report says about the nodes ------------------------------------------------
    def backend_used(self) -> str | None:
        return self.fusion.stats().get("backend") if self.fusion is not None else None

    def detector_stats(self) -> dict[str, Any] | None:
        """The detector's counters and settings: in-process from the node, external from its
        last /diagnostics status (None: no detector, or nothing heard from it)."""
        if self.detector is not None:
            with contextlib.suppress(Exception):
                return dict(self.detector.stats())
            return None
        if not self.options.external or not self.options.detector:
            return None
        from mmdrfuse_ros.nodes.detector_node import NODE_NAME, DetectorNode

        with self.meas.lock:
            values = self.meas.diagnostics.get(f"{NODE_NAME}: {DetectorNode.TASK}")
        return dict(values) if values else None

    def fusion_values(self) -> dict[str, Any] | None:
        """The fusion node's stats in-process, its last /diagnostics values when external."""
        if self.fusion is not None:
            return self.fusion_stats()
        with self.meas.lock:
            values = self.meas.diagnostics.get(self.status_name)
        return dict(values) if values else None

    def detector_backend(self) -> str | None:
        if self.detector is None:
            return None
        with contextlib.suppress(Exception):
            return str(self.detector.get_parameter("backend").value)
        return "?"

    def fusion_stats(self) -> dict[str, Any] | None:
        """The in-process fusion node's counters (None with external nodes)."""
        return self.fusion.stats() if self.fusion is not None else None

    # -- waiting for the graph ---------------------------------------------------------------
    def subscribers_needed(self) -> dict[str, int]:
        """Readers each player topic must have before playback (the fusion node, the floor)."""
        return {"thermal": 1, "rgb": 1 + (1 if self.options.floor else 0)}

    def wait_for_graph(self, player: PlayerProcess) -> None:
        """Until the player's publishers have their readers and the recorder its writers."""
        opts = self.options
        deadline = time.monotonic() + opts.start_timeout_s
        diag_deadline = time.monotonic() + _DIAGNOSTICS_PERIOD_S
        no_diagnostics = "/diagnostics from the fusion node"
        recorder = self.recorder
        if recorder is None:
            raise ReplayError("the replay session was not started")
        while True:
            missing = player.poll_ready() + recorder.publishers_missing(opts.detector)
            if opts.external and not self.meas.status_seen(self.status_name, True):
                missing.append(no_diagnostics)  # the node's counters before playback: a baseline
            if not missing:
                return
            if missing == [no_diagnostics] and time.monotonic() > min(deadline, diag_deadline):
                return  # counts then come only from what the recorder sees
            if time.monotonic() > deadline:
                raise ReplayError(f"after {opts.start_timeout_s:.0f} s still no "
                                  f"{', '.join(missing)}: {self._graph_hint()}")  # fmt: skip
            time.sleep(0.05)

    def _graph_hint(self) -> str:
        if self.options.external:
            return ("start the fusion and detector nodes first, with use_sim_time:=true "
                    "(e.g. ros2 launch mmdrfuse_ros fusion.launch.py use_sim_time:=true), "
                    "on the same ROS_DOMAIN_ID")  # fmt: skip
        return "the in-process nodes did not connect (DDS discovery)"

    # -- draining ----------------------------------------------------------------------------
    def drain(self, quiet_s: float | None = None, timeout_s: float | None = None) -> None:
        """Wait for the last outputs: until nothing new arrived for ``quiet_s`` (or the timeout),
        and at least one fresh /diagnostics period later. Defaults: the options' values."""
        opts, meas = self.options, self.meas
        timeout = opts.drain_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        last = meas.counts()
        quiet_since = time.monotonic()
        quiet = max(opts.quiet_s, 1.5) if quiet_s is None else quiet_s
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now_counts = meas.counts()
            if now_counts != last:
                last, quiet_since = now_counts, time.monotonic()
            elif (time.monotonic() - quiet_since >= quiet and self._nodes_idle()
                  and self._diagnostics_fresh(quiet_since)):  # fmt: skip
                return
        meas.note_error(f"outputs still arriving after the {timeout:.0f} s drain")

    def _diagnostics_fresh(self, since: float) -> bool:
        """External nodes: a fusion /diagnostics status received after the last output."""
        if not self.options.external:
            return True
        last = self.meas.status_time(self.status_name)
        return last is None or last > since + 0.05

    def _nodes_idle(self) -> bool:
        """In-process: the fusion worker has nothing in hand (pairs = fused + dropped)."""
        stats = self.fusion_stats()
        if stats is None:
            return True
        dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
        return stats.get("pairs", 0) == stats.get("fused", 0) + dropped

    # -- shutting down -----------------------------------------------------------------------
    def close(self) -> None:
        import rclpy

        if self.executor is not None:
            with contextlib.suppress(Exception):
                self.executor.shutdown(timeout_sec=5.0)
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.destroy_node()
        with contextlib.suppress(Exception):
            rclpy.shutdown(context=self.context)
        if self._spin_thread is not None:
            self._spin_thread.join(timeout=5.0)
