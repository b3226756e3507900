"""Training loops for the teacher and the distilled student, with exact resume and DDP.

One :class:`StageTrainer` runs one stage (teacher or student) over the patch set:

* step: forward -> comprehensive loss (+ distillation for the student) -> dynamic refresh
  (history bank decides per patch: fill, refresh or penalise) -> Adam step -> one CSV row;
* epoch: validation metrics on the held-out full images, JSON/CSV history, PNG curves,
  checkpoint (model, optimiser, counters, history and a snapshot of the bank);
* the data order of an epoch is a pure function of (seed, epoch), so a resumed run repeats the
  uninterrupted one exactly;
* under ``torchrun`` each rank takes its own slice of every global batch; the model is wrapped
  in DistributedDataParallel and rank 0 logs, validates and checkpoints.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from tqdm import tqdm

from mmdrfuse_ros.fusion.model import StudentNet, count_parameters
from mmdrfuse_ros.training import losses
from mmdrfuse_ros.training.bank import KINDS, HistoryBank
from mmdrfuse_ros.training.config import (
    STAGES,
    ConfigError,
    StageConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    dump_yaml,
)
from mmdrfuse_ros.training.data import (
    PatchSet,
    apply_flips,
    epoch_plan,
    find_pairs,
    load_pairs,
    split_names,
)
from mmdrfuse_ros.training.export import export_onnx, export_student, onnx_max_difference
from mmdrfuse_ros.training.perceptual import (
    DEEP_STAGES,
    SHALLOW_STAGES,
    FeatureNet,
    build_feature_net,
)
from mmdrfuse_ros.training.teacher import TeacherError, TeacherNet, load_teacher, save_teacher

log = logging.getLogger("mmdrfuse_ros.training")

#: the validation metrics of the issue, in the README's column order.
VAL_METRICS = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")
LOSS_COLUMNS = ("total", "intensity", "gradient", "perceptual", "distill", "memory_ssim",
                "memory_gmsd")
STEP_COLUMNS = ("epoch", "step", "global_step", *LOSS_COLUMNS, "ssim_fill", "ssim_refresh",
                "ssim_penalise", "gmsd_fill", "gmsd_refresh", "gmsd_penalise", "seconds")


class TrainingInterrupted(RuntimeError):
    """Training stopped early (Ctrl-C or ``run.stop_after_steps``) after a checkpoint."""


# ----------------------------------------------------------------------------------------------
# distributed helpers


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def init_distributed(device_choice: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one, and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_choice != "cpu"
    if device_choice.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"run.device={device_choice} but CUDA is not available here")
    if world > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        index = local if world > 1 or device_choice in ("auto", "cuda") else int(
            device_choice.split(":")[1])
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return DistInfo(rank, world, local), device


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class PreparedData:
    patches: PatchSet
    val_images: list[tuple[np.ndarray, np.ndarray]]
    train_names: list[str]
    val_names: list[str]
    info: dict[str, Any]


def prepare_data(data_dir: str | Path, cfg: TrainConfig) -> PreparedData:
    """Find, read, check and cut the data; every problem raises DataError before training."""
    d = cfg.data
    pairs = find_pairs(data_dir, d.subdir)
    train_names, val_names = split_names([p.name for p in pairs], d.val_fraction)
    by_name = {p.name: p for p in pairs}
    train_images = load_pairs([by_name[n] for n in train_names], min_size=d.patch_size)
    val_images = load_pairs([by_name[n] for n in val_names], min_size=8)
    if cfg.run.val_max_images:
        val_images = val_images[: cfg.run.val_max_images]
        val_names = val_names[: cfg.run.val_max_images]
    patches = PatchSet(train_images, d.patch_size, d.stride, d.max_patches)
    info = {
        "name": d.name or Path(data_dir).resolve().name,
        "path": str(Path(data_dir).resolve()),
        "pairs": len(pairs),
        "train_pairs": len(train_names),
        "val_pairs": len(val_names),
        "val_names": val_names,
        "patches": len(patches),
        "patch_size": d.patch_size,
        "stride": d.stride,
        "flips": d.flips,
        "subdir": d.subdir,
    }
    return PreparedData(patches, val_images, train_names, val_names, info)


# ----------------------------------------------------------------------------------------------
# evaluation


FuseFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _metrics_function() -> Callable[..., dict[str, float]] | None:
    try:
        from mmdrfuse_ros.metrics.fusion import compute_metrics
    except ImportError as exc:  # the metrics module is optional for training itself
        log.warning("validation metrics unavailable (%s); only losses are logged", exc)
        return None
    return compute_metrics


def evaluate(fuse: FuseFn, images: Sequence[tuple[np.ndarray, np.ndarray]],
             names: Sequence[str] = VAL_METRICS) -> dict[str, float]:
    """Mean fusion metrics over full validation images.

    ``fuse(ir01, vi01) -> fused01`` works on float32 [0, 1] planes; the result is rounded to
    8 bits like a saved image, then scored on the 0..255 scale.
    """
    compute = _metrics_function()
    if compute is None or not images:
        return {}
    sums: dict[str, float] = {}
    for ir, vi in images:
        fused = fuse(ir.astype(np.float32) / 255.0, vi.astype(np.float32) / 255.0)
        fused255 = np.rint(np.clip(fused, 0.0, 1.0) * 255.0).astype(np.float64)
        values = compute(ir.astype(np.float64), vi.astype(np.float64), fused255, names=list(names))
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / len(images) for k, v in sums.items()}


def model_fuser(model: nn.Module, device: torch.device) -> FuseFn:
    def fuse(ir01: np.ndarray, vi01: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.stack([ir01, vi01]))[None].to(device)
        with torch.no_grad():
            return model(x)[0, 0].float().cpu().numpy()

    return fuse


BASELINES: dict[str, FuseFn] = {
    "pixel average": lambda ir, vi: (ir + vi) / 2.0,
    "pixel max": np.maximum,
}


# ----------------------------------------------------------------------------------------------
# one stage


class _WithFeatures(nn.Module):
    """Expose ``forward_with_features`` as ``forward`` so that DDP syncs its gradients."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_features(x)


