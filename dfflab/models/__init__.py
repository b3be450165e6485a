"""Backbones and the detector."""

from dfflab.models.backbones import BACKBONES, build_backbone
from dfflab.models.detector import Detector, build_detector, load_backbone_weights

__all__ = ["BACKBONES", "build_backbone", "Detector", "build_detector", "load_backbone_weights"]
