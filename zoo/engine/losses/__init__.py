"""Training losses. Each loss is ``forward(preds, batch) -> (loss, {name: float})``."""
from zoo.engine.losses.cross_entropy import ClassificationLoss
from zoo.engine.losses.yolo import LossGains, TaskAlignedAssigner, YOLOv10Loss

__all__ = ["ClassificationLoss", "LossGains", "TaskAlignedAssigner", "YOLOv10Loss"]
