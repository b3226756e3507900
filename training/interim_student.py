#!/usr/bin/env python3
"""Interim default weights: the student trained directly (no teacher) for a few hundred steps.

Used only until ``training/train.py`` ships the distilled student. Loss: the comprehensive loss's
intensity and gradient terms (METHOD.md): L1(F, max(IR, VIS)) + MSE(lap F, lap max(IR, VIS)) / 10.

    python training/interim_student.py --data ../shared/data/roadscene \
        --out mmdrfuse_ros/fusion/weights/student_default.pt
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
from tqdm import tqdm

from mmdrfuse_ros.fusion import StudentNet, save_checkpoint

LAPLACIAN = torch.tensor([[1 / 8, 1 / 8, 1 / 8], [1 / 8, -1.0, 1 / 8], [1 / 8, 1 / 8, 1 / 8]])


def load_pairs(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for ir_path in sorted((root / "ir").iterdir()):
        vi_path = root / "vi" / ir_path.name
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vi = cv2.imread(str(vi_path), cv2.IMREAD_COLOR)
        if ir is None or vi is None or ir.shape != vi.shape[:2]:
            continue
        y = cv2.cvtColor(vi, cv2.COLOR_BGR2YCrCb)[:, :, 0]
        pairs.append((ir.astype(np.float32) / 255, y.astype(np.float32) / 255))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = load_pairs(args.data)
    if not pairs:
        print(f"no usable ir/vi pairs under {args.data}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    net = StudentNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    lap = LAPLACIAN.view(1, 1, 3, 3)
    patch, batch = 96, 16
    start = time.time()
    for _ in tqdm(range(args.steps), desc="interim student"):
        crops = []
        for i in rng.integers(len(pairs), size=batch):
            ir, y = pairs[i]
            r = rng.integers(ir.shape[0] - patch + 1)
            c = rng.integers(ir.shape[1] - patch + 1)
            crops.append(np.stack((ir[r:r + patch, c:c + patch], y[r:r + patch, c:c + patch])))
        x = torch.from_numpy(np.stack(crops))
        target = x.max(dim=1, keepdim=True).values
        fused = net(x)
        loss = F.l1_loss(fused, target) + F.mse_loss(
            F.conv2d(fused, lap, padding=1), F.conv2d(target, lap, padding=1)) / 10
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(
        args.out, net,
        training={
            "method": "interim: direct training, no teacher, no perceptual term, no refresh",
            "loss": "L1(F, max(IR,VIS)) + MSE(lap F, lap max)/10",
            "steps": args.steps, "batch": batch, "patch": patch, "optimizer": "Adam lr 2e-3",
            "seed": args.seed, "final_loss": float(loss), "seconds": round(time.time() - start, 1),
            "script": "training/interim_student.py",
        },
        data={"name": "RoadScene (FusionDN, Xu et al. AAAI 2020)", "pairs": len(pairs),
              "colour": "visible reduced to BT.601 luma"},
    )
    print(f"wrote {args.out} (final loss {float(loss):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
