"""``opensage up --compute ray --ray-address``: a Ray cluster of two nodes (a head and one more, each its own
``ray start`` with token authentication on) that the platform joins. A two-instance training job runs on both
nodes and makes the model a local run makes; an endpoint of two instances serves from both nodes and outlives
the kill of one node's actor."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from helpers import RunningPlatform, is_model_server, running_platform
from ray_kit import Cluster

pytest.importorskip("ray")
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
PYTHON = "763104351884.dkr.ecr.us-east-1.amazonaws.com/opensage-python:latest"
BUCKET = "ray-cluster"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # the second node has a GPU; a third does not see the tests' files, the platform's home among them
    made = Cluster(gpus=1, hide=tmp_path_factory.getbasetemp())
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def on_ray(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("on-ray")
    args = ("--compute", "ray", "--ray-address", cluster.address)
    with running_platform(root / "home", root / "aws", extra_args=args, extra_env=cluster.env, timeout=180) as up:
        yield up


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("local")
    with running_platform(root / "home", root / "aws") as up:
        yield up


def _placements(platform: RunningPlatform, job: str) -> dict[str, str]:
    """host -> Ray node id, from the platform's log of where each container of ``job`` runs."""
    text = (platform.home.parent / f"{platform.home.name}-up.log").read_text(errors="replace")  # running_platform's
    lines = [line for line in text.splitlines() if re.search(rf"-job/{re.escape(job)}: ", line)]
    return dict(re.findall(r"(algo-\d+) runs on Ray node (\w+)", "\n".join(lines)))


