"""Thread caps end to end: a training job's container sees at most the usable cores in the thread variables."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from helpers import running_platform
from opensage.compute import cores

pytestmark = pytest.mark.slow
BUCKET = "thread-tests"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
NAMES = [*cores.THREAD_VARIABLES, "SM_NUM_CPUS"]
TRAIN = f"import json, os\nprint('ENV ' + json.dumps({{k: os.environ.get(k) for k in {NAMES!r}}}))\n"


def _source() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(TRAIN.encode())
        tar.addfile(info, io.BytesIO(TRAIN.encode()))
    return buffer.getvalue()


def test_a_training_jobs_container_sees_the_capped_thread_variables(tmp_path: Path) -> None:
    """ml.m4.xlarge (4 vCPUs): SM_NUM_CPUS 4; OMP/OpenBLAS/MKL threads at most the machine's usable cores,
    except what the job's Environment sets."""
    with running_platform(tmp_path / "home", tmp_path / "aws") as platform:
        session = platform.session()
        s3, sm, logs = session.client("s3"), session.client("sagemaker"), session.client("logs")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="src/sourcedir.tar.gz", Body=_source())
        account = session.client("sts").get_caller_identity()["Account"]
        name = f"threads-{uuid.uuid4().hex[:8]}"
        sm.create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"},
            RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
            HyperParameters={
                "sagemaker_program": '"train.py"',
                "sagemaker_submit_directory": f'"s3://{BUCKET}/src/sourcedir.tar.gz"',
            },
            Environment={"MKL_NUM_THREADS": "7"},
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out"},
            ResourceConfig={"InstanceType": "ml.m4.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
            StoppingCondition={"MaxRuntimeInSeconds": 120},
        )
        deadline = time.monotonic() + 120
        while (desc := sm.describe_training_job(TrainingJobName=name))["TrainingJobStatus"] == "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        group = "/aws/sagemaker/TrainingJobs"
        stream = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name)["logStreams"][0]
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True)
        line = next(e["message"] for e in events["events"] if e["message"].startswith("ENV "))
    seen = json.loads(line[4:])
    capped = str(min(4, cores.usable_cores()))
    assert seen == {
        "OMP_NUM_THREADS": capped,
        "OPENBLAS_NUM_THREADS": capped,
        "MKL_NUM_THREADS": "7",
        "SM_NUM_CPUS": "4",
    }
