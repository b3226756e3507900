"""A YOLO-style detector from an ONNX file: letterbox, run, decode, NMS, map back to pixels.

Output layouts (``yolox``, ``v5``, ``v8``; see :mod:`.yolo_layouts`) are placed from the output
shape against the input size, or forced with ``layout``. Each family has its own input:

* ``yolox``: the image at the TOP-LEFT of a canvas filled with 114, BGR, values 0-255;
* ``v5``/``v8``: the image centred between 114 bars, RGB, values 0-1.

Boxes are mapped back through the letterbox (padding, then scale) to the original image. Runs
with onnxruntime when it is installed (CUDA provider first when available), else OpenCV's DNN
module. Everything that can be wrong with a model file is found when the detector is built, by a
test inference on a blank frame: a node then refuses the model instead of failing every frame.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .base import PERSON_CLASS_ID, Detection, as_bgr8, nms
from .yolo_layouts import LAYOUTS, decode, place_layout

RUNTIMES = ("auto", "onnxruntime", "opencv")
LETTERBOX_FILL = 114  # the grey YOLO trains its padding with
#: ONNX tensor element types a YOLO input/output may have (onnxruntime's names).
FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_ONNX_ELEM_NAMES = {1: "tensor(float)", 10: "tensor(float16)", 2: "tensor(uint8)",
                    3: "tensor(int8)", 6: "tensor(int32)", 7: "tensor(int64)",
                    11: "tensor(double)"}  # fmt: skip
DEFAULT_INPUT_SIZE = 640

__all__ = ["LAYOUTS", "RUNTIMES", "YoloOnnxDetector", "decode", "letterbox"]


def letterbox(image: np.ndarray, size: int | tuple[int, int], *, center: bool = True
              ) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio into ``size`` (side, or (H, W)), pad with 114.

    ``center``: pad evenly on both sides (YOLOv5/v8); else keep the image at the top-left and
    pad right and below (YOLOX, whose resize truncates the new size as ``int()`` does).
    Returns (image, scale, (pad_x, pad_y)).
    """
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = image.shape[:2]
    scale = min(out_h / h, out_w / w)
    if center:
        new_w, new_h = round(w * scale), round(h * scale)
    else:
        new_w, new_h = int(w * scale), int(h * scale)
    new_w, new_h = max(1, min(out_w, new_w)), max(1, min(out_h, new_h))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if center:
        left, top = round((out_w - new_w) / 2.0 - 0.1), round((out_h - new_h) / 2.0 - 0.1)
    else:
        left = top = 0
    out = cv2.copyMakeBorder(resized, top, out_h - new_h - top, left, out_w - new_w - left,
                             cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3)
    return out, scale, (float(left), float(top))


def _dims(shape: Any) -> list[int | None]:
    """A tensor shape with symbolic/unknown dimensions as None."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _onnx_file_signature(path: Path) -> tuple[list[tuple], list[tuple]] | None:
    """([(name, dims, type)] inputs, outputs) read with the onnx package; None without it."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # the runtime's own error says more
        return None
    initialisers = {t.name for t in graph.initializer}

    def info(values: Any) -> list[tuple]:
        return [(v.name, _dims([d.dim_value for d in v.type.tensor_type.shape.dim]),
                 _ONNX_ELEM_NAMES.get(v.type.tensor_type.elem_type,
                                      f"element type {v.type.tensor_type.elem_type}"))
                for v in values if v.name not in initialisers]

    return info(graph.input), info(graph.output)


