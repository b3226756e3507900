"""``mmdrfuse detect`` (AP of thermal-only, visible-only and fused images) and ``mmdrfuse models``
(get, locate and inspect the YOLOX model).

    mmdrfuse detect --ir DIR --vis DIR --annotations DIR --out DIR [--detector auto|yolox|onnx|hog]
    mmdrfuse models fetch [--url URL] [--timeout S] [--dest DIR] [--sha256 HEX]
    mmdrfuse models path | info [MODEL]

``detect`` exits 0 when every pair was evaluated, 1 when some pairs were left out (their names
and reasons on stderr; the results of the others are written), 2 when nothing could be
evaluated (missing or empty folders, annotations that do not match, a detector that cannot load).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli_args import add_out, add_pair_inputs, add_weights
from . import BACKENDS
from .models import DEFAULT_MODEL_URL, DEFAULT_TIMEOUT_S, FETCH_COMMAND

DETECT_DESCRIPTION = """\
Fuse every labelled pair, run one detector on the thermal image, the visible image and the fused
image(s), and write AP@0.5 and AP@[.5:.95] per input (results.md, results.json) and a picture
grid (grid.png: ground truth red, detections green) into --out.
"""

#: evaluation keeps low-scoring boxes (AP integrates over all of them), per backend family.
EVAL_SCORE_THRESHOLD = {"hog": 0.0, "onnx": 0.01}


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_detect(subparsers)
    _register_models(subparsers)


def _register_detect(subparsers: argparse._SubParsersAction) -> None:
    from .evaluate import STRETCHES

    p = subparsers.add_parser("detect", description=DETECT_DESCRIPTION,
                              help="pedestrian AP on thermal-only, visible-only and fused images")
    add_pair_inputs(p, "thermal images folder", "visible images folder")
    p.add_argument("--annotations", type=Path, required=True, help="VOC .xml folder")
    add_out(p, "results folder")
    add_weights(p)
    p.add_argument("--stretch", choices=STRETCHES, default="none",
                   help="how the fused output is scaled: none (the engine's output, as the node "
                   "publishes it) or minmax (raw output stretched per image)")
    p.add_argument("--label", default="fused", help="name of the fused row")
    p.add_argument("--compare-weights", type=Path,
                   help="a second student checkpoint, as an extra fused row (e.g. the published "
                   "student)")
    p.add_argument("--compare-stretch", choices=STRETCHES, default="minmax",
                   help="scaling of the extra row (minmax: as the MMDRFuse authors output theirs)")
    p.add_argument("--compare-label", help="name of the extra row (default: 'fused, published "
                   "student (min-max)', or '(engine output)' with --compare-stretch none)")
    p.add_argument("--detector", choices=BACKENDS, default="auto",
                   help="auto: YOLOX when a model is found, else HOG (default)")
    p.add_argument("--model", default="", help="ONNX model (default: discovered YOLOX model)")
    p.add_argument("--score-threshold", type=float,
                   help="lowest detection score kept (default: 0.01 for ONNX, 0 for HOG)")
    p.add_argument("--threads", type=int, default=0,
                   help="onnxruntime intra-op threads (0: onnxruntime's default)")
    p.add_argument("--backend", default="auto", help="fusion backend (auto, torch, cpu-fast)")
    p.add_argument("--samples", type=int, default=4, help="rows of the picture grid")
    p.add_argument("--limit", type=int, help="only the first N pairs (by name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_detect)


def _register_models(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="get, locate and inspect the YOLOX detector model",
                              description="The YOLOX-Nano detector model: download it into the "
                              "cache, show where it is looked for, inspect a model file.")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    fetch = sub.add_parser("fetch", help="download YOLOX-Nano into the cache",
                           description="Download YOLOX-Nano (COCO, Apache-2.0) from the YOLOX "
                           "authors' GitHub release, check it loads with the expected shapes, "
                           "print its sha256.")
    fetch.add_argument("--url", default=DEFAULT_MODEL_URL)
    fetch.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                       help="network timeout in seconds")
    fetch.add_argument("--dest", type=Path, help="folder (default: the user cache)")
    fetch.add_argument("--sha256", help="refuse a download with another checksum")
    fetch.add_argument("--quiet", action="store_true")
    fetch.set_defaults(func=run_fetch)
    path = sub.add_parser("path", help="print the model that would be used, or where to put one")
    path.set_defaults(func=run_path)
    info = sub.add_parser("info", help="shapes, layout and sha256 of a model")
    info.add_argument("model", nargs="?", default="", help="ONNX file (default: discovered)")
    info.set_defaults(func=run_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# --- detect ---------------------------------------------------------------------------------

def _build(args: argparse.Namespace) -> tuple[Any, Any, list, str | None]:
    """(engine, detector, fused rows, fallback reason); ValueError says what cannot be built."""
    from ..fusion import FusionEngine
    from .evaluate import FusedInput
    from .models import find_model, resolve_detector

    engine = FusionEngine(backend=args.backend, weights=args.weights, thermal_norm="auto",
                          thermal_smoothing=0.0)  # separate files: no temporal smoothing
    fused = [FusedInput("fused", args.label, args.weights, args.stretch)]
    if args.compare_weights:
        from ..fusion.model import load_checkpoint

        load_checkpoint(args.compare_weights)  # a bad file is refused before any work
        scaling = "min-max" if args.compare_stretch == "minmax" else "engine output"
        label = args.compare_label or f"fused, published student ({scaling})"
        fused.append(FusedInput("fused_compare", label, args.compare_weights,
                                args.compare_stretch))
    family = "hog" if args.detector == "hog" or (
        args.detector == "auto" and find_model(args.model) is None) else "onnx"
    params: dict[str, Any] = {"score_threshold": EVAL_SCORE_THRESHOLD[family]
                              if args.score_threshold is None else args.score_threshold}
    if args.detector != "hog":
        params["intra_op_threads"] = args.threads
    detector, reason = resolve_detector(args.detector, args.model, **params)
    return engine, detector, fused, reason


def _describe(detector: Any) -> str:
    if hasattr(detector, "describe"):
        info = detector.describe()
        return f"{info['layout']} ONNX {Path(info['model_path']).name} ({info['input']})"
    return detector.name


def run_detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..datasets import DatasetError
    from ..fusion.model import CheckpointError
    from .evaluate import evaluate, labelled_pairs

    try:
        pairs = labelled_pairs(args.ir, args.vis, args.annotations)
        if args.limit is not None:
            pairs = pairs[: max(args.limit, 0)]
        engine, detector, fused, reason = _build(args)
    except (DatasetError, CheckpointError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if reason:
        print(f"WARNING: {reason}", file=sys.stderr)
    evaluation = evaluate(
        pairs, detector, engine, fused, samples=max(args.samples, 0),
        progress=lambda items: tqdm(items, desc="detect", unit="pair",
                                    disable=args.quiet or len(pairs) < 2),
    )
    for message in evaluation.errors:
        print(f"error: {message}", file=sys.stderr)
    try:
        ap = evaluation.ap()
    except ValueError as exc:  # no pair evaluated, or no person in any of them
        print(f"error: nothing to score: {exc}", file=sys.stderr)
        return 2
    _write_results(args, evaluation, ap, detector, reason)
    return 1 if evaluation.errors else 0


def _write_results(args: argparse.Namespace, evaluation: Any, ap: dict, detector: Any,
                   reason: str | None) -> None:
    import cv2

    from .evaluate import markdown_table, picture_grid

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    name = _describe(detector)
    table = markdown_table(evaluation, ap, name)
    header = "# Pedestrian AP: thermal, visible, fused\n\n"
    if reason:
        header += f"**WARNING: {reason}**\n\n"
    (out / "results.md").write_text(header + table)
    doc = {
        "detector": detector.describe() if hasattr(detector, "describe") else {"backend": "hog"},
        "fallback_reason": reason,
        "score_threshold": getattr(detector, "score_threshold", None),
        "pairs": evaluation.names,
        "rows": [{"input": key, "label": label, **ap[key]}
                 for key, label in evaluation.labels.items()],
        "errors": evaluation.errors,
        "command": ["mmdrfuse", *sys.argv[1:]],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    grid = picture_grid(evaluation, ap)
    if grid is not None:
        cv2.imwrite(str(out / "grid.png"), grid)
    print(table, end="")
    print(f"wrote {out / 'results.md'}, results.json" + (", grid.png" if grid is not None else ""))


# --- models --------------------------------------------------------------------------------

def run_fetch(args: argparse.Namespace) -> int:
    from .models import FetchError, fetch_model

    def progress(done: int, total: int | None) -> None:
        if not args.quiet:
            size = f"/{total / 1e6:.1f}" if total else ""
            print(f"\r{done / 1e6:.1f}{size} MB", end="", file=sys.stderr, flush=True)

    print(f"downloading {args.url}", file=sys.stderr)
    try:
        info = fetch_model(args.url, args.dest, args.timeout, args.sha256, progress)
    except FetchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(file=sys.stderr)
    print(f"{info.path}\nsha256 {info.sha256}  ({info.size} bytes, input {info.input_shape}, "
          f"output {info.output_shape})")
    return 0


def run_path(args: argparse.Namespace) -> int:
    from .models import find_model, model_cache_dir, search_locations

    found = find_model()
    if found is not None:
        print(found)
        return 0
    print("no YOLOX model found; looked in:\n  " + "\n  ".join(map(str, search_locations()))
          + f"\nget it with `{FETCH_COMMAND}` (into {model_cache_dir()})", file=sys.stderr)
    return 1


def run_info(args: argparse.Namespace) -> int:
    from .models import find_model, inspect_model
    from .yolo_onnx import YoloOnnxDetector

    path = find_model(args.model)
    if path is None:
        return run_path(args)
    try:
        info = inspect_model(path)
        detector = YoloOnnxDetector(path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{info.path}\nsha256 {info.sha256}  ({info.size} bytes)\ninput {info.input_shape}, "
          f"output {info.output_shape}, layout {detector.layout}, runtime {detector.runtime} "
          f"{detector.providers}")
    return 0
