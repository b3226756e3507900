"""The fusion node over real DDS topics: sync counts, headers, encodings, lifecycle, parameters,
bad input, compressed transport, camera_info and sim time.

Each test starts a real FusionNode and a helper node (publishers/subscribers) on a private ROS
domain on loopback. Timeouts below only bound the waiting; no assertion is about speed.
"""

from __future__ import annotations

import array
import time
from functools import partial
from typing import Any

import numpy as np
import pytest
from image_helpers import array_to_compressed

rclpy = pytest.importorskip("rclpy")

import node_helpers  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from node_helpers import Spin, closing_all  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from mmdrfuse_ros import topics  # noqa: E402
from mmdrfuse_ros.msgs.images import array_to_image, image_to_array  # noqa: E402
from mmdrfuse_ros.nodes.diagnostics import status_values  # noqa: E402
from mmdrfuse_ros.nodes.fusion_node import STAGES, FusionNode  # noqa: E402
from mmdrfuse_ros.nodes.qos import make_qos  # noqa: E402
from mmdrfuse_ros.nodes.timing import stage_keys, stage_table  # noqa: E402

pytestmark = pytest.mark.ros

RGB_SHAPE = (48, 64, 3)
THERMAL_SHAPE = (24, 32)
BASE = 1000.0  # seconds: synthetic stamps, far from both 0 and the wall clock
RGB_FRAME = "rgb_optical"




