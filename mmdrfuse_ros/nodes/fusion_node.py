"""``fusion_node``: synchronise thermal and RGB images and publish the MMDRFuse fused image.

A lifecycle node:

* construction declares and validates every parameter (a bad value is refused with its reason,
  there and at run time); with ``autostart`` (default) it then configures and activates itself;
* configure reads the topic/QoS/sync parameters and creates the publishers;
* activate loads the weights, builds and warms up the FusionEngine, subscribes and starts the
  worker; deactivate undoes that (the engine is closed, which frees CUDA memory); cleanup
  destroys the publishers.

Data path: the two image subscriptions feed an approximate-time synchroniser (``sync.py``);
its callback only puts the pair in a one-slot mailbox. A worker thread takes the newest pair,
converts, fuses and publishes; a pair still waiting when a newer one arrives is dropped and
counted as ``stale``, so a slow frame never queues up latency. The fused image carries the RGB
message's header unchanged and is in the RGB camera's geometry.

Engine parameters (backend, device, weights, thermal normalisation, homography, output encoding)
apply at run time: a change is validated, then the worker rebuilds the engine before its next
frame. Topic, QoS, synchroniser and transport parameters apply at the next activation.

Bad input (unsupported encoding, malformed buffer, a pair that cannot be registered, an
inference or publish error) is logged (throttled per cause), counted on ``/diagnostics`` and
skipped; no message can stop the node.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rcl_interfaces.msg import (
    SetParametersResult,
)
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mmdrfuse_ros import topics
from mmdrfuse_ros.fusion import (
    BACKENDS,
    THERMAL_NORMS,
    FusionEngine,
    cuda_available,
    load_checkpoint,
)
from mmdrfuse_ros.nodes.common import (
    LatestSlot,
    ManagedNode,
    Param,
    check_choice,
    descriptor_for,
    run_node,
)
from mmdrfuse_ros.nodes.diagnostics import (
    ERROR,
    OK,
    WARN,
    Counters,
    DiagnosticReport,
    DiagnosticsPublisher,
    LatencyStats,
    RateMeter,
)
from mmdrfuse_ros.nodes.image_conversion import (
    MalformedImageError,
    UnsupportedEncodingError,
    array_to_image,
    compressed_to_array,
    convert_encoding,
    image_to_array,
    is_color_encoding,
)
from mmdrfuse_ros.nodes.qos import (
    INPUT_DEPTH,
    INPUT_RELIABILITY,
    OUTPUT_DEPTH,
    OUTPUT_RELIABILITY,
    RELIABILITIES,
    make_qos,
)
from mmdrfuse_ros.nodes.sync import SyncedSubscriptions
from mmdrfuse_ros.stamps import stamp_to_ns

NODE_NAME = "fusion_node"

#: thermal encodings accepted as they are (cv_bridge names)
THERMAL_ENCODINGS = ("mono8", "mono16", "8UC1", "16UC1", "32FC1")
#: RGB encodings passed to the engine as they are; other colour encodings are converted to bgr8
RGB_PASSTHROUGH = ("bgr8", "mono8", "bgr16", "mono16", "8UC3", "8UC1")
#: output encoding -> (engine output_color, engine output_dtype)
OUTPUT_ENCODINGS = {
    "bgr8": ("bgr", "uint8"),
    "rgb8": ("rgb", "uint8"),
    "mono8": ("gray", "uint8"),
    "32FC1": ("gray", "float32"),
}
TRANSPORTS = ("raw", "compressed")
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
_DEVICE_PATTERN = re.compile(r"^(|auto|cpu|cuda(:[0-9]+)?)$")


PARAMS: tuple[Param, ...] = (
    Param("backend", "auto", "fusion backend: auto (CUDA if present, else cpu-fast), torch or "
          "cpu-fast", choices=BACKENDS, engine=True),
    Param("device", "", "'' or auto, cpu, cuda, cuda:N (the torch backend)", engine=True),
    Param("fp16", False, "half precision on CUDA", engine=True),
    Param("weights", "", "student checkpoint path; '' = the shipped default", engine=True),
    Param("thermal_norm", "percentile", "thermal to [0,1]: percentile (per frame, smoothed), "
          "fixed (thermal_window), minmax, or auto (8-bit fixed, else percentile)",
          choices=THERMAL_NORMS, engine=True),
    Param("thermal_window", Parameter.Type.DOUBLE_ARRAY, "fixed window [lo, hi] in raw thermal "
          "units for thermal_norm=fixed; unset or [] = the dtype's full range", engine=True),
    Param("thermal_percentiles", [1.0, 99.0], "[lo, hi] percentiles for thermal_norm=percentile",
          engine=True),
    Param("thermal_smoothing", 0.9, "weight of the previous frame's bounds (0 = none, < 1)",
          float_range=(0.0, 1.0), engine=True),
    Param("homography", Parameter.Type.DOUBLE_ARRAY, "3x3 row-major homography, thermal pixels "
          "-> RGB pixels (9 doubles); unset or [] = the cameras are aligned (thermal resized)",
          engine=True),
    Param("output_encoding", "bgr8", "encoding of fused/image", choices=tuple(OUTPUT_ENCODINGS),
          engine=True),
    Param("queue_size", 10, "approximate-time sync: messages kept per input (on activate)",
          int_range=(1, 1000)),
    Param("slop", 0.05, "approximate-time sync: largest stamp difference in a pair, seconds "
          "(on activate)", float_range=(0.0, 10.0)),
    Param("input_reliability", INPUT_RELIABILITY, "QoS reliability of the image inputs "
          "(on activate)", choices=RELIABILITIES),
    Param("input_depth", INPUT_DEPTH, "QoS depth of the image inputs (on activate)",
          int_range=(1, 1000)),
    Param("output_reliability", OUTPUT_RELIABILITY, "QoS reliability of fused/image (on "
          "configure)", choices=RELIABILITIES),
    Param("output_depth", OUTPUT_DEPTH, "QoS depth of fused/image (on configure)",
          int_range=(1, 1000)),
    Param("thermal_transport", "raw", "raw: thermal/image_raw; compressed: its /compressed "
          "(on activate)", choices=TRANSPORTS),
    Param("rgb_transport", "raw", "raw: rgb/image_raw; compressed: its /compressed "
          "(on activate)", choices=TRANSPORTS),
    Param("publish_camera_info", False, "re-publish rgb/camera_info as fused/camera_info with "
          "each fused image's header (on configure)"),
    Param("autostart", True, "configure and activate at start (false: wait for lifecycle "
          "transitions)"),
)  # fmt: skip
PARAM_BY_NAME = {p.name: p for p in PARAMS}


# ----------------------------------------------------------------------- validation (ROS-free)
def check_param(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None if it is."""
    spec = PARAM_BY_NAME.get(name)
    if spec is None or value is None:
        return None
    if reason := check_choice(spec, value):
        return reason
    if name == "device" and not _DEVICE_PATTERN.match(value):
        return f"device must be '', auto, cpu, cuda or cuda:N, got {value!r}"
    if name == "device" and value.startswith("cuda") and not cuda_available():
        return f"device {value!r} requested but CUDA is not available on this machine"
    if name == "weights" and value:
        path = Path(value).expanduser()
        if not path.is_file():
            return f"weights file {str(path)!r} does not exist"
        try:
            load_checkpoint(path)
        except Exception as exc:  # any reason the file is unusable
            return f"weights file {str(path)!r} cannot be loaded: {exc}"
    if name == "thermal_window" and len(value) not in (0, 2):
        return f"thermal_window must be [] or [lo, hi], got {list(value)}"
    if name == "thermal_window" and len(value) == 2 and not value[1] > value[0]:
        return f"thermal_window needs hi > lo, got {list(value)}"
    if name == "thermal_percentiles" and (
        len(value) != 2 or not 0.0 <= value[0] < value[1] <= 100.0
    ):
        return f"thermal_percentiles must be [lo, hi] with 0 <= lo < hi <= 100, got {list(value)}"
    if name == "thermal_smoothing" and not 0.0 <= value < 1.0:
        return f"thermal_smoothing must be in [0, 1), got {value}"
    if name == "homography" and len(value) not in (0, 9):
        return f"homography must have 9 values (3x3 row-major) or none, got {len(value)}"
    if name == "slop" and not value > 0.0:
        return f"slop must be > 0 seconds, got {value}"
    return None


