"""Gunzip in memory within a bound, so a small gzip input cannot grow the algorithm's process without limit."""

from __future__ import annotations

import zlib

MAX_RATIO, RATIO_FLOOR = 100, 64 * 1024 * 1024  # as the platform's default archive quotas


def gunzip_bounded(raw: bytes) -> bytes:
    """``raw`` (one gzip member or several) gunzipped, refused past ``MAX_RATIO`` times its size beyond 64 MiB.

    Raises:
        ValueError: not valid or truncated gzip data, or it expands past the bound (a gzip bomb).
    """
    bound = max(RATIO_FLOOR, MAX_RATIO * len(raw))
    out, rest = bytearray(), raw
    while rest:  # one gzip member after another, as gzip.decompress reads them
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflate.decompress(rest, bound + 1 - len(out))
        except zlib.error as exc:
            raise ValueError(f"not valid gzip data ({exc})") from exc
        if len(out) > bound:
            raise ValueError(
                f"expands more than {MAX_RATIO} times ({len(raw)} bytes to over {bound} bytes); "
                "OpenSage refuses it as a gzip bomb"
            )
        if not inflate.eof:
            raise ValueError("truncated gzip data")
        rest = inflate.unused_data
    return bytes(out)
