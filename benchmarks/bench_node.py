#!/usr/bin/env python3
"""The fusion node (and optionally the detector node) on a synthetic camera stream, each in its
own process as launch starts them: where a frame's time goes, against the transport floor.

Processes (one ROS domain, loopback discovery, the package's Fast DDS large-data profile):

* ``pub``: thermal 640x512 mono16 + RGB 1280x720 bgr8 at 30 Hz, timed like ``mmdrfuse bag
  synth``: free-running cameras (the thermal one 0.37 frame later, with 1.2 ms jitter and rare
  skipped frames), each message published when its driver would deliver it (RGB 4-5.5 ms after
  its stamp, thermal 11-14 ms) with the stamp of its exposure (wall clock);
* ``fusion_node`` (``python -m mmdrfuse_ros.nodes.fusion_node --ros-args --params-file
  config/fusion.yaml -p ...``: the shipped configuration, as launch gives it) with the scene's
  homography;
* ``relay``: republishes each RGB frame unchanged (the transport floor: the same frames, the
  same kind of subscription and publisher, no work);
* optionally ``detector_node`` on the fused images;
* ``sink``: records stamp -> arrival of the fused images, the relayed frames and the
  detections, and the nodes' last ``/diagnostics`` (the stage table).

Each ``--variant`` (fusion parameters, e.g. ``"sync_policy=latest threads=1"``) is one run
with its own floor; latencies are reported as differences from the floor of the same run.

    python benchmarks/bench_node.py                                   # defaults
    python benchmarks/bench_node.py --variant sync_policy=approximate --variant sync_policy=latest
    python benchmarks/bench_node.py --detector --detector-param backend=hog --duration 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import roles

from mmdrfuse_ros.fusion.geometry import default_homography
from mmdrfuse_ros.transport import PROFILE_VARIABLES, profile_environment

HERE = Path(__file__).resolve()
FLOOR_TOPIC = "bench/floor"
THERMAL_SIZE, RGB_SIZE = (640, 512), (1280, 720)  # width, height
DISTINCT_FRAMES = 15  # rendered per camera, then cycled
#: driver delivery delays (ms: base, spread) and stamp jitter, as bag/synth.py models them
RGB_DELAY, THERMAL_DELAY = (4.0, 1.5), (11.0, 3.0)


# ------------------------------------------------------------------------------ the roles
def _qos(reliable: bool, depth: int = 5) -> Any:
    from mmdrfuse_ros.nodes.qos import make_qos

    return make_qos("reliable" if reliable else "best_effort", depth)


def _spin(node: Any) -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException

    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(node)


def schedule(duration: float, rate: float, seed: int = 0) -> list[tuple[int, str, int]]:
    """(send ns, camera, stamp ns) from the start, in send order (bag/synth.py's camera model)."""
    import numpy as np

    from mmdrfuse_ros.bag.scene import NightScene, SynthConfig

    scene = NightScene(SynthConfig(duration_s=duration, rgb_rate_hz=rate, thermal_rate_hz=rate,
                                   pedestrians=0, seed=seed))  # fmt: skip
    rng = np.random.default_rng(seed + 2)
    events = []
    for camera, (phase, jitter, skip), (base, spread) in (
        ("rgb", (0.0, 0.4e-3, 0.0), RGB_DELAY),
        ("thermal", (0.37 / rate, 1.2e-3, 0.01), THERMAL_DELAY),
    ):
        for stamp in scene.stamps(rate, phase, jitter, skip):
            delay = int((base + rng.uniform(0, spread)) * 1e6)
            events.append((int(stamp) + delay, camera, int(stamp)))
    return sorted(events)


def render_frames(seed: int = 0) -> tuple[list[Any], list[Any]]:
    """Thermal and RGB Image messages of the night scene."""
    import numpy as np

    from mmdrfuse_ros.bag.scene import NightScene, SynthConfig
    from mmdrfuse_ros.msgs.images import array_to_image

    scene = NightScene(SynthConfig(seed=seed, duration_s=DISTINCT_FRAMES / 30))
    noise = np.random.default_rng(seed + 1)
    thermal, rgb = [], []
    for k in range(DISTINCT_FRAMES):
        t = k / 30
        thermal.append(array_to_image(scene.render_thermal(t, noise)[0], "mono16"))
        rgb.append(array_to_image(scene.render_rgb(t, noise)[0], "bgr8"))
    for msg in thermal:
        msg.header.frame_id = "thermal_optical_frame"
    for msg in rgb:
        msg.header.frame_id = "rgb_optical_frame"
    return thermal, rgb


def run_publisher(node: Any, args: argparse.Namespace) -> int:
    import rclpy
    from sensor_msgs.msg import Image

    from mmdrfuse_ros import topics

    thermal_msgs, rgb_msgs = render_frames()
    events = schedule(args.warmup + args.duration, args.rate)
    pubs = {
        "thermal": node.create_publisher(Image, topics.THERMAL_IMAGE, _qos(False)),
        "rgb": node.create_publisher(Image, topics.RGB_IMAGE, _qos(False)),
    }
    wanted_rgb = 2 if args.floor else 1  # the fusion node, and the relay
    deadline = time.monotonic() + args.start_timeout
    while not (
        pubs["thermal"].get_subscription_count() >= 1
        and pubs["rgb"].get_subscription_count() >= wanted_rgb
        and node.count_subscribers("fused/image") >= (2 if args.detector else 1)
        and (not args.floor or node.count_subscribers(FLOOR_TOPIC) >= 1)
    ):
        rclpy.spin_once(node, timeout_sec=0.1)
        if time.monotonic() > deadline:
            print("bench: the nodes never connected", file=sys.stderr)
            return 1
    time.sleep(1.0)  # let the node -> sink endpoints match as well
    start = time.time_ns() + 200_000_000
    Path(args.result).write_text(json.dumps({"start_ns": start, "events": len(events)}))
    counters = {"thermal": 0, "rgb": 0}
    for send, camera, stamp in events:
        while (delay := (start + send - time.time_ns()) / 1e9) > 0:
            time.sleep(delay)
        msgs = thermal_msgs if camera == "thermal" else rgb_msgs
        msg = msgs[counters[camera] % len(msgs)]
        counters[camera] += 1
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(start + stamp, 1_000_000_000)
        pubs[camera].publish(msg)
    time.sleep(1.0)
    sent = {"start_ns": start, "rgb_stamps": [start + s for _, c, s in events if c == "rgb"]}
    Path(args.result).write_text(json.dumps(sent))
    return 0


def run_relay(node: Any) -> None:
    from sensor_msgs.msg import Image

    from mmdrfuse_ros import topics

    out = node.create_publisher(Image, FLOOR_TOPIC, _qos(True))
    node.create_subscription(Image, topics.RGB_IMAGE, out.publish, _qos(False))
    _spin(node)


def run_sink(node: Any, args: argparse.Namespace) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from mmdrfuse_ros import topics
    from mmdrfuse_ros.msgs.detections import detection_message_type, msg_to_detections
    from mmdrfuse_ros.nodes.diagnostics import status_values
    from mmdrfuse_ros.stamps import stamp_to_ns

    arrivals: dict[str, list[tuple[int, int]]] = {"fused": [], "floor": [], "detections": []}
    diagnostics: dict[str, dict[str, str]] = {}

    def record(kind: str, stamp_ns: int) -> None:
        arrivals[kind].append((stamp_ns, time.time_ns()))

    node.create_subscription(Image, topics.FUSED_IMAGE,
                             lambda m: record("fused", stamp_to_ns(m.header.stamp)), _qos(True))
    node.create_subscription(Image, FLOOR_TOPIC,
                             lambda m: record("floor", stamp_to_ns(m.header.stamp)), _qos(True))
    node.create_subscription(detection_message_type(), topics.DETECTIONS,
                             lambda m: record("detections", msg_to_detections(m)[0]), _qos(True))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            diagnostics[status.name] = status_values(status)

    node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diagnostics, 10)
    try:
        _spin(node)
    finally:
        Path(args.result).write_text(json.dumps({"arrivals": arrivals,
                                                 "diagnostics": diagnostics}))  # fmt: skip


