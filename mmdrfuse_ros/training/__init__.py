"""Offline training of the MMDRFuse teacher and student (``training/train.py`` is the CLI)."""


class TrainingInputError(ValueError):
    """Bad input found before training starts (config, data, teacher, VGG weights)."""
