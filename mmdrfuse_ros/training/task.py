"""Task guidance: the distilled student tuned with the pedestrian detector in the loop.

Task-guided fusion (TIMFusion and its kin) trains the fusion network through the downstream
detector. Here the detector is the YOLOX ONNX file the detector node runs, on PyTorch operators
(:mod:`mmdrfuse_ros.detection.onnx_torch`), so its gradient reaches the student's 113 weights.

* Frames: the training split of the run's data folders, read in colour. A folder that holds
  annotations is refused: labelled frames are for evaluation only, and the term below needs none.
* Each frame is fused at full size, min-max stretched, coloured with the visible chroma and
  letterboxed top-left onto the 114 canvas, as the detector node sees it.
* Detection term, one-sided: every grid cell should be at least as detectable (objectness x
  person score) as in the better source; a cell that already beats both costs nothing.
* Anchor: L1 + 10 x the gradient term to the distilled student's own output, weight
  ``task.anchor``, so the picture the distillation gave is kept while detection improves.

Settings and the starting checkpoint are recorded in the tuned checkpoint's metadata.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mmdrfuse_ros.datasets import Pair
from mmdrfuse_ros.fusion.model import CheckpointError, StudentNet, load_checkpoint
from mmdrfuse_ros.training import TrainingInputError, losses, recorded_path
from mmdrfuse_ros.training.config import TaskConfig, TrainConfig
from mmdrfuse_ros.training.data import PreparedData
from mmdrfuse_ros.training.evaluation import evaluate, model_fuser
from mmdrfuse_ros.training.export import export_student

log = logging.getLogger("mmdrfuse_ros.training")

LUMA_BGR = (0.114, 0.587, 0.299)
LETTERBOX_FILL = 114.0
#: a cell counts towards the term's normaliser when a source scores above this.
SCORED_CELL = 0.05
#: the anchor's gradient part, relative to its L1 part (the published Laplacian term is /10).
ANCHOR_GRADIENT_WEIGHT = 10.0


class TaskError(TrainingInputError):
    """The task stage cannot run: no detector, labelled frames among the data, no student."""


class PersonScore(nn.Module):
    """Person score (objectness x class 0) per grid cell of BGR 0..255 frames ``[1,3,H,W]``."""

    def __init__(self, model: str | Path) -> None:
        super().__init__()
        from mmdrfuse_ros.detection.onnx_torch import OnnxGraphError, OnnxGraphModule, read_graph

        try:
            graph = read_graph(model)
            self.graph = OnnxGraphModule(graph).eval().requires_grad_(False)
        except (OnnxGraphError, OSError) as exc:
            raise TaskError(f"task stage detector: {exc}") from None
        self.side = int(graph.input_shape[-1]) if graph.input_shape else 0
        if self.side <= 0:
            raise TaskError(f"task stage detector {model}: its input size is not declared")

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        h, w = bgr.shape[-2:]
        scale = min(self.side / h, self.side / w)
        nh, nw = max(1, int(h * scale)), max(1, int(w * scale))
        resized = F.interpolate(bgr, size=(nh, nw), mode="bilinear", align_corners=False)
        canvas = F.pad(resized, (0, self.side - nw, 0, self.side - nh), value=LETTERBOX_FILL)
        out = self.graph(canvas)[0]
        return out[..., 4] * out[..., 5]


def refuse_labelled(roots: Sequence[str | Path]) -> None:
    """TaskError if a data folder holds annotations (labelled frames are evaluation-only)."""
    for root in roots:
        if (Path(root) / "annotations").is_dir():
            raise TaskError(
                f"{root} holds annotations: the task stage trains on unlabelled frames only "
                "(labelled frames are kept for evaluation); leave that folder out of --data")


def read_frames(pairs: Sequence[Pair], limit: int | None = None
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(thermal grey, visible BGR) uint8 of each pair of the same size, evenly spread."""
    if limit and len(pairs) > limit:
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, limit).round().astype(int)]
    frames = []
    for pair in pairs:
        ir = cv2.imread(str(pair.ir), cv2.IMREAD_GRAYSCALE)
        vi = cv2.imread(str(pair.vis), cv2.IMREAD_COLOR)
        if ir is not None and vi is not None and ir.shape == vi.shape[:2]:
            frames.append((ir, vi))
    return frames


class TaskFrame:
    """One frame, ready: the network input, visible BGR and luma, the better source's cell
    scores and the starting student's output (the anchor)."""

    def __init__(self, ir: np.ndarray, vi: np.ndarray, score: PersonScore,
                 start: StudentNet) -> None:
        thermal = torch.from_numpy(ir).float()[None, None]
        self.visible = torch.from_numpy(vi).float().permute(2, 0, 1)[None].contiguous()
        self.luma = (self.visible * torch.tensor(LUMA_BGR)[None, :, None, None]).sum(
            1, keepdim=True)
        self.x = torch.cat([thermal, self.luma], 1) / 255.0
        with torch.no_grad():
            self.target = torch.maximum(score(thermal.expand(-1, 3, -1, -1)), score(self.visible))
            self.anchor = start(self.x)


