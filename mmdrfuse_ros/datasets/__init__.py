"""Infrared/visible datasets on disk, without ROS: pairs by name, image readers, VOC boxes.

    from mmdrfuse_ros.datasets import find_layout, find_pairs, read_thermal_image
    listing = find_pairs("LLVIP/infrared/test", "LLVIP/visible/test", "LLVIP/Annotations")
    for pair in listing.pairs: ...
"""

from .errors import DatasetError
from .homography import read_homography
from .integrity import truncation
from .pairs import (
    DATASET_LAYOUTS,
    IMAGE_EXTENSIONS,
    Pair,
    PairListing,
    find_layout,
    find_pairs,
    list_images,
)
from .readers import read_grey, read_luma, read_thermal_image, read_visible_image
from .voc import PERSON_CLASSES, parse_voc

__all__ = [
    "DATASET_LAYOUTS",
    "IMAGE_EXTENSIONS",
    "PERSON_CLASSES",
    "DatasetError",
    "Pair",
    "PairListing",
    "find_layout",
    "find_pairs",
    "list_images",
    "parse_voc",
    "read_grey",
    "read_homography",
    "read_luma",
    "read_thermal_image",
    "read_visible_image",
    "truncation",
]
