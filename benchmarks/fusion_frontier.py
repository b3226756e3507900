"""The trade-off between the field's metrics and fused YOLOX AP, measured on fusion rules.

Each row is a fixed, parameter-free fusion rule (no training), scored exactly as
``mmdrfuse students`` scores a student: the 8 metrics on the held-out validation pairs, as
8-bit images, against the published student with its authors' min-max output, and YOLOX AP@0.5
on the 30 labelled LLVIP pairs. Every rule is followed by a per-image min-max stretch (the
engine's ``minmax`` output mapping, :func:`mmdrfuse_ros.fusion.output.map_output`), except where
the label says ``raw``. The ``screen`` and ``max`` rules with source gammas are the intensity
targets a student can be trained towards (``student.target``, ``student.target_ir_gamma``,
``student.target_vis_gamma``, :func:`mmdrfuse_ros.training.losses.fusion_target`).

A rule that is good on both bars shows what a student could aim for; when no rule reaches both,
the two bars pull in different directions on these data. ``--student LABEL=PATH`` adds trained
checkpoints (min-max output) to the same table and plot.

    python benchmarks/fusion_frontier.py --out frontier.md --plot frontier.png \
        [--student "shipped=mmdrfuse_ros/fusion/weights/student_default.pt"]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmdrfuse_ros.fusion.model import StudentNet, load_checkpoint  # noqa: E402
from mmdrfuse_ros.fusion.output import map_output  # noqa: E402
from mmdrfuse_ros.training import losses  # noqa: E402
from mmdrfuse_ros.training import students as S  # noqa: E402
from mmdrfuse_ros.training.priors import tone_student  # noqa: E402

SHARED = ROOT.parent / "shared"
FOLDERS = [SHARED / "data" / "roadscene", SHARED / "data" / "llvip" / "unlabelled"]
PUBLISHED = SHARED / "models" / "mmdrfuse_published" / "student.model"
LABELLED = SHARED / "data" / "llvip" / "labelled"
YOLOX = SHARED / "models" / "yolox_nano" / "yolox_nano.onnx"
SHIPPED = ROOT / "mmdrfuse_ros" / "fusion" / "weights" / "student_default.pt"
AP_BAR, WINS_BAR = 0.85, 7


def target_rule(kind: str, ir_gamma: float, vis_gamma: float) -> S.FuseFn:
    """A training target (``losses.fusion_target``) as an image, min-max stretched."""
    def fuse(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        t = losses.fusion_target(torch.from_numpy(ir), torch.from_numpy(vi), kind,
                                 ir_gamma, vis_gamma)
        return map_output(t.numpy(), "minmax")
    return fuse


def max_plus_min(weight: float) -> S.FuseFn:
    """max + weight * min of the sources, min-max stretched: between max and the sum."""
    return lambda ir, vi: map_output(np.maximum(ir, vi) + weight * np.minimum(ir, vi), "minmax")


def pixelwise_part(net: StudentNet, size: int = 65) -> S.FuseFn:
    """The net's response to flat inputs as a lookup table: what it does without its spatial
    kernels (min-max stretched like the net)."""
    grid = np.linspace(0, 1, size, dtype=np.float32)
    a, b = np.meshgrid(grid, grid, indexing="ij")
    flat = np.stack([a.ravel(), b.ravel()], 1)[:, :, None, None].repeat(3, 2).repeat(3, 3)
    with torch.no_grad():
        table = net(torch.from_numpy(flat))[:, 0, 1, 1].numpy().reshape(size, size)

    def fuse(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        out = cv2.remap(table, vi * (size - 1), ir * (size - 1), cv2.INTER_LINEAR)
        return map_output(np.clip(out, 0, 1), "minmax")
    return fuse


def built_rows() -> list[S.Row]:
    """Hand-set students (:func:`tone_student`) and the shipped student without its kernels."""
    rows = []
    for label, net in (("built: tone rule", tone_student(0.4)),
                       ("built: tone rule, more IR contrast", tone_student(0.5)),
                       ("built: tone rule + relief 0.3", tone_student(0.4, 0.3)),
                       ("built: tone rule + relief 0.7", tone_student(0.4, 0.7))):
        rows.append(S.Row(label, S.mapped(net.unclamped, "minmax"), 113))
    rows.insert(1, S.Row("built: tone rule, authors' min-max (unclamped)",
                         S.mapped(tone_student(0.4).unclamped, "authors-minmax"), 113))
    shipped = load_checkpoint(SHIPPED).build().eval()
    rows.append(S.Row("shipped student, pixelwise part only", pixelwise_part(shipped)))
    return rows


def rules() -> dict[str, S.FuseFn]:
    table: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "max, raw": np.maximum,
        "max": target_rule("max", 1.0, 1.0),
        "max(IR, VIS^0.5), raw": lambda ir, vi: np.maximum(ir, np.sqrt(vi)),
        "max(IR, VIS^0.5)": target_rule("max", 1.0, 0.5),
        "max + 0.3 min": max_plus_min(0.3),
        "max + 0.5 min": max_plus_min(0.5),
        "screen": target_rule("screen", 1.0, 1.0),
    }
    for ir_gamma, vis_gamma in ((1.0, 0.5), (1.5, 1.0), (1.5, 0.7), (1.5, 0.5), (1.7, 0.7),
                                (1.8, 0.6), (1.7, 0.5), (1.8, 0.5), (1.6, 0.45), (2.0, 0.5)):
        table[f"screen(IR^{ir_gamma:g}, VIS^{vis_gamma:g})"] = target_rule(
            "screen", ir_gamma, vis_gamma)
    return table


def shared_present() -> bool:
    """Whether the data and models these benchmarks read are in ../shared (says what is not)."""
    missing = [p for p in (*FOLDERS, PUBLISHED, LABELLED, YOLOX) if not p.exists()]
    if missing:
        print(f"needs ../shared: missing {', '.join(map(str, missing))}", file=sys.stderr)
    return not missing


def score_against_published(rows: list[S.Row]) -> tuple[S.Row, str, str]:
    """Score ``rows`` and the published student (authors' min-max) as ``mmdrfuse students``
    does; returns the reference row and (what was measured, the Markdown table)."""
    val = S.validation_set(FOLDERS)
    net, params = S.net_output(PUBLISHED)
    reference = S.Row("published student, authors' min-max", S.mapped(net, "authors-minmax"),
                      params)
    S.score_metrics([reference, *rows], val)
    note = S.score_ap([reference, *rows], LABELLED, str(YOLOX))
    head = f"Validation: {len(val.names)} held-out pairs ({val.describe()}); AP: {note}"
    return reference, head, S.markdown([reference, *rows], "all", reference)


def _kind(row: S.Row) -> str:
    if row.label.startswith("built:"):
        return "built"
    return "trained" if row.params else "rule"


def plot(rows: list[S.Row], reference: S.Row, path: Path) -> None:
    """AP against metric wins; points are numbered, the numbers explained on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, key) = plt.subplots(1, 2, figsize=(11, 5.5), width_ratios=(2.2, 1))
    ax.scatter(reference.ap50, 8, marker="*", s=160, color="black", zorder=3)
    seen: dict[int, int] = {}
    for number, row in enumerate(rows, 1):
        wins = S.wins(row, reference)
        kind = _kind(row)
        ax.scatter(row.ap50, wins, marker={"trained": "s", "built": "D"}.get(kind, "o"),
                   color={"trained": "tab:red", "built": "tab:green"}.get(kind, "tab:blue"))
        lift = 4 + 9 * (seen.get(wins, 0) % 3)  # stagger labels of points on the same row
        seen[wins] = seen.get(wins, 0) + 1
        ax.annotate(str(number), (row.ap50, wins), fontsize=8, xytext=(2, lift),
                    textcoords="offset points")
    ax.axvline(AP_BAR, color="grey", ls="--")
    ax.axhline(WINS_BAR - 0.5, color="grey", ls="--")
    ax.set_xlabel("fused YOLOX AP@0.5, 30 labelled LLVIP pairs")
    ax.set_ylabel("metrics >= published student (min-max), of 8")
    ax.set_ylim(top=8.8)
    ax.set_title("Goal: right of and above the dashed lines")
    legend = ["*  published student, authors' min-max (reference)"]
    legend += [f"{n}  {row.label}" + ("  [trained]" if _kind(row) == "trained" else "")
               for n, row in enumerate(rows, 1)]
    key.axis("off")
    key.text(0, 1, "\n".join(legend), va="top", fontsize=8, family="monospace")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the Markdown table here too")
    parser.add_argument("--plot", type=Path, help="scatter plot: AP against metric wins")
    parser.add_argument("--student", action="append", default=[], metavar="LABEL=PATH")
    args = parser.parse_args()
    if not shared_present():
        return 2
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = [S.Row(label, fuse) for label, fuse in rules().items()] + built_rows()
    for spec in args.student:
        label, _, path = spec.partition("=")
        rows += S.student_rows(label, Path(path), ["minmax"])
    reference, head, table = score_against_published(rows)
    text = f"{head}; {time.perf_counter() - start:.0f} s.\n\n{table}"
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.plot:
        plot(rows, reference, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
