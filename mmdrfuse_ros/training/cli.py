"""``mmdrfuse train`` (teacher + distilled student) and ``mmdrfuse train-report`` (score models).

``training/train.py`` runs the same :func:`main` (``torchrun`` needs a script path). Settings
resolve as: built-in defaults (= the published recipe, preset ``paper``) < ``--preset`` <
``--config`` YAML < the flags < ``--set section.key=value``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mmdrfuse_ros.outputs import OutputError, prepare_output, write_result
from mmdrfuse_ros.training import PERCEPTUAL_CHOICES, STAGES, TrainingInputError

if TYPE_CHECKING:
    from mmdrfuse_ros.training.config import TrainConfig

PRESET_DIR = Path(__file__).resolve().parent / "presets"

#: exit codes: 0 done, 2 bad input (nothing trained), 130 interrupted (resume with --resume).
EXIT_OK, EXIT_INPUT, EXIT_INTERRUPTED = 0, 2, 130

TRAIN_DESCRIPTION = """\
Train the MMDRFuse teacher and distil the 113-parameter student (see training/README.md).

    mmdrfuse train --data ../shared/data/roadscene --out runs/cpu --preset cpu
    mmdrfuse train --data ../shared/data/roadscene --data ../shared/data/llvip/unlabelled \
        --out runs/full --preset cpu-full          # the published student schedule, cached
    mmdrfuse train --data ... --out runs/full --stage task --task-steps 300   # detector in the loop
    torchrun --nproc_per_node 4 training/train.py --data LLVIP --subdir train --out runs/paper \\
        --preset paper --vgg-weights vgg19.pth

