r"""Score trained models and the plain baselines on one held-out split; write a Markdown table.

    mmdrfuse train-report --data ../shared/data/roadscene \
        --split runs/cpu/split.json --model "shipped student=runs/cpu/student/student.pt" \
        --model "teacher=runs/cpu/teacher/teacher.pt" --out docs/TRAINING_RESULTS.md

Every model is re-scored here (not copied from its log), on full validation images, so rows are
comparable; the training time is read from each checkpoint's metadata (seconds spent in
training steps, validation excluded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmdrfuse_ros.fusion.model import load_checkpoint
from mmdrfuse_ros.metrics import VALIDATION_METRICS
from mmdrfuse_ros.training.data import find_training_pairs, load_pairs
from mmdrfuse_ros.training.evaluation import BASELINES, evaluate, model_fuser
from mmdrfuse_ros.training.teacher import TEACHER_FORMAT, load_teacher


def load_any(path: Path) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """A student (our format or published) or a teacher checkpoint -> (model, meta, kind)."""
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and (raw.get("format") == TEACHER_FORMAT or "conv00.1.weight" in raw):
        net, meta = load_teacher(path)
        return net, meta, "teacher"
    ckpt = load_checkpoint(path)
    return ckpt.build(), ckpt.meta, "student"


def train_seconds(meta: dict[str, Any]) -> float | None:
    value = meta.get("train_seconds", meta.get("training", {}).get("train_seconds"))
    return float(value) if value is not None else None


def score(data: Path, split: Path, models: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    names = json.loads(split.read_text())["val"]
    by_name = {p.name: p for p in find_training_pairs(data)}
    images = load_pairs([by_name[n] for n in names])
    rows = []
    for label, fuse in BASELINES.items():
        rows.append({"label": label, "params": 0, "seconds": None,
                     "metrics": evaluate(fuse, images)})
    for label, path in models:
        net, meta, kind = load_any(path)
        rows.append({
            "label": label, "kind": kind, "path": str(path),
            "params": sum(p.numel() for p in net.parameters()),
            "seconds": train_seconds(meta),
            "perceptual": (meta.get("training", {}).get("perceptual") or meta.get("perceptual")
                           or {}).get("network"),
            "metrics": evaluate(model_fuser(net.eval(), torch.device("cpu")), images),
        })
    return rows


def markdown(rows: list[dict[str, Any]], n_val: int) -> str:
    head = ["model", "params", *VALIDATION_METRICS, "training time"]
    lines = [f"Validation split: {n_val} held-out pairs, full images, 8-bit output; SSIM is the "
             "sum over the two sources (as in the paper's evaluator).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        secs = r["seconds"]
        time_s = "-" if secs is None else f"{secs / 60:.1f} min"
        cells = [r["label"], f"{r['params']:,}", *(f"{m.get(k, float('nan')):.3f}"
                                                   for k in VALIDATION_METRICS), time_s]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
