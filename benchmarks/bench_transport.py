#!/usr/bin/env python3
"""Large images through a pass-through rclpy node: delivered/sent and latency per DDS setting.

A publisher sends ``--frames`` images (default 1280x720 bgr8 at 30 Hz, best effort, depth 5) on
``bench/in``; a relay node republishes each on ``bench/out``; a sink records what arrives. Each
runs in its own process, as real nodes do. The run is repeated for every transport setting
(``--configs``), each in its own ROS domain, and a Markdown table is printed:

* ``default``: Fast DDS as rmw_fastrtps configures it (no XML profile);
* ``profile``: our ``config/fastdds_large_data.xml`` through ``FASTDDS_DEFAULT_PROFILES_FILE``
  (what ``launch/fusion.launch.py`` sets);
* any other value is taken as the path of a Fast DDS XML profile to try.

DDS stays on this machine: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a private domain id
(``--domain``, default from the pid) unless already set by the caller.

    python benchmarks/bench_transport.py                     # before/after table
    python benchmarks/bench_transport.py --frames 300 --rate 30 --width 640 --height 512
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import roles

from mmdrfuse_ros.stamps import stamp_to_ns
from mmdrfuse_ros.transport import DEFAULT_PROFILE_NAME, PROFILE_VARIABLES, profile_environment

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "config" / DEFAULT_PROFILE_NAME
IN_TOPIC, OUT_TOPIC = "bench/in", "bench/out"


def qos(args: argparse.Namespace):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliable = args.reliability == "reliable"
    reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.depth, reliability=reliability)


def run_role(args: argparse.Namespace) -> int:
    """One process of the pipeline: 'pub', 'relay' or 'sink'."""
    return roles.run_role(args.role, {"pub": lambda node: publish(node, args, qos(args)),
                                      "relay": lambda node: relay(node, qos(args)),
                                      "sink": lambda node: sink(node, args, qos(args))})


def relay(node, profile) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    out = node.create_publisher(Image, OUT_TOPIC, profile)
    node.create_subscription(Image, IN_TOPIC, out.publish, profile)
    rclpy.spin(node)


def sink(node, args: argparse.Namespace, profile) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    received: list[tuple[int, int, int]] = []  # (frame, stamp ns, receive ns)

    def on_image(msg: Image) -> None:
        now = time.time_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        received.append((int(msg.header.frame_id), stamp, now))

    node.create_subscription(Image, OUT_TOPIC, on_image, profile)
    try:
        rclpy.spin(node)
    finally:
        Path(args.result).write_text(json.dumps({"received": received}))


def publish(node, args: argparse.Namespace, profile) -> int:
    import array

    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    pub = node.create_publisher(Image, IN_TOPIC, profile)
    deadline = time.monotonic() + 30
    # wait until the whole chain is connected: relay subscribed to us, sink subscribed to relay
    while pub.get_subscription_count() < 1 or node.count_subscribers(OUT_TOPIC) < 1:
        rclpy.spin_once(node, timeout_sec=0.05)
        if time.monotonic() > deadline:
            print("bench: the relay/sink never connected", file=sys.stderr)
            return 1
    time.sleep(1.0)  # let the relay->sink endpoints match as well
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=args.height * args.width * 3, dtype=np.uint8)
    msg = Image(height=args.height, width=args.width, encoding="bgr8", step=args.width * 3)
    msg.data = array.array("B", pixels.tobytes())
    period = 1.0 / args.rate
    start = time.monotonic()
    for i in range(args.frames):
        next_t = start + i * period
        while (delay := next_t - time.monotonic()) > 0:
            time.sleep(delay)
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        msg.header.frame_id = str(i)
        pub.publish(msg)
    time.sleep(0.5)
    return 0


def run_config(name: str, profile_path: str | None, domain: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["ROS_DOMAIN_ID"] = str(domain)
    for var in PROFILE_VARIABLES:  # only the profile of this configuration
        env.pop(var, None)
    if profile_path:
        env.update(profile_environment(profile_path, env))
    common = [
        sys.executable, __file__, "--depth", str(args.depth), "--reliability", args.reliability,
        "--width", str(args.width), "--height", str(args.height),
        "--frames", str(args.frames), "--rate", str(args.rate),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "sink.json"
        sink = subprocess.Popen([*common, "--role", "sink", "--result", str(result)], env=env)
        relay = subprocess.Popen([*common, "--role", "relay"], env=env)
        try:
            rc = subprocess.run([*common, "--role", "pub"], env=env, timeout=120).returncode
            time.sleep(1.0)
        finally:
            for proc in (relay, sink):
                proc.send_signal(signal.SIGINT)
            for proc in (relay, sink):
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if rc != 0 or not result.exists():
            return {"name": name, "error": f"run failed (publisher exit {rc})"}
        received = json.loads(result.read_text())["received"]
    latencies = sorted((recv - stamp) / 1e6 for _, stamp, recv in received)
    frames = {frame for frame, _, _ in received}

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, round(q / 100 * (len(latencies) - 1)))]

    return {
        "name": name,
        "sent": args.frames,
        "delivered": len(frames),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
    }


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    head = (
        f"{args.width}x{args.height} bgr8 ({args.width * args.height * 3 / 1e6:.1f} MB) at "
        f"{args.rate:g} Hz, {args.reliability}, depth {args.depth}, publisher -> rclpy relay -> "
        "sink (3 processes)\n\n"
        "| transport | delivered / sent | latency p50 | p95 | max |\n"
        "|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} | | | |")
            continue
        share = 100.0 * r["delivered"] / r["sent"]
        lines.append(
            f"| {r['name']} | {r['delivered']} / {r['sent']} ({share:.0f} %) | "
            f"{r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | {r['max_ms']:.1f} ms |"
        )
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        default="default,profile",
        help="comma list: default, profile, or paths of Fast DDS XML profiles",
    )
    parser.add_argument("--frames", type=int, default=168)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--reliability", choices=["best_effort", "reliable"], default="best_effort")
    parser.add_argument(
        "--domain",
        type=int,
        default=None,
        help="first ROS_DOMAIN_ID to use (one per config); default from the pid",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    roles.add_role_arguments(parser)
    args = parser.parse_args(argv)  # fmt: skip
    if args.role:
        return run_role(args)
    if args.frames < 1 or args.rate <= 0 or args.width < 1 or args.height < 1 or args.depth < 1:
        parser.error("--frames, --rate, --width, --height and --depth must be positive")
    base = args.domain if args.domain is not None else 51 + os.getpid() % 40
    rows = []
    for k, config in enumerate(c.strip() for c in args.configs.split(",") if c.strip()):
        if config == "default":
            path = None
        elif config == "profile":
            path = str(PROFILE)
        else:
            path = str(Path(config).resolve())
        if path and not Path(path).is_file():
            parser.error(f"no such profile: {path}")
        print(f"[bench_transport] {config} ...", file=sys.stderr, flush=True)
        rows.append(run_config(config, path, base + k, args))
    print(markdown(rows, args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
