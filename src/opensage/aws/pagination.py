"""Generic pagination for list operations whose provider returns every item.

An operation qualifies when its input has a token and a page-size member and its output has the
token and exactly one list member. Providers that page by themselves (the SageMaker List*
operations, by key in SQL) always put the output token in their answer, None on the last page, and
are left alone. Every token, generic or a provider's, is ``<kind>:<value>`` in URL-safe base64
(:func:`encode_token`, :func:`decode_token`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from botocore.model import OperationModel

from opensage.errors import ServiceError

# (input token, input page size, output token, output truncation flag, default page size)
_STYLES = (
    ("NextToken", "MaxResults", "NextToken", None, 10),
    ("nextToken", "limit", "nextToken", None, 50),
    ("Marker", "MaxItems", "Marker", "IsTruncated", 100),
    ("Marker", "Limit", "NextMarker", "Truncated", 100),  # KMS
)


def encode_token(kind: str, value: str) -> str:
    """A pagination token: ``<kind>:<value>`` in URL-safe base64."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def invalid_token(token: str) -> ServiceError:
    return ServiceError(
        "ValidationException",
        f"The pagination token '{token[:64]}' is not valid; pass back a token that an earlier response returned.",
    )


def decode_token(token: str, kind: str) -> str:
    """The value of a token that :func:`encode_token` made with ``kind``.

    Raises:
        ServiceError: ``ValidationException`` when ``token`` is not such a token.
    """
    try:
        found, sep, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if found == kind and sep:
            return value
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise invalid_token(token)


def _encode(offset: int) -> str:
    return encode_token("offset", str(offset))


def _decode(token: str) -> int:
    value = decode_token(token, "offset")
    if not value.isdigit():
        raise invalid_token(token)
    return int(value)


def paginate(op: OperationModel, params: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    in_shape, out_shape = op.input_shape, op.output_shape
    if in_shape is None or out_shape is None or not isinstance(output, dict):
        return output
    for token_in, size_in, token_out, flag, default in _STYLES:
        if token_in not in in_shape.members or size_in not in in_shape.members or token_out not in out_shape.members:
            continue
        lists = [n for n, m in out_shape.members.items() if m.type_name == "list"]
        if token_out in output:  # the provider paged: drop its None on the last page
            return {k: v for k, v in output.items() if v is not None or k != token_out}
        if len(lists) != 1 or lists[0] not in output:
            return output
        items = output[lists[0]]
        start = _decode(params[token_in]) if params.get(token_in) else 0
        size = params.get(size_in) or default
        page = items[start : start + size]
        out = {**output, lists[0]: page}
        more = start + size < len(items)
        if more:
            out[token_out] = _encode(start + size)
        if flag:
            out[flag] = more
        return out
    return output
