"""The paper's test protocol (section 7): 1, 10 and 144 crops, softmax averaged over crops and over models."""

from .crops import SCHEMES, Crop, crop_boxes, crop_labels, labelled_crops, make_crops

__all__ = ["SCHEMES", "Crop", "crop_boxes", "crop_labels", "labelled_crops", "make_crops"]
