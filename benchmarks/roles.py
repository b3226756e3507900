"""The role processes of the ROS benchmarks (``bench_node``, ``bench_transport``).

Each benchmark starts copies of its own script with the hidden ``--role`` (``pub``, ``relay`` or
``sink``: one process each, as real nodes run) and ``--result`` (the file a sink writes what it
recorded to); :func:`run_role` is such a process's main.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

ROLES = ["pub", "relay", "sink"]


def add_role_arguments(parser: argparse.ArgumentParser) -> None:
    """``--role`` and ``--result``, hidden from ``--help``: only the benchmark itself sets them."""
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


def run_role(role: str, works: Mapping[str, Callable[[Any], int | None]]) -> int:
    """One process of the pipeline: a node ``bench_<role>`` that ``works[role](node)`` drives
    until it returns, Ctrl-C or a shutdown; then the node and rclpy are shut down."""
    import rclpy

    from mmdrfuse_ros.nodes.worker import spin_until_shutdown

    rclpy.init()
    node = rclpy.create_node(f"bench_{role}")
    return spin_until_shutdown(node, lambda: works[role](node))
