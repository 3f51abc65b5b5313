"""SageMaker Pipelines end to end: the SDK v2 example as the SageMaker docs write it, and boto3.

The docs' pipeline (PipelineSession and step_args: preprocess -> train -> evaluate with a
PropertyFile -> condition -> RegisterModel / Fail) runs three times: once, again from the cache,
and with a parameter that takes the else branch. Data are tiny so the module stays fast.
"""

from __future__ import annotations

import io
import json
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
BUCKET = "pipeline-tests"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

PREPROCESS = """
import glob, os
import pandas as pd
df = pd.concat([pd.read_csv(f, header=None) for f in sorted(glob.glob("/opt/ml/processing/input/*.csv"))])
df = df.sample(frac=1.0, random_state=0)
n = len(df)
train, validation, test = df.iloc[: int(0.7 * n)], df.iloc[int(0.7 * n) : int(0.85 * n)], df.iloc[int(0.85 * n) :]
for name, part in (("train", train), ("validation", validation), ("test", test)):
    os.makedirs(f"/opt/ml/processing/{name}", exist_ok=True)
    part.to_csv(f"/opt/ml/processing/{name}/{name}.csv", header=False, index=False)
"""

EVALUATE = """
import json, os, pathlib, pickle, tarfile
import numpy as np
import pandas as pd
import xgboost
with tarfile.open("/opt/ml/processing/model/model.tar.gz") as tar:
    tar.extractall(path=".")
model = xgboost.Booster()
try:
    model.load_model("xgboost-model")
except xgboost.core.XGBoostError:
    model = pickle.load(open("xgboost-model", "rb"))
df = pd.read_csv("/opt/ml/processing/test/test.csv", header=None)
y_test = df.iloc[:, 0].to_numpy()
predictions = model.predict(xgboost.DMatrix(df.iloc[:, 1:].values))
mse = float(np.mean((y_test - predictions) ** 2))
report = {"regression_metrics": {"mse": {"value": mse, "standard_deviation": float(np.std(y_test - predictions))}}}
pathlib.Path("/opt/ml/processing/evaluation").mkdir(parents=True, exist_ok=True)
with open("/opt/ml/processing/evaluation/evaluation.json", "w") as f:
    f.write(json.dumps(report))
"""

