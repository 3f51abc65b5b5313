"""Processing jobs end to end: the SDK's SKLearnProcessor and ScriptProcessor, and boto3."""

from __future__ import annotations

import json
import re
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
BUCKET = "processing-tests"
PYTHON_IMAGE = "python:3.11"

PREPROCESS = """
import glob, os
import pandas as pd
from sklearn.model_selection import train_test_split

frames = [pd.read_csv(f, header=None) for f in sorted(glob.glob("/opt/ml/processing/input/*.csv"))]
data = pd.concat(frames)
data[0] = (data[0] > 0).astype(int)
train, test = train_test_split(data, test_size=0.25, random_state=0)
os.makedirs("/opt/ml/processing/train", exist_ok=True)
train.to_csv("/opt/ml/processing/train/train.csv", header=False, index=False)
test.to_csv("/opt/ml/processing/test/test.csv", header=False, index=False)
print("rows", len(train), len(test))
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("processing")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        yield running


def _sdk(platform: RunningPlatform, tmp_path: Path, code: str, timeout: float = 300) -> str:
    return platform.run_python(code, tmp_path, timeout)


def test_sklearn_processor_feeds_a_training_job(platform: RunningPlatform, tmp_path: Path) -> None:
    """SKLearnProcessor.run(code=...) makes train/test files; a built-in XGBoost job trains on them."""
    import numpy as np

    rng = np.random.default_rng(1)
    s3 = platform.session().client("s3")
    for part in range(2):
        x = rng.normal(size=(200, 4))
        rows = "\n".join(",".join(f"{v:.4f}" for v in [x[i, 0] + x[i, 1], *x[i]]) for i in range(200))
        s3.put_object(Bucket=BUCKET, Key=f"raw/part-{part}.csv", Body=rows.encode())
    (tmp_path / "preprocess.py").write_text(textwrap.dedent(PREPROCESS))
    out = _sdk(
        platform,
        tmp_path,
        f"""
        import sagemaker
        from sagemaker import image_uris
        from sagemaker.estimator import Estimator
        from sagemaker.inputs import TrainingInput
        from sagemaker.processing import ProcessingInput, ProcessingOutput
        from sagemaker.sklearn.processing import SKLearnProcessor
        role = sagemaker.get_execution_role()
        processor = SKLearnProcessor(framework_version="1.2-1", role=role, instance_type="ml.m5.xlarge",
                                     instance_count=1)
        processor.run(code="preprocess.py",
                      inputs=[ProcessingInput(source="s3://{BUCKET}/raw", destination="/opt/ml/processing/input")],
                      outputs=[ProcessingOutput(output_name="train", source="/opt/ml/processing/train"),
                               ProcessingOutput(output_name="test", source="/opt/ml/processing/test")])
        outputs = {{o["OutputName"]: o["S3Output"]["S3Uri"]
                   for o in processor.latest_job.describe()["ProcessingOutputConfig"]["Outputs"]}}
        print("TRAIN", outputs["train"])
        image = image_uris.retrieve("xgboost", sagemaker.Session().boto_region_name, "1.7-1")
        est = Estimator(image, role, instance_count=1, instance_type="ml.m5.xlarge",
                        hyperparameters={{"objective": "binary:logistic", "num_round": 20}})
        est.fit({{"train": TrainingInput(outputs["train"], content_type="text/csv"),
                  "validation": TrainingInput(outputs["test"], content_type="text/csv")}})
        print("MODEL", est.model_data)
        """,
    )
    assert "rows 300 100" in out  # the script's output, streamed by run(logs=True)
    assert re.search(r"MODEL s3://\S+/model.tar.gz", out)
    train_uri = re.search(r"TRAIN (s3://\S+)", out).group(1)  # type: ignore[union-attr]
    bucket, prefix = train_uri[5:].split("/", 1)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert keys == [f"{prefix}/train.csv"]


SHARD = """
import json, os, sys
files = sorted(os.listdir("/opt/ml/processing/input"))
config = json.load(open("/opt/ml/config/processingjobconfig.json"))
resources = json.load(open("/opt/ml/config/resourceconfig.json"))
host = resources["current_host"]
with open(f"/opt/ml/processing/output/{host}.json", "w") as f:
    json.dump({"files": files, "hosts": resources["hosts"], "job": config["ProcessingJobName"],
               "args": sys.argv[1:], "env": os.environ.get("STAGE")}, f)
"""


def _processing_job(
    platform: RunningPlatform,
    script: str,
    *,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    count: int = 1,
    wait: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    s3 = platform.session().client("s3")
    sm = platform.session().client("sagemaker")
    name = f"proc-{uuid.uuid4().hex[:10]}"
    s3.put_object(Bucket=BUCKET, Key=f"{name}/code/script.py", Body=textwrap.dedent(script).encode())
    code = {
        "InputName": "code",
        "S3Input": {
            "S3Uri": f"s3://{BUCKET}/{name}/code/script.py",
            "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
        },
    }
    account = platform.session().client("sts").get_caller_identity()["Account"]
    sm.create_processing_job(
        ProcessingJobName=name,
        ProcessingInputs=[code, *(inputs or [])],
        ProcessingOutputConfig={"Outputs": outputs or []},
        ProcessingResources={
            "ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}
        },
        AppSpecification={
            "ImageUri": PYTHON_IMAGE,
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/script.py"],
            **extra.pop("app", {}),
        },
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        **extra,
    )
    return _wait(platform, name) if wait else {"ProcessingJobName": name}


def _wait(platform: RunningPlatform, name: str, timeout: float = 120) -> dict[str, Any]:
    sm = platform.session().client("sagemaker")
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_processing_job(ProcessingJobName=name)
        if desc["ProcessingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)


def _output(uri: str, local: str = "/opt/ml/processing/output", mode: str = "EndOfJob") -> dict[str, Any]:
    return {"OutputName": "out", "S3Output": {"S3Uri": uri, "LocalPath": local, "S3UploadMode": mode}}


def test_two_instances_get_their_shards(platform: RunningPlatform) -> None:
    s3 = platform.session().client("s3")
    for i in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"shards/file-{i}.csv", Body=b"1\n")
    prefix = f"shard-out-{uuid.uuid4().hex[:6]}"
    desc = _processing_job(
        platform,
        SHARD,
        inputs=[
            {
                "InputName": "data",
                "S3Input": {
                    "S3Uri": f"s3://{BUCKET}/shards",
                    "LocalPath": "/opt/ml/processing/input",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "ShardedByS3Key",
                },
            }
        ],
        outputs=[_output(f"s3://{BUCKET}/{prefix}")],
        count=2,
        Environment={"STAGE": "test"},
        app={"ContainerArguments": ["--mode", "shard"]},
    )
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["ProcessingStartTime"] <= desc["ProcessingEndTime"]
    reports = {
        host: json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{host}.json")["Body"].read())
        for host in ("algo-1", "algo-2")
    }
    files = [set(r["files"]) - {"code"} for r in reports.values()]
    assert files[0].isdisjoint(files[1]) and files[0] | files[1] == {f"file-{i}.csv" for i in range(5)}
    report = reports["algo-1"]
    assert report["hosts"] == ["algo-1", "algo-2"] and report["job"] == desc["ProcessingJobName"]
    assert report["args"] == ["--mode", "shard"] and report["env"] == "test"
    summaries = platform.session().client("sagemaker").list_processing_jobs(NameContains=desc["ProcessingJobName"])
    assert [s["ProcessingJobStatus"] for s in summaries["ProcessingJobSummaries"]] == ["Completed"]


def test_bad_inputs_fail_with_reasons(platform: RunningPlatform) -> None:
    crash = _processing_job(platform, "print('reading')\nraise KeyError('column price is missing')\n")
    assert crash["ProcessingJobStatus"] == "Failed"
    assert "KeyError: 'column price is missing'" in crash["FailureReason"]

    missing = _processing_job(
        platform,
        "print(1)\n",
        inputs=[
            {
                "InputName": "data",
                "S3Input": {
                    "S3Uri": f"s3://{BUCKET}/no-such-prefix/",
                    "LocalPath": "/opt/ml/processing/data",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
    )
    assert missing["ProcessingJobStatus"] == "Failed" and "No S3 objects found" in missing["FailureReason"]

    refused = _processing_job(
        platform,
        "open('/opt/ml/processing/output/x.txt', 'w').write('x')\n",
        outputs=[_output("s3://no-such-bucket-opensage/out")],
    )
    assert refused["ProcessingJobStatus"] == "Failed"
    assert "could not upload output 'out'" in refused["FailureReason"]
    assert "bucket does not exist" in refused["FailureReason"]

    sm = platform.session().client("sagemaker")
    with pytest.raises(ClientError) as err:
        _processing_job(platform, "print(1)\n", outputs=[_output(f"s3://{BUCKET}/x", local="/tmp/out")])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "must begin with /opt/ml/processing/" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.describe_processing_job(ProcessingJobName="never-created")
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_stop_midway_keeps_continuous_output(platform: RunningPlatform) -> None:
    script = """
    import time
    for i in range(600):
        open(f"/opt/ml/processing/output/part-{i}.txt", "w").write(str(i))
        time.sleep(0.1)
    """
    prefix = f"continuous-{uuid.uuid4().hex[:6]}"
    started = _processing_job(
        platform, script, outputs=[_output(f"s3://{BUCKET}/{prefix}", mode="Continuous")], wait=False
    )
    name = started["ProcessingJobName"]
    s3 = platform.session().client("s3")
    deadline = time.monotonic() + 60
    while s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount", 0) < 3:  # uploaded while running
        assert time.monotonic() < deadline
        time.sleep(0.2)
    sm = platform.session().client("sagemaker")
    assert sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"] == "InProgress"
    sm.stop_processing_job(ProcessingJobName=name)
    desc = _wait(platform, name)
    assert desc["ProcessingJobStatus"] == "Stopped"
    assert 3 <= s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["KeyCount"] < 600
    with pytest.raises(ClientError) as err:
        sm.stop_processing_job(ProcessingJobName=name)
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_script_processor_with_the_python_image(platform: RunningPlatform, tmp_path: Path) -> None:
    """ScriptProcessor(command=['python3'], image_uri=<a Python image>).run(code=...)."""
    (tmp_path / "job.py").write_text("import sys\nprint('ARGS', ' '.join(sys.argv[1:]))\n")
    out = _sdk(
        platform,
        tmp_path,
        f"""
        import sagemaker
        from sagemaker.processing import ScriptProcessor
        processor = ScriptProcessor(image_uri="{PYTHON_IMAGE}", command=["python3"], instance_count=1,
                                    instance_type="ml.m5.large", role=sagemaker.get_execution_role())
        processor.run(code="job.py", arguments=["--day", "2026-11-29"])
        print("STATUS", processor.latest_job.describe()["ProcessingJobStatus"])
        """,
    )
    assert "ARGS --day 2026-11-29" in out and "STATUS Completed" in out


def test_framework_processor_runs_a_source_dir(platform: RunningPlatform, tmp_path: Path) -> None:
    """FrameworkProcessor(SKLearn, ...).run(code=..., source_dir=...): the SDK's runproc.sh unpacks and runs it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "helper.py").write_text("GREETING = 'from the source dir'\n")
    main = "import sys\nfrom helper import GREETING\nprint('FRAMEWORK', GREETING, sys.argv[1:])\n"
    (src / "main.py").write_text(main)
    out = _sdk(
        platform,
        tmp_path,
        """
        import sagemaker
        from sagemaker.processing import FrameworkProcessor
        from sagemaker.sklearn import SKLearn
        processor = FrameworkProcessor(estimator_cls=SKLearn, framework_version="1.2-1", instance_count=1,
                                       instance_type="ml.m5.large", role=sagemaker.get_execution_role())
        processor.run(code="main.py", source_dir="src", arguments=["--x", "1"])
        print("STATUS", processor.latest_job.describe()["ProcessingJobStatus"])
        """,
    )
    assert "FRAMEWORK from the source dir ['--x', '1']" in out and "STATUS Completed" in out