def engine_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """FusionEngine(**kwargs) from parameter values (unset arrays mean 'none')."""
    color, dtype = OUTPUT_ENCODINGS[values["output_encoding"]]
    window = values.get("thermal_window")
    homography = values.get("homography")
    return {
        "backend": values["backend"],
        "device": values["device"] or None,
        "weights": values["weights"] or None,
        "fp16": bool(values["fp16"]),
        "thermal_norm": values["thermal_norm"],
        "thermal_window": tuple(window) if window else None,
        "thermal_percentiles": tuple(values["thermal_percentiles"]),
        "thermal_smoothing": float(values["thermal_smoothing"]),
        "homography": np.asarray(homography, np.float64).reshape(3, 3) if homography else None,
        "visible_order": "bgr",  # RGB messages are brought to BGR order (see visible_array)
        "output_color": color,
        "output_dtype": dtype,
    }


def check_engine_config(values: dict[str, Any]) -> str | None:
    """Cross-parameter checks that only the whole engine configuration can make."""
    from mmdrfuse_ros.fusion import FusionSettings

    kwargs = engine_kwargs(values)
    settings = {k: v for k, v in kwargs.items() if k not in ("backend", "device", "weights")}
    try:
        FusionSettings.from_kwargs(**settings)
    except ValueError as exc:
        return str(exc)
    if kwargs["backend"] == "cpu-fast" and (kwargs["device"] or "cpu").startswith("cuda"):
        return "backend 'cpu-fast' runs on the CPU; use backend 'torch' (or auto) for CUDA"
    return None


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


