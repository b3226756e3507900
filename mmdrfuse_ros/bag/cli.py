"""``mmdrfuse bag synth|from-folders|info``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mmdrfuse_ros.cli_args import add_out, add_pair_inputs

#: exit codes: 0 done, 1 ran but failed part way (partial output written), 2 unusable input.
EXIT_OK, EXIT_PARTIAL, EXIT_INPUT = 0, 1, 2
OUT_HELP = "bag directory to create"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, e.g. 1280x720, got {text!r}"
        ) from None
    return w, h


SYNTH_DESCRIPTION = """\
Write a synthetic thermal/RGB rosbag2: warm pedestrians that a dark, noisy RGB camera barely
sees, free-running camera clocks, the thermal->RGB homography on /mmdrfuse/calibration and
ground-truth boxes on /ground_truth/... (docs/REPLAY.md). The fusion node's parameters for it go
to <out>/mmdrfuse_params.yaml.
"""

FROM_FOLDERS_DESCRIPTION = """\
Pairs are matched by file name; both images of a pair get the same stamp. LLVIP: --ir
infrared/test --vis visible/test --annotations Annotations (VOC person boxes become ground
truth). The fusion node's parameters for the bag (homography, thermal normalisation) are written
to <out>/mmdrfuse_params.yaml.
"""

INFO_DESCRIPTION = """\
Topics, types, counts and duration of a bag (of its readable part when it is truncated: exit 1),
its fusion_node params file, and the ros2 launch / ros2 bag play lines that replay it into nodes
started by launch.
"""


def _add_bag_writing(p: argparse.ArgumentParser) -> None:
    """The options of every command that writes a bag: its storage, and the progress bar."""
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: Any) -> None:
    bag = subparsers.add_parser("bag", help="make rosbags: synthetic, from dataset folders")
    bag_sub = bag.add_subparsers(dest="bag_command", metavar="BAG_COMMAND")
    bag.set_defaults(func=lambda args: (bag.print_help(), EXIT_INPUT)[1])

    synth = bag_sub.add_parser(
        "synth", description=SYNTH_DESCRIPTION,
        help="a synthetic night street (thermal mono16 + dark RGB, ground truth, homography)")
    add_out(synth, OUT_HELP)
    synth.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    synth.add_argument("--rgb-rate", type=float, default=30.0, help="Hz (default 30)")
    synth.add_argument("--thermal-rate", type=float, default=30.0,
                       help="Hz (default 30; 9 for export-restricted cameras)")  # fmt: skip
    synth.add_argument("--rgb-size", type=_size, default=(1280, 720), help="WxH (1280x720)")
    synth.add_argument("--thermal-size", type=_size, default=(640, 512), help="WxH (640x512)")
    synth.add_argument("--pedestrians", type=int, default=4, help="walkers (default 4)")
    synth.add_argument("--seed", type=int, default=0)
    _add_bag_writing(synth)
    synth.set_defaults(func=cmd_synth)

    folders = bag_sub.add_parser(
        "from-folders", description=FROM_FOLDERS_DESCRIPTION,
        help="a bag from registered IR/visible dataset folders (RoadScene, TNO, MSRS, LLVIP)")
    add_pair_inputs(folders, "infrared images folder", "visible images folder")
    add_out(folders, OUT_HELP)
    folders.add_argument("--rate", type=float, default=10.0, help="pairs per second (10)")
    folders.add_argument("--annotations", type=Path, help="VOC .xml folder (LLVIP)")
    folders.add_argument("--limit", type=int, help="only the first N pairs (by name), N >= 1")
    folders.add_argument("--homography", type=Path,
                         help="3x3 thermal->visible homography (.npy, .json, .yaml or text) for "
                         "pairs that are not registered; default: registered (identity)")
    _add_bag_writing(folders)
    folders.set_defaults(func=cmd_from_folders)

    info = bag_sub.add_parser(
        "info", description=INFO_DESCRIPTION,
        help="topics, types, counts and duration of a bag, and how to play it")
    info.add_argument("bag", type=Path)
    info.set_defaults(func=cmd_info)


def _check_bag_out(out: Path, inputs: list[Path | None]) -> None:
    """OutputError before any work: the bag folder must be new, writable, apart from inputs."""
    from mmdrfuse_ros.outputs import OutputError, prepare_output

    if out.exists() or out.is_symlink():
        raise OutputError(f"--out {out} exists already; remove it or choose another --out")
    prepare_output(out, inputs, "dir")


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
        _check_bag_out(args.out, [])
    except ValueError as exc:  # OutputError is a ValueError
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

    from mmdrfuse_ros.bag.folders import FolderError, write_folder_bag
    from mmdrfuse_ros.bag.io import BagError
    from mmdrfuse_ros.datasets import DatasetError, find_pairs, read_homography

    try:
        if args.limit is not None and args.limit < 1:
            raise FolderError(f"--limit must be at least 1 pair, got {args.limit}")
        _check_bag_out(args.out, [args.ir, args.vis, args.annotations])
        homography = read_homography(args.homography) if args.homography else None
        pairs = find_pairs(args.ir, args.vis, args.annotations).pairs
        total = len(pairs) if args.limit is None else min(len(pairs), args.limit)
        with tqdm(total=total, unit="pair", desc="from-folders", disable=args.no_progress) as bar:
            summary = write_folder_bag(
                args.ir, args.vis, args.out, rate_hz=args.rate, annotations=args.annotations,
                storage=args.storage, limit=args.limit, progress=bar.update,
                homography=homography,
            )  # fmt: skip
    except (DatasetError, BagError, ValueError) as exc:
        print(f"mmdrfuse bag from-folders: {exc}", file=sys.stderr)
        partial = isinstance(exc, FolderError) and exc.partial
        return EXIT_PARTIAL if partial else EXIT_INPUT
    print(summary.describe())
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from mmdrfuse_ros.bag import io
    from mmdrfuse_ros.bag import params as bag_params

    try:
        with io.BagReader(args.bag) as reader:
            print(f"bag:      {args.bag}")
            if reader.truncated:
                print(f"TRUNCATED: {reader.truncated}")
            print(f"duration: {(reader.end_ns - reader.start_ns) / 1e9:.3f} s")
            print(f"start:    {reader.start_ns / 1e9:.9f} (unix seconds)")
            print(f"messages: {reader.message_count}")
            for topic, info in sorted(reader.topics.items()):
                print(f"  {topic:40s} {info.msgtype:32s} {info.count}")
            truncated = reader.truncated
    except io.BagError as exc:
        print(f"mmdrfuse bag info: {exc}", file=sys.stderr)
        return EXIT_INPUT
    try:
        node_params = bag_params.read_params(args.bag)
    except ValueError as exc:
        node_params = None
        print(f"warning: {exc}; the nodes would refuse it", file=sys.stderr)
    if node_params is not None:
        print(f"params:   {bag_params.params_path(args.bag)} "
              f"(fusion_node: {', '.join(node_params)})")
    else:
        print("params:   none (no mmdrfuse_params.yaml in the bag folder: the nodes run with "
              "their defaults, without the bag's homography)")
    if node_params is None or "homography" not in node_params:
        print(f"no homography for this bag: find one from its frames with `mmdrfuse calibrate "
              f"--bag {args.bag} --out {bag_params.params_path(args.bag)}`")
    print("play it into nodes started by launch:")
    for line in bag_params.play_commands(args.bag):
        print(f"  {line}")
    if truncated:
        print("note: ros2 bag play may need `ros2 bag reindex` first for a truncated bag; "
              "mmdrfuse replay plays the readable part", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK
