"""Ultralytics module names zoo knows and deliberately does not build, each with the reason.

A YAML naming one fails on that row with this one line instead of "unknown module ... did you mean".
A plugin that registers a block under one of these names replaces the refusal.
"""
from __future__ import annotations

from zoo.registry import MODULES

__all__ = ["REFUSED"]

_TASKS = "zoo trains detect (Detect, v10Detect, RTDETRDecoder), classify and SAM promptable-segment models"

REFUSED: dict[str, str] = {
    **{name: f"Ultralytics' instance-segmentation head is not supported; {_TASKS}"
       for name in ("Segment", "Segment26", "YOLOESegment", "YOLOESegment26", "Proto", "Proto26")},
    **{name: f"Ultralytics' pose (keypoint) head is not supported; {_TASKS}" for name in ("Pose", "Pose26")},
    **{name: f"Ultralytics' oriented-box (OBB) head is not supported; {_TASKS}" for name in ("OBB", "OBB26")},
    **{name: f"open-vocabulary detection (YOLO-World / YOLOE) is not supported; {_TASKS}"
       for name in ("WorldDetect", "YOLOEDetect", "C2fAttn", "ImagePoolingAttn", "ContrastiveHead",
                    "BNContrastiveHead", "LRPCHead")},
    "Depth": f"Ultralytics' depth-estimation head is not supported; {_TASKS}",
    "SemanticSegment": f"Ultralytics' semantic-segmentation head is not supported; {_TASKS}",
    "TorchVision": ("loads a torchvision model, and zoo does not depend on torchvision; write the backbone "
                    "with zoo rows instead (ResNetLayer rows give ResNets, see yolov8-cls-resnet50.yaml)"),
}

for _name, _reason in REFUSED.items():
    MODULES.refuse(_name, _reason)
