"""Training configuration: one dataclass tree whose defaults ARE the published recipe.

Resolution order: these defaults (= the ``paper`` preset) < a preset YAML < ``--config`` YAML <
explicit command-line flags. Every key is checked (unknown keys and bad values fail with a
message before any data is read).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmdrfuse_ros.training import PERCEPTUAL_CHOICES, TrainingInputError
from mmdrfuse_ros.training.bank import BANK_DTYPES
from mmdrfuse_ros.training.cache import CACHE_DTYPES
from mmdrfuse_ros.training.losses import FUSION_TARGETS
from mmdrfuse_ros.training.perceptual import FALLBACK_GAIN
from mmdrfuse_ros.training.priors import STUDENT_PRIORS


class ConfigError(TrainingInputError):
    """A configuration value or file that cannot be used."""


@dataclass
class DataConfig:
    name: str | None = None  # free text for the checkpoint metadata, e.g. the data set's citation
    patch_size: int = 128
    stride: int = 128
    val_fraction: float = 0.1
    flips: bool = False  # published: no augmentation
    subdir: str | None = None  # e.g. "train" for LLVIP's infrared/train, visible/train
    max_patches: int | None = None  # cap on training patches (quick experiments)
    max_patches_per_pair: int | None = None  # evenly spaced subset of each pair's patch grid
    val_scenes: str | None = None  # e.g. "01,20": scene-numbered (LLVIP) folders hold these out


@dataclass
class StageConfig:
    epochs: int = 10
    batch_size: int = 25
    lr: float = 1e-4
    w_intensity: float = 1.0
    w_gradient: float = 1.0
    w_perceptual: float = 2.0
    refresh: bool = True  # dynamic refresh (history bank + memory loss)
    target: str = "max"  # intensity/gradient target: max (published) or screen (losses.py)
    target_ir_gamma: float = 1.0  # each source ** gamma before the target is formed
    target_vis_gamma: float = 1.0


@dataclass
class TeacherConfig(StageConfig):
    w_intensity: float = 2.0
    w_perceptual: float = 1.0
    width: float = 1.0  # 1.0 = the published ~557k-parameter teacher


@dataclass
class StudentConfig(StageConfig):
    w_distill: float = 5.0
    init_conv2_from_teacher: bool = True  # published; not applied when a prior is named
    prior: str = "none"  # a hand-set start (training/priors.py), e.g. tone

    @property
    def needs_teacher(self) -> bool:
        """Distillation, or the published init of conv2 from the teacher (no prior named)."""
        return self.w_distill > 0 or (self.init_conv2_from_teacher and self.prior == "none")


@dataclass
class PerceptualConfig:
    network: str = "auto"  # auto: vgg19 with vgg_weights, yolox with yolox_model, else fallback
    vgg_weights: str | None = None
    yolox_model: str | None = None  # network yolox: this ONNX file (default: the detector's)
    fallback_gain: float = FALLBACK_GAIN  # scales the fallback's features (its MSE by gain^2)


@dataclass
class BankConfig:
    dtype: str = "float16"


@dataclass
class TaskConfig:
    """Task guidance after distillation (training/task.py); 0 steps: no task stage."""

    steps: int = 0
    lr: float = 5e-3
    anchor: float = 1.0  # weight of L1 + gradient distance to the distilled student's output
    frames_per_step: int = 2
    max_frames: int | None = None  # evenly spread subset of the training frames
    yolox_model: str | None = None  # default: the model the detector finds


@dataclass
class CacheConfig:
    """Frozen networks' per-patch outputs computed once (training/cache.py)."""

    enabled: bool = True  # used when data.flips is off (a flip changes what the networks say)
    dtype: str = "float16"  # float32: bit-for-bit the uncached loss; float16: half the disk


