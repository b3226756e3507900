"""``mmdrfuse calibrate``: a synthetic bag round trip (its rig is known), folders, the report,
and the refusals that leave nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mmdrfuse_ros.bag import io
from mmdrfuse_ros.bag.frame_pairs import FramePairs, drop_near_duplicates
from mmdrfuse_ros.bag.scene import NightScene, SynthConfig
from mmdrfuse_ros.bag.synth import write_synthetic_bag
from mmdrfuse_ros.cli import main
from mmdrfuse_ros.datasets import read_homography
from mmdrfuse_ros.fusion.calibration import corner_error
from mmdrfuse_ros.fusion.geometry import default_homography
from mmdrfuse_ros.sampling import select_evenly

THERMAL_WH, RGB_WH = (640, 512), (1280, 720)


def _rig() -> np.ndarray:
    """A rig other than the default: 15 % narrower, shifted, turned 2 degrees."""
    tw, th = THERMAL_WH
    centre = np.array([[1, 0, -tw / 2], [0, 1, -th / 2], [0, 0, 1.0]])
    a = np.deg2rad(2.0)
    turn = np.array([[0.85 * np.cos(a), -0.85 * np.sin(a), 0],
                     [0.85 * np.sin(a), 0.85 * np.cos(a), 0], [0, 0, 1]])  # fmt: skip
    shift = np.array([[1, 0, 90.0], [0, 1, -25.0], [0, 0, 1]])
    h = shift @ default_homography(THERMAL_WH, RGB_WH) @ np.linalg.inv(centre) @ turn @ centre
    return h / h[2, 2]


@pytest.fixture(scope="module")
def rig_bag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 1.5 s synthetic bag of that rig."""
    h = _rig()
    bag = tmp_path_factory.mktemp("calibrate") / "bag"
    write_synthetic_bag(bag, SynthConfig(duration_s=1.5, homography=tuple(h.ravel())))
    return bag, h


def _written_homography(path: Path) -> np.ndarray:
    doc = yaml.safe_load(path.read_text())
    values = doc["fusion_node"]["ros__parameters"]["homography"]
    assert len(values) == 9 and all(isinstance(v, float) for v in values)
    return np.array(values).reshape(3, 3)


def test_bag_round_trip_recovers_the_rig_the_bag_was_made_with(rig_bag, tmp_path, capsys):
    bag, truth = rig_bag
    out, report = tmp_path / "calibration.yaml", tmp_path / "report"
    assert main(["calibrate", "--bag", str(bag), "--out", str(out), "--frames", "6",
                 "--report", str(report)]) == 0
    found = _written_homography(out)
    assert corner_error(found, truth, THERMAL_WH) <= 2.0
    # the bag's own calibration topic holds the same rig
    with io.BagReader(bag) as reader:
        (_, calibration), = reader.read_json(io.CALIBRATION_TOPIC)
    assert corner_error(found, io.homography_from_calibration(calibration), THERMAL_WH) <= 2.0
    assert np.allclose(read_homography(out), found)
    printed = capsys.readouterr().out
    assert "params_file:=" in printed and "quality: correlation" in printed
    for name in ("before_after.png", "edges.png", "pairs.csv", "calibration.json"):
        assert (report / name).is_file(), name
    summary = json.loads((report / "calibration.json").read_text())
    assert len(summary["pairs"]) == 6 and summary["inlier_fraction"] == 1.0
    assert cv2.imread(str(report / "before_after.png")) is not None


def test_init_starts_the_refinement_there(rig_bag, tmp_path):
    bag, truth = rig_bag
    start = tmp_path / "start.json"
    nudged = truth @ np.array([[1.01, 0, 4.0], [0, 1.01, -3.0], [0, 0, 1]])
    start.write_text(json.dumps(nudged.tolist()))
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "--bag", str(bag), "--out", str(out), "--frames", "3",
                 "--init", str(start), "--model", "affine"]) == 0
    assert corner_error(_written_homography(out), truth, THERMAL_WH) <= 3.0


def _frames_to_folders(tmp_path: Path, thermals, rgbs) -> tuple[Path, Path]:
    ir, vis = tmp_path / "ir", tmp_path / "vi"
    ir.mkdir()
    vis.mkdir()
    for i, (t, v) in enumerate(zip(thermals, rgbs, strict=True)):
        cv2.imwrite(str(ir / f"{i:03d}.png"), t)
        cv2.imwrite(str(vis / f"{i:03d}.png"), v)
    return ir, vis


def _scene_frames(times, config: SynthConfig | None = None):
    scene = NightScene(config or SynthConfig())
    noise = np.random.default_rng(1)
    return ([scene.render_thermal(t, noise)[0] for t in times],
            [scene.render_rgb(t, noise)[0] for t in times], scene.homography)


def test_folders_of_16_bit_thermal_and_rgb_files(tmp_path):
    thermals, rgbs, truth = _scene_frames([0.5, 3.0, 6.0, 9.0])
    ir, vis = _frames_to_folders(tmp_path, thermals, rgbs)
    (ir / "broken.png").write_bytes(b"\x89PNG not really")
    (vis / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out" / "calibration.yaml"
    assert main(["calibrate", "--ir", str(ir), "--vis", str(vis), "--out", str(out)]) == 0
    assert corner_error(_written_homography(out), truth, THERMAL_WH) <= 2.0


def test_unrelated_footage_is_refused_and_nothing_is_written(tmp_path, capsys):
    thermals, _, _ = _scene_frames([0.5, 4.0, 8.0])
    rng = np.random.default_rng(5)
    rgbs = []
    for _ in thermals:  # a different street: other buildings, other lamps
        other = cv2.GaussianBlur(rng.integers(0, 255, (72, 128, 3)).astype(np.uint8), (0, 0), 2)
        rgbs.append(cv2.resize(other, RGB_WH, interpolation=cv2.INTER_CUBIC))
    ir, vis = _frames_to_folders(tmp_path, thermals, rgbs)
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "--ir", str(ir), "--vis", str(vis), "--out", str(out)]) == 1
    assert not out.exists()
    assert "cannot calibrate" in capsys.readouterr().err


