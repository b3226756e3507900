"""Export a trained student: our checkpoint format (+ a readable JSON of its metadata) and ONNX."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmdrfuse_ros.fusion.model import StudentNet, load_checkpoint, save_checkpoint
from mmdrfuse_ros.training import recorded_path

log = logging.getLogger("mmdrfuse_ros.training")

ONNX_OPSET = 17
ONNX_INPUT = "ir_vis"
ONNX_OUTPUT = "fused"


def export_student(path: str | Path, net: StudentNet, *, training: Mapping[str, Any],
                   data: Mapping[str, Any], validation: Mapping[str, Any],
                   **extra: Any) -> tuple[Path, Path]:
    """Write ``path`` (our checkpoint format) and ``path.with_suffix('.json')`` (its metadata)."""
    path = save_checkpoint(path, net, training=training, data=data, validation=validation,
                           **extra)
    meta = load_checkpoint(path).meta  # read back: the JSON shows exactly what was stored
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return path, json_path


def export_onnx(net: torch.nn.Module, path: str | Path, height: int = 64, width: int = 80) -> Path:
    """Export ``[B, 2, H, W] -> [B, 1, H, W]`` with dynamic batch and image size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    example = torch.rand(1, 2, height, width)
    # The TorchScript exporter: the dynamo exporter needs onnxscript, which we do not depend on.
    # It warns about its own deprecation and reflection-pad constant folding: noise for users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        torch.onnx.export(
            net, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: {0: "batch", 2: "height", 3: "width"},
                          ONNX_OUTPUT: {0: "batch", 2: "height", 3: "width"}},
        )
    return path


def onnx_max_difference(net: torch.nn.Module, path: str | Path, height: int = 37,
                        width: int = 53, seed: int = 0) -> float:
    """Largest |torch - onnxruntime| on a random input of a size unlike the export example."""
    import onnxruntime as ort

    x = torch.rand(2, 2, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = net.eval().cpu()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]
    return float(np.abs(got - ref).max())


def scrub_paths(value: Any) -> Any:
    """``value`` with every ``path``/``source`` entry (at any depth) as :func:`recorded_path`
    records it: metadata never carries absolute paths of the training machine."""
    if isinstance(value, Mapping):
        return {k: (recorded_path(v) if k in ("path", "source") and isinstance(v, str) and v
                    else scrub_paths(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_paths(v) for v in value]
    return value


def install_default(source: str | Path, destination: str | Path | None = None,
                    data_name: str | None = None,
                    validation_table: list[dict[str, Any]] | None = None,
                    name: str = "default", reproduce: str | None = None) -> tuple[Path, Path]:
    """Copy a trained student (and its metadata) to the shipped student ``name`` (``default``,
    ``detection``), or ``destination``; ``validation_table``: the rows of ``mmdrfuse students
    --json`` to record beside it; ``reproduce``: the command that trains it from the data."""
    from mmdrfuse_ros.resources import shipped_weights_path

    ckpt = load_checkpoint(source)
    if ckpt.source_format != "mmdrfuse_ros.student" or not ckpt.meta.get("validation"):
        raise ValueError(f"{source}: only a student trained by this tool (with validation "
                         "metrics in its metadata) can become the default")
    meta = scrub_paths(dict(ckpt.meta))
    data = dict(meta.pop("data", {}))
    if data_name:
        data["name"] = data_name
    meta.pop("parameters", None)
    if validation_table is not None:
        meta["validation_table"] = scrub_paths(validation_table)
    if reproduce:
        meta["reproduce"] = reproduce
    return export_student(destination or shipped_weights_path(name), ckpt.build(),
                          training=meta.pop("training"), data=data,
                          validation=meta.pop("validation"), **meta)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from mmdrfuse_ros.resources import SHIPPED_WEIGHTS

    p = argparse.ArgumentParser(description="Export a trained student: package default or ONNX.")
    p.add_argument("student", type=Path, help="student.pt written by mmdrfuse train")
    p.add_argument("--install", nargs="?", const="default", choices=sorted(SHIPPED_WEIGHTS),
                   help="make it a shipped student: default (no value), or detection")
    p.add_argument("--reproduce", help="the command that trains it from the data (metadata)")
    p.add_argument("--data-name", help="data set name/citation to record in the metadata")
    p.add_argument("--validation-json", type=Path,
                   help="rows of `mmdrfuse students --json` to record in the metadata")
    p.add_argument("--onnx", type=Path, help="also write an ONNX file here")
    args = p.parse_args(argv)
    try:
        if args.install:
            table = (json.loads(args.validation_json.read_text()) if args.validation_json
                     else None)
            pt, js = install_default(args.student, data_name=args.data_name,
                                     validation_table=table, name=args.install,
                                     reproduce=args.reproduce)
            print(f"installed {pt} and {js}")
        if args.onnx:
            net = load_checkpoint(args.student).build()
            export_onnx(net, args.onnx)
            diff = onnx_max_difference(net, args.onnx)
            print(f"{args.onnx}: max |torch - onnxruntime| = {diff:.2e}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
