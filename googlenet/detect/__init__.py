"""Object detection on the GoogLeNet trunk (docs/detection.md): the paper's R-CNN with selective search and MultiBox
proposals, a Faster R-CNN on the same trunk, and the VOC / ILSVRC / COCO evaluators.

Modules: ``data`` (VOC and COCO readers), ``metrics`` (the evaluators), ``results`` (VOC results files, COCO results
JSON), ``draw`` (boxes on images, PR and recall curves), ``scenes`` (the offline scene set). Nothing heavy is
imported here, so ``import googlenet.detect`` stays quick.
"""
