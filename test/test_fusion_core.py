"""The ROS-free fusion core: network, checkpoints, backends, preprocessing, registration, colour."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmdrfuse_ros.fusion import (
    STUDENT_PARAMETERS,
    CheckpointError,
    FusionEngine,
    FusionInputError,
    StudentNet,
    ThermalNormalizer,
    count_parameters,
    cuda_available,
    load_checkpoint,
    save_checkpoint,
)
from mmdrfuse_ros.fusion.backends import CpuFastBackend, TorchBackend
from mmdrfuse_ros.fusion.geometry import ThermalRegistration
from mmdrfuse_ros.fusion.model import STUDENT_SHAPES
from mmdrfuse_ros.resources import default_weights_path


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> tuple[StudentNet, str]:
    """A student with random, non-trivial weights: exercises every tap of the kernels."""
    torch.manual_seed(1)
    net = StudentNet()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.6, 0.6)
    path = tmp_path_factory.mktemp("w") / "random.pt"
    save_checkpoint(path, net, training={"method": "random, for tests"})
    return net, str(path)


def rng_planes(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((h, w), dtype=np.float32), rng.random((h, w), dtype=np.float32)


# --- network and checkpoints ----------------------------------------------------------------


def test_student_has_113_parameters_in_published_shapes():
    net = StudentNet()
    assert count_parameters(net) == STUDENT_PARAMETERS == 113
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == STUDENT_SHAPES
    features, out = net.forward_with_features(torch.rand(2, 2, 9, 11))
    assert features.shape == (2, 4, 9, 11) and out.shape == (2, 1, 9, 11)
    assert (features >= 0).all() and (out.abs() <= 1).all()


def test_published_bare_state_dict_loads_unchanged(tmp_path, random_weights):
    net, _ = random_weights
    path = tmp_path / "published.pth"
    torch.save(net.state_dict(), path)  # the layout of the paper's released checkpoint
    checkpoint = load_checkpoint(path)
    assert checkpoint.source_format == "published"
    x = torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(checkpoint.build()(x), net.eval()(x))


def test_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path, random_weights):
    net, _ = random_weights
    path = save_checkpoint(
        tmp_path / "ours.pt", net, training={"epochs": 3, "lr": 1e-4},
        data={"name": "synthetic"}, validation={"EN": 6.5, "SSIM": float("nan")},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.source_format == "mmdrfuse_ros.student"
    assert checkpoint.meta["parameters"] == 113
    assert checkpoint.meta["training"]["epochs"] == 3
    assert checkpoint.meta["validation"] == {"EN": 6.5, "SSIM": None}  # NaN is not stored

    for name, tensor in net.state_dict().items():
        assert torch.equal(checkpoint.state_dict[name], tensor)


def test_metadata_with_str_subclasses_still_loads_weights_only(tmp_path, random_weights):
    net, _ = random_weights
    path = save_checkpoint(tmp_path / "v.pt", net, training={"torch": torch.__version__})
    assert load_checkpoint(path).meta["training"]["torch"] == str(torch.__version__)


def test_module_prefix_of_ddp_checkpoints_is_accepted(tmp_path, random_weights):
    net, _ = random_weights
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ddp.pt")
    assert load_checkpoint(tmp_path / "ddp.pt").source_format == "published"


@pytest.mark.parametrize(
    "corrupt",
    ["garbage", "truncated", "wrong_shape", "nan", "inf", "missing_key", "extra_key", "not_dict"],
)
def test_bad_checkpoints_are_refused_with_a_clear_error(tmp_path, random_weights, corrupt):
    net, good = random_weights
    path = tmp_path / f"{corrupt}.pt"
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if corrupt == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif corrupt == "truncated":
        path.write_bytes(Path(good).read_bytes()[:300])
    else:
        if corrupt == "wrong_shape":
            state["conv1.1.weight"] = torch.zeros(8, 2, 3, 3)
        elif corrupt == "nan":
            state["conv2.1.weight"][0, 0, 1, 1] = float("nan")
        elif corrupt == "inf":
            state["conv1.1.bias"][2] = float("inf")
        elif corrupt == "missing_key":
            del state["conv2.1.bias"]
        elif corrupt == "extra_key":
            state["conv3.weight"] = torch.zeros(1)
        elif corrupt == "not_dict":
            state = [1, 2, 3]
        torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    with pytest.raises(CheckpointError):
        FusionEngine(weights=path)


def test_missing_weights_file_and_directory_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"meta": [1, 2]}, "metadata"), ({"meta": "notes"}, "metadata"),
     ({"format_version": "1"}, "not a positive integer"), ({"format_version": True}, "positive"),
     ({"format_version": 0}, "positive"), ({"format_version": 99}, "newer")],
)  # fmt: skip
def test_damaged_checkpoint_fields_are_named(tmp_path, random_weights, change, message):
    payload = torch.load(random_weights[1], weights_only=True)
    path = tmp_path / "damaged.pt"
    torch.save({**payload, **change}, path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    if change.get("format_version") == "1":
        assert "newer" not in str(err.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64])
def test_non_float_weights_are_refused(tmp_path, random_weights, dtype):
    state = {k: v.clone() for k, v in random_weights[0].state_dict().items()}
    state["conv1.1.weight"] = state["conv1.1.weight"].to(dtype)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="floating point"):
        load_checkpoint(tmp_path / "w.pt")


def test_a_fifo_as_weights_is_refused_at_once(tmp_path):
    import os
    import threading

    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_checkpoint(fifo)
            outcome.append(None)
        except BaseException as exc:  # the test inspects it
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so that the test run can end
        with open(fifo, "wb"):
            pass
        pytest.fail("load_checkpoint waited on a FIFO")
    assert isinstance(outcome[0], CheckpointError) and "regular file" in str(outcome[0])


def test_shipped_default_weights_are_trained_and_documented():
    checkpoint = load_checkpoint(default_weights_path())
    assert checkpoint.meta["parameters"] == 113
    assert checkpoint.meta["training"], "the default weights must say how they were made"
    assert checkpoint.meta["data"], "the default weights must say what they were trained on"
    # Trained weights, not a fresh initialisation: the network must beat a trivial fusion.
    engine = FusionEngine(backend="torch")
    ir, y = rng_planes(64, 64, seed=3)
    fused = engine.fuse_luma(ir, y)
    assert float(fused.std()) > 0.05 and float(fused.max()) <= 1.0


# --- backends ----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["numba", "opencv"])
@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (31, 33), (65, 40), (97, 128), (512, 640)])
def test_cpu_fast_equals_torch(random_weights, kernel, shape):
    if kernel == "numba":
        pytest.importorskip("numba")
    _, path = random_weights
    checkpoint = load_checkpoint(path)
    reference = TorchBackend(checkpoint, "cpu")
    fast = CpuFastBackend(checkpoint, kernel=kernel)
    for seed in range(2):
        ir, y = rng_planes(*shape, seed=seed)
        diff = np.abs(fast.run(ir, y) - reference.run(ir, y)).max()
        assert diff <= 1e-5, f"{kernel} {shape}: max abs difference {diff}"


def test_auto_backend_is_cpu_fast_without_cuda_and_validates_choices():
    engine = FusionEngine(backend="auto")
    expected = "torch" if cuda_available() else "cpu-fast"
    assert engine.backend_name == expected
    with pytest.raises(ValueError, match="backend"):
        FusionEngine(backend="tensorrt")
    if cuda_available():
        with pytest.raises(ValueError, match="cpu-fast"):
            FusionEngine(backend="cpu-fast", device="cuda")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            FusionEngine(backend="torch", device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
@pytest.mark.parametrize("fp16", [False, True])
def test_cuda_backend_matches_cpu_fast(random_weights, fp16):
    _, path = random_weights
    gpu = FusionEngine(backend="torch", device="cuda", weights=path, fp16=fp16)
    cpu = FusionEngine(backend="cpu-fast", weights=path)
    ir, y = rng_planes(512, 640)
    tolerance = 2e-3 if fp16 else 1e-5
    assert np.abs(gpu.fuse_luma(ir, y) - cpu.fuse_luma(ir, y)).max() <= tolerance
    before = torch.cuda.memory_allocated()
    gpu.close()
    assert torch.cuda.memory_allocated() < before or before == 0


def test_closed_engine_refuses_work():
    engine = FusionEngine()
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.fuse_luma(*rng_planes(8, 8))


# --- thermal normalisation ---------------------------------------------------------------


def test_fixed_window_on_uint16():
    norm = ThermalNormalizer("fixed", window=(1000, 3000))
    frame = np.array([[500, 1000], [2000, 4000]], np.uint16)
    np.testing.assert_allclose(norm(frame), [[0, 0], [0.5, 1]], atol=1e-6)
    full = ThermalNormalizer("fixed")(np.array([[0, 65535]], np.uint16))
    np.testing.assert_allclose(full, [[0, 1]])


def test_percentile_clip_on_uint16_and_its_smoothing():
    rng = np.random.default_rng(0)
    frame = rng.integers(20000, 30000, size=(64, 64)).astype(np.uint16)
    frame[0, :5] = 65000  # hot outliers: clipped, not stretching the range
    frame[1, :5] = 100
    norm = ThermalNormalizer("percentile", percentiles=(1, 99), smoothing=0.0)
    out = norm(frame)
    lo, hi = norm.bounds
    assert 20000 <= lo < 20300 and 29700 < hi <= 30000
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32
    smooth = ThermalNormalizer("percentile", percentiles=(1, 99), smoothing=0.9)
    smooth(frame)
    smooth(frame + np.uint16(10000))  # the scene warms up by 10000 counts at once
    new_lo = smooth.bounds[0]
    assert lo < new_lo < lo + 10000, "bounds must move only part of the way in one frame"
    assert abs(new_lo - (lo + 1000)) < 50


def test_minmax_and_constant_frames_give_no_nan():
    frame = np.array([[100, 200], [300, 500]], np.uint16)
    np.testing.assert_allclose(ThermalNormalizer("minmax")(frame), [[0, 0.25], [0.5, 1]])
    constant = np.full((8, 8), 1234, np.uint16)
    for mode in ("minmax", "percentile", "auto"):
        out = ThermalNormalizer(mode)(constant)
        assert np.isfinite(out).all() and (out == 0).all()
    fixed = ThermalNormalizer("fixed", window=(0, 2468))(constant)
    np.testing.assert_allclose(fixed, 0.5)


def test_auto_keeps_8bit_and_clips_16bit():
    norm = ThermalNormalizer("auto")
    eight = np.array([[0, 51], [102, 255]], np.uint8)
    np.testing.assert_allclose(norm(eight), eight / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "median"}, {"window": (5, 5)}, {"percentiles": (50, 10)}, {"smoothing": 1.0}],
)
def test_bad_normalisation_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ThermalNormalizer(**kwargs)


# --- registration --------------------------------------------------------------------------


def test_known_homography_moves_a_known_point():
    thermal = np.zeros((120, 160), np.uint16)
    thermal[30, 40] = 60000  # one hot pixel at (x=40, y=30)
    shift_scale = np.array([[2.0, 0, 15], [0, 2.0, -5], [0, 0, 1]])  # x' = 2x + 15, y' = 2y - 5
    engine = FusionEngine(thermal_norm="fixed", homography=shift_scale)
    visible = np.zeros((240, 320, 3), np.uint8)
    prepared = engine.prepare(thermal, visible)
    assert prepared.thermal.shape == (240, 320)
    y, x = np.unravel_index(np.argmax(prepared.thermal), prepared.thermal.shape)
    assert (abs(x - 95) <= 1) and (abs(y - 55) <= 1)
    assert engine.fuse(thermal, visible).shape == (240, 320, 3)


def test_cached_registration_equals_warp_perspective():
    rng = np.random.default_rng(0)
    thermal = cv2.GaussianBlur(rng.random((128, 160), dtype=np.float32), (7, 7), 2)
    homography = np.array([[1.9, 0.05, 12.0], [-0.03, 1.85, 8.0], [1e-5, 2e-5, 1.0]])
    registration = ThermalRegistration(homography)
    ours = registration(thermal, (240, 320))
    reference = cv2.warpPerspective(thermal, homography, (320, 240), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    inside = cv2.erode((reference > 0).astype(np.uint8), np.ones((3, 3)))  # away from the edge
    assert np.abs(ours - reference)[inside > 0].max() < 1e-3
    assert registration(thermal, (240, 320)) is not ours  # maps reused, a new image each call


def test_size_mismatch_without_homography_resizes_and_warns_once(caplog):
    engine = FusionEngine()
    thermal = np.zeros((64, 80), np.uint16)
    visible = np.zeros((128, 160, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="mmdrfuse_ros.fusion"):
        assert engine.fuse(thermal, visible).shape == (128, 160, 3)
        engine.fuse(thermal, visible)
    assert sum("homography" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(
    "homography", [np.zeros((3, 3)), [1, 2, 3], [[1, 0, 0], [0, np.nan, 0], [0, 0, 1]]]
)
def test_unusable_homographies_are_refused(homography):
    with pytest.raises(ValueError, match="homography"):
        FusionEngine(homography=homography)


# --- colour ---------------------------------------------------------------------------------


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    thermal = rng.integers(0, 65535, size=(48, 64)).astype(np.uint16)
    visible = cv2.GaussianBlur(rng.integers(0, 255, size=(48, 64, 3)).astype(np.uint8), (5, 5), 0)
    return thermal, visible


def test_grey_visible_gives_grey_output():
    thermal, visible = _scene()
    grey = cv2.cvtColor(visible, cv2.COLOR_BGR2GRAY)
    engine = FusionEngine()
    out = engine.fuse(thermal, grey)
    assert out.shape == (48, 64, 3)
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 1], out[:, :, 2])
    single = FusionEngine(output_color="gray").fuse(thermal, grey)
    assert single.shape == (48, 64) and np.array_equal(single, out[:, :, 0])


def test_colour_output_keeps_the_visible_chroma():
    thermal, visible = _scene()
    engine = FusionEngine()
    fused = engine.fuse(thermal, visible)
    cr_cb_in = cv2.cvtColor(visible, cv2.COLOR_BGR2YCrCb)[:, :, 1:].astype(int)
    ycrcb_out = cv2.cvtColor(fused, cv2.COLOR_BGR2YCrCb).astype(int)
    # Equal up to the rounding of a uint8 round trip, except where BGR saturates.
    unsaturated = (fused > 2).all(axis=2) & (fused < 253).all(axis=2)
    assert unsaturated.mean() > 0.5
    diff = np.abs(ycrcb_out[:, :, 1:] - cr_cb_in)[unsaturated]
    assert diff.max() <= 2
    # The luma is the network's output, not the visible luma.
    prepared = engine.prepare(thermal, visible)
    y_fused = engine.fuse_luma(prepared.thermal, prepared.visible.luma)
    assert np.abs(ycrcb_out[:, :, 0] - np.round(y_fused * 255))[unsaturated].max() <= 2


def test_rgb_order_and_float_output():
    thermal, visible = _scene()
    bgr = FusionEngine().fuse(thermal, visible)
    rgb = FusionEngine(visible_order="rgb", output_color="rgb").fuse(thermal, visible[:, :, ::-1])
    assert np.abs(rgb[:, :, ::-1].astype(int) - bgr.astype(int)).max() <= 1
    as_float = FusionEngine(output_dtype="float32").fuse(thermal, visible)
    assert as_float.dtype == np.float32 and as_float.min() >= 0.0 and as_float.max() <= 1.0
    assert np.abs(as_float * 255 - bgr).max() <= 2.0


def test_16bit_visible_is_accepted():
    thermal, visible = _scene()
    visible16 = visible.astype(np.uint16) * 257
    a = FusionEngine().fuse(thermal, visible)
    b = FusionEngine().fuse(thermal, visible16)
    # The 8-bit path rounds Cr/Cb to uint8 twice; the 16-bit path works in float.
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 3


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thermal", "visible", "message"),
    [
        (np.zeros((0, 0), np.uint16), np.zeros((4, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4), np.uint16), np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4), np.int32), np.zeros((4, 4, 3), np.uint8), "dtype"),
        (np.full((4, 4), np.nan, np.float32), np.zeros((4, 4, 3), np.uint8), "NaN"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), "single-channel"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 2), np.uint8), "visible"),
        ("not an image", np.zeros((4, 4, 3), np.uint8), "NumPy"),
        (np.zeros((1, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), "too small"),
    ],
)
def test_bad_frames_raise_fusion_input_error(thermal, visible, message):
    engine = FusionEngine()
    with pytest.raises(FusionInputError, match=message):
        engine.fuse(thermal, visible)
    # And the engine is still usable afterwards.
    assert engine.fuse(np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8)).shape == (8, 8, 3)


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="unknown fusion setting"):
        FusionEngine(thermal_normalisation="minmax")


def test_big_endian_thermal_is_read_like_native_and_float_visible_above_one_is_refused():
    engine = FusionEngine(backend="cpu-fast")
    native = np.random.default_rng(0).integers(0, 60000, (64, 80)).astype(np.uint16)
    visible = np.zeros((64, 80, 3), np.uint8)
    assert np.array_equal(engine.fuse(native.astype(">u2"), visible),
                          FusionEngine(backend="cpu-fast").fuse(native, visible))
    with pytest.raises(FusionInputError, match=r"must be in 0\.\.1"):
        engine.fuse(native, np.full((64, 80, 3), 200.0, np.float32))