class YoloOnnxDetector:
    """YOLOX / YOLOv5 / YOLOv8 from an ONNX file. ValueError names the file and the problem."""

    name = "onnx"
    fallback_reason: str | None = None

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
        intra_op_threads: int = 0,
    ) -> None:
        path = Path(model_path).expanduser()
        if layout not in LAYOUTS or runtime not in RUNTIMES:
            raise ValueError(f"layout must be in {LAYOUTS} and runtime in {RUNTIMES}")
        if int(intra_op_threads) < 0 or int(input_size) < 0:
            raise ValueError("intra_op_threads and input_size must be >= 0 (0 = default)")
        _check_file(path)
        self.model_path = path
        self.requested_layout = self.layout = layout
        self.score_threshold, self.nms_iou = float(score_threshold), float(nms_iou)
        self.classes = tuple(classes) if classes else None
        self.labels = labels or {PERSON_CLASS_ID: "person"}
        self.max_detections = int(max_detections)
        self.intra_op_threads = int(intra_op_threads)
        self._session: Any = None
        self._net: Any = None
        self.providers: list[str] = []
        self._open(path, runtime)
        self.runtime = "onnxruntime" if self._session is not None else "opencv"
        self.input_hw, self._input_dtype = self._check_signature(int(input_size))
        self.input_size = self.input_hw[1]
        self._probe()

    # -- loading and checking ----------------------------------------------------------
    def _open(self, path: Path, runtime: str) -> None:
        if runtime in ("auto", "onnxruntime"):
            try:
                import onnxruntime as ort
            except ImportError:
                if runtime == "onnxruntime":
                    raise ValueError("runtime 'onnxruntime' requested but not installed") from None
            else:
                self._session = self._ort_session(ort, path)
                return
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ValueError(f"OpenCV cannot load ONNX model {path}: {exc}") from None

    def _ort_session(self, ort: Any, path: Path) -> Any:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        options = ort.SessionOptions()
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for corrupt models
            raise ValueError(f"onnxruntime cannot load ONNX model {path} (is it an ONNX "
                             f"file?): {exc}") from None
        self.providers = list(session.get_providers())
        return session

    def _signature(self) -> tuple[list[tuple], list[tuple]] | None:
        if self._session is not None:
            return ([(i.name, _dims(i.shape), i.type) for i in self._session.get_inputs()],
                    [(o.name, _dims(o.shape), o.type) for o in self._session.get_outputs()])
        return _onnx_file_signature(self.model_path)

    def _check_signature(self, input_size: int) -> tuple[tuple[int, int], type]:
        """(input (H, W), input dtype); ValueError for inputs/outputs a YOLO cannot have."""
        where = f"ONNX model {self.model_path}"
        signature = self._signature()
        if signature is None:  # OpenCV without the onnx package: only the probe can tell
            side = input_size or DEFAULT_INPUT_SIZE
            self._input_name = ""
            return (side, side), np.float32
        inputs, outputs = signature
        if not inputs:
            raise ValueError(f"{where} has no inputs; a YOLO model takes one image [1, 3, H, W]")
        if not outputs:
            raise ValueError(f"{where} has no outputs")
        name, dims, kind = inputs[0]
        self._input_name = name
        if kind not in FLOAT_TYPES:
            raise ValueError(f"{where}: input {name!r} is {kind}; a YOLO input is float32 "
                             "(or float16) [1, 3, H, W]")
        if len(dims) != 4 or dims[0] not in (1, None) or dims[1] not in (3, None):
            shown = ["?" if d is None else d for d in dims]
            raise ValueError(f"{where}: input {name!r} has shape {shown}; a YOLO input is one "
                             "3-channel image [1, 3, H, W]")
        out_name, _, out_kind = outputs[0]
        if out_kind not in FLOAT_TYPES:
            raise ValueError(f"{where}: output {out_name!r} is {out_kind}, expected float")
        h, w = dims[2], dims[3]
        if input_size and h is not None and w is not None and (h, w) != (input_size,) * 2:
            raise ValueError(f"{where} takes a {h}x{w} input, but input_size is {input_size} "
                             "(0 = the model's own size)")
        side = input_size or DEFAULT_INPUT_SIZE
        return (h or side, w or side), FLOAT_TYPES[kind]

    def _probe(self) -> None:
        """A test inference on a blank frame: places the layout, proves the model runs."""
        where = f"ONNX model {self.model_path}"
        blank = np.full((*self.input_hw, 3), LETTERBOX_FILL, np.uint8)
        try:
            raw = self.infer(self._blob(blank))
        except Exception as exc:  # runtime errors of a model that loads but cannot run
            raise ValueError(f"{where}: a test inference on a blank "
                             f"{self.input_hw[1]}x{self.input_hw[0]} frame failed: {exc}") from None
        shape = tuple(np.shape(raw))
        try:
            if self.requested_layout == "auto":
                self.layout = place_layout(shape, self.input_hw)
            decode(raw, self.layout, self.score_threshold, self.classes, self.input_hw)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        self.detect(blank)

    # -- running -------------------------------------------------------------------------
    def _blob(self, boxed: np.ndarray) -> np.ndarray:
        if self.layout == "yolox":  # BGR, 0-255, CHW
            blob = np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32)
        else:  # RGB, [0, 1], CHW
            blob = cv2.dnn.blobFromImage(boxed, 1.0 / 255.0, swapRB=True)
        return blob.astype(self._input_dtype, copy=False)

    def infer(self, blob: np.ndarray) -> np.ndarray:
        """The raw network output for a [1, 3, H, W] blob."""
        if self._session is not None:
            return np.asarray(self._session.run(None, {self._input_name: blob})[0])
        self._net.setInput(blob)
        return self._net.forward()

    def describe(self) -> dict[str, Any]:
        """What runs, for logs and diagnostics."""
        return {"backend": self.name, "model_path": str(self.model_path), "layout": self.layout,
                "input": f"{self.input_hw[1]}x{self.input_hw[0]}", "runtime": self.runtime,
                "providers": self.providers, "intra_op_threads": self.intra_op_threads}

    def detect(self, image: np.ndarray, timings: dict[str, float] | None = None
               ) -> list[Detection]:
        """People in ``image``. ``timings``, when given, receives the seconds of each step, so
        that a node can show where a frame's time goes: ``preprocess`` (letterbox and input
        tensor), ``inference`` (the runtime) and ``decode`` (decoding, NMS, boxes mapped
        back)."""
        start = time.perf_counter()
        bgr = as_bgr8(image)
        h, w = bgr.shape[:2]
        boxed, scale, (pad_x, pad_y) = letterbox(bgr, self.input_hw,
                                                 center=self.layout != "yolox")
        blob = self._blob(boxed)
        prepared = time.perf_counter()
        raw = self.infer(blob)
        inferred = time.perf_counter()
        boxes, scores, class_ids = decode(raw, self.layout, self.score_threshold, self.classes,
                                          self.input_hw)
        keep = nms(boxes, scores, self.nms_iou, class_ids)[: self.max_detections]
        boxes = (boxes[keep] - [pad_x, pad_y, pad_x, pad_y]) / scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        found = [
            Detection(*map(float, b), score=float(s), class_id=int(c),
                      label=self.labels.get(int(c), str(int(c))))
            for b, s, c in zip(boxes, scores[keep], class_ids[keep], strict=True)
        ]
        if timings is not None:
            timings.update(preprocess=prepared - start, inference=inferred - prepared,
                           decode=time.perf_counter() - inferred)  # fmt: skip
        return found


def _check_file(path: Path) -> None:
    """Missing, a folder, or empty: say so before a runtime prints something cryptic."""
    if not path.exists():
        raise ValueError(f"ONNX model {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"ONNX model {str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"ONNX model {str(path)!r} is empty (0 bytes): an interrupted download? "
                         "fetch it again")
