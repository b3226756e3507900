"""``mmdrfuse bag synth|from-folders|info`` and ``mmdrfuse replay``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: exit codes: 0 done, 1 ran but failed part way (partial output written), 2 unusable input.
EXIT_OK, EXIT_PARTIAL, EXIT_INPUT = 0, 1, 2


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 1280x720, got {text!r}"
        ) from None
    return w, h


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
    bag = subparsers.add_parser("bag", help="make rosbags: synthetic, from dataset folders")
    bag_sub = bag.add_subparsers(dest="bag_command", metavar="BAG_COMMAND")
    bag.set_defaults(func=lambda args: (bag.print_help(), EXIT_INPUT)[1])

    synth = bag_sub.add_parser(
        "synth",
        help="a synthetic night street (thermal mono16 + dark RGB, ground truth, homography)",
        description="Write a synthetic thermal/RGB rosbag2: warm pedestrians that a dark, noisy "
        "RGB camera barely sees, free-running camera clocks, the thermal->RGB homography on "
        "/mmdrfuse/calibration and ground-truth boxes on /ground_truth/... (docs/REPLAY.md).",
    )
    synth.add_argument("--out", required=True, type=Path, help="bag directory to create")
    synth.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    synth.add_argument("--rgb-rate", type=float, default=30.0, help="Hz (default 30)")
    synth.add_argument("--thermal-rate", type=float, default=30.0,
                       help="Hz (default 30; 9 for export-restricted cameras)")  # fmt: skip
    synth.add_argument("--rgb-size", type=_size, default=(1280, 720), help="WxH (1280x720)")
    synth.add_argument("--thermal-size", type=_size, default=(640, 512), help="WxH (640x512)")
    synth.add_argument("--pedestrians", type=int, default=4, help="walkers (default 4)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=cmd_synth)

    folders = bag_sub.add_parser(
        "from-folders",
        help="a bag from registered IR/visible dataset folders (RoadScene, TNO, MSRS, LLVIP)",
        description="Pairs are matched by file name; both images of a pair get the same stamp. "
        "LLVIP: --ir infrared/test --vis visible/test --annotations Annotations (VOC person "
        "boxes become ground truth).",
    )
    folders.add_argument("--ir", required=True, type=Path, help="infrared images folder")
    folders.add_argument("--vis", required=True, type=Path, help="visible images folder")
    folders.add_argument("--out", required=True, type=Path, help="bag directory to create")
    folders.add_argument("--rate", type=float, default=10.0, help="pairs per second (10)")
    folders.add_argument("--annotations", type=Path, help="VOC .xml folder (LLVIP)")
    folders.add_argument("--limit", type=int, help="only the first N pairs (by name)")
    folders.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    folders.add_argument("--no-progress", action="store_true", help="no progress bar")
    folders.set_defaults(func=cmd_from_folders)

    info = bag_sub.add_parser("info", help="topics, types, counts and duration of a bag")
    info.add_argument("bag", type=Path)
    info.set_defaults(func=cmd_info)

    replay = subparsers.add_parser(
        "replay",
        help="play a bag through the fusion and detector nodes; report latency, drops, "
        "quality and AP",
        description="Plays BAG with its recorded timing (scaled by --rate) and /clock, runs the "
        "fusion and detector nodes in this process under use_sim_time (or measures nodes "
        "started elsewhere with --external), and writes report.json, report.md, report.html "
        "and PNG plots to --report. Exit status: 0 ok, 1 stopped part way or counts that do "
        "not add up (the report holds what was measured), 2 bag unusable. DDS discovery "
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
        help="detector node parameter",
    )
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
        "package's large-data profile unless FASTDDS_DEFAULT_PROFILES_FILE is set)",
    )
    replay.add_argument(
        "--executor",
        choices=("single", "multi"),
        default="single",
        help="in-process nodes on one SingleThreadedExecutor (default) or a "
        "4-thread MultiThreadedExecutor",
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bars")
    replay.set_defaults(func=cmd_replay)  # fmt: skip


def cmd_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmdrfuse_ros.bag.io import BagError
    from mmdrfuse_ros.bag.synth import SynthConfig, frame_count, write_synthetic_bag

    try:
        config = SynthConfig(
            duration_s=args.duration, rgb_rate_hz=args.rgb_rate,
            thermal_rate_hz=args.thermal_rate, rgb_size=args.rgb_size,
            thermal_size=args.thermal_size, pedestrians=args.pedestrians, seed=args.seed,
        )  # fmt: skip
    except ValueError as exc:
        print(f"mmdrfuse bag synth: {exc}", file=sys.stderr)
        return EXIT_INPUT
    try:
        with tqdm(total=frame_count(config), unit="frame", desc="synth",
                  disable=args.no_progress) as bar:  # fmt: skip
            summary = write_synthetic_bag(args.out, config, args.storage, bar.update)
    except BagError as exc:
        print(f"mmdrfuse bag synth: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(summary.describe())
    return EXIT_OK


def cmd_from_folders(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mmdrfuse_ros.bag.folders import FolderError, find_pairs, write_folder_bag
    from mmdrfuse_ros.bag.io import BagError

    try:
        pairs, _, _ = find_pairs(args.ir, args.vis, args.annotations)
        total = len(pairs) if args.limit is None else min(len(pairs), args.limit)
        with tqdm(total=total, unit="pair", desc="from-folders", disable=args.no_progress) as bar:
            summary = write_folder_bag(
                args.ir, args.vis, args.out, rate_hz=args.rate, annotations=args.annotations,
                storage=args.storage, limit=args.limit, progress=bar.update,
            )  # fmt: skip
    except (FolderError, BagError) as exc:
        print(f"mmdrfuse bag from-folders: {exc}", file=sys.stderr)
        partial = args.out.exists() and "stopped" in str(exc)
        return EXIT_PARTIAL if partial else EXIT_INPUT
    print(summary.describe())
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from mmdrfuse_ros.bag import io

    try:
        with io.BagReader(args.bag) as reader:
            print(f"bag:      {args.bag}")
            print(f"duration: {(reader.end_ns - reader.start_ns) / 1e9:.3f} s")
            print(f"start:    {reader.start_ns / 1e9:.9f} (unix seconds)")
            print(f"messages: {reader.message_count}")
            for topic, info in sorted(reader.topics.items()):
                print(f"  {topic:40s} {info.msgtype:32s} {info.count}")
    except io.BagError as exc:
        print(f"mmdrfuse bag info: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from mmdrfuse_ros.bag.replay import ReplayError, ReplayOptions, run_replay
    from mmdrfuse_ros.bag.report import terminal_summary

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
        return EXIT_INPUT
    report, code = run_replay(options)
    summary = terminal_summary(report, args.report)
    print(summary, file=sys.stderr if code else sys.stdout)
    return code
