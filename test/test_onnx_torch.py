"""The ONNX graph on PyTorch operators: equal to onnxruntime, differentiable, and its YOLOX
stages found; the perceptual network built on it. A tiny YOLOX-shaped graph (onnx_helpers) makes
these tests need no model file; the real YOLOX-Nano of ../shared is checked where present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402
from onnx_helpers import GraphBuilder, tiny_yolox  # noqa: E402

from mmdrfuse_ros.detection.onnx_torch import (  # noqa: E402
    OnnxGraphError,
    OnnxGraphModule,
    yolox_stage_outputs,
)
from mmdrfuse_ros.training.perceptual import PerceptualError, build_feature_net  # noqa: E402

YOLOX_NANO = Path(__file__).resolve().parents[2] / "shared" / "models" / "yolox_nano" / \
    "yolox_nano.onnx"


def test_interpreter_equals_onnxruntime_and_passes_gradients(tmp_path) -> None:
    path, _ = tiny_yolox(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
    module = OnnxGraphModule(path)
    got = module(torch.from_numpy(x))[0]
    assert got.shape == expected.shape == (1, 16, 6)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-3, atol=1e-3)
    # a batch of two keeps its batch through the exported [1, 6, -1] reshape
    assert module(torch.from_numpy(np.concatenate([x, x])))[0].shape == (2, 16, 6)
    xt = torch.from_numpy(x).requires_grad_()
    module(xt)[0].sum().backward()
    assert xt.grad is not None and xt.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in module.buffers())


def test_stage_outputs_are_found_and_only_their_nodes_run(tmp_path) -> None:
    path, stages = tiny_yolox(tmp_path / "tiny.onnx")
    assert yolox_stage_outputs(path) == stages
    backbone = OnnxGraphModule(path, stages)
    assert len(backbone.nodes) < len(OnnxGraphModule(path).nodes)
    feats = backbone(torch.rand(2, 3, 64, 64) * 255)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]  # strides 2 to 32


def test_unsupported_graphs_are_refused_by_name(tmp_path) -> None:
    g = GraphBuilder()
    g.nodes.append(helper.make_node("Relu", ["images"], ["output"]))
    info = helper.make_tensor_value_info
    path = g.save(tmp_path / "relu.onnx", [info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    with pytest.raises(OnnxGraphError, match=r"operator\(s\) \['Relu'\]"):
        OnnxGraphModule(path)
    with pytest.raises(OnnxGraphError, match="not a YOLOX graph"):
        yolox_stage_outputs(path)
    tiny, _ = tiny_yolox(tmp_path / "tiny.onnx")
    with pytest.raises(OnnxGraphError, match="no tensor named"):
        OnnxGraphModule(tiny, ["nowhere"])
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxGraphError, match="not a readable ONNX model"):
        OnnxGraphModule(tmp_path / "junk.onnx")


def test_yolox_perceptual_network_from_a_file(tmp_path, monkeypatch) -> None:
    path, _ = tiny_yolox(tmp_path / "tiny.onnx")
    net = build_feature_net("yolox", yolox_model=path)
    assert net.kind == "yolox" and "YOLOX backbone" in net.description
    assert build_feature_net("auto", yolox_model=path).kind == "yolox"
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    feats = net(x)
    assert len(feats) == 5 and feats[0].shape[:2] == (2, 4)
    sum(f.sum() for f in feats).backward()
    assert x.grad.abs().sum() > 0
    # grey is the detector's BGR input with three equal channels, 0..255
    grey = torch.rand(1, 1, 64, 64)
    direct = net.graph(grey.expand(-1, 3, -1, -1) * 255.0)
    assert all(torch.equal(a, b) for a, b in zip(net(grey), direct, strict=True))
    monkeypatch.setenv("MMDRFUSE_MODEL_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr("mmdrfuse_ros.detection.models.model_cache_dir", lambda: tmp_path / "c")
    with pytest.raises(PerceptualError, match="--yolox-model PATH"):
        build_feature_net("yolox")
    with pytest.raises(PerceptualError, match="does not exist"):
        build_feature_net("yolox", yolox_model=tmp_path / "missing.onnx")
    with pytest.raises(PerceptualError, match="--yolox-model given"):
        build_feature_net("fallback", yolox_model=path)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(PerceptualError, match="not a readable ONNX model"):
        build_feature_net("yolox", yolox_model=tmp_path / "junk.onnx")


def test_real_yolox_nano_matches_onnxruntime() -> None:
    if not YOLOX_NANO.is_file():
        pytest.skip(f"YOLOX-Nano not found at {YOLOX_NANO} (only in the project's CI/dev setup)")
    x = np.random.default_rng(2).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    expected = ort.InferenceSession(str(YOLOX_NANO), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]
    got = OnnxGraphModule(YOLOX_NANO)(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    feats = build_feature_net("yolox", yolox_model=YOLOX_NANO)(torch.rand(1, 1, 128, 128))
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 64, 64), (32, 32, 32), (64, 16, 16),
                                                   (128, 8, 8), (256, 4, 4)]
