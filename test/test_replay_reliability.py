"""Replay under hostile conditions: signals, unusable report folders, bad bag contents,
truncated bags, misspelt parameters, and an external fusion node that is missing or misconfigured.

Signals are sent to a real ``mmdrfuse replay`` subprocess in a session of its own, so that
``os.killpg`` reaches it and its player child as a terminal's Ctrl-C would, and never pytest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mmdrfuse_ros.bag import io
from mmdrfuse_ros.bag.synth import SynthConfig, write_synthetic_bag
from mmdrfuse_ros.cli import main as cli_main
from mmdrfuse_ros.replay.plan import ReplayOptions
from mmdrfuse_ros.replay.run import run_replay

# long enough that a signal lands mid-playback, small frames so that it plays at rate on 2 cores
SHORT = SynthConfig(duration_s=12.0, rgb_rate_hz=10.0, thermal_rate_hz=10.0,
                    rgb_size=(320, 180), thermal_size=(160, 128), pedestrians=2)  # fmt: skip
TINY = SynthConfig(duration_s=1.5, rgb_rate_hz=10.0, thermal_rate_hz=10.0,
                   rgb_size=(320, 180), thermal_size=(160, 128), pedestrians=2)  # fmt: skip
PLAYING = "replay: playing"  # the line the replay prints on stderr when playback starts


@pytest.fixture(scope="module")
def short_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reliability") / "short"
    write_synthetic_bag(out, SHORT)
    return out


@pytest.fixture(scope="module")
def tiny_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reliability") / "tiny"
    write_synthetic_bag(out, TINY)
    return out


def _options(bag: Path, report: Path, **kw) -> ReplayOptions:
    settings = dict(progress=False, metrics_frames=1, samples=1, ap_frames=4, quiet_s=1.0,
                    start_timeout_s=30.0, fastdds_profile="", detector=False,
                    floor=False)  # fmt: skip
    settings.update(kw)
    return ReplayOptions(bag=bag, report=report, **settings)


def _count(bag: Path, topic: str) -> int:
    with io.BagReader(bag) as reader:
        return reader.topics[topic].count


# ----------------------------------------------------------------------------- signals
def _start_replay(bag: Path, report: Path, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "mmdrfuse_ros.cli", "replay", str(bag), "--report",
            str(report), "--no-progress", "--no-detector", "--no-floor", "--metrics-frames",
            "1", "--samples", "1", "--fastdds-profile", ""]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _wait_for_playback(proc: subprocess.Popen, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while PLAYING not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"playback never started (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    time.sleep(1.5)  # some frames out, most of the bag still to play


@pytest.mark.ros
@pytest.mark.parametrize(
    ("how", "signum", "code"),
    [("group", signal.SIGINT, 130), ("main", signal.SIGINT, 130),
     ("group", signal.SIGTERM, 143)],
    ids=["ctrl-c-group", "sigint-main-only", "sigterm-group"],
)
def test_signal_stops_playback_with_a_partial_interrupted_report(
    short_bag: Path, tmp_path: Path, how: str, signum: int, code: int
) -> None:
    report, log = tmp_path / "report", tmp_path / "replay.log"
    proc = _start_replay(short_bag, report, log)
    try:
        _wait_for_playback(proc, log)
        sent = time.monotonic()
        if how == "group":
            os.killpg(proc.pid, signum)
        else:
            os.kill(proc.pid, signum)
        rc = proc.wait(timeout=45)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    assert rc == code, text[-3000:]
    assert took < 30, f"took {took:.1f} s to stop"
    assert "Traceback" not in text, text[-3000:]
    saved = json.loads((report / "report.json").read_text())
    assert saved["status"] == "interrupted"
    assert any(signal.Signals(signum).name in e for e in saved["errors"]), saved["errors"]
    total = _count(short_bag, io.RGB_TOPIC)
    assert 0 < saved["counts"]["published_rgb"] < total  # stopped early, what it did is kept
    assert "interrupted" in (report / "report.md").read_text()


# ----------------------------------------------------------------------------- the player
class _Conn:
    """The parent's end of the pipe, as the player sees it: never says Stop, keeps what it got."""

    def __init__(self) -> None:
        self.sent: list = []

    def poll(self, timeout: float = 0.0) -> bool:
        return False

    def send(self, message) -> None:
        self.sent.append(message)


