"""``--teacher-weights``: distil from any teacher checkpoint in the published teacher layout,
and refuse anything else with a clear message before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmdrfuse_ros.fusion.model import StudentNet, load_checkpoint
from mmdrfuse_ros.training.cli import main
from mmdrfuse_ros.training.data import write_synthetic_dataset
from mmdrfuse_ros.training.teacher import TeacherError, load_teacher

#: the published teacher (teacher_net.py of yanglinDeng/MMDRFuse): conv name -> (in, out) at
#: width 1.0, every conv a 3x3 after ReflectionPad2d(1), held as ``nn.Sequential`` index 1.
PUBLISHED_LAYOUT = {
    "conv1": (2, 32), "conv2": (32, 32), "conv3": (64, 64), "conv4": (64, 64),
    "conv5": (128, 64), "conv6": (192, 64), "conv66": (64, 64), "conv55": (128, 64),
    "conv44": (128, 64), "conv33": (128, 64), "conv22": (96, 32), "conv11": (64, 4),
    "conv00": (4, 1),
}


def published_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the published teacher's keys and shapes, random weights."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, (cin, cout) in PUBLISHED_LAYOUT.items():
        state[f"{name}.1.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        state[f"{name}.1.bias"] = torch.zeros(cout)
    return state


def test_a_published_layout_teacher_loads(tmp_path: Path) -> None:
    torch.save(published_state(), tmp_path / "teacher.model")
    net, meta = load_teacher(tmp_path / "teacher.model")
    assert meta["width"] == 1.0 and meta["parameters"] == 556_489
    assert meta["source"] == "teacher.model"  # never the absolute path of this machine
    out = net(torch.rand(1, 2, 20, 24))
    assert out.shape == (1, 1, 20, 24)


def test_data_parallel_prefixes_are_accepted(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in published_state().items()}
    torch.save(state, tmp_path / "ddp.model")
    assert load_teacher(tmp_path / "ddp.model")[1]["width"] == 1.0


@pytest.mark.parametrize(("change", "match"), [
    ("student", "not an MMDRFuse teacher: this is a student"),
    ("missing", r"missing \['conv6.1.bias'"),
    ("head", r"conv00.1.weight has shape \(1, 8, 3, 3\)"),
    ("nan", "NaN or inf"),
])
def test_a_wrong_layout_is_refused_with_a_reason(tmp_path: Path, change: str, match: str
                                                 ) -> None:
    state: dict[str, torch.Tensor] = published_state()
    if change == "student":
        state = StudentNet().state_dict()
    elif change == "missing":
        del state["conv6.1.bias"]
    elif change == "head":
        state["conv00.1.weight"] = torch.zeros(1, 8, 3, 3)
    else:
        state["conv4.1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "wrong.model")
    with pytest.raises(TeacherError, match=match):
        load_teacher(tmp_path / "wrong.model")


def test_cli_distils_from_teacher_weights(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "d", n=4, height=32, width=32, seed=1)
    torch.save(published_state(), tmp_path / "teacher.model")
    out = tmp_path / "run"
    code = main(["--data", str(data), "--out", str(out), "--preset", "cpu", "--stage", "student",
                 "--teacher-weights", str(tmp_path / "teacher.model"), "--set",
                 "data.patch_size=16", "--set", "data.stride=16", "--student-epochs", "1",
                 "--batch-size", "4", "--threads", "1", "--set", "run.export_onnx=false"])
    assert code == 0
    meta = load_checkpoint(out / "student" / "student.pt").meta
    teacher = meta["training"]["teacher"]
    assert teacher["width"] == 1.0 and teacher["parameters"] == 556_489
    assert not (out / "teacher").exists()  # an external teacher replaces the teacher stage


def test_cli_refuses_a_wrong_teacher_before_reading_data(tmp_path: Path, capsys) -> None:
    torch.save(StudentNet().state_dict(), tmp_path / "student.pt")
    code = main(["--data", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "run"),
                 "--preset", "cpu", "--teacher-weights", str(tmp_path / "student.pt")])
    assert code == 2
    assert "not an MMDRFuse teacher" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
