"""The console's experiment pages over real HTTP: the list, and an experiment's runs side by side with their
parameters and logged metrics, sorted by a metric."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from helpers import ApiServer, console_client


@pytest.fixture
def console(api: ApiServer) -> Iterator[httpx.Client]:
    client = console_client(api.url, api.access_key_id, api.secret)
    try:
        yield client
    finally:
        client.close()


def test_an_experiments_runs_side_by_side_sorted_by_a_metric(api: ApiServer, console: httpx.Client) -> None:
    sm, metrics = api.client("sagemaker"), api.client("sagemaker-metrics")
    exp = f"console-{uuid.uuid4().hex[:8]}"
    sm.create_experiment(ExperimentName=exp, Description="learning rates")
    sm.create_trial(TrialName=f"{exp}-group", ExperimentName=exp)
    now = dt.datetime.now(dt.UTC)
    for lr, final in ((0.1, 0.30), (0.3, 0.10), (0.2, 0.20)):
        tc = f"{exp}-lr{int(lr * 10)}"
        sm.create_trial_component(
            TrialComponentName=tc,
            Parameters={"lr": {"NumberValue": lr}},
            Status={"PrimaryStatus": "Completed"},
        )
        sm.associate_trial_component(TrialComponentName=tc, TrialName=f"{exp}-group")
        metrics.batch_put_metrics(
            TrialComponentName=tc,
            MetricData=[
                {"MetricName": "loss", "Timestamp": now, "Step": 0, "Value": 1.0},
                {"MetricName": "loss", "Timestamp": now + dt.timedelta(seconds=1), "Step": 1, "Value": final},
            ],
        )
    listing = console.get("/console/experiments")
    assert listing.status_code == 200 and f"/console/experiments/{exp}" in listing.text
    page = console.get(f"/console/experiments/{exp}", params={"sort": "metric:loss", "order": "asc"})
    assert page.status_code == 200
    assert "learning rates" in page.text and f"{exp}-group" in page.text
    runs = re.findall(r'<tr data-run="([^"]+)">', page.text)
    assert runs == [f"{exp}-lr3", f"{exp}-lr2", f"{exp}-lr1"]  # by the last loss, lowest first
    losses = re.findall(
        r'data-metric="loss" title="min ([0-9.]+) · max ([0-9.]+) · (\d+) values">([0-9.]+)<', page.text
    )
    assert losses == [("0.1", "1.0", "2", "0.1"), ("0.2", "1.0", "2", "0.2"), ("0.3", "1.0", "2", "0.3")]
    by_lr = console.get(f"/console/experiments/{exp}", params={"sort": "param:lr", "order": "desc"})
    assert re.findall(r'<tr data-run="([^"]+)">', by_lr.text) == [f"{exp}-lr3", f"{exp}-lr2", f"{exp}-lr1"]
    assert console.get("/console/experiments/no-such-experiment").status_code == 404
