"""Ground Truth's parts as the platform assembles them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opensage.labeling.autolabel import AutoLabeler
from opensage.labeling.jobs import LabelingJobs
from opensage.labeling.portal import Portal
from opensage.store.sql import SqlStore

__all__ = ["LabelingJobs", "Portal", "build"]


def build(
    store: SqlStore, clock: Callable[[], dt.datetime], s3: Any, provider: Any, api_url: str
) -> tuple[LabelingJobs, Portal]:
    """The labeling jobs' controller (its automated labeling acting through ``provider``, the SageMaker
    provider) and the worker portal; the provider serves the jobs' API, with the portal under ``api_url``."""
    jobs = LabelingJobs(store, clock, s3)
    jobs.autolabel = AutoLabeler(provider, jobs)
    provider.labeling = jobs
    provider.labeling_url = api_url
    return jobs, Portal(store, jobs, s3)