# The docs' pipeline, as https://docs.aws.amazon.com/sagemaker/latest/dg/define-pipeline.html writes it.
DOCS_PIPELINE = """
import json, sys
import sagemaker
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.model import Model
from sagemaker.model_metrics import MetricsSource, ModelMetrics
from sagemaker.processing import ProcessingInput, ProcessingOutput, ScriptProcessor
from sagemaker.sklearn.processing import SKLearnProcessor
from sagemaker.workflow.condition_step import ConditionStep
from sagemaker.workflow.conditions import ConditionLessThanOrEqualTo
from sagemaker.workflow.fail_step import FailStep
from sagemaker.workflow.functions import Join, JsonGet
from sagemaker.workflow.model_step import ModelStep
from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
from sagemaker.workflow.pipeline import Pipeline
from sagemaker.workflow.pipeline_context import PipelineSession
from sagemaker.workflow.properties import PropertyFile
from sagemaker.workflow.steps import CacheConfig, ProcessingStep, TrainingStep

role = sagemaker.get_execution_role()
pipeline_session = PipelineSession()
region = pipeline_session.boto_region_name
default_bucket = pipeline_session.default_bucket()
model_package_group_name = "AbaloneModelPackageGroupName"
processing_instance_count = ParameterInteger(name="ProcessingInstanceCount", default_value=1)
instance_type = ParameterString(name="TrainingInstanceType", default_value="ml.m5.xlarge")
model_approval_status = ParameterString(name="ModelApprovalStatus", default_value="PendingManualApproval")
input_data = ParameterString(name="InputData", default_value="s3://BUCKET/abalone/abalone-dataset.csv")
mse_threshold = ParameterFloat(name="MseThreshold", default_value=1e9)
cache_config = CacheConfig(enable_caching=True, expire_after="PT1H")

sklearn_processor = SKLearnProcessor(framework_version="1.2-1", instance_type="ml.m5.xlarge",
    instance_count=processing_instance_count, base_job_name="sklearn-abalone-process", role=role,
    sagemaker_session=pipeline_session)
processor_args = sklearn_processor.run(
    inputs=[ProcessingInput(source=input_data, destination="/opt/ml/processing/input")],
    outputs=[ProcessingOutput(output_name="train", source="/opt/ml/processing/train"),
             ProcessingOutput(output_name="validation", source="/opt/ml/processing/validation"),
             ProcessingOutput(output_name="test", source="/opt/ml/processing/test")],
    code="preprocess.py")
step_process = ProcessingStep(name="AbaloneProcess", step_args=processor_args, cache_config=cache_config)

model_path = f"s3://{default_bucket}/AbaloneTrain"
image_uri = sagemaker.image_uris.retrieve(framework="xgboost", region=region, version="1.7-1", py_version="py3",
                                          instance_type="ml.m5.xlarge")
xgb_train = Estimator(image_uri=image_uri, instance_type=instance_type, instance_count=1, output_path=model_path,
                      role=role, sagemaker_session=pipeline_session)
xgb_train.set_hyperparameters(objective="reg:squarederror", num_round=10, max_depth=5, eta=0.2, gamma=4,
                              min_child_weight=6, subsample=0.7)
train_args = xgb_train.fit(inputs={
    "train": TrainingInput(s3_data=step_process.properties.ProcessingOutputConfig.Outputs["train"].S3Output.S3Uri,
                           content_type="text/csv"),
    "validation": TrainingInput(
        s3_data=step_process.properties.ProcessingOutputConfig.Outputs["validation"].S3Output.S3Uri,
        content_type="text/csv")})
step_train = TrainingStep(name="AbaloneTrain", step_args=train_args, cache_config=cache_config)

script_eval = ScriptProcessor(image_uri=image_uri, command=["python3"], instance_type="ml.m5.xlarge", instance_count=1,
                              base_job_name="script-abalone-eval", role=role, sagemaker_session=pipeline_session)
eval_args = script_eval.run(
    inputs=[ProcessingInput(source=step_train.properties.ModelArtifacts.S3ModelArtifacts,
                            destination="/opt/ml/processing/model"),
            ProcessingInput(source=step_process.properties.ProcessingOutputConfig.Outputs["test"].S3Output.S3Uri,
                            destination="/opt/ml/processing/test")],
    outputs=[ProcessingOutput(output_name="evaluation", source="/opt/ml/processing/evaluation")],
    code="evaluation.py")
evaluation_report = PropertyFile(name="EvaluationReport", output_name="evaluation", path="evaluation.json")
step_eval = ProcessingStep(name="AbaloneEval", step_args=eval_args, property_files=[evaluation_report],
                           cache_config=cache_config)

model_metrics = ModelMetrics(model_statistics=MetricsSource(
    s3_uri="{}/evaluation.json".format(
        step_eval.arguments["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]),
    content_type="application/json"))
model = Model(image_uri=image_uri, model_data=step_train.properties.ModelArtifacts.S3ModelArtifacts,
              sagemaker_session=pipeline_session, role=role)
register_args = model.register(content_types=["text/csv"], response_types=["text/csv"],
    inference_instances=["ml.t2.medium", "ml.m5.xlarge"], transform_instances=["ml.m5.xlarge"],
    model_package_group_name=model_package_group_name, approval_status=model_approval_status,
    model_metrics=model_metrics)
step_register = ModelStep(name="AbaloneRegisterModel", step_args=register_args)

step_fail = FailStep(name="AbaloneMSEFail",
                     error_message=Join(on=" ", values=["Execution failed due to MSE >", mse_threshold]))
cond_lte = ConditionLessThanOrEqualTo(
    left=JsonGet(step_name=step_eval.name, property_file=evaluation_report, json_path="regression_metrics.mse.value"),
    right=mse_threshold)
step_cond = ConditionStep(name="AbaloneMSECond", conditions=[cond_lte], if_steps=[step_register],
                          else_steps=[step_fail])

pipeline = Pipeline(name="AbalonePipeline",
    parameters=[processing_instance_count, instance_type, model_approval_status, input_data, mse_threshold],
    steps=[step_process, step_train, step_eval, step_cond])
pipeline.upsert(role_arn=role)
pipeline.upsert(role_arn=role)  # a second upsert updates it (CreatePipeline answers "already exists")

results = []
for parameters in ({}, {}, {"MseThreshold": 0.0}):
    execution = pipeline.start(parameters=parameters)
    try:
        execution.wait(delay=1, max_attempts=600)
    except Exception as exc:
        print("WAIT", type(exc).__name__, exc)
    results.append({"describe": execution.describe(), "steps": execution.list_steps()})
print("RESULTS " + json.dumps(results, default=str))
"""


