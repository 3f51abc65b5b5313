"""The console's pipeline pages over real HTTP: the list, the DAG, Start with parameters, an execution's
steps as they run, Stop and Retry."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from helpers import ApiServer


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


@pytest.fixture
def console(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as client:
        token = _csrf(client.get("/console/signin").text)
        signed = client.post(
            "/console/signin",
            data={"csrf": token, "access_key_id": api.access_key_id, "secret": api.secret, "next": "/console/"},
        )
        assert signed.status_code == 303
        yield client


def _pipeline(api: ApiServer, name: str, steps: list[dict], parameters: list[dict]) -> None:
    definition = {"Version": "2020-12-01", "Parameters": parameters, "Steps": steps}
    api.client("sagemaker").create_pipeline(
        PipelineName=name,
        PipelineDefinition=json.dumps(definition),
        RoleArn=api.platform.identity.default_role_arn,
        ClientRequestToken=f"{name:x<32}"[:32],
        PipelineDescription=f"the {name} pipeline",
    )


GATE = [
    {
        "Name": "Gate",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "Equals", "LeftValue": {"Get": "Parameters.Mode"}, "RightValue": "fail"}],
            "IfSteps": [
                {
                    "Name": "Refuse",
                    "Type": "Fail",
                    "Arguments": {
                        "ErrorMessage": {
                            "Std:Join": {"On": " ", "Values": ["refused in mode", {"Get": "Parameters.Mode"}]}
                        }
                    },
                }
            ],
            "ElseSteps": [],
        },
    }
]


def _wait_for(console: httpx.Client, path: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        html = console.get(path).text
        if text in html or time.monotonic() > deadline:
            return html
        time.sleep(0.5)


def test_pipeline_page_draws_the_dag_and_starts_with_parameters(api: ApiServer, console: httpx.Client) -> None:
    _pipeline(
        api,
        "gated",
        GATE,
        [
            {"Name": "Mode", "Type": "String", "DefaultValue": "pass"},
            {"Name": "Count", "Type": "Integer", "DefaultValue": 1},
        ],
    )
    listed = console.get("/console/pipelines?name=gat")
    assert listed.status_code == 200 and 'href="/console/pipelines/gated"' in listed.text
    page = console.get("/console/pipelines/gated").text
    assert 'data-step="Gate"' in page and 'data-step="Refuse"' in page and '<path d="M' in page
    assert 'name="param_Mode"' in page and "default pass" in page and "Not run yet." in page

    bad = console.post("/console/pipelines/gated/start", data={"csrf": _csrf(page), "param_Count": "many"})
    assert bad.status_code == 400 and "Count" in bad.text and 'role="alert"' in bad.text

    started = console.post("/console/pipelines/gated/start", data={"csrf": _csrf(page), "param_Mode": "fail"})
    assert started.status_code == 303
    execution = started.headers["location"]
    assert execution.startswith("/console/pipelines/gated/executions/")
    html = _wait_for(console, execution, 'data-status="Failed"')
    assert 'id="execution-status" data-status="Failed"' in html
    assert "refused in mode fail" in html  # the Fail step's message, references resolved
    assert '<g class="dag-node" data-step="Refuse" data-status="Failed">' in html
    assert '<g class="dag-node" data-step="Gate" data-status="Succeeded">' in html
    assert "(True)" in html  # the condition's outcome
    assert re.search(r'<dt class="mono">Mode</dt><dd class="mono">fail</dd>', html)
    assert "hx-trigger" not in html  # an ended execution is not polled
    assert ">Retry</button>" in html and ">Stop</button>" not in html
    retried = console.post(f"{execution}/retry", data={"csrf": _csrf(html)})
    assert retried.status_code == 303 and retried.headers["location"] == execution

    listed_executions = console.get("/console/pipelines/gated").text
    assert execution.rsplit("/", 1)[-1] in listed_executions


def test_a_running_execution_is_live_and_can_be_stopped(api: ApiServer, console: httpx.Client) -> None:
    _pipeline(api, "waiting", [{"Name": "Approval", "Type": "Callback", "Arguments": {}}], [])
    page = console.get("/console/pipelines/waiting").text
    assert "The pipeline has no parameters." in page
    started = console.post("/console/pipelines/waiting/start", data={"csrf": _csrf(page), "description": "by hand"})
    execution = started.headers["location"]
    html = _wait_for(console, execution, 'data-step="Approval" data-status="Executing"')
    assert 'hx-trigger="every 2s"' in html and f'hx-get="{execution}/steps"' in html
    assert "by hand" in html and ">Stop</button>" in html
    fragment = console.get(f"{execution}/steps")
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<div id="execution-live"')
    stopped = console.post(f"{execution}/stop", data={"csrf": _csrf(html)})
    assert stopped.status_code == 303
    html = _wait_for(console, execution, 'id="execution-status" data-status="Stopped"')
    assert 'id="execution-status" data-status="Stopped"' in html


def test_a_missing_pipeline_or_execution_is_a_404(console: httpx.Client) -> None:
    assert console.get("/console/pipelines/nowhere").status_code == 404
    assert console.get("/console/pipelines/nowhere/executions/abc123").status_code == 404
