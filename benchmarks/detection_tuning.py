"""Can a detector's gradient move a 113-parameter student past both bars? Tune and score.

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

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fusion_frontier import (  # noqa: E402
    FOLDERS,
    YOLOX,
    score_against_published,
    shared_present,
    tone_student,
)

from mmdrfuse_ros.detection.models import EXPECTED_INPUT  # noqa: E402
from mmdrfuse_ros.detection.onnx_torch import OnnxGraphModule  # noqa: E402
from mmdrfuse_ros.fusion.model import StudentNet  # noqa: E402
from mmdrfuse_ros.training import losses  # noqa: E402
from mmdrfuse_ros.training import students as S  # noqa: E402
from mmdrfuse_ros.training.data import find_training_pairs, split_folder  # noqa: E402

INPUT = EXPECTED_INPUT[-1]  # YOLOX-Nano's input side
LUMA_BGR = torch.tensor([0.114, 0.587, 0.299])[None, :, None, None]


def training_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """(thermal grey, visible BGR) of every training pair of the validation split's folders."""
    frames = []
    for root in FOLDERS:
        pairs = find_training_pairs(root)
        train, _ = split_folder([p.name for p in pairs], 0.1, S.DEFAULT_VAL_SCENES)
        by_name = {p.name: p for p in pairs}
        for name in train:
            ir = cv2.imread(str(by_name[name].ir), cv2.IMREAD_GRAYSCALE)
            vi = cv2.imread(str(by_name[name].vis), cv2.IMREAD_COLOR)
            if ir is not None and vi is not None and ir.shape == vi.shape[:2]:
                frames.append((ir, vi))
    return frames


class PersonScore(torch.nn.Module):
    """Person score (objectness x class 0) per grid cell of a BGR 0..255 frame, letterboxed
    top-left onto the 114 canvas as :class:`~mmdrfuse_ros.detection.yolo_onnx` does."""

    def __init__(self, model: Path) -> None:
        super().__init__()
        self.graph = OnnxGraphModule(model).eval().requires_grad_(False)

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        h, w = bgr.shape[-2:]
        scale = min(INPUT / h, INPUT / w)
        nh, nw = int(h * scale), int(w * scale)
        resized = F.interpolate(bgr, size=(nh, nw), mode="bilinear", align_corners=False)
        out = self.graph(F.pad(resized, (0, INPUT - nw, 0, INPUT - nh), value=114.0))[0]
        return out[..., 4] * out[..., 5]


def prepared(frames: list, score: PersonScore, start: StudentNet
             ) -> list[tuple[torch.Tensor, ...]]:
    """Per frame: the network input, the visible BGR, its luma, the better source's scores and
    the start's output (the anchor)."""
    items = []
    with torch.no_grad():
        for ir, vi in frames:
            thermal = torch.from_numpy(ir).float()[None, None]
            visible = torch.from_numpy(vi).float().permute(2, 0, 1)[None]
            luma = (visible * LUMA_BGR).sum(1, keepdim=True)
            target = torch.maximum(score(thermal.expand(-1, 3, -1, -1)), score(visible))
            x = torch.cat([thermal, luma], 1) / 255.0
            items.append((x, visible, luma, target, start(x)))
    return items


def tune(start: StudentNet, items: list, score: PersonScore, anchor: float, steps: int,
         lr: float, seed: int = 0) -> StudentNet:
    net = StudentNet()
    net.load_state_dict(start.state_dict())
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        optimiser.zero_grad()
        for i in rng.integers(0, len(items), 2):
            x, visible, luma, target, before = items[i]
            fused = net(x)
            stretched = (fused - fused.amin()) / (fused.amax() - fused.amin() + 1e-6)
            bgr = (visible + stretched * 255.0 - luma).clamp(0.0, 255.0)
            shortfall = F.relu(target - score(bgr)).pow(2).sum()
            det = shortfall / max(1.0, float((target > 0.05).sum()))
            keep = (fused - before).abs().mean() + 10.0 * losses.gradient_loss(fused, before)
            ((det + anchor * keep) / 2.0).backward()
        optimiser.step()
        if step % 50 == 0:
            print(f"  anchor {anchor:g}: step {step}/{steps}", flush=True)
    return net.eval()


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
    items = prepared(training_frames(), score, start)
    nets = {"start: tone student (hand-set, 8/8)": start}
    for anchor in args.anchor:
        nets[f"tuned, anchor {anchor:g}"] = tune(start, items, score, anchor, args.steps, args.lr)
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
