"""``run_replay``: plan the bag, play it through the nodes, analyse, write the report.

Exit code 0 when everything ran and the counts add up, 1 when the replay stopped on an error or
a check failed (the report then holds what was measured before), 2 when the input could not be
used at all (the bag, a node parameter, the ``--report`` folder), 130 / 143 after SIGINT /
SIGTERM (status ``interrupted``). Every path but an unusable ``--report`` writes a report, in a
temporary folder when ``--report`` fails at the end (the report and the terminal say where).
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
from mmdrfuse_ros.replay.analysis import counts_section, latency_section, stage_section
from mmdrfuse_ros.replay.measurements import Measurements
from mmdrfuse_ros.replay.plan import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_PARTIAL,
    BagPlan,
    ReplayError,
    ReplayOptions,
    homography_argument,
    plan_bag,
)
from mmdrfuse_ros.replay.quality import evaluate
from mmdrfuse_ros.replay.report import SampleFrame
from mmdrfuse_ros.replay.saving import report_folder_problem, save_report
from mmdrfuse_ros.replay.sections import (
    DetectionSection,
    FusionMetricsSection,
    ReplayReport,
    SessionInfo,
)
from mmdrfuse_ros.replay.signals import Interrupted, StopSignals
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
    interrupted: Interrupted | None = None  # the stop signal that ended the playback
    stages: dict[str, Any] | None = None  # node -> stage -> p50/p95 ms


def run_replay(options: ReplayOptions) -> tuple[ReplayReport, int]:
    """Play, measure, analyse and write the report. Returns (report, exit code).

    SIGINT and SIGTERM stop it at any point with a partial report (status ``interrupted``) and
    exit code 128 + signal; an unusable ``--report`` folder is refused before anything runs.
    """
    with StopSignals() as stop:
        return _run(options, stop)


def _run(options: ReplayOptions, stop: StopSignals) -> tuple[ReplayReport, int]:
    started = time.time()
    report = ReplayReport(
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        created_unix=started,
        machine=f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}",
    )
    report.bag = {"path": str(options.bag)}
    problem = report_folder_problem(options.report, options.bag)
    if problem:  # nothing can be written there: say so before any work
        report.errors.append(problem)
        return report, EXIT_INPUT
    try:
        plan = _plan(options, report)
    except Interrupted as exc:
        return _finish(report, options, [], stop, exc.exit_code, started, exc)
    if plan is None:
        return _finish(report, options, [], stop, EXIT_INPUT, started)
    meas = Measurements()
    with _fastdds_profile(options) as profile:
        report.session = SessionInfo(fastdds_profile_used=profile)
        played = _play(options, plan, meas, report, stop)
    report.wall_s["playback_and_drain"] = time.time() - started
    samples = _analyse(report, meas, plan, options, played, stop)
    if meas.errors:
        report.recorder_errors = meas.errors[:_RECORDER_ERRORS_SHOWN]
    code = _exit_code(report, played)
    return _finish(report, options, samples, stop, code, started, played.interrupted)


def _plan(options: ReplayOptions, report: ReplayReport) -> BagPlan | None:
    """The bag's plan, or None with the reason in the report (unusable input, exit 2)."""
    try:
        plan = plan_bag(options)
        plan.check_loop(options.loop)
    except (io.BagError, ReplayError) as exc:
        report.errors.append(str(exc))
        return None
    except Exception as exc:  # anything the checks missed: a report, not a traceback
        report.errors.append(f"the bag could not be read: {type(exc).__name__}: {exc}")
        report.traceback = traceback.format_exc()
        return None
    report.bag = plan.info()
    if options.external and plan.homography is not None:
        report.external_hint = (
            "the external fusion node needs the bag's homography: "
            f"-p homography:={homography_argument(plan.homography).replace(' ', '')}"
        )
    if plan.params_problem:
        report.warnings.append(plan.params_problem)
    if plan.problem:
        report.errors.append(
            f"{plan.problem} (after {plan.readable_messages} readable images: those are played)"
        )
    return plan


def _finish(report: ReplayReport, options: ReplayOptions, samples: list[SampleFrame],
            stop: StopSignals, code: int, started: float,
            interrupted: Interrupted | None = None) -> tuple[ReplayReport, int]:  # fmt: skip
    """Mark an interruption (also one that came too late to raise), write, return the code."""
    interrupted = interrupted or stop.interruption()
    if interrupted is not None:
        report.interrupted = str(interrupted)
        report.errors.append(f"{interrupted}: the report holds what was measured until then")
        code = interrupted.exit_code
    report.wall_s["total"] = time.time() - started
    with stop.deferred():  # a second signal must not cut the report short
        report.folder = save_report(report, options.report, samples)
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


