"""Where the YOLOX model comes from: discovery, the detector users get, and the download.

Discovery order (first hit wins): an explicit ``model_path``; ``$MMDRFUSE_MODEL_DIR/
yolox_nano.onnx``; the user cache ``<cache>/models/yolox_nano.onnx``, where ``<cache>`` is the
package cache (``$MMDRFUSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmdrfuse_ros``, else
``~/.cache/mmdrfuse_ros``). ``mmdrfuse models fetch`` fills the cache from the YOLOX authors'
GitHub release. Without a model, ``backend: auto`` falls back to HOG and says why, loudly: HOG
misses far more pedestrians than YOLOX on real frames (docs/DETECTIONS.md).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import Detector

log = logging.getLogger("mmdrfuse_ros.detection")

MODEL_NAME = "yolox_nano.onnx"
#: YOLOX-Nano (COCO, Apache-2.0) as its authors publish it.
DEFAULT_MODEL_URL = ("https://github.com/Megvii-BaseDetection/YOLOX/releases/download/"
                     "0.1.1rc0/yolox_nano.onnx")
MODEL_DIR_ENV = "MMDRFUSE_MODEL_DIR"
#: input and output shapes of YOLOX-Nano: 416x416, 52^2 + 26^2 + 13^2 = 3549 cells, 5 + 80.
EXPECTED_INPUT = [1, 3, 416, 416]
EXPECTED_OUTPUT = [1, 3549, 85]
FETCH_COMMAND = "mmdrfuse models fetch"
DEFAULT_TIMEOUT_S = 15.0
#: a download larger than this is not YOLOX-Nano (3.6 MB): stop instead of filling the disk.
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024


class FetchError(RuntimeError):
    """The model could not be downloaded or the download is not the expected model."""


def model_cache_dir() -> Path:
    """``<package cache>/models``: where ``mmdrfuse models fetch`` puts the model."""
    from ..fusion.backends import _cache_dir  # the package's one cache rule (lazy: torch)

    return _cache_dir() / "models"


def search_locations() -> list[Path]:
    """The files discovery looks at, in order (after an explicit ``model_path``)."""
    places = []
    if os.environ.get(MODEL_DIR_ENV):
        places.append(Path(os.environ[MODEL_DIR_ENV]).expanduser() / MODEL_NAME)
    places.append(model_cache_dir() / MODEL_NAME)
    return places


def find_model(model_path: str | Path = "") -> Path | None:
    """The YOLOX model to use: ``model_path`` when given (existing or not: the detector says
    what is wrong with it), else the first of :func:`search_locations` that is a file."""
    if str(model_path or "").strip():
        return Path(str(model_path)).expanduser()
    return next((p for p in search_locations() if p.is_file()), None)


def _not_found() -> str:
    looked = ", ".join(str(p) for p in search_locations())
    return f"no YOLOX model found (model_path is empty; looked in {looked})"


def missing_model_reason() -> str:
    """Why ``auto`` fell back to HOG, with the command that fixes it."""
    return (f"{_not_found()}: using the HOG fallback detector, which misses far more "
            f"pedestrians than YOLOX on real frames. Get YOLOX-Nano with `{FETCH_COMMAND}` (or set "
            f"model_path or ${MODEL_DIR_ENV})")


# --- the detector users get ------------------------------------------------------------------

def _accepted(cls: type) -> set[str]:
    return set(inspect.signature(cls).parameters)


def _split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(HOG kwargs, ONNX kwargs) of one parameter set; ValueError for a name neither takes."""
    from .hog import HogPeopleDetector
    from .yolo_onnx import YoloOnnxDetector

    hog_names, onnx_names = _accepted(HogPeopleDetector), _accepted(YoloOnnxDetector)
    unknown = sorted(set(params) - hog_names - onnx_names)
    if unknown:
        raise ValueError(f"unknown detector parameter(s) {unknown}; HOG takes "
                         f"{sorted(hog_names)}, ONNX takes {sorted(onnx_names - {'model_path'})}")
    return ({k: v for k, v in params.items() if k in hog_names},
            {k: v for k, v in params.items() if k in onnx_names})


