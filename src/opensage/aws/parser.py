"""Parse a request body into the operation's input, one function per protocol, driven by the shapes.

The result has Python types (``datetime`` for timestamps, ``bytes`` for blobs); values that do not
convert are kept as sent so that validation reports them with their path.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from botocore.model import OperationModel, Shape
from botocore.utils import parse_timestamp

from opensage.errors import ServiceError

# How deep a JSON body may nest: far more than any model needs, far less than Python's recursion limit.
MAX_JSON_DEPTH = 100


def _timestamp(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | str):
        try:
            return parse_timestamp(value)
        except (ValueError, TypeError, OverflowError, OSError, RuntimeError):  # out of datetime's range
            return value
    return value


def _blob(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value
    return value


def _from_json(shape: Shape, value: Any) -> Any:
    """Convert a decoded JSON value to Python types following ``shape``."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "structure" and isinstance(value, dict):
        out = {}
        for k, v in value.items():
            member = shape.members.get(k)
            out[k] = _from_json(member, v) if member is not None else v
        return out
    if kind == "list" and isinstance(value, list):
        return [_from_json(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _from_json(shape.value, v) for k, v in value.items()}
    if kind == "timestamp":
        return _timestamp(value)
    if kind == "blob":
        return _blob(value)
    return value


def parse_json(operation: OperationModel, body: bytes) -> dict[str, Any]:
    """AWS JSON 1.0/1.1: the body is the input structure."""
    if not body.strip():
        data: Any = {}
    else:
        data = _loads(body)
    if not isinstance(data, dict):
        raise ServiceError("SerializationException", "The request body must be a JSON object.")
    shape = operation.input_shape
    return _from_json(shape, data) if shape is not None else {}


# --- query protocol ---------------------------------------------------------------------------


def _query_scalar(shape: Shape, text: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        return text
    if kind == "boolean":
        low = text.lower()
        return True if low == "true" else False if low == "false" else text
    if kind == "timestamp":
        return _timestamp(text)
    if kind == "blob":
        return _blob(text)
    return text


def _query_value(shape: Shape, form: Mapping[str, str], prefix: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            key = member.serialization.get("name", name)
            value = _query_value(member, form, f"{prefix}.{key}" if prefix else key)
            if value is not None:
                out[name] = value
        return out if (out or not prefix) else None
    if kind == "list":
        flattened = shape.serialization.get("flattened")
        item_prefix = prefix if flattened else f"{prefix}.{shape.member.serialization.get('name', 'member')}"
        items = []
        i = 1
        while True:
            value = _query_value(shape.member, form, f"{item_prefix}.{i}")
            if value is None:
                break
            items.append(value)
            i += 1
        if not items and form.get(prefix) == "":
            return []
        return items or None
    if kind == "map":
        entry = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        out_map = {}
        i = 1
        while f"{entry}.{i}.{key_name}" in form:
            out_map[form[f"{entry}.{i}.{key_name}"]] = _query_value(shape.value, form, f"{entry}.{i}.{value_name}")
            i += 1
        return out_map or None
    if prefix in form:
        return _query_scalar(shape, form[prefix])
    return None


def parse_query(operation: OperationModel, form: Mapping[str, str]) -> dict[str, Any]:
    """AWS query: flattened ``Name.member.N.Field`` form fields."""
    shape = operation.input_shape
    if shape is None:
        return {}
    return _query_value(shape, form, "") or {}


# --- REST-JSON ----------------------------------------------------------------------------------


def parse_rest_json(
    operation: OperationModel,
    labels: Mapping[str, str],
    query: Mapping[str, list[str]],
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, Any]:
    """REST-JSON: members come from the URI, headers, query string and the payload."""
    shape = operation.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    payload_name = shape.serialization.get("payload")
    body_members = {}
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            if wire in labels:
                params[name] = labels[wire]
        elif location == "header":
            if wire.lower() in headers:
                params[name] = _query_scalar(member, headers[wire.lower()])
        elif location == "querystring":
            if wire in query:
                values = query[wire]
                params[name] = values if member.type_name == "list" else _query_scalar(member, values[0])
        elif name != payload_name:
            body_members[name] = member
    if payload_name:
        member = shape.members[payload_name]
        if member.type_name in ("blob", "string"):
            if body or member.type_name == "blob":
                params[payload_name] = body if member.type_name == "blob" else body.decode("utf-8", "replace")
        elif body.strip():
            params[payload_name] = _from_json(member, _json_object(body))
    elif body_members and body.strip():
        data = _json_object(body)
        for name, member in body_members.items():
            if name in data:
                params[name] = _from_json(member, data[name])
    return params


def _loads(body: bytes) -> Any:
    """The decoded JSON body; a SerializationException when it is no JSON or nests too deeply."""
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise ServiceError("SerializationException", _too_deep()) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError("SerializationException", f"The request body is not valid JSON: {exc}") from exc
    stack = [(data, 1)]
    while stack:  # iterative, so the check itself cannot overflow the stack
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_JSON_DEPTH:
                    raise ServiceError("SerializationException", _too_deep())
                stack.append((child, depth + 1))
    return data


def _too_deep() -> str:
    return f"The request body nests objects and arrays more than {MAX_JSON_DEPTH} levels deep."


def _json_object(body: bytes) -> dict[str, Any]:
    data = _loads(body)
    if not isinstance(data, dict):
        raise ServiceError("SerializationException", "The request body must be a JSON object.")
    return data


def parse_cbor(operation: OperationModel, body: bytes) -> dict[str, Any]:
    """Smithy RPC v2 CBOR: the body is the input structure, CBOR-encoded (botocore's own decoder)."""
    from botocore.parsers import RpcV2CBORParser

    shape = operation.input_shape
    if shape is None or not body:
        return {}
    try:
        parsed = RpcV2CBORParser().parse({"body": body, "headers": {}, "status_code": 200}, shape)
    except Exception as exc:
        raise ServiceError("SerializationException", f"The request body is not valid CBOR: {exc}") from exc
    parsed.pop("ResponseMetadata", None)
    return parsed
