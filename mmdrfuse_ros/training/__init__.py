"""Offline training of the MMDRFuse teacher and student (``mmdrfuse train`` is the command)."""

from __future__ import annotations

from pathlib import Path

#: what ``--stage`` may name: one stage, or all of them in order (``both``: the teacher, the
#: student, then the task stage when ``task.steps`` > 0).
STAGES = ("teacher", "student", "task", "both")
#: the perceptual networks (training/perceptual.py); ``auto``: vgg19 with --vgg-weights, yolox
#: with --yolox-model, else the fallback.
PERCEPTUAL_CHOICES = ("auto", "vgg19", "yolox", "fallback", "none")


class TrainingInputError(ValueError):
    """Bad input found before training starts (config, data, teacher, VGG weights)."""


def recorded_path(path: str | Path) -> str:
    """``path`` as metadata records it, never an absolute path of the training machine:
    relative paths as given, absolute ones relative to the working directory when inside it,
    else only the last component (the dataset's or file's name)."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name
