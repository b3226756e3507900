"""The training tool end to end on tiny synthetic pairs: data checks, teacher, loops, resume,
export and the CLI's refusal of bad input (all before any training step)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmdrfuse_ros.datasets import read_luma
from mmdrfuse_ros.fusion.model import StudentNet, load_checkpoint, save_checkpoint
from mmdrfuse_ros.resources import default_weights_path
from mmdrfuse_ros.training.config import ConfigError, TrainConfig, merge, set_dotted
from mmdrfuse_ros.training.data import (
    DataError,
    PatchSet,
    apply_flips,
    epoch_plan,
    find_training_pairs,
    load_pairs,
    prepare_data,
    split_names,
    write_synthetic_dataset,
)
from mmdrfuse_ros.training.distributed import DistInfo
from mmdrfuse_ros.training.export import export_onnx, install_default, onnx_max_difference
from mmdrfuse_ros.training.perceptual import EdgePyramid
from mmdrfuse_ros.training.stage import StageTrainer, TrainingInterrupted
from mmdrfuse_ros.training.teacher import TeacherError, TeacherNet, load_teacher, save_teacher
from mmdrfuse_ros.training.trainer import train

REPO = Path(__file__).resolve().parent.parent
TRAIN_PY = REPO / "training" / "train.py"


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), n=6, height=48, width=64,
                                   seed=3)


def tiny_config(**run: object) -> TrainConfig:
    cfg = TrainConfig()
    merge(cfg, {
        "data": {"patch_size": 16, "stride": 16, "flips": True},
        "teacher": {"width": 0.125, "epochs": 1, "batch_size": 8, "lr": 1e-3},
        "student": {"epochs": 2, "batch_size": 8, "lr": 1e-2},
        "run": {"export_onnx": False, "threads": 1, **run},
    })
    return cfg


# -- data ----------------------------------------------------------------------------------------


def test_pairs_layouts_colour_and_split(tmp_path) -> None:
    root = write_synthetic_dataset(tmp_path / "d", n=5, height=20, width=24, colour=True)
    (root / "ir").rename(root / "infrared")  # the LLVIP folder names
    (root / "vi").rename(root / "visible")
    pairs = find_training_pairs(root)
    assert [p.name for p in pairs] == [f"{i:03d}" for i in range(5)]
    colour = cv2.imread(str(pairs[0].vis))
    assert colour.ndim == 3
    y = read_luma(pairs[0].vis)
    b, g, r = (colour[:, :, i].astype(float) for i in range(3))
    assert np.abs(y - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1.0
    train_a, val_a = split_names([p.name for p in pairs], 0.4)
    train_b, val_b = split_names(list(reversed([p.name for p in pairs])), 0.4)
    assert (train_a, val_a) == (train_b, val_b) and len(val_a) == 2
    assert not set(train_a) & set(val_a)


@pytest.mark.parametrize("problem, match", [
    ("missing", "does not exist"),
    ("no_modalities", "must contain one of"),
    ("empty", "no images"),
    ("unpaired", "unpaired images"),
    ("size", "pairs must be registered to the same size"),
    ("unreadable", "cannot be read"),
])
def test_bad_data_folders_are_refused_with_a_reason(tmp_path, problem: str, match: str) -> None:
    root = tmp_path / "d"
    if problem != "missing":
        write_synthetic_dataset(root, n=3, height=32, width=32)
    if problem == "no_modalities":
        shutil.rmtree(root / "vi")
    elif problem == "empty":
        for f in [*root.glob("ir/*"), *root.glob("vi/*")]:
            f.unlink()
    elif problem == "unpaired":
        (root / "vi" / "001.png").unlink()
    elif problem == "size":
        cv2.imwrite(str(root / "vi" / "001.png"), np.zeros((30, 32), np.uint8))
    elif problem == "unreadable":
        (root / "ir" / "002.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=match):
        load_pairs(find_training_pairs(root))


def test_patches_flips_and_epoch_plan() -> None:
    ir = np.arange(40 * 50, dtype=np.uint8).reshape(40, 50)
    patches = PatchSet([(ir, 255 - ir)], size=16, stride=16)
    assert len(patches) == 2 * 3  # no partial patches at the border (published)
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    h, v = np.array([True, False]), np.array([True, True])
    assert np.array_equal(apply_flips(apply_flips(a, h, v), h, v), a)
    assert np.array_equal(apply_flips(a, h, v)[0], a[0, ::-1, ::-1])
    first = epoch_plan(10, 3, epoch=1, seed=5, flips=True)
    again = epoch_plan(10, 3, epoch=1, seed=5, flips=True)
    other = epoch_plan(10, 3, epoch=2, seed=5, flips=True)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert len(first[0]) == 9 and not np.array_equal(first[0], other[0])
    with pytest.raises(DataError, match="even"):
        PatchSet([(ir, ir)], size=15, stride=16)


# -- teacher -------------------------------------------------------------------------------------


def test_teacher_shape_published_layout_and_odd_sizes(tmp_path) -> None:
    full = TeacherNet(1.0)
    assert sum(p.numel() for p in full.parameters()) == 556_489  # the paper: "about 556k"
    assert full.conv00[1].weight.shape == (1, 4, 3, 3)  # the student's conv2 shape
    small = TeacherNet(0.25)
    buffer, out = small.forward_with_features(torch.rand(1, 2, 21, 30))
    assert buffer.shape == (1, 4, 21, 30) and out.shape == (1, 1, 21, 30)
    # a bare state dict in the published key layout loads, the width is inferred
    torch.save(small.state_dict(), tmp_path / "published.model")
    loaded, meta = load_teacher(tmp_path / "published.model")
    assert meta["width"] == 0.25 and torch.equal(loaded.conv1[1].weight, small.conv1[1].weight)


def test_teacher_of_the_wrong_shape_is_refused(tmp_path) -> None:
    state = TeacherNet(0.25).state_dict()
    state["conv00.1.weight"] = torch.zeros(1, 8, 3, 3)
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(TeacherError, match=r"conv00.1.weight has shape \(1, 8, 3, 3\)"):
        load_teacher(tmp_path / "wrong.pt")
    torch.save(StudentNet().state_dict(), tmp_path / "student.pt")
    with pytest.raises(TeacherError, match="not an MMDRFuse teacher"):
        load_teacher(tmp_path / "student.pt")


# -- config --------------------------------------------------------------------------------------


def test_config_defaults_are_published_and_yaml_is_checked() -> None:
    cfg = TrainConfig()
    assert (cfg.student.w_distill, cfg.student.w_perceptual, cfg.teacher.w_intensity) == (5, 2, 2)
    assert (cfg.student.lr, cfg.student.batch_size, cfg.data.patch_size) == (1e-4, 25, 128)
    merge(cfg, {"student": {"lr": "1e-3"}})  # YAML 1.1 reads 1e-3 as a string
    assert cfg.student.lr == 1e-3
    with pytest.raises(ConfigError, match=r"unknown setting 'student\.lrr'"):
        set_dotted(cfg, "student.lrr", 1)
    with pytest.raises(ConfigError, match="not a valid int"):
        set_dotted(cfg, "teacher.epochs", 2.5)
    set_dotted(cfg, "data.patch_size", 15)
    with pytest.raises(ConfigError, match="patch_size"):
        cfg.validate()
    assert (cfg.student.target, cfg.teacher.target) == ("max", "max")  # the published target
    for key, value, match in (
            ("student.target", "sum", "student.target must be one of"),
            ("teacher.target_ir_gamma", 0, "teacher.target_ir_gamma must be > 0")):
        bad = TrainConfig()
        set_dotted(bad, key, value)
        with pytest.raises(ConfigError, match=match):
            bad.validate()


# -- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["max", "screen"])
def test_a_few_training_steps_lower_the_loss(synth, target: str) -> None:
    cfg = tiny_config()
    set_dotted(cfg, "student.target", target)
    set_dotted(cfg, "student.target_vis_gamma", 0.7)
    data = prepare_data(synth, cfg)
    trainer = StageTrainer("student", cfg, data, Path("unused"), EdgePyramid(),
                           torch.device("cpu"), DistInfo())
    idx = np.arange(8)
    no = np.zeros(8, dtype=bool)
    totals = [trainer._step(idx, no, no)["total"] for _ in range(3)]  # loss before each update
    assert totals[2] < totals[0]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(synth, tmp_path) -> None:
    whole = train(tiny_config(), synth, tmp_path / "whole")
    assert whole["student"]["validation"] or whole["student"]["validation"] == {}
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(stop_after_steps=4), synth, tmp_path / "cut")  # mid teacher epoch 1
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(stop_after_steps=10), synth, tmp_path / "cut", resume=True)  # epoch 2
    train(tiny_config(), synth, tmp_path / "cut", resume=True)
    for name in ("teacher/teacher.pt", "student/student.pt"):
        a = torch.load(tmp_path / "whole" / name, weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "cut" / name, weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    history = json.loads((tmp_path / "cut" / "student" / "epochs.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (tmp_path / "cut" / "student" / "curves.png").stat().st_size > 0
    ckpt = load_checkpoint(tmp_path / "cut" / "student" / "student.pt")
    assert "distillation" in ckpt.meta["training"]["recipe"]
    assert ckpt.meta["training"]["perceptual"]["network"] == "fallback"
    assert ckpt.meta["data"]["val_pairs"] == 1


def test_students_train_with_the_yolox_perceptual_network(synth, tmp_path) -> None:
    pytest.importorskip("onnx")
    from onnx_helpers import tiny_yolox

    model, _ = tiny_yolox(tmp_path / "yolox.onnx")
    cfg = tiny_config()
    merge(cfg, {"perceptual": {"network": "yolox", "yolox_model": str(model)},
                "student": {"epochs": 1}})
    summary = train(cfg, synth, tmp_path / "run")
    assert summary["perceptual"]["network"] == "yolox"
    steps = (tmp_path / "run" / "student" / "steps.csv").read_text().splitlines()
    column = steps[0].split(",").index("perceptual")
    assert all(float(row.split(",")[column]) > 0 for row in steps[1:])
    meta = load_checkpoint(tmp_path / "run" / "student" / "student.pt").meta
    assert meta["training"]["perceptual"]["network"] == "yolox"
    assert str(tmp_path) not in json.dumps(meta)  # the model is recorded by name, not path


def test_onnx_export_matches_torch(tmp_path) -> None:
    torch.manual_seed(0)
    net = StudentNet()
    path = export_onnx(net, tmp_path / "student.onnx")
    assert onnx_max_difference(net, path) < 1e-5


def test_install_default_copies_weights_and_readable_metadata(tmp_path) -> None:
    net = StudentNet()
    src = save_checkpoint(tmp_path / "s.pt", net, training={"recipe": "r"}, data={"pairs": 3},
                          validation={"EN": 6.0})
    pt, js = install_default(src, tmp_path / "w" / "default.pt", data_name="Synthetic")
    meta = load_checkpoint(pt).meta
    assert meta["data"] == {"pairs": 3, "name": "Synthetic"} and meta["validation"] == {"EN": 6.0}
    assert json.loads(js.read_text()) == meta
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="only a student trained by this tool"):
        install_default(tmp_path / "bare.pt", tmp_path / "w" / "x.pt")


# -- the CLI -------------------------------------------------------------------------------------


def _train_main():
    """training/train.py's ``main``, imported in-process (a subprocess costs a torch import)."""
    spec = importlib.util.spec_from_file_location("train_cli", TRAIN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(TRAIN_PY), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_cli_help_and_print_config(capsys) -> None:
    assert "--preset" in _cli("--help").stdout  # the real script, in a subprocess
    assert _train_main()(["--preset", "cpu", "--print-config", "--set", "student.epochs=7"]) == 0
    shown = capsys.readouterr().out
    assert "epochs: 7" in shown and "width: 0.25" in shown


def test_cli_refuses_bad_input_before_training(synth, tmp_path, capsys) -> None:
    main = _train_main()
    empty = tmp_path / "empty"
    (empty / "ir").mkdir(parents=True)
    (empty / "vi").mkdir()
    wrong = TeacherNet(0.125).state_dict()
    wrong["conv11.1.weight"] = torch.zeros(3, 8, 3, 3)
    torch.save(wrong, tmp_path / "bad_teacher.pt")
    cases = [
        (["--data", str(empty)], "no images"),
        (["--data", str(synth), "--teacher", str(tmp_path / "bad_teacher.pt"),
          "--stage", "student"], "conv11.1.weight has shape"),
        (["--data", str(synth), "--stage", "student"], "needs a teacher"),
        (["--data", str(synth), "--set", "teacher.epocs=1"], "unknown setting"),
        (["--data", str(synth), "--preset", "nope"], "preset 'nope' not found"),
        (["--data", str(synth), "--perceptual", "vgg19"], "needs --vgg-weights"),
        (["--data", str(synth), "--perceptual", "yolox", "--yolox-model",
          str(tmp_path / "none.onnx")], "does not exist"),
    ]
    busy = tmp_path / "busy"
    (busy / "teacher").mkdir(parents=True)
    (busy / "teacher" / "state.pt").write_bytes(b"x")
    cases.append((["--data", str(synth), "--out", str(busy)], "--resume"))
    for i, (args, match) in enumerate(cases):
        out = tmp_path / f"out{i}"
        preset = [] if "--preset" in args else ["--preset", "cpu"]
        code = main([*args, "--out", str(out), *preset] if "--out" not in args else
                    [*args, *preset])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert match in err, (args, err)
        assert not (out / "teacher").exists() and not (out / "student").exists()


@pytest.mark.slow
def test_cli_trains_both_stages_and_exports(synth, tmp_path) -> None:
    result = _cli("--data", str(synth), "--out", str(tmp_path / "run"), "--preset", "cpu",
                  "--set", "data.patch_size=16", "--set", "data.stride=16",
                  "--teacher-epochs", "1", "--student-epochs", "1", "--batch-size", "8",
                  "--teacher-width", "0.125")
    assert result.returncode == 0, result.stderr[-2000:]
    student = tmp_path / "run" / "student"
    assert (student / "student.onnx").is_file() and (student / "student.json").is_file()
    assert load_checkpoint(student / "student.pt").build()(torch.rand(1, 2, 8, 8)).shape == (
        1, 1, 8, 8)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synth, tmp_path) -> None:
    """DistributedDataParallel over gloo: two ranks share the bank and train one model."""
    pytest.importorskip("torch.distributed.run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), str(TRAIN_PY), "--data", str(synth),
           "--out", str(tmp_path / "ddp"), "--preset", "cpu", "--set", "data.patch_size=16",
           "--set", "data.stride=16", "--teacher-epochs", "1", "--student-epochs", "2",
           "--batch-size", "4", "--teacher-width", "0.125", "--device", "cpu", "--threads", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "student" / "student.pt").is_file()


