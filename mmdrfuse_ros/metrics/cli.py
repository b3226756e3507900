"""``mmdrfuse metrics``: fusion metrics for folders of (ir, vis, fused) images.

    mmdrfuse metrics --ir DIR --vis DIR --fused DIR [--json OUT] [--csv OUT] [--metrics EN,SSIM]

Pairs are matched by file name without extension (a fused ``00001.png`` goes with ``ir/00001.jpg``
and ``vis/00001.jpg``), one row per fused image. Images are read as the reference evaluator reads
them (:func:`mmdrfuse_ros.datasets.read_grey`: OpenCV colour read, BGR -> grey in float32,
rounded). A pair that cannot be evaluated (missing
source, unreadable or truncated file, size mismatch) is reported by name on stderr and the
command exits 1 after computing and writing everything else. Two files with one name in a folder
(``a.jpg`` and ``a.png``) stop the command before any work (exit 2), as does a ``--json`` or
``--csv`` path that cannot be written or is one of the inputs; a write that fails after the work
saves the result to a temporary file and says where (exit 1).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..datasets import DatasetError, list_images, read_grey
from ..outputs import OutputError, prepare_output, write_result
from .fusion import ALL_METRICS, compute_metrics

__all__ = ["evaluate_folders", "register", "run"]


def evaluate_folders(
    ir_dir: Path,
    vis_dir: Path,
    fused_dir: Path,
    names: list[str] | None = None,
    progress: bool = True,
) -> tuple[list[dict], list[tuple[str, str]], list[str]]:
    """Evaluate every fused image against its sources.

    Returns (rows, errors, unused): rows are ``{"name": stem, metric: value...}`` in name order,
    errors ``(stem, reason)`` for pairs that could not be evaluated, unused the stems of source
    pairs without a fused image (not an error: a run may fuse a subset). DatasetError when a
    folder holds two files with one name."""
    from tqdm import tqdm

    ir, vis, fused = list_images(ir_dir), list_images(vis_dir), list_images(fused_dir)
    rows: list[dict] = []
    errors: list[tuple[str, str]] = []
    for stem in tqdm(sorted(fused), desc="metrics", unit="pair", disable=not progress):
        missing = [what for what, idx in (("ir", ir), ("vis", vis)) if stem not in idx]
        if missing:
            errors.append((stem, f"no {' or '.join(missing)} image with this name"))
            continue
        try:
            a, b, f = read_grey(ir[stem]), read_grey(vis[stem]), read_grey(fused[stem])
            if not (a.shape == b.shape == f.shape):
                raise ValueError(
                    f"sizes differ: ir {a.shape[1]}x{a.shape[0]}, vis {b.shape[1]}x{b.shape[0]}, "
                    f"fused {f.shape[1]}x{f.shape[0]} (width x height)"
                )
            rows.append({"name": stem, **compute_metrics(a, b, f, names)})
        except ValueError as exc:
            errors.append((stem, str(exc)))
    unused = sorted((set(ir) & set(vis)) - set(fused))
    return rows, errors, unused


def _mean_row(rows: list[dict], metrics: list[str]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows])) for m in metrics} if rows else {}


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no inf/NaN (PSNR is +inf for F == A == B)


def _fmt(v: float) -> str:
    return f"{v:.4f}" if v == 0 or not math.isfinite(v) or abs(v) >= 1e-3 else f"{v:.2e}"


def _table(rows: list[dict], mean: dict[str, float], metrics: list[str]) -> str:
    head = ["name", *metrics]
    body = [[r["name"], *(_fmt(r[m]) for m in metrics)] for r in rows]
    if mean:
        body.append(["mean", *(_fmt(mean[m]) for m in metrics)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def _parse_metrics(text: str | None) -> list[str]:
    if not text:
        return list(ALL_METRICS)
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {','.join(ALL_METRICS)}")
    return chosen


def _check_outputs(args: argparse.Namespace) -> None:
    """OutputError for a --json/--csv path that is an input or cannot be written."""
    inputs = [Path(args.ir), Path(args.vis), Path(args.fused)]
    for flag, out in (("--json", args.json), ("--csv", args.csv)):
        if out:
            prepare_output(out, inputs, "file", flag=flag)


def _json_text(rows: list[dict], mean: dict[str, float], errors: list[tuple[str, str]],
               metrics: list[str]) -> str:
    doc = {
        "pairs": [
            {"name": r["name"], **{m: _finite_or_none(r[m]) for m in metrics}} for r in rows
        ],
        "mean": {m: _finite_or_none(v) for m, v in mean.items()},
        "errors": [{"name": n, "error": e} for n, e in errors],
    }
    return json.dumps(doc, indent=2) + "\n"


def _csv_text(rows: list[dict], mean: dict[str, float], metrics: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", *metrics])
    writer.writerows([[r["name"], *(repr(r[m]) for m in metrics)] for r in rows])
    if mean:
        writer.writerow(["mean", *(repr(mean[m]) for m in metrics)])
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``mmdrfuse metrics``; returns the exit code."""
    try:
        metrics = _parse_metrics(args.metrics)
        for flag, folder in {"--ir": args.ir, "--vis": args.vis, "--fused": args.fused}.items():
            if not Path(folder).is_dir():
                raise OutputError(f"{flag} {folder} is not a directory")
        _check_outputs(args)
        rows, errors, unused = evaluate_folders(
            Path(args.ir), Path(args.vis), Path(args.fused), metrics,
            progress=not args.no_progress,
        )
    except (DatasetError, ValueError) as exc:  # OutputError is a ValueError
        print(f"mmdrfuse metrics: {exc}", file=sys.stderr)
        return 2
    if not rows and not errors:
        print(f"mmdrfuse metrics: no images in {args.fused}", file=sys.stderr)
        return 2
    mean = _mean_row(rows, metrics)
    print(_table(rows, mean, metrics))
    written = True
    if args.json:
        written &= write_result(args.json, _json_text(rows, mean, errors, metrics),
                                "metrics JSON") == Path(args.json)
    if args.csv:
        written &= write_result(args.csv, _csv_text(rows, mean, metrics),
                                "metrics CSV") == Path(args.csv)
    if unused:
        print(f"note: {len(unused)} source pair(s) have no fused image", file=sys.stderr)
    for name, reason in errors:
        print(f"error: {name}: {reason}", file=sys.stderr)
    if errors:
        print(
            f"mmdrfuse metrics: {len(errors)} of {len(rows) + len(errors)} pair(s) failed",
            file=sys.stderr,
        )
    return 1 if errors or not written else 0


def register(subparsers) -> None:
    """Add ``metrics`` to the ``mmdrfuse`` command."""
    p = subparsers.add_parser(
        "metrics",
        help="fusion quality metrics (EN, SSIM, VIF, Qabf, ...) for folders of images",
        description="Compute infrared-visible fusion metrics the way the field's reference "
        "evaluator does, one row per fused image and a mean row. Pairs are matched by file name "
        "without extension. See docs/METRICS.md.",
    )
    p.add_argument("--ir", required=True, metavar="DIR", help="infrared source images")
    p.add_argument("--vis", required=True, metavar="DIR", help="visible source images")
    p.add_argument("--fused", required=True, metavar="DIR", help="fused images to evaluate")
    p.add_argument("--json", metavar="OUT", help="also write {pairs, mean, errors} as JSON")
    p.add_argument("--csv", metavar="OUT", help="also write the table as CSV")
    p.add_argument(
        "--metrics",
        metavar="LIST",
        help=f"comma-separated subset (default: all of {','.join(ALL_METRICS)})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
