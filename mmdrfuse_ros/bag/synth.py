"""Write the synthetic night street (:mod:`mmdrfuse_ros.bag.scene`) as a rosbag2.

Each camera frame is written at its receive time (stamp + the camera driver's delay; the thermal
core delivers later than the RGB camera), with the ground-truth boxes of that frame on its own
topic and the thermal -> RGB homography on the calibration topic at the start. The fusion node's
parameters for the bag (that homography, percentile normalisation of the mono16 thermal) go
to ``<bag>/mmdrfuse_params.yaml`` (:mod:`mmdrfuse_ros.bag.params`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmdrfuse_ros.bag import io, params
from mmdrfuse_ros.bag.scene import NightScene, SynthConfig


@dataclass
class SynthSummary:
    path: str
    storage: str
    duration_s: float
    counts: dict[str, int]
    bytes: int
    params: str | None = None  # the params file written for the bag

    def describe(self) -> str:
        per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(self.counts.items()))
        text = (
            f"wrote {self.path} ({self.storage}, {self.duration_s:.1f} s, "
            f"{self.bytes / 1e6:.1f} MB): {per_topic}"
        )
        return text + (f"\nfusion_node parameters for it: {self.params}" if self.params else "")


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_synthetic_bag(
    out: str | Path,
    config: SynthConfig | None = None,
    storage: str = "mcap",
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Render the scene and write it as a rosbag2 at ``out`` (which must not exist).

    ``progress(n)`` is called after each camera frame written (for a progress bar).
    """
    config = config or SynthConfig()
    scene = NightScene(config)
    noise_rng = np.random.default_rng(config.seed + 1)
    events = _camera_events(scene, config)
    rw, rh = config.rgb_size
    fx = 0.5 * rw / math.tan(math.radians(70.0) / 2)  # 70 degree horizontal field of view
    k = [fx, 0.0, rw / 2 - 0.5, 0.0, fx, rh / 2 - 0.5, 0.0, 0.0, 1.0]
    start = config.start_ns
    calibration = _calibration(scene, config)
    with io.BagWriter(out, storage=storage) as writer:
        for topic, msgtype in (
            (io.CALIBRATION_TOPIC, io.STRING),
            (io.THERMAL_TOPIC, io.IMAGE),
            (io.RGB_TOPIC, io.IMAGE),
            (io.RGB_INFO_TOPIC, io.CAMERA_INFO),
            (io.GROUND_TRUTH_TOPIC, io.STRING),
            (io.GROUND_TRUTH_THERMAL_TOPIC, io.STRING),
        ):
            writer.add_topic(topic, msgtype)
        writer.write(io.CALIBRATION_TOPIC, start, io.json_msg(calibration))
        for log_ns, camera, stamp in events:
            t = stamp / 1e9
            stamp_abs, log_abs = start + stamp, start + log_ns
            if camera == "rgb":
                image, boxes, ids = scene.render_rgb(t, noise_rng)
                msg = io.image_msg(image, "bgr8", stamp_abs, config.rgb_frame_id)
                writer.write(io.RGB_TOPIC, log_abs, msg)
                writer.write(
                    io.RGB_INFO_TOPIC,
                    log_abs,
                    io.camera_info_msg(rw, rh, k, stamp_abs, config.rgb_frame_id),
                )
                gt_topic, frame_id, size = io.GROUND_TRUTH_TOPIC, config.rgb_frame_id, (rw, rh)
            else:
                image, boxes, ids = scene.render_thermal(t, noise_rng)
                writer.write(
                    io.THERMAL_TOPIC,
                    log_abs,
                    io.image_msg(image, "mono16", stamp_abs, config.thermal_frame_id),
                )
                gt_topic, frame_id = io.GROUND_TRUTH_THERMAL_TOPIC, config.thermal_frame_id
                size = config.thermal_size
            writer.write(
                gt_topic,
                log_abs,
                io.json_msg(io.ground_truth_doc(stamp_abs, frame_id, size, boxes, ids)),
            )
            if progress:
                progress(1)
    out = Path(out)
    size = _dir_size(out)
    node_params = params.fusion_params_for(calibration["homography_thermal_to_rgb"], "mono16")
    written = params.write_params(out, node_params, "mmdrfuse bag synth")
    return SynthSummary(str(out), storage, config.duration_s, dict(writer.counts), size,
                        str(written) if written else None)


def _camera_events(scene: NightScene, config: SynthConfig) -> list[tuple[int, str, int]]:
    """(receive ns, camera, stamp ns) of every frame from the start, in receive order.

    The cameras run free (own rate, phase, jitter; the thermal one skips frames) and their
    drivers deliver late: receive = stamp + delay, and thermal cores deliver later than RGB.
    """
    rgb_stamps = scene.stamps(config.rgb_rate_hz, 0.0, 0.4e-3, 0.0)
    thermal_stamps = scene.stamps(
        config.thermal_rate_hz, 0.37 / config.thermal_rate_hz, 1.2e-3, config.thermal_skip_prob
    )
    rgb_delay = (4e6 + scene.rng.uniform(0, 1.5e6, rgb_stamps.shape)).astype(np.int64)
    th_delay = (11e6 + scene.rng.uniform(0, 3e6, thermal_stamps.shape)).astype(np.int64)
    events = [(int(s + d), "rgb", int(s)) for s, d in zip(rgb_stamps, rgb_delay, strict=True)]
    events += [
        (int(s + d), "thermal", int(s)) for s, d in zip(thermal_stamps, th_delay, strict=True)
    ]
    events.sort()
    return events


def _calibration(scene: NightScene, config: SynthConfig) -> dict:
    """The calibration document: the rig's homography, both cameras and the scene's settings."""
    return {
        "homography_thermal_to_rgb": scene.homography.round(9).tolist(),
        "thermal": {"width": config.thermal_size[0], "height": config.thermal_size[1],
                    "frame_id": config.thermal_frame_id, "topic": io.THERMAL_TOPIC,
                    "units": "counts = kelvin * 100"},
        "rgb": {"width": config.rgb_size[0], "height": config.rgb_size[1],
                "frame_id": config.rgb_frame_id, "topic": io.RGB_TOPIC},
        "source": "mmdrfuse bag synth",
        "synth_config": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in asdict(config).items()},
    }  # fmt: skip


def frame_count(config: SynthConfig) -> int:
    """Approximate number of camera frames the bag will hold (for a progress bar's total)."""
    return int(config.duration_s * (config.rgb_rate_hz + config.thermal_rate_hz)) + 2