def test_shipped_default_weights_come_from_this_tool() -> None:
    meta = load_checkpoint(default_weights_path()).meta
    training = meta.get("training", {})
    assert "distillation" in training["recipe"], "the default must be the distilled student"
    assert training["perceptual"]["network"] in ("vgg19", "fallback")
    assert set(meta["validation"]) >= {"EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"}
    assert meta["data"]["val_pairs"] > 0
    side = json.loads(default_weights_path().with_suffix(".json").read_text())
    assert side["training"]["recipe"] == training["recipe"]


# -- several data folders, scene splits, the comparison table ------------------------------------


def _numbered(root: Path, names: list[str]) -> Path:
    """A folder of synthetic pairs named like LLVIP frames (six digits, scene first)."""
    write_synthetic_dataset(root, n=len(names), height=32, width=40, seed=5)
    for i, name in enumerate(names):
        for side in ("ir", "vi"):
            (root / side / f"{i:03d}.png").rename(root / side / f"{name}.png")
    return root


def test_scene_numbered_folders_are_split_by_scene(synth, tmp_path) -> None:
    from mmdrfuse_ros.training.data import split_folder, spread

    names = ["010101", "010102", "190001", "190002", "200002"]
    assert split_folder(names, 0.1, "01,20") == (["190001", "190002"],
                                                  ["010101", "010102", "200002"])
    assert split_folder(names, 0.4, None) == split_names(names, 0.4)  # no scenes: as before
    with pytest.raises(DataError, match="nothing to train on"):
        split_folder(["010101"], 0.1, "01")
    corners = [(0, i) for i in range(10)]
    assert spread(corners, 3) == [(0, 0), (0, 4), (0, 9)] and spread(corners, None) == corners
    llvip = _numbered(tmp_path / "llvip" / "unlabelled", names)
    cfg = tiny_config()
    set_dotted(cfg, "data.val_scenes", "01,20")
    set_dotted(cfg, "data.max_patches_per_pair", 2)
    data = prepare_data([synth, llvip], cfg)
    assert "llvip/unlabelled/190001" in data.train_names
    assert "llvip/unlabelled/010101" in data.val_names
    assert not any(n.startswith("llvip/unlabelled/19") for n in data.val_names)
    source = data.info["sources"][1]
    assert (source["pairs"], source["train_pairs"], source["val_pairs"]) == (5, 2, 3)
    assert not Path(source["path"]).is_absolute()
    assert len(data.patches) == 2 * len(data.train_names)


