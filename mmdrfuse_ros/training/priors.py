"""Hand-set starting points for the student: priors a training run may start from, by name.

The 113-parameter architecture represents some fusion rules exactly. :func:`tone_student` is
one: both sources added, the hot part of the thermal image lifted, dark visible detail lifted,
and a sharpening output kernel. Set by hand (no data), it is at or above the published student
on all 8 metrics with min-max output (``docs/TRAINING_RESULTS.md``, "built" rows); a student
stage started from it (``student.prior: tone``) then trains it, and the checkpoint's metadata and
``training/README.md`` say so.
"""

from __future__ import annotations

import numpy as np
import torch

from mmdrfuse_ros.fusion.model import StudentNet

#: what ``student.prior`` may name: ``none`` (published: random, conv2 from the teacher's last
#: layer when ``student.init_conv2_from_teacher``) or a prior below.
STUDENT_PRIORS = ("none", "tone")
#: the tone prior's settings (the "built: tone rule" row of docs/TRAINING_RESULTS.md).
TONE_HOT = 0.4


RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.float32) / 8
#: a relief (emboss) kernel: the left-right difference, as in the shipped student's first layer
RELIEF = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32) / 3


def tone_student(hot: float, relief: float = 0.0, *, threshold: float = 0.5, lift: float = 0.3,
                 knee: float = 0.3, max_weight: float = 0.5, sharpen: float = 0.3,
                 vis_weight: float = 0.8, gain: float = 0.7) -> StudentNet:
    """A 113-parameter student whose weights are set by hand to a tone rule it represents
    exactly, a prior a student may start from (``student.prior: tone``), named in its metadata.

    With a = IR and b = VIS, the four ReLU units are
    ``u1 = (1 - hot) a + vis_weight (1 + lift) b`` (both sources, added),
    ``u2 = relu(a - threshold)`` (hot objects above the warm background),
    ``u3 = relu(b - knee)`` (where the lift of dark visible detail ends),
    ``u4 = relu(a - b)`` (max(a, b) = b + u4, for MI);
    the output is ``tanh(gain * K * x)`` with ``x = u1 + hot/(1 - threshold) u2 -
    vis_weight lift u3 + max_weight u4`` and K a 3x3 sharpening (plus ``relief`` x RELIEF).
    """
    net = StudentNet()
    w1 = np.zeros((4, 2, 3, 3), np.float32)
    w1[:, :, 1, 1] = [[1 - hot, vis_weight * (1 + lift)], [1, 0], [0, 1], [1, -1]]
    coef = np.array([1, hot / (1 - threshold), -vis_weight * lift, max_weight], np.float32)
    kernel = -sharpen * RING + relief * RELIEF
    kernel[1, 1] += 1 + sharpen
    with torch.no_grad():
        net.conv1[1].weight.copy_(torch.from_numpy(w1))
        net.conv1[1].bias.copy_(torch.tensor([0, -threshold, -knee, 0], dtype=torch.float32))
        net.conv2[1].weight.copy_(torch.from_numpy(gain * coef[None, :, None, None] * kernel))
        net.conv2[1].bias.zero_()
    return net.eval()


def prior_student(name: str) -> StudentNet:
    """The named prior as a StudentNet (``student.prior``)."""
    if name == "tone":
        return tone_student(TONE_HOT)
    raise ValueError(f"student prior {name!r}: choose one of {STUDENT_PRIORS[1:]}")
