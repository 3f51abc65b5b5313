"""IP Insights' model in NumPy: entity hashing, IP address bits, the encoder, and the dot products it scores.

An entity id is hashed (BLAKE2b, stable across processes) into one of ``num_entity_vectors``
embedding rows. An IP address (IPv4, or IPv6; IPv4 as its IPv4-mapped IPv6 form) becomes its 128
bits as +-1 values; the encoder is a linear layer to ``vector_dim`` followed by
``num_ip_encoder_layers`` ReLU + linear layers. The score of a pair is the dot product of the two
vectors: large for an entity's usual addresses, small (often negative) for unusual ones.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence

import numpy as np


class AddressError(ValueError):
    """A value that is not an IP address."""


def entity_index(entities: Sequence[str], buckets: int) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(e.encode(), digest_size=8).digest(), "little") % buckets for e in entities),
        dtype=np.int64,
        count=len(entities),
    )


def address_bits(addresses: Sequence[str]) -> np.ndarray:
    """An ``[n, 128]`` float32 matrix of +-1 bits, one row per address.

    Raises:
        AddressError: naming the first value that is not an IPv4 or IPv6 address.
    """
    values = np.empty(len(addresses), dtype=object)
    for i, text in enumerate(addresses):
        try:
            ip = ipaddress.ip_address(text.strip())
        except ValueError:
            raise AddressError(f"{text.strip()!r} (row {i + 1}) is not an IPv4 or IPv6 address") from None
        values[i] = (ip if isinstance(ip, ipaddress.IPv6Address) else ipaddress.IPv6Address(f"::ffff:{ip}")).packed
    raw = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(addresses), 16)
    return np.unpackbits(raw, axis=1).astype(np.float32) * 2.0 - 1.0


def encode(layers: Sequence[tuple[np.ndarray, np.ndarray]], bits: np.ndarray) -> np.ndarray:
    """The IP encoder: ``layers`` of (weight ``[in, out]``, bias), ReLU between them."""
    h = bits
    for i, (w, b) in enumerate(layers):
        if i:
            h = np.maximum(h, 0.0)
        h = h @ w + b
    return h
