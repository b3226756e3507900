"""Small ONNX graphs written node by node, for the tests of the ONNX interpreter and of the
perceptual network built on it (no model file needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
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
    g = GraphBuilder()
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
