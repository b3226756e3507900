"""How long ``calibrate`` takes, and how close it lands, on 10 pairs of 640x512 thermal +
1280x720 RGB (the issue's budget: at most 10 s on 2 cores).

Scenes: the synthetic street (``bag/scene.py``) through random rigs, whose homography is
known exactly, and, when ``../shared/data/llvip`` is there, real LLVIP night frames warped by
random rigs (their truth is the warp on top of the dataset's own registration, which is itself
off by a few pixels: see docs/CALIBRATION.md). Prints seconds per calibration (median and
worst of the runs) and the corner error (RGB px) of each run.

    python benchmarks/bench_calibrate.py [--runs 3] [--pairs 10] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmdrfuse_ros.bag.scene import NightScene, SynthConfig  # noqa: E402
from mmdrfuse_ros.fusion.calibration import (  # noqa: E402
    CalibrationOptions,
    calibrate,
    corner_error,
)
from mmdrfuse_ros.fusion.geometry import default_homography  # noqa: E402

THERMAL_WH, RGB_WH = (640, 512), (1280, 720)
LLVIP = ROOT.parent / "shared" / "data" / "llvip" / "unlabelled"


def random_rig(rng: np.random.Generator) -> np.ndarray:
    """Thermal -> RGB: the default rig scaled 0.7..1.4, rotated up to 5 deg, shifted up to
    15 % of the RGB width, with mild perspective."""
    tw, th = THERMAL_WH
    centre = np.array([[1, 0, -tw / 2], [0, 1, -th / 2], [0, 0, 1.0]])
    s, a = rng.uniform(0.7, 1.4), np.deg2rad(rng.uniform(-5, 5))
    turn = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0],
                     [0, 0, 1]])  # fmt: skip
    keystone = np.eye(3)
    keystone[2, :2] = rng.uniform(-1, 1, 2) * 0.04 / np.array(THERMAL_WH)
    shift = np.eye(3)
    shift[:2, 2] = rng.uniform(-0.15, 0.15, 2) * np.array([RGB_WH[0], 0.66 * RGB_WH[1]])
    h = shift @ default_homography(THERMAL_WH, RGB_WH) @ np.linalg.inv(centre) @ turn @ \
        keystone @ centre
    return h / h[2, 2]


def synthetic_case(rng: np.random.Generator, pairs: int, seed: int):
    h = random_rig(rng)
    scene = NightScene(SynthConfig(rgb_size=RGB_WH, thermal_size=THERMAL_WH, seed=seed,
                                   homography=tuple(h.ravel())))
    noise = np.random.default_rng(seed)
    times = np.linspace(0.0, 9.0, pairs)
    return ([scene.render_thermal(t, noise)[0] for t in times],
            [scene.render_rgb(t, noise)[0] for t in times], h)


def llvip_case(rng: np.random.Generator, pairs: int, same_modality: bool = False):
    """Real frames of one LLVIP scene (19): the RGB camera sees the frame resized to 1280x720,
    the thermal camera a random rig's view of the infrared frame (``same_modality``: of the
    visible frame, which takes the modality gap and the dataset's registration out)."""
    names = sorted(p.name for p in (LLVIP / "ir").glob("19*.jpg"))
    chosen = [names[i] for i in sorted(rng.choice(len(names), pairs, replace=False))]
    h = random_rig(rng)
    world_to_rgb = np.diag([RGB_WH[0] / 1280, RGB_WH[1] / 1024, 1.0])
    world_to_thermal = np.linalg.inv(h) @ world_to_rgb
    thermals, rgbs = [], []
    for name in chosen:
        ir = cv2.imread(str(LLVIP / ("vi" if same_modality else "ir") / name),
                        cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(LLVIP / "vi" / name))
        rgbs.append(cv2.resize(vis, RGB_WH, interpolation=cv2.INTER_AREA))
        thermals.append(cv2.warpPerspective(ir, world_to_thermal, THERMAL_WH,
                                            flags=cv2.INTER_AREA,
                                            borderMode=cv2.BORDER_REPLICATE))
    return thermals, rgbs, h


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="calibrations per scene kind")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="OpenCV threads (0: its default)")
    args = parser.parse_args()
    if args.threads:
        cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    kinds = [("synthetic street", lambda i: synthetic_case(rng, args.pairs, i))]
    if (LLVIP / "ir").is_dir():
        kinds.append(("LLVIP scene 19 (real)", lambda i: llvip_case(rng, args.pairs)))
        kinds.append(("LLVIP scene 19, visible frame for both cameras",
                      lambda i: llvip_case(rng, args.pairs, same_modality=True)))
    print(f"calibrate: {args.pairs} pairs of {THERMAL_WH[0]}x{THERMAL_WH[1]} thermal + "
          f"{RGB_WH[0]}x{RGB_WH[1]} RGB, cv2 threads {cv2.getNumThreads()}")
    print("| scenes | runs | s per calibration, median | worst | corner error px vs the "
          "truth, each run | vs the answer refined from the truth |")
    print("|---|---:|---:|---:|---|---|")
    for label, make in kinds:
        seconds, errors, from_truth = [], [], []
        for i in range(args.runs):
            thermals, rgbs, truth = make(i)
            start = time.perf_counter()
            result = calibrate(thermals, rgbs)
            seconds.append(time.perf_counter() - start)
            errors.append(corner_error(result.homography, truth, THERMAL_WH))
            near = calibrate(thermals, rgbs, init=truth).homography
            from_truth.append(corner_error(result.homography, near, THERMAL_WH))
        print(f"| {label} | {args.runs} | {statistics.median(seconds):.2f} | "
              f"{max(seconds):.2f} | {', '.join(f'{e:.2f}' for e in errors)} | "
              f"{', '.join(f'{e:.2f}' for e in from_truth)} |")
    if (LLVIP / "ir").is_dir():
        dataset_residual()
    return 0


def _gradient_magnitude(grey: np.ndarray) -> np.ndarray:
    grey = grey.astype(np.float32) / 255.0
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return cv2.GaussianBlur(cv2.magnitude(gx, gy), (0, 0), 2.0)


def dataset_residual(frames: int = 6) -> None:
    """How far LLVIP's own registration is from exact: the shift (px, 1280x1024) that two
    independent methods find between the unwarped infrared and visible frames of scene 19:
    ``calibrate`` (similarity, started at the identity) and OpenCV's ``findTransformECC``
    (euclidean) on blurred gradient magnitudes."""
    print("\nLLVIP scene 19, unwarped pairs: the dataset's own residual shift (x, y) in px")
    print("| frame | calibrate, similarity | findTransformECC on gradient magnitude |")
    print("|---|---|---|")
    names = sorted(p.name for p in (LLVIP / "ir").glob("19*.jpg"))
    for name in [names[i] for i in np.linspace(0, len(names) - 1, frames).astype(int)]:
        ir = cv2.imread(str(LLVIP / "ir" / name), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(LLVIP / "vi" / name), cv2.IMREAD_GRAYSCALE)
        ours = calibrate([ir], [vis], init=np.eye(3),
                         options=CalibrationOptions(model="similarity")).homography
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-6)
        _, warp = cv2.findTransformECC(_gradient_magnitude(ir), _gradient_magnitude(vis), warp,
                                       cv2.MOTION_EUCLIDEAN, criteria, None, 1)
        print(f"| {name[:-4]} | ({ours[0, 2]:+.2f}, {ours[1, 2]:+.2f}) | "
              f"({warp[0, 2]:+.2f}, {warp[1, 2]:+.2f}) |")


if __name__ == "__main__":
    sys.exit(main())
