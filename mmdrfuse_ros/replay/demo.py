"""The demo: make the synthetic bag, replay it through fusion and detection, show the report.

``mmdrfuse demo --out out`` (what ``make demo`` runs; also ``python -m mmdrfuse_ros.replay.demo``)
is the same as::

    mmdrfuse bag synth --out out/demo_bag          # skipped when out/demo_bag is already there
    mmdrfuse replay out/demo_bag --report out/report [--detector-param ...] [--fusion-param ...]

The detector is the node's default (``backend: auto``): YOLOX-Nano when a model is found
(``model_path``, ``$MMDRFUSE_MODEL_DIR``, the user cache that ``mmdrfuse models fetch`` fills),
else HOG, which the report's header and the terminal then say.

DDS discovery follows the environment, as for every tool of the package: ``make demo`` sets
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUMMARY = __doc__.split("\n")[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (out)")
    parser.add_argument("--duration", type=float, default=10.0, help="bag seconds (10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    for node in ("fusion", "detector"):
        parser.add_argument(f"--{node}-param", action="append", default=[], metavar="NAME=VALUE",
                            help="passed to mmdrfuse replay (e.g. --detector-param "
                            "model_path=yolox_nano.onnx)" if node == "detector"
                            else "passed to mmdrfuse replay")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Both steps through the ``mmdrfuse`` front door, so they behave exactly as typed."""
    from mmdrfuse_ros.cli import main as mmdrfuse

    bag, report = args.out / "demo_bag", args.out / "report"
    quiet = ["--no-progress"] if args.no_progress else []
    if (bag / "metadata.yaml").is_file():
        print(f"using the existing bag {bag} (delete it to make a new one)")
    else:
        code = mmdrfuse(["bag", "synth", "--out", str(bag), "--duration", str(args.duration),
                         *quiet])  # fmt: skip
        if code:
            return code
    params = [arg for value in args.fusion_param for arg in ("--fusion-param", value)]
    params += [arg for value in args.detector_param for arg in ("--detector-param", value)]
    code = mmdrfuse(["replay", str(bag), "--report", str(report), *quiet, *params])
    print(f"\ndemo report: {report / 'report.html'} (also report.md, report.json, *.png)")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmdrfuse-demo", description=SUMMARY)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
