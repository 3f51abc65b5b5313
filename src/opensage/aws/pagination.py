"""Generic pagination for list operations whose provider returns every item.

An operation qualifies when its input has a token and a page-size member and its output has the
token and exactly one list member. Providers that page by themselves return a token, and are left
alone.
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
)


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        kind, _, value = text.partition(":")
        if kind == "offset" and value.isdigit():
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ServiceError(
        "ValidationException",
        f"The pagination token '{token[:64]}' is not valid; pass back a token that an earlier response returned.",
    )


def paginate(op: OperationModel, params: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    in_shape, out_shape = op.input_shape, op.output_shape
    if in_shape is None or out_shape is None or not isinstance(output, dict):
        return output
    for token_in, size_in, token_out, flag, default in _STYLES:
        if token_in not in in_shape.members or size_in not in in_shape.members or token_out not in out_shape.members:
            continue
        lists = [n for n, m in out_shape.members.items() if m.type_name == "list"]
        if len(lists) != 1 or output.get(token_out) or lists[0] not in output:
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