def frame_losses(net: StudentNet, frame: TaskFrame, score: PersonScore
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(detection shortfall, anchor distance) of the student on one frame."""
    fused = net(frame.x)
    stretched = (fused - fused.amin()) / (fused.amax() - fused.amin() + 1e-6)
    bgr = (frame.visible + stretched * 255.0 - frame.luma).clamp(0.0, 255.0)
    shortfall = F.relu(frame.target - score(bgr)).pow(2).sum()
    det = shortfall / max(1.0, float((frame.target > SCORED_CELL).sum()))
    keep = (fused - frame.anchor).abs().mean() + ANCHOR_GRADIENT_WEIGHT * losses.gradient_loss(
        fused, frame.anchor)
    return det, keep


def tune(start: StudentNet, frames: Sequence[TaskFrame], score: PersonScore, *, steps: int,
         lr: float, anchor: float, frames_per_step: int, seed: int
         ) -> tuple[StudentNet, list[dict[str, float]]]:
    """Adam on the student's weights; one row (mean detection and anchor terms) per step."""
    net = StudentNet()
    net.load_state_dict(start.state_dict())
    net.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    history = []
    bar = tqdm(range(steps), desc="task stage", unit="step", mininterval=1.0,
               dynamic_ncols=True)
    for _ in bar:
        optimiser.zero_grad(set_to_none=True)
        det_sum = keep_sum = 0.0
        for i in rng.integers(0, len(frames), frames_per_step):
            det, keep = frame_losses(net, frames[i], score)
            ((det + anchor * keep) / frames_per_step).backward()
            det_sum, keep_sum = det_sum + float(det.detach()), keep_sum + float(keep.detach())
        optimiser.step()
        history.append({"detection": det_sum / frames_per_step,
                        "anchor": keep_sum / frames_per_step})
        bar.set_postfix(det=f"{history[-1]['detection']:.4f}")
    return net.eval(), history


def task_metadata(settings: dict[str, Any], start_path: Path, model: Path, frames: int,
                  history: list[dict[str, float]], run_dir: Path) -> dict[str, Any]:
    """What the tuned checkpoint records of its task stage (the start relative to the run)."""
    first, last = history[0], history[-1]
    try:
        start = start_path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        start = recorded_path(start_path)
    return {
        "recipe": "task guidance: YOLOX person scores in the loop, one-sided per grid cell, "
                  "anchored to the distilled student's output",
        "settings": settings,
        "start": start,
        "detector": recorded_path(model),
        "frames": frames,
        "labelled_frames_used": 0,
        "detection_term": {"first": round(first["detection"], 6),
                           "last": round(last["detection"], 6)},
    }


@dataclass
class TaskInputs:
    """What the task stage needs, checked before any training: the detector and the start."""

    score: PersonScore
    model: Path
    start: Path

    @classmethod
    def check(cls, cfg: TaskConfig, data_dirs: str | Path | Sequence[str | Path], out: Path,
              start: str | Path | None, trains_student: bool) -> TaskInputs:
        """TaskError for labelled data, a missing detector or a missing start checkpoint."""
        from mmdrfuse_ros.training.perceptual import PerceptualError, yolox_model_path

        refuse_labelled([data_dirs] if isinstance(data_dirs, str | Path) else data_dirs)
        try:
            model = yolox_model_path(cfg.yolox_model, "the task stage",
                                     "--set task.yolox_model=")
        except PerceptualError as exc:
            raise TaskError(str(exc)) from None
        start_path = Path(start) if start else out / "student" / "student.pt"
        if start_path.resolve() == (out / "task" / "student.pt").resolve():
            raise TaskError(f"--start-student {start_path} is where the task stage writes its "
                            "result: copy it elsewhere first, or use another --out")
        if not trains_student:
            try:
                load_checkpoint(start_path)
            except (CheckpointError, OSError) as exc:
                raise TaskError(
                    f"the task stage starts from a distilled student: {exc} (train one with "
                    "--stage student, or pass --start-student PATH)") from None
        return cls(PersonScore(model), model, start_path)


def run_task_stage(cfg: TrainConfig, data: PreparedData, out: Path, inputs: TaskInputs
                   ) -> dict[str, Any]:
    """Tune the distilled student on the training frames; write ``out/student.pt`` (+ JSON)."""
    t = cfg.task
    start_ckpt = load_checkpoint(inputs.start)
    start = start_ckpt.build().eval()
    frames = [TaskFrame(ir, vi, inputs.score, start)
              for ir, vi in read_frames(data.train_pairs, t.max_frames)]
    if not frames:
        raise TaskError("the task stage found no training frame with thermal and visible of "
                        "the same size")
    log.info("task stage: %d training frames, %d steps of %d, anchor %g, detector %s",
             len(frames), t.steps, t.frames_per_step, t.anchor, inputs.model.name)
    started = time.perf_counter()
    net, history = tune(start, frames, inputs.score, steps=t.steps, lr=t.lr, anchor=t.anchor,
                        frames_per_step=t.frames_per_step, seed=cfg.run.seed)
    seconds = round(time.perf_counter() - started, 1)
    validation = evaluate(model_fuser(net, torch.device("cpu")), data.val_images)
    training = dict(start_ckpt.meta.get("training") or {})
    recipe = training.get("recipe", "student")
    training["recipe"] = f"{recipe} + task guidance (detector in the loop)"
    training["task"] = {**task_metadata(dataclasses.asdict(t), inputs.start, inputs.model,
                                        len(frames), history, out.parent),
                        "train_seconds": seconds}
    out.mkdir(parents=True, exist_ok=True)
    (out / "steps.json").write_text(json.dumps(history))
    pt, meta_json = export_student(out / "student.pt", net, training=training,
                                   data=start_ckpt.meta.get("data") or data.info,
                                   validation=validation)
    log.info("task stage: %s (%.0f s)", pt, seconds)
    return {"checkpoint": str(pt), "metadata": str(meta_json), "validation": validation,
            "train_seconds": seconds}
