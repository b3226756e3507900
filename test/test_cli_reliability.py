"""Hostile inputs to the commands that read image folders and write files: outputs that would
destroy inputs or cannot be written, files that lie (truncated JPEG/PNG), ambiguous names."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmdrfuse_ros import outputs
from mmdrfuse_ros.cli import main
from mmdrfuse_ros.datasets import (
    DatasetError,
    find_pairs,
    list_images,
    read_grey,
    read_luma,
    read_thermal_image,
    read_visible_image,
)
from mmdrfuse_ros.datasets.integrity import truncation

PROC = Path("/proc/mmdrfuse-test/out")


def _scene(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A smooth thermal/visible pair (a JPEG of noise would not look like a camera image)."""
    y, x = np.mgrid[0:h, 0:w]
    ir = (80 + x + y).astype(np.uint8)
    vis = np.dstack([(2 * x) % 256, (3 * y) % 256, (x + y) % 256]).astype(np.uint8)
    return ir, vis


def _write_set(root: Path, names: list[str], ext: str = ".png", size: tuple[int, int] = (48, 64)
               ) -> Path:
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    for name in names:
        ir, vis = _scene(*size)
        cv2.imwrite(str(root / "ir" / f"{name}{ext}"), ir)
        cv2.imwrite(str(root / "vi" / f"{name}{ext}"), vis)
    return root


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


