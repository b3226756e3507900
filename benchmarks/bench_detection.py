"""Time the detectors without ROS and print a Markdown table (per frame, best and median).

    python benchmarks/bench_detection.py [--repeat 20] [--threads 2] [--model PATH]

YOLOX-Nano (letterbox, onnxruntime, decode, NMS) and OpenCV HOG on the same frames, at 640x512
and 1280x720, in one run: fused LLVIP night frames (the first labelled pairs of
../shared/data/llvip, resized, their boxes scaled with them) when that data exists, else the
synthetic night street. ``--threads`` caps OpenCV and onnxruntime (2 = the node's share of a
2-core machine). CPU time is reported too: on a shared machine it is the fairer figure. The last
column is the people found at IoU >= 0.5 over the frames, a sanity check that the timed
detector does its job, not an AP.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout, installed or not
from mmdrfuse_ros.detection import Detection, create_detector
from mmdrfuse_ros.detection.models import find_model
from mmdrfuse_ros.detection.yolo_layouts import decode

SHARED = Path(__file__).resolve().parents[2] / "shared"
LLVIP = SHARED / "data" / "llvip" / "labelled"
SHARED_MODEL = SHARED / "models" / "yolox_nano" / "yolox_nano.onnx"
SIZES = ((640, 512), (1280, 720))


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(best wall, median wall, median CPU) in ms."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return min(wall), statistics.median(wall), statistics.median(cpu)


def matched(detections: list[Detection], boxes: list, iou_min: float = 0.5) -> int:
    """Ground-truth boxes matched by some detection at IoU >= iou_min."""
    def iou(d: Detection, b) -> float:
        w = max(0.0, min(d.x2, b[2]) - max(d.x1, b[0]))
        h = max(0.0, min(d.y2, b[3]) - max(d.y1, b[1]))
        union = d.width * d.height + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    return sum(any(iou(d, b) >= iou_min for d in detections) for b in boxes)


def llvip_frames(count: int) -> list[tuple[np.ndarray, list]]:
    """(fused BGR frame at full size, person boxes) of the first labelled LLVIP pairs."""
    from mmdrfuse_ros.datasets import find_pairs, parse_voc, read_thermal_image
    from mmdrfuse_ros.datasets import read_visible_image as read_vis
    from mmdrfuse_ros.fusion import FusionEngine

    engine = FusionEngine(thermal_norm="auto", thermal_smoothing=0.0)
    pairs = find_pairs(LLVIP / "ir", LLVIP / "vi", LLVIP / "annotations").pairs[:count]
    return [(engine.fuse(read_thermal_image(p.ir), read_vis(p.vis)), parse_voc(p.annotation)[0])
            for p in pairs]


def synthetic_frames(count: int) -> list[tuple[np.ndarray, list]]:
    from mmdrfuse_ros.bag.synth import NightScene, SynthConfig

    scene = NightScene(SynthConfig(rgb_size=(1280, 1024), pedestrians=4))
    return [scene.render_rgb(1.0 + 2 * k, np.random.default_rng(1))[:2] for k in range(count)]


def resized(frames: list[tuple[np.ndarray, list]], size: tuple[int, int]
            ) -> list[tuple[np.ndarray, list]]:
    out = []
    for image, boxes in frames:
        sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        out.append((small, [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--frames", type=int, default=5, help="frames for the recall column")
    parser.add_argument("--threads", type=int, default=2,
                        help="OpenCV and onnxruntime threads (0: their defaults)")
    parser.add_argument("--model", default="", help="YOLOX ONNX model (default: "
                        "../shared/models/yolox_nano, else the discovered one)")
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    source = "LLVIP fused" if (LLVIP / "annotations").is_dir() else "synthetic"
    frames = llvip_frames(args.frames) if source == "LLVIP fused" else synthetic_frames(
        args.frames)
    model = args.model or (str(SHARED_MODEL) if SHARED_MODEL.is_file() else find_model())
    detectors: dict[str, object] = {"hog": create_detector("hog")}
    notes: list[str] = []
    if model:
        detectors["yolox-nano"] = create_detector("yolox", model_path=str(model),
                                                  intra_op_threads=args.threads)
    else:
        notes.append("YOLOX skipped: no model (run `mmdrfuse models fetch`)")
    rows = []
    for size in SIZES:
        sized = resized(frames, size)
        total = sum(len(b) for _, b in sized)
        for name, detector in detectors.items():
            hits = sum(matched(detector.detect(img), boxes) for img, boxes in sized)
            best, median, cpu = timed(lambda d=detector, f=sized[0][0]: d.detect(f), args.repeat)
            rows.append((f"{name} {size[0]}x{size[1]}", best, median, cpu,
                         f"{hits}/{total} people"))
    rng = np.random.default_rng(0)
    for shape, hw in (((1, 3549, 85), (416, 416)), ((1, 84, 8400), (640, 640))):
        output = rng.uniform(0, 0.05, shape).astype(np.float32)
        best, median, cpu = timed(lambda o=output, s=hw: decode(o, input_hw=s), args.repeat)
        rows.append((f"decode only {list(shape)} (numpy)", best, median, cpu, ""))

    threads = args.threads or "default"
    print(f"{source} frames; OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads, "
          f"onnxruntime intra_op_threads {threads}; model {model or 'none'}\n")
    print("| what | best ms | median ms | CPU ms | found at IoU 0.5 |\n|---|---:|---:|---:|---|")
    for name, best, median, cpu, note in rows:
        print(f"| {name} | {best:.1f} | {median:.1f} | {cpu:.1f} | {note} |")
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
