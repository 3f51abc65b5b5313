"""The API server over real HTTP with boto3: services, errors, authentication, pagination."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from helpers import ApiServer


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def signed_post(
    api: ApiServer,
    body: bytes,
    headers: dict[str, str],
    service: str = "sagemaker",
    secret: str | None = None,
    path: str = "/",
) -> httpx.Response:
    """Send a raw body signed with botocore's own signer (for bodies boto3 would never send)."""
    request = AWSRequest(method="POST", url=api.url + path, data=body, headers=headers)
    SigV4Auth(Credentials(api.access_key_id, secret or api.secret), service, "us-east-1").add_auth(request)
    return httpx.post(api.url + path, content=body, headers=dict(request.headers.items()))


def test_sts_caller_identity_is_the_default_role_session(api: ApiServer) -> None:
    ident = api.client("sts").get_caller_identity()
    assert ident["Account"] == api.platform.identity.account_id
    assert ident["Arn"] == f"arn:aws:sts::{ident['Account']}:assumed-role/OpenSageExecutionRole/opensage"
    assert ident["UserId"].endswith(":opensage")


def test_list_training_jobs_is_empty(api: ApiServer) -> None:
    resp = api.client("sagemaker").list_training_jobs()
    assert resp["TrainingJobSummaries"] == []
    assert "NextToken" not in resp


def test_iam_role_lifecycle(api: ApiServer) -> None:
    iam = api.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    created = iam.create_role(RoleName="TestRole", AssumeRolePolicyDocument=json.dumps(trust), Path="/service/")
    assert created["Role"]["Arn"].endswith(":role/service/TestRole")
    got = iam.get_role(RoleName="TestRole")["Role"]
    assert got["AssumeRolePolicyDocument"] == trust  # botocore decodes the URL-encoded document
    assert isinstance(got["CreateDate"], dt.datetime)
    with pytest.raises(ClientError) as exc:
        iam.create_role(RoleName="TestRole", AssumeRolePolicyDocument=json.dumps(trust))
    assert _code(exc) == "EntityAlreadyExists"
    names = [r["RoleName"] for r in iam.list_roles(PathPrefix="/service/")["Roles"]]
    assert names == ["TestRole"]
    iam.delete_role(RoleName="TestRole")
    with pytest.raises(ClientError) as exc:
        iam.get_role(RoleName="TestRole")
    assert _code(exc) == "NoSuchEntity"
    assert "cannot be found" in str(exc.value)


def test_iam_malformed_trust_policy(api: ApiServer) -> None:
    with pytest.raises(ClientError) as exc:
        api.client("iam").create_role(RoleName="Bad", AssumeRolePolicyDocument="{not json")
    assert _code(exc) == "MalformedPolicyDocument"


def test_generic_pagination_over_iam_roles(api: ApiServer) -> None:
    iam = api.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    names = [f"Page{i:02d}" for i in range(7)]
    for name in names:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, Path="/paged/")
    try:
        first = iam.list_roles(PathPrefix="/paged/", MaxItems=3)
        assert first["IsTruncated"] is True and len(first["Roles"]) == 3
        seen = [
            r["RoleName"]
            for page in iam.get_paginator("list_roles").paginate(PathPrefix="/paged/", PaginationConfig={"PageSize": 3})
            for r in page["Roles"]
        ]
        assert seen == names
    finally:
        for name in names:
            iam.delete_role(RoleName=name)


def test_bad_pagination_token(api: ApiServer) -> None:
    with pytest.raises(ClientError) as exc:
        api.client("sagemaker").list_training_jobs(NextToken="garbage!")
    assert _code(exc) == "ValidationException"
    assert "pagination token" in str(exc.value)


