"""The demo: make the synthetic bag, replay it through fusion and detection, show the report.

``python -m mmdrfuse_ros.bag.demo --out out`` (what ``make demo`` runs) is the same as::

    mmdrfuse bag synth --out out/demo_bag          # skipped when out/demo_bag is already there
    mmdrfuse replay out/demo_bag --report out/report

DDS discovery follows the environment, as for every tool of the package: ``make demo`` sets
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmdrfuse_ros.cli import main as mmdrfuse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmdrfuse-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (out)")
    parser.add_argument("--duration", type=float, default=10.0, help="bag seconds (10)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    bag, report = args.out / "demo_bag", args.out / "report"
    quiet = ["--no-progress"] if args.no_progress else []
    if (bag / "metadata.yaml").is_file():
        print(f"using the existing bag {bag} (delete it to make a new one)")
    else:
        code = mmdrfuse(["bag", "synth", "--out", str(bag), "--duration", str(args.duration),
                         *quiet])  # fmt: skip
        if code:
            return code
    code = mmdrfuse(["replay", str(bag), "--report", str(report), *quiet])
    print(f"\ndemo report: {report / 'report.html'} (also report.md, report.json, *.png)")
    return code


if __name__ == "__main__":
    sys.exit(main())