def run_role(args: argparse.Namespace) -> int:
    return roles.run_role(args.role, {"pub": lambda node: run_publisher(node, args),
                                      "relay": run_relay,
                                      "sink": lambda node: run_sink(node, args)})


# ------------------------------------------------------------------------------ one run
def _ros_args(params: dict[str, str], params_file: str | None = None) -> list[str]:
    out = ["--ros-args", "--log-level", "warn"]
    if params_file:
        out += ["--params-file", params_file]
    for name, value in params.items():
        out += ["-p", f"{name}:={value}"]
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_variant(variant: dict[str, str], args: argparse.Namespace, domain: int) -> dict:
    """Start every process, stream, stop; the raw results of one run."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain))
    for var in PROFILE_VARIABLES:
        env.pop(var, None)
    env.update(profile_environment(args.fastdds_profile, env))
    homography = default_homography(THERMAL_SIZE, RGB_SIZE)  # the scene's rig
    fusion_params = {"homography": json.dumps([float(v) for v in homography.ravel()]), **variant}
    role = [sys.executable, str(HERE), "--rate", str(args.rate), "--warmup", str(args.warmup),
            "--duration", str(args.duration), "--start-timeout", str(args.start_timeout)]
    role += ["--detector"] if args.detector else []
    role += [] if args.floor else ["--no-floor"]
    with tempfile.TemporaryDirectory() as tmp:
        logs = {name: open(Path(tmp) / f"{name}.log", "w") for name in  # noqa: SIM115
                ("fusion", "detector", "relay", "sink", "pub")}  # fmt: skip
        procs: dict[str, subprocess.Popen] = {}

        def start(name: str, command: list[str]) -> None:
            procs[name] = subprocess.Popen(command, env=env, stdout=logs[name],
                                           stderr=subprocess.STDOUT)  # fmt: skip

        try:
            start("sink", [*role, "--role", "sink", "--result", f"{tmp}/sink.json"])
            if args.floor:
                start("relay", [*role, "--role", "relay"])
            start("fusion", [sys.executable, "-m", "mmdrfuse_ros.nodes.fusion_node",
                             *_ros_args(fusion_params, args.fusion_config or None)])
            if args.detector:
                start("detector", [sys.executable, "-m", "mmdrfuse_ros.nodes.detector_node",
                                   *_ros_args(dict(args.detector_param),
                                              args.detector_config or None)])  # fmt: skip
            start("pub", [*role, "--role", "pub", "--result", f"{tmp}/pub.json"])
            cpu = _measure_cpu(procs, args, Path(tmp) / "pub.json")
            rc = procs["pub"].wait(timeout=args.warmup + args.duration + 60)
        finally:
            _stop(procs)
            for log in logs.values():
                log.close()
        if rc != 0 or not (Path(tmp) / "sink.json").exists():
            tails = {n: (Path(tmp) / f"{n}.log").read_text()[-1500:] for n in logs}
            return {"variant": variant, "error": f"publisher exit {rc}", "logs": tails}
        return {
            "variant": variant, "cpu": cpu,
            "pub": json.loads((Path(tmp) / "pub.json").read_text()),
            "sink": json.loads((Path(tmp) / "sink.json").read_text()),
        }  # fmt: skip


def _measure_cpu(procs: dict[str, subprocess.Popen], args: argparse.Namespace,
                 started: Path) -> dict[str, float]:
    """CPU share (fraction of one core) of each process over the measured window."""
    deadline = time.monotonic() + args.start_timeout + 30
    while not started.exists() and time.monotonic() < deadline and procs["pub"].poll() is None:
        time.sleep(0.1)
    time.sleep(args.warmup + 0.2)
    before = {name: _cpu_seconds(p.pid) for name, p in procs.items()}
    time.sleep(args.duration)
    return {name: (_cpu_seconds(p.pid) - before[name]) / args.duration
            for name, p in procs.items()}  # fmt: skip


# ------------------------------------------------------------------------------ analysis
def _percentile(data: list[float], q: float) -> float:
    if not data:
        return float("nan")
    data = sorted(data)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def analyse(raw: dict, args: argparse.Namespace) -> dict:
    """Rates and stamp -> arrival percentiles over the measured window, and the stage table."""
    from mmdrfuse_ros.nodes.timing import stage_table

    if "error" in raw:
        return raw
    start = raw["pub"]["start_ns"]
    t0 = start + int(args.warmup * 1e9)
    t1 = start + int((args.warmup + args.duration) * 1e9)
    sent = sum(1 for s in raw["pub"]["rgb_stamps"] if t0 <= s < t1)
    rows = {}
    for kind, arrivals in raw["sink"]["arrivals"].items():
        inside = {stamp: recv for stamp, recv in arrivals if t0 <= stamp < t1}
        latencies = [(recv - stamp) / 1e6 for stamp, recv in inside.items()]
        rows[kind] = {
            "received": len(inside), "sent_rgb": sent, "rate_hz": len(inside) / args.duration,
            "p50_ms": _percentile(latencies, 50), "p95_ms": _percentile(latencies, 95),
        }  # fmt: skip
    diagnostics = raw["sink"]["diagnostics"]
    fusion = next((v for k, v in diagnostics.items() if k.endswith(": fusion")), {})
    detector = next((v for k, v in diagnostics.items() if k.endswith(": detector")), {})
    return {
        "variant": raw["variant"], "rows": rows, "cpu": raw["cpu"],
        "stages": stage_table(fusion), "detector_stages": stage_table(detector),
        "fusion_stats": fusion,
    }  # fmt: skip


def markdown(result: dict, args: argparse.Namespace) -> str:
    """One run as Markdown: outputs against the floor, the stage tables, CPU, the goals."""
    title = " ".join(f"{k}={v}" for k, v in result["variant"].items()) or "defaults"
    if "error" in result:
        logs = "\n".join(f"--- {n}\n{t}" for n, t in result["logs"].items() if t)
        return f"### {title}\n\nfailed: {result['error']}\n{logs}\n"
    rows, floor = result["rows"], result["rows"].get("floor")
    lines = [f"### {title}", "", "| output | received / RGB sent | rate | stamp->arrival p50 | "
             "p95 | p50 - floor | p95 - floor |", "|---|---|---:|---:|---:|---:|---:|"]
    for kind in ("floor", "fused", "detections"):
        r = rows.get(kind)
        if r is None or (kind == "detections" and not args.detector) or (
                kind == "floor" and not args.floor):
            continue
        d50 = d95 = "-"
        if floor is not None and kind != "floor" and args.floor:
            d50 = f"{r['p50_ms'] - floor['p50_ms']:+.1f} ms"
            d95 = f"{r['p95_ms'] - floor['p95_ms']:+.1f} ms"
        lines.append(f"| {kind} | {r['received']} / {r['sent_rgb']} | {r['rate_hz']:.1f} Hz | "
                     f"{r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | {d50} | {d95} |")
    for name, table in (("fusion_node", result["stages"]),
                        ("detector_node", result["detector_stages"])):  # fmt: skip
        if not table:
            continue
        lines += ["", f"{name} stages (its /diagnostics, last 1000 frames):", "",
                  "| stage | p50 ms | p95 ms |", "|---|---:|---:|"]  # fmt: skip
        lines += [f"| {s} | {q.get(50, float('nan')):.2f} | {q.get(95, float('nan')):.2f} |"
                  for s, q in table.items()]  # fmt: skip
        total = sum(q.get(50, 0.0) for q in table.values())
        lines.append(f"| sum of p50 | {total:.2f} | |")
    cpu = ", ".join(f"{n} {100 * c:.0f} %" for n, c in result["cpu"].items())
    lines += ["", f"CPU (share of one core over the measured window): {cpu}"]
    lines += _goals(rows, args)
    return "\n".join(lines) + "\n"


def _goals(rows: dict, args: argparse.Namespace) -> list[str]:
    """Issue 15's goals, each against this run: fusion alone, or with the detector beside it."""
    fused, floor, detections = rows.get("fused"), rows.get("floor"), rows.get("detections")
    if fused is None or floor is None or not args.floor:
        return []
    if args.detector and detections is not None:
        checks = [
            (f"fused >= {25 / 30 * args.rate:.0f} Hz", fused["rate_hz"] >= 25 / 30 * args.rate),
            (f"detections >= {args.rate / 3:.0f} Hz", detections["rate_hz"] >= args.rate / 3),
            ("stamp->detections p50 <= 120 ms", detections["p50_ms"] <= 120),
        ]
        title = "with the detector"
    else:
        checks = [
            (f"fused >= {29 / 30 * args.rate:.0f} Hz", fused["rate_hz"] >= 29 / 30 * args.rate),
            ("p50 <= floor + 15 ms", fused["p50_ms"] - floor["p50_ms"] <= 15),
            ("p95 <= floor + 33 ms", fused["p95_ms"] - floor["p95_ms"] <= 33),
        ]
        title = "fusion alone"
    return ["", f"Goal (issue 15, {title}): " + "; ".join(
        f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks)]