@dataclass
class StageResult:
    model: nn.Module
    validation: dict[str, float]
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


class StageTrainer:
    """Train one stage; ``run()`` returns the trained model or raises TrainingInterrupted."""

    def __init__(self, stage: str, cfg: TrainConfig, data: PreparedData, out_dir: Path,
                 features: FeatureNet, device: torch.device, dist: DistInfo,
                 teacher: TeacherNet | None = None) -> None:
        self.stage = stage
        self.cfg = cfg
        self.scfg: StageConfig = cfg.teacher if stage == "teacher" else cfg.student
        self.data = data
        self.dir = out_dir / stage
        self.features = features.to(device)
        self.device = device
        self.dist = dist
        self.teacher = teacher.to(device).eval().requires_grad_(False) if teacher else None
        self.state_path = self.dir / "state.pt"
        self.bank_dir = self.dir / "bank"
        self.bank_snapshot = self.dir / "state_bank"
        self._stop_requested = False

        torch.manual_seed(cfg.run.seed)
        if stage == "teacher":
            assert isinstance(self.scfg, TeacherConfig)
            self.net: nn.Module = TeacherNet(self.scfg.width)
        else:
            assert isinstance(self.scfg, StudentConfig)
            self.net = StudentNet()
            if self.scfg.init_conv2_from_teacher and teacher is not None:
                self.net.conv2[1].load_state_dict(teacher.conv00[1].state_dict())
        self.net.to(device)
        wrapped: nn.Module = _WithFeatures(self.net)
        if dist.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        self.model = wrapped
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.scfg.lr)
        self.bank: HistoryBank | None = None
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.sums: dict[str, float] = {}  # this epoch's running loss sums (checkpointed)

    # -- bookkeeping ---------------------------------------------------------------------------

    @property
    def distilling(self) -> bool:
        return self.stage == "student" and self.teacher is not None and (
            self.cfg.student.w_distill > 0)

    def _open_bank(self, resume: bool) -> None:
        if not self.scfg.refresh:
            return
        n, p = len(self.data.patches), self.data.patches.size
        args = (n, p, p, self.cfg.bank.dtype)
        if self.dist.main:
            if resume and self.bank_snapshot.is_dir():
                HistoryBank.restore(self.bank_snapshot, self.bank_dir, *args)
            else:
                HistoryBank(self.bank_dir, *args, create=True)
        self.dist.barrier()
        self.bank = HistoryBank(self.bank_dir, *args, create=False)

    def _save_state(self) -> None:
        """Checkpoint everything a resume needs; rank 0 only, after all ranks reach it."""
        if self.bank is not None:
            self.bank.flush()
        self.dist.barrier()
        if self.dist.main:
            if self.bank is not None:
                self.bank.snapshot(self.bank_snapshot)
            state = {
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "seconds": self.seconds,
                "history": self.history,
                "sums": self.sums,
                "config": self.cfg.to_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            tmp = self.state_path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(self.state_path)
        self.dist.barrier()

    def _load_state(self) -> None:
        state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.seconds = state["seconds"]
        self.history = state["history"]
        self.sums = state["sums"]
        torch.set_rng_state(state["torch_rng"])
        if self.dist.main:
            _truncate_csv(self.dir / "steps.csv", self.global_step)
        log.info("%s: resumed at epoch %d, step %d (global step %d)", self.stage,
                 self.epoch + 1, self.step_in_epoch, self.global_step)

    # -- one step ------------------------------------------------------------------------------

    def _step(self, idx: np.ndarray, hflip: np.ndarray, vflip: np.ndarray) -> dict[str, float]:
        s = self.scfg
        ir, vi = self.data.patches.batch(idx, hflip, vflip, self.device)
        x = torch.cat([ir, vi], 1)
        feats, out = self.model(x)
        terms: dict[str, torch.Tensor] = {
            "intensity": losses.intensity_loss(out, ir, vi),
            "gradient": losses.gradient_loss(out, ir, vi),
        }
        weights = {"intensity": s.w_intensity, "gradient": s.w_gradient}
        out_feats = self.features(out) if (s.w_perceptual > 0 or s.refresh) else []
        if s.w_perceptual > 0 and out_feats:
            with torch.no_grad():
                ir_feats, vi_feats = self.features(ir), self.features(vi)
            terms["perceptual"] = losses.perceptual_loss(out_feats, ir_feats, vi_feats)
            weights["perceptual"] = s.w_perceptual
        if self.distilling:
            with torch.no_grad():
                t_feats, t_out = self.teacher.forward_with_features(x)
            terms["distill"] = losses.distillation_loss([feats, out], [t_feats, t_out])
            weights["distill"] = self.cfg.student.w_distill
        counts: dict[str, float] = {}
        if self.bank is not None:
            for kind, term in self._refresh(idx, hflip, vflip, ir, vi, out, out_feats, counts):
                terms[kind] = term
                weights[kind] = 1.0  # the gap already carries the published 10 x weight
        total = sum(weights[k] * v for k, v in terms.items())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        row = {k: float(v.detach()) for k, v in terms.items()}
        row["total"] = float(total.detach())
        row.update(counts)
        return row

    def _refresh(self, idx: np.ndarray, hflip: np.ndarray, vflip: np.ndarray, ir: torch.Tensor,
                 vi: torch.Tensor, out: torch.Tensor, out_feats: list[torch.Tensor],
                 counts: dict[str, float]) -> list[tuple[str, torch.Tensor]]:
        """Dynamic refresh: judge each patch, store the better ones, penalise the worse ones."""
        assert self.bank is not None
        ssim_now, gmsd_now = losses.fusion_scores(out, ir, vi)
        current = {"ssim": ssim_now.cpu().numpy(), "gmsd": gmsd_now.cpu().numpy()}
        # The bank holds every patch in its stored orientation: undo this batch's flips.
        canonical = apply_flips(out.detach()[:, 0].float().cpu().numpy(), hflip, vflip)
        result = []
        for kind in KINDS:
            decision = self.bank.decide(kind, idx, current[kind])
            counts[f"{kind}_fill"] = int(decision.fill.sum())
            counts[f"{kind}_refresh"] = int(decision.refresh.sum())
            counts[f"{kind}_penalise"] = int(decision.penalise.sum())
            pen = np.flatnonzero(decision.penalise)
            if pen.size:
                hist_np = apply_flips(self.bank.images(kind, idx[pen]), hflip[pen], vflip[pen])
                hist = torch.from_numpy(hist_np)[:, None].to(out.device, out.dtype)
                stages = DEEP_STAGES if kind == "ssim" else SHALLOW_STAGES
                sel = torch.from_numpy(pen).to(out.device)
                with torch.no_grad():
                    hist_feats = self.features(hist)
                f_now = [out_feats[i].index_select(0, sel) for i in stages if i < len(out_feats)]
                f_hist = [hist_feats[i] for i in stages if i < len(hist_feats)]
                term_fn = losses.memory_ssim_terms if kind == "ssim" else losses.memory_gmsd_terms
                per_sample = term_fn(out.index_select(0, sel), hist, f_now, f_hist)
                gaps = torch.from_numpy(decision.gap[pen]).to(out.device, out.dtype)
                result.append((f"memory_{kind}",
                               losses.weighted_memory(per_sample, gaps, len(idx))))
            keep = np.flatnonzero(decision.fill | decision.refresh)
            self.bank.store(kind, idx[keep], canonical[keep], current[kind][keep])
        return result

    # -- loop ----------------------------------------------------------------------------------

    def run(self, resume: bool) -> StageResult:
        self.dir.mkdir(parents=True, exist_ok=True)
        resume = resume and self.state_path.is_file()
        if resume:
            self._load_state()
        self._open_bank(resume)
        s = self.scfg
        n = len(self.data.patches)
        per_step = s.batch_size * self.dist.world
        steps = n // per_step
        if steps == 0:
            raise ValueError(
                f"{self.stage}: {n} training patches are fewer than one batch of {per_step}; "
                "lower batch_size, the patch size or the stride"
            )
        log.info("%s: %d parameters, %d patches, %d steps/epoch x %d epochs, batch %d x %d rank(s)",
                 self.stage, count_parameters(self.net), n, steps, s.epochs, s.batch_size,
                 self.dist.world)
        previous = signal.getsignal(signal.SIGINT)
        if self.dist.main and _is_main_thread():
            signal.signal(signal.SIGINT, self._request_stop)
        try:
            while self.epoch < s.epochs:
                self._run_epoch(steps)
        finally:
            if _is_main_thread():
                signal.signal(signal.SIGINT, previous)
        validation = self.history[-1].get("val", {}) if self.history else {}
        return StageResult(self.net.eval(), validation, self.seconds, self.history)

    def _request_stop(self, *_: Any) -> None:
        log.warning("interrupt: finishing this step, then writing a checkpoint")
        self._stop_requested = True

    def _run_epoch(self, steps: int) -> None:
        s, run = self.scfg, self.cfg.run
        order, hflip, vflip = epoch_plan(len(self.data.patches), s.batch_size * self.dist.world,
                                         self.epoch, run.seed, self.cfg.data.flips)
        self.net.train()
        bar = tqdm(range(self.step_in_epoch, steps), initial=self.step_in_epoch, total=steps,
                   desc=f"{self.stage} epoch {self.epoch + 1}/{s.epochs}", unit="step",
                   disable=not self.dist.main, mininterval=1.0, dynamic_ncols=True)
        for step in bar:
            lo = step * s.batch_size * self.dist.world + self.dist.rank * s.batch_size
            sl = slice(lo, lo + s.batch_size)
            started = time.perf_counter()
            row = self._step(order[sl], hflip[sl], vflip[sl])
            self.seconds += time.perf_counter() - started
            self.step_in_epoch = step + 1
            self.global_step += 1
            for k in LOSS_COLUMNS:
                if k in row:
                    self.sums[k] = self.sums.get(k, 0.0) + row[k]
            if self.dist.main:
                row.update(epoch=self.epoch + 1, step=step + 1, global_step=self.global_step,
                           seconds=round(self.seconds, 3))
                _append_csv(self.dir / "steps.csv", row)
                bar.set_postfix(loss=f"{row['total']:.4f}")
            stop = self._stop_requested or (
                run.stop_after_steps is not None and self.global_step >= run.stop_after_steps)
            if stop or (run.checkpoint_every and self.global_step % run.checkpoint_every == 0
                        and self.step_in_epoch < steps):
                self._save_state()
            if stop:
                bar.close()
                raise TrainingInterrupted(
                    f"{self.stage} stopped at global step {self.global_step}; checkpoint in "
                    f"{self.state_path} (run again with --resume)")
        bar.close()
        self._end_epoch(steps)

    def _end_epoch(self, steps: int) -> None:
        done = self.epoch + 1
        record: dict[str, Any] = {
            "epoch": done,
            "train_seconds": round(self.seconds, 2),
            "train": {k: v / steps for k, v in self.sums.items()},
        }
        if self.dist.main and (done % self.cfg.run.val_every == 0 or done == self.scfg.epochs):
            self.net.eval()
            record["val"] = evaluate(model_fuser(self.net, self.device), self.data.val_images)
            self.net.train()
            shown = ", ".join(f"{k} {record['val'][k]:.3f}" for k in VAL_METRICS
                              if k in record["val"])
            log.info("%s epoch %d/%d: loss %.4f; validation: %s", self.stage, done,
                     self.scfg.epochs, record["train"].get("total", float("nan")), shown or "-")
        self.history.append(record)
        self.epoch, self.step_in_epoch, self.sums = done, 0, {}
        self._save_state()
        if self.dist.main:
            write_history(self.dir, self.history)


# ----------------------------------------------------------------------------------------------
# logs and plots


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=STEP_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k, "")) for k in STEP_COLUMNS})


