"""googlenet: the reference implementation of GoogLeNet (Inception v1), Szegedy et al. 2014."""

from .api import create_model
from .embedding import embed
from .errors import UserError
from .evaluate.crops import Crop, crop_boxes
from .export import export_onnx, export_torchscript
from .models import GoogLeNetOutputs, list_models
from .pretrained import SOURCES
from .pretrained.torchvision_pth import convert_torchvision, load_torchvision_pretrained
from .weights import load_model, read_metadata, save_model

__version__ = "0.1.0"

__all__ = ["Crop", "GoogLeNetOutputs", "SOURCES", "UserError", "convert_torchvision", "create_model", "crop_boxes",
           "embed", "export_onnx", "export_torchscript", "list_models", "load_model", "load_torchvision_pretrained",
           "read_metadata", "save_model", "__version__"]
