"""``fusion_node``: synchronise thermal and RGB images and publish the MMDRFuse fused image.

A lifecycle node (:class:`~mmdrfuse_ros.nodes.worker.WorkerNode`):

* construction declares and validates every parameter (a bad value is refused with its reason,
  there and at run time); with ``autostart`` (default) it then configures and activates itself;
* configure reads the QoS parameters and creates the publishers;
* activate loads the weights, builds and warms up the FusionEngine, subscribes and starts the
  worker; deactivate undoes that (the engine is closed, which frees CUDA memory); cleanup
  destroys the publishers.

Data path: the two image subscriptions feed a synchroniser (``sync.py``; ``sync_policy``
approximate or latest); its callback only puts the pair in the one-slot mailbox. The worker
takes the newest pair, converts, fuses and publishes; a pair still waiting when a newer one
arrives is dropped and counted as ``stale``. The fused image carries the RGB message's header
unchanged and is in the RGB camera's geometry.

Where a frame's time goes: :data:`STAGES`, each as p50/p95 milliseconds in ``stats()`` and on
``/diagnostics`` (``stage_network_p50_ms``...): ``arrival`` (RGB header stamp to its callback,
node clock: the transport), ``sync_wait`` (RGB callback to a complete pair: waiting for the
thermal partner), ``queue`` (pair to worker), ``convert`` (messages to arrays), ``prepare``
(thermal normalisation, registration, luma split), ``network``, ``colour`` (colour restore and
output layout) and ``publish`` (building the message and publishing it). They add up to the
stamp-to-publish latency.

QoS: ``input_*``/``output_*`` parameters, overridable per topic with rclpy's
``qos_overrides.<topic>.<subscription|publisher>.<policy>`` parameters (``nodes/qos.py``).

Engine parameters (backend, device, weights, thermal normalisation, homography, output encoding)
apply at run time: a change is validated, then the worker rebuilds the engine before its next
frame. Topic, QoS, synchroniser and transport parameters apply at the next activation.

Bad input (unsupported encoding, malformed buffer, a pair that cannot be registered, an
inference or publish error) is logged (throttled per cause), counted on ``/diagnostics`` and
skipped; no message can stop the node.
"""

from __future__ import annotations

import array
import contextlib
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mmdrfuse_ros import topics
from mmdrfuse_ros.fusion import FusionEngine
from mmdrfuse_ros.fusion.preprocess import FusionInputError
from mmdrfuse_ros.msgs.compressed import compressed_to_array
from mmdrfuse_ros.msgs.images import (
    MalformedImageError,
    UnsupportedEncodingError,
    convert_encoding,
    image_to_array,
    is_color_encoding,
)
from mmdrfuse_ros.nodes.qos import check_given_overrides, make_qos, overriding_options
from mmdrfuse_ros.nodes.sync import SyncedSubscriptions
from mmdrfuse_ros.nodes.timing import StageTimer
from mmdrfuse_ros.nodes.worker import WorkerNode, run_node
from mmdrfuse_ros.settings.fusion import (
    FUSION_PARAMS,
    RGB_PASSTHROUGH,
    THERMAL_ENCODINGS,
    check_fusion_values,
    fusion_engine_kwargs,
    output_encoding_for,
)
from mmdrfuse_ros.stamps import stamp_to_ns

NODE_NAME = topics.FUSION_NODE
#: why frames are dropped: the keys of the drop counters in diagnostics
DROP_CAUSES = (
    "stale",  # a newer pair arrived before the worker took this one
    "unsupported_encoding",
    "malformed_image",  # wrong buffer size/step, undecodable compressed data
    "registration",  # the pair could not be brought into one geometry / validated
    "inference",  # the network or the output conversion failed
    "publish",
)
#: a stamp this far behind the previous one on the same input means the clock jumped back
#: (a bag loop): queued messages are forgotten and the thermal smoothing restarts.
TIME_JUMP_BACK_NS = 1_000_000_000
#: the timed stages of one frame, in order (see the module docstring)
STAGES = ("arrival", "sync_wait", "queue", "convert", "prepare", "network", "colour", "publish")
THERMAL, RGB = 0, 1  # input indices
_RECEIVE_TIMES_KEPT = 64  # RGB receive times kept for the sync_wait stage


