"""ImageNet-1k class names, bundled for 1000-class weights that carry none (e.g. converted checkpoints).

``assets/imagenet_classes.txt`` is torchvision's ``torchvision.models._meta._IMAGENET_CATEGORIES``, one name per
line in label order (the sorted WordNet ids n01440764 ... n15075141), written once at development time so that the
package does not depend on a private torchvision module.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CLASSES_FILE = Path(__file__).with_name("assets") / "imagenet_classes.txt"


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    names = CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    assert len(names) == 1000, f"{CLASSES_FILE} holds {len(names)} names, expected 1000"
    return names
