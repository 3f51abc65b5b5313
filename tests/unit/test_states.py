"""The status tables and transitions, applied through the store's compare-and-set."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from opensage import states
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore, open_store

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    s = open_store(f"sqlite:///{tmp_path / 'db'}", tmp_path / "master.key")
    yield s
    s.close()


def _job(store: SqlStore, name: str = "job") -> None:
    data = {"TrainingJobName": name, "TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"}
    store.create_resource(Resource("training-job", name, f"arn:{name}", "InProgress", T0, T0, data))


def test_job_tables_end_in_terminal_statuses() -> None:
    for kind in ("training-job", "processing-job", "transform-job"):
        assert states.allowed(kind, "InProgress", "Stopping") and states.allowed(kind, "Stopping", "Stopped")
        for final in states.TERMINAL_JOB_STATUSES:
            assert not any(states.allowed(kind, final, other) for other in states.JobStatus)
        assert states.allowed(kind, "Stopping", "Completed")  # a job may end before its stop takes effect
        assert not states.allowed(kind, "Stopping", "InProgress")
    assert states.allowed("endpoint", "InService", "SystemUpdating")
    assert states.allowed("endpoint", "SystemUpdating", "InService")
    assert not states.allowed("endpoint", "Deleting", "InService")


def test_a_transition_moves_status_document_and_secondary_together(store: SqlStore) -> None:
    _job(store)
    later = T0 + dt.timedelta(seconds=5)
    row = store.modify_resource(
        "training-job", "job", states.transition("training-job", "Stopping", later, secondary="Stopping"), now=later
    )
    assert row.status == "Stopping" and row.data["TrainingJobStatus"] == "Stopping"
    assert row.data["SecondaryStatus"] == "Stopping" and row.data["LastModifiedTime"] == later.timestamp()
    assert row.data["SecondaryStatusTransitions"][-1]["StatusMessage"] == "Stopping the training job"
    with pytest.raises(states.IllegalTransition, match="is Stopping; it cannot become InProgress"):
        store.modify_resource("training-job", "job", states.transition("training-job", "InProgress", later), now=later)
    done = store.modify_resource(
        "training-job", "job", states.transition("training-job", "Stopped", later, secondary="Stopped"), now=later
    )
    assert done.data["SecondaryStatusTransitions"][-1]["EndTime"] == later.timestamp()


def test_a_stop_racing_the_engines_saves_loses_nothing(store: SqlStore) -> None:
    """The engine saves its handle and moves to Training while a stop request comes in: every write stays."""
    for round_ in range(10):
        name = f"race-{round_}"
        _job(store, name)
        gate = threading.Barrier(3)

        def engine_save(job: str = name, barrier: threading.Barrier = gate) -> None:
            barrier.wait()
            store.modify_resource(
                "training-job", job, states.transition("training-job", None, T0, fields={"_Handle": {"pid": 7}}), now=T0
            )
            store.modify_resource(
                "training-job", job, states.transition("training-job", None, T0, secondary="Training"), now=T0
            )

        def stop(job: str = name, barrier: threading.Barrier = gate) -> None:
            barrier.wait()
            change = states.transition("training-job", "Stopping", T0, only_from=frozenset({"InProgress"}))
            store.modify_resource("training-job", job, change, now=T0)

        threads = [threading.Thread(target=f) for f in (engine_save, stop)]
        for t in threads:
            t.start()
        gate.wait()
        for t in threads:
            t.join()
        row = store.get_resource("training-job", name)
        assert row is not None
        assert row.data["_Handle"] == {"pid": 7} and row.status == "Stopping"
        assert row.data["TrainingJobStatus"] == "Stopping" and row.data["SecondaryStatus"] == "Training"
