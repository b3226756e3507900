"""Time the detectors without ROS and print a Markdown table (per frame, best and median).

    python benchmarks/bench_detection.py [--repeat 5] [--threads 0]

HOG on the synthetic night street (the replay demo's scene) at 640x360 and 1280x720, with the
default downscale to 640 px wide and without it (recall on the scene's ground truth shows what
the downscale costs); the YOLO path (letterbox, onnxruntime, decode, NMS) on a 640x640 model
built here that returns a fixed YOLOv8-sized output [1, 84, 8400], so the numbers are the
pipeline's overhead around a real network, not a network's own speed. CPU time is reported too:
on a shared machine it is the fairer figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout, installed or not
from mmdrfuse_ros.bag.synth import NightScene, SynthConfig
from mmdrfuse_ros.detection import Detection, create_detector
from mmdrfuse_ros.detection.yolo_onnx import decode


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) in ms."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return min(wall), statistics.median(wall), min(cpu)


def recall(detections: list[Detection], boxes: list, iou_min: float = 0.5) -> tuple[int, int]:
    """(ground-truth boxes matched at IoU >= iou_min, ground-truth boxes)."""
    def iou(d: Detection, b) -> float:
        w = max(0.0, min(d.x2, b[2]) - max(d.x1, b[0]))
        h = max(0.0, min(d.y2, b[3]) - max(d.y1, b[1]))
        union = d.width * d.height + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    return sum(any(iou(d, b) >= iou_min for d in detections) for b in boxes), len(boxes)


def constant_model(path: Path, output: np.ndarray, size: int) -> str:
    """An ONNX graph images[1,3,size,size] -> output (+ 0 x mean(images), so it reads its input)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(output.astype(np.float32), "const"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["const", "nothing"], ["output0"])]
    graph = helper.make_graph(
        nodes, "bench_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def yolov8_like_output(rng: np.random.Generator, n: int = 8400, classes: int = 80) -> np.ndarray:
    """[1, 4 + C, N]: mostly background, 30 confident people in 10 clusters of 3 duplicates."""
    out = np.zeros((4 + classes, n), np.float32)
    out[0:2] = rng.uniform(0, 640, (2, n))
    out[2:4] = rng.uniform(8, 200, (2, n))
    out[4:] = rng.uniform(0, 0.05, (classes, n))
    for k in range(10):
        cols = slice(3 * k, 3 * k + 3)
        out[0:4, cols] = np.array([[40 + 60 * k], [300], [40], [120]]) + rng.normal(0, 2, (4, 3))
        out[4, cols] = [0.9, 0.8, 0.7]
    return out[None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="OpenCV threads (0: OpenCV's default, as in the node)")
    args = parser.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for size in ((640, 360), (1280, 720)):
        scene = NightScene(SynthConfig(rgb_size=size, pedestrians=4))
        frames = [scene.render_rgb(t, np.random.default_rng(1)) for t in (1.0, 3.0, 5.0, 7.0)]
        for max_width in sorted({640, size[0]}):
            detector = create_detector("hog", max_width=max_width)
            found = [recall(detector.detect(img), boxes) for img, boxes, _ in frames]
            best, median, cpu = timed(lambda d=detector, f=frames[0][0]: d.detect(f), args.repeat)
            hits, total = map(sum, zip(*found, strict=True))
            rows.append((f"hog {size[0]}x{size[1]}, max_width {max_width}", best, median, cpu,
                         f"{hits}/{total} people at IoU 0.5"))

    output = yolov8_like_output(rng)
    best, median, cpu = timed(lambda: decode(output), args.repeat * 4)
    rows.append(("yolo decode [1, 84, 8400] (numpy)", best, median, cpu, ""))
    with tempfile.TemporaryDirectory() as tmp:
        model = constant_model(Path(tmp) / "v8.onnx", output, 640)
        image = frames[0][0]  # 1280x720
        for runtime in ("onnxruntime", "opencv"):
            try:
                detector = create_detector("onnx", model_path=model, runtime=runtime)
            except ValueError as exc:
                rows.append((f"yolo pipeline ({runtime})", float("nan"), float("nan"),
                             float("nan"), f"unavailable: {exc}"))
                continue
            n = len(detector.detect(image))
            best, median, cpu = timed(lambda d=detector: d.detect(image), args.repeat * 4)
            rows.append((f"yolo pipeline 1280x720 -> 640 ({runtime}, constant net)", best,
                         median, cpu, f"{n} boxes after NMS (10 expected)"))

    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads\n")
    print("| what | best ms | median ms | CPU ms | note |\n|---|---:|---:|---:|---|")
    for name, best, median, cpu, note in rows:
        print(f"| {name} | {best:.1f} | {median:.1f} | {cpu:.1f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
