"""Backbones and the detector."""

from dfflab.models.backbones import BACKBONES, build_backbone
from dfflab.models.detector import (
    Detector,
    build_detector,
    init_backbone,
    load_backbone_weights,
    load_detector,
    save_backbone,
    save_detector,
)

__all__ = ["BACKBONES", "build_backbone", "Detector", "build_detector", "init_backbone",
           "load_backbone_weights", "load_detector", "save_backbone", "save_detector"]