# ----------------------------------------------------------------------- the worker mailbox
@dataclass
class _Pair:
    thermal: Any
    rgb: Any
    received: float  # monotonic time at which the pair was complete


class FusionNode(ManagedNode):
    """The fusion lifecycle node. ``node_kwargs`` go to rclpy's Node (parameter_overrides,
    namespace, context, cli_args...), so tools can run it in-process."""

    def __init__(self, node_name: str = NODE_NAME, **node_kwargs: Any):
        super().__init__(node_name, **node_kwargs)
        counter_names = ["received_thermal", "received_rgb", "pairs", "fused", "time_jumps_back"]
        self.counters = Counters(
            tuple(counter_names + [f"dropped_{cause}" for cause in DROP_CAUSES])
        )
        self.rates = {name: RateMeter() for name in ("thermal", "rgb", "pairs", "fused")}
        self.latency_receive = LatencyStats()
        self.latency_stamp = LatencyStats()
        self._engine: FusionEngine | None = None
        self._output_encoding = "bgr8"  # goes with _engine: both change together
        self._engine_error = ""
        self._engine_lock = threading.Lock()
        self._pending_engine: dict[str, Any] | None = None  # new parameter values to apply
        self._reset_engine_state = False
        self._slot = LatestSlot()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._sync: SyncedSubscriptions | None = None
        self._info_sub: Any = None
        self._fused_pub: Any = None
        self._info_pub: Any = None
        self._camera_info: CameraInfo | None = None
        self._last_stamp_ns: dict[int, int] = {}

        self.add_on_set_parameters_callback(self._on_set_parameters)
        try:
            for spec in PARAMS:  # raises InvalidParameterValueException with the reason
                self.declare_parameter(spec.name, spec.default, descriptor_for(spec))
            reason = check_engine_config(self._param_values())
            if reason:
                raise ValueError(f"invalid fusion parameters: {reason}")
        except Exception:
            super().destroy_node()  # leave nothing behind in the caller's context
            raise
        self._diagnostics = DiagnosticsPublisher(self, "fusion", self._collect_diagnostics)
        if self.get_parameter("autostart").value:
            self.start()

    # ------------------------------------------------------------------ public helpers
    @property
    def sync_implementation(self) -> str | None:
        return self._sync.implementation if self._sync else None

    def stats(self) -> dict[str, Any]:
        """Counters, rates (Hz) and latency percentiles (ms): what /diagnostics reports."""
        values: dict[str, Any] = {"state": self._state}
        engine = self._engine
        if engine is not None:
            with contextlib.suppress(Exception):
                values.update(backend=engine.backend_name, device=engine.device)
        values.update(self.counters.snapshot())
        if self._sync is not None:
            values["sync"] = self._sync.implementation
            if self._sync.policy is not None:
                values["unmatched_evicted"] = sum(self._sync.policy.evicted)
                values["queued"] = sum(self._sync.policy.queued())
        for name, meter in self.rates.items():
            values[f"{name}_hz"] = meter.rate()
        values.update(self.latency_receive.summary("latency_receive_to_publish"))
        values.update(self.latency_stamp.summary("latency_stamp_to_publish"))
        return values

    # ------------------------------------------------------------------ parameters
    def _param_values(self) -> dict[str, Any]:
        values = {}
        for spec in PARAMS:
            try:
                values[spec.name] = self.get_parameter(spec.name).value
            except ParameterUninitializedException:  # an array declared without a default
                values[spec.name] = None
        return values

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        known = [p for p in params if p.name in PARAM_BY_NAME]
        for param in known:
            reason = check_param(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        engine_changes = {p.name: p.value for p in known if PARAM_BY_NAME[p.name].engine}
        later = sorted(p.name for p in known if not PARAM_BY_NAME[p.name].engine)
        if later and self._state == "active" and self._declared():
            self.get_logger().info(f"{later} will apply at the next activation")
        if not engine_changes or not self._declared():
            return SetParametersResult(successful=True)
        values = {**self._param_values(), **engine_changes}
        reason = check_engine_config(values)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        if self._state == "active":
            with self._engine_lock:
                self._pending_engine = values  # the worker rebuilds before its next frame
            changed = sorted(engine_changes)
            self.get_logger().info(f"engine parameters changed ({changed}): rebuilding the engine")
        return SetParametersResult(successful=True)

    def _declared(self) -> bool:
        return all(self.has_parameter(spec.name) for spec in PARAMS)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._param_values()
        reason = check_engine_config(values)
        if reason:
            self.get_logger().error(f"cannot configure: {reason}")
            return TransitionCallbackReturn.FAILURE
        out_qos = make_qos(values["output_reliability"], values["output_depth"])
        self._fused_pub = self.create_lifecycle_publisher(Image, topics.FUSED_IMAGE, out_qos)
        if values["publish_camera_info"]:
            self._info_pub = self.create_lifecycle_publisher(
                CameraInfo, topics.FUSED_CAMERA_INFO, out_qos
            )
        self._state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._param_values()
        try:
            self._engine = self._build_engine(values)
            self._output_encoding = values["output_encoding"]
        except Exception as exc:
            self._engine_error = str(exc)
            self.get_logger().error(f"cannot activate: the fusion engine failed to load: {exc}")
            return TransitionCallbackReturn.FAILURE
        in_qos = make_qos(values["input_reliability"], values["input_depth"])
        inputs = [
            self._input(topics.THERMAL_IMAGE, values["thermal_transport"]),
            self._input(topics.RGB_IMAGE, values["rgb_transport"]),
        ]
        self._sync = SyncedSubscriptions(
            self, inputs, in_qos, values["queue_size"], values["slop"],
            self._on_pair, on_receive=self._on_receive,
        )  # fmt: skip
        if self._info_pub is not None:
            self._info_sub = self.create_subscription(
                CameraInfo, topics.RGB_CAMERA_INFO, self._on_camera_info, in_qos
            )
        self._stop.clear()
        self._slot.reopen()
        self._worker = threading.Thread(target=self._work, name="fusion_worker", daemon=True)
        self._worker.start()
        self._state = "active"
        self.get_logger().info(
            f"active: {self._engine.backend_name} on {self._engine.device}, sync "
            f"{self._sync.implementation} (queue {values['queue_size']}, slop {values['slop']} s)"
            f", inputs {self._sync.topics}, output {self._fused_pub.topic_name}"
        )
        return super().on_activate(state)

    def _input(self, base: str, transport: str) -> tuple[type, str]:
        if transport == "raw":
            return Image, base
        # image_transport names: the remapped base topic plus /compressed
        return CompressedImage, self.resolve_topic_name(base) + "/compressed"

    def _build_engine(self, values: dict[str, Any]) -> FusionEngine:
        engine = FusionEngine(**engine_kwargs(values))
        engine.warmup()
        self._engine_error = ""
        return engine

    def _release_active(self) -> None:
        if self._sync is not None:
            self._sync.destroy()
            self._sync = None
        if self._info_sub is not None:
            self.destroy_subscription(self._info_sub)
            self._info_sub = None
        self._stop.set()
        if self._slot.close() is not None:
            self.counters.inc("dropped_stale")
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None
        with self._engine_lock:
            self._pending_engine = None
        if self._engine is not None:
            self._engine.close()  # frees the model (and CUDA memory)
            self._engine = None

    def _release_configured(self) -> None:
        if self._fused_pub is not None:
            self.destroy_lifecycle_publisher(self._fused_pub)
            self._fused_pub = None
        if self._info_pub is not None:
            self.destroy_lifecycle_publisher(self._info_pub)
            self._info_pub = None
        self._camera_info = None

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
            if self._sync is not None:
                self._sync.clear()
            self._reset_engine_state = True

    def _on_pair(self, thermal: Any, rgb: Any) -> None:
        self.counters.inc("pairs")
        self.rates["pairs"].tick()
        if self._slot.put(_Pair(thermal, rgb, time.monotonic())):
            self.counters.inc("dropped_stale")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while not self._stop.is_set():
            pair = self._slot.take(timeout=0.2)
            if pair is None:
                continue
            try:
                self._process(pair)
            except Exception as exc:  # a bug must not kill the worker: count it and go on
                self._drop("inference", exc)

    def _process(self, pair: _Pair) -> None:
        self._apply_pending_engine()
        engine = self._engine
        if engine is None:
            return
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
            out = array_to_image(fused, self._output_encoding, pair.rgb.header)
        except Exception as exc:
            return self._drop("inference", exc)
        try:
            if self._fused_pub is None:
                return
            self._fused_pub.publish(out)
            info = self._camera_info
            if self._info_pub is not None and info is not None:
                info.header = pair.rgb.header
                self._info_pub.publish(info)
        except Exception as exc:
            return self._drop("publish", exc)
        self.counters.inc("fused")
        self.rates["fused"].tick()
        self.latency_receive.add(time.monotonic() - pair.received)
        now_ns = self.get_clock().now().nanoseconds
        if now_ns:  # 0 under use_sim_time until the first /clock message
            self.latency_stamp.add((now_ns - stamp_to_ns(pair.rgb.header.stamp)) / 1e9)

    def _apply_pending_engine(self) -> None:
        with self._engine_lock:
            values, self._pending_engine = self._pending_engine, None
        if values is None:
            return
        try:
            engine = self._build_engine(values)
        except Exception as exc:
            self._engine_error = f"engine rebuild failed, keeping the previous one: {exc}"
            self.get_logger().error(self._engine_error)
            return
        old, self._engine = self._engine, engine
        self._output_encoding = values["output_encoding"]
        if old is not None:
            old.close()
        self.get_logger().info(f"engine rebuilt: {engine.backend_name} on {engine.device}")

    # ------------------------------------------------------------------ diagnostics
    def _collect_diagnostics(self) -> DiagnosticReport:
        values = self.stats()
        engine = self._engine
        if engine is not None:
            values["weights"] = engine.weights_info.get("path", "")
            self._diagnostics.hardware_id = str(values.get("device", ""))
        drops = sum(
            v for k, v in values.items() if k.startswith("dropped_") and k != "dropped_stale"
        )
        if self._engine_error:
            level, message = ERROR, self._engine_error
        elif self._state != "active":
            level, message = OK, f"{self._state}: not fusing"
        elif values["rgb_hz"] > 0 and values["thermal_hz"] > 0 and values["pairs_hz"] == 0:
            level, message = WARN, "both inputs arrive but no pairs match (check stamps and slop)"
        elif drops:
            level, message = WARN, f"fusing at {values['fused_hz']:.1f} Hz; {drops} bad frames"
        else:
            level, message = OK, f"fusing at {values['fused_hz']:.1f} Hz"
        return DiagnosticReport(level, message, values)


def main(args: list[str] | None = None) -> int:
    """``fusion_node`` executable: run until Ctrl-C; exit 1 with the reason on bad parameters."""
    return run_node(FusionNode, "fusion_node", args)


if __name__ == "__main__":
    sys.exit(main())
