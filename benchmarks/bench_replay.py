"""Replay the synthetic bag at its own rate and print the headline table (latency, drops, floor).

    python benchmarks/bench_replay.py [--bag out/demo_bag] [--out out/bench_replay] [--runs 1]

Each configuration is one ``mmdrfuse replay`` in a fresh process (fusion + detection as in
``make demo``; fusion only), so the numbers are what a user gets; the transport floor is measured
in the same run. The load average is printed with the table: on a shared machine it says how much
of the CPU the replay had.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CONFIGS = {
    "fusion + detection": [],
    "fusion only": ["--no-detector"],
}


def _fmt(summary: dict | None) -> str:
    if not summary or not summary.get("n"):
        return "–"
    return " / ".join(f"{summary[q]:.0f}" for q in ("p50", "p95", "p99", "max"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bag", type=Path, default=Path("out/demo_bag"))
    parser.add_argument("--out", type=Path, default=Path("out/bench_replay"))
    parser.add_argument("--runs", type=int, default=1, help="runs per configuration")
    args = parser.parse_args()
    # a benchmark starts nodes: keep DDS on this machine and on a domain of its own
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    mmdrfuse = [sys.executable, "-m", "mmdrfuse_ros.cli"]
    if not (args.bag / "metadata.yaml").is_file():
        subprocess.run([*mmdrfuse, "bag", "synth", "--out", str(args.bag)], check=True, env=env)
    rows = []
    for name, extra in CONFIGS.items():
        for run in range(args.runs):
            report_dir = args.out / f"{name.replace(' ', '').replace('+', '_')}_{run}"
            load_before = os.getloadavg()[0]
            subprocess.run([*mmdrfuse, "replay", str(args.bag), "--report", str(report_dir),
                            "--no-progress", *extra], env=env, check=False)  # fmt: skip
            r = json.loads((report_dir / "report.json").read_text())
            c, d, lat = r.get("counts", {}), r.get("drops", {}), r.get("latency_ms", {})
            dropped = {k: v for k, v in d.items() if v and k != "floor_lost"}
            rows.append(
                f"| {name} | {c.get('published_thermal')} + {c.get('published_rgb')} | "
                f"{c.get('synchronised')} | {c.get('fused')} "
                f"({r.get('throughput_hz', {}).get('fused_received', 0):.1f} Hz) | "
                + ", ".join(f"{k} {v}" for k, v in dropped.items())
                + f" | {_fmt(lat.get('fused'))} | {_fmt(lat.get('detections'))} | "
                f"{_fmt(lat.get('floor'))} | {d.get('floor_lost', '–')} | "
                f"{load_before:.1f} |"
            )
    print("\n| run | frames in (thermal + RGB) | pairs | fused | drops by cause | "
          "stamp->fused ms p50/p95/p99/max | stamp->detections ms | transport floor ms | "
          "floor lost | load avg before |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
