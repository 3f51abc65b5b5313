"""Serialize an operation's output (or an error) in the service's protocol, driven by the shapes.

Each ``serialize_*`` returns ``(status, headers, body)``. Members a provider returns that the
output shape does not know are dropped, so internal fields never leak onto the wire.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any
from xml.sax.saxutils import escape as _escape

from botocore.model import OperationModel, Shape

from opensage.errors import ServiceError

Response = tuple[int, dict[str, str], bytes]


def _epoch(value: dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return round(value.timestamp(), 3)


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _to_json(shape: Shape, value: Any) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                out[name] = _to_json(member, value[name])
        return out
    if kind == "list":
        return [_to_json(shape.member, v) for v in value]
    if kind == "map":
        return {k: _to_json(shape.value, v) for k, v in value.items()}
    if kind == "timestamp":
        return _epoch(value) if isinstance(value, dt.datetime) else value
    if kind == "blob":
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode()
    return value


def _json_body(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def serialize_json(operation: OperationModel, output: dict[str, Any], request_id: str) -> Response:
    shape = operation.output_shape
    data = _to_json(shape, output or {}) if shape is not None else {}
    version = operation.service_model.metadata.get("jsonVersion", "1.1")
    headers = {"content-type": f"application/x-amz-json-{version}", "x-amzn-requestid": request_id}
    return 200, headers, _json_body(data)


def serialize_json_error(error: ServiceError, request_id: str, json_version: str = "1.1") -> Response:
    body = {"__type": error.code, "message": error.message, **error.fields}
    headers = {
        "content-type": f"application/x-amz-json-{json_version}",
        "x-amzn-requestid": request_id,
        "x-amzn-errortype": error.code,
        **error.headers,
    }
    return error.status, headers, _json_body(body)


# --- REST-JSON ----------------------------------------------------------------------------------


def serialize_rest_json(operation: OperationModel, output: dict[str, Any], request_id: str) -> Response:
    shape = operation.output_shape
    headers = {"x-amzn-requestid": request_id}
    status = int(operation.http.get("responseCode", 200))  # InvokeEndpointAsync answers 202
    if shape is None:
        return status, headers, b""
    payload_name = shape.serialization.get("payload")
    body_members: dict[str, Any] = {}
    for name, member in shape.members.items():
        value = output.get(name)
        if value is None:
            continue
        location = member.serialization.get("location")
        if location == "header":
            headers[member.serialization.get("name", name).lower()] = str(value)
        elif name != payload_name:
            body_members[name] = value
    if payload_name:
        value = output.get(payload_name)
        member = shape.members[payload_name]
        if member.type_name in ("blob", "string"):
            body = value.encode() if isinstance(value, str) else bytes(value or b"")
        else:
            body = _json_body(_to_json(member, value or {}))
            headers.setdefault("content-type", "application/json")
        return status, headers, body
    headers["content-type"] = "application/json"
    return status, headers, _json_body(_to_json(shape, body_members))


def serialize_rest_json_error(error: ServiceError, request_id: str) -> Response:
    body = {"__type": error.code, "message": error.message, **error.fields}
    headers = {
        "content-type": "application/json",
        "x-amzn-requestid": request_id,
        "x-amzn-errortype": error.code,
        **error.headers,
    }
    return error.status, headers, _json_body(body)


# --- query (XML responses) ----------------------------------------------------------------------


# Characters XML 1.0 cannot carry, not even as references: written as the text \uXXXX instead.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: str) -> str:
    """``text`` for an XML element: markup escaped, characters XML cannot hold spelled out."""
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", _escape(text))


def _xml_scalar(shape: Shape, value: Any) -> str:
    kind = shape.type_name
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp" and isinstance(value, dt.datetime | int | float):
        return _iso(value if isinstance(value, dt.datetime) else dt.datetime.fromtimestamp(value, dt.UTC))
    if kind == "blob":
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return base64.b64encode(raw).decode()
    return escape(str(value))


def _xml(shape: Shape, value: Any, name: str, out: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        out.append(f"<{name}>")
        _xml_members(shape, value, out)
        out.append(f"</{name}>")
    elif kind == "list":
        item_name = shape.member.serialization.get("name", "member")
        if shape.serialization.get("flattened"):
            for item in value:
                _xml(shape.member, item, name, out)
        else:
            out.append(f"<{name}>")
            for item in value:
                _xml(shape.member, item, item_name, out)
            out.append(f"</{name}>")
    elif kind == "map":
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        out.append(f"<{name}>")
        for k, v in value.items():
            out.append(f"<entry><{key_name}>{escape(str(k))}</{key_name}>")
            _xml(shape.value, v, value_name, out)
            out.append("</entry>")
        out.append(f"</{name}>")
    else:
        out.append(f"<{name}>{_xml_scalar(shape, value)}</{name}>")


def _xml_members(shape: Shape, value: dict[str, Any], out: list[str]) -> None:
    for member_name, member in shape.members.items():
        if value.get(member_name) is not None:
            _xml(member, value[member_name], member.serialization.get("name", member_name), out)


def serialize_query(operation: OperationModel, output: dict[str, Any], request_id: str) -> Response:
    service = operation.service_model
    xmlns = (
        service.metadata.get("xmlNamespace")
        or f"https://{service.endpoint_prefix}.amazonaws.com/doc/{service.api_version}/"
    )
    name = operation.name
    out = [f'<{name}Response xmlns="{xmlns}">']
    shape = operation.output_shape
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper", f"{name}Result")
        out.append(f"<{wrapper}>")
        _xml_members(shape, output or {}, out)
        out.append(f"</{wrapper}>")
    out.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>")
    headers = {"content-type": "text/xml", "x-amzn-requestid": request_id}
    return 200, headers, "".join(out).encode()


def serialize_query_error(error: ServiceError, request_id: str, xmlns: str = "") -> Response:
    kind = "Sender" if error.sender_fault else "Receiver"
    ns = f' xmlns="{xmlns}"' if xmlns else ""
    body = (
        f"<ErrorResponse{ns}><Error><Type>{kind}</Type><Code>{escape(error.code)}</Code>"
        f"<Message>{escape(error.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    headers = {"content-type": "text/xml", "x-amzn-requestid": request_id, **error.headers}
    return error.status, headers, body.encode()


def _cbor(value: Any, shape: Shape | None) -> bytes:
    from botocore.serialize import RpcV2CBORSerializer

    body = bytearray()
    if shape is not None:
        RpcV2CBORSerializer()._serialize_data_item(body, value, shape)
    return bytes(body)


def serialize_cbor(operation: OperationModel, output: dict[str, Any], request_id: str) -> Response:
    shape = operation.output_shape
    data = {k: v for k, v in (output or {}).items() if shape is not None and k in shape.members and v is not None}
    headers = {"content-type": "application/cbor", "smithy-protocol": "rpc-v2-cbor", "x-amzn-requestid": request_id}
    return 200, headers, _cbor(data, shape) if shape is not None else b""


def serialize_cbor_error(error: ServiceError, request_id: str) -> Response:
    from botocore.model import MapShape, ShapeResolver

    string_map = MapShape(
        "ErrorBody",
        {"type": "map", "key": {"shape": "S"}, "value": {"shape": "S"}},
        ShapeResolver({"S": {"type": "string"}}),
    )
    body = _cbor({"__type": error.code, "message": error.message}, string_map)
    headers = {
        "content-type": "application/cbor",
        "smithy-protocol": "rpc-v2-cbor",
        "x-amzn-requestid": request_id,
        "x-amzn-errortype": error.code,
        **error.headers,
    }
    return error.status, headers, body