Settings resolve as: built-in defaults (= the published recipe, preset ``paper``) < ``--preset``
< ``--config`` YAML < the flags below < ``--set section.key=value``. ``--print-config`` shows the
result. Exit codes: 0 done, 2 bad input (nothing trained), 130 interrupted (resume with
``--resume``).
"""

STUDENTS_DESCRIPTION = """\
Score, in one table, the pixel average and maximum, the published student (with its authors'
per-image min-max output, and raw), our shipped student and each --student, under each output
mapping, on the held-out validation pairs (RoadScene's split + the held-out LLVIP scenes), with
fused YOLOX AP@0.5 on the labelled LLVIP pairs and a flicker table. For example:

    mmdrfuse students --data ../shared/data/roadscene --data ../shared/data/llvip/unlabelled \\
        --published ../shared/models/mmdrfuse_published/student.model \\
        --labelled ../shared/data/llvip/labelled --student "candidate=runs/cpu/student/student.pt"
"""

#: flag -> config key, for the settings people change most; everything else via --set.
FLAG_KEYS = {
    "patch_size": "data.patch_size",
    "stride": "data.stride",
    "val_fraction": "data.val_fraction",
    "flips": "data.flips",
    "subdir": "data.subdir",
    "max_patches": "data.max_patches",
    "max_patches_per_pair": "data.max_patches_per_pair",
    "val_scenes": "data.val_scenes",
    "teacher_width": "teacher.width",
    "teacher_epochs": "teacher.epochs",
    "student_epochs": "student.epochs",
    "batch_size": ("teacher.batch_size", "student.batch_size"),
    "lr": ("teacher.lr", "student.lr"),
    "perceptual": "perceptual.network",
    "vgg_weights": "perceptual.vgg_weights",
    "yolox_model": "perceptual.yolox_model",
    "bank_dtype": "bank.dtype",
    "seed": "run.seed",
    "device": "run.device",
    "threads": "run.threads",
    "checkpoint_every": "run.checkpoint_every",
    "task_steps": "task.steps",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``train-report`` to the ``mmdrfuse`` command."""
    train = subparsers.add_parser(
        "train", help="train the teacher and distil the student (training/README.md)",
        description=TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(train)
    train.set_defaults(func=run_train)
    report = subparsers.add_parser(
        "train-report", help="score checkpoints and the pixel baselines on a run's split",
        description="Re-score trained models and the pixel average/max baselines on a run's "
        "held-out split (full images) and write a Markdown table.")
    add_report_arguments(report)
    report.set_defaults(func=run_report)
    students = subparsers.add_parser(
        "students", help="one table: baselines, published and our students on held-out pairs",
        description=STUDENTS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_students_arguments(students)
    students.set_defaults(func=run_students)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdrfuse train`` (and ``training/train.py``)."""
    p.add_argument("--data", type=Path, action="append",
                   help="folder with ir/ + vi/ (or infrared/ + visible/); repeat to add folders "
                   "(each split on its own, see data.val_scenes)")
    p.add_argument("--out", type=Path, help="run folder (checkpoints, logs, exported student)")
    p.add_argument("--preset", default="paper",
                   help="'paper' (published, for a GPU), 'cpu' (~30 min on 2 cores) or a YAML path")
    p.add_argument("--stage", choices=STAGES, default="both")
    p.add_argument("--config", type=Path, help="YAML file with the same sections as --print-config")
    p.add_argument("--teacher", "--teacher-weights", dest="teacher", type=Path,
                   help="distil from this teacher checkpoint (ours, or a state dict in the "
                   "published teacher_net.py layout, any width) instead of training one; a "
                   "wrong layout is refused before any data is read")
    p.add_argument("--start-student", type=Path, help="--stage task: the distilled student to "
                   "tune (default: the run's student/student.pt)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, exit")
    g = p.add_argument_group("common settings (each is a config key, see --print-config)")
    g.add_argument("--patch-size", type=int)
    g.add_argument("--stride", type=int)
    g.add_argument("--val-fraction", type=float)
    g.add_argument("--flips", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--subdir", help="modality sub-folder, e.g. 'train' for LLVIP")
    g.add_argument("--max-patches", type=int)
    g.add_argument("--max-patches-per-pair", type=int,
                   help="evenly spaced subset of each pair's patch grid")
    g.add_argument("--val-scenes", help="scene-numbered (LLVIP) folders: hold out these scenes, "
                   "e.g. 01,20")
    g.add_argument("--teacher-width", type=float, help="1.0 = the published 557k teacher")
    g.add_argument("--teacher-epochs", type=int)
    g.add_argument("--student-epochs", type=int)
    g.add_argument("--batch-size", type=int, help="per process, both stages")
    g.add_argument("--lr", type=float, help="both stages")
    g.add_argument("--perceptual", choices=PERCEPTUAL_CHOICES)
    g.add_argument("--vgg-weights", help="local torchvision vgg19 state dict (nothing downloads)")
    g.add_argument("--yolox-model", help="YOLOX ONNX file for --perceptual yolox (default: the "
                   "model the detector finds)")
    g.add_argument("--bank-dtype", choices=("float16", "uint8"))
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--checkpoint-every", type=int, help="also checkpoint every N steps")
    g.add_argument("--task-steps", type=int, help="task stage steps (0: none; --stage task or "
                   "both); its other settings: --set task.anchor=1 ...")
    g.add_argument("--no-distill", action="store_true",
                   help="ablation: no teacher at all (w_distill=0, conv2 not from the teacher)")
    g.add_argument("--no-refresh", action="store_true", help="ablation: no dynamic refresh")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set student.w_distill=2 (repeatable)")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < preset < --config < flags < --set, validated; ConfigError says what is wrong."""
    import yaml

    from mmdrfuse_ros.training.config import ConfigError, TrainConfig, load_yaml, merge, set_dotted

    cfg = TrainConfig()
    preset = Path(args.preset) if args.preset.endswith((".yaml", ".yml")) else (
        PRESET_DIR / f"{args.preset}.yaml")
    if not preset.is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"preset {args.preset!r} not found (available: {names} or a YAML path)")
    merge(cfg, load_yaml(preset))
    if args.config:
        merge(cfg, load_yaml(args.config))
    for attr, keys in FLAG_KEYS.items():
        value = getattr(args, attr)
        if value is not None:
            for key in (keys if isinstance(keys, tuple) else (keys,)):
                set_dotted(cfg, key, value)
    if args.no_distill:
        set_dotted(cfg, "student.w_distill", 0.0)
        set_dotted(cfg, "student.init_conv2_from_teacher", False)
    if args.no_refresh:
        set_dotted(cfg, "teacher.refresh", False)
        set_dotted(cfg, "student.refresh", False)
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        set_dotted(cfg, key.strip(), yaml.safe_load(raw))
    return cfg.validate()


def run_train(args: argparse.Namespace) -> int:
    """Entry point of ``mmdrfuse train``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from mmdrfuse_ros.training.config import ConfigError, dump_yaml
    from mmdrfuse_ros.training.stage import TrainingInterrupted
    from mmdrfuse_ros.training.trainer import train

    try:
        cfg = resolve_config(args)
        if args.print_config:
            print(dump_yaml(cfg), end="")
            return EXIT_OK
        if args.data is None or args.out is None:
            raise ConfigError("--data and --out are required (see --help)")
        prepare_output(args.out, [args.data], "dir")
        summary = train(cfg, args.data, args.out, args.stage, args.teacher, args.resume,
                        args.overwrite, args.start_student)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (TrainingInputError, OutputError) as exc:  # config, data, teacher, VGG weights,
        print(f"error: {exc}", file=sys.stderr)         # an unusable --out: nothing trained
        return EXIT_INPUT
    for stage in ("student", "task"):
        done = summary.get(stage)
        if done:
            print(f"{stage}: {done['checkpoint']} (metadata {done['metadata']})")
    return EXIT_OK


def main(argv: list[str] | None = None, prog: str = "mmdrfuse train") -> int:
    """``mmdrfuse train`` as a function (what ``training/train.py`` runs)."""
    parser = argparse.ArgumentParser(prog=prog, description=TRAIN_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdrfuse train-report``."""
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True, help="split.json written by a run")
    p.add_argument("--model", action="append", default=[], metavar="LABEL=PATH")
    _add_table_outputs(p, "write the Markdown table here (default: stdout)")


def run_report(args: argparse.Namespace) -> int:
    """Entry point of ``mmdrfuse train-report``; returns the exit code."""
    import json

    from mmdrfuse_ros.training.report import markdown, score

    models = _labelled_paths(args.model, "--model")
    if models is None:
        return EXIT_INPUT

    def tables() -> tuple[str, str]:
        rows = score(args.data, args.split, models)
        n_val = len(json.loads(args.split.read_text())["val"])
        return markdown(rows, n_val), json.dumps(rows, indent=1)

    inputs = [args.data, args.split, *(path for _, path in models)]
    return _table_command(args, inputs, tables, "report", (OutputError,))


def add_students_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``mmdrfuse students``."""
    p.add_argument("--data", type=Path, action="append", required=True,
                   help="data folder whose held-out pairs are scored (repeat)")
    p.add_argument("--published", type=Path, help="the published student state dict")
    p.add_argument("--student", action="append", default=[], metavar="LABEL=PATH",
                   help="one of our checkpoints (repeat); the shipped student is always scored")
    p.add_argument("--teacher", action="append", default=[], metavar="LABEL=PATH",
                   help="a teacher checkpoint, ours or the published layout (repeat): scored "
                   "like a student, under each mapping (no flicker row)")
    p.add_argument("--mappings", default="raw,minmax,percentile",
                   help="output mappings of our students' rows (raw, minmax, percentile, "
                   "authors-minmax)")
    p.add_argument("--labelled", type=Path, help="labelled LLVIP folder (ir/ vi/ annotations/) "
                   "for the YOLOX AP column")
    p.add_argument("--yolox", default="", help="YOLOX ONNX model (default: discovered)")
    p.add_argument("--flicker-frames", type=int, default=24, help="0: no flicker table")
    p.add_argument("--grid", type=Path, help="also write a PNG: thermal | visible | published "
                   "student | each student (minmax), two held-out frames of each data folder")
    _add_table_outputs(p, "write the Markdown here (default: stdout)")


def run_students(args: argparse.Namespace) -> int:
    """Entry point of ``mmdrfuse students``; returns the exit code."""
    import json

    from mmdrfuse_ros.resources import default_weights_path
    from mmdrfuse_ros.training.students import ROW_MAPPINGS, StudentsRequest, compare

    given = _labelled_paths(args.student, "--student")
    teachers = _labelled_paths(args.teacher, "--teacher")
    if given is None or teachers is None:
        return EXIT_INPUT
    students = [("shipped student", default_weights_path()), *given]
    mappings = [m.strip() for m in args.mappings.split(",") if m.strip()]
    if bad := [m for m in mappings if m not in ROW_MAPPINGS]:
        print(f"error: --mappings {bad}: choose from {ROW_MAPPINGS}", file=sys.stderr)
        return EXIT_INPUT

    def tables() -> tuple[str, str]:
        if args.grid:
            prepare_output(args.grid, inputs, "file", flag="--grid")
        req = StudentsRequest(args.data, students, mappings, args.published, args.labelled,
                              args.yolox, args.flicker_frames, teachers, args.grid)
        text, rows = compare(req, progress=lambda label: print(f"scored {label}",
                                                                file=sys.stderr))
        return text, json.dumps([{"label": r.label, "params": r.params, "metrics": r.metrics,
                                  "EN_min": r.en_min, "AP50": r.ap50,
                                  "AP50_interval": r.ap50_ci} for r in rows], indent=1)

    inputs = [*args.data, args.published, args.labelled,
              *(path for _, path in students + teachers)]
    return _table_command(args, inputs, tables, "table",
                          (TrainingInputError, OutputError, ValueError, OSError))


def _labelled_paths(items: list[str], flag: str) -> list[tuple[str, Path]] | None:
    """``LABEL=PATH`` arguments as (label, path); None (after saying why) for a malformed one."""
    pairs = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep:
            print(f"error: {flag} {item!r}: expected LABEL=PATH", file=sys.stderr)
            return None
        pairs.append((label, Path(path)))
    return pairs


def _add_table_outputs(p: argparse.ArgumentParser, out_help: str) -> None:
    """``--out`` (the Markdown table; default stdout) and ``--json`` (all numbers) of the
    commands that write a table: :func:`_check_table_outputs`, :func:`_write_table_outputs`."""
    p.add_argument("--out", type=Path, help=out_help)
    p.add_argument("--json", type=Path, help="also write all numbers as JSON")


def _check_table_outputs(args: argparse.Namespace, inputs: list[Path | None]) -> None:
    """OutputError unless ``--out`` and ``--json`` are usable files that overwrite no input."""
    for flag, out in (("--out", args.out), ("--json", args.json)):
        if out:
            prepare_output(out, inputs, "file", flag=flag)


def _table_command(args: argparse.Namespace, inputs: list[Path | None],
                   tables: Callable[[], tuple[str, str]], what: str,
                   errors: tuple[type[Exception], ...]) -> int:
    """What ``train-report`` and ``students`` share: ``--out``/``--json`` checked against the
    ``inputs`` before ``tables()`` (the scoring, which takes minutes) makes the Markdown and the
    JSON numbers, then both written. One of ``errors`` is reported: exit 2."""
    try:
        _check_table_outputs(args, inputs)
        text, numbers = tables()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return _write_table_outputs(args, text, numbers, what)


def _write_table_outputs(args: argparse.Namespace, text: str, numbers: str, what: str) -> int:
    """The Markdown table to ``--out`` (else stdout) and the numbers to ``--json``; exit 1 when
    either had to go elsewhere (:func:`write_result` says where)."""
    written = True
    if args.out:
        written &= write_result(args.out, text, what) == args.out
    else:
        print(text, end="")
    if args.json:
        written &= write_result(args.json, numbers, "scores") == args.json
    return EXIT_OK if written else 1
