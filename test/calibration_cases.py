"""Calibration test cases with known answers: random rigs, synthetic scenes rendered through them,
and real aligned LLVIP pairs warped through them (test_calibration.py)."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from mmdrfuse_ros.bag.scene import NightScene, SynthConfig
from mmdrfuse_ros.fusion.geometry import default_homography

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
LLVIP = SHARED_DATA / "llvip"
ROADSCENE = SHARED_DATA / "roadscene"

#: (thermal (w, h), RGB (w, h)) combinations the cases cycle through
SIZES = [((640, 512), (1280, 720)), ((320, 256), (640, 480)),
         ((640, 480), (1024, 768)), ((384, 288), (1280, 720))]  # fmt: skip
#: the real cases' sizes (LLVIP's 1280x1024 world is seen by both cameras)
REAL_SIZES = [((640, 512), (1280, 720)), ((320, 256), (640, 480)), ((640, 480), (1024, 768))]


def _about_centre(t_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    c = np.array([[1.0, 0.0, -t_wh[0] / 2], [0.0, 1.0, -t_wh[1] / 2], [0.0, 0.0, 1.0]])
    return c, np.linalg.inv(c)


def synthetic_rig(rng: np.random.Generator, t_wh: tuple[int, int],
                  v_wh: tuple[int, int]) -> np.ndarray:
    """A random rig around the default one: scale 0.7-1.4, rotation up to 5 degrees, shift up
    to 15 % of the RGB width (10 % of its height), mild perspective."""
    c, ci = _about_centre(t_wh)
    s, a = rng.uniform(0.7, 1.4), np.deg2rad(rng.uniform(-5.0, 5.0))
    r = np.array([[s * np.cos(a), -s * np.sin(a), 0.0], [s * np.sin(a), s * np.cos(a), 0.0],
                  [0.0, 0.0, 1.0]])  # fmt: skip
    p = np.eye(3)
    p[2, 0] = rng.uniform(-1, 1) * 0.04 / t_wh[0]
    p[2, 1] = rng.uniform(-1, 1) * 0.04 / t_wh[1]
    t = np.eye(3)
    t[0, 2] = rng.uniform(-0.15, 0.15) * v_wh[0]
    t[1, 2] = rng.uniform(-0.1, 0.1) * v_wh[1]
    h = t @ default_homography(t_wh, v_wh) @ ci @ r @ p @ c
    return h / h[2, 2]


def synthetic_pairs(t_wh: tuple[int, int], v_wh: tuple[int, int], h: np.ndarray | None,
                    seed: int, times: list[float]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(mono16 thermal frames, bgr8 RGB frames) of the night scene seen through rig ``h``."""
    cfg = SynthConfig(rgb_size=v_wh, thermal_size=t_wh, seed=seed,
                      homography=None if h is None else tuple(float(v) for v in h.ravel()))
    scene, noise = NightScene(cfg), np.random.default_rng(seed)
    thermals = [scene.render_thermal(t, noise)[0] for t in times]
    rgbs = [scene.render_rgb(t, noise)[0] for t in times]
    return thermals, rgbs


def synthetic_case(case: int, pairs: int = 3) -> tuple[np.ndarray, tuple[int, int],
                                                       list[np.ndarray], list[np.ndarray]]:
    """Case ``case``: (true homography, thermal (w, h), thermal frames, RGB frames)."""
    t_wh, v_wh = SIZES[case % len(SIZES)]
    h = synthetic_rig(np.random.default_rng(1000 + case), t_wh, v_wh)
    thermals, rgbs = synthetic_pairs(t_wh, v_wh, h, case, list(np.linspace(0.0, 9.0, pairs)))
    return h, t_wh, thermals, rgbs


