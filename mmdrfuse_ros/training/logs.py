"""Training logs: the per-step CSV, the per-epoch JSON and the PNG of both."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mmdrfuse_ros.metrics import VALIDATION_METRICS

log = logging.getLogger("mmdrfuse_ros.training")

LOSS_COLUMNS = ("total", "intensity", "gradient", "perceptual", "distill", "memory_ssim",
                "memory_gmsd")
STEP_COLUMNS = ("epoch", "step", "global_step", *LOSS_COLUMNS, "ssim_fill", "ssim_refresh",
                "ssim_penalise", "gmsd_fill", "gmsd_refresh", "gmsd_penalise", "seconds")


def append_step_row(path: Path, row: dict[str, Any]) -> None:
    """Append one step's row to ``steps.csv`` (header first when the file is new)."""
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=STEP_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k, "")) for k in STEP_COLUMNS})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def truncate_steps(path: Path, global_step: int) -> None:
    """Drop rows written after the checkpoint a run resumes from (they will be redone)."""
    if not path.exists():
        return
    with path.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["global_step"]) <= global_step]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=STEP_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_history(directory: Path, history: list[dict[str, Any]]) -> None:
    """epochs.json (everything) and a PNG of the loss terms per step and metrics per epoch."""
    (directory / "epochs.json").write_text(json.dumps(history, indent=1))
    try:
        plot_curves(directory)
    except Exception as exc:  # a plot must never stop training
        log.warning("could not draw curves: %s", exc)


def plot_curves(directory: Path) -> Path | None:
    """``curves.png``: loss terms per step (moving mean) and validation metrics per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps_csv = directory / "steps.csv"
    history = json.loads((directory / "epochs.json").read_text())
    with steps_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    fig = plt.figure(figsize=(14, 9))
    grid = fig.add_gridspec(1 + (len(VALIDATION_METRICS) + 3) // 4, 4)
    loss_ax = fig.add_subplot(grid[0, :])
    x = np.array([int(r["global_step"]) for r in rows])
    window = max(1, len(rows) // 100)
    for col in LOSS_COLUMNS:
        vals = np.array([float(r[col]) if r[col] not in ("", None) else np.nan for r in rows])
        if np.isfinite(vals).any():
            smooth = np.convolve(np.nan_to_num(vals), np.ones(window) / window, mode="same")
            loss_ax.plot(x, smooth, label=col, lw=1)
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("step")
    loss_ax.set_title(f"{directory.name}: loss terms (unweighted, moving mean over {window})")
    loss_ax.legend(fontsize=7, ncol=4)
    epochs = [h["epoch"] for h in history if h.get("val")]
    for i, name in enumerate(VALIDATION_METRICS):
        ax = fig.add_subplot(grid[1 + i // 4, i % 4])
        ax.plot(epochs, [h["val"].get(name, np.nan) for h in history if h.get("val")], marker="o")
        ax.set_title(f"val {name}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    fig.tight_layout()
    out = directory / "curves.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
