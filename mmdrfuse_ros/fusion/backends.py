"""Backends that run the student network on two [0, 1] planes; all return float32 HxW in [0, 1].

* :class:`TorchBackend`: PyTorch, CUDA when available (fp16, channels-last, pinned host memory
  with non-blocking copies, ``inference_mode``), CPU otherwise.
* :class:`CpuFastBackend`: the same 113-parameter network without PyTorch's generic convolution.
  With numba installed it is one fused, parallel, vectorised kernel whose 113 weights are
  scalar arguments (so the compiler keeps them in registers); without numba it falls back to
  OpenCV ``filter2D`` (12 3x3 correlations). Both release the GIL while they compute, so a
  node's subscription callbacks keep running during a frame. ``ReflectionPad2d`` equals OpenCV's
  ``BORDER_REFLECT_101``, and OpenCV/numba compute correlation exactly as ``conv2d`` does.

Threads: :func:`apply_thread_budget` gives OpenCV and PyTorch one budget for the process; the
numba kernel takes the same number per call, and runs a serial build of itself on frames below
``parallel_min_pixels``: at camera cadence its sleeping workers take longer to wake up than a
small frame takes to compute (``benchmarks/bench_fusion.py --cadence`` measures it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from .model import Checkpoint, StudentNet
from .preprocess import jit_kernel

log = logging.getLogger("mmdrfuse_ros.fusion")

BACKENDS = ("auto", "torch", "cpu-fast")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")
_BAND_ROWS = 32  # rows per work item of the fused kernel: its feature rows stay in L1/L2


class Backend(Protocol):
    name: str
    device: str

    def run(self, ir01: np.ndarray, y01: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def cuda_available() -> bool:
    return torch.cuda.is_available()


def check_backend_device(backend: str, device: str | None) -> None:
    """ValueError naming what is wrong with this backend/device combination on this machine."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device is not None and not _DEVICE_PATTERN.match(str(device)):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    wants_cuda = device is not None and str(device).startswith("cuda")
    if wants_cuda and not cuda_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    if backend == "cpu-fast" and wants_cuda:
        raise ValueError(
            "backend 'cpu-fast' runs on the CPU; use backend 'torch' (or auto) for CUDA"
        )


