"""Replay: a short synthetic bag through the real nodes over real DDS, the report, bad input.

DDS stays on loopback with a domain of this test run (test/conftest.py).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_bag import corrupt_middle_chunk  # a sibling test module (rootdir on sys.path)

from mmdrfuse_ros.bag import io
from mmdrfuse_ros.bag.synth import SynthConfig, write_synthetic_bag
from mmdrfuse_ros.cli import main as cli_main
from mmdrfuse_ros.replay.measurements import Measurements
from mmdrfuse_ros.replay.plan import ReplayOptions, homography_argument, plan_bag
from mmdrfuse_ros.replay.quality import Frames, detection_ap, planned_ap_stamps
from mmdrfuse_ros.replay.report import SampleFrame, terminal_summary, write_report
from mmdrfuse_ros.replay.run import run_replay

# small enough to be quick, big enough for several mcap chunks; 15/9 Hz leaves RGB frames
# without a thermal partner, so "unmatched" is exercised
TINY = SynthConfig(duration_s=2.0, rgb_rate_hz=15.0, thermal_rate_hz=9.0,
                   rgb_size=(480, 270), thermal_size=(320, 256), pedestrians=3)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "tiny"
    write_synthetic_bag(out, TINY)
    return out


def _options(bag: Path, report: Path, **kw) -> ReplayOptions:
    settings = dict(progress=False, metrics_frames=3, samples=2, ap_frames=12, quiet_s=1.0,
                    start_timeout_s=30.0, fastdds_profile="")  # fmt: skip
    settings.update(kw)
    return ReplayOptions(bag=bag, report=report, **settings)


def _files(report_dir: Path) -> set[str]:
    return {p.name for p in report_dir.iterdir()}


# ----------------------------------------------------------------------------- end to end
@pytest.mark.ros
def test_replay_end_to_end(tiny_bag: Path, tmp_path: Path) -> None:
    report, code = run_replay(_options(tiny_bag, tmp_path / "report"))
    assert code == 0, report.get("errors")
    assert report["status"] == "ok"
    assert {"report.json", "report.md", "report.html", "latency_histogram.png",
            "rate_timeline.png", "samples.png"} <= _files(tmp_path / "report")  # fmt: skip
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["counts"] == report["counts"]

    c = report["counts"]
    with io.BagReader(tiny_bag) as reader:
        topics = reader.topics
    assert c["published_thermal"] == topics[io.THERMAL_TOPIC].count
    assert c["published_rgb"] == topics[io.RGB_TOPIC].count
    # the counts add up: in = synchronised + unmatched; fused + dropped = synchronised
    assert c["frames_in"] == c["received_thermal"] + c["received_rgb"]
    assert c["frames_in"] == 2 * c["synchronised"] + c["unmatched"]
    assert c["unmatched"] == c["unmatched_evicted"] + c["unmatched_still_queued"]
    assert c["unmatched"] > 0  # 15 Hz RGB against 9 Hz thermal
    assert c["fused"] + c["dropped_after_sync"] == c["synchronised"]
    assert c["fused"] > 0 and c["recorded_fused"] == c["fused"]
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    assert {ch["name"] for ch in report["checks"]} >= {"in = synchronised + unmatched",
                                                       "fused + dropped = synchronised"}

    for stream in ("fused", "detections", "floor"):
        lat = report["latency_ms"][stream]
        assert lat["n"] > 0
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["throughput_hz"]["fused_received"] > 0

    results = report["detection"]["results"]
    for modality in ("fused", "thermal", "visible"):
        assert 0.0 <= results[modality]["AP50"] <= 1.0
        assert 0.0 <= results[modality]["AP"] <= results[modality]["AP50"]
        assert results[modality]["num_gt"] > 0
    assert results["fused"]["num_images"] == report["detection"]["frames"]
    # the AP frames come from the bag, not from what the nodes delivered
    plan = plan_bag(_options(tiny_bag, tmp_path / "unused"))
    assert report["detection"]["frames"] == len(planned_ap_stamps(plan, 12))
    assert 0 <= report["detection"]["fused_missing"] <= report["detection"]["frames"]

    metrics = report["fusion_metrics"]
    assert 1 <= metrics["frames"] <= 3
    assert set(metrics["mean"]) == {"EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"}
    assert all(math.isfinite(v) for v in metrics["mean"].values())

    md = (tmp_path / "report" / "report.md").read_text()
    assert "AP@0.5" in md and "fused" in md and "thermal" in md and "visible" in md
    assert "data:image/png;base64," in (tmp_path / "report" / "report.html").read_text()
    assert "latency" in terminal_summary(report)


@pytest.mark.ros
def test_replay_corrupt_bag_plays_what_it_can_and_says_so(tiny_bag: Path, tmp_path: Path) -> None:
    bag = tmp_path / "corrupt"
    shutil.copytree(tiny_bag, bag)
    corrupt_middle_chunk(bag)
    report, code = run_replay(_options(bag, tmp_path / "report", detector=False, floor=False))
    assert code == 1
    assert report["status"] == "error"
    assert any("corrupt or truncated" in e for e in report["errors"])
    with io.BagReader(tiny_bag) as reader:
        total = reader.topics[io.RGB_TOPIC].count
    # what came before the broken chunk was played, measured and written
    assert 0 < report["counts"]["published_rgb"] < total
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["status"] == "error" and saved["counts"]["published_rgb"] > 0
    assert "did not complete" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.ros
@pytest.mark.slow
def test_replay_loop_keeps_time_running_forward(tiny_bag: Path, tmp_path: Path) -> None:
    report, code = run_replay(_options(tiny_bag, tmp_path / "r", loop=2, detector=False,
                                       rate=2.0))  # fmt: skip
    assert code == 0, report.get("errors")
    with io.BagReader(tiny_bag) as reader:
        rgb = reader.topics[io.RGB_TOPIC].count
    assert report["counts"]["published_rgb"] == 2 * rgb
    assert report["fusion_node_stats"]["time_jumps_back"] == 0
    assert all(check["ok"] for check in report["checks"])


@pytest.mark.ros
@pytest.mark.slow
def test_replay_external_node_measured_through_diagnostics(tiny_bag: Path, tmp_path) -> None:
    """--external: a fusion node in another process; counts come from its /diagnostics."""
    h = plan_bag(_options(tiny_bag, tmp_path / "r")).homography  # the bag's calibration
    args = [sys.executable, "-m", "mmdrfuse_ros.nodes.fusion_node", "--ros-args",
            "-p", "use_sim_time:=true",
            "-p", "homography:=" + homography_argument(h).replace(" ", "")]  # fmt: skip
    node = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        report, code = run_replay(_options(tiny_bag, tmp_path / "r", external=True,
                                           detector=False, floor=False))  # fmt: skip
    finally:
        node.terminate()
        node.wait(timeout=10)
    assert code == 0, (report.get("errors"), report.get("checks"))
    assert "diagnostics" in report["counts_source"]
    c = report["counts"]
    assert c["fused"] > 0 and c["fused"] + c["dropped_after_sync"] == c["synchronised"]


# ----------------------------------------------------------------------------- bad input
def _bag_with(path: Path, thermal: tuple[str, str] | None, rgb: bool = True) -> Path:
    """A one-frame bag: RGB bgr8 on /rgb/image_raw, and a 'thermal' (topic, kind)."""
    with io.BagWriter(path) as writer:
        if rgb:
            img = np.zeros((64, 80, 3), np.uint8)
            writer.write(io.RGB_TOPIC, 1000, io.image_msg(img, "bgr8", 1000, "rgb"))
        if thermal is not None:
            topic, kind = thermal
            if kind == "string":
                writer.write(topic, 1000, io.json_msg({"not": "an image"}))
            else:
                img = np.zeros((64, 80, 3), np.uint8)
                writer.write(topic, 1000, io.image_msg(img, "bgr8", 1000, "th"))
    return path


def test_replay_missing_topic_wrong_type_wrong_encoding(tmp_path: Path) -> None:
    cases = [
        (_bag_with(tmp_path / "no_thermal", None), "no thermal topic '/thermal/image_raw'"),
        (_bag_with(tmp_path / "string", (io.THERMAL_TOPIC, "string")),
         "has type std_msgs/msg/String, expected sensor_msgs/msg/Image"),
        (_bag_with(tmp_path / "colour", (io.THERMAL_TOPIC, "bgr8")),
         "thermal encoding 'bgr8' is not supported"),
    ]  # fmt: skip
    for bag, message in cases:
        report_dir = tmp_path / f"report_{bag.name}"
        report, code = run_replay(_options(bag, report_dir))
        assert code == 2, bag.name
        assert report["status"] == "error"
        assert any(message in e for e in report["errors"]), report["errors"]
        saved = json.loads((report_dir / "report.json").read_text())
        assert saved["status"] == "error" and saved["errors"] == report["errors"]
        assert (report_dir / "report.md").is_file() and (report_dir / "report.html").is_file()


@pytest.mark.ros
def test_replay_refused_node_parameter(tiny_bag: Path, tmp_path: Path) -> None:
    report, code = run_replay(_options(tiny_bag, tmp_path / "r",
                                       fusion_params={"backend": "no-such-backend"}))  # fmt: skip
    assert code == 2
    assert any("--fusion-param" in e and "backend must be one of" in e for e in report["errors"])
    assert json.loads((tmp_path / "r" / "report.json").read_text())["status"] == "error"


def test_replay_topics_by_role(tmp_path: Path) -> None:
    bag = _bag_with(tmp_path / "renamed", None, rgb=False)
    shutil.rmtree(bag)
    with io.BagWriter(bag) as writer:
        writer.write("/flir/image", 1000, io.image_msg(np.zeros((8, 8), np.uint16), "mono16",
                                                      1000, "th"))  # fmt: skip
        writer.write("/cam/image", 1000, io.image_msg(np.zeros((8, 8, 3), np.uint8), "bgr8",
                                                     1000, "rgb"))  # fmt: skip
    plan = plan_bag(_options(bag, tmp_path / "r",
                             topics={"thermal": "/flir/image", "rgb": "/cam/image"}))  # fmt: skip
    assert (plan.thermal_topic, plan.rgb_topic) == ("/flir/image", "/cam/image")
    assert plan.thermal_stamps == plan.rgb_stamps == [1000]
    assert plan.homography is None and not plan.gt_rgb


def test_replay_cli_missing_bag_and_bad_options(tmp_path: Path, capsys) -> None:
    code = cli_main(["replay", str(tmp_path / "nope"), "--report", str(tmp_path / "r"),
                     "--no-progress"])  # fmt: skip
    assert code == 2
    assert "bag not found" in capsys.readouterr().err
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["status"] == "error"
    code = cli_main(["replay", str(tmp_path / "nope"), "--rate", "0", "--no-progress"])
    assert code == 2 and "--rate must be > 0" in capsys.readouterr().err
    code = cli_main(["replay", str(tmp_path / "nope"), "--topics", "lidar=/x", "--no-progress"])
    assert code == 2 and "unknown topic role" in capsys.readouterr().err


# ----------------------------------------------------------------------------- AP frames
def _ap_plan(n_frames: int) -> SimpleNamespace:
    """A bag plan stand-in: RGB and thermal stamps every 100 ms, one box of ground truth each."""
    stamps = [1_000_000_000 + 100_000_000 * i for i in range(n_frames)]
    box = np.array([[10.0, 10.0, 40.0, 80.0]])
    return SimpleNamespace(
        rgb_stamps=stamps,
        thermal_stamps=stamps,
        gt_rgb={s: box for s in stamps},
        gt_thermal={s: box for s in stamps},
    )


def _perfect(box: np.ndarray) -> list[list[float]]:
    return [[*box[0].tolist(), 0.9]]


def test_ap_frames_are_planned_from_the_bag_and_missing_frames_are_misses() -> None:
    plan = _ap_plan(100)
    chosen = planned_ap_stamps(plan, 10)  # type: ignore[arg-type]
    assert len(chosen) == 10 and chosen == sorted(chosen)
    assert chosen[0] == plan.rgb_stamps[0] and chosen[-1] == plan.rgb_stamps[-1]
    plan.gt_rgb[123] = plan.gt_rgb[chosen[0]]  # ground truth of a stamp the bag never plays
    assert planned_ap_stamps(plan, 10) == chosen  # type: ignore[arg-type]

    image = np.zeros((96, 64, 3), np.uint8)
    frames = Frames(rgb={s: image for s in chosen}, thermal={s: image[..., 0] for s in chosen},
                    pairing={s: s for s in chosen})  # fmt: skip
    calls: list[int] = []

    def detect(_: np.ndarray) -> list[list[float]]:
        calls.append(1)
        return _perfect(plan.gt_rgb[chosen[0]])

    sections = []
    for delivered in (chosen, chosen[::2]):  # a fast run, and a run that lost half the frames
        meas = Measurements()
        for s in delivered:
            meas.detections[s] = _perfect(plan.gt_rgb[s])
        sections.append(detection_ap(meas, plan, frames, chosen, detect, 10,  # type: ignore[arg-type]
                                     lambda: None).to_dict())  # fmt: skip
    full, half = sections
    assert full["frames"] == half["frames"] == 10
    assert (full["fused_missing"], half["fused_missing"]) == (0, 5)
    assert full["results"]["fused"]["AP50"] == pytest.approx(1.0)
    assert half["results"]["fused"]["AP50"] == pytest.approx(0.5, abs=0.02)  # misses count
    assert half["results"]["fused"]["num_images"] == 10 and half["results"]["fused"]["num_gt"] == 10
    assert half["fused_delivered"]["AP50"] == pytest.approx(1.0)
    assert half["fused_delivered"]["num_images"] == 5
    for modality in ("thermal", "visible"):  # offline: the same whatever the nodes delivered
        assert full["results"][modality] == half["results"][modality]
        assert full["results"][modality]["num_images"] == 10
    assert len(calls) == 2 * 2 * 10  # thermal + visible, per frame, per run
    assert "5 of 10" in half["note"]


# ----------------------------------------------------------------------------- report writer
def test_report_writer_partial_report(tmp_path: Path) -> None:
    report = {
        "status": "error",
        "errors": ["bag /x is corrupt or truncated: boom"],
        "bag": {"path": "/x", "duration_s": 2.0, "storage": "mcap"},
        "settings": {"rate": 1.0, "loop": 1},
        "counts": {"published_rgb": 10, "fused": 4},
        "checks": [{"name": "fused + dropped = synchronised", "ok": False, "detail": "4 vs 5"}],
        "latency_ms": {"fused": {"n": 3, "p50": 10.0, "p95": 12.0, "p99": 12.5, "max": 13.0}},
        "series": {"latency_ms": {"fused": [10.0, 11.0, 13.0]},
                   "events_s": {"fused_received": [0.1, 0.2, 0.5]}},
        "detection": {"results": {"fused": {"AP50": 0.5, "AP": 0.25, "num_images": 2,
                                            "num_gt": 4, "num_detections": 3},
                                  "thermal": {"error": "no frames with ground truth"}}},
        "fusion_metrics": {"frames": 1, "mean": {"EN": 6.5, "SSIM": float("nan")}},
    }  # fmt: skip
    sample = SampleFrame(
        stamp_ns=1, thermal=np.full((40, 50), 30000, np.uint16),
        visible=np.zeros((36, 64, 3), np.uint8), fused=np.full((36, 64, 3), 90, np.uint8),
        detections=[[2, 2, 20, 30, 0.9]], ground_truth=[[3, 3, 21, 31]],
    )  # fmt: skip
    files = write_report(tmp_path / "r", report, [sample])
    assert set(files) >= {"json", "markdown", "html", "latency_plot", "rate_plot", "samples"}
    saved = json.loads((tmp_path / "r" / "report.json").read_text())  # strict JSON: NaN -> null
    assert saved["fusion_metrics"]["mean"]["SSIM"] is None
    md = (tmp_path / "r" / "report.md").read_text()
    assert "did not complete" in md and "corrupt or truncated" in md and "MISMATCH" in md
    assert "| fused | 0.500 | 0.250 |" in md
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    summary = terminal_summary(report, tmp_path / "r")
    assert summary.startswith("REPLAY FAILED") and "COUNTS DO NOT ADD UP" in summary


def test_external_replay_keeps_the_detector_params_for_its_reference_detector(tmp_path) -> None:
    """--external: the nodes are elsewhere, but --detector-param still sets the offline
    thermal/visible detector (it was silently dropped)."""
    from mmdrfuse_ros.replay.session import detector_parameters

    params = {"backend": "onnx", "score_threshold": 0.2}
    external = _options(tmp_path / "bag", tmp_path / "r", external=True, detector_params=params)
    assert detector_parameters(external) == params
    inprocess = _options(tmp_path / "bag", tmp_path / "r", detector_params=params)
    assert detector_parameters(inprocess) == {"use_sim_time": True, **params}