def test_user_code_reads_none_of_the_platforms_secrets(platform: RunningPlatform) -> None:
    """A job's code runs as a user of its own: the keys, the database and the AWS files are out of its reach."""
    from opensage.compute.confine import confinement

    if confinement([platform.home]) is None:
        pytest.skip("containers run as the platform's user here (it is not root, or has no mount namespace)")
    secrets = [platform.home / name for name in ("master.key", "console.key", "opensage.db")]
    secrets.append(Path(platform.env["AWS_SHARED_CREDENTIALS_FILE"]))
    assert all(path.exists() for path in secrets)
    script = f"""
    import json, os
    found = {{}}
    for path in {[str(p) for p in secrets]!r} + [f"/proc/{platform.proc.pid}/environ"]:
        try:
            with open(path, "rb") as f:
                found[path] = len(f.read())
        except OSError as exc:
            found[path] = type(exc).__name__
    found["uid"] = os.getuid()
    with open("/opt/ml/processing/output/found.json", "w") as f:
        json.dump(found, f)
    """
    desc = _processing_job(platform, script, outputs=[_output(f"s3://{BUCKET}/secrets")])
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    s3 = platform.session().client("s3")
    found = json.loads(s3.get_object(Bucket=BUCKET, Key="secrets/found.json")["Body"].read())
    assert found.pop("uid") != 0
    assert all(isinstance(result, str) for result in found.values()), found  # an error for each, no bytes
