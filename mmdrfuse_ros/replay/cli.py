"""``mmdrfuse replay`` (a bag through the nodes, with a report) and ``mmdrfuse demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _key_value(text: str) -> tuple[str, Any]:
    """name=value with the value read as YAML (numbers, booleans, [lists], strings)."""
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value) if value else ""
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML ({exc})") from exc


def register(subparsers: Any) -> None:
    _register_replay(subparsers)
    from mmdrfuse_ros.replay import demo

    parser = subparsers.add_parser(
        "demo",
        help="synthetic bag -> replay through fusion and detection -> report (make demo)",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(parser)
    parser.set_defaults(func=demo.run)


def _register_replay(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="play a bag through the fusion and detector nodes; report latency, drops, "
        "quality and AP",
        description="Plays BAG with its recorded timing (scaled by --rate) and /clock, runs the "
        "fusion and detector nodes in this process under use_sim_time (or measures nodes "
        "started elsewhere with --external), and writes report.json, report.md, report.html "
        "and PNG plots to --report. Exit status: 0 ok, 1 stopped part way or counts that do "
        "not add up (the report holds what was measured), 2 unusable input (bag, parameter "
        "name or value, --report folder), 130/143 stopped by SIGINT (Ctrl-C)/SIGTERM with a "
        "partial report. DDS discovery "
        "follows your environment (ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE).",
    )
    replay.add_argument("bag", type=Path, help="rosbag2 directory or .mcap/.db3 file")
    replay.add_argument("--report", type=Path, default=Path("replay_report"),
                        help="report folder (default ./replay_report)")  # fmt: skip
    replay.add_argument("--rate", type=float, default=1.0, help="playback speed factor (1.0)")
    replay.add_argument("--loop", type=int, default=1, help="play the bag N times (1)")
    replay.add_argument(
        "--external",
        action="store_true",
        help="do not start nodes: measure ones already running (ros2 launch)",
    )
    replay.add_argument(
        "--topics",
        nargs="+",
        type=_key_value,
        default=[],
        metavar="ROLE=TOPIC",
        help="bag topics by role: thermal, rgb, camera_info, ground_truth, "
        "ground_truth_thermal, calibration (defaults: /thermal/image_raw, "
        "/rgb/image_raw, ...)",
    )
    replay.add_argument(
        "--fusion-param",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="fusion node parameter, e.g. backend=torch",
    )
    replay.add_argument(
        "--detector-param",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=VALUE",
        help="detector node parameter (with --external: the settings of the offline "
        "thermal/visible reference detector; give those of the external node)",
    )
    _add_measurement_arguments(replay)
    replay.set_defaults(func=cmd_replay)


def _add_measurement_arguments(replay: argparse.ArgumentParser) -> None:
    """What runs beside the nodes and what the report evaluates."""
    replay.add_argument("--no-detector", action="store_true", help="fusion only")
    replay.add_argument("--no-floor", action="store_true", help="skip the transport floor")
    replay.add_argument(
        "--metrics-frames",
        type=int,
        default=12,
        help="fused frames to compute fusion metrics on (12)",
    )
    replay.add_argument(
        "--ap-frames", type=int, default=40, help="most frames used for AP, evenly spaced (40)"
    )
    replay.add_argument("--samples", type=int, default=4, help="rows of the sample grid (4)")
    replay.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the nodes to connect (30)",
    )
    replay.add_argument(
        "--fastdds-profile",
        default=None,
        help="Fast DDS XML profile for this process ('' = none; default: the "
        "package's large-data profile unless FASTDDS_DEFAULT_PROFILES_FILE is "
        "set)",
    )
    replay.add_argument(
        "--executor",
        choices=("single", "multi"),
        default="single",
        help="in-process nodes on one SingleThreadedExecutor (default) or a "
        "4-thread MultiThreadedExecutor",
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_replay(args: argparse.Namespace) -> int:
    from mmdrfuse_ros.replay.plan import ReplayError, ReplayOptions
    from mmdrfuse_ros.replay.report import terminal_summary
    from mmdrfuse_ros.replay.run import run_replay

    try:
        options = ReplayOptions(
            bag=args.bag, report=args.report, rate=args.rate, loop=args.loop,
            external=args.external, topics=dict(args.topics),
            fusion_params=dict(args.fusion_param), detector_params=dict(args.detector_param),
            detector=not args.no_detector, floor=not args.no_floor,
            metrics_frames=args.metrics_frames, ap_frames=args.ap_frames, samples=args.samples,
            start_timeout_s=args.start_timeout, fastdds_profile=args.fastdds_profile,
            progress=not args.no_progress, executor=args.executor,
        )  # fmt: skip
    except ReplayError as exc:
        print(f"mmdrfuse replay: {exc}", file=sys.stderr)
        return exc.exit_code
    report, code = run_replay(options)
    if report.folder is None and not report.files:  # refused before any work: nothing written
        print("mmdrfuse replay: " + "; ".join(report["errors"]), file=sys.stderr)
        return code
    summary = terminal_summary(report, report.folder)
    print(summary, file=sys.stderr if code else sys.stdout)
    return code