def _abalone(rows: int = 300, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 1.0, size=(rows, 7))
    y = 3 + 10 * x[:, 0] + 4 * x[:, 1] + rng.normal(scale=0.5, size=rows)
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.4f")
    return buf.getvalue().encode()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("pipelines")
    with running_platform(root / "home", root / "aws") as running:
        s3 = running.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="abalone/abalone-dataset.csv", Body=_abalone())
        features = b"\n".join(line.split(b",", 1)[1] for line in _abalone().splitlines())
        s3.put_object(Bucket=BUCKET, Key="features/features.csv", Body=features + b"\n")
        yield running


def _role(platform: RunningPlatform) -> str:
    account = platform.session().client("sts").get_caller_identity()["Account"]
    return f"arn:aws:iam::{account}:role/OpenSageExecutionRole"


def _steps(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["StepName"]: s for s in result["steps"]}


def test_docs_pipeline_runs_then_hits_the_cache_then_takes_the_else_branch(
    platform: RunningPlatform, tmp_path: Path
) -> None:
    (tmp_path / "preprocess.py").write_text(textwrap.dedent(PREPROCESS))
    (tmp_path / "evaluation.py").write_text(textwrap.dedent(EVALUATE))
    out = platform.run_python(DOCS_PIPELINE.replace("BUCKET", BUCKET), tmp_path, timeout=600)
    results = json.loads(out.split("RESULTS ", 1)[1].splitlines()[0])
    first, second, third = results
    reasons = {s["StepName"]: s.get("FailureReason") for s in first["steps"]}
    assert first["describe"]["PipelineExecutionStatus"] == "Succeeded", reasons
    steps = _steps(first)
    assert set(steps) == {
        "AbaloneProcess",
        "AbaloneTrain",
        "AbaloneEval",
        "AbaloneMSECond",
        "AbaloneRegisterModel-RegisterModel",
    }
    assert all(s["StepStatus"] == "Succeeded" for s in steps.values())
    assert steps["AbaloneMSECond"]["Metadata"]["Condition"]["Outcome"] == "True"
    assert ":training-job/" in steps["AbaloneTrain"]["Metadata"]["TrainingJob"]["Arn"]
    package = steps["AbaloneRegisterModel-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]
    assert package.endswith("model-package/abalonemodelpackagegroupname/1")
    assert not any("CacheHitResult" in s for s in steps.values())

    assert second["describe"]["PipelineExecutionStatus"] == "Succeeded", second
    cached = _steps(second)
    source = first["describe"]["PipelineExecutionArn"]
    for name in ("AbaloneProcess", "AbaloneTrain", "AbaloneEval"):
        assert cached[name]["CacheHitResult"]["SourcePipelineExecutionArn"] == source, cached[name]
        assert cached[name]["Metadata"] == steps[name]["Metadata"]
    assert cached["AbaloneRegisterModel-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"].endswith("/2")

    assert third["describe"]["PipelineExecutionStatus"] == "Failed", third
    failed = _steps(third)
    assert failed["AbaloneMSECond"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert "AbaloneRegisterModel-RegisterModel" not in failed
    assert failed["AbaloneMSEFail"]["StepStatus"] == "Failed"
    assert failed["AbaloneMSEFail"]["FailureReason"] == "Execution failed due to MSE > 0.0"
    assert failed["AbaloneMSEFail"]["Metadata"]["Fail"]["ErrorMessage"] == "Execution failed due to MSE > 0.0"
    sm = platform.session().client("sagemaker")
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=third["describe"]["PipelineExecutionArn"])
    assert {"Name": "MseThreshold", "Value": "0.0"} in params["PipelineParameters"]


SLEEPER = """
import json, os, sys, time
seconds = float(os.environ.get("SLEEP", "0"))
time.sleep(seconds)
if os.environ.get("FAIL"):
    sys.exit("the script failed on purpose")
os.makedirs("/opt/ml/processing/out", exist_ok=True)
json.dump({"slept": seconds, "nested": {"values": [1, 2, 3]}}, open("/opt/ml/processing/out/report.json", "w"))
"""


def _code(platform: RunningPlatform) -> str:
    platform.session().client("s3").put_object(Bucket=BUCKET, Key="code/sleeper.py", Body=SLEEPER.encode())
    return f"s3://{BUCKET}/code/sleeper.py"


def _processing(platform: RunningPlatform, name: str, env: dict[str, Any], count: Any = 1, **extra: Any) -> dict:
    return {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceType": "ml.m5.large", "InstanceCount": count, "VolumeSizeInGB": 5}
            },
            "AppSpecification": {
                "ImageUri": SKLEARN_IMAGE,
                "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/sleeper.py"],
            },
            "Environment": env,
            "RoleArn": _role(platform),
            "ProcessingInputs": [
                {
                    "InputName": "code",
                    "S3Input": {
                        "S3Uri": _code(platform),
                        "LocalPath": "/opt/ml/processing/input/code",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "out",
                        "S3Output": {
                            "S3Uri": {
                                "Std:Join": {
                                    "On": "/",
                                    "Values": [f"s3://{BUCKET}/runs", {"Get": "Execution.PipelineExecutionId"}, name],
                                }
                            },
                            "LocalPath": "/opt/ml/processing/out",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
        },
        **extra,
    }


def _definition(steps: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": parameters or [], "Steps": steps})


def _create(platform: RunningPlatform, steps: list[dict[str, Any]], **extra: Any) -> str:
    name = f"p-{uuid.uuid4().hex[:8]}"
    sm = platform.session().client("sagemaker")
    sm.create_pipeline(PipelineName=name, RoleArn=_role(platform), PipelineDefinition=_definition(steps), **extra)
    return name


def _wait(platform: RunningPlatform, arn: str, timeout: float = 180, until: tuple[str, ...] = ()) -> dict[str, Any]:
    sm = platform.session().client("sagemaker")
    deadline = time.monotonic() + timeout
    while True:
        d = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        if d["PipelineExecutionStatus"] in (until or ("Succeeded", "Failed", "Stopped")):
            return d
        assert time.monotonic() < deadline, d
        time.sleep(0.3)


def _listed(platform: RunningPlatform, arn: str) -> dict[str, dict[str, Any]]:
    sm = platform.session().client("sagemaker")
    return {
        s["StepName"]: s for s in sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    }


def _refused(platform: RunningPlatform, steps: list[dict[str, Any]], parameters: Any = None) -> str:
    sm = platform.session().client("sagemaker")
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(
            PipelineName=f"bad-{uuid.uuid4().hex[:8]}",
            RoleArn=_role(platform),
            PipelineDefinition=_definition(steps, parameters),
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    return err.value.response["Error"]["Message"]


def test_bad_definitions_and_parameters_are_refused_naming_the_step(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    ok = _processing(platform, "A", {})
    missing_step = {**ok, "Name": "B", "DependsOn": ["Nope"]}
    assert "Step 'B': DependsOn names a step 'Nope'" in _refused(platform, [ok, missing_step])
    ref = _processing(platform, "B", {"X": {"Get": "Steps.Ghost.ProcessingJobName"}})
    assert "Step 'B'" in (msg := _refused(platform, [ok, ref])) and "no step 'Ghost'" in msg
    param = _processing(platform, "B", {"X": {"Get": "Parameters.Missing"}})
    assert "no parameter 'Missing'" in _refused(platform, [param])
    cycle_a = {**_processing(platform, "A", {}), "DependsOn": ["B"]}
    cycle_b = {**_processing(platform, "B", {}), "DependsOn": ["A"]}
    assert "cycle" in _refused(platform, [cycle_a, cycle_b])
    typo = _processing(platform, "T", {})
    typo["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceKind"] = "ml.m5.large"
    assert (
        "Step 'T' (CreateProcessingJob): Arguments.ProcessingResources.ClusterConfig.InstanceKind is not a member"
        in (_refused(platform, [typo]))
    )
    assert "unknown step Type 'Magic'" in _refused(platform, [{"Name": "M", "Type": "Magic", "Arguments": {}}])
    assert "Step 'L' is of type Lambda" in _refused(platform, [{"Name": "L", "Type": "Lambda", "Arguments": {}}])
    condition = {
        "Name": "C",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "GreaterThan", "LeftValue": {"Get": "Parameters.Name"}, "RightValue": 3}],
            "IfSteps": [],
            "ElseSteps": [],
        },
    }
    msg = _refused(platform, [condition], [{"Name": "Name", "Type": "String", "DefaultValue": "x"}])
    assert (
        "Step 'C': Conditions[0] (GreaterThan) compares LeftValue of type String with RightValue of type Number" in msg
    )
    assert not sm.list_pipelines(PipelineNamePrefix="bad")["PipelineSummaries"]  # nothing was created

    name = f"p-{uuid.uuid4().hex[:8]}"
    counted = _processing(platform, "A", {}, count={"Get": "Parameters.Count"})
    sm.create_pipeline(
        PipelineName=name,
        RoleArn=_role(platform),
        PipelineDefinition=_definition([counted], [{"Name": "Count", "Type": "Integer", "DefaultValue": 1}]),
    )
    with pytest.raises(ClientError) as err:  # Pipeline.upsert relies on this message
        sm.create_pipeline(PipelineName=name, RoleArn=_role(platform), PipelineDefinition=_definition([ok]))
    assert "already exists" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName=name, PipelineParameters=[{"Name": "Count", "Value": "two"}])
    assert (
        "parameter 'Count' is of type Integer; 'two' is not a valid Integer" in err.value.response["Error"]["Message"]
    )
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName=name, PipelineParameters=[{"Name": "Other", "Value": "1"}])
    assert "no parameter 'Other'" in err.value.response["Error"]["Message"]
    assert sm.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"] == []  # nothing started
    described = sm.describe_pipeline(PipelineName=name)
    assert described["PipelineStatus"] == "Active" and json.loads(described["PipelineDefinition"])["Steps"]
    assert [p["PipelineName"] for p in sm.list_pipelines(PipelineNamePrefix=name)["PipelineSummaries"]] == [name]
    assert sm.delete_pipeline(PipelineName=name, ClientRequestToken="d" * 32)["PipelineArn"] == described["PipelineArn"]
    with pytest.raises(ClientError) as err:
        sm.describe_pipeline(PipelineName=name)
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


