"""googlenet: the reference implementation of GoogLeNet (Inception v1), Szegedy et al. 2014."""

from .errors import UserError
from .evaluate.crops import Crop, crop_boxes
from .models import GoogLeNetOutputs, create_model, list_models
from .weights import load_model, read_metadata, save_model

__version__ = "0.1.0"

__all__ = ["Crop", "GoogLeNetOutputs", "UserError", "create_model", "crop_boxes", "list_models", "load_model",
           "read_metadata", "save_model", "__version__"]