def resolve_detector(backend: str = "auto", model_path: str | Path = "", **params: Any
                     ) -> tuple[Detector, str | None]:
    """(detector, fallback reason or None) for a backend name.

    ``hog`` and ``onnx`` build what they name. ``yolox`` uses the discovered YOLOX model (and its
    layout) or raises. ``auto`` uses YOLOX when a model is found, else HOG with the reason
    (logged as a warning). A model that was asked for by ``model_path`` and is unusable is an
    error, never a silent fallback; a discovered one that is unusable falls back with its error
    in the reason. Parameters of the other backend are ignored.
    """
    from .hog import HogPeopleDetector
    from .yolo_onnx import YoloOnnxDetector

    hog_kw, onnx_kw = _split_params(params)
    if backend in ("hog", "onnx"):  # one backend asked for: a parameter it lacks is a mistake
        extra = sorted(set(params) - set(hog_kw if backend == "hog" else onnx_kw))
        if extra:
            raise ValueError(f"the {backend} backend takes no parameter(s) {extra}")
    if backend == "hog":
        return HogPeopleDetector(**hog_kw), None
    if backend == "onnx":
        if not str(model_path or "").strip():
            raise ValueError("the onnx backend needs model_path (a YOLOX/YOLOv5/YOLOv8 .onnx "
                             "file)")
        return YoloOnnxDetector(model_path, **onnx_kw), None
    if backend not in ("yolox", "auto"):
        from . import BACKENDS

        raise ValueError(f"detector backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "yolox" and onnx_kw.get("layout", "auto") == "auto":
        onnx_kw["layout"] = "yolox"
    path = find_model(model_path)
    if path is None and backend == "yolox":
        raise ValueError(f"{_not_found()}; get YOLOX-Nano with `{FETCH_COMMAND}`")
    if path is None:
        return _fallback(HogPeopleDetector(**hog_kw), missing_model_reason())
    try:
        return YoloOnnxDetector(path, **onnx_kw), None
    except ValueError as exc:
        if str(model_path or "").strip() or backend == "yolox":
            raise
        reason = (f"the discovered YOLOX model is unusable ({exc}): using the HOG fallback "
                  f"detector; fetch it again with `{FETCH_COMMAND}`")
        return _fallback(HogPeopleDetector(**hog_kw), reason)


def _fallback(detector: Any, reason: str) -> tuple[Detector, str]:
    log.warning("%s", reason)
    detector.fallback_reason = reason
    return detector, reason


# --- checking and downloading --------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    path: Path
    sha256: str
    size: int
    input_shape: list[Any]
    output_shape: list[Any]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_model(path: Path, expect_input: list[int] | None = None,
                  expect_output: list[int] | None = None) -> ModelInfo:
    """Load ``path`` in onnxruntime and read its shapes; ValueError if it does not load or its
    shapes differ from the expected ones."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{path}: missing or empty")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if not inputs or not outputs:
        raise ValueError(f"{path}: the model has no inputs or no outputs")
    info = ModelInfo(path, sha256_of(path), path.stat().st_size, list(inputs[0].shape),
                     list(outputs[0].shape))
    for what, got, want in (("input", info.input_shape, expect_input),
                            ("output", info.output_shape, expect_output)):
        if want is not None and got != want:
            raise ValueError(f"{path}: {what} shape {got}, expected {want} (YOLOX-Nano)")
    return info


def _download(url: str, handle: Any, timeout: float, dest: Path,
              progress: Callable[[int, int | None], None] | None) -> int:
    """Stream ``url`` into ``handle``; the byte count. FetchError for network problems."""
    request = urllib.request.Request(url, headers={"User-Agent": "mmdrfuse_ros"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            done = 0
            while block := response.read(1 << 16):
                done += len(block)
                if done > MAX_DOWNLOAD_BYTES:
                    raise FetchError(f"{url} sent more than {MAX_DOWNLOAD_BYTES >> 20} MiB: "
                                     "that is not YOLOX-Nano")
                handle.write(block)
                if progress:
                    progress(done, total_n)
            return done
    except urllib.error.HTTPError as exc:
        raise FetchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(
            f"cannot download {url}: {reason}. Offline? Copy {MODEL_NAME} by hand into "
            f"{dest} (or ${MODEL_DIR_ENV}), or pass model_path"
        ) from None


def fetch_model(url: str = DEFAULT_MODEL_URL, dest_dir: Path | None = None,
                timeout: float = DEFAULT_TIMEOUT_S, sha256: str | None = None,
                progress: Callable[[int, int | None], None] | None = None) -> ModelInfo:
    """Download the model into ``dest_dir`` (default: the cache) atomically and check it.

    The file only appears under its name once it is complete, loads in onnxruntime with the
    YOLOX-Nano shapes and (when given) has the expected sha256; FetchError otherwise, with the
    partial download removed.
    """
    dest = Path(dest_dir) if dest_dir else model_cache_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest, prefix=f".{MODEL_NAME}.", suffix=".part")
    except OSError as exc:
        raise FetchError(f"cannot write into {dest}: {exc}") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            _download(url, handle, timeout, dest, progress)
        try:
            info = inspect_model(tmp, EXPECTED_INPUT, EXPECTED_OUTPUT)
        except ValueError as exc:
            raise FetchError(f"{url} did not give YOLOX-Nano: "
                             f"{str(exc).replace(str(tmp), 'the download')}") from None
        if sha256 and info.sha256 != sha256.lower():
            raise FetchError(f"{url}: sha256 {info.sha256}, expected {sha256}")
        target = dest / MODEL_NAME
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model is not a secret
        os.replace(tmp, target)
        return ModelInfo(target, info.sha256, info.size, info.input_shape, info.output_shape)
    finally:
        tmp.unlink(missing_ok=True)
