"""Picking a few representative items from many: one rule for the replay's evaluation frames,
the calibration's pairs and the training patches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def select_evenly(items: Sequence[T], n: int) -> list[T]:
    """At most ``n`` items spread evenly over ``items``, first and last included (all of them
    when there are fewer)."""
    if n <= 0 or not items:
        return []
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx))]