def test_retries_then_the_jobs_own_failure_reason(platform: RunningPlatform) -> None:
    """A step refused for lack of capacity is retried as its RetryPolicy says; a script's failure is not."""
    retry = {"ExceptionType": ["SageMaker.RESOURCE_LIMIT"], "IntervalSeconds": 1, "BackoffRate": 1.0, "MaxAttempts": 2}
    too_big = _processing(platform, "TooBig", {}, count=9, RetryPolicies=[retry])  # over the 8-instance quota
    broken = _processing(platform, "Broken", {"FAIL": "1"}, RetryPolicies=[retry])
    sm = platform.session().client("sagemaker")
    name = _create(platform, [too_big, broken])
    arn = sm.start_pipeline_execution(PipelineName=name)["PipelineExecutionArn"]
    d = _wait(platform, arn)
    assert d["PipelineExecutionStatus"] == "Failed"
    assert d["FailureReason"] == "Step failure: One or multiple steps failed."
    steps = _listed(platform, arn)
    assert steps["TooBig"]["StepStatus"] == "Failed" and steps["TooBig"]["AttemptCount"] == 3
    assert steps["TooBig"]["FailureReason"].startswith("ResourceLimitExceeded:")
    assert steps["Broken"]["AttemptCount"] == 1
    job = steps["Broken"]["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[1]
    reason = sm.describe_processing_job(ProcessingJobName=job)["FailureReason"]
    assert steps["Broken"]["FailureReason"] == reason and "the script failed on purpose" in reason


def test_stop_in_the_middle_then_retry(platform: RunningPlatform) -> None:
    first = _processing(platform, "Slow", {"SLEEP": "60"})
    after = {**_processing(platform, "After", {}), "DependsOn": ["Slow"]}
    sm = platform.session().client("sagemaker")
    name = _create(platform, [first, after])
    arn = sm.start_pipeline_execution(PipelineName=name, ClientRequestToken="t" * 32)["PipelineExecutionArn"]
    again = sm.start_pipeline_execution(PipelineName=name, ClientRequestToken="t" * 32)["PipelineExecutionArn"]
    assert again == arn  # idempotent on the token
    deadline = time.monotonic() + 60
    while "Slow" not in _listed(platform, arn):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    sm.stop_pipeline_execution(PipelineExecutionArn=arn)
    d = _wait(platform, arn, timeout=60)
    assert d["PipelineExecutionStatus"] == "Stopped"
    steps = _listed(platform, arn)
    assert steps["Slow"]["StepStatus"] == "Stopped" and "After" not in steps
    job = steps["Slow"]["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[1]
    assert sm.describe_processing_job(ProcessingJobName=job)["ProcessingJobStatus"] == "Stopped"
    assert len(sm.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"]) == 1


def test_callback_step_waits_for_its_token_and_passes_its_outputs(platform: RunningPlatform) -> None:
    callback = {
        "Name": "Approve",
        "Type": "Callback",
        "Arguments": {"SqsQueueUrl": "https://sqs/q"},
        "OutputParameters": [{"OutputName": "verdict", "OutputType": "String"}],
    }
    check = {
        "Name": "Check",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                {
                    "Type": "Equals",
                    "LeftValue": {"Get": "Steps.Approve.OutputParameters['verdict']"},
                    "RightValue": "go",
                }
            ],
            "IfSteps": [],
            "ElseSteps": [
                {
                    "Name": "Refused",
                    "Type": "Fail",
                    "Arguments": {
                        "ErrorMessage": {
                            "Std:Join": {
                                "On": " ",
                                "Values": ["verdict was", {"Get": "Steps.Approve.OutputParameters['verdict']"}],
                            }
                        }
                    },
                }
            ],
        },
    }
    sm = platform.session().client("sagemaker")
    name = _create(platform, [callback, check])
    arn = sm.start_pipeline_execution(PipelineName=name)["PipelineExecutionArn"]
    deadline = time.monotonic() + 30
    while "Approve" not in _listed(platform, arn):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    token = _listed(platform, arn)["Approve"]["Metadata"]["Callback"]["CallbackToken"]
    answered = sm.send_pipeline_execution_step_success(
        CallbackToken=token, OutputParameters=[{"Name": "verdict", "Value": "stop"}]
    )
    assert answered["PipelineExecutionArn"] == arn
    d = _wait(platform, arn, timeout=30)
    steps = _listed(platform, arn)
    assert d["PipelineExecutionStatus"] == "Failed"
    assert steps["Refused"]["FailureReason"] == "verdict was stop"
    with pytest.raises(ClientError):
        sm.send_pipeline_execution_step_success(CallbackToken=token)


TUNING_PIPELINE = """
import json
import sagemaker
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.model import Model
from sagemaker.transformer import Transformer
from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter
from sagemaker.workflow.endpoint_step import EndpointConfigStep, EndpointStep
from sagemaker.workflow.model_step import ModelStep
from sagemaker.workflow.pipeline import Pipeline
from sagemaker.workflow.pipeline_context import PipelineSession
from sagemaker.workflow.steps import TransformStep, TuningStep

role = sagemaker.get_execution_role()
session = PipelineSession()
image_uri = sagemaker.image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1")
xgb = Estimator(image_uri, role, instance_count=1, instance_type="ml.m5.large",
                output_path="s3://BUCKET/tuning-out", sagemaker_session=session)
xgb.set_hyperparameters(objective="reg:squarederror", num_round=5)
tuner = HyperparameterTuner(xgb, objective_metric_name="validation:rmse", objective_type="Minimize",
                            hyperparameter_ranges={"eta": ContinuousParameter(0.1, 0.5),
                                                   "max_depth": IntegerParameter(2, 5)},
                            max_jobs=2, max_parallel_jobs=2)
data = TrainingInput("s3://BUCKET/abalone/abalone-dataset.csv", content_type="text/csv")
step_tune = TuningStep(name="Tune", step_args=tuner.fit({"train": data, "validation": data}))
best = Model(image_uri=image_uri, model_data=step_tune.get_top_model_s3_uri(top_k=0, s3_bucket="BUCKET",
             prefix="tuning-out"), sagemaker_session=session, role=role)
step_model = ModelStep(name="BestModel", step_args=best.create(instance_type="ml.m5.large"))
transformer = Transformer(model_name=step_model.properties.ModelName, instance_count=1, instance_type="ml.m5.large",
                          output_path="s3://BUCKET/scored", assemble_with="Line", sagemaker_session=session)
step_score = TransformStep(name="Score", step_args=transformer.transform(
    "s3://BUCKET/features/", content_type="text/csv", split_type="Line"))
step_config = EndpointConfigStep(name="Config", step_args=session.create_endpoint_config(
    name="best-config", model_name=step_model.properties.ModelName, initial_instance_count=1,
    instance_type="ml.m5.large"))
step_endpoint = EndpointStep(name="Serve", step_args=session.create_endpoint(
    endpoint_name="best-endpoint", config_name=step_config.properties.EndpointConfigName))
pipeline = Pipeline(name="TuningPipeline", steps=[step_tune, step_model, step_score, step_config, step_endpoint])
pipeline.upsert(role_arn=role)
execution = pipeline.start()
try:
    execution.wait(delay=1, max_attempts=600)
except Exception as exc:
    print("WAIT", type(exc).__name__)
print("RESULTS " + json.dumps({"describe": execution.describe(), "steps": execution.list_steps()}, default=str))
"""


def test_tuning_step_and_its_top_model_scored_and_served(platform: RunningPlatform, tmp_path: Path) -> None:
    out = platform.run_python(TUNING_PIPELINE.replace("BUCKET", BUCKET), tmp_path, timeout=600)
    result = json.loads(out.split("RESULTS ", 1)[1].splitlines()[0])
    reasons = {s["StepName"]: s.get("FailureReason") for s in result["steps"]}
    assert result["describe"]["PipelineExecutionStatus"] == "Succeeded", reasons
    steps = _steps(result)
    sm = platform.session().client("sagemaker")
    tuning = steps["Tune"]["Metadata"]["TuningJob"]["Arn"].rsplit("/", 1)[1]
    best = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning)["BestTrainingJob"]
    model = steps["BestModel-CreateModel"]["Metadata"]["Model"]["Arn"].rsplit("/", 1)[1]
    url = sm.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"]
    assert url == f"s3://{BUCKET}/tuning-out/{best['TrainingJobName']}/output/model.tar.gz"
    artifacts = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])["ModelArtifacts"]
    assert artifacts["S3ModelArtifacts"] == url
    transform = steps["Score"]["Metadata"]["TransformJob"]["Arn"].rsplit("/", 1)[1]
    assert sm.describe_transform_job(TransformJobName=transform)["ModelName"] == model
    scored = platform.session().client("s3").get_object(Bucket=BUCKET, Key="scored/features.csv.out")["Body"].read()
    assert len(scored.decode().split()) == 300
    assert steps["Serve"]["Metadata"]["Endpoint"]["Arn"].endswith(":endpoint/best-endpoint")
    assert sm.describe_endpoint(EndpointName="best-endpoint")["EndpointStatus"] == "InService"
    runtime = platform.session().client("sagemaker-runtime")
    answer = runtime.invoke_endpoint(
        EndpointName="best-endpoint", ContentType="text/csv", Body=b"0.5,0.5,0.5,0.5,0.5,0.5,0.5"
    )
    assert float(answer["Body"].read()) > 0
    sm.delete_endpoint(EndpointName="best-endpoint")