def test_metadata_paths_are_scrubbed() -> None:
    from mmdrfuse_ros.training.export import scrub_paths

    meta = {"data": {"path": "/abs/machine/roadscene", "sources": [{"path": "/x/llvip"}]},
            "training": {"teacher": {"source": "/home/u/runs/teacher.pt"}}, "name": "/kept"}
    clean = scrub_paths(meta)
    assert clean["data"]["path"] == "roadscene" and clean["data"]["sources"][0]["path"] == "llvip"
    assert clean["training"]["teacher"]["source"] == "teacher.pt" and clean["name"] == "/kept"


def test_students_table_on_tiny_folders(synth, tmp_path) -> None:
    from mmdrfuse_ros.training.students import StudentsRequest, compare

    llvip = _numbered(tmp_path / "llvip" / "unlabelled", ["010101", "190001", "200002"])
    torch.save(StudentNet().state_dict(), tmp_path / "published.model")
    teacher = TeacherNet(0.125)
    save_teacher(tmp_path / "teacher.pt", teacher, {})
    req = StudentsRequest([synth, llvip], [("ours", default_weights_path())],
                          ["raw", "percentile"], tmp_path / "published.model",
                          flicker_frames=4, teachers=[("T", tmp_path / "teacher.pt")],
                          grid=tmp_path / "grid.png")
    text, rows = compare(req)
    labels = [r.label for r in rows]
    assert labels == ["pixel average", "pixel max", "published student, authors' min-max",
                      "published student, raw", "ours, raw", "ours, percentile", "T, raw",
                      "T, percentile"]
    assert rows[-1].params == sum(p.numel() for p in teacher.parameters()) > 113
    ir, vi = np.full((8, 8), 0.7, np.float32), np.full((8, 8), 0.2, np.float32)
    with torch.no_grad():
        expected = teacher(torch.from_numpy(np.stack([ir, vi]))[None])[0, 0].numpy()
    assert np.allclose(rows[-2].fuse(ir, vi), np.clip(expected, 0.0, 1.0), atol=1e-6)
    assert "llvip/unlabelled only:" in text and "Flicker on" in text
    assert all(set(r.metrics["all"]) == {"EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"}
               for r in rows)
    assert "YOLOX AP not measured" in text
    # the picture grid: a header, then 2 frames of each of the 2 folders; 4 columns of 320 px
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape[1] == 4 * 320 and grid.shape[0] > 28 + 3 * 16
    assert f"Pictures: {tmp_path / 'grid.png'}" in text
    published_tile = grid[40:60, 2 * 320:3 * 320]
    assert published_tile.std() > 0  # a fused picture, not an empty tile


