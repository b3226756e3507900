"""``mmdrfuse metrics`` on real image files in a temporary folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mmdrfuse_ros.cli import main
from mmdrfuse_ros.datasets import read_grey
from mmdrfuse_ros.metrics import ALL_METRICS, compute_metrics


def _pair(seed: int, h: int = 48, w: int = 56):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    ir = (100 + 60 * np.sin(x / 5.0) + 20 * rng.random((h, w))).astype(np.uint8)
    vis = (40 + 3 * y + 30 * rng.random((h, w))).astype(np.uint8)
    return ir, vis


@pytest.fixture
def folders(tmp_path):
    for sub in ("ir", "vi", "fused"):
        (tmp_path / sub).mkdir()
    for k, name in enumerate(("a", "b", "c")):
        ir, vis = _pair(k)
        cv2.imwrite(str(tmp_path / "ir" / f"{name}.png"), ir)
        # the visible image as colour JPEG-free BGR PNG: read back as grey like the evaluator
        cv2.imwrite(str(tmp_path / "vi" / f"{name}.png"), cv2.merge([vis, vis // 2, vis]))
        fused = ((ir.astype(np.uint16) + vis) // 2).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "fused" / f"{name}.png"), fused)
    return tmp_path


def _argv(root, *extra):
    return [
        "metrics",
        "--ir",
        str(root / "ir"),
        "--vis",
        str(root / "vi"),
        "--fused",
        str(root / "fused"),
        "--no-progress",
        *extra,
    ]


def test_read_grey_matches_the_evaluator_recipe(folders):
    path = folders / "vi" / "a.png"
    bgr = cv2.imread(str(path)).astype(np.float32)
    expected = np.round(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert np.array_equal(read_grey(path), expected)
    assert read_grey(folders / "ir" / "a.png").dtype == np.float64
    with pytest.raises(ValueError, match="cannot read"):
        read_grey(folders / "missing.png")


def test_table_json_and_csv(folders, capsys):
    out_json, out_csv = folders / "m.json", folders / "m.csv"
    assert main(_argv(folders, "--json", str(out_json), "--csv", str(out_csv))) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", *ALL_METRICS]
    assert [line.split()[0] for line in table[2:]] == ["a", "b", "c", "mean"]

    doc = json.loads(out_json.read_text())
    assert [p["name"] for p in doc["pairs"]] == ["a", "b", "c"]
    assert list(doc["mean"]) == list(ALL_METRICS)
    assert doc["errors"] == []
    ir, vis, fused = (read_grey(folders / d / "b.png") for d in ("ir", "vi", "fused"))
    expected = compute_metrics(ir, vis, fused)
    for name in ALL_METRICS:
        assert doc["pairs"][1][name] == pytest.approx(expected[name], rel=1e-12)
        mean = np.mean([p[name] for p in doc["pairs"]])
        assert doc["mean"][name] == pytest.approx(mean, rel=1e-12)

    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["name", *ALL_METRICS]
    assert [r[0] for r in rows[1:]] == ["a", "b", "c", "mean"]
    assert float(rows[2][1]) == pytest.approx(expected["EN"], rel=1e-12)


def test_size_mismatch_is_reported_by_name_and_the_rest_computed(folders, capsys):
    cv2.imwrite(str(folders / "fused" / "b.png"), np.zeros((10, 12), np.uint8))
    out_json = folders / "m.json"
    assert main(_argv(folders, "--json", str(out_json), "--metrics", "EN,SSIM")) == 1
    captured = capsys.readouterr()
    assert "b: sizes differ" in captured.err and "fused 12x10" in captured.err
    doc = json.loads(out_json.read_text())
    assert [p["name"] for p in doc["pairs"]] == ["a", "c"]
    assert list(doc["pairs"][0]) == ["name", "EN", "SSIM"]
    assert doc["errors"][0]["name"] == "b"


def test_fused_without_sources_and_sources_without_fused(folders, capsys):
    cv2.imwrite(str(folders / "fused" / "zzz.png"), np.zeros((48, 56), np.uint8))
    (folders / "fused" / "a.png").unlink()
    assert main(_argv(folders, "--metrics", "EN")) == 1
    err = capsys.readouterr().err
    assert "zzz: no ir or vis image" in err
    assert "1 source pair(s) have no fused image" in err


def test_identical_images_write_valid_json(folders):
    for sub in ("vi", "fused"):
        for name in ("a", "b", "c"):
            src = folders / "ir" / f"{name}.png"
            (folders / sub / f"{name}.png").write_bytes(src.read_bytes())
    out_json = folders / "m.json"
    assert main(_argv(folders, "--json", str(out_json), "--metrics", "PSNR,MSE")) == 0
    doc = json.loads(out_json.read_text())  # strict JSON: +inf PSNR is written as null
    assert doc["pairs"][0]["PSNR"] is None and doc["pairs"][0]["MSE"] == 0.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--metrics", "EN,NOPE"], "unknown metric"), ([], "is not a directory")],
)
def test_usage_errors_exit_2(folders, capsys, extra, message):
    argv = _argv(folders, *extra)
    if not extra:
        argv[argv.index("--ir") + 1] = str(folders / "nowhere")
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_command_line_entry_point(folders):
    done = subprocess.run(
        [sys.executable, "-m", "mmdrfuse_ros.cli", *_argv(folders, "--metrics", "EN")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split()[0] == "mean"
