"""Detections as ROS messages: ``vision_msgs/Detection2DArray`` where installed, else JSON.

vision_msgs is the standard (and what the ROS 2 ecosystem's trackers and viewers read); it is
in every ROS 2 distro but not on PyPI. Without it, the detector publishes ``std_msgs/String``
on the same topic, carrying the same fields as JSON (``docs/DETECTIONS.md``)::

    {"header": {"stamp": {"sec": 1, "nanosec": 5}, "frame_id": "rgb_optical_frame"},
     "detections": [{"bbox": {"center_x": 120.5, "center_y": 80.0, "size_x": 40.0,
                              "size_y": 96.0},
                     "results": [{"class_id": "0", "label": "person", "score": 0.87}]}]}

``msg_to_detections`` reads either form back. ROS message imports stay inside functions, so
this module imports without ROS.
"""

from __future__ import annotations

import json
from typing import Any

from ..detection.base import Detection
from ..stamps import NS_PER_S, stamp_to_ns

__all__ = [
    "JSON_FORMAT",
    "detection_message_type",
    "detections_to_msg",
    "msg_to_detections",
    "vision_msgs_available",
]

JSON_FORMAT = "mmdrfuse_ros/detections/v1"


def vision_msgs_available() -> bool:
    try:
        import vision_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def detection_message_type() -> type:
    """The message class the detector publishes here: Detection2DArray, else std_msgs/String."""
    if vision_msgs_available():
        from vision_msgs.msg import Detection2DArray

        return Detection2DArray
    from std_msgs.msg import String

    return String


def detections_to_msg(detections: list[Detection], header: Any) -> Any:
    """A message of :func:`detection_message_type` with ``header`` (the image's) and the boxes."""
    if vision_msgs_available():
        return _to_vision_msgs(detections, header)
    from std_msgs.msg import String

    payload = {
        "format": JSON_FORMAT,
        "header": {"stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
                   "frame_id": header.frame_id},
        "detections": [
            {"bbox": {"center_x": d.center[0], "center_y": d.center[1], "size_x": d.width,
                      "size_y": d.height},
             "results": [{"class_id": str(d.class_id), "label": d.label, "score": d.score}]}
            for d in detections
        ],
    }
    return String(data=json.dumps(payload, allow_nan=False))


def msg_to_detections(msg: Any) -> tuple[int, str, list[Detection]]:
    """(header stamp in ns, frame_id, detections) from either message form."""
    if hasattr(msg, "detections"):  # vision_msgs/Detection2DArray
        return (stamp_to_ns(msg.header.stamp), msg.header.frame_id,
                [_from_vision_msgs(d) for d in msg.detections])
    try:
        doc = json.loads(msg.data)
        header = doc["header"]
        stamp_ns = int(header["stamp"]["sec"]) * NS_PER_S + int(header["stamp"]["nanosec"])
        detections = []
        for item in doc["detections"]:
            box, best = item["bbox"], max(item["results"], key=lambda r: r["score"])
            cx, cy, sx, sy = box["center_x"], box["center_y"], box["size_x"], box["size_y"]
            detections.append(Detection(cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2,
                                        float(best["score"]), int(best["class_id"]),
                                        best.get("label", str(best["class_id"]))))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a detections message ({type(exc).__name__}: {exc})") from None
    return stamp_ns, header.get("frame_id", ""), detections


def _to_vision_msgs(detections: list[Detection], header: Any) -> Any:  # pragma: no cover
    """Detection2DArray. Humble+ (vision_msgs 4) nests ``center.position``; Foxy had x/y."""
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    out = Detection2DArray(header=header)
    for d in detections:
        det = Detection2D(header=header)
        center = det.bbox.center
        target = center.position if hasattr(center, "position") else center
        target.x, target.y = d.center
        det.bbox.size_x, det.bbox.size_y = d.width, d.height
        hyp = ObjectHypothesisWithPose()
        if hasattr(hyp, "hypothesis"):
            hyp.hypothesis.class_id, hyp.hypothesis.score = str(d.class_id), d.score
        else:
            hyp.id, hyp.score = str(d.class_id), d.score
        det.results.append(hyp)
        out.detections.append(det)
    return out


def _from_vision_msgs(det: Any) -> Detection:  # pragma: no cover (needs vision_msgs)
    center = det.bbox.center
    point = center.position if hasattr(center, "position") else center
    sx, sy = det.bbox.size_x, det.bbox.size_y
    score, class_id = 0.0, "0"
    if det.results:
        hyp = max(det.results, key=lambda r: getattr(r, "hypothesis", r).score)
        inner = getattr(hyp, "hypothesis", hyp)
        score, class_id = inner.score, getattr(inner, "class_id", getattr(inner, "id", "0"))
    cid = int(class_id) if str(class_id).isdigit() else 0
    return Detection(point.x - sx / 2, point.y - sy / 2, point.x + sx / 2, point.y + sy / 2,
                     float(score), cid, "person" if cid == 0 else str(class_id))