class _BrokenPublisher:
    def publish(self, raw) -> None:
        raise RuntimeError("publisher exploded")


class _Sink:
    def publish(self, msg) -> None:
        pass


def test_player_failure_that_is_not_the_end_of_the_bag_is_an_error(tiny_bag: Path) -> None:
    from mmdrfuse_ros.replay.player import Done, PlayerJob, _Playback

    with io.BagReader(tiny_bag) as reader:
        start, end = reader.start_ns, reader.end_ns
    job = PlayerJob(bag=str(tiny_bag), rate=50.0, loop=1, roles={io.RGB_TOPIC: "rgb"},
                    types={"rgb": io.IMAGE}, start_ns=start, loop_period_ns=end - start,
                    needed={})  # fmt: skip
    conn = _Conn()
    _Playback(job, conn, {"rgb": _BrokenPublisher()}, _Sink()).run()
    done = [m for m in conn.sent if isinstance(m, Done)]
    assert len(done) == 1 and done[0].error and "publisher exploded" in done[0].error


def test_loop_past_the_int32_stamp_range_is_refused_before_playing(tmp_path: Path) -> None:
    bag = tmp_path / "late"
    near_end = (2**31 - 2) * 1_000_000_000  # one second before header stamps overflow
    _write_pairs(bag, [near_end + i * 100_000_000 for i in range(5)])
    report, code = run_replay(_options(bag, tmp_path / "r", loop=3))
    assert code == 2
    assert any("--loop 3" in e and "header stamp" in e for e in report["errors"]), report["errors"]
    assert json.loads((tmp_path / "r" / "report.json").read_text())["status"] == "error"


