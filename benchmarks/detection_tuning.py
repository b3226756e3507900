"""Can a detector's gradient move a 113-parameter student past both bars? Tune and score.

The tuning is the task stage of ``mmdrfuse train`` (:mod:`mmdrfuse_ros.training.task`); this
benchmark runs it from the hand-set start for several anchors and scores each result.

Starts from a student that passes the metric bar (the hand-set tone student of
``fusion_frontier.py``, 8/8 against the published student) and tunes its 113 weights through the
real YOLOX graph (:mod:`mmdrfuse_ros.detection.onnx_torch`) on the TRAINING frames of the
validation split (RoadScene's training pairs and LLVIP scene 19; never the validation pairs, never
the labelled LLVIP frames). Each frame is fused at full size, min-max stretched, coloured with
the visible chroma and letterboxed as the detector sees it. The detection term asks the fused
frame to be at least as detectable as the better source at every grid cell (one-sided: a cell
whose person score already exceeds both sources' costs nothing):

    L_det = sum(relu(max(s(IR), s(VIS)) - s(F))^2) / #cells where a source scores > 0.05

An anchor keeps the student near its start: L1 + 10 x the gradient term to the start's output.
Each ``--anchor`` weight gives one tuned student; all are scored as ``mmdrfuse students`` scores
(the 8 metrics on the held-out pairs against the published student, YOLOX AP@0.5 on the 30
labelled pairs), next to the start.

    python benchmarks/detection_tuning.py --anchor 1 --anchor 0.3 --anchor 0.05 --out tuning.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fusion_frontier import FOLDERS, YOLOX, score_against_published, shared_present  # noqa: E402

from mmdrfuse_ros.training import students as S  # noqa: E402
from mmdrfuse_ros.training.data import find_training_pairs, split_folder  # noqa: E402
from mmdrfuse_ros.training.priors import tone_student  # noqa: E402
from mmdrfuse_ros.training.task import PersonScore, TaskFrame, read_frames, tune  # noqa: E402


def training_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """(thermal grey, visible BGR) of every training pair of the validation split's folders."""
    pairs = []
    for root in FOLDERS:
        found = find_training_pairs(root)
        train, _ = split_folder([p.name for p in found], 0.1, S.DEFAULT_VAL_SCENES)
        pairs += [p for p in found if p.name in set(train)]
    return read_frames(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--anchor", type=float, action="append", required=True,
                        help="weight of the anchor to the start (repeat: one student each)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    args = parser.parse_args()
    if not shared_present():
        return 2
    torch.set_num_threads(1)
    begin = time.perf_counter()
    score = PersonScore(YOLOX)
    start = tone_student(0.4)
    items = [TaskFrame(ir, vi, score, start) for ir, vi in training_frames()]
    nets = {"start: tone student (hand-set, 8/8)": start}
    for anchor in args.anchor:
        nets[f"tuned, anchor {anchor:g}"], _ = tune(
            start, items, score, steps=args.steps, lr=args.lr, anchor=anchor, frames_per_step=2,
            seed=0)
    rows = [S.Row(label, S.mapped(n.unclamped, "authors-minmax"), 113)
            for label, n in nets.items()]
    _, head, table = score_against_published(rows)
    text = (f"Tuned on {len(items)} training frames, {args.steps} steps of 2 frames, Adam "
            f"{args.lr:g}. {head}; {time.perf_counter() - begin:.0f} s.\n\n{table}")
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