# ----------------------------------------------------------------------- message -> array
def thermal_array(msg: Any) -> np.ndarray:
    """The thermal frame (HxW) of an Image or CompressedImage; conversion errors raise."""
    if isinstance(msg, CompressedImage):
        image, encoding = compressed_to_array(msg)
    else:
        encoding = msg.encoding
        if encoding not in THERMAL_ENCODINGS:
            raise UnsupportedEncodingError(
                f"thermal encoding {encoding!r} is not supported (expected one of "
                f"{list(THERMAL_ENCODINGS)})"
            )
        image = image_to_array(msg)
    if image.ndim != 2:
        raise UnsupportedEncodingError(
            f"thermal must be single-channel, got {encoding!r} with shape {image.shape}"
        )
    return image


def visible_array(msg: Any) -> np.ndarray:
    """The RGB frame as BGR (HxWx3) or grey (HxW), 8 or 16 bit; conversion errors raise."""
    if isinstance(msg, CompressedImage):
        image, encoding = compressed_to_array(msg)
    else:
        encoding = msg.encoding
        image = image_to_array(msg)
    if encoding in RGB_PASSTHROUGH:
        return image
    if is_color_encoding(encoding):
        return convert_encoding(image, encoding, "bgr8")  # rgb8, bgra8, rgba8, bayer, yuv422
    raise UnsupportedEncodingError(
        f"RGB encoding {encoding!r} is not supported (expected bgr8, rgb8, mono8 or another "
        "colour encoding)"
    )


