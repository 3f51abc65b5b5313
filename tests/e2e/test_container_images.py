"""Your own container images: built here without a Docker daemon (BusyBox and shell scripts), pushed to the
platform's registry, then trained with the SDK's Estimator(image_uri=...), deployed and invoked, used by a
batch transform and a processing job, and the failures a user meets said plainly."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import oci_kit
from helpers import RunningPlatform, running_platform

BUSYBOX = oci_kit.busybox()
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="no static BusyBox (Debian's busybox-static) to build images")
CONFIG = {"Env": ["PATH=/usr/local/bin:/bin", "MARKER=from-the-image"], "WorkingDir": "/work"}
ROWS = "1,a\n4,b\n7,c\n8,d\n"  # the first column's mean is 5


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("images")
    with running_platform(root / "home", root / "aws") as running:
        yield running


def _registry(platform: RunningPlatform) -> httpx.Client:
    data = platform.session().client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return httpx.Client(base_url=data["proxyEndpoint"], auth=(user, password), timeout=60)


def _oci_layout(directory: Path, config: bytes, layers: list[bytes], manifest: bytes) -> None:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (config, *layers, manifest):
        (blobs / oci_kit.digest(data).split(":")[1]).write_bytes(data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entry = {"mediaType": oci_kit.OCI_MANIFEST, "size": len(manifest), "digest": oci_kit.digest(manifest)}
    entry["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


@pytest.fixture(scope="module")
def image(platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test image, pushed (with skopeo where it is installed, by hand over the distribution API elsewhere)
    and named as ECR names it: ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>:v1``."""
    assert BUSYBOX is not None
    repo = f"byoc-{uuid.uuid4().hex[:6]}"
    uri = platform.session().client("ecr").create_repository(repositoryName=repo)["repository"]["repositoryUri"]
    layers = [oci_kit.base_layer(BUSYBOX), oci_kit.app_layer()]
    config, manifest = oci_kit.image(layers, CONFIG, oci_kit.OCI_MANIFEST)
    if shutil.which("skopeo") is None:
        with _registry(platform) as client:
            oci_kit.push(client, repo, "v1", config, layers, manifest)
        return f"{uri}:v1"
    data = platform.session().client("ecr").get_authorization_token()["authorizationData"][0]
    creds = base64.b64decode(data["authorizationToken"]).decode()  # AWS:<what get-login-password prints>
    layout = tmp_path_factory.mktemp("layout")
    _oci_layout(layout, config, layers, manifest)
    target = f"docker://{platform.shell_env()['OPENSAGE_REGISTRY']}/{repo}:v1"
    run = subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:v1", target],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return f"{uri}:v1"


def _train_data(platform: RunningPlatform) -> str:
    s3 = platform.session().client("s3")
    bucket = f"byoc-data-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="train/rows.csv", Body=ROWS.encode())
    return bucket


SDK_FIT_DEPLOY = """
import json
import boto3
import sagemaker
from sagemaker.estimator import Estimator
from sagemaker.serializers import CSVSerializer
session = sagemaker.Session()
estimator = Estimator(
    image_uri="{image}", role=sagemaker.get_execution_role(), instance_count=1, instance_type="ml.m5.large",
    hyperparameters={{"scale": "2"}}, sagemaker_session=session,
    metric_definitions=[{{"Name": "train:mean", "Regex": "train-mean: ([0-9.]+)"}}],
)
estimator.fit({{"train": "s3://{bucket}/train/"}}, wait=False)
job = session.wait_for_job(estimator.latest_training_job.name, poll=1)
predictor = estimator.deploy(1, "ml.m5.large", serializer=CSVSerializer(), wait=False)
session.wait_for_endpoint(predictor.endpoint_name, poll=1)
answer = predictor.predict("3\\n5\\n9\\n").decode()
print("RESULT", json.dumps({{"answer": answer, "model": estimator.model_data,
                            "metrics": {{m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}}}}))
predictor.delete_endpoint()
"""


