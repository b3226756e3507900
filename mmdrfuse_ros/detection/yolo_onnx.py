"""A YOLO-style detector from an ONNX file: letterbox, run, decode, NMS, map back to pixels.

Output layouts (auto-detected from the output shape, or forced with ``layout``):

* ``v5``: ``[1, N, 5 + C]`` rows of ``cx, cy, w, h, objectness, class scores...``;
  score = objectness x best class score (YOLOv5, YOLOv7 exports).
* ``v8``: ``[1, 4 + C, N]`` columns of ``cx, cy, w, h, class scores...``; score = best class
  score (YOLOv8/YOLO11 exports, no objectness).

Boxes are in the letterboxed network input's pixels; they are mapped back through the
letterbox (scale, then padding) to the original image. Runs with onnxruntime when it is
installed (CUDA provider first when available), else OpenCV's DNN module.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .base import PERSON_CLASS_ID, Detection, as_bgr8, nms

LAYOUTS = ("auto", "v5", "v8")
RUNTIMES = ("auto", "onnxruntime", "opencv")
LETTERBOX_FILL = 114  # the grey YOLO trains its padding with


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio into ``size`` x ``size``, pad evenly; (img, scale, pad)."""
    h, w = image.shape[:2]
    scale = min(size / h, size / w)
    new_w, new_h = round(w * scale), round(h * scale)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_w) / 2.0, (size - new_h) / 2.0
    left, top = round(pad_x - 0.1), round(pad_y - 0.1)
    out = cv2.copyMakeBorder(resized, top, size - new_h - top, left, size - new_w - left,
                             cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3)
    return out, scale, (float(left), float(top))


def decode(
    output: np.ndarray,
    layout: str = "auto",
    score_threshold: float = 0.25,
    classes: tuple[int, ...] | None = (PERSON_CLASS_ID,),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes Nx4 x1y1x2y2, scores N, class ids N) in network-input pixels, before NMS."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3:
        if out.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got output shape {out.shape}")
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"cannot decode a YOLO output of shape {output.shape}")
    if layout == "auto":  # attributes are the short side; v8 needs 5+ of them (4 box + classes)
        layout = "v8" if 5 <= out.shape[0] < out.shape[1] else "v5"
    if layout == "v8":
        out = out.T
        if out.shape[1] < 5:
            raise ValueError(f"v8 output needs 4 + classes rows, got {out.shape[1]}")
        class_scores = out[:, 4:]
    elif layout == "v5":
        if out.shape[1] < 6:
            raise ValueError(f"v5 output needs 5 + classes columns, got {out.shape[1]}")
        class_scores = out[:, 5:] * out[:, 4:5]
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    class_ids = np.argmax(class_scores, axis=1)
    scores = class_scores[np.arange(len(out)), class_ids]
    keep = scores >= score_threshold
    if classes is not None:
        keep &= np.isin(class_ids, classes)
    cx, cy, w, h = out[keep, :4].T
    boxes = np.column_stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes, scores[keep], class_ids[keep]


class YoloOnnxDetector:
    name = "onnx"

    def __init__(
        self,
        model_path: str | Path,
        score_threshold: float = 0.25,
        nms_iou: float = 0.45,
        input_size: int = 0,
        classes: tuple[int, ...] | None = (PERSON_CLASS_ID,),
        layout: str = "auto",
        runtime: str = "auto",
        labels: dict[int, str] | None = None,
        max_detections: int = 300,
    ) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ValueError(f"ONNX model {str(path)!r} does not exist")
        if layout not in LAYOUTS or runtime not in RUNTIMES:
            raise ValueError(f"layout must be in {LAYOUTS} and runtime in {RUNTIMES}")
        self.model_path = path
        self.layout, self.score_threshold, self.nms_iou = layout, score_threshold, nms_iou
        self.classes = tuple(classes) if classes else None
        self.labels = labels or {PERSON_CLASS_ID: "person"}
        self.max_detections = max_detections
        self._session = self._net = None
        if runtime in ("auto", "onnxruntime"):
            try:
                import onnxruntime as ort
            except ImportError:
                if runtime == "onnxruntime":
                    raise ValueError("runtime 'onnxruntime' requested but not installed") from None
            else:
                self._session = self._ort_session(ort, path)
        if self._session is None:
            try:
                self._net = cv2.dnn.readNetFromONNX(str(path))
            except cv2.error as exc:
                raise ValueError(f"OpenCV cannot load ONNX model {path}: {exc}") from None
        self.runtime = "onnxruntime" if self._session is not None else "opencv"
        self.input_size = int(input_size) or self._model_input_size() or 640

    def _ort_session(self, ort, path: Path):
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for corrupt models
            raise ValueError(f"onnxruntime cannot load ONNX model {path}: {exc}") from None
        self._input_name = session.get_inputs()[0].name
        return session

    def _model_input_size(self) -> int | None:
        """The model's static input width, if it declares one ([1, 3, H, W])."""
        if self._session is not None:
            last = self._session.get_inputs()[0].shape[-1]
            return last if isinstance(last, int) and last > 0 else None
        try:  # OpenCV does not expose input shapes: read them from the file when onnx is here
            import onnx

            dims = onnx.load(str(self.model_path), load_external_data=False).graph.input[0]
            return int(dims.type.tensor_type.shape.dim[-1].dim_value) or None
        except Exception:  # no onnx package, or a symbolic size
            return None

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """The raw network output for a [1, 3, S, S] float32 blob."""
        if self._session is not None:
            return self._session.run(None, {self._input_name: blob})[0]
        self._net.setInput(blob)
        return self._net.forward()

    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = as_bgr8(image)
        h, w = bgr.shape[:2]
        boxed, scale, (pad_x, pad_y) = letterbox(bgr, self.input_size)
        blob = cv2.dnn.blobFromImage(boxed, 1.0 / 255.0, swapRB=True)  # RGB, NCHW, [0, 1]
        boxes, scores, class_ids = decode(self.infer(blob), self.layout, self.score_threshold,
                                          self.classes)
        keep = nms(boxes, scores, self.nms_iou, class_ids)[: self.max_detections]
        boxes = (boxes[keep] - [pad_x, pad_y, pad_x, pad_y]) / scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return [
            Detection(*map(float, b), score=float(s), class_id=int(c),
                      label=self.labels.get(int(c), str(int(c))))
            for b, s, c in zip(boxes, scores[keep], class_ids[keep], strict=True)
        ]
