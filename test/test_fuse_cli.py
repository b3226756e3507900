"""``mmdrfuse fuse`` end to end: folders and single files, bad pairs reported, good ones written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmdrfuse_ros.cli import main


def _write_pairs(root: Path, names: list[str], size=(48, 64)) -> None:
    rng = np.random.default_rng(0)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(root / "ir" / f"{name}.png"), rng.integers(0, 255, size, dtype=np.uint8))
        cv2.imwrite(str(root / "vi" / f"{name}.png"),
                    rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def test_roadscene_pairs_are_fused_and_bad_ones_reported(roadscene, tmp_path, capsys):
    names = sorted(p.stem for p in (roadscene / "ir").glob("*.jpg"))[:3]
    data = tmp_path / "data"
    for sub in ("ir", "vi"):
        (data / sub).mkdir(parents=True)
        for name in names:
            shutil.copy(roadscene / sub / f"{name}.jpg", data / sub)
    shutil.copy(roadscene / "ir" / f"{names[0]}.jpg", data / "ir" / "lonely.jpg")  # no partner
    (data / "ir" / "broken.png").write_bytes(b"not a png")
    (data / "vi" / "broken.png").write_bytes(b"not a png")
    cv2.imwrite(str(data / "ir" / "small.png"), np.zeros((10, 10), np.uint8))
    cv2.imwrite(str(data / "vi" / "small.png"), np.zeros((12, 10, 3), np.uint8))

    code = main(["fuse", "--ir", str(data / "ir"), "--vis", str(data / "vi"),
                 "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    for name in names:
        fused = cv2.imread(str(tmp_path / "out" / f"{name}.png"))
        visible = cv2.imread(str(data / "vi" / f"{name}.jpg"))
        assert fused is not None and fused.shape == visible.shape
    assert "lonely" in err and "broken" in err and "small" in err and "sizes differ" in err
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == names


def test_dataset_root_and_single_file(tmp_path, capsys):
    _write_pairs(tmp_path / "set", ["a", "b"])
    assert main(["fuse", "--ir", str(tmp_path / "set"), "--out", str(tmp_path / "o")]) == 0
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"a.png", "b.png"}
    single = tmp_path / "one.png"
    assert main(["fuse", "--ir", str(tmp_path / "set/ir/a.png"), "--vis",
                 str(tmp_path / "set/vi/a.png"), "--out", str(single), "--color", "gray"]) == 0
    assert cv2.imread(str(single), cv2.IMREAD_UNCHANGED).shape == (48, 64)
    assert "fused 1 of 1" in capsys.readouterr().out


def test_16bit_thermal_files_are_normalised(tmp_path):
    root = tmp_path / "set"
    _write_pairs(root, ["a"])
    warm = np.full((48, 64), 30000, np.uint16)
    warm[10:20, 10:20] = 31000  # a person, 1000 counts warmer than the background
    cv2.imwrite(str(root / "ir" / "a.png"), warm)
    assert main(["fuse", "--ir", str(root), "--out", str(tmp_path / "o"), "--color", "gray"]) == 0
    fused = cv2.imread(str(tmp_path / "o" / "a.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert fused[12:18, 12:18].mean() > fused[30:40, 30:40].mean() + 20


def test_stills_are_min_max_stretched_unless_told_otherwise(tmp_path):
    root = tmp_path / "set"
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(root / "ir" / "a.png"), rng.integers(100, 121, (48, 64), dtype=np.uint8))
    cv2.imwrite(str(root / "vi" / "a.png"), rng.integers(100, 121, (48, 64, 3), dtype=np.uint8))
    spans = {}
    for mapping in ("minmax", "raw", None):
        out = tmp_path / f"o-{mapping}"
        extra = ["--output-mapping", mapping] if mapping else []
        assert main(["fuse", "--ir", str(root), "--out", str(out), "--color", "gray",
                     *extra]) == 0
        fused = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
        spans[mapping] = (int(fused.min()), int(fused.max()))
    assert spans["minmax"] == spans[None] == (0, 255)  # the default is the authors' stretch
    assert spans["raw"][1] - spans["raw"][0] < 128  # a low-contrast pair stays low-contrast


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--weights", "missing.pt"], "not found"), (["--homography", "nope.txt"], "homography"),
     (["--output-mapping", "percentile", "--output-percentiles", "60", "40"],
      "output percentiles must satisfy")],
)
def test_bad_options_exit_2_with_a_message(tmp_path, capsys, extra, message):
    _write_pairs(tmp_path / "set", ["a"])
    code = main(["fuse", "--ir", str(tmp_path / "set"), "--out", str(tmp_path / "o"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_inputs_fail_clearly(tmp_path, capsys):
    assert main(["fuse", "--ir", str(tmp_path / "no"), "--vis", str(tmp_path / "pe"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["fuse", "--ir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "--vis is required" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "mmdrfuse_ros.cli", "fuse", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--ir" in result.stdout and "--backend" in result.stdout