def test_sdk_estimator_with_your_image_fits_deploys_and_predicts(
    platform: RunningPlatform, image: str, tmp_path: Path
) -> None:
    bucket = _train_data(platform)
    out = platform.run_python(SDK_FIT_DEPLOY.format(image=image, bucket=bucket), tmp_path, timeout=300)
    found = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert found["answer"].split() == ["-4.0000", "0.0000", "8.0000"]  # (x - 5) * 2, by the image's own server
    assert found["metrics"] == {"train:mean": 5.0}
    bucket_name, key = found["model"].removeprefix("s3://").split("/", 1)
    archive = tmp_path / "model.tar.gz"
    platform.session().client("s3").download_file(bucket_name, key, str(archive))
    with tarfile.open(archive) as tar:
        files = {m.name.removeprefix("./"): tar.extractfile(m).read().decode() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert files == {"model.txt": "5.0000 2\n", "marker.txt": "from-the-image\n"}  # the image's ENV reached it


def _training_job(platform: RunningPlatform, image: str, bucket: str, **hyperparameters: str) -> dict[str, Any]:
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    name = f"byoc-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        HyperParameters=hyperparameters,
        InputDataConfig=[
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/train/"}},
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 120},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = sm.describe_training_job(TrainingJobName=name)
        if job["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"training job {name} did not end")


def _wait(describe: Any, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = describe()
        if found[key] in ("Completed", "Failed", "Stopped", "InService"):
            return found
        time.sleep(0.3)
    raise AssertionError(f"{key} did not settle")


def test_batch_transform_and_processing_run_your_image(platform: RunningPlatform, image: str) -> None:
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    bucket = _train_data(platform)
    trained = _training_job(platform, image, bucket, scale="1")
    assert trained["TrainingJobStatus"] == "Completed", trained.get("FailureReason")
    role = trained["RoleArn"]
    model = f"byoc-model-{uuid.uuid4().hex[:6]}"
    sm.create_model(
        ModelName=model,
        PrimaryContainer={"Image": image, "ModelDataUrl": trained["ModelArtifacts"]["S3ModelArtifacts"]},
        ExecutionRoleArn=role,
    )
    s3.put_object(Bucket=bucket, Key="batch/in.csv", Body=b"10\n2\n")
    transform = f"byoc-transform-{uuid.uuid4().hex[:6]}"
    sm.create_transform_job(
        TransformJobName=transform,
        ModelName=model,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/batch/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"s3://{bucket}/batch-out/", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    done = _wait(lambda: sm.describe_transform_job(TransformJobName=transform), "TransformJobStatus")
    assert done["TransformJobStatus"] == "Completed", done.get("FailureReason")
    output = s3.get_object(Bucket=bucket, Key="batch-out/in.csv.out")["Body"].read().decode()
    assert output.split() == ["5.0000", "-3.0000"]

    processing = f"byoc-processing-{uuid.uuid4().hex[:6]}"
    sm.create_processing_job(
        ProcessingJobName=processing,
        AppSpecification={"ImageUri": image, "ContainerEntrypoint": ["process"], "ContainerArguments": ["--twice"]},
        ProcessingInputs=[
            {
                "InputName": "rows",
                "S3Input": {
                    "S3Uri": f"s3://{bucket}/train/",
                    "LocalPath": "/opt/ml/processing/input",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
        ProcessingOutputConfig={
            "Outputs": [
                {
                    "OutputName": "doubled",
                    "S3Output": {
                        "S3Uri": f"s3://{bucket}/processed/",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}},
        RoleArn=role,
    )
    done = _wait(lambda: sm.describe_processing_job(ProcessingJobName=processing), "ProcessingJobStatus")
    assert done["ProcessingJobStatus"] == "Completed", done.get("FailureReason")
    doubled = s3.get_object(Bucket=bucket, Key="processed/doubled.csv")["Body"].read().decode()
    assert doubled.split() == ["2", "8", "14", "16"]
    logs = session.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/ProcessingJobs", logStreamNamePrefix=processing)[
        "logStreams"
    ][0]["logStreamName"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/ProcessingJobs", logStreamName=stream)["events"]
    assert any("process: 4 rows, args: --twice" in e["message"] for e in events)
    sm.delete_model(ModelName=model)


def test_a_failing_image_a_missing_tag_and_a_corrupt_layer_say_so(platform: RunningPlatform, image: str) -> None:
    assert BUSYBOX is not None
    session = platform.session()
    bucket = _train_data(platform)
    failed = _training_job(platform, image, bucket, fail="yes")
    assert failed["TrainingJobStatus"] == "Failed"
    assert "the training data has no usable rows" in failed["FailureReason"], failed["FailureReason"]

    missing = _training_job(platform, image.rsplit(":", 1)[0] + ":nope", bucket)
    assert missing["TrainingJobStatus"] == "Failed"
    assert "has no image 'nope'" in missing["FailureReason"], missing["FailureReason"]

    # an image whose layer is damaged in the object store after its push (a disk fault)
    repo = f"corrupt-{uuid.uuid4().hex[:6]}"
    uri = session.client("ecr").create_repository(repositoryName=repo)["repository"]["repositoryUri"]
    layers = [oci_kit.base_layer(BUSYBOX), oci_kit.app_layer(oci_kit.TRAIN + f"# {repo}\n")]
    config, manifest = oci_kit.image(layers, CONFIG)
    with _registry(platform) as client:
        oci_kit.push(client, repo, "v1", config, layers, manifest)
    account = session.client("sts").get_caller_identity()["Account"]
    key = "blobs/" + oci_kit.digest(layers[1]).replace(":", "/")
    session.client("s3").put_object(Bucket=f"opensage-registry-{account}", Key=key, Body=layers[1][:-40] + b"x" * 40)
    corrupt = _training_job(platform, f"{uri}:v1", bucket)
    assert corrupt["TrainingJobStatus"] == "Failed"
    assert "does not match its digest" in corrupt["FailureReason"], corrupt["FailureReason"]

    # an image whose entry point is not in it
    broken_config, broken = oci_kit.image(layers[:1], {**CONFIG, "Entrypoint": ["/usr/local/bin/absent"]})
    with _registry(platform) as client:
        oci_kit.push(client, repo, "broken", broken_config, layers[:1], broken)
    absent = _training_job(platform, f"{uri}:broken", bucket)
    assert absent["TrainingJobStatus"] == "Failed"
    assert "/usr/local/bin/absent" in absent["FailureReason"], absent["FailureReason"]

    sm = session.client("sagemaker")
    model = f"byoc-missing-{uuid.uuid4().hex[:6]}"
    sm.create_model(
        ModelName=model,
        PrimaryContainer={"Image": image.rsplit(":", 1)[0] + ":nope"},
        ExecutionRoleArn=failed["RoleArn"],
    )
    sm.create_endpoint_config(
        EndpointConfigName=model,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName=model, EndpointConfigName=model)
    ended = _wait(lambda: sm.describe_endpoint(EndpointName=model), "EndpointStatus")
    assert ended["EndpointStatus"] == "Failed" and "has no image 'nope'" in ended["FailureReason"], ended
    sm.delete_endpoint(EndpointName=model)
    sm.delete_endpoint_config(EndpointConfigName=model)
    sm.delete_model(ModelName=model)
