"""Score trained models and the plain baselines on one held-out split; write a Markdown table.

    python -m mmdrfuse_ros.training.report --data ../shared/data/roadscene \
        --split runs/cpu/split.json --model "shipped student=runs/cpu/student/student.pt" \
        --model "teacher=runs/cpu/teacher/teacher.pt" --out docs/TRAINING_RESULTS.md

Every model is re-scored here (not copied from its log), on full validation images, so rows are
comparable; the training time is read from each checkpoint's metadata (seconds spent in
training steps, validation excluded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from mmdrfuse_ros.fusion.model import load_checkpoint
from mmdrfuse_ros.training.data import find_pairs, load_pairs
from mmdrfuse_ros.training.teacher import TEACHER_FORMAT, load_teacher
from mmdrfuse_ros.training.trainer import BASELINES, VAL_METRICS, evaluate, model_fuser


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
    by_name = {p.name: p for p in find_pairs(data)}
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
    head = ["model", "params", *VAL_METRICS, "training time"]
    lines = [f"Validation split: {n_val} held-out pairs, full images, 8-bit output; SSIM is the "
             "sum over the two sources (as in the paper's evaluator).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        secs = r["seconds"]
        time_s = "-" if secs is None else f"{secs / 60:.1f} min"
        cells = [r["label"], f"{r['params']:,}", *(f"{m.get(k, float('nan')):.3f}"
                                                   for k in VAL_METRICS), time_s]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True, help="split.json written by a run")
    p.add_argument("--model", action="append", default=[], metavar="LABEL=PATH")
    p.add_argument("--out", type=Path, help="write the Markdown table here (default: stdout)")
    p.add_argument("--json", type=Path, help="also write all numbers as JSON")
    args = p.parse_args(argv)
    models = []
    for item in args.model:
        label, sep, path = item.partition("=")
        if not sep:
            print(f"error: --model {item!r}: expected LABEL=PATH", file=sys.stderr)
            return 2
        models.append((label, Path(path)))
    rows = score(args.data, args.split, models)
    n_val = len(json.loads(args.split.read_text())["val"])
    text = markdown(rows, n_val)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        print(text, end="")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