def test_students_cli_refuses_bad_input(synth, tmp_path, capsys) -> None:
    import argparse

    from mmdrfuse_ros.training.cli import add_students_arguments, run_students

    parser = argparse.ArgumentParser()
    add_students_arguments(parser)
    bad_mapping = parser.parse_args(["--data", str(synth), "--mappings", "raw,gamma"])
    assert run_students(bad_mapping) == 2 and "gamma" in capsys.readouterr().err
    bad_student = parser.parse_args(["--data", str(synth), "--student", "no-equals-sign"])
    assert run_students(bad_student) == 2 and "LABEL=PATH" in capsys.readouterr().err
    not_a_teacher = parser.parse_args(["--data", str(synth), "--flicker-frames", "0",
                                       "--teacher", f"T={default_weights_path()}"])
    assert run_students(not_a_teacher) == 2 and "this is a student" in capsys.readouterr().err
    out = tmp_path / "table.md"
    ok = parser.parse_args(["--data", str(synth), "--mappings", "raw", "--flicker-frames", "0",
                            "--out", str(out)])
    assert run_students(ok) == 0 and "| shipped student, raw |" in out.read_text()
    onto_input = parser.parse_args(["--data", str(synth), "--flicker-frames", "0",
                                    "--grid", str(next((synth / "ir").iterdir()))])
    assert run_students(onto_input) == 2 and "--grid" in capsys.readouterr().err


