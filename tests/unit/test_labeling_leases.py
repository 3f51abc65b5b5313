"""Labeling leases on the controller's clock: a task not answered within TaskTimeLimitInSeconds goes to another
worker, the first one's late answer is refused, and an object is never out to more workers than it needs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from opensage.labeling import jobs as lj
from opensage.store.entities import Resource
from opensage.store.sql import open_store


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def test_an_expired_lease_goes_to_the_next_worker(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db'}", tmp_path / "master.key")
    clock = Clock()
    engine = lj.LabelingJobs(store, clock, s3=None)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/j"
    config = {"NumberOfHumanWorkersPerDataObject": 1, "TaskTimeLimitInSeconds": 60, "MaxConcurrentTaskCount": 1}
    data = {"HumanTaskConfig": config, "_TaskType": "TextMultiClass", "_Labels": ["a", "b"],
            "OutputConfig": {"S3OutputPath": "s3://out/"}, "LabelAttributeName": "label"}  # fmt: skip
    store.create_resource(Resource(lj.KIND, "j", arn, lj.IN_PROGRESS, clock.now, clock.now, data))
    for i in range(2):
        line = {"source": f"text {i}"}
        item = {"Index": i, "Order": i, "Line": line, "Released": True, "Leases": {}, "Annotations": []}
        store.create_resource(Resource(lj.ITEM_KIND, lj.item_name("j", i), f"{arn}/object/{i}", lj.PENDING,
                                       clock.now, clock.now, item, parent_arn=arn))  # fmt: skip
    first = engine.next_task("j", "w1")
    assert first is not None and first.data["Index"] == 0
    assert engine.next_task("j", "w2") is None  # MaxConcurrentTaskCount 1: object 0 is out
    clock.now += dt.timedelta(seconds=61)
    again = engine.next_task("j", "w2")
    assert again is not None and again.data["Index"] == 0  # w1's lease ran out
    try:
        engine.submit("j", 0, "w1", {"label": "a"})
    except ValueError as exc:
        assert "no longer yours" in str(exc)
    else:
        raise AssertionError("a late answer was taken")
    assert store.get_resource(lj.ITEM_KIND, lj.item_name("j", 0)).data["Annotations"] == []  # type: ignore[union-attr]
    store.close()