# ----------------------------------------------------------------------------- outputs
def test_fuse_refuses_to_write_over_its_inputs(tmp_path, capsys):
    root = _write_set(tmp_path / "set", ["a", "b"])
    before = {sub: _digests(root / sub) for sub in ("ir", "vi")}
    cases = [
        ["--ir", root / "ir", "--vis", root / "vi", "--out", root / "vi"],  # is an input
        ["--ir", root / "ir", "--vis", root / "vi", "--out", root / "vi" / "fused"],  # inside
        ["--ir", root / "ir", "--vis", root / "vi", "--out", tmp_path],  # contains them
        ["--ir", root, "--out", root / "ir"],  # dataset root: the resolved folder
        ["--ir", root / "ir/a.png", "--vis", root / "vi/a.png", "--out", root / "ir/a.png"],
        ["--ir", root / "ir/a.png", "--vis", root / "vi/a.png", "--out", root / "ir"],
    ]
    for argv in cases:
        code = main(["fuse", *map(str, argv), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert "input" in err and "--out" in err, err
    assert {sub: _digests(root / sub) for sub in ("ir", "vi")} == before


def test_fuse_checks_its_output_before_the_work(tmp_path, capsys):
    root = _write_set(tmp_path / "set", ["a"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, reason in [(blocker, "not a folder"), (blocker / "sub", "not a folder"),
                        (PROC, "cannot write")]:  # fmt: skip
        assert main(["fuse", "--ir", str(root), "--out", str(out), "--quiet"]) == 2
        captured = capsys.readouterr()
        assert reason in captured.err and "fused" not in captured.out


def test_metrics_output_checks_come_before_the_work(tmp_path, capsys):
    root = _write_set(tmp_path / "set", ["a"])
    (root / "fused").mkdir()
    cv2.imwrite(str(root / "fused" / "a.png"), _scene()[0])
    base = ["metrics", "--ir", str(root / "ir"), "--vis", str(root / "vi"),
            "--fused", str(root / "fused"), "--no-progress"]  # fmt: skip
    before = _digests(root / "fused")
    for flag, out, reason in [("--json", root / "fused" / "a.png", "input"),
                              ("--csv", root / "vi" / "a.png", "input"),
                              ("--json", root, "is a folder"),
                              ("--json", PROC, "cannot write"),
                              ("--csv", root / "ir/a.png/x.csv", "not a folder")]:  # fmt: skip
        assert main([*base, flag, str(out)]) == 2, (flag, out)
        captured = capsys.readouterr()
        assert reason in captured.err and "mean" not in captured.out
    assert _digests(root / "fused") == before


def test_metrics_results_survive_a_failed_write(tmp_path, capsys, monkeypatch):
    root = _write_set(tmp_path / "set", ["a"])
    (root / "fused").mkdir()
    cv2.imwrite(str(root / "fused" / "a.png"), _scene()[0])
    target = tmp_path / "m.json"

    def disk_full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_replace_atomically", disk_full)
    code = main(["metrics", "--ir", str(root / "ir"), "--vis", str(root / "vi"),
                 "--fused", str(root / "fused"), "--no-progress", "--json", str(target)])
    err = capsys.readouterr().err
    assert code == 1 and not target.exists()
    saved = Path(err.split("saved it to ")[1].split()[0])
    try:
        assert json.loads(saved.read_text())["pairs"][0]["name"] == "a"
    finally:
        saved.unlink()


def test_bag_and_train_outputs_are_checked(tmp_path, capsys):
    root = _write_set(tmp_path / "set", ["a"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    commands = [
        ["bag", "from-folders", "--ir", root / "ir", "--vis", root / "vi", "--out",
         root / "vi" / "bag", "--no-progress"],
        ["bag", "synth", "--out", PROC, "--duration", "0.2", "--no-progress"],
        ["bag", "synth", "--out", blocker / "bag", "--duration", "0.2", "--no-progress"],
        ["train", "--data", root, "--out", root, "--preset", "cpu"],
        ["train", "--data", root, "--out", PROC, "--preset", "cpu"],
    ]
    for argv in commands:
        assert main([str(a) for a in argv]) == 2, argv
        assert "--out" in capsys.readouterr().err
    assert not (root / "vi" / "bag").exists()


def test_guard_sees_through_links(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    image = data / "a.png"
    image.write_bytes(b"x")
    (tmp_path / "alias").symlink_to(data)
    os.link(image, tmp_path / "hard.png")
    with pytest.raises(outputs.OutputError, match="is the input"):
        outputs.check_output(tmp_path / "alias", [data], kind="dir")
    with pytest.raises(outputs.OutputError, match="is the input"):
        outputs.check_output(tmp_path / "hard.png", [image], kind="file")
    outputs.check_output(tmp_path / "report.json", [data, image], kind="file")
    outputs.check_output(data / "notes.json", [data], kind="file")  # not an image: allowed
    with pytest.raises(outputs.OutputError, match="inside the input folder"):
        outputs.check_output(data / "b.png", [data], kind="file")


def test_prepare_output_makes_both_checks(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "taken").write_text("a file where a folder is asked for")
    with pytest.raises(outputs.OutputError, match="inside the input folder"):
        outputs.prepare_output(data / "b.png", [data], "file")
    with pytest.raises(outputs.OutputError, match=r"--report .* is not a folder"):
        outputs.prepare_output(tmp_path / "taken", [data], "dir", flag="--report")
    outputs.prepare_output(tmp_path / "out", [data], "dir")
    assert not (tmp_path / "out").exists()  # checks only: nothing is created


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(outputs.OutputError, match="cannot write"):
        outputs.ensure_writable(ro / "out", kind="dir")


# ----------------------------------------------------------------------------- files that lie
def test_truncated_jpeg_and_png_are_refused_by_every_reader(tmp_path):
    vis = _scene(120, 160)[1]
    for ext in (".jpg", ".png"):
        path = tmp_path / f"cut{ext}"
        cv2.imwrite(str(path), vis)
        _truncate(path)
        for reader in (read_thermal_image, read_visible_image, read_luma, read_grey):
            with pytest.raises(DatasetError, match="truncated"):
                reader(path)
    whole = tmp_path / "whole.jpg"
    cv2.imwrite(str(whole), vis)
    whole.write_bytes(whole.read_bytes() + b"\0\0trailer after the end marker")
    assert read_visible_image(whole).shape == vis.shape  # data after EOI is not a truncation
    assert truncation(whole.read_bytes()[:-40]) is not None  # end marker cut off


def test_truncated_jpeg_pair_is_reported_by_fuse_metrics_and_bag(tmp_path, capsys):
    root = _write_set(tmp_path / "set", ["a", "b"], ext=".jpg", size=(240, 320))
    _truncate(root / "vi" / "b.jpg")  # OpenCV's imread decodes it: the bottom half grey
    assert main(["fuse", "--ir", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "b: " in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png"]
    fused = tmp_path / "o"
    cv2.imwrite(str(fused / "b.png"), _scene(240, 320)[0])
    assert main(["metrics", "--ir", str(root / "ir"), "--vis", str(root / "vi"),
                 "--fused", str(fused), "--no-progress"]) == 1
    assert "b: " in capsys.readouterr().err
    assert main(["bag", "from-folders", "--ir", str(root / "ir"), "--vis", str(root / "vi"),
                 "--out", str(tmp_path / "bag"), "--no-progress"]) == 1
    assert "truncated" in capsys.readouterr().err


def test_ambiguous_names_are_refused_naming_both_files(tmp_path, capsys):
    root = _write_set(tmp_path / "set", ["a", "b"])
    cv2.imwrite(str(root / "vi" / "a.jpg"), np.zeros((48, 64, 3), np.uint8))  # stale copy
    with pytest.raises(DatasetError, match=r"a\.jpg.*a\.png"):
        list_images(root / "vi")
    with pytest.raises(DatasetError, match=r"a\.jpg.*a\.png"):
        find_pairs(root / "ir", root / "vi")
    assert list_images(root / "vi", strict=False)["a"].name == "a.jpg"
    fused = tmp_path / "fused"
    fused.mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(fused / f"{name}.png"), _scene()[0])
    commands = [
        ["fuse", "--ir", root / "ir", "--vis", root / "vi", "--out", tmp_path / "o", "--quiet"],
        ["metrics", "--ir", root / "ir", "--vis", root / "vi", "--fused", fused,
         "--no-progress"],
        ["bag", "from-folders", "--ir", root / "ir", "--vis", root / "vi", "--out",
         tmp_path / "bag", "--no-progress"],
    ]
    for argv, code in zip(commands, (1, 2, 2), strict=True):  # fuse: 1 as for any listing error
        assert main([str(a) for a in argv]) == code, argv
        err = capsys.readouterr().err
        assert "a.jpg" in err and "a.png" in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "bag").exists()


# ----------------------------------------------------------------------------- small options
@pytest.mark.parametrize(
    ("document", "message"),
    [({"h": [1, 0, 0, 0, 1, 0, 0, 0, 1]}, "without any of the keys"),
     ([[1, 0], [0, 1]], "9 values"), ([[0, 0, 0], [0, 0, 0], [0, 0, 1]], "singular"),
     (["a"] * 9, "numbers")],
)  # fmt: skip
def test_unusable_homography_files_exit_2(tmp_path, capsys, document, message):
    root = _write_set(tmp_path / "set", ["a"])
    h = tmp_path / "h.json"
    h.write_text(json.dumps(document))
    assert main(["fuse", "--ir", str(root), "--out", str(tmp_path / "o"),
                 "--homography", str(h)]) == 2
    assert message in capsys.readouterr().err


def test_homography_json_object_of_a_calibration_is_read(tmp_path):
    root = _write_set(tmp_path / "set", ["a"])
    h = tmp_path / "calibration.json"
    h.write_text(json.dumps({"homography": np.eye(3).tolist(), "rms_px": 0.4}))
    assert main(["fuse", "--ir", str(root), "--out", str(tmp_path / "o"),
                 "--homography", str(h)]) == 0


def test_unknown_device_exits_2(tmp_path, capsys):
    root = _write_set(tmp_path / "set", ["a"])
    assert main(["fuse", "--ir", str(root), "--out", str(tmp_path / "o"), "--device", "mps"]) == 2
    assert "mps" in capsys.readouterr().err


def test_voc_annotations_that_lie_are_refused(tmp_path):
    from mmdrfuse_ros.datasets import parse_voc

    bad = tmp_path / "a.xml"
    bad.write_text("<annotation><size><width>wide</width><height>48</height></size>"
                   "</annotation>")
    with pytest.raises(DatasetError, match="not a number"):
        parse_voc(bad)
    fifo = tmp_path / "b.xml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(outcome, parse_voc, fifo), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader so that the test run can end
        with open(fifo, "w"):
            pass
        pytest.fail("parse_voc waited on a FIFO")
    assert isinstance(outcome[0], DatasetError) and "not a regular file" in str(outcome[0])


def _catch(outcome: list[BaseException], function, *args) -> None:
    try:
        function(*args)
    except BaseException as exc:  # the test inspects it
        outcome.append(exc)
