"""The task stage (training/task.py) and the named student prior (training/priors.py).

On tiny synthetic colour pairs and a tiny YOLOX-shaped graph (test/onnx_helpers.py), so no
model file is needed: the stage runs after distillation from the run's student, records its
settings, moves the weights towards a higher person score, and refuses labelled data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdrfuse_ros.fusion.model import load_checkpoint
from mmdrfuse_ros.training.config import ConfigError, TrainConfig, merge
from mmdrfuse_ros.training.data import write_synthetic_dataset
from mmdrfuse_ros.training.priors import STUDENT_PRIORS, prior_student, tone_student
from mmdrfuse_ros.training.task import (
    PersonScore,
    TaskError,
    TaskFrame,
    frame_losses,
    read_frames,
    tune,
)
from mmdrfuse_ros.training.trainer import train

pytest.importorskip("onnx")
from onnx_helpers import tiny_yolox


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("colour"), n=6, height=48, width=64,
                                   seed=4, colour=True)


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return tiny_yolox(tmp_path_factory.mktemp("det") / "yolox.onnx")[0]


def _config(detector: Path, **task: object) -> TrainConfig:
    cfg = TrainConfig()
    merge(cfg, {
        "data": {"patch_size": 16, "stride": 16},
        "teacher": {"width": 0.125, "epochs": 1, "batch_size": 8, "lr": 1e-3},
        "student": {"epochs": 1, "batch_size": 8, "lr": 1e-2, "prior": "tone"},
        "task": {"steps": 3, "yolox_model": str(detector), **task},
        "run": {"export_onnx": False, "threads": 1},
    })
    return cfg


def test_both_stages_then_the_task_stage_record_what_they_did(synth, detector, tmp_path) -> None:
    summary = train(_config(detector), synth, tmp_path / "run")
    distilled = load_checkpoint(tmp_path / "run" / "student" / "student.pt")
    tuned = load_checkpoint(Path(summary["task"]["checkpoint"]))
    training = tuned.meta["training"]
    assert "task guidance" in training["recipe"] and "'tone' prior" in training["recipe"]
    assert "'tone' prior" in distilled.meta["training"]["recipe"]
    assert training["task"]["settings"]["steps"] == 3
    assert training["task"]["labelled_frames_used"] == 0
    assert training["task"]["start"] == "student/student.pt"
    assert str(tmp_path) not in json.dumps(tuned.meta)
    assert len(json.loads((tmp_path / "run" / "task" / "steps.json").read_text())) == 3
    assert any(not torch.equal(tuned.state_dict[k], distilled.state_dict[k])
               for k in distilled.state_dict)
    # --stage task alone starts again from the run's distilled student
    again = train(_config(detector), synth, tmp_path / "run", stage="task", overwrite=True)
    assert Path(again["task"]["checkpoint"]).is_file()


def test_tuning_raises_the_person_score_where_it_falls_short(synth, detector) -> None:
    score = PersonScore(detector)
    start = tone_student(0.4)
    frames = [TaskFrame(ir, vi, score, start) for ir, vi in read_frames(
        _pairs(synth), limit=3)]
    for frame in frames:  # ask for more than the start gives, everywhere
        frame.target = frame.target + 0.5
        with torch.no_grad():
            _det, keep = frame_losses(start, frame, score)
        assert float(keep) == pytest.approx(0.0, abs=1e-7)  # the anchor is the start itself

    def shortfall(net) -> float:
        with torch.no_grad():
            return sum(float(frame_losses(net, f, score)[0]) for f in frames)

    tuned, history = tune(start, frames, score, steps=15, lr=2e-2, anchor=0.0,
                          frames_per_step=2, seed=0)
    assert len(history) == 15
    assert shortfall(tuned) < shortfall(start)


def _pairs(root: Path):
    from mmdrfuse_ros.training.data import find_training_pairs

    return find_training_pairs(root)


def test_labelled_data_missing_student_and_zero_steps_are_refused(synth, detector,
                                                                   tmp_path) -> None:
    labelled = tmp_path / "labelled"
    write_synthetic_dataset(labelled, n=4, height=48, width=64, colour=True)
    (labelled / "annotations").mkdir()
    with pytest.raises(TaskError, match="unlabelled frames only"):
        train(_config(detector), [synth, labelled], tmp_path / "a")
    assert not (tmp_path / "a").exists()  # refused before anything was written
    with pytest.raises(TaskError, match="distilled student"):
        train(_config(detector), synth, tmp_path / "b", stage="task")
    with pytest.raises(TaskError, match="where the task stage writes"):
        train(_config(detector), synth, tmp_path / "e", stage="task",
              start_student=tmp_path / "e" / "task" / "student.pt")
    with pytest.raises(ConfigError, match=r"task\.steps"):
        train(_config(detector, steps=0), synth, tmp_path / "c", stage="task")
    with pytest.raises(TaskError, match="YOLOX"):
        train(_config(tmp_path / "missing.onnx"), synth, tmp_path / "d")


def test_priors_are_named_and_exact() -> None:
    assert STUDENT_PRIORS == ("none", "tone")
    net = prior_student("tone")
    flat = torch.stack([torch.full((5, 5), 0.2), torch.full((5, 5), 0.7)])[None]
    with torch.no_grad():
        out = float(net(flat)[0, 0, 2, 2])
    # the tone rule on flat inputs (a = 0.2, b = 0.7): only u1 and u3 are active
    x = (1 - 0.4) * 0.2 + 0.8 * 1.3 * 0.7 - 0.8 * 0.3 * (0.7 - 0.3)
    assert out == pytest.approx(float(np.tanh(0.7 * x)), abs=1e-6)
    with pytest.raises(ValueError, match="prior"):
        prior_student("vgg")
    cfg = TrainConfig()
    merge(cfg, {"student": {"prior": "tone", "w_distill": 0.0}})
    assert not cfg.student.needs_teacher  # the prior replaces the conv2-from-teacher init
    with pytest.raises(ConfigError, match=r"student\.prior"):
        merge(TrainConfig(), {"student": {"prior": "bogus"}}).validate()
