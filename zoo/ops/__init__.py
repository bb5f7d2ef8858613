"""Pure tensor functions shared by the blocks (``zoo.nn``) and the training code (``zoo.engine``).

This is the bottom layer: it imports torch and the standard library only, never another ``zoo``
module, so anything in zoo may use it without creating an import cycle.
"""
from zoo.ops.anchors import box_to_distances, dfl_expectation, dist2bbox, grid_anchors, make_anchors
from zoo.ops.boxes import (
    box_area, ciou, corners_to_xywh, elementwise_iou, giou, pairwise_giou, pairwise_iou, xywh_to_xyxy, xyxy_to_xywh,
)

__all__ = [
    "box_area", "ciou", "corners_to_xywh", "elementwise_iou", "giou", "pairwise_giou", "pairwise_iou",
    "xywh_to_xyxy", "xyxy_to_xywh",
    "box_to_distances", "dfl_expectation", "dist2bbox", "grid_anchors", "make_anchors",
]
