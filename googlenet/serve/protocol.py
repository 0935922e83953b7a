"""The Open Inference Protocol v2 (KServe "v2", spoken by Triton, KServe, Seldon MLServer and OpenVINO).

Request: ``{"id"?, "inputs": [{"name", "shape", "datatype", "data", "parameters"?}], "outputs"?: [{"name",
"parameters"?: {"classification": k}}]}``. Two inputs are accepted, one per request:

* ``image``  BYTES, shape [N]: encoded image files (JPEG, PNG, GIF, BMP, WebP). In JSON each element is a
  base64 string (as KServe's examples send images); with Triton's binary tensor extension each element is the
  raw bytes, framed by a 4-byte little-endian length.
* ``input``  FP32, shape [N, 3, S, S]: already preprocessed (the weights' mean/std), S the model's input size.

Outputs: ``probabilities`` FP32 [N, classes] (the default), or with Triton's classification extension
(``"parameters": {"classification": k}``) BYTES [N, k] of ``"value:index:label"`` strings, best first.

Triton's binary tensor extension: the header ``Inference-Header-Content-Length: L`` says the first L bytes of the
body are the JSON; each input with ``"parameters": {"binary_data_size": n}`` takes its n bytes from what follows,
in order. Hand-written: no maintained Python package implements the server side of this protocol without a whole
serving framework around it.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .model import RequestError

IMAGE_INPUT, TENSOR_INPUT, OUTPUT = "image", "input", "probabilities"
MAX_BATCH_PER_REQUEST = 64


@dataclass
class InferRequest:
    id: Optional[str]
    kind: str  # "images" | "tensor"
    images: Optional[list[bytes]]
    tensor: Optional[torch.Tensor]
    classification: Optional[int]

    @property
    def size(self) -> int:
        return len(self.images) if self.images is not None else int(self.tensor.shape[0])


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"{what} must be a positive integer, got {json.dumps(value)[:40]}")
    return value


def split_binary(body: bytes, header_length: Optional[str]) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a request body; all JSON without the binary extension's header."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise _bad("Inference-Header-Content-Length must be an integer") from None
    if not 0 < n <= len(body):
        raise _bad(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
    return body[:n], body[n:]


def parse_infer(body: bytes, header_length: Optional[str], *, input_size: int) -> InferRequest:
    head, binary = split_binary(body, header_length)
    try:
        request = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body is not valid JSON") from None
    except RecursionError:
        raise _bad("the JSON is nested too deeply") from None
    if not isinstance(request, dict):
        raise _bad("the request must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"'inputs' must hold exactly one input ('{IMAGE_INPUT}' BYTES or '{TENSOR_INPUT}' FP32)")
    spec = inputs[0]
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(shape, list) or not shape:
        raise _bad("input 'shape' must be a non-empty list of integers")
    shape = [_positive_int(d, "every shape dimension") for d in shape]
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("input 'parameters' must be an object")
    raw = None
    if "binary_data_size" in params:
        n = _positive_int(params["binary_data_size"], "binary_data_size")
        if n != len(binary):
            raise _bad(f"binary_data_size {n} does not match the {len(binary)} bytes after the JSON header")
        raw = binary
    elif binary:
        raise _bad("binary data after the JSON header, but no input declares binary_data_size")

    if name == IMAGE_INPUT:
        if datatype != "BYTES":
            raise _bad(f"input '{IMAGE_INPUT}' must have datatype BYTES, got {json.dumps(datatype)[:40]}")
        if len(shape) != 1:
            raise _bad(f"input '{IMAGE_INPUT}' must have shape [N], got {shape}")
        images = _bytes_elements(raw) if raw is not None else _base64_elements(spec.get("data"))
        if len(images) != shape[0]:
            raise _bad(f"shape [{shape[0]}] but {len(images)} image(s) sent")
        kind, tensor = "images", None
    elif name == TENSOR_INPUT:
        if datatype != "FP32":
            raise _bad(f"input '{TENSOR_INPUT}' must have datatype FP32, got {json.dumps(datatype)[:40]}")
        want = [3, input_size, input_size]
        if len(shape) != 4 or shape[1:] != want:
            raise _bad(f"input '{TENSOR_INPUT}' must have shape [N, {', '.join(map(str, want))}], got {shape}")
        if shape[0] > MAX_BATCH_PER_REQUEST:
            raise _bad(f"at most {MAX_BATCH_PER_REQUEST} images a request, got {shape[0]}")
        tensor = _fp32_tensor(raw, spec.get("data"), shape)
        images, kind = None, "tensor"
    else:
        raise _bad(f"unknown input {json.dumps(name)[:60]}: send '{IMAGE_INPUT}' (BYTES) or '{TENSOR_INPUT}' (FP32)")
    if images is not None and len(images) > MAX_BATCH_PER_REQUEST:
        raise _bad(f"at most {MAX_BATCH_PER_REQUEST} images a request, got {len(images)}")

    classification = None
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or len(outputs) > 1 or (outputs and not isinstance(outputs[0], dict)):
            raise _bad(f"'outputs' may name one output, '{OUTPUT}'")
        if outputs:
            if outputs[0].get("name") != OUTPUT:
                raise _bad(f"unknown output {json.dumps(outputs[0].get('name'))[:60]}: the model has '{OUTPUT}'")
            out_params = outputs[0].get("parameters") or {}
            if not isinstance(out_params, dict):
                raise _bad("output 'parameters' must be an object")
            if "classification" in out_params:
                classification = _positive_int(out_params["classification"], "classification")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("'id' must be a string")
    return InferRequest(request_id, kind, images, tensor, classification)


def _base64_elements(data: Any) -> list[bytes]:
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):
        data = data[0]  # [[...]]: a nested row-major form some clients send
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise _bad(f"input '{IMAGE_INPUT}' data must be a list of base64 strings (or binary data)")
    try:
        return [base64.b64decode(d, validate=True) for d in data]
    except (binascii.Error, ValueError):
        raise _bad(f"input '{IMAGE_INPUT}' data is not valid base64") from None


def _bytes_elements(raw: bytes) -> list[bytes]:
    """Triton's BYTES serialisation: each element is a 4-byte little-endian length, then that many bytes."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise _bad("binary BYTES data ends inside an element's length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise _bad("binary BYTES element runs past the end of the body")
        out.append(raw[pos:pos + n])
        pos += n
    return out


