"""The whole training run: every input checked first, then teacher, then student, then export.

:func:`train` is what ``mmdrfuse train`` runs; one stage is a
:class:`mmdrfuse_ros.training.stage.StageTrainer`. Under ``torchrun`` every rank calls
:func:`train`; rank 0 writes the run folder.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmdrfuse_ros.fusion.model import count_parameters
from mmdrfuse_ros.training import STAGES, recorded_path
from mmdrfuse_ros.training.config import ConfigError, TrainConfig, dump_yaml
from mmdrfuse_ros.training.data import PreparedData, prepare_data
from mmdrfuse_ros.training.distributed import DistInfo, init_distributed
from mmdrfuse_ros.training.export import export_onnx, export_student, onnx_max_difference
from mmdrfuse_ros.training.perceptual import FeatureNet, build_feature_net
from mmdrfuse_ros.training.stage import StageResult, StageTrainer
from mmdrfuse_ros.training.task import TaskInputs, run_task_stage
from mmdrfuse_ros.training.teacher import TeacherError, TeacherNet, load_teacher, save_teacher

log = logging.getLogger("mmdrfuse_ros.training")

#: teacher metadata keys carried into the run summary and the student's metadata.
_TEACHER_SUMMARY = ("validation", "train_seconds", "parameters", "width", "source")
_TEACHER_IN_STUDENT = ("source", "width", "parameters", "train_seconds", "validation",
                       "perceptual")


@dataclass
class _Run:
    """What every stage of one run shares."""

    cfg: TrainConfig
    data: PreparedData
    out: Path
    features: FeatureNet
    device: torch.device
    dist: DistInfo

    @property
    def own_teacher(self) -> Path:
        return self.out / "teacher" / "teacher.pt"


def train(cfg: TrainConfig, data_dir: str | Path | list[str | Path], out_dir: str | Path,
          stage: str = "both",
          teacher_path: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, start_student: str | Path | None = None) -> dict[str, Any]:
    """Run the requested stage(s). Every input is checked before the first step.

    Raises ConfigError/DataError/TeacherError/PerceptualError (all ValueError) on bad input,
    TrainingInterrupted after writing a checkpoint when stopped early.
    """
    cfg.validate()
    out = Path(out_dir)
    stages = _stages(stage, cfg, teacher_path, out, resume, overwrite)
    # everything that can be wrong, before any training
    features = build_feature_net(cfg.perceptual.network, cfg.perceptual.vgg_weights,
                                 cfg.perceptual.fallback_gain, cfg.perceptual.yolox_model)
    teacher, teacher_meta = _given_teacher(cfg, stages, teacher_path, out)
    task = TaskInputs.check(cfg.task, data_dir, out, start_student,
                            "student" in stages) if "task" in stages else None
    data = prepare_data(data_dir, cfg)

    dist, device = init_distributed(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    run = _Run(cfg, data, out, features, device, dist)
    handler = _prepare_out(run, stages, overwrite) if dist.main else None
    dist.barrier()
    log.info("data: %s", {k: v for k, v in data.info.items() if k != "val_names"})
    log.info("perceptual network: %s", features.description)
    summary: dict[str, Any] = {"out": str(out), "perceptual": features.info()}
    try:
        if "teacher" in stages:
            teacher, teacher_meta = _teacher_stage(run, resume)
            summary["teacher"] = {k: teacher_meta.get(k) for k in _TEACHER_SUMMARY}
        if "student" in stages:
            s = cfg.student
            use_teacher = teacher if s.needs_teacher else None
            result = StageTrainer("student", cfg, data, out, features, device, dist,
                                  teacher=use_teacher).run(resume)
            if dist.main:
                summary["student"] = _export(run, result, teacher_meta, use_teacher is not None)
        if task is not None and dist.main:
            summary["task"] = run_task_stage(cfg, data, out / "task", task)
    finally:
        if handler is not None:
            logging.getLogger("mmdrfuse_ros").removeHandler(handler)
            handler.close()
    if dist.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _stages(stage: str, cfg: TrainConfig, teacher_path: str | Path | None, out: Path,
            resume: bool, overwrite: bool) -> list[str]:
    """The stages to run; ConfigError for an unknown stage or an --out holding a run."""
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r}: choose one of {STAGES}")
    if stage == "task" and cfg.task.steps == 0:
        raise ConfigError("--stage task needs task.steps > 0 (--task-steps N)")
    stages = ["teacher", "student"] if stage == "both" else [stage]
    if stage == "both" and cfg.task.steps > 0:
        stages.append("task")
    if teacher_path and "teacher" in stages:
        stages.remove("teacher")  # an external teacher replaces the teacher stage
    if not resume and not overwrite:
        busy = [s for s in stages if (out / s).exists() and any((out / s).iterdir())]
        if busy:
            raise ConfigError(f"{out}/{busy[0]} already holds a run; pass --resume to continue "
                              "it, --overwrite to start again, or choose another --out")
    return stages


def _given_teacher(cfg: TrainConfig, stages: list[str], teacher_path: str | Path | None,
                   out: Path) -> tuple[TeacherNet | None, dict[str, Any]]:
    """The teacher the student needs when this run does not train one (checked up front)."""
    own_teacher = out / "teacher" / "teacher.pt"
    s = cfg.student
    needs_teacher = "student" in stages and s.needs_teacher
    if teacher_path:
        return load_teacher(teacher_path)
    if needs_teacher and "teacher" not in stages:
        if not own_teacher.is_file():
            raise TeacherError(
                f"the student stage needs a teacher: none at {own_teacher}; pass --teacher PATH, "
                "train one with --stage teacher/both, or disable distillation "
                "(student.w_distill=0, student.init_conv2_from_teacher=false)")
        return load_teacher(own_teacher)
    return None, {}


def _prepare_out(run: _Run, stages: list[str], overwrite: bool) -> logging.Handler:
    """Create the run folder with its config, split and log file (rank 0 only)."""
    run.out.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(run.out / "train.log")
    (run.out / "config.yaml").write_text(dump_yaml(run.cfg))
    (run.out / "split.json").write_text(json.dumps(
        {"train": run.data.train_names, "val": run.data.val_names}, indent=1))
    if overwrite:
        for st in stages:
            shutil.rmtree(run.out / st, ignore_errors=True)
    return handler


def _teacher_stage(run: _Run, resume: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the teacher (or, on resume, take the one already trained) and save it."""
    cfg = run.cfg
    if resume and run.own_teacher.is_file():
        log.info("teacher already trained: %s", run.own_teacher)
        return load_teacher(run.own_teacher)
    result = StageTrainer("teacher", cfg, run.data, run.out, run.features, run.device,
                          run.dist).run(resume)
    teacher_meta = {
        "recipe": cfg.to_dict()["teacher"], "perceptual": run.features.info(),
        "seed": cfg.run.seed, "data": run.data.info, "validation": result.validation,
        "train_seconds": round(result.seconds, 1),
        "parameters": count_parameters(result.model), "git": _git_commit(),
        "width": cfg.teacher.width, "source": recorded_path(run.own_teacher),
    }
    if run.dist.main:
        save_teacher(run.own_teacher, result.model, teacher_meta)
    log.info("teacher: %s", run.own_teacher)
    return result.model, teacher_meta


