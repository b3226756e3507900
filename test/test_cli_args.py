"""The argument declarations that several subcommands share (``mmdrfuse_ros/cli_args.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mmdrfuse_ros.cli_args import WEIGHTS_HELP, add_out, add_pair_inputs, add_weights


def _parser(**pair_options: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_pair_inputs(p, "the thermal one", "the visible one", **pair_options)
    add_out(p, "where it goes")
    add_weights(p)
    return p


def test_inputs_output_and_weights_parse_to_paths():
    args = _parser().parse_args(["--ir", "a", "--vis", "b", "--out", "c", "--weights", "w.pt"])
    assert (args.ir, args.vis, args.out, args.weights) == tuple(map(Path, ("a", "b", "c", "w.pt")))
    assert _parser().parse_args(["--ir", "a", "--vis", "b", "--out", "c"]).weights is None


@pytest.mark.parametrize("argv", [["--vis", "b", "--out", "c"], ["--ir", "a", "--vis", "b"],
                                  ["--ir", "a", "--out", "c"]])
def test_ir_and_out_are_required_and_vis_unless_said(argv, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(argv)
    if "--vis" not in argv:
        assert _parser(vis_required=False).parse_args(argv).vis is None


def test_help_texts_are_the_callers():
    text = " ".join(_parser().format_help().split())
    assert all(h in text for h in ("the thermal one", "the visible one", "where it goes"))
    assert WEIGHTS_HELP in text
