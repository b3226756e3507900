"""The fusion node's parameters, and how their values become ``FusionEngine`` arguments.

:func:`check_fusion_values` is what the node asks before it accepts values (at start and on
every change) and what the replay and launch checks ask too: the table's choices and ranges,
then :meth:`FusionEngine.validate <mmdrfuse_ros.fusion.engine.FusionEngine.validate>` for the
engine's own settings and the synchroniser's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmdrfuse_ros.fusion.backends import BACKENDS
from mmdrfuse_ros.fusion.engine import DEFAULT_PARALLEL_MIN_PIXELS, FusionEngine
from mmdrfuse_ros.fusion.output import OUTPUT_MAPPINGS
from mmdrfuse_ros.fusion.preprocess import THERMAL_NORMS

from .qos import INPUT_DEPTH, INPUT_RELIABILITY, OUTPUT_DEPTH, OUTPUT_RELIABILITY, RELIABILITIES
from .spec import INPUT_TIMEOUT, Param, by_name, check_choice, check_table

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
#: how thermal and RGB messages are paired (nodes/sync.py): ``approximate`` waits for the
#: nearest partner and uses each message once; ``latest`` pairs each RGB frame at once with the
#: newest thermal frame within ``slop``
SYNC_POLICIES = ("approximate", "latest")

FUSION_PARAMS: tuple[Param, ...] = (
    Param("backend", "auto", "fusion backend: auto (CUDA if present, else cpu-fast), torch or "
          "cpu-fast", choices=BACKENDS, live=True),
    Param("device", "", "'' or auto, cpu, cuda, cuda:N (the torch backend)", live=True),
    Param("fp16", False, "half precision on CUDA", live=True),
    Param("weights", "", "student checkpoint path, or a shipped student by name: '' or "
          "'default' (best on the picture), 'detection' (best for the detector)", live=True),
    Param("thermal_norm", "percentile", "thermal to [0,1]: percentile (per frame, smoothed), "
          "fixed (thermal_window), minmax, or auto (8-bit fixed, else percentile)",
          choices=THERMAL_NORMS, live=True),
    Param("thermal_window", None, "fixed window [lo, hi] in raw thermal units for "
          "thermal_norm=fixed; unset or [] = the dtype's full range", live=True,
          array_type="double_array"),
    Param("thermal_percentiles", [1.0, 99.0], "[lo, hi] percentiles for thermal_norm=percentile",
          live=True),
    Param("thermal_smoothing", 0.9, "weight of the previous frame's bounds (0 = none, < 1)",
          float_range=(0.0, 1.0), live=True),
    Param("homography", None, "3x3 row-major homography, thermal pixels -> RGB pixels "
          "(9 doubles); unset or [] = the cameras are aligned (thermal resized)", live=True,
          array_type="double_array"),
    Param("output_encoding", "bgr8", "encoding of fused/image", choices=tuple(OUTPUT_ENCODINGS),
          live=True),
    Param("output_mapping", "percentile", "fused luma -> image: raw (the network output), "
          "minmax (each frame's min..max, as the paper; pumps on video) or percentile "
          "(0.5..99.5 percentile "
          "stretch, bounds smoothed by output_smoothing)", choices=OUTPUT_MAPPINGS, live=True),
    Param("output_smoothing", 0.95, "output_mapping=percentile: weight of the previous frame's "
          "bounds (0 = none, < 1)", float_range=(0.0, 1.0), live=True),
    Param("threads", 0, "thread budget of the engine's OpenCV, PyTorch (CPU) and numba work, "
          "process-wide; 0 = the libraries' defaults (all cores)", int_range=(0, 1024),
          live=True),
    Param("parallel_min_pixels", DEFAULT_PARALLEL_MIN_PIXELS, "cpu-fast: frames with fewer "
          "pixels run the serial kernel (waking worker threads at camera cadence costs more "
          "than it saves); 0 = always parallel", int_range=(0, 1 << 30), live=True),
    Param("sync_policy", "approximate", "pairing: approximate (nearest partner, each message "
          "once) or latest (each RGB frame at once with the newest thermal frame within slop: "
          "lower latency) (on activate)", choices=SYNC_POLICIES),
    Param("queue_size", 10, "sync: messages kept per input (on activate)",
          int_range=(1, 1000)),
    Param("slop", 0.05, "sync: largest stamp difference in a pair, seconds "
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
    INPUT_TIMEOUT,
    Param("autostart", True, "configure and activate at start (false: wait for lifecycle "
          "transitions)"),
)  # fmt: skip
_BY_NAME = by_name(FUSION_PARAMS)


def validate_sync_params(queue_size: int, slop: float, policy: str = "approximate") -> None:
    """ValueError with the reason for parameters the synchroniser cannot work with."""
    if policy not in SYNC_POLICIES:
        raise ValueError(f"sync_policy must be one of {list(SYNC_POLICIES)}, got {policy!r}")
    if int(queue_size) < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    if not slop > 0:
        raise ValueError(f"slop must be > 0 seconds, got {slop}")


def output_encoding_for(color: str, dtype: str) -> str:
    """The output encoding whose engine layout is (``color``, ``dtype``)."""
    for encoding, layout in OUTPUT_ENCODINGS.items():
        if layout == (color, dtype):
            return encoding
    raise ValueError(f"no output encoding for colour {color!r} and dtype {dtype!r}")


def fusion_engine_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """``FusionEngine(**kwargs)`` from parameter values (None or [] for an array: unset)."""
    if reason := check_choice(_BY_NAME["output_encoding"], values["output_encoding"]):
        raise ValueError(reason)
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
        "homography": tuple(homography) if homography else None,
        "visible_order": "bgr",  # the node brings RGB messages to BGR order
        "output_color": color,
        "output_dtype": dtype,
        "output_mapping": values.get("output_mapping", "raw"),
        "output_smoothing": float(values.get("output_smoothing", 0.0)),
        "threads": int(values.get("threads", 0)),
        "parallel_min_pixels": int(values.get("parallel_min_pixels", DEFAULT_PARALLEL_MIN_PIXELS)),
    }


def check_fusion_values(values: Mapping[str, Any], engine: bool = True) -> str | None:
    """Why the fusion node would refuse these parameter values (a full table), or None.

    ``engine=False`` leaves out the engine's own check (which reads the weights file), for a
    change that touches no engine parameter.
    """
    if reason := check_table(FUSION_PARAMS, values):
        return reason
    try:
        if engine:
            FusionEngine.validate(**fusion_engine_kwargs(values))
        validate_sync_params(values["queue_size"], values["slop"],
                             values.get("sync_policy", "approximate"))  # fmt: skip
    except ValueError as exc:
        return str(exc)
    return None
