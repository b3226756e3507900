"""Bags: the synthetic scene, from-folders round trips, and bad input (no ROS nodes started)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mmdrfuse_ros.bag import io
from mmdrfuse_ros.bag import params as bag_params
from mmdrfuse_ros.bag.folders import FolderError, write_folder_bag
from mmdrfuse_ros.bag.scene import NightScene, SynthConfig
from mmdrfuse_ros.bag.synth import write_synthetic_bag
from mmdrfuse_ros.cli import main as cli_main
from mmdrfuse_ros.datasets import DatasetError, find_pairs
from mmdrfuse_ros.fusion.geometry import apply_homography, default_homography
from mmdrfuse_ros.stamps import stamp_to_ns

SMALL = SynthConfig(duration_s=1.0, rgb_rate_hz=15.0, thermal_rate_hz=9.0,
                    rgb_size=(320, 180), thermal_size=(160, 128))  # fmt: skip


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bags") / "small"
    write_synthetic_bag(out, SMALL)
    return out


def _calibration(reader: io.BagReader) -> dict | None:
    """The bag's last calibration document, or None."""
    docs = reader.read_json(io.CALIBRATION_TOPIC)
    return docs[-1][1] if docs else None


def _images(bag: Path, topic: str) -> list[tuple[int, int, np.ndarray, str]]:
    """(log time, header stamp, array, encoding) of every image on a topic."""
    out = []
    with io.BagReader(bag) as reader:
        for _, msgtype, log_ns, raw in reader.messages([topic]):
            msg = reader.deserialize(raw, msgtype)
            image, encoding = io.message_to_array(msg, msgtype)
            out.append((log_ns, stamp_to_ns(msg.header.stamp), np.array(image), encoding))
    return out