# ----------------------------------------------------------------------------- report folder
def test_unusable_report_folder_is_refused_before_the_replay(tiny_bag: Path, tmp_path: Path,
                                                             capsys) -> None:  # fmt: skip
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = [(a_file, "is not a folder"), (Path("/proc/mmdrfuse_report"), "cannot write"),
             (a_file / "sub", "is not a folder"), (tiny_bag / "report", "inside the input"),
             (tiny_bag, "is the input")]  # fmt: skip
    for folder, message in cases:
        started = time.monotonic()
        code = cli_main(["replay", str(tiny_bag), "--report", str(folder), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2, folder
        assert message in err and "Traceback" not in err, err
        assert time.monotonic() - started < 5  # refused before any node starts
    assert a_file.read_text() == "not a folder" and not (tiny_bag / "report").exists()


def test_results_survive_an_output_error_at_the_end(tmp_path: Path, capsys) -> None:
    from mmdrfuse_ros.replay.saving import save_report
    from mmdrfuse_ros.replay.sections import ReplayReport

    report = ReplayReport(options={"rate": 1.0}, created_unix=0.0, machine="test")
    report.bag = {"path": "/x"}
    gone = tmp_path / "was_a_folder"
    gone.write_text("replaced by a file while the replay ran")
    folder = save_report(report, gone, [])
    assert folder is not None and folder != gone and (folder / "report.json").is_file()
    assert str(folder) in capsys.readouterr().err
    saved = json.loads((folder / "report.json").read_text())
    assert any(str(folder) in e for e in saved["errors"])  # the report says where it is


# ----------------------------------------------------------------------------- bad contents
def _write_pairs(bag: Path, stamps: list[int], gt: list[dict] | None = None,
                 log_step_ns: int = 100_000_000) -> Path:  # fmt: skip
    """Thermal mono16 + RGB bgr8 pairs with these header stamps, logged at a steady rate."""
    t0 = 1_000_000_000
    with io.BagWriter(bag) as writer:
        for i, stamp in enumerate(stamps):
            log = max(t0 + i * log_step_ns, stamp if stamp > 2**40 else 0)
            thermal = np.full((48, 64), 1000 + 50 * (i % 7), np.uint16)
            rgb = np.full((48, 64, 3), 40 + 10 * (i % 9), np.uint8)
            writer.write(io.THERMAL_TOPIC, log, io.image_msg(thermal, "mono16", stamp, "th"))
            writer.write(io.RGB_TOPIC, log, io.image_msg(rgb, "bgr8", stamp, "rgb"))
        for doc in gt or []:
            writer.write(io.GROUND_TRUTH_TOPIC, t0, io.json_msg(doc))
    return bag


def test_non_numeric_ground_truth_gives_a_report_and_exit_2(tmp_path: Path, capsys) -> None:
    good = {"stamp_ns": 0, "boxes": [[1, 2, 10, 20]]}
    cases = [({"stamp_ns": 0, "boxes": [["a", "b", "c", "d"]]}, "boxes must be numbers"),
             ({"stamp_ns": "noon", "boxes": []}, "stamp_ns must be an integer"),
             ({"boxes": []}, "no stamp_ns"),
             ({"stamp_ns": 0, "boxes": [[1, 2, float("nan"), 4]]}, "NaN"),
             ({"stamp_ns": 0, "boxes": [[1, 2, 3]]}, "x1, y1, x2, y2")]  # fmt: skip
    for i, (doc, message) in enumerate(cases):
        bag = _write_pairs(tmp_path / f"gt{i}", [0, 100_000_000], gt=[good, doc])
        code = cli_main(["replay", str(bag), "--report", str(tmp_path / f"r{i}"),
                         "--no-progress"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2, (doc, err)
        assert "Traceback" not in err
        saved = json.loads((tmp_path / f"r{i}" / "report.json").read_text())
        assert saved["status"] == "error"
        assert any("ground-truth message 1" in e and message in e for e in saved["errors"]), (
            saved["errors"])


@pytest.mark.ros
def test_repeated_and_restarting_stamps_keep_the_accounting_right(tmp_path: Path) -> None:
    step = 100_000_000
    stamps = [i * step for i in range(12)] + [i * step for i in range(12)]  # restarts at 0
    stamps[5] = stamps[4]  # and one repeats
    bag = _write_pairs(tmp_path / "restart", [s + 1_000_000_000 for s in stamps])
    report, code = run_replay(_options(bag, tmp_path / "r"))
    assert report["counts"]["published_rgb"] == len(stamps)
    for key in ("lost_in_transport_thermal", "lost_in_transport_rgb"):
        assert report["drops"][key] >= 0, report["drops"]
    latency = report["latency_ms"].get("fused", {"n": 0})
    assert latency["n"] > 0 and latency["min"] >= 0, latency
    check = next(c for c in report["checks"] if c["name"] == "header stamps unique and increasing")
    assert not check["ok"] and "repeat" in check["detail"] and "step back" in check["detail"]
    assert code == 1  # flagged, never a clean ok


# ----------------------------------------------------------------------------- truncated bags
def _truncate(bag: Path, suffix: str, keep: float = 0.6) -> None:
    data_file = next(bag.glob(f"*{suffix}"))
    data = data_file.read_bytes()
    data_file.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.ros
@pytest.mark.parametrize(("storage", "suffix"), [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_truncated_bag_plays_what_it_can_and_exits_1(tmp_path: Path, storage: str,
                                                     suffix: str) -> None:  # fmt: skip
    bag = tmp_path / f"cut_{storage}"
    write_synthetic_bag(bag, TINY, storage=storage)
    total = _count(bag, io.RGB_TOPIC)
    _truncate(bag, suffix)
    report, code = run_replay(_options(bag, tmp_path / "r"))
    assert code == 1, report["errors"]
    assert report["status"] == "error"
    assert any("truncated" in e for e in report["errors"]), report["errors"]
    assert 0 < report["counts"]["published_rgb"] < total


# ----------------------------------------------------------------------------- parameters
def test_misspelt_node_parameter_is_refused_with_the_known_names(tiny_bag: Path, tmp_path: Path,
                                                                  capsys) -> None:  # fmt: skip
    code = cli_main(["replay", str(tiny_bag), "--report", str(tmp_path / "r"), "--no-progress",
                     "--fusion-param", "thermal_nrom=auto"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "thermal_nrom" in err and "did you mean 'thermal_norm'" in err
    assert "backend" in err  # the known parameters are listed
    code = cli_main(["replay", str(tiny_bag), "--report", str(tmp_path / "r"), "--no-progress",
                     "--detector-param", "scor_threshold=0.2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "score_threshold" in err
    ReplayOptions(bag=tiny_bag, report=tmp_path / "r",
                  fusion_params={"use_sim_time": True,
                                 "qos_overrides./fused/image.publisher.depth": 5})  # fmt: skip


# ----------------------------------------------------------------------------- --external
@pytest.mark.ros
def test_external_without_a_fusion_node_fails_after_the_start_timeout(tiny_bag: Path,
                                                                      tmp_path: Path) -> None:
    started = time.monotonic()
    report, code = run_replay(_options(tiny_bag, tmp_path / "r", external=True,
                                       start_timeout_s=3.0))  # fmt: skip
    assert time.monotonic() - started < 30
    assert code == 1
    assert any("after 3 s still no" in e and "fused" in e for e in report["errors"])
    assert json.loads((tmp_path / "r" / "report.json").read_text())["status"] == "error"


@pytest.mark.ros
def test_external_node_with_another_homography_is_warned_about(tiny_bag: Path, tmp_path: Path,
                                                               capsys) -> None:  # fmt: skip
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from mmdrfuse_ros.nodes.fusion_node import FusionNode

    context = rclpy.Context()
    rclpy.init(context=context)
    wrong = [1.0, 0.0, 5.0, 0.0, 1.0, 7.0, 0.0, 0.0, 1.0]
    node = FusionNode(context=context, parameter_overrides=[
        Parameter("use_sim_time", value=True), Parameter("homography", value=wrong)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    try:
        report, _code = run_replay(_options(tiny_bag, tmp_path / "r", external=True))
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        rclpy.shutdown(context=context)
        spin.join(timeout=5)
    warnings = report["warnings"]
    assert any("the homography [1.0,0.0,5.0" in w and "params_file:=" in w for w in warnings)
    assert "WARNING" in capsys.readouterr().err
    assert "Warning" in (tmp_path / "r" / "report.md").read_text()


# ----------------------------------------------------------------------------- report header
def test_report_shows_detector_fallback_stages_and_interruption(tmp_path: Path) -> None:
    from mmdrfuse_ros.replay.report import render_markdown, terminal_summary

    report = {"status": "interrupted", "errors": ["interrupted by SIGINT during playback"],
              "settings": {"detector_fallback": "no YOLOX model: run mmdrfuse models fetch",
                           "detector_used": "hog", "detector_backend": "auto"},
              "warnings": ["the external fusion node has no homography set"],
              "stages_ms": {"fusion": {"network": {"p50": 1.5, "p95": 2.5}}}}  # fmt: skip
    md = render_markdown(report, {})
    assert "was interrupted" in md and "Detector fallback" in md and "mmdrfuse models fetch" in md
    assert "| fusion | network | 1.50 | 2.50 |" in md
    summary = terminal_summary(report)
    assert summary.startswith("REPLAY INTERRUPTED") and "DETECTOR FALLBACK" in summary
    assert "network 1.5/2.5" in summary