def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def _truncate_csv(path: Path, global_step: int) -> None:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps_csv = directory / "steps.csv"
    history = json.loads((directory / "epochs.json").read_text())
    with steps_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    fig = plt.figure(figsize=(14, 9))
    grid = fig.add_gridspec(1 + (len(VAL_METRICS) + 3) // 4, 4)
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
    for i, name in enumerate(VAL_METRICS):
        ax = fig.add_subplot(grid[1 + i // 4, i % 4])
        ax.plot(epochs, [h["val"].get(name, np.nan) for h in history if h.get("val")], marker="o")
        ax.set_title(f"val {name}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    fig.tight_layout()
    out = directory / "curves.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------------
# the whole run: checks first, then teacher, then student, then export


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _attach_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("mmdrfuse_ros").addHandler(handler)
    return handler


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, stage: str = "both",
          teacher_path: str | Path | None = None, resume: bool = False,
          overwrite: bool = False) -> dict[str, Any]:
    """Run the requested stage(s). Every input is checked before the first step.

    Raises ConfigError/DataError/TeacherError/PerceptualError (all ValueError) on bad input,
    TrainingInterrupted after writing a checkpoint when stopped early.
    """
    cfg.validate()
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r}: choose one of {STAGES}")
    out = Path(out_dir)
    stages = ["teacher", "student"] if stage == "both" else [stage]
    if teacher_path and "teacher" in stages:
        stages.remove("teacher")  # an external teacher replaces the teacher stage
    if not resume and not overwrite:
        busy = [s for s in stages if (out / s).exists() and any((out / s).iterdir())]
        if busy:
            raise ConfigError(f"{out}/{busy[0]} already holds a run; pass --resume to continue "
                              "it, --overwrite to start again, or choose another --out")

    # 1. everything that can be wrong, before any training
    features = build_feature_net(cfg.perceptual.network, cfg.perceptual.vgg_weights,
                                 cfg.perceptual.fallback_gain)
    teacher: TeacherNet | None = None
    teacher_meta: dict[str, Any] = {}
    own_teacher = out / "teacher" / "teacher.pt"
    s = cfg.student
    needs_teacher = "student" in stages and (s.w_distill > 0 or s.init_conv2_from_teacher)
    if teacher_path:
        teacher, teacher_meta = load_teacher(teacher_path)
    elif needs_teacher and "teacher" not in stages:
        if not own_teacher.is_file():
            raise TeacherError(
                f"the student stage needs a teacher: none at {own_teacher}; pass --teacher PATH, "
                "train one with --stage teacher/both, or disable distillation "
                "(student.w_distill=0, student.init_conv2_from_teacher=false)")
        teacher, teacher_meta = load_teacher(own_teacher)
    data = prepare_data(data_dir, cfg)

    dist, device = init_distributed(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    handler = None
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        handler = _attach_log_file(out / "train.log")
        (out / "config.yaml").write_text(dump_yaml(cfg))
        (out / "split.json").write_text(json.dumps(
            {"train": data.train_names, "val": data.val_names}, indent=1))
        if overwrite:
            for st in stages:
                shutil.rmtree(out / st, ignore_errors=True)
    dist.barrier()
    log.info("data: %s", {k: v for k, v in data.info.items() if k != "val_names"})
    log.info("perceptual network: %s", features.description)
    summary: dict[str, Any] = {"out": str(out), "perceptual": features.info()}
    try:
        # 2. teacher
        if "teacher" in stages:
            if resume and own_teacher.is_file():
                teacher, teacher_meta = load_teacher(own_teacher)
                log.info("teacher already trained: %s", own_teacher)
            else:
                result = StageTrainer("teacher", cfg, data, out, features, device, dist).run(resume)
                teacher = result.model
                teacher_meta = {
                    "recipe": cfg.to_dict()["teacher"], "perceptual": features.info(),
                    "seed": cfg.run.seed, "data": data.info, "validation": result.validation,
                    "train_seconds": round(result.seconds, 1),
                    "parameters": count_parameters(result.model), "git": _git_commit(),
                    "width": cfg.teacher.width, "source": str(own_teacher),
                }
                if dist.main:
                    save_teacher(own_teacher, result.model, teacher_meta)
                log.info("teacher: %s", own_teacher)
            summary["teacher"] = {k: teacher_meta.get(k) for k in
                                  ("validation", "train_seconds", "parameters", "width", "source")}
        # 3. student
        if "student" in stages:
            use_teacher = teacher if (s.w_distill > 0 or s.init_conv2_from_teacher) else None
            result = StageTrainer("student", cfg, data, out, features, device, dist,
                                  teacher=use_teacher).run(resume)
            if dist.main:
                summary["student"] = _export(result, cfg, data, out, features, teacher_meta,
                                             use_teacher is not None)
    finally:
        if handler is not None:
            logging.getLogger("mmdrfuse_ros").removeHandler(handler)
            handler.close()
    if dist.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _export(result: StageResult, cfg: TrainConfig, data: PreparedData, out: Path,
            features: FeatureNet, teacher_meta: dict[str, Any], used_teacher: bool
            ) -> dict[str, Any]:
    s = cfg.student
    distilled = used_teacher and s.w_distill > 0
    training = {
        "recipe": "MMDRFuse: comprehensive loss"
                  + (" + digestible distillation" if distilled else "")
                  + (" + dynamic refresh" if s.refresh else ""),
        "stage": cfg.to_dict()["student"],
        "perceptual": features.info(),
        "bank_dtype": cfg.bank.dtype if s.refresh else None,
        "seed": cfg.run.seed,
        "train_seconds": round(result.seconds, 1),
        "teacher": {k: teacher_meta.get(k) for k in
                    ("source", "width", "parameters", "train_seconds", "validation", "perceptual")}
        if used_teacher else None,
        "torch": str(torch.__version__),
        "git": _git_commit(),
    }
    student_pt = out / "student" / "student.pt"
    _, json_path = export_student(student_pt, result.model, training=training, data=data.info,
                                  validation=result.validation)
    info: dict[str, Any] = {"checkpoint": str(student_pt), "metadata": str(json_path),
                            "validation": result.validation,
                            "train_seconds": round(result.seconds, 1)}
    if cfg.run.export_onnx:
        onnx_path = export_onnx(result.model, out / "student" / "student.onnx")
        info["onnx"] = str(onnx_path)
        try:
            diff = onnx_max_difference(result.model, onnx_path)
        except ImportError:  # onnxruntime is an optional extra (pip install .[onnx])
            log.warning("onnxruntime not installed: %s written but not checked", onnx_path)
        else:
            log.info("ONNX export %s: max |torch - onnxruntime| = %.2e", onnx_path, diff)
            info["onnx_max_difference"] = diff
    return info