def apply_thread_budget(threads: int) -> None:
    """Give OpenCV and PyTorch (CPU) at most ``threads`` threads; 0 leaves their defaults.

    Both settings are process-wide: the last engine built in a process sets them.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads == 0:
        return
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


def create_backend(
    backend: str, device: str | None, checkpoint: Checkpoint, *, fp16: bool = False,
    channels_last: bool = True, threads: int = 0, parallel_min_pixels: int = 0,
) -> Backend:
    """Resolve ``auto`` and build the backend; ValueError names what is wrong."""
    check_backend_device(backend, device)
    wants_cuda = device is not None and str(device).startswith("cuda")
    if backend == "auto":
        if device in (None, "auto"):
            backend = "torch" if cuda_available() else "cpu-fast"
        else:
            backend = "torch" if wants_cuda else "cpu-fast"
    if backend == "cpu-fast":
        return CpuFastBackend(checkpoint, threads=threads, parallel_min_pixels=parallel_min_pixels)
    if device in (None, "auto"):
        device = "cuda" if cuda_available() else "cpu"
    return TorchBackend(checkpoint, device, fp16=fp16, channels_last=channels_last)


class TorchBackend:
    """The reference implementation; on CUDA the deployment path for GPUs."""

    name = "torch"

    def __init__(
        self, checkpoint: Checkpoint, device: str = "cpu", *, fp16: bool = False,
        channels_last: bool = True,
    ) -> None:
        try:
            self._device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"invalid device {device!r}: {exc}") from None
        self.is_cuda = self._device.type == "cuda"
        if fp16 and not self.is_cuda:
            log.warning("fp16 is only used on CUDA; running fp32 on %s", self._device)
        self.fp16 = bool(fp16 and self.is_cuda)
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.memory_format = (
            torch.channels_last if (channels_last and self.is_cuda) else torch.contiguous_format
        )
        self.model: StudentNet | None = checkpoint.build().to(self._device, self.dtype)
        self.model = self.model.to(memory_format=self.memory_format)
        self._host_in: torch.Tensor | None = None  # pinned staging buffers, reused per size
        self._host_out: torch.Tensor | None = None
        self._stream = torch.cuda.Stream(self._device) if self.is_cuda else None

    @property
    def device(self) -> str:
        if self.is_cuda:
            index = self._device.index if self._device.index is not None else 0
            return f"cuda:{index}"
        return "cpu"

    def _staging(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._host_in is None or self._host_in.shape[-2:] != (h, w):
            self._host_in = torch.empty((1, 2, h, w), dtype=torch.float32, pin_memory=True)
            self._host_out = torch.empty((h, w), dtype=torch.float32, pin_memory=True)
        return self._host_in, self._host_out

    def run(self, ir01: np.ndarray, y01: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("backend is closed")
        h, w = ir01.shape
        with torch.inference_mode():
            if not self.is_cuda:
                x = torch.from_numpy(np.stack((ir01, y01))[None])
                out = self.model(x)[0, 0]
                return out.clamp_(0.0, 1.0).numpy()
            host_in, host_out = self._staging(h, w)
            host_in[0, 0].numpy()[...] = ir01
            host_in[0, 1].numpy()[...] = y01
            with torch.cuda.stream(self._stream):
                x = host_in.to(self._device, non_blocking=True).to(self.dtype)
                x = x.contiguous(memory_format=self.memory_format)
                out = self.model(x)[0, 0].clamp_(0.0, 1.0).float()
                host_out.copy_(out, non_blocking=True)
            self._stream.synchronize()
            return host_out.numpy().copy()

    def close(self) -> None:
        self.model = None
        self._host_in = self._host_out = None
        if self.is_cuda:
            torch.cuda.synchronize(self._device)
            torch.cuda.empty_cache()


class CpuFastBackend:
    """Student network on the CPU without PyTorch convolution (numba kernel, or OpenCV)."""

    name = "cpu-fast"
    device = "cpu"

    def __init__(
        self, checkpoint: Checkpoint, *, kernel: str = "auto", threads: int = 0,
        parallel_min_pixels: int = 0,
    ) -> None:
        sd = {k: v.numpy().astype(np.float32) for k, v in checkpoint.state_dict.items()}
        self.w1, self.b1 = sd["conv1.1.weight"], sd["conv1.1.bias"]
        self.w2, self.b2 = sd["conv2.1.weight"], sd["conv2.1.bias"]
        # float32 scalars, not Python floats: those would make numba compute in float64,
        # at half the vector width (measured: 2x slower).
        self._scalars = tuple(
            np.concatenate([self.w1.ravel(), self.b1, self.w2.ravel(), self.b2]).astype(np.float32)
        )
        if kernel not in ("auto", "numba", "opencv"):
            raise ValueError(f"kernel must be auto, numba or opencv, got {kernel!r}")
        if threads < 0 or parallel_min_pixels < 0:
            raise ValueError("threads and parallel_min_pixels must be >= 0")
        self.threads = int(threads)
        self.parallel_min_pixels = int(parallel_min_pixels)
        self._numba = self._serial = None
        if kernel in ("auto", "numba"):
            self._numba = fused_kernel()
            if self._numba is None and kernel == "numba":
                raise ValueError("kernel 'numba' requested but numba is not installed")
            if self._numba is not None and (self.threads == 1 or self.parallel_min_pixels):
                self._serial = fused_kernel(parallel=False)
        self.kernel = "numba" if self._numba is not None else "opencv"

    def run(self, ir01: np.ndarray, y01: np.ndarray) -> np.ndarray:
        if self._numba:
            exponent = self._run_numba(ir01, y01)
        else:
            exponent = cv2.max(self._run_opencv(ir01, y01), 0.0)
            cv2.multiply(exponent, -2.0, dst=exponent)
        return _positive_tanh(exponent)

    def _pick_kernel(self, pixels: int) -> Any:
        """The serial kernel for one thread or a small frame, else the parallel one with the
        thread budget (numba's thread count is per calling thread: set on every call)."""
        if self._serial is not None and (self.threads == 1 or pixels < self.parallel_min_pixels):
            return self._serial
        if self.threads > 1:
            import numba

            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        return self._numba

    def _run_numba(self, ir01: np.ndarray, y01: np.ndarray) -> np.ndarray:
        """-2 max(pre, 0) of the output layer's pre-activation (the exponent of its tanh)."""
        pad = cv2.BORDER_REFLECT_101
        irp = cv2.copyMakeBorder(np.ascontiguousarray(ir01, np.float32), 1, 1, 1, 1, pad)
        yp = cv2.copyMakeBorder(np.ascontiguousarray(y01, np.float32), 1, 1, 1, 1, pad)
        out = np.empty(ir01.shape, np.float32)
        self._pick_kernel(out.size)(irp, yp, out, *self._scalars)
        return out

    def _run_opencv(self, ir01: np.ndarray, y01: np.ndarray) -> np.ndarray:
        """The output layer's pre-activation."""
        pad = cv2.BORDER_REFLECT_101
        planes = (np.asarray(ir01, np.float32), np.asarray(y01, np.float32))
        out = np.full(planes[0].shape, self.b2[0], np.float32)
        for o in range(4):
            feature = cv2.filter2D(planes[0], -1, self.w1[o, 0], delta=float(self.b1[o]),
                                   borderType=pad)
            feature += cv2.filter2D(planes[1], -1, self.w1[o, 1], borderType=pad)
            np.maximum(feature, 0.0, out=feature)
            out += cv2.filter2D(feature, -1, self.w2[0, o], borderType=pad)
        return out

    def close(self) -> None:
        pass


def _positive_tanh(exponent: np.ndarray) -> np.ndarray:
    """clip(tanh(x), 0, 1) = tanh(max(x, 0)) = (1 - e)/(1 + e) with e = exp(-2 max(x, 0)), from
    ``exponent`` = -2 max(x, 0) (overwritten). OpenCV's vectorised exp makes this several times
    faster than ``np.tanh``; the quotient is one numba pass where numba is installed."""
    e = cv2.exp(exponent, dst=exponent)
    quotient = jit_kernel(_tanh_quotient)
    if quotient is not None:
        out = np.empty_like(e)
        quotient(e.reshape(-1), out.reshape(-1))
        return out
    out = cv2.subtract(1.0, e)
    e += np.float32(1.0)
    return cv2.divide(out, e, dst=out)


def _tanh_quotient(e: Any, out: Any) -> None:  # pragma: no cover (compiled by numba)
    """out = (1 - e) / (1 + e) over flat float32 arrays."""
    for i in range(e.size):
        out[i] = (np.float32(1.0) - e[i]) / (np.float32(1.0) + e[i])



# --- the fused numba kernel ---------------------------------------------------------------
#
# The kernel source is generated (72 + 4 + 36 + 1 weight arguments, every tap unrolled) because
# numba cannot prove that weights read from an array do not alias the output, and then will not
# keep them in registers or vectorise. It is written to a cache directory and imported from
# there so that numba's on-disk cache (``cache=True``) makes every run after the first start
# in well under a second instead of compiling for several seconds.

_kernel_lock = threading.Lock()
_kernels: dict[bool, Any] = {}  # parallel? -> the compiled kernel, or None without numba


def _kernel_source(band: int = _BAND_ROWS, parallel: bool = True) -> str:
    w1 = [f"w1_{i}" for i in range(72)]
    b1 = [f"b1_{i}" for i in range(4)]
    w2 = [f"w2_{i}" for i in range(36)]
    lines = [
        '"""Generated by mmdrfuse_ros.fusion.backends: fused student. Do not edit."""',
        "import numba as nb",
        "import numpy as np",
        "",
        "",
        f"@nb.njit(parallel={parallel}, fastmath=True, cache=True, nogil=True)",
        f"def student_exponent(irp, yp, out, {', '.join(w1 + b1 + w2)}, b2_0):",
        "    # irp, yp: reflect-padded (H+2, W+2) planes; out: (H, W) -2 max(pre-tanh, 0).",
        "    H = out.shape[0]",
        "    W = out.shape[1]",
        f"    for band in {'nb.prange' if parallel else 'range'}((H + {band - 1}) // {band}):",
        f"        r0 = band * {band}",
        f"        n = min(H, r0 + {band}) - r0",
        "        fb = np.empty((4, n + 2, W + 2), np.float32)  # ReLU features + 1-px reflect ring",
        "        for j in range(n + 2):",
        "            r = r0 - 1 + j",
        "            if r < 0:",
        "                r = 1",
        "            if r > H - 1:",
        "                r = H - 2",
    ]
    for k in range(3):
        lines.append(f"            i{k} = irp[r + {k}]")
        lines.append(f"            v{k} = yp[r + {k}]")
    for o in range(4):
        lines.append(f"            f{o} = fb[{o}, j]")
    lines.append("            for x in range(W):")
    for o in range(4):
        terms = [f"b1_{o}"] + [
            f"w1_{((o * 2 + c) * 3 + dy) * 3 + dx} * {src}{dy}[x + {dx}]"
            for c, src in enumerate("iv") for dy in range(3) for dx in range(3)
        ]
        lines.append(f"                a{o} = " + " + ".join(terms))
        lines.append(f"                f{o}[x + 1] = a{o} if a{o} > 0.0 else 0.0")
    for o in range(4):
        lines.append(f"            f{o}[0] = f{o}[2]")
        lines.append(f"            f{o}[W + 1] = f{o}[W - 1]")
    lines.append("        for j in range(n):")
    lines.append("            orow = out[r0 + j]")
    for c in range(4):
        for dy in range(3):
            lines.append(f"            g{c}{dy} = fb[{c}, j + {dy}]")
    lines.append("            for x in range(W):")
    terms = ["b2_0"] + [
        f"w2_{(c * 3 + dy) * 3 + dx} * g{c}{dy}[x + {dx}]"
        for c in range(4) for dy in range(3) for dx in range(3)
    ]
    lines.append("                v = " + " + ".join(terms))
    lines.append("                orow[x] = min(np.float32(-2.0) * v, np.float32(0.0))")
    return "\n".join(lines) + "\n"


def _cache_dir() -> Path:
    """``$MMDRFUSE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmdrfuse_ros`` (default ``~/.cache``)."""
    if os.environ.get("MMDRFUSE_CACHE_DIR"):
        return Path(os.environ["MMDRFUSE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmdrfuse_ros"


def fused_kernel(parallel: bool = True) -> Any:
    """The compiled numba kernel (``parallel=False``: its serial build), or None when numba is
    not installed (OpenCV path then)."""
    with _kernel_lock:
        if parallel in _kernels:
            return _kernels[parallel]
        if importlib.util.find_spec("numba") is None:
            log.info("numba not installed: cpu-fast uses the OpenCV filter2D path")
            _kernels[parallel] = None
            return None
        source = _kernel_source(parallel=parallel)
        try:
            kernel = _load_cached_kernel(source)
        except Exception as exc:  # read-only or stale cache: compile in memory, no disk cache
            log.info("kernel cache unusable (%s: %s); compiling in memory", type(exc).__name__, exc)
            namespace: dict[str, Any] = {}
            exec(compile(source.replace("cache=True", "cache=False"), "<student_kernel>", "exec"),
                 namespace)
            kernel = namespace["student_exponent"]
            _smoke_test(kernel)
        _kernels[parallel] = kernel
        return kernel


def _load_cached_kernel(source: str) -> Any:
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    directory = _cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"student_kernel_{digest}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        tmp.replace(path)
    name = f"_mmdrfuse_student_kernel_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cache re-imports the module by name when loading
    spec.loader.exec_module(module)
    _smoke_test(module.student_exponent)
    return module.student_exponent


def _smoke_test(kernel: Any) -> None:
    """Compile (or load from cache) now, not on the first camera frame."""
    plane = np.zeros((6, 6), np.float32)
    kernel(plane, plane, np.empty((4, 4), np.float32), *np.zeros(113, np.float32))
