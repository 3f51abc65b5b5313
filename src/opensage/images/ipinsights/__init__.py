"""OpenSage's built-in IP Insights: SageMaker's ``ipinsights`` image, on PyTorch.

``python -m opensage.images.ipinsights train`` learns, from ``(entity, IP address)`` pairs in CSV,
an embedding per entity (hashed into ``num_entity_vectors`` buckets) and an encoder of IP addresses
into the same ``vector_dim`` space, so that an entity's usual addresses have a large dot product
with it (:mod:`.train`). :mod:`.serve` answers each pair's ``dot_product`` (and the embeddings in
verbose mode). The ``validation`` channel is scored as ``validation:discriminator_auc``.
"""

from __future__ import annotations

from opensage.images import tabular


def metric_definitions() -> list[dict[str, str]]:
    return tabular.quality_definitions([("validation", "discriminator_auc", "discriminator_auc")])


def tuning_metric_names() -> tuple[str, ...]:
    return ("validation:discriminator_auc",)


__all__ = ["metric_definitions", "tuning_metric_names"]
