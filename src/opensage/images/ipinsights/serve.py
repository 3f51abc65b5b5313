"""IP Insights' model server: each (entity, IP address) pair's ``dot_product``, as the container answers it.

Requests: ``text/csv`` (``entity_id, ip_address`` per line), JSON (``{"instances": [{"features":
["entity", "1.2.3.4"]}, {"data": {"features": {"values": ["entity", "1.2.3.4"]}}}]}``) or JSON Lines
(one such instance per line). Answers: JSON ``{"predictions": [{"dot_product": 0.7}, ...]}`` or JSON
Lines; with ``verbose=True`` in the Accept header each answer also has the ``entity_embedding`` and
``ip_embedding``. As with the container, RecordIO-protobuf is not taken.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from opensage.images import tabular
from opensage.images.ipinsights.model import AddressError, address_bits, encode, entity_index
from opensage.images.ipinsights.train import read_pairs
from opensage.images.tabular import ClientError, PredictError

__all__ = ["PredictError", "load_model", "predict"]


def load_model(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return tabular.load_model_file(Path(model_dir), "ipinsights", "an IP Insights")


def _instance(item: Any) -> tuple[str, str]:
    values = item.get("data", {}).get("features", {}).get("values") if isinstance(item, dict) and "data" in item else (
        item.get("features") if isinstance(item, dict) else item
    )
    if not isinstance(values, list) or len(values) != 2:
        raise PredictError('each instance must be {"features": ["<entity id>", "<ip address>"]}')
    return str(values[0]), str(values[1])


def _pairs(body: bytes, content_type: str) -> tuple[list[str], list[str]]:
    media = (content_type or "text/csv").split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if media in ("text/csv", "csv"):
        try:
            return read_pairs(text, "request")
        except ClientError as exc:
            raise PredictError(str(exc)) from exc
    items: Any
    try:
        if media in ("application/jsonlines", "application/x-jsonlines"):
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif media in ("application/json", "json"):
            doc = json.loads(text)
            items = doc.get("instances") if isinstance(doc, dict) else doc
        else:
            raise PredictError(f"Content type {media} is not supported; use text/csv, application/json or "
                               "application/jsonlines.")
    except ValueError as exc:
        if isinstance(exc, PredictError):
            raise
        raise PredictError(f"Unable to read the {media} request: {exc}") from exc
    if not isinstance(items, list):
        raise PredictError('expected {"instances": [...]}')
    pairs = [_instance(i) for i in items]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def predict(
    model: tuple[dict[str, Any], dict[str, Any]], body: bytes, content_type: str, accept: str
) -> tuple[bytes, str]:
    meta, arrays = model
    entities, addresses = _pairs(body, content_type)
    if not entities:
        raise PredictError("The request has no (entity, IP address) pairs to score.")
    try:
        bits = address_bits(addresses)
    except AddressError as exc:
        raise PredictError(str(exc)) from exc
    layers = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(int(meta["layers"]))]
    e = arrays["entities"][entity_index(entities, int(meta["num_entity_vectors"]))]
    ip = encode(layers, bits)
    dots = (e * ip).sum(axis=1)
    verbose = "verbose=true" in (accept or "").replace(" ", "").lower()
    rows: list[dict[str, Any]] = []
    for i, dot in enumerate(dots):
        row: dict[str, Any] = {"dot_product": float(dot)}
        if verbose:
            row["entity_embedding"], row["ip_embedding"] = e[i].astype(np.float32), ip[i].astype(np.float32)
        rows.append(row)
    media = (accept or "").split(";")[0].strip().lower()
    if media in ("application/x-recordio-protobuf", "text/csv"):
        raise PredictError(f"Accept {media} is not supported; use application/json or application/jsonlines.")
    return tabular.answer(rows, accept, ["dot_product"])
