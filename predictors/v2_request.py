"""V2 REST inference requests (JSON, or a JSON header plus binary tensors) decoded and checked in
full before they become kserve's :class:`~kserve.protocol.infer_type.InferRequest`.

kserve's own decoder trusts the envelope: a ``"data": null`` beside a ``binary_data_size``, a
header length of ``'²'``, an ``outputs`` entry that is not an object or a scalar ``data`` each
end in a 500 deep inside it. Here every field kserve or the model will touch is checked, and any
problem is a :class:`BadRequest` naming the field. What passes holds only plain lists, bytes and
numpy arrays of the declared shape, so nothing downstream can fail on the client's input.
Which inputs the model wants (``entity_id``, ``limit``) is still :func:`api.parse_v2`'s rule.

Every list or object is length-checked before it is iterated (at most :data:`MAX_INPUTS` inputs,
:data:`MAX_PARAMETERS` parameters, one request per output name, :data:`MAX_VALUES` values of
JSON data nested no deeper than the shape), so a hostile body costs the event loop little more
than its JSON parse.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from starlette.datastructures import Headers

from predictors import fields, json_body
from predictors.errors import BadRequest

LENGTH_HEADER = "inference-header-content-length"
MAX_INPUTS = 8
MAX_DIMS = 8
MAX_DIM = 2**31 - 1
MAX_NAME_CHARS = 64
MAX_REQUEST_ID_CHARS = 256
MAX_PARAMETERS = 32  # per parameters object
MAX_VALUES = 4096  # list nodes and values in one input's JSON data (a valid request has at most 256)
DTYPES: dict[str, np.dtype] = {name: np.dtype(t) for name, t in {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}.items()}
DATATYPES = frozenset(DTYPES) | {"BYTES"}
_TOP_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
Parameters = dict[str, str | bool | int]


def decode(body: bytes, headers: Headers, model_name: str, output_names: Sequence[str]) -> InferRequest:
    """The :class:`InferRequest` of a V2 ``/infer`` body; :class:`BadRequest` for anything malformed.

    A body with an ``Inference-Header-Content-Length`` header is binary: that many bytes of JSON,
    then each input's ``binary_data_size`` bytes in order, nothing left over. Without it, the
    whole body is JSON, whatever its content type (tritonclient sends none).
    """
    raw_length = fields.single_header(headers.getlist(LENGTH_HEADER), "Inference-Header-Content-Length")
    if raw_length is None:
        header, tail, what = body, b"", "the request body"
    else:
        n = fields.length_header(raw_length, "Inference-Header-Content-Length")
        if n > len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} is longer than the {len(body)}-byte body")
        header, tail, what = body[:n], body[n:], "the JSON header of the binary request"
    obj = json_body.loads(header, what=what)
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} must be a JSON object with an 'inputs' list")
    extra = obj.keys() - _TOP_KEYS
    if extra:
        raise BadRequest(f"unexpected field(s) in the request: {_names(extra)}")
    request_id = obj.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_CHARS):
        raise BadRequest(f"'id' must be a string of at most {MAX_REQUEST_ID_CHARS} characters")
    params = _parameters(obj.get("parameters"), "parameters")
    if not isinstance(params.get("binary_data_output", False), bool):
        raise BadRequest("parameters.binary_data_output must be a boolean")
    raw_inputs = obj.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the request needs a non-empty 'inputs' list")
    if len(raw_inputs) > MAX_INPUTS:
        raise BadRequest(f"at most {MAX_INPUTS} inputs, got {len(raw_inputs)}")
    inputs, pos = [], 0
    for i, raw in enumerate(raw_inputs):
        inp, used = _input(raw, f"inputs[{i}]", tail, pos)
        inputs.append(inp)
        pos += used
    if pos != len(tail):
        raise BadRequest(f"{len(tail) - pos} bytes after the last input tensor")
    return InferRequest(model_name=model_name, infer_inputs=inputs, request_id=request_id,
                        parameters=params or None, request_outputs=_outputs(obj.get("outputs"), output_names))


def _input(raw: Any, where: str, tail: bytes, pos: int) -> tuple[InferInput, int]:
    """One input tensor and the number of binary bytes it takes from ``tail`` at ``pos``."""
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object with 'name', 'datatype' and 'shape'")
    extra = raw.keys() - _INPUT_KEYS
    if extra:
        raise BadRequest(f"{where} has unexpected field(s): {_names(extra)}")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise BadRequest(f"{where}.name must be a non-empty string of at most {MAX_NAME_CHARS} characters")
    where = f"input {name!r}"
    if datatype not in DATATYPES:
        raise BadRequest(f"{where}: datatype must be one of {', '.join(sorted(DATATYPES))}, got {_short(datatype)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape
    ):
        raise BadRequest(f"{where}: shape must be a list of at most {MAX_DIMS} integers in [0, {MAX_DIM}]")
    params = _parameters(raw.get("parameters"), f"{where}: parameters")
    data, size = raw.get("data"), params.get("binary_data_size")
    if data is not None and size is not None:
        raise BadRequest(f"{where}: give 'data' or 'parameters.binary_data_size', not both")
    if data is None and size is None:
        raise BadRequest(f"{where}: needs 'data' or 'parameters.binary_data_size'")
    if data is not None:
        if not isinstance(data, list):
            raise BadRequest(f"{where}: data must be a list")
        if datatype == "FP16":
            raise BadRequest(f"{where}: FP16 data must be sent as binary")
        _check_data(data, len(shape), DTYPES.get(datatype), datatype, where)
        return InferInput(name, shape, datatype, data=data, parameters=params), 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or pos + size > len(tail):
        raise BadRequest(f"{where}: binary_data_size {_short(size)} does not fit the {len(tail) - pos} bytes left")
    chunk, count = tail[pos:pos + size], math.prod(shape)
    if datatype == "BYTES":
        values: Any = _bytes_elements(chunk, count, where)
    else:
        itemsize = DTYPES[datatype].itemsize
        if size != count * itemsize:
            raise BadRequest(f"{where}: {size} bytes do not hold {count} {datatype} values")
        values = np.frombuffer(chunk, dtype=DTYPES[datatype].newbyteorder("<")).reshape(shape)
    return InferInput(name, shape, datatype, data=values, parameters=params), size


def _check_data(data: list, dims: int, dtype: np.dtype | None, datatype: str, where: str) -> None:
    """JSON ``data``: flat, or nested row-major no deeper than the shape's ``dims``, at most
    :data:`MAX_VALUES` nodes in all; for a numeric ``datatype`` each value is one of it: a
    boolean for BOOL, an integer in range for the integer types (``10.0`` counts as 10), a
    number for FP*."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, list):
            seen += len(node)
            if seen > MAX_VALUES:
                raise BadRequest(f"{where}: data holds more than {MAX_VALUES} values")
            if depth > max(1, dims):
                raise BadRequest(f"{where}: data nests deeper than its {dims}-dimensional shape")
            stack.extend((child, depth + 1) for child in node)
            continue
        if dtype is None:  # BYTES: each element is checked where it is read (api.parse_v2)
            continue
        if dtype.kind == "b":
            ok = isinstance(node, bool)
        elif isinstance(node, bool) or not isinstance(node, int | float):
            ok = False
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            ok = (isinstance(node, int) or node.is_integer()) and info.min <= node <= info.max
        else:
            ok = True
        if not ok:
            raise BadRequest(f"{where}: data holds {_short(node)}, not a {datatype} value")


