"""The AWS front door: route a request to its service and operation, authenticate, parse, validate,
dispatch to the provider (through the :class:`~opensage.aws.dispatch.DispatchTable` built at start-up),
paginate, serialize. The only place where exceptions become HTTP.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote

from botocore.model import OperationModel
from starlette.types import Receive, Scope, Send

from opensage.aws import parser, serializer, sigv4
from opensage.aws.auth import Authenticator, Caller
from opensage.aws.context import RequestContext
from opensage.aws.dispatch import DispatchTable, Method
from opensage.aws.pagination import paginate
from opensage.aws.specs import ServiceSpec, Specs
from opensage.aws.validate import validate
from opensage.errors import InternalFailure, ServiceError

log = logging.getLogger(__name__)

# SigV4 failure kind -> (code, status) per protocol family.
_AUTH_ERRORS_JSON = {
    "missing": ("MissingAuthenticationTokenException", 403),
    "incomplete": ("IncompleteSignatureException", 400),
    "unknown_key": ("UnrecognizedClientException", 403),
    "mismatch": ("InvalidSignatureException", 403),
    "expired": ("InvalidSignatureException", 403),
    "future": ("InvalidSignatureException", 403),
    "payload": ("InvalidSignatureException", 400),
}
_AUTH_ERRORS_QUERY = {
    "missing": ("MissingAuthenticationToken", 403),
    "incomplete": ("IncompleteSignature", 400),
    "unknown_key": ("InvalidClientTokenId", 403),
    "mismatch": ("SignatureDoesNotMatch", 403),
    "expired": ("SignatureDoesNotMatch", 403),
    "future": ("SignatureDoesNotMatch", 403),
    "payload": ("SignatureDoesNotMatch", 400),
}


# Services whose model names an error differently from the shared validation layer.
_CODE_OVERRIDES = {"sagemaker-runtime": {"ValidationException": "ValidationError"}}


@dataclass(slots=True)
class Routed:
    spec: ServiceSpec
    protocol: str
    operation: OperationModel
    labels: Mapping[str, str]
    form: Mapping[str, str]


class Gateway:
    """ASGI app serving every AWS service in ``providers`` (botocore name -> provider object).

    The providers' :class:`DispatchTable` is built here, once (``table``, which the console shares); a
    provider method that names no operation fails the construction (``DispatchError``).
    """

    def __init__(
        self,
        specs: Specs,
        providers: Mapping[str, object],
        authenticator: Authenticator,
        account_id: str,
        max_body_bytes: int,
    ) -> None:
        self.specs = specs
        self.table = DispatchTable.build(specs, providers)
        self.auth = authenticator
        self.account_id = account_id
        self.max_body = max_body_bytes
        self._invoke = _InvokeRoute.build(self.table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        protocol = "json"
        routed: Routed | None = None
        try:
            body = await self._read_body(receive, headers)
            if self._invoke is not None and self._invoke.matches(scope, headers):
                routed, protocol = self._invoke.routed, "rest-json"
                status, out_headers, out_body = await self._handle_invoke(scope, headers, body, request_id, started)
            else:
                routed = self._route(scope, headers, body)
                protocol = routed.protocol
                status, out_headers, out_body = await self._handle(scope, headers, body, routed, request_id, started)
        except ServiceError as err:
            status, out_headers, out_body = self._error(err, protocol, routed, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            status, out_headers, out_body = self._error(InternalFailure(request_id), protocol, routed, request_id)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode("latin-1", "replace")) for k, v in out_headers.items()]
                + [(b"content-length", str(len(out_body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out_body})
        if log.isEnabledFor(logging.DEBUG):
            op = routed.operation.name if routed else "?"
            log.debug(
                "%s %s %s %d %.1fms", request_id, op, scope["path"], status, (time.perf_counter() - started) * 1e3
            )

    async def _read_body(self, receive: Receive, headers: Mapping[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise ServiceError(
                "RequestEntityTooLarge",
                f"The request body of {declared} bytes exceeds the limit of {self.max_body} bytes.",
                413,
            )
        message = await receive()
        if not message.get("more_body"):  # the usual case: the whole body in one message, no copy
            body: bytes = message.get("body", b"")
            if len(body) > self.max_body:
                raise ServiceError(
                    "RequestEntityTooLarge", f"The request body exceeds the limit of {self.max_body} bytes.", 413
                )
            return body
        chunks = [message.get("body", b"")]
        size = len(chunks[0])
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise ServiceError(
                    "RequestEntityTooLarge", f"The request body exceeds the limit of {self.max_body} bytes.", 413
                )
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    # --- routing --------------------------------------------------------------------------------

    def _route(self, scope: Scope, headers: Mapping[str, str], body: bytes) -> Routed:
        if headers.get("smithy-protocol") == "rpc-v2-cbor":
            return self._route_cbor(scope["path"])
        target = headers.get("x-amz-target")
        if target:
            prefix, _, op_name = target.rpartition(".")
            spec = self.specs.by_target.get(prefix)
            if spec is None:
                raise ServiceError("UnknownOperationException", f"Unknown X-Amz-Target service prefix '{prefix}'.", 400)
            return Routed(spec, "json", self._operation(spec, op_name), {}, {})
        method = scope["method"]
        query_string = scope.get("query_string", b"").decode("latin-1")
        content_type = headers.get("content-type", "")
        form: dict[str, str] = {}
        if method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        elif "Action=" in query_string:
            form = dict(parse_qsl(query_string, keep_blank_values=True))
        if "Action" in form:
            return self._route_query(form, headers, query_string)
        query = parse_qs(query_string)
        # matched as sent, percent-encoded: a label may hold an encoded "/" (an ARN in /tags/{ResourceArn})
        raw = scope.get("raw_path")
        path = raw.decode("latin-1").partition("?")[0] if raw else scope["path"]
        for rest in self.specs.rest:
            match = rest.match_rest(method, path, query)
            if match is not None:
                return Routed(rest, "rest-json", rest.model.operation_model(match[0]), match[1], {})
        raise ServiceError(
            "UnknownOperationException",
            f"No AWS operation matches {method} {scope['path']}: send X-Amz-Target (JSON services), an Action "
            f"form field (query services) or a path of {', '.join(s.name for s in self.specs.rest)}.",
            404,
        )

    def _route_cbor(self, path: str) -> Routed:
        """Smithy RPC v2: ``POST /service/<service shape>/operation/<operation>``."""
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "service" or parts[2] != "operation":
            raise ServiceError("UnknownOperationException", f"'{path}' is not /service/<name>/operation/<name>.", 404)
        spec = self.specs.by_target.get(parts[1])
        if spec is None or "smithy-rpc-v2-cbor" not in spec.protocols:
            raise ServiceError("UnknownOperationException", f"Unknown service '{parts[1]}'.", 404)
        return Routed(spec, "cbor", self._operation(spec, parts[3]), {}, {})

    def _route_query(self, form: Mapping[str, str], headers: Mapping[str, str], query_string: str) -> Routed:
        candidates = self.specs.by_version.get(form.get("Version", ""), [])
        if len(candidates) != 1:
            try:
                scope_service = sigv4.parse(headers, query_string).service
            except sigv4.SigV4Error:
                scope_service = ""
            spec = self.specs.by_signing_name.get(scope_service)
            if spec is None or "query" not in spec.protocols:
                raise ServiceError(
                    "InvalidAction",
                    f"Cannot tell which service the query request for {form['Action']} is for: "
                    "send the service's Version field.",
                    400,
                )
            candidates = [spec]
        spec = candidates[0]
        return Routed(spec, "query", self._operation(spec, form["Action"]), {}, form)

    @staticmethod
    def _operation(spec: ServiceSpec, name: str) -> OperationModel:
        op = spec.operation(name)
        if op is None:
            code = (
                "InvalidAction"
                if "query" in spec.protocols and spec.target_prefix is None
                else "UnknownOperationException"
            )
            raise ServiceError(code, f"Operation {name} is not part of the {spec.model.service_id} API.", 400)
        return op

    # --- handling -------------------------------------------------------------------------------

    async def _handle(
        self,
        scope: Scope,
        headers: Mapping[str, str],
        body: bytes,
        routed: Routed,
        request_id: str,
        received: float = 0.0,
    ) -> serializer.Response:
        query_string = scope.get("query_string", b"").decode("latin-1")
        caller = self._authenticate(scope, query_string, headers, body, routed)
        spec, op = routed.spec, routed.operation
        params = self._parse(routed, headers, caller.body, query_string)
        validate(op.input_shape, params)
        ctx = RequestContext(
            spec.name,
            op.name,
            caller.region,
            self.account_id,
            request_id,
            caller.access_key_id,
            caller.principal_arn,
            caller.user_id,
            received,
        )
        output = await self.table.require(spec.name, op.name)(ctx, params)
        output = paginate(op, params, output)
        if routed.protocol == "query":
            return serializer.serialize_query(op, output, request_id)
        if routed.protocol == "rest-json":
            return serializer.serialize_rest_json(op, output, request_id)
        if routed.protocol == "cbor":
            return serializer.serialize_cbor(op, output, request_id)
        return serializer.serialize_json(op, output, request_id)

    def _authenticate(
        self, scope: Scope, query_string: str, headers: Mapping[str, str], body: bytes, routed: Routed
    ) -> Caller:
        raw_path = scope.get("raw_path") or scope["path"].encode()
        try:
            caller = self.auth.authenticate(scope["method"], raw_path.decode("latin-1"), query_string, headers, body)
        except sigv4.SigV4Error as err:
            table = _AUTH_ERRORS_QUERY if routed.protocol == "query" else _AUTH_ERRORS_JSON
            code, status = table[err.kind]
            raise ServiceError(code, err.message, status) from err
        spec = routed.spec
        if caller.service not in (
            spec.signing_name,
            spec.model.endpoint_prefix,
            "monitoring" if spec.name == "cloudwatch" else "",
        ):
            raise ServiceError(
                _AUTH_ERRORS_QUERY["incomplete"][0] if routed.protocol == "query" else "IncompleteSignatureException",
                f"Credential should be scoped to correct service: '{spec.signing_name}'.",
            )
        return caller

    async def _handle_invoke(
        self, scope: Scope, headers: Mapping[str, str], body: bytes, request_id: str, received: float
    ) -> serializer.Response:
        """InvokeEndpoint without the generic route search, parse and dispatch: the same checks, in less time."""
        route = self._invoke
        assert route is not None
        caller = self._authenticate(scope, "", headers, body, route.routed)
        params = route.params(scope["path"], headers, caller.body)
        ctx = RequestContext(
            "sagemaker-runtime",
            "InvokeEndpoint",
            caller.region,
            self.account_id,
            request_id,
            caller.access_key_id,
            caller.principal_arn,
            caller.user_id,
            received,
        )
        return route.response(await route.method(ctx, params), request_id)

    @staticmethod
    def _parse(routed: Routed, headers: Mapping[str, str], body: bytes, query_string: str) -> dict[str, Any]:
        if routed.protocol == "query":
            return parser.parse_query(routed.operation, routed.form)
        if routed.protocol == "rest-json":
            return parser.parse_rest_json(routed.operation, routed.labels, parse_qs(query_string), headers, body)
        if routed.protocol == "cbor":
            return parser.parse_cbor(routed.operation, body)
        return parser.parse_json(routed.operation, body)

    @staticmethod
    def _error(err: ServiceError, protocol: str, routed: Routed | None, request_id: str) -> serializer.Response:
        renamed = _CODE_OVERRIDES.get(routed.spec.name, {}).get(err.code) if routed else None
        if renamed:
            err = ServiceError(renamed, err.message, err.status, sender_fault=err.sender_fault, fields=err.fields)
        if protocol == "query":
            xmlns = routed.spec.model.metadata.get("xmlNamespace", "") if routed else ""
            return serializer.serialize_query_error(err, request_id, xmlns)
        if protocol == "rest-json":
            return serializer.serialize_rest_json_error(err, request_id)
        if protocol == "cbor":
            return serializer.serialize_cbor_error(err, request_id)
        version = routed.spec.model.metadata.get("jsonVersion", "1.1") if routed else "1.1"
        return serializer.serialize_json_error(err, request_id, version)


class _InvokeRoute:
    """SageMaker Runtime's ``POST /endpoints/{EndpointName}/invocations``, the one hot path.

    Requests are authenticated exactly as every other; members are read from the URI and headers as
    the operation's model places them, and validated against it. A combination of members that once
    validated is remembered (the body's size is checked every time), since callers repeat theirs.
    Anything unusual (a query string, a target header, a form body) goes the generic way instead.
    """

    def __init__(self, routed: Routed, method: Method) -> None:
        self.routed = routed
        self.method = method
        shape = routed.operation.input_shape
        self.headers = tuple(
            (m.serialization.get("name", n).lower(), n)
            for n, m in shape.members.items()
            if m.serialization.get("location") == "header" and m.type_name == "string"
        )
        self.body_max = int(shape.members["Body"].metadata.get("max", 0)) or None
        out = routed.operation.output_shape
        self.out_headers = tuple(
            (n, m.serialization.get("name", n).lower())
            for n, m in out.members.items()
            if m.serialization.get("location") == "header"
        )
        self.out_payload = out.serialization.get("payload", "Body")
        self._valid: set[tuple[tuple[str, Any], ...]] = set()

    @classmethod
    def build(cls, table: DispatchTable) -> _InvokeRoute | None:
        spec = table.specs.services.get("sagemaker-runtime")
        handler = table.get("sagemaker-runtime", "InvokeEndpoint")
        op = spec.operation("InvokeEndpoint") if spec is not None else None
        if spec is None or op is None or handler is None or not handler.is_async:
            return None
        others = [
            name
            for name, member in op.input_shape.members.items()
            if name not in ("EndpointName", "Body")
            and not (member.serialization.get("location") == "header" and member.type_name == "string")
        ]
        if op.http.get("requestUri") != "/endpoints/{EndpointName}/invocations" or others:
            return None  # a model this fast path does not know: the generic layer serves it
        return cls(Routed(spec, "rest-json", op, {}, {}), handler.method)

    @staticmethod
    def matches(scope: Scope, headers: Mapping[str, str]) -> bool:
        path = scope["path"]
        return (
            scope["method"] == "POST"
            and path.startswith("/endpoints/")
            and path.endswith("/invocations")
            and path.count("/") == 3
            and len(path) > 23
            and not scope.get("query_string")
            and "x-amz-target" not in headers
            and "smithy-protocol" not in headers
            and not headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        )

    def response(self, output: Mapping[str, Any], request_id: str) -> serializer.Response:
        """What ``serializer.serialize_rest_json`` answers for this operation, without walking the shape."""
        headers = {"x-amzn-requestid": request_id}
        for name, wire in self.out_headers:
            value = output.get(name)
            if value is not None:
                headers[wire] = str(value)
        body = output.get(self.out_payload)
        return 200, headers, body.encode() if isinstance(body, str) else bytes(body or b"")

    def params(self, path: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        params: dict[str, Any] = {"EndpointName": unquote(path[11:-12])}
        for wire, name in self.headers:
            value = headers.get(wire)
            if value is not None:
                params[name] = value
        key = tuple(params.items())
        params["Body"] = body
        if key not in self._valid or (self.body_max is not None and len(body) > self.body_max):
            validate(self.routed.operation.input_shape, params)
            if len(self._valid) > 4096:
                self._valid.clear()
            self._valid.add(key)
        return params
