"""QoS parameter values shared by both nodes' tables (the profiles are built in nodes/qos.py).

Inputs default to the sensor-data profile (best effort, small depth: a late camera frame is
worth less than the next one); outputs default to reliable so that recorders and monitors, which
usually subscribe reliable, match and receive them.
"""

from __future__ import annotations

RELIABILITIES = ("best_effort", "reliable")
INPUT_RELIABILITY, INPUT_DEPTH = "best_effort", 5
OUTPUT_RELIABILITY, OUTPUT_DEPTH = "reliable", 5
