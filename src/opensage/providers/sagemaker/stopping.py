"""Stop*Job's common step: InProgress -> Stopping through the status table, or the error AWS answers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from opensage import states
from opensage.errors import NotFound, ServiceError, not_found
from opensage.store.sql import SqlStore


def to_stopping(
    store: SqlStore, clock: Callable[[], dt.datetime], kind: str, name: str, *, missing: str, refused: str
) -> None:
    """Move job ``name`` to Stopping (a training job's SecondaryStatus too).

    Raises:
        ServiceError: ``missing`` when there is no such job, ``refused`` (``{status}`` filled in) when
            it is not InProgress.
    """
    now = clock()
    change = states.transition(
        kind,
        states.JobStatus.STOPPING,
        now,
        secondary=states.SecondaryStatus.STOPPING if kind == "training-job" else None,
        only_from=frozenset({states.JobStatus.IN_PROGRESS}),
    )
    try:
        store.modify_resource(kind, name, change, now=now)
    except NotFound as exc:
        raise not_found(missing) from exc
    except states.IllegalTransition as exc:
        raise ServiceError("ValidationException", refused.format(status=exc.current)) from exc
