"""A synthetic night street seen by a thermal and an RGB camera: the scene, without ROS.

Why synthetic: the demo and CI need data that needs nothing downloaded, that has exact ground
truth, and that shows what fusion is for: pedestrians in dark clothes that the RGB camera barely
sees (dark, noisy) but the thermal camera sees as warm upright silhouettes.

The scene lives in the RGB image plane. Thermal frames see it through the inverse of the
thermal -> RGB homography (:func:`mmdrfuse_ros.fusion.geometry.default_homography`), so fusing
with that homography registers them. The cameras run free: :meth:`NightScene.stamps` gives each
its own rate, phase and jitter, and the thermal camera now and then skips a frame, as real ones
do. :mod:`mmdrfuse_ros.bag.synth` writes the scene as a rosbag2.

Thermal counts are radiometric-like: ``counts = kelvin * 100`` (the 0.01 K "TLinear" output of
common LWIR cores), with optics blur, column fixed-pattern noise and temporal noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mmdrfuse_ros.fusion.geometry import (
    apply_homography,
    default_homography,
    validate_homography,
)

#: scene units: a pedestrian polygon set in units of body height, feet at (0, 0), y down.
_KELVIN = 273.15
_SUBPIXEL = 4  # cv2 drawing shift: 1/16 px vertices
_SUPERSAMPLE = 4  # silhouettes are drawn at 4x and area-averaged (anti-aliasing)


def counts(celsius: float | np.ndarray) -> float | np.ndarray:
    """Radiometric counts (0.01 K) of a temperature in degrees Celsius."""
    return (np.asarray(celsius) + _KELVIN) * 100.0


@dataclass(frozen=True)
class SynthConfig:
    """Everything the synthetic bag depends on; the same config and seed give the same bag."""

    duration_s: float = 10.0
    rgb_rate_hz: float = 30.0
    thermal_rate_hz: float = 30.0
    rgb_size: tuple[int, int] = (1280, 720)  # width, height
    thermal_size: tuple[int, int] = (640, 512)
    pedestrians: int = 4
    seed: int = 0
    #: first stamp (2025-01-01T00:00:00Z): a plausible wall-clock epoch, fixed for reproducibility
    start_ns: int = 1_735_689_600 * 1_000_000_000
    rgb_noise: float = 5.0  # temporal noise sigma, 8-bit levels (low light, high gain)
    thermal_noise: float = 4.0  # temporal noise sigma, counts (0.04 K)
    thermal_skip_prob: float = 0.01  # chance that the thermal camera skips a frame
    rgb_frame_id: str = "rgb_optical_frame"
    thermal_frame_id: str = "thermal_optical_frame"
    #: the rig's thermal -> RGB homography (9 values, row-major); None: ``default_homography``
    homography: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        checks = {
            "duration_s": self.duration_s > 0,
            "rgb_rate_hz": 0 < self.rgb_rate_hz <= 240,
            "thermal_rate_hz": 0 < self.thermal_rate_hz <= 240,
            "rgb_size": min(self.rgb_size) >= 64,
            "thermal_size": min(self.thermal_size) >= 64,
            "pedestrians": 0 <= self.pedestrians <= 50,
            "rgb_noise": self.rgb_noise >= 0,
            "thermal_noise": self.thermal_noise >= 0,
            "thermal_skip_prob": 0 <= self.thermal_skip_prob < 1,
        }
        validate_homography(self.homography)  # ValueError naming what is wrong
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "invalid synthetic bag settings: "
                + ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            )


# ----------------------------------------------------------------------------- pedestrians
def _limb(p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float) -> np.ndarray:
    """A tapered quad from p0 (width w0) to p1 (width w1)."""
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    d = b - a
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    return np.array([a + n * w0 / 2, b + n * w1 / 2, b - n * w1 / 2, a - n * w0 / 2])


def silhouette(phase: float, facing: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(body polygons, head polygon) of a walking person 1 unit tall, feet at the origin, y down.

    Upright, head about 1/8 of the height, shoulders about a quarter: the proportions OpenCV's HOG
    people detector was trained on. ``phase`` swings legs and arms; ``facing`` (+1/-1) leans the
    stride forward in the walking direction.
    """
    swing = 0.11 * math.sin(phase)
    arm = 0.07 * math.sin(phase + math.pi)
    lean = 0.015 * facing
    head = cv2.ellipse2Poly((0, 0), (1000, 1000), 0, 0, 360, 24).astype(float) / 1000.0
    head = head * np.array([0.058, 0.068]) + np.array([lean, -0.925])
    body = [
        np.array([[-0.03 + lean, -0.87], [0.03 + lean, -0.87], [0.035, -0.8], [-0.035, -0.8]]),
        np.array(
            [
                [-0.125 + lean, -0.835],
                [0.125 + lean, -0.835],
                [0.135, -0.78],
                [0.105, -0.5],
                [-0.105, -0.5],
                [-0.135, -0.78],
            ]
        ),
        _limb((-0.13 + lean, -0.8), (-0.15 - arm, -0.45), 0.06, 0.045),
        _limb((0.13 + lean, -0.8), (0.15 + arm, -0.45), 0.06, 0.045),
        _limb((-0.055, -0.52), (-0.05 + swing, -0.01), 0.09, 0.06),
        _limb((0.055, -0.52), (0.05 - swing, -0.01), 0.09, 0.06),
        _limb((-0.05 + swing, -0.03), (-0.05 + swing + 0.06 * facing, -0.005), 0.05, 0.04),
        _limb((0.05 - swing, -0.03), (0.05 - swing + 0.06 * facing, -0.005), 0.05, 0.04),
    ]
    # fmt: on
    return body, head