def _fp32_tensor(raw: Optional[bytes], data: Any, shape: list[int]) -> torch.Tensor:
    count = int(np.prod(shape))
    if raw is not None:
        if len(raw) != 4 * count:
            raise _bad(f"binary FP32 data of {len(raw)} bytes for shape {shape} ({4 * count} expected)")
        array = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    else:
        # Counted before anything is converted: a flat list by its length, a nested one by its first dimension.
        if not isinstance(data, list):
            raise _bad(f"input '{TENSOR_INPUT}' data must be a list of numbers")
        if len(data) not in (count, shape[0]):
            raise _bad(f"input '{TENSOR_INPUT}' has {len(data)} values for shape {shape} ({count} expected)")
        try:
            array = np.asarray(data)  # no dtype: strings and booleans keep their kind, and are refused
            if array.dtype.kind == "O":  # ragged, or integers past int64: numbers as float64, or a TypeError
                array = np.asarray(data, dtype=np.float64)
            elif array.dtype.kind not in "fiu":
                raise TypeError(array.dtype)
            with np.errstate(over="ignore"):  # past FP32's range becomes inf, refused below as not finite
                array = array.astype(np.float32).reshape(-1)
        except (TypeError, ValueError, OverflowError, RecursionError):
            raise _bad(f"input '{TENSOR_INPUT}' data must be numbers, as a flat list or nested by the shape") from None
        if array.size != count:
            raise _bad(f"input '{TENSOR_INPUT}' has {array.size} values for shape {shape} ({count} expected)")
    if not np.isfinite(array).all():
        raise _bad(f"input '{TENSOR_INPUT}' holds NaN or infinite values")
    return torch.from_numpy(array.reshape(shape).copy())


def infer_response(model_name: str, request: InferRequest, probs: torch.Tensor, labels: list[str]) -> dict:
    n = probs.shape[0]
    if request.classification is not None:
        k = min(request.classification, probs.shape[1])
        top = torch.topk(probs, k, dim=1)
        data = [f"{v:f}:{i}:{labels[i]}" for vals, idx in zip(top.values.tolist(), top.indices.tolist())
                for v, i in zip(vals, idx)]
        output = {"name": OUTPUT, "datatype": "BYTES", "shape": [n, k], "data": data}
    else:
        output = {"name": OUTPUT, "datatype": "FP32", "shape": [n, probs.shape[1]], "data": probs.reshape(-1).tolist()}
    response = {"model_name": model_name, "model_version": "1", "outputs": [output]}
    if request.id is not None:
        response["id"] = request.id
    return response


def model_metadata(model_name: str, *, input_size: int, num_classes: int, arch: str, precision: str,
                   backend: str, scheme: str) -> dict:
    return {"name": model_name, "versions": ["1"], "platform": f"googlenet_{backend}",
            "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                       {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, 3, input_size, input_size]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, num_classes]}],
            "parameters": {"arch": arch, "num_classes": num_classes, "input_size": input_size,
                           "precision": precision, "crops": int(scheme)}}
