"""Datasets for training and validation: the embedded shapes set, YOLO / COCO / ImageFolder readers,
transforms, batching and reproducible loading."""
from zoo.data.class_folders import (
    ClassificationDataset,
    ClassifyAugment,
    ImageFolderSource,
    ShapesCropSource,
    collate_classification,
)
from zoo.data.dataset import DetectionDataset, SeededSampler, build_dataloader, collate_detection
from zoo.data.problems import DataProblems
from zoo.data.shapes import SHAPE_NAMES, ShapesConfig, render_shapes
from zoo.data.sources import CocoSource, ShapesSource, YoloSource
from zoo.data.spec import DataSpec, resolve_data
from zoo.data.transforms import AugmentConfig

__all__ = [
    "AugmentConfig", "ClassificationDataset", "ClassifyAugment", "CocoSource", "DataProblems", "DataSpec",
    "DetectionDataset", "ImageFolderSource", "SHAPE_NAMES", "SeededSampler", "ShapesConfig", "ShapesCropSource",
    "ShapesSource", "YoloSource", "build_dataloader", "collate_classification", "collate_detection",
    "render_shapes", "resolve_data",
]