def _play(options: ReplayOptions, plan: BagPlan, meas: Measurements, report: ReplayReport,
          stop: StopSignals) -> _Played:  # fmt: skip
    """Start the session and the player, play the bag, drain; errors go into the report."""
    from mmdrfuse_ros.replay.player import PlayerJob, PlayerProcess
    from mmdrfuse_ros.replay.session import KeepPolicy, RosSession

    played = _Played(dict(options.fusion_params), dict(options.detector_params))
    keep = KeepPolicy(plan, max(2 * options.metrics_frames, options.samples))
    session: RosSession | None = None
    player: PlayerProcess | None = None
    try:
        session = RosSession(options, plan, meas)
        stop.install()  # after rclpy.init: the replay keeps SIGINT/SIGTERM
        played.fusion_params, played.status_name = session.fusion_params_used, session.status_name
        session.start(keep)
        played.detector_params = session.detector_params_used
        report.session = _session_info(report.session, session)
        player = PlayerProcess(PlayerJob.of(options, plan, session.subscribers_needed()))
        session.wait_for_graph(player)
        _check_external(options, plan, session, report)
        stop.check("start-up")
        _playback(options, plan, meas, player, report)
        session.drain()
    except Interrupted as exc:
        played.interrupted = exc
        if session is not None and player is not None:
            with stop.deferred():  # a short drain: the counts of what is in flight
                player.stop()
                session.drain(quiet_s=0.5, timeout_s=3.0)
    except (ReplayError, io.BagError) as exc:
        _failed(report, played, exc)
    except Exception as exc:  # anything unexpected: keep what was measured, say what broke
        _failed(report, played, exc)
        report.traceback = traceback.format_exc()
    finally:
        with stop.deferred():
            _close(session, player, played, report)
    return played


def _close(session: Any, player: Any, played: _Played, report: ReplayReport) -> None:
    """Read the nodes' last counters and stage timings, then stop the player and the nodes."""
    if session is not None:
        with contextlib.suppress(Exception):
            played.node_stats = session.fusion_stats()
            detector = session.detector_stats()
            played.stages = stage_section({"fusion": session.fusion_values(),
                                           "detector": detector})  # fmt: skip
            if report.session is not None and detector:
                report.session.detector_used = detector.get("detector") or None
                report.session.detector_fallback = detector.get("detector_fallback") or None
    if player is not None:
        with contextlib.suppress(Exception):
            player.close()
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()


def _check_external(options: ReplayOptions, plan: BagPlan, session: Any,
                    report: ReplayReport) -> None:  # fmt: skip
    """--external: warn, here and in the report, when the fusion node does not use the bag's
    calibration."""
    if not options.external or session.recorder is None:
        return
    import sys

    from mmdrfuse_ros.nodes.fusion_node import NODE_NAME
    from mmdrfuse_ros.replay.external import check_external_fusion

    warning = check_external_fusion(session.recorder.node, plan, "/" + NODE_NAME)
    if warning:
        report.warnings.append(warning)
        print(f"mmdrfuse replay: WARNING: {warning}", file=sys.stderr)


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
    """Play with a progress bar; an error that ended the bag early goes into the report."""
    import sys

    from tqdm import tqdm

    meas.playing = True
    total = (plan.readable_messages + plan.info_count) * options.loop
    print(f"replay: playing {total} messages ({plan.duration_s * options.loop:.1f} s of bag at "
          f"rate {options.rate:g}; Ctrl-C stops with a partial report)",
          file=sys.stderr, flush=True)  # fmt: skip
    with tqdm(total=total, unit="msg", desc="replay", disable=not options.progress,
              dynamic_ncols=True) as bar:  # fmt: skip
        try:
            player.play(meas, bar.update)
        finally:
            if player.error:
                report.errors.append(f"playback ended early: {player.error}")


def _failed(report: ReplayReport, played: _Played, exc: BaseException) -> None:
    """Note the error that stopped the playback, and the exit code it calls for."""
    if isinstance(exc, (ReplayError, io.BagError)):
        report.errors.append(str(exc))
    else:
        report.errors.append(f"{type(exc).__name__}: {exc}")
    played.exit_code = max(played.exit_code, getattr(exc, "exit_code", EXIT_PARTIAL))


def _analyse(report: ReplayReport, meas: Measurements, plan: BagPlan, options: ReplayOptions,
             played: _Played, stop: StopSignals) -> list[SampleFrame]:  # fmt: skip
    """Fill the report's sections from the measurements; returns the sample frames. After a
    stop signal only the traffic is analysed (the quality evaluation takes seconds)."""
    report.stages = played.stages
    try:
        report.counts = counts_section(meas, played.node_stats, played.status_name,
                                       options.floor, plan.stamp_issues)  # fmt: skip
        report.latency = latency_section(meas, plan, options)
        if played.interrupted or stop.received is not None:
            skipped = "not computed: the replay was interrupted"
            report.fusion_metrics = FusionMetricsSection(frames=0, note=skipped)
            report.detection = DetectionSection(note=skipped)
            return []
        quality = evaluate(meas, plan, options, played.fusion_params, played.detector_params,
                           report.counts.counts.recorded_fused)  # fmt: skip
        report.fusion_metrics, report.detection = quality.fusion_metrics, quality.detection
        return quality.samples
    except Interrupted as exc:
        played.interrupted = Interrupted(exc.signum, "the evaluation")
        return []
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