def test_validation_names_the_member_and_constraint(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    with pytest.raises(ClientError) as exc:
        sm.list_training_jobs(MaxResults=1000)
    assert _code(exc) == "ValidationException"
    assert "'maxResults'" in str(exc.value) and "less than or equal to 100" in str(exc.value)
    assert sm.list_training_jobs(StatusEquals="InProgress", SortBy="Name")["TrainingJobSummaries"] == []
    with pytest.raises(ClientError) as exc:
        sm.list_training_jobs(StatusEquals="Running")
    assert "enum value set" in str(exc.value)
    with pytest.raises(ClientError) as exc:
        sm.list_training_jobs(SortOrder="Sideways")
    assert "enum value set" in str(exc.value)


def test_required_member_and_pattern(api: ApiServer) -> None:
    body = json.dumps({"TrainingJobName": "bad name!"}).encode()
    r = signed_post(
        api, body, {"X-Amz-Target": "SageMaker.DescribeTrainingJob", "Content-Type": "application/x-amz-json-1.1"}
    )
    assert r.status_code == 400
    assert r.json()["__type"] == "ValidationException"
    assert r.headers["x-amzn-errortype"] == "ValidationException"
    assert "regular expression pattern" in r.json()["message"]
    r = signed_post(
        api, b"{}", {"X-Amz-Target": "SageMaker.DescribeTrainingJob", "Content-Type": "application/x-amz-json-1.1"}
    )
    assert (
        "Value null at 'trainingJobName' failed to satisfy constraint: Member must not be null" in r.json()["message"]
    )


def test_wrong_type(api: ApiServer) -> None:
    body = json.dumps({"MaxResults": "ten"}).encode()
    r = signed_post(
        api, body, {"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"}
    )
    assert r.status_code == 400
    assert "Member must be an integer" in r.json()["message"]


def test_malformed_json(api: ApiServer) -> None:
    r = signed_post(
        api, b"{oops", {"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"}
    )
    assert r.status_code == 400
    assert r.json()["__type"] == "SerializationException"


def test_unknown_operation(api: ApiServer) -> None:
    r = signed_post(api, b"{}", {"X-Amz-Target": "SageMaker.MakeCoffee", "Content-Type": "application/x-amz-json-1.1"})
    assert r.status_code == 400
    assert r.json()["__type"] == "UnknownOperationException"
    assert "MakeCoffee" in r.json()["message"]


def test_unimplemented_operation_names_itself(api: ApiServer) -> None:
    with pytest.raises(ClientError) as exc:
        api.client("sagemaker").list_edge_packaging_jobs()  # SageMaker Edge: retired by AWS, not served here
    assert _code(exc) == "NotImplemented"
    assert "ListEdgePackagingJobs" in str(exc.value)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


@pytest.mark.parametrize(
    ("service", "call", "operation"),
    [
        ("events", lambda c: c.list_archives(), "ListArchives"),
        ("ecr", lambda c: c.get_lifecycle_policy(repositoryName="models"), "GetLifecyclePolicy"),
    ],
)
def test_services_without_a_provider_answer_not_implemented(
    api: ApiServer, service: str, call: Any, operation: str
) -> None:
    """Services routed to the platform but not served yet say so, naming the operation; nothing goes to AWS."""
    with pytest.raises(ClientError) as exc:
        call(api.client(service))
    assert _code(exc) == "NotImplemented" and operation in str(exc.value)


def test_oversize_body(api: ApiServer) -> None:
    body = b'{"NameContains": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    r = signed_post(
        api, body, {"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"}
    )
    assert r.status_code == 413
    assert r.json()["__type"] == "RequestEntityTooLarge"