def stamp(t: float) -> Time:
    ns = round(t * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def seconds(msg_stamp: Time) -> float:
    return msg_stamp.sec + msg_stamp.nanosec * 1e-9


wait_until = partial(node_helpers.wait_until, timeout=10.0)


def rgb_image(t: float, value: int = 40) -> Image:
    pixels = np.full(RGB_SHAPE, value, np.uint8)
    pixels[:, :, 2] += 30  # a little colour
    msg = array_to_image(pixels, "bgr8")
    msg.header.stamp, msg.header.frame_id = stamp(t), RGB_FRAME
    return msg


def thermal_image(t: float, encoding: str = "mono8", hot: bool = True) -> Image:
    dtype = np.uint16 if encoding in ("mono16", "16UC1") else np.uint8
    top = 30000 if dtype == np.uint16 else 250
    pixels = np.full(THERMAL_SHAPE, top // 10, dtype)
    if hot:
        pixels[8:16, 12:20] = top  # a warm body in the middle
    msg = array_to_image(pixels, encoding)
    msg.header.stamp, msg.header.frame_id = stamp(t), "thermal_optical"
    return msg


class Harness(Spin):
    """A FusionNode plus a helper node that feeds it and records what it publishes."""

    def __init__(self, context, reliable_inputs: bool = False, **params: Any):
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        if reliable_inputs:
            overrides.append(Parameter("input_reliability", value="reliable"))
        self.node = FusionNode(context=context, parameter_overrides=overrides)
        super().__init__(context, self.node, num_threads=None)
        qos_in = make_qos("reliable" if reliable_inputs else "best_effort", 20)
        compressed_thermal = params.get("thermal_transport") == "compressed"
        compressed_rgb = params.get("rgb_transport") == "compressed"
        self.thermal_pub = self.helper.create_publisher(
            CompressedImage if compressed_thermal else Image,
            topics.THERMAL_IMAGE + ("/compressed" if compressed_thermal else ""),
            qos_in,
        )
        self.rgb_pub = self.helper.create_publisher(
            CompressedImage if compressed_rgb else Image,
            topics.RGB_IMAGE + ("/compressed" if compressed_rgb else ""),
            qos_in,
        )
        self.info_pub = self.helper.create_publisher(CameraInfo, topics.RGB_CAMERA_INFO, qos_in)
        self.clock_pub = self.helper.create_publisher(Clock, topics.CLOCK, 10)
        self.fused: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.diagnostics: list[dict[str, str]] = []
        out_qos = make_qos("reliable", 100)
        self.helper.create_subscription(Image, topics.FUSED_IMAGE, self.fused.append, out_qos)
        self.helper.create_subscription(
            CameraInfo, topics.FUSED_CAMERA_INFO, self.infos.append, out_qos
        )
        self.helper.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, 10)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{self.node.get_name()}: fusion":
                self.diagnostics.append({"level": status.level[0], **status_values(status)})

    def wait_connected(self) -> None:
        assert wait_until(
            lambda: (
                self.thermal_pub.get_subscription_count() >= 1
                and self.rgb_pub.get_subscription_count() >= 1
                and self.helper.count_publishers(topics.FUSED_IMAGE) >= 1
            )
        ), "the fusion node never subscribed"
        time.sleep(0.3)  # let the fused/image endpoints match too

    def publish(self, events: list[tuple[str, Any]], period: float = 0.0) -> None:
        """Publish ('thermal'|'rgb', msg) events in order, ``period`` seconds apart."""
        for kind, msg in events:
            (self.thermal_pub if kind == "thermal" else self.rgb_pub).publish(msg)
            if period:
                time.sleep(period)

    def pair(self, t: float, **thermal_kw: Any) -> None:
        """One matching pair at stamp t."""
        self.publish([("thermal", thermal_image(t, **thermal_kw)), ("rgb", rgb_image(t))])



@pytest.fixture
def harness(context):
    yield from closing_all(lambda **kw: Harness(context, **kw))


def stream(duration: float, thermal_hz: float = 9.0, rgb_hz: float = 30.0) -> list[tuple]:
    """(send time, kind, stamp) for two free-running cameras, in time order."""
    events = [
        (k / thermal_hz, "thermal", BASE + k / thermal_hz)
        for k in range(round(duration * thermal_hz))
    ]
    events += [(j / rgb_hz, "rgb", BASE + j / rgb_hz) for j in range(round(duration * rgb_hz))]
    return sorted(events)  # fmt: skip


def play(h: Harness, events: list[tuple], thermal_encoding: str = "mono8") -> None:
    start = time.monotonic()
    for send_at, kind, t in events:
        while (delay := start + send_at - time.monotonic()) > 0:
            time.sleep(delay)
        msg = thermal_image(t, thermal_encoding) if kind == "thermal" else rgb_image(t)
        h.publish([(kind, msg)])


# ------------------------------------------------------------------------------------ tests
def test_9hz_thermal_30hz_rgb_gives_one_fused_image_per_thermal_frame(harness):
    # Reader history and sync queue hold the whole 2 s stream (18 thermal, 60 RGB): the node's
    # latency-first defaults (depth 5, queue 10) let a stall of the test's executor on a busy
    # 2-core machine overwrite or evict partners, which is not what this test is about.
    h = harness(reliable_inputs=True, slop=0.05, queue_size=60, input_depth=100)
    h.wait_connected()
    events = stream(2.0)
    thermal_stamps = [t for _, kind, t in events if kind == "thermal"]
    rgb_stamps = {round(t, 6) for _, kind, t in events if kind == "rgb"}
    play(h, events)
    stats = lambda: h.node.stats()  # noqa: E731
    assert wait_until(
        lambda: stats()["fused"] + stats()["dropped_stale"] == len(thermal_stamps)
    ), str(stats())
    s = stats()
    assert s["pairs"] == len(thermal_stamps) == 18  # every thermal frame has an RGB within slop
    assert wait_until(lambda: len(h.fused) == s["fused"])
    assert s["fused"] >= 1
    for msg in h.fused:
        t = seconds(msg.header.stamp)
        assert round(t, 6) in rgb_stamps and msg.header.frame_id == RGB_FRAME  # RGB header
        assert min(abs(t - tt) for tt in thermal_stamps) < 0.05
        assert (msg.height, msg.width, msg.encoding) == (*RGB_SHAPE[:2], "bgr8")
    assert len({seconds(m.header.stamp) for m in h.fused}) == len(h.fused)  # no RGB used twice


def test_latest_policy_fuses_every_rgb_frame_with_a_thermal_frame_within_slop(harness):
    h = harness(reliable_inputs=True, sync_policy="latest", slop=0.12, queue_size=60,
                input_depth=100)  # fmt: skip
    h.wait_connected()
    events = stream(2.0)
    thermal_stamps = [t for _, kind, t in events if kind == "thermal"]
    rgb_stamps = [t for _, kind, t in events if kind == "rgb"]
    play(h, events)
    # every RGB frame after the first thermal one has a thermal frame less than 1/9 s older
    paired = [t for t in rgb_stamps if any(0 <= t - tt < 0.12 for tt in thermal_stamps)]
    stats = lambda: h.node.stats()  # noqa: E731
    assert wait_until(lambda: stats()["fused"] + stats()["dropped_stale"] == len(paired)), stats()
    s = stats()
    assert s["pairs"] == len(paired) > len(thermal_stamps)  # a thermal frame serves several
    assert s["sync_policy"] == "latest" and s["sync"] == "mmdrfuse_ros"
    assert wait_until(lambda: len(h.fused) == s["fused"])
    rgb_set = {round(t, 6) for t in rgb_stamps}
    assert all(round(seconds(m.header.stamp), 6) in rgb_set for m in h.fused)
    assert len({seconds(m.header.stamp) for m in h.fused}) == len(h.fused)


def test_stage_times_are_in_stats_and_on_diagnostics(harness):
    h = harness()
    h.wait_connected()
    keys = stage_keys(STAGES)
    assert all(k in h.node.stats() for k in keys)  # present before any frame (NaN)
    for k in range(5):
        h.pair(BASE + k * 0.1)
        time.sleep(0.05)
    assert wait_until(lambda: len(h.fused) >= 1)
    stats = h.node.stats()
    assert all(stats[key] >= 0.0 for key in keys), stats
    assert wait_until(lambda: bool(h.diagnostics) and h.diagnostics[-1].get("fused") != "0")
    table = stage_table(h.diagnostics[-1])
    assert list(table) == list(STAGES) and all(set(q) == {50, 95} for q in table.values())
    assert all(q[50] >= 0.0 and q[95] >= q[50] for q in table.values())


def test_bursts_and_gaps(harness):
    # bursts of 12 messages need a reader history that holds them (input_depth)
    h = harness(reliable_inputs=True, slop=0.05, queue_size=10, input_depth=20)
    h.wait_connected()
    t_k = [BASE + k / 9 for k in range(18)]
    partner = {k: t_k[k] + 0.005 for k in [*range(6), *range(12, 18)]}  # k = 6..11: a gap
    decoys = [t_k[k] + 0.0555 for k in range(6)]  # > slop from every thermal frame
    # thermal 0..5 first, then their RGB partners and decoys in one burst
    h.publish([("thermal", thermal_image(t_k[k])) for k in range(6)], period=0.01)
    burst = [("rgb", rgb_image(t)) for t in sorted([partner[k] for k in range(6)] + decoys)]
    h.publish(burst)
    # the gap: thermal only
    h.publish([("thermal", thermal_image(t_k[k])) for k in range(6, 12)], period=0.01)
    # RGB partners first in a burst, then their thermal frames
    h.publish([("rgb", rgb_image(partner[k])) for k in range(12, 18)])
    h.publish([("thermal", thermal_image(t_k[k])) for k in range(12, 18)], period=0.01)
    assert wait_until(lambda: h.node.stats()["pairs"] == 12), h.node.stats()
    assert wait_until(lambda: h.node.stats()["fused"] + h.node.stats()["dropped_stale"] == 12)
    time.sleep(0.3)  # would reveal extra pairs, which must not come
    s = h.node.stats()
    assert s["pairs"] == 12 and s["fused"] + s["dropped_stale"] == 12 and s["fused"] >= 1
    assert s["received_thermal"] == 18 and s["received_rgb"] == 18
    partners = {round(t, 6) for t in partner.values()}
    assert wait_until(lambda: len(h.fused) == s["fused"])
    assert all(round(seconds(m.header.stamp), 6) in partners for m in h.fused)


def test_best_effort_mono16_thermal_is_fused_in_rgb_geometry(harness):
    h = harness()  # default QoS: best-effort inputs; our publishers are best effort too
    h.wait_connected()
    for k in range(10):
        h.pair(BASE + k * 0.1, encoding="mono16")
        time.sleep(0.05)
    assert wait_until(lambda: len(h.fused) >= 1)
    fused = image_to_array(h.fused[-1])
    assert fused.shape == RGB_SHAPE and h.fused[-1].encoding == "bgr8"
    # the warm body (thermal rows 8..16, cols 12..20 -> RGB rows 16..32, cols 24..40) shows
    grey = fused.mean(axis=2)
    assert grey[18:30, 26:38].mean() > grey[:8, :].mean() + 20
    assert h.node.stats()["dropped_registration"] == 0


def test_lifecycle_transitions(harness, context):
    h = harness(autostart=False)
    node = h.node
    assert node.lifecycle_state == "unconfigured"
    assert h.helper.count_subscribers(topics.THERMAL_IMAGE) == 0

    # configure through the real lifecycle service, as `ros2 lifecycle set` does
    client = h.helper.create_client(ChangeState, f"/{node.get_name()}/change_state")
    state_client = h.helper.create_client(GetState, f"/{node.get_name()}/get_state")
    assert client.wait_for_service(timeout_sec=10)
    configure = Transition(id=Transition.TRANSITION_CONFIGURE)
    future = client.call_async(ChangeState.Request(transition=configure))
    assert wait_until(future.done) and future.result().success
    assert node.lifecycle_state == "inactive"
    state = state_client.call_async(GetState.Request())
    assert wait_until(state.done) and state.result().current_state.label == "inactive"
    assert h.helper.count_subscribers(topics.THERMAL_IMAGE) == 0  # not listening yet

    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "active" and node._engine is not None
    h.wait_connected()
    h.pair(BASE)
    assert wait_until(lambda: len(h.fused) == 1)

    node.trigger_deactivate()
    assert node.lifecycle_state == "inactive"
    assert node._engine is None  # released (CUDA memory too, where used)
    assert wait_until(lambda: h.helper.count_subscribers(topics.THERMAL_IMAGE) == 0)
    h.pair(BASE + 1)
    time.sleep(0.3)
    assert len(h.fused) == 1  # nothing fused while inactive

    node.trigger_cleanup()
    assert node.lifecycle_state == "unconfigured"
    assert node.start()  # configure + activate again
    h.wait_connected()
    h.pair(BASE + 2)
    assert wait_until(lambda: len(h.fused) == 2)
    node.trigger_shutdown()
    assert node.lifecycle_state == "finalized"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("backend", "gpu", "backend must be one of"),
        ("queue_size", 0, "out of range|queue_size"),
        ("slop", 0.0, "slop must be > 0"),
        ("homography", [1.0, 0.0, 0.0, 1.0], "9 values"),
        ("homography", [0.0] * 9, "singular"),
        ("thermal_percentiles", [99.0, 1.0], "0 <= lo < hi <= 100"),
        ("thermal_window", [5.0, 1.0], "hi > lo"),
        ("thermal_smoothing", 1.0, r"\[0, 1\)"),
        ("weights", "/nonexistent/student.pt", "does not exist"),
        ("output_encoding", "bgr16", "output_encoding must be one of"),
        ("input_reliability", "sometimes", "input_reliability must be one of"),
    ],
)
def test_bad_parameters_are_refused_at_start(context, name, value, reason):
    with pytest.raises(Exception, match=reason):
        FusionNode(
            context=context,
            parameter_overrides=[Parameter(name, value=value), Parameter("autostart", value=False)],
        )