def _bytes_elements(chunk: bytes, count: int, where: str) -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    out: list[bytes] = []
    off = 0
    while off < len(chunk):
        if len(out) == count:
            raise BadRequest(f"{where}: BYTES data holds more than the {count} elements of its shape")
        if off + 4 > len(chunk):
            raise BadRequest(f"{where}: truncated BYTES element")
        n = int.from_bytes(chunk[off:off + 4], "little")
        off += 4
        if off + n > len(chunk):
            raise BadRequest(f"{where}: truncated BYTES element")
        out.append(chunk[off:off + n])
        off += n
    if len(out) != count:
        raise BadRequest(f"{where}: BYTES data holds {len(out)} elements, shape says {count}")
    return out


def _parameters(raw: Any, where: str) -> Parameters:
    """V2 parameters: an object of string, boolean or integer values (the protocol's three types)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_PARAMETERS or not all(
        isinstance(v, str | bool | int) for v in raw.values()
    ):
        raise BadRequest(f"{where} must be an object of at most {MAX_PARAMETERS} string, boolean or integer values")
    if "binary_data" in raw and not isinstance(raw["binary_data"], bool):
        raise BadRequest(f"{where}.binary_data must be a boolean")
    return dict(raw)


def _outputs(raw: Any, names: Sequence[str]) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequest("'outputs' must be a list of {'name': ...} objects")
    if len(raw) > len(names):
        raise BadRequest(f"at most {len(names)} outputs, got {len(raw)}")
    out, seen = [], set()
    for i, o in enumerate(raw):
        if not isinstance(o, dict) or set(o) - _OUTPUT_KEYS or not isinstance(o.get("name"), str):
            raise BadRequest(f"outputs[{i}] must be an object with a 'name' (and optional 'parameters')")
        name = o["name"]
        if name not in names:
            raise BadRequest(f"outputs[{i}]: unknown output {_short(name)}; this model has {', '.join(names)}")
        if name in seen:
            raise BadRequest(f"output {name!r} requested twice")
        seen.add(name)
        out.append(RequestedOutput(name, _parameters(o.get("parameters"), f"outputs[{i}].parameters") or None))
    return out or None


def _names(keys: Iterable[Any]) -> str:
    """A few of ``keys`` for a message (not all: there may be thousands)."""
    return ", ".join(sorted(_short(k) for k in itertools.islice(keys, 8)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