def _export(run: _Run, result: StageResult, teacher_meta: dict[str, Any], used_teacher: bool
            ) -> dict[str, Any]:
    """Write the student checkpoint with its metadata (and ONNX); the summary's student entry."""
    cfg, s = run.cfg, run.cfg.student
    distilled = used_teacher and s.w_distill > 0
    training = {
        "recipe": "MMDRFuse: comprehensive loss"
                  + (" + digestible distillation" if distilled else "")
                  + (" + dynamic refresh" if s.refresh else "")
                  + (f", started from the hand-set '{s.prior}' prior" if s.prior != "none"
                     else ""),
        "stage": cfg.to_dict()["student"],
        "perceptual": run.features.info(),
        "bank_dtype": cfg.bank.dtype if s.refresh else None,
        "seed": cfg.run.seed,
        "train_seconds": round(result.seconds, 1),
        "teacher": {k: teacher_meta.get(k) for k in _TEACHER_IN_STUDENT} if used_teacher
        else None,
        "torch": str(torch.__version__),
        "git": _git_commit(),
    }
    student_pt = run.out / "student" / "student.pt"
    _, json_path = export_student(student_pt, result.model, training=training,
                                  data=run.data.info, validation=result.validation)
    info: dict[str, Any] = {"checkpoint": str(student_pt), "metadata": str(json_path),
                            "validation": result.validation,
                            "train_seconds": round(result.seconds, 1)}
    if cfg.run.export_onnx:
        info.update(_export_onnx(result, run.out / "student" / "student.onnx"))
    return info


def _export_onnx(result: StageResult, path: Path) -> dict[str, Any]:
    onnx_path = export_onnx(result.model, path)
    info: dict[str, Any] = {"onnx": str(onnx_path)}
    try:
        diff = onnx_max_difference(result.model, onnx_path)
    except ImportError:  # onnxruntime is an optional extra (pip install .[onnx])
        log.warning("onnxruntime not installed: %s written but not checked", onnx_path)
    else:
        log.info("ONNX export %s: max |torch - onnxruntime| = %.2e", onnx_path, diff)
        info["onnx_max_difference"] = diff
    return info


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
