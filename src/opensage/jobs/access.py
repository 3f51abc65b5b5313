"""What the code a job runs needs to call the platform back: a key of its own, the endpoints, the job's ARN.

A training or processing job that runs the user's code (script mode, an entry point of its own) and
is not network-isolated gets, as on SageMaker where a job holds its execution role's credentials:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` of a key made for it, ``AWS_DEFAULT_REGION``, the
``AWS_ENDPOINT_URL_<SERVICE>`` of every service the platform serves (so boto3, the SageMaker SDK's
``load_run()`` and the MLflow plugin reach the platform) and ``TRAINING_JOB_ARN``. The key is deleted
when the job ends (:meth:`JobAccess.watch`, a store watcher) and, for jobs that ended while no server
ran, when the next one starts (:meth:`JobAccess.sweep`). Built-in algorithms run none of the user's
code and get no key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping

from opensage.compute.base import JobSpec
from opensage.errors import NotFound
from opensage.identity import create_access_key
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore

log = logging.getLogger(__name__)
DESCRIPTION = "job:"  # a job's key is described "job:<kind>/<name>"
JOB_KINDS = ("training-job", "processing-job")
ENDED = ("Completed", "Failed", "Stopped")


class JobAccess:
    def __init__(
        self,
        store: SqlStore,
        account_id: str,
        endpoints: Mapping[str, str],
        forget: Callable[[str], None] = lambda _key: None,
    ) -> None:
        self.forget = forget  # what drops a deleted key from the verifier's cache
        self.store = store
        self.account_id = account_id
        self.endpoints = dict(endpoints)  # the variables that point clients at the platform

    def grant(self, kind: str, name: str, arn: str) -> dict[str, str]:
        """Make the job's key; the variables its containers get."""
        key = create_access_key(self.store, self.account_id, description=f"{DESCRIPTION}{kind}/{name}")
        env = {**self.endpoints, "AWS_ACCESS_KEY_ID": key.access_key_id, "AWS_SECRET_ACCESS_KEY": key.secret_access_key}
        if kind == "training-job":
            env["TRAINING_JOB_ARN"] = arn
        return env

    def revoke(self, kind: str, name: str) -> int:
        """Delete the keys made for a job; how many."""
        gone = 0
        for key in self.store.list_access_keys():
            if key.description == f"{DESCRIPTION}{kind}/{name}":
                with contextlib.suppress(NotFound):
                    self.store.delete_access_key(key.access_key_id)
                    gone += 1
                self.forget(key.access_key_id)
        return gone

    def watch(self, before: Resource | None, after: Resource) -> None:
        if after.kind in JOB_KINDS and after.status in ENDED and (before is None or before.status not in ENDED):
            try:
                self.revoke(after.kind, after.name)
            except Exception:  # a watcher never fails the write that woke it; the next sweep retries
                log.exception("the key of %s %s was not deleted", after.kind, after.name)

    def sweep(self) -> int:
        """Delete the keys of jobs that have ended or are gone; how many."""
        gone = 0
        for key in self.store.list_access_keys():
            if not key.description.startswith(DESCRIPTION):
                continue
            kind, _, name = key.description[len(DESCRIPTION) :].partition("/")
            job = self.store.get_resource(kind, name) if kind in JOB_KINDS else None
            if job is None or job.status in ENDED:
                with contextlib.suppress(NotFound):
                    self.store.delete_access_key(key.access_key_id)
                    gone += 1
        return gone


def with_env(spec: JobSpec, env: Mapping[str, str]) -> JobSpec:
    """``spec`` with ``env`` added to every container's variables (the job's own ones win)."""
    containers = tuple(dataclasses.replace(c, env={**env, **c.env}) for c in spec.containers)
    return dataclasses.replace(spec, containers=containers)
