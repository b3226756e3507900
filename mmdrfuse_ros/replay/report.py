"""Render a replay's report: report.json, report.md, report.html (pictures inline), PNG plots.

Fed by plain data only: the JSON form of the report (a
:class:`~mmdrfuse_ros.replay.sections.ReplayReport` or a mapping read from report.json; schema in
docs/REPLAY.md) and a list of :class:`SampleFrame` for the picture grid, so it can be tested,
and re-run on a saved report.json, without ROS. Every writer tolerates missing sections: a
replay that failed half way still gets a report of what it measured, with the error at the top.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmdrfuse_ros.metrics import VALIDATION_METRICS

#: a report in its JSON form.
Report = Mapping[str, Any]
#: the streams whose latency is reported, in display order, with their labels.
LATENCY_STREAMS = {
    "fused": "stamp -> fused image",
    "detections": "stamp -> detections",
    "floor": "transport floor (pass-through)",
}
MODALITIES = ("fused", "thermal", "visible")
FILES = {
    "json": "report.json",
    "markdown": "report.md",
    "html": "report.html",
    "latency_plot": "latency_histogram.png",
    "rate_plot": "rate_timeline.png",
    "samples": "samples.png",
}


@dataclass
class SampleFrame:
    """One row of the sample grid: the inputs, the fused image and boxes, in display form."""

    stamp_ns: int
    thermal: np.ndarray | None = None  # HxW uint8 (normalised for display) or uint16
    visible: np.ndarray | None = None  # HxWx3 bgr8 or HxW
    fused: np.ndarray | None = None  # HxWx3 bgr8 or HxW
    detections: list[Sequence[float]] = field(default_factory=list)  # x1 y1 x2 y2 score
    ground_truth: list[Sequence[float]] = field(default_factory=list)  # x1 y1 x2 y2
    caption: str = ""  # e.g. the time in the bag; default: the stamp


# ----------------------------------------------------------------------------- numbers
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


# ----------------------------------------------------------------------------- sections
@dataclass
class Section:
    """A titled block rendered to both Markdown and HTML."""

    title: str
    text: list[str] = field(default_factory=list)
    header: list[str] | None = None
    rows: list[list[str]] = field(default_factory=list)
    image: str | None = None  # file name of a PNG next to the report


def _summary(report: Report) -> Section:
    bag, settings = report.get("bag", {}), report.get("settings", {})
    top = Section("Summary")
    status = report.get("status", "ok")
    if status != "ok":
        top.text.append(
            ("**The replay was interrupted**" if status == "interrupted"
             else "**The replay did not complete**") + ": "
            + "; ".join(report.get("errors", []) or ["unknown error"])
            + ". What was measured before the problem is below."
        )  # fmt: skip
    fallback = settings.get("detector_fallback")
    if fallback:
        top.text.append(f"**Detector fallback**: {fallback}")
    for warning in report.get("warnings", []):
        top.text.append(f"**Warning**: {warning}")
    top.text.append(
        f"Bag `{bag.get('path', '?')}` ({_fmt(bag.get('duration_s'), 2)} s, "
        f"{bag.get('storage', '?')}), played at rate {_fmt(settings.get('rate'), 2)}"
        f" x {settings.get('loop', 1)} loop(s), "
        + ("nodes started elsewhere (--external)" if settings.get("external")
           else "fusion and detector nodes in this process")
        + f"; fusion backend {settings.get('backend_used', '?')}"
        f", detector {settings.get('detector_backend', 'none')}"
        f"; machine: {report.get('machine', '?')}."
    )  # fmt: skip
    playback = report.get("playback", {})
    lag = playback.get("lag_ms", {})
    if lag.get("n"):
        top.text.append(
            f"Playback took {_fmt(playback.get('wall_s'), 2)} s for "
            f"{_fmt(playback.get('bag_s'), 2)} s of bag; the player published "
            f"{_fmt(lag.get('p50'))} ms late at the median, {_fmt(lag.get('max'))} ms at worst."
        )
    return top


def _counts(report: Report, files: dict[str, str]) -> Section | None:
    counts = report.get("counts", {})
    if not counts:
        return None
    sec = Section("Frames and drops", header=["count", "value"])
    for key, value in counts.items():
        if isinstance(value, (int, float)):
            sec.rows.append([key.replace("_", " "), _fmt(value)])
    for check in report.get("checks", []):
        sec.text.append(
            f"- {'OK' if check.get('ok') else '**MISMATCH**'}: {check.get('name')}"
            f" ({check.get('detail', '')})"
        )
    drops = report.get("drops", {})
    if drops:
        sec.text.append(
            "Drops by cause: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in drops.items())
            + "."
        )
    return sec


def _latency(report: Report, files: dict[str, str]) -> Section | None:
    latency = report.get("latency_ms", {})
    if not latency:
        return None
    sec = Section("Latency (ms)", header=["path", "n", "p50", "p95", "p99", "max"])
    for key, label in LATENCY_STREAMS.items():
        s = latency.get(key)
        if s:
            sec.rows.append([label, _fmt(s.get("n"))] +
                            [_fmt(s.get(q)) for q in ("p50", "p95", "p99", "max")])  # fmt: skip
    note = report.get("latency_note")
    if note:
        sec.text.append(note)
    sec.image = files.get("latency_plot")
    return sec


def _stages(report: Report, files: dict[str, str]) -> Section | None:
    stages = report.get("stages_ms", {})
    if not stages:
        return None
    sec = Section("Where the time goes (ms per frame, by stage)",
                  header=["node", "stage", "p50", "p95"])  # fmt: skip
    for node, rows in stages.items():
        for stage, q in rows.items():
            sec.rows.append([node, stage.replace("_", " "), _fmt(q.get("p50"), 2),
                             _fmt(q.get("p95"), 2)])  # fmt: skip
    sec.text.append("From the nodes' own timing (their stats in-process, their /diagnostics "
                    "when external): the last frames of the replay.")  # fmt: skip
    return sec


def _throughput(report: Report, files: dict[str, str]) -> Section | None:
    throughput = report.get("throughput_hz", {})
    if not throughput and "rate_plot" not in files:
        return None
    sec = Section("Throughput (Hz)", header=["stream", "Hz"] if throughput else None)
    sec.rows = [[k.replace("_", " "), _fmt(v, 2)] for k, v in throughput.items()]
    sec.image = files.get("rate_plot")
    return sec


def _fusion_quality(report: Report, files: dict[str, str]) -> Section | None:
    metrics = report.get("fusion_metrics", {})
    if not metrics.get("mean"):
        return Section("Fusion quality", text=[metrics["note"]]) if metrics.get("note") else None
    names = [m for m in VALIDATION_METRICS if m in metrics["mean"]]
    sec = Section("Fusion quality", header=["frames", *names])
    sec.rows.append(
        [f"mean of {metrics.get('frames', '?')}"] + [_fmt(metrics["mean"][m], 3) for m in names]
    )
    if metrics.get("note"):
        sec.text.append(metrics["note"])
    return sec


def _detection(report: Report, files: dict[str, str]) -> Section | None:
    detection = report.get("detection", {})
    results = detection.get("results", {})
    if not results:
        note = detection.get("note")
        return Section("Pedestrian detection", text=[note]) if note else None
    sec = Section(
        "Pedestrian detection",
        header=["input", "AP@0.5", "AP@[.5:.95]", "images", "GT boxes", "detections"],
    )
    for modality in MODALITIES:
        r = results.get(modality)
        if r is None:
            continue
        if "error" in r:
            sec.rows.append([modality, "–", "–", "–", "–", r["error"]])
            continue
        sec.rows.append([
            modality, _fmt(r.get("AP50"), 3), _fmt(r.get("AP"), 3),
            _fmt(r.get("num_images")), _fmt(r.get("num_gt")), _fmt(r.get("num_detections")),
        ])  # fmt: skip
    if detection.get("note"):
        sec.text.append(detection["note"])
    return sec


def _sample_frames(report: Report, files: dict[str, str]) -> Section | None:
    if "samples" not in files:
        return None
    return Section("Sample frames",
                   text=["Columns: thermal (normalised), visible (as recorded), fused, "
                         "detections on the fused image (green) and ground truth (red)."],
                   image=files["samples"])  # fmt: skip


#: the sections after the summary, in display order; each returns None when it has nothing.
_SECTIONS: tuple[Callable[[Report, dict[str, str]], Section | None], ...] = (
    _counts, _latency, _stages, _throughput, _fusion_quality, _detection, _sample_frames,
)  # fmt: skip


def _sections(report: Report, files: dict[str, str]) -> list[Section]:
    sections = [_summary(report)]
    for build in _SECTIONS:
        if (sec := build(report, files)) is not None:
            sections.append(sec)
    return sections


def render_markdown(report: Report, files: dict[str, str]) -> str:
    lines = ["# Replay report", ""]
    for sec in _sections(report, files):
        lines += [f"## {sec.title}", ""]
        for text in sec.text:
            lines += [text, ""]
        if sec.header:
            lines.append("| " + " | ".join(sec.header) + " |")
            lines.append("|" + "|".join("---" for _ in sec.header) + "|")
            lines += ["| " + " | ".join(row) + " |" for row in sec.rows]
            lines.append("")
        if sec.image:
            lines += [f"![{sec.title}]({sec.image})", ""]
    lines.append(f"Full numbers, per frame: [{FILES['json']}]({FILES['json']}).")
    return "\n".join(lines) + "\n"


def _md_inline_to_html(text: str) -> str:
    """Escape, then the two bits of Markdown we use in texts: **bold** and `code`."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(report: Report, files: dict[str, str], folder: Path) -> str:
    """One self-contained page: the PNGs are embedded as data URIs."""
    body = ["<h1>Replay report</h1>"]
    for sec in _sections(report, files):
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        for text in sec.text:
            body.append(f"<p>{_md_inline_to_html(text)}</p>")
        if sec.header:
            body.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in sec.header)
                        + "</tr>")  # fmt: skip
            for row in sec.rows:
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            body.append("</table>")
        if sec.image and (folder / sec.image).is_file():
            data = base64.b64encode((folder / sec.image).read_bytes()).decode("ascii")
            body.append(
                f'<p><img alt="{html.escape(sec.title)}" src="data:image/png;base64,{data}"></p>'
            )
    body.append(f'<p>Full numbers, per frame: <a href="{FILES["json"]}">{FILES["json"]}</a></p>')
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>mmdrfuse replay report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ----------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_latency(series_ms: dict[str, Sequence[float]], path: Path) -> bool:
    """Histogram of the latency samples per stream; False when there is nothing to plot."""
    data = {k: np.asarray(v, float) for k, v in series_ms.items() if len(v)}
    if not data:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    hi = max(float(np.percentile(v, 99.5)) for v in data.values())
    bins = np.linspace(0, max(hi * 1.05, 1.0), 60)
    for key, values in data.items():
        label = f"{LATENCY_STREAMS.get(key, key)} (p50 {np.median(values):.1f} ms)"
        ax.hist(np.clip(values, 0, bins[-1]), bins=bins, alpha=0.55, label=label)
    ax.set_xlabel("latency (ms; the last bin holds everything beyond it)")
    ax.set_ylabel("frames")
    ax.set_title("Latency from header stamp to reception")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def rate_series(
    times_s: Sequence[float], end_s: float, bin_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, events per second) of event times over [0, end_s]."""
    nbins = max(math.ceil(end_s / bin_s), 1)
    counts, edges = np.histogram(np.asarray(times_s, float), bins=nbins, range=(0, nbins * bin_s))
    return (edges[:-1] + edges[1:]) / 2, counts / bin_s


def plot_rates(events_s: dict[str, Sequence[float]], path: Path, bin_s: float = 0.5) -> bool:
    """Timeline of the rate of each stream (events per second in ``bin_s`` bins)."""
    data = {k: v for k, v in events_s.items() if len(v)}
    if not data:
        return False
    plt = _pyplot()
    end = max(max(v) for v in data.values()) + bin_s
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    for key, times in data.items():
        centres, rate = rate_series(times, end, bin_s)
        ax.step(centres, rate, where="mid", label=key.replace("_", " "))
    ax.set_xlabel("time since playback start (s)")
    ax.set_ylabel(f"Hz ({bin_s:g} s bins)")
    ax.set_title("Rates during the replay")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _tile(image: np.ndarray | None, width: int, height: int) -> np.ndarray:
    if image is None:
        tile = np.full((height, width, 3), 40, np.uint8)
        cv2.putText(tile, "n/a", (8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200,) * 3, 1)
        return tile
    img = image
    if img.dtype != np.uint8:
        lo, hi = np.percentile(img, (1, 99))
        img = np.clip((img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255)
        img = img.astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    scale = min(width / img.shape[1], height / img.shape[0])
    size = (max(int(img.shape[1] * scale), 1), max(int(img.shape[0] * scale), 1))
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    tile = np.zeros((height, width, 3), np.uint8)
    y0, x0 = (height - size[1]) // 2, (width - size[0]) // 2
    tile[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return tile


def _boxes_drawn(frame: SampleFrame) -> np.ndarray | None:
    if frame.fused is None:
        return None
    img = frame.fused
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255)
        img = img.astype(np.uint8)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
    thick = max(2, img.shape[1] // 400)
    for box in frame.ground_truth:
        x1, y1, x2, y2 = (round(v) for v in box[:4])
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), thick)
    for det in frame.detections:
        x1, y1, x2, y2 = (round(v) for v in det[:4])
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 255, 0), thick)
        if len(det) > 4:
            cv2.putText(img, f"{det[4]:.2f}", (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 * thick / 2, (0, 255, 0), max(thick // 2, 1))  # fmt: skip
    return img


def sample_grid(samples: Sequence[SampleFrame], tile_width: int = 320) -> np.ndarray | None:
    """Rows of [thermal, visible, fused, fused + boxes] tiles with a caption; None if empty."""
    if not samples:
        return None
    ref = next((s.fused for s in samples if s.fused is not None), None)
    aspect = ref.shape[0] / ref.shape[1] if ref is not None else 9 / 16
    tile_height = max(int(tile_width * aspect), 16)
    rows = []
    for frame in samples:
        tiles = [_tile(img, tile_width, tile_height) for img in
                 (frame.thermal, frame.visible, frame.fused, _boxes_drawn(frame))]  # fmt: skip
        row = np.hstack(tiles)
        caption = np.full((22, row.shape[1], 3), 255, np.uint8)
        label = frame.caption or f"stamp {frame.stamp_ns / 1e9:.3f} s"
        text = f"{label}: thermal | visible | fused | detections (green), ground truth (red)"
        cv2.putText(caption, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        rows += [caption, row]
    return np.vstack(rows)


# ----------------------------------------------------------------------------- writing
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """NaN/inf become None so report.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_report(
    folder: str | Path, report: dict[str, Any], samples: Sequence[SampleFrame] = ()
) -> dict[str, str]:
    """Write every file of the report (its JSON form) into ``folder``; returns {kind: path}.

    ``report`` gets the written file names under "files". A plot that fails (e.g. matplotlib
    missing) is noted under "report_warnings" and skipped; the JSON and Markdown are always
    written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    problems: list[str] = []
    series = report.get("series", {})
    jobs = (
        ("latency_plot", lambda p: plot_latency(series.get("latency_ms", {}), p)),
        ("rate_plot", lambda p: plot_rates(series.get("events_s", {}), p)),
        ("samples", lambda p: _write_grid(samples, p)),
    )
    for key, job in jobs:
        path = folder / FILES[key]
        try:
            if job(path):
                files[key] = FILES[key]
        except Exception as exc:  # a broken plot must not lose the numbers
            problems.append(f"{FILES[key]} not written: {type(exc).__name__}: {exc}")
    if problems:
        report.setdefault("report_warnings", []).extend(problems)
    files.update(json=FILES["json"], markdown=FILES["markdown"], html=FILES["html"])
    report["files"] = dict(files)
    (folder / FILES["json"]).write_text(
        json.dumps(_finite(report), indent=1, default=_json_default, allow_nan=False) + "\n"
    )
    (folder / FILES["markdown"]).write_text(render_markdown(report, files))
    (folder / FILES["html"]).write_text(render_html(report, files, folder))
    return {key: str(folder / name) for key, name in files.items()}


def _write_grid(samples: Sequence[SampleFrame], path: Path) -> bool:
    grid = sample_grid(samples)
    if grid is None:
        return False
    if not cv2.imwrite(str(path), grid):
        raise OSError(f"OpenCV could not write {path}")
    return True


def terminal_summary(report: Report, folder: str | Path | None = None) -> str:
    """A few lines for the end of a run."""
    lines = []
    status = report.get("status", "ok")
    if status != "ok":
        lines.append(("REPLAY INTERRUPTED: " if status == "interrupted" else "REPLAY FAILED: ")
                     + "; ".join(report.get("errors", [])))  # fmt: skip
    fallback = report.get("settings", {}).get("detector_fallback")
    if fallback:
        lines.append(f"DETECTOR FALLBACK: {fallback}")
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    c = report.get("counts", {})
    if c:
        lines.append(
            f"frames published {c.get('published_total', '?')} "
            f"(thermal {c.get('published_thermal', '?')}, rgb {c.get('published_rgb', '?')}); "
            f"pairs synchronised {c.get('synchronised', '?')}; fused {c.get('fused', '?')}; "
            f"recorded fused {c.get('recorded_fused', '?')}, "
            f"detections {c.get('recorded_detections', '?')}"
        )
    drops = report.get("drops", {})
    if drops:
        lines.append("drops: " + ", ".join(f"{k} {v}" for k, v in drops.items()))
    for key, label in LATENCY_STREAMS.items():
        s = report.get("latency_ms", {}).get(key)
        if s and s.get("n"):
            lines.append(
                f"latency {label}: p50 {s['p50']:.1f}  p95 {s['p95']:.1f}  p99 {s['p99']:.1f}  "
                f"max {s['max']:.1f} ms (n={s['n']})"
            )
    results = report.get("detection", {}).get("results", {})
    aps = [
        f"{m} {r['AP50']:.3f}/{r['AP']:.3f}"
        for m in MODALITIES
        if (r := results.get(m)) and "AP50" in r
    ]
    if aps:
        lines.append("AP@0.5/AP@[.5:.95]: " + ", ".join(aps))
    mean = report.get("fusion_metrics", {}).get("mean", {})
    if mean:
        lines.append(
            "fusion metrics (mean): "
            + ", ".join(f"{m} {mean[m]:.3f}" for m in VALIDATION_METRICS if m in mean)
        )
    failed = [ch["name"] for ch in report.get("checks", []) if not ch.get("ok")]
    if failed:
        lines.append("COUNTS DO NOT ADD UP: " + "; ".join(failed))
    stages = report.get("stages_ms", {})
    for node, rows in stages.items():
        lines.append(f"{node} stages p50/p95 ms: " + ", ".join(
            f"{k} {_fmt(q.get('p50'), 1)}/{_fmt(q.get('p95'), 1)}" for k, q in rows.items()))
    if folder is not None:
        lines.append(f"report: {Path(folder) / FILES['html']} (and report.md, report.json)")
    return "\n".join(lines)
