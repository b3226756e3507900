"""``run_replay``: plan the bag, play it through the nodes, analyse, write the report.

Exit code 0 when everything ran and the counts add up, 1 when the replay stopped on an error or
a check failed (the report then holds what was measured before), 2 when the input could not be
used at all (the bag, or a node parameter). Every path writes a report.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmdrfuse_ros.bag import io
from mmdrfuse_ros.replay.analysis import counts_section, latency_section
from mmdrfuse_ros.replay.measurements import Measurements
from mmdrfuse_ros.replay.plan import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_PARTIAL,
    BagPlan,
    ReplayError,
    ReplayOptions,
    ReplayStopped,
    homography_argument,
    plan_bag,
)
from mmdrfuse_ros.replay.quality import evaluate
from mmdrfuse_ros.replay.report import SampleFrame, write_report
from mmdrfuse_ros.replay.sections import ReplayReport, SessionInfo
from mmdrfuse_ros.transport import profile_environment

_RECORDER_ERRORS_SHOWN = 20


@dataclass
class _Played:
    """What the analysis needs from the playback beside the measurements."""

    fusion_params: dict[str, Any]
    detector_params: dict[str, Any]
    node_stats: dict[str, Any] | None = None
    status_name: str = ""  # the fusion node's DiagnosticStatus name
    exit_code: int = EXIT_OK  # of the error that stopped the playback, if one did


def run_replay(options: ReplayOptions) -> tuple[ReplayReport, int]:
    """Play, measure, analyse and write the report. Returns (report, exit code)."""
    started = time.time()
    report = ReplayReport(
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        created_unix=started,
        machine=f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}",
    )
    try:
        plan = plan_bag(options)
    except (io.BagError, ReplayError) as exc:
        report.errors.append(str(exc))
        report.bag = {"path": str(options.bag)}
        _write(report, options.report, [])
        return report, EXIT_INPUT
    report.bag = plan.info()
    if options.external and plan.homography is not None:
        report.external_hint = (
            "the external fusion node needs the bag's homography: "
            f"-p homography:={homography_argument(plan.homography).replace(' ', '')}"
        )
    if plan.problem:
        report.errors.append(
            f"{plan.problem} (after {plan.readable_messages} readable images: those are played)"
        )
    meas = Measurements()
    with _fastdds_profile(options) as profile:
        report.session = SessionInfo(fastdds_profile_used=profile)
        played = _play(options, plan, meas, report)
    report.wall_s["playback_and_drain"] = time.time() - started
    samples = _analyse(report, meas, plan, options, played)
    if meas.errors:
        report.recorder_errors = meas.errors[:_RECORDER_ERRORS_SHOWN]
    code = _exit_code(report, played)
    report.wall_s["total"] = time.time() - started
    _write(report, options.report, samples)
    return report, code


@contextlib.contextmanager
def _fastdds_profile(options: ReplayOptions) -> Iterator[str | None]:
    """Set the Fast DDS profile for this process (and the player it spawns), then restore the
    caller's environment. Yields the profile used (None: Fast DDS defaults or the user's)."""
    env = profile_environment(options.fastdds_profile, os.environ)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # read when this process creates its DDS participant
    try:
        yield next(iter(env.values()), None)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _play(options: ReplayOptions, plan: BagPlan, meas: Measurements,
          report: ReplayReport) -> _Played:  # fmt: skip
    """Start the session and the player, play the bag, drain; errors go into the report."""
    from mmdrfuse_ros.replay.player import PlayerJob, PlayerProcess
    from mmdrfuse_ros.replay.session import KeepPolicy, RosSession

    played = _Played(dict(options.fusion_params), dict(options.detector_params))
    keep = KeepPolicy(plan, max(2 * options.metrics_frames, options.samples))
    session: RosSession | None = None
    player: PlayerProcess | None = None
    try:
        session = RosSession(options, plan, meas)
        played.fusion_params, played.status_name = session.fusion_params_used, session.status_name
        session.start(keep)
        played.detector_params = session.detector_params_used
        report.session = _session_info(report.session, session)
        player = PlayerProcess(PlayerJob.of(options, plan, session.subscribers_needed()))
        session.wait_for_graph(player)
        _playback(options, plan, meas, player, report)
        session.drain()
        played.node_stats = session.fusion_stats()
    except KeyboardInterrupt:
        _failed(report, played, ReplayStopped("interrupted (Ctrl-C)"))
    except (ReplayError, io.BagError) as exc:
        _failed(report, played, exc)
    except Exception as exc:  # anything unexpected: keep what was measured, say what broke
        _failed(report, played, exc)
        report.traceback = traceback.format_exc()
    finally:
        if player is not None:
            player.close()
        if session is not None:
            session.close()
    return played


def _session_info(before: SessionInfo | None, session: Any) -> SessionInfo:
    return SessionInfo(
        fastdds_profile_used=before.fastdds_profile_used if before else None,
        fusion_params=session.fusion_params_used,
        detector_params=session.detector_params_used,
        backend_used=session.backend_used(),
        detector_backend=session.detector_backend(),
    )


def _playback(options: ReplayOptions, plan: BagPlan, meas: Measurements, player: Any,
              report: ReplayReport) -> None:  # fmt: skip
    """Play with a progress bar; Ctrl-C during playback still drains and reports."""
    from tqdm import tqdm

    meas.playing = True
    total = (plan.readable_messages + plan.info_count) * options.loop
    with tqdm(total=total, unit="msg", desc="replay", disable=not options.progress,
              dynamic_ncols=True) as bar:  # fmt: skip
        try:
            player.play(meas, bar.update)
        except ReplayStopped as exc:
            report.errors.append(str(exc))
    if player.error:
        report.errors.append(player.error)


def _failed(report: ReplayReport, played: _Played, exc: BaseException) -> None:
    """Note the error that stopped the playback, and the exit code it calls for."""
    if isinstance(exc, (ReplayError, io.BagError)):
        report.errors.append(str(exc))
    else:
        report.errors.append(f"{type(exc).__name__}: {exc}")
    played.exit_code = max(played.exit_code, getattr(exc, "exit_code", EXIT_PARTIAL))


def _analyse(report: ReplayReport, meas: Measurements, plan: BagPlan, options: ReplayOptions,
             played: _Played) -> list[SampleFrame]:  # fmt: skip
    """Fill the report's sections from the measurements; returns the sample frames."""
    try:
        report.counts = counts_section(meas, played.node_stats, played.status_name,
                                       options.floor)  # fmt: skip
        report.latency = latency_section(meas, plan, options)
        quality = evaluate(meas, plan, options, played.fusion_params, played.detector_params,
                           report.counts.counts.recorded_fused)  # fmt: skip
        report.fusion_metrics, report.detection = quality.fusion_metrics, quality.detection
        return quality.samples
    except Exception as exc:
        report.errors.append(f"analysis failed: {type(exc).__name__}: {exc}")
        report.traceback = traceback.format_exc()
        return []


def _exit_code(report: ReplayReport, played: _Played) -> int:
    if report.errors:
        return max(played.exit_code, EXIT_PARTIAL)
    if report.counts is not None and any(not c.ok for c in report.counts.checks):
        return EXIT_PARTIAL
    return EXIT_OK


def _write(report: ReplayReport, folder: Path, samples: list[SampleFrame]) -> None:
    """Write the report files; the report then names them (and any plot that failed)."""
    data = report.to_dict()
    report.files = write_report(folder, data, samples)
    report.report_warnings = data.get("report_warnings")
