"""An ONNX detector graph evaluated with PyTorch operators, so that gradients flow through it.

onnxruntime runs a YOLOX file fast but cannot differentiate it. Training uses the same file's
backbone as a perceptual network (:class:`mmdrfuse_ros.training.perceptual.YoloxFeatures`),
which needs the graph as PyTorch operations: this module interprets the graph node by node with
``torch.nn.functional``. It covers the operators of the YOLOX exports (Conv, Sigmoid, Mul, Add,
Concat, MaxPool, Slice, Resize, Reshape, Transpose) and refuses any other one by name.
Only the nodes that the requested outputs depend on are run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class OnnxGraphError(ValueError):
    """An ONNX file this interpreter cannot run (unreadable, unknown operator or output)."""


Node = tuple[str, list[str], list[str], dict[str, Any]]  # (op, inputs, outputs, attributes)


def _conv(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise OnnxGraphError(f"Conv with asymmetric padding {pads} is not supported")
    bias = a[2] if len(a) > 2 else None
    return F.conv2d(a[0], a[1], bias, stride=tuple(at.get("strides", [1, 1])),
                    padding=tuple(pads[:2]), dilation=tuple(at.get("dilations", [1, 1])),
                    groups=int(at.get("group", 1)))


def _max_pool(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:] or at.get("ceil_mode", 0):
        raise OnnxGraphError(f"MaxPool with pads {pads} / ceil_mode is not supported")
    return F.max_pool2d(a[0], tuple(at["kernel_shape"]), tuple(at.get("strides", [1, 1])),
                        padding=tuple(pads[:2]))


def _slice(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    data = a[0]
    starts, ends = a[1].tolist(), a[2].tolist()
    axes = a[3].tolist() if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = a[4].tolist() if len(a) > 4 and a[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * data.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step <= 0:
            raise OnnxGraphError(f"Slice with step {step} is not supported")
        index[axis] = slice(start, min(end, data.shape[axis]), step)
    return data[tuple(index)]


def _resize(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    if at.get("mode", b"nearest") not in (b"nearest", "nearest"):
        raise OnnxGraphError(f"Resize mode {at.get('mode')!r} is not supported")
    scales = a[2] if len(a) > 2 and a[2] is not None and a[2].numel() else None
    if scales is None:
        size = [int(s) for s in a[3].tolist()[2:]]
        return F.interpolate(a[0], size=size, mode="nearest")
    return F.interpolate(a[0], scale_factor=[float(s) for s in scales.tolist()[2:]],
                         mode="nearest")


def _reshape(a: list[Any], at: dict[str, Any]) -> torch.Tensor:
    shape = [int(s) for s in a[1].tolist()]
    if shape and shape[0] == 1:  # exported with batch 1: keep the batch of this call
        shape[0] = a[0].shape[0]
    return a[0].reshape(shape)


OPS: dict[str, Callable[[list[Any], dict[str, Any]], torch.Tensor]] = {
    "Conv": _conv,
    "Sigmoid": lambda a, at: torch.sigmoid(a[0]),
    "Mul": lambda a, at: a[0] * a[1],
    "Add": lambda a, at: a[0] + a[1],
    "Concat": lambda a, at: torch.cat(a, dim=int(at["axis"])),
    "MaxPool": _max_pool,
    "Slice": _slice,
    "Resize": _resize,
    "Reshape": _reshape,
    "Transpose": lambda a, at: a[0].permute(*at["perm"]),
}


@dataclass
class OnnxGraph:
    """An ONNX file read once: its constants, nodes in graph order, image input and outputs."""

    path: str
    constants: dict[str, torch.Tensor]
    nodes: list[Node]
    input_name: str
    outputs: list[str]
    input_shape: tuple[int, ...] = ()  # as declared (0 where a dimension is dynamic)


def read_graph(path: str | Path) -> OnnxGraph:
    """The graph of an ONNX file; OnnxGraphError if it cannot be read."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise OnnxGraphError(f"{path}: not a readable ONNX model ({exc})") from None
    graph = model.graph
    constants = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
                 for t in graph.initializer}
    nodes: list[Node] = []
    for n in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant":
            constants[n.output[0]] = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
            continue
        nodes.append((n.op_type, list(n.input), list(n.output), attrs))
    inputs = [i.name for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise OnnxGraphError(f"{path}: expected one image input, found {inputs}")
    declared = next(i for i in graph.input if i.name == inputs[0])
    shape = tuple(d.dim_value for d in declared.type.tensor_type.shape.dim)
    return OnnxGraph(str(path), constants, nodes, inputs[0], [o.name for o in graph.output], shape)


def _needed(nodes: Sequence[Node], outputs: Sequence[str]) -> list[Node]:
    """The nodes that ``outputs`` depend on, in graph order."""
    wanted, keep = set(outputs), []
    for node in reversed(nodes):
        if wanted & set(node[2]):
            keep.append(node)
            wanted |= {i for i in node[1] if i}
    return keep[::-1]


class OnnxGraphModule(nn.Module):
    """``forward(x) -> [tensor per requested output]``: the ONNX graph on PyTorch operators.

    ``graph``: an ONNX file's path or its :func:`read_graph`. ``outputs``: the tensor names to
    return (default: the graph's own outputs). The weights are buffers, frozen: the module is a
    fixed function of its input.
    """

    def __init__(self, graph: str | Path | OnnxGraph,
                 outputs: Sequence[str] | None = None) -> None:
        super().__init__()
        g = graph if isinstance(graph, OnnxGraph) else read_graph(graph)
        self.input_name = g.input_name
        self.outputs = list(outputs or g.outputs)
        produced = {o for n in g.nodes for o in n[2]} | set(g.constants) | {self.input_name}
        missing = [o for o in self.outputs if o not in produced]
        if missing:
            raise OnnxGraphError(f"{g.path}: no tensor named {missing} in the graph")
        self.nodes = _needed(g.nodes, self.outputs)
        unknown = sorted({n[0] for n in self.nodes} - set(OPS))
        if unknown:
            raise OnnxGraphError(f"{g.path}: operator(s) {unknown} are not supported "
                                 f"(supported: {sorted(OPS)})")
        used = {i for n in self.nodes for i in n[1]}
        self._names: dict[str, str] = {}
        for i, (name, tensor) in enumerate(g.constants.items()):
            if name in used:
                self._names[name] = f"c{i}"
                self.register_buffer(f"c{i}", tensor, persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        env: dict[str, Any] = {name: getattr(self, key) for name, key in self._names.items()}
        env[self.input_name] = x
        for op, inputs, outputs, attrs in self.nodes:
            env[outputs[0]] = OPS[op]([env[i] if i else None for i in inputs], attrs)
        return [env[o] for o in self.outputs]


def yolox_stage_outputs(graph: str | Path | OnnxGraph) -> list[str]:
    """The names of the five backbone stage outputs of a YOLOX export (strides 2 to 32).

    Strides 2, 4, 8, 16: the inputs of the first four stride-2 convolutions (the stem's output
    and ``dark2``..``dark4``). Stride 32 (``dark5``): the input of the convolution whose
    activation the first upsampling of the neck takes (YOLOX's ``lateral_conv0``).
    """
    g = graph if isinstance(graph, OnnxGraph) else read_graph(graph)
    nodes, path = g.nodes, g.path
    producer = {out: node for node in nodes for out in node[2]}
    strided = [n[1][0] for n in nodes
               if n[0] == "Conv" and list(n[3].get("strides", [1, 1])) == [2, 2]]
    resize = next((n for n in nodes if n[0] == "Resize"), None)
    try:
        if resize is None:
            raise KeyError("Resize")
        tensor = resize[1][0]
        while producer[tensor][0] != "Conv":  # through the activation (Sigmoid, Mul)
            tensor = producer[tensor][1][0]
        dark5 = producer[tensor][1][0]
    except KeyError:
        raise OnnxGraphError(f"{path}: not a YOLOX graph (no neck upsampling found)") from None
    if len(strided) < 4:
        raise OnnxGraphError(f"{path}: not a YOLOX graph ({len(strided)} stride-2 convolutions)")
    return [*strided[:4], dark5]