@dataclass
class RunConfig:
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: the local rank's GPU)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    val_every: int = 1  # epochs between validations (the last epoch is always validated)
    val_max_images: int | None = None
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: end of epoch only)
    export_onnx: bool = True
    stop_after_steps: int | None = None  # simulate an interruption (tests, debugging)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        d, r = self.data, self.run
        _check(d.patch_size >= 16 and d.patch_size % 2 == 0, "data.patch_size must be even, >= 16")
        _check(d.stride >= 1, "data.stride must be >= 1")
        _check(0.0 <= d.val_fraction < 1.0, "data.val_fraction must be in [0, 1)")
        _check(d.max_patches is None or d.max_patches >= 1, "data.max_patches must be >= 1")
        _check(d.max_patches_per_pair is None or d.max_patches_per_pair >= 1,
               "data.max_patches_per_pair must be >= 1")
        for name in ("teacher", "student"):
            s: StageConfig = getattr(self, name)
            _check(s.epochs >= 1, f"{name}.epochs must be >= 1")
            _check(s.batch_size >= 1, f"{name}.batch_size must be >= 1")
            _check(s.lr > 0 and math.isfinite(s.lr), f"{name}.lr must be > 0")
            for key in ("w_intensity", "w_gradient", "w_perceptual"):
                _check(getattr(s, key) >= 0, f"{name}.{key} must be >= 0")
            _check(s.target in FUSION_TARGETS, f"{name}.target must be one of {FUSION_TARGETS}")
            for key in ("target_ir_gamma", "target_vis_gamma"):
                value = getattr(s, key)
                _check(value > 0 and math.isfinite(value), f"{name}.{key} must be > 0")
        _check(self.student.prior in STUDENT_PRIORS,
               f"student.prior must be one of {STUDENT_PRIORS}")
        _check(self.student.w_distill >= 0, "student.w_distill must be >= 0")
        _check(self.teacher.width > 0, "teacher.width must be > 0")
        _check(self.perceptual.network in PERCEPTUAL_CHOICES,
               f"perceptual.network must be one of {PERCEPTUAL_CHOICES}")
        _check(self.perceptual.fallback_gain > 0, "perceptual.fallback_gain must be > 0")
        _check(self.bank.dtype in BANK_DTYPES, f"bank.dtype must be one of {BANK_DTYPES}")
        _check(self.cache.dtype in CACHE_DTYPES, f"cache.dtype must be one of {CACHE_DTYPES}")
        t = self.task
        _check(t.steps >= 0, "task.steps must be >= 0")
        _check(t.lr > 0 and math.isfinite(t.lr), "task.lr must be > 0")
        _check(t.anchor >= 0 and math.isfinite(t.anchor), "task.anchor must be >= 0")
        _check(t.frames_per_step >= 1, "task.frames_per_step must be >= 1")
        _check(t.max_frames is None or t.max_frames >= 1, "task.max_frames must be >= 1")
        _check(r.val_every >= 1, "run.val_every must be >= 1")
        _check(r.checkpoint_every >= 0, "run.checkpoint_every must be >= 0")
        _check(r.threads is None or r.threads >= 1, "run.threads must be >= 1")
        dev = r.device
        _check(dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"),
               "run.device must be auto, cpu, cuda or cuda:N")
        return self


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise ConfigError naming the key."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # also "1e-4", which YAML 1.1 reads as a string
        if hint is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {value!r} is not a valid {hint.__name__}") from None
    raise ConfigError(f"{key}: unsupported field type {hint}")


def _merge_into(obj: Any, values: Mapping[str, Any], prefix: str) -> None:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown setting {full!r}; known: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge_into(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def merge(config: TrainConfig, values: Mapping[str, Any] | None) -> TrainConfig:
    """Apply a nested mapping (from YAML) onto ``config`` in place and return it."""
    if values:
        _merge_into(config, values, "")
    return config


def set_dotted(config: TrainConfig, dotted: str, value: Any) -> None:
    """Apply one ``section.key`` override (from a CLI flag or ``--set``)."""
    parts = dotted.split(".")
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    merge(config, nested)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def dump_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