# ----------------------------------------------------------------------------- synthetic bag
def test_synthetic_bag_topics_types_and_calibration(small_bag: Path) -> None:
    with io.BagReader(small_bag) as reader:
        topics = reader.topics
        assert topics[io.THERMAL_TOPIC].msgtype == io.IMAGE
        assert topics[io.RGB_TOPIC].msgtype == io.IMAGE
        assert topics[io.RGB_INFO_TOPIC].msgtype == io.CAMERA_INFO
        assert topics[io.RGB_INFO_TOPIC].count == topics[io.RGB_TOPIC].count
        assert topics[io.GROUND_TRUTH_TOPIC].count == topics[io.RGB_TOPIC].count
        assert topics[io.GROUND_TRUTH_THERMAL_TOPIC].count == topics[io.THERMAL_TOPIC].count
        assert topics[io.RGB_TOPIC].count == 15
        assert 7 <= topics[io.THERMAL_TOPIC].count <= 9  # 9 Hz, the camera may skip a frame
        h = io.homography_from_calibration(_calibration(reader))
    np.testing.assert_allclose(h, default_homography(SMALL.thermal_size, SMALL.rgb_size),
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    thermal = _images(small_bag, io.THERMAL_TOPIC)
    rgb = _images(small_bag, io.RGB_TOPIC)
    assert {t[3] for t in thermal} == {"mono16"} and {t[3] for t in rgb} == {"bgr8"}
    assert thermal[0][2].shape == (128, 160) and rgb[0][2].shape == (180, 320, 3)
    # radiometric-like counts (0.01 K): a night scene between about -30 and +80 degrees C
    counts = np.concatenate([t[2].ravel() for t in thermal])
    assert counts.min() > 24000 and counts.max() < 36000
    # RGB is dark: a low-light camera
    assert np.mean([t[2].mean() for t in rgb]) < 40


def test_synthetic_stamps_are_unsynchronised_with_driver_delays(small_bag: Path) -> None:
    thermal = _images(small_bag, io.THERMAL_TOPIC)
    rgb = _images(small_bag, io.RGB_TOPIC)
    t_stamps = np.array([t[1] for t in thermal])
    r_stamps = np.array([t[1] for t in rgb])
    assert not set(t_stamps) & set(r_stamps)
    # each camera's receive (log) time is after its exposure stamp, by a few milliseconds
    for frames in (thermal, rgb):
        delays = np.array([log - stamp for log, stamp, _, _ in frames])
        assert np.all(delays > 0) and np.all(delays < 30_000_000)
    # its own rate: thermal periods near 1/9 s (or a multiple after a skipped frame)
    periods = np.diff(t_stamps) / 1e9
    assert np.all(np.abs(periods / (1 / 9) - np.round(periods / (1 / 9))) < 0.1)


def test_ground_truth_matches_frames_and_geometry(small_bag: Path) -> None:
    with io.BagReader(small_bag) as reader:
        rgb_gt = {d["stamp_ns"]: d for _, d in reader.read_json(io.GROUND_TRUTH_TOPIC)}
        th_gt = {d["stamp_ns"]: d for _, d in reader.read_json(io.GROUND_TRUTH_THERMAL_TOPIC)}
    rgb_stamps = {t[1] for t in _images(small_bag, io.RGB_TOPIC)}
    assert set(rgb_gt) == rgb_stamps
    boxes = [b for d in rgb_gt.values() for b in d["boxes"]]
    assert boxes, "the synthetic scene must have pedestrians in view"
    for doc in rgb_gt.values():
        assert doc["width"] == 320 and doc["height"] == 180
        assert doc["labels"] == ["person"] * len(doc["boxes"])
        for x1, y1, x2, y2 in doc["boxes"]:
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 180
            assert (y2 - y1) > 1.5 * (x2 - x1)  # upright people
    # a person seen by both cameras: the thermal box mapped through H lands on the RGB box
    h = default_homography(SMALL.thermal_size, SMALL.rgb_size)
    scene = NightScene(SMALL)
    t = 0.5
    _, rgb_boxes, rgb_ids = scene.render_rgb(t, np.random.default_rng(0))
    _, th_boxes, th_ids = scene.render_thermal(t, np.random.default_rng(0))
    common = set(rgb_ids) & set(th_ids)
    assert common
    for ident in common:
        tb = np.array(th_boxes[th_ids.index(ident)]).reshape(2, 2)
        mapped = apply_homography(h, tb).reshape(-1)
        np.testing.assert_allclose(mapped, rgb_boxes[rgb_ids.index(ident)], atol=4.0)
    assert th_gt


def test_pedestrians_are_found_by_hog_in_the_fused_image() -> None:
    """The default detector must find the synthetic people in fused frames, or AP means nothing."""
    from mmdrfuse_ros.detection import create_detector
    from mmdrfuse_ros.fusion import FusionEngine
    from mmdrfuse_ros.metrics import box_iou

    config = SynthConfig()
    scene = NightScene(config)
    heights = [p.height for p in scene.pedestrians]
    assert min(heights) >= 128  # RGB pixels: within the HOG window's reach
    detector = create_detector("hog")
    rng = np.random.default_rng(0)
    found = total = 0
    with FusionEngine(homography=scene.homography, thermal_smoothing=0.0) as engine:
        for t in (2.0, 5.0, 8.0):
            rgb, boxes, _ = scene.render_rgb(t, rng)
            thermal, _, _ = scene.render_thermal(t, rng)
            dets = [d.as_row()[:4] for d in detector.detect(engine.fuse(thermal, rgb))]
            total += len(boxes)
            if dets and boxes:
                found += int((box_iou(np.array(boxes), np.array(dets)).max(axis=1) >= 0.5).sum())
    assert found >= 2, f"HOG found {found} of {total} synthetic pedestrians in fused frames"


def test_synthetic_sqlite3_and_same_seed_same_bag(tmp_path: Path) -> None:
    cfg = SynthConfig(duration_s=0.3, rgb_size=(160, 96), thermal_size=(80, 64))
    write_synthetic_bag(tmp_path / "a", cfg, storage="sqlite3")
    write_synthetic_bag(tmp_path / "b", cfg, storage="sqlite3")
    assert list((tmp_path / "a").glob("*.db3"))
    a, b = _images(tmp_path / "a", io.RGB_TOPIC), _images(tmp_path / "b", io.RGB_TOPIC)
    assert len(a) == len(b) > 0
    for (la, sa, ia, _), (lb, sb, ib, _) in zip(a, b, strict=True):
        assert (la, sa) == (lb, sb)
        np.testing.assert_array_equal(ia, ib)


def test_synth_cli_refuses_existing_output_and_bad_settings(tmp_path: Path, capsys) -> None:
    (tmp_path / "exists").mkdir()
    assert cli_main(["bag", "synth", "--out", str(tmp_path / "exists"), "--no-progress"]) == 2
    assert "exists already" in capsys.readouterr().err
    code = cli_main(["bag", "synth", "--out", str(tmp_path / "x"), "--duration", "-1",
                     "--no-progress"])  # fmt: skip
    assert code == 2 and "duration_s" in capsys.readouterr().err


# ----------------------------------------------------------------------------- from-folders
def _write_pairs(root: Path, n: int = 3, ir_16bit: bool = False) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    ir_dir, vis_dir = root / "ir", root / "vi"
    ir_dir.mkdir(parents=True)
    vis_dir.mkdir(parents=True)
    for i in range(n):
        if ir_16bit:
            ir = rng.integers(27000, 31000, size=(48, 64), dtype=np.uint16)
        else:
            ir = rng.integers(0, 256, size=(48, 64), dtype=np.uint8)
        cv2.imwrite(str(ir_dir / f"{i:05d}.png"), ir)
        cv2.imwrite(str(vis_dir / f"{i:05d}.png"), rng.integers(0, 256, (48, 64, 3), np.uint8))
    return ir_dir, vis_dir


def _voc(path: Path, boxes: list[list[int]], size: tuple[int, int] = (64, 48)) -> None:
    objects = "".join(
        f"<object><name>person</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    path.write_text(f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height>"
                    f"<depth>3</depth></size>{objects}</annotation>")  # fmt: skip


def _assert_round_trip(bag: Path, ir_dir: Path, vis_dir: Path, n: int) -> None:
    thermal, rgb = _images(bag, io.THERMAL_TOPIC), _images(bag, io.RGB_TOPIC)
    stems = sorted(p.stem for p in ir_dir.iterdir())[:n]
    assert len(thermal) == len(rgb) == n
    for stem, th, vi in zip(stems, thermal, rgb, strict=True):
        ir_file = next(ir_dir.glob(stem + ".*"))
        vis_file = next(vis_dir.glob(stem + ".*"))
        ir_ref = cv2.imread(str(ir_file), cv2.IMREAD_UNCHANGED)
        if ir_ref.ndim == 3:
            ir_ref = cv2.cvtColor(ir_ref, cv2.COLOR_BGR2GRAY)
        np.testing.assert_array_equal(th[2], ir_ref)
        np.testing.assert_array_equal(vi[2], cv2.imread(str(vis_file), cv2.IMREAD_UNCHANGED))
        assert th[1] == vi[1]  # registered pairs: one stamp


def test_from_folders_round_trip_synthetic(tmp_path: Path) -> None:
    ir_dir, vis_dir = _write_pairs(tmp_path, 3, ir_16bit=True)
    summary = write_folder_bag(ir_dir, vis_dir, tmp_path / "bag", rate_hz=5.0)
    assert summary.pairs == 3
    _assert_round_trip(tmp_path / "bag", ir_dir, vis_dir, 3)
    stamps = [t[1] for t in _images(tmp_path / "bag", io.RGB_TOPIC)]
    assert np.diff(stamps).tolist() == [200_000_000, 200_000_000]
    assert {t[3] for t in _images(tmp_path / "bag", io.THERMAL_TOPIC)} == {"mono16"}
    with io.BagReader(tmp_path / "bag") as reader:
        np.testing.assert_array_equal(
            io.homography_from_calibration(_calibration(reader)), np.eye(3)
        )


@pytest.mark.shared_data
def test_from_folders_round_trip_roadscene(roadscene: Path, tmp_path: Path) -> None:
    code = cli_main(["bag", "from-folders", "--ir", str(roadscene / "ir"), "--vis",
                     str(roadscene / "vi"), "--out", str(tmp_path / "rs"), "--limit", "4",
                     "--no-progress"])  # fmt: skip
    assert code == 0
    _assert_round_trip(tmp_path / "rs", roadscene / "ir", roadscene / "vi", 4)


def test_from_folders_voc_annotations_become_ground_truth(tmp_path: Path) -> None:
    ir_dir, vis_dir = _write_pairs(tmp_path, 2)
    ann = tmp_path / "Annotations"
    ann.mkdir()
    _voc(ann / "00000.xml", [[5, 4, 20, 40]])
    _voc(ann / "00001.xml", [[30, 2, 50, 44], [1, 1, 9, 30]])
    _voc(ann / "99999.xml", [[1, 1, 2, 2]])  # LLVIP: annotations for other splits are fine
    write_folder_bag(ir_dir, vis_dir, tmp_path / "bag", annotations=ann)
    with io.BagReader(tmp_path / "bag") as reader:
        docs = [d for _, d in reader.read_json(io.GROUND_TRUTH_TOPIC)]
        thermal_docs = [d for _, d in reader.read_json(io.GROUND_TRUTH_THERMAL_TOPIC)]
    assert [d["boxes"] for d in docs] == [[[5, 4, 20, 40]], [[30, 2, 50, 44], [1, 1, 9, 30]]]
    assert [d["boxes"] for d in thermal_docs] == [d["boxes"] for d in docs]
    stamps = [t[1] for t in _images(tmp_path / "bag", io.RGB_TOPIC)]
    assert [d["stamp_ns"] for d in docs] == stamps


def test_from_folders_bad_input(tmp_path: Path, capsys) -> None:
    ir_dir, vis_dir = _write_pairs(tmp_path / "ok", 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images"):
        find_pairs(empty, vis_dir)
    with pytest.raises(DatasetError, match="not found"):
        find_pairs(tmp_path / "missing", vis_dir)
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "zzz.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="no image names in common"):
        find_pairs(ir_dir, other)
    # annotations that do not match the images
    ann = tmp_path / "ann"
    ann.mkdir()
    _voc(ann / "00000.xml", [[1, 1, 5, 20]])
    with pytest.raises(DatasetError, match=r"1 of 2 pairs have no \.xml"):
        find_pairs(ir_dir, vis_dir, ann)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _voc(wrong / "elsewhere.xml", [[1, 1, 5, 20]])
    with pytest.raises(DatasetError, match=r"none of the 1 \.xml files"):
        find_pairs(ir_dir, vis_dir, wrong)
    sized = tmp_path / "sized"
    sized.mkdir()
    _voc(sized / "00000.xml", [[1, 1, 5, 20]], size=(640, 512))
    _voc(sized / "00001.xml", [[1, 1, 5, 20]])
    with pytest.raises(FolderError, match="for a 640x512 image"):
        write_folder_bag(ir_dir, vis_dir, tmp_path / "b1", annotations=sized)
    # the CLI: a message saying what to fix and a non-zero exit
    code = cli_main(["bag", "from-folders", "--ir", str(empty), "--vis", str(vis_dir),
                     "--out", str(tmp_path / "b2"), "--no-progress"])  # fmt: skip
    assert code == 2 and "no images" in capsys.readouterr().err
    code = cli_main(["bag", "from-folders", "--ir", str(ir_dir), "--vis", str(vis_dir),
                     "--annotations", str(ann), "--out", str(tmp_path / "b3"),
                     "--no-progress"])  # fmt: skip
    assert code == 2 and "annotations do not match" in capsys.readouterr().err
    assert not (tmp_path / "b3").exists()  # checked before anything is written


def test_from_folders_unreadable_image_keeps_the_pairs_before(tmp_path: Path) -> None:
    ir_dir, vis_dir = _write_pairs(tmp_path, 3)
    (vis_dir / "00001.png").write_bytes(b"not a png")
    with pytest.raises(FolderError, match=r"cannot read image .*00001\.png") as info:
        write_folder_bag(ir_dir, vis_dir, tmp_path / "bag")
    assert "holds the 1 pair(s) before this one" in str(info.value)
    assert len(_images(tmp_path / "bag", io.RGB_TOPIC)) == 1  # closed and readable


# ----------------------------------------------------------------------------- reading errors
def test_reader_errors_name_the_problem(small_bag: Path, tmp_path: Path) -> None:
    with pytest.raises(io.BagError, match="bag not found"):
        io.BagReader(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(io.BagError, match=r"no metadata\.yaml"):
        io.BagReader(tmp_path / "plain")
    os.mkfifo(tmp_path / "pipe.mcap")
    with pytest.raises(io.BagError, match="not a bag folder or a regular"):
        io.BagReader(tmp_path / "pipe.mcap")
    truncated = tmp_path / "truncated"
    shutil.copytree(small_bag, truncated)
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:200])  # cut before its first message: nothing to play
    with pytest.raises(io.BagError, match=r"cannot open bag.*no message is readable"):
        io.BagReader(truncated)


def _all_messages(bag: Path) -> list[tuple[str, int, bytes]]:
    with io.BagReader(bag) as reader:
        return [(topic, log_ns, bytes(raw)) for topic, _, log_ns, raw in reader.messages()]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("metadata", [True, False], ids=["metadata", "killed-no-metadata"])
def test_truncated_bag_reads_everything_before_the_break(tmp_path, storage, metadata) -> None:
    whole = tmp_path / "whole"
    write_synthetic_bag(whole, SMALL, storage=storage)
    reference = _all_messages(whole)
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    data_file = next(p for p in cut.iterdir() if p.suffix in (".mcap", ".db3"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    if not metadata:  # a killed recorder writes no metadata.yaml
        (cut / "metadata.yaml").unlink()
    read = []
    with io.BagReader(cut) as reader:
        assert reader.truncated and data_file.name in reader.truncated
        with pytest.raises(io.BagError, match="corrupt or truncated"):
            for topic, _, log_ns, raw in reader.messages():
                read.append((topic, log_ns, bytes(raw)))
        assert 0 < len(read) == reader.message_count < len(reference)
        assert sum(t.count for t in reader.topics.values()) == reader.message_count
        assert reader.start_ns == reference[0][1] and reader.end_ns == read[-1][1] + 1
    assert read == reference[: len(read)]  # what was recorded before the break, unchanged
    with io.BagReader(whole) as reader:
        assert reader.truncated is None


def test_bag_info_says_a_bag_is_truncated(small_bag: Path, tmp_path: Path, capsys) -> None:
    cut = tmp_path / "cut"
    shutil.copytree(small_bag, cut)
    mcap = next(cut.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 3 // 4])
    assert cli_main(["bag", "info", str(cut)]) == 1
    out = capsys.readouterr().out
    assert "TRUNCATED" in out and io.RGB_TOPIC in out


def corrupt_middle_chunk(bag: Path) -> None:
    """Break the zstd frame of a chunk in the middle of the bag's mcap file."""
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    frames = [m.start() for m in re.finditer(re.escape(bytes.fromhex("28b52ffd")), data)]
    assert len(frames) >= 3, "the bag needs several compressed chunks"
    pos = frames[len(frames) // 2]
    data[pos : pos + 4] = b"JUNK"
    mcap.write_bytes(bytes(data))


def test_corrupt_chunk_is_reported_after_the_readable_messages(small_bag: Path, tmp_path) -> None:
    bag = tmp_path / "corrupt"
    shutil.copytree(small_bag, bag)
    corrupt_middle_chunk(bag)
    count = 0
    with io.BagReader(bag) as reader, pytest.raises(io.BagError, match="corrupt or truncated"):
        for _ in reader.messages():
            count += 1
    assert count > 0


def test_bag_info_cli(small_bag: Path, capsys) -> None:
    assert cli_main(["bag", "info", str(small_bag)]) == 0
    out = capsys.readouterr().out
    assert io.THERMAL_TOPIC in out and "sensor_msgs/msg/Image" in out
    assert cli_main(["bag", "info", str(small_bag / "missing")]) == 2


def test_json_documents_round_trip() -> None:
    doc = io.ground_truth_doc(123, "rgb", (10, 20), [[1.0, 2.0, 3.0, 4.0]], [7])
    msg = io.json_msg(doc)
    raw = io.TYPESTORE.serialize_cdr(msg, io.STRING)
    assert json.loads(io.BagReader.deserialize(raw, io.STRING).data) == doc
    np.testing.assert_array_equal(io.boxes_from_ground_truth(doc), [[1, 2, 3, 4]])
    with pytest.raises(io.BagError, match="x1, y1, x2, y2"):
        io.boxes_from_ground_truth({"boxes": [[1, 2, 3]]})
    assert io.parse_ground_truth(doc)[0] == 123


@pytest.mark.parametrize(
    ("change", "message"),
    [({"boxes": [["a", 2, 3, 4]]}, "numbers"), ({"boxes": [[1, None, 3, 4]]}, "null"),
     ({"boxes": "1,2,3,4"}, "numbers|x1, y1"), ({"boxes": {"x": 1}}, "numbers|x1, y1"),
     ({"boxes": [[1, 2, float("nan"), 4]]}, "NaN"), ({"boxes": [[5, 2, 3, 4]]}, "x2 >= x1"),
     ({"stamp_ns": "123"}, "integer"), ({"stamp_ns": 1.5}, "integer"),
     ({"stamp_ns": None}, "integer"), ({"stamp_ns": True}, "integer")],
)  # fmt: skip
def test_malformed_ground_truth_is_a_bag_error(change, message) -> None:
    doc = {**io.ground_truth_doc(123, "rgb", (10, 20), [[1.0, 2.0, 3.0, 4.0]]), **change}
    with pytest.raises(io.BagError, match=message):
        io.parse_ground_truth(doc)
    with pytest.raises(io.BagError, match="no stamp_ns"):
        io.ground_truth_stamp({"boxes": []})


# ----------------------------------------------------------------------------- params file
def _launch_check(params_file: Path, monkeypatch) -> dict:
    """What launch/fusion.launch.py resolves from ``params_file`` (its own checks, run against
    stand-ins for `launch`, which is not installed here)."""
    import runpy
    import sys
    import types

    repo = Path(__file__).resolve().parent.parent
    for name in ("launch", "launch.actions", "launch_ros", "launch_ros.actions",
                 "ament_index_python", "ament_index_python.packages"):  # fmt: skip
        module = types.ModuleType(name)
        for attr in ("LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction", "Node"):
            setattr(module, attr, type(attr, (), {"__init__": lambda self, *a, **k: None}))
        module.get_package_share_directory = lambda package: str(repo)
        monkeypatch.setitem(sys.modules, name, module)
    launch = runpy.run_path(str(repo / "launch" / "fusion.launch.py"))
    arguments = {name: default for name, default, _ in launch["argument_table"](repo / "config")}
    arguments["params_file"] = str(params_file)
    return launch["resolve_parameters"](arguments, [], repo / "config")["fusion_node"]


def test_synth_writes_the_params_the_launch_accepts(small_bag: Path, monkeypatch, capsys) -> None:
    path = small_bag / bag_params.PARAMS_FILE
    node = yaml.safe_load(path.read_text())["fusion_node"]["ros__parameters"]
    with io.BagReader(small_bag) as reader:
        h = io.homography_from_calibration(_calibration(reader))
    np.testing.assert_allclose(np.reshape(node["homography"], (3, 3)), h, atol=1e-9)
    assert node["thermal_norm"] == "percentile"  # mono16 counts need a per-frame window
    assert all(isinstance(v, float) for v in node["homography"])  # a double array, not ints
    assert bag_params.read_params(small_bag) == node
    resolved = _launch_check(path, monkeypatch)
    assert resolved["homography"] == node["homography"]
    assert cli_main(["bag", "info", str(small_bag)]) == 0
    out = capsys.readouterr().out
    assert (f"ros2 launch mmdrfuse_ros fusion.launch.py params_file:={path.resolve()} "
            "use_sim_time:=true") in out
    assert f"ros2 bag play {small_bag.resolve()} --clock" in out


def test_params_are_checked_against_the_node_table(tmp_path: Path, monkeypatch) -> None:
    for bad, message in [({"homografy": [1.0] * 9}, "unknown parameter"),
                         ({"homography": [1, 0, 0, 0, 1, 0, 0, 0, 1]}, "expected double array"),
                         ({"thermal_norm": "median"}, "thermal_norm"),
                         ({"homography": [0.0] * 9}, "singular")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            bag_params.write_params(tmp_path, bad, "a test")
    assert not (tmp_path / bag_params.PARAMS_FILE).exists()
    written = tmp_path / "by_hand.yaml"  # the launch file refuses what check_params refuses
    written.write_text("fusion_node:\n  ros__parameters:\n"
                       "    homography: [1, 0, 0, 0, 1, 0, 0, 0, 1]\n")
    with pytest.raises(Exception, match=r"homography: .*write 1\.0"):
        _launch_check(written, monkeypatch)


def test_from_folders_homography_travels_with_the_bag(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    ir_dir, vis_dir, ann = tmp_path / "ir", tmp_path / "vi", tmp_path / "ann"
    for folder in (ir_dir, vis_dir, ann):
        folder.mkdir()
    cv2.imwrite(str(ir_dir / "a.png"), rng.integers(0, 256, (40, 50), np.uint8))
    cv2.imwrite(str(vis_dir / "a.png"), rng.integers(0, 256, (80, 100, 3), np.uint8))
    _voc(ann / "a.xml", [[20, 10, 60, 70]], size=(100, 80))
    h = np.diag([2.0, 2.0, 1.0])  # thermal pixels -> visible pixels, twice the size
    np.save(tmp_path / "h.npy", h)
    assert cli_main(["bag", "from-folders", "--ir", str(ir_dir), "--vis", str(vis_dir),
                     "--annotations", str(ann), "--homography", str(tmp_path / "h.npy"),
                     "--out", str(tmp_path / "bag"), "--no-progress"]) == 0  # fmt: skip
    with io.BagReader(tmp_path / "bag") as reader:
        np.testing.assert_array_equal(io.homography_from_calibration(_calibration(reader)), h)
        thermal_gt = reader.read_json(io.GROUND_TRUTH_THERMAL_TOPIC)[0][1]
    assert thermal_gt["boxes"] == [[10.0, 5.0, 30.0, 35.0]]
    assert (thermal_gt["width"], thermal_gt["height"]) == (50, 40)
    node = bag_params.read_params(tmp_path / "bag")
    assert node == {"thermal_norm": "auto", "homography": h.reshape(-1).tolist(),
                    "thermal_smoothing": 0.0}  # 8-bit thermal; dataset pairs are no video
    _launch_check(bag_params.params_path(tmp_path / "bag"), monkeypatch)


def test_from_folders_limit_below_one_is_refused(tmp_path: Path, capsys) -> None:
    ir_dir, vis_dir = _write_pairs(tmp_path, 2)
    for limit in ("-1", "0"):
        assert cli_main(["bag", "from-folders", "--ir", str(ir_dir), "--vis", str(vis_dir),
                         "--out", str(tmp_path / "bag"), "--limit", limit,
                         "--no-progress"]) == 2  # fmt: skip
        assert "--limit must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()
    with pytest.raises(FolderError, match="--limit"):
        write_folder_bag(ir_dir, vis_dir, tmp_path / "bag", limit=-1)
    summary = write_folder_bag(ir_dir, vis_dir, tmp_path / "bag")
    assert bag_params.read_params(tmp_path / "bag") == {"thermal_norm": "auto",
                                                        "thermal_smoothing": 0.0}
    assert summary.params == str(tmp_path / "bag" / bag_params.PARAMS_FILE)


def test_a_full_disk_while_writing_is_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from rosbags.rosbag2 import Writer

    calls = {"n": 0}
    real_write = Writer.write

    def write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Writer, "write", write)
    code = cli_main(["bag", "synth", "--out", str(tmp_path / "bag"), "--duration", "0.5",
                     "--rgb-size", "160x96", "--thermal-size", "80x64", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "keeps the 5 messages" in err
