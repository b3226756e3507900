"""``mmdrfuse fuse``: fuse one pair of files, or two folders of same-named pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..cli_args import add_out, add_pair_inputs, add_weights
from ..datasets import (
    IMAGE_EXTENSIONS,
    DatasetError,
    find_layout,
    find_pairs,
    read_homography,
    read_thermal_image,
    read_visible_image,
)
from ..outputs import OutputError, prepare_output
from .backends import BACKENDS
from .model import CheckpointError
from .output import DEFAULT_PERCENTILES, OUTPUT_MAPPINGS, STILL_OUTPUT_MAPPING
from .preprocess import THERMAL_NORMS, FusionInputError

FUSE_DESCRIPTION = """\
Fuse one thermal/visible pair, or every same-named pair of two folders (RoadScene/TNO ir/vi,
LLVIP infrared/visible; a dataset root with such sub-folders works too). Bad pairs (unreadable,
truncated, sizes that differ) are reported by name; every good pair is still written. --out is
refused before any work when it is, lies inside or contains an input, or cannot be written.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fuse", help="fuse thermal/visible image pairs into PNGs",
                              description=FUSE_DESCRIPTION)
    add_pair_inputs(p, "thermal image file or folder", "visible image file or folder (omit if "
                    "--ir is a dataset root with ir/vi or infrared/visible)", vis_required=False)
    add_out(p, "output folder (or .png file for one pair)")
    add_weights(p)
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--device", help="cpu, cuda or cuda:N (torch backend)")
    p.add_argument("--fp16", action="store_true", help="half precision on CUDA")
    p.add_argument("--thermal-norm", choices=THERMAL_NORMS, default="auto",
                   help="auto: 8-bit as is, 16-bit by percentile clip (default)")
    p.add_argument("--percentiles", type=float, nargs=2, default=(1.0, 99.0), metavar=("LO", "HI"))
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"),
                   help="fixed window in raw thermal units (with --thermal-norm fixed)")
    p.add_argument("--homography", type=Path,
                   help="3x3 thermal->visible homography: .npy, .json or whitespace text")
    p.add_argument("--color", choices=("bgr", "gray"), default="bgr",
                   help="colour output (visible chroma restored) or grey")
    p.add_argument("--output-mapping", choices=OUTPUT_MAPPINGS, default=STILL_OUTPUT_MAPPING,
                   help="fused luma -> image: raw network output, per-image min-max (default, "
                   "as the MMDRFuse authors save theirs) or a percentile stretch")
    p.add_argument("--output-percentiles", type=float, nargs=2, default=DEFAULT_PERCENTILES,
                   metavar=("LO", "HI"), help="bounds of --output-mapping percentile")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def load_homography(path: Path) -> np.ndarray:
    """A 3x3 matrix from .npy, .json/.yaml (nested or flat list, or an object naming it) or
    text; ValueError saying what is wrong otherwise (``datasets.read_homography``)."""
    return read_homography(path)


Job = tuple[str, Path, Path, Path]


def _resolve_jobs(args: argparse.Namespace) -> tuple[list[Job], list[str]]:
    """(name, thermal, visible, output) for each pair, and the errors found while pairing.

    OutputError when ``--out`` is unusable or would overwrite or mix with the inputs; that is
    checked before any pair is read."""
    ir, vis, out = args.ir, args.vis, args.out
    if vis is None:
        layout = find_layout(ir) if ir.is_dir() else None
        if layout is None:
            return [], [f"--vis is required unless --ir is a dataset root with ir/vi or "
                        f"infrared/visible sub-folders ({ir})"]
        ir, vis = layout
    if ir.is_file() or vis.is_file() or not ir.exists() or not vis.exists():
        missing = [str(p) for p in (ir, vis) if not p.exists()]
        if missing:
            return [], [f"not found: {', '.join(missing)}"]
        if ir.is_dir() != vis.is_dir():
            return [], ["--ir and --vis must both be files or both be folders"]
        single = out.suffix.lower() in IMAGE_EXTENSIONS
        target = out if single else out / f"{ir.stem}.png"
        prepare_output(out, [ir, vis], "file" if single else "dir", targets=[target])
        return [(ir.stem, ir, vis, target)], []
    if out.suffix.lower() in IMAGE_EXTENSIONS:
        return [], [f"--out must be a folder when fusing folders (got {out})"]
    prepare_output(out, [ir, vis], "dir")
    try:
        listing = find_pairs(ir, vis)
    except DatasetError as exc:
        return [], [str(exc)]
    errors = [f"{name}: no visible image in {vis}" for name in listing.only_ir]
    errors += [f"{name}: no thermal image in {ir}" for name in listing.only_vis]
    jobs = [(p.name, p.ir, p.vis, out / f"{p.name}.png") for p in listing.pairs]
    return jobs, errors


def run(args: argparse.Namespace) -> int:
    from .engine import FusionEngine  # heavy import only when the command runs

    try:
        jobs, errors = _resolve_jobs(args)
        homography = load_homography(args.homography) if args.homography else None
        engine = FusionEngine(
            backend=args.backend, device=args.device, weights=args.weights, fp16=args.fp16,
            thermal_norm=args.thermal_norm, thermal_percentiles=tuple(args.percentiles),
            thermal_window=tuple(args.window) if args.window else None,
            thermal_smoothing=0.0,  # separate files are not a video: no temporal smoothing
            homography=homography, output_color=args.color,
            output_mapping=args.output_mapping,
            output_percentiles=tuple(args.output_percentiles),
        )
    except (CheckpointError, OutputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = 0
    for name, thermal_path, visible_path, target in tqdm(
        jobs, desc="fusing", unit="pair", disable=args.quiet or len(jobs) < 2
    ):
        try:
            thermal = read_thermal_image(thermal_path)
            visible = read_visible_image(visible_path)
            if args.homography is None and thermal.shape[:2] != visible.shape[:2]:
                raise ValueError(
                    f"sizes differ (thermal {thermal.shape[:2]}, visible {visible.shape[:2]}); "
                    "pass --homography to register them"
                )
            fused = engine.fuse(thermal, visible)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), fused):
                raise ValueError(f"cannot write {target}")
            written += 1
        except (ValueError, FusionInputError) as exc:
            errors.append(f"{name}: {exc}")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    print(f"fused {written} of {len(jobs)} pair(s) into {args.out}"
          + (f"; {len(errors)} problem(s) reported above" if errors else ""))
    return 1 if errors else 0