def output_message(shape: tuple[int, ...], dtype: np.dtype, encoding: str) -> tuple[Image, Any]:
    """An Image of this layout and a writable array over its own ``data``: a frame written into
    the array is published without another copy (``array_to_image`` copies it twice)."""
    data = array.array("B", b"\0") * (int(np.prod(shape)) * dtype.itemsize)
    try:  # this rosidl's setter keeps an array.array as it is only when it checks fields
        msg = Image(check_fields=True)
    except (TypeError, AssertionError):
        msg = Image()
    msg.height, msg.width = int(shape[0]), int(shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = int(shape[1]) * (shape[2] if len(shape) == 3 else 1) * dtype.itemsize
    msg.data = data
    return msg, np.frombuffer(msg.data, dtype).reshape(shape)  # msg.data: data or its copy


@dataclass
class _Pair:
    thermal: Any
    rgb: Any
    received: float  # monotonic time at which the pair was complete


class FusionNode(WorkerNode):
    """The fusion lifecycle node. ``node_kwargs`` go to rclpy's Node (parameter_overrides,
    namespace, context, cli_args...), so tools can run it in-process."""

    PARAMS = FUSION_PARAMS
    TASK = "fusion"
    BUILT = "engine"
    ACTIVITY = "fusing"
    ITEM = "frame"
    COUNTERS = ("received_thermal", "received_rgb", "pairs", "fused", "time_jumps_back")
    DROP_CAUSES = DROP_CAUSES
    RATES = ("thermal", "rgb", "pairs", "fused")
    OUTPUT_RATE = "fused"

    def __init__(self, node_name: str = NODE_NAME, **node_kwargs: Any):
        self._camera_info: CameraInfo | None = None
        self._last_stamp_ns: dict[int, int] = {}
        self._reset_engine_state = False
        self.stages = StageTimer(STAGES)
        self._rgb_received: OrderedDict[int, float] = OrderedDict()  # stamp ns -> monotonic
        self._received_lock = threading.Lock()
        self._out_cache: tuple[Any, Image, np.ndarray] | None = None  # worker thread only
        super().__init__(node_name, **node_kwargs)

    def stats(self) -> dict[str, Any]:
        """The base's counters, rates and latencies, then the stage percentiles (ms)."""
        return {**super().stats(), **self.stages.summary()}

    @property
    def _engine(self) -> FusionEngine | None:
        return self._built

    # ------------------------------------------------------------------ WorkerNode hooks
    def _check(self, values: Mapping[str, Any], changed: Collection[str] | None) -> str | None:
        if changed is None and (reason := check_given_overrides(self)):
            return reason
        engine = changed is None or any(self._specs[name].live for name in changed)
        return check_fusion_values(values, engine=engine)

    def _build(self, values: Mapping[str, Any]) -> FusionEngine:
        engine = FusionEngine(**fusion_engine_kwargs(values))
        engine.warmup()
        return engine

    def _describe(self, built: FusionEngine) -> str:
        return f"{built.backend_name} on {built.device}"

    def _identity(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        engine = self._built
        if engine is not None:
            with contextlib.suppress(Exception):  # closed between the read and the call
                values.update(backend=engine.backend_name, device=engine.device,
                              weights=engine.weights_info.get("path", ""))  # fmt: skip
        sync = self._inputs.get("sync")
        if sync is not None:
            values["sync"] = sync.implementation
            values["sync_policy"] = sync.policy_name
            if sync.policy is not None:
                values["unmatched_evicted"] = sum(sync.policy.evicted)
                values["queued"] = sum(sync.policy.queued())
        return values

    def _warning(self, values: Mapping[str, Any]) -> str | None:
        if values["rgb_hz"] > 0 and values["thermal_hz"] > 0 and values["pairs_hz"] == 0:
            return "both inputs arrive but no pairs match (check stamps and slop)"
        return None

    def _input_topics(self) -> dict[str, str]:
        """Which rate meter counts which topic (for the base's silent-input warning)."""
        sync = self._inputs.get("sync")
        return dict(zip(("thermal", "rgb"), sync.topics, strict=True)) if sync else {}

    def _open_outputs(self, values: Mapping[str, Any]) -> None:
        self._outputs["fused"] = self._publisher(Image, topics.FUSED_IMAGE, values)
        if values["publish_camera_info"]:
            self._outputs["info"] = self._publisher(CameraInfo, topics.FUSED_CAMERA_INFO, values)
        self._camera_info = None

    def _open_inputs(self, values: Mapping[str, Any]) -> None:
        def in_qos() -> Any:  # a fresh profile per entity: rclpy writes overrides into it
            return make_qos(values["input_reliability"], values["input_depth"])

        inputs = [
            self._input(topics.THERMAL_IMAGE, values["thermal_transport"]),
            self._input(topics.RGB_IMAGE, values["rgb_transport"]),
        ]
        options = [overriding_options(self, "subscription", topic) for _, topic in inputs]
        with self._received_lock:
            self._rgb_received.clear()
        self._inputs["sync"] = SyncedSubscriptions(
            self, inputs, [in_qos() for _ in inputs], values["queue_size"], values["slop"],
            self._on_pair, on_receive=self._on_receive, policy=values["sync_policy"],
            qos_overriding_options=options,
        )  # fmt: skip
        if "info" in self._outputs:
            self._inputs["info"] = self.create_subscription(
                CameraInfo, topics.RGB_CAMERA_INFO, self._on_camera_info, in_qos(),
                qos_overriding_options=overriding_options(
                    self, "subscription", topics.RGB_CAMERA_INFO),
            )  # fmt: skip

    def _active_message(self, values: Mapping[str, Any]) -> str:
        sync = self._inputs["sync"]
        return (
            f"active: {self._describe(self._built)}, sync {values['sync_policy']} "
            f"({sync.implementation}, queue {values['queue_size']}, slop {values['slop']} s), "
            f"inputs {sync.topics}, output "
            f"{self._outputs['fused'].topic_name}"
        )

    def _input(self, base: str, transport: str) -> tuple[type, str]:
        if transport == "raw":
            return Image, base
        # image_transport names: the remapped base topic plus /compressed
        return CompressedImage, self.resolve_topic_name(base) + "/compressed"

    # ------------------------------------------------------------------ callbacks
    def _on_receive(self, index: int, msg: Any) -> None:
        name = ("thermal", "rgb")[index]
        self.counters.inc(f"received_{name}")
        self.rates[name].tick()
        stamp = stamp_to_ns(msg.header.stamp)
        if index == RGB:
            self._note_rgb_arrival(stamp)
        last = self._last_stamp_ns.get(index)
        self._last_stamp_ns[index] = stamp
        if last is not None and stamp < last - TIME_JUMP_BACK_NS:
            # a bag loop or a restarted camera: old stamps would block the queues
            self.counters.inc("time_jumps_back")
            self.get_logger().info("input stamps jumped back: clearing the sync queues")
            sync = self._inputs.get("sync")
            if sync is not None:
                sync.clear()
            self._reset_engine_state = True

    def _note_rgb_arrival(self, stamp_ns: int) -> None:
        """Time the arrival stage (stamp -> callback, node clock) and keep the receive time."""
        now_ns = self.get_clock().now().nanoseconds
        if now_ns > 0 and stamp_ns > 0:  # now is 0 under use_sim_time until the first /clock
            self.stages.add("arrival", (now_ns - stamp_ns) / 1e9)
        with self._received_lock:
            self._rgb_received[stamp_ns] = time.monotonic()
            while len(self._rgb_received) > _RECEIVE_TIMES_KEPT:
                self._rgb_received.popitem(last=False)

    def _on_pair(self, thermal: Any, rgb: Any) -> None:
        now = time.monotonic()
        with self._received_lock:
            rgb_received = self._rgb_received.pop(stamp_to_ns(rgb.header.stamp), None)
        if rgb_received is not None:
            self.stages.add("sync_wait", now - rgb_received)
        self.counters.inc("pairs")
        self.rates["pairs"].tick()
        self._offer(_Pair(thermal, rgb, now))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # ------------------------------------------------------------------ the worker
    def _process(self, pair: _Pair, engine: FusionEngine) -> None:
        lap = self.stages.lap(start=pair.received)
        lap.mark("queue")
        if self._reset_engine_state:
            self._reset_engine_state = False
            engine.reset()
        try:
            thermal = thermal_array(pair.thermal)
            visible = visible_array(pair.rgb)
        except UnsupportedEncodingError as exc:
            return self._drop("unsupported_encoding", exc)
        except (MalformedImageError, ValueError) as exc:
            return self._drop("malformed_image", exc)
        lap.mark("convert")
        try:
            prepared = engine.prepare(thermal, visible)
        except FusionInputError as exc:  # empty, too small, wrong dtype, NaN
            return self._drop("malformed_image", exc)
        except Exception as exc:  # OpenCV errors from the warp
            return self._drop("registration", exc)
        lap.mark("prepare")
        try:
            luma = engine.fuse_luma(prepared.thermal, prepared.visible.luma)
            lap.mark("network")
            out, buffer = self._output_message(engine, visible.shape)
            engine.finish(luma, prepared, out=buffer)  # written into the message's buffer
            lap.mark("colour")
            out.header = pair.rgb.header
        except Exception as exc:
            return self._drop("inference", exc)
        if self._publish(out, pair.rgb.header):
            lap.mark("publish")
            self.counters.inc("fused")
            self.rates["fused"].tick()
            self._record_latency(pair.received, pair.rgb.header)

    def _output_message(self, engine: FusionEngine, visible_shape: tuple[int, ...]) -> Any:
        """The fused image message and a view of its buffer, reused from frame to frame (rclpy
        has copied a message when publish returns): no allocation, no page faults."""
        s = engine.settings
        shape, dtype = engine.output_layout(visible_shape)
        key = (shape, dtype.str, output_encoding_for(s.output_color, s.output_dtype))
        if self._out_cache is None or self._out_cache[0] != key:
            self._out_cache = (key, *output_message(shape, dtype, key[2]))
        return self._out_cache[1], self._out_cache[2]

    def _publish(self, out: Image, header: Any) -> bool:
        """Publish the fused image (and camera_info); False when it was not published."""
        try:
            fused_pub, info_pub = self._outputs.get("fused"), self._outputs.get("info")
            if fused_pub is None:
                return False
            fused_pub.publish(out)
            info = self._camera_info
            if info_pub is not None and info is not None:
                info.header = header
                info_pub.publish(info)
        except Exception as exc:
            self._drop("publish", exc)
            return False
        return True


def main(args: list[str] | None = None) -> int:
    """``fusion_node`` executable: run until Ctrl-C; exit 1 with the reason on bad parameters."""
    return run_node(FusionNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
