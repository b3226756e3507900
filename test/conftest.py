"""Shared test set-up: loopback-only DDS, and the RoadScene pairs from ../shared when present."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

# Tests start real rclpy nodes: keep DDS discovery on this machine, and off the default domain
# so that parallel runs (and anything else on the host) do not see each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

REPO = Path(__file__).resolve().parent.parent
ROADSCENE = REPO.parent / "shared" / "data" / "roadscene"


@pytest.fixture(scope="session")
def roadscene() -> Path:
    """The RoadScene pairs (``ir/``, ``vi/``); skips where ../shared is absent (a new user)."""
    if not (ROADSCENE / "ir").is_dir() or not (ROADSCENE / "vi").is_dir():
        pytest.skip(f"RoadScene data not found at {ROADSCENE} (only in the project's CI/dev setup)")
    return ROADSCENE


@pytest.fixture(scope="module")
def context(request):
    """A private rclpy context (loopback discovery, set above) on a domain id of its module's own,
    so that node tests of different modules never see each other's topics."""
    rclpy = pytest.importorskip("rclpy")
    ctx = rclpy.Context()
    seed = zlib.crc32(request.module.__name__.encode())
    rclpy.init(context=ctx, domain_id=1 + (os.getpid() + seed) % 100)
    yield ctx
    rclpy.shutdown(context=ctx)
