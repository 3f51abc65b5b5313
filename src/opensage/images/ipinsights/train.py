"""IP Insights training: the container's hyperparameters, negative sampling, and Adam on PyTorch.

Each epoch shuffles the ``train`` pairs into ``mini_batch_size`` batches. For every true pair the
batch also holds ``random_negative_sampling_rate`` pairs of its entity with a uniformly random IPv4
address and ``shuffled_negative_sampling_rate`` pairs with another pair's address from the same
batch, all labelled 0; the loss is the logistic loss of the dot products (Adam with
``learning_rate`` and ``weight_decay``). A ``validation`` channel is scored each epoch by how well the
dot product tells its pairs from shuffled ones: ``validation:discriminator_auc``.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from typing import Any

import numpy as np

from opensage.compute import cores
from opensage.images import tabular
from opensage.images.ipinsights.model import AddressError, address_bits, encode, entity_index
from opensage.images.tabular import ClientError, Job, Param

log = logging.getLogger(__name__)
SCHEMA: dict[str, Param] = {
    "num_entity_vectors": Param("integer", required=True, minimum=1, maximum=250_000_000),
    "vector_dim": Param("integer", required=True, minimum=4, maximum=4096),
    "batch_metrics_publish_interval": Param("integer", 1000, minimum=1),
    "epochs": Param("integer", 10, minimum=1),
    "learning_rate": Param("number", 0.001, minimum=1e-6, maximum=10.0),
    "mini_batch_size": Param("integer", 10000, minimum=1, maximum=500_000),
    "num_ip_encoder_layers": Param("integer", 1, minimum=0, maximum=100),
    "random_negative_sampling_rate": Param("integer", 1, minimum=0, maximum=500),
    "shuffled_negative_sampling_rate": Param("integer", 1, minimum=0, maximum=500),
    "weight_decay": Param("number", 0.00001, minimum=0.0, maximum=10.0),
}


def read_pairs(text: str, where: str) -> tuple[list[str], list[str]]:
    """The (entity, address) columns of CSV ``text``.

    Raises:
        ClientError: a row without exactly two columns.
    """
    entities, addresses = [], []
    for n, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ClientError(f"{where}: row {n} has {len(row)} columns; IP Insights reads two: entity_id, ip_address.")
        entities.append(row[0].strip())
        addresses.append(row[1].strip())
    return entities, addresses


def load(job: Job, channel: str) -> tuple[list[str], np.ndarray]:
    media = str((job.channels.get(channel) or {}).get("ContentType") or "text/csv").split(";")[0].strip().lower()
    if media not in ("text/csv", "csv"):
        raise ClientError(f"Channel '{channel}': content type {media} is not supported; IP Insights reads text/csv.")
    directory = job.layout.channel_dir(channel)
    entities: list[str] = []
    addresses: list[str] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        e, a = read_pairs(path.read_text(errors="replace"), f"{channel}/{path.name}")
        entities += e
        addresses += a
    if not entities:
        raise ClientError(f"No training data found in channel '{channel}'.")
    try:
        bits = address_bits(addresses)
    except AddressError as exc:
        raise ClientError(f"Channel '{channel}': {exc}") from exc
    log.info("Channel '%s': %d (entity, IP address) pairs", channel, len(entities))
    return entities, bits


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ClientError(
            "The IP Insights image trains on PyTorch, which is not installed on this OpenSage host; "
            "install it with: pip install 'opensage[pytorch]'."
        ) from None
    return torch


def train(job: Job) -> None:
    started = time.monotonic()
    hps = tabular.validate(job.hyperparameters, SCHEMA, "IP Insights")
    tabular.check_channels(job.channels, ("train", "validation"), ("train",), "IP Insights")
    entities, bits = load(job, "train")
    buckets, dim = int(hps["num_entity_vectors"]), int(hps["vector_dim"])
    index = entity_index(entities, buckets)
    torch = _torch()
    torch.set_num_threads(max(1, cores.usable_cores()))
    torch.manual_seed(0)
    embeddings = torch.nn.Embedding(buckets, dim)
    torch.nn.init.normal_(embeddings.weight, std=0.1)
    sizes = [128] + [dim] * (1 + int(hps["num_ip_encoder_layers"]))
    linears = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
    params = [*embeddings.parameters(), *linears.parameters()]
    optimizer = torch.optim.Adam(params, lr=hps["learning_rate"], weight_decay=hps["weight_decay"])
    rng = np.random.default_rng(0)
    x_bits, x_index = torch.from_numpy(bits), torch.from_numpy(index)
    validation = load(job, "validation") if "validation" in job.channels else None

    def encoder(b: Any) -> Any:
        h = b
        for i, layer in enumerate(linears):
            h = layer(torch.relu(h) if i else h)
        return h

    batch = int(hps["mini_batch_size"])
    random_rate, shuffled_rate = int(hps["random_negative_sampling_rate"]), int(hps["shuffled_negative_sampling_rate"])
    for epoch in range(int(hps["epochs"])):
        order = torch.from_numpy(rng.permutation(len(entities)))
        total, seen = 0.0, 0
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            e, b = x_index[rows], x_bits[rows]
            ents, ips, labels = [e], [b], [torch.ones(len(rows))]
            for _ in range(random_rate):
                random_ips = torch.from_numpy(_random_ipv4_bits(rng, len(rows)))
                ents.append(e)
                ips.append(random_ips)
                labels.append(torch.zeros(len(rows)))
            for _ in range(shuffled_rate):
                ents.append(e)
                ips.append(b[torch.from_numpy(rng.permutation(len(rows)))])
                labels.append(torch.zeros(len(rows)))
            logits = (embeddings(torch.cat(ents)) * encoder(torch.cat(ips))).sum(dim=1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.cat(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(rows), seen + len(rows)
        log.info("Epoch %d: binary cross entropy %.5f", epoch, total / max(seen, 1))
        if validation is not None:
            job.quality("validation", "discriminator_auc", _auc(embeddings, encoder, validation, buckets, rng, torch),
                        loss=False, epoch=epoch)
    layers = [(lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy()) for lin in linears]
    arrays = {"entities": embeddings.weight.detach().numpy()}
    for i, (w, b) in enumerate(layers):
        arrays[f"w{i}"], arrays[f"b{i}"] = w, b
    meta = {"algorithm": "ipinsights", "num_entity_vectors": buckets, "vector_dim": dim, "layers": len(layers)}
    log.info("Trained on %d pairs in %.2f s", len(entities), time.monotonic() - started)
    tabular.save_model(job.layout.model_dir, meta, arrays)
    if validation is not None:
        ents, vbits = validation
        true = (arrays["entities"][entity_index(ents, buckets)] * encode(layers, vbits)).sum(axis=1)
        log.info("Validation: mean dot product %.4f over %d pairs", float(true.mean()), len(ents))


def _random_ipv4_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly random IPv4 addresses as IPv4-mapped IPv6 bits (+-1)."""
    raw = np.zeros((n, 16), dtype=np.uint8)
    raw[:, 10:12] = 0xFF
    raw[:, 12:] = rng.integers(0, 256, size=(n, 4), dtype=np.uint8)
    return np.unpackbits(raw, axis=1).astype(np.float32) * 2.0 - 1.0


def _auc(embeddings: Any, encoder: Any, validation: tuple[list[str], np.ndarray], buckets: int,
         rng: np.random.Generator, torch: Any) -> float:
    """How well the dot product separates the validation pairs from the same entities with shuffled addresses."""
    from sklearn.metrics import roc_auc_score

    ents, bits = validation
    index = torch.from_numpy(entity_index(ents, buckets))
    b = torch.from_numpy(bits)
    with torch.no_grad():
        true = (embeddings(index) * encoder(b)).sum(dim=1).numpy()
        fake = (embeddings(index) * encoder(b[torch.from_numpy(rng.permutation(len(ents)))])).sum(dim=1).numpy()
    return float(roc_auc_score(np.r_[np.ones(len(true)), np.zeros(len(fake))], np.r_[true, fake]))
