"""Argument declarations that several ``mmdrfuse`` subcommands share (argparse only, no ROS).

``fuse``, ``detect`` and ``bag synth|from-folders`` read thermal/visible pairs (``--ir``/``--vis``)
and write somewhere (``--out``); ``fuse`` and ``detect`` fuse with a student checkpoint
(``--weights``). Each command keeps its own help texts; the flags and their types are here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

WEIGHTS_HELP = ("student checkpoint, or a shipped student: default (best on the picture, used when "
                "omitted) or detection (best for the pedestrian detector)")


def add_pair_inputs(p: argparse.ArgumentParser, ir_help: str, vis_help: str, *,
                    vis_required: bool = True) -> None:
    """``--ir`` (required) and ``--vis``: the thermal and the visible input, each a path."""
    p.add_argument("--ir", type=Path, required=True, help=ir_help)
    p.add_argument("--vis", type=Path, required=vis_required, help=vis_help)


def add_out(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--out``: the required output path."""
    p.add_argument("--out", type=Path, required=True, help=help_text)


def add_weights(p: argparse.ArgumentParser) -> None:
    """``--weights``: the student checkpoint to fuse with (default: the shipped one)."""
    p.add_argument("--weights", type=Path, help=WEIGHTS_HELP)
