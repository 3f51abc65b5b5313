"""Lineage over boto3: artifacts, contexts and actions, associations, and QueryLineage's directions and filters.

(The lineage the platform records for a training job and the endpoint serving its model, read with the
SDK's ``EndpointContext``, is tested in test_experiments.py, over the platform that module starts.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers import ApiServer


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _error(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


def test_a_graph_of_data_a_job_and_a_model_queried_both_ways(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    data_uri, model_uri = f"s3://lineage/{_name('data')}/", f"s3://lineage/{_name('model')}/model.tar.gz"
    data = sm.create_artifact(ArtifactName="train", ArtifactType="DataSet", Source={"SourceUri": data_uri})[
        "ArtifactArn"
    ]
    model = sm.create_artifact(
        ArtifactType="Model", Source={"SourceUri": model_uri}, Properties={"framework": "xgboost"}
    )["ArtifactArn"]
    job = sm.create_action(ActionName=_name("train"), ActionType="Training", Source={"SourceUri": "job:1"})["ActionArn"]
    ctx_name = _name("endpoint")
    endpoint = sm.create_context(ContextName=ctx_name, ContextType="Endpoint", Source={"SourceUri": "ep:1"})[
        "ContextArn"
    ]
    assert (
        "already exists"
        in _error(sm.create_context, ContextName=ctx_name, ContextType="Endpoint", Source={"SourceUri": "ep:1"})[
            "Message"
        ]
    )
    sm.add_association(SourceArn=data, DestinationArn=job, AssociationType="ContributedTo")
    sm.add_association(SourceArn=job, DestinationArn=model, AssociationType="Produced")
    sm.add_association(SourceArn=model, DestinationArn=endpoint, AssociationType="ContributedTo")

    listed = sm.list_associations(SourceArn=job)["AssociationSummaries"]
    assert [(a["DestinationArn"], a["AssociationType"], a["SourceType"], a["DestinationType"]) for a in listed] == [
        (model, "Produced", "Training", "Model")
    ]
    assert [a["SourceArn"] for a in sm.list_associations(DestinationArn=endpoint)["AssociationSummaries"]] == [model]
    assert [a["SourceName"] for a in sm.list_associations(DestinationArn=job)["AssociationSummaries"]] == ["train"]

    up = sm.query_lineage(StartArns=[endpoint], Direction="Ascendants", IncludeEdges=True)
    assert {v["Arn"] for v in up["Vertices"]} == {data, job, model}
    assert {(e["SourceArn"], e["DestinationArn"]) for e in up["Edges"]} == {
        (data, job),
        (job, model),
        (model, endpoint),
    }
    datasets = sm.query_lineage(
        StartArns=[endpoint], Direction="Ascendants", Filters={"Types": ["DataSet"], "LineageTypes": ["Artifact"]}
    )["Vertices"]
    assert datasets == [{"Arn": data, "Type": "DataSet", "LineageType": "Artifact"}]
    near = sm.query_lineage(StartArns=[endpoint], Direction="Ascendants", MaxDepth=1)["Vertices"]
    assert [v["Arn"] for v in near] == [model]
    down = sm.query_lineage(StartArns=[data], Direction="Descendants")["Vertices"]
    assert {v["Arn"] for v in down} == {job, model, endpoint}
    assert sm.query_lineage(StartArns=[data], Direction="Ascendants")["Vertices"] == []
    by_property = sm.query_lineage(StartArns=[data], Filters={"Properties": {"framework": "xgboost"}})["Vertices"]
    assert [v["Arn"] for v in by_property] == [model]

    assert [a["ArtifactArn"] for a in sm.list_artifacts(SourceUri=model_uri)["ArtifactSummaries"]] == [model]
    sm.update_artifact(ArtifactArn=model, Properties={"auc": "0.91"}, PropertiesToRemove=["framework"])
    assert sm.describe_artifact(ArtifactArn=model)["Properties"] == {"auc": "0.91"}

    sm.delete_association(SourceArn=job, DestinationArn=model)
    assert {v["Arn"] for v in sm.query_lineage(StartArns=[endpoint], Direction="Ascendants")["Vertices"]} == {model}
    missing = _error(sm.delete_association, SourceArn=job, DestinationArn=model)
    assert missing["Code"] == "ResourceNotFound"
    sm.delete_artifact(ArtifactArn=model)  # with the associations it is part of
    assert sm.list_associations(DestinationArn=endpoint)["AssociationSummaries"] == []
    assert _error(sm.describe_artifact, ArtifactArn=model)["Code"] == "ResourceNotFound"
    for call, kwargs in (
        (sm.delete_action, {"ActionName": job.rsplit("/", 1)[1]}),
        (sm.delete_context, {"ContextName": ctx_name}),
    ):
        call(**kwargs)
    sm.delete_artifact(Source={"SourceUri": data_uri})
    assert sm.list_artifacts(SourceUri=data_uri)["ArtifactSummaries"] == []


def test_associations_need_entities_that_exist(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    art = sm.create_artifact(ArtifactType="DataSet", Source={"SourceUri": f"s3://lineage/{_name('x')}"})["ArtifactArn"]
    ghost = art.rsplit("/", 1)[0] + "/" + "0" * 32
    err = _error(sm.add_association, SourceArn=art, DestinationArn=ghost)
    assert err["Code"] == "ResourceNotFound" and ghost in err["Message"]
    err = _error(sm.add_association, SourceArn=art, DestinationArn="arn:aws:s3:::bucket/key")
    assert err["Code"] == "ValidationException"  # not a SageMaker ARN at all
    assert _error(sm.query_lineage, StartArns=[ghost])["Code"] == "ResourceNotFound"
    assert "StartArns" in _error(sm.query_lineage, StartArns=[])["Message"]
    sm.delete_artifact(ArtifactArn=art)
