"""See inside GoogLeNet: feature visualisation, DeepDream and attribution, on the model's own layer names.

Every function takes a loaded model (``googlenet.pretrained.load_weights_arg``) and returns tensors of pixels in 0..1
(C x H x W), so a notebook needs no CLI. The model's preprocessing (mean/std, pixel range, channel order, grayscale)
comes from its weights metadata through ``ModelInput``; nothing here has a second preprocessing path.
"""

from .atlas import build_atlas, open_source, write_atlas
from .common import ModelInput, layer_names, resolve_layer
from .dream import dream
from .visualize import visualize

__all__ = ["ModelInput", "layer_names", "resolve_layer", "visualize", "dream", "explain", "build_atlas",
           "open_source", "write_atlas"]


def explain(*args, **kwargs):
    """Attribution with Captum (optional ``[explain]`` extra); see ``googlenet.interpret.explain_captum``."""
    from .explain_captum import explain as _explain

    return _explain(*args, **kwargs)
