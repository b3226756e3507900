"""``fusion_node``: synchronise thermal and RGB images and publish the MMDRFuse fused image.

A lifecycle node (:class:`~mmdrfuse_ros.nodes.worker.WorkerNode`):

* construction declares and validates every parameter (a bad value is refused with its reason,
  there and at run time); with ``autostart`` (default) it then configures and activates itself;
* configure reads the QoS parameters and creates the publishers;
* activate loads the weights, builds and warms up the FusionEngine, subscribes and starts the
  worker; deactivate undoes that (the engine is closed, which frees CUDA memory); cleanup
  destroys the publishers.

Data path: the two image subscriptions feed an approximate-time synchroniser (``sync.py``);
its callback only puts the pair in the one-slot mailbox. The worker takes the newest pair,
converts, fuses and publishes; a pair still waiting when a newer one arrives is dropped and
counted as ``stale``. The fused image carries the RGB message's header unchanged and is in the
RGB camera's geometry.

Engine parameters (backend, device, weights, thermal normalisation, homography, output encoding)
apply at run time: a change is validated, then the worker rebuilds the engine before its next
frame. Topic, QoS, synchroniser and transport parameters apply at the next activation.

Bad input (unsupported encoding, malformed buffer, a pair that cannot be registered, an
inference or publish error) is logged (throttled per cause), counted on ``/diagnostics`` and
skipped; no message can stop the node.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mmdrfuse_ros import topics
from mmdrfuse_ros.fusion import FusionEngine
from mmdrfuse_ros.msgs.compressed import compressed_to_array
from mmdrfuse_ros.msgs.images import (
    MalformedImageError,
    UnsupportedEncodingError,
    array_to_image,
    convert_encoding,
    image_to_array,
    is_color_encoding,
)
from mmdrfuse_ros.nodes.qos import make_qos
from mmdrfuse_ros.nodes.sync import SyncedSubscriptions
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

NODE_NAME = "fusion_node"
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
        super().__init__(node_name, **node_kwargs)

    @property
    def _engine(self) -> FusionEngine | None:
        return self._built

    # ------------------------------------------------------------------ WorkerNode hooks
    def _check(self, values: Mapping[str, Any], changed: Collection[str] | None) -> str | None:
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
            if sync.policy is not None:
                values["unmatched_evicted"] = sum(sync.policy.evicted)
                values["queued"] = sum(sync.policy.queued())
        return values

    def _warning(self, values: Mapping[str, Any]) -> str | None:
        if values["rgb_hz"] > 0 and values["thermal_hz"] > 0 and values["pairs_hz"] == 0:
            return "both inputs arrive but no pairs match (check stamps and slop)"
        return None

    def _open_outputs(self, values: Mapping[str, Any]) -> None:
        out_qos = make_qos(values["output_reliability"], values["output_depth"])
        self._outputs["fused"] = self.create_lifecycle_publisher(
            Image, topics.FUSED_IMAGE, out_qos
        )
        if values["publish_camera_info"]:
            self._outputs["info"] = self.create_lifecycle_publisher(
                CameraInfo, topics.FUSED_CAMERA_INFO, out_qos
            )
        self._camera_info = None

    def _open_inputs(self, values: Mapping[str, Any]) -> None:
        in_qos = make_qos(values["input_reliability"], values["input_depth"])
        inputs = [
            self._input(topics.THERMAL_IMAGE, values["thermal_transport"]),
            self._input(topics.RGB_IMAGE, values["rgb_transport"]),
        ]
        self._inputs["sync"] = SyncedSubscriptions(
            self, inputs, in_qos, values["queue_size"], values["slop"],
            self._on_pair, on_receive=self._on_receive,
        )  # fmt: skip
        if "info" in self._outputs:
            self._inputs["info"] = self.create_subscription(
                CameraInfo, topics.RGB_CAMERA_INFO, self._on_camera_info, in_qos
            )

    def _active_message(self, values: Mapping[str, Any]) -> str:
        sync = self._inputs["sync"]
        return (
            f"active: {self._describe(self._built)}, sync {sync.implementation} (queue "
            f"{values['queue_size']}, slop {values['slop']} s), inputs {sync.topics}, output "
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

    def _on_pair(self, thermal: Any, rgb: Any) -> None:
        self.counters.inc("pairs")
        self.rates["pairs"].tick()
        self._offer(_Pair(thermal, rgb, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # ------------------------------------------------------------------ the worker
    def _process(self, pair: _Pair, engine: FusionEngine) -> None:
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
        try:
            prepared = engine.prepare(thermal, visible)
        except Exception as exc:  # FusionInputError, OpenCV errors from the warp
            return self._drop("registration", exc)
        try:
            luma = engine.fuse_luma(prepared.thermal, prepared.visible.luma)
            fused = engine.finish(luma, prepared)
            s = engine.settings
            out = array_to_image(fused, output_encoding_for(s.output_color, s.output_dtype),
                                 pair.rgb.header)  # fmt: skip
        except Exception as exc:
            return self._drop("inference", exc)
        try:
            fused_pub, info_pub = self._outputs.get("fused"), self._outputs.get("info")
            if fused_pub is None:
                return
            fused_pub.publish(out)
            info = self._camera_info
            if info_pub is not None and info is not None:
                info.header = pair.rgb.header
                info_pub.publish(info)
        except Exception as exc:
            return self._drop("publish", exc)
        self.counters.inc("fused")
        self.rates["fused"].tick()
        self._record_latency(pair.received, pair.rgb.header)


def main(args: list[str] | None = None) -> int:
    """``fusion_node`` executable: run until Ctrl-C; exit 1 with the reason on bad parameters."""
    return run_node(FusionNode, "fusion_node", args)


if __name__ == "__main__":
    sys.exit(main())