def test_an_execution_survives_a_platform_restart(tmp_path: Path) -> None:
    home, aws = tmp_path / "home", tmp_path / "aws"
    with running_platform(home, aws) as first:
        s3 = first.session().client("s3")
        s3.create_bucket(Bucket=BUCKET)
        slow = _processing(first, "Slow", {"SLEEP": "6"})
        after = {**_processing(first, "After", {}), "DependsOn": ["Slow"]}
        name = _create(first, [slow, after])
        sm = first.session().client("sagemaker")
        arn = sm.start_pipeline_execution(PipelineName=name)["PipelineExecutionArn"]
        deadline = time.monotonic() + 60
        while _listed(first, arn).get("Slow", {}).get("Metadata") is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    with running_platform(home, aws) as second:
        d = _wait(second, arn, timeout=180)
        steps = _listed(second, arn)
        assert d["PipelineExecutionStatus"] == "Succeeded", steps
        assert steps["Slow"]["AttemptCount"] == 2 and steps["After"]["AttemptCount"] == 1
        jobs = second.session().client("sagemaker").list_processing_jobs(NameContains=execution_id_of(arn))
        statuses = sorted(j["ProcessingJobStatus"] for j in jobs["ProcessingJobSummaries"])
        assert statuses == ["Completed", "Completed", "Failed"]  # the one the restart ended, run again