@dataclass
class Pedestrian:
    """One walker on the ground plane of the RGB image; positions in RGB pixels."""

    ident: int
    x0: float
    foot_y: float
    height: float
    speed: float  # px/s, signed
    phase0: float
    body_c: float  # clothing surface temperature, degrees C
    head_c: float
    albedo: tuple[float, float, float]  # BGR reflectance of the clothes

    def pose(self, t: float, width: int) -> tuple[float, float]:
        """(foot x, gait phase) at time t; walkers wrap around just outside the image."""
        span = 1.4 * width
        x = (self.x0 + self.speed * t + 0.2 * width) % span - 0.2 * width
        stride = 0.75 * self.height  # one gait cycle per stride length travelled
        return x, self.phase0 + 2 * math.pi * abs(self.speed) * t / stride

    def polygons(self, t: float, width: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(body polygons, head polygon) in RGB pixels at time t."""
        x, phase = self.pose(t, width)
        body, head = silhouette(phase, 1 if self.speed >= 0 else -1)
        scale = np.array([self.height, self.height])
        origin = np.array([x, self.foot_y])
        return [p * scale + origin for p in body], head * scale + origin


# ----------------------------------------------------------------------------- the scene
class NightScene:
    """Renders the street for both cameras at any time t (seconds from the start)."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.homography = (default_homography(config.thermal_size, config.rgb_size)
                           if config.homography is None
                           else validate_homography(config.homography))
        self.to_thermal = np.linalg.inv(self.homography)
        self.horizon = 0.42 * config.rgb_size[1]
        self._build_background()
        self.pedestrians = self._make_pedestrians()

    # -- static background, both modalities ------------------------------------------------
    def _build_background(self) -> None:
        cfg, rng = self.config, self.rng
        rw, rh = cfg.rgb_size
        yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float32)
        hz = self.horizon
        # RGB radiance, BGR, in 8-bit levels before noise; temperature in degrees C (RGB plane)
        rgb = np.empty((rh, rw, 3), np.float32)
        rgb[:] = (9.0, 5.0, 4.0)  # dark blue-black night sky
        temp = np.full((rh, rw), -18.0, np.float32)  # clear sky is cold
        ground = yy >= hz
        rgb[ground] = (7.0, 7.0, 7.5)
        temp[ground] = 9.0 + 3.0 * ((yy[ground] - hz) / (rh - hz))  # road keeps the day's heat
        # buildings along the horizon, with a few lit windows (warm in both modalities)
        x = -10.0
        while x < rw:
            bw = rng.uniform(0.06, 0.16) * rw
            top = hz - rng.uniform(0.08, 0.3) * rh
            x0, x1, y0, y1 = int(x), int(x + bw), int(top), int(hz)
            shade = rng.uniform(10, 16)
            rgb[max(y0, 0) : y1, max(x0, 0) : x1] = (shade, shade * 0.95, shade * 0.9)
            temp[max(y0, 0) : y1, max(x0, 0) : x1] = rng.uniform(6.0, 10.0)
            for _ in range(int(rng.integers(2, 7))):
                wx = rng.uniform(x0 + 4, max(x1 - 14, x0 + 5))
                wy = rng.uniform(y0 + 4, max(y1 - 14, y0 + 5))
                ww, wh = rng.uniform(0.006, 0.012) * rw, rng.uniform(0.01, 0.02) * rh
                sl = np.s_[max(int(wy), 0) : int(wy + wh), max(int(wx), 0) : int(wx + ww)]
                if rng.random() < 0.6:
                    rgb[sl] = (40, 110, 150)  # warm lit window
                temp[sl] = rng.uniform(12.0, 16.0)
            x += bw + rng.uniform(0, 0.03) * rw
        # kerb and lane markings
        kerb = int(hz + 0.3 * (rh - hz))
        rgb[kerb : kerb + 3] = (14, 14, 14)
        for lx in range(0, rw, int(0.12 * rw)):
            ly = int(hz + 0.12 * (rh - hz))
            cv2.rectangle(rgb, (lx, ly), (lx + int(0.05 * rw), ly + 3), (22, 22, 22), -1)
        # street lamps: poles, hot lamp heads, pools of light on the ground
        self.illumination = np.full((rh, rw), 0.07, np.float32)  # ambient light on pedestrians
        for lamp_x in (0.12 * rw, 0.72 * rw):
            top = int(hz - 0.35 * rh)
            foot = int(hz + 0.5 * (rh - hz))
            cv2.line(rgb, (int(lamp_x), top), (int(lamp_x), foot), (12, 12, 12), max(2, rw // 320))
            cv2.line(temp, (int(lamp_x), top), (int(lamp_x), foot), 8.0, max(2, rw // 320))
            cv2.circle(temp, (int(lamp_x), top), max(3, rw // 200), 70.0, -1)
            glow = np.exp(-(((xx - lamp_x) ** 2) + (yy - top) ** 2) / (2 * (0.025 * rw) ** 2))
            pool = np.exp(
                -((xx - lamp_x) ** 2) / (2 * (0.09 * rw) ** 2)
                - (yy - (hz + 0.55 * (rh - hz))) ** 2 / (2 * (0.22 * rh) ** 2)
            )
            rgb += glow[..., None] * np.array([120, 200, 245], np.float32)
            rgb += (pool * ground)[..., None] * np.array([18, 34, 46], np.float32)
            self.illumination += 0.75 * pool
        # a parked car: dark in RGB, warm bonnet in thermal (a warm object that is not a person)
        cx, cy = int(0.52 * rw), int(hz + 0.18 * (rh - hz))
        cw, ch = int(0.14 * rw), int(0.07 * rh)
        cv2.rectangle(rgb, (cx, cy), (cx + cw, cy + ch), (11, 10, 10), -1)
        cv2.rectangle(temp, (cx, cy), (cx + cw, cy + ch), 11.0, -1)
        cv2.rectangle(temp, (cx + cw * 2 // 3, cy + ch // 3), (cx + cw, cy + ch), 38.0, -1)
        # low-frequency texture: patched asphalt, damp patches, uneven walls (both modalities)
        texture = cv2.resize(
            rng.normal(0.0, 1.0, size=(rh // 16 + 1, rw // 16 + 1)).astype(np.float32),
            (rw, rh), interpolation=cv2.INTER_CUBIC,
        )  # fmt: skip
        rgb *= (1.0 + 0.12 * texture)[..., None]
        temp += 0.8 * texture
        # vignetting of a fast lens at night
        r2 = ((xx - rw / 2) / (rw / 2)) ** 2 + ((yy - rh / 2) / (rh / 2)) ** 2
        self.rgb_background = rgb * (1.0 - 0.25 * r2)[..., None]
        self.temp_background_rgbplane = temp
        tw, th = cfg.thermal_size
        thermal = cv2.warpPerspective(
            counts(temp).astype(np.float32), self.to_thermal, (tw, th),
            flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        self.thermal_background = thermal
        self.column_fpn = rng.normal(0.0, 5.0, size=(1, tw)).astype(np.float32)

    def _make_pedestrians(self) -> list[Pedestrian]:
        cfg, rng = self.config, self.rng
        rw, rh = cfg.rgb_size
        out = []
        mid = cfg.duration_s / 2
        for i in range(cfg.pedestrians):
            foot_y = rng.uniform(0.8, 0.97) * rh
            height = 0.76 * (foot_y - self.horizon)  # perspective: nearer is lower and taller
            direction = 1 if i % 2 == 0 else -1
            if i == 0:
                # lighter clothes, strolling in the left lamp's pool of light, mostly outside the
                # thermal field of view: the one pedestrian the RGB camera sees better
                speed, centre, albedo = 0.05 * height, 0.13 * rw, rng.uniform(0.35, 0.5, size=3)
            else:
                # slow walkers that cross the thermal field of view around the middle of the bag
                speed = rng.uniform(0.12, 0.22) * height
                centre = rng.uniform(0.3, 0.75) * rw
                albedo = rng.uniform(0.06, 0.22, size=3)
            out.append(
                Pedestrian(
                    ident=i,
                    x0=centre - direction * speed * mid,
                    foot_y=foot_y,
                    height=height,
                    speed=direction * speed,
                    phase0=rng.uniform(0, 2 * math.pi),
                    body_c=rng.uniform(22.0, 27.0),
                    head_c=rng.uniform(31.0, 33.5),
                    albedo=tuple(float(a) for a in albedo),
                )
            )
        out.sort(key=lambda p: p.foot_y)  # far to near: nearer people are drawn over farther ones
        return out

    # -- per-frame rendering ---------------------------------------------------------------
    @staticmethod
    def _draw_masks(
        polys: list[np.ndarray], head: np.ndarray, shape: tuple[int, int]
    ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
        """Anti-aliased body and head coverage in a local window; None if off-image."""
        pts = np.vstack([*polys, head])
        x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
        h, w = shape
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        # binary union at 4x resolution, then area-averaged: exact coverage with no seams
        # where the limbs' polygons meet (anti-aliased fillPoly would leave darker joints)
        ss = _SUPERSAMPLE
        masks = np.zeros((2, (cy1 - cy0) * ss, (cx1 - cx0) * ss), np.uint8)
        off = np.array([cx0, cy0])
        scale = ss * (1 << _SUBPIXEL)
        fixed = [np.round((p - off) * scale).astype(np.int32) for p in polys]
        for poly in fixed:
            cv2.fillPoly(masks[0], [poly], 255, cv2.LINE_8, _SUBPIXEL)
        head_fixed = np.round((head - off) * scale).astype(np.int32)
        cv2.fillPoly(masks[1], [head_fixed], 255, cv2.LINE_8, _SUBPIXEL)
        small = [cv2.resize(m, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_AREA) for m in masks]
        return np.stack(small).astype(np.float32) / 255.0, (cx0, cy0, cx1, cy1)

    @staticmethod
    def _box(
        polys: list[np.ndarray], head: np.ndarray, shape: tuple[int, int]
    ) -> list[float] | None:
        """Tight box of the silhouette clipped to the image; None when under 60 % is inside."""
        pts = np.vstack([*polys, head])
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        h, w = shape
        cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, w - 1.0), min(y1, h - 1.0)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        if (cx1 - cx0) * (cy1 - cy0) < 0.6 * (x1 - x0) * (y1 - y0):
            return None
        return [round(float(v), 2) for v in (cx0, cy0, cx1, cy1)]

    def render_rgb(self, t: float, noise_rng: np.random.Generator) -> tuple[np.ndarray, list, list]:
        """(bgr8 image, boxes, ids) at time t."""
        cfg = self.config
        rw, rh = cfg.rgb_size
        img = self.rgb_background.copy()
        boxes, ids = [], []
        for ped in self.pedestrians:
            polys, head = ped.polygons(t, rw)
            drawn = self._draw_masks(polys, head, (rh, rw))
            if drawn is None:
                continue
            masks, (x0, y0, x1, y1) = drawn
            cover = np.maximum(masks[0], masks[1])[..., None]
            light = self.illumination[y0:y1, x0:x1, None] * 255.0
            skin = np.array([0.25, 0.3, 0.38], np.float32)
            colour = np.where(masks[1][..., None] > masks[0][..., None], skin, ped.albedo)
            region = img[y0:y1, x0:x1]
            region *= 1.0 - cover
            region += cover * light * colour
            box = self._box(polys, head, (rh, rw))
            if box is not None:
                boxes.append(box)
                ids.append(ped.ident)
        # low-light sensor: shot noise grows with the signal, read noise floor, then 8 bits
        sigma = cfg.rgb_noise * (0.6 + 0.04 * np.sqrt(np.maximum(img, 0.0)))
        img += noise_rng.standard_normal(img.shape, dtype=np.float32) * sigma
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), boxes, ids

    def render_thermal(
        self, t: float, noise_rng: np.random.Generator
    ) -> tuple[np.ndarray, list, list]:
        """(mono16 counts image, boxes, ids) at time t; people projected through the homography."""
        cfg = self.config
        rw = cfg.rgb_size[0]
        tw, th = cfg.thermal_size
        img = self.thermal_background.copy()
        boxes, ids = [], []
        for ped in self.pedestrians:
            polys, head = ped.polygons(t, rw)
            polys = [apply_homography(self.to_thermal, p) for p in polys]
            head = apply_homography(self.to_thermal, head)
            drawn = self._draw_masks(polys, head, (th, tw))
            if drawn is None:
                continue
            masks, (x0, y0, x1, y1) = drawn
            region = img[y0:y1, x0:x1]
            region *= 1.0 - np.maximum(masks[0], masks[1])
            region += masks[0] * (1.0 - masks[1]) * counts(ped.body_c)
            region += masks[1] * counts(ped.head_c)
            box = self._box(polys, head, (th, tw))
            if box is not None:
                boxes.append(box)
                ids.append(ped.ident)
        img = cv2.GaussianBlur(img, (0, 0), 0.8)  # optics and detector MTF
        drift = 12.0 * math.sin(2 * math.pi * t / 7.0)  # slow offset drift between NUCs
        img += self.column_fpn + drift
        img += noise_rng.standard_normal(img.shape, dtype=np.float32) * cfg.thermal_noise
        return np.clip(img + 0.5, 0, 65535).astype(np.uint16), boxes, ids

    # -- camera timing ---------------------------------------------------------------------
    def stamps(self, rate_hz: float, phase_s: float, jitter_s: float, skip_prob: float):
        """Free-running camera stamps (ns from start): own period, phase and jitter, rare skips."""
        cfg = self.config
        period = 1.0 / rate_hz
        n = math.floor((cfg.duration_s - phase_s) / period) + 1
        t = phase_s + period * np.arange(max(n, 0))
        t = t + self.rng.normal(0.0, jitter_s, size=t.shape)
        keep = self.rng.random(t.shape) >= skip_prob
        t = np.sort(t[keep & (t >= 0) & (t < cfg.duration_s)])
        return (t * 1e9).astype(np.int64)
