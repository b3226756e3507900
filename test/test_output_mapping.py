"""The engine's output mapping (raw, per-image min-max, smoothed percentile stretch) and the
flicker measurement that chooses between them."""

from __future__ import annotations

import numpy as np
import pytest

from mmdrfuse_ros.fusion.output import (
    MIN_RANGE,
    OUTPUT_MAPPINGS,
    STILL_OUTPUT_MAPPING,
    VIDEO_OUTPUT_MAPPING,
    OutputMapper,
    map_output,
    stretch,
)
from mmdrfuse_ros.training.flicker import flicker, hot_object_frames


def ramp(lo: float = 0.2, hi: float = 0.8, shape: tuple[int, int] = (41, 51)) -> np.ndarray:
    return np.linspace(lo, hi, shape[0] * shape[1], dtype=np.float32).reshape(shape)


def test_defaults_are_known_mappings() -> None:
    assert STILL_OUTPUT_MAPPING in OUTPUT_MAPPINGS and VIDEO_OUTPUT_MAPPING in OUTPUT_MAPPINGS


def test_raw_only_clips() -> None:
    plane = np.array([[-0.2, 0.3], [0.7, 1.4]], np.float32)
    np.testing.assert_allclose(OutputMapper("raw")(plane), [[0.0, 0.3], [0.7, 1.0]], atol=1e-7)


def test_minmax_spans_the_full_range_like_the_authors_images() -> None:
    out = map_output(ramp(), "minmax")
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(1.0)
    # unclamped input (the published student's tanh goes below 0) is stretched too
    out = OutputMapper("minmax")(np.array([[-0.05, 0.4], [0.2, 0.84]], np.float32))
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(1.0)


def test_percentile_ignores_a_few_extreme_pixels() -> None:
    plane = ramp()
    plane[0, :5] = 1.0  # a hot object of 5 of 2000 pixels
    out = map_output(plane, "percentile", (1.0, 99.0))
    bulk = out[5:35]
    assert bulk.min() > 0.0 and bulk.max() < 1.0
    assert out[20, 25] == pytest.approx(0.5, abs=0.03)  # the middle of the ramp stays mid-grey


def test_flat_frames_stay_flat() -> None:
    for mode in OUTPUT_MAPPINGS:
        out = map_output(np.full((8, 8), 0.4, np.float32), mode)
        assert np.ptp(out) == 0.0 and np.isfinite(out).all()
    # a range under MIN_RANGE is not blown up to black and white
    near = stretch(np.array([0.5, 0.5 + MIN_RANGE / 4], np.float32), 0.5, 0.5 + MIN_RANGE / 4)
    assert 0.3 < near.min() <= near.max() < 0.7


def test_smoothed_bounds_move_gradually_and_reset() -> None:
    mapper = OutputMapper("percentile", (0.0, 100.0), smoothing=0.75)
    mapper(ramp(0.2, 0.6))
    assert mapper.bounds == pytest.approx((0.2, 0.6), abs=0.02)
    mapper(ramp(0.2, 1.0))
    assert mapper.bounds[1] == pytest.approx(0.75 * 0.6 + 0.25 * 1.0, abs=0.02)
    mapper.reset()
    assert mapper.bounds is None
    mapper(ramp(0.2, 1.0))
    assert mapper.bounds[1] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "gamma"}, "output_mapping must be one of"),
    ({"percentiles": (99.0, 1.0)}, "0 <= lo < hi <= 100"),
    ({"smoothing": 1.0}, r"smoothing must be in \[0, 1\)"),
])
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OutputMapper(**kwargs)


def test_hot_object_frames_cross_the_scene() -> None:
    ir = np.full((40, 60), 80, np.uint8)
    frames = hot_object_frames(ir, frames=9)
    assert not frames[0][1].any() and not frames[-1][1].any()
    assert frames[4][1][20, 30]  # the middle frame has the disc in the middle
    assert frames[4][0][20, 30] == 1.0 and frames[4][0][0, 0] == pytest.approx(80 / 255)


def test_flicker_is_zero_for_raw_and_positive_for_minmax() -> None:
    rng = np.random.default_rng(0)
    ir = (60 + 40 * rng.random((48, 64))).astype(np.uint8)
    vi = (30 + 60 * rng.random((48, 64))).astype(np.uint8)

    def net(t: np.ndarray, v: np.ndarray) -> np.ndarray:  # a "fusion" whose max is the object
        return 0.5 * t + 0.3 * v

    raw = flicker(net, ir, vi, OutputMapper("raw"), frames=10)
    minmax = flicker(net, ir, vi, OutputMapper("minmax"), frames=10)
    smooth = flicker(net, ir, vi, OutputMapper("percentile", smoothing=0.95), frames=10)
    assert raw == pytest.approx(0.0, abs=1e-4)
    assert minmax > 1.0  # the object entering changes every background pixel
    assert smooth < minmax


def test_the_engine_applies_its_output_mapping_and_resets_it() -> None:
    from mmdrfuse_ros.fusion import FusionEngine

    rng = np.random.default_rng(1)
    thermal = rng.integers(60, 120, (32, 40), dtype=np.uint8)
    visible = rng.integers(40, 90, (32, 40, 3), dtype=np.uint8)
    raw = FusionEngine(backend="torch", output_color="gray").fuse(thermal, visible)
    stretched = FusionEngine(backend="torch", output_color="gray",
                             output_mapping="minmax").fuse(thermal, visible)
    assert stretched.min() == 0 and stretched.max() == 255
    assert np.ptp(raw) < 255
    settings = {"backend": "torch", "output_mapping": "percentile", "output_smoothing": 0.9}
    video = FusionEngine(**settings)
    video.fuse(np.full_like(thermal, 250), visible)  # a hot frame moves the smoothed bounds
    video.reset()
    np.testing.assert_array_equal(video.fuse(thermal, visible),
                                  FusionEngine(**settings).fuse(thermal, visible))
    with pytest.raises(ValueError, match="output_mapping must be one of"):
        FusionEngine(output_mapping="gamma")
