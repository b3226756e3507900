"""``mmdrfuse``: the command-line entry point.

Each subcommand lives next to the code it drives and exposes ``register(subparsers)``, which adds
its parser and sets ``func(args) -> int``. Modules are imported lazily so that ``--help`` and
light commands stay fast and a missing optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: module paths that provide subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES = (
    "mmdrfuse_ros.fusion.cli",
    "mmdrfuse_ros.fusion.calibration_cli",
    "mmdrfuse_ros.metrics.cli",
    "mmdrfuse_ros.bag.cli",
    "mmdrfuse_ros.replay.cli",
    "mmdrfuse_ros.training.cli",
    "mmdrfuse_ros.detection.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmdrfuse",
        description="MMDRFuse thermal/RGB fusion: fuse images, compute fusion metrics, "
        "make and replay rosbags, train and detect.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name + ".").startswith(exc.name + "."):
                continue  # that subcommand is not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