def execution_id_of(arn: str) -> str:
    return arn.rsplit("/", 1)[1]


def test_definition_from_s3_parallelism_retry_and_selective_execution(platform: RunningPlatform) -> None:
    """A definition of more than 100 KB from S3 (as the SDK sends those); two independent steps run one
    at a time under MaxParallelExecutionSteps 1; a failed execution retried runs only what failed; a
    selective execution runs the selected step and shows the other's earlier result."""
    s3, sm = platform.session().client("s3"), platform.session().client("sagemaker")
    flaky = _processing(platform, "Flaky", {"SLEEP": "0"})
    flaky["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3Uri"] = f"s3://{BUCKET}/code/flaky/sleeper.py"
    flaky["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3DataType"] = "S3Prefix"
    s3.put_object(Bucket=BUCKET, Key="code/flaky/sleeper.py", Body=b"import sys\nsys.exit('not yet')\n")
    steady = _processing(platform, "Steady", {"SLEEP": "0"})
    other = _processing(platform, "Other", {"SLEEP": "0"})
    flaky["DependsOn"] = ["Steady", "Other"]
    text = json.dumps(
        {"Version": "2020-12-01", "Metadata": {"Padding": "x" * 120_000}, "Steps": [steady, other, flaky]}
    )
    s3.put_object(Bucket=BUCKET, Key="definitions/big.json", Body=text.encode())
    name = f"p-{uuid.uuid4().hex[:8]}"
    sm.create_pipeline(
        PipelineName=name,
        RoleArn=_role(platform),
        ParallelismConfiguration={"MaxParallelExecutionSteps": 1},
        PipelineDefinitionS3Location={"Bucket": BUCKET, "ObjectKey": "definitions/big.json"},
    )
    assert len(sm.describe_pipeline(PipelineName=name)["PipelineDefinition"]) == len(text)
    arn = sm.start_pipeline_execution(PipelineName=name)["PipelineExecutionArn"]
    assert _wait(platform, arn)["PipelineExecutionStatus"] == "Failed"
    steps = _listed(platform, arn)
    first, second, third = sorted(steps.values(), key=lambda s: s["StartTime"])
    assert second["StartTime"] >= first["EndTime"] and third["StepName"] == "Flaky"  # one at a time
    assert steps["Flaky"]["StepStatus"] == "Failed" and "not yet" in steps["Flaky"]["FailureReason"]
    assert sm.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)["PipelineDefinition"] == text

    s3.put_object(Bucket=BUCKET, Key="code/flaky/sleeper.py", Body=SLEEPER.encode())
    sm.retry_pipeline_execution(PipelineExecutionArn=arn)
    assert _wait(platform, arn)["PipelineExecutionStatus"] == "Succeeded"
    retried = _listed(platform, arn)
    assert retried["Flaky"]["AttemptCount"] == 2 and retried["Steady"]["AttemptCount"] == 1
    assert retried["Steady"]["Metadata"] == steps["Steady"]["Metadata"]  # not run again

    selective = sm.start_pipeline_execution(
        PipelineName=name,
        SelectiveExecutionConfig={"SourcePipelineExecutionArn": arn, "SelectedSteps": [{"StepName": "Flaky"}]},
    )["PipelineExecutionArn"]
    assert _wait(platform, selective)["PipelineExecutionStatus"] == "Succeeded"
    chosen = _listed(platform, selective)
    assert chosen["Steady"]["SelectiveExecutionResult"]["SourcePipelineExecutionArn"] == arn
    assert chosen["Flaky"]["Metadata"] != retried["Flaky"]["Metadata"]
    sm.update_pipeline_execution(PipelineExecutionArn=selective, PipelineExecutionDisplayName="renamed")
    assert sm.describe_pipeline_execution(PipelineExecutionArn=selective)["PipelineExecutionDisplayName"] == "renamed"