# ----------------------------------------------------------------------------- real frames
def real_rig(rng: np.random.Generator, world_wh: tuple[int, int], t_wh: tuple[int, int],
             v_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(world -> RGB, thermal -> RGB) of a random rig over an aligned pair's common "world"
    view: the RGB camera sees its central 90 %; the thermal one is scaled (0.7-1.4 around a
    view 3/4 of the RGB width, aspect +-5 %), turned up to 5 degrees, shifted up to 15 % of
    the RGB width, with mild perspective."""
    w, hh = world_wh
    sx, sy = v_wh[0] / (0.9 * w), v_wh[1] / (0.9 * hh)
    g_v = np.array([[sx, 0.0, -0.05 * w * sx], [0.0, sy, -0.05 * hh * sy], [0.0, 0.0, 1.0]])
    s = min((0.75 * v_wh[0] / t_wh[0]) * rng.uniform(0.7, 1.4), 0.98 * v_wh[0] / t_wh[0])
    a = np.deg2rad(rng.uniform(-5.0, 5.0))
    r = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    scale = np.diag([s, s * rng.uniform(0.95, 1.05), 1.0])
    p = np.eye(3)
    p[2, 0] = rng.uniform(-1, 1) * 0.05 / t_wh[0]
    p[2, 1] = rng.uniform(-1, 1) * 0.05 / t_wh[1]
    c, _ = _about_centre(t_wh)
    shift = rng.uniform(-0.15, 0.15, 2) * v_wh[0]
    t = np.array([[1.0, 0.0, v_wh[0] / 2 + shift[0]], [0.0, 1.0, v_wh[1] / 2 + shift[1] * 0.5],
                  [0.0, 0.0, 1.0]])  # fmt: skip
    h = t @ r @ scale @ c @ p
    return g_v, h / h[2, 2]


def warped_pair(ir_world: np.ndarray, vi_world: np.ndarray, g_v: np.ndarray, h: np.ndarray,
                t_wh: tuple[int, int], v_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(thermal, RGB) frames the rig (``g_v``, ``h``) records of an aligned world pair."""
    g_t = np.linalg.inv(h) @ g_v  # world -> thermal
    rgb = cv2.warpPerspective(vi_world, g_v, v_wh, flags=cv2.INTER_AREA if g_v[0, 0] < 1
                              else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    thermal = cv2.warpPerspective(ir_world, g_t, t_wh, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    return thermal, rgb


def llvip_names(scene: str) -> list[str]:
    """The sorted frame names (no suffix) of one LLVIP scene (the first two digits)."""
    return sorted(p.stem for part in ("labelled", "unlabelled")
                  for p in (LLVIP / part / "ir").glob(f"{scene}*.jpg"))  # fmt: skip


@functools.lru_cache(maxsize=64)
def llvip_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(grey infrared, BGR visible) of one aligned LLVIP pair (1280x1024)."""
    for part in ("labelled", "unlabelled"):
        ir = LLVIP / part / "ir" / f"{name}.jpg"
        if ir.is_file():
            return (cv2.imread(str(ir), cv2.IMREAD_GRAYSCALE),
                    cv2.imread(str(LLVIP / part / "vi" / f"{name}.jpg"), cv2.IMREAD_COLOR))
    raise FileNotFoundError(name)


def real_case(case: int, scene: str, pairs: int = 5
              ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int], list[np.ndarray],
                         list[np.ndarray]]:
    """Case ``case`` on LLVIP scene ``scene``: (true homography, thermal (w, h), RGB (w, h),
    thermal frames, RGB frames) of ``pairs`` frames spread over the scene."""
    rng = np.random.default_rng(case)
    names = llvip_names(scene)
    offset = int(rng.integers(len(names)))
    picks = [names[(offset + round(j * len(names) / pairs)) % len(names)] for j in range(pairs)]
    t_wh, v_wh = REAL_SIZES[case % len(REAL_SIZES)]
    g_v, h = real_rig(rng, (1280, 1024), t_wh, v_wh)
    frames = [warped_pair(*llvip_pair(n), g_v, h, t_wh, v_wh) for n in picks]
    return h, t_wh, v_wh, [f[0] for f in frames], [f[1] for f in frames]
