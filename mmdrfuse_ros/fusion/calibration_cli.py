"""``mmdrfuse calibrate``: the thermal -> RGB homography from a recording, written as the fusion
node's params file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from ..cli_args import add_out
from ..datasets import DatasetError, read_homography
from ..outputs import OutputError, prepare_output, write_result
from .calibration import (
    MODELS,
    NODE_SECTION,
    Calibration,
    CalibrationError,
    CalibrationOptions,
    calibrate,
    params_text,
)

if TYPE_CHECKING:
    from ..bag.frame_pairs import FramePairs

DESCRIPTION = """\
Find the homography that maps thermal pixels into the RGB image from image content alone (no
calibration target): edge-orientation images of both cameras are matched by a global coarse
search over scale, shift and small rotations, then refined coarse to fine by enhanced
correlation, pair by pair; the pairs that agree are combined (median of the warped corners) and
refined jointly. Pairs come from a bag (--bag, synchronised by header stamp) or two folders of
same-named images (--ir/--vis), spread over the recording, near-duplicates skipped. Writes the
fusion node's params YAML (fusion_node: ros__parameters: homography), for --params-file or
`ros2 launch mmdrfuse_ros fusion.launch.py params_file:=OUT`. Exit codes: 0 written; 1 the
footage cannot be registered (unrelated or blank frames, too little structure: nothing written)
or a result could not be written; 2 bad arguments or inputs (nothing done).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..bag import io

    p = subparsers.add_parser("calibrate", help="find the thermal->RGB homography from footage",
                              description=DESCRIPTION)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", type=Path, help="rosbag2 folder or .mcap/.db3 file")
    source.add_argument("--ir", type=Path, help="thermal image folder (or one file)")
    p.add_argument("--vis", type=Path, help="RGB image folder (or one file), with --ir")
    p.add_argument("--thermal-topic", default=io.THERMAL_TOPIC,
                   help=f"with --bag (default {io.THERMAL_TOPIC})")
    p.add_argument("--rgb-topic", default=io.RGB_TOPIC, help=f"with --bag (default {io.RGB_TOPIC})")
    p.add_argument("--slop", type=float, default=0.02,
                   help="largest stamp difference (s) of a synchronised pair (default 0.02)")
    add_out(p, "params YAML to write (e.g. calibration.yaml)")
    p.add_argument("--frames", type=int, default=10,
                   help="pairs to use, spread over the recording (default 10)")
    p.add_argument("--model", choices=MODELS, default="homography",
                   help="warp to estimate (default homography)")
    p.add_argument("--init", type=Path,
                   help="start homography (.npy/.json/.yaml/text) instead of the global search")
    p.add_argument("--report", type=Path,
                   help="folder for before/after pictures, edges, per-pair residuals and JSON")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> str | None:
    if args.ir is not None and args.vis is None:
        return "--ir needs --vis (the RGB images of the same names)"
    if args.vis is not None and args.ir is None:
        return "--vis needs --ir"
    if args.frames < 1:
        return f"--frames must be at least 1, got {args.frames}"
    if args.slop <= 0:
        return f"--slop must be > 0 seconds, got {args.slop}"
    return None


def _check_outputs(args: argparse.Namespace) -> None:
    inputs = [args.bag, args.ir, args.vis, args.init]
    prepare_output(args.out, inputs, kind="file")
    if args.report is not None:
        prepare_output(args.report, inputs, kind="dir", flag="--report")


def _read_pairs(args: argparse.Namespace) -> FramePairs:
    from ..bag import frame_pairs

    if args.bag is not None:
        return frame_pairs.pairs_from_bag(args.bag, args.thermal_topic, args.rgb_topic,
                                          args.frames, args.slop)
    return frame_pairs.pairs_from_folders(args.ir, args.vis, args.frames)


def _summary(result: Calibration, used: int) -> str:
    h = result.homography / result.homography[2, 2]
    rows = "\n".join("  [" + ", ".join(f"{v: .6g}" for v in row) + "]" for row in h)
    inliers = sum(p.inlier for p in result.pairs)
    lines = [
        f"thermal {result.thermal_size[0]}x{result.thermal_size[1]} -> RGB "
        f"{result.rgb_size[0]}x{result.rgb_size[1]}, model {result.model}, {used} pair(s)",
        f"homography (thermal px -> RGB px):\n{rows}",
        f"quality: correlation {result.correlation:.3f}, {inliers} of {used} pair(s) agree "
        f"({result.inlier_fraction:.0%}), corner spread {result.spread_px:.2f} px",
    ]
    for pair in result.pairs:
        if pair.problem:
            lines.append(f"  left out {pair.name}: {pair.problem}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..bag.io import BagError
    from ..bag.params import check_params

    problem = _check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        _check_outputs(args)
        init = read_homography(args.init) if args.init is not None else None
        pairs = _read_pairs(args)
    except (OutputError, DatasetError, BagError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in pairs.notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        result = calibrate(pairs.thermals, pairs.rgbs, pairs.names,
                           CalibrationOptions(model=args.model), init=init)
    except (CalibrationError, ValueError) as exc:
        print(f"error: cannot calibrate: {exc}; nothing written", file=sys.stderr)
        return 1
    source = str(args.bag or f"{args.ir} + {args.vis}")
    text = params_text(result, source)
    check_params(yaml.safe_load(text)[NODE_SECTION]["ros__parameters"])  # as the node reads it
    print(_summary(result, len(pairs.names)))
    status = 0 if write_result(args.out, text, "params file") == args.out else 1
    if args.report is not None:
        status = max(status, _write_report(args, result, pairs, init))
    if status == 0:
        print(f"wrote {args.out}: ros2 launch mmdrfuse_ros fusion.launch.py "
              f"params_file:={args.out}")
    return status


def _write_report(args: argparse.Namespace, result: Calibration, pairs: FramePairs,
                  init: np.ndarray | None) -> int:
    from .calibration_report import write_report

    try:
        written = write_report(args.report, result, pairs.thermals, pairs.rgbs, init)
    except OSError as exc:
        print(f"error: report not written: {exc}", file=sys.stderr)
        return 1
    summary = {**result.to_dict(), "notes": pairs.notes}
    path = write_result(args.report / "calibration.json", json.dumps(summary, indent=2) + "\n",
                        "calibration summary")
    print("report: " + ", ".join(str(p) for p in [*written, path] if p))
    return 0 if path == args.report / "calibration.json" else 1