def test_blank_frames_are_refused(tmp_path, capsys):
    thermals = [np.full(THERMAL_WH[::-1], 30000, np.uint16)] * 2
    rgbs = [np.full((*RGB_WH[::-1], 3), 12, np.uint8)] * 2
    ir, vis = _frames_to_folders(tmp_path, thermals, rgbs)
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "--ir", str(ir), "--vis", str(vis), "--out", str(out)]) == 1
    assert not out.exists()
    assert "blank or featureless" in capsys.readouterr().err


def test_missing_topic_names_the_bag_s_image_topics(rig_bag, tmp_path, capsys):
    bag, _ = rig_bag
    out = tmp_path / "c.yaml"
    assert main(["calibrate", "--bag", str(bag), "--thermal-topic", "/flir/image",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "/flir/image" in err and io.THERMAL_TOPIC in err and "--thermal-topic" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--ir", "a"], "--ir needs --vis"),
    (["--ir", "a", "--vis", "b", "--frames", "0"], "--frames must be at least 1"),
    (["--ir", "a", "--vis", "b", "--slop", "0"], "--slop must be > 0"),
])  # fmt: skip
def test_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    assert main(["calibrate", *argv, "--out", str(tmp_path / "c.yaml")]) == 2
    assert message in capsys.readouterr().err


def test_out_inside_an_input_folder_or_a_bad_init_is_refused_before_work(rig_bag, tmp_path,
                                                                        capsys):
    bag, _ = rig_bag
    assert main(["calibrate", "--bag", str(bag), "--out", str(bag)]) == 2
    assert "--out" in capsys.readouterr().err
    bad = tmp_path / "singular.json"
    bad.write_text(json.dumps([[1, 0, 0], [2, 0, 0], [0, 0, 0]]))
    out = tmp_path / "c.yaml"
    assert main(["calibrate", "--bag", str(bag), "--init", str(bad), "--out", str(out)]) == 2
    assert "singular" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_bag_is_a_clear_error(tmp_path, capsys):
    assert main(["calibrate", "--bag", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "c.yaml")]) == 2
    assert "bag not found" in capsys.readouterr().err


def test_pairs_are_spread_and_near_duplicates_dropped():
    assert select_evenly(range(10), 3) == [0, 4, 9]
    assert select_evenly(range(3), 5) == [0, 1, 2]
    still = np.zeros((64, 80), np.uint16)
    still[20:40, 10:30] = 1000
    moved = np.roll(still, 25, axis=1)
    rgb = np.zeros((64, 80, 3), np.uint8)
    pairs = FramePairs([still, still.copy(), moved, moved.copy()], [rgb] * 4,
                       ["a", "b", "c", "d"])
    kept = drop_near_duplicates(pairs, 4)
    assert kept.names == ["a", "c"]
    assert any("near-duplicate" in note for note in kept.notes)


def test_a_bag_cut_short_is_calibrated_from_the_pairs_before_the_break(rig_bag, tmp_path,
                                                                       capsys):
    bag, truth = rig_bag
    cut = tmp_path / "cut"
    shutil.copytree(bag, cut)
    data_file = next(cut.glob("*.mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    (cut / "metadata.yaml").unlink()  # a killed recorder
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "--bag", str(cut), "--out", str(out), "--frames", "4"]) == 0
    assert "note:" in capsys.readouterr().err
    assert corner_error(_written_homography(out), truth, THERMAL_WH) <= 2.0


def test_cameras_on_different_clocks_are_a_clear_error(tmp_path, capsys):
    thermals, rgbs, _ = _scene_frames([0.5, 3.0])
    bag = tmp_path / "bag"
    with io.BagWriter(bag) as writer:
        for i, (t, v) in enumerate(zip(thermals, rgbs, strict=True)):
            stamp = 1_000_000_000 * (i + 1)
            writer.write(io.THERMAL_TOPIC, stamp, io.image_msg(t, "mono16", stamp, "th"))
            later = stamp + 400_000_000  # the RGB clock 0.4 s ahead
            writer.write(io.RGB_TOPIC, later, io.image_msg(v, "bgr8", later, "rgb"))
    assert main(["calibrate", "--bag", str(bag), "--out", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "within 0.02 s" in err and "--slop" in err
    assert main(["calibrate", "--bag", str(bag), "--slop", "0.5", "--out",
                 str(tmp_path / "c.yaml")]) == 0


def test_bag_info_suggests_calibrate_and_its_answer_becomes_the_bag_s_params(rig_bag, tmp_path,
                                                                              capsys):
    bag, truth = rig_bag
    copy = tmp_path / "bag"
    shutil.copytree(bag, copy)
    (copy / "mmdrfuse_params.yaml").unlink()
    assert main(["bag", "info", str(copy)]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines()
                if "no homography for this bag" in line)
    command = hint.split("`")[1].split()
    assert command[:2] == ["mmdrfuse", "calibrate"]
    assert main([*command[1:], "--frames", "3"]) == 0
    capsys.readouterr()
    assert main(["bag", "info", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "fusion_node: homography" in out and "no homography" not in out
    found = _written_homography(copy / "mmdrfuse_params.yaml")
    assert corner_error(found, truth, THERMAL_WH) <= 2.0