def _train(platform: RunningPlatform, instances: int = 2) -> dict[str, Any]:
    """An XGBoost job of ``instances`` instances over as many files, one per instance; returns its description."""
    session = platform.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    prefix = f"train-{instances}"
    for part in range(instances):
        body = io.StringIO()
        np.savetxt(body, np.column_stack([y, x])[part::instances], delimiter=",", fmt="%.5f")
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/part-{part}.csv", Body=body.getvalue().encode())
    account = session.client("sts").get_caller_identity()["Account"]
    name = f"two-nodes-{uuid.uuid4().hex[:8]}"
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        HyperParameters={"objective": "binary:logistic", "num_round": "30", "max_depth": "4", "eta": "0.3"},
        InputDataConfig=[
            {
                "ChannelName": "train",
                "ContentType": "text/csv",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://{BUCKET}/{prefix}/",
                        "S3DataDistributionType": "ShardedByS3Key",
                    }
                },
            }
        ],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": instances, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    deadline = time.monotonic() + 300
    while (job := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    return job


def _predictions(platform: RunningPlatform, job: dict[str, Any], tmp: Path) -> np.ndarray:
    import xgboost as xgb

    from opensage.images.xgboost.serve import load_model

    bucket, key = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").split("/", 1)
    body = platform.session().client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        archive.extractall(tmp, filter="data")
    booster = load_model(tmp)  # as the image's model server reads it
    grid = np.random.default_rng(1).normal(size=(200, 4))
    return np.asarray(booster.predict(xgb.DMatrix(grid)))


def test_a_two_instance_job_spans_both_nodes_and_trains_the_local_model(
    cluster: Cluster, on_ray: RunningPlatform, local: RunningPlatform, tmp_path: Path
) -> None:
    on_cluster = _train(on_ray)
    nodes = _placements(on_ray, on_cluster["TrainingJobName"])
    assert sorted(nodes) == ["algo-1", "algo-2"] and len(set(nodes.values())) == 2, nodes
    here = _train(local)
    (tmp_path / "ray").mkdir()
    (tmp_path / "local").mkdir()
    ray_model, local_model = (
        _predictions(on_ray, on_cluster, tmp_path / "ray"),
        _predictions(local, here, tmp_path / "local"),
    )
    assert np.allclose(ray_model, local_model)
    assert not cluster.actors(), "the job's actors outlived it"


def test_a_node_that_does_not_see_the_home_runs_an_instance_with_its_directory_shipped(
    cluster: Cluster, on_ray: RunningPlatform, local: RunningPlatform, tmp_path: Path
) -> None:
    on_cluster = _train(on_ray, instances=3)  # one instance on each of the three nodes
    nodes = _placements(on_ray, on_cluster["TrainingJobName"])
    assert len(set(nodes.values())) == 3, nodes
    text = (on_ray.home.parent / f"{on_ray.home.name}-up.log").read_text(errors="replace")
    (line,) = [x for x in text.splitlines() if f"training-job/{on_cluster['TrainingJobName']}: " in x]
    assert line.count("its directory shipped") == 1, line  # the node that does not see the home
    logs = on_ray.session().client("logs")
    group, name = "/aws/sagemaker/TrainingJobs", on_cluster["TrainingJobName"]
    for stream in logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/")["logStreams"]:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True)
        assert any("[algo-" in e["message"] or "INFO" in e["message"] for e in events["events"]), stream  # its log
    here = _train(local, instances=3)
    (tmp_path / "ray").mkdir()
    (tmp_path / "local").mkdir()
    ray_model = _predictions(on_ray, on_cluster, tmp_path / "ray")
    assert np.allclose(ray_model, _predictions(local, here, tmp_path / "local"))
    assert not cluster.actors(), "the job's actors outlived it"


def _model_servers(platform: RunningPlatform) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if is_model_server(proc.info["cmdline"] or []) and str(platform.home) in (proc.info["cwd"] or ""):
                found.append(proc)
    return found


def test_an_endpoint_on_both_nodes_outlives_the_kill_of_one_nodes_actor(
    cluster: Cluster, on_ray: RunningPlatform
) -> None:
    job = _train(on_ray)
    session = on_ray.session()
    sm, runtime = session.client("sagemaker"), session.client("sagemaker-runtime")
    name = f"two-nodes-{uuid.uuid4().hex[:6]}"
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]},
        ExecutionRoleArn=job["RoleArn"],
    )
    variant = {"VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.large"}
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{**variant, "InitialInstanceCount": 2}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    try:
        deadline = time.monotonic() + 180
        while (status := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "Creating":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert status["EndpointStatus"] == "InService", status.get("FailureReason")
        actors = cluster.actors()
        assert len(actors) == 2 and len(set(actors.values())) == 2, actors  # one model server on each node
        assert len(_model_servers(on_ray)) == 2

        def invoke() -> list[float]:
            answer = runtime.invoke_endpoint(EndpointName=name, ContentType="text/csv", Body=b"2,1,0,0\n-2,-1,0,0\n")
            return [float(v) for v in answer["Body"].read().decode().replace("\n", ",").strip(",").split(",")]

        high, low = invoke()
        assert high > 0.5 > low
        os.kill(sorted(actors)[1], signal.SIGKILL)  # one node's actor dies; its model server with it
        deadline = time.monotonic() + 120
        while True:
            assert invoke()[0] > 0.5  # the endpoint keeps answering meanwhile
            now = cluster.actors()
            replaced = len(now) == 2 and len(set(now.values())) == 2 and sorted(actors)[1] not in now
            if replaced and len(_model_servers(on_ray)) == 2:  # the dead actor's model server ended, not left behind
                break
            assert time.monotonic() < deadline, f"the dead actor was not replaced: {now}"
            time.sleep(0.5)
        assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
        assert [invoke()[0] > 0.5 for _ in range(10)] == [True] * 10
    finally:
        sm.delete_endpoint(EndpointName=name)
    deadline = time.monotonic() + 60
    while cluster.actors():
        assert time.monotonic() < deadline, "the model servers' actors outlived their endpoint"
        time.sleep(0.2)


PROCESSING_SCRIPT = (
    "import os, pathlib; out = pathlib.Path('/opt/ml/processing/output'); "
    "host = os.environ.get('SM_CURRENT_HOST') or __import__('json').load(open('/opt/ml/config/resourceconfig.json'))"
    "['current_host']; (out / f'{host}.txt').write_text(f'{host} processed')"
)


GPU_SCRIPT = (
    "import os, pathlib; pathlib.Path('/opt/ml/processing/output/gpus.txt')"
    ".write_text(os.environ.get('CUDA_VISIBLE_DEVICES', 'none'))"
)


def test_an_instance_type_with_a_gpu_gets_the_gpu_node_and_its_gpu(on_ray: RunningPlatform) -> None:
    session = on_ray.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    account = session.client("sts").get_caller_identity()["Account"]
    placed = {}
    for itype in ("ml.g4dn.xlarge", "ml.m5.large"):
        name = f"gpu-{uuid.uuid4().hex[:8]}"
        output = {"OutputName": "out", "S3Output": {"S3Uri": f"s3://{BUCKET}/{name}", "S3UploadMode": "EndOfJob",
                                                    "LocalPath": "/opt/ml/processing/output"}}  # fmt: skip
        sm.create_processing_job(
            ProcessingJobName=name,
            ProcessingOutputConfig={"Outputs": [output]},
            ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": itype, "VolumeSizeInGB": 1}},
            AppSpecification={"ImageUri": PYTHON, "ContainerEntrypoint": ["python3", "-c", GPU_SCRIPT]},
            RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        )
        deadline = time.monotonic() + 180
        while (desc := sm.describe_processing_job(ProcessingJobName=name))["ProcessingJobStatus"] == "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
        seen = s3.get_object(Bucket=BUCKET, Key=f"{name}/gpus.txt")["Body"].read().decode()
        placed[itype] = (seen, _placements(on_ray, name)["algo-1"])
    assert placed["ml.g4dn.xlarge"][0] == "0"  # the GPU Ray gave the instance's actor
    assert placed["ml.m5.large"][0] == "none"  # an instance type without GPUs sees none


def test_processing_and_batch_transform_run_on_the_cluster(on_ray: RunningPlatform) -> None:
    job = _train(on_ray)
    session = on_ray.session()
    sm, s3 = session.client("sagemaker"), session.client("s3")
    account = session.client("sts").get_caller_identity()["Account"]
    role = f"arn:aws:iam::{account}:role/OpenSageExecutionRole"
    name = f"proc-{uuid.uuid4().hex[:8]}"
    sm.create_processing_job(
        ProcessingJobName=name,
        ProcessingOutputConfig={
            "Outputs": [
                {
                    "OutputName": "out",
                    "S3Output": {
                        "S3Uri": f"s3://{BUCKET}/{name}",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        ProcessingResources={"ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}},
        AppSpecification={"ImageUri": PYTHON, "ContainerEntrypoint": ["python3", "-c", PROCESSING_SCRIPT]},
        RoleArn=role,
    )
    deadline = time.monotonic() + 180
    while (desc := sm.describe_processing_job(ProcessingJobName=name))["ProcessingJobStatus"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{name}/")["Contents"])
    assert keys == [f"{name}/algo-1.txt", f"{name}/algo-2.txt"]
    assert len(set(_placements(on_ray, name).values())) == 2  # one instance on each node

    model = f"transform-{uuid.uuid4().hex[:6]}"
    sm.create_model(
        ModelName=model,
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]},
        ExecutionRoleArn=role,
    )
    rows = np.random.default_rng(3).normal(size=(50, 4)).round(4)
    s3.put_object(Bucket=BUCKET, Key="batch/rows.csv", Body="\n".join(",".join(map(str, r)) for r in rows).encode())
    sm.create_transform_job(
        TransformJobName=model,
        ModelName=model,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/batch-out", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    deadline = time.monotonic() + 180
    while (desc := sm.describe_transform_job(TransformJobName=model))["TransformJobStatus"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    out = s3.get_object(Bucket=BUCKET, Key="batch-out/rows.csv.out")["Body"].read().decode().split()
    scores = [float(v) for v in out]
    assert len(scores) == 50
    assert all(
        (s > 0.5) == (r[0] + 0.5 * r[1] > 0) for s, r in zip(scores, rows, strict=True) if abs(r[0] + 0.5 * r[1]) > 0.5
    )


TORCH_TRAIN = """
import os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
print("RANK %d OF %d" % (dist.get_rank(), dist.get_world_size()), flush=True)
torch.manual_seed(0)
x = torch.randn(256, 2)
y = x[:, :1] * 2.0 - x[:, 1:]
net = torch.nn.Linear(2, 1)
model = torch.nn.parallel.DistributedDataParallel(net)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(5):
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x[dist.get_rank()::2]), y[dist.get_rank()::2]).backward()
    opt.step()
if dist.get_rank() == 0:
    torch.save(net.state_dict(), os.path.join(os.environ["SM_MODEL_DIR"], "model.pth"))
dist.barrier()
dist.destroy_process_group()  # else gloo's threads may abort the interpreter's exit ("terminate called ...")
"""

TORCH_FIT = """
import sagemaker
from sagemaker import image_uris
from sagemaker.pytorch import PyTorch
session = sagemaker.Session()
image = image_uris.retrieve("pytorch", session.boto_region_name, version="2.1", py_version="py310",
                            instance_type="ml.m5.xlarge", image_scope="training")
est = PyTorch(entry_point="train.py", source_dir="src", image_uri=image, instance_count=2,
              instance_type="ml.m5.xlarge", role=sagemaker.get_execution_role(),
              distribution={"torch_distributed": {"enabled": True}})
est.fit()
print("JOB", est.latest_training_job.name)
print("MODEL", est.model_data)
"""


def _torch_fit(platform: RunningPlatform, tmp: Path) -> tuple[str, dict[str, Any]]:
    """The SDK's two-instance torch_distributed job; its name and the weights it saved."""
    import torch

    (tmp / "src").mkdir(parents=True)
    (tmp / "src" / "train.py").write_text(TORCH_TRAIN)
    out = platform.run_python(TORCH_FIT, tmp, timeout=400)
    assert "RANK 0 OF 2" in out and "RANK 1 OF 2" in out, out[-3000:]
    job = re.findall(r"^JOB (\S+)$", out, re.MULTILINE)[0]
    bucket, key = re.findall(r"^MODEL s3://(\S+)$", out, re.MULTILINE)[0].split("/", 1)
    body = platform.session().client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        archive.extractall(tmp / "model", filter="data")
    return job, torch.load(tmp / "model" / "model.pth")


def test_a_torch_distributed_job_spans_both_nodes_and_trains_the_local_model(
    on_ray: RunningPlatform, local: RunningPlatform, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    import torch

    job, on_cluster = _torch_fit(on_ray, tmp_path / "ray")
    assert len(set(_placements(on_ray, job).values())) == 2, _placements(on_ray, job)
    _, here = _torch_fit(local, tmp_path / "local")
    assert on_cluster.keys() == here.keys()
    assert all(torch.allclose(on_cluster[k], here[k]) for k in here)