def _shipped(name: str) -> str:
    from mmdrfuse_ros.resources import config_path

    try:
        return str(config_path(name))
    except FileNotFoundError:
        return ""


def _parse_params(text: str) -> dict[str, str]:
    params = {}
    for item in shlex.split(text):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected name=value, got {item!r}")
        params[name] = value
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", type=_parse_params,
                        help="fusion parameters of one run, 'name=value name=value' "
                        "(repeat for several runs; default: one run with the defaults)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds streamed first")
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--detector", action="store_true", help="also run detector_node")
    parser.add_argument("--detector-param", action="append", default=[],
                        type=lambda s: next(iter(_parse_params(s).items())),
                        help="detector parameter name=value (repeatable)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="no relay (no transport floor)")
    parser.add_argument("--fusion-config", default=_shipped("fusion.yaml"),
                        help="params file of fusion_node ('' = none; default: the package's "
                        "config/fusion.yaml, as launch gives it)")
    parser.add_argument("--detector-config", default=_shipped("detector.yaml"),
                        help="params file of detector_node ('' = none; default: the package's)")
    parser.add_argument("--fastdds-profile", default=None,
                        help="Fast DDS XML profile ('' = none; default: the package's)")
    parser.add_argument("--domain", type=int, default=None, help="first ROS_DOMAIN_ID")
    parser.add_argument("--start-timeout", type=float, default=90.0)
    parser.add_argument("--json", help="also write the results here")
    roles.add_role_arguments(parser)
    args = parser.parse_args(argv)  # fmt: skip
    if args.role:
        return run_role(args)
    if args.duration <= 0 or args.rate <= 0 or args.warmup < 0:
        parser.error("--duration and --rate must be > 0, --warmup >= 0")
    base = args.domain if args.domain is not None else int(os.environ.get("ROS_DOMAIN_ID", 17))
    load = os.getloadavg()
    print(f"bench_node: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} (1/5/15 min); thermal {THERMAL_SIZE[0]}x{THERMAL_SIZE[1]} mono16 + "
          f"RGB {RGB_SIZE[0]}x{RGB_SIZE[1]} bgr8 at {args.rate:g} Hz, {args.duration:g} s "
          f"measured after {args.warmup:g} s\n", flush=True)  # fmt: skip
    results = []
    for variant in args.variant or [{}]:
        result = analyse(run_variant(variant, args, base), args)
        print(markdown(result, args), flush=True)
        results.append(result)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
