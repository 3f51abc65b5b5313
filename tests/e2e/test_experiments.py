"""SageMaker Experiments end to end: experiments, trials, trial components, logged metrics and Search over
boto3; the SDK v2 ``Run`` (parameters, metrics with steps, files, ``load_run``, ``list_runs``,
``ExperimentAnalytics``) around local work and around a training job, which gets a trial component of its own."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from helpers import ApiServer, RunningPlatform, console_client, running_platform

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "experiments-tests"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _error(call: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


def test_entities_associations_and_the_rules_for_deleting_them(api: ApiServer) -> None:
    sm = api.client("sagemaker")
    exp, trial, tc = _name("churn"), _name("trial"), _name("tc")
    arn = sm.create_experiment(ExperimentName=exp, Description="churn models", Tags=[{"Key": "team", "Value": "risk"}])[
        "ExperimentArn"
    ]
    assert arn.endswith(f":experiment/{exp}")
    assert "already exists" in _error(sm.create_experiment, ExperimentName=exp)["Message"]
    desc = sm.describe_experiment(ExperimentName=exp)
    assert desc["Description"] == "churn models" and "DisplayName" not in desc
    sm.update_experiment(ExperimentName=exp, DisplayName="Churn")
    assert sm.describe_experiment(ExperimentName=exp)["DisplayName"] == "Churn"
    missing = _error(sm.create_trial, TrialName=trial, ExperimentName=_name("nope"))
    assert missing["Code"] == "ValidationException" and "does not exist" in missing["Message"]
    sm.create_trial(TrialName=trial, ExperimentName=exp)
    assert sm.describe_trial(TrialName=trial)["ExperimentName"] == exp
    start = dt.datetime.now(dt.UTC)
    sm.create_trial_component(
        TrialComponentName=tc,
        Status={"PrimaryStatus": "InProgress"},
        StartTime=start,
        Parameters={"eta": {"NumberValue": 0.2}, "objective": {"StringValue": "binary:logistic"}},
        InputArtifacts={"train": {"MediaType": "text/csv", "Value": "s3://b/train/"}},
    )
    sm.associate_trial_component(TrialComponentName=tc, TrialName=trial)
    sm.associate_trial_component(TrialComponentName=tc, TrialName=trial)  # again: still one association
    listed = sm.list_trial_components(TrialName=trial)["TrialComponentSummaries"]
    assert [s["TrialComponentName"] for s in listed] == [tc]
    assert [
        s["TrialComponentName"] for s in sm.list_trial_components(ExperimentName=exp)["TrialComponentSummaries"]
    ] == [tc]
    assert [t["TrialName"] for t in sm.list_trials(TrialComponentName=tc)["TrialSummaries"]] == [trial]
    assert [t["TrialName"] for t in sm.list_trials(ExperimentName=exp)["TrialSummaries"]] == [trial]

    sm.update_trial_component(
        TrialComponentName=tc,
        Status={"PrimaryStatus": "Completed"},
        EndTime=start + dt.timedelta(seconds=5),
        Parameters={"max_depth": {"NumberValue": 5}},
        ParametersToRemove=["objective"],
        OutputArtifacts={"model": {"Value": "s3://b/model.tar.gz"}},
    )
    desc = sm.describe_trial_component(TrialComponentName=tc)
    assert desc["Status"]["PrimaryStatus"] == "Completed"
    assert set(desc["Parameters"]) == {"eta", "max_depth"} and desc["Parameters"]["eta"]["NumberValue"] == 0.2
    assert desc["OutputArtifacts"]["model"]["Value"] == "s3://b/model.tar.gz"
    assert (desc["EndTime"] - desc["StartTime"]).total_seconds() == pytest.approx(5, abs=0.01)
    bad = _error(sm.update_trial_component, TrialComponentName=tc, Status={"PrimaryStatus": "Done"})
    assert bad["Code"] == "ValidationException" and "InProgress, Completed" in bad["Message"]

    assert "DisassociateTrialComponent" in _error(sm.delete_trial_component, TrialComponentName=tc)["Message"]
    assert "disassociate" in _error(sm.delete_trial, TrialName=trial)["Message"]
    assert "DeleteTrial" in _error(sm.delete_experiment, ExperimentName=exp)["Message"]
    sm.disassociate_trial_component(TrialComponentName=tc, TrialName=trial)
    assert sm.list_trial_components(TrialName=trial)["TrialComponentSummaries"] == []
    sm.delete_trial_component(TrialComponentName=tc)
    sm.delete_trial(TrialName=trial)
    sm.delete_experiment(ExperimentName=exp)
    assert "does not exist" in _error(sm.describe_experiment, ExperimentName=exp)["Message"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == []


def test_logged_metrics_summaries_series_and_search(api: ApiServer) -> None:
    sm, metrics = api.client("sagemaker"), api.client("sagemaker-metrics")
    exp, trial = _name("search"), _name("trial")
    sm.create_experiment(ExperimentName=exp)
    sm.create_trial(TrialName=trial, ExperimentName=exp)
    names = [_name("run") for _ in range(3)]
    now = dt.datetime.now(dt.UTC)
    for i, tc in enumerate(names):
        sm.create_trial_component(TrialComponentName=tc, Parameters={"lr": {"NumberValue": 0.1 * (i + 1)}})
        sm.associate_trial_component(TrialComponentName=tc, TrialName=trial)
        losses = [1.0 / (step + 1 + i) for step in range(4)]
        answer = metrics.batch_put_metrics(
            TrialComponentName=tc,
            MetricData=[
                {"MetricName": "loss", "Timestamp": now + dt.timedelta(seconds=s), "Step": s, "Value": v}
                for s, v in enumerate(losses)
            ],
        )
        assert answer.get("Errors", []) == []
    refused = _error(
        metrics.batch_put_metrics,
        TrialComponentName=names[0],
        MetricData=[
            {"MetricName": "acc", "Timestamp": now, "Value": 0.5},
            {"MetricName": "acc", "Timestamp": now, "Value": math.nan},
        ],
    )
    assert refused["Code"] == "ValidationException" and "metricData.2.member.value" in refused["Message"]
    metrics.batch_put_metrics(
        TrialComponentName=names[0], MetricData=[{"MetricName": "acc", "Timestamp": now, "Value": 0.9}]
    )
    summary = {m["MetricName"]: m for m in sm.describe_trial_component(TrialComponentName=names[0])["Metrics"]}
    assert summary["acc"]["Count"] == 1 and summary["acc"]["Last"] == 0.9  # nothing of the refused batch was kept
    loss = summary["loss"]
    assert (loss["Count"], loss["Max"], loss["Min"], loss["Last"]) == (4, 1.0, 0.25, 0.25)
    assert loss["Avg"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert loss["StdDev"] > 0

    arn = sm.describe_trial_component(TrialComponentName=names[0])["TrialComponentArn"]
    series = metrics.batch_get_metrics(
        MetricQueries=[
            {
                "MetricName": "loss",
                "ResourceArn": arn,
                "MetricStat": "Avg",
                "Period": "IterationNumber",
                "XAxisType": "IterationNumber",
            }
        ]
    )["MetricQueryResults"][0]
    assert series["Status"] == "Complete" and series["XAxisValues"] == [0, 1, 2, 3]
    assert series["MetricValues"] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])

    by_parent = sm.search(
        Resource="ExperimentTrialComponent",
        SearchExpression={"Filters": [{"Name": "Parents.ExperimentName", "Operator": "Equals", "Value": exp}]},
        SortBy="Parameters.lr.NumberValue",
        SortOrder="Ascending",
    )["Results"]
    assert [r["TrialComponent"]["TrialComponentName"] for r in by_parent] == names
    assert by_parent[0]["TrialComponent"]["Parents"] == [{"TrialName": trial, "ExperimentName": exp}]
    best = sm.search(
        Resource="ExperimentTrialComponent",
        SearchExpression={
            "Filters": [
                {"Name": "Parents.TrialName", "Operator": "Equals", "Value": trial},
                {"Name": "Metrics.loss.Min", "Operator": "LessThan", "Value": "0.21"},
            ]
        },
    )["Results"]
    assert {r["TrialComponent"]["TrialComponentName"] for r in best} == set(names[1:])  # min losses 0.2 and 1/6
    trials = sm.search(
        Resource="ExperimentTrial",
        SearchExpression={"Filters": [{"Name": "ExperimentName", "Operator": "Equals", "Value": exp}]},
    )["Results"]
    assert {s["TrialComponentName"] for s in trials[0]["Trial"]["TrialComponentSummaries"]} == set(names)
    unknown = _error(
        sm.search,
        Resource="ExperimentTrialComponent",
        SearchExpression={"Filters": [{"Name": "Colour", "Operator": "Equals", "Value": "red"}]},
    )
    assert unknown["Code"] == "ValidationException" and "Unknown property 'Colour'" in unknown["Message"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("experiments")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        rows = "\n".join(f"{int(i % 7 > 3)},{i % 7},{(i * 3) % 5}" for i in range(200))
        s3.put_object(Bucket=BUCKET, Key="train/train.csv", Body=rows.encode())
        yield running


@pytest.mark.slow
def test_sdk_run_around_local_work_and_a_training_job(platform: RunningPlatform, tmp_path: Path) -> None:
    exp = _name("sdk-exp")
    (tmp_path / "notes.txt").write_text("what this run tried\n")
    out = platform.run_python(
        f"""
        import sagemaker
        from sagemaker.estimator import Estimator
        from sagemaker.experiments import Run, load_run, list_runs
        from sagemaker.analytics import ExperimentAnalytics

        session = sagemaker.Session()
        role = sagemaker.get_execution_role()
        with Run(experiment_name="{exp}", run_name="local-1", sagemaker_session=session) as run:
            run.log_parameters({{"lr": 0.1, "optimizer": "adam"}})
            for step in range(5):
                run.log_metric(name="loss", value=1.0 / (step + 1), step=step)
            run.log_file("notes.txt", name="notes", is_output=False)
        with load_run(experiment_name="{exp}", run_name="local-1", sagemaker_session=session) as run:
            run.log_metric(name="accuracy", value=0.93)
        with Run(experiment_name="{exp}", run_name="train-1", sagemaker_session=session) as run:
            run.log_parameter("num_round", 5)
            est = Estimator(image_uri="{IMAGE}", role=role, instance_count=1, instance_type="ml.m5.large",
                            output_path="s3://{BUCKET}/output", sagemaker_session=session,
                            hyperparameters={{"objective": "binary:logistic", "num_round": 5}})
            est.fit({{"train": sagemaker.inputs.TrainingInput("s3://{BUCKET}/train/", content_type="text/csv")}},
                    logs=False)
            print("JOB", est.latest_training_job.name)
        runs = list_runs(experiment_name="{exp}", sagemaker_session=session)
        print("RUNS", sorted(r.run_name for r in runs))
        frame = ExperimentAnalytics(experiment_name="{exp}", sagemaker_session=session).dataframe()
        local = frame[frame["TrialComponentName"] == "{exp}-local-1"].iloc[0]
        print("LR", local["lr"], "OPT", local["optimizer"], "LOSSMIN", local["loss - Min"],
              "LOSSCOUNT", local["loss - Count"], "ACC", local["accuracy - Last"])
        print("NOTES", local["notes - Value"])
        """,
        tmp_path,
        timeout=600,
    )
    values: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith(("JOB ", "LR ", "NOTES ")):
            words = line.split()
            values.update(zip(words[::2], words[1::2], strict=False))
    assert "RUNS ['local-1', 'train-1']" in out, out[-3000:]
    assert values["LR"] == "0.1" and values["OPT"] == "adam" and values["LOSSMIN"] == "0.2"
    assert float(values["LOSSCOUNT"]) == 5 and values["ACC"] == "0.93"
    assert values["NOTES"].startswith("s3://")
    job = values["JOB"]
    sm = platform.session().client("sagemaker")
    component = sm.describe_trial_component(TrialComponentName=f"{job}-aws-training-job")
    assert component["Source"]["SourceArn"].endswith(f":training-job/{job}")
    assert component["Source"]["SourceType"] == "SageMakerTrainingJob"
    assert component["Status"]["PrimaryStatus"] == "Completed"
    assert component["Parameters"]["num_round"]["NumberValue"] == 5
    assert component["OutputArtifacts"]["SageMaker.ModelArtifact"]["Value"].endswith("model.tar.gz")
    assert component["InputArtifacts"]["train"]["Value"] == f"s3://{BUCKET}/train/"
    trial = sm.describe_training_job(TrainingJobName=job)["ExperimentConfig"]["TrialName"]
    members = {s["TrialComponentName"] for s in sm.list_trial_components(TrialName=trial)["TrialComponentSummaries"]}
    assert f"{job}-aws-training-job" in members and f"{exp}-train-1" in members


@pytest.mark.slow
def test_lineage_from_an_endpoint_back_to_its_training_job_and_data(platform: RunningPlatform, tmp_path: Path) -> None:
    """A training job and the endpoint serving its model, with no experiment: the platform records their
    lineage by itself, and the SDK's EndpointContext finds the job and its data from the endpoint."""
    session = platform.session()
    sm = session.client("sagemaker")
    job, endpoint = _name("lineage-job"), _name("lineage-ep")
    sm.create_training_job(
        TrainingJobName=job,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=session.client("iam").list_roles()["Roles"][0]["Arn"],
        HyperParameters={"objective": "binary:logistic", "num_round": "3"},
        InputDataConfig=[
            {
                "ChannelName": "train",
                "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/train/"}},
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/lineage"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
    )
    sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=job, WaiterConfig={"Delay": 1})
    described = sm.describe_training_job(TrainingJobName=job)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    model_url = described["ModelArtifacts"]["S3ModelArtifacts"]
    role = described["RoleArn"]
    sm.create_model(ModelName=job, PrimaryContainer={"Image": IMAGE, "ModelDataUrl": model_url}, ExecutionRoleArn=role)
    sm.create_endpoint_config(
        EndpointConfigName=endpoint,
        ProductionVariants=[
            {"VariantName": "v1", "ModelName": job, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    endpoint_arn = sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)["EndpointArn"]
    sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig={"Delay": 1})
    try:
        contexts = sm.list_contexts(SourceUri=endpoint_arn)["ContextSummaries"]
        assert [c["ContextType"] for c in contexts] == ["Endpoint"]
        out = platform.run_python(
            f"""
            import sagemaker
            from sagemaker.lineage.context import EndpointContext

            ctx = EndpointContext.load(context_name="{contexts[0]["ContextName"]}",
                                       sagemaker_session=sagemaker.Session())
            print("JOBS", ctx.training_job_arns())
            print("DATA", sorted(a.source.source_uri for a in ctx.dataset_artifacts()))
            """,
            tmp_path,
        )
        assert f"JOBS ['{described['TrainingJobArn']}']" in out, out[-3000:]
        assert f"DATA ['s3://{BUCKET}/train/']" in out
        models = sm.query_lineage(
            StartArns=[contexts[0]["ContextArn"]], Direction="Ascendants", Filters={"Types": ["Model"]}
        )["Vertices"]
        assert [sm.describe_artifact(ArtifactArn=v["Arn"])["Source"]["SourceUri"] for v in models] == [model_url]
        keys = session.get_credentials()
        console = console_client(platform.api_url, keys.access_key, keys.secret_key)
        try:
            page = console.get(f"/console/endpoints/{endpoint}").text
        finally:
            console.close()
        lineage = page[page.index('id="lineage"') :]
        assert f"/console/training-jobs/{job}" in lineage and f"s3://{BUCKET}/train/" in lineage
        assert model_url in lineage
    finally:
        sm.delete_endpoint(EndpointName=endpoint)


JOB_SCRIPT = """
import os, boto3
from sagemaker.experiments import load_run
from sagemaker.session import Session

with load_run(sagemaker_session=Session()) as run:  # the run the job was started in, from its ExperimentConfig
    run.log_parameter("rows_seen", 200)
    for epoch in range(3):
        run.log_metric(name="job-loss", value=1.0 / (epoch + 1), step=epoch)
boto3.client("s3").put_object(Bucket=os.environ["BUCKET"], Key="from-the-job/hello.txt", Body=b"hi")
print("KEY", os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
"""


@pytest.mark.slow
def test_a_jobs_code_logs_to_its_run_and_uses_the_platform_with_a_key_of_its_own(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    exp = _name("in-job")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(JOB_SCRIPT)
    out = platform.run_python(
        f"""
        import sagemaker
        from sagemaker.experiments import Run
        from sagemaker.sklearn import SKLearn

        session = sagemaker.Session()
        with Run(experiment_name="{exp}", run_name="remote", sagemaker_session=session) as run:
            est = SKLearn(entry_point="train.py", source_dir="src", framework_version="1.2-1", py_version="py3",
                          instance_count=1, instance_type="ml.m5.large", role=sagemaker.get_execution_role(),
                          environment={{"BUCKET": "{BUCKET}"}}, sagemaker_session=session)
            est.fit(logs=True)
            print("JOB", est.latest_training_job.name)
        """,
        tmp_path,
        timeout=600,
    )
    job = next(line.split()[1] for line in out.splitlines() if line.startswith("JOB "))
    session = platform.session()
    sm = session.client("sagemaker")
    run = sm.describe_trial_component(TrialComponentName=f"{exp}-remote")
    assert run["Parameters"]["rows_seen"]["NumberValue"] == 200
    loss = {m["MetricName"]: m for m in run["Metrics"]}["job-loss"]
    assert (loss["Count"], loss["Last"], loss["Min"]) == (3, pytest.approx(1 / 3), pytest.approx(1 / 3))
    body = session.client("s3").get_object(Bucket=BUCKET, Key="from-the-job/hello.txt")["Body"].read()
    assert body == b"hi"
    # the job's key was its own, and it went with the job
    logs = session.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=job)
    lines = [
        e["message"]
        for s in stream["logStreams"]
        for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=s["logStreamName"], startFromHead=True
        )["events"]
    ]
    key_id, secret = next(line.split()[1:3] for line in lines if line.startswith("KEY "))
    assert key_id != session.get_credentials().access_key
    revoked = boto3.session.Session().client(
        "sts",
        endpoint_url=platform.api_url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )
    with pytest.raises(ClientError) as err:
        revoked.get_caller_identity()
    assert err.value.response["Error"]["Code"] in ("InvalidClientTokenId", "UnrecognizedClientException")
