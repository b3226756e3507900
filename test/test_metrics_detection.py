"""COCO-style average precision on small hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from mmdrfuse_ros.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    average_precision,
    bootstrap_ap50,
    box_iou,
)

GT = [[0, 0, 10, 10], [20, 20, 30, 40]]


def test_box_iou_hand():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou[0] == pytest.approx([1.0, 50 / 150, 0.0])
    assert box_iou([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0  # empty boxes: no NaN


def test_coco_thresholds():
    assert len(COCO_IOU_THRESHOLDS) == 10
    assert COCO_IOU_THRESHOLDS[0] == 0.5 and COCO_IOU_THRESHOLDS[-1] == pytest.approx(0.95)


def test_perfect_detections():
    dets = [[[*b, 0.9] for b in GT], [[5, 5, 25, 25, 0.8]]]
    res = average_precision(dets, [GT, [[5, 5, 25, 25]]])
    assert res["AP50"] == 1.0 and res["AP"] == 1.0
    assert (res["num_images"], res["num_gt"], res["num_detections"]) == (2, 3, 3)


def test_missing_detection_halves_recall():
    # one of two boxes found, precision 1 up to recall 0.5, then nothing: 51 of 101 points
    res = average_precision([[[0, 0, 10, 10, 0.9]]], [GT])
    assert res["AP50"] == pytest.approx(51 / 101)
    assert res["AP"] == pytest.approx(51 / 101)


def test_no_detections_scores_zero():
    res = average_precision([[]], [GT])
    assert res["AP50"] == 0.0 and res["AP"] == 0.0


def test_duplicate_detection_is_a_false_positive():
    dets = [[[0, 0, 10, 10, 0.9], [0, 0, 10, 10, 0.8], [20, 20, 30, 40, 0.7]]]
    # TP, FP (duplicate), TP: precision envelope 1 up to recall 0.5, then 2/3
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert average_precision(dets, [GT])["AP50"] == pytest.approx(expected)
    # the same duplicate ranked last costs nothing: full recall is reached before it
    late = [[[0, 0, 10, 10, 0.9], [20, 20, 30, 40, 0.8], [0, 0, 10, 10, 0.1]]]
    assert average_precision(late, [GT])["AP50"] == pytest.approx(1.0)


def test_low_iou_counts_only_at_low_thresholds():
    res = average_precision([[[0, 0, 10, 6.2, 0.9]]], [[[0, 0, 10, 10]]])  # IoU 0.62
    per = [res["per_iou"][t] for t in COCO_IOU_THRESHOLDS]
    assert res["AP50"] == pytest.approx(1.0)  # COCO's precision tp / (tp + fp + eps)
    assert per == pytest.approx([1.0, 1.0, 1.0] + [0.0] * 7)
    assert res["AP"] == pytest.approx(0.3)  # matched at 0.50, 0.55, 0.60 of ten thresholds


def test_below_half_iou_is_a_miss():
    res = average_precision([[[0, 0, 10, 4, 0.9]]], [[[0, 0, 10, 10]]])  # IoU 0.4
    assert res["AP50"] == 0.0


def test_scores_rank_across_images():
    # the confident false positive in image 2 outranks the true positive in image 1
    dets = [[[0, 0, 10, 10, 0.5]], [[50, 50, 60, 60, 0.9]]]
    gts = [[[0, 0, 10, 10]], []]
    res = average_precision(dets, gts)
    assert res["AP50"] == pytest.approx(0.5)  # precision 1/2 at recall 1, envelope 0.5 throughout


def test_mapping_input_and_custom_thresholds():
    dets = {"a": np.array([[0, 0, 10, 10, 0.9]]), "b": []}
    gts = {"a": [[0, 0, 10, 10]], "b": [[0, 0, 5, 5]]}
    res = average_precision(dets, gts, iou_thresholds=[0.5, 0.75])
    assert res["AP50"] == pytest.approx(51 / 101)
    assert set(res["per_iou"]) == {0.5, 0.75}


def test_max_detections_per_image():
    dets = [[[100, 100, 110, 110, 0.9], [0, 0, 10, 10, 0.1]]]
    assert average_precision(dets, [[[0, 0, 10, 10]]], max_detections=1)["AP50"] == 0.0


@pytest.mark.parametrize(
    ("dets", "gts", "message"),
    [
        ([[]], [[]], "no ground-truth"),
        ([[[0, 0, 1, 1]]], [[[0, 0, 1, 1]]], "rows of 5"),
        ([[[5, 0, 1, 1, 0.5]]], [[[0, 0, 1, 1]]], "x2 >= x1"),
        ([[], []], [[[0, 0, 1, 1]]], "2 images of detections but 1"),
        ({"x": [[0, 0, 1, 1, 0.5]]}, {"y": [[0, 0, 1, 1]]}, "without ground truth"),
    ],
)
def test_bad_input_is_a_clear_error(dets, gts, message):
    with pytest.raises(ValueError, match=message):
        average_precision(dets, gts)


def _half_found(n_images: int) -> tuple[list, list]:
    """Two people per image; every other image has one of them missed, every third a false
    alarm that outranks the hits: AP@0.5 is well inside (0, 1) and depends on which images."""
    gts = [[[0, 0, 10, 20], [30, 0, 40, 20]] for _ in range(n_images)]
    dets = []
    for k in range(n_images):
        found = [[0, 0, 10, 20, 0.5]] + ([] if k % 2 else [[30, 0, 40, 20, 0.4]])
        dets.append(found + ([[60, 0, 70, 20, 0.9]] if k % 3 == 0 else []))
    return dets, gts


def test_bootstrap_interval_brackets_the_ap_and_repeats():
    dets, gts = _half_found(30)
    ap = average_precision(dets, gts)["AP50"]
    lo, hi = bootstrap_ap50(dets, gts, resamples=300)
    assert 0.0 < lo < ap < hi < 1.0
    assert bootstrap_ap50(dets, gts, resamples=300) == (lo, hi)
    assert bootstrap_ap50(dets, gts, resamples=300, seed=1) != (lo, hi)
    narrow = bootstrap_ap50(dets, gts, resamples=300, level=0.5)
    assert lo <= narrow[0] <= narrow[1] <= hi


def test_bootstrap_interval_is_a_point_when_every_image_is_alike():
    gts = [[[0, 0, 10, 20]]] * 8
    dets = [[[0, 0, 10, 20, 0.9], [50, 0, 60, 20, 0.5]]] * 8
    ap = average_precision(dets, gts)["AP50"]
    assert bootstrap_ap50(dets, gts, resamples=50) == pytest.approx((ap, ap))


@pytest.mark.parametrize("kwargs, message", [
    ({"resamples": 0}, "resamples"), ({"level": 1.0}, "level"), ({"level": 0.0}, "level")])
def test_bootstrap_refuses_bad_settings(kwargs, message):
    dets, gts = _half_found(4)
    with pytest.raises(ValueError, match=message):
        bootstrap_ap50(dets, gts, **kwargs)


def test_bootstrap_needs_ground_truth():
    with pytest.raises(ValueError, match="no ground-truth"):
        bootstrap_ap50([[]] * 3, [[]] * 3)


def test_bootstrap_equals_the_ap_of_each_resampled_set():
    """The interval is the quantiles of plain AP@0.5 recomputed on each resample of images."""
    rng = np.random.default_rng(3)
    gts = [[[x, 0, x + 10, 20] for x in range(0, 10 * n, 15)] for n in rng.integers(0, 4, 20)]
    dets = [[[b[0] + rng.integers(0, 6), 0, b[2], 20, rng.uniform()] for b in g]
            + [[300, 300, 320, 330, rng.uniform()]] for g in gts]
    draw = np.random.default_rng(0)
    values = []
    for _ in range(200):
        pick = draw.integers(0, len(gts), len(gts))
        if any(gts[i] for i in pick):
            values.append(average_precision([dets[i] for i in pick], [gts[i] for i in pick],
                                            iou_thresholds=(0.5,))["AP50"])
    expected = np.quantile(values, [0.025, 0.975])
    assert bootstrap_ap50(dets, gts, resamples=200, seed=0) == pytest.approx(tuple(expected))
