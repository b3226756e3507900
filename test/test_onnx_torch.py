"""The ONNX graph on PyTorch operators: equal to onnxruntime, differentiable, and its YOLOX
stages found; the perceptual network built on it. A tiny YOLOX-shaped graph is written here, so
these tests need no model file; the real YOLOX-Nano of ../shared is checked where present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mmdrfuse_ros.detection.onnx_torch import (  # noqa: E402
    OnnxGraphError,
    OnnxGraphModule,
    yolox_stage_outputs,
)
from mmdrfuse_ros.training.perceptual import PerceptualError, build_feature_net  # noqa: E402

YOLOX_NANO = Path(__file__).resolve().parents[2] / "shared" / "models" / "yolox_nano" / \
    "yolox_nano.onnx"


class _Graph:
    """Builds a small ONNX graph node by node (weights seeded)."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.rng = np.random.default_rng(0)
        self.count = 0

    def name(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def const(self, value: np.ndarray) -> str:
        name = self.name()
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name()
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1) -> str:
        w = self.const((self.rng.standard_normal((cout, cin, k, k)) * 0.3).astype(np.float32))
        b = self.const((self.rng.standard_normal(cout) * 0.1).astype(np.float32))
        y = self.node("Conv", [x, w, b], kernel_shape=[k, k], pads=[k // 2] * 4,
                      strides=[stride, stride])
        return self.node("Mul", [y, self.node("Sigmoid", [y])])  # SiLU, as YOLOX exports it

    def save(self, path: Path, inputs: list, outputs: list) -> Path:
        graph = helper.make_graph(self.nodes, "g", inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
        model.ir_version = 7
        onnx.save(model, str(path))
        return path


def tiny_yolox(path: Path, size: int = 64) -> tuple[Path, list[str]]:
    """A YOLOX-shaped graph (Focus slices, stride-2 stages, SPP, neck upsampling, head reshape)
    with every operator the interpreter supports; returns it and its five stage tensors."""
    g = _Graph()
    starts = {(0, 0): [0, 0], (1, 0): [1, 0], (0, 1): [0, 1], (1, 1): [1, 1]}
    big = g.const(np.array([10**6, 10**6], np.int64))
    axes, steps = g.const(np.array([2, 3], np.int64)), g.const(np.array([2, 2], np.int64))
    parts = [g.node("Slice", ["images", g.const(np.array(s, np.int64)), big, axes, steps])
             for s in starts.values()]
    stem = g.conv(g.node("Concat", parts, axis=1), 12, 4)
    dark2 = g.conv(g.conv(stem, 4, 8, stride=2), 8, 8)
    dark3 = g.conv(dark2, 8, 8, stride=2)
    dark4 = g.conv(dark3, 8, 8, stride=2)
    pooled = g.node("MaxPool", [g.conv(dark4, 8, 8, stride=2)], kernel_shape=[5, 5],
                    pads=[2, 2, 2, 2], strides=[1, 1])
    dark5 = g.conv(pooled, 8, 8, k=1)
    lateral = g.conv(dark5, 8, 8, k=1)
    up = g.node("Resize", [lateral, g.const(np.zeros(0, np.float32)),
                           g.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    merged = g.node("Add", [g.node("Concat", [up, dark4], axis=1),
                            g.conv(g.node("Concat", [up, dark4], axis=1), 16, 16, k=1)])
    head = g.conv(merged, 16, 6, k=1)
    flat = g.node("Reshape", [head, g.const(np.array([1, 6, -1], np.int64))])
    g.nodes.append(helper.make_node("Transpose", [flat], ["output"], perm=[0, 2, 1]))
    cells = (size // 16) ** 2
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, cells, 6])]
    # stage tensors: the stem's activation and the inputs of the stride-2 convolutions, dark5
    stride2_inputs = [n.input[0] for n in g.nodes
                      if n.op_type == "Conv" and list(n.attribute[-1].ints) == [2, 2]]
    return g.save(path, inputs, outputs), [*stride2_inputs[:4], dark5]


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
    g = _Graph()
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