def test_students_markdown_shows_the_ap_interval_only_when_measured() -> None:
    from mmdrfuse_ros.training.students import Row, markdown

    metrics = {"all": dict.fromkeys(("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"), 1.0)}
    ref = Row("ref", np.maximum, 113, metrics, 0.8, (0.7, 0.9), {"all": 6.2})
    other = Row("other", np.maximum, 0, metrics, en_min={"all": 6.5})
    text = markdown([ref, other], "all", ref)
    assert "AP@0.5 95% interval" in text and "| 6.20 | 0.800 | 0.70..0.90 | - | - |" in text
    assert "| other | 0 |" in text and "| - | - | 8/8 | no: AP not measured |" in text
    assert "interval" not in markdown([other], "all", None)


def test_the_ship_rule_names_what_fails() -> None:
    from mmdrfuse_ros.training.students import Row, ship_rule

    keys = ("EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM")
    ref = Row("ref", np.maximum, 113, {"all": dict.fromkeys(keys, 1.0)}, 0.8, None, {"all": 6.2})
    good = Row("good", np.maximum, 113, {"all": dict.fromkeys(keys, 1.0)}, 0.8, None,
               {"all": 6.0})
    assert ship_rule(good, ref) == "yes"
    two_down = {**dict.fromkeys(keys, 1.0), "SSIM": 0.9, "VIF": 0.5}
    flat = Row("flat", np.maximum, 113, {"all": two_down}, 0.79, None, {"all": 1.6})
    assert ship_rule(flat, ref) == "no: EN 1.60 < 6 on an image; 6/8 < 7/8; AP 0.790 < 0.800"
