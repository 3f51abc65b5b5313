"""What jobs read off their image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.images.container import ContainerImage
from opensage.images.registry import BuiltinImage


def metric_definitions(desc: Mapping[str, Any], image: BuiltinImage | ContainerImage | None) -> list[dict[str, str]]:
    """A training job's MetricDefinitions, else its image's standard ones (the built-in algorithm's)."""
    given = desc["AlgorithmSpecification"].get("MetricDefinitions")
    if given or image is None:
        return list(given or [])
    return image.metric_definitions(desc.get("HyperParameters") or {})