def test_unsigned_request(api: ApiServer) -> None:
    r = httpx.post(
        api.url,
        content=b"{}",
        headers={"X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert r.status_code == 403
    assert r.json()["__type"] == "MissingAuthenticationTokenException"


@pytest.mark.parametrize(
    ("service", "op", "code"),
    [
        ("sagemaker", "list_training_jobs", "UnrecognizedClientException"),
        ("sts", "get_caller_identity", "InvalidClientTokenId"),
    ],
)
def test_unknown_access_key(api: ApiServer, service: str, op: str, code: str) -> None:
    client = api.client(service, aws_access_key_id="AKIANOSUCHKEY0000000")
    with pytest.raises(ClientError) as exc:
        getattr(client, op)()
    assert _code(exc) == code


@pytest.mark.parametrize(
    ("service", "op", "code"),
    [
        ("sagemaker", "list_training_jobs", "InvalidSignatureException"),
        ("sts", "get_caller_identity", "SignatureDoesNotMatch"),
        ("iam", "list_roles", "SignatureDoesNotMatch"),
    ],
)
def test_wrong_secret(api: ApiServer, service: str, op: str, code: str) -> None:
    client = api.client(service, aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as exc:
        getattr(client, op)()
    assert _code(exc) == code


def test_stale_signature(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=30)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    with pytest.raises(ClientError) as exc:
        api.client("sagemaker").list_training_jobs()
    assert _code(exc) == "InvalidSignatureException"
    assert "Signature expired" in str(exc.value)


def test_presigned_query_request(api: ApiServer) -> None:
    """The presigned (query-string) form of SigV4, on a query-protocol GET."""
    url = f"{api.url}/?Action=GetCallerIdentity&Version=2011-06-15"
    request = AWSRequest(method="GET", url=url)
    botocore.auth.SigV4QueryAuth(Credentials(api.access_key_id, api.secret), "sts", "us-east-1", expires=60).add_auth(
        request
    )
    r = httpx.get(request.url)
    assert r.status_code == 200, r.text
    assert api.platform.identity.account_id in r.text
    tampered = request.url.replace("Action=GetCallerIdentity", "Action=GetCallerIdentity&Extra=1")
    assert httpx.get(tampered).status_code == 403


def test_health_route(api: ApiServer) -> None:
    r = httpx.get(api.url + "/_opensage/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def _signed_get(api: ApiServer, path: str, secret: str | None = None) -> httpx.Response:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("GET", api.url + path)
    SigV4Auth(Credentials(api.access_key_id, secret or api.secret), "sagemaker", "us-east-1").add_auth(request)
    return httpx.get(api.url + path, headers=dict(request.headers.items()))


def test_internal_routes_show_the_account_home_and_endpoints_only_when_signed(api: ApiServer) -> None:
    account, home = api.platform.identity.account_id, str(api.platform.settings.home)
    unsigned = httpx.get(api.url + "/_opensage/health")
    assert account not in unsigned.text and home not in unsigned.text
    signed = _signed_get(api, "/_opensage/health").json()
    assert signed["account_id"] == account and signed["home"] == home
    assert account not in _signed_get(api, "/_opensage/health", secret="wrong" * 8).text
    r = httpx.get(api.url + "/_opensage/metrics")
    assert r.status_code == 403 and r.json()["__type"] == "MissingAuthenticationTokenException"
    r = _signed_get(api, "/_opensage/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")


def test_key_deleted_stops_working(api: ApiServer) -> None:
    from opensage.identity import create_access_key

    key = create_access_key(api.platform.store, api.platform.identity.account_id)
    client = api.client("sts", aws_access_key_id=key.access_key_id, aws_secret_access_key=key.secret_access_key)
    assert client.get_caller_identity()["Account"]
    api.platform.store.delete_access_key(key.access_key_id)
    api.platform.authenticator.forget(key.access_key_id)
    with pytest.raises(ClientError) as exc:
        client.get_caller_identity()
    assert _code(exc) == "InvalidClientTokenId"


IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda sm: sm.create_model(
                ModelName="mme",
                PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://b/models/a.tar.gz", "Mode": "MultiModel"},
                ExecutionRoleArn="arn:aws:iam::000000000000:role/OpenSageExecutionRole",
            ),
            "needs ModelDataUrl to be the S3 prefix of its models",
        ),
        (
            lambda sm: sm.create_model(
                ModelName="pipeline",
                Containers=[{"Image": IMAGE}, {"Image": IMAGE}],
                ExecutionRoleArn="arn:aws:iam::000000000000:role/OpenSageExecutionRole",
            ),
            "inference pipelines",
        ),
        (
            lambda sm: sm.create_endpoint_config(
                EndpointConfigName="serverless",
                ProductionVariants=[
                    {
                        "VariantName": "v",
                        "ModelName": "m",
                        "ServerlessConfig": {"MemorySizeInMB": 1500, "MaxConcurrency": 1},
                    }
                ],
            ),
            "MemorySizeInMB must be one of 1024, 2048, 3072, 4096, 5120, 6144",
        ),
        (
            lambda sm: sm.create_endpoint_config(
                EndpointConfigName="capture",
                ProductionVariants=[{"VariantName": "v", "ModelName": "m", "InstanceType": "ml.m5.large"}],
                DataCaptureConfig={
                    "EnableCapture": True,
                    "InitialSamplingPercentage": 100,
                    "DestinationS3Uri": "https://b/capture",  # the model's pattern allows it; capture needs S3
                    "CaptureOptions": [{"CaptureMode": "Input"}],
                },
            ),
            "DestinationS3Uri must be an S3 URI",
        ),
    ],
)
def test_inference_options_that_cannot_be_applied_are_refused(api: ApiServer, call: Any, message: str) -> None:
    """Accepting these and serving a plain real-time endpoint would mislead: AWS's answer to an unsupported value."""
    with pytest.raises(ClientError) as exc:
        call(api.client("sagemaker"))
    assert _code(exc) == "ValidationException" and message in str(exc.value)


def _pages(client: Any, operation: str, key: str, field: str, **request: Any) -> list[list[str]]:
    """The ``field`` of every item, page by page, as the client's own paginator walks them at 10 a page."""
    paginator = client.get_paginator(operation)
    return [[i[field] for i in page[key]] for page in paginator.paginate(**request, PaginationConfig={"PageSize": 10})]


def test_list_models_pages_in_sql_through_the_paginator(api: ApiServer) -> None:
    """25 models at MaxResults 10: pages of 10, 10 and 5, in the order asked for, none twice and none missed."""
    sm = api.client("sagemaker")
    names = [f"paged-{i:02d}" for i in range(25)]
    for name in names:
        sm.create_model(ModelName=name, PrimaryContainer={"Image": IMAGE})
    try:
        pages = _pages(sm, "list_models", "Models", "ModelName")
        walked = sum(pages, [])
        assert len(walked) == len(set(walked)) and all(len(p) == 10 for p in pages[:-1]) and len(pages[-1]) <= 10
        assert [n for n in walked if n.startswith("paged-")] == names[::-1]  # newest first by default
        pages = _pages(sm, "list_models", "Models", "ModelName", NameContains="paged-", SortOrder="Ascending")
        assert [len(p) for p in pages] == [10, 10, 5] and sum(pages, []) == names
        pages = _pages(sm, "list_models", "Models", "ModelName", NameContains="paged-1", SortBy="Name")
        assert pages == [names[19:9:-1]]  # exactly one full page: no token, no empty page after it
        first = sm.list_models(NameContains="paged-", SortBy="Name", SortOrder="Ascending", MaxResults=7)
        assert [m["ModelName"] for m in first["Models"]] == names[:7] and first["NextToken"]
        with pytest.raises(ClientError) as exc:
            sm.list_models(NameContains="paged-", SortBy="CreationTime", NextToken=first["NextToken"])
        assert _code(exc) == "ValidationException" and "another SortBy or SortOrder" in str(exc.value)
    finally:
        for name in names:
            sm.delete_model(ModelName=name)


def test_models_created_while_paging_shift_no_page(api: ApiServer) -> None:
    """Pages are taken by key, not by offset: a model created mid-walk (newest, so before the cursor)
    neither repeats the last row of the page before nor pushes one out."""
    sm = api.client("sagemaker")
    names = [f"walk-{i:02d}" for i in range(12)]
    for name in names:
        sm.create_model(ModelName=name, PrimaryContainer={"Image": IMAGE})
    try:
        page = sm.list_models(NameContains="walk-", MaxResults=5)
        seen = [m["ModelName"] for m in page["Models"]]
        sm.create_model(ModelName="walk-late", PrimaryContainer={"Image": IMAGE})
        while page.get("NextToken"):
            page = sm.list_models(NameContains="walk-", MaxResults=5, NextToken=page["NextToken"])
            seen += [m["ModelName"] for m in page["Models"]]
        assert seen == names[::-1]
    finally:
        for name in [*names, "walk-late"]:
            sm.delete_model(ModelName=name)


def test_every_sagemaker_list_operation_pages(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    sm.create_model(ModelName="configs-model", PrimaryContainer={"Image": IMAGE})
    names = [f"config-{i:02d}" for i in range(12)]
    variant = {"VariantName": "v", "ModelName": "configs-model", "InstanceType": "ml.m5.large"}
    for name in names:
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    try:
        pages = _pages(sm, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", NameContains="config-")
        assert [len(p) for p in pages] == [10, 2] and sum(pages, []) == names[::-1]
        hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        since = sm.list_endpoint_configs(NameContains="config-", CreationTimeAfter=hour_ago, MaxResults=100)
        assert len(since["EndpointConfigs"]) == 12
        assert sm.list_endpoint_configs(NameContains="config-", CreationTimeBefore=hour_ago)["EndpointConfigs"] == []
    finally:
        for name in names:
            sm.delete_endpoint_config(EndpointConfigName=name)
        sm.delete_model(ModelName="configs-model")
    for operation in ("list_endpoints", "list_training_jobs", "list_processing_jobs", "list_transform_jobs"):
        answer = getattr(sm, operation)(MaxResults=1)
        assert "NextToken" not in answer, operation
        with pytest.raises(ClientError) as exc:
            getattr(sm, operation)(NextToken="bm90IGEgdG9rZW4=")
        assert _code(exc) == "ValidationException" and "pagination token" in str(exc.value), operation


def test_list_page_sizes_outside_the_model_are_refused(api: ApiServer) -> None:
    unchecked = api.client("sagemaker", config=Config(retries={"max_attempts": 1}, parameter_validation=False))
    for size, words in ((0, "greater than or equal to 1"), (101, "less than or equal to 100")):
        with pytest.raises(ClientError) as exc:
            unchecked.list_models(MaxResults=size)
        assert _code(exc) == "ValidationException" and words in str(exc.value), size


def test_kms_lists_page_with_limit_and_marker(api: ApiServer) -> None:
    kms = api.client("kms")
    made = {kms.create_key(Description=f"paged {i}")["KeyMetadata"]["KeyId"] for i in range(3)}
    first = kms.list_keys(Limit=1)
    assert len(first["Keys"]) == 1 and first["Truncated"] is True and first["NextMarker"]
    pages = list(kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 2}))
    walked = [k["KeyId"] for page in pages for k in page["Keys"]]
    assert made <= set(walked) and len(walked) == len(set(walked)) and pages[-1]["Truncated"] is False


def test_put_metric_data_is_read_back_by_every_cloudwatch_call(api: ApiServer) -> None:
    cw = api.client("cloudwatch")
    now = dt.datetime.now(dt.UTC).replace(second=30, microsecond=0)
    dims = [{"Name": "Model", "Value": "churn"}]
    cw.put_metric_data(
        Namespace="Custom/Training",
        MetricData=[
            {"MetricName": "accuracy", "Dimensions": dims, "Timestamp": now, "Value": 0.5, "Unit": "Percent"},
            {"MetricName": "accuracy", "Dimensions": dims, "Timestamp": now, "Values": [0.7, 0.9], "Counts": [1, 2]},
            {
                "MetricName": "accuracy",
                "Dimensions": dims,
                "Timestamp": now - dt.timedelta(minutes=1),
                "StatisticValues": {"SampleCount": 2, "Sum": 1.0, "Minimum": 0.4, "Maximum": 0.6},
            },
        ],
    )
    listed = cw.list_metrics(Namespace="Custom/Training")["Metrics"]
    assert listed == [{"Namespace": "Custom/Training", "MetricName": "accuracy", "Dimensions": dims}]
    points = cw.get_metric_statistics(
        Namespace="Custom/Training",
        MetricName="accuracy",
        Dimensions=dims,
        StartTime=now - dt.timedelta(minutes=5),
        EndTime=now + dt.timedelta(minutes=1),
        Period=60,
        Statistics=["SampleCount", "Sum", "Maximum", "Average"],
    )["Datapoints"]
    by_time = {p["Timestamp"].timestamp(): p for p in points}
    this = by_time[now.replace(second=0).timestamp()]
    assert this["SampleCount"] == 4 and this["Sum"] == pytest.approx(3.0) and this["Maximum"] == 0.9
    assert this["Unit"] == "Percent"
    assert by_time[(now - dt.timedelta(minutes=1)).replace(second=0).timestamp()]["Average"] == 0.5
    data = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "acc",
                "MetricStat": {
                    "Metric": {"Namespace": "Custom/Training", "MetricName": "accuracy", "Dimensions": dims},
                    "Period": 300,
                    "Stat": "SampleCount",
                },
            }
        ],
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=5),
    )["MetricDataResults"][0]
    assert sum(data["Values"]) == 6
    with pytest.raises(ClientError) as exc:
        cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[{"MetricName": "x", "Value": 1.0}])
    assert _code(exc) == "InvalidParameterValue"
    with pytest.raises(ClientError) as exc:
        cw.put_metric_data(Namespace="Custom/Training", MetricData=[{"MetricName": "x"}])
    assert _code(exc) == "InvalidParameterCombination"
