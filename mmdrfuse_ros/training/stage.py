"""One training stage (teacher or student) over the patch set, with exact resume and DDP.

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

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mmdrfuse_ros.fusion.model import StudentNet, count_parameters
from mmdrfuse_ros.metrics import VALIDATION_METRICS
from mmdrfuse_ros.training import losses
from mmdrfuse_ros.training.bank import KINDS, HistoryBank
from mmdrfuse_ros.training.cache import PatchCache, network_key, open_or_fill, patches_key
from mmdrfuse_ros.training.config import StageConfig, StudentConfig, TeacherConfig, TrainConfig
from mmdrfuse_ros.training.data import PreparedData, apply_flips, epoch_plan
from mmdrfuse_ros.training.distributed import DistInfo
from mmdrfuse_ros.training.evaluation import evaluate, model_fuser
from mmdrfuse_ros.training.logs import (
    LOSS_COLUMNS,
    append_step_row,
    truncate_steps,
    write_history,
)
from mmdrfuse_ros.training.perceptual import DEEP_STAGES, SHALLOW_STAGES, FeatureNet
from mmdrfuse_ros.training.priors import prior_student
from mmdrfuse_ros.training.teacher import TeacherNet

log = logging.getLogger("mmdrfuse_ros.training")


class TrainingInterrupted(RuntimeError):
    """Training stopped early (Ctrl-C or ``run.stop_after_steps``) after a checkpoint."""


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


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
            if self.scfg.prior != "none":
                self.net.load_state_dict(prior_student(self.scfg.prior).state_dict())
            elif self.scfg.init_conv2_from_teacher and teacher is not None:
                self.net.conv2[1].load_state_dict(teacher.conv00[1].state_dict())
        self.net.to(device)
        wrapped: nn.Module = _WithFeatures(self.net)
        if dist.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
        self.model = wrapped
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.scfg.lr)
        self.bank: HistoryBank | None = None
        self.perceptual_cache: PatchCache | None = None
        self.teacher_cache: PatchCache | None = None
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

    def _open_caches(self) -> None:
        """Per-patch outputs of the frozen networks, computed once (training/cache.py)."""
        c = self.cfg.cache
        if not c.enabled or self.cfg.data.flips:
            if c.enabled:
                log.info("%s: no cache (data.flips: a flip changes what the networks say)",
                         self.stage)
            return
        directory = self.dir.parent / "cache"
        patches = patches_key(self.data.patches)
        common = dict(patches=self.data.patches, dtype=c.dtype, device=self.device,
                      main=self.dist.main, barrier=self.dist.barrier)
        if self.scfg.w_perceptual > 0 and self.features.kind != "none":
            key = patches + network_key(self.features, self.features.kind)
            self.perceptual_cache = open_or_fill(directory, "perceptual", key,
                                                 compute=self._source_targets, **common)
        if self.distilling:
            assert self.teacher is not None
            key = patches + network_key(self.teacher, "teacher")
            self.teacher_cache = open_or_fill(directory, "teacher", key,
                                              compute=self._teacher_targets, **common)

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
            truncate_steps(self.dir / "steps.csv", self.global_step)
        log.info("%s: resumed at epoch %d, step %d (global step %d)", self.stage,
                 self.epoch + 1, self.step_in_epoch, self.global_step)

    # -- one step ------------------------------------------------------------------------------

    def _step(self, idx: np.ndarray, hflip: np.ndarray, vflip: np.ndarray) -> dict[str, float]:
        s = self.scfg
        ir, vi = self.data.patches.batch(idx, hflip, vflip, self.device)
        x = torch.cat([ir, vi], 1)
        feats, out = self.model(x)
        target = losses.fusion_target(ir, vi, s.target, s.target_ir_gamma, s.target_vis_gamma)
        terms: dict[str, torch.Tensor] = {
            "intensity": losses.intensity_loss(out, target),
            "gradient": losses.gradient_loss(out, target),
        }
        weights = {"intensity": s.w_intensity, "gradient": s.w_gradient}
        out_feats = self.features(out) if (s.w_perceptual > 0 or s.refresh) else []
        if s.w_perceptual > 0 and out_feats:
            cache = self.perceptual_cache
            targets = (cache.read(idx, self.device) if cache is not None
                       else self._source_targets(ir, vi))
            terms["perceptual"] = losses.perceptual_loss_to(out_feats, targets)
            weights["perceptual"] = s.w_perceptual
        if self.distilling:
            cache = self.teacher_cache
            t_maps = (cache.read(idx, self.device) if cache is not None
                      else self._teacher_targets(ir, vi))
            terms["distill"] = losses.distillation_loss([feats, out], t_maps)
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

    def _source_targets(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        """max(phi(IR), phi(VIS)) per stage: fixed per patch, read from the cache when on."""
        with torch.no_grad():
            return losses.perceptual_targets(self.features(ir), self.features(vi))

    def _teacher_targets(self, ir: torch.Tensor, vi: torch.Tensor) -> list[torch.Tensor]:
        """The frozen teacher's distillation maps: fixed per patch, read from the cache when on."""
        assert self.teacher is not None
        with torch.no_grad():
            return losses.distill_maps(*self.teacher.forward_with_features(torch.cat([ir, vi], 1)))

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
        self._open_caches()
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
                append_step_row(self.dir / "steps.csv", row)
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
            shown = ", ".join(f"{k} {record['val'][k]:.3f}" for k in VALIDATION_METRICS
                              if k in record["val"])
            log.info("%s epoch %d/%d: loss %.4f; validation: %s", self.stage, done,
                     self.scfg.epochs, record["train"].get("total", float("nan")), shown or "-")
        self.history.append(record)
        self.epoch, self.step_in_epoch, self.sums = done, 0, {}
        self._save_state()
        if self.dist.main:
            write_history(self.dir, self.history)
