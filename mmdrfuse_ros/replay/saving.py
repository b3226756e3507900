"""Where the report goes: the ``--report`` folder checked before any work, and a fallback so that
measurements are never lost to an output error found at the end (a full disk, a folder removed
or made read-only while the replay ran).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from mmdrfuse_ros.replay.report import FILES, SampleFrame, write_report


def report_folder_problem(folder: Path, bag: Path | None = None) -> str | None:
    """Why ``folder`` cannot hold a report (None: it can), with the package's output guard:
    a file in the way, no write access (read-only, /proc), the bag itself, a folder inside the
    bag or one that contains it. Creates nothing."""
    from mmdrfuse_ros.outputs import OutputError, prepare_output

    try:
        prepare_output(folder, [bag], kind="dir", flag="--report")
    except OutputError as exc:
        return str(exc)
    return None


def save_report(report: Any, folder: Path, samples: list[SampleFrame]) -> Path | None:
    """Write the report into ``folder``; on an output error into a temporary folder instead,
    and failing that print report.json to stderr. Returns the folder written (None: printed).
    The report records any fallback under ``report_warnings`` and in its errors."""
    try:
        _write(report, folder, samples)
        return Path(folder)
    except OSError as exc:
        problem = f"the report could not be written to {folder}: {exc}"
    fallback = Path(tempfile.mkdtemp(prefix="mmdrfuse_replay_report_"))
    report.errors.append(f"{problem}; it was written to {fallback} instead")
    try:
        _write(report, fallback, samples)
        print(f"mmdrfuse replay: {problem}; report written to {fallback}", file=sys.stderr)
        return fallback
    except OSError as exc:
        report.errors.append(f"the temporary folder {fallback} failed too: {exc}")
    print(f"mmdrfuse replay: {problem}; no folder could be written, the report follows "
          f"({FILES['json']}):", file=sys.stderr)  # fmt: skip
    print(json.dumps(report.to_dict(), indent=1, default=str), file=sys.stderr)
    return None


def _write(report: Any, folder: Path, samples: list[SampleFrame]) -> None:
    """Write the report files; the report then names them (and any plot that failed)."""
    data = report.to_dict()
    report.files = write_report(folder, data, samples)
    report.report_warnings = data.get("report_warnings")
