"""The MLflow UI's sign-in tokens, and the tracking server statuses against AWS's own enum."""

from __future__ import annotations

import botocore.session
import pytest

from opensage.mlflow_servers import tokens
from opensage.mlflow_servers.engine import LAUNCHES, RUNNING, STARTABLE, STOPPABLE, Status

KEY = b"k" * 32


def test_a_token_is_checked_for_its_use_its_server_and_its_time() -> None:
    token = tokens.issue(KEY, tokens.Grant(tokens.URL, "churn", 1000.0, 1800))
    grant = tokens.check(KEY, token, tokens.URL, "churn", 999.0)
    assert grant.session_s == 1800 and grant.server == "churn"
    with pytest.raises(tokens.TokenError) as err:
        tokens.check(KEY, token, tokens.URL, "churn", 1000.0)
    assert err.value.kind == "expired"
    for use, server, key in ((tokens.SESSION, "churn", KEY), (tokens.URL, "other", KEY), (tokens.URL, "churn", b"x")):
        with pytest.raises(tokens.TokenError) as err:
            tokens.check(key, token, use, server, 0.0)
        assert err.value.kind == "invalid"
    payload, _, mac = token.partition(".")
    forged = tokens.issue(b"another key", tokens.Grant(tokens.URL, "churn", 9e9, 1800)).partition(".")[0]
    for bad in (f"{forged}.{mac}", payload, "", "a.b", f"{payload}.{mac[:-2]}"):
        with pytest.raises(tokens.TokenError):
            tokens.check(KEY, bad, tokens.URL, "churn", 0.0)


def test_statuses_are_aws_values() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    aws = set(model.shape_for("TrackingServerStatus").enum)
    assert {s.value for s in Status} <= aws
    assert set(RUNNING) | set(STARTABLE) | set(STOPPABLE) | set(LAUNCHES) <= set(Status)
    assert not set(RUNNING) & set(STARTABLE)
