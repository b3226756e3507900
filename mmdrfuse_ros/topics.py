"""Default topic and node names, spelled in one place. Topics are relative, so namespaces and
remaps apply; a node name is also the section of its parameters file."""

FUSION_NODE = "fusion_node"
DETECTOR_NODE = "detector_node"

THERMAL_IMAGE = "thermal/image_raw"
RGB_IMAGE = "rgb/image_raw"
RGB_CAMERA_INFO = "rgb/camera_info"
FUSED_IMAGE = "fused/image"
FUSED_CAMERA_INFO = "fused/camera_info"
DETECTIONS = "detections"
DETECTIONS_IMAGE = "detections/image"
DIAGNOSTICS = "/diagnostics"
CLOCK = "/clock"