def test_parameters_are_validated_at_run_time_and_applied_live(harness):
    h = harness()
    node = h.node
    result = node.set_parameters([Parameter("thermal_percentiles", value=[50.0, 10.0])])[0]
    assert not result.successful and "0 <= lo < hi" in result.reason
    assert node.get_parameter("thermal_percentiles").value == [1.0, 99.0]  # unchanged
    result = node.set_parameters([Parameter("device", value="cuda:x")])[0]
    assert not result.successful and "device" in result.reason

    # through the parameter service from another node, as `ros2 param set` does
    client = h.helper.create_client(SetParameters, f"/{node.get_name()}/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    request = SetParameters.Request(parameters=[Parameter("slop", value=-1.0).to_parameter_msg()])
    future = client.call_async(request)
    assert wait_until(future.done)
    assert not future.result().results[0].successful

    # a good engine parameter is applied to the following frames
    h.wait_connected()
    h.pair(BASE)
    assert wait_until(lambda: len(h.fused) == 1) and h.fused[0].encoding == "bgr8"
    assert node.set_parameters([Parameter("output_encoding", value="mono8")])[0].successful
    h.pair(BASE + 1)
    assert wait_until(lambda: len(h.fused) == 2)
    assert h.fused[1].encoding == "mono8" and h.fused[1].step == RGB_SHAPE[1]


def test_bad_input_is_counted_and_the_node_keeps_fusing(harness):
    h = harness(reliable_inputs=True)
    h.wait_connected()
    t = BASE

    def drops() -> int:
        return sum(v for k, v in h.node.stats().items() if k.startswith("dropped_"))

    def bad_then_good(thermal: Image | None = None, rgb: Image | None = None) -> None:
        nonlocal t
        t += 0.2
        before_drops = drops()
        h.publish([("thermal", thermal or thermal_image(t)), ("rgb", rgb or rgb_image(t))])
        assert wait_until(lambda: drops() == before_drops + 1)  # the bad pair was dropped
        t += 0.2
        before = len(h.fused)
        h.pair(t)
        assert wait_until(lambda: len(h.fused) == before + 1), "the node stopped fusing"

    h.pair(t)
    assert wait_until(lambda: len(h.fused) == 1)
    # an unsupported thermal encoding (colour)
    colour = array_to_image(np.zeros((*THERMAL_SHAPE, 3), np.uint8), "bgr8")
    colour.header.stamp = stamp(t + 0.2)
    bad_then_good(thermal=colour)
    # a wrongly sized buffer
    short = thermal_image(t + 0.2)
    short.data = array.array("B", bytes(10))
    bad_then_good(thermal=short)
    # an unsupported RGB encoding
    odd = array_to_image(np.zeros((*RGB_SHAPE[:2], 2), np.float32), "32FC2")
    odd.header.stamp = stamp(t + 0.2)
    bad_then_good(rgb=odd)
    # a 1x1 thermal image: too small to filter, a malformed frame (not a registration failure)
    tiny = array_to_image(np.zeros((1, 1), np.uint8), "mono8")
    tiny.header.stamp = stamp(t + 0.2)
    bad_then_good(thermal=tiny)
    # an inference error: the real network cannot be made to fail on valid input, so this one
    # engine call is replaced by one that raises (the only mock in this file)
    engine = h.node._engine
    real = engine.fuse_luma
    calls = {"n": 0}

    def failing_once(*args: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated inference failure")
        return real(*args)

    engine.fuse_luma = failing_once
    bad_then_good()

    expected = {
        "dropped_unsupported_encoding": "2",
        "dropped_malformed_image": "2",
        "dropped_registration": "0",
        "dropped_inference": "1",
        "dropped_stale": "0",
        "fused": "6",
    }
    assert wait_until(
        lambda: (
            bool(h.diagnostics) and all(h.diagnostics[-1].get(k) == v for k, v in expected.items())
        ),
        timeout=5,
    ), h.diagnostics[-1:]
    assert h.diagnostics[-1]["level"] == 1  # WARN: bad frames were seen
    assert h.diagnostics[-1]["state"] == "active" and h.diagnostics[-1]["backend"]


def test_compressed_inputs_and_camera_info(harness):
    h = harness(thermal_transport="compressed", rgb_transport="compressed",
                publish_camera_info=True)  # fmt: skip
    h.wait_connected()
    info = CameraInfo(width=RGB_SHAPE[1], height=RGB_SHAPE[0], distortion_model="plumb_bob")
    h.info_pub.publish(info)
    time.sleep(0.2)
    for k in range(5):
        t = BASE + k * 0.1
        thermal = array_to_compressed(
            image_to_array(thermal_image(t, "mono16")), "mono16", codec="png"
        )
        thermal.header.stamp = stamp(t)
        rgb = rgb_image(t)
        jpeg = array_to_compressed(image_to_array(rgb), "bgr8", rgb.header, codec="jpeg")
        h.publish([("thermal", thermal), ("rgb", jpeg)])
        time.sleep(0.05)
    assert wait_until(lambda: len(h.fused) >= 1 and len(h.infos) >= 1)
    assert h.fused[0].header.frame_id == RGB_FRAME
    assert h.infos[-1].header.stamp == h.fused[-1].header.stamp or wait_until(
        lambda: h.infos[-1].header.stamp == h.fused[-1].header.stamp
    )
    assert h.infos[-1].width == RGB_SHAPE[1]
    # undecodable compressed data is dropped and counted
    garbage = CompressedImage(format="mono16; png compressed mono16")
    garbage.data = array.array("B", b"\x89PNG but not really")
    garbage.header.stamp = stamp(BASE + 1)
    rgb = rgb_image(BASE + 1)
    h.publish([("thermal", garbage),
               ("rgb", array_to_compressed(image_to_array(rgb), "bgr8", rgb.header))])  # fmt: skip
    assert wait_until(lambda: h.node.stats()["dropped_malformed_image"] == 1)


def test_sim_time_stamps_and_a_bag_loop(harness):
    h = harness(use_sim_time=True)
    h.wait_connected()
    h.clock_pub.publish(Clock(clock=stamp(BASE)))
    assert wait_until(lambda: abs(h.node.get_clock().now().nanoseconds / 1e9 - BASE) < 1)
    for k in range(5):
        h.clock_pub.publish(Clock(clock=stamp(BASE + k * 0.1)))
        h.pair(BASE + k * 0.1)
        time.sleep(0.05)
    assert wait_until(lambda: len(h.fused) >= 1)
    # header-stamp latency is measured on the sim clock, not the wall clock
    assert h.node.stats()["latency_stamp_to_publish_p50_ms"] < 10_000
    # the bag loops: stamps and clock jump back; fusion goes on
    before = len(h.fused)
    for k in range(5):
        h.clock_pub.publish(Clock(clock=stamp(BASE - 100 + k * 0.1)))
        h.pair(BASE - 100 + k * 0.1)
        time.sleep(0.05)
    assert wait_until(lambda: len(h.fused) > before)
    assert h.node.stats()["time_jumps_back"] >= 1


@pytest.mark.gpu
def test_cuda_memory_is_released_on_deactivate(harness):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    h = harness(backend="torch", device="cuda")
    h.wait_connected()
    h.pair(BASE)
    assert wait_until(lambda: len(h.fused) == 1)
    assert h.node.stats()["device"].startswith("cuda")
    assert torch.cuda.memory_allocated() > baseline
    h.node.trigger_deactivate()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == baseline
